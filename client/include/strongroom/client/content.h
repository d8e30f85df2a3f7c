// Content as the client encrypts it, so that the core only ever holds ciphertext and any standard
// JOSE library holding the key can read it (architecture §5):
//
//   - text: compact JWE, alg "dir", enc "A256GCM", kid = the content key's URI;
//   - files: the blob encrypted under a random per-file key with AES-256-GCM (the ciphertext is
//     as long as the file; no header, the IV and tag travel in the reference), uploaded to the
//     core; the reference that opens it,
//       {"enc":"A256GCM", "key":<b64url 32 bytes>, "iv":<b64url 12>, "aad":<text>,
//        "loc":<the core's file id>, "tag":<b64url 16>, "name"?:<file name>, "size"?:<bytes>}
//     travels as a text JWE under the conversation key (the `content` of a "share" activity).
//
// Plaintext and keys are held in SecretBytes where this module owns them, and never logged.
#ifndef STRONGROOM_CLIENT_CONTENT_H_
#define STRONGROOM_CLIENT_CONTENT_H_

#include <cstdint>
#include <functional>
#include <istream>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"

namespace strongroom::client {

inline constexpr std::size_t kMaxTextBytes = 64 * 1024;  // what the core takes as one message
inline constexpr std::uint64_t kMaxFileBytes = std::uint64_t{1} << 36;  // 64 GiB: under GCM's bound
inline constexpr std::size_t kFileIvBytes = 12;
inline constexpr std::size_t kFileTagBytes = 16;

// Text -------------------------------------------------------------------------------------------

// INVALID_ARGUMENT for a key that is not 32 bytes, an empty key URI or text over kMaxTextBytes.
Result<std::string> EncryptText(const SecretBytes& key, std::string_view key_uri,
                                std::string_view plaintext);

// The content key for a key URI (a JWE's kid): from a cache, or the KMS.
using ContentKeyLookup = std::function<Result<SecretBytes>(const std::string& key_uri)>;

struct DecryptedText {
  std::string key_uri;  // the JWE's kid: which key opened it
  SecretBytes text;
};
// The lookup's error is returned as it is (PERMISSION_DENIED from the KMS: not authorized); a
// JWE that is malformed, not dir/A256GCM, has no kid or does not open is INVALID_ARGUMENT.
Result<DecryptedText> DecryptText(std::string_view jwe, const ContentKeyLookup& lookup);

// The kid of a content JWE, unauthenticated (to choose a key or to group activities).
Result<std::string> ContentKeyUri(std::string_view jwe);

// Files ------------------------------------------------------------------------------------------

struct FileReference {
  std::string enc = "A256GCM";
  SecretBytes key;               // 32 bytes, the file's own
  std::vector<std::uint8_t> iv;  // 12 bytes
  std::string aad;  // bound into the tag (the SDK uses "strongroom-file:<conversation>")
  std::string loc;  // where the blob is: the core's file id
  std::vector<std::uint8_t> tag;  // 16 bytes
  std::string name;               // optional: the file's name when it was sent
  std::uint64_t size = 0;         // bytes of plaintext (= of ciphertext)
};

// done/total bytes; total is 0 when unknown. Called after every chunk.
using Progress = std::function<void(std::uint64_t done, std::uint64_t total)>;

// Encrypts everything `in` holds into `out` under a fresh random key and IV; the reference has
// all but `loc` and `name`. `total` (for progress) may be 0. UNAVAILABLE when a stream fails,
// INVALID_ARGUMENT beyond kMaxFileBytes.
Result<FileReference> EncryptFile(std::istream& in, std::ostream& out, std::string aad,
                                  std::uint64_t total = 0, const Progress& progress = {});

// Decrypts `in` (exactly ref.size bytes when the reference gives a size) into `out` as it goes.
// DATA_LOSS when the tag does not verify or the length is wrong: what was written to `out` must
// then be discarded (DecryptFileTo does that).
Status DecryptFile(const FileReference& ref, std::istream& in, std::ostream& out,
                   const Progress& progress = {});

// The reference as JSON (it holds the file key: zeroize it after use) and back. Parsing checks
// enc, the sizes of key, iv and tag, and that loc is present.
SecretBytes FileReferenceJson(const FileReference& ref);
Result<FileReference> ParseFileReference(std::string_view json);

// The reference as a text JWE under the conversation key, and back.
Result<std::string> SealFileReference(const FileReference& ref, const SecretBytes& key,
                                      std::string_view key_uri);
Result<FileReference> OpenFileReference(std::string_view jwe, const ContentKeyLookup& lookup);

}  // namespace strongroom::client

#endif  // STRONGROOM_CLIENT_CONTENT_H_
