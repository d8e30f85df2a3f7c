// Strict base64url: one table-driven pass that checks and decodes (cjose's decoder is lenient and
// allocates); encoding is EncryptDir's (internal::AppendBase64Url).
#include "strongroom/common/jose/base64url.h"

#include <openssl/crypto.h>

#include <array>
#include <cstring>

#include "cjose_support.h"

namespace strongroom::jose {
namespace {

// The 6-bit value of a character of the given alphabet, or -1.
constexpr int SextetOf(char c, bool url) {
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

// The 6-bit value of each base64url character, 0xff for any other byte.
constexpr std::array<std::uint8_t, 256> kUrlSextets = [] {
  std::array<std::uint8_t, 256> table{};
  for (std::size_t c = 0; c < table.size(); ++c) {
    const int v = SextetOf(static_cast<char>(c), /*url=*/true);
    table[c] = v < 0 ? 0xff : static_cast<std::uint8_t>(v);
  }
  return table;
}();

}  // namespace

std::string Base64UrlEncode(std::span<const std::uint8_t> bytes) {
  std::string out;
  internal::AppendBase64Url(bytes, out);
  return out;
}

std::string Base64UrlEncode(std::string_view text) {
  return Base64UrlEncode(std::span<const std::uint8_t>(
      reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
}

Result<std::vector<std::uint8_t>> Base64UrlDecode(std::string_view text) {
  std::vector<std::uint8_t> bytes(internal::Base64UrlDecodedSize(text.size()));
  if (!internal::DecodeBase64Url(text, bytes.data())) {
    OPENSSL_cleanse(bytes.data(), bytes.size());
    return internal::Invalid("not canonical unpadded base64url");
  }
  return bytes;
}

namespace internal {

std::size_t Base64UrlDecodedSize(std::size_t characters) {
  return characters / 4 * 3 + (characters % 4 == 0 ? 0 : characters % 4 - 1);
}

// One pass of a table: every character checked and decoded, and the unused low bits of the last
// one required zero, straight into `out`.
bool DecodeBase64Url(std::string_view text, std::uint8_t* out) {
  if (text.size() % 4 == 1) return false;
  const auto* in = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t whole = text.size() / 4 * 4;
  std::uint32_t invalid = 0;
  for (std::size_t i = 0; i < whole; i += 4, out += 3) {
    const std::uint32_t a = kUrlSextets[in[i]], b = kUrlSextets[in[i + 1]],
                        c = kUrlSextets[in[i + 2]], d = kUrlSextets[in[i + 3]];
    invalid |= a | b | c | d;
    const std::uint32_t v = (a << 18) | (b << 12) | (c << 6) | d;
    out[0] = static_cast<std::uint8_t>(v >> 16);
    out[1] = static_cast<std::uint8_t>(v >> 8);
    out[2] = static_cast<std::uint8_t>(v);
  }
  if ((invalid & 0x80) != 0) return false;
  switch (text.size() - whole) {
    case 2: {
      const std::uint32_t a = kUrlSextets[in[whole]], b = kUrlSextets[in[whole + 1]];
      if (((a | b) & 0x80) != 0 || (b & 0x0f) != 0) return false;
      out[0] = static_cast<std::uint8_t>((a << 2) | (b >> 4));
      break;
    }
    case 3: {
      const std::uint32_t a = kUrlSextets[in[whole]], b = kUrlSextets[in[whole + 1]],
                          c = kUrlSextets[in[whole + 2]];
      if (((a | b | c) & 0x80) != 0 || (c & 0x03) != 0) return false;
      const std::uint32_t v = (a << 12) | (b << 6) | c;
      out[0] = static_cast<std::uint8_t>(v >> 10);
      out[1] = static_cast<std::uint8_t>(v >> 2);
      break;
    }
    default:
      break;
  }
  return true;
}

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
