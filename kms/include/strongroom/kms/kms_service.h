// The KMS protocol endpoint, independent of transport: one sealed message in, one reply out.
// HTTPS (POST /kms/messages) and the relay through the core are thin layers over Handle().
//
// Operations (draft-abiggs-saag-key-management-service-02 and its working copy); URIs may be
// relative ("/keys/<id>") or absolute ("kms://<host>/keys/<id>"):
//   create /ecdhe                 JWE RSA-OAEP/A256GCM to the KMS's static key (private half in the
//                                 HSM; one per token, kms_identities.h); answered with a PS256 JWS
//                                 signed in the HSM by that same key, carrying the KMS's ephemeral
//                                 EC P-256 key. Both sides derive
//                                 HKDF-SHA256(ECDH secret, empty salt, empty info, 32 bytes).
//                                 Sealed to the identity of a token that is down: plain 503
//                                 identity_unavailable (fetch /kms/info again).
//   everything else               JWE dir/A256GCM, kid = the ephemeral key's URI; refused when that
//                                 key is unknown, expired or deleted, or was made for another user.
//   a message under an unknown, expired or deleted ephemeral key, or one past the channel's limit
//                                 of requests: HTTP 401 with a PS256 JWS signed by the static key,
//                                 payload {status: 401, reason} (draft-02, Error Messages); one
//                                 signature per reason serves every such message for
//                                 kSignedRefusalReuse, so they cost the HSM nothing more.
//   a sealed message the channel executed before: sealed {status: 409, reason: "replayed
//                                 request"}; nothing in it executes (replay_guard.h). A repeated
//                                 create /ecdhe (the same RSA-OAEP key) is refused the same way,
//                                 signed, before the HSM decrypts it.
//   delete /ecdhe/<id>            204; the key is never accepted again.
//   update /ping                  200.
//   create /keys {count}          1-100 unbound random 256-bit keys; bind deadline from policy.
//   update /keys/<id> {resourceUri}  bind: by the key's creator, a participant of the resource, of
//                                 the same organization, before the bind deadline; never re-bound.
//   retrieve /keys/<id>           an unbound key by its creator; a bound one by any role on its
//                                 resource (inherited through resource URIs used as authIds).
//   create /resources {authIds, keyUris}  all-or-nothing; creator, authIds (participant) and the
//                                 org's indexer (cloudAgent, when its policy says so) authorized.
//   retrieve /resources/<id>      the resource with its authorizations and key URIs.
//   retrieve /resources/<id>/keys {boundAfter, boundBefore, count}  the newest `count` bound keys.
//   create /authorizations {resourceUri, authIds, roleUri}  by a participant; roleUri participant
//                                 (default), cloudAgent, or orgAgent (only for the org's
//                                 compliance officers).
//   retrieve /resources/<id>/authorizations[?authId=]
//   delete /authorizations/<id>, delete /resources/<id>/authorizations?authId=<x>
//   retrieve /search-keys         the org's current search key (search_keys.h; version 1 made on
//                                 the first request), and retrieve /search-keys/<org>/<version>:
//                                 only by the org's indexer (its policy), never on behalf, never
//                                 another org's; {searchKey: {uri, version, jwk, createDate}}.
//   retrieve /authorizations?authId=<user> {limit, cursor}  the resources of the caller's org on
//                                 which <user> is authorized (inherited too), in URI order, 1-1000
//                                 a page, {authorizations: [{resourceUri, roleUri}], cursor}: for
//                                 the user itself, the org's indexer, or an officer on its behalf.
// Roles: a participant reads keys, binds its own keys and manages authorizations; cloudAgent and
// orgAgent read keys only. Compliance: a compliance officer of an organization (its policy) may
// send retrieve requests with credential.onBehalfOf = a user; they are answered as that user
// would be answered, only for resources of the officer's own organization, and audited with both
// names. Every key retrieval, denial and authorization change is audited.
//
// Ephemeral keys are stored wrapped under every token's root key (the HSM layer's Vault), so
// any KMS node sharing the database can open a channel another node set up.
//
// Two rooms: the secure channel (kms/src/kms_channels.h: create /ecdhe, opening and sealing,
// signed refusals, the at-most-once record) and the operations on keys, resources and
// authorizations (kms_service.cc), which the channel hands each opened request to.
#ifndef STRONGROOM_KMS_KMS_SERVICE_H_
#define STRONGROOM_KMS_KMS_SERVICE_H_

