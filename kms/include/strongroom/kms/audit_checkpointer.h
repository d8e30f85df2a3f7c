// kmsd's background job that signs checkpoints of the audit chain (audit_checkpoints.h) with the
// KMS's identity key in the HSM.
//
// It signs the chain's head when `every_records` records follow the last checkpoint, when a
// record has waited about `every` unsigned, once at start (whatever an earlier run left
// unsigned) and once more when it is destroyed (a clean shutdown: after the group-commit writer
// has committed its last batch). Signing is an RSA operation in the HSM (milliseconds), so it runs
// on this job's own thread: the group-commit writer only tells it how many records it committed
// (Appended, an atomic add), and records appended inside other transactions are found by reading
// the head every poll (at most a second). A checkpoint that cannot be signed (the HSM is down) is
// logged and tried again at the next poll; nothing else waits for it.
//
// Thread-safe.
#ifndef STRONGROOM_KMS_AUDIT_CHECKPOINTER_H_
#define STRONGROOM_KMS_AUDIT_CHECKPOINTER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "strongroom/common/database.h"
#include "strongroom/common/jose.h"
#include "strongroom/kms/audit_checkpoints.h"

namespace strongroom::kms {

// The key a checkpoint is signed with.
struct CheckpointKey {
  std::string kid;       // AuditCheckpoints::Thumbprint of the identity key
  jose::JwsSigner sign;  // PS256 with the identity key, in the HSM
};

struct AuditCheckpointerOptions {
  std::string kms;  // kms://<host>
  // The identity key to sign the next checkpoint with: asked each time, since the identity in
  // service changes when a token fails (kms_identities.h).
  std::function<CheckpointKey()> key;
  std::int64_t every_records = kAuditCheckpointRecords;        // 1 to kAuditCheckpointRecords
  std::chrono::milliseconds every = kAuditCheckpointInterval;  // > 0
  std::function<std::int64_t()> clock;                         // ms since the epoch; default: now
  std::function<void(const std::string&)> log;                 // default: stderr, "kmsd: " first
};

class AuditCheckpointer {
 public:
  AuditCheckpointer(Database& db, AuditCheckpointerOptions options);
  // Stops the job, then signs whatever is unsigned.
  ~AuditCheckpointer();
  AuditCheckpointer(const AuditCheckpointer&) = delete;
  AuditCheckpointer& operator=(const AuditCheckpointer&) = delete;

  // `records` more records were committed (the group-commit writer, after each batch).
  void Appended(std::size_t records);

  struct Stats {
    std::uint64_t checkpoints = 0;  // signed and stored by this job
    std::uint64_t failures = 0;     // attempts that failed (HSM or database)
  };
  Stats stats() const;

 private:
  void Run(bool sign_at_start);
  // Signs the head if it is unsigned; true when nothing is left unsigned.
  bool Checkpoint();
  void Log(const std::string& line) const;

  Database& db_;
  const AuditCheckpointerOptions options_;
  std::atomic<std::int64_t> pending_{0};  // records committed since the job last looked
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool failing_ = false;  // the last attempt failed (logged once per streak)
  Stats stats_;
  std::thread thread_;
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_AUDIT_CHECKPOINTER_H_
