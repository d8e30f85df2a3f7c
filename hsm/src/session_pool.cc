#include "strongroom/hsm/session_pool.h"

#include <utility>

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
                         std::string token_name)
    : module_(std::move(module)),
      slot_(slot),
      capacity_(capacity == 0 ? 1 : capacity),
      token_name_(std::move(token_name)) {
  counters_.capacity = capacity_;
}

SessionPool::~SessionPool() {
  std::lock_guard lock(mutex_);
  const std::uint64_t generation = module_->generation();
  for (const Idle& s : idle_) {
    if (s.generation == generation) module_->fn()->C_CloseSession(s.handle);
  }
}

Result<SessionLease> SessionPool::Acquire(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mutex_);
  bool waited = false;
  auto wait_start = std::chrono::steady_clock::now();
  for (;;) {
    while (!idle_.empty()) {
      const std::uint64_t generation = module_->generation();
      Idle s = idle_.front();
      idle_.pop_front();
      if (s.generation != generation) {
        --open_;  // a session of a finalized module generation: its handle means nothing now
        ++counters_.replaced;
        continue;
      }
      ++counters_.acquired;
      if (waited) {
        counters_.wait_micros +=
            static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                           std::chrono::steady_clock::now() - wait_start)
                                           .count());
      }
      lock.unlock();
      auto guard = module_->UseGuard();
      if (module_->generation() == s.generation) {
        return SessionLease(this, s.handle, s.generation, std::move(guard));
      }
      guard.unlock();  // the module was reset between the check and the guard
      lock.lock();
      --open_;
      ++counters_.replaced;
      continue;
    }
    if (open_ < capacity_) {
      ++open_;
      ++counters_.acquired;
      const CK_SLOT_ID slot = slot_;
      lock.unlock();
      auto guard = module_->UseGuard();
      const std::uint64_t open_generation = module_->generation();
      CK_SESSION_HANDLE handle = CK_INVALID_HANDLE;
      CK_RV rv = module_->fn()->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr,
                                              nullptr, &handle);
      if (rv != CKR_OK) {
        guard.unlock();
        std::lock_guard relock(mutex_);
        --open_;
        available_.notify_one();
        return CkError(rv, "C_OpenSession on token " + token_name_);
      }
      return SessionLease(this, handle, open_generation, std::move(guard));
    }
    if (!waited) {
      waited = true;
      ++counters_.waited;
    }
    if (available_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty() &&
        open_ >= capacity_) {
      ++counters_.timed_out;
      return Error(ErrorCode::kUnavailable, "no PKCS#11 session free on token " + token_name_ +
                                                " before the deadline (" +
                                                std::to_string(capacity_) + " sessions, all busy)");
    }
  }
}

void SessionPool::Release(CK_SESSION_HANDLE handle, std::uint64_t generation, bool broken) {
  const bool current = generation == module_->generation();
  if (broken && current) {
    auto guard = module_->UseGuard();
    module_->fn()->C_CloseSession(handle);
  }
  std::lock_guard lock(mutex_);
  if (broken || !current) {
    --open_;
    ++counters_.replaced;
  } else {
    idle_.push_back({handle, generation});
  }
  available_.notify_one();
}

void SessionPool::DropStale() {
  std::lock_guard lock(mutex_);
  const std::uint64_t generation = module_->generation();
  std::deque<Idle> keep;
  for (const Idle& s : idle_) {
    if (s.generation == generation) {
      keep.push_back(s);
    } else {
      --open_;
      ++counters_.replaced;
    }
  }
  idle_.swap(keep);
  available_.notify_all();
}

CK_SLOT_ID SessionPool::slot() const {
  std::lock_guard lock(mutex_);
  return slot_;
}

void SessionPool::SetSlot(CK_SLOT_ID slot) {
  std::lock_guard lock(mutex_);
  slot_ = slot;
}

SessionPoolStats SessionPool::stats() const {
  std::lock_guard lock(mutex_);
  SessionPoolStats out = counters_;
  out.open = open_;
  out.idle = idle_.size();
  return out;
}

}  // namespace strongroom::hsm
