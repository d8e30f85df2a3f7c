// Compact JWE with alg "dir" and enc "A256GCM", on cjose.
#include "strongroom/common/jose/dir_jwe.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <memory>
#include <utility>

#include "cjose_support.h"

namespace strongroom::jose {

using internal::CjoseError;
using internal::Invalid;

namespace internal {

// The checks DecryptDir and DecryptRsaOaepJwe share, made before any key is touched.
Status CheckA256GcmJwe(const CompactParts& parts, std::string_view alg) {
  const JoseHeader& header = parts.header;
  if (header.alg != alg)
    return Invalid("JWE alg \"" + header.alg + "\" is not \"" + std::string(alg) + "\"");
  if (header.enc != "A256GCM") return Invalid("JWE enc is not \"A256GCM\"");
  if (header.zip.has_value()) return Invalid("JWE \"zip\" is refused");
  if (header.has_crit) return Invalid("JWE \"crit\" is refused");
  if (parts.decoded[2].size() != 12) return Invalid("JWE IV is not 12 bytes");
  if (parts.decoded[4].size() != 16) return Invalid("JWE tag is not 16 bytes");
  return OkStatus();
}

Result<std::string> EncryptWithCjose(const cjose_jwk_t* jwk, cjose_header_t* header,
                                     std::span<const std::uint8_t> plaintext) {
  cjose_err err{};
  JwePtr jwe(cjose_jwe_encrypt(jwk, header, NonNull(plaintext), plaintext.size(), &err));
  if (jwe == nullptr) return CjoseError(ErrorCode::kInternal, "JWE encryption failed", err);
  CjoseBuffer<char> compact(cjose_jwe_export(jwe.get(), &err));
  if (compact == nullptr) return CjoseError(ErrorCode::kInternal, "JWE export failed", err);
  std::string out(compact.get());
  if (out.size() > JoseLimits{}.max_compact_bytes) {
    return Invalid("JWE would be larger than " + std::to_string(JoseLimits{}.max_compact_bytes) +
                   " bytes");
  }
  return out;
}

Result<HeaderPtr> NewHeader(
    std::initializer_list<std::pair<const char*, std::string_view>> members) {
  cjose_err err{};
  HeaderPtr header(cjose_header_new(&err));
  if (header == nullptr) return CjoseError(ErrorCode::kInternal, "header allocation failed", err);
  for (const auto& [name, value] : members) {
    if (value.find('\0') != std::string_view::npos) {
      return Invalid(std::string("header member \"") + name + "\" contains a NUL character");
    }
    if (!cjose_header_set(header.get(), name, std::string(value).c_str(), &err)) {
      return CjoseError(ErrorCode::kInternal, "setting a header member failed", err);
    }
  }
  return header;
}

}  // namespace internal

namespace {

constexpr char kBase64UrlAlphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::size_t Base64UrlSize(std::size_t bytes) {
  return bytes / 3 * 4 + (bytes % 3 == 0 ? 0 : bytes % 3 + 1);
}

// Two base64url characters for every 12-bit value: one lookup per 12 bits instead of one per 6.
struct PairTable {
  PairTable() {
    for (std::size_t v = 0; v < 4096; ++v) {
      pairs[2 * v] = kBase64UrlAlphabet[v >> 6];
      pairs[2 * v + 1] = kBase64UrlAlphabet[v & 63];
    }
  }
  char pairs[2 * 4096];
};

#if defined(__x86_64__) && defined(__GNUC__)
#define STRONGROOM_BASE64URL_AVX2 1
// One AVX2 step after the spread: 3 bytes per 32-bit lane (as b1 b0 b2 b1) to 4 characters.
__attribute__((target("avx2"), always_inline)) inline __m256i EncodeSpreadAvx2(__m256i in,
                                                                               __m256i offsets) {
  const __m256i t0 = _mm256_and_si256(in, _mm256_set1_epi32(0x0fc0fc00));
  const __m256i t1 = _mm256_mulhi_epu16(t0, _mm256_set1_epi32(0x04000040));
  const __m256i t2 = _mm256_and_si256(in, _mm256_set1_epi32(0x003f03f0));
  const __m256i t3 = _mm256_mullo_epi16(t2, _mm256_set1_epi32(0x01000010));
  const __m256i sextets = _mm256_or_si256(t1, t3);
  __m256i index = _mm256_subs_epu8(sextets, _mm256_set1_epi8(51));
  index = _mm256_sub_epi8(index, _mm256_cmpgt_epi8(sextets, _mm256_set1_epi8(25)));
  return _mm256_add_epi8(sextets, _mm256_shuffle_epi8(offsets, index));
}

// 24 bytes into 32 base64url characters per step with AVX2 (W. Mula and D. Lemire, "Faster
// Base64 Encoding and Decoding Using AVX2 Instructions", 2018): each 12-byte half is spread into
// 32-bit lanes of 3 bytes, the four 6-bit fields moved to bytes by a multiply pair, then mapped to
// the alphabet by a shuffled offset table. Reads from[0..n) only; returns the bytes consumed (a
// multiple of 24, leaving at least 4 so the last 16-byte load stays inside).
__attribute__((target("avx2"))) std::size_t EncodeAvx2(const std::uint8_t* from, std::size_t n,
                                                       char* to) {
  const __m256i shuffle = _mm256_setr_epi8(1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10, 1, 0,
                                           2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10);
  // Offsets from a 6-bit value to its character: A-Z, a-z, 0-9, '-', '_'.
  const __m256i offsets =
      _mm256_setr_epi8(65, 71, -4, -4, -4, -4, -4, -4, -4, -4, -4, -4, -17, 32, 0, 0, 65, 71, -4,
                       -4, -4, -4, -4, -4, -4, -4, -4, -4, -17, 32, 0, 0);
  // The first step loads its two 12-byte halves separately; every later one loads the 32 bytes
  // from 4 before its start, which puts both halves where one in-lane shuffle reaches them
  // (a shuffle fewer per step than inserting the high half).
  const __m256i shuffle_later =
      _mm256_setr_epi8(5, 4, 6, 5, 8, 7, 9, 8, 11, 10, 12, 11, 14, 13, 15, 14, 1, 0, 2, 1, 4, 3, 5,
                       4, 7, 6, 8, 7, 10, 9, 11, 10);
  std::size_t i = 0;
  if (n >= 28) {
    const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(from));
    const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(from + 12));
    const __m256i in = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(to),
                        EncodeSpreadAvx2(_mm256_shuffle_epi8(in, shuffle), offsets));
    i = 24;
    to += 32;
  }
  for (; i + 28 <= n; i += 24, to += 32) {
    const __m256i in = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(from + i - 4));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(to),
                        EncodeSpreadAvx2(_mm256_shuffle_epi8(in, shuffle_later), offsets));
  }
  return i;
}

