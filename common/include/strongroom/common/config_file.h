// What every reader of a configuration file shares (the KMS's hsm_settings, kmsd_settings,
// operations listener and kmsctl; the core's cored_settings): loading the INI file, refusing
// unknown keys, whole numbers in a range, and listen addresses. Each error names the setting and
// what it must be.
#ifndef STRONGROOM_COMMON_CONFIG_FILE_H_
#define STRONGROOM_COMMON_CONFIG_FILE_H_

#include <Poco/AutoPtr.h>
#include <Poco/Util/AbstractConfiguration.h>
#include <Poco/Util/IniFileConfiguration.h>

#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "strongroom/common/error.h"

namespace strongroom {

// INVALID_ARGUMENT "cannot read configuration <path>: ..." when the file cannot be read or parsed.
Result<Poco::AutoPtr<Poco::Util::IniFileConfiguration>> LoadConfigFile(const std::string& path);

// INVALID_ARGUMENT "unknown setting <section>.<key>" for a key of [section] not in `allowed`, so a
// typo never silently falls back to a default.
Status CheckSettingKeys(const Poco::Util::AbstractConfiguration& config, const std::string& section,
                        const std::set<std::string>& allowed);

// The setting's value, trimmed; empty when absent.
std::string SettingText(const Poco::Util::AbstractConfiguration& config, const std::string& key);

// The setting's value, trimmed; INVALID_ARGUMENT "the configuration names no <what> (set <key> =
// ... in section [<section>])" when absent or empty.
Result<std::string> RequiredSetting(const Poco::Util::AbstractConfiguration& config,
                                    const std::string& key, const std::string& what);

// A small file named by a setting (a JWKS, a token), whole; NOT_FOUND when it cannot be read,
// INVALID_ARGUMENT when it is larger than `max` bytes.
Result<std::string> ReadSmallFile(const std::string& path, std::size_t max);

// A comma-separated list of names (of [<section>.<name>] sections): trimmed, empty entries
// dropped; INVALID_ARGUMENT when it names one twice or more than `max`.
Result<std::vector<std::string>> NameListSetting(const Poco::Util::AbstractConfiguration& config,
                                                 const std::string& key, std::size_t max);

// `fallback` when absent; otherwise a whole number from min to max.
Result<std::uint64_t> UnsignedSetting(const Poco::Util::AbstractConfiguration& config,
                                      const std::string& key, std::uint64_t fallback,
                                      std::uint64_t min, std::uint64_t max);

// A duration given in whole units of `Duration` (a `*_s` or `*_ms` setting): `fallback` when
// absent; otherwise from min to max of those units.
template <typename Duration>
Result<Duration> DurationSetting(const Poco::Util::AbstractConfiguration& config,
                                 const std::string& key, Duration fallback, std::uint64_t min,
                                 std::uint64_t max) {
  SR_ASSIGN_OR_RETURN(
      std::uint64_t n,
      UnsignedSetting(config, key, static_cast<std::uint64_t>(fallback.count()), min, max));
  return Duration(static_cast<typename Duration::rep>(n));
}

// "host:port" or "[v6-address]:port" (port 0 = any free port); the error names `key`.
struct ListenAddress {
  std::string host;
  std::uint16_t port = 0;
};
Result<ListenAddress> ParseListenSetting(const std::string& key, const std::string& text);

}  // namespace strongroom

#endif  // STRONGROOM_COMMON_CONFIG_FILE_H_
