#include "strongroom/hsm/token.h"

#include <algorithm>
#include <set>
#include <utility>

#include "attribute_template.h"
#include "cryptoki.h"
#include "object_ops.h"
#include "strongroom/hsm/ck_result.h"

namespace strongroom::hsm {
namespace {

using internal::AttributeTemplate;
using internal::Cryptoki;
using internal::FindObjects;
using internal::GetBool;
using internal::GetBytes;
using internal::GetString;
using internal::GetUlong;

constexpr std::chrono::milliseconds kFirstBackoff{250};
constexpr std::chrono::milliseconds kMaxBackoff{8000};

constexpr char kIdentityIdPrefix[] = "sridentity:";
std::string IdentityObjectId(const std::string& name) { return kIdentityIdPrefix + name; }
std::string IdentityLabel(const std::string& name) { return "strongroom/identity/" + name; }

Error UnavailableError(const std::string& token, const std::string& detail) {
  return Error(ErrorCode::kUnavailable,
               "token '" + token + "' is unavailable (" + detail +
                   "); it is repaired in the background, retry later",
               kCkrTokenFault);
}

CkFailure Classify(const Error& error) {
  if (error.native_code() == 0) return CkFailure::kOperation;
  return ClassifyCkr(static_cast<CK_RV>(error.native_code()));
}

Error Prefixed(const std::string& token, const Error& error) {
  return Error(error.code(), "token '" + token + "': " + error.message(), error.native_code());
}

bool ValidNodeId(const std::string& node) {
  if (node.empty() || node.size() > 64) return false;
  return std::all_of(node.begin(), node.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

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

Status ValidateConfig(const TokenConfig& config) {
  if (config.name.empty()) return Error(ErrorCode::kInvalidArgument, "a token needs a name");
  if (config.pool_size == 0 || config.pool_size > 1024) {
    return Error(ErrorCode::kInvalidArgument,
                 "token '" + config.name + "': pool_size must be 1 to 1024");
  }
  if (config.acquire_timeout.count() <= 0) {
    return Error(ErrorCode::kInvalidArgument,
                 "token '" + config.name + "': acquire timeout must be positive");
  }
  if (!ValidNodeId(config.node_id)) {
    return Error(ErrorCode::kInvalidArgument,
                 "token '" + config.name + "': node id must be 1-64 of [A-Za-z0-9._-]");
  }
  if (config.wrap_limit == 0 || config.wrap_limit > (std::uint64_t{1} << 32)) {
    return Error(ErrorCode::kInvalidArgument,
                 "token '" + config.name + "': wrap limit must be 1 to 2^32");
  }
  for (const std::string& org : config.orgs) {
    if (Status s = ValidateOrgName(org); !s.ok()) {
      return Error(ErrorCode::kInvalidArgument,
                   "token '" + config.name + "': orgs: " + s.error().message());
    }
  }
  if (config.reserve_block == 0) {
    return Error(ErrorCode::kInvalidArgument,
                 "token '" + config.name + "': reserve block must be positive");
  }
  return OkStatus();
}

Result<CK_SLOT_ID> FindSlot(Module& module, const TokenUri& uri, const std::string& name) {
  Cryptoki ck(module.fn());
  Result<std::vector<CK_SLOT_ID>> slots = ck.SlotList(true);
  if (!slots.ok()) return Prefixed(name, slots.error());
  std::vector<CK_SLOT_ID> matches;
  for (CK_SLOT_ID slot : *slots) {
    CK_TOKEN_INFO info{};
    if (!ck.GetTokenInfo(slot, info).ok()) continue;  // a slot that cannot say is not the one
    if (!(info.flags & CKF_TOKEN_INITIALIZED)) continue;
    if (uri.Matches(slot, info)) matches.push_back(slot);
  }
  if (matches.empty()) {
    return Error(ErrorCode::kNotFound, "token '" + name + "': no initialized token matches " +
                                           uri.text() + " (kmsctl hsm slots lists the tokens " +
                                           "the module offers)");
  }
  if (matches.size() > 1) {
    return Error(ErrorCode::kInvalidArgument,
                 "token '" + name + "': " + std::to_string(matches.size()) + " tokens match " +
                     uri.text() + "; add serial= or slot-id= to the URI");
  }
  return matches.front();
}

}  // namespace

std::string_view TokenStateName(TokenState state) {
  switch (state) {
    case TokenState::kReady:
      return "ready";
    case TokenState::kUnavailable:
      return "unavailable";
    case TokenState::kLoginRefused:
      return "login-refused";
  }
  return "unknown";
}

bool Token::Serves(const std::string& org) const {
  return config_.orgs.empty() ||
         std::find(config_.orgs.begin(), config_.orgs.end(), org) != config_.orgs.end();
}

Result<Token::Located> Token::Locate(const TokenConfig& config) {
  SR_RETURN_IF_ERROR(ValidateConfig(config));
  Result<TokenUri> uri = TokenUri::Parse(config.uri);
  if (!uri.ok()) return Prefixed(config.name, uri.error());
  Result<std::shared_ptr<Module>> module = Module::Load(uri->module_path());
  if (!module.ok()) return Prefixed(config.name, module.error());
  Result<CK_SLOT_ID> slot = FindSlot(**module, *uri, config.name);
  return Located{std::move(uri).value(), std::move(module).value(), std::move(slot)};
}

Status Token::FinishOpen() {
  SR_RETURN_IF_ERROR(CheckMechanisms());
  // The first call logs in (a wrong or locked PIN fails it as it is).
  Result<bool> remembered = RunUnchecked<bool>([&](SessionLease& lease) -> Result<bool> {
    SR_RETURN_IF_ERROR(RememberObjects(lease));
    return true;
  });
  if (!remembered.ok()) return remembered.error();
  return OkStatus();
}

Result<std::unique_ptr<Token>> Token::Open(const TokenConfig& config) {
  SR_ASSIGN_OR_RETURN(Located located, Locate(config));
  if (!located.slot.ok()) return located.slot.error();
  std::unique_ptr<Token> token(
      new Token(config, std::move(located.uri), std::move(located.module), *located.slot));
  SR_RETURN_IF_ERROR(token->FinishOpen());
  return token;
}

Result<std::unique_ptr<Token>> Token::Start(const TokenConfig& config) {
  SR_ASSIGN_OR_RETURN(Located located, Locate(config));
  const bool found = located.slot.ok();
  if (!found && located.slot.error().code() != ErrorCode::kNotFound &&
      !IsTokenFault(located.slot.error())) {
    return located.slot.error();  // several tokens match: the URI must change
  }
  std::unique_ptr<Token> token(new Token(config, std::move(located.uri), std::move(located.module),
                                         found ? *located.slot : CK_SLOT_ID{0}));
  Status opened = found ? token->FinishOpen() : Status(located.slot.error());
  if (opened.ok() || token->LoginRefused()) return token;
  const ErrorCode code = opened.error().code();
  if (code == ErrorCode::kUnimplemented || code == ErrorCode::kInvalidArgument) {
    return opened.error();  // a mechanism the token lacks; no repair brings it
  }
  // Missing or failing now: the first repair (due kFirstBackoff from now) opens it.
  token->opened_.store(false, std::memory_order_release);
  token->MarkTokenGone();
  if (!token->InBackoff()) {
    token->MarkUnavailable(Error(
        ErrorCode::kUnavailable,
        "token '" + config.name + "' could not be opened at start: " + opened.error().message(),
        opened.error().native_code()));
  }
  return token;
}

Token::Token(TokenConfig config, TokenUri uri, std::shared_ptr<Module> module, CK_SLOT_ID slot)
    : config_(std::move(config)),
      uri_(std::move(uri)),
      module_(std::move(module)),
      pool_(module_, slot, config_.pool_size, config_.name, [this](std::uint64_t generation) {
        // A session is about to open in a generation the slot was not found in.
        std::lock_guard lock(login_mutex_);
        return ResolveSlot(generation);
      }) {}

Token::~Token() {
  std::lock_guard lock(handles_mutex_);
  if (keeper_ != CK_INVALID_HANDLE && handles_generation_ == module_->generation()) {
    (void)Cryptoki(module_->fn()).CloseSession(keeper_);  // destroys the session copies with it
  }
}

Status Token::CheckMechanisms() {
  const MechanismNeed needs[] = {
      {CKM_AES_KEY_GEN, CKF_GENERATE, "generate, 256-bit", "generating AES-256 root keys"},
      {CKM_AES_GCM, CKF_ENCRYPT | CKF_DECRYPT, "encrypt and decrypt",
       "wrapping keys under root keys"},
  };
  return RequireMechanisms(needs);
}

Status Token::CheckIdentityMechanisms() {
  const MechanismNeed needs[] = {
      {CKM_RSA_PKCS_KEY_PAIR_GEN, CKF_GENERATE_KEY_PAIR, "generate key pair",
       "generating the KMS's RSA identity key"},
      {CKM_RSA_PKCS_OAEP, CKF_DECRYPT, "decrypt", "opening RSA-OAEP messages to the KMS"},
      {CKM_SHA256_RSA_PKCS_PSS, CKF_SIGN, "sign", "signing PS256 answers of the KMS"},
  };
  return RequireMechanisms(needs);
}

Status Token::RequireMechanisms(std::span<const MechanismNeed> needs) {
  Cryptoki ck(module_->fn());
  Result<std::vector<CK_MECHANISM_TYPE>> list = ck.MechanismList(slot());
  if (!list.ok()) return Prefixed(name(), list.error());
  for (const MechanismNeed& need : needs) {
    CK_MECHANISM_INFO info{};
    bool offered = std::find(list->begin(), list->end(), need.mechanism) != list->end() &&
                   ck.GetMechanismInfo(slot(), need.mechanism, info).ok() &&
                   (info.flags & need.flags) == need.flags;
    // AES key sizes are in bytes per PKCS#11, but some modules report bits.
    if (offered && need.mechanism == CKM_AES_KEY_GEN) {
      offered = (info.ulMinKeySize <= 32 && info.ulMaxKeySize >= 32) ||
                (info.ulMinKeySize <= 256 && info.ulMaxKeySize >= 256);
    }
    if (!offered) {
      return Error(ErrorCode::kUnimplemented, "token '" + name() + "' does not offer " +
                                                  CkmName(need.mechanism) + " (" + need.what +
                                                  "), which " + need.purpose + " needs");
    }
  }
  return OkStatus();
}

Status Token::LogInOn(SessionLease& lease) {
  const std::uint64_t generation = lease.generation();
  if (logged_in_generation_.load(std::memory_order_acquire) == generation) return OkStatus();
  std::lock_guard lock(login_mutex_);
  if (login_refused_) return *login_refused_;
  if (logged_in_generation_.load(std::memory_order_acquire) == generation) return OkStatus();
  Status s = ResolveSlot(generation);
  if (s.ok()) s = Login(lease);
  if (s.ok()) {
    logged_in_generation_.store(generation, std::memory_order_release);
    return OkStatus();
  }
  if (login_refused_) return s;
  if (Classify(s.error()) == CkFailure::kTokenGone) token_gone_.store(true);
  // Anything but a refused PIN (a failed C_Login, a token that cannot be found or read) is the
  // token's fault.
  return Error(ErrorCode::kUnavailable, s.error().message(), s.error().native_code());
}

Status Token::FindAgain() {
  auto guard = module_->UseGuard();
  std::lock_guard lock(login_mutex_);
  return ResolveSlot(module_->generation());
}

Status Token::ResolveSlot(std::uint64_t generation) {
  const bool gone = token_gone_.load(std::memory_order_acquire);
  if (pool_.slot_generation() == generation && !gone) return OkStatus();
  // A re-initialized module may number its slots anew (SoftHSM2 does, and knows none of them
  // until asked for its slot list), and a token that was removed may come back in another slot.
  Result<CK_SLOT_ID> slot = FindSlot(*module_, uri_, name());
  if (!slot.ok()) {
    // The token was there when we opened it: its absence now is an outage, not a typo.
    const std::uint64_t native = slot.error().native_code();
    return Error(ErrorCode::kUnavailable,
                 "token '" + name() + "' is not present: " + slot.error().message(),
                 native != 0 ? native : CKR_TOKEN_NOT_PRESENT);
  }
  pool_.SetSlot(*slot, generation);
  token_gone_.store(false, std::memory_order_release);
  return OkStatus();
}

Error Token::Refuse(Error why) {
  login_refused_ = std::move(why);
  refused_.store(true, std::memory_order_release);
  return *login_refused_;
}

Status Token::Login(SessionLease& lease) {
  Cryptoki ck(lease.fn());
  CK_TOKEN_INFO info{};
  if (const CkResult got = ck.GetTokenInfo(slot(), info); !got.ok()) {
    return Prefixed(name(), got.error());
  }
  if (info.flags & CKF_USER_PIN_LOCKED) {
    return Refuse(Error(ErrorCode::kFailedPrecondition,
                        "token '" + name() +
                            "': the user PIN is locked; a security officer "
                            "must unlock it before the token can be used",
                        CKR_PIN_LOCKED));
  }
  Result<SecretBytes> pin = ReadPin(uri_.pin_source());
  if (!pin.ok()) return Refuse(Prefixed(name(), pin.error()));
  login_attempts_.fetch_add(1);
  const CkResult login = ck.Login(lease.handle(), CKU_USER, *pin);
  pin->Clear();
  const CK_RV rv = login.rv();
  if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) return OkStatus();
  if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_INVALID || rv == CKR_PIN_LEN_RANGE) {
    return Refuse(Error(ErrorCode::kUnauthenticated,
                        "token '" + name() + "': wrong PIN (C_Login returned " + CkrName(rv) +
                            "); not retried, fix the pin-source and restart",
                        rv));
  }
  if (rv == CKR_PIN_LOCKED || rv == CKR_PIN_EXPIRED) {
    return Refuse(Error(ErrorCode::kFailedPrecondition,
                        "token '" + name() + "': the user PIN is " +
                            (rv == CKR_PIN_LOCKED ? "locked" : "expired") +
                            "; a security officer must reset it",
                        rv));
  }
  if (ClassifyCkr(rv) == CkFailure::kSessionDead) lease.MarkBroken();
  return Prefixed(name(), login.error());
}

template <typename T, typename Op>
Result<T> Token::Run(Op&& op) {
  SR_RETURN_IF_ERROR(Admit());
  return RunUnchecked<T>(std::forward<Op>(op));
}

template <typename T, typename Op>
Result<T> Token::RunUnchecked(Op&& op) {
  const auto deadline = std::chrono::steady_clock::now() + config_.acquire_timeout;
  std::optional<Error> last;
  // One repair and retry per call. A reset of the module for another of its tokens is no fault of
  // this one, and costs no repair: the session leased after it is of the new generation, and the
  // call logs in on it and goes on. The login, the operation and their session share the lease's
  // use guard, so no reset comes between them.
  for (int repairs = 0; repairs < 2;) {
    Result<SessionLease> lease = pool_.Acquire(deadline);
    if (!lease.ok()) {
      const CkFailure failure = Classify(lease.error());
      if (failure != CkFailure::kModuleDead && failure != CkFailure::kTokenGone) {
        return lease.error();
      }
      last = lease.error();
      ++repairs;
      if (failure == CkFailure::kTokenGone) {
        MarkTokenGone();
        if (Status found = FindAgain(); !found.ok()) {
          MarkUnavailable(found.error());
          return found.error();
        }
      } else if (Status reset = module_->Reset(module_->generation()); !reset.ok()) {
        last = reset.error();
        break;
      }
      pool_.DropStale();
      continue;
    }
    if (Status in = LogInOn(*lease); !in.ok()) {
      const CkFailure failure = Classify(in.error());
      if (failure == CkFailure::kSessionDead) {
        lease->MarkBroken();
      } else if (failure == CkFailure::kModuleDead) {
        const std::uint64_t generation = lease->generation();
        { SessionLease released = std::move(lease).value(); }  // reset waits for every lease
        if (Status reset = module_->Reset(generation); !reset.ok()) {
          last = reset.error();
          break;
        }
        pool_.DropStale();
      } else {
        if (in.error().code() == ErrorCode::kUnavailable) MarkUnavailable(in.error());
        return in.error();
      }
      last = in.error();
      ++repairs;
      continue;
    }
    const std::uint64_t failures_at_start = failures_.load(std::memory_order_acquire);
    Result<T> result = op(*lease);
    if (result.ok()) {
      MarkHealthy(failures_at_start);
      return result;
    }
    last = result.error();
    ++repairs;
    switch (Classify(result.error())) {
      case CkFailure::kNone:
      case CkFailure::kOperation:
        return result;
      case CkFailure::kSessionDead:
        lease->MarkBroken();
        break;
      case CkFailure::kLoggedOut:
        logged_in_generation_.store(0);
        break;
      case CkFailure::kHandleInvalid:
        InvalidateHandles();
        break;
      case CkFailure::kTokenGone:
        lease->MarkBroken();
        MarkTokenGone();
        break;
      case CkFailure::kModuleDead:
      case CkFailure::kTokenFault: {
        lease->MarkBroken();
        const std::uint64_t generation = lease->generation();
        { SessionLease released = std::move(lease).value(); }  // reset waits for every lease
        if (Status reset = module_->Reset(generation); !reset.ok()) {
          last = reset.error();
          repairs = 2;
        }
        pool_.DropStale();
        break;
      }
    }
  }
  Error failed(ErrorCode::kUnavailable, "token '" + name() + "' is unavailable: " + last->message(),
               last->native_code());  // every way out of the loop above sets `last`
  MarkUnavailable(failed);
  return failed;
}

void Token::MarkTokenGone() {
  // The token left its slot (or the slot was renumbered): find it again and log in again before
  // the next call. Cached handles are checked by use (a stale one reports itself). Other tokens
  // of the same module are not disturbed.
  token_gone_.store(true, std::memory_order_release);
  logged_in_generation_.store(0, std::memory_order_release);
}

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
                      FindObjects(ck, lease.handle(), match, 2));
  if (found.empty()) {
    // Missing only if the token proves itself intact: SoftHSM2 without its directory finds nothing.
    SR_RETURN_IF_ERROR(CheckIntactOn(lease));
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
  SR_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> found, FindObjects(ck, lease.handle(), match));
  const std::string prefix = UsageCounterPrefix(id);
  const std::string mine = UsageCounterLabel(id, config_.node_id);
  // A node's counter is replaced, never edited (CKA_VALUE of a data object is read-only), so a
  // crash between creating the new object and destroying the old leaves two: take the larger.
  std::map<std::string, std::uint64_t> per_node;
  if (own != nullptr) own->clear();
  for (CK_OBJECT_HANDLE h : found) {
    SR_ASSIGN_OR_RETURN(std::string label, GetString(ck, lease.handle(), h, CKA_LABEL));
    if (label.rfind(prefix, 0) != 0) continue;
    SR_ASSIGN_OR_RETURN(std::vector<std::uint8_t> value,
                        GetBytes(ck, lease.handle(), h, CKA_VALUE));
    std::uint64_t& count = per_node[label];
    count = std::max(count, ReadCounter(value));
    if (label == mine && own != nullptr) own->push_back(h);
  }
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
  if (const CkResult recorded = ck.CreateObject(lease.handle(), counter, created); !recorded.ok()) {
    return recorded.error("recording root-key usage on the token");
  }
  // The old counters are smaller; one left behind by a failure here is harmless (UsageTotal).
  for (CK_OBJECT_HANDLE old : own) (void)ck.DestroyObject(lease.handle(), old);
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
  SR_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> found, FindObjects(ck, s, match));
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
      SR_RETURN_IF_ERROR(CheckIntactOn(lease));
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
        if (const CkResult generated = ck.GenerateKey(lease.handle(), mechanism, key_template, key);
            !generated.ok()) {
          return generated.error("C_GenerateKey (root key)");
        }
        SR_ASSIGN_OR_RETURN(std::vector<RootKeyInfo> after, ListRootKeysOn(lease, org));
        auto same = std::count_if(after.begin(), after.end(),
                                  [&](const RootKeyInfo& k) { return k.id == id; });
        if (same != 1) {
          // Another process created the same version at the same moment; keep theirs.
          (void)ck.DestroyObject(lease.handle(), key);
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

Result<CK_OBJECT_HANDLE> Token::IdentityHandle(SessionLease& lease, const std::string& key_name,
                                               CK_OBJECT_CLASS half) {
  std::lock_guard lock(handles_mutex_);
  if (handles_generation_ != lease.generation()) {
    handles_.clear();
    identity_handles_.clear();
    keeper_ = CK_INVALID_HANDLE;
    handles_generation_ = lease.generation();
  }
  const auto cache_key = std::make_pair(key_name, half);
  if (auto it = identity_handles_.find(cache_key); it != identity_handles_.end()) {
    return it->second;
  }
  AttributeTemplate match;
  match.Ulong(CKA_CLASS, half).Bool(CKA_TOKEN, true).String(CKA_ID, IdentityObjectId(key_name));
  SR_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> found,
                      FindObjects(Cryptoki(lease.fn()), lease.handle(), match, 2));
  if (found.empty()) SR_RETURN_IF_ERROR(CheckIntactOn(lease));  // as for root keys
  if (found.size() != 1) {
    return Error(found.empty() ? ErrorCode::kNotFound : ErrorCode::kInternal,
                 "token '" + name() + "' holds " + std::to_string(found.size()) +
                     " objects for identity key " + key_name +
                     (found.empty() ? " (kmsctl creates it)" : ""));
  }
  identity_handles_[cache_key] = found.front();
  RememberIdentity(key_name);
  return found.front();
}