// 48 bytes into 64 characters per step with AVX-512 VBMI (W. Mula, "Base64 encoding with
// AVX512VBMI"): a byte permute spreads each 3 bytes into a 32-bit lane as b1 b0 b2 b1, a multishift
// picks the four 6-bit fields, a second permute maps them through the alphabet. Masked loads read
// from[0..n) only; returns the bytes consumed (a multiple of 48).
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) std::size_t EncodeAvx512Vbmi(
    const std::uint8_t* from, std::size_t n, char* to) {
  const __m512i spread =
      _mm512_setr_epi32(0x01020001, 0x04050304, 0x07080607, 0x0a0b090a, 0x0d0e0c0d, 0x10110f10,
                        0x13141213, 0x16171516, 0x191a1819, 0x1c1d1b1c, 0x1f201e1f, 0x22232122,
                        0x25262425, 0x28292728, 0x2b2c2a2b, 0x2e2f2d2e);
  const __m512i shifts = _mm512_set1_epi64(0x3036242a1016040a);
  const __m512i alphabet = _mm512_loadu_si512(kBase64UrlAlphabet);
  const __mmask64 first48 = (__mmask64{1} << 48) - 1;
  // The maskz forms with every lane on: the plain ones trip GCC 12's -Wmaybe-uninitialized in
  // its own headers.
  const __mmask64 all = ~__mmask64{0};
  std::size_t i = 0;
  for (; i + 48 <= n; i += 48, to += 64) {
    const __m512i in = _mm512_maskz_loadu_epi8(first48, from + i);
    const __m512i lanes = _mm512_maskz_permutexvar_epi8(all, spread, in);
    const __m512i sextets = _mm512_maskz_multishift_epi64_epi8(all, shifts, lanes);
    _mm512_storeu_si512(to, _mm512_maskz_permutexvar_epi8(all, sextets, alphabet));
  }
  return i;
}
#endif

