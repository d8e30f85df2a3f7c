// The KMS's identity: an RSA key in each token, each certified for the same KMS host.
//
// Private keys never leave a token, so they cannot be copied to a standby: each token holds an
// identity key of its own (`kmsctl hsm init-identity`, the same name in every token), and the
// operator's CA certifies each for kms://<host> (`kmsctl hsm certify-identity`; the chains of all
// of them in the one PEM file of [kms] identity_chain). A client trusts any of them: it checks the
// chain against its pinned roots and the host, never the key itself.
//
// The identity in service is the first token's, in configuration order, among the tokens that are
// ready and hold a certified identity key. GET /kms/info publishes it; signed refusals and audit
// checkpoints are signed with it. When its token fails, the next token's identity takes over at
// once, and when the first comes back it serves again.
//
// A create /ecdhe may be sealed to any identity a client fetched earlier (the JWE names only the
// cluster), so Decrypt tries the identity in service first, then the other certified identities of
// the same modulus length; the answer is signed by the identity that opened it, which is the one
// the client holds. If none opens it while a token that holds, or may hold, an identity key is
// down, the message may be sealed to that token's key: kIdentityUnavailable, which kmsd answers as
// 503 `identity_unavailable` so that the client fetches /kms/info again and seals to the identity
// in service.
//
// A token's identity key is read when its token is first ready (at construction, or later when a
// token that was down at start comes back), and then kept: replacing an identity key in a token
// needs a restart of kmsd.
//
// Thread-safe.
#ifndef STRONGROOM_KMS_KMS_IDENTITIES_H_
#define STRONGROOM_KMS_KMS_IDENTITIES_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/common/jose.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/hsm/vault.h"
#include "strongroom/kms/identity_certificate.h"

namespace strongroom::kms {

class KmsIdentities {
 public:
  struct Identity {
    hsm::VaultToken* token = nullptr;
    hsm::RsaPublicKey key;
    jose::PublicJwk jwk;     // kid = the cluster, x5c = the chain
    std::string info_json;   // GET /kms/info: {"kmsCluster", "rsaPublicKey"}
    std::string thumbprint;  // RFC 7638, the kid of audit checkpoints
  };
  using IdentityPtr = std::shared_ptr<const Identity>;

  // `chains` certify the tokens' keys (identity_certificate.h); empty: every identity key is used
  // without x5c (tests). Fails with FAILED_PRECONDITION, naming each token's reason, when no token
  // has a usable identity now.
  static Result<std::unique_ptr<KmsIdentities>> New(hsm::Vault& vault, std::string cluster,
                                                    std::string key_name,
                                                    std::vector<IdentityChain> chains);

  // The identity in service (never null). When no token with an identity is ready, the first
  // known one: using it fails as the HSM being unavailable.
  IdentityPtr Current();

  struct Opened {
    enum class Outcome { kOpened, kUndecryptable, kHsmUnavailable, kIdentityUnavailable };
    Outcome outcome = Outcome::kUndecryptable;
    SecretBytes cek;  // kOpened
    IdentityPtr by;   // kOpened: the identity that opened it
  };
  // Opens a create /ecdhe's RSA-OAEP encrypted key (above). kUndecryptable: every identity it may
  // be sealed to says no; kHsmUnavailable: no identity could be asked; kIdentityUnavailable: some
  // said no, and some could not be asked.
  Opened Decrypt(std::span<const std::uint8_t> encrypted_key);

  // PS256 with `identity`'s key, in its token.
  Result<std::vector<std::uint8_t>> Sign(const Identity& identity,
                                         std::span<const std::uint8_t> input);

  // One line per token: the identity it holds, or why it has none (for kmsd's log at start).
  std::vector<std::string> Describe();

 private:
  enum class State { kUnknown, kUsable, kNone };
  struct Slot {
    hsm::VaultToken* token;
    State state = State::kUnknown;
    IdentityPtr identity;
    std::string why;  // kNone, or kUnknown after a failed read
  };
  KmsIdentities(std::string cluster, std::string key_name, std::vector<IdentityChain> chains,
                std::vector<Slot> slots)
      : cluster_(std::move(cluster)),
        key_name_(std::move(key_name)),
        chains_(std::move(chains)),
        slots_(std::move(slots)) {}
  // Reads the token's identity key if it is still unknown and the token is ready; mutex_ held.
  void Resolve(Slot& slot);
  IdentityPtr CurrentLocked();

  const std::string cluster_;
  const std::string key_name_;
  const std::vector<IdentityChain> chains_;
  std::mutex mutex_;
  std::vector<Slot> slots_;  // one per token, in configuration order; guarded by mutex_
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_KMS_IDENTITIES_H_
