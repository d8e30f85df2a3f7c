#include "strongroom/hsm/key_vault.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>

namespace strongroom::hsm {

// A Token as the KMS uses it (vault.h): the calls go to the token as they are.
class KeyVault::TokenView final : public VaultToken {
 public:
  explicit TokenView(Token& token) : token_(token) {}

  const std::string& name() const override { return token_.name(); }
  const std::vector<std::string>& orgs() const override { return token_.orgs(); }
  bool InBackoff() const override { return token_.InBackoff(); }
  TokenHealth Health() const override { return token_.Health(); }
  Result<std::vector<RootKeyInfo>> ListRootKeys(const std::string& org) override {
    return token_.ListRootKeys(org);
  }
  Result<std::uint32_t> CurrentVersion(const std::string& org) override {
    token_.RefreshVersions();  // another node may have rotated since this one looked
    return token_.CurrentVersion(org);
  }
  Result<std::vector<std::uint8_t>> Wrap(const KeyBinding& binding,
                                         std::span<const std::uint8_t> key) override {
    return token_.Wrap(binding, key);
  }
  Result<SecretBytes> Unwrap(const KeyBinding& binding,
                             std::span<const std::uint8_t> blob) override {
    return token_.Unwrap(binding, blob);
  }
  Status CheckIdentityMechanisms() override { return token_.CheckIdentityMechanisms(); }
  Result<RsaPublicKey> IdentityPublicKey(const std::string& key_name) override {
    return token_.IdentityPublicKey(key_name);
  }
  Result<SecretBytes> DecryptRsaOaep(const std::string& key_name,
                                     std::span<const std::uint8_t> ciphertext) override {
    return token_.DecryptRsaOaep(key_name, ciphertext);
  }
  Result<std::vector<std::uint8_t>> SignPs256(const std::string& key_name,
                                              std::span<const std::uint8_t> message) override {
    return token_.SignPs256(key_name, message);
  }

