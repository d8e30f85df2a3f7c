// What the files of Token share (token.h says what a Token does; the files, what each holds):
//   token.cc             opening: configuration, URI, slot, mechanisms; logging in
//   token_root_keys.cc   root keys, their handles and session copies, the wrap ledger, wrap/unwrap
//   token_identity.cc    the KMS's RSA identity key: create, public half, RSA-OAEP, PS256
//   token_health.cc      health, back-off and repair, the probe, the check of what the token holds
// and, here, the loop every operation runs in (Run), the names of the identity key's objects and
// the errors they share. Internal to hsm/.
#ifndef STRONGROOM_HSM_SRC_TOKEN_INTERNAL_H_
#define STRONGROOM_HSM_SRC_TOKEN_INTERNAL_H_

#include <chrono>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <type_traits>
#include <utility>

#include "strongroom/common/error.h"
#include "strongroom/hsm/ck_result.h"
#include "strongroom/hsm/token.h"

namespace strongroom::hsm {
namespace internal {

// The identity key's objects: label "strongroom/identity/<name>", CKA_ID "sridentity:<name>".
inline constexpr char kIdentityIdPrefix[] = "sridentity:";
inline std::string IdentityObjectId(const std::string& name) { return kIdentityIdPrefix + name; }
inline std::string IdentityLabel(const std::string& name) { return "strongroom/identity/" + name; }

// What a failure broke (ck_result.h); an error without a native code is the operation's.
inline CkFailure Classify(const Error& error) {
  if (error.native_code() == 0) return CkFailure::kOperation;
  return ClassifyCkr(static_cast<CK_RV>(error.native_code()));
}

// The error, its message naming the token.
inline Error Prefixed(const std::string& token, const Error& error) {
  return Error(error.code(), "token '" + token + "': " + error.message(), error.native_code());
}

}  // namespace internal

template <typename Call>
std::invoke_result_t<Call> Token::SearchingObjects(Call&& call) {
  { std::lock_guard turn(objects_turnstile_); }  // behind a change that waits
  std::shared_lock searching(objects_mutex_);
  return std::forward<Call>(call)();
}

template <typename Call>
std::invoke_result_t<Call> Token::ChangingObjects(Call&& call) {
  std::unique_lock turn(objects_turnstile_);
  std::unique_lock changing(objects_mutex_);
  turn.unlock();
  return std::forward<Call>(call)();
}

// The loop every operation runs in (token.h): on a leased session, repaired and retried once.
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
      const CkFailure failure = internal::Classify(lease.error());
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
      const CkFailure failure = internal::Classify(in.error());
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
    switch (internal::Classify(result.error())) {
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

}  // namespace strongroom::hsm

#endif  // STRONGROOM_HSM_SRC_TOKEN_INTERNAL_H_
