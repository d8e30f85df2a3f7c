// A user's connection to one KMS, as the SDK uses it: the KMS's identity checked against the
// configured roots (kms_identity.h), an ECDHE channel (KmsSession) opened on first use and renewed
// before it expires, and typed operations of the protocol (docs/api/kms-protocol.md).
//
// Transports: direct HTTPS to the KMS (OverHttps: GET /kms/info there, messages to POST
// /kms/messages), or the core's relay (OverRelay: the /kms/info document comes from the client's
// configuration, since the core does not serve it; it is trusted only after the same checks).
//
// Failures and what is done about them, per operation:
//   - no answer (network), HTTP 429/503 (plain, from the KMS or the relay), or a sealed 503: sent
//     again (sealed afresh, with a new requestId) after a jittered exponential backoff, honouring
//     Retry-After, at most `max_attempts` times; then UNAVAILABLE;
//   - a refusal signed by the KMS with status 401 (it does not know the channel's key: unknown,
//     expired, deleted, or past its limit of requests; kms_session.h, ReadKmsRefusal): a new
//     channel is negotiated once and the request sent again;
//   - a sealed 409 "replayed request" (a transport or relay resent the very message, and the KMS
//     refused the repeat): a read is sealed afresh and sent again at once; a write reports it, and
//     the operation asks the KMS whether the write was done (below);
//   - any other answer is final: a sealed protocol status other than the operation's success is an
//     Error (kms_objects.h, CheckAnswerStatus), e.g. PERMISSION_DENIED for a 403.
// Every answer must open under the channel's key and carry the requestId of its request.
//
// The KMS's identity may change: each of its HSM tokens holds an identity key of its own, all
// certified for the same host, and when the token of the one in service fails the KMS serves with
// the next (docs/operations/hsm.md). A client still holding the old key finds out when a new
// channel is refused with 503 identity_unavailable, or when a refusal the KMS signed does not
// verify with the key it holds. Then, once per handshake or operation, the context fetches
// /kms/info again (options.fetch_info), checks the new document exactly as the first (trust: the
// pinned roots and the host), and if it names another key, uses it from then on: it opens the
// channel again, or reads the refusal with the new key. A document that does not verify is
// UNAUTHENTICATED, and the old identity stays. Channels already open keep working.
//
// Writes whose answer was lost. The KMS executes a sealed message at most once, so a write whose
// message may have run without its answer arriving (no answer, or a resend refused as a replay)
// is checked against the KMS's state before it is reported: a bind whose key is bound to the
// resource, a resource that exists, authorizations that are all there, an authorization that is
// gone, each count as done (with what the KMS now says); otherwise the write is sealed afresh and
// sent once more. create /keys is simply sent again (keys nobody received expire unbound), and
// CreateResource always names the resource so that it can be looked for.
//
// Embedded messages (the core relays them before it changes a conversation): Seal* returns the
// sealed request without sending it; OpenAnswer opens the `kmsAnswer` the core returned, on the
// channel that sealed it (even if the context renewed its channel meanwhile).
//
// Thread-safe: operations take turns on the one channel (a KmsSession numbers its requests).
#ifndef STRONGROOM_CLIENT_KMS_CONTEXT_H_
#define STRONGROOM_CLIENT_KMS_CONTEXT_H_

#include <Poco/JSON/Object.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "strongroom/client/https_transport.h"
#include "strongroom/client/kms_identity.h"
#include "strongroom/client/kms_objects.h"
#include "strongroom/client/kms_session.h"
#include "strongroom/client/relay_transport.h"
#include "strongroom/client/token_source.h"
#include "strongroom/common/error.h"

