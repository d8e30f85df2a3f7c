#include "strongroom/hsm/slot_inventory.h"

#include <cstring>

#include "cryptoki.h"
#include "strongroom/hsm/ck_result.h"
#include "strongroom/hsm/token_uri.h"

namespace strongroom::hsm {

Result<std::vector<SlotDescription>> ListSlots(Module& module) {
  internal::Cryptoki ck(module.fn());
  SR_ASSIGN_OR_RETURN(std::vector<CK_SLOT_ID> slots, ck.SlotList(false));
  std::vector<SlotDescription> out;
  for (CK_SLOT_ID id : slots) {
    SlotDescription slot;
    slot.id = id;
    CK_SLOT_INFO info{};
    SR_RETURN_IF_ERROR(ck.GetSlotInfo(id, info));
    slot.description = TrimmedField(info.slotDescription, sizeof info.slotDescription);
    slot.token_present = (info.flags & CKF_TOKEN_PRESENT) != 0;
    if (slot.token_present) {
      CK_TOKEN_INFO token{};
      SR_RETURN_IF_ERROR(ck.GetTokenInfo(id, token));
      slot.token_flags = token.flags;
      slot.token_initialized = (token.flags & CKF_TOKEN_INITIALIZED) != 0;
      slot.label = TrimmedField(token.label, sizeof token.label);
      slot.manufacturer = TrimmedField(token.manufacturerID, sizeof token.manufacturerID);
      slot.model = TrimmedField(token.model, sizeof token.model);
      slot.serial = TrimmedField(token.serialNumber, sizeof token.serialNumber);
      // The mechanisms are a courtesy of the listing: a token that will not list them is still
      // listed.
      if (Result<std::vector<CK_MECHANISM_TYPE>> list = ck.MechanismList(id); list.ok()) {
        for (CK_MECHANISM_TYPE type : *list) {
          MechanismDescription mechanism{type, CkmName(type), {}};
          (void)ck.GetMechanismInfo(id, type, mechanism.info);  // left zero if it fails
          slot.mechanisms.push_back(mechanism);
        }
      }
    }
    out.push_back(std::move(slot));
  }
  return out;
}

Result<CK_SLOT_ID> InitializeToken(Module& module, const std::string& label,
                                   const SecretBytes& so_pin, const SecretBytes& user_pin) {
  if (label.empty() || label.size() > 32) {
    return Error(ErrorCode::kInvalidArgument, "a token label is 1 to 32 characters");
  }
  internal::Cryptoki ck(module.fn());
  SR_ASSIGN_OR_RETURN(std::vector<SlotDescription> slots, ListSlots(module));
  const SlotDescription* free_slot = nullptr;
  for (const SlotDescription& slot : slots) {
    if (slot.token_initialized && slot.label == label) {
      return Error(ErrorCode::kAlreadyExists, "a token labelled " + label + " already exists");
    }
    if (slot.token_present && !slot.token_initialized && free_slot == nullptr) free_slot = &slot;
  }
  if (free_slot == nullptr) {
    return Error(ErrorCode::kFailedPrecondition, "the module has no uninitialized token");
  }
  CK_UTF8CHAR padded[32];
  std::memset(padded, ' ', sizeof padded);
  std::memcpy(padded, label.data(), label.size());
  SR_RETURN_IF_ERROR(ck.InitToken(free_slot->id, so_pin, padded));

  // Some modules (SoftHSM2) move an initialized token to a new slot: find it by label again.
  SR_ASSIGN_OR_RETURN(slots, ListSlots(module));
  CK_SLOT_ID slot_id = 0;
  bool found = false;
  for (const SlotDescription& slot : slots) {
    if (slot.token_initialized && slot.label == label) {
      slot_id = slot.id;
      found = true;
    }
  }
  if (!found) return Error(ErrorCode::kInternal, "initialized token " + label + " vanished");

  CK_SESSION_HANDLE session = CK_INVALID_HANDLE;
  SR_RETURN_IF_ERROR(ck.OpenSession(slot_id, session));
  CkResult set = ck.Login(session, CKU_SO, so_pin);
  if (set.ok()) {
    set = ck.InitPin(session, user_pin);
    (void)ck.Logout(session);  // the security officer's login is for this step only
  }
  (void)ck.CloseSession(session);
  if (!set.ok()) return set.error("setting the user PIN (C_Login SO / C_InitPIN)");
  return slot_id;
}

}  // namespace strongroom::hsm
