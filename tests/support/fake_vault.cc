#include "fake_vault.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <stdexcept>

#include "fake_identity_keys.h"
#include "strongroom/hsm/wrapped_key.h"

namespace strongroom::testing {
namespace {

using hsm::kGcmIvSize;
using hsm::kGcmTagSize;
using hsm::kWrappedKeyPlainSize;

struct PkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* ctx) const { EVP_PKEY_CTX_free(ctx); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

Error OpenSslError(const char* what) {
  return Error(ErrorCode::kInternal, std::string("fake vault: OpenSSL failed: ") + what);
}

// The fixed keys in turn (fake_identity_keys.h), so that a few identity keys made in a row differ.
PkeyPtr NextFixedKey() {
  static std::atomic<std::size_t> next{0};
  const std::span<const char* const> pems = FakeIdentityKeyPems();
  const char* pem = pems[next.fetch_add(1) % pems.size()];
  BIO* bio = BIO_new_mem_buf(pem, -1);
  PkeyPtr key(PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  return key;
}

std::vector<std::uint8_t> BigEndian(const EVP_PKEY* key, const char* param) {
  BIGNUM* bn = nullptr;
  if (EVP_PKEY_get_bn_param(key, param, &bn) != 1) return {};
  std::vector<std::uint8_t> out(static_cast<std::size_t>(BN_num_bytes(bn)));
  BN_bn2bin(bn, out.data());
  BN_free(bn);
  return out;
}

// AES-256-GCM, 96-bit IV, 128-bit tag: ciphertext || tag.
Result<std::vector<std::uint8_t>> GcmSeal(std::span<const std::uint8_t> key,
                                          std::span<const std::uint8_t> iv,
                                          std::span<const std::uint8_t> aad,
                                          std::span<const std::uint8_t> plain) {
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(EVP_CIPHER_CTX_new());
  std::vector<std::uint8_t> out(plain.size() + kGcmTagSize);
  int len = 0;
  if (!ctx ||
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), iv.data()) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), out.data(), &len, plain.data(),
                        static_cast<int>(plain.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), out.data() + len, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kGcmTagSize,
                          out.data() + plain.size()) != 1) {
    return OpenSslError("AES-GCM encrypt");
  }
  return out;
}

// std::nullopt when the tag does not check.
std::optional<SecretBytes> GcmOpen(std::span<const std::uint8_t> key,
                                   std::span<const std::uint8_t> iv,
                                   std::span<const std::uint8_t> aad,
                                   std::span<const std::uint8_t> sealed) {
  if (sealed.size() < kGcmTagSize) return std::nullopt;
  const std::size_t body = sealed.size() - kGcmTagSize;
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(EVP_CIPHER_CTX_new());
  SecretBytes plain(body);
  int len = 0;
  std::vector<std::uint8_t> tag(sealed.begin() + static_cast<long>(body), sealed.end());
  if (!ctx ||
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), iv.data()) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &len, aad.data(), static_cast<int>(aad.size())) != 1 ||
      EVP_DecryptUpdate(ctx.get(), plain.data(), &len, sealed.data(), static_cast<int>(body)) !=
          1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kGcmTagSize, tag.data()) != 1 ||
      EVP_DecryptFinal_ex(ctx.get(), plain.data() + len, &len) != 1) {
    return std::nullopt;
  }
  return plain;
}

Error Unavailable(const std::string& token, const std::string& why) {
  return Error(ErrorCode::kUnavailable, "token '" + token + "' is unavailable: " + why);
}

}  // namespace

struct FakeToken::IdentityKey {
  PkeyPtr key;
  hsm::RsaPublicKey public_key;
};

FakeToken::FakeToken(std::string name, std::vector<std::string> orgs)
    : name_(std::move(name)), orgs_(std::move(orgs)) {}

FakeToken::~FakeToken() = default;

Status FakeToken::AdmitLocked() {
  switch (state_) {
    case State::kReady:
      return OkStatus();
    case State::kRemovedMidCall:
      // The call began on a token that looked ready; its device went, and no repair found it.
      state_ = State::kUnavailable;
      detail_ = "CKR_DEVICE_REMOVED, and the token was not found again (injected)";
      return Unavailable(name_, detail_);
    case State::kUnavailable:
    case State::kLoginRefused:
      return Unavailable(name_, detail_);
  }
  return Unavailable(name_, detail_);
}

