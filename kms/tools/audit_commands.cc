#include "audit_commands.h"

#include <Poco/AutoPtr.h>
#include <Poco/DateTimeFormat.h>
#include <Poco/DateTimeFormatter.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Object.h>
#include <Poco/NumberParser.h>
#include <Poco/Util/IniFileConfiguration.h>

#include <cstdio>
#include <vector>

#include "strongroom/common/config_file.h"
#include "strongroom/common/database_settings.h"
#include "strongroom/common/rfc3339.h"
#include "strongroom/hsm/key_vault.h"
#include "strongroom/kms/audit_checkpoints.h"
#include "strongroom/kms/audit_log.h"
#include "strongroom/kms/hsm_settings.h"
#include "strongroom/kms/kms_store.h"

namespace strongroom::kms {
namespace {

Result<std::unique_ptr<Database>> OpenKmsDatabase(const Poco::Util::AbstractConfiguration& config) {
  SR_ASSIGN_OR_RETURN(DatabaseSettings settings, ReadDatabaseSettings(config, "kms"));
  return OpenDatabase(settings, KmsStore::Migrations(), KmsStore::PostgresMigrations());
}

// The identity keys' public halves, from the tokens of the [hsm] sections (each token has its own,
// and the one in service signs; kms_identities.h); none when the configuration has no [hsm]
// section. The database cannot supply them: whoever rewrites the log could rewrite a key stored
// beside it.
struct IdentityKeys {
  bool configured = false;  // the configuration has [hsm] sections
  std::vector<hsm::RsaPublicKey> keys;
  std::vector<std::string> tokens;      // the tokens they are in
  std::vector<std::string> unreadable;  // why a token's key could not be read
};
Result<IdentityKeys> LoadIdentityKeys(const Poco::Util::AbstractConfiguration& config) {
  IdentityKeys out;
  if (!config.hasProperty("hsm.tokens")) return out;
  out.configured = true;
  SR_ASSIGN_OR_RETURN(hsm::HsmConfig hsm_config, ReadHsmSettings(config));
  const std::string name =
      config.hasProperty("kms.identity_key") ? SettingText(config, "kms.identity_key") : "kms";
  std::vector<std::unique_ptr<hsm::Token>> opened;  // kept open: the modules stay loaded
  std::optional<Error> first_failure;
  for (const hsm::TokenConfig& token_config : hsm_config.tokens) {
    Result<std::unique_ptr<hsm::Token>> token = hsm::Token::Open(token_config);
    Result<hsm::RsaPublicKey> key =
        token.ok() ? (*token)->IdentityPublicKey(name) : Result<hsm::RsaPublicKey>(token.error());
    if (token.ok()) opened.push_back(std::move(token).value());
    if (key.ok()) {
      out.keys.push_back(std::move(key).value());
      out.tokens.push_back(token_config.name);
    } else if (key.error().code() != ErrorCode::kNotFound || !token.ok()) {
      out.unreadable.push_back("token '" + token_config.name + "': " + key.error().message());
      if (!first_failure) first_failure = key.error();
    }
  }
  if (out.keys.empty() && first_failure) return *first_failure;
  if (out.keys.empty()) {
    return Error(ErrorCode::kNotFound, "no token holds identity key " + name);
  }
  return out;
}

Status Verify(const Poco::Util::AbstractConfiguration& config, Database& db, std::ostream& out);

Result<std::optional<std::int64_t>> ParseTime(const std::string& text, const char* flag) {
  if (text.empty()) return std::optional<std::int64_t>();
  std::optional<std::int64_t> ms = ParseRfc3339Ms(text);
  if (!ms) {
    return Error(ErrorCode::kInvalidArgument,
                 std::string("--") + flag + " must be RFC 3339, e.g. 2026-11-25T12:00:00Z");
  }
  return ms;
}

std::string Hex(const AuditHash& hash) {
  std::string out;
  char b[3];
  for (std::uint8_t byte : hash) {
    std::snprintf(b, sizeof b, "%02x", byte);
    out += b;
  }
  return out;
}

// A field as one line of text: a backslash and every control character escaped (\n, \t, \xHH),
// so that no field, whatever a client put in it, can start a line of its own in the output.
std::string Escaped(const std::string& field) {
  std::string out;
  out.reserve(field.size());
  for (char c : field) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (byte < 0x20 || byte == 0x7f) {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", byte);
      out += hex;
    } else {
      out += c;
    }
  }
  return out;
}

std::string Rfc3339(std::int64_t ms) {
  return Poco::DateTimeFormatter::format(Poco::Timestamp(ms * 1000),
                                         Poco::DateTimeFormat::ISO8601_FRAC_FORMAT);
}

Status Verify(const Poco::Util::AbstractConfiguration& config, Database& db, std::ostream& out) {
  SR_ASSIGN_OR_RETURN(IdentityKeys identity, LoadIdentityKeys(config));
  const std::string kms =
      config.hasProperty("kms.host") ? "kms://" + SettingText(config, "kms.host") : "";
  SR_ASSIGN_OR_RETURN(CheckpointVerdict verdict,
                      AuditCheckpoints::Verify(db, identity.keys, kms,
                                               /*keys_incomplete=*/!identity.unreadable.empty()));
  if (!verdict.chain.ok()) {
    return Error(ErrorCode::kDataLoss, "audit log broken at record " +
                                           std::to_string(*verdict.chain.bad_seq) + ": " +
                                           verdict.chain.problem);
  }
  if (!verdict.problem.empty()) {
    return Error(ErrorCode::kDataLoss,
                 "audit log fails its signed checkpoints: " + verdict.problem);
  }
  if (verdict.unverifiable > 0 && !identity.unreadable.empty()) {
    // Signed by the identity of a token that is down now, maybe: not proven, not disproven.
    std::string unread;
    for (const std::string& why : identity.unreadable) unread += "; " + why;
    return Error(ErrorCode::kUnavailable,
                 std::to_string(verdict.unverifiable) +
                     " signed checkpoint(s) name an identity key kmsctl could not read; check "
                     "again once every token is back" +
                     unread);
  }
  if (verdict.unverifiable > 0) {
    return Error(ErrorCode::kFailedPrecondition,
                 "the audit log has " + std::to_string(verdict.unverifiable) +
                     " signed checkpoints and kmsctl has no identity key to check them: use a "
                     "configuration with kmsd's [hsm] sections");
  }
  out << "audit log intact: " << verdict.chain.records << " records, head "
      << Hex(verdict.chain.head) << "\n";
  if (verdict.last) {
    std::string tokens;
    for (const std::string& token : identity.tokens) {
      tokens += (tokens.empty() ? "'" : ", '") + token + "'";
    }
    out << "signed: records 1 to " << verdict.last->seq << " are as the identity key"
        << (identity.tokens.size() == 1 ? " in token " : "s in tokens ") << tokens
        << " signed them at " << Rfc3339(verdict.last->signed_ms) << " (" << verdict.checkpoints
        << " checkpoint(s) checked)\n";
  } else {
    out << "signed: no checkpoint"
        << (identity.configured ? "" : " (no [hsm] section: no identity key to check one with)")
        << "\n";
  }
  out << "unsigned: " << verdict.unsigned_records
      << " records after the last checkpoint; nothing proves they are as written\n";
  return OkStatus();
}

}  // namespace

