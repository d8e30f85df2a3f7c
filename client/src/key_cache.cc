#include "strongroom/client/key_cache.h"

#include <openssl/crypto.h>

#include <algorithm>

#include "strongroom/common/rfc3339.h"

namespace strongroom::client {

KeyCache::KeyCache(KeyCacheOptions options)
    : capacity_(std::max<std::size_t>(1, options.capacity)),
      encrypt_margin_(options.encrypt_margin),
      now_ms_(options.now_ms ? std::move(options.now_ms) : UnixNowMs),
      arena_(capacity_ * kContentKeyBytes) {
  free_slots_.reserve(capacity_);
  for (std::size_t slot = capacity_; slot > 0; --slot) free_slots_.push_back(slot - 1);
}

KeyCache::~KeyCache() = default;  // the arena zeroizes itself

Status KeyCache::Put(const KmsKey& key) {
  if (!key.bound()) {
    return Error(ErrorCode::kInvalidArgument, "only bound keys are cached (" + key.uri + ")");
  }
  if (key.key.size() != kContentKeyBytes || key.uri.empty()) {
    return Error(ErrorCode::kInvalidArgument, "a content key is 32 bytes with a URI");
  }
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = entries_.find(key.uri);
  if (found == entries_.end()) {
    if (free_slots_.empty()) Drop(entries_.find(recency_.back()));
    recency_.push_front(key.uri);
    Entry entry;
    entry.slot = free_slots_.back();
    free_slots_.pop_back();
    entry.recency = recency_.begin();
    found = entries_.emplace(key.uri, std::move(entry)).first;
  } else {
    recency_.splice(recency_.begin(), recency_, found->second.recency);
  }
  Entry& entry = found->second;
  entry.meta.uri = key.uri;
  entry.meta.resource_uri = key.resource_uri;
  entry.meta.creator = key.creator;
  entry.meta.created_ms = key.created_ms;
  entry.meta.bound_ms = key.bound_ms;
  entry.meta.bind_deadline_ms = key.bind_deadline_ms;
  entry.meta.stop_encrypting_ms = key.stop_encrypting_ms;
  std::copy(key.key.view().begin(), key.key.view().end(),
            arena_.data() + entry.slot * kContentKeyBytes);
  return OkStatus();
}

KmsKey KeyCache::Materialize(const Entry& entry) const {
  KmsKey key = entry.meta.Copy();
  key.key = SecretBytes(std::span<const std::uint8_t>(arena_.data() + entry.slot * kContentKeyBytes,
                                                      kContentKeyBytes));
  return key;
}

std::optional<KmsKey> KeyCache::ForDecryption(const std::string& uri) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = entries_.find(uri);
  if (found == entries_.end()) return std::nullopt;
  recency_.splice(recency_.begin(), recency_, found->second.recency);
  return Materialize(found->second);
}

bool KeyCache::MayEncrypt(std::int64_t stop_encrypting_ms) const {
  // 0: the KMS gave no date.
  return stop_encrypting_ms == 0 || now_ms_() < stop_encrypting_ms - encrypt_margin_.count();
}

Result<KmsKey> KeyCache::ForEncryption(const std::string& uri) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = entries_.find(uri);
  if (found == entries_.end()) return Error(ErrorCode::kNotFound, "key " + uri + " is not cached");
  recency_.splice(recency_.begin(), recency_, found->second.recency);
  if (!MayEncrypt(found->second.meta.stop_encrypting_ms)) {
    return Error(ErrorCode::kFailedPrecondition,
                 "key " + uri + " is past its stop-encrypting date; rotate to a new key");
  }
  return Materialize(found->second);
}

void KeyCache::Drop(std::unordered_map<std::string, Entry>::iterator it) {
  OPENSSL_cleanse(arena_.data() + it->second.slot * kContentKeyBytes, kContentKeyBytes);
  free_slots_.push_back(it->second.slot);
  recency_.erase(it->second.recency);
  entries_.erase(it);
}

void KeyCache::Erase(const std::string& uri) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = entries_.find(uri);
  if (found != entries_.end()) Drop(found);
}

void KeyCache::Clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  while (!entries_.empty()) Drop(entries_.begin());
}

std::size_t KeyCache::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return entries_.size();
}

}  // namespace strongroom::client
