// The HSM layer's front door: every configured token, used together. It is the PKCS#11
// implementation of the KMS's Vault (vault.h); kmsctl and kmsd's start use the tokens themselves.
//
// A token may be limited to some organizations (TokenConfig::orgs); every operation for an
// organization uses only the tokens that serve it.
//
// Root keys are never copied between tokens. Instead each token holds its own root keys for an
// organization (same org and version numbers, different key material), and Wrap encrypts a key
// under the current root key of every token in one call. Unwrap then works with whichever token is
// healthy: tokens are tried in configuration order, skipping one that failed recently, and a token
// that is unavailable passes the request to the next. An integrity failure (a tampered or
// misbound blob) is never passed on: it is an alarm, not an outage.
//
// With a probe interval, a background thread checks every token that often (Token::Probe: the
// token answers and holds its root and identity keys) and repairs the ones marked unavailable
// when their repair falls due, so health tells the truth without a request and a token comes back
// by itself once its fault is gone.
//
// Thread-safe.
#ifndef STRONGROOM_HSM_KEY_VAULT_H_
#define STRONGROOM_HSM_KEY_VAULT_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/hsm/token.h"
#include "strongroom/hsm/vault.h"
#include "strongroom/hsm/wrapped_key.h"

namespace strongroom::hsm {

struct HsmConfig {
  std::vector<TokenConfig> tokens;  // the first is the primary
  // How often the background probe checks the tokens; zero: no probe (kmsctl, which does one
  // thing and exits).
  std::chrono::milliseconds probe_interval{0};
  // kmsd's start: a token that cannot be opened now is kept, unavailable (repaired like any
  // unavailable token) or refused for good (its PIN), instead of failing Open (Token::Start).
  // Whether enough tokens are usable is the caller's to decide (ready() below).
  bool start_degraded = false;
};

class KeyVault : public Vault {
 public:
  static Result<std::unique_ptr<KeyVault>> Open(const HsmConfig& config);
  ~KeyVault() override;
  KeyVault(const KeyVault&) = delete;
  KeyVault& operator=(const KeyVault&) = delete;

  // Creates the org's first root key on every token; fails if any token already has one.
  Result<std::vector<RootKeyInfo>> InitRoot(const std::string& org);
  // Creates the next root-key version on every token; it becomes current for new wraps. Old
  // versions stay for unwrapping.
  Result<std::vector<RootKeyInfo>> RotateRoot(const std::string& org) override;
  Result<std::vector<RootKeySet>> ListRoots(const std::string& org) override;

  // Wraps under every token; fails only if no token could.
  Result<WrapResult> Wrap(const KeyBinding& binding, std::span<const std::uint8_t> key) override;
  Result<SecretBytes> Unwrap(const KeyBinding& binding, std::span<const TokenBlob> blobs) override;

  std::vector<TokenHealth> Health() const override;
  // The tokens that serve `org` and are ready now (neither unavailable nor refused).
  std::vector<Token*> ReadyFor(const std::string& org) const;
  // The PKCS#11 tokens themselves, and the same tokens as the KMS uses them (Vault::Tokens).
  const std::vector<std::unique_ptr<Token>>& tokens() const { return tokens_; }
  const std::vector<VaultToken*>& Tokens() const override { return token_views_; }
  Token* FindToken(const std::string& name) const;

 private:
  class TokenView;  // a Token as a VaultToken
  explicit KeyVault(std::vector<std::unique_ptr<Token>> tokens);
  // The tokens that serve `org`, in preference order; NOT_FOUND if none does.
  Result<std::vector<Token*>> TokensFor(const std::string& org) const;
  // Probes every token each `interval`, and a token marked unavailable when its repair is due.
  void ProbeLoop(std::chrono::milliseconds interval);

  std::vector<std::unique_ptr<Token>> tokens_;
  std::vector<std::unique_ptr<TokenView>> views_;  // one per token, in the same order
  std::vector<VaultToken*> token_views_;           // the same, as Tokens() hands them out
  std::mutex probe_mutex_;
  std::condition_variable probe_wake_;
  bool stopping_ = false;  // guarded by probe_mutex_
  std::thread prober_;
};

}  // namespace strongroom::hsm

#endif  // STRONGROOM_HSM_KEY_VAULT_H_
