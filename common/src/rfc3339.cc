#include "strongroom/common/rfc3339.h"

#include <Poco/DateTime.h>
#include <Poco/DateTimeFormat.h>
#include <Poco/DateTimeFormatter.h>
#include <Poco/DateTimeParser.h>
#include <Poco/Timestamp.h>

#include <chrono>
#include <regex>

namespace strongroom {

std::optional<std::int64_t> ParseRfc3339Ms(std::string_view text) {
  if (text.size() > 64) return std::nullopt;
  // Poco's parser is lenient about what it skips; the shape is checked first.
  static const std::regex kRfc3339(
      R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2}))");
  const std::string value(text);
  Poco::DateTime parsed;
  int tz = 0;
  // The fractional format only: it reads seconds without a fraction too, whereas the plain one
  // stops at a fraction and so drops both it and the offset after it.
  const bool ok =
      std::regex_match(value, kRfc3339) &&
      Poco::DateTimeParser::tryParse(Poco::DateTimeFormat::ISO8601_FRAC_FORMAT, value, parsed, tz);
  if (!ok) return std::nullopt;
  parsed.makeUTC(tz);
  return parsed.timestamp().epochMicroseconds() / 1000;
}

std::string FormatRfc3339Ms(std::int64_t ms) {
  return Poco::DateTimeFormatter::format(Poco::Timestamp(ms * 1000), "%Y-%m-%dT%H:%M:%S.%iZ");
}

std::int64_t UnixNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace strongroom