void FakeToken::MarkUnavailable(const std::string& why) {
  std::lock_guard lock(mutex_);
  state_ = State::kUnavailable;
  detail_ = why;
}

void FakeToken::RemoveMidCall() {
  std::lock_guard lock(mutex_);
  state_ = State::kRemovedMidCall;
  detail_.clear();
}

void FakeToken::FailIntegrity() {
  std::lock_guard lock(mutex_);
  integrity_failure_ = true;
}

void FakeToken::RefuseLogin() {
  std::lock_guard lock(mutex_);
  state_ = State::kLoginRefused;
  detail_ = "C_Login: CKR_PIN_INCORRECT (injected)";
}

void FakeToken::Restore() {
  std::lock_guard lock(mutex_);
  state_ = State::kReady;
  detail_.clear();
  integrity_failure_ = false;
}

void FakeToken::SetWrapLimit(std::uint64_t limit) {
  std::lock_guard lock(mutex_);
  wrap_limit_ = limit;
}

FakeToken::Calls FakeToken::calls() const {
  std::lock_guard lock(mutex_);
  return calls_;
}

bool FakeToken::InBackoff() const {
  std::lock_guard lock(mutex_);
  return state_ == State::kUnavailable || state_ == State::kLoginRefused;
}

hsm::TokenHealth FakeToken::Health() const {
  std::lock_guard lock(mutex_);
  hsm::TokenHealth health;
  health.name = name_;
  health.state = state_ == State::kUnavailable    ? hsm::TokenState::kUnavailable
                 : state_ == State::kLoginRefused ? hsm::TokenState::kLoginRefused
                                                  : hsm::TokenState::kReady;
  health.detail = state_ == State::kRemovedMidCall ? "" : detail_;
  return health;
}

hsm::RootKeyInfo FakeToken::InfoLocked(const std::string& org, std::uint32_t version) const {
  hsm::RootKeyInfo info;
  info.token = name_;
  info.id = {org, version};
  info.label = hsm::RootKeyLabel(info.id);
  info.sensitive = true;
  info.extractable = false;
  info.never_extractable = true;
  info.always_sensitive = true;
  info.local = true;
  info.wraps_reserved = roots_.at(org).at(version).wraps;
  return info;
}

Result<hsm::RootKeyInfo> FakeToken::CreateRootKey(const std::string& org) {
  SR_RETURN_IF_ERROR(hsm::ValidateOrgName(org));
  std::lock_guard lock(mutex_);
  SR_RETURN_IF_ERROR(AdmitLocked());
  std::map<std::uint32_t, RootKey>& versions = roots_[org];
  const std::uint32_t version = versions.empty() ? 1 : versions.rbegin()->first + 1;
  versions[version].key = SecretBytes::Random(32);
  return InfoLocked(org, version);
}

Result<std::vector<hsm::RootKeyInfo>> FakeToken::ListRootKeys(const std::string& org) {
  SR_RETURN_IF_ERROR(hsm::ValidateOrgName(org));
  std::lock_guard lock(mutex_);
  SR_RETURN_IF_ERROR(AdmitLocked());
  std::vector<hsm::RootKeyInfo> out;
  if (auto it = roots_.find(org); it != roots_.end()) {
    for (const auto& [version, root] : it->second) out.push_back(InfoLocked(org, version));
  }
  return out;
}

Result<std::uint32_t> FakeToken::CurrentVersion(const std::string& org) {
  SR_RETURN_IF_ERROR(hsm::ValidateOrgName(org));
  std::lock_guard lock(mutex_);
  SR_RETURN_IF_ERROR(AdmitLocked());
  auto it = roots_.find(org);
  if (it == roots_.end() || it->second.empty()) {
    return Error(ErrorCode::kNotFound,
                 "organization " + org + " has no root key on token '" + name_ + "'");
  }
  return it->second.rbegin()->first;
}

