#include "strongroom/kms/key_cache.h"

#include <algorithm>

namespace strongroom::kms {

KeyCache::KeyCache(std::size_t max_entries, std::chrono::milliseconds max_age, Clock clock)
    : capacity_(max_entries), max_age_(max_age), clock_(std::move(clock)) {
  // Never more shards than entries, so every shard holds at least one and the sum is exact.
  const std::size_t shards = std::min(max_entries, kKeyCacheShards);
  for (std::size_t i = 0; i < shards; ++i) {
    auto shard = std::make_unique<Shard>();
    shard->capacity = max_entries / shards + (i < max_entries % shards ? 1 : 0);
    shards_.push_back(std::move(shard));
  }
}

KeyCache::~KeyCache() = default;  // the entries' SecretBytes zeroize themselves

std::chrono::steady_clock::time_point KeyCache::Now() const {
  return clock_ ? clock_() : std::chrono::steady_clock::now();
}

KeyCache::Shard& KeyCache::ShardOf(const std::string& uri) {
  return *shards_[std::hash<std::string>{}(uri) % shards_.size()];
}

std::optional<SecretBytes> KeyCache::Get(const std::string& uri) {
  if (shards_.empty()) {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return std::nullopt;
  }
  const auto now = Now();
  Shard& shard = ShardOf(uri);
  std::lock_guard lock(shard.mutex);
  auto it = shard.index.find(uri);
  if (it == shard.index.end()) {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return std::nullopt;
  }
  if (now - it->second->put_at >= max_age_) {
    shard.lru.erase(it->second);
    shard.index.erase(it);
    expirations_.fetch_add(1, std::memory_order_relaxed);
    misses_.fetch_add(1, std::memory_order_relaxed);
    return std::nullopt;
  }
  shard.lru.splice(shard.lru.begin(), shard.lru, it->second);
  hits_.fetch_add(1, std::memory_order_relaxed);
  return SecretBytes(it->second->key.view());
}

void KeyCache::Put(const std::string& uri, std::span<const std::uint8_t> key) {
  if (shards_.empty() || key.size() != kCachedKeySize) return;
  const auto now = Now();
  Shard& shard = ShardOf(uri);
  std::lock_guard lock(shard.mutex);
  if (auto it = shard.index.find(uri); it != shard.index.end()) {
    it->second->key = SecretBytes(key);  // the old value is zeroized by the move assignment
    it->second->put_at = now;
    shard.lru.splice(shard.lru.begin(), shard.lru, it->second);
    return;
  }
  if (shard.lru.size() >= shard.capacity) {
    shard.index.erase(shard.lru.back().uri);
    shard.lru.pop_back();
    evictions_.fetch_add(1, std::memory_order_relaxed);
  }
  shard.lru.push_front(Entry{uri, SecretBytes(key), now});
  shard.index.emplace(uri, shard.lru.begin());
}

void KeyCache::Erase(const std::string& uri) {
  if (shards_.empty()) return;
  Shard& shard = ShardOf(uri);
  std::lock_guard lock(shard.mutex);
  if (auto it = shard.index.find(uri); it != shard.index.end()) {
    shard.lru.erase(it->second);
    shard.index.erase(it);
  }
}

void KeyCache::Clear() {
  for (auto& shard : shards_) {
    std::lock_guard lock(shard->mutex);
    shard->index.clear();
    shard->lru.clear();
  }
}

KeyCache::Stats KeyCache::stats() const {
  Stats out;
  out.hits = hits_.load(std::memory_order_relaxed);
  out.misses = misses_.load(std::memory_order_relaxed);
  out.evictions = evictions_.load(std::memory_order_relaxed);
  out.expirations = expirations_.load(std::memory_order_relaxed);
  out.capacity = capacity_;
  for (const auto& shard : shards_) {
    std::lock_guard lock(shard->mutex);
    out.entries += shard->lru.size();
  }
  return out;
}

}  // namespace strongroom::kms
