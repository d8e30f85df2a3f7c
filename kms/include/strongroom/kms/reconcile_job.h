// Reconciliation: every stored key wrapped under every configured token that serves its
// organization.
//
// Vault::Wrap wraps a new key under every token it can, and the KMS stores the blobs it got: a
// token that is down when a key (or a channel key) is made misses it, and the key then hangs on
// the other tokens alone. The reconciliation job finds such keys and wraps them for the tokens
// that lack them, so that losing any one token loses nothing again.
//
// One job at a time, for all organizations; its row in `reconcile_jobs` is all its state. RunOnce()
// does one batch: it pages over the keys (then the search keys, search_keys.h, then the live
// channel keys) in URI order from the job's
// cursor, picking those that lack a wrap under a token that serves their organization and is ready,
// opens each through the vault (failing over between the tokens that hold it), wraps it under each
// token that lacks it with that token's current root version (HSM work outside any transaction),
// and writes the batch and the cursor in one transaction, each blob only if the key still lacks one
// for that token. So the job is resumable: after a crash or a restart a new ReconcileJobs on the
// same database carries on after the last committed batch, and nothing is wrapped or counted twice.
//
// A key whose blobs no token can open for a reason other than an outage (DATA_LOSS, a blob for no
// configured token, a root version the token lacks) is recorded in `reconcile_failures` and not
// tried again by this job: a tampered blob is an alarm, never copied to another token. A key whose
// blobs sit only on tokens that are down, and a token that cannot wrap (down, wrap budget
// exhausted, no root key for the organization), are outages: the key stays missing and is taken up
// again when the token is back.
//
// When the cursor reaches the end of a round the job counts what is missing and ends:
//   - "done": every key and live channel key has a wrap under every token serving its
//     organization (not only the ready ones: a token that is down and lacks keys is never done);
//   - "failed": what is missing is only what failed;
//   - "waiting": what is missing needs a token that is not ready (to wrap for, or the only one
//     holding the key). The job resumes by itself when one of those tokens is ready again, or a
//     minute later;
//   - otherwise a new round (keys that arrived behind the cursor).
//
// The count of keys missing a wrap, per token (Count()), is a query per token over the keys table
// (for a token serving every organization, the keys less the token's blobs: two index counts); it
// is kept, so health and metrics read it without touching the database. Check() is what the worker
// runs before each batch: it counts again when the set of ready tokens changed, every
// `busy_recount` while a token is not ready or something is missing, and every `idle_recount`
// otherwise, but never sooner than ten times as long as the last count took; and it starts a job
// (actor "kms") when a ready token lacks wraps and no job is active.
//
// On both engines (database.h: SQLite, PostgreSQL), through Database::Prepare in SQL both accept;
// a job's id is allocated inside the transaction that inserts it, which runs alone on either.
//
// Thread-safe; RunOnce calls are serialized within one ReconcileJobs.
#ifndef STRONGROOM_KMS_RECONCILE_JOB_H_
#define STRONGROOM_KMS_RECONCILE_JOB_H_

#include <Poco/Data/Session.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "strongroom/common/database.h"
#include "strongroom/common/error.h"
#include "strongroom/hsm/vault.h"
#include "strongroom/kms/background_job.h"

namespace strongroom::kms {

inline constexpr std::size_t kDefaultReconcileBatch = 256;
inline constexpr std::size_t kMaxReconcileBatch = 4096;
// A waiting job looks again this long after it began waiting, even if no token it waits for is
// ready (something else may have changed).
inline constexpr std::int64_t kReconcileWaitingRecheckMs = 60'000;

// Keys (and live channel keys) that lack a wrap under a token serving their organization.
struct MissingWraps {
  std::int64_t counted_ms = 0;
  // Per configured token, in configuration order.
  std::vector<std::pair<std::string, std::int64_t>> by_token;
  std::int64_t total() const;
  std::int64_t of(const std::string& token) const;
};

// state: "running", "waiting", "done" or "failed"; total: the wraps missing when the job, or its
// latest round, began; done: the wraps added; failed: those given up on (reconcile_failures).
struct ReconcileProgress : JobProgress {
  std::string started_by;                // "kms" (started by itself) or the operator
  std::vector<std::string> waiting_for;  // with "waiting": the tokens it needs back
};

using ReconcileFailure = JobFailure;

// What one RunOnce did.
struct ReconcileBatch {
  std::optional<std::int64_t> job_id;  // none: no job is active
  std::size_t wrapped = 0;             // blobs added
  std::size_t failed = 0;
  bool finished = false;        // the job ended ("done" or "failed") with this batch
  std::optional<Error> outage;  // the job waits for a token; RunOnce again later
};

class ReconcileJobs {
 public:
  using Clock = std::function<std::int64_t()>;  // milliseconds since the epoch

