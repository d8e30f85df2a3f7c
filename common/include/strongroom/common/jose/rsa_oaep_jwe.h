// Compact JWE with alg "RSA-OAEP" (SHA-1, MGF1-SHA-1, RFC 7518 section 4.3) and enc "A256GCM":
// how clients send the KMS its first message. The KMS's RSA private key lives in an HSM, so
// decryption takes a function that unwraps the content-encryption key there.
#ifndef STRONGROOM_COMMON_JOSE_RSA_OAEP_JWE_H_
#define STRONGROOM_COMMON_JOSE_RSA_OAEP_JWE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "strongroom/common/error.h"
#include "strongroom/common/jose/dir_jwe.h"
#include "strongroom/common/jose/jose_header.h"
#include "strongroom/common/jose/jwk.h"
#include "strongroom/common/secret_bytes.h"

namespace strongroom::jose {

// RSA-OAEP-decrypts the encrypted key (in the HSM). Return kInvalidArgument when the HSM says
// the ciphertext is bad; other codes (kUnavailable...) are passed through to the caller.
using CekUnwrapper =
    std::function<Result<SecretBytes>(std::span<const std::uint8_t> encrypted_key)>;

// Protected header {"alg":"RSA-OAEP","enc":"A256GCM"[,"kid":kid]}. `rsa` must be an RSA key.
Result<std::string> EncryptRsaOaepJwe(const PublicJwk& rsa, std::optional<std::string_view> kid,
                                      std::span<const std::uint8_t> plaintext);

// Refuses (before unwrapping) any alg but "RSA-OAEP", any enc but "A256GCM", "zip", "crit", an
// empty or over 1024-byte encrypted key, an IV other than 12 bytes and a tag other than 16.
// When the unwrapper reports kInvalidArgument or returns a CEK that is not 32 bytes, decryption
// goes on with a random CEK (RFC 7516 section 11.5), so a bad key and a bad tag fail alike:
// kInvalidArgument "JWE decryption failed".
Result<DecryptedJwe> DecryptRsaOaepJwe(std::string_view compact, const CekUnwrapper& unwrap_cek,
                                       const JoseLimits& limits = {});

}  // namespace strongroom::jose

#endif  // STRONGROOM_COMMON_JOSE_RSA_OAEP_JWE_H_
