// What the KMS's background jobs over every stored key share (the rewrap job after a root-key
// rotation, rewrap_job.h; the reconciliation of wraps a token missed, reconcile_job.h): the
// thread that runs their rounds, and the progress and failures they keep for the operator.
#ifndef STRONGROOM_KMS_BACKGROUND_JOB_H_
#define STRONGROOM_KMS_BACKGROUND_JOB_H_

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "strongroom/common/database.h"
#include "strongroom/common/error.h"
#include "strongroom/common/sql_statement.h"

namespace strongroom::kms {

// How far a job has come.
struct JobProgress {
  std::int64_t job_id = 0;
  std::string state;           // "running", "done", "failed", and others of each job's own
  std::int64_t total = 0;      // what the job has to do
  std::int64_t done = 0;       // what it did
  std::int64_t failed = 0;     // given up on (see JobFailure)
  double rate_per_second = 0;  // done per second between started and updated
  std::int64_t started_ms = 0;
  std::int64_t updated_ms = 0;
  std::string last_error;  // the last failure or outage, for operators; never secrets
};

// The columns every job table has, in the order ReadJobProgress reads them: a job's SELECT begins
// with them and names its own columns after them (from column kJobProgressColumnCount on).
inline constexpr char kJobProgressColumns[] =
    "id, state, total, done, failed, started_ms, updated_ms, last_error";
inline constexpr int kJobProgressColumnCount = 8;

// Reads kJobProgressColumns from the current row, and works out the rate.
void ReadJobProgress(const SqlStatement& row, JobProgress& progress);

// A failure or outage as a job keeps it (last_error, a JobFailure's error): cut to
// kMaxJobErrorText bytes.
inline constexpr std::size_t kMaxJobErrorText = 1024;
std::string BoundedJobError(std::string text);

// INVALID_ARGUMENT "the <job> batch must be 1 to <max>" unless 1 <= batch <= max.
Status CheckJobBatch(std::string_view job, std::size_t batch, std::size_t max);

// One stored key a job could not process, as the operator sees it in the job's progress.
struct JobFailure {
  std::string kind;  // "key" or "ephemeral"
  std::string uri;
  std::string token;  // the token it could not be wrapped under
  std::string error;
};

// The first `limit` (1 to 1000) failures of job `job_id` kept in `table` (rewrap_failures or
// reconcile_failures), in (kind, uri, token) order.
Result<std::vector<JobFailure>> ReadJobFailures(Database& db, std::string_view table,
                                                std::int64_t job_id, std::size_t limit);

// A thread that runs a job's rounds: round after round while the job says more work is waiting,
// and otherwise every `interval`, or at once after Wake(). Thread-safe.
class JobWorker {
 public:
  struct Round {
    bool busy = false;           // more work is waiting now: run the next round at once
    std::optional<Error> error;  // the round failed (a database outage); kept until one succeeds
  };
  using RunRound = std::function<Round()>;

  // Starts the thread; the first round runs at once.
  JobWorker(std::chrono::milliseconds interval, RunRound run_round);
  ~JobWorker();  // stops and joins
  JobWorker(const JobWorker&) = delete;
  JobWorker& operator=(const JobWorker&) = delete;

  void Wake();
  // Waits for the round in progress, if any; no round runs after it.
  void Stop();
  // The error of the last round, if it failed.
  std::optional<Error> last_error() const;

 private:
  void Loop();

  const std::chrono::milliseconds interval_;
  const RunRound run_round_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  bool woken_ = false;
  std::optional<Error> last_error_;
  std::thread thread_;  // last: started once the members above exist
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_BACKGROUND_JOB_H_