Result<RsaPublicKey> Token::CreateIdentityKey(const std::string& key_name, unsigned modulus_bits) {
  SR_RETURN_IF_ERROR(ValidateOrgName(key_name));
  if (modulus_bits < 2048 || modulus_bits > 8192 || modulus_bits % 1024 != 0) {
    return Error(ErrorCode::kInvalidArgument,
                 "RSA identity keys are 2048 to 8192 bits, "
                 "in steps of 1024");
  }
  SR_RETURN_IF_ERROR(CheckIdentityMechanisms());
  Result<CK_OBJECT_HANDLE> created =
      Run<CK_OBJECT_HANDLE>([&](SessionLease& lease) -> Result<CK_OBJECT_HANDLE> {
        Result<CK_OBJECT_HANDLE> existing = IdentityHandle(lease, key_name, CKO_PRIVATE_KEY);
        if (existing.ok()) {
          return Error(ErrorCode::kAlreadyExists,
                       "token '" + name() + "' already holds identity key " + key_name);
        }
        if (existing.error().code() != ErrorCode::kNotFound) return existing.error();
        const std::string object_id = IdentityObjectId(key_name);
        const std::string label = IdentityLabel(key_name);
        const std::uint8_t exponent[] = {0x01, 0x00, 0x01};
        AttributeTemplate public_template;
        public_template.Bool(CKA_TOKEN, true)
            .Bool(CKA_PRIVATE, false)
            .Bool(CKA_ENCRYPT, true)
            .Bool(CKA_VERIFY, true)
            .Bool(CKA_WRAP, false)
            .Ulong(CKA_MODULUS_BITS, modulus_bits)
            .Bytes(CKA_PUBLIC_EXPONENT, exponent)
            .String(CKA_LABEL, label)
            .String(CKA_ID, object_id);
        AttributeTemplate private_template;
        private_template.Bool(CKA_TOKEN, true)
            .Bool(CKA_PRIVATE, true)
            .Bool(CKA_SENSITIVE, true)
            .Bool(CKA_EXTRACTABLE, false)
            .Bool(CKA_DECRYPT, true)
            .Bool(CKA_SIGN, true)
            .Bool(CKA_UNWRAP, false)
            .Bool(CKA_DERIVE, false)
            .String(CKA_LABEL, label)
            .String(CKA_ID, object_id);
        CK_MECHANISM mechanism{CKM_RSA_PKCS_KEY_PAIR_GEN, nullptr, 0};
        CK_OBJECT_HANDLE public_key = CK_INVALID_HANDLE, private_key = CK_INVALID_HANDLE;
        const CkResult generated = Cryptoki(lease.fn())
                                       .GenerateKeyPair(lease.handle(), mechanism, public_template,
                                                        private_template, public_key, private_key);
        if (!generated.ok()) return generated.error("C_GenerateKeyPair (identity key)");
        return private_key;
      });
  if (!created.ok()) return created.error();
  return IdentityPublicKey(key_name);
}

