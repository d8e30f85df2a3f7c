// Strict base64url: the checks cjose's lenient decoder does not make, then cjose's codec.
#include "strongroom/common/jose/base64url.h"

#include <openssl/crypto.h>

#include <cstring>
#include <new>

#include "cjose_support.h"

namespace strongroom::jose {
namespace {

// The 6-bit value of a character of the given alphabet, or -1.
int SextetOf(char c, bool url) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == (url ? '-' : '+')) return 62;
  if (c == (url ? '_' : '/')) return 63;
  return -1;
}

// `text` without padding: every character in the alphabet, a possible length, and the unused
// low bits of the last character zero.
bool IsCanonicalUnpadded(std::string_view text, bool url) {
  if (text.size() % 4 == 1) return false;
  for (char c : text) {
    if (SextetOf(c, url) < 0) return false;
  }
  if (text.empty()) return true;
  const int last = SextetOf(text.back(), url);
  if (text.size() % 4 == 2) return (last & 0x0f) == 0;
  if (text.size() % 4 == 3) return (last & 0x03) == 0;
  return true;
}

}  // namespace

std::string Base64UrlEncode(std::span<const std::uint8_t> bytes) {
  char* out = nullptr;
  std::size_t out_len = 0;
  cjose_err err{};
  if (!cjose_base64url_encode(internal::NonNull(bytes), bytes.size(), &out, &out_len, &err)) {
    throw std::bad_alloc();  // cjose's encoder fails only when it cannot allocate
  }
  internal::CjoseBuffer<char> owned(out);
  return std::string(out, out_len);
}

std::string Base64UrlEncode(std::string_view text) {
  return Base64UrlEncode(std::span<const std::uint8_t>(
      reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
}

Result<std::vector<std::uint8_t>> Base64UrlDecode(std::string_view text) {
  if (!IsCanonicalUnpadded(text, /*url=*/true)) {
    return internal::Invalid("not canonical unpadded base64url");
  }
  std::uint8_t* out = nullptr;
  std::size_t out_len = 0;
  cjose_err err{};
  if (!cjose_base64url_decode(text.data(), text.size(), &out, &out_len, &err)) {
    return internal::CjoseError(ErrorCode::kInvalidArgument, "base64url decoding failed", err);
  }
  internal::CjoseBuffer<std::uint8_t> owned(out);
  std::vector<std::uint8_t> bytes(out_len);
  if (out_len != 0) std::memcpy(bytes.data(), out, out_len);
  OPENSSL_cleanse(out, out_len);
  return bytes;
}

namespace internal {

bool IsCanonicalBase64(std::string_view text) {
  if (text.empty() || text.size() % 4 != 0) return false;
  std::size_t padding = 0;
  while (padding < 2 && text[text.size() - 1 - padding] == '=') ++padding;
  return IsCanonicalUnpadded(text.substr(0, text.size() - padding), /*url=*/false) &&
         (padding == 0 || (text.size() - padding) % 4 == 4 - padding);
}

std::string Base64Encode(std::span<const std::uint8_t> bytes) {
  char* out = nullptr;
  std::size_t out_len = 0;
  cjose_err err{};
  if (!cjose_base64_encode(NonNull(bytes), bytes.size(), &out, &out_len, &err)) {
    throw std::bad_alloc();
  }
  CjoseBuffer<char> owned(out);
  return std::string(out, out_len);
}

}  // namespace internal
}  // namespace strongroom::jose