#include <Poco/JSON/Object.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "strongroom/common/database.h"
#include "strongroom/common/error.h"
#include "strongroom/common/jose.h"
#include "strongroom/common/jwt.h"
#include "strongroom/hsm/vault.h"
#include "strongroom/kms/audit_checkpoints.h"
#include "strongroom/kms/hot_path_cache.h"
#include "strongroom/kms/identity_certificate.h"
#include "strongroom/kms/kms_identities.h"
#include "strongroom/kms/kms_store.h"
#include "strongroom/kms/replay_guard.h"
#include "strongroom/kms/serving_health.h"

namespace strongroom::kms {

inline constexpr std::size_t kMaxKmsMessageBytes = 256 * 1024;
// How long one signed refusal (unknown, expired or deleted ephemeral key) answers every message
// that earns it.
inline constexpr std::int64_t kSignedRefusalReuseMs = 60'000;
// Repeated create /ecdhe messages are recognized among this many recent ones (about 100 bytes
// each); an older repeat costs one RSA decryption and opens a channel only its sender can use.
inline constexpr std::size_t kEcdheReplayMemory = 65536;
// Executed-request records of expired and deleted channels are removed at most this often.
inline constexpr std::int64_t kExecutedSweepIntervalMs = 60'000;

// Lifetimes of ephemeral and content keys come from each organization's policy (org_policy.h).
struct KmsServiceConfig {
  std::string host;                  // the KMS is kms://<host>
  std::string identity_key = "kms";  // name of the RSA identity key in every token
  // The chains certifying the tokens' identity keys, as LoadIdentityChains returns them
  // (identity_certificate.h); a token's key is published with the chain whose leaf certifies it,
  // and a key no chain certifies is not used. Empty: keys are published without x5c (tests).
  std::vector<IdentityChain> identity_chains;
  // Channel records, bound-key records and authorization decisions kept in memory (never key
  // material; see hot_path_cache.h). 0 entries turns it off.
  std::size_t metadata_cache_entries = 16384;
  std::chrono::milliseconds metadata_cache_age{30000};
  // Requests one channel may execute before it must be renegotiated (replay_guard.h).
  std::size_t max_requests_per_channel = kMaxRequestsPerChannel;
  // Signed checkpoints of the audit chain (audit_checkpoints.h): after this many records, or
  // this long after the last checkpoint when records wait; tests shorten them.
  std::int64_t audit_checkpoint_records = kAuditCheckpointRecords;
  std::chrono::milliseconds audit_checkpoint_interval = kAuditCheckpointInterval;
};

class AuditCheckpointer;
class AuditWriter;
class SearchKeys;
class KeyCache;
class Metrics;
namespace internal {
class KmsChannels;
struct SealedAnswer;
}  // namespace internal

// Optional collaborators, owned by the caller and outliving the service.
struct KmsServiceHooks {
  KeyCache* key_cache = nullptr;  // unwrapped content keys
  Metrics* metrics = nullptr;     // requests by operation and status, latencies
  // Unwrapped channel keys (the ECDHE secrets of live channels), needed for every sealed message
  // of a channel; null: they go into key_cache too. kmsd keeps them apart so that turning the
  // content-key cache off ([kms] key_cache_entries = 0) costs one HSM unwrap per retrieval, not
  // two.
  KeyCache* channel_key_cache = nullptr;
};

inline constexpr std::size_t kMaxKeysPerRequest = 100;
inline constexpr std::size_t kMaxIdsPerRequest = 1000;     // authIds, keyUris
inline constexpr std::size_t kMaxKeysPerRetrieval = 1000;  // retrieve /resources/<id>/keys
// retrieve /authorizations?authId=: resources per page, at most and by default.
inline constexpr std::size_t kMaxAuthorizationsPerPage = 1000;
inline constexpr std::size_t kDefaultAuthorizationsPerPage = 100;

// What goes back to the transport: a sealed reply (application/jose), or, when the message could
// not be opened at all, a plain JSON error ({"code","message"}) with an HTTP status.
struct KmsReply {
  int http_status = 200;
  std::string content_type;
  std::string body;
};

class KmsService {
 public:
  using Clock = std::function<std::int64_t()>;  // milliseconds since the epoch