Status RunAuditCommand(const std::vector<std::string>& args, const CtlOptions& options,
                       const AuditOptions& audit, std::ostream& out) {
  if (args.size() != 1) {
    return Error(ErrorCode::kInvalidArgument, "audit needs one subcommand: verify or query");
  }
  if (args[0] != "verify" && args[0] != "query") {
    return Error(ErrorCode::kInvalidArgument, "unknown audit subcommand '" + args[0] + "'");
  }
  AuditFilter filter;
  if (args[0] == "query") {
    if (!audit.user.empty()) filter.user = audit.user;  // and what officers did on their behalf
    if (!audit.resource.empty()) filter.resource = audit.resource;
    SR_ASSIGN_OR_RETURN(filter.from_ms, ParseTime(audit.from, "from"));
    SR_ASSIGN_OR_RETURN(filter.to_ms, ParseTime(audit.to, "to"));
    if (!audit.limit.empty()) {
      unsigned limit = 0;
      if (!Poco::NumberParser::tryParseUnsigned(audit.limit, limit) || limit == 0 ||
          limit > kMaxAuditQuery) {
        return Error(ErrorCode::kInvalidArgument, "--limit must be 1 to 1000");
      }
      filter.limit = limit;
    }
  }
  SR_ASSIGN_OR_RETURN(auto config, LoadConfigFile(options.config_path));
  SR_ASSIGN_OR_RETURN(std::unique_ptr<Database> db, OpenKmsDatabase(*config));
  if (args[0] == "verify") return Verify(*config, *db, out);
  SR_ASSIGN_OR_RETURN(std::vector<AuditRecord> records, AuditLog::Query(*db, filter));
  if (audit.json) {  // one JSON object a line; the JSON writer escapes every field
    for (const AuditRecord& r : records) {
      Poco::JSON::Object record;
      record.set("seq", r.seq);
      record.set("at", Rfc3339(r.at_ms));
      record.set("org", r.org);
      record.set("actor", r.actor);
      record.set("action", r.action);
      record.set("outcome", r.outcome);
      record.set("resource", r.resource);
      record.set("key", r.key);
      record.set("detail", r.detail);
      record.stringify(out);
      out << "\n";
    }
    return OkStatus();
  }
  for (const AuditRecord& r : records) {
    out << r.seq << "  " << Rfc3339(r.at_ms) << "  " << Escaped(r.org) << "  " << Escaped(r.actor)
        << "  " << Escaped(r.action) << "  " << Escaped(r.outcome);
    if (!r.resource.empty()) out << "  resource=" << Escaped(r.resource);
    if (!r.key.empty()) out << "  key=" << Escaped(r.key);
    if (!r.detail.empty()) out << "  (" << Escaped(r.detail) << ")";
    out << "\n";
  }
  return OkStatus();
}

}  // namespace strongroom::kms
