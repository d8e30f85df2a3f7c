// Internal support of the JOSE module: cjose errors, JSON parsing of untrusted input, and the
// strict split of compact serializations.
#include "cjose_support.h"

#include <cjose/util.h>
#include <malloc.h>
#include <openssl/crypto.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <utility>

#include "strongroom/common/jose/base64url.h"

namespace strongroom::jose::internal {
namespace {

// cjose and jansson free their copies of content keys, ECDH secrets and private key members
// with plain free(). Every block they release goes through here and is wiped first.
void ZeroizingFree(void* block) {
  if (block == nullptr) return;
  OPENSSL_cleanse(block, malloc_usable_size(block));
  std::free(block);
}

void* ZeroizingRealloc(void* block, std::size_t size) {
  if (block == nullptr) return std::malloc(size);
  if (size == 0) {
    ZeroizingFree(block);
    return nullptr;
  }
  void* moved = std::malloc(size);
  if (moved == nullptr) return nullptr;
  std::memcpy(moved, block, std::min(malloc_usable_size(block), size));
  ZeroizingFree(block);
  return moved;
}

void* PlainAlloc(std::size_t size) { return std::malloc(size); }

// Installed when the JOSE module is linked, before any of its functions can run; cjose passes
// the same functions on to jansson.
const bool kZeroizingAllocatorsInstalled = [] {
  cjose_set_alloc_funcs(PlainAlloc, ZeroizingRealloc, ZeroizingFree);
  return true;
}();

}  // namespace

bool ZeroizingAllocatorsInstalled() {
  return kZeroizingAllocatorsInstalled && cjose_get_dealloc() == &ZeroizingFree;
}

void JwkDeleter::operator()(cjose_jwk_t* jwk) const {
  if (jwk == nullptr) return;
  if (cjose_jwk_get_kty(jwk, nullptr) == CJOSE_JWK_KTY_OCT) {
    void* bytes = cjose_jwk_get_keydata(jwk, nullptr);
    if (bytes != nullptr) OPENSSL_cleanse(bytes, cjose_jwk_get_keysize(jwk, nullptr) / 8);
  }
  cjose_jwk_release(jwk);
}

Error CjoseError(ErrorCode code, std::string_view what, const cjose_err& err) {
  std::string message(what);
  if (err.message != nullptr) {
    message += " (cjose: ";
    message += err.message;
    if (err.function != nullptr) {
      message += " in ";
      message += err.function;
    }
    message += ")";
  }
  return Error(code, std::move(message), static_cast<std::uint64_t>(err.code));
}

Error Invalid(std::string message) {
  return Error(ErrorCode::kInvalidArgument, std::move(message));
}

Result<JsonPtr> ParseJsonObject(std::string_view json, std::string_view what) {
  json_error_t error{};
  JsonPtr parsed(json_loadb(json.data(), json.size(), JSON_REJECT_DUPLICATES, &error));
  if (parsed == nullptr) {
    // Only where, never jansson's text: it quotes the input "near" the error (which may be a
    // secret, and is cut at a byte, not a character).
    return Invalid(std::string(what) + " is not valid JSON (at byte " +
                   std::to_string(error.position) + ")");
  }
  if (!json_is_object(parsed.get())) return Invalid(std::string(what) + " is not a JSON object");
  return parsed;
}

namespace {

Result<std::optional<std::string>> OptionalString(const json_t* object, const char* name) {
  const json_t* value = json_object_get(object, name);
  if (value == nullptr) return std::optional<std::string>();
  if (!json_is_string(value)) {
    return Invalid(std::string("header member \"") + name + "\" is not a string");
  }
  return std::optional<std::string>(
      std::string(json_string_value(value), json_string_length(value)));
}

}  // namespace

Result<JoseHeader> HeaderFromJson(const json_t* object, int part_count) {
  JoseHeader header;
  header.part_count = part_count;
  SR_ASSIGN_OR_RETURN(std::optional<std::string> alg, OptionalString(object, "alg"));
  if (!alg.has_value()) return Invalid("protected header has no \"alg\"");
  header.alg = std::move(*alg);
  SR_ASSIGN_OR_RETURN(header.enc, OptionalString(object, "enc"));
  SR_ASSIGN_OR_RETURN(header.kid, OptionalString(object, "kid"));
  SR_ASSIGN_OR_RETURN(header.typ, OptionalString(object, "typ"));
  SR_ASSIGN_OR_RETURN(header.zip, OptionalString(object, "zip"));
  header.has_crit = json_object_get(object, "crit") != nullptr;
  return header;
}

namespace {

// The header EncryptDir writes, read without a JSON parser: exactly
// {"alg":"dir","enc":"A256GCM","kid":"<kid>"} with a kid of printable ASCII that needs no escaping
// (every KMS message's), which parses to these three members and nothing else. Any other header,
// equivalent or not, is left to the parser.
std::optional<JoseHeader> DirHeader(std::string_view json, int part_count) {
  constexpr std::string_view kStart = R"({"alg":"dir","enc":"A256GCM","kid":")";
  constexpr std::string_view kEnd = R"("})";
  if (json.size() <= kStart.size() + kEnd.size() || !json.starts_with(kStart) ||
      !json.ends_with(kEnd)) {
    return std::nullopt;
  }
  const std::string_view kid =
      json.substr(kStart.size(), json.size() - kStart.size() - kEnd.size());
  for (char c : kid) {
    if (c < 0x20 || c > 0x7e || c == '"' || c == '\\') return std::nullopt;
  }
  JoseHeader header;
  header.alg = "dir";
  header.enc = "A256GCM";
  header.kid = std::string(kid);
  header.part_count = part_count;
  return header;
}

}  // namespace

