// The client's content keys by URI: bounded (least recently used evicted), zeroized, and aware of
// the KMS's dates.
//
// Keys live in one SecretBytes arena of capacity × 32 bytes; a slot is overwritten with zeros the
// moment its key is evicted, erased or cleared (not when memory is later reused), and the arena is
// zeroized when the cache is destroyed. Metadata (URI, resource, dates) is not secret.
//
// Dates: a bound key past its stop-encrypting date (less `encrypt_margin`, so content encrypted
// just before the date is not refused by a clock a little ahead) is refused for encryption
// (FAILED_PRECONDITION: rotate the conversation to a new key) but still returned for decryption:
// everything encrypted under it stays readable. An unbound key is for neither here: unbound keys
// wait in the KeyPool until they are bound.
//
// Thread-safe.
#ifndef STRONGROOM_CLIENT_KEY_CACHE_H_
#define STRONGROOM_CLIENT_KEY_CACHE_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "strongroom/client/kms_objects.h"
#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"

namespace strongroom::client {

struct KeyCacheOptions {
  std::size_t capacity = 1024;  // keys; at least 1
  std::chrono::milliseconds encrypt_margin{std::chrono::seconds(60)};
  std::function<std::int64_t()> now_ms = {};  // default: the system clock
};

class KeyCache {
 public:
  explicit KeyCache(KeyCacheOptions options = {});
  ~KeyCache();
  KeyCache(const KeyCache&) = delete;
  KeyCache& operator=(const KeyCache&) = delete;

  // Stores a bound key (or refreshes its dates); INVALID_ARGUMENT for an unbound key or one that
  // is not 32 bytes. Evicts the least recently used key when full.
  Status Put(const KmsKey& key);

  // For decryption: the key whatever its dates, or nullopt when it is not cached.
  std::optional<KmsKey> ForDecryption(const std::string& uri);
  // For encryption: NOT_FOUND when not cached, FAILED_PRECONDITION when past its stop-encrypting
  // date (less the margin).
  Result<KmsKey> ForEncryption(const std::string& uri);
  // Whether new content may still be encrypted under a key with this stop-encrypting date.
  bool MayEncrypt(std::int64_t stop_encrypting_ms) const;

  void Erase(const std::string& uri);
  void Clear();
  std::size_t size() const;
  std::size_t capacity() const { return capacity_; }

  // The whole arena, for tests that check evicted keys are gone from memory.
  std::span<const std::uint8_t> ArenaForTesting() const { return arena_.view(); }

 private:
  struct Entry {
    KmsKey meta;  // without the key bytes (they are in the arena)
    std::size_t slot = 0;
    std::list<std::string>::iterator recency;
  };
  KmsKey Materialize(const Entry& entry) const;
  void Drop(std::unordered_map<std::string, Entry>::iterator it);  // zeroizes its slot

  const std::size_t capacity_;
  const std::chrono::milliseconds encrypt_margin_;
  const std::function<std::int64_t()> now_ms_;
  mutable std::mutex mutex_;
  SecretBytes arena_;
  std::vector<std::size_t> free_slots_;
  std::list<std::string> recency_;  // most recent first
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace strongroom::client

#endif  // STRONGROOM_CLIENT_KEY_CACHE_H_
