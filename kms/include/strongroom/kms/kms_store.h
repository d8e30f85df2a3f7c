// The KMS's objects in the database: resources (KROs), keys with their wrapped blobs, and
// authorizations, as the KMS protocol defines them. Every function runs on a session inside the
// caller's transaction (Database::InTransaction), so a protocol request that touches several
// objects is all-or-nothing. The protocol's rules (who may bind, who may retrieve) live in the
// KMS service above; this layer keeps the data consistent (a key is bound at most once, one
// authorization per resource and authId) and answers the authorization question, including
// authorizations inherited through another resource's URI used as an authId.
//
// Key material is stored only as blobs wrapped by the HSM layer (one per token); nothing here
// sees a plaintext key.
#ifndef STRONGROOM_KMS_KMS_STORE_H_
#define STRONGROOM_KMS_KMS_STORE_H_

#include <Poco/Data/Session.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "strongroom/common/database.h"
#include "strongroom/common/error.h"
#include "strongroom/hsm/vault.h"

namespace strongroom::kms {

inline constexpr int kMaxInheritanceDepth = 4;  // resource → resource authIds followed at most

struct ResourceRecord {
  std::string uri;  // kms://<host>/resources/<uuid>
  std::string org;
  std::string creator;
  std::int64_t created_ms = 0;
  std::optional<std::int64_t> expires_ms;
};

struct KeyRecord {
  std::string uri;  // kms://<host>/keys/<uuid>
  std::string org;
  std::string creator;
  std::string client_id;
  std::int64_t created_ms = 0;
  std::int64_t bind_deadline_ms = 0;  // an unbound key expires then
  std::optional<std::string> resource_uri;
  std::optional<std::int64_t> bound_ms;
  std::optional<std::int64_t> stop_encrypt_ms;
  std::vector<hsm::TokenBlob> blobs;  // the key wrapped under each token's root key
};

struct AuthorizationRecord {
  std::string uri;  // kms://<host>/authorizations/<uuid>
  std::string resource_uri;
  std::string auth_id;  // a user id, or another resource's URI (inherited membership)
  std::string role;     // "participant", "cloudAgent" or "orgAgent"
  std::string creator;
  std::int64_t created_ms = 0;
};

struct EphemeralKeyRecord {
  std::string uri;  // kms://<host>/ecdhe/<uuid>
  std::string org;
  std::string user_id;
  std::string client_id;
  std::int64_t created_ms = 0;
  std::int64_t expires_ms = 0;
  bool deleted = false;
  std::vector<hsm::TokenBlob> blobs;  // the derived channel key, wrapped
};

// A sealed request a channel has executed (replay_guard.h): the channel's URI and the message's
// IV and tag (28 bytes, as ReplayGuard::MessageId), and the channel's owner and creation time.
// It is stored in the audit row of the request when it has one that the channel's owner made
// since the channel's creation (where ExecutedRequestsOf looks), else in executed_requests.
struct ExecutedRequest {
  std::string channel;
  std::string message;
  std::int64_t executed_ms = 0;
  std::string org;   // the channel's owner
  std::string user;  //
  std::int64_t channel_created_ms = 0;
};

// An organization's search key (the indexer's, docs/architecture.md): one 256-bit key per version,
// stored only wrapped under the organization's root keys, one blob per token, as a content key is
// (bound to its URI). The newest version is the current one; older versions stay.
struct SearchKeyRecord {
  std::string uri;  // kms://<host>/search-keys/<org>/<version>
  std::string org;
  std::uint32_t version = 0;  // 1, 2, ...
  std::string creator;        // the indexer that asked first (version 1), or the operator
  std::int64_t created_ms = 0;
  std::vector<hsm::TokenBlob> blobs;
};

// A resource on which a user is authorized, directly or through a resource named as an authId;
// `role` is the user's own role where the membership starts (the nearest, as RoleOf has it).
struct UserAuthorization {
  std::string resource_uri;
  std::string role;
};

// How many blobs in the database one token's root-key version of an organization wraps.
struct RootVersionUse {
  std::string token;
  std::uint32_t version = 0;
  std::int64_t keys = 0;          // key_blobs of the org's keys, and its search keys' blobs
  std::int64_t channel_keys = 0;  // ephemeral_blobs of the org's live (unexpired) channels
};

struct KeyQuery {
  std::optional<std::int64_t> bound_after_ms;   // exclusive
  std::optional<std::int64_t> bound_before_ms;  // exclusive
  std::size_t count = 100;                      // the newest `count` by bind date, 1 to 1000
};

class KmsStore {
 public:
  // The KMS schema, in order (the audit log is migration 1): SQLite's, and PostgreSQL's (the same
  // tables, versions and constraints in PostgreSQL's types: BIGINT for INTEGER, BYTEA for BLOB).
  // The functions below write one SQL text for both.
  static std::vector<Migration> Migrations();
  static std::vector<Migration> PostgresMigrations();

  static Status InsertResource(Poco::Data::Session& s, const ResourceRecord& resource);
  static Result<std::optional<ResourceRecord>> FindResource(Poco::Data::Session& s,
                                                            const std::string& uri);

