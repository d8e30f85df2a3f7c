// What a PKCS#11 module offers: slots, their tokens and mechanisms (for `kmsctl hsm slots`), and
// initializing a token (for development tokens such as SoftHSM2's; production tokens are
// initialized with the vendor's tools).
#ifndef STRONGROOM_HSM_SLOT_INVENTORY_H_
#define STRONGROOM_HSM_SLOT_INVENTORY_H_

#include <string>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/hsm/module.h"
#include "strongroom/hsm/pkcs11.h"

namespace strongroom::hsm {

struct MechanismDescription {
  CK_MECHANISM_TYPE type;
  std::string name;
  CK_MECHANISM_INFO info;
};

struct SlotDescription {
  CK_SLOT_ID id;
  std::string description;
  bool token_present = false;
  bool token_initialized = false;
  std::string label;
  std::string manufacturer;
  std::string model;
  std::string serial;
  CK_FLAGS token_flags = 0;
  std::vector<MechanismDescription> mechanisms;
};

Result<std::vector<SlotDescription>> ListSlots(Module& module);

// Initializes the first uninitialized token of the module with `label`, sets the user PIN and
// returns the new token's slot. Fails if a token with that label exists.
Result<CK_SLOT_ID> InitializeToken(Module& module, const std::string& label,
                                   const SecretBytes& so_pin, const SecretBytes& user_pin);

}  // namespace strongroom::hsm

#endif  // STRONGROOM_HSM_SLOT_INVENTORY_H_
