// Naming of root keys and their wrap-usage counters on a token.
//
// A root key is an AES-256 secret key object generated in the token: CKA_TOKEN, CKA_PRIVATE,
// CKA_SENSITIVE true; CKA_EXTRACTABLE, CKA_WRAP, CKA_UNWRAP, CKA_MODIFIABLE false. Its label is
// "strongroom/root/<org>/v<version>" and its CKA_ID "srroot:<org>:<version>", so both encode the
// organization and version and the object is found by exact CKA_ID.
#ifndef STRONGROOM_HSM_ROOT_KEY_H_
#define STRONGROOM_HSM_ROOT_KEY_H_

#include <cstdint>
#include <optional>
#include <string>

namespace strongroom::hsm {

struct RootKeyId {
  std::string org;
  std::uint32_t version = 0;
  bool operator<(const RootKeyId& o) const {
    return org != o.org ? org < o.org : version < o.version;
  }
  bool operator==(const RootKeyId& o) const = default;
};

// What a root key's attributes, read back from the token, say about it.
struct RootKeyInfo {
  std::string token;  // TokenConfig::name of the token holding it
  RootKeyId id;
  std::string label;
  bool sensitive = false;
  bool extractable = true;
  bool never_extractable = false;
  bool always_sensitive = false;
  bool local = false;                // generated in the token
  std::uint64_t wraps_reserved = 0;  // wrap operations counted against this version, all nodes
};

std::string RootKeyLabel(const RootKeyId& id);
std::string RootKeyObjectId(const RootKeyId& id);
std::optional<RootKeyId> ParseRootKeyObjectId(const std::string& object_id);

// Wrap-usage counters are CKO_DATA objects with this CKA_APPLICATION and the label
// "<org>/<version>/<node>", holding an 8-byte big-endian count in CKA_VALUE.
inline constexpr char kUsageApplication[] = "strongroom-wrap-usage";
std::string UsageCounterLabel(const RootKeyId& id, const std::string& node);
std::string UsageCounterPrefix(const RootKeyId& id);

}  // namespace strongroom::hsm

#endif  // STRONGROOM_HSM_ROOT_KEY_H_