Result<std::vector<std::uint8_t>> FakeToken::Wrap(const hsm::KeyBinding& binding,
                                                  std::span<const std::uint8_t> key) {
  SR_RETURN_IF_ERROR(hsm::ValidateBinding(binding));
  if (key.size() != kWrappedKeyPlainSize) {
    return Error(ErrorCode::kInvalidArgument,
                 "only 256-bit keys are wrapped, got " + std::to_string(key.size() * 8) + " bits");
  }
  std::lock_guard lock(mutex_);
  SR_RETURN_IF_ERROR(AdmitLocked());
  auto org = roots_.find(binding.org);
  if (org == roots_.end() || org->second.empty()) {
    return Error(ErrorCode::kNotFound,
                 "organization " + binding.org + " has no root key on token '" + name_ + "'");
  }
  const std::uint32_t version = org->second.rbegin()->first;
  RootKey& root = org->second.rbegin()->second;
  if (root.wraps >= wrap_limit_) {
    return Error(ErrorCode::kResourceExhausted,
                 "root key " + binding.org + " v" + std::to_string(version) + " on token '" +
                     name_ + "' reached its wrap limit; rotate the root key");
  }
  std::uint8_t iv[kGcmIvSize];
  if (RAND_bytes(iv, sizeof iv) != 1) return OpenSslError("RAND_bytes");
  SR_ASSIGN_OR_RETURN(std::vector<std::uint8_t> sealed,
                      GcmSeal(root.key.view(), iv, hsm::WrappedKeyAad(binding, version), key));
  ++root.wraps;
  ++calls_.wraps;
  return hsm::EncodeWrappedKey(version, iv, sealed);
}

Result<SecretBytes> FakeToken::Unwrap(const hsm::KeyBinding& binding,
                                      std::span<const std::uint8_t> blob) {
  SR_RETURN_IF_ERROR(hsm::ValidateBinding(binding));
  SR_ASSIGN_OR_RETURN(hsm::WrappedKeyView view, hsm::ParseWrappedKey(blob));
  std::lock_guard lock(mutex_);
  SR_RETURN_IF_ERROR(AdmitLocked());
  ++calls_.unwraps;
  const RootKey* root = nullptr;
  if (auto org = roots_.find(binding.org); org != roots_.end()) {
    if (auto version = org->second.find(view.root_version); version != org->second.end()) {
      root = &version->second;
    }
  }
  if (root == nullptr) {
    return Error(ErrorCode::kNotFound, "token '" + name_ + "' has no root key " + binding.org +
                                           " v" + std::to_string(view.root_version));
  }
  SecretBytes key(root->key.view());
  if (integrity_failure_) key.data()[0] ^= 0x01;  // not the key it wrapped with
  std::optional<SecretBytes> plain = GcmOpen(
      key.view(), view.iv, hsm::WrappedKeyAad(binding, view.root_version), view.ciphertext_and_tag);
  if (!plain || plain->size() != kWrappedKeyPlainSize) {
    return Error(ErrorCode::kDataLoss,
                 "wrapped key failed authentication: it was altered, or it belongs to another "
                 "key, organization or root-key version");
  }
  return std::move(*plain);
}

Result<hsm::RsaPublicKey> FakeToken::CreateIdentityKey(const std::string& key_name,
                                                       unsigned modulus_bits) {
  SR_RETURN_IF_ERROR(hsm::ValidateOrgName(key_name));
  if (modulus_bits < 2048 || modulus_bits > 8192 || modulus_bits % 1024 != 0) {
    return Error(ErrorCode::kInvalidArgument,
                 "RSA identity keys are 2048 to 8192 bits, in steps of 1024");
  }
  std::lock_guard lock(mutex_);
  SR_RETURN_IF_ERROR(AdmitLocked());
  if (identities_.count(key_name)) {
    return Error(ErrorCode::kAlreadyExists,
                 "token '" + name_ + "' already holds identity key " + key_name);
  }
  auto identity = std::make_unique<IdentityKey>();
  identity->key = modulus_bits == 2048
                      ? NextFixedKey()
                      : PkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{modulus_bits}));
  if (!identity->key) return OpenSslError("RSA key");
  identity->public_key.modulus = BigEndian(identity->key.get(), OSSL_PKEY_PARAM_RSA_N);
  identity->public_key.public_exponent = BigEndian(identity->key.get(), OSSL_PKEY_PARAM_RSA_E);
  hsm::RsaPublicKey out = identity->public_key;
  identities_[key_name] = std::move(identity);
  return out;
}

