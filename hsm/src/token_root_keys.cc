// Token: root keys (create, list, the current version per organization), their handles and
// session copies, the wrap ledger that keeps each version inside GCM's random-IV limit, and
// wrapping and unwrapping under them.
#include <algorithm>
#include <array>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "attribute_template.h"
#include "cryptoki.h"
#include "object_ops.h"
#include "strongroom/hsm/ck_result.h"
#include "strongroom/hsm/token.h"
#include "token_internal.h"

namespace strongroom::hsm {
namespace {

using internal::AttributeTemplate;
using internal::Cryptoki;
using internal::FindObjects;
using internal::GetBool;
using internal::GetBytes;
using internal::GetString;

std::uint64_t ReadCounter(const std::vector<std::uint8_t>& bytes) {
  std::uint64_t v = 0;
  for (std::uint8_t b : bytes) v = (v << 8) | b;
  return v;
}

std::vector<std::uint8_t> WriteCounter(std::uint64_t v) {
  std::vector<std::uint8_t> out(8);
  for (int i = 7; i >= 0; --i, v >>= 8)
    out[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v);
  return out;
}

}  // namespace

Result<Token::RootHandles> Token::Handles(SessionLease& lease, const RootKeyId& id) {
  {
    std::shared_lock lock(handles_mutex_);
    if (handles_generation_ == lease.generation()) {
      if (auto it = handles_.find(id); it != handles_.end()) return it->second;
    }
  }
  std::lock_guard lock(handles_mutex_);
  if (handles_generation_ != lease.generation()) {
    handles_.clear();
    identity_handles_.clear();
    keeper_ = CK_INVALID_HANDLE;  // died with the old module generation
    handles_generation_ = lease.generation();
  }
  if (auto it = handles_.find(id); it != handles_.end()) return it->second;

  Cryptoki ck(lease.fn());
  AttributeTemplate match;
  match.Ulong(CKA_CLASS, CKO_SECRET_KEY).Bool(CKA_TOKEN, true).String(CKA_ID, RootKeyObjectId(id));
  SR_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> found,
                      SearchingObjects([&] { return FindObjects(ck, lease.handle(), match, 2); }));
  if (found.empty()) {
    // Missing only if the token proves itself intact: SoftHSM2 without its directory finds nothing.
    SR_RETURN_IF_ERROR(CheckIntactOn(lease, CheckDepth::kPresence));
    return Error(ErrorCode::kNotFound, "token '" + name() + "' has no root key " + id.org + " v" +
                                           std::to_string(id.version));
  }
  if (found.size() > 1) {
    return Error(ErrorCode::kInternal, "token '" + name() + "' holds two objects for root key " +
                                           id.org + " v" + std::to_string(id.version));
  }
  RememberRoot(id);
  RootHandles handles{found.front(), found.front(), nullptr};
  {
    std::lock_guard ledger_lock(ledger_mutex_);
    std::unique_ptr<Ledger>& entry = ledgers_[id];
    if (!entry) entry = std::make_unique<Ledger>();
    handles.ledger = entry.get();
  }
  if (config_.session_copies) {
    if (keeper_ == CK_INVALID_HANDLE) {
      if (const CkResult opened = ck.OpenSession(slot(), keeper_); !opened.ok()) {
        keeper_ = CK_INVALID_HANDLE;
        return opened.error("C_OpenSession (session copies)");
      }
    }
    AttributeTemplate changes;
    changes.Bool(CKA_TOKEN, false);
    CK_OBJECT_HANDLE copy = CK_INVALID_HANDLE;
    const CkResult copied = ck.CopyObject(keeper_, handles.token_key, changes, copy);
    if (copied.ok()) {
      handles.use_key = copy;
    } else if (copied.rv() != CKR_ACTION_PROHIBITED && copied.rv() != CKR_FUNCTION_NOT_SUPPORTED) {
      // A key that may not be copied is used in place; anything else is a real failure.
      if (ClassifyCkr(copied.rv()) == CkFailure::kSessionDead) keeper_ = CK_INVALID_HANDLE;
      return copied.error("C_CopyObject (session copy of root key)");
    }
  }
  handles_[id] = handles;
  return handles;
}

