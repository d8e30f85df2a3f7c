// Cross-node delivery: several cored processes (nodes) serve one database, and a listener of each
// (its realtime hub) must hear of every node's commits, once and in seq order. The follower
// publishes them from the database: it keeps `published_through`, the newest seq it handed on, and
// whenever it is woken (Wake, after a commit of this node) or a poll interval passed without a wake
// (for the other nodes' commits), it reads the activities after it, a page at a time
// (CoreStore::CommittedAfter: each with its recipients and its conversation's creator
// organization, as the committing writer computed them), and hands each page on in seq order.
//
// No seq is skipped: the database lets one write transaction run at a time across every process
// (database.h, "Isolation") and each numbers its activities after the newest stored one, so the
// seqs are committed in order; once seq N is visible to a read, so is every seq below it. A read
// that fails (the database out of reach) is tried again at the next wake or poll, from the same
// seq. The cost is one indexed read of the new rows per wake: per commit batch of this node, and
// per poll interval when other nodes committed (an empty read otherwise).
//
// Thread-safe; `publish` runs on the follower's own thread, one call at a time.
#ifndef STRONGROOM_CORE_SRC_COMMIT_FOLLOWER_H_
#define STRONGROOM_CORE_SRC_COMMIT_FOLLOWER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "core_store.h"
#include "strongroom/common/database.h"

namespace strongroom::core::internal {

class CommitFollower {
 public:
  using Publish = std::function<void(const std::vector<StoredCommit>& commits)>;

  // Activities read (and handed on) at most at once.
  static constexpr std::size_t kPage = 500;

  // Follows `db` from after `published_through` (the newest seq stored when the node started:
  // what came before is the realtime replay's). Starts the follower's thread.
  CommitFollower(Database& db, std::chrono::milliseconds poll_interval,
                 std::int64_t published_through, Publish publish);
  // Stops the thread (what is not handed on yet is the next start's replay).
  ~CommitFollower();
  CommitFollower(const CommitFollower&) = delete;
  CommitFollower& operator=(const CommitFollower&) = delete;

  // A commit of this node: read now rather than at the next poll.
  void Wake();

  std::int64_t published_through() const { return published_through_.load(); }

 private:
  void Run();
  // Hands on everything committed after published_through, page by page.
  void CatchUp();

  Database& db_;
  const std::chrono::milliseconds poll_interval_;
  const Publish publish_;
  std::atomic<std::int64_t> published_through_;

  std::mutex mutex_;
  std::condition_variable wake_;
  bool woken_ = false;
  bool stopping_ = false;
  std::thread thread_;  // last: starts once everything above is built
};

}  // namespace strongroom::core::internal

#endif  // STRONGROOM_CORE_SRC_COMMIT_FOLLOWER_H_