namespace strongroom::client {

struct KmsContextOptions {
  std::string client_id;  // names this device in the KMS's audit log and requestIds
  TokenSource kms_token;  // the user's token for the KMS (audience "kms")
  KmsTrust trust;         // the expected cluster and the roots its identity must chain to
  // A channel is renewed when it has less than this left (the KMS's expirationDate).
  std::chrono::seconds renew_before{60};
  int max_attempts = 5;  // per operation, for retryable failures
  std::chrono::milliseconds initial_backoff{100};
  std::chrono::milliseconds max_backoff{2000};
  std::chrono::seconds max_retry_after{10};  // a longer Retry-After is cut to this
  // Injectable for tests; defaults: the system clock (ms since the epoch), sleep_for.
  std::function<std::int64_t()> now_ms = {};
  std::function<void(std::chrono::milliseconds)> sleep = {};
  // Fetches the KMS's /kms/info document again when its identity may have changed (above).
  // OverHttps sets it (GET /kms/info) unless given; empty: the identity never changes.
  std::function<Result<std::string>()> fetch_info = {};
};

// A request sealed for embedding in a core request (its `kmsMessage`).
struct SealedRequest {
  std::string message;     // the compact JWE
  std::string request_id;  // what the answer must carry
  std::string what;        // "create /authorizations", for errors
  int expected_status = 200;
  std::shared_ptr<const KmsSession> session;  // the channel it was sealed on
};

class KmsContext {
 public:
  // Checks `info` against options.trust now (UNAUTHENTICATED when it fails); the channel is opened
  // on first use (or Connect()).
  static Result<std::unique_ptr<KmsContext>> New(KmsContextOptions options, KmsInfo info,
                                                 KmsTransport transport);
  // Direct HTTPS: GET /kms/info from `https.base_url` (retried like an operation), then New.
  static Result<std::unique_ptr<KmsContext>> OverHttps(KmsContextOptions options,
                                                       const HttpsTransportOptions& https);
  // Through the core: `kms_info_json` is the KMS's GET /kms/info document from configuration.
  static Result<std::unique_ptr<KmsContext>> OverRelay(KmsContextOptions options,
                                                       std::string_view kms_info_json,
                                                       RelayTransportOptions relay);
  ~KmsContext();
  KmsContext(const KmsContext&) = delete;
  KmsContext& operator=(const KmsContext&) = delete;

  // Opens the channel now if there is none or it is due for renewal.
  Status Connect();
  // Drops the channel; the next operation negotiates a new one.
  void Renegotiate();
  // delete /ecdhe/<id>: tells the KMS to forget the channel (when done with the context).
  Status Close();

  Status Ping();
  // create /keys: `count` (1-100) unbound keys, each to be bound before its bind deadline.
  Result<std::vector<KmsKey>> CreateKeys(std::size_t count);
  // update /keys/<id> {resourceUri}: binds one of the caller's unbound keys; the answer carries
  // the key's stop-encrypting date.
  Result<KmsKey> BindKey(const std::string& key_uri, const std::string& resource_uri);
  // create /resources {authIds, keyUris, resourceUri}: the caller is authorized too; the keys are
  // bound. `resource_uri` (from NewResourceUri) names the resource; empty: a new name is made.
  Result<KmsResource> CreateResource(const std::vector<std::string>& auth_ids,
                                     const std::vector<std::string>& key_uris,
                                     const std::string& resource_uri = "");
  // kms://<host>/resources/<random UUID>: a name for a resource about to be created, so that the
  // core can be told it in the same request that carries the sealed create (docs/api/core.md).
  std::string NewResourceUri() const;
  Result<KmsResource> RetrieveResource(const std::string& resource_uri);
  // retrieve /keys/<id>; with `on_behalf_of`, as a compliance officer for that user.
  Result<KmsKey> RetrieveKey(const std::string& key_uri, const std::string& on_behalf_of = "");
  struct KeyQuery {
    std::optional<std::int64_t> bound_after_ms;   // exclusive
    std::optional<std::int64_t> bound_before_ms;  // exclusive
    std::size_t count = 100;                      // 1-1000
  };
  // retrieve /resources/<id>/keys: newest bind date first.
  Result<std::vector<KmsKey>> RetrieveResourceKeys(const std::string& resource_uri,
                                                   const KeyQuery& query,
                                                   const std::string& on_behalf_of = "");
  // create /authorizations {resourceUri, authIds, roleUri?}.
  Result<std::vector<KmsAuthorization>> Authorize(const std::string& resource_uri,
                                                  const std::vector<std::string>& auth_ids,
                                                  const std::string& role = "");
  // delete /resources/<id>/authorizations?authId=<auth_id>.
  Result<KmsAuthorization> DeleteAuthorization(const std::string& resource_uri,
                                               const std::string& auth_id);

