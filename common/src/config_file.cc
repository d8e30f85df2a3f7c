#include "strongroom/common/config_file.h"

#include <Poco/Exception.h>
#include <Poco/NumberParser.h>
#include <Poco/String.h>
#include <Poco/StringTokenizer.h>

#include <fstream>

namespace strongroom {

Result<std::string> RequiredSetting(const Poco::Util::AbstractConfiguration& config,
                                    const std::string& key, const std::string& what) {
  std::string value = SettingText(config, key);
  if (value.empty()) {
    const std::size_t dot = key.rfind('.');
    return Error(ErrorCode::kInvalidArgument, "the configuration names no " + what + " (set " +
                                                  key.substr(dot + 1) + " = ... in section [" +
                                                  key.substr(0, dot) + "])");
  }
  return value;
}

Result<std::vector<std::string>> NameListSetting(const Poco::Util::AbstractConfiguration& config,
                                                 const std::string& key, std::size_t max) {
  Poco::StringTokenizer tokens(
      SettingText(config, key), ",",
      Poco::StringTokenizer::TOK_TRIM | Poco::StringTokenizer::TOK_IGNORE_EMPTY);
  std::vector<std::string> names(tokens.begin(), tokens.end());
  if (names.size() > max) {
    return Error(ErrorCode::kInvalidArgument,
                 key + " lists more than " + std::to_string(max) + " names");
  }
  std::set<std::string> unique(names.begin(), names.end());
  if (unique.size() != names.size()) {
    return Error(ErrorCode::kInvalidArgument, key + " names one twice");
  }
  return names;
}

Result<std::string> ReadSmallFile(const std::string& path, std::size_t max) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error(ErrorCode::kNotFound, "cannot read " + path);
  std::string text(max + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > max) {
    return Error(ErrorCode::kInvalidArgument,
                 path + " is larger than " + std::to_string(max) + " bytes");
  }
  return text;
}

Result<Poco::AutoPtr<Poco::Util::IniFileConfiguration>> LoadConfigFile(const std::string& path) {
  try {
    return Poco::AutoPtr<Poco::Util::IniFileConfiguration>(
        new Poco::Util::IniFileConfiguration(path));
  } catch (const Poco::Exception& e) {
    return Error(ErrorCode::kInvalidArgument,
                 "cannot read configuration " + path + ": " + e.displayText());
  }
}

Status CheckSettingKeys(const Poco::Util::AbstractConfiguration& config, const std::string& section,
                        const std::set<std::string>& allowed) {
  Poco::Util::AbstractConfiguration::Keys keys;
  config.keys(section, keys);
  for (const std::string& key : keys) {
    if (!allowed.count(key)) {
      return Error(ErrorCode::kInvalidArgument, "unknown setting " + section + "." + key);
    }
  }
  return OkStatus();
}

std::string SettingText(const Poco::Util::AbstractConfiguration& config, const std::string& key) {
  return config.hasProperty(key) ? Poco::trim(config.getRawString(key)) : std::string();
}

Result<std::uint64_t> UnsignedSetting(const Poco::Util::AbstractConfiguration& config,
                                      const std::string& key, std::uint64_t fallback,
                                      std::uint64_t min, std::uint64_t max) {
  if (!config.hasProperty(key)) return fallback;
  const std::string text = SettingText(config, key);
  std::uint64_t value = 0;
  if (!Poco::NumberParser::tryParseUnsigned64(text, value) || value < min || value > max) {
    return Error(ErrorCode::kInvalidArgument, key + " must be a whole number from " +
                                                  std::to_string(min) + " to " +
                                                  std::to_string(max) + ", got '" + text + "'");
  }
  return value;
}

Result<ListenAddress> ParseListenSetting(const std::string& key, const std::string& text) {
  const Error bad(ErrorCode::kInvalidArgument,
                  key + " must be host:port or [address]:port, got '" + text + "'");
  std::string host, port;
  if (!text.empty() && text.front() == '[') {
    const std::size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return bad;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string::npos || text.find(':') != colon) return bad;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  unsigned value = 0;
  if (host.empty() || port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos ||
      !Poco::NumberParser::tryParseUnsigned(port, value) || value > 65535) {
    return bad;
  }
  return ListenAddress{host, static_cast<std::uint16_t>(value)};
}

}  // namespace strongroom
