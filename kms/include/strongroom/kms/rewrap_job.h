// Root-key rotation and the job that re-wraps an organization's stored keys under the new root
// key version.
//
// Rotate() creates the next root-key version on every token serving the organization (it becomes
// current for new wraps at once), records a job in `rewrap_jobs` and appends a "root.rotate" audit
// record, all in one transaction; then it calls the rotation hook (kmsd clears its KeyCache).
// A later rotation supersedes a running job of the same organization: the new job covers
// everything still below the new current version.
//
// RunOnce() does one batch of the oldest running job: it picks up to `batch` blobs (key blobs,
// search-key blobs (search_keys.h), then the blobs of live ephemeral keys) whose root version is
// below their token's current version, unwraps each with its own token, wraps it again under that
// token's current version (HSM work outside any database transaction), and writes the batch in
// one transaction, each blob only if it is still the one that was read, so nothing is counted or
// written twice, even with a second worker. The job is resumable because it is nothing but its
// row and that query: after a restart, a new RewrapJobs on the same database carries on where the
// last committed batch ended.
//
// A blob that fails its integrity check (DATA_LOSS), is malformed or names a root version its
// token no longer has is counted as failed, recorded in `rewrap_failures` with the reason, and not
// tried again by this job; it is an alarm for an operator, never repaired from another token's
// blob. An outage (token UNAVAILABLE, wrap budget exhausted) stops the batch and is retried by the
// next RunOnce. A job ends "done" when nothing of its organization is left below the current
// version, or "failed" when only blobs that failed are left, but never before its start plus
// kProbeWaitFactor probe intervals: another KMS node on the database wraps new keys under the old
// version until its token probe finds the new one (hsm/key_vault.h), and the batches until then
// re-wrap those too (RewrapBatch::outage says what the job waits for). Ephemeral keys that expired
// or were deleted are not re-wrapped: they are refused anyway. Old root versions are never deleted
// here.
//
// On both engines (database.h: SQLite, PostgreSQL), through Database::Prepare in SQL both accept;
// a job's id is allocated inside the transaction that inserts it, which runs alone on either.
//
// Thread-safe; RunOnce calls are serialized within one RewrapJobs.
#ifndef STRONGROOM_KMS_REWRAP_JOB_H_
#define STRONGROOM_KMS_REWRAP_JOB_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "strongroom/common/database.h"
#include "strongroom/common/error.h"
#include "strongroom/hsm/vault.h"
#include "strongroom/kms/background_job.h"

namespace strongroom::kms {

inline constexpr std::size_t kDefaultRewrapBatch = 256;
inline constexpr std::size_t kMaxRewrapBatch = 4096;
inline constexpr std::size_t kMaxActorBytes = 256;
// A job ends no sooner than this many probe intervals after it started: one for the other nodes'
// probes to find the new version, one for the wraps they began before that to be written.
inline constexpr int kProbeWaitFactor = 2;

// state: "running", "done", "failed" or "superseded"; total: the blobs below the current version
// when the job started; done: those re-wrapped; failed: those that could not be (rewrap_failures).
struct RewrapProgress : JobProgress {
  std::string org;
  std::uint32_t root_version = 0;  // the version the job re-wraps to
};

using RewrapFailure = JobFailure;

// What one RunOnce did.
struct RewrapBatch {
  std::optional<std::int64_t> job_id;  // none: no job is running
  std::size_t rewrapped = 0;
  std::size_t failed = 0;
  bool finished = false;  // the job ended with this batch
  // The batch stopped early, or the job waits (for the other nodes' probes, for missing wraps):
  // RunOnce again later.
  std::optional<Error> outage;
};

class RewrapJobs {
 public:
  using Clock = std::function<std::int64_t()>;  // milliseconds since the epoch
  using RotationHook = std::function<void(const std::string& org)>;

  // `probe_interval`: the longest interval at which any KMS node on this database probes its
  // tokens (kmsd: its own [hsm] probe_interval_ms, which the nodes share); zero for one process.
  RewrapJobs(hsm::Vault& vault, Database& db, Clock clock = {}, RotationHook on_rotated = {},
             std::chrono::milliseconds probe_interval = {});

  // Rotates the org's root key on every token serving it and starts its rewrap job.
  Result<RewrapProgress> Rotate(const std::string& org, const std::string& actor);

  // One batch (1 to kMaxRewrapBatch blobs) of the oldest running job.
  Result<RewrapBatch> RunOnce(std::size_t batch = kDefaultRewrapBatch);

  // The org's latest job; NOT_FOUND if it never rotated.
  Result<RewrapProgress> Progress(const std::string& org);
  // The blobs the job could not re-wrap (at most `limit`).
  Result<std::vector<RewrapFailure>> Failures(std::int64_t job_id, std::size_t limit = 100);

 private:
  struct Candidate;  // a blob below its token's current version
  std::int64_t Now() const;
  // Says in the job's last_error what it waits for (written only when it changes).
  Status NoteWaiting(std::int64_t job_id, const Error& waiting);

  hsm::Vault& vault_;
  Database& db_;
  const Clock clock_;
  const RotationHook on_rotated_;
  const std::chrono::milliseconds probe_interval_;
  std::mutex run_mutex_;
};

// Runs RewrapJobs::RunOnce on a thread of its own (kmsd starts one): batch after batch while a
// job has work, and otherwise every `idle_interval`, or at once after Wake() (a rotation).
class RewrapWorker {
 public:
  RewrapWorker(RewrapJobs& jobs, std::chrono::milliseconds idle_interval,
               std::size_t batch = kDefaultRewrapBatch);
  RewrapWorker(const RewrapWorker&) = delete;
  RewrapWorker& operator=(const RewrapWorker&) = delete;

  void Wake() { worker_.Wake(); }
  void Stop() { worker_.Stop(); }
  // The last error RunOnce returned (a database outage), if the last call failed.
  std::optional<Error> last_error() const { return worker_.last_error(); }

 private:
  JobWorker::Round RunRound();

  RewrapJobs& jobs_;
  const std::size_t batch_;
  JobWorker worker_;  // last: its thread runs RunRound; stopped first
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_REWRAP_JOB_H_
