// Conversation states for the hot paths (is the caller a participant? which key is current?), so a
// post needs no database read before it is queued. Filled by readers on a miss, replaced by the
// group-commit writer after each commit that changes a state. A reader's fill is dropped when the
// writer published a change since the reader began loading (the epoch), so the cache never goes
// back to a state older than a commit the writer already published. With other nodes writing the
// same database (CoreServiceConfig::cluster_poll) the writer also forgets, at the start of each
// batch, the states their activities since its previous batch may have changed (Forget).
//
// Bounded by weight (participants + declared keys); any entry may be evicted, the database has
// them all. Thread-safe.
#ifndef STRONGROOM_CORE_SRC_STATE_CACHE_H_
#define STRONGROOM_CORE_SRC_STATE_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "core_store.h"

namespace strongroom::core::internal {

using StatePtr = std::shared_ptr<const ConversationState>;

class StateCache {
 public:
  // Null when the conversation's state is not cached.
  StatePtr Find(const std::string& id) const;
  // Taken by a reader before it loads a state, and given back to FillIfUnchanged.
  std::uint64_t epoch() const;
  void FillIfUnchanged(const std::string& id, StatePtr state, std::uint64_t epoch);
  // The writer, after a commit. `changed`: the state differs from what readers may have loaded
  // before this commit.
  void Publish(const std::string& id, StatePtr state, bool changed);
  // The writer, when another process (a cored node on the same database) may have changed the
  // state: the entry goes, and fills that began loading before are dropped.
  void Forget(const std::string& id);

 private:
  static std::size_t Weight(const ConversationState& state);
  void InsertLocked(const std::string& id, StatePtr state);

  mutable std::mutex mutex_;
  std::unordered_map<std::string, StatePtr> map_;
  std::size_t weight_ = 0;
  std::uint64_t epoch_ = 0;
};

}  // namespace strongroom::core::internal

#endif  // STRONGROOM_CORE_SRC_STATE_CACHE_H_