Result<RsaPublicKey> Token::IdentityPublicKey(const std::string& key_name) {
  SR_RETURN_IF_ERROR(ValidateOrgName(key_name));
  return Run<RsaPublicKey>([&](SessionLease& lease) -> Result<RsaPublicKey> {
    SR_ASSIGN_OR_RETURN(CK_OBJECT_HANDLE handle, IdentityHandle(lease, key_name, CKO_PUBLIC_KEY));
    const Cryptoki ck(lease.fn());
    RsaPublicKey key;
    SR_ASSIGN_OR_RETURN(key.modulus, GetBytes(ck, lease.handle(), handle, CKA_MODULUS));
    SR_ASSIGN_OR_RETURN(key.public_exponent,
                        GetBytes(ck, lease.handle(), handle, CKA_PUBLIC_EXPONENT));
    while (key.modulus.size() > 1 && key.modulus.front() == 0)
      key.modulus.erase(key.modulus.begin());
    return key;
  });
}

Result<SecretBytes> Token::DecryptRsaOaep(const std::string& key_name,
                                          std::span<const std::uint8_t> ciphertext) {
  SR_RETURN_IF_ERROR(ValidateOrgName(key_name));
  if (ciphertext.empty() || ciphertext.size() > 1024) {
    return Error(ErrorCode::kInvalidArgument, "RSA-OAEP ciphertext has an impossible length");
  }
  return Run<SecretBytes>([&](SessionLease& lease) -> Result<SecretBytes> {
    SR_ASSIGN_OR_RETURN(CK_OBJECT_HANDLE handle, IdentityHandle(lease, key_name, CKO_PRIVATE_KEY));
    // An OAEP ciphertext is exactly as long as the modulus. Check before the token sees it:
    // SoftHSM2 2.6.1 loses the private key object, for the rest of the process, after a decrypt
    // of the wrong length.
    Cryptoki ck(lease.fn());
    SR_ASSIGN_OR_RETURN(std::vector<std::uint8_t> modulus,
                        GetBytes(ck, lease.handle(), handle, CKA_MODULUS));
    if (ciphertext.size() != modulus.size()) {
      return Error(ErrorCode::kInvalidArgument, "the message could not be decrypted");
    }
    CK_RSA_PKCS_OAEP_PARAMS params{CKM_SHA_1, CKG_MGF1_SHA1, CKZ_DATA_SPECIFIED, nullptr, 0};
    CK_MECHANISM mechanism{CKM_RSA_PKCS_OAEP, &params, sizeof params};
    if (const CkResult init = ck.DecryptInit(lease.handle(), mechanism, handle); !init.ok()) {
      return init.error("C_DecryptInit (RSA-OAEP)");
    }
    SecretBytes plain(ciphertext.size());
    CK_ULONG plain_len = 0;
    const CkResult decrypted =
        ck.Decrypt(lease.handle(), ciphertext, plain.mutable_view(), plain_len);
    if (!decrypted.ok()) {
      // A dead session or token is the layer's to repair; anything else is the message's fault,
      // reported without saying why (no padding oracle).
      if (ClassifyCkr(decrypted.rv()) != CkFailure::kOperation) {
        return decrypted.error("C_Decrypt (RSA-OAEP)");
      }
      CK_SESSION_INFO info;
      if (const CkResult session = ck.GetSessionInfo(lease.handle(), info); !session.ok()) {
        return session.error("C_GetSessionInfo after C_Decrypt");
      }
      return Error(ErrorCode::kInvalidArgument, "the message could not be decrypted");
    }
    plain.Truncate(plain_len);
    return plain;
  });
}

