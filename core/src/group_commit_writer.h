// The core's one mutator. Every change of the core's database is a Change queued here; one writer
// thread takes up to 256 queued changes, runs each against the conversations' states as the batch
// has left them, writes them in ONE transaction with a full fsync, and only then publishes the
// changed states to the StateCache, reports the batch's activities (in seq order) and wakes the
// callers: group commit. So an acknowledged change is durable, a refused one left nothing, and
// concurrent changes share one fsync. Being the only mutator, the writer keeps the state cache
// exact: it replaces a state after the commit that changed it (with other processes writing the
// database too, see `shared` below).
//
// Deleted content does not linger: the Database runs every connection with SQLite's
// secure_delete, so what a change overwrites or deletes (an edited message's old ciphertext, a
// retracted one's, their index tokens) is overwritten with zeros in the database's pages. The old
// bytes would still be in the write-ahead log (the frames that wrote them) and, until a
// checkpoint, in the database file; so
// after a batch that removed content (Batch::scrub) the writer empties the log (a TRUNCATE
// checkpoint, Database::CompactLog) before it answers the batch's callers. If readers keep the
// checkpoint from completing, the callers are answered anyway and the writer tries again every
// 100 ms until it completes; it also empties the log when it starts (a crash between a commit and
// its checkpoint).
//
// Thread-safe: Submit from any thread; the Change runs on the writer thread.
#ifndef STRONGROOM_CORE_SRC_GROUP_COMMIT_WRITER_H_
#define STRONGROOM_CORE_SRC_GROUP_COMMIT_WRITER_H_

#include <Poco/Data/Session.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "state_cache.h"
#include "strongroom/common/database.h"
#include "strongroom/common/error.h"
#include "strongroom/core/model.h"

namespace strongroom::core::internal {

// An activity committed in a batch and who may see it.
struct Produced {
  Activity activity;
  std::shared_ptr<const std::vector<std::string>> recipients;
  std::string conversation_org;  // the conversation creator's organization (the indexer's stream)
};

// What a batch's changes see and leave behind, inside the batch's transaction.
struct Batch {
  Poco::Data::Session* s = nullptr;
  const StateCache* cache = nullptr;
  std::int64_t next_seq = 0;
  std::int64_t now_ms = 0;
  std::unordered_map<std::string, StatePtr> changed;  // states this batch changed
  std::unordered_map<std::string, StatePtr> loaded;   // states read from the database
  std::map<std::string, std::int64_t> last_seq;       // conversations' newest activities
  std::vector<Produced> produced;                     // in seq order
  bool scrub = false;  // a change removed content: empty the log before answering
  // Posts are written together (Defer), in as few statements as they fit, before the batch's next
  // change that is not a post runs and before it commits: on a database server each statement is
  // a round trip made while the batch holds the writers' lock.
  bool defer_posts = false;
  std::vector<Activity> deferred;

  // The state as the batch sees it: changed by an earlier change of the batch, cached, or read
  // in the batch's transaction; null when there is no such conversation.
  StatePtr State(const std::string& id);
  // An activity of this batch: the next seq, a new id, the batch's time.
  Activity NewActivity(const std::string& conversation_id, const Caller& caller, std::string verb);
  // Gives back the seq of `a`, the batch's newest activity, which was not written after all.
  void Unnumber(const Activity& a);
  // A post to write with the batch's others (defer_posts).
  void Defer(Activity a) { deferred.push_back(std::move(a)); }
  // The deferred post `actor` made with this clientActivityId in the conversation, if any.
  const Activity* DeferredPost(const std::string& conversation_id, const std::string& actor,
                               const std::string& client_activity_id) const;
  // Writes the deferred posts. False when one had been stored before (a retry of a post that an
  // earlier batch committed): nothing can be trusted of the batch then, and it runs again with
  // each post written on its own.
  bool WriteDeferred();
  // Records `a` as this batch's newest activity, seen by `recipients`, and returns it.
  Activity Produce(Activity a, std::shared_ptr<const std::vector<std::string>> recipients);
};

class GroupCommitWriter {
 public:
  using Clock = std::function<std::int64_t()>;  // milliseconds since the epoch
  // A change: checks itself against the batch's view of the states and then writes; it writes
  // nothing when it returns an error. It returns the activity it produced (or found, for a
  // retried post), or an empty one for changes without an activity.
  using Change = std::function<Result<Activity>(Batch&)>;
  // Called once per commit that produced activities, with them in seq order, on the writer
  // thread before the callers are answered. Must not block for long nor Submit.
  using OnCommit = std::function<void(const std::vector<Produced>& produced)>;

  // `last_seq`: the newest stored activity's seq (LastSeq until the first commit; each batch reads
  // the newest seq again in its transaction). Starts the writer thread.
  //
  // `shared`: other processes write the database too (cored nodes on one database). Each batch
  // then first forgets the cached states of the conversations that other writers' activities since
  // its previous batch may have changed (a read of those activities' rows by seq, in the batch's
  // transaction, so after every other writer's commit), and checks its changes against what the
  // database holds. Without it the cache is trusted as the only mutator's.
  GroupCommitWriter(Database& db, Clock clock, StateCache& cache, std::int64_t last_seq,
                    OnCommit on_commit, bool shared = false);
  // Commits what is queued, then stops the writer thread.
  ~GroupCommitWriter();
  GroupCommitWriter(const GroupCommitWriter&) = delete;
  GroupCommitWriter& operator=(const GroupCommitWriter&) = delete;

  // Queues `change` and waits until its batch committed (or failed). UNAVAILABLE when the queue
  // is full or the writer is stopping. `post`: the change writes at most a post or share, and
  // only through Batch::Defer while Batch::defer_posts (it reads no activity the batch wrote).
  Result<Activity> Submit(Change change, bool post = false);

  // The seq of the newest committed activity.
  std::int64_t LastSeq() const { return last_seq_.load(); }

 private:
  struct Op {
    Change apply;
    bool post = false;
    std::optional<Result<Activity>> result;
    bool done = false;
  };
  void Run();
  // Commits the next batch: what is queued once its transaction holds the writers' lock (changes
  // that came while another node's batch held it join this one), into `ops`. Returns whether the
  // committed batch removed content (Batch::scrub).
  bool CommitBatch(std::vector<Op*>& ops);
  // Moves up to kMaxBatch queued changes into `ops`.
  void TakeBatch(std::vector<Op*>& ops);
  // Empties the write-ahead log; false when readers kept it from completing.
  bool Scrub();

  Database& db_;
  const Clock clock_;
  StateCache& cache_;
  const OnCommit on_commit_;
  const bool shared_;
  std::atomic<std::int64_t> last_seq_;
  // With `shared`: the newest seq whose changes the cache reflects (the writer's alone).
  std::int64_t cache_through_;

  std::mutex mutex_;
  std::condition_variable work_;
  std::condition_variable done_;
  std::deque<Op*> queue_;
  bool stopping_ = false;
  std::thread writer_;  // last: starts once everything above is built
};

}  // namespace strongroom::core::internal

#endif  // STRONGROOM_CORE_SRC_GROUP_COMMIT_WRITER_H_
