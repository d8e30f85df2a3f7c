#include "strongroom/hsm/slot_inventory.h"

#include <cstring>

#include "strongroom/hsm/ck_result.h"
#include "strongroom/hsm/token_uri.h"

namespace strongroom::hsm {
namespace {

Result<std::vector<CK_SLOT_ID>> Slots(CK_FUNCTION_LIST_PTR fn, CK_BBOOL token_present) {
  CK_ULONG count = 0;
  CK_RV rv = fn->C_GetSlotList(token_present, nullptr, &count);
  if (rv != CKR_OK) return CkError(rv, "C_GetSlotList");
  std::vector<CK_SLOT_ID> slots(count);
  if (count > 0) {
    rv = fn->C_GetSlotList(token_present, slots.data(), &count);
    if (rv != CKR_OK) return CkError(rv, "C_GetSlotList");
    slots.resize(count);
  }
  return slots;
}

}  // namespace

Result<std::vector<SlotDescription>> ListSlots(Module& module) {
  CK_FUNCTION_LIST_PTR fn = module.fn();
  SR_ASSIGN_OR_RETURN(std::vector<CK_SLOT_ID> slots, Slots(fn, CK_FALSE));
  std::vector<SlotDescription> out;
  for (CK_SLOT_ID id : slots) {
    SlotDescription slot;
    slot.id = id;
    CK_SLOT_INFO info{};
    if (CK_RV rv = fn->C_GetSlotInfo(id, &info); rv != CKR_OK) return CkError(rv, "C_GetSlotInfo");
    slot.description = TrimmedField(info.slotDescription, sizeof info.slotDescription);
    slot.token_present = (info.flags & CKF_TOKEN_PRESENT) != 0;
    if (slot.token_present) {
      CK_TOKEN_INFO token{};
      if (CK_RV rv = fn->C_GetTokenInfo(id, &token); rv != CKR_OK) {
        return CkError(rv, "C_GetTokenInfo");
      }
      slot.token_flags = token.flags;
      slot.token_initialized = (token.flags & CKF_TOKEN_INITIALIZED) != 0;
      slot.label = TrimmedField(token.label, sizeof token.label);
      slot.manufacturer = TrimmedField(token.manufacturerID, sizeof token.manufacturerID);
      slot.model = TrimmedField(token.model, sizeof token.model);
      slot.serial = TrimmedField(token.serialNumber, sizeof token.serialNumber);
      CK_ULONG count = 0;
      if (fn->C_GetMechanismList(id, nullptr, &count) == CKR_OK) {
        std::vector<CK_MECHANISM_TYPE> list(count);
        if (fn->C_GetMechanismList(id, list.data(), &count) == CKR_OK) {
          list.resize(count);
          for (CK_MECHANISM_TYPE type : list) {
            MechanismDescription mechanism{type, CkmName(type), {}};
            fn->C_GetMechanismInfo(id, type, &mechanism.info);
            slot.mechanisms.push_back(mechanism);
          }
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
  CK_FUNCTION_LIST_PTR fn = module.fn();
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
  CK_RV rv = fn->C_InitToken(free_slot->id, const_cast<std::uint8_t*>(so_pin.data()),
                             static_cast<CK_ULONG>(so_pin.size()), padded);
  if (rv != CKR_OK) return CkError(rv, "C_InitToken");

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
  rv = fn->C_OpenSession(slot_id, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &session);
  if (rv != CKR_OK) return CkError(rv, "C_OpenSession");
  rv = fn->C_Login(session, CKU_SO, const_cast<std::uint8_t*>(so_pin.data()),
                   static_cast<CK_ULONG>(so_pin.size()));
  if (rv == CKR_OK) {
    rv = fn->C_InitPIN(session, const_cast<std::uint8_t*>(user_pin.data()),
                       static_cast<CK_ULONG>(user_pin.size()));
    fn->C_Logout(session);  // the security officer's login is for this step only
  }
  fn->C_CloseSession(session);
  if (rv != CKR_OK) return CkError(rv, "setting the user PIN (C_Login SO / C_InitPIN)");
  return slot_id;
}

}  // namespace strongroom::hsm