Result<std::vector<std::uint8_t>> Token::SignPs256(const std::string& key_name,
                                                   std::span<const std::uint8_t> message) {
  SR_RETURN_IF_ERROR(ValidateOrgName(key_name));
  return Run<std::vector<std::uint8_t>>(
      [&](SessionLease& lease) -> Result<std::vector<std::uint8_t>> {
        SR_ASSIGN_OR_RETURN(CK_OBJECT_HANDLE handle,
                            IdentityHandle(lease, key_name, CKO_PRIVATE_KEY));
        CK_RSA_PKCS_PSS_PARAMS params{CKM_SHA256, CKG_MGF1_SHA256, 32};
        CK_MECHANISM mechanism{CKM_SHA256_RSA_PKCS_PSS, &params, sizeof params};
        Cryptoki ck(lease.fn());
        if (const CkResult init = ck.SignInit(lease.handle(), mechanism, handle); !init.ok()) {
          return init.error("C_SignInit (PS256)");
        }
        std::vector<std::uint8_t> signature(1024);
        CK_ULONG len = 0;
        if (const CkResult sign = ck.Sign(lease.handle(), message, signature, len); !sign.ok()) {
          return sign.error("C_Sign (PS256)");
        }
        signature.resize(len);
        return signature;
      });
}

