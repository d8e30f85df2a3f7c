// RFC 3339 timestamps, as the KMS protocol and the operator tools write them.
#ifndef STRONGROOM_COMMON_RFC3339_H_
#define STRONGROOM_COMMON_RFC3339_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace strongroom {

// "2026-11-25T12:00:00Z" or with a fraction and/or an offset; milliseconds since the epoch, or
// nullopt for anything else (the shape is checked strictly before parsing).
std::optional<std::int64_t> ParseRfc3339Ms(std::string_view text);

// UTC with milliseconds: "2026-11-25T12:00:00.000Z".
std::string FormatRfc3339Ms(std::int64_t ms);

// The system clock now, in milliseconds since the epoch: the default clock of everything that
// keeps times in that unit (and takes another clock in tests).
std::int64_t UnixNowMs();

}  // namespace strongroom

#endif  // STRONGROOM_COMMON_RFC3339_H_
