#include "hsm_commands.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include "strongroom/common/config_file.h"
#include "strongroom/common/database.h"
#include "strongroom/common/database_settings.h"
#include "strongroom/common/rfc3339.h"
#include "strongroom/hsm/ck_result.h"
#include "strongroom/hsm/key_vault.h"
#include "strongroom/hsm/slot_inventory.h"
#include "strongroom/hsm/token_uri.h"
#include "strongroom/kms/hsm_settings.h"
#include "strongroom/kms/identity_certificate.h"
#include "strongroom/kms/kms_store.h"

namespace strongroom::kms {
namespace {

std::string MechanismFlags(CK_FLAGS flags) {
  std::string out;
  const std::pair<CK_FLAGS, const char*> names[] = {
      {CKF_ENCRYPT, "encrypt"}, {CKF_DECRYPT, "decrypt"},   {CKF_SIGN, "sign"},
      {CKF_VERIFY, "verify"},   {CKF_GENERATE, "generate"}, {CKF_GENERATE_KEY_PAIR, "keypair"},
      {CKF_WRAP, "wrap"},       {CKF_UNWRAP, "unwrap"},     {CKF_DERIVE, "derive"},
      {CKF_DIGEST, "digest"}};
  for (const auto& [flag, name] : names) {
    if (flags & flag) {
      if (!out.empty()) out += ' ';
      out += name;
    }
  }
  return out;
}

Status Slots(const CtlOptions& options, std::ostream& out) {
  std::vector<std::string> modules;
  if (!options.module.empty()) {
    modules.push_back(options.module);
  } else {
    SR_ASSIGN_OR_RETURN(hsm::HsmConfig config, LoadHsmSettings(options.config_path));
    std::set<std::string> seen;
    for (const hsm::TokenConfig& token : config.tokens) {
      SR_ASSIGN_OR_RETURN(hsm::TokenUri uri, hsm::TokenUri::Parse(token.uri));
      if (seen.insert(uri.module_path()).second) modules.push_back(uri.module_path());
    }
  }
  for (const std::string& path : modules) {
    SR_ASSIGN_OR_RETURN(std::shared_ptr<hsm::Module> module, hsm::Module::Load(path));
    SR_ASSIGN_OR_RETURN(std::vector<hsm::SlotDescription> slots, hsm::ListSlots(*module));
    out << "module " << path << ": " << slots.size() << " slot(s)\n";
    for (const hsm::SlotDescription& slot : slots) {
      out << "  slot " << slot.id << " (" << slot.description << ")";
      if (!slot.token_present) {
        out << ": no token\n";
        continue;
      }
      if (!slot.token_initialized) {
        out << ": uninitialized token\n";
        continue;
      }
      out << ": token '" << slot.label << "' " << slot.manufacturer << " / " << slot.model
          << ", serial " << slot.serial;
      if (slot.token_flags & CKF_USER_PIN_LOCKED) out << ", USER PIN LOCKED";
      out << "\n    uri: pkcs11:token=" << slot.label << ";serial=" << slot.serial << "\n";
      for (const hsm::MechanismDescription& m : slot.mechanisms) {
        out << "    " << m.name << " [" << MechanismFlags(m.info.flags) << "]";
        if (m.info.ulMaxKeySize != 0) {
          out << " key " << m.info.ulMinKeySize << "-" << m.info.ulMaxKeySize;
        }
        out << "\n";
      }
    }
  }
  return OkStatus();
}

Status InitToken(const CtlOptions& options, std::ostream& out) {
  if (options.module.empty() || options.label.empty() || options.pin_source.empty() ||
      options.so_pin_source.empty()) {
    return Error(ErrorCode::kInvalidArgument,
                 "hsm init-token needs --module, --label, --so-pin-source and --pin-source");
  }
  SR_ASSIGN_OR_RETURN(SecretBytes so_pin, hsm::ReadPin(options.so_pin_source));
  SR_ASSIGN_OR_RETURN(SecretBytes user_pin, hsm::ReadPin(options.pin_source));
  SR_ASSIGN_OR_RETURN(std::shared_ptr<hsm::Module> module, hsm::Module::Load(options.module));
  SR_ASSIGN_OR_RETURN(CK_SLOT_ID slot,
                      hsm::InitializeToken(*module, options.label, so_pin, user_pin));
  out << "initialized token '" << options.label << "' in slot " << slot << "\n";
  return OkStatus();
}

void PrintUse(const RootVersionUse& use, std::ostream& out) {
  out << "  keys=" << use.keys << "  channel-keys=" << use.channel_keys;
}

// `use`: what the KMS database holds wrapped under this version, when there is a database.
void PrintRoot(const hsm::RootKeyInfo& key, bool current, std::ostream& out,
               const RootVersionUse* use = nullptr) {
  out << "  " << key.token << "  " << key.id.org << " v" << key.id.version
      << (current ? " (current)" : "") << "  label=" << key.label
      << "  sensitive=" << (key.sensitive ? "yes" : "NO")
      << "  extractable=" << (key.extractable ? "YES" : "no")
      << "  generated-in-token=" << (key.local ? "yes" : "NO")
      << "  wraps-reserved=" << key.wraps_reserved;
  if (use != nullptr) PrintUse(*use, out);
  out << "\n";
}

// With a database in the configuration ([kms] database or [database]), what the database holds of
// `org` per token and root version; nullopt without one. A database that is not there yet holds
// nothing (it is not made).
Result<std::optional<std::vector<RootVersionUse>>> RootVersionUsesOf(const CtlOptions& options,
                                                                     const std::string& org) {
  SR_ASSIGN_OR_RETURN(auto config, LoadConfigFile(options.config_path));
  if (!NamesDatabase(*config, "kms")) return std::optional<std::vector<RootVersionUse>>();
  SR_ASSIGN_OR_RETURN(DatabaseSettings settings, ReadDatabaseSettings(*config, "kms"));
  std::error_code ignored;
  if (settings.engine == Database::Engine::kSqlite &&
      !std::filesystem::exists(settings.path, ignored)) {
    return std::optional<std::vector<RootVersionUse>>(std::vector<RootVersionUse>());
  }
  SR_ASSIGN_OR_RETURN(std::unique_ptr<Database> db, OpenDatabase(settings, KmsStore::Migrations(),
                                                                 KmsStore::PostgresMigrations()));
  std::vector<RootVersionUse> uses;
  SR_RETURN_IF_ERROR(db->WithSession([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(uses, KmsStore::RootVersionUses(s, org, UnixNowMs()));
    return OkStatus();
  }));
  return std::optional<std::vector<RootVersionUse>>(std::move(uses));
}

Result<std::unique_ptr<hsm::KeyVault>> OpenVault(const CtlOptions& options) {
  SR_ASSIGN_OR_RETURN(hsm::HsmConfig config, LoadHsmSettings(options.config_path));
  config.probe_interval = std::chrono::milliseconds(0);  // one command, then exit: no probe
  return hsm::KeyVault::Open(config);
}

Status RootCommand(const std::string& verb, const CtlOptions& options, std::ostream& out) {
  if (options.org.empty()) {
    return Error(ErrorCode::kInvalidArgument, "hsm " + verb + " needs --org ORG");
  }
  SR_RETURN_IF_ERROR(hsm::ValidateOrgName(options.org));
  SR_ASSIGN_OR_RETURN(std::unique_ptr<hsm::KeyVault> vault, OpenVault(options));
  if (verb == "roots") {
    SR_ASSIGN_OR_RETURN(std::vector<hsm::RootKeySet> sets, vault->ListRoots(options.org));
    SR_ASSIGN_OR_RETURN(std::optional<std::vector<RootVersionUse>> uses,
                        RootVersionUsesOf(options, options.org));
    auto use_of = [&](const std::string& token, std::uint32_t version) {
      RootVersionUse found{token, version, 0, 0};
      for (const RootVersionUse& u : uses.value_or(std::vector<RootVersionUse>())) {
        if (u.token == token && u.version == version) found = u;
      }
      return found;
    };
    out << "root keys of " << options.org << ":\n";
    for (const hsm::RootKeySet& set : sets) {
      if (set.keys.empty()) out << "  " << set.token << "  (none)\n";
      for (const hsm::RootKeyInfo& key : set.keys) {
        const RootVersionUse use = use_of(key.token, key.id.version);
        PrintRoot(key, &key == &set.keys.back(), out, uses ? &use : nullptr);
      }
    }
    // Blobs under a version its token does not hold (deleted, or another token's name): that
    // token can never unwrap them.
    for (const RootVersionUse& u : uses.value_or(std::vector<RootVersionUse>())) {
      bool held = false;
      for (const hsm::RootKeySet& set : sets) {
        for (const hsm::RootKeyInfo& key : set.keys) {
          held = held || (key.token == u.token && key.id.version == u.version);
        }
      }
      if (held) continue;
      out << "  " << u.token << "  " << options.org << " v" << u.version << "  NOT IN THE TOKEN";
      PrintUse(u, out);
      out << "\n";
    }
    return OkStatus();
  }
  if (verb == "rotate-root") {
    // With a KMS database, keys wrapped under the old version must be re-wrapped and the
    // rotation audited: that is the operations API's job, not a bare token operation.
    Result<Poco::AutoPtr<Poco::Util::IniFileConfiguration>> config =
        LoadConfigFile(options.config_path);
    if (config.ok() && NamesDatabase(**config, "kms")) {
      Result<DatabaseSettings> database = ReadDatabaseSettings(**config, "kms");
      return Error(ErrorCode::kFailedPrecondition,
                   "this KMS keeps keys in " +
                       (database.ok() ? database->Describe() : std::string("a database")) +
                       ": rotate with `kmsctl ops rotate-root " + options.org +
                       "`, which audits the rotation and re-wraps every key");
    }
  }
  Result<std::vector<hsm::RootKeyInfo>> created =
      verb == "init-root" ? vault->InitRoot(options.org) : vault->RotateRoot(options.org);
  if (!created.ok()) return created.error();
  out << (verb == "init-root" ? "created" : "rotated to") << " root key of " << options.org
      << ":\n";
  for (const hsm::RootKeyInfo& key : *created) PrintRoot(key, true, out);
  return OkStatus();
}

// The identity key's name: kmsd's [kms] identity_key, "kms" by default.
std::string IdentityKeyName(const CtlOptions& options) {
  if (Result<Poco::AutoPtr<Poco::Util::IniFileConfiguration>> file =
          LoadConfigFile(options.config_path);
      file.ok() && (*file)->hasProperty("kms.identity_key")) {
    return SettingText(**file, "kms.identity_key");
  }
  return "kms";
}

// The configured tokens an identity command works on: all, or the one --token names.
Result<std::vector<hsm::TokenConfig>> IdentityTokens(const CtlOptions& options) {
  SR_ASSIGN_OR_RETURN(hsm::HsmConfig config, LoadHsmSettings(options.config_path));
  if (options.token.empty()) return config.tokens;
  for (const hsm::TokenConfig& token : config.tokens) {
    if (token.name == options.token) return std::vector<hsm::TokenConfig>{token};
  }
  return Error(ErrorCode::kInvalidArgument,
               "--token " + options.token + ": no such token in [hsm] tokens");
}

std::string ModulusDigest(const hsm::RsaPublicKey& key) {
  unsigned char digest[32];
  unsigned int len = 0;
  EVP_Digest(key.modulus.data(), key.modulus.size(), digest, &len, EVP_sha256(), nullptr);
  std::string out;
  char hex[3];
  for (unsigned i = 0; i < len; ++i) {
    std::snprintf(hex, sizeof hex, "%02x", digest[i]);
    out += hex;
  }
  return out;
}

// The failure of a command that works token by token: the first error's code, naming them all.
Error TokensFailed(const std::vector<std::string>& failed, std::size_t of, const Error& first) {
  std::string names;
  for (const std::string& name : failed) names += (names.empty() ? "" : ", ") + name;
  return Error(first.code(), std::to_string(failed.size()) + " of " + std::to_string(of) +
                                 " token(s) failed (" + names + "): " + first.message());
}

// An identity key in each token that lacks one (private keys never leave a token, so each token
// has its own; kms_identities.h). Tokens that hold one already are left as they are.
Status InitIdentity(const CtlOptions& options, std::ostream& out) {
  SR_ASSIGN_OR_RETURN(std::vector<hsm::TokenConfig> configs, IdentityTokens(options));
  const std::string key_name = IdentityKeyName(options);
  std::vector<std::unique_ptr<hsm::Token>> opened;  // kept open: the modules stay loaded
  std::optional<Error> first_failure, first_existing;
  std::vector<std::string> failed;
  int created = 0;
  for (const hsm::TokenConfig& config : configs) {
    Result<std::unique_ptr<hsm::Token>> token = hsm::Token::Open(config);
    Result<hsm::RsaPublicKey> key = token.ok() ? (*token)->CreateIdentityKey(key_name)
                                               : Result<hsm::RsaPublicKey>(token.error());
    if (token.ok()) opened.push_back(std::move(token).value());
    if (key.ok()) {
      ++created;
      out << "created the KMS identity key (RSA-" << key->modulus.size() * 8 << ") in token '"
          << config.name << "'; modulus SHA-256 " << ModulusDigest(*key) << "\n";
    } else if (key.error().code() == ErrorCode::kAlreadyExists) {
      out << "token '" << config.name << "' already holds identity key " << key_name << "\n";
      if (!first_existing) first_existing = key.error();
    } else {
      out << "token '" << config.name << "': FAILED: " << key.error().message() << "\n";
      failed.push_back(config.name);
      if (!first_failure) first_failure = key.error();
    }
  }
  if (first_failure) return TokensFailed(failed, configs.size(), *first_failure);
  if (created == 0 && first_existing) return *first_existing;
  return OkStatus();
}

// Reads a PEM file of at most kMaxPemFileBytes into zeroized memory.
Result<SecretBytes> ReadPemFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error(ErrorCode::kNotFound, "cannot read " + path);
  SecretBytes buffer(kMaxPemFileBytes + 1);
  std::span<std::uint8_t> bytes = buffer.mutable_view();
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  const auto size = static_cast<std::size_t>(in.gcount());
  if (size > kMaxPemFileBytes) {
    return Error(ErrorCode::kInvalidArgument,
                 path + " is larger than " + std::to_string(kMaxPemFileBytes) + " bytes");
  }
  buffer.Truncate(size);
  return buffer;
}

// Writes `content` to `path` through a temporary file and a rename, so a reader never sees half.
Status WriteFileAtomically(const std::string& path, const std::string& content, mode_t mode) {
  const std::string temporary = path + ".tmp";
  int fd = open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) {
    return Error(ErrorCode::kUnavailable,
                 "cannot write " + temporary + ": " + std::strerror(errno));
  }
  bool ok = fchmod(fd, mode) == 0 &&
            write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()) &&
            fsync(fd) == 0;
  ok = close(fd) == 0 && ok;
  if (!ok || rename(temporary.c_str(), path.c_str()) != 0) {
    unlink(temporary.c_str());
    return Error(ErrorCode::kUnavailable, "cannot write " + path + ": " + std::strerror(errno));
  }
  return OkStatus();
}