  static Status InsertKeys(Poco::Data::Session& s, const std::vector<KeyRecord>& keys);
  static Result<std::optional<KeyRecord>> FindKey(Poco::Data::Session& s, const std::string& uri);
  // Binds an unbound key; FAILED_PRECONDITION if it is bound already (never re-bound).
  static Status BindKey(Poco::Data::Session& s, const std::string& key_uri,
                        const std::string& resource_uri, std::int64_t bound_ms,
                        std::int64_t stop_encrypt_ms);
  static Result<std::vector<KeyRecord>> KeysOfResource(Poco::Data::Session& s,
                                                       const std::string& resource_uri,
                                                       const KeyQuery& query);
  // Replaces the blob a token holds for a key (root-key rotation, backfill after an outage).
  static Status PutBlob(Poco::Data::Session& s, const std::string& key_uri,
                        const hsm::TokenBlob& blob);
  // Adds the blob a token lacks for a key or a channel key (reconciliation); a blob the token has
  // already is kept, and false returned.
  static Result<bool> AddMissingBlob(Poco::Data::Session& s, const std::string& key_uri,
                                     const hsm::TokenBlob& blob);
  static Result<bool> AddMissingEphemeralBlob(Poco::Data::Session& s, const std::string& uri,
                                              const hsm::TokenBlob& blob);

  static Status InsertEphemeralKey(Poco::Data::Session& s, const EphemeralKeyRecord& key);
  static Result<std::optional<EphemeralKeyRecord>> FindEphemeralKey(Poco::Data::Session& s,
                                                                    const std::string& uri);
  // Marks the key deleted; it is kept so a message under it is refused as "deleted".
  static Status DeleteEphemeralKey(Poco::Data::Session& s, const std::string& uri);

  // Records the requests: one row per channel, its messages (all of one size) end to end.
  static Status InsertExecutedRequests(Poco::Data::Session& s,
                                       std::span<const ExecutedRequest> requests);
  // The messages (`message_bytes` each) a channel has executed: those of executed_requests, and
  // those that audit rows of its owner since its creation carry.
  static Result<std::vector<std::string>> ExecutedRequestsOf(Poco::Data::Session& s,
                                                             const EphemeralKeyRecord& channel,
                                                             std::size_t message_bytes);
  // Forgets the requests of channels that expired before `now_ms` or were deleted: such channels
  // are refused before any request is looked up. Returns how many records went.
  static Result<std::int64_t> DeleteSpentExecutedRequests(Poco::Data::Session& s,
                                                          std::int64_t now_ms);

  // ALREADY_EXISTS if an authId is authorized on the resource already.
  static Status InsertAuthorizations(Poco::Data::Session& s,
                                     const std::vector<AuthorizationRecord>& authorizations);
  static Result<std::vector<AuthorizationRecord>> Authorizations(
      Poco::Data::Session& s, const std::string& resource_uri,
      const std::optional<std::string>& auth_id = std::nullopt);
  static Result<std::optional<AuthorizationRecord>> FindAuthorization(Poco::Data::Session& s,
                                                                      const std::string& uri);
  // NOT_FOUND if there is no such authorization.
  static Status DeleteAuthorization(Poco::Data::Session& s, const std::string& uri);
  // The role under which `user` is authorized on the resource, directly or through resources
  // named as authIds (followed up to kMaxInheritanceDepth; cycles are harmless), or nullopt.
  static Result<std::optional<std::string>> RoleOf(Poco::Data::Session& s,
                                                   const std::string& resource_uri,
                                                   const std::string& user);

  // Search keys. ALREADY_EXISTS if the org has that version already (two nodes making version 1
  // at once: the loser reads the winner's).
  static Status InsertSearchKey(Poco::Data::Session& s, const SearchKeyRecord& key);
  // The org's version `version`, or its newest when none is given; nullopt if there is none.
  static Result<std::optional<SearchKeyRecord>> FindSearchKey(
      Poco::Data::Session& s, const std::string& org,
      std::optional<std::uint32_t> version = std::nullopt);
  // As PutBlob and AddMissingBlob, for a search key's blobs.
  static Status PutSearchKeyBlob(Poco::Data::Session& s, const std::string& uri,
                                 const hsm::TokenBlob& blob);
  static Result<bool> AddMissingSearchKeyBlob(Poco::Data::Session& s, const std::string& uri,
                                              const hsm::TokenBlob& blob);

  // The resources of `org` on which `user` is authorized (as RoleOf answers it), in URI order,
  // those after `after` (exclusive; empty: from the first), at most `limit` (1 to 1000); `more`
  // says whether others follow.
  static Result<std::vector<UserAuthorization>> ResourcesOf(Poco::Data::Session& s,
                                                            const std::string& org,
                                                            const std::string& user,
                                                            const std::string& after,
                                                            std::size_t limit, bool* more);

  // Per token and root-key version, the blobs of `org` wrapped under it (channels live at
  // `now_ms`), ordered by token and version; a version nothing is wrapped under is absent.
  static Result<std::vector<RootVersionUse>> RootVersionUses(Poco::Data::Session& s,
                                                             const std::string& org,
                                                             std::int64_t now_ms);
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_KMS_STORE_H_
