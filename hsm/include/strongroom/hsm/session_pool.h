// A bounded pool of PKCS#11 sessions on one slot.
//
// PKCS#11 allows one operation at a time per session, so a session is exclusive while leased.
// Sessions are opened lazily up to the bound and handed out first-in first-out (so a network HSM
// sees its sessions used evenly). A caller that finds every session leased queues; a returned
// session goes straight to the longest waiter, so a busy caller cannot take it back ahead of
// others and nobody starves. A waiter gives up at its deadline with UNAVAILABLE rather than
// hanging. A session whose call reported it dead is
// dropped on return and replaced by the next Acquire. Sessions from an older module generation
// (see Module::Reset) are discarded without C_CloseSession: their handles may already name a
// newer session. A module initialized again may number its slots anew, so the first session of a
// new generation opens only once the token's slot is found in it (the pool's SlotFinder, called
// under the same use guard as C_OpenSession). Login state belongs to the token, so nothing here
// logs in or out.
//
// Thread-safe.
#ifndef STRONGROOM_HSM_SESSION_POOL_H_
#define STRONGROOM_HSM_SESSION_POOL_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>

#include "strongroom/common/error.h"
#include "strongroom/hsm/module.h"
#include "strongroom/hsm/pkcs11.h"

namespace strongroom::hsm {

class SessionPool;

// One leased session. Returns the session to its pool when destroyed.
class SessionLease {
 public:
  SessionLease(SessionLease&& other) noexcept;
  SessionLease& operator=(SessionLease&&) = delete;
  SessionLease(const SessionLease&) = delete;
  ~SessionLease();

  CK_SESSION_HANDLE handle() const { return handle_; }
  CK_FUNCTION_LIST_PTR fn() const { return fn_; }
  std::uint64_t generation() const { return generation_; }

  // The session must not be reused: it is closed (if still valid) instead of returned.
  void MarkBroken() { broken_ = true; }

 private:
  friend class SessionPool;
  SessionLease(SessionPool* pool, CK_SESSION_HANDLE handle, std::uint64_t generation,
               std::shared_lock<std::shared_mutex> guard);

  SessionPool* pool_;
  CK_FUNCTION_LIST_PTR fn_;
  CK_SESSION_HANDLE handle_;
  std::uint64_t generation_;
  bool broken_ = false;
  std::shared_lock<std::shared_mutex> guard_;
};

struct SessionPoolStats {
  std::size_t capacity = 0;
  std::size_t open = 0;  // sessions that exist (idle + leased)
  std::size_t idle = 0;
  std::uint64_t acquired = 0;
  std::uint64_t waited = 0;       // acquisitions that had to wait for a session
  std::uint64_t timed_out = 0;    // acquisitions that gave up at their deadline
  std::uint64_t replaced = 0;     // sessions dropped as dead or stale
  std::uint64_t wait_micros = 0;  // time spent waiting, by every waiter including timed-out ones
};

class SessionPool {
 public:
  // Finds the token's slot in the module generation given and calls SetSlot; called with the
  // module's use guard held.
  using SlotFinder = std::function<Status(std::uint64_t generation)>;

  // `slot` is the token's slot in the module's current generation. Without a `find_slot`, the slot
  // is kept across resets.
  SessionPool(std::shared_ptr<Module> module, CK_SLOT_ID slot, std::size_t capacity,
              std::string token_name, SlotFinder find_slot = {});
  ~SessionPool();
  SessionPool(const SessionPool&) = delete;
  SessionPool& operator=(const SessionPool&) = delete;

  Result<SessionLease> Acquire(std::chrono::steady_clock::time_point deadline);

  // Forgets every idle session of an older module generation.
  void DropStale();

  SessionPoolStats stats() const;
  CK_SLOT_ID slot() const;
  // The module generation the slot was found in.
  std::uint64_t slot_generation() const;
  // The token was found in `slot` in module generation `generation`; new sessions open there.
  void SetSlot(CK_SLOT_ID slot, std::uint64_t generation);

 private:
  friend class SessionLease;
  struct Idle {
    CK_SESSION_HANDLE handle;
    std::uint64_t generation;
  };
  // A caller queued for a session; lives on its stack while it waits.
  struct Waiter {
    std::condition_variable cv;
    std::optional<Idle> session;  // handed over by the releasing caller
    bool may_open = false;        // a freed slot was handed over instead
  };
  void Release(CK_SESSION_HANDLE handle, std::uint64_t generation, bool broken);
  Result<SessionLease> Open();
  // Gives a returned session (or, with nullopt, a freed slot) to the longest waiter, or back to
  // the pool. Requires mutex_.
  void HandOver(std::optional<Idle> session);

  const std::shared_ptr<Module> module_;
  CK_SLOT_ID slot_;                // guarded by mutex_
  std::uint64_t slot_generation_;  // guarded by mutex_
  const SlotFinder find_slot_;
  const std::size_t capacity_;
  const std::string token_name_;

  mutable std::mutex mutex_;
  std::deque<Idle> idle_;
  std::deque<Waiter*> waiters_;  // first in, first served
  std::size_t open_ = 0;
  SessionPoolStats counters_;
};

}  // namespace strongroom::hsm

#endif  // STRONGROOM_HSM_SESSION_POOL_H_
