#include "strongroom/kms/kms_identities.h"

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <sstream>

#include "strongroom/kms/audit_checkpoints.h"

namespace strongroom::kms {

Result<std::unique_ptr<KmsIdentities>> KmsIdentities::New(hsm::Vault& vault, std::string cluster,
                                                          std::string key_name,
                                                          std::vector<IdentityChain> chains) {
  SR_RETURN_IF_ERROR(hsm::ValidateOrgName(key_name));
  std::vector<Slot> slots;
  for (hsm::VaultToken* token : vault.Tokens())
    slots.push_back(Slot{token, State::kUnknown, nullptr, ""});
  if (slots.empty()) return Error(ErrorCode::kInvalidArgument, "no HSM token");
  std::unique_ptr<KmsIdentities> identities(new KmsIdentities(
      std::move(cluster), std::move(key_name), std::move(chains), std::move(slots)));
  std::lock_guard lock(identities->mutex_);
  std::string reasons;
  bool usable = false;
  for (Slot& slot : identities->slots_) {
    identities->Resolve(slot);
    usable = usable || slot.state == State::kUsable;
    reasons += (reasons.empty() ? "" : "; ") + slot.why;
  }
  if (!usable) {
    return Error(ErrorCode::kFailedPrecondition,
                 "no token has a usable identity key now: " + reasons);
  }
  return identities;
}

void KmsIdentities::Resolve(Slot& slot) {
  if (slot.state != State::kUnknown) return;
  hsm::VaultToken& token = *slot.token;
  const std::string name = "token '" + token.name() + "'";
  if (const hsm::TokenHealth health = token.Health();
      health.state == hsm::TokenState::kLoginRefused) {
    slot.state = State::kNone;
    slot.why = name + " is refused (" + health.detail + ")";
    return;
  }
  if (token.InBackoff()) {
    slot.why = name + " is unavailable (" + token.Health().detail + ")";
    return;
  }
  if (Status mechanisms = token.CheckIdentityMechanisms(); !mechanisms.ok()) {
    if (mechanisms.error().code() == ErrorCode::kUnimplemented) slot.state = State::kNone;
    slot.why = mechanisms.error().message();
    return;
  }
  Result<hsm::RsaPublicKey> key = token.IdentityPublicKey(key_name_);
  if (!key.ok()) {
    if (key.error().code() == ErrorCode::kNotFound) {
      slot.state = State::kNone;
      slot.why = name + " holds no identity key " + key_name_ + " (kmsctl hsm init-identity)";
    } else {
      slot.why = name + ": " + key.error().message();
    }
    return;
  }
  std::vector<std::vector<std::uint8_t>> x5c;
  if (!chains_.empty()) {
    const IdentityChain* chain = FindIdentityChain(chains_, *key);
    if (chain == nullptr) {
      slot.state = State::kNone;
      slot.why = name +
                 ": no chain of the identity chain file certifies its identity key "
                 "(kmsctl hsm certify-identity)";
      return;
    }
    x5c = chain->der;
  }
  Result<jose::PublicJwk> jwk =
      jose::PublicJwk::FromRsa(key->modulus, key->public_exponent, cluster_, x5c);
  Result<std::string> jwk_json = jwk.ok() ? jwk->ToJson() : Result<std::string>(jwk.error());
  if (!jwk_json.ok()) {
    slot.state = State::kNone;
    slot.why = name + ": its identity key is not usable: " + jwk_json.error().message();
    return;
  }
  Poco::JSON::Object info;
  info.set("kmsCluster", cluster_);
  Poco::JSON::Parser parser;
  info.set("rsaPublicKey", parser.parse(*jwk_json).extract<Poco::JSON::Object::Ptr>());
  std::ostringstream out;
  info.stringify(out);
  auto identity = std::make_shared<Identity>(Identity{
      &token, *key, std::move(jwk).value(), out.str(), AuditCheckpoints::Thumbprint(*key)});
  slot.identity = std::move(identity);
  slot.state = State::kUsable;
  slot.why.clear();
}

KmsIdentities::IdentityPtr KmsIdentities::CurrentLocked() {
  for (Slot& slot : slots_) {
    if (slot.token->InBackoff()) continue;
    Resolve(slot);
    if (slot.state == State::kUsable) return slot.identity;
  }
  for (const Slot& slot : slots_) {
    if (slot.state == State::kUsable) return slot.identity;
  }
  return nullptr;  // unreachable: New() returns only with a usable identity
}

KmsIdentities::IdentityPtr KmsIdentities::Current() {
  std::lock_guard lock(mutex_);
  return CurrentLocked();
}

KmsIdentities::Opened KmsIdentities::Decrypt(std::span<const std::uint8_t> encrypted_key) {
  std::vector<IdentityPtr> candidates;
  bool unasked = false;  // a token that holds, or may hold, an identity key could not be asked
  {
    std::lock_guard lock(mutex_);
    IdentityPtr current = CurrentLocked();
    candidates.push_back(current);
    for (Slot& slot : slots_) {
      Resolve(slot);  // a token back since its key was last looked for
      if (slot.state == State::kUsable && slot.identity != current) {
        candidates.push_back(slot.identity);
      }
      if (slot.state == State::kUnknown) unasked = true;
    }
  }
  bool refused = false;  // an identity said the message is not for it
  for (const IdentityPtr& identity : candidates) {
    // An RSA-OAEP ciphertext is as long as the modulus: a key of another length is not the one.
    if (identity->key.modulus.size() != encrypted_key.size()) {
      refused = true;
      continue;
    }
    Result<SecretBytes> cek = identity->token->DecryptRsaOaep(key_name_, encrypted_key);
    if (cek.ok()) {
      return Opened{Opened::Outcome::kOpened, std::move(cek).value(), identity};
    }
    // INVALID_ARGUMENT is the token's "not for this key" (token.h); anything else is a fault.
    if (cek.error().code() == ErrorCode::kInvalidArgument) {
      refused = true;
    } else {
      unasked = true;
    }
  }
  Opened out;
  if (refused && unasked) {
    out.outcome = Opened::Outcome::kIdentityUnavailable;
  } else if (refused) {
    out.outcome = Opened::Outcome::kUndecryptable;
  } else {
    out.outcome = Opened::Outcome::kHsmUnavailable;
  }
  return out;
}

Result<std::vector<std::uint8_t>> KmsIdentities::Sign(const Identity& identity,
                                                      std::span<const std::uint8_t> input) {
  return identity.token->SignPs256(key_name_, input);
}

std::vector<std::string> KmsIdentities::Describe() {
  std::lock_guard lock(mutex_);
  const IdentityPtr current = CurrentLocked();
  std::vector<std::string> lines;
  for (const Slot& slot : slots_) {
    if (slot.state == State::kUsable) {
      lines.push_back("identity: token '" + slot.token->name() + "' holds identity key " +
                      key_name_ + " (RSA-" + std::to_string(slot.identity->key.modulus.size() * 8) +
                      ", thumbprint " + slot.identity->thumbprint + ")" +
                      (slot.identity == current ? ", in service" : ""));
    } else {
      lines.push_back("identity: " + slot.why +
                      (slot.state == State::kUnknown ? "; read when the token is back" : ""));
    }
  }
  return lines;
}

}  // namespace strongroom::kms
