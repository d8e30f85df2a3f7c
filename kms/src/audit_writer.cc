#include "strongroom/kms/audit_writer.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <vector>

namespace strongroom::kms {

namespace {

// Sleeps while `word` holds `seen` (or until a spurious wake-up); the caller checks again.
void SleepWhile(std::atomic<std::uint32_t>& word, std::uint32_t seen) {
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_PRIVATE, seen, nullptr,
            nullptr, 0);
}

void WakeAll(std::atomic<std::uint32_t>& word) {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX,
            nullptr, nullptr, 0);
}

}  // namespace

AuditWriter::AuditWriter(Database& db, Database::Durability durability,
                         std::chrono::milliseconds sync_interval,
                         std::function<void(std::size_t)> committed)
    : db_(db),
      durability_(durability),
      sync_interval_(sync_interval),
      committed_(std::move(committed)),
      thread_([this] { Run(); }),
      syncer_([this] { Sync(); }) {}

AuditWriter::~AuditWriter() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  thread_.join();
  {
    std::lock_guard lock(sync_mutex_);
    sync_stopping_ = true;
  }
  sync_wake_.notify_all();
  syncer_.join();
}

Status AuditWriter::Append(AuditRecord record, std::optional<ExecutedRequest> executed) {
  // Where KmsStore::ExecutedRequestsOf finds it again: among the owner's records since the
  // channel's creation. A record of someone else, or one stamped before the channel was made (the
  // clock stepped back), goes to executed_requests instead.
  if (executed && record.message.empty() && record.org == executed->org &&
      record.actor == executed->user && record.at_ms >= executed->channel_created_ms) {
    record.channel = std::move(executed->channel);
    record.message = std::move(executed->message);
    executed.reset();
  }
  // A record the log would refuse must not fail the batch it shares with others.
  SR_RETURN_IF_ERROR(AuditLog::Validate(record));
  return Enqueue({std::move(record), std::move(executed)});
}

Status AuditWriter::Append(ExecutedRequest executed) {
  return Enqueue({std::nullopt, std::move(executed)});
}

Status AuditWriter::Write(const Unit& unit) {
  Status outcome;
  Entry entry;
  entry.unit = &unit;
  entry.outcome = &outcome;
  // The writer sets `outcome` before it publishes the batch as finished, which Enqueue waits for.
  SR_RETURN_IF_ERROR(Enqueue(std::move(entry)));
  return outcome;
}

Status AuditWriter::Enqueue(Entry entry) {
  std::uint64_t batch = 0;
  std::uint64_t failures = 0;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return Error(ErrorCode::kUnavailable, "the audit log is shutting down");
    if (queue_.size() >= kMaxAuditQueue) {
      return Error(ErrorCode::kUnavailable, "the audit log is falling behind; retry later");
    }
    queue_.push_back(std::move(entry));
    // The writer takes at most kMaxAuditBatch records at a time, so the batch of this record is
    // the current one plus however many full batches are queued before it.
    batch = next_batch_ + (queue_.size() - 1) / kMaxAuditBatch;
    failures = failures_.load(std::memory_order_relaxed);
  }
  work_.notify_one();
  WaitFor(batch);
  // Failures are rare: only then is the writer's lock taken again, to learn whether it was ours.
  if (failures_.load(std::memory_order_acquire) == failures) return OkStatus();
  std::lock_guard lock(mutex_);
  if (auto failed = failed_.find(batch); failed != failed_.end()) return failed->second;
  return OkStatus();
}

void AuditWriter::WaitFor(std::uint64_t batch) {
  std::atomic<std::uint32_t>& word = batch_words_[batch % kBatchWords].word;
  for (;;) {
    // Read before the check: a batch finished after the check changes the word, so the sleep
    // below returns at once instead of missing the wake-up.
    const std::uint32_t seen = word.load(std::memory_order_acquire);
    if (committed_batch_.load(std::memory_order_acquire) >= batch) return;
    SleepWhile(word, seen);
  }
}

AuditWriter::Stats AuditWriter::stats() const {
  std::lock_guard lock(mutex_);
  Stats stats = stats_;
  stats.queued = queue_.size();
  return stats;
}