void Token::MarkHealthy(std::uint64_t failures_at_start) {
  if (!degraded_.load(std::memory_order_relaxed)) return;
  std::lock_guard lock(health_mutex_);
  if (failures_.load(std::memory_order_relaxed) != failures_at_start) return;
  state_ = TokenState::kReady;
  detail_.clear();
  repair_backoff_ = std::chrono::milliseconds(0);
  next_repair_ = {};
  degraded_.store(false);
}

void Token::MarkUnavailable(const Error& error) {
  std::lock_guard lock(health_mutex_);
  failures_.fetch_add(1, std::memory_order_acq_rel);
  if (state_ != TokenState::kLoginRefused) state_ = TokenState::kUnavailable;
  detail_ = error.message();
  if (!degraded_.load()) {
    // Calls that fail now do not postpone the repair: only a failed repair does.
    repair_backoff_ = kFirstBackoff;
    next_repair_ = std::chrono::steady_clock::now() + repair_backoff_;
    degraded_.store(true);
  }
}

void Token::MarkRepairFailed(const Error& error) {
  std::lock_guard lock(health_mutex_);
  if (!degraded_.load()) return;
  detail_ = error.message();
  repair_backoff_ = std::min(kMaxBackoff, std::max(kFirstBackoff, repair_backoff_ * 2));
  next_repair_ = std::chrono::steady_clock::now() + repair_backoff_;
}

