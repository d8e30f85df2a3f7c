#include "validation.h"

#include <openssl/rand.h>

#include <array>
#include <cstdint>
#include <stdexcept>

#include "strongroom/common/jose/base64url.h"
#include "strongroom/common/jose/jose_header.h"
#include "strongroom/common/kms_uri.h"
#include "strongroom/core/model.h"

namespace strongroom::core {
namespace internal {
namespace {

bool IsLowerHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

bool IsBase64UrlChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

// Well-formed UTF-8 (no overlongs, no surrogates, at most U+10FFFF) without C0, DEL or C1
// control characters.
bool IsPrintableUtf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto b = static_cast<unsigned char>(text[i]);
    if (b < 0x80) {
      if (b < 0x20 || b == 0x7f) return false;
      ++i;
      continue;
    }
    std::size_t length;
    std::uint32_t code;
    if (b >= 0xc2 && b <= 0xdf) {
      length = 2;
      code = b & 0x1fu;
    } else if (b >= 0xe0 && b <= 0xef) {
      length = 3;
      code = b & 0x0fu;
    } else if (b >= 0xf0 && b <= 0xf4) {
      length = 4;
      code = b & 0x07u;
    } else {
      return false;
    }
    if (i + length > text.size()) return false;
    for (std::size_t k = 1; k < length; ++k) {
      const auto c = static_cast<unsigned char>(text[i + k]);
      if ((c & 0xc0) != 0x80) return false;
      code = (code << 6) | (c & 0x3fu);
    }
    if ((length == 3 && code < 0x800) || (length == 4 && (code < 0x10000 || code > 0x10ffff)) ||
        (code >= 0xd800 && code <= 0xdfff) || (code >= 0x80 && code <= 0x9f)) {
      return false;
    }
    i += length;
  }
  return true;
}

}  // namespace

Error Invalid(std::string message) {
  return Error(ErrorCode::kInvalidArgument, std::move(message));
}

Error NoSuchConversation() { return Error(ErrorCode::kNotFound, "no such conversation"); }

Error NoSuchActivity() {
  return Error(ErrorCode::kNotFound, "no such activity in this conversation");
}

Status CheckPageSize(std::size_t limit) {
  if (limit == 0 || limit > kMaxPageSize) {
    return Invalid("the page size must be 1 to " + std::to_string(kMaxPageSize));
  }
  return OkStatus();
}

std::string NewUuid() {
  std::array<unsigned char, 16> b{};
  if (RAND_bytes(b.data(), static_cast<int>(b.size())) != 1) {
    // The process cannot go on safely without randomness; this is not an input error.
    throw std::runtime_error("the random number generator failed");
  }
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);
  std::string hex = Hex(b.data(), b.size());
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" +
         hex.substr(16, 4) + "-" + hex.substr(20);
}

bool IsUuid(std::string_view text) {
  if (text.size() != 36) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? text[i] != '-' : !IsLowerHex(text[i])) return false;
  }
  return true;
}

Status CheckUserId(std::string_view user_id, std::string_view what) {
  if (user_id.empty()) return Invalid(std::string(what) + " is empty");
  if (user_id.size() > kMaxUserIdBytes) {
    return Invalid(std::string(what) + " is longer than " + std::to_string(kMaxUserIdBytes) +
                   " bytes");
  }
  if (!IsPrintableUtf8(user_id)) {
    return Invalid(std::string(what) + " is not UTF-8 text without control characters");
  }
  return OkStatus();
}

Result<std::string> CheckKmsUri(std::string_view uri, std::string_view collection,
                                std::string_view what) {
  if (uri.size() > kMaxUriBytes) {
    return Invalid(std::string(what) + " is longer than " + std::to_string(kMaxUriBytes) +
                   " bytes");
  }
  // Conversations keep the URL as it is and compare it as a string, so only one spelling of it
  // is accepted: the one KmsUri writes.
  Result<KmsUri> parsed = KmsUri::Parse(uri);
  if (!parsed.ok() || !parsed->IsUuidItem(collection) || parsed->ToString() != uri) {
    return Invalid(std::string(what) + " must be kms://<host>/" + std::string(collection) +
                   "/<uuid>");
  }
  return parsed->cluster();
}

Status CheckClientActivityId(std::string_view id) {
  if (id.empty() || id.size() > kMaxClientActivityIdBytes) {
    return Invalid("clientActivityId must be 1 to " + std::to_string(kMaxClientActivityIdBytes) +
                   " characters");
  }
  for (char c : id) {
    if (!IsBase64UrlChar(c)) return Invalid("clientActivityId may only hold [A-Za-z0-9_-]");
  }
  return OkStatus();
}

Status CheckIndexToken(std::string_view token) {
  if (token.empty() || token.size() > kMaxIndexTokenBytes) {
    return Invalid("an index token must be 1 to " + std::to_string(kMaxIndexTokenBytes) +
                   " characters");
  }
  for (char c : token) {
    if (!IsBase64UrlChar(c) && c != '=') {
      return Invalid("an index token may only hold base64url characters");
    }
  }
  return OkStatus();
}

std::string Hex(const unsigned char* data, std::size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(size * 2, '0');
  for (std::size_t i = 0; i < size; ++i) {
    out[2 * i] = kDigits[data[i] >> 4];
    out[2 * i + 1] = kDigits[data[i] & 0x0f];
  }
  return out;
}

}  // namespace internal

Result<std::string> CheckContentJwe(std::string_view jwe) {
  auto invalid = [](std::string why) {
    return Error(ErrorCode::kInvalidArgument, "content is not a dir/A256GCM compact JWE: " + why);
  };
  std::array<std::string_view, 5> parts;
  std::size_t count = 0, start = 0;
  for (;;) {
    const std::size_t dot = jwe.find('.', start);
    if (count == parts.size()) return invalid("it has more than 5 parts");
    parts[count++] = jwe.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  if (count != 5) return invalid("it has " + std::to_string(count) + " parts, not 5");
  Result<jose::JoseHeader> header = jose::PeekHeader(jwe);
  if (!header.ok()) return invalid(header.error().message());
  if (header->alg != "dir") return invalid("alg is not \"dir\"");
  if (header->enc != "A256GCM") return invalid("enc is not \"A256GCM\"");
  if (!header->kid.has_value() || header->kid->empty()) return invalid("it has no kid");
  if (header->kid->size() > kMaxUriBytes) {
    return invalid("its kid is longer than " + std::to_string(kMaxUriBytes) + " bytes");
  }
  if (header->zip.has_value()) return invalid("compressed content (zip) is not accepted");
  if (header->has_crit) return invalid("critical header parameters (crit) are not accepted");
  if (!parts[1].empty()) return invalid("the encrypted key of alg \"dir\" must be empty");
  static constexpr const char* kNames[] = {"header", "encrypted key", "IV", "ciphertext", "tag"};
  for (std::size_t i = 2; i < 5; ++i) {
    Result<std::vector<std::uint8_t>> decoded = jose::Base64UrlDecode(parts[i]);
    if (!decoded.ok()) return invalid(std::string("its ") + kNames[i] + " is not base64url");
    if (i == 2 && decoded->size() != 12) return invalid("its IV is not 12 bytes");
    if (i == 3 && decoded->empty()) return invalid("its ciphertext is empty");
    if (i == 4 && decoded->size() != 16) return invalid("its tag is not 16 bytes");
  }
  return std::move(*header->kid);
}

}  // namespace strongroom::core
