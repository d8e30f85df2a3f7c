#include "state_cache.h"

namespace strongroom::core::internal {
namespace {

constexpr std::size_t kCacheWeight = 500000;  // participants + keys held by the state cache

}  // namespace

StatePtr StateCache::Find(const std::string& id) const {
  std::lock_guard lock(mutex_);
  auto it = map_.find(id);
  return it == map_.end() ? nullptr : it->second;
}

std::uint64_t StateCache::epoch() const {
  std::lock_guard lock(mutex_);
  return epoch_;
}

void StateCache::FillIfUnchanged(const std::string& id, StatePtr state, std::uint64_t epoch) {
  std::lock_guard lock(mutex_);
  if (epoch != epoch_ || map_.count(id) != 0) return;
  InsertLocked(id, std::move(state));
}

void StateCache::Publish(const std::string& id, StatePtr state, bool changed) {
  std::lock_guard lock(mutex_);
  if (changed) {
    ++epoch_;
  } else if (map_.count(id) != 0) {
    return;
  }
  InsertLocked(id, std::move(state));
}

void StateCache::Forget(const std::string& id) {
  std::lock_guard lock(mutex_);
  ++epoch_;
  if (auto it = map_.find(id); it != map_.end()) {
    weight_ -= Weight(*it->second);
    map_.erase(it);
  }
}

std::size_t StateCache::Weight(const ConversationState& state) {
  return 1 + state.participants->size() + state.declared_keys->size();
}

void StateCache::InsertLocked(const std::string& id, StatePtr state) {
  if (auto it = map_.find(id); it != map_.end()) {
    weight_ -= Weight(*it->second);
    map_.erase(it);
  }
  weight_ += Weight(*state);
  // Any entry may go: the database has them all. The new one stays.
  for (auto it = map_.begin(); weight_ > kCacheWeight && it != map_.end();) {
    weight_ -= Weight(*it->second);
    it = map_.erase(it);
  }
  map_.emplace(id, std::move(state));
}

}  // namespace strongroom::core::internal