// The fastest encoder this CPU has.
internal::Base64UrlEncoder BestBase64UrlEncoder() {
#ifdef STRONGROOM_BASE64URL_AVX2
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512bw")) {
    return internal::Base64UrlEncoder::kAvx512Vbmi;
  }
  if (__builtin_cpu_supports("avx2")) return internal::Base64UrlEncoder::kAvx2;
#endif
  return internal::Base64UrlEncoder::kScalar;
}

std::atomic<internal::Base64UrlEncoder>& SelectedBase64UrlEncoder() {
  static std::atomic<internal::Base64UrlEncoder> selected{BestBase64UrlEncoder()};
  return selected;
}

}  // namespace

namespace internal {

// Pieces whose sizes are multiples of 3 encode to the same text as their concatenation would. The
// vector encoders take what they can in whole steps (AVX-512 VBMI first, AVX2 after it), the
// scalar table the rest.
void AppendBase64Url(std::span<const std::uint8_t> bytes, std::string& out) {
  static const PairTable table;
  const std::size_t start = out.size();
  out.resize(start + Base64UrlSize(bytes.size()));
  char* to = out.data() + start;
  const std::uint8_t* from = bytes.data();
  const std::size_t whole = bytes.size() / 3 * 3;
  std::size_t i = 0;
#ifdef STRONGROOM_BASE64URL_AVX2
  const internal::Base64UrlEncoder encoder =
      SelectedBase64UrlEncoder().load(std::memory_order_relaxed);
  if (encoder == internal::Base64UrlEncoder::kAvx512Vbmi) {
    i = EncodeAvx512Vbmi(from, bytes.size(), to);
    to += i / 3 * 4;
  }
  if (encoder >= internal::Base64UrlEncoder::kAvx2) {
    const std::size_t done = EncodeAvx2(from + i, bytes.size() - i, to);
    i += done;
    to += done / 3 * 4;
  }
#endif
  for (; i < whole; i += 3, to += 4) {
    const std::uint32_t v = (std::uint32_t{from[i]} << 16) | (std::uint32_t{from[i + 1]} << 8) |
                            std::uint32_t{from[i + 2]};
    std::memcpy(to, &table.pairs[2 * (v >> 12)], 2);
    std::memcpy(to + 2, &table.pairs[2 * (v & 4095)], 2);
  }
  if (const std::size_t rest = bytes.size() - whole; rest > 0) {
    const std::uint32_t v = (std::uint32_t{from[whole]} << 16) |
                            (rest == 2 ? std::uint32_t{from[whole + 1]} << 8 : std::uint32_t{0});
    *to++ = kBase64UrlAlphabet[(v >> 18) & 63];
    *to++ = kBase64UrlAlphabet[(v >> 12) & 63];
    if (rest == 2) *to++ = kBase64UrlAlphabet[(v >> 6) & 63];
  }
}

}  // namespace internal

namespace {

// Fetched once: an implicit fetch (EVP_aes_256_gcm) looks the algorithm up on every init.
const EVP_CIPHER* Aes256Gcm() {
  static const EVP_CIPHER* const fetched = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  return fetched != nullptr ? fetched : EVP_aes_256_gcm();
}

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};

}  // namespace