Result<const FakeToken::IdentityKey*> FakeToken::IdentityLocked(const std::string& key_name) const {
  auto it = identities_.find(key_name);
  if (it == identities_.end()) {
    return Error(ErrorCode::kNotFound, "token '" + name_ + "' holds 0 objects for identity key " +
                                           key_name + " (kmsctl creates it)");
  }
  return it->second.get();
}

Result<hsm::RsaPublicKey> FakeToken::IdentityPublicKey(const std::string& key_name) {
  SR_RETURN_IF_ERROR(hsm::ValidateOrgName(key_name));
  std::lock_guard lock(mutex_);
  SR_RETURN_IF_ERROR(AdmitLocked());
  SR_ASSIGN_OR_RETURN(const IdentityKey* identity, IdentityLocked(key_name));
  return identity->public_key;
}

Result<SecretBytes> FakeToken::DecryptRsaOaep(const std::string& key_name,
                                              std::span<const std::uint8_t> ciphertext) {
  SR_RETURN_IF_ERROR(hsm::ValidateOrgName(key_name));
  if (ciphertext.empty() || ciphertext.size() > 1024) {
    return Error(ErrorCode::kInvalidArgument, "RSA-OAEP ciphertext has an impossible length");
  }
  std::lock_guard lock(mutex_);
  SR_RETURN_IF_ERROR(AdmitLocked());
  SR_ASSIGN_OR_RETURN(const IdentityKey* identity, IdentityLocked(key_name));
  ++calls_.decrypts;
  const Error undecryptable(ErrorCode::kInvalidArgument, "the message could not be decrypted");
  if (ciphertext.size() != identity->public_key.modulus.size()) return undecryptable;
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(
      EVP_PKEY_CTX_new_from_pkey(nullptr, identity->key.get(), nullptr));
  SecretBytes plain(ciphertext.size());
  std::size_t plain_len = plain.size();
  if (!ctx || EVP_PKEY_decrypt_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_oaep_md(ctx.get(), EVP_sha1()) != 1 ||
      EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), EVP_sha1()) != 1 ||
      EVP_PKEY_decrypt(ctx.get(), plain.data(), &plain_len, ciphertext.data(), ciphertext.size()) !=
          1) {
    return undecryptable;
  }
  plain.Truncate(plain_len);
  return plain;
}

Result<std::vector<std::uint8_t>> FakeToken::SignPs256(const std::string& key_name,
                                                       std::span<const std::uint8_t> message) {
  SR_RETURN_IF_ERROR(hsm::ValidateOrgName(key_name));
  std::lock_guard lock(mutex_);
  SR_RETURN_IF_ERROR(AdmitLocked());
  SR_ASSIGN_OR_RETURN(const IdentityKey* identity, IdentityLocked(key_name));
  ++calls_.signatures;
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;  // owned by ctx
  std::size_t len = 0;
  if (!ctx ||
      EVP_DigestSignInit(ctx.get(), &pctx, EVP_sha256(), nullptr, identity->key.get()) != 1 ||
      EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, message.data(), message.size()) != 1) {
    return OpenSslError("PS256 sign");
  }
  std::vector<std::uint8_t> signature(len);
  if (EVP_DigestSign(ctx.get(), signature.data(), &len, message.data(), message.size()) != 1) {
    return OpenSslError("PS256 sign");
  }
  signature.resize(len);
  return signature;
}

FakeVault::FakeVault() : FakeVault(std::vector<TokenSpec>{{"primary", {}}}) {}

FakeVault::FakeVault(std::vector<TokenSpec> tokens) {
  for (TokenSpec& spec : tokens) {
    tokens_.push_back(std::make_unique<FakeToken>(std::move(spec.name), std::move(spec.orgs)));
    views_.push_back(tokens_.back().get());
  }
}

FakeToken& FakeVault::token(const std::string& name) {
  for (const auto& token : tokens_) {
    if (token->name() == name) return *token;
  }
  throw std::out_of_range("the fake vault has no token named " + name);
}

Result<std::vector<FakeToken*>> FakeVault::TokensFor(const std::string& org) {
  SR_RETURN_IF_ERROR(hsm::ValidateOrgName(org));
  std::vector<FakeToken*> out;
  for (const auto& token : tokens_) {
    if (token->Serves(org)) out.push_back(token.get());
  }
  if (out.empty()) {
    return Error(ErrorCode::kNotFound, "no configured token serves organization " + org);
  }
  return out;
}

