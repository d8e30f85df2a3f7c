// Group commit for audit records that have no transaction of their own (key retrievals, denials).
//
// Each such record would otherwise be a write transaction with its own fsync, which caps the
// KMS at a few hundred retrievals a second on ordinary disks. The writer collects the records of
// concurrent requests and appends them in one transaction; every caller waits until the
// transaction holding its record has committed, so no key leaves the KMS before its retrieval is
// in the log.
//
// Durability: with kFull every batch is fsynced before its callers go on. With kDeferred (the
// default) a batch is committed atomically and survives a crash of kmsd at once, and reaches the
// disk within `sync_interval` (or sooner, with any full commit of another operation): a power
// loss can lose at most that window of retrieval records, never part of a record and never a key.
// On a disk whose fsync takes 3 ms that is the difference between ~3,000 and ~10,000 audited
// retrievals a second with 16 clients (docs/benchmarks.md). Being the KMS's one background writer,
// it also keeps the write-ahead log from growing without end under constant load. Records inside
// other operations' transactions (resource creation, authorization changes) still use
// AuditLog::Append directly; both share the one hash chain because the database runs one writer at
// a time (SQLite's BEGIN IMMEDIATE, PostgreSQL's writers' advisory lock: database.h) and Append
// reads the chain's head inside the transaction. The same on both engines (audit_writer_test.cc).
//
// The same batches carry the records of executed sealed requests (replay_guard.h): a retrieval's
// audit record and the record that it was executed commit together, in one wait.
//
// The same batches carry the writes of requests that change the KMS (Write: creating keys,
// binding them, authorizations), each in a savepoint of its own, so that concurrent writes share
// one transaction and one fsync instead of one each: a batch holding a write commits with kFull,
// and every caller of the batch goes on only after that commit. A write that fails (an error, or a
// throw) is rolled back alone and fails only its own caller; a batch that cannot commit fails all
// its callers with the commit's error, and none of it is stored.
//
// The wait is one sleep and one wake-up per caller: a caller sleeps on its batch's own word
// (futex), which the writer wakes once that batch is finished, so it is not woken by the batches
// before its own, and does not take the writer's lock again to go on. Flushing deferred batches to
// the disk (an fsync of the write-ahead log, every sync_interval) and emptying the log run on a
// second thread, so commits go on while the disk syncs.
//
// Thread-safe. The destructor commits what is queued, flushes it to the disk and stops the
// threads.
#ifndef STRONGROOM_KMS_AUDIT_WRITER_H_
#define STRONGROOM_KMS_AUDIT_WRITER_H_

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "strongroom/common/database.h"
#include "strongroom/common/error.h"
#include "strongroom/kms/audit_log.h"
#include "strongroom/kms/kms_store.h"

namespace strongroom::kms {

inline constexpr std::size_t kMaxAuditBatch = 1024;
inline constexpr std::size_t kMaxAuditQueue = 65536;  // beyond this, Append refuses (UNAVAILABLE)
// The writer also empties the database's write-ahead log this often (Database::CompactLog).
inline constexpr std::chrono::seconds kCompactInterval{5};

class AuditWriter {
 public:
  // `committed`, if set, is told on the writer's thread how many audit records each committed
  // batch held (the checkpointer's nudge, audit_checkpointer.h); it must return at once.
  explicit AuditWriter(Database& db,
                       Database::Durability durability = Database::Durability::kDeferred,
                       std::chrono::milliseconds sync_interval = std::chrono::milliseconds(50),
                       std::function<void(std::size_t records)> committed = {});
  ~AuditWriter();
  AuditWriter(const AuditWriter&) = delete;
  AuditWriter& operator=(const AuditWriter&) = delete;

  // Appends the record (and records the executed request, if any) and returns once it is
  // committed (or the batch failed). The executed request rides in the audit row itself when the
  // record is its channel owner's, made since the channel's creation (replay_guard.h); otherwise
  // it is a row of executed_requests in the same commit.
  Status Append(AuditRecord record, std::optional<ExecutedRequest> executed = std::nullopt);
  // Records an executed request that has no audit record of its own, in the same way.
  Status Append(ExecutedRequest executed);

  // Runs `unit` on the writer's thread inside the next batch's transaction, in a savepoint of its
  // own (Database::InSavepoint), and returns once that batch is committed with kFull durability:
  // what `unit` returned if the batch committed (its writes stay only if that is OK), the
  // commit's error if it did not (nothing of the batch stays). `unit` must not call Append or
  // Write, nor InTransaction (it runs on the writer's thread, inside its transaction).
  using Unit = std::function<Status(Poco::Data::Session&)>;
  Status Write(const Unit& unit);

  struct Stats {
    std::uint64_t records = 0;
    std::uint64_t batches = 0;
    std::uint64_t failures = 0;
    std::uint64_t writes = 0;  // units of Write committed or failed
    std::size_t queued = 0;    // records and writes waiting for a batch, now
  };
  Stats stats() const;

 private:
  struct Entry {
    std::optional<AuditRecord> audit;
    std::optional<ExecutedRequest> executed;
    const Unit* unit = nullptr;  // a Write's, and where its own outcome goes
    Status* outcome = nullptr;
  };
  // What a caller of a batch sleeps on: the writer bumps `word` and wakes its sleepers once the
  // batch is finished. Batches share a word kBatchWords apart, more than can be queued at once.
  struct alignas(64) BatchWord {
    std::atomic<std::uint32_t> word{0};
  };
  static constexpr std::size_t kBatchWords = 2 * (kMaxAuditQueue / kMaxAuditBatch) + 2;

  // A batch as the writer took it from the queue.
  struct Taken {
    bool taken = false;
    std::uint64_t number = 0;
    std::vector<AuditRecord> records;
    std::vector<ExecutedRequest> executed;
    std::vector<Entry> writes;
  };

  Status Enqueue(Entry entry);
  void WaitFor(std::uint64_t batch);
  // Moves up to kMaxAuditBatch queued entries into `taken`; mutex_ held.
  void TakeLocked(Taken& taken);
  void Run();
  void Sync();

  Database& db_;
  const Database::Durability durability_;
  const std::chrono::milliseconds sync_interval_;
  const std::function<void(std::size_t)> committed_;
  mutable std::mutex mutex_;
  std::condition_variable work_;
  std::deque<Entry> queue_;
  std::uint64_t next_batch_ = 1;                   // the batch the queued records will go into
  std::atomic<std::uint64_t> committed_batch_{0};  // every batch up to this one is finished
  std::atomic<std::uint64_t> failures_{0};         // batches that failed, ever
  std::map<std::uint64_t, Status> failed_;  // batches that failed, until their callers saw it
  std::array<BatchWord, kBatchWords> batch_words_;
  bool stopping_ = false;
  Stats stats_;

  // The syncer's: deferred commits not yet on the disk, and when to stop.
  std::mutex sync_mutex_;
  std::condition_variable sync_wake_;
  bool unsynced_ = false;
  bool sync_stopping_ = false;

  std::thread thread_;
  std::thread syncer_;
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_AUDIT_WRITER_H_
