#include "strongroom/client/key_pool.h"

#include <algorithm>

#include "strongroom/common/rfc3339.h"

namespace strongroom::client {
namespace {

KeyPoolOptions Normalized(KeyPoolOptions options) {
  options.target = std::clamp<std::size_t>(options.target, 1, 100);
  options.low_water = std::min(options.low_water, options.target);
  if (!options.now_ms) options.now_ms = UnixNowMs;
  return options;
}

}  // namespace

KeyPool::KeyPool(Creator create, KeyPoolOptions options)
    : create_(std::move(create)), options_(Normalized(std::move(options))) {
  if (options_.background) thread_ = std::thread([this] { Loop(); });
}

KeyPool::~KeyPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void KeyPool::DropExpired() {
  const std::int64_t usable_until = options_.now_ms() + options_.min_bind_time.count();
  const auto before = keys_.size();
  keys_.erase(std::remove_if(keys_.begin(), keys_.end(),
                             [&](const KmsKey& key) {
                               return key.bind_deadline_ms != 0 &&
                                      key.bind_deadline_ms <= usable_until;
                             }),
              keys_.end());
  stats_.expired += before - keys_.size();
}

Status KeyPool::Refill(std::size_t want, std::optional<KmsKey>* claim) {
  if (!create_) return Error(ErrorCode::kFailedPrecondition, "the key pool has no creator");
  Result<std::vector<KmsKey>> created = create_(want);
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.creates;
  if (!created.ok()) {
    last_error_ = created.error();
    return created.error();
  }
  last_error_.reset();
  for (KmsKey& key : *created) {
    if (key.bound() || key.key.size() != kContentKeyBytes) continue;  // not what was asked
    ++stats_.created;
    keys_.push_back(std::move(key));
  }
  DropExpired();
  // The caller that made the batch takes from it under the same lock, so other takers cannot
  // empty it first and leave that caller with nothing.
  if (claim != nullptr && !keys_.empty()) {
    claim->emplace(std::move(keys_.front()));
    keys_.pop_front();
    ++stats_.taken;
  }
  return OkStatus();
}

Result<KmsKey> KeyPool::Take() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    DropExpired();
    if (!keys_.empty()) {
      KmsKey key = std::move(keys_.front());
      keys_.pop_front();
      ++stats_.taken;
      if (options_.background && keys_.size() < options_.low_water) {
        refill_wanted_ = true;
        wake_.notify_all();
      }
      return key;
    }
  }
  std::optional<KmsKey> claimed;
  SR_RETURN_IF_ERROR(Refill(options_.target, &claimed));
  if (claimed) return std::move(*claimed);
  return Error(ErrorCode::kFailedPrecondition,
               "the KMS made keys that are too close to their bind deadline to use");
}

Status KeyPool::Fill() {
  std::size_t want = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    DropExpired();
    want = options_.target > keys_.size() ? options_.target - keys_.size() : 0;
  }
  return want == 0 ? OkStatus() : Refill(want, nullptr);
}

void KeyPool::Nudge() {
  std::lock_guard<std::mutex> lock(mutex_);
  DropExpired();
  if (options_.background && keys_.size() < options_.low_water) {
    refill_wanted_ = true;
    wake_.notify_all();
  }
}

void KeyPool::Loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || refill_wanted_; });
    if (stopping_) return;
    refill_wanted_ = false;
    DropExpired();
    if (keys_.size() >= options_.low_water) continue;
    const std::size_t want = options_.target - keys_.size();
    lock.unlock();
    (void)Refill(want, nullptr);  // a failure is kept in last_error_; the next Take() tries again
    lock.lock();
  }
}

std::size_t KeyPool::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return keys_.size();
}

KeyPool::Stats KeyPool::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

std::optional<Error> KeyPool::last_error() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return last_error_;
}

}  // namespace strongroom::client
