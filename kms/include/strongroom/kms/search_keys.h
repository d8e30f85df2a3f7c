// The organizations' search keys: one random 256-bit key per organization and version, from
// which the organization's indexer derives each room's search key (docs/architecture.md, "Search").
// The KMS makes them and keeps them only wrapped under the organization's root key on every token
// that serves it, exactly as a content key (KmsStore's search_keys and search_key_blobs; the
// binding is the key's URI kms://<host>/search-keys/<org>/<version>), so root-key rotation
// re-wraps them and reconciliation adds the wraps a token missed (rewrap_job.h, reconcile_job.h).
//
// Version 1 is made when the indexer first asks for the current key; an operator's rotation makes
// version n+1 the current one. Older versions stay retrievable (the indexer re-indexes with the new
// one and reads the old ones meanwhile). Who may retrieve them is the KMS service's rule (only the
// organization's indexer, kms_service.h); creation and rotation are audited here.
//
// Thread-safe: every call is one transaction of its own.
#ifndef STRONGROOM_KMS_SEARCH_KEYS_H_
#define STRONGROOM_KMS_SEARCH_KEYS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "strongroom/common/database.h"
#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/hsm/vault.h"
#include "strongroom/kms/kms_store.h"

namespace strongroom::kms {

class SearchKeys {
 public:
  using Clock = std::function<std::int64_t()>;  // milliseconds since the epoch

  // `cluster` is kms://<host>.
  SearchKeys(std::string cluster, hsm::Vault& vault, Database& db, Clock clock = {});

  // kms://<host>/search-keys/<org>/<version>; INVALID_ARGUMENT for an organization name that is
  // not a KMS URI segment (one with '.': such an organization has no search key).
  static Result<std::string> UriOf(const std::string& cluster, const std::string& org,
                                   std::uint32_t version);

  // The org's current version; version 1 is made (and "search-key.create" audited with `actor`)
  // when it has none.
  Result<SearchKeyRecord> Current(const std::string& org, const std::string& actor);
  // The org's version `version`; nullopt if it has no such version.
  Result<std::optional<SearchKeyRecord>> Find(const std::string& org, std::uint32_t version);
  // Makes version n+1 (1 when there is none) the current one; audited "search-key.rotate".
  Result<SearchKeyRecord> Rotate(const std::string& org, const std::string& actor);
  // The key itself, through the vault (the first token that opens it).
  Result<SecretBytes> Open(const SearchKeyRecord& key);

 private:
  // Makes the version after the org's newest; ALREADY_EXISTS if another call made it first.
  Result<SearchKeyRecord> Make(const std::string& org, const std::string& actor, const char* action,
                               std::optional<std::uint32_t> only_version);

  const std::string cluster_;
  hsm::Vault& vault_;
  Database& db_;
  const Clock clock_;
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_SEARCH_KEYS_H_
