// Compact JWE with alg "dir" and enc "A256GCM" (RFC 7516, RFC 7518 section 4.5): the KMS
// protocol's messages encrypted under an ephemeral key both sides already share.
//
// Wire format: BASE64URL(protected header) "." "" "." BASE64URL(12-byte IV) "."
// BASE64URL(ciphertext) "." BASE64URL(16-byte tag); AAD = the ASCII of the first part.
#ifndef STRONGROOM_COMMON_JOSE_DIR_JWE_H_
#define STRONGROOM_COMMON_JOSE_DIR_JWE_H_

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "strongroom/common/error.h"
#include "strongroom/common/jose/jose_header.h"
#include "strongroom/common/secret_bytes.h"

namespace strongroom::jose {

inline constexpr std::size_t kA256GcmKeyBytes = 32;

struct DecryptedJwe {
  JoseHeader header;  // authenticated: it is the AAD of the decryption that succeeded
  SecretBytes plaintext;
  // The decoded IV and tag: together they name this message under its key (a sender cannot repeat
  // them by accident, and another encoding of the same JWE decodes to the same bytes).
  std::array<std::uint8_t, 12> iv{};
  std::array<std::uint8_t, 16> tag{};
};

// Given the (not yet authenticated) protected header, returns the 32-byte key for its kid, or
// an error, which DecryptDir returns unchanged.
using KeyLookup = std::function<Result<SecretBytes>(const JoseHeader& header)>;

// Protected header {"alg":"dir","enc":"A256GCM","kid":kid}; kid must be non-empty. Fails with
// kInvalidArgument when the result would exceed JoseLimits{}.max_compact_bytes.
Result<std::string> EncryptDir(std::span<const std::uint8_t> key32, std::string_view kid,
                               std::span<const std::uint8_t> plaintext);

// Refuses (kInvalidArgument, before the key lookup) any alg but "dir", any enc but "A256GCM",
// "zip", "crit", a non-empty encrypted key, an IV other than 12 bytes and a tag other than 16.
// A wrong key and any tampering are kInvalidArgument "JWE decryption failed".
Result<DecryptedJwe> DecryptDir(std::string_view compact, const KeyLookup& key_lookup,
                                const JoseLimits& limits = {});

namespace internal {

// How EncryptDir writes base64url: the fastest this CPU has is chosen at start (scalar on CPUs
// other than x86-64). Slower ones are chosen by tests, so that every encoder the CPU can run is
// checked, and by benchmarks.
enum class Base64UrlEncoder { kScalar = 0, kAvx2 = 1, kAvx512Vbmi = 2 };
Base64UrlEncoder CurrentBase64UrlEncoder();
// From now on, for every thread: `encoder`, or the fastest this CPU has if it lacks `encoder`.
// Returns the one in use.
Base64UrlEncoder UseBase64UrlEncoder(Base64UrlEncoder encoder);

}  // namespace internal
}  // namespace strongroom::jose

#endif  // STRONGROOM_COMMON_JOSE_DIR_JWE_H_