 private:
  Token& token_;
};

KeyVault::KeyVault(std::vector<std::unique_ptr<Token>> tokens) : tokens_(std::move(tokens)) {
  for (const auto& token : tokens_) {
    views_.push_back(std::make_unique<TokenView>(*token));
    token_views_.push_back(views_.back().get());
  }
}

Result<std::unique_ptr<KeyVault>> KeyVault::Open(const HsmConfig& config) {
  if (config.tokens.empty()) {
    return Error(ErrorCode::kInvalidArgument, "no HSM token configured");
  }
  std::set<std::string> names;
  std::vector<std::unique_ptr<Token>> tokens;
  for (const TokenConfig& token_config : config.tokens) {
    if (!names.insert(token_config.name).second) {
      return Error(ErrorCode::kInvalidArgument,
                   "token name '" + token_config.name + "' is configured twice");
    }
    SR_ASSIGN_OR_RETURN(std::unique_ptr<Token> token, config.start_degraded
                                                          ? Token::Start(token_config)
                                                          : Token::Open(token_config));
    for (const auto& other : tokens) {
      if (other->opened() && token->opened() && &other->module() == &token->module() &&
          other->slot() == token->slot()) {
        return Error(ErrorCode::kInvalidArgument, "tokens '" + other->name() + "' and '" +
                                                      token->name() + "' are the same token");
      }
    }
    tokens.push_back(std::move(token));
  }
  if (config.probe_interval.count() < 0) {
    return Error(ErrorCode::kInvalidArgument, "the probe interval must not be negative");
  }
  std::unique_ptr<KeyVault> vault(new KeyVault(std::move(tokens)));
  if (config.probe_interval.count() > 0) {
    vault->prober_ = std::thread(
        [vault = vault.get(), interval = config.probe_interval] { vault->ProbeLoop(interval); });
  }
  return vault;
}

KeyVault::~KeyVault() {
  {
    std::lock_guard lock(probe_mutex_);
    stopping_ = true;
  }
  probe_wake_.notify_all();
  if (prober_.joinable()) prober_.join();
}

void KeyVault::ProbeLoop(std::chrono::milliseconds interval) {
  using Clock = std::chrono::steady_clock;
  Clock::time_point next_round = Clock::now() + interval;
  std::unique_lock lock(probe_mutex_);
  while (!stopping_) {
    // Wake for the next round, or earlier for a repair that falls due before it.
    Clock::time_point wake = next_round;
    for (const auto& token : tokens_) {
      if (std::optional<Clock::time_point> due = token->NextRepair()) wake = std::min(wake, *due);
    }
    if (probe_wake_.wait_until(lock, wake, [&] { return stopping_; })) break;
    lock.unlock();
    const Clock::time_point now = Clock::now();
    const bool round = now >= next_round;
    // A module's generation as the round begins, so that one round resets a module at most once
    // however many of its tokens need a repair.
    std::map<const Module*, std::uint64_t> generations;
    for (const auto& token : tokens_) {
      generations.emplace(&token->module(), token->module().generation());
    }
    for (const auto& token : tokens_) {
      std::optional<Clock::time_point> due = token->NextRepair();
      if (round || (due && now >= *due)) token->Probe(generations.at(&token->module()));
    }
    if (round) next_round = Clock::now() + interval;
    lock.lock();
  }
}

Token* KeyVault::FindToken(const std::string& name) const {
  for (const auto& token : tokens_) {
    if (token->name() == name) return token.get();
  }
  return nullptr;
}

Result<std::vector<Token*>> KeyVault::TokensFor(const std::string& org) const {
  SR_RETURN_IF_ERROR(ValidateOrgName(org));
  std::vector<Token*> out;
  for (const auto& token : tokens_) {
    if (token->Serves(org)) out.push_back(token.get());
  }
  if (out.empty()) {
    return Error(ErrorCode::kNotFound, "no configured token serves organization " + org);
  }
  return out;
}

Result<std::vector<RootKeyInfo>> KeyVault::InitRoot(const std::string& org) {
  SR_ASSIGN_OR_RETURN(std::vector<Token*> tokens, TokensFor(org));
  for (Token* token : tokens) {
    SR_ASSIGN_OR_RETURN(std::vector<RootKeyInfo> existing, token->ListRootKeys(org));
    if (!existing.empty()) {
      return Error(ErrorCode::kAlreadyExists,
                   "organization " + org + " already has root keys on token '" + token->name() +
                       "' (current v" + std::to_string(existing.back().id.version) +
                       "); rotate-root makes a new version");
    }
  }
  return RotateRoot(org);
}

Result<std::vector<RootKeyInfo>> KeyVault::RotateRoot(const std::string& org) {
  SR_ASSIGN_OR_RETURN(std::vector<Token*> tokens, TokensFor(org));
  // Versions must agree across tokens so a blob's version means the same root on each.
  std::uint32_t next = 1;
  for (Token* token : tokens) {
    SR_ASSIGN_OR_RETURN(std::vector<RootKeyInfo> existing, token->ListRootKeys(org));
    if (!existing.empty()) next = std::max(next, existing.back().id.version + 1);
  }
  std::vector<RootKeyInfo> created;
  for (Token* token : tokens) {
    // A token behind the others (it was down during a rotation) catches up version by version.
    for (;;) {
      SR_ASSIGN_OR_RETURN(RootKeyInfo info, token->CreateRootKey(org));
      if (info.id.version >= next) {
        created.push_back(std::move(info));
        break;
      }
    }
  }
  return created;
}

Result<std::vector<RootKeySet>> KeyVault::ListRoots(const std::string& org) {
  SR_ASSIGN_OR_RETURN(std::vector<Token*> tokens, TokensFor(org));
  std::vector<RootKeySet> out;
  for (Token* token : tokens) {
    SR_ASSIGN_OR_RETURN(std::vector<RootKeyInfo> keys, token->ListRootKeys(org));
    out.push_back({token->name(), std::move(keys)});
  }
  return out;
}

Result<WrapResult> KeyVault::Wrap(const KeyBinding& binding, std::span<const std::uint8_t> key) {
  SR_RETURN_IF_ERROR(ValidateBinding(binding));
  SR_ASSIGN_OR_RETURN(std::vector<Token*> tokens, TokensFor(binding.org));
  WrapResult result;
  for (Token* token : tokens) {
    Result<std::vector<std::uint8_t>> blob = token->Wrap(binding, key);
    if (blob.ok()) {
      result.blobs.push_back({token->name(), std::move(blob).value()});
    } else if (blob.error().code() == ErrorCode::kInvalidArgument ||
               blob.error().code() == ErrorCode::kResourceExhausted) {
      return blob.error();  // the request is wrong, or the root key needs rotating first
    } else {
      result.missing.push_back(blob.error());
    }
  }
  if (result.blobs.empty()) {
    return Error(result.missing.front().code(),
                 "no token could wrap the key: " + result.missing.front().message());
  }
  return result;
}

Result<SecretBytes> KeyVault::Unwrap(const KeyBinding& binding, std::span<const TokenBlob> blobs) {
  SR_RETURN_IF_ERROR(ValidateBinding(binding));
  SR_ASSIGN_OR_RETURN(std::vector<Token*> tokens, TokensFor(binding.org));
  const auto order = UnwrapOrder(tokens, blobs);
  if (order.empty()) {
    return Error(ErrorCode::kNotFound, "the key has no blob for any configured token");
  }
  std::optional<Error> last;
  for (const auto& [token, blob] : order) {
    Result<SecretBytes> key = token->Unwrap(binding, blob->blob);
    if (key.ok()) return key;
    // Only an outage (or a root version this token never got) passes the request on.
    if (key.error().code() != ErrorCode::kUnavailable &&
        key.error().code() != ErrorCode::kNotFound) {
      return key.error();
    }
    last = key.error();
  }
  return Error(ErrorCode::kUnavailable, "no token could unwrap the key: " + last->message());
}

std::vector<Token*> KeyVault::ReadyFor(const std::string& org) const {
  std::vector<Token*> out;
  for (const auto& token : tokens_) {
    if (token->Serves(org) && !token->InBackoff()) out.push_back(token.get());
  }
  return out;
}

std::vector<TokenHealth> KeyVault::Health() const {
  std::vector<TokenHealth> out;
  for (const auto& token : tokens_) out.push_back(token->Health());
  return out;
}

}  // namespace strongroom::hsm