// Certifies the identity key of every token (or of --token NAME) for the host, and writes the
// chains into one file, as kmsd reads it ([kms] identity_chain). With --token, the other chains
// already in the file are kept.
Status CertifyIdentity(const CtlOptions& options, std::ostream& out) {
  if (options.ca_cert.empty() || options.ca_key.empty() || options.host.empty() ||
      options.out.empty()) {
    return Error(ErrorCode::kInvalidArgument,
                 "hsm certify-identity needs --ca-cert, --ca-key, --host and --out");
  }
  IdentityCertificateRequest request;
  request.host = options.host;
  if (!options.days.empty()) {
    const std::string& text = options.days;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), request.days);
    if (ec != std::errc() || end != text.data() + text.size() || request.days < 1 ||
        request.days > kMaxIdentityCertificateDays) {
      return Error(ErrorCode::kInvalidArgument,
                   "--days must be 1 to " + std::to_string(kMaxIdentityCertificateDays));
    }
  }
  SR_ASSIGN_OR_RETURN(SecretBytes ca_cert, ReadPemFile(options.ca_cert));
  SR_ASSIGN_OR_RETURN(SecretBytes ca_key, ReadPemFile(options.ca_key));
  SR_ASSIGN_OR_RETURN(std::vector<hsm::TokenConfig> configs, IdentityTokens(options));
  const std::string key_name = IdentityKeyName(options);
  std::vector<std::unique_ptr<hsm::Token>> opened;  // kept open: the modules stay loaded
  std::vector<IdentityChain> chains;
  std::vector<std::string> certified;
  for (const hsm::TokenConfig& config : configs) {
    Result<std::unique_ptr<hsm::Token>> token = hsm::Token::Open(config);
    Result<hsm::RsaPublicKey> key = token.ok() ? (*token)->IdentityPublicKey(key_name)
                                               : Result<hsm::RsaPublicKey>(token.error());
    if (token.ok()) opened.push_back(std::move(token).value());
    if (!key.ok()) {
      return Error(key.error().code(),
                   "token '" + config.name + "': " + key.error().message() +
                       (options.token.empty() ? " (certify the others with --token NAME)" : ""));
    }
    SR_ASSIGN_OR_RETURN(
        std::string pem,
        CertifyIdentityKey(*key, request, std::string(ca_cert.as_string_view()), ca_key));
    // The chain must load the way kmsd loads it.
    SR_ASSIGN_OR_RETURN(IdentityChain chain, ParseIdentityChain(pem, *key));
    chains.push_back(std::move(chain));
    certified.push_back(config.name);
  }
  if (!options.token.empty()) {
    std::ifstream existing(options.out, std::ios::binary);
    std::ostringstream text;
    text << existing.rdbuf();
    Result<std::vector<IdentityChain>> kept = ParseIdentityChains(text.str());
    if (existing && kept.ok()) {
      for (IdentityChain& chain : *kept) {
        if (FindIdentityChain(chains, chain.key) == nullptr) chains.push_back(std::move(chain));
      }
    } else if (existing && !text.str().empty()) {
      out << "the chains already in " << options.out << " do not load (" << kept.error().message()
          << "); they are replaced\n";
    }
  }
  SR_ASSIGN_OR_RETURN(std::string bundle, IdentityChainsPem(chains));
  if (Result<std::vector<IdentityChain>> loads = ParseIdentityChains(bundle); !loads.ok()) {
    return loads.error();
  }
  SR_RETURN_IF_ERROR(WriteFileAtomically(options.out, bundle, 0644));
  for (const std::string& name : certified) {
    out << "certified the KMS identity key of token '" << name << "' for " << request.host
        << " for " << request.days << " days\n";
  }
  out << chains.size() << " chain(s) (leaf, CA) in " << options.out << "\n";
  return OkStatus();
}

