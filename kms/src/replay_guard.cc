#include "strongroom/kms/replay_guard.h"

#include <cstring>
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

ReplayGuard::ReplayGuard(Database& db, std::size_t max_per_channel, std::size_t max_resident)
    : db_(db), max_per_channel_(max_per_channel), max_resident_(max_resident) {}

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

Result<ReplayGuard::Verdict> ReplayGuard::Claim(const std::string& channel, const MessageId& id) {
  std::unique_lock lock(mutex_);
  auto found = channels_.find(channel);
  if (found == channels_.end()) {
    // Not in memory: read what the channel executed before (another node, or before a restart).
    lock.unlock();
    std::vector<std::string> stored;
    Status read = db_.WithSession([&](Poco::Data::Session& s) -> Status {
      SR_ASSIGN_OR_RETURN(stored, KmsStore::ExecutedRequestsOf(s, channel, MessageId().size()));
      return OkStatus();
    });
    if (!read.ok()) return Error(ErrorCode::kUnavailable, "the KMS database is unavailable");
    lock.lock();
    found = channels_.find(channel);
    if (found == channels_.end()) {
      lru_.push_front(channel);
      found = channels_.emplace(channel, ChannelSet{{}, 0, lru_.begin()}).first;
    }
    for (const std::string& bytes : stored) {
      if (std::optional<MessageId> known = FromBytes(bytes)) {
        if (found->second.ids.insert(*known).second) ++resident_;
      }
    }
  }
  ChannelSet& set = found->second;
  lru_.splice(lru_.begin(), lru_, set.lru);
  Verdict verdict = Verdict::kFirst;
  if (set.ids.contains(id)) {
    verdict = Verdict::kReplayed;
  } else if (set.ids.size() >= max_per_channel_) {
    verdict = Verdict::kExhausted;
  } else {
    set.ids.insert(id);
    ++resident_;
    ++set.held;  // kept until Release: the request is in flight
  }
  // Held (by this request, or for this call only) while others are evicted.
  ++set.held;
  EvictLocked();
  --set.held;
  return verdict;
}

void ReplayGuard::Release(const std::string& channel) {
  std::lock_guard lock(mutex_);
  if (auto found = channels_.find(channel); found != channels_.end() && found->second.held > 0) {
    --found->second.held;
  }
  EvictLocked();
}

void ReplayGuard::Forget(const std::string& channel) {
  std::lock_guard lock(mutex_);
  auto found = channels_.find(channel);
  if (found == channels_.end() || found->second.held > 0) return;
  resident_ -= found->second.ids.size();
  lru_.erase(found->second.lru);
  channels_.erase(found);
}

std::size_t ReplayGuard::resident_ids() const {
  std::lock_guard lock(mutex_);
  return resident_;
}

void ReplayGuard::EvictLocked() {
  auto it = lru_.end();
  while (resident_ > max_resident_ && it != lru_.begin()) {
    --it;
    auto found = channels_.find(*it);
    if (found->second.held > 0) continue;
    resident_ -= found->second.ids.size();
    channels_.erase(found);
    it = lru_.erase(it);
  }
}

}  // namespace strongroom::kms