  // retrieve /search-keys: the current search key of the caller's organization (made on the first
  // request), for the organization's indexer only (PERMISSION_DENIED for anyone else).
  Result<KmsSearchKey> RetrieveSearchKey();
  // retrieve /search-keys/<org>/<version>: an older (or the current) version; NOT_FOUND if none.
  Result<KmsSearchKey> RetrieveSearchKey(const std::string& org, std::uint32_t version);
  // retrieve /authorizations?authId=<user> {limit, cursor}: one page (1-1000, in URI order) of
  // the resources of the caller's organization on which `user` is authorized; `cursor` from the
  // previous page, "" for the first. For the user itself, the organization's indexer, or with
  // `on_behalf_of` = user a compliance officer.
  Result<KmsAuthorizationPage> ListAuthorizations(const std::string& user,
                                                  const std::string& cursor = "",
                                                  std::size_t limit = 100,
                                                  const std::string& on_behalf_of = "");

  // The same operations sealed for embedding, not sent.
  Result<SealedRequest> SealCreateResource(const std::vector<std::string>& auth_ids,
                                           const std::vector<std::string>& key_uris,
                                           const std::string& resource_uri = "");
  Result<SealedRequest> SealBindKey(const std::string& key_uri, const std::string& resource_uri);
  Result<SealedRequest> SealAuthorize(const std::string& resource_uri,
                                      const std::vector<std::string>& auth_ids,
                                      const std::string& role = "");
  Result<SealedRequest> SealDeleteAuthorization(const std::string& resource_uri,
                                                const std::string& auth_id);
  // Opens the answer the core returned for `request` (kid, requestId, then the expected status).
  Result<Poco::JSON::Object::Ptr> OpenAnswer(const SealedRequest& request,
                                             const KmsResponse& answer) const;

  // The KMS's identity as the context uses it now (it changes when the KMS's does; above).
  KmsInfo info() const;
  const std::string& cluster() const { return cluster_; }

  struct Stats {
    int channels_opened = 0;
    int renegotiations = 0;      // after a 401 for the channel's kid
    int retries = 0;             // sends after a retryable failure
    int identity_refreshes = 0;  // a new identity taken from /kms/info (above)
  };
  Stats stats() const;

 private:
  KmsContext(KmsContextOptions options, KmsInfo info, KmsTransport transport);

  // The current channel, opened or renewed as needed. Called with mutex_ held.
  Result<std::shared_ptr<KmsSession>> Channel();
  Result<std::shared_ptr<KmsSession>> OpenChannel();
  // Fetches /kms/info again and checks it; true when it names another key, which is used from
  // now on. Called with mutex_ held.
  Result<bool> RefreshIdentity();
  // Seals, sends and opens one request with the retry and renegotiation rules above, and checks
  // the answer's status.
  // `maybe_executed` is set when a write may have executed without its answer (see above).
  Result<Poco::JSON::Object::Ptr> Run(const std::string& method, const std::string& uri,
                                      const Poco::JSON::Object& fields, int expected_status,
                                      const std::string& on_behalf_of = "",
                                      bool* maybe_executed = nullptr);
  Result<SealedRequest> SealFor(const std::string& method, const std::string& uri,
                                const Poco::JSON::Object& fields, int expected_status);
  void Backoff(int attempt, int retry_after_s);
  std::string Absolute(const std::string& uri) const;

  const KmsContextOptions options_;
  const std::string cluster_;  // the same for every identity it takes
  const KmsTransport transport_;
  mutable std::mutex mutex_;
  KmsInfo info_;  // guarded by mutex_
  std::shared_ptr<KmsSession> session_;
  Stats stats_;
  std::minstd_rand jitter_;
};

}  // namespace strongroom::client

#endif  // STRONGROOM_CLIENT_KMS_CONTEXT_H_
