// What the KMS needs of its HSM, and no more: the interface between kms/ and the PKCS#11 layer.
//
// A Vault is the set of configured tokens, used together. Each token (VaultToken) holds root keys
// per organization and version, which wrap and unwrap 256-bit keys bound to what they are
// (wrapped_key.h: organization, root-key version and context in the AES-GCM associated data, so a
// blob moved to another key, organization or token fails as DATA_LOSS), and an RSA identity key,
// which decrypts RSA-OAEP and signs PS256. A token says whether it is ready: a token in back-off
// (unavailable, or its login refused) fails every call at once with UNAVAILABLE, and callers
// prefer another meanwhile.
//
// hsm::KeyVault is the implementation on PKCS#11 tokens (key_vault.h); tests of the KMS use an
// in-memory one (tests/support/fake_vault.h) with the same binding and failure semantics.
//
// Error codes the KMS relies on: INVALID_ARGUMENT for a malformed request (and for any RSA-OAEP
// ciphertext the identity key does not open: no padding oracle); NOT_FOUND for a root-key version
// or identity key the token does not hold; DATA_LOSS for a wrapped key that fails its integrity
// check; RESOURCE_EXHAUSTED for a root-key version past its wrap limit; UNAVAILABLE for a token
// that cannot be used now.
//
// Implementations are thread-safe.
#ifndef STRONGROOM_HSM_VAULT_H_
#define STRONGROOM_HSM_VAULT_H_

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/hsm/root_key.h"
#include "strongroom/hsm/token.h"
#include "strongroom/hsm/wrapped_key.h"

namespace strongroom::hsm {

// A key wrapped under one token's root key.
struct TokenBlob {
  std::string token;               // TokenConfig::name
  std::vector<std::uint8_t> blob;  // see wrapped_key.h
};

// The order a key's blobs are tried in to unwrap it (Vault::Unwrap, and the KMS's reconciliation,
// which tells outages apart): each of `tokens`, in their (configuration) order, with its blob if
// it holds one; ready tokens first, tokens in back-off last. `TokenT` is Token or VaultToken.
template <typename TokenT>
std::vector<std::pair<TokenT*, const TokenBlob*>> UnwrapOrder(const std::vector<TokenT*>& tokens,
                                                              std::span<const TokenBlob> blobs) {
  std::vector<std::pair<TokenT*, const TokenBlob*>> order;
  for (TokenT* token : tokens) {
    for (const TokenBlob& blob : blobs) {
      if (blob.token == token->name()) order.emplace_back(token, &blob);
    }
  }
  std::stable_partition(order.begin(), order.end(),
                        [](const auto& entry) { return !entry.first->InBackoff(); });
  return order;
}

struct WrapResult {
  std::vector<TokenBlob> blobs;  // one per token that wrapped it
  std::vector<Error> missing;    // why the other tokens did not; the KMS re-wraps them later
};

struct RootKeySet {
  std::string token;
  std::vector<RootKeyInfo> keys;
};

// One token, as the KMS uses it.
class VaultToken {
 public:
  virtual ~VaultToken() = default;

  virtual const std::string& name() const = 0;
  // The organizations it serves as configured; empty means all.
  virtual const std::vector<std::string>& orgs() const = 0;
  bool Serves(const std::string& org) const {
    return orgs().empty() || std::find(orgs().begin(), orgs().end(), org) != orgs().end();
  }

  // Whether calls fail at once (the token is marked unavailable, or its login was refused).
  virtual bool InBackoff() const = 0;
  virtual TokenHealth Health() const = 0;

  // Root keys. ListRootKeys in ascending versions; CurrentVersion is the newest the token holds
  // now (read again, not remembered: another node may have rotated since).
  virtual Result<std::vector<RootKeyInfo>> ListRootKeys(const std::string& org) = 0;
  virtual Result<std::uint32_t> CurrentVersion(const std::string& org) = 0;
  // Wraps a 256-bit key under the org's current root key on this token.
  virtual Result<std::vector<std::uint8_t>> Wrap(const KeyBinding& binding,
                                                 std::span<const std::uint8_t> key) = 0;
  // Unwraps a blob this token's Wrap made for the same binding.
  virtual Result<SecretBytes> Unwrap(const KeyBinding& binding,
                                     std::span<const std::uint8_t> blob) = 0;

  // The RSA identity key `key_name`. CheckIdentityMechanisms refuses (UNIMPLEMENTED) a token that
  // cannot do the operations below.
  virtual Status CheckIdentityMechanisms() = 0;
  virtual Result<RsaPublicKey> IdentityPublicKey(const std::string& key_name) = 0;
  // JOSE "RSA-OAEP" (OAEP with SHA-1 and MGF1-SHA-1).
  virtual Result<SecretBytes> DecryptRsaOaep(const std::string& key_name,
                                             std::span<const std::uint8_t> ciphertext) = 0;
  // JOSE "PS256" (RSASSA-PSS, SHA-256, MGF1-SHA-256, 32-byte salt).
  virtual Result<std::vector<std::uint8_t>> SignPs256(const std::string& key_name,
                                                      std::span<const std::uint8_t> message) = 0;
};

class Vault {
 public:
  virtual ~Vault() = default;

  // Every configured token, in configuration order (the first is the primary); never empty.
  virtual const std::vector<VaultToken*>& Tokens() const = 0;

  // Wraps under the current root key of every token serving the organization; fails only if no
  // token could (or at once on INVALID_ARGUMENT or RESOURCE_EXHAUSTED, which another token would
  // not cure).
  virtual Result<WrapResult> Wrap(const KeyBinding& binding, std::span<const std::uint8_t> key) = 0;
  // Opens the first blob a token can: tokens in configuration order, those in back-off last. An
  // outage (UNAVAILABLE, or a root version the token lacks) passes to the next token; an integrity
  // failure never does.
  virtual Result<SecretBytes> Unwrap(const KeyBinding& binding,
                                     std::span<const TokenBlob> blobs) = 0;

  // Creates the next root-key version on every token serving the org, versions in step.
  virtual Result<std::vector<RootKeyInfo>> RotateRoot(const std::string& org) = 0;
  virtual Result<std::vector<RootKeySet>> ListRoots(const std::string& org) = 0;

  virtual std::vector<TokenHealth> Health() const = 0;
};

}  // namespace strongroom::hsm

#endif  // STRONGROOM_HSM_VAULT_H_
