#include "strongroom/hsm/session_pool.h"

#include <algorithm>
#include <utility>

#include "cryptoki.h"
#include "strongroom/hsm/ck_result.h"

namespace strongroom::hsm {

SessionLease::SessionLease(SessionPool* pool, CK_SESSION_HANDLE handle, std::uint64_t generation,
                           std::shared_lock<std::shared_mutex> guard)
    : pool_(pool),
      fn_(pool->module_->fn()),
      handle_(handle),
      generation_(generation),
      guard_(std::move(guard)) {}

SessionLease::SessionLease(SessionLease&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)),
      fn_(other.fn_),
      handle_(other.handle_),
      generation_(other.generation_),
      broken_(other.broken_),
      guard_(std::move(other.guard_)) {}

SessionLease::~SessionLease() {
  if (pool_ == nullptr) return;
  // Close a broken session while still holding the module's use guard, then give back the slot.
  guard_.unlock();
  pool_->Release(handle_, generation_, broken_);
}

SessionPool::SessionPool(std::shared_ptr<Module> module, CK_SLOT_ID slot, std::size_t capacity,
                         std::string token_name, SlotFinder find_slot)
    : module_(std::move(module)),
      slot_(slot),
      slot_generation_(module_->generation()),
      find_slot_(std::move(find_slot)),
      capacity_(capacity == 0 ? 1 : capacity),
      token_name_(std::move(token_name)) {
  counters_.capacity = capacity_;
}

SessionPool::~SessionPool() {
  std::lock_guard lock(mutex_);
  const std::uint64_t generation = module_->generation();
  for (const Idle& s : idle_) {
    if (s.generation == generation) (void)internal::Cryptoki(module_->fn()).CloseSession(s.handle);
  }
}

Result<SessionLease> SessionPool::Acquire(std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    std::optional<Idle> session;
    {
      std::unique_lock lock(mutex_);
      bool open_new = false;
      // First come, first served: an idle session goes to a newcomer only when nobody waits.
      if (waiters_.empty()) {
        while (!idle_.empty() && idle_.front().generation != module_->generation()) {
          idle_.pop_front();  // of a finalized module generation: the handle means nothing now
          ++counters_.replaced;
          HandOver(std::nullopt);
        }
        if (!idle_.empty()) {
          session = idle_.front();
          idle_.pop_front();
        } else if (open_ < capacity_) {
          ++open_;
          open_new = true;
        }
      }
      if (!session && !open_new) {
        ++counters_.waited;
        const auto wait_start = std::chrono::steady_clock::now();
        Waiter me;
        waiters_.push_back(&me);
        const bool served =
            me.cv.wait_until(lock, deadline, [&] { return me.session || me.may_open; });
        // Every wait counts towards wait_micros, the ones that gave up too: wait_micros / waited
        // is then the mean wait, and time lost to timeouts is not hidden.
        counters_.wait_micros +=
            static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                           std::chrono::steady_clock::now() - wait_start)
                                           .count());
        if (!served) {
          waiters_.erase(std::find(waiters_.begin(), waiters_.end(), &me));
          ++counters_.timed_out;
          return Error(ErrorCode::kUnavailable, "no PKCS#11 session free on token " + token_name_ +
                                                    " before the deadline (" +
                                                    std::to_string(capacity_) +
                                                    " sessions, all busy)");
        }
        session = me.session;
        open_new = !session;
      }
      ++counters_.acquired;
      if (open_new) {
        lock.unlock();
        return Open();
      }
    }
    auto guard = module_->UseGuard();
    if (module_->generation() == session->generation) {
      return SessionLease(this, session->handle, session->generation, std::move(guard));
    }
    guard.unlock();  // the module was reset since the session was opened: try again
    std::lock_guard lock(mutex_);
    ++counters_.replaced;
    HandOver(std::nullopt);
  }
}

Result<SessionLease> SessionPool::Open() {
  auto guard = module_->UseGuard();
  const std::uint64_t generation = module_->generation();
  auto give_back = [&] {
    guard.unlock();
    std::lock_guard lock(mutex_);
    HandOver(std::nullopt);  // the slot this caller reserved goes to the next waiter
  };
  if (find_slot_ && slot_generation() != generation) {
    if (Status found = find_slot_(generation); !found.ok()) {
      give_back();
      return found.error();
    }
  }
  CK_SESSION_HANDLE handle = CK_INVALID_HANDLE;
  if (const CkResult opened = internal::Cryptoki(module_->fn()).OpenSession(slot(), handle);
      !opened.ok()) {
    give_back();
    return opened.error("C_OpenSession on token " + token_name_);
  }
  return SessionLease(this, handle, generation, std::move(guard));
}

void SessionPool::HandOver(std::optional<Idle> session) {
  if (!waiters_.empty()) {
    Waiter* next = waiters_.front();
    waiters_.pop_front();
    if (session) {
      next->session = session;
    } else {
      next->may_open = true;  // the freed slot passes on: the waiter opens a session in it
    }
    next->cv.notify_one();
  } else if (session) {
    idle_.push_back(*session);
  } else {
    --open_;
  }
}

void SessionPool::Release(CK_SESSION_HANDLE handle, std::uint64_t generation, bool broken) {
  if (broken) {
    // The generation is read under the guard: a reset meanwhile may have made the handle name a
    // session of the new generation.
    auto guard = module_->UseGuard();
    if (generation == module_->generation()) {
      (void)internal::Cryptoki(module_->fn()).CloseSession(handle);
    }
  }
  const bool current = generation == module_->generation();
  std::lock_guard lock(mutex_);
  if (broken || !current) {
    ++counters_.replaced;
    HandOver(std::nullopt);
  } else {
    HandOver(Idle{handle, generation});
  }
}

void SessionPool::DropStale() {
  std::lock_guard lock(mutex_);
  const std::uint64_t generation = module_->generation();
  std::deque<Idle> stale;
  std::erase_if(idle_, [&](const Idle& s) {
    if (s.generation == generation) return false;
    stale.push_back(s);
    return true;
  });
  for (std::size_t i = 0; i < stale.size(); ++i) {
    ++counters_.replaced;
    HandOver(std::nullopt);
  }
}

CK_SLOT_ID SessionPool::slot() const {
  std::lock_guard lock(mutex_);
  return slot_;
}

std::uint64_t SessionPool::slot_generation() const {
  std::lock_guard lock(mutex_);
  return slot_generation_;
}

void SessionPool::SetSlot(CK_SLOT_ID slot, std::uint64_t generation) {
  std::lock_guard lock(mutex_);
  slot_ = slot;
  slot_generation_ = generation;
}

SessionPoolStats SessionPool::stats() const {
  std::lock_guard lock(mutex_);
  SessionPoolStats out = counters_;
  out.open = open_;
  out.idle = idle_.size();
  return out;
}

}  // namespace strongroom::hsm
