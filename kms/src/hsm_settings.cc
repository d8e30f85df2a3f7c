#include "strongroom/kms/hsm_settings.h"

#include <Poco/String.h>
#include <Poco/StringTokenizer.h>
#include <unistd.h>

#include <set>

#include "strongroom/common/config_file.h"

namespace strongroom::kms {
namespace {

std::string HostName() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "node";
  std::string name(buf);
  for (char& c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) c = '-';
  }
  return name.substr(0, 64);
}

Result<bool> BoolSetting(const Poco::Util::AbstractConfiguration& config, const std::string& key,
                         bool fallback) {
  if (!config.hasProperty(key)) return fallback;
  std::string text = Poco::toLower(Poco::trim(config.getRawString(key)));
  if (text == "true" || text == "yes" || text == "on" || text == "1") return true;
  if (text == "false" || text == "no" || text == "off" || text == "0") return false;
  return Error(ErrorCode::kInvalidArgument, key + " must be true or false, got '" + text + "'");
}

}  // namespace

Result<hsm::HsmConfig> ReadHsmSettings(const Poco::Util::AbstractConfiguration& config) {
  if (!config.hasProperty("hsm.tokens")) {
    return Error(ErrorCode::kInvalidArgument,
                 "the configuration names no HSM tokens (set tokens = ... in section [hsm])");
  }
  Poco::StringTokenizer names(
      config.getRawString("hsm.tokens"), ",",
      Poco::StringTokenizer::TOK_TRIM | Poco::StringTokenizer::TOK_IGNORE_EMPTY);
  if (names.count() == 0) {
    return Error(ErrorCode::kInvalidArgument, "hsm.tokens lists no token");
  }
  // [hsm.<name>] sections show up as keys of [hsm] too.
  std::set<std::string> allowed(names.begin(), names.end());
  allowed.insert({"tokens", "node_id", "probe_interval_ms"});
  SR_RETURN_IF_ERROR(CheckSettingKeys(config, "hsm", allowed));
  const std::string node_id = config.hasProperty("hsm.node_id")
                                  ? Poco::trim(config.getRawString("hsm.node_id"))
                                  : HostName();

  hsm::HsmConfig out;
  // The background check of the tokens (key_vault.h): on by default, 0 turns it off.
  SR_ASSIGN_OR_RETURN(std::uint64_t probe_ms,
                      UnsignedSetting(config, "hsm.probe_interval_ms", 1000, 0, 60000));
  if (probe_ms != 0 && probe_ms < 50) {
    return Error(
        ErrorCode::kInvalidArgument,
        "hsm.probe_interval_ms must be 0 (off) or 50 to 60000, got " + std::to_string(probe_ms));
  }
  out.probe_interval = std::chrono::milliseconds(probe_ms);
  for (const std::string& name : names) {
    const std::string section = "hsm." + name;
    SR_RETURN_IF_ERROR(CheckSettingKeys(config, section,
                                        {"uri", "pool_size", "acquire_timeout_ms", "session_copies",
                                         "wrap_limit", "reserve_block", "orgs"}));
    if (!config.hasProperty(section + ".uri")) {
      return Error(ErrorCode::kInvalidArgument,
                   "token " + name + " has no uri (set uri = pkcs11:... in [" + section + "])");
    }
    hsm::TokenConfig token;
    token.name = name;
    token.node_id = node_id;
    token.uri = Poco::trim(config.getRawString(section + ".uri"));
    SR_ASSIGN_OR_RETURN(std::uint64_t pool,
                        UnsignedSetting(config, section + ".pool_size", token.pool_size, 1, 1024));
    token.pool_size = pool;
    SR_ASSIGN_OR_RETURN(
        token.acquire_timeout,
        DurationSetting(config, section + ".acquire_timeout_ms", token.acquire_timeout, 1, 600000));
    SR_ASSIGN_OR_RETURN(token.session_copies,
                        BoolSetting(config, section + ".session_copies", token.session_copies));
    SR_ASSIGN_OR_RETURN(token.wrap_limit,
                        UnsignedSetting(config, section + ".wrap_limit", token.wrap_limit, 1,
                                        std::uint64_t{1} << 32));
    SR_ASSIGN_OR_RETURN(token.reserve_block,
                        UnsignedSetting(config, section + ".reserve_block", token.reserve_block, 1,
                                        std::uint64_t{1} << 24));
    if (config.hasProperty(section + ".orgs")) {
      Poco::StringTokenizer orgs(
          config.getRawString(section + ".orgs"), ",",
          Poco::StringTokenizer::TOK_TRIM | Poco::StringTokenizer::TOK_IGNORE_EMPTY);
      token.orgs.assign(orgs.begin(), orgs.end());
    }
    out.tokens.push_back(std::move(token));
  }
  return out;
}

Result<hsm::HsmConfig> LoadHsmSettings(const std::string& path) {
  SR_ASSIGN_OR_RETURN(auto config, LoadConfigFile(path));
  return ReadHsmSettings(*config);
}

}  // namespace strongroom::kms