void Token::InvalidateHandles() {
  std::lock_guard lock(handles_mutex_);
  handles_.clear();
  identity_handles_.clear();
  // The keeper session stays open: destroying session objects while other threads use objects of
  // another slot makes SoftHSM2 2.6.1 resolve handles to the wrong object (its handle manager is
  // keyed by object address). Copies made before are released when the keeper closes, at
  // shutdown or with a module reset; if the keeper itself died, a new one is opened.
  if (keeper_ != CK_INVALID_HANDLE) {
    CK_SESSION_INFO info;
    if (!Cryptoki(module_->fn()).GetSessionInfo(keeper_, info).ok()) keeper_ = CK_INVALID_HANDLE;
  }
}

void Token::RefreshVersions() {
  std::lock_guard lock(handles_mutex_);
  current_.clear();
}

Result<std::uint64_t> Token::UsageTotal(SessionLease& lease, const RootKeyId& id,
                                        std::vector<CK_OBJECT_HANDLE>* own,
                                        std::uint64_t* own_value) {
  Cryptoki ck(lease.fn());
  AttributeTemplate match;
  match.Ulong(CKA_CLASS, CKO_DATA).Bool(CKA_TOKEN, true).String(CKA_APPLICATION, kUsageApplication);
  const std::string prefix = UsageCounterPrefix(id);
  const std::string mine = UsageCounterLabel(id, config_.node_id);
  // A node's counter is replaced, never edited (CKA_VALUE of a data object is read-only), so a
  // crash between creating the new object and destroying the old leaves two: take the larger.
  // The counters are read under the same turn as the search that found them: a wrap of another
  // thread replaces them meanwhile otherwise, and their handles are gone before they are read.
  std::map<std::string, std::uint64_t> per_node;
  if (own != nullptr) own->clear();
  SR_RETURN_IF_ERROR(SearchingObjects([&]() -> Status {
    SR_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> found,
                        FindObjects(ck, lease.handle(), match));
    for (CK_OBJECT_HANDLE h : found) {
      SR_ASSIGN_OR_RETURN(std::string label, GetString(ck, lease.handle(), h, CKA_LABEL));
      if (label.rfind(prefix, 0) != 0) continue;
      SR_ASSIGN_OR_RETURN(std::vector<std::uint8_t> value,
                          GetBytes(ck, lease.handle(), h, CKA_VALUE));
      std::uint64_t& count = per_node[label];
      count = std::max(count, ReadCounter(value));
      if (label == mine && own != nullptr) own->push_back(h);
    }
    return OkStatus();
  }));
  std::uint64_t total = 0;
  for (const auto& [label, count] : per_node) total += count;
  if (own_value != nullptr) *own_value = per_node.count(mine) ? per_node[mine] : 0;
  return total;
}

Status Token::ReserveWraps(SessionLease& lease, const RootKeyId& id, Ledger& ledger) {
  // Fast path: take one wrap from the reserved block without a lock.
  for (std::uint64_t left = ledger.remaining.load(std::memory_order_relaxed); left > 0;) {
    if (ledger.remaining.compare_exchange_weak(left, left - 1, std::memory_order_relaxed)) {
      return OkStatus();
    }
  }
  std::lock_guard lock(ledger_mutex_);
  for (std::uint64_t left = ledger.remaining.load(std::memory_order_relaxed); left > 0;) {
    if (ledger.remaining.compare_exchange_weak(left, left - 1, std::memory_order_relaxed)) {
      return OkStatus();  // another caller reserved a block meanwhile
    }
  }
  std::vector<CK_OBJECT_HANDLE> own;
  std::uint64_t own_value = 0;
  SR_ASSIGN_OR_RETURN(std::uint64_t total, UsageTotal(lease, id, &own, &own_value));
  if (total >= config_.wrap_limit) {
    return Error(ErrorCode::kResourceExhausted,
                 "token '" + name() + "': root key " + id.org + " v" + std::to_string(id.version) +
                     " has wrapped " + std::to_string(total) +
                     " keys, its limit for random GCM IVs; rotate the root key "
                     "(kmsctl hsm rotate-root --org " +
                     id.org + ")");
  }
  // Blocks grow from 1024 to reserve_block, so a short-lived process (kmsctl) wastes little.
  const std::uint64_t grown =
      ledger.blocks >= 6 ? config_.reserve_block : std::uint64_t{1024} << (2 * ledger.blocks);
  const std::uint64_t block = std::min({config_.reserve_block, grown, config_.wrap_limit - total});
  AttributeTemplate counter;
  counter.Ulong(CKA_CLASS, CKO_DATA)
      .Bool(CKA_TOKEN, true)
      .Bool(CKA_PRIVATE, true)
      .String(CKA_APPLICATION, kUsageApplication)
      .String(CKA_LABEL, UsageCounterLabel(id, config_.node_id))
      .Bytes(CKA_VALUE, WriteCounter(own_value + block));
  Cryptoki ck(lease.fn());
  CK_OBJECT_HANDLE created = CK_INVALID_HANDLE;
  if (const CkResult recorded =
          ChangingObjects([&] { return ck.CreateObject(lease.handle(), counter, created); });
      !recorded.ok()) {
    return recorded.error("recording root-key usage on the token");
  }
  // The old counters are smaller; one left behind by a failure here is harmless (UsageTotal).
  for (CK_OBJECT_HANDLE old : own) {
    (void)ChangingObjects([&] { return ck.DestroyObject(lease.handle(), old); });
  }
  ledger.remaining.store(block - 1, std::memory_order_relaxed);
  ++ledger.blocks;
  return OkStatus();
}

