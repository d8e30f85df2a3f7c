// The protected header of a compact JWS or JWE, the size limits every parser here enforces, and
// PeekHeader: a look at the header of a token before anything about it is verified.
#ifndef STRONGROOM_COMMON_JOSE_JOSE_HEADER_H_
#define STRONGROOM_COMMON_JOSE_JOSE_HEADER_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "strongroom/common/error.h"

namespace strongroom::jose {

// Limits on untrusted input; exceeding one is kInvalidArgument. JSON nesting is further bounded
// by jansson's parser (JSON_PARSER_MAX_DEPTH, 2048 in Debian 12), and by max_header_bytes.
struct JoseLimits {
  std::size_t max_compact_bytes = std::size_t{1} << 20;  // the whole compact serialization
  std::size_t max_header_bytes = 8 * 1024;               // the decoded protected header JSON
};

// The members of a protected header this module acts on. The header must be a JSON object
// without duplicate member names, with "alg" a string; enc, kid, typ and zip, when present,
// must be strings.
struct JoseHeader {
  std::string alg;
  std::optional<std::string> enc;
  std::optional<std::string> kid;
  std::optional<std::string> typ;
  std::optional<std::string> zip;
  bool has_crit = false;
  int part_count = 0;  // 5 for a JWE, 3 for a JWS
};

// UNTRUSTED: parses the protected header of a compact JWS (3 parts) or JWE (5 parts) without
// checking any signature or tag. Use it only to choose a key or a code path, never to decide
// what a token says.
Result<JoseHeader> PeekHeader(std::string_view compact, const JoseLimits& limits = {});

}  // namespace strongroom::jose

#endif  // STRONGROOM_COMMON_JOSE_JOSE_HEADER_H_