// One token's check: it opens, answers and holds what it held (Token::CheckIntact), and wraps and
// unwraps a key for each organization it has root keys for, and reports its identity key. The
// report on success; the first failure otherwise.
Result<std::string> CheckToken(hsm::Token& token, const std::string& identity_key) {
  SR_RETURN_IF_ERROR(token.CheckIntact());
  SR_ASSIGN_OR_RETURN(std::vector<std::string> orgs, token.ListOrgs());
  std::string report;
  if (orgs.empty()) report = "logged in; no root keys yet (hsm init-root)";
  for (const std::string& org : orgs) {
    SecretBytes key = SecretBytes::Random(hsm::kWrappedKeyPlainSize);
    hsm::KeyBinding binding{org, "kmsctl:hsm-check"};
    auto start = std::chrono::steady_clock::now();
    Result<std::vector<std::uint8_t>> blob = token.Wrap(binding, key.view());
    Result<SecretBytes> back =
        blob.ok() ? token.Unwrap(binding, *blob) : Result<SecretBytes>(blob.error());
    double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (!back.ok()) return Error(back.error().code(), org + ": " + back.error().message());
    if (!ConstantTimeEquals(back->view(), key.view())) {
      return Error(ErrorCode::kDataLoss, org + ": the round trip returned another key");
    }
    char line[96];
    std::snprintf(line, sizeof line, "%s%s wrap/unwrap round trip %.2f ms",
                  report.empty() ? "" : ", ", org.c_str(), ms);
    report += line;
  }
  if (!identity_key.empty()) {
    Result<hsm::RsaPublicKey> identity = token.IdentityPublicKey(identity_key);
    if (identity.ok()) {
      report += "; identity key " + identity_key + " (RSA-" +
                std::to_string(identity->modulus.size() * 8) + ")";
    } else if (identity.error().code() == ErrorCode::kNotFound) {
      report += "; no identity key yet (hsm init-identity)";
    } else {
      return identity.error();
    }
  }
  return report;
}