Result<std::vector<RootKeyInfo>> Token::ListRootKeysOn(SessionLease& lease,
                                                       const std::string& org) {
  const Cryptoki ck(lease.fn());
  const CK_SESSION_HANDLE s = lease.handle();
  AttributeTemplate match;
  match.Ulong(CKA_CLASS, CKO_SECRET_KEY).Bool(CKA_TOKEN, true);
  SR_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> found,
                      SearchingObjects([&] { return FindObjects(ck, s, match); }));
  std::vector<RootKeyInfo> out;
  for (CK_OBJECT_HANDLE h : found) {
    Result<std::string> object_id = GetString(ck, s, h, CKA_ID);
    if (!object_id.ok()) continue;  // not ours: other applications' keys may lack CKA_ID
    std::optional<RootKeyId> id = ParseRootKeyObjectId(*object_id);
    if (!id || (!org.empty() && id->org != org)) continue;
    RootKeyInfo info;
    info.token = name();
    info.id = *id;
    SR_ASSIGN_OR_RETURN(info.label, GetString(ck, s, h, CKA_LABEL));
    SR_ASSIGN_OR_RETURN(info.sensitive, GetBool(ck, s, h, CKA_SENSITIVE));
    SR_ASSIGN_OR_RETURN(info.extractable, GetBool(ck, s, h, CKA_EXTRACTABLE));
    SR_ASSIGN_OR_RETURN(info.never_extractable, GetBool(ck, s, h, CKA_NEVER_EXTRACTABLE));
    SR_ASSIGN_OR_RETURN(info.always_sensitive, GetBool(ck, s, h, CKA_ALWAYS_SENSITIVE));
    SR_ASSIGN_OR_RETURN(info.local, GetBool(ck, s, h, CKA_LOCAL));
    SR_ASSIGN_OR_RETURN(info.wraps_reserved, UsageTotal(lease, info.id, nullptr, nullptr));
    out.push_back(std::move(info));
  }
  std::sort(out.begin(), out.end(),
            [](const RootKeyInfo& a, const RootKeyInfo& b) { return a.id < b.id; });
  // A version the token held and no longer lists is gone only if the token proves itself intact.
  std::map<std::string, std::uint32_t> remembered;
  {
    std::lock_guard lock(remembered_mutex_);
    remembered = remembered_roots_;
  }
  for (const auto& [remembered_org, version] : remembered) {
    if (!org.empty() && remembered_org != org) continue;
    const RootKeyId id{remembered_org, version};
    if (std::none_of(out.begin(), out.end(), [&](const RootKeyInfo& k) { return k.id == id; })) {
      SR_RETURN_IF_ERROR(CheckIntactOn(lease, CheckDepth::kPresence));
      break;
    }
  }
  for (const RootKeyInfo& info : out) RememberRoot(info.id);
  return out;
}

Result<std::vector<RootKeyInfo>> Token::ListRootKeys(const std::string& org) {
  SR_RETURN_IF_ERROR(ValidateOrgName(org));
  return Run<std::vector<RootKeyInfo>>(
      [&](SessionLease& lease) { return ListRootKeysOn(lease, org); });
}

