// Token: health. Marking the token unavailable and ready again, the back-off between repairs, the
// repair itself, the background probe, and the check that the token still holds every object it
// held (CheckIntactOn), with the memory of those objects it checks against.
#include <algorithm>
#include <map>
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
using internal::GetString;
using internal::GetUlong;
using internal::IdentityObjectId;
using internal::kIdentityIdPrefix;

constexpr std::chrono::milliseconds kFirstBackoff{250};
constexpr std::chrono::milliseconds kMaxBackoff{8000};

Error UnavailableError(const std::string& token, const std::string& detail) {
  return Error(ErrorCode::kUnavailable,
               "token '" + token + "' is unavailable (" + detail +
                   "); it is repaired in the background, retry later",
               kCkrTokenFault);
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
    SR_RETURN_IF_ERROR(NoticeNewerRootsOn(lease));
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

Status Token::CheckIntactOn(SessionLease& lease, CheckDepth depth) {
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
    Result<std::vector<CK_OBJECT_HANDLE>> found =
        SearchingObjects([&] { return FindObjects(ck, lease.handle(), match, 1); });
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
  if (depth == CheckDepth::kPresence) return OkStatus();
  // Present is not enough: a key that no longer decrypts what it encrypts fails every request
  // that needs it, and each such failure looks like the message's fault (token.h).
  auto decrypts = [&](const Status& checked) -> Status {
    if (checked.ok()) return checked;
    return fault(checked.error().native_code(), checked.error().message());
  };
  for (const auto& [org, version] : roots) {
    SR_RETURN_IF_ERROR(decrypts(CheckRootDecryptsOn(lease, {org, version})));
  }
  for (const std::string& key_name : identities) {
    SR_RETURN_IF_ERROR(decrypts(CheckIdentityDecryptsOn(lease, key_name)));
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
                        SearchingObjects([&] { return FindObjects(ck, lease.handle(), match); }));
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

Status Token::NoticeNewerRootsOn(SessionLease& lease) {
  std::map<std::string, std::uint32_t> roots;
  {
    std::lock_guard lock(remembered_mutex_);
    roots = remembered_roots_;
  }
  Cryptoki ck(lease.fn());
  for (const auto& [org, newest] : roots) {
    std::uint32_t found_newest = newest;
    for (std::uint32_t next = newest + 1;; ++next) {
      AttributeTemplate match;
      match.Ulong(CKA_CLASS, CKO_SECRET_KEY)
          .Bool(CKA_TOKEN, true)
          .String(CKA_ID, RootKeyObjectId({org, next}));
      SR_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> found, SearchingObjects([&] {
                            return FindObjects(ck, lease.handle(), match, 1);
                          }));
      if (found.empty()) break;
      found_newest = next;
    }
    if (found_newest == newest) continue;
    RememberRoot({org, found_newest});
    std::lock_guard lock(handles_mutex_);
    std::uint32_t& current = current_[org];
    current = std::max(current, found_newest);
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