  static Result<std::unique_ptr<KmsService>> New(KmsServiceConfig config, hsm::Vault& vault,
                                                 Database& db, JwtVerifier verifier,
                                                 Clock clock = {}, KmsServiceHooks hooks = {});
  ~KmsService();

  // Never throws; every failure becomes a protocol status or a JSON error.
  KmsReply Handle(std::string_view message);

  // The identity in service as published at GET /kms/info: {"kmsCluster", "rsaPublicKey"}. It
  // changes when its token fails (kms_identities.h).
  std::string InfoJson() const;
  jose::PublicJwk PublicKey() const;
  KmsIdentities& identities() const { return *identities_; }
  // Whether it can serve now: the database answers, a token is ready (serving_health.h).
  ServingHealth Health() const;

 private:
  KmsService(KmsServiceConfig config, hsm::Vault& vault, std::unique_ptr<KmsIdentities> identities,
             Database& db, JwtVerifier verifier, Clock clock, KmsServiceHooks hooks);

  // The request inside an opened message, executed for the channel's user; `unrecorded` holds the
  // record that it was executed until it is committed (with a write, or an audit record).
  internal::SealedAnswer Execute(const SecretBytes& plaintext, const EphemeralKeyRecord& ephemeral,
                                 std::optional<ExecutedRequest>* unrecorded,
                                 std::string* operation);

  struct Caller;  // the verified user of a sealed request
  struct Route;   // what a request's method and uri name
  Poco::JSON::Object Dispatch(const Caller& caller, const Route& route,
                              const Poco::JSON::Object& request);
  Poco::JSON::Object CreateKeys(const Caller& caller, const Poco::JSON::Object& request);
  // The hot path: its answer written directly (message_json.h), not through a Poco object.
  internal::SealedAnswer RetrieveKey(const Caller& caller, const std::string& uri);
  Poco::JSON::Object BindKey(const Caller& caller, const std::string& uri,
                             const Poco::JSON::Object& request);
  Poco::JSON::Object CreateResource(const Caller& caller, const Poco::JSON::Object& request);
  Poco::JSON::Object RetrieveResource(const Caller& caller, const std::string& resource);
  Poco::JSON::Object RetrieveResourceKeys(const Caller& caller, const std::string& resource,
                                          const Poco::JSON::Object& request);
  Poco::JSON::Object CreateAuthorizations(const Caller& caller, const Poco::JSON::Object& request);
  Poco::JSON::Object ListAuthorizations(const Caller& caller, const std::string& resource,
                                        const std::optional<std::string>& auth_id);
  Poco::JSON::Object DeleteAuthorization(const Caller& caller, const std::string& uri,
                                         const std::optional<std::string>& resource_and_auth_id);
  Poco::JSON::Object RetrieveSearchKey(const Caller& caller, const Route& route);
  Poco::JSON::Object ListUserAuthorizations(const Caller& caller,
                                            const std::optional<std::string>& auth_id,
                                            const Poco::JSON::Object& request);
  Result<SecretBytes> UnwrapCached(const std::string& org, const std::string& uri,
                                   const std::vector<hsm::TokenBlob>& blobs, KeyCache* cache);
  // Appends through the group-commit writer; returns once the record is durable.
  Status Audit(const Caller& caller, std::string action, std::string resource, std::string key,
               std::string outcome, std::string detail = {});

  const KmsServiceConfig config_;
  const std::string cluster_;  // kms://<host>
  hsm::Vault& vault_;
  const std::unique_ptr<KmsIdentities> identities_;
  Database& db_;
  const JwtVerifier verifier_;
  const Clock clock_;
  const KmsServiceHooks hooks_;
  // Destroyed after the writer, so the checkpoint signed at shutdown covers its last batch.
  std::unique_ptr<AuditCheckpointer> checkpoints_;
  std::unique_ptr<AuditWriter> audit_;
  std::unique_ptr<internal::KmsChannels> channels_;
  std::unique_ptr<SearchKeys> search_keys_;
  HotPathCache<KeyRecord> bound_keys_;
  HotPathCache<std::optional<std::string>> roles_;  // "<resource>\n<user>" → role
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_KMS_SERVICE_H_