Result<std::vector<std::string>> Token::ListOrgs() {
  SR_ASSIGN_OR_RETURN(std::vector<RootKeyInfo> all,
                      Run<std::vector<RootKeyInfo>>(
                          [&](SessionLease& lease) { return ListRootKeysOn(lease, ""); }));
  std::set<std::string> orgs;
  for (const RootKeyInfo& info : all) orgs.insert(info.id.org);
  return std::vector<std::string>(orgs.begin(), orgs.end());
}

Result<std::uint32_t> Token::CurrentVersion(const std::string& org) {
  {
    std::shared_lock lock(handles_mutex_);
    if (auto it = current_.find(org); it != current_.end()) return it->second;
  }
  SR_ASSIGN_OR_RETURN(std::vector<RootKeyInfo> keys, ListRootKeys(org));
  if (keys.empty()) {
    return Error(ErrorCode::kNotFound, "organization " + org + " has no root key on token '" +
                                           name() + "' (kmsctl hsm init-root --org " + org +
                                           " creates one)");
  }
  std::lock_guard lock(handles_mutex_);
  current_[org] = keys.back().id.version;
  return keys.back().id.version;
}

Result<RootKeyInfo> Token::CreateRootKey(const std::string& org) {
  SR_RETURN_IF_ERROR(ValidateOrgName(org));
  SR_ASSIGN_OR_RETURN(
      RootKeyInfo created, Run<RootKeyInfo>([&](SessionLease& lease) -> Result<RootKeyInfo> {
        SR_ASSIGN_OR_RETURN(std::vector<RootKeyInfo> existing, ListRootKeysOn(lease, org));
        RootKeyId id{org, existing.empty() ? 1 : existing.back().id.version + 1};
        // PKCS#11 makes CKA_SENSITIVE and CKA_EXTRACTABLE one-way, so they hold whatever
        // CKA_MODIFIABLE says. SoftHSM2 refuses C_CopyObject of an unmodifiable object, so a
        // root key meant for session copies stays modifiable.
        const bool copyable = config_.session_copies;
        AttributeTemplate key_template;
        key_template.Ulong(CKA_CLASS, CKO_SECRET_KEY)
            .Ulong(CKA_KEY_TYPE, CKK_AES)
            .Ulong(CKA_VALUE_LEN, 32)
            .Bool(CKA_TOKEN, true)
            .Bool(CKA_PRIVATE, true)
            .Bool(CKA_SENSITIVE, true)
            .Bool(CKA_EXTRACTABLE, false)
            .Bool(CKA_MODIFIABLE, copyable)
            .Bool(CKA_COPYABLE, copyable)
            .Bool(CKA_ENCRYPT, true)
            .Bool(CKA_DECRYPT, true)
            .Bool(CKA_WRAP, false)
            .Bool(CKA_UNWRAP, false)
            .Bool(CKA_SIGN, false)
            .Bool(CKA_VERIFY, false)
            .Bool(CKA_DERIVE, false)
            .String(CKA_LABEL, RootKeyLabel(id))
            .String(CKA_ID, RootKeyObjectId(id));
        Cryptoki ck(lease.fn());
        CK_MECHANISM mechanism{CKM_AES_KEY_GEN, nullptr, 0};
        CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
        if (const CkResult generated = ChangingObjects(
                [&] { return ck.GenerateKey(lease.handle(), mechanism, key_template, key); });
            !generated.ok()) {
          return generated.error("C_GenerateKey (root key)");
        }
        SR_ASSIGN_OR_RETURN(std::vector<RootKeyInfo> after, ListRootKeysOn(lease, org));
        auto same = std::count_if(after.begin(), after.end(),
                                  [&](const RootKeyInfo& k) { return k.id == id; });
        if (same != 1) {
          // Another process created the same version at the same moment; keep theirs.
          (void)ChangingObjects([&] { return ck.DestroyObject(lease.handle(), key); });
          return Error(ErrorCode::kAlreadyExists,
                       "root key " + org + " v" + std::to_string(id.version) +
                           " was created concurrently by another process; run the command again");
        }
        for (RootKeyInfo& k : after) {
          if (k.id == id) return std::move(k);
        }
        return Error(ErrorCode::kInternal, "created root key not found");
      }));
  std::lock_guard lock(handles_mutex_);
  current_[org] = created.id.version;
  return created;
}