void AuditWriter::TakeLocked(Taken& taken) {
  const std::size_t n = std::min(queue_.size(), kMaxAuditBatch);
  taken.records.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    Entry& entry = queue_.front();
    if (entry.audit) taken.records.push_back(std::move(*entry.audit));
    if (entry.executed) taken.executed.push_back(std::move(*entry.executed));
    if (entry.unit != nullptr) taken.writes.push_back(std::move(entry));
    queue_.pop_front();
  }
  taken.number = next_batch_++;
  taken.taken = true;
}

void AuditWriter::Run() {
  // On PostgreSQL the kmsd nodes of a database take turns for the writers' lock: a batch is taken
  // from the queue only once its transaction holds it, so that what came while another node's
  // batch held it commits in this turn rather than the next. On SQLite (one process) the batch is
  // taken first, and its durability chosen from it.
  const bool take_late = db_.engine() == Database::Engine::kPostgres;
  std::unique_lock lock(mutex_);
  for (;;) {
    work_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, nothing left
    Taken taken;
    if (!take_late) TakeLocked(taken);
    lock.unlock();
    // A write is durable before its answer: its batch is fsynced, and so are the records before.
    Database::Durability durability =
        taken.writes.empty() ? durability_ : Database::Durability::kFull;
    Status committed = db_.InTransaction(
        [&](Poco::Data::Session& s) -> Status {
          if (!taken.taken) {  // take_late; a transaction tried again keeps its batch
            std::lock_guard take(mutex_);
            TakeLocked(taken);
          }
          if (take_late && !taken.writes.empty() && durability != Database::Durability::kFull) {
            Database::Prepare(s, "SET LOCAL synchronous_commit TO on").Run();
            durability = Database::Durability::kFull;
          }
          // In queue order; a failed write is rolled back alone (a savepoint that cannot be
          // rolled back to throws, and fails the batch).
          for (Entry& write : taken.writes) {
            *write.outcome = Database::InSavepoint(s, *write.unit);
          }
          SR_RETURN_IF_ERROR(KmsStore::InsertExecutedRequests(s, taken.executed));
          return AuditLog::AppendAll(s, taken.records);
        },
        durability);
    if (!taken.taken) {  // the transaction never began: what waited fails with it
      std::lock_guard take(mutex_);
      TakeLocked(taken);
    }
    std::vector<AuditRecord>& batch = taken.records;
    const std::uint64_t number = taken.number;
    if (committed.ok() && committed_ && !batch.empty()) committed_(batch.size());
    if (committed.ok() && durability == Database::Durability::kDeferred) {
      std::lock_guard sync(sync_mutex_);
      unsynced_ = true;
    }
    lock.lock();
    // Failed batches are remembered briefly so their callers can see why; old ones are dropped.
    if (!committed.ok()) {
      failed_.emplace(number, committed);
      failures_.fetch_add(1, std::memory_order_release);
      ++stats_.failures;
    }
    while (failed_.size() > 64) failed_.erase(failed_.begin());
    ++stats_.batches;
    stats_.records += batch.size();
    stats_.writes += taken.writes.size();
    // The batch's callers go on: its word changes, and those asleep on it are woken (they take
    // no lock to go on).
    committed_batch_.store(number, std::memory_order_release);
    std::atomic<std::uint32_t>& word = batch_words_[number % kBatchWords].word;
    word.fetch_add(1, std::memory_order_release);
    WakeAll(word);
  }
}

void AuditWriter::Sync() {
  std::unique_lock lock(sync_mutex_);
  auto last_compact = std::chrono::steady_clock::now();
  for (;;) {
    // A deferred batch reaches the disk within sync_interval, while the writer commits on.
    sync_wake_.wait_for(lock, sync_interval_, [&] { return sync_stopping_; });
    const bool stopping = sync_stopping_;
    if (unsynced_) {
      unsynced_ = false;
      lock.unlock();
      const Status synced = db_.SyncToDisk();
      lock.lock();
      if (!synced.ok()) unsynced_ = true;  // the next turn tries again
    }
    if (stopping) return;
    // Under constant load the log never empties on its own (readers come and go): empty it now
    // and then.
    const auto now = std::chrono::steady_clock::now();
    if (now - last_compact >= kCompactInterval) {
      lock.unlock();
      (void)db_.CompactLog();  // if busy, the next turn tries again
      lock.lock();
      last_compact = now;
    }
  }
}

}  // namespace strongroom::kms
