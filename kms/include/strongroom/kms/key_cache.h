// A bounded in-memory cache of unwrapped 256-bit keys by key URI, so a hot key is not unwrapped
// in the HSM on every retrieval.
//
// Entries live in up to kKeyCacheShards shards, each a mutex-guarded map with its own LRU list,
// chosen by a hash of the URI, so 16 request threads rarely meet on one lock. The bound is exact:
// the shards' capacities add up to max_entries, and a full shard evicts its least recently used
// entry. An entry older than max_age (since it was put) is never returned; it is dropped when
// found. Evicted, expired, replaced and cleared values are zeroized (SecretBytes). Clear() empties
// every shard (root rotation, revocation); Erase() drops one key. max_entries = 0 disables the
// cache: Get always misses and Put keeps nothing.
//
// Only 32-byte keys are cached; Put ignores any other size.
//
// Thread-safe.
#ifndef STRONGROOM_KMS_KEY_CACHE_H_
#define STRONGROOM_KMS_KEY_CACHE_H_

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "strongroom/common/secret_bytes.h"

namespace strongroom::kms {

inline constexpr std::size_t kKeyCacheShards = 16;
inline constexpr std::size_t kCachedKeySize = 32;

class KeyCache {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  struct Stats {
    std::uint64_t hits = 0;
    std::uint64_t misses = 0;       // including expired entries found
    std::uint64_t evictions = 0;    // dropped to make room
    std::uint64_t expirations = 0;  // found older than max_age and dropped
    std::size_t entries = 0;
    std::size_t capacity = 0;
  };

  // `clock` is for tests; the default is std::chrono::steady_clock.
  KeyCache(std::size_t max_entries, std::chrono::milliseconds max_age, Clock clock = {});
  ~KeyCache();
  KeyCache(const KeyCache&) = delete;
  KeyCache& operator=(const KeyCache&) = delete;

  // A copy of the cached key, or nullopt if absent or older than max_age.
  std::optional<SecretBytes> Get(const std::string& uri);
  // Caches (or replaces) the key; its age starts now.
  void Put(const std::string& uri, std::span<const std::uint8_t> key);
  void Erase(const std::string& uri);
  void Clear();

  Stats stats() const;
  bool enabled() const { return !shards_.empty(); }

 private:
  struct Entry {
    std::string uri;
    SecretBytes key;
    std::chrono::steady_clock::time_point put_at;
  };
  struct alignas(64) Shard {
    std::mutex mutex;
    std::size_t capacity = 0;
    std::list<Entry> lru;  // most recently used first
    std::unordered_map<std::string, std::list<Entry>::iterator> index;
  };

  Shard& ShardOf(const std::string& uri);
  std::chrono::steady_clock::time_point Now() const;

  const std::size_t capacity_;
  const std::chrono::milliseconds max_age_;
  const Clock clock_;
  std::vector<std::unique_ptr<Shard>> shards_;

  std::atomic<std::uint64_t> hits_{0};
  std::atomic<std::uint64_t> misses_{0};
  std::atomic<std::uint64_t> evictions_{0};
  std::atomic<std::uint64_t> expirations_{0};
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_KEY_CACHE_H_