Result<std::vector<std::uint8_t>> Token::Wrap(const KeyBinding& binding,
                                              std::span<const std::uint8_t> key) {
  SR_RETURN_IF_ERROR(ValidateBinding(binding));
  if (key.size() != kWrappedKeyPlainSize) {
    return Error(ErrorCode::kInvalidArgument,
                 "only 256-bit keys are wrapped, got " + std::to_string(key.size() * 8) + " bits");
  }
  SR_ASSIGN_OR_RETURN(std::uint32_t version, CurrentVersion(binding.org));
  const RootKeyId id{binding.org, version};
  std::vector<std::uint8_t> aad = WrappedKeyAad(binding, version);
  return Run<std::vector<std::uint8_t>>(
      [&](SessionLease& lease) -> Result<std::vector<std::uint8_t>> {
        SR_ASSIGN_OR_RETURN(RootHandles handles, Handles(lease, id));
        SR_RETURN_IF_ERROR(ReserveWraps(lease, id, *handles.ledger));
        Cryptoki ck(lease.fn());
        std::uint8_t iv[kGcmIvSize];
        SR_RETURN_IF_ERROR(ck.GenerateRandom(lease.handle(), iv));
        CK_GCM_PARAMS params{iv,
                             sizeof iv,
                             sizeof iv * 8,
                             aad.data(),
                             static_cast<CK_ULONG>(aad.size()),
                             kGcmTagSize * 8};
        CK_MECHANISM mechanism{CKM_AES_GCM, &params, sizeof params};
        SR_RETURN_IF_ERROR(ck.EncryptInit(lease.handle(), mechanism, handles.use_key));
        std::uint8_t out[kWrappedKeyPlainSize + kGcmTagSize];
        CK_ULONG out_len = 0;
        SR_RETURN_IF_ERROR(ck.Encrypt(lease.handle(), key, out, out_len));
        if (out_len != sizeof out) {
          return Error(ErrorCode::kInternal, "C_Encrypt returned " + std::to_string(out_len) +
                                                 " bytes for a 256-bit key under AES-GCM");
        }
        return EncodeWrappedKey(version, iv, out);
      });
}

Result<SecretBytes> Token::Unwrap(const KeyBinding& binding, std::span<const std::uint8_t> blob) {
  SR_RETURN_IF_ERROR(ValidateBinding(binding));
  SR_ASSIGN_OR_RETURN(WrappedKeyView view, ParseWrappedKey(blob));
  const RootKeyId id{binding.org, view.root_version};
  std::vector<std::uint8_t> aad = WrappedKeyAad(binding, view.root_version);
  return Run<SecretBytes>([&](SessionLease& lease) -> Result<SecretBytes> {
    SR_ASSIGN_OR_RETURN(RootHandles handles, Handles(lease, id));
    Cryptoki ck(lease.fn());
    CK_GCM_PARAMS params{
        const_cast<std::uint8_t*>(view.iv.data()), kGcmIvSize,     kGcmIvSize * 8, aad.data(),
        static_cast<CK_ULONG>(aad.size()),         kGcmTagSize * 8};
    CK_MECHANISM mechanism{CKM_AES_GCM, &params, sizeof params};
    SR_RETURN_IF_ERROR(ck.DecryptInit(lease.handle(), mechanism, handles.use_key));
    SecretBytes key(view.ciphertext_and_tag.size());
    CK_ULONG key_len = 0;
    const CkResult decrypted =
        ck.Decrypt(lease.handle(), view.ciphertext_and_tag, key.mutable_view(), key_len);
    const CK_RV rv = decrypted.rv();
    // PKCS#11 reports a failed GCM tag as CKR_ENCRYPTED_DATA_INVALID; SoftHSM2 2.6 says
    // CKR_GENERAL_ERROR. Tell that apart from a real device failure by asking the session.
    CK_SESSION_INFO session_info;
    const bool session_alive = (rv == CKR_GENERAL_ERROR || rv == CKR_FUNCTION_FAILED) &&
                               ck.GetSessionInfo(lease.handle(), session_info).ok();
    if (rv == CKR_ENCRYPTED_DATA_INVALID || rv == CKR_ENCRYPTED_DATA_LEN_RANGE || session_alive) {
      return Error(ErrorCode::kDataLoss,
                   "wrapped key failed authentication: it was altered, or it belongs to another "
                   "key, organization or root-key version");
    }
    SR_RETURN_IF_ERROR(decrypted);
    if (key_len != kWrappedKeyPlainSize) {
      return Error(ErrorCode::kDataLoss, "wrapped key decrypted to the wrong length");
    }
    key.Truncate(key_len);
    return key;
  });
}

