// The wrapped-key blob: a 256-bit key encrypted under a root key with AES-256-GCM, bound to the
// identity it was made for.
//
// Layout (68 bytes, big-endian integers):
//   offset  size  field
//        0     4  magic "SRW1"
//        4     4  root-key version
//        8    12  IV (from the token's C_GenerateRandom)
//       20    32  ciphertext of the key
//       52    16  GCM tag
//
// The associated data is never empty and binds the blob to its identity:
//   "strongroom/wrapped-key/v1" 0x00 | u16 len | org | u32 root version | u16 len | context
// where `context` is what the key is (for the KMS, its key URI). Unwrapping with any other org,
// context or version fails the tag check; so does any change to the blob.
#ifndef STRONGROOM_HSM_WRAPPED_KEY_H_
#define STRONGROOM_HSM_WRAPPED_KEY_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "strongroom/common/error.h"

namespace strongroom::hsm {

inline constexpr std::size_t kWrappedKeyPlainSize = 32;  // 256-bit keys only
inline constexpr std::size_t kGcmIvSize = 12;
inline constexpr std::size_t kGcmTagSize = 16;
inline constexpr std::size_t kWrappedKeySize =
    4 + 4 + kGcmIvSize + kWrappedKeyPlainSize + kGcmTagSize;
inline constexpr std::size_t kMaxBindingContext = 1024;

// What a wrapped key is bound to.
struct KeyBinding {
  std::string org;      // organization, see ValidateOrgName
  std::string context;  // non-empty, at most kMaxBindingContext bytes (the key URI for the KMS)
};

// Organization names: 1-63 of [a-z0-9._-], starting with a letter or digit. They appear in token
// object labels, so the set is small and unambiguous.
Status ValidateOrgName(const std::string& org);
Status ValidateBinding(const KeyBinding& binding);

std::vector<std::uint8_t> WrappedKeyAad(const KeyBinding& binding, std::uint32_t root_version);

struct WrappedKeyView {
  std::uint32_t root_version;
  std::span<const std::uint8_t> iv;
  std::span<const std::uint8_t> ciphertext_and_tag;
};

// Checks magic and length; the cryptographic check is the token's.
Result<WrappedKeyView> ParseWrappedKey(std::span<const std::uint8_t> blob);

std::vector<std::uint8_t> EncodeWrappedKey(std::uint32_t root_version,
                                           std::span<const std::uint8_t> iv,
                                           std::span<const std::uint8_t> ciphertext_and_tag);

}  // namespace strongroom::hsm

#endif  // STRONGROOM_HSM_WRAPPED_KEY_H_
