// What every reader of the KMS configuration file shares (hsm_settings, kmsd_settings, the
// operations listener, kmsctl): loading the INI file, refusing unknown keys, whole numbers in a
// range, and listen addresses. Each error names the setting and what it must be.
#ifndef STRONGROOM_KMS_CONFIG_FILE_H_
#define STRONGROOM_KMS_CONFIG_FILE_H_

#include <Poco/AutoPtr.h>
#include <Poco/Util/AbstractConfiguration.h>
#include <Poco/Util/IniFileConfiguration.h>

#include <cstdint>
#include <set>
#include <string>

#include "strongroom/common/error.h"

namespace strongroom::kms {

// INVALID_ARGUMENT "cannot read configuration <path>: ..." when the file cannot be read or parsed.
Result<Poco::AutoPtr<Poco::Util::IniFileConfiguration>> LoadConfigFile(const std::string& path);

// INVALID_ARGUMENT "unknown setting <section>.<key>" for a key of [section] not in `allowed`, so a
// typo never silently falls back to a default.
Status CheckSettingKeys(const Poco::Util::AbstractConfiguration& config, const std::string& section,
                        const std::set<std::string>& allowed);

// The setting's value, trimmed; empty when absent.
std::string SettingText(const Poco::Util::AbstractConfiguration& config, const std::string& key);

// `fallback` when absent; otherwise a whole number from min to max.
Result<std::uint64_t> UnsignedSetting(const Poco::Util::AbstractConfiguration& config,
                                      const std::string& key, std::uint64_t fallback,
                                      std::uint64_t min, std::uint64_t max);

// "host:port" or "[v6-address]:port" (port 0 = any free port); the error names `key`.
struct ListenAddress {
  std::string host;
  std::uint16_t port = 0;
};
Result<ListenAddress> ParseListenSetting(const std::string& key, const std::string& text);

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_CONFIG_FILE_H_
