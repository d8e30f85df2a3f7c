// At most once: the sealed requests each channel (ephemeral key) has executed.
//
// The core realm relays sealed KMS messages and may keep them and send them again, to kmsd over
// HTTPS or through the relay, at any time within the channel's life. A message is named by its
// JWE's IV and tag (jose::DecryptedJwe): an honest client never repeats them, and a message that
// decrypts is one the channel's owner sealed. A message seen before under the same channel is
// refused before anything in it is read or checked.
//
// Where the record lives. The database is what outlives a restart: KmsService records a write
// before it executes (a row of executed_requests) and a read in the same group commit as its
// audit record, and answers only once the record is committed. A read's record is its audit row
// itself (AuditRecord's channel and message) when the channel's owner made it since the channel's
// creation, which is where the load looks (through the audit log's index by actor and time): a
// retrieval then writes no page that its audit row does not already write. Memory holds, for
// recently used channels, the set of their messages, so the hot path reads nothing; a channel not
// in memory has its set loaded from the database once.
//
// Bounds. A channel executes at most `max_per_channel` requests (kMaxRequestsPerChannel); past
// that it is refused like an expired one (the client negotiates a new channel), so neither the
// database nor one channel's set grows without end, and both are forgotten when the channel
// expires or is deleted (KmsStore::DeleteSpentExecutedRequests). Memory holds at most
// `max_resident` message ids in all (about 80 bytes each); the channels least recently used are
// dropped from memory past that, never one with a request in flight (they are held by Claim until
// Release), and are read again from the database when next used.
//
// Thread-safe. Several nodes sharing one database also refuse a replay once it has been recorded:
// a node loads the set of a channel it had not seen from the database; a request that reaches two
// nodes before either has recorded it is the gap (docs/threat-model.md).
#ifndef STRONGROOM_KMS_REPLAY_GUARD_H_
#define STRONGROOM_KMS_REPLAY_GUARD_H_

#include <array>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "strongroom/common/database.h"
#include "strongroom/common/error.h"
#include "strongroom/kms/kms_store.h"

namespace strongroom::kms {

inline constexpr std::size_t kMaxRequestsPerChannel = 100000;
inline constexpr std::size_t kMaxResidentMessageIds = 1 << 20;

class ReplayGuard {
 public:
  using MessageId = std::array<std::uint8_t, 28>;  // the 12-byte IV, then the 16-byte tag

  enum class Verdict {
    kFirst,      // not seen before: execute it (the channel stays held until Release)
    kReplayed,   // executed before: refuse it, execute nothing
    kExhausted,  // the channel has executed its limit of requests: it must be renegotiated
  };

  explicit ReplayGuard(Database& db, std::size_t max_per_channel = kMaxRequestsPerChannel,
                       std::size_t max_resident = kMaxResidentMessageIds);
  ReplayGuard(const ReplayGuard&) = delete;
  ReplayGuard& operator=(const ReplayGuard&) = delete;

  // Notes `id` as executed under `channel` (in memory; the caller records it in the database).
  // UNAVAILABLE when the channel's record could not be read.
  Result<Verdict> Claim(const EphemeralKeyRecord& channel, const MessageId& id);
  // Ends the hold a kFirst verdict took on the channel.
  void Release(const std::string& channel);
  // The channel was deleted or has expired: its set is dropped from memory.
  void Forget(const std::string& channel);

  static std::string Hex(const MessageId& id);    // for the audit log
  static std::string Bytes(const MessageId& id);  // as stored (ExecutedRequest::message)

  std::size_t resident_ids() const;
  std::size_t max_per_channel() const { return max_per_channel_; }

 private:
  struct IdHash {
    std::size_t operator()(const MessageId& id) const;
  };
  struct ChannelSet {
    std::unordered_set<MessageId, IdHash> ids;
    int held = 0;
    std::list<std::string>::iterator lru;
  };
  // Channels are spread over shards, each with its own lock and its share of max_resident, so
  // that the requests of different channels do not wait for one another.
  struct Shard {
    mutable std::mutex mutex;
    std::unordered_map<std::string, ChannelSet> channels;
    std::list<std::string> lru;  // most recently used first
    std::size_t resident = 0;
  };
  Shard& ShardOf(const std::string& channel) const;
  void EvictLocked(Shard& shard) const;

  Database& db_;
  const std::size_t max_per_channel_;
  const std::size_t shard_count_;
  const std::size_t max_resident_per_shard_;
  std::unique_ptr<Shard[]> shards_;
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_REPLAY_GUARD_H_
