#include "strongroom/kms/search_keys.h"

#include "strongroom/common/kms_uri.h"
#include "strongroom/common/rfc3339.h"
#include "strongroom/kms/audit_log.h"

namespace strongroom::kms {

SearchKeys::SearchKeys(std::string cluster, hsm::Vault& vault, Database& db, Clock clock)
    : cluster_(std::move(cluster)),
      vault_(vault),
      db_(db),
      clock_(clock ? std::move(clock) : Clock(UnixNowMs)) {}

Result<std::string> SearchKeys::UriOf(const std::string& cluster, const std::string& org,
                                      std::uint32_t version) {
  SR_RETURN_IF_ERROR(hsm::ValidateOrgName(org));
  Result<KmsUri> uri = KmsUri::Make(cluster, "search-keys", org, std::to_string(version));
  if (!uri.ok()) {
    return Error(ErrorCode::kInvalidArgument,
                 "organization " + org +
                     " has no search-key URI (a name with '.' is no URI "
                     "segment)");
  }
  return uri->ToString();
}

Result<SearchKeyRecord> SearchKeys::Make(const std::string& org, const std::string& actor,
                                         const char* action,
                                         std::optional<std::uint32_t> only_version) {
  std::optional<SearchKeyRecord> newest;
  const Status read = db_.WithSession([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(newest, KmsStore::FindSearchKey(s, org));
    return OkStatus();
  });
  if (!read.ok()) return read.error();
  const std::uint32_t version = newest ? newest->version + 1 : 1;
  if (version == 0) return Error(ErrorCode::kResourceExhausted, "no search-key version is left");
  if (only_version && version != *only_version) {
    return Error(ErrorCode::kAlreadyExists, "the search key was made meanwhile");
  }
  SearchKeyRecord key;
  SR_ASSIGN_OR_RETURN(key.uri, UriOf(cluster_, org, version));
  key.org = org;
  key.version = version;
  key.creator = actor;
  key.created_ms = clock_();
  // The HSM work outside the transaction, as for content keys.
  const SecretBytes material = SecretBytes::Random(hsm::kWrappedKeyPlainSize);
  SR_ASSIGN_OR_RETURN(hsm::WrapResult wrapped, vault_.Wrap({org, key.uri}, material.view()));
  key.blobs = std::move(wrapped.blobs);
  const Status stored = db_.InTransaction([&](Poco::Data::Session& s) -> Status {
    SR_RETURN_IF_ERROR(KmsStore::InsertSearchKey(s, key));
    AuditRecord record;
    record.at_ms = key.created_ms;
    record.org = org;
    record.actor = actor;
    record.action = action;
    record.key = key.uri;
    record.outcome = "ok";
    record.detail = "search key version " + std::to_string(version) + " is current";
    return AuditLog::Append(s, record);
  });
  if (!stored.ok()) return stored.error();
  return key;
}

Result<SearchKeyRecord> SearchKeys::Current(const std::string& org, const std::string& actor) {
  std::optional<SearchKeyRecord> current;
  const Status read = db_.WithSession([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(current, KmsStore::FindSearchKey(s, org));
    return OkStatus();
  });
  if (!read.ok()) return read.error();
  if (current) return *std::move(current);
  Result<SearchKeyRecord> made = Make(org, actor, "search-key.create", 1);
  if (made.ok() || made.error().code() != ErrorCode::kAlreadyExists) return made;
  // Another request (or node) made version 1 first: that one is current.
  const Status reread = db_.WithSession([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(current, KmsStore::FindSearchKey(s, org));
    return OkStatus();
  });
  if (!reread.ok()) return reread.error();
  if (!current) return Error(ErrorCode::kInternal, "the search key vanished");
  return *std::move(current);
}

Result<std::optional<SearchKeyRecord>> SearchKeys::Find(const std::string& org,
                                                        std::uint32_t version) {
  std::optional<SearchKeyRecord> found;
  const Status read = db_.WithSession([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(found, KmsStore::FindSearchKey(s, org, version));
    return OkStatus();
  });
  if (!read.ok()) return read.error();
  return found;
}

Result<SearchKeyRecord> SearchKeys::Rotate(const std::string& org, const std::string& actor) {
  SR_RETURN_IF_ERROR(hsm::ValidateOrgName(org));
  Result<SearchKeyRecord> made = Make(org, actor, "search-key.rotate", std::nullopt);
  if (!made.ok()) {
    // The refusal is audited too, in a transaction of its own.
    (void)db_.InTransaction([&](Poco::Data::Session& s) -> Status {
      AuditRecord record;
      record.at_ms = clock_();
      record.org = org;
      record.actor = actor;
      record.action = "search-key.rotate";
      record.outcome = "failed";
      record.detail = made.error().ToString().substr(0, 1024);
      return AuditLog::Append(s, record);
    });
  }
  return made;
}

Result<SecretBytes> SearchKeys::Open(const SearchKeyRecord& key) {
  return vault_.Unwrap({key.org, key.uri}, key.blobs);
}

}  // namespace strongroom::kms