Result<CompactParts> ParseCompact(std::string_view compact, int expected_parts,
                                  const JoseLimits& limits, bool decode_all) {
  if (compact.size() > limits.max_compact_bytes) {
    return Invalid("compact serialization is larger than " +
                   std::to_string(limits.max_compact_bytes) + " bytes");
  }
  CompactParts parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = compact.find('.', start);
    if (parts.encoded.size() == 5) return Invalid("compact serialization has more than 5 parts");
    if (dot == std::string_view::npos) {
      parts.encoded.push_back(compact.substr(start));
      break;
    }
    parts.encoded.push_back(compact.substr(start, dot - start));
    start = dot + 1;
  }
  const int count = static_cast<int>(parts.encoded.size());
  if (expected_parts != 0 ? count != expected_parts : (count != 3 && count != 5)) {
    return Invalid("compact serialization has " + std::to_string(count) + " parts, not " +
                   (expected_parts != 0 ? std::to_string(expected_parts) : "3 or 5"));
  }
  if (parts.encoded[0].size() > (limits.max_header_bytes * 4 + 2) / 3) {
    return Invalid("protected header is larger than " + std::to_string(limits.max_header_bytes) +
                   " bytes");
  }
  const std::size_t decode = decode_all ? parts.encoded.size() : 1;
  parts.decoded.resize(decode);
  for (std::size_t i = 0; i < decode; ++i) {
    parts.decoded[i].resize(Base64UrlDecodedSize(parts.encoded[i].size()));
    if (!DecodeBase64Url(parts.encoded[i], parts.decoded[i].data())) {
      return Invalid("part " + std::to_string(i + 1) + ": not canonical unpadded base64url");
    }
  }
  const std::string_view header_json(reinterpret_cast<const char*>(parts.decoded[0].data()),
                                     parts.decoded[0].size());
  if (std::optional<JoseHeader> header = DirHeader(header_json, count)) {
    parts.header = std::move(*header);
    return parts;
  }
  SR_ASSIGN_OR_RETURN(JsonPtr header_object, ParseJsonObject(header_json, "protected header"));
  SR_ASSIGN_OR_RETURN(parts.header, HeaderFromJson(header_object.get(), count));
  parts.has_b64 = json_object_get(header_object.get(), "b64") != nullptr;
  return parts;
}

}  // namespace strongroom::jose::internal

namespace strongroom::jose {

Result<JoseHeader> PeekHeader(std::string_view compact, const JoseLimits& limits) {
  SR_ASSIGN_OR_RETURN(internal::CompactParts parts,
                      internal::ParseCompact(compact, 0, limits, /*decode_all=*/false));
  return std::move(parts.header);
}

}  // namespace strongroom::jose
