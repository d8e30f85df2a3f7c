// indexerd's HTTPS listener (docs/api/indexer.md): GET /health for anyone; POST /v1/search for a
// user of the indexer's organization with a bearer token of audience "indexer" (verified as cored
// and kmsd verify theirs: the organization is the token issuer's, never a claim). Errors are JSON
// {"code", "message"}; bodies, queries and tokens are never logged.
#ifndef STRONGROOM_INDEXER_INDEXER_SERVER_H_
#define STRONGROOM_INDEXER_INDEXER_SERVER_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "strongroom/common/error.h"
#include "strongroom/common/http_router.h"
#include "strongroom/common/jwt.h"
#include "strongroom/common/listener_settings.h"
#include "strongroom/indexer/indexing_pipeline.h"
#include "strongroom/indexer/search_service.h"

namespace strongroom::http {
class HttpsServer;
}

namespace strongroom::indexer {

inline constexpr std::size_t kMaxSearchBodyBytes = 16 * 1024;

// POST /v1/search's body: {"query", "room"?, "limit"?, "before"?}; unknown members, a member of
// the wrong type, a room that is not a lowercase UUID, a limit out of 1-200 or a before below 1
// are INVALID_ARGUMENT. `user` is left empty (the caller's). With `compliance`, POST
// /v1/compliance/search's: the same and "user", required (1-256 bytes).
Result<SearchRequest> ParseSearchBody(std::string_view body, bool compliance = false);

// The header that carries a compliance officer's own KMS token (audience "kms") beside their
// indexer token, for the KMS to decide whether they are an officer.
inline constexpr char kKmsAuthorizationHeader[] = "X-Kms-Authorization";

// What a compliance search needs: the verifier of KMS tokens (the same issuers, audience "kms")
// and the opener of a KMS channel in the officer's name. Without it, 404 for the endpoint.
struct ComplianceSearchSupport {
  const JwtVerifier* kms_verifier = nullptr;
  OfficerKmsOpener open_kms;
};

// What /health tells: the stream's state, and whether the KMS channel works now.
struct HealthSource {
  std::function<IndexerLoop::State()> stream;
  std::function<Status()> kms;  // cached by the caller as it likes
  // The re-index job's progress and the current search key version (optional).
  std::function<std::optional<JobProgress>()> reindex = {};
  std::function<std::uint32_t()> search_key_version = {};
  // Whether the indexer's database answers (optional): /health is 503 while it does not.
  std::function<Status()> database = {};
};

// Each user's searches (/v1/search and /v1/compliance/search, by the token's subject): a token
// bucket of `burst` refilled at `per_s` a second; beyond it 429 rate_limited with Retry-After.
struct SearchRateLimit {
  double per_s = 10;
  double burst = 20;
  std::function<double()> now_s = {};  // seconds, monotonic; steady_clock when empty (tests)
};

// The per-user token buckets of SearchRateLimit. Thread-safe; at most 100,000 users tracked (the
// ones whose bucket is full again are forgotten first).
class SearchRateLimiter {
 public:
  explicit SearchRateLimiter(SearchRateLimit limit);
  // 0 when the search may go on; otherwise the whole seconds to wait (at least 1).
  int Take(const std::string& user);

 private:
  struct Bucket {
    double tokens;
    double at;
  };
  const SearchRateLimit limit_;
  std::mutex mutex_;
  std::unordered_map<std::string, Bucket> buckets_;
};

// The routes without a socket (tests call http::Answer on them). All must outlive it.
class IndexerRoutes : public http::Endpoint {
 public:
  IndexerRoutes(SearchService& search, const JwtVerifier& verifier, std::string org,
                HealthSource health, ComplianceSearchSupport compliance = {},
                SearchRateLimit rate = {});
  http::Response Serve(http::Request& request) override;

 private:
  http::Response Health();
  http::Response Search(http::Request& request, const VerifiedJwt& caller);
  http::Response ComplianceSearch(http::Request& request, const VerifiedJwt& caller);
  static http::Response PageAnswer(const IndexPage& page, const std::string& language);

  SearchService& search_;
  const JwtVerifier& verifier_;
  const std::string org_;
  HealthSource health_;
  ComplianceSearchSupport compliance_;
  SearchRateLimiter limiter_;
  http::Routes<> open_{"no such endpoint"};
  http::Routes<const VerifiedJwt&> users_{"no such endpoint"};
};

class IndexerServer {
 public:
  // Binds and serves `routes` (which must outlive the server).
  static Result<std::unique_ptr<IndexerServer>> Start(const ListenerSettings& listener,
                                                      IndexerRoutes& routes);
  ~IndexerServer();
  std::uint16_t port() const;
  void Stop();

 private:
  explicit IndexerServer(std::unique_ptr<http::HttpsServer> server);
  std::unique_ptr<http::HttpsServer> server_;
};

}  // namespace strongroom::indexer

#endif  // STRONGROOM_INDEXER_INDEXER_SERVER_H_