bool Token::InBackoff() const {
  return degraded_.load(std::memory_order_acquire) || refused_.load(std::memory_order_acquire);
}

bool Token::LoginRefused() const { return refused_.load(std::memory_order_acquire); }

Error Token::Refused() const {
  std::lock_guard lock(login_mutex_);
  return Error(ErrorCode::kUnavailable,
               "token '" + name() + "' is refused: " + login_refused_->message(),
               login_refused_->native_code());
}

std::optional<std::chrono::steady_clock::time_point> Token::NextRepair() const {
  // A refused token is never repaired: logging in again with the same PIN could lock it.
  if (refused_.load(std::memory_order_acquire)) return std::nullopt;
  if (!degraded_.load(std::memory_order_acquire)) return std::nullopt;
  std::lock_guard lock(health_mutex_);
  return next_repair_;
}

Error Token::Unavailable() const {
  std::lock_guard lock(health_mutex_);
  return UnavailableError(name(), detail_);
}

Status Token::Admit() {
  if (LoginRefused()) return Refused();
  if (!degraded_.load(std::memory_order_acquire)) return OkStatus();
  std::optional<std::chrono::steady_clock::time_point> due = NextRepair();
  if (!due) return OkStatus();  // repaired meanwhile
  if (std::chrono::steady_clock::now() < *due) return Unavailable();
  return Repair(module_->generation());
}

