// A token named by an RFC 7512 PKCS#11 URI, parsed with p11-kit.
//
//   pkcs11:token=strongroom;serial=...;slot-id=...?module-path=/usr/lib/softhsm/libsofthsm2.so
//          &pin-source=file:/etc/strongroom/pin
//
// `module-path` is required. `pin-source` is `file:<path>` (or a bare absolute path, as RFC 7512
// allows) or `env:<VARIABLE>`. A PIN written into the URI (`pin-value`) is refused: URIs end up in
// configuration files, process listings and logs.
#ifndef STRONGROOM_HSM_TOKEN_URI_H_
#define STRONGROOM_HSM_TOKEN_URI_H_

#include <cstdint>
#include <optional>
#include <string>

#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/hsm/pkcs11.h"

namespace strongroom::hsm {

class TokenUri {
 public:
  static Result<TokenUri> Parse(const std::string& uri);

  const std::string& text() const { return text_; }
  const std::string& module_path() const { return module_path_; }
  const std::string& token_label() const { return token_label_; }  // empty: any label
  const std::string& serial() const { return serial_; }            // empty: any serial
  std::optional<CK_SLOT_ID> slot_id() const { return slot_id_; }
  const std::string& pin_source() const { return pin_source_; }

  // True when a token with this slot and info is the one the URI names.
  bool Matches(CK_SLOT_ID slot, const CK_TOKEN_INFO& info) const;

 private:
  std::string text_;
  std::string module_path_;
  std::string token_label_;
  std::string serial_;
  std::optional<CK_SLOT_ID> slot_id_;
  std::string pin_source_;
};

// Reads the PIN named by a pin source. The returned bytes are zeroized when dropped; a trailing
// newline in a PIN file is not part of the PIN.
Result<SecretBytes> ReadPin(const std::string& pin_source);

// A fixed-width, space-padded PKCS#11 text field as a trimmed string.
std::string TrimmedField(const unsigned char* field, std::size_t size);

}  // namespace strongroom::hsm

#endif  // STRONGROOM_HSM_TOKEN_URI_H_