  ReconcileJobs(hsm::Vault& vault, Database& db, Clock clock = {});

  // Counts the keys missing a wrap now, per configured token, and keeps the count.
  Result<MissingWraps> Count();
  // The last count; none before the first.
  std::optional<MissingWraps> last_count() const;

  // Starts a job unless one is running or waiting, which is then returned; `started` says which.
  Result<ReconcileProgress> Start(const std::string& actor, bool* started = nullptr);
  // One batch (1 to kMaxReconcileBatch keys) of the active job.
  Result<ReconcileBatch> RunOnce(std::size_t batch = kDefaultReconcileBatch);
  // The latest job; NOT_FOUND if none ever ran.
  Result<ReconcileProgress> Progress();
  Result<std::vector<ReconcileFailure>> Failures(std::int64_t job_id, std::size_t limit = 100);

  // Counts again if due and starts a job if a ready token lacks wraps (see above). A count is
  // never due sooner than `count_spacing` times the last one took after it (on a large database a
  // count takes a while: the worker spends at most a tenth of its time on them); 0 for no floor.
  Status Check(std::chrono::milliseconds busy_recount, std::chrono::milliseconds idle_recount,
               int count_spacing = 10);

  // Per token, the keys of `org` (or of every organization) and its live channel keys that lack a
  // wrap under it, on the caller's session; tokens not serving `org` count 0.
  static Result<MissingWraps> CountMissing(Poco::Data::Session& s, const hsm::Vault& vault,
                                           std::int64_t now_ms,
                                           const std::optional<std::string>& org = std::nullopt);

 private:
  struct Candidate;
  std::int64_t Now() const;
  // Opens a key from its blobs; `outage` says whether a token holding it was unavailable.
  Result<SecretBytes> Open(const hsm::KeyBinding& binding, const std::vector<hsm::TokenBlob>& blobs,
                           bool* outage);
  // Ends the round that just reached the end of the keys: done, failed, waiting or a new round.
  Result<ReconcileBatch> EndRound(ReconcileProgress job, const std::set<std::string>& ready,
                                  std::set<std::string> blocked, ReconcileBatch result);

  hsm::Vault& vault_;
  Database& db_;
  const Clock clock_;
  std::mutex run_mutex_;

  mutable std::mutex count_mutex_;
  std::optional<MissingWraps> last_count_;              // guarded by count_mutex_
  std::set<std::string> counted_ready_;                 // guarded by count_mutex_
  std::chrono::steady_clock::time_point counted_at_{};  // guarded by count_mutex_
  std::chrono::milliseconds count_took_{0};             // guarded by count_mutex_
  std::optional<std::int64_t> failed_leftover_;         // guarded by count_mutex_
};

// Runs ReconcileJobs::Check and RunOnce on a thread of its own (kmsd starts one, whether or not
// the operations listener is configured): batch after batch while a job has work, and otherwise
// every `interval`, or at once after Wake().
class ReconcileWorker {
 public:
  struct Options {
    std::chrono::milliseconds interval{1000};
    std::size_t batch = kDefaultReconcileBatch;
    std::chrono::milliseconds busy_recount{5000};
    std::chrono::milliseconds idle_recount{60000};
  };

  explicit ReconcileWorker(ReconcileJobs& jobs) : ReconcileWorker(jobs, Options{}) {}
  ReconcileWorker(ReconcileJobs& jobs, Options options);
  ReconcileWorker(const ReconcileWorker&) = delete;
  ReconcileWorker& operator=(const ReconcileWorker&) = delete;

  ReconcileJobs& jobs() const { return jobs_; }
  void Wake() { worker_.Wake(); }
  void Stop() { worker_.Stop(); }
  // The last error Check or RunOnce returned (a database outage), if the last round failed.
  std::optional<Error> last_error() const { return worker_.last_error(); }

 private:
  JobWorker::Round RunRound();

  ReconcileJobs& jobs_;
  const Options options_;
  JobWorker worker_;  // last: its thread runs RunRound; stopped first
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_RECONCILE_JOB_H_