Status Token::Repair(std::uint64_t module_generation) {
  std::unique_lock repairing(repair_mutex_, std::try_to_lock);
  if (!repairing.owns_lock()) return Unavailable();  // another caller repairs it right now
  std::optional<std::chrono::steady_clock::time_point> due = NextRepair();
  if (!due) return OkStatus();
  if (std::chrono::steady_clock::now() < *due) return Unavailable();
  {
    std::lock_guard lock(login_mutex_);
    if (login_refused_) return *login_refused_;
  }
  repairs_.fetch_add(1, std::memory_order_relaxed);
  // The strongest repair there is: initialize the module again, find the token by its URI (its
  // slot may have changed), log in, and check that it holds what it held. A token never opened
  // (missing or failing at start) is opened now: its mechanisms checked, what it holds learnt.
  Status repaired = module_->Reset(module_generation);
  if (repaired.ok()) {
    pool_.DropStale();
    MarkTokenGone();
    const bool opening = !opened();
    Result<bool> checked = RunUnchecked<bool>([&](SessionLease& lease) -> Result<bool> {
      if (opening) {
        SR_RETURN_IF_ERROR(CheckMechanisms());
        SR_RETURN_IF_ERROR(RememberObjects(lease));
      }
      SR_RETURN_IF_ERROR(CheckIntactOn(lease));
      return true;
    });
    if (checked.ok()) {
      opened_.store(true, std::memory_order_release);
      // Newer news than any failure of a call that began before the repair.
      std::lock_guard lock(health_mutex_);
      state_ = TokenState::kReady;
      detail_.clear();
      repair_backoff_ = std::chrono::milliseconds(0);
      next_repair_ = {};
      degraded_.store(false);
      return OkStatus();
    }
    repaired = checked.error();
  }
  MarkRepairFailed(repaired.error());
  return UnavailableError(name(), repaired.error().message());
}

void Token::Probe(std::uint64_t module_generation) {
  if (degraded_.load(std::memory_order_acquire)) {
    std::optional<std::chrono::steady_clock::time_point> due = NextRepair();
    if (due && std::chrono::steady_clock::now() >= *due) (void)Repair(module_generation);
    return;
  }
  {
    std::lock_guard lock(login_mutex_);
    if (login_refused_) return;
  }
  Result<bool> checked = RunUnchecked<bool>([&](SessionLease& lease) -> Result<bool> {
    SR_RETURN_IF_ERROR(CheckIntactOn(lease));
    return true;
  });
  // A fault that the call's own repair did not cure is marked by RunUnchecked; one it reported
  // without a mark still is the token's. Busy sessions are not.
  if (!checked.ok() && IsTokenFault(checked.error()) && !degraded_.load()) {
    MarkUnavailable(checked.error());
  }
}

