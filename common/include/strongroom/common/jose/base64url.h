// Base64url without padding (RFC 7515 section 2), strict: the one encoding of every JOSE part.
//
// Decoding refuses '=' padding, characters outside [A-Za-z0-9_-], a length of 1 mod 4 and
// non-canonical trailing bits (so every byte string has exactly one accepted encoding).
#ifndef STRONGROOM_COMMON_JOSE_BASE64URL_H_
#define STRONGROOM_COMMON_JOSE_BASE64URL_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "strongroom/common/error.h"

namespace strongroom::jose {

// Encoding cannot fail on any input; running out of memory throws std::bad_alloc.
std::string Base64UrlEncode(std::span<const std::uint8_t> bytes);
std::string Base64UrlEncode(std::string_view text);

// kInvalidArgument for anything but the canonical unpadded encoding.
Result<std::vector<std::uint8_t>> Base64UrlDecode(std::string_view text);

}  // namespace strongroom::jose

#endif  // STRONGROOM_COMMON_JOSE_BASE64URL_H_