namespace internal {

Base64UrlEncoder CurrentBase64UrlEncoder() {
  return SelectedBase64UrlEncoder().load(std::memory_order_relaxed);
}

Base64UrlEncoder UseBase64UrlEncoder(Base64UrlEncoder encoder) {
  const Base64UrlEncoder chosen = std::min(encoder, BestBase64UrlEncoder());
  SelectedBase64UrlEncoder().store(chosen, std::memory_order_relaxed);
  return chosen;
}

}  // namespace internal

// Straight on OpenSSL rather than cjose_jwe_encrypt + export: cjose copies the plaintext and the
// ciphertext several times into zeroized heap buffers and encodes byte by byte, which cost a
// 64 KiB message ten times the AES-GCM itself (bench/sdk_bench.cc). A kid that needs JSON
// escaping still goes through jansson; the result is the same compact JWE, which DecryptDir
// (cjose) and any JOSE library open. No secret is copied: the key stays in the caller's span and
// the EVP context is cleansed when freed; the ciphertext goes through a stack buffer in pieces.
Result<std::string> EncryptDir(std::span<const std::uint8_t> key32, std::string_view kid,
                               std::span<const std::uint8_t> plaintext) {
  if (key32.size() != kA256GcmKeyBytes) return Invalid("A256GCM key is not 32 bytes");
  if (kid.empty()) return Invalid("kid is empty");
  // The header as jansson writes it; a kid of printable ASCII that needs no escaping (every key
  // URI) is written directly, sparing the JSON object.
  std::string header_text;
  if (std::all_of(kid.begin(), kid.end(),
                  [](char c) { return c >= 0x20 && c <= 0x7e && c != '"' && c != '\\'; })) {
    header_text = R"({"alg":"dir","enc":"A256GCM","kid":")";
    header_text.append(kid);
    header_text += "\"}";
  } else {
    SR_ASSIGN_OR_RETURN(internal::HeaderPtr header, internal::NewHeader({{CJOSE_HDR_ALG, "dir"},
                                                                         {CJOSE_HDR_ENC, "A256GCM"},
                                                                         {CJOSE_HDR_KID, kid}}));
    internal::CjoseBuffer<char> header_json(json_dumps(
        reinterpret_cast<const json_t*>(header.get()), JSON_COMPACT | JSON_PRESERVE_ORDER));
    if (header_json == nullptr) return Error(ErrorCode::kInternal, "JWE header encoding failed");
    header_text = header_json.get();
  }

  constexpr std::size_t kIvBytes = 12, kTagBytes = 16;
  const std::size_t size = Base64UrlSize(header_text.size()) + 2 + Base64UrlSize(kIvBytes) + 1 +
                           Base64UrlSize(plaintext.size()) + 1 + Base64UrlSize(kTagBytes);
  if (size > JoseLimits{}.max_compact_bytes) {
    return Invalid("JWE would be larger than " + std::to_string(JoseLimits{}.max_compact_bytes) +
                   " bytes");
  }
  if (plaintext.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    return Invalid("JWE plaintext too large");
  }
  std::string out;
  out.reserve(size);
  internal::AppendBase64Url(
      {reinterpret_cast<const std::uint8_t*>(header_text.data()), header_text.size()}, out);
  const std::size_t aad_size = out.size();  // the AAD: the ASCII of the encoded header
  out += "..";
  std::uint8_t iv[kIvBytes];
  if (RAND_bytes(iv, sizeof iv) != 1)
    return Error(ErrorCode::kInternal, "no randomness for a JWE IV");
  internal::AppendBase64Url(iv, out);
  out += '.';

  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), Aes256Gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kIvBytes, nullptr) != 1 ||
      EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, key32.data(), iv) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &n, reinterpret_cast<const std::uint8_t*>(out.data()),
                        static_cast<int>(aad_size)) != 1) {
    return Error(ErrorCode::kInternal, "JWE encryption failed");
  }
  constexpr std::size_t kPiece = 3 * 4096;  // a multiple of 3: pieces encode as the whole would
  std::uint8_t sealed[kPiece];
  for (std::size_t done = 0; done < plaintext.size();) {
    const std::size_t piece = std::min(kPiece, plaintext.size() - done);
    if (EVP_EncryptUpdate(ctx.get(), sealed, &n, plaintext.data() + done,
                          static_cast<int>(piece)) != 1 ||
        static_cast<std::size_t>(n) != piece) {
      return Error(ErrorCode::kInternal, "JWE encryption failed");
    }
    internal::AppendBase64Url({sealed, piece}, out);
    done += piece;
  }
  std::uint8_t tag[kTagBytes];
  if (EVP_EncryptFinal_ex(ctx.get(), sealed, &n) != 1 || n != 0 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes, tag) != 1) {
    return Error(ErrorCode::kInternal, "JWE encryption failed");
  }
  out += '.';
  internal::AppendBase64Url(tag, out);
  return out;
}