Status Token::CheckIntact() {
  Result<bool> checked = Run<bool>([&](SessionLease& lease) -> Result<bool> {
    SR_RETURN_IF_ERROR(CheckIntactOn(lease));
    return true;
  });
  if (!checked.ok()) return checked.error();
  return OkStatus();
}

Status Token::CheckIntactOn(SessionLease& lease) {
  Cryptoki ck(lease.fn());
  // Every failure here is the token's: the check asks only for what the token must have.
  auto fault = [&](std::uint64_t native, const std::string& what) {
    const CK_RV rv = static_cast<CK_RV>(native);
    const bool classified = rv != CKR_OK && ClassifyCkr(rv) != CkFailure::kOperation;
    return Error(ErrorCode::kUnavailable, "token '" + name() + "' " + what,
                 classified ? rv : kCkrTokenFault);
  };
  CK_TOKEN_INFO info{};
  if (const CkResult answered = ck.GetTokenInfo(slot(), info); !answered.ok()) {
    return fault(answered.rv(), "does not answer C_GetTokenInfo (" + CkrName(answered.rv()) + ")");
  }
  std::map<std::string, std::uint32_t> roots;
  std::set<std::string> identities;
  {
    std::lock_guard lock(remembered_mutex_);
    roots = remembered_roots_;
    identities = remembered_identities_;
  }
  auto present = [&](CK_OBJECT_CLASS cls, const std::string& object_id, CK_KEY_TYPE type,
                     const std::string& what) -> Status {
    AttributeTemplate match;
    match.Ulong(CKA_CLASS, cls).Bool(CKA_TOKEN, true).String(CKA_ID, object_id);
    Result<std::vector<CK_OBJECT_HANDLE>> found = FindObjects(ck, lease.handle(), match, 1);
    if (!found.ok()) {
      return fault(found.error().native_code(),
                   "cannot look up " + what + ": " + found.error().message());
    }
    if (found->empty()) return fault(CKR_OK, "no longer holds " + what);
    Result<CK_ULONG> actual = GetUlong(ck, lease.handle(), found->front(), CKA_KEY_TYPE);
    if (!actual.ok()) {
      const CK_RV rv = static_cast<CK_RV>(actual.error().native_code());
      return fault(rv, "cannot read " + what + " (" + CkrName(rv) + ")");
    }
    if (*actual != type) return fault(CKR_OK, "holds " + what + " as another type of key");
    return OkStatus();
  };
  for (const auto& [org, version] : roots) {
    SR_RETURN_IF_ERROR(present(CKO_SECRET_KEY, RootKeyObjectId({org, version}), CKK_AES,
                               "root key " + org + " v" + std::to_string(version)));
  }
  for (const std::string& key_name : identities) {
    SR_RETURN_IF_ERROR(
        present(CKO_PRIVATE_KEY, IdentityObjectId(key_name), CKK_RSA, "identity key " + key_name));
  }
  return OkStatus();
}

Status Token::RememberObjects(SessionLease& lease) {
  Cryptoki ck(lease.fn());
  const std::string identity_prefix = kIdentityIdPrefix;
  for (const CK_OBJECT_CLASS cls : {CKO_SECRET_KEY, CKO_PRIVATE_KEY}) {
    AttributeTemplate match;
    match.Ulong(CKA_CLASS, cls).Bool(CKA_TOKEN, true);
    SR_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> found,
                        FindObjects(ck, lease.handle(), match));
    for (CK_OBJECT_HANDLE h : found) {
      Result<std::string> object_id = GetString(ck, lease.handle(), h, CKA_ID);
      if (!object_id.ok()) continue;  // not ours: other applications' keys may lack CKA_ID
      if (cls == CKO_SECRET_KEY) {
        if (std::optional<RootKeyId> id = ParseRootKeyObjectId(*object_id)) RememberRoot(*id);
      } else if (object_id->rfind(identity_prefix, 0) == 0) {
        RememberIdentity(object_id->substr(identity_prefix.size()));
      }
    }
  }
  return OkStatus();
}

void Token::RememberRoot(const RootKeyId& id) {
  std::lock_guard lock(remembered_mutex_);
  std::uint32_t& newest = remembered_roots_[id.org];
  newest = std::max(newest, id.version);
}

void Token::RememberIdentity(const std::string& key_name) {
  std::lock_guard lock(remembered_mutex_);
  remembered_identities_.insert(key_name);
}

TokenHealth Token::Health() const {
  TokenHealth health;
  health.name = config_.name;
  {
    std::lock_guard lock(health_mutex_);
    health.state = state_;
    health.detail = detail_;
  }
  {
    std::lock_guard lock(login_mutex_);
    if (login_refused_) {
      health.state = TokenState::kLoginRefused;
      health.detail = login_refused_->message();
    }
  }
  health.module_resets = module_->resets();
  health.login_attempts = login_attempts_.load();
  health.repairs = repairs_.load(std::memory_order_relaxed);
  health.pool = pool_.stats();
  return health;
}

}  // namespace strongroom::hsm