Result<std::vector<hsm::RootKeyInfo>> FakeVault::InitRoot(const std::string& org) {
  SR_ASSIGN_OR_RETURN(std::vector<FakeToken*> tokens, TokensFor(org));
  for (FakeToken* token : tokens) {
    SR_ASSIGN_OR_RETURN(std::vector<hsm::RootKeyInfo> existing, token->ListRootKeys(org));
    if (!existing.empty()) {
      return Error(
          ErrorCode::kAlreadyExists,
          "organization " + org + " already has root keys on token '" + token->name() + "'");
    }
  }
  return RotateRoot(org);
}

Status FakeVault::CreateIdentityKeys(const std::string& key_name) {
  for (const auto& token : tokens_) {
    Result<hsm::RsaPublicKey> key = token->CreateIdentityKey(key_name);
    if (!key.ok()) return key.error();
  }
  return OkStatus();
}

Result<std::vector<hsm::RootKeyInfo>> FakeVault::RotateRoot(const std::string& org) {
  SR_ASSIGN_OR_RETURN(std::vector<FakeToken*> tokens, TokensFor(org));
  std::uint32_t next = 1;
  for (FakeToken* token : tokens) {
    SR_ASSIGN_OR_RETURN(std::vector<hsm::RootKeyInfo> existing, token->ListRootKeys(org));
    if (!existing.empty()) next = std::max(next, existing.back().id.version + 1);
  }
  std::vector<hsm::RootKeyInfo> created;
  for (FakeToken* token : tokens) {
    for (;;) {  // a token behind the others catches up version by version
      SR_ASSIGN_OR_RETURN(hsm::RootKeyInfo info, token->CreateRootKey(org));
      if (info.id.version >= next) {
        created.push_back(std::move(info));
        break;
      }
    }
  }
  return created;
}

Result<std::vector<hsm::RootKeySet>> FakeVault::ListRoots(const std::string& org) {
  SR_ASSIGN_OR_RETURN(std::vector<FakeToken*> tokens, TokensFor(org));
  std::vector<hsm::RootKeySet> out;
  for (FakeToken* token : tokens) {
    SR_ASSIGN_OR_RETURN(std::vector<hsm::RootKeyInfo> keys, token->ListRootKeys(org));
    out.push_back({token->name(), std::move(keys)});
  }
  return out;
}

Result<hsm::WrapResult> FakeVault::Wrap(const hsm::KeyBinding& binding,
                                        std::span<const std::uint8_t> key) {
  SR_RETURN_IF_ERROR(hsm::ValidateBinding(binding));
  SR_ASSIGN_OR_RETURN(std::vector<FakeToken*> tokens, TokensFor(binding.org));
  hsm::WrapResult result;
  for (FakeToken* token : tokens) {
    Result<std::vector<std::uint8_t>> blob = token->Wrap(binding, key);
    if (blob.ok()) {
      result.blobs.push_back({token->name(), std::move(blob).value()});
    } else if (blob.error().code() == ErrorCode::kInvalidArgument ||
               blob.error().code() == ErrorCode::kResourceExhausted) {
      return blob.error();
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

Result<SecretBytes> FakeVault::Unwrap(const hsm::KeyBinding& binding,
                                      std::span<const hsm::TokenBlob> blobs) {
  SR_RETURN_IF_ERROR(hsm::ValidateBinding(binding));
  SR_ASSIGN_OR_RETURN(std::vector<FakeToken*> tokens, TokensFor(binding.org));
  const auto order = hsm::UnwrapOrder(tokens, blobs);
  if (order.empty()) {
    return Error(ErrorCode::kNotFound, "the key has no blob for any configured token");
  }
  std::optional<Error> last;
  for (const auto& [token, blob] : order) {
    Result<SecretBytes> key = token->Unwrap(binding, blob->blob);
    if (key.ok()) return key;
    if (key.error().code() != ErrorCode::kUnavailable &&
        key.error().code() != ErrorCode::kNotFound) {
      return key.error();
    }
    last = key.error();
  }
  return Error(ErrorCode::kUnavailable, "no token could unwrap the key: " + last->message());
}

std::vector<hsm::TokenHealth> FakeVault::Health() const {
  std::vector<hsm::TokenHealth> out;
  for (const auto& token : tokens_) out.push_back(token->Health());
  return out;
}

}  // namespace strongroom::testing
