#include "strongroom/kms/audit_writer.h"

#include <vector>

namespace strongroom::kms {

AuditWriter::AuditWriter(Database& db, Database::Durability durability,
                         std::chrono::milliseconds sync_interval,
                         std::function<void(std::size_t)> committed)
    : db_(db),
      durability_(durability),
      sync_interval_(sync_interval),
      committed_(std::move(committed)),
      thread_([this] { Run(); }) {}

AuditWriter::~AuditWriter() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  thread_.join();
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

Status AuditWriter::Enqueue(Entry entry) {
  std::unique_lock lock(mutex_);
  if (stopping_) return Error(ErrorCode::kUnavailable, "the audit log is shutting down");
  if (queue_.size() >= kMaxAuditQueue) {
    return Error(ErrorCode::kUnavailable, "the audit log is falling behind; retry later");
  }
  queue_.push_back(std::move(entry));
  // The writer takes at most kMaxAuditBatch records at a time, so the batch of this record is
  // the current one plus however many full batches are queued before it.
  const std::uint64_t batch = next_batch_ + (queue_.size() - 1) / kMaxAuditBatch;
  work_.notify_one();
  done_.wait(lock, [&] { return committed_batch_ >= batch; });
  if (auto failed = failed_.find(batch); failed != failed_.end()) return failed->second;
  return OkStatus();
}

AuditWriter::Stats AuditWriter::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void AuditWriter::Run() {
  std::unique_lock lock(mutex_);
  bool unsynced = false;  // deferred commits not yet on the disk
  auto last_sync = std::chrono::steady_clock::now();
  auto last_compact = last_sync;
  for (;;) {
    if (unsynced) {
      // A deferred batch reaches the disk within sync_interval even if nothing else is written.
      if (!work_.wait_for(lock, sync_interval_, [&] { return stopping_ || !queue_.empty(); })) {
        lock.unlock();
        Status synced = db_.SyncToDisk();
        lock.lock();
        if (synced.ok()) unsynced = false;
        last_sync = std::chrono::steady_clock::now();
        continue;
      }
    } else {
      work_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    }
    if (queue_.empty()) {  // stopping, nothing left
      if (unsynced) {
        lock.unlock();
        (void)db_.SyncToDisk();
      }
      return;
    }
    std::vector<AuditRecord> batch;
    std::vector<ExecutedRequest> executed;
    const std::size_t n = std::min(queue_.size(), kMaxAuditBatch);
    batch.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      Entry& entry = queue_.front();
      if (entry.audit) batch.push_back(std::move(*entry.audit));
      if (entry.executed) executed.push_back(std::move(*entry.executed));
      queue_.pop_front();
    }
    const std::uint64_t number = next_batch_++;
    lock.unlock();
    Status committed = db_.InTransaction(
        [&](Poco::Data::Session& s) -> Status {
          SR_RETURN_IF_ERROR(KmsStore::InsertExecutedRequests(s, executed));
          return AuditLog::AppendAll(s, batch);
        },
        durability_);
    if (committed.ok() && committed_ && !batch.empty()) committed_(batch.size());
    lock.lock();
    // Failed batches are remembered briefly so their callers can see why; old ones are dropped.
    if (!committed.ok()) {
      failed_.emplace(number, committed);
      ++stats_.failures;
    }
    while (failed_.size() > 64) failed_.erase(failed_.begin());
    unsynced = unsynced || (committed.ok() && durability_ == Database::Durability::kDeferred);
    ++stats_.batches;
    stats_.records += batch.size();
    committed_batch_ = number;
    done_.notify_all();
    // Under constant load the writer is never idle: flush deferred commits every sync_interval
    // all the same, and empty the write-ahead log now and then (it never empties on its own
    // while readers come and go).
    const auto now = std::chrono::steady_clock::now();
    if (unsynced && now - last_sync >= sync_interval_) {
      lock.unlock();
      Status synced = db_.SyncToDisk();
      lock.lock();
      if (synced.ok()) unsynced = false;
      last_sync = now;
    }
    if (now - last_compact >= kCompactInterval) {
      lock.unlock();
      (void)db_.CompactLog();  // if busy, the next turn tries again
      lock.lock();
      last_compact = now;
    }
  }
}

}  // namespace strongroom::kms
