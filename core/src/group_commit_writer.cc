#include "group_commit_writer.h"

#include <algorithm>
#include <chrono>
#include <optional>

#include "core_store.h"
#include "validation.h"

namespace strongroom::core::internal {
namespace {

constexpr std::size_t kMaxBatch = 256;    // changes committed together
constexpr std::size_t kMaxQueue = 65536;  // beyond this, changes are refused (UNAVAILABLE)
constexpr std::chrono::seconds kCompactInterval{5};
// How soon a checkpoint after removed content is tried again when readers kept it from completing.
constexpr std::chrono::milliseconds kScrubRetry{100};

}  // namespace

StatePtr Batch::State(const std::string& id) {
  if (auto it = changed.find(id); it != changed.end()) return it->second;
  if (auto it = loaded.find(id); it != loaded.end()) return it->second;
  if (StatePtr cached = cache->Find(id)) return cached;
  std::optional<ConversationState> state = CoreStore::LoadState(*s, id);
  if (!state) return nullptr;
  auto shared = std::make_shared<const ConversationState>(std::move(*state));
  loaded.emplace(id, shared);
  return shared;
}

Activity Batch::NewActivity(const std::string& conversation_id, const Caller& caller,
                            std::string verb) {
  Activity a;
  a.seq = next_seq++;
  a.id = NewUuid();
  a.conversation_id = conversation_id;
  a.actor = caller.user_id;
  a.verb = std::move(verb);
  a.published_ms = now_ms;
  return a;
}

void Batch::Unnumber(const Activity& a) {
  if (a.seq == next_seq - 1) --next_seq;
}

const Activity* Batch::DeferredPost(const std::string& conversation_id, const std::string& actor,
                                    const std::string& client_activity_id) const {
  if (client_activity_id.empty()) return nullptr;
  for (const Activity& a : deferred) {
    if (a.client_activity_id == client_activity_id && a.actor == actor &&
        a.conversation_id == conversation_id) {
      return &a;
    }
  }
  return nullptr;
}

bool Batch::WriteDeferred() {
  if (deferred.empty()) return true;
  const bool all = CoreStore::InsertActivitiesOnce(*s, deferred);
  deferred.clear();
  return all;
}

Activity Batch::Produce(Activity a, std::shared_ptr<const std::vector<std::string>> recipients) {
  last_seq[a.conversation_id] = a.seq;
  StatePtr state = State(a.conversation_id);
  produced.push_back({a, std::move(recipients), state ? state->created_by_org : std::string()});
  return a;
}

GroupCommitWriter::GroupCommitWriter(Database& db, Clock clock, StateCache& cache,
                                     std::int64_t last_seq, OnCommit on_commit, bool shared)
    : db_(db),
      clock_(std::move(clock)),
      cache_(cache),
      on_commit_(std::move(on_commit)),
      shared_(shared),
      last_seq_(last_seq),
      cache_through_(last_seq),
      writer_([this] { Run(); }) {}

GroupCommitWriter::~GroupCommitWriter() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  writer_.join();
}

Result<Activity> GroupCommitWriter::Submit(Change change, bool post) {
  Op op;
  op.apply = std::move(change);
  op.post = post;
  std::unique_lock lock(mutex_);
  if (stopping_) return Error(ErrorCode::kUnavailable, "the core is shutting down");
  if (queue_.size() >= kMaxQueue) {
    return Error(ErrorCode::kUnavailable, "the core is falling behind; retry later");
  }
  queue_.push_back(&op);
  work_.notify_one();
  done_.wait(lock, [&] { return op.done; });
  return std::move(*op.result);
}

bool GroupCommitWriter::Scrub() { return db_.CompactLog().ok(); }

