// An in-memory hsm::Vault for tests of the KMS: no PKCS#11 module is loaded, no SoftHSM2 token
// made.
//
// It keeps the semantics the KMS relies on (strongroom/hsm/vault.h), checked against the real
// KeyVault by the same tests (tests/support/vault_contract_test.cc):
// - Root keys are random AES-256 keys per token, organization and version, held in memory. A wrap
//   is AES-256-GCM with OpenSSL, in the blob format and with the associated data of wrapped_key.h,
//   so a changed byte, or a blob opened for another key, organization, version or token, fails as
//   DATA_LOSS exactly as on a token (a changed version field: NOT_FOUND).
// - Identity keys are RSA keys that decrypt RSA-OAEP (any failure one INVALID_ARGUMENT) and sign
//   PS256 with OpenSSL. They are fixed 2048-bit test keys, taken in turn, so a test process does
//   not spend a fifth of a second of CPU making one; other sizes are generated.
// - Wrap and Unwrap over the tokens follow KeyVault's rules: wrap under every serving token,
//   unwrap with tokens in back-off last, an outage passed on to the next token, an integrity
//   failure never.
//
// Failure injection, per token (FakeToken):
//   MarkUnavailable()  the token is marked unavailable: in back-off, health kUnavailable, and every
//                      call fails at once with UNAVAILABLE, as a real token between repairs.
//   RemoveMidCall()    the token still looks ready; its next call fails with UNAVAILABLE, as a call
//                      whose device was removed and whose repair did not find it again, and marks
//                      it unavailable.
//   FailIntegrity()    the token answers, but its root keys are not those it wrapped with (a
//                      restored or replaced token): every unwrap fails its tag check, DATA_LOSS.
//   RefuseLogin()      its PIN was refused: health kLoginRefused, every call UNAVAILABLE.
//   Restore()          ready again, with its keys.
// Each token counts the calls it served, so tests can tell what reached the "HSM".
//
// Thread-safe, as the interface requires (the KMS signs audit checkpoints on a thread of its own).
#ifndef STRONGROOM_TESTS_SUPPORT_FAKE_VAULT_H_
#define STRONGROOM_TESTS_SUPPORT_FAKE_VAULT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/hsm/vault.h"

namespace strongroom::testing {

class FakeToken final : public hsm::VaultToken {
 public:
  FakeToken(std::string name, std::vector<std::string> orgs);
  ~FakeToken() override;
  FakeToken(const FakeToken&) = delete;
  FakeToken& operator=(const FakeToken&) = delete;

  // What kmsctl does to a token: the org's next root-key version (1 if none), an identity key.
  Result<hsm::RootKeyInfo> CreateRootKey(const std::string& org);
  Result<hsm::RsaPublicKey> CreateIdentityKey(const std::string& key_name,
                                              unsigned modulus_bits = 2048);
  // A root-key version refuses to wrap (RESOURCE_EXHAUSTED) after this many wraps.
  void SetWrapLimit(std::uint64_t limit);

  void MarkUnavailable(const std::string& why = "the token is unavailable (injected)");
  void RemoveMidCall();
  void FailIntegrity();
  void RefuseLogin();
  void Restore();

  struct Calls {
    std::uint64_t wraps = 0;
    std::uint64_t unwraps = 0;
    std::uint64_t decrypts = 0;
    std::uint64_t signatures = 0;
  };
  Calls calls() const;

  // hsm::VaultToken
  const std::string& name() const override { return name_; }
  const std::vector<std::string>& orgs() const override { return orgs_; }
  bool InBackoff() const override;
  hsm::TokenHealth Health() const override;
  Result<std::vector<hsm::RootKeyInfo>> ListRootKeys(const std::string& org) override;
  Result<std::uint32_t> CurrentVersion(const std::string& org) override;
  Result<std::vector<std::uint8_t>> Wrap(const hsm::KeyBinding& binding,
                                         std::span<const std::uint8_t> key) override;
  Result<SecretBytes> Unwrap(const hsm::KeyBinding& binding,
                             std::span<const std::uint8_t> blob) override;
  Status CheckIdentityMechanisms() override { return OkStatus(); }
  Result<hsm::RsaPublicKey> IdentityPublicKey(const std::string& key_name) override;
  Result<SecretBytes> DecryptRsaOaep(const std::string& key_name,
                                     std::span<const std::uint8_t> ciphertext) override;
  Result<std::vector<std::uint8_t>> SignPs256(const std::string& key_name,
                                              std::span<const std::uint8_t> message) override;

 private:
  struct RootKey {
    SecretBytes key;
    std::uint64_t wraps = 0;
  };
  struct IdentityKey;  // an OpenSSL EVP_PKEY
  enum class State { kReady, kUnavailable, kRemovedMidCall, kLoginRefused };

  // OK when a call may go to the token now; requires mutex_. A call meeting a removed device
  // marks the token unavailable.
  Status AdmitLocked();
  hsm::RootKeyInfo InfoLocked(const std::string& org, std::uint32_t version) const;
  Result<const IdentityKey*> IdentityLocked(const std::string& key_name) const;

  const std::string name_;
  const std::vector<std::string> orgs_;
  mutable std::mutex mutex_;
  State state_ = State::kReady;
  std::string detail_;
  bool integrity_failure_ = false;
  std::uint64_t wrap_limit_ = std::uint64_t{1} << 31;
  std::map<std::string, std::map<std::uint32_t, RootKey>> roots_;  // org -> version -> key
  std::map<std::string, std::unique_ptr<IdentityKey>> identities_;
  Calls calls_;
};

class FakeVault final : public hsm::Vault {
 public:
  struct TokenSpec {
    std::string name;
    std::vector<std::string> orgs;  // empty: every organization
  };
  // One token named "primary" serving every organization, or the tokens given, in order.
  FakeVault();
  explicit FakeVault(std::vector<TokenSpec> tokens);
  FakeVault(const FakeVault&) = delete;
  FakeVault& operator=(const FakeVault&) = delete;

  FakeToken& token(std::size_t index) { return *tokens_.at(index); }
  FakeToken& token(const std::string& name);

  // As KeyVault::InitRoot: the org's first root key on every token serving it.
  Result<std::vector<hsm::RootKeyInfo>> InitRoot(const std::string& org);
  // An identity key named `key_name` on every token.
  Status CreateIdentityKeys(const std::string& key_name);

  // hsm::Vault
  const std::vector<hsm::VaultToken*>& Tokens() const override { return views_; }
  Result<hsm::WrapResult> Wrap(const hsm::KeyBinding& binding,
                               std::span<const std::uint8_t> key) override;
  Result<SecretBytes> Unwrap(const hsm::KeyBinding& binding,
                             std::span<const hsm::TokenBlob> blobs) override;
  Result<std::vector<hsm::RootKeyInfo>> RotateRoot(const std::string& org) override;
  Result<std::vector<hsm::RootKeySet>> ListRoots(const std::string& org) override;
  std::vector<hsm::TokenHealth> Health() const override;

 private:
  Result<std::vector<FakeToken*>> TokensFor(const std::string& org);

  std::vector<std::unique_ptr<FakeToken>> tokens_;
  std::vector<hsm::VaultToken*> views_;
};

}  // namespace strongroom::testing

#endif  // STRONGROOM_TESTS_SUPPORT_FAKE_VAULT_H_
