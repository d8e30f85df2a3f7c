#include "strongroom/hsm/root_key.h"

#include <charconv>

namespace strongroom::hsm {

std::string RootKeyLabel(const RootKeyId& id) {
  return "strongroom/root/" + id.org + "/v" + std::to_string(id.version);
}

std::string RootKeyObjectId(const RootKeyId& id) {
  return "srroot:" + id.org + ":" + std::to_string(id.version);
}

std::optional<RootKeyId> ParseRootKeyObjectId(const std::string& object_id) {
  constexpr std::string_view kPrefix = "srroot:";
  if (object_id.rfind(kPrefix, 0) != 0) return std::nullopt;
  std::size_t colon = object_id.rfind(':');
  if (colon <= kPrefix.size() || colon + 1 >= object_id.size()) return std::nullopt;
  RootKeyId id;
  id.org = object_id.substr(kPrefix.size(), colon - kPrefix.size());
  const char* first = object_id.data() + colon + 1;
  const char* last = object_id.data() + object_id.size();
  auto [ptr, ec] = std::from_chars(first, last, id.version);
  if (ec != std::errc() || ptr != last || id.version == 0) return std::nullopt;
  return id;
}

std::string UsageCounterPrefix(const RootKeyId& id) {
  return id.org + "/" + std::to_string(id.version) + "/";
}

std::string UsageCounterLabel(const RootKeyId& id, const std::string& node) {
  return UsageCounterPrefix(id) + node;
}

}  // namespace strongroom::hsm
