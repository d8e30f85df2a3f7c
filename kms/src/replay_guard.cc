#include "strongroom/kms/replay_guard.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <optional>
#include <vector>

#include "strongroom/kms/kms_store.h"

namespace strongroom::kms {
namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

std::optional<ReplayGuard::MessageId> FromBytes(const std::string& bytes) {
  ReplayGuard::MessageId id{};
  if (bytes.size() != id.size()) return std::nullopt;
  std::memcpy(id.data(), bytes.data(), id.size());
  return id;
}

}  // namespace

std::size_t ReplayGuard::IdHash::operator()(const MessageId& id) const {
  // The tag is a MAC: its bytes are as good as any hash of the message.
  std::size_t h;
  std::memcpy(&h, id.data() + id.size() - sizeof(h), sizeof(h));
  return h;
}

namespace {

// One shard per 16,384 ids of the budget, at most 64: the default budget gets 64 locks, a small
// one (tests) a single shard, so the bound stays exact there.
std::size_t ShardCount(std::size_t max_resident) {
  return std::clamp<std::size_t>(max_resident / 16384, 1, 64);
}

}  // namespace

ReplayGuard::ReplayGuard(Database& db, std::size_t max_per_channel, std::size_t max_resident)
    : db_(db),
      max_per_channel_(max_per_channel),
      shard_count_(ShardCount(max_resident)),
      max_resident_per_shard_(max_resident / ShardCount(max_resident)),
      shards_(std::make_unique<Shard[]>(ShardCount(max_resident))) {}

ReplayGuard::Shard& ReplayGuard::ShardOf(const std::string& channel) const {
  return shards_[std::hash<std::string>()(channel) % shard_count_];
}

std::string ReplayGuard::Hex(const MessageId& id) {
  std::string out(2 * id.size(), '0');
  for (std::size_t i = 0; i < id.size(); ++i) {
    out[2 * i] = kHexDigits[id[i] >> 4];
    out[2 * i + 1] = kHexDigits[id[i] & 15];
  }
  return out;
}

std::string ReplayGuard::Bytes(const MessageId& id) {
  return std::string(reinterpret_cast<const char*>(id.data()), id.size());
}

Result<ReplayGuard::Verdict> ReplayGuard::Claim(const EphemeralKeyRecord& record,
                                                const MessageId& id) {
  const std::string& channel = record.uri;
  Shard& shard = ShardOf(channel);
  std::unique_lock lock(shard.mutex);
  auto found = shard.channels.find(channel);
  if (found == shard.channels.end()) {
    // Not in memory: read what the channel executed before (another node, or before a restart).
    lock.unlock();
    std::vector<std::string> stored;
    Status read = db_.WithSession([&](Poco::Data::Session& s) -> Status {
      SR_ASSIGN_OR_RETURN(stored, KmsStore::ExecutedRequestsOf(s, record, MessageId().size()));
      return OkStatus();
    });
    if (!read.ok()) return Error(ErrorCode::kUnavailable, "the KMS database is unavailable");
    lock.lock();
    found = shard.channels.find(channel);
    if (found == shard.channels.end()) {
      shard.lru.push_front(channel);
      found = shard.channels.emplace(channel, ChannelSet{{}, 0, shard.lru.begin()}).first;
    }
    for (const std::string& bytes : stored) {
      if (std::optional<MessageId> known = FromBytes(bytes)) {
        if (found->second.ids.insert(*known).second) ++shard.resident;
      }
    }
  }
  ChannelSet& set = found->second;
  shard.lru.splice(shard.lru.begin(), shard.lru, set.lru);
  Verdict verdict = Verdict::kFirst;
  if (set.ids.contains(id)) {
    verdict = Verdict::kReplayed;
  } else if (set.ids.size() >= max_per_channel_) {
    verdict = Verdict::kExhausted;
  } else {
    set.ids.insert(id);
    ++shard.resident;
    ++set.held;  // kept until Release: the request is in flight
  }
  // Held (by this request, or for this call only) while others are evicted.
  ++set.held;
  EvictLocked(shard);
  --set.held;
  return verdict;
}

void ReplayGuard::Release(const std::string& channel) {
  Shard& shard = ShardOf(channel);
  std::lock_guard lock(shard.mutex);
  auto found = shard.channels.find(channel);
  if (found != shard.channels.end() && found->second.held > 0) --found->second.held;
  EvictLocked(shard);
}

void ReplayGuard::Forget(const std::string& channel) {
  Shard& shard = ShardOf(channel);
  std::lock_guard lock(shard.mutex);
  auto found = shard.channels.find(channel);
  if (found == shard.channels.end() || found->second.held > 0) return;
  shard.resident -= found->second.ids.size();
  shard.lru.erase(found->second.lru);
  shard.channels.erase(found);
}

std::size_t ReplayGuard::resident_ids() const {
  std::size_t total = 0;
  for (std::size_t i = 0; i < shard_count_; ++i) {
    std::lock_guard lock(shards_[i].mutex);
    total += shards_[i].resident;
  }
  return total;
}

void ReplayGuard::EvictLocked(Shard& shard) const {
  auto it = shard.lru.end();
  while (shard.resident > max_resident_per_shard_ && it != shard.lru.begin()) {
    --it;
    auto found = shard.channels.find(*it);
    if (found->second.held > 0) continue;
    shard.resident -= found->second.ids.size();
    shard.channels.erase(found);
    it = shard.lru.erase(it);
  }
}

}  // namespace strongroom::kms
