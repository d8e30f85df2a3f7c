// What indexerd asks of the KMS and of the core, as small interfaces: the daemon implements them
// over the SDK (KmsContext over direct HTTPS, CoreClient; indexer_clients.h), tests over
// in-memory stand-ins. Each call's errors are the SDK's (UNAVAILABLE when the service cannot be
// reached now, PERMISSION_DENIED when it refuses, NOT_FOUND...).
#ifndef STRONGROOM_INDEXER_INDEXER_PORTS_H_
#define STRONGROOM_INDEXER_INDEXER_PORTS_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "strongroom/client/core_client.h"
#include "strongroom/client/kms_objects.h"
#include "strongroom/common/error.h"

namespace strongroom::indexer {

// The indexer's KMS channel (docs/api/kms-protocol.md): content keys it is authorized on (it is
// the cloudAgent of its organization's rooms), its organization's search keys, and which
// resources a user of its organization is authorized on.
class IndexerKms {
 public:
  virtual ~IndexerKms() = default;
  virtual Result<client::KmsKey> RetrieveKey(const std::string& key_uri) = 0;
  virtual Result<client::KmsSearchKey> CurrentSearchKey() = 0;
  virtual Result<client::KmsSearchKey> SearchKey(std::uint32_t version) = 0;
  // With `on_behalf_of` (= user), a compliance officer's listing: the KMS checks the channel's
  // user is an officer of the user's organization and audits it.
  virtual Result<client::KmsAuthorizationPage> ListAuthorizations(
      const std::string& user, const std::string& cursor, std::size_t limit,
      const std::string& on_behalf_of) = 0;
  // Whether the channel works now (/health); a ping.
  virtual Status Check() = 0;
};

// A KMS channel in a compliance officer's name, opened with the officer's own KMS token (for
// their compliance search: the KMS, not indexerd, decides who is an officer, and audits it).
using OfficerKmsOpener =
    std::function<Result<std::unique_ptr<IndexerKms>>(const std::string& officer_kms_token)>;

// One conversation of a search with its own tokens, and the matches newest first
// (docs/api/core.md, POST /v1/index/search).
using RoomQuery = client::IndexSearchQuery;
using IndexMatch = client::IndexSearchMatch;
using IndexPage = client::IndexSearchPage;
using TokenSet = client::IndexTokenSet;
// The core's maximum of sets in one POST /v1/index/sets (docs/api/core.md).
inline constexpr std::size_t kMaxSetsPerPut = 256;

// The core's index store, as the indexer's identity uses it.
class IndexerCore {
 public:
  virtual ~IndexerCore() = default;
  // POST /v1/index/sets: 1-kMaxSetsPerPut activities' sets, each replacing its activity's, all
  // or nothing (one bad set refuses them all: INVALID_ARGUMENT, NOT_FOUND).
  virtual Status PutTokenSets(const std::vector<TokenSet>& sets) = 0;
  // POST /v1/index/search (1-1000 queries).
  virtual Result<IndexPage> Search(const std::vector<RoomQuery>& queries,
                                   std::optional<std::int64_t> before, std::size_t limit) = 0;
};

// The core's indexer stream (GET /v1/index/events), from a cursor.
class ActivityStream {
 public:
  virtual ~ActivityStream() = default;
  // The next activities in seq order, waiting at most `patience`; empty when none came.
  virtual Result<std::vector<client::Activity>> Next(std::chrono::milliseconds patience) = 0;
};
using StreamOpener = std::function<Result<std::unique_ptr<ActivityStream>>(std::int64_t cursor)>;

}  // namespace strongroom::indexer

#endif  // STRONGROOM_INDEXER_INDEXER_PORTS_H_
