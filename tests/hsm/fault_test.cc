// Failure handling of the HSM layer: a real SoftHSM2 token behind a module that injects the
// failures (tests/support/fault_pkcs11.cc).
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../support/fault_pkcs11.h"
#include "../support/softhsm_sandbox.h"
#include "strongroom/hsm/ck_result.h"
#include "strongroom/hsm/key_vault.h"
#include "strongroom/hsm/token.h"
#include "strongroom/hsm/wrapped_key.h"

namespace strongroom::hsm {
namespace {

using testing::SoftHsmSandbox;

constexpr char kFaultModule[] = SR_FAULT_MODULE_PATH;

// The shim's control functions, from the copy our Module loaded.
struct FaultControl {
  FaultControl() {
    handle = dlopen(kFaultModule, RTLD_NOW | RTLD_NOLOAD);
    if (handle == nullptr) handle = dlopen(kFaultModule, RTLD_NOW);
    fail_token = reinterpret_cast<sr_fault_fail_token_fn>(dlsym(handle, "sr_fault_fail_token"));
    fail_call = reinterpret_cast<sr_fault_fail_call_fn>(dlsym(handle, "sr_fault_fail_call"));
    lock_pin = reinterpret_cast<sr_fault_lock_pin_fn>(dlsym(handle, "sr_fault_lock_pin"));
    hide = reinterpret_cast<sr_fault_hide_mechanism_fn>(dlsym(handle, "sr_fault_hide_mechanism"));
    clear = reinterpret_cast<sr_fault_clear_fn>(dlsym(handle, "sr_fault_clear"));
    calls = reinterpret_cast<sr_fault_calls_fn>(dlsym(handle, "sr_fault_calls"));
    hold_next = reinterpret_cast<sr_fault_hold_next_fn>(dlsym(handle, "sr_fault_hold_next"));
    held = reinterpret_cast<sr_fault_held_fn>(dlsym(handle, "sr_fault_held"));
    release_held =
        reinterpret_cast<sr_fault_release_held_fn>(dlsym(handle, "sr_fault_release_held"));
  }
  void* handle;
  sr_fault_fail_token_fn fail_token;
  sr_fault_fail_call_fn fail_call;
  sr_fault_lock_pin_fn lock_pin;
  sr_fault_hide_mechanism_fn hide;
  sr_fault_clear_fn clear;
  sr_fault_calls_fn calls;
  sr_fault_hold_next_fn hold_next;
  sr_fault_held_fn held;
  sr_fault_release_held_fn release_held;
};

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    label_ = SoftHsmSandbox::Get().CreateToken(kFaultModule);
    ASSERT_NE(fault_.calls, nullptr) << "fault module control functions not found";
    fault_.clear();
    config_.name = "primary";
    config_.uri = SoftHsmSandbox::Get().Uri(kFaultModule, label_);
  }
  void TearDown() override { fault_.clear(); }

  std::unique_ptr<Token> OpenWithRoot() {
    auto token = Token::Open(config_);
    EXPECT_TRUE(token.ok()) << token.error().ToString();
    if (!token.ok()) return nullptr;
    EXPECT_TRUE((*token)->CreateRootKey("acme").ok());
    return std::move(token).value();
  }

  FaultControl fault_;
  std::string label_;
  TokenConfig config_;
  const KeyBinding binding_{"acme", "kms://kms.acme.example/keys/f00d"};
};

TEST_F(FaultTest, WrongPinIsTriedOnceAndNeverAgain) {
  std::string wrong = SoftHsmSandbox::Get().WriteFile("fault-wrong.pin", "000000\n");
  config_.uri = SoftHsmSandbox::Get().Uri(kFaultModule, label_, wrong);
  const unsigned long before = fault_.calls("C_Login");
  auto token = Token::Open(config_);
  ASSERT_FALSE(token.ok());
  EXPECT_EQ(token.error().code(), ErrorCode::kUnauthenticated);
  EXPECT_EQ(fault_.calls("C_Login") - before, 1u);
}

