// Small in-memory caches that keep the sealed-retrieval hot path off the database: the records of
// ephemeral channels, of bound keys, and authorization decisions (resource, user) → role.
//
// Values here are metadata, never key material (KeyCache holds unwrapped keys, zeroized). Each
// entry carries the generation it was read under; Invalidate() bumps the generation, so an entry
// read before a change is never served after it. A reader takes the generation *before* its
// database read, so a change that commits during the read makes the entry stale at once. Entries
// also expire after max_age, which bounds staleness when another KMS node shares the database and
// changes it behind this node's back.
//
// Thread-safe: 16 mutex-guarded shards; a full shard forgets an arbitrary entry.
#ifndef STRONGROOM_KMS_HOT_PATH_CACHE_H_
#define STRONGROOM_KMS_HOT_PATH_CACHE_H_

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace strongroom::kms {

template <typename Value>
class HotPathCache {
 public:
  using Clock = std::chrono::steady_clock;

  HotPathCache(std::size_t max_entries, std::chrono::milliseconds max_age)
      : per_shard_(max_entries / kShards), max_age_(max_age) {}

  bool enabled() const { return per_shard_ > 0; }
  std::uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

  std::optional<Value> Get(const std::string& key) {
    if (!enabled()) return std::nullopt;
    Shard& shard = ShardOf(key);
    std::lock_guard lock(shard.mutex);
    auto it = shard.entries.find(key);
    if (it == shard.entries.end()) return std::nullopt;
    if (it->second.generation != generation() || Clock::now() - it->second.at > max_age_) {
      shard.entries.erase(it);
      return std::nullopt;
    }
    return it->second.value;
  }

  // `generation` is what generation() returned before the value was read from the database.
  void Put(const std::string& key, Value value, std::uint64_t generation) {
    if (!enabled() || generation != this->generation()) return;
    Shard& shard = ShardOf(key);
    std::lock_guard lock(shard.mutex);
    if (shard.entries.size() >= per_shard_ && !shard.entries.count(key)) {
      shard.entries.erase(shard.entries.begin());
    }
    shard.entries.insert_or_assign(key, Entry{std::move(value), generation, Clock::now()});
  }

  void Erase(const std::string& key) {
    if (!enabled()) return;
    Shard& shard = ShardOf(key);
    std::lock_guard lock(shard.mutex);
    shard.entries.erase(key);
  }

  // Every entry read before now is stale.
  void Invalidate() { generation_.fetch_add(1, std::memory_order_acq_rel); }

 private:
  static constexpr std::size_t kShards = 16;
  struct Entry {
    Value value;
    std::uint64_t generation;
    Clock::time_point at;
  };
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, Entry> entries;
  };
  Shard& ShardOf(const std::string& key) {
    return shards_[std::hash<std::string>{}(key) % kShards];
  }

  const std::size_t per_shard_;
  const std::chrono::milliseconds max_age_;
  std::atomic<std::uint64_t> generation_{0};
  std::array<Shard, kShards> shards_;
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_HOT_PATH_CACHE_H_