Result<DecryptedJwe> DecryptDir(std::string_view compact, const KeyLookup& key_lookup,
                                const JoseLimits& limits) {
  SR_ASSIGN_OR_RETURN(internal::CompactParts parts, internal::ParseCompact(compact, 5, limits));
  SR_RETURN_IF_ERROR(internal::CheckA256GcmJwe(parts, "dir"));
  if (!parts.decoded[1].empty()) return Invalid("JWE with alg \"dir\" has an encrypted key");
  SR_ASSIGN_OR_RETURN(SecretBytes key, key_lookup(parts.header));
  if (key.size() != kA256GcmKeyBytes) return Invalid("the key for this JWE is not 32 bytes");

  // Straight on OpenSSL, with the parts ParseCompact decoded (cjose would decode them all again and
  // copy the plaintext twice): AES-256-GCM of the ciphertext with the encoded header, as sent, for
  // AAD; the plaintext goes into its SecretBytes only, and is wiped there if the tag fails.
  const std::vector<std::uint8_t>& ciphertext = parts.decoded[3];
  const std::string_view aad = parts.encoded[0];
  if (ciphertext.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    return Invalid("JWE ciphertext too large");
  }
  SecretBytes plaintext(ciphertext.size());
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  std::array<std::uint8_t, 16> tag{};
  std::copy_n(parts.decoded[4].begin(), tag.size(), tag.begin());
  std::uint8_t final_block[16];  // GCM writes nothing at the end; OpenSSL wants somewhere
  const bool opened =
      ctx && EVP_DecryptInit_ex(ctx.get(), Aes256Gcm(), nullptr, nullptr, nullptr) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, 12, nullptr) == 1 &&
      EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, key.data(), parts.decoded[2].data()) == 1 &&
      EVP_DecryptUpdate(ctx.get(), nullptr, &n, reinterpret_cast<const std::uint8_t*>(aad.data()),
                        static_cast<int>(aad.size())) == 1 &&
      (ciphertext.empty() || (EVP_DecryptUpdate(ctx.get(), plaintext.data(), &n, ciphertext.data(),
                                                static_cast<int>(ciphertext.size())) == 1 &&
                              static_cast<std::size_t>(n) == ciphertext.size())) &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(tag.size()),
                          tag.data()) == 1 &&
      EVP_DecryptFinal_ex(ctx.get(), final_block, &n) == 1 && n == 0;
  ERR_clear_error();
  if (!opened) return Invalid("JWE decryption failed");  // plaintext wiped as it goes
  DecryptedJwe out{std::move(parts.header), std::move(plaintext)};
  std::copy_n(parts.decoded[2].begin(), out.iv.size(), out.iv.begin());
  std::copy(tag.begin(), tag.end(), out.tag.begin());
  return out;
}

}  // namespace strongroom::jose