TEST_F(FaultTest, LockedPinIsReportedWithoutALoginAttempt) {
  fault_.lock_pin(1);
  const unsigned long before = fault_.calls("C_Login");
  auto token = Token::Open(config_);
  ASSERT_FALSE(token.ok());
  EXPECT_EQ(token.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(token.error().message().find("locked"), std::string::npos);
  EXPECT_EQ(fault_.calls("C_Login") - before, 0u);
}

TEST_F(FaultTest, MissingMechanismIsNamedAtOpen) {
  fault_.hide(CKM_AES_GCM);
  auto token = Token::Open(config_);
  ASSERT_FALSE(token.ok());
  EXPECT_EQ(token.error().code(), ErrorCode::kUnimplemented);
  EXPECT_NE(token.error().message().find("CKM_AES_GCM"), std::string::npos);
}

TEST_F(FaultTest, DeadSessionIsReplacedAndTheCallSucceeds) {
  auto token = OpenWithRoot();
  SecretBytes key = SecretBytes::Random(32);
  ASSERT_TRUE(token->Wrap(binding_, key.view()).ok());
  const auto replaced = token->Health().pool.replaced;
  fault_.fail_call("C_Encrypt", CKR_SESSION_HANDLE_INVALID, 1);
  auto blob = token->Wrap(binding_, key.view());
  ASSERT_TRUE(blob.ok()) << blob.error().ToString();
  EXPECT_EQ(token->Health().pool.replaced, replaced + 1);
  EXPECT_EQ(token->Health().module_resets, 0u);
}

TEST_F(FaultTest, DeviceErrorResetsTheModuleAndLogsInAgain) {
  auto token = OpenWithRoot();
  SecretBytes key = SecretBytes::Random(32);
  auto blob = token->Wrap(binding_, key.view());
  ASSERT_TRUE(blob.ok());
  const auto resets = token->Health().module_resets;
  const unsigned long logins = fault_.calls("C_Login");
  fault_.fail_call("C_Decrypt", CKR_DEVICE_ERROR, 1);
  auto back = token->Unwrap(binding_, *blob);
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_TRUE(ConstantTimeEquals(back->view(), key.view()));
  EXPECT_EQ(token->Health().module_resets, resets + 1);
  EXPECT_EQ(fault_.calls("C_Login") - logins, 1u);  // one new login, handles re-resolved
}

TEST_F(FaultTest, LostLoginIsRedone) {
  auto token = OpenWithRoot();
  SecretBytes key = SecretBytes::Random(32);
  ASSERT_TRUE(token->Wrap(binding_, key.view()).ok());
  const unsigned long logins = fault_.calls("C_Login");
  fault_.fail_call("C_EncryptInit", CKR_USER_NOT_LOGGED_IN, 1);
  ASSERT_TRUE(token->Wrap(binding_, key.view()).ok());
  EXPECT_EQ(fault_.calls("C_Login") - logins, 1u);
}

TEST_F(FaultTest, StaleHandleIsResolvedAgain) {
  auto token = OpenWithRoot();
  SecretBytes key = SecretBytes::Random(32);
  ASSERT_TRUE(token->Wrap(binding_, key.view()).ok());
  const unsigned long finds = fault_.calls("C_FindObjectsInit");
  fault_.fail_call("C_EncryptInit", CKR_KEY_HANDLE_INVALID, 1);
  ASSERT_TRUE(token->Wrap(binding_, key.view()).ok());
  EXPECT_GT(fault_.calls("C_FindObjectsInit"), finds);
}

TEST_F(FaultTest, PersistentOutageBecomesUnavailableAndRecovers) {
  auto token = OpenWithRoot();
  SecretBytes key = SecretBytes::Random(32);
  auto blob = token->Wrap(binding_, key.view());
  ASSERT_TRUE(blob.ok());
  fault_.fail_token(label_.c_str(), CKR_DEVICE_REMOVED, -1);
  auto down = token->Unwrap(binding_, *blob);
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.error().code(), ErrorCode::kUnavailable);
  EXPECT_EQ(token->Health().state, TokenState::kUnavailable);
  EXPECT_TRUE(token->InBackoff());
  fault_.clear();
  // Calls fail at once until the repair falls due (250 ms after the failure); the wait for it is
  // bounded, nothing is timed.
  Result<SecretBytes> up = Error(ErrorCode::kInternal, "not tried");
  for (int i = 0; i < 500 && !up.ok(); ++i) {
    up = token->Unwrap(binding_, *blob);
    if (!up.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(up.ok()) << up.error().ToString();
  EXPECT_EQ(token->Health().state, TokenState::kReady);
}

TEST_F(FaultTest, CallsToAnUnavailableTokenFailAtOnceUntilItsRepairIsDue) {
  auto token = OpenWithRoot();
  SecretBytes key = SecretBytes::Random(32);
  auto blob = token->Wrap(binding_, key.view());
  ASSERT_TRUE(blob.ok());
  fault_.fail_token(label_.c_str(), CKR_DEVICE_ERROR, -1);
  ASSERT_EQ(token->Unwrap(binding_, *blob).error().code(), ErrorCode::kUnavailable);
  ASSERT_EQ(token->Health().state, TokenState::kUnavailable);
  // Under load every caller would otherwise look for the token again, or reset the module and
  // with it every other token of the module. Until the repair is due (250 ms) nothing reaches
  // the token.
  auto calls = [&] {
    return fault_.calls("C_Initialize") + fault_.calls("C_GetTokenInfo") +
           fault_.calls("C_OpenSession") + fault_.calls("C_DecryptInit");
  };
  const auto resets = token->Health().module_resets;
  const unsigned long before = calls();
  for (int i = 0; i < 20; ++i) {
    auto down = token->Unwrap(binding_, *blob);
    ASSERT_FALSE(down.ok());
    EXPECT_EQ(down.error().code(), ErrorCode::kUnavailable);
  }
  EXPECT_EQ(token->Health().module_resets, resets);
  EXPECT_EQ(calls(), before);
}

// SoftHSM2 2.6.1 fails the creation of an object that a search of the same token meets
// (CKR_GENERAL_ERROR), and may leave the object unseen by searches until the module is initialized
// again: a token's searches of its objects and changes of them take turns (token.h). Here the
// probe's search comes while a wrap records its usage on the token (C_CreateObject, held in
// flight by the fault module), and must wait for it. Half a second for the search to go ahead of
// the change (it must not); nothing is timed.
TEST_F(FaultTest, ASearchOfTheTokensObjectsWaitsForAChangeInFlight) {
  auto token = OpenWithRoot();
  ASSERT_NE(token, nullptr);
  SecretBytes key = SecretBytes::Random(32);
  fault_.hold_next("C_CreateObject");
  std::thread wrapping([&] {
    auto blob = token->Wrap(binding_, key.view());  // the first wrap reserves wraps on the token
    EXPECT_TRUE(blob.ok()) << blob.error().ToString();
  });
  while (fault_.held() == 0) std::this_thread::yield();
  std::atomic<bool> checked{false};
  std::thread checking([&] {
    Status intact = token->CheckIntact();  // searches for the root key
    EXPECT_TRUE(intact.ok()) << intact.error().ToString();
    checked = true;
  });
  for (int i = 0; i < 25 && !checked.load(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_FALSE(checked.load()) << "a search ran beside a change of the token's objects";
  fault_.release_held();
  wrapping.join();
  checking.join();
  EXPECT_TRUE(checked.load());
  EXPECT_EQ(token->Health().state, TokenState::kReady);
}

// The other way round: a wrap that must record its usage waits for a search in flight (held by
// the fault module), while its own searches go ahead beside it.
TEST_F(FaultTest, AChangeOfTheTokensObjectsWaitsForASearchInFlight) {
  auto token = OpenWithRoot();
  ASSERT_NE(token, nullptr);
  SecretBytes key = SecretBytes::Random(32);
  fault_.hold_next("C_FindObjects");
  std::thread checking([&] {
    Status intact = token->CheckIntact();
    EXPECT_TRUE(intact.ok()) << intact.error().ToString();
  });
  while (fault_.held() == 0) std::this_thread::yield();
  const unsigned long searches = fault_.calls("C_FindObjectsInit");
  const unsigned long creations = fault_.calls("C_CreateObject");
  std::atomic<bool> wrapped{false};
  std::thread wrapping([&] {
    auto blob = token->Wrap(binding_, key.view());
    EXPECT_TRUE(blob.ok()) << blob.error().ToString();
    wrapped = true;
  });
  // The wrap's searches (its root key, the usage counters) run beside the held one; bounded.
  for (int i = 0; i < 3000 && fault_.calls("C_FindObjectsInit") < searches + 2 && !wrapped.load();
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_GE(fault_.calls("C_FindObjectsInit"), searches + 2);
  for (int i = 0; i < 25 && !wrapped.load(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_FALSE(wrapped.load()) << "a change of the token's objects ran beside a search";
  EXPECT_EQ(fault_.calls("C_CreateObject"), creations);
  fault_.release_held();
  checking.join();
  wrapping.join();
  EXPECT_TRUE(wrapped.load());
  EXPECT_EQ(fault_.calls("C_CreateObject"), creations + 1);
}

// CKR_GENERAL_ERROR is a token fault (docs/operations/hsm.md, "What counts as a token fault"):
// PKCS#11's unrecoverable error, after which SoftHSM2 may have lost an object from its searches
// until it is initialized again. One is cured by a module reset, and the call goes on.
TEST_F(FaultTest, AGeneralErrorIsRepairedByAModuleResetAndTheCallGoesOn) {
  auto token = OpenWithRoot();
  ASSERT_NE(token, nullptr);
  SecretBytes key = SecretBytes::Random(32);
  const auto resets = token->Health().module_resets;
  fault_.fail_call("C_CreateObject", CKR_GENERAL_ERROR, 1);
  auto blob = token->Wrap(binding_, key.view());  // the first wrap reserves wraps on the token
  ASSERT_TRUE(blob.ok()) << blob.error().ToString();
  EXPECT_EQ(token->Health().module_resets, resets + 1);
  EXPECT_EQ(token->Health().state, TokenState::kReady);
  auto back = token->Unwrap(binding_, *blob);
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_TRUE(ConstantTimeEquals(back->view(), key.view()));
}

// One that a reset does not cure marks the token unavailable, and health says so (with the
// reason) until a repair finds the token well again. (Before, the call failed and the token was
// still shown ready.)
TEST_F(FaultTest, AGeneralErrorThatPersistsMakesTheTokenUnavailableUntilItIsRepaired) {
  auto token = OpenWithRoot();
  ASSERT_NE(token, nullptr);
  SecretBytes key = SecretBytes::Random(32);
  fault_.fail_call("C_CreateObject", CKR_GENERAL_ERROR, -1);
  auto down = token->Wrap(binding_, key.view());
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.error().code(), ErrorCode::kUnavailable);
  const TokenHealth health = token->Health();
  EXPECT_EQ(health.state, TokenState::kUnavailable);
  EXPECT_NE(health.detail.find("CKR_GENERAL_ERROR"), std::string::npos) << health.detail;
  EXPECT_TRUE(token->InBackoff());
  fault_.clear();
  // Calls fail at once until the repair falls due (250 ms after the failure); bounded wait.
  Result<std::vector<std::uint8_t>> up = Error(ErrorCode::kInternal, "not tried");
  for (int i = 0; i < 500 && !up.ok(); ++i) {
    up = token->Wrap(binding_, key.view());
    if (!up.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(up.ok()) << up.error().ToString();
  EXPECT_EQ(token->Health().state, TokenState::kReady);
  EXPECT_GE(token->Health().repairs, 1u);
}

// But not from a decryption on a live session: SoftHSM2 reports a wrapped key whose GCM tag
// fails so. That is the blob's fault, and repairs nothing (no reset, no mark, no timing to tell).
TEST_F(FaultTest, AGeneralErrorOfADecryptionIsTheMessagesFaultAndResetsNothing) {
  auto token = OpenWithRoot();
  ASSERT_NE(token, nullptr);
  SecretBytes key = SecretBytes::Random(32);
  auto blob = token->Wrap(binding_, key.view());
  ASSERT_TRUE(blob.ok()) << blob.error().ToString();
  const auto resets = token->Health().module_resets;
  fault_.fail_call("C_Decrypt", CKR_GENERAL_ERROR, 1);
  auto back = token->Unwrap(binding_, *blob);
  ASSERT_FALSE(back.ok());
  EXPECT_EQ(back.error().code(), ErrorCode::kDataLoss) << back.error().ToString();
  EXPECT_EQ(token->Health().module_resets, resets);
  EXPECT_EQ(token->Health().state, TokenState::kReady);
}

// A token that fails only its decryptions (each a live session's CKR_GENERAL_ERROR, which a
// request must take for the message's fault) is found by the probe all the same: it has each key
// decrypt what that key encrypted itself. The fault gone, the repair finds it decrypting again.
TEST_F(FaultTest, AKeyThatNoLongerDecryptsWhatItEncryptedIsFoundByTheProbe) {
  auto token = OpenWithRoot();
  ASSERT_NE(token, nullptr);
  ASSERT_TRUE(token->CreateIdentityKey("kms", 2048).ok());
  SecretBytes key = SecretBytes::Random(32);
  auto blob = token->Wrap(binding_, key.view());
  ASSERT_TRUE(blob.ok()) << blob.error().ToString();
  token->Probe(token->module().generation());
  ASSERT_EQ(token->Health().state, TokenState::kReady) << token->Health().detail;
  const unsigned long decrypts = fault_.calls("C_Decrypt");
  EXPECT_GE(decrypts, 2u);  // the root key's and the identity key's probes

  fault_.fail_call("C_Decrypt", CKR_GENERAL_ERROR, -1);
  auto refused = token->Unwrap(binding_, *blob);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kDataLoss);  // a request cannot tell
  EXPECT_EQ(token->Health().state, TokenState::kReady);
  token->Probe(token->module().generation());
  EXPECT_EQ(token->Health().state, TokenState::kUnavailable);
  EXPECT_NE(token->Health().detail.find("root key acme v1 does not decrypt what it encrypted"),
            std::string::npos)
      << token->Health().detail;
  Status checked = token->CheckIntact();
  ASSERT_FALSE(checked.ok());
  EXPECT_EQ(checked.error().code(), ErrorCode::kUnavailable);

  fault_.clear();
  for (int i = 0; i < 500 && token->Health().state != TokenState::kReady; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    token->Probe(token->module().generation());  // repairs once its back-off is over
  }
  ASSERT_EQ(token->Health().state, TokenState::kReady) << token->Health().detail;
  auto back = token->Unwrap(binding_, *blob);
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_TRUE(std::equal(back->view().begin(), back->view().end(), key.view().begin()));
}

// An identity key alone: its RSA-OAEP decryption is probed the same way.
TEST_F(FaultTest, AnIdentityKeyThatNoLongerDecryptsIsFoundByTheProbe) {
  auto token = Token::Open(config_);
  ASSERT_TRUE(token.ok()) << token.error().ToString();
  ASSERT_TRUE((*token)->CreateIdentityKey("kms", 2048).ok());
  (*token)->Probe((*token)->module().generation());
  ASSERT_EQ((*token)->Health().state, TokenState::kReady) << (*token)->Health().detail;
  fault_.fail_call("C_Decrypt", CKR_GENERAL_ERROR, -1);
  (*token)->Probe((*token)->module().generation());
  EXPECT_EQ((*token)->Health().state, TokenState::kUnavailable);
  EXPECT_NE((*token)->Health().detail.find(
                "identity key kms does not decrypt what its public half encrypted"),
            std::string::npos)
      << (*token)->Health().detail;
}

// Removes a token object by its CKA_ID, as an operator's vendor tool would.
void DestroyObject(Token& token, CK_OBJECT_CLASS cls, const std::string& object_id) {
  CK_FUNCTION_LIST_PTR fn = token.module().fn();
  CK_SESSION_HANDLE session = CK_INVALID_HANDLE;
  ASSERT_EQ(fn->C_OpenSession(token.slot(), CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr,
                              &session),
            CKR_OK);
  CK_BBOOL yes = CK_TRUE;
  CK_ATTRIBUTE match[] = {{CKA_CLASS, &cls, sizeof cls},
                          {CKA_TOKEN, &yes, sizeof yes},
                          {CKA_ID, const_cast<char*>(object_id.data()), object_id.size()}};
  CK_OBJECT_HANDLE object = CK_INVALID_HANDLE;
  CK_ULONG found = 0;
  ASSERT_EQ(fn->C_FindObjectsInit(session, match, 3), CKR_OK);
  ASSERT_EQ(fn->C_FindObjects(session, &object, 1, &found), CKR_OK);
  fn->C_FindObjectsFinal(session);
  ASSERT_EQ(found, 1u) << object_id;
  EXPECT_EQ(fn->C_DestroyObject(session, object), CKR_OK);
  fn->C_CloseSession(session);
}

// A key the token held is believed gone only while the token proves itself intact (it holds the
// newest version of every organization's root key): an old version an operator retired is
// NOT_FOUND and the token stays ready; the newest version gone is a fault of the token.
TEST_F(FaultTest, ARetiredOldRootVersionIsMissingButTheNewestOneMissingIsAFault) {
  config_.session_copies = false;  // every use goes to the token object
  auto token = OpenWithRoot();
  SecretBytes key = SecretBytes::Random(32);
  auto old_blob = token->Wrap(binding_, key.view());
  ASSERT_TRUE(old_blob.ok());
  ASSERT_TRUE(token->CreateRootKey("acme").ok());
  auto new_blob = token->Wrap(binding_, key.view());
  ASSERT_TRUE(new_blob.ok());
  ASSERT_TRUE(token->Unwrap(binding_, *old_blob).ok());

  DestroyObject(*token, CKO_SECRET_KEY, RootKeyObjectId({"acme", 1}));
  auto retired = token->Unwrap(binding_, *old_blob);
  ASSERT_FALSE(retired.ok());
  EXPECT_EQ(retired.error().code(), ErrorCode::kNotFound) << retired.error().ToString();
  EXPECT_EQ(token->Health().state, TokenState::kReady);
  ASSERT_TRUE(token->Unwrap(binding_, *new_blob).ok());

  DestroyObject(*token, CKO_SECRET_KEY, RootKeyObjectId({"acme", 2}));
  auto gone = token->Unwrap(binding_, *new_blob);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code(), ErrorCode::kUnavailable) << gone.error().ToString();
  EXPECT_EQ(token->Health().state, TokenState::kUnavailable);
  EXPECT_NE(token->Health().detail.find("no longer holds root key acme v2"), std::string::npos)
      << token->Health().detail;
  // Opened anew (kmsd restarted), the token holds what it holds: no key for acme.
  token.reset();
  auto reopened = Token::Open(config_);
  ASSERT_TRUE(reopened.ok()) << reopened.error().ToString();
  auto roots = (*reopened)->ListRootKeys("acme");
  ASSERT_TRUE(roots.ok()) << roots.error().ToString();
  EXPECT_TRUE(roots->empty());
}

TEST(CkResultTest, EveryFailureOfTheTokenIsATokenFault) {
  EXPECT_EQ(ClassifyCkr(CKR_DEVICE_MEMORY), CkFailure::kModuleDead);
  EXPECT_EQ(ClassifyCkr(CKR_TOKEN_NOT_RECOGNIZED), CkFailure::kTokenGone);
  EXPECT_EQ(ClassifyCkr(kCkrTokenFault), CkFailure::kTokenFault);
  EXPECT_EQ(ClassifyCkr(CKR_GENERAL_ERROR), CkFailure::kModuleDead);
  for (CK_RV rv : {CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED, CKR_DEVICE_MEMORY, CKR_TOKEN_NOT_PRESENT,
                   CKR_SESSION_CLOSED, CKR_SESSION_HANDLE_INVALID, CKR_OBJECT_HANDLE_INVALID,
                   CKR_KEY_HANDLE_INVALID, CKR_CRYPTOKI_NOT_INITIALIZED, CKR_USER_NOT_LOGGED_IN,
                   CKR_GENERAL_ERROR, kCkrTokenFault}) {
    EXPECT_TRUE(IsTokenFault(CkError(rv, "C_Something"))) << CkrName(rv);
  }
  // CKR_FUNCTION_FAILED is "not necessarily totally hopeless" (PKCS#11): the call's failure.
  for (CK_RV rv : {CKR_ENCRYPTED_DATA_INVALID, CKR_DATA_LEN_RANGE, CKR_PIN_INCORRECT,
                   CKR_MECHANISM_INVALID, CKR_FUNCTION_FAILED}) {
    EXPECT_FALSE(IsTokenFault(CkError(rv, "C_Something"))) << CkrName(rv);
  }
  EXPECT_FALSE(IsTokenFault(Error(ErrorCode::kNotFound, "no such key")));
  EXPECT_EQ(CkError(kCkrTokenFault, "check").code(), ErrorCode::kUnavailable);
  EXPECT_EQ(CkrName(kCkrTokenFault), "STRONGROOM_TOKEN_FAULT");
}

// SoftHSM2 whose token directory is taken away (and put back) under a running module: it then
// finds none of the token's objects, refuses C_GetTokenInfo with CKR_GENERAL_ERROR, and stays so
// after the directory is back until the module is initialized again. Keys that were there and are
// no longer found are a token fault, not a missing key nor a message that does not decrypt.
class TokenDirectoryTest : public FaultTest {
 protected:
  void TearDown() override {
    if (!away_.empty() && std::filesystem::exists(away_)) PutBack();
    FaultTest::TearDown();
  }
  void TakeAway() {
    home_ = SoftHsmSandbox::Get().TokenDirectory(label_);
    // Out of the token directory: SoftHSM2 takes any directory in it for a token.
    away_ = SoftHsmSandbox::Get().dir() + "/away-" + label_;
    std::filesystem::rename(home_, away_);
  }
  void PutBack() { std::filesystem::rename(away_, home_); }
  std::string home_, away_;
};

TEST_F(TokenDirectoryTest, KeysThatVanishedAreAnOutageAndComeBackWithTheirToken) {
  auto token = OpenWithRoot();
  ASSERT_TRUE(token->CreateIdentityKey("kms", 2048).ok());
  SecretBytes key = SecretBytes::Random(32);
  auto blob = token->Wrap(binding_, key.view());
  ASSERT_TRUE(blob.ok());
  const std::vector<std::uint8_t> message = {1, 2, 3};
  ASSERT_TRUE(token->SignPs256("kms", message).ok());
  std::vector<std::uint8_t> garbage(256, 0x42);  // as long as the modulus: the message's fault
  ASSERT_EQ(token->DecryptRsaOaep("kms", garbage).error().code(), ErrorCode::kInvalidArgument);

  TakeAway();
  auto sign = token->SignPs256("kms", message);
  ASSERT_FALSE(sign.ok());
  EXPECT_EQ(sign.error().code(), ErrorCode::kUnavailable) << sign.error().ToString();
  EXPECT_EQ(token->Health().state, TokenState::kUnavailable);
  auto decrypt = token->DecryptRsaOaep("kms", garbage);
  ASSERT_FALSE(decrypt.ok());
  EXPECT_EQ(decrypt.error().code(), ErrorCode::kUnavailable) << decrypt.error().ToString();
  auto roots = token->ListRootKeys("acme");
  ASSERT_FALSE(roots.ok()) << roots->size() << " root keys listed";
  EXPECT_EQ(roots.error().code(), ErrorCode::kUnavailable);
  auto unwrapped = token->Unwrap(binding_, *blob);
  ASSERT_FALSE(unwrapped.ok());
  EXPECT_EQ(unwrapped.error().code(), ErrorCode::kUnavailable);

  // Back: the token is repaired (the module initialized again) without being opened anew; the
  // wait is bounded, nothing is timed.
  PutBack();
  Result<std::vector<std::uint8_t>> signed_again = Error(ErrorCode::kInternal, "not tried");
  for (int i = 0; i < 1000 && !signed_again.ok(); ++i) {
    signed_again = token->SignPs256("kms", message);
    if (!signed_again.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(signed_again.ok()) << signed_again.error().ToString();
  EXPECT_EQ(token->Health().state, TokenState::kReady);
  auto back = token->Unwrap(binding_, *blob);
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_TRUE(ConstantTimeEquals(back->view(), key.view()));
  EXPECT_EQ(token->DecryptRsaOaep("kms", garbage).error().code(), ErrorCode::kInvalidArgument);
}

// Why a repair of a token that went away resets the module rather than look for it first: SoftHSM2
// sees a token directory that came back only once it is initialized again. Before that, the token
// either fails C_GetTokenInfo in its old slot or, after a reset while it was away, is not listed.
TEST_F(TokenDirectoryTest, SoftHsmSeesATokenThatCameBackOnlyOnceInitializedAgain) {
  auto token = OpenWithRoot();
  Module& module = token->module();
  auto listed_and_answering = [&] {
    auto guard = module.UseGuard();
    CK_FUNCTION_LIST_PTR fn = module.fn();
    CK_ULONG count = 0;
    EXPECT_EQ(fn->C_GetSlotList(CK_TRUE, nullptr, &count), CKR_OK);
    std::vector<CK_SLOT_ID> slots(count);
    EXPECT_EQ(fn->C_GetSlotList(CK_TRUE, slots.data(), &count), CKR_OK);
    for (CK_ULONG i = 0; i < count; ++i) {
      CK_TOKEN_INFO info{};
      if (fn->C_GetTokenInfo(slots[i], &info) != CKR_OK) continue;
      const std::string label(reinterpret_cast<const char*>(info.label), sizeof info.label);
      if (label.rfind(label_ + " ", 0) == 0) return true;
    }
    return false;
  };
  ASSERT_TRUE(listed_and_answering());
  TakeAway();
  EXPECT_FALSE(listed_and_answering());
  PutBack();
  EXPECT_FALSE(listed_and_answering());  // back, but not seen
  TakeAway();
  ASSERT_TRUE(module.Reset(module.generation()).ok());
  PutBack();
  EXPECT_FALSE(listed_and_answering());  // initialized while it was away: not listed
  ASSERT_TRUE(module.Reset(module.generation()).ok());
  EXPECT_TRUE(listed_and_answering());
}

class KeyVaultTest : public FaultTest {
 protected:
  void SetUp() override {
    FaultTest::SetUp();
    TokenConfig standby = config_;
    standby.name = "standby";
    standby_label_ = SoftHsmSandbox::Get().CreateToken(kFaultModule);
    standby.uri = SoftHsmSandbox::Get().Uri(kFaultModule, standby_label_);
    auto vault = KeyVault::Open({{config_, standby}});
    ASSERT_TRUE(vault.ok()) << vault.error().ToString();
    vault_ = std::move(vault).value();
    auto roots = vault_->InitRoot("acme");
    ASSERT_TRUE(roots.ok()) << roots.error().ToString();
    ASSERT_EQ(roots->size(), 2u);
  }
  std::unique_ptr<KeyVault> vault_;
  std::string standby_label_;
};

TEST_F(KeyVaultTest, WrapsUnderEveryTokensRootKey) {
  SecretBytes key = SecretBytes::Random(32);
  auto wrapped = vault_->Wrap(binding_, key.view());
  ASSERT_TRUE(wrapped.ok()) << wrapped.error().ToString();
  ASSERT_EQ(wrapped->blobs.size(), 2u);
  EXPECT_TRUE(wrapped->missing.empty());
  EXPECT_EQ(wrapped->blobs[0].token, "primary");
  EXPECT_EQ(wrapped->blobs[1].token, "standby");
  EXPECT_NE(wrapped->blobs[0].blob, wrapped->blobs[1].blob);
  // Each blob opens on its own token alone.
  for (const TokenBlob& one : wrapped->blobs) {
    auto back = vault_->Unwrap(binding_, std::span(&one, 1));
    ASSERT_TRUE(back.ok()) << one.token << ": " << back.error().ToString();
    EXPECT_TRUE(ConstantTimeEquals(back->view(), key.view()));
  }
}

TEST_F(KeyVaultTest, InitRootTwiceIsRefusedAndRotationAdvancesEveryToken) {
  EXPECT_EQ(vault_->InitRoot("acme").error().code(), ErrorCode::kAlreadyExists);
  auto rotated = vault_->RotateRoot("acme");
  ASSERT_TRUE(rotated.ok());
  for (const RootKeyInfo& info : *rotated) EXPECT_EQ(info.id.version, 2u);
  auto sets = vault_->ListRoots("acme");
  ASSERT_TRUE(sets.ok());
  for (const RootKeySet& set : *sets) EXPECT_EQ(set.keys.size(), 2u) << set.token;
}

// A second KMS node on the same tokens (here a second vault, with its probe) learns of a rotation
// another node made: within a probe interval it wraps under the new version, on every token,
// without a restart. Before, it kept the version it had cached and wrapped new keys under the
// retired one.
TEST_F(KeyVaultTest, AnotherNodesRotationBecomesCurrentAtTheNextProbe) {
  TokenConfig standby = config_;
  standby.name = "standby";
  standby.uri = SoftHsmSandbox::Get().Uri(kFaultModule, standby_label_);
  HsmConfig config{{config_, standby}};
  config.probe_interval = std::chrono::milliseconds(20);
  auto other = KeyVault::Open(config);
  ASSERT_TRUE(other.ok()) << other.error().ToString();
  SecretBytes key = SecretBytes::Random(32);
  auto versions = [&]() {
    std::vector<std::uint32_t> out;
    auto wrapped = (*other)->Wrap(binding_, key.view());
    EXPECT_TRUE(wrapped.ok()) << wrapped.error().ToString();
    if (!wrapped.ok()) return out;
    for (const TokenBlob& one : wrapped->blobs) {
      auto parsed = ParseWrappedKey(one.blob);
      EXPECT_TRUE(parsed.ok());
      out.push_back(parsed.ok() ? parsed->root_version : 0);
    }
    return out;
  };
  ASSERT_EQ(versions(), (std::vector<std::uint32_t>{1, 1}));  // v1 is cached now

  ASSERT_TRUE(vault_->RotateRoot("acme").ok());
  bool moved = false;
  for (int i = 0; i < 3000 && !moved; ++i) {
    moved = versions() == std::vector<std::uint32_t>{2, 2};
    if (!moved) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(moved);
}

TEST_F(KeyVaultTest, UnwrapFailsOverToTheStandbyUnderLoad) {
  constexpr int kKeys = 20;
  std::vector<std::vector<TokenBlob>> blobs;
  std::vector<SecretBytes> keys;
  for (int i = 0; i < kKeys; ++i) {
    keys.push_back(SecretBytes::Random(32));
    auto wrapped = vault_->Wrap({"acme", "k" + std::to_string(i)}, keys.back().view());
    ASSERT_TRUE(wrapped.ok());
    blobs.push_back(wrapped->blobs);
  }
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&, t] {
      for (int i = t; !stop.load(); i = (i + 1) % kKeys) {
        auto key = vault_->Unwrap({"acme", "k" + std::to_string(i)}, blobs[i]);
        if (key.ok() && ConstantTimeEquals(key->view(), keys[i].view())) {
          ++ok;
        } else {
          if (!key.ok()) ADD_FAILURE() << key.error().ToString();
          ++failed;
        }
      }
    });
  }
  while (ok.load() < 200) std::this_thread::yield();
  fault_.fail_token(label_.c_str(), CKR_DEVICE_REMOVED, -1);
  const int at_failure = ok.load();
  while (ok.load() < at_failure + 400) std::this_thread::yield();
  stop = true;
  for (auto& r : readers) r.join();
  EXPECT_EQ(failed.load(), 0);
  auto health = vault_->Health();
  EXPECT_EQ(health[0].state, TokenState::kUnavailable);
  EXPECT_EQ(health[1].state, TokenState::kReady);

  // New keys are still wrapped (by the standby), and the gap is reported for a later rewrap.
  SecretBytes key = SecretBytes::Random(32);
  auto wrapped = vault_->Wrap(binding_, key.view());
  ASSERT_TRUE(wrapped.ok());
  ASSERT_EQ(wrapped->blobs.size(), 1u);
  EXPECT_EQ(wrapped->blobs[0].token, "standby");
  ASSERT_EQ(wrapped->missing.size(), 1u);
  EXPECT_EQ(wrapped->missing[0].code(), ErrorCode::kUnavailable);
}

// An unwrap that began before the primary failed, and succeeds after another call saw it fail,
// must not mark the primary ready again: its success is older news than the failure. (Under load
// the stress run of UnwrapFailsOverToTheStandbyUnderLoad hit exactly this.)
TEST_F(KeyVaultTest, ASuccessThatBeganBeforeAFailureDoesNotReviveTheToken) {
  SecretBytes key = SecretBytes::Random(32);
  auto wrapped = vault_->Wrap(binding_, key.view());
  ASSERT_TRUE(wrapped.ok());
  fault_.hold_next("C_Decrypt");
  std::thread slow([&] {
    auto back = vault_->Unwrap(binding_, wrapped->blobs);  // on the primary, held after it worked
    EXPECT_TRUE(back.ok() && ConstantTimeEquals(back->view(), key.view()));
  });
  while (fault_.held() == 0) std::this_thread::yield();
  fault_.fail_token(label_.c_str(), CKR_DEVICE_REMOVED, -1);
  auto meanwhile = vault_->Unwrap(binding_, wrapped->blobs);  // the primary fails: the standby
  ASSERT_TRUE(meanwhile.ok()) << meanwhile.error().ToString();
  EXPECT_EQ(vault_->Health()[0].state, TokenState::kUnavailable);
  fault_.release_held();
  slow.join();
  EXPECT_EQ(vault_->Health()[0].state, TokenState::kUnavailable);
  EXPECT_EQ(vault_->Health()[1].state, TokenState::kReady);

  // A call that begins after the failure and succeeds marks it ready again (once its backoff of
  // 250 ms has passed; the wait is bounded, nothing is timed).
  fault_.clear();
  bool revived = false;
  for (int i = 0; i < 200 && !revived; ++i) {
    revived = vault_->Unwrap(binding_, std::span(&wrapped->blobs[0], 1)).ok();
    if (!revived) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(revived);
  EXPECT_EQ(vault_->Health()[0].state, TokenState::kReady);
}

// The vault's background probe finds a faulty token without a request, and repairs it once the
// fault is gone (every wait bounded, nothing timed).
TEST_F(KeyVaultTest, TheProbeFindsAFaultAndRepairsItWithoutAnyRequest) {
  TokenConfig standby = config_;
  standby.name = "standby";
  standby.uri = SoftHsmSandbox::Get().Uri(kFaultModule, standby_label_);
  vault_.reset();
  HsmConfig config{{config_, standby}};
  config.probe_interval = std::chrono::milliseconds(50);
  auto vault = KeyVault::Open(config);
  ASSERT_TRUE(vault.ok()) << vault.error().ToString();
  auto primary_becomes = [&](TokenState state) {
    for (int i = 0; i < 3000; ++i) {
      if ((*vault)->Health()[0].state == state) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  };
  fault_.fail_token(label_.c_str(), CKR_DEVICE_ERROR, -1);
  ASSERT_TRUE(primary_becomes(TokenState::kUnavailable));
  EXPECT_EQ((*vault)->Health()[1].state, TokenState::kReady);
  EXPECT_NE((*vault)->Health()[0].detail.find("primary"), std::string::npos)
      << (*vault)->Health()[0].detail;
  // Repairs are attempted (and fail) with a growing back-off; the standby keeps working.
  for (int i = 0; i < 3000 && (*vault)->Health()[0].repairs < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_GE((*vault)->Health()[0].repairs, 2u);
  SecretBytes key = SecretBytes::Random(32);
  auto wrapped = (*vault)->Wrap(binding_, key.view());
  ASSERT_TRUE(wrapped.ok()) << wrapped.error().ToString();
  EXPECT_EQ(wrapped->blobs.size(), 1u);

  fault_.clear();
  ASSERT_TRUE(primary_becomes(TokenState::kReady)) << (*vault)->Health()[0].detail;
  auto both = (*vault)->Wrap(binding_, key.view());
  ASSERT_TRUE(both.ok()) << both.error().ToString();
  EXPECT_EQ(both->blobs.size(), 2u);
}

// Tokens of one module share its initialization: a repair of one token initializes the module
// again (C_Finalize, C_Initialize), and every other token of the module loses its sessions and its
// login with it. A call on a healthy token that meets such a reset logs in again and goes on, and
// the reset is not a fault of that token: losing one token loses nothing, however often the lost
// one is repaired.
class SharedModuleTest : public KeyVaultTest {
 protected:
  void TearDown() override {
    stop_ = true;
    for (std::thread& t : threads_) t.join();
    if (!away_.empty() && std::filesystem::exists(away_)) PutBack();
    KeyVaultTest::TearDown();
  }

  // Reopens the vault with its background probe running (it repairs a token when due).
  void OpenWithProbe() {
    TokenConfig standby = config_;
    standby.name = "standby";
    standby.uri = SoftHsmSandbox::Get().Uri(kFaultModule, standby_label_);
    vault_.reset();
    HsmConfig config{{config_, standby}};
    config.probe_interval = std::chrono::milliseconds(20);
    auto vault = KeyVault::Open(config);
    ASSERT_TRUE(vault.ok()) << vault.error().ToString();
    vault_ = std::move(vault).value();
  }

  // Calls on the standby alone, from four threads, until stop_: wraps, and unwraps of a key it
  // wrapped before, each thread pausing `pause` after each call. Every failure is kept.
  void LoadTheStandby(std::chrono::microseconds pause = std::chrono::microseconds(0)) {
    Token& standby = *vault_->tokens()[1];
    auto key = std::make_shared<SecretBytes>(SecretBytes::Random(32));
    auto blob = standby.Wrap(binding_, key->view());
    ASSERT_TRUE(blob.ok()) << blob.error().ToString();
    auto wrapped = std::make_shared<std::vector<std::uint8_t>>(std::move(blob).value());
    for (int t = 0; t < 4; ++t) {
      threads_.emplace_back([this, &standby, key, wrapped, t, pause] {
        for (int i = 0; !stop_.load(); ++i) {
          Status s = OkStatus();
          if ((i + t) % 2 == 0) {
            auto back = standby.Unwrap(binding_, *wrapped);
            if (!back.ok()) {
              s = back.error();
            } else if (!ConstantTimeEquals(back->view(), key->view())) {
              s = Error(ErrorCode::kDataLoss, "unwrapped to another key");
            }
          } else if (auto again = standby.Wrap(binding_, key->view()); !again.ok()) {
            s = again.error();
          }
          if (s.ok()) {
            ++calls_ok_;
          } else {
            std::lock_guard lock(mutex_);
            failures_.push_back(s.error().ToString());
          }
          if (pause.count() > 0) std::this_thread::sleep_for(pause);
        }
      });
    }
  }

  std::vector<std::string> Failures() {
    std::lock_guard lock(mutex_);
    return failures_;
  }

  void TakeAway() {
    home_ = SoftHsmSandbox::Get().TokenDirectory(label_);
    away_ = SoftHsmSandbox::Get().dir() + "/away-" + label_;
    std::filesystem::rename(home_, away_);
  }
  void PutBack() { std::filesystem::rename(away_, home_); }

  std::string home_, away_;
  std::atomic<bool> stop_{false};
  std::atomic<int> calls_ok_{0};
  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::vector<std::string> failures_;
};

// The module reset again and again, as repairs of other tokens reset it: every call on the standby
// succeeds, and none of them marks it unavailable or counts as a repair of its own.
TEST_F(SharedModuleTest, ACallOnAHealthyTokenGoesOnThroughResetsOfItsModule) {
  Token& standby = *vault_->tokens()[1];
  Module& module = standby.module();
  const std::uint64_t resets_before = module.resets();
  const std::uint64_t logins_before = standby.Health().login_attempts;
  // Short pauses between calls, so that resets come between calls as well as during them.
  LoadTheStandby(std::chrono::microseconds(100));
  for (int i = 0; i < 200; ++i) {
    const int before = calls_ok_.load();
    ASSERT_TRUE(module.Reset(module.generation()).ok());
    // A few calls between resets, so that calls meet every step of a reset (bounded wait).
    for (int j = 0; j < 100000 && calls_ok_.load() < before + 2 && Failures().empty(); ++j) {
      std::this_thread::yield();
    }
  }
  stop_ = true;
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  EXPECT_GE(module.resets() - resets_before, 200u);
  // One new login per reset at most, whatever the number of calls that met it.
  EXPECT_LE(standby.Health().login_attempts - logins_before, module.resets() - resets_before);
  const std::vector<std::string> failures = Failures();
  EXPECT_TRUE(failures.empty()) << failures.size() << " calls failed, the first: " << failures[0];
  EXPECT_GE(calls_ok_.load(), 200);
  EXPECT_EQ(standby.Health().state, TokenState::kReady) << standby.Health().detail;
  EXPECT_EQ(standby.Health().repairs, 0u);
  EXPECT_FALSE(standby.InBackoff());
}

// A reset waits for the calls in flight to end, and calls that come meanwhile wait for the reset:
// otherwise a steady load on the standby holds a repair of the primary off for as long as it lasts
// (and with it the thread that repairs, a client's request or the probe).
TEST_F(SharedModuleTest, AResetThatWaitsForACallInFlightHoldsNewCallsBack) {
  Token& standby = *vault_->tokens()[1];
  Module& module = standby.module();
  SecretBytes key = SecretBytes::Random(32);
  auto blob = standby.Wrap(binding_, key.view());
  ASSERT_TRUE(blob.ok()) << blob.error().ToString();
  fault_.hold_next("C_Decrypt");
  std::thread in_flight([&] {
    auto back = standby.Unwrap(binding_, *blob);  // held after its C_Decrypt, session leased
    EXPECT_TRUE(back.ok() && ConstantTimeEquals(back->view(), key.view()));
  });
  while (fault_.held() == 0) std::this_thread::yield();
  const std::uint64_t generation = module.generation();
  std::thread reset([&] { EXPECT_TRUE(module.Reset(generation).ok()); });
  while (module.resets_waiting() == 0) std::this_thread::yield();
  std::atomic<bool> wrapped{false};
  std::thread later([&] {
    auto again = standby.Wrap(binding_, key.view());
    EXPECT_TRUE(again.ok()) << again.error().ToString();
    wrapped = true;
  });
  // Half a second for the new call to go ahead of the reset (it must not); nothing is timed.
  for (int i = 0; i < 25 && !wrapped.load(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_FALSE(wrapped.load()) << "a call went ahead of a reset that waited";
  fault_.release_held();
  in_flight.join();
  reset.join();
  later.join();
  EXPECT_TRUE(wrapped.load());
  EXPECT_EQ(module.generation(), generation + 1);
  EXPECT_EQ(standby.Health().state, TokenState::kReady);
}

// The finding: the primary's token directory taken away under load (SoftHSM2 then sees the token
// again only once the module is initialized again, so each repair of the primary resets the module
// the standby shares). Every call on the standby succeeds while the primary is repaired again and
// again, and the primary comes back once its directory does.
TEST_F(SharedModuleTest, TheStandbyServesEveryCallWhileTheLostPrimaryIsRepairedAgainAndAgain) {
  OpenWithProbe();
  Token& primary = *vault_->tokens()[0];
  Token& standby = *vault_->tokens()[1];
  SecretBytes key = SecretBytes::Random(32);
  auto both = vault_->Wrap(binding_, key.view());
  ASSERT_TRUE(both.ok()) << both.error().ToString();
  ASSERT_EQ(both->blobs.size(), 2u);
  const std::uint64_t resets_before = primary.module().resets();
  LoadTheStandby();
  TakeAway();
  // Bounded waits, nothing timed: the repairs fall due 250 ms, 500 ms, 1 s after the failure.
  auto wait_for = [](const std::function<bool()>& condition) {
    for (int i = 0; i < 3000 && !condition(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return condition();
  };
  ASSERT_TRUE(wait_for([&] { return primary.Health().state == TokenState::kUnavailable; }));
  ASSERT_TRUE(wait_for([&] { return primary.Health().repairs >= 3; }))
      << primary.Health().repairs << " repairs";
  EXPECT_GE(primary.module().resets() - resets_before, 3u);
  const int ok_while_down = calls_ok_.load();
  PutBack();
  ASSERT_TRUE(wait_for([&] { return primary.Health().state == TokenState::kReady; }))
      << primary.Health().detail;
  stop_ = true;
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  const std::vector<std::string> failures = Failures();
  EXPECT_TRUE(failures.empty()) << failures.size() << " calls failed, the first: " << failures[0];
  EXPECT_GT(ok_while_down, 0);
  EXPECT_EQ(standby.Health().state, TokenState::kReady) << standby.Health().detail;
  EXPECT_EQ(standby.Health().repairs, 0u);
  // The primary alone opens what was wrapped for it before it went.
  auto back = vault_->Unwrap(binding_, std::span(&both->blobs[0], 1));
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_TRUE(ConstantTimeEquals(back->view(), key.view()));
}

// kmsd's start (HsmConfig::start_degraded): a token that cannot be opened is kept, marked
// unavailable, and opened by a repair once it is back; the other token serves meanwhile. The
// strict start of kmsctl still fails. (Before, KeyVault::Open failed whenever any token did.)
TEST_F(KeyVaultTest, AVaultStartedWithoutThePrimaryServesAndOpensItWhenItIsBack) {
  SecretBytes key = SecretBytes::Random(32);
  auto wrapped = vault_->Wrap(binding_, key.view());
  ASSERT_TRUE(wrapped.ok());
  TokenConfig standby = config_;
  standby.name = "standby";
  standby.uri = SoftHsmSandbox::Get().Uri(kFaultModule, standby_label_);
  vault_.reset();
  fault_.fail_token(label_.c_str(), CKR_DEVICE_REMOVED, -1);  // the primary is gone at start

  HsmConfig config{{config_, standby}};
  config.probe_interval = std::chrono::milliseconds(50);
  EXPECT_EQ(KeyVault::Open(config).error().code(), ErrorCode::kNotFound);  // kmsctl's start
  config.start_degraded = true;
  auto vault = KeyVault::Open(config);
  ASSERT_TRUE(vault.ok()) << vault.error().ToString();
  std::vector<TokenHealth> health = (*vault)->Health();
  EXPECT_EQ(health[0].state, TokenState::kUnavailable);
  EXPECT_NE(health[0].detail.find("could not be opened at start"), std::string::npos)
      << health[0].detail;
  EXPECT_EQ(health[1].state, TokenState::kReady);
  EXPECT_FALSE((*vault)->tokens()[0]->opened());
  EXPECT_EQ((*vault)->ReadyFor("acme"), std::vector<Token*>{(*vault)->tokens()[1].get()});

  auto back = (*vault)->Unwrap(binding_, wrapped->blobs);
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_TRUE(ConstantTimeEquals(back->view(), key.view()));
  auto fresh = (*vault)->Wrap(binding_, key.view());
  ASSERT_TRUE(fresh.ok()) << fresh.error().ToString();
  ASSERT_EQ(fresh->blobs.size(), 1u);
  EXPECT_EQ(fresh->blobs[0].token, "standby");

  fault_.clear();  // the primary is back: the probe opens it, no request needed
  bool ready = false;
  for (int i = 0; i < 3000 && !ready; ++i) {
    ready = (*vault)->Health()[0].state == TokenState::kReady;
    if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(ready) << (*vault)->Health()[0].detail;
  EXPECT_TRUE((*vault)->tokens()[0]->opened());
  EXPECT_GE((*vault)->Health()[0].repairs, 1u);
  auto primary_only = (*vault)->Unwrap(binding_, std::span(&wrapped->blobs[0], 1));
  ASSERT_TRUE(primary_only.ok()) << primary_only.error().ToString();
  EXPECT_TRUE(ConstantTimeEquals(primary_only->view(), key.view()));
  auto both = (*vault)->Wrap(binding_, key.view());
  ASSERT_TRUE(both.ok());
  EXPECT_EQ(both->blobs.size(), 2u);
}

// A wrong PIN at kmsd's start refuses that token for good: one C_Login and never another (however
// many probe rounds pass), health says login-refused, and the other token serves. (Before,
// KeyVault::Open failed, so kmsd did not start.)
TEST_F(KeyVaultTest, AWrongPinAtStartRefusesThatTokenForGoodAndTheOtherServes) {
  SecretBytes key = SecretBytes::Random(32);
  auto wrapped = vault_->Wrap(binding_, key.view());
  ASSERT_TRUE(wrapped.ok());
  TokenConfig primary = config_;
  primary.uri = SoftHsmSandbox::Get().Uri(
      kFaultModule, label_, SoftHsmSandbox::Get().WriteFile("vault-wrong.pin", "000000\n"));
  TokenConfig standby = config_;
  standby.name = "standby";
  standby.uri = SoftHsmSandbox::Get().Uri(kFaultModule, standby_label_);
  vault_.reset();

  HsmConfig config{{primary, standby}};
  config.probe_interval = std::chrono::milliseconds(50);
  config.start_degraded = true;
  const unsigned long logins = fault_.calls("C_Login");
  auto vault = KeyVault::Open(config);
  ASSERT_TRUE(vault.ok()) << vault.error().ToString();
  EXPECT_EQ(fault_.calls("C_Login") - logins, 2u);  // one each
  std::vector<TokenHealth> health = (*vault)->Health();
  EXPECT_EQ(health[0].state, TokenState::kLoginRefused);
  EXPECT_NE(health[0].detail.find("wrong PIN"), std::string::npos) << health[0].detail;
  EXPECT_EQ(health[0].detail.find("000000"), std::string::npos);
  EXPECT_EQ(health[1].state, TokenState::kReady);
  EXPECT_TRUE((*vault)->tokens()[0]->InBackoff());
  EXPECT_FALSE((*vault)->tokens()[0]->NextRepair().has_value());

  auto back = (*vault)->Unwrap(binding_, wrapped->blobs);
  ASSERT_TRUE(back.ok()) << back.error().ToString();
  EXPECT_TRUE(ConstantTimeEquals(back->view(), key.view()));
  auto fresh = (*vault)->Wrap(binding_, key.view());
  ASSERT_TRUE(fresh.ok());
  ASSERT_EQ(fresh->blobs.size(), 1u);
  ASSERT_EQ(fresh->missing.size(), 1u);
  EXPECT_EQ(fresh->missing[0].code(), ErrorCode::kUnavailable);
  EXPECT_NE(fresh->missing[0].message().find("refused"), std::string::npos);

  // Many probe rounds later (the standby answers C_GetTokenInfo once a round): still one login.
  const unsigned long probes = fault_.calls("C_GetTokenInfo");
  while (fault_.calls("C_GetTokenInfo") < probes + 10) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(fault_.calls("C_Login") - logins, 2u);
  EXPECT_EQ((*vault)->Health()[0].login_attempts, 1u);
  EXPECT_EQ((*vault)->Health()[0].state, TokenState::kLoginRefused);
}

// kmsd's start keeps a token that may come back, never one no repair brings: a module that cannot
// be loaded, a URI that names no token, a mechanism the token lacks still fail Open.
TEST_F(KeyVaultTest, AVaultStartedDegradedStillRefusesWhatNoRepairCures) {
  TokenConfig standby = config_;
  standby.name = "standby";
  standby.uri = SoftHsmSandbox::Get().Uri(kFaultModule, standby_label_);
  vault_.reset();
  auto start = [&](const TokenConfig& primary) {
    HsmConfig config{{primary, standby}};
    config.start_degraded = true;
    return KeyVault::Open(config);
  };

  TokenConfig no_module = config_;
  no_module.uri =
      "pkcs11:token=" + label_ +
      "?module-path=/opt/vendor/libmissing.so&pin-source=file:" + SoftHsmSandbox::Get().pin_file();
  auto missing_module = start(no_module);
  ASSERT_FALSE(missing_module.ok());
  EXPECT_NE(missing_module.error().message().find("/opt/vendor/libmissing.so"), std::string::npos)
      << missing_module.error().ToString();

  TokenConfig no_token = config_;
  no_token.uri = std::string("pkcs11:?module-path=") + kFaultModule +
                 "&pin-source=file:" + SoftHsmSandbox::Get().pin_file();
  auto malformed = start(no_token);
  ASSERT_FALSE(malformed.ok());
  EXPECT_EQ(malformed.error().code(), ErrorCode::kInvalidArgument) << malformed.error().ToString();

  fault_.hide(CKM_AES_GCM);
  auto no_mechanism = start(config_);
  ASSERT_FALSE(no_mechanism.ok());
  EXPECT_EQ(no_mechanism.error().code(), ErrorCode::kUnimplemented)
      << no_mechanism.error().ToString();
  EXPECT_NE(no_mechanism.error().message().find("CKM_AES_GCM"), std::string::npos);
}

TEST_F(KeyVaultTest, TamperedBlobIsNotPassedToTheStandby) {
  SecretBytes key = SecretBytes::Random(32);
  auto wrapped = vault_->Wrap(binding_, key.view());
  ASSERT_TRUE(wrapped.ok());
  wrapped->blobs[0].blob[30] ^= 0x80;
  auto back = vault_->Unwrap(binding_, wrapped->blobs);
  ASSERT_FALSE(back.ok());
  EXPECT_EQ(back.error().code(), ErrorCode::kDataLoss);
}

TEST_F(KeyVaultTest, NoTokenAvailableIsAClearError) {
  SecretBytes key = SecretBytes::Random(32);
  auto wrapped = vault_->Wrap(binding_, key.view());
  ASSERT_TRUE(wrapped.ok());
  fault_.fail_token(label_.c_str(), CKR_DEVICE_REMOVED, -1);
  fault_.fail_token(standby_label_.c_str(), CKR_DEVICE_REMOVED, -1);
  auto back = vault_->Unwrap(binding_, wrapped->blobs);
  ASSERT_FALSE(back.ok());
  EXPECT_EQ(back.error().code(), ErrorCode::kUnavailable);
  auto wrap = vault_->Wrap(binding_, key.view());
  ASSERT_FALSE(wrap.ok());
  EXPECT_EQ(wrap.error().code(), ErrorCode::kUnavailable);
}

TEST_F(KeyVaultTest, TokensServeOnlyTheirOrganizations) {
  TokenConfig acme_only = config_;
  acme_only.orgs = {"acme"};
  TokenConfig everyone = config_;
  everyone.name = "standby";
  everyone.uri = SoftHsmSandbox::Get().Uri(kFaultModule, standby_label_);
  vault_.reset();
  auto vault = KeyVault::Open({{acme_only, everyone}});
  ASSERT_TRUE(vault.ok()) << vault.error().ToString();
  auto roots = (*vault)->InitRoot("globex");
  ASSERT_TRUE(roots.ok()) << roots.error().ToString();
  ASSERT_EQ(roots->size(), 1u);
  EXPECT_EQ((*roots)[0].token, "standby");
  SecretBytes key = SecretBytes::Random(32);
  auto wrapped = (*vault)->Wrap({"globex", "k"}, key.view());
  ASSERT_TRUE(wrapped.ok()) << wrapped.error().ToString();
  ASSERT_EQ(wrapped->blobs.size(), 1u);
  EXPECT_TRUE(wrapped->missing.empty());

  TokenConfig initech_only = config_;
  initech_only.orgs = {"initech"};
  auto narrow = KeyVault::Open({{initech_only}});
  ASSERT_TRUE(narrow.ok());
  EXPECT_EQ((*narrow)->Wrap({"acme", "k"}, key.view()).error().code(), ErrorCode::kNotFound);
}

TEST_F(KeyVaultTest, DuplicateAndEmptyConfigurationsAreRefused) {
  EXPECT_EQ(KeyVault::Open({}).error().code(), ErrorCode::kInvalidArgument);
  TokenConfig twin = config_;
  EXPECT_EQ(KeyVault::Open({{config_, twin}}).error().code(), ErrorCode::kInvalidArgument);
  twin.name = "same-token-other-name";
  EXPECT_EQ(KeyVault::Open({{config_, twin}}).error().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace strongroom::hsm