namespace {
// Never the AAD of a wrapped key (WrappedKeyAad), so a probe's ciphertext is no key's.
constexpr std::uint8_t kProbeAad[] = {'s', 'r', '-', 'p', 'r', 'o', 'b', 'e'};
}  // namespace

Result<std::optional<Token::RootProbe>> Token::MakeRootProbeOn(SessionLease& lease,
                                                               const RootKeyId& id,
                                                               const RootHandles& handles) {
  if (Status reserved = ReserveWraps(lease, id, *handles.ledger); !reserved.ok()) {
    // A version at its limit still decrypts; it is not probed (its rotation is due).
    if (reserved.error().code() == ErrorCode::kResourceExhausted) return std::optional<RootProbe>();
    return reserved.error();
  }
  Cryptoki ck(lease.fn());
  RootProbe made;
  SR_RETURN_IF_ERROR(ck.GenerateRandom(lease.handle(), made.plain));
  SR_RETURN_IF_ERROR(ck.GenerateRandom(lease.handle(), made.iv));
  CK_GCM_PARAMS params{made.iv.data(),   kGcmIvSize,
                       kGcmIvSize * 8,   const_cast<std::uint8_t*>(kProbeAad),
                       sizeof kProbeAad, kGcmTagSize * 8};
  CK_MECHANISM mechanism{CKM_AES_GCM, &params, sizeof params};
  SR_RETURN_IF_ERROR(ck.EncryptInit(lease.handle(), mechanism, handles.use_key));
  CK_ULONG written = 0;
  SR_RETURN_IF_ERROR(ck.Encrypt(lease.handle(), made.plain, made.ciphertext, written));
  if (written != made.ciphertext.size()) {
    return Error(ErrorCode::kUnavailable, "encrypts a 32-byte value to " + std::to_string(written) +
                                              " bytes under root key " + id.org + " v" +
                                              std::to_string(id.version));
  }
  return std::optional<RootProbe>(made);
}

Status Token::CheckRootDecryptsOn(SessionLease& lease, const RootKeyId& id) {
  SR_ASSIGN_OR_RETURN(RootHandles handles, Handles(lease, id));
  std::optional<RootProbe> probe;
  {
    // Held while the value is made, so that checks at once make one between them.
    std::lock_guard lock(probes_mutex_);
    if (auto it = root_probes_.find(id); it != root_probes_.end()) {
      probe = it->second;
    } else {
      SR_ASSIGN_OR_RETURN(probe, MakeRootProbeOn(lease, id, handles));
      if (!probe) return OkStatus();
      root_probes_.emplace(id, *probe);
    }
  }
  Cryptoki ck(lease.fn());
  CK_GCM_PARAMS params{probe->iv.data(), kGcmIvSize,
                       kGcmIvSize * 8,   const_cast<std::uint8_t*>(kProbeAad),
                       sizeof kProbeAad, kGcmTagSize * 8};
  CK_MECHANISM mechanism{CKM_AES_GCM, &params, sizeof params};
  SR_RETURN_IF_ERROR(ck.DecryptInit(lease.handle(), mechanism, handles.use_key));
  std::array<std::uint8_t, sizeof(RootProbe::ciphertext)> out{};
  CK_ULONG written = 0;
  const CkResult decrypted = ck.Decrypt(lease.handle(), probe->ciphertext, out, written);
  const CK_RV rv = decrypted.rv();
  if (!decrypted.ok() && rv != CKR_GENERAL_ERROR && ClassifyCkr(rv) != CkFailure::kOperation) {
    return decrypted.error("C_Decrypt (probe of root key " + id.org + ")");
  }
  if (!decrypted.ok() || written != probe->plain.size() ||
      !std::equal(probe->plain.begin(), probe->plain.end(), out.begin())) {
    return Error(ErrorCode::kUnavailable,
                 "root key " + id.org + " v" + std::to_string(id.version) +
                     " does not decrypt what it encrypted (" +
                     (decrypted.ok() ? std::string("another value") : CkrName(rv)) + ")",
                 kCkrTokenFault);
  }
  return OkStatus();
}

}  // namespace strongroom::hsm