// Every configured token on a line of its own, whether or not the others open.
Status Check(const CtlOptions& options, std::ostream& out) {
  SR_ASSIGN_OR_RETURN(hsm::HsmConfig config, LoadHsmSettings(options.config_path));
  std::string identity_key = "kms";  // kmsd's default ([kms] identity_key)
  if (Result<Poco::AutoPtr<Poco::Util::IniFileConfiguration>> file =
          LoadConfigFile(options.config_path);
      file.ok() && (*file)->hasProperty("kms.identity_key")) {
    identity_key = SettingText(**file, "kms.identity_key");
  }
  std::vector<std::unique_ptr<hsm::Token>> opened;  // kept open: the modules stay loaded
  std::optional<Error> first_failure;
  std::vector<std::string> failed;
  for (std::size_t i = 0; i < config.tokens.size(); ++i) {
    const hsm::TokenConfig& token_config = config.tokens[i];
    Result<std::unique_ptr<hsm::Token>> token = hsm::Token::Open(token_config);
    Result<std::string> report =
        token.ok() ? CheckToken(**token, identity_key) : Result<std::string>(token.error());
    if (token.ok()) opened.push_back(std::move(token).value());
    if (report.ok()) {
      out << "token " << token_config.name << ": ok, " << *report << "\n";
      continue;
    }
    out << "token " << token_config.name << ": FAILED: " << report.error().message() << "\n";
    failed.push_back(token_config.name);
    if (!first_failure) first_failure = report.error();
  }
  if (first_failure) {
    std::string names;
    for (const std::string& name : failed) names += (names.empty() ? "" : ", ") + name;
    return Error(first_failure->code(),
                 std::to_string(failed.size()) + " of " + std::to_string(config.tokens.size()) +
                     " token(s) failed (" + names + "): " + first_failure->message());
  }
  return OkStatus();
}

}  // namespace

Status RunHsmCommand(const std::vector<std::string>& args, const CtlOptions& options,
                     std::ostream& out) {
  if (args.empty()) return Error(ErrorCode::kInvalidArgument, "missing hsm subcommand");
  if (args.size() > 1) {
    return Error(ErrorCode::kInvalidArgument, "unexpected argument '" + args[1] + "'");
  }
  const std::string& verb = args[0];
  if (verb == "slots") return Slots(options, out);
  if (verb == "init-token") return InitToken(options, out);
  if (verb == "init-root" || verb == "roots" || verb == "rotate-root") {
    return RootCommand(verb, options, out);
  }
  if (verb == "check") return Check(options, out);
  if (verb == "init-identity") return InitIdentity(options, out);
  if (verb == "certify-identity") return CertifyIdentity(options, out);
  return Error(ErrorCode::kInvalidArgument, "unknown hsm subcommand '" + verb + "'");
}

}  // namespace strongroom::kms