void GroupCommitWriter::Run() {
  // A previous run may have crashed between removing content and emptying the log.
  bool scrub_pending = !Scrub();
  std::unique_lock lock(mutex_);
  auto last_compact = std::chrono::steady_clock::now();
  for (;;) {
    auto ready = [&] { return stopping_ || !queue_.empty(); };
    if (scrub_pending) {
      work_.wait_for(lock, kScrubRetry, ready);
    } else {
      work_.wait(lock, ready);
    }
    if (queue_.empty()) {
      if (scrub_pending) {
        lock.unlock();
        scrub_pending = !Scrub();
        lock.lock();
      }
      if (stopping_) return;  // nothing left
      continue;
    }
    std::vector<Op*> ops;
    lock.unlock();
    if (CommitBatch(ops) || scrub_pending) {
      // Before the callers learn that the content is gone.
      scrub_pending = !Scrub();
      last_compact = std::chrono::steady_clock::now();
    }
    lock.lock();
    for (Op* op : ops) op->done = true;  // the callers own the ops from here
    done_.notify_all();
    // Under constant load the write-ahead log never empties on its own.
    const auto now_time = std::chrono::steady_clock::now();
    if (now_time - last_compact >= kCompactInterval) {
      lock.unlock();
      (void)db_.CompactLog();  // if busy, the next turn tries again
      lock.lock();
      last_compact = now_time;
    }
  }
}

void GroupCommitWriter::TakeBatch(std::vector<Op*>& ops) {
  std::lock_guard lock(mutex_);
  const std::size_t n = std::min(queue_.size(), kMaxBatch);
  ops.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    ops.push_back(queue_.front());
    queue_.pop_front();
  }
}

bool GroupCommitWriter::CommitBatch(std::vector<Op*>& ops) {
  Batch b;
  std::vector<std::optional<Result<Activity>>> results;
  // Posts are written together unless one turns out to be a retry of an earlier batch's post;
  // then the batch runs again, each post on its own (which finds the retry).
  bool defer = true, retry_alone = false;
  Status committed;
  do {
    retry_alone = false;
    committed = db_.InTransaction(
        [&](Poco::Data::Session& s) -> Status {
          // Taken now that the transaction holds the writers' lock: on a database shared by
          // several nodes the wait for it is another node's batch, and what was queued meanwhile
          // commits with this batch instead of waiting for the next turn. (A transaction tried
          // again keeps its batch.)
          if (ops.empty()) TakeBatch(ops);
          results.assign(ops.size(), std::nullopt);
          b = Batch();
          b.s = &s;
          b.cache = &cache_;
          // After every committed activity, read now that the transaction holds the writers' lock
          // (database.h, "Isolation"): another process on the database (a second node on one
          // PostgreSQL database) may have written since this writer's last batch, so seqs stay
          // unique and without gaps across every writer.
          if (shared_) {
            // Other writers may have committed since this one's last batch: what they changed is
            // read again, in this transaction, by the batch (Batch::State) and by later readers.
            const CoreStore::NewestSeq newest =
                CoreStore::NewestSeqAndChangesAfter(s, cache_through_);
            for (const std::string& id : newest.changed) cache_.Forget(id);
            b.next_seq = newest.seq + 1;
            cache_through_ = std::max(cache_through_, newest.seq);
          } else {
            b.next_seq = CoreStore::MaxSeq(s) + 1;
          }
          b.now_ms = clock_();
          b.defer_posts = defer;
          for (std::size_t i = 0; i < ops.size(); ++i) {
            // A change that is not a post may read what the batch wrote: the posts go first.
            if (!ops[i]->post && !b.WriteDeferred()) retry_alone = true;
            if (retry_alone) break;
            results[i] = ops[i]->apply(b);
          }
          if (!retry_alone && !b.WriteDeferred()) retry_alone = true;
          if (retry_alone) {
            return Error(ErrorCode::kAlreadyExists, "a deferred post was stored before; run again");
          }
          for (const auto& [conversation_id, seq] : b.last_seq) {
            CoreStore::SetLastSeq(s, conversation_id, seq);
          }
          return OkStatus();
        },
        Database::Durability::kFull);
    defer = false;
  } while (retry_alone);
  if (!committed.ok()) {
    if (ops.empty()) TakeBatch(ops);  // it never began: what waited fails with it
    for (Op* op : ops) op->result = committed.error();
    return false;
  }
  cache_through_ = b.next_seq - 1;
  for (auto& [id, state] : b.changed) cache_.Publish(id, state, /*changed=*/true);
  for (auto& [id, state] : b.loaded) {
    if (b.changed.count(id) == 0) cache_.Publish(id, state, /*changed=*/false);
  }
  if (!b.produced.empty()) last_seq_.store(b.produced.back().activity.seq);
  if (on_commit_ && !b.produced.empty()) on_commit_(b.produced);
  for (std::size_t i = 0; i < ops.size(); ++i) ops[i]->result = std::move(results[i]);
  return b.scrub;
}

}  // namespace strongroom::core::internal
