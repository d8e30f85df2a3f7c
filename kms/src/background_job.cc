#include "strongroom/kms/background_job.h"

#include <utility>

namespace strongroom::kms {

void ReadJobProgress(const SqlStatement& row, JobProgress& p) {
  p.job_id = row.Int(0);
  p.state = row.Text(1);
  p.total = row.Int(2);
  p.done = row.Int(3);
  p.failed = row.Int(4);
  p.started_ms = row.Int(5);
  p.updated_ms = row.Int(6);
  p.last_error = row.Text(7);
  if (p.updated_ms > p.started_ms) {
    p.rate_per_second =
        static_cast<double>(p.done) * 1000.0 / static_cast<double>(p.updated_ms - p.started_ms);
  }
}

std::string BoundedJobError(std::string text) {
  if (text.size() > kMaxJobErrorText) text.resize(kMaxJobErrorText);
  return text;
}

Status CheckJobBatch(std::string_view job, std::size_t batch, std::size_t max) {
  if (batch == 0 || batch > max) {
    return Error(ErrorCode::kInvalidArgument,
                 "the " + std::string(job) + " batch must be 1 to " + std::to_string(max));
  }
  return OkStatus();
}

Result<std::vector<JobFailure>> ReadJobFailures(Database& db, std::string_view table,
                                                std::int64_t job_id, std::size_t limit) {
  if (limit == 0 || limit > 1000) {
    return Error(ErrorCode::kInvalidArgument, "limit must be 1 to 1000");
  }
  std::vector<JobFailure> out;
  SR_RETURN_IF_ERROR(db.WithSession([&](Poco::Data::Session& s) -> Status {
    SqlStatement select =
        Database::Prepare(s, "SELECT kind, uri, token, error FROM " + std::string(table) +
                                 " WHERE job_id = ? ORDER BY kind, uri, token LIMIT ?");
    select.Bind(job_id).Bind(static_cast<std::int64_t>(limit));
    while (select.Next()) {
      out.push_back({select.Text(0), select.Text(1), select.Text(2), select.Text(3)});
    }
    return OkStatus();
  }));
  return out;
}

JobWorker::JobWorker(std::chrono::milliseconds interval, RunRound run_round)
    : interval_(interval), run_round_(std::move(run_round)), thread_([this] { Loop(); }) {}

JobWorker::~JobWorker() { Stop(); }

void JobWorker::Wake() {
  std::lock_guard lock(mutex_);
  woken_ = true;
  wake_.notify_one();
}

void JobWorker::Stop() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
    wake_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
}

std::optional<Error> JobWorker::last_error() const {
  std::lock_guard lock(mutex_);
  return last_error_;
}

void JobWorker::Loop() {
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (stop_) return;
    }
    Round round = run_round_();
    std::unique_lock lock(mutex_);
    last_error_ = std::move(round.error);
    if (round.busy) continue;  // more of the job is waiting
    wake_.wait_for(lock, interval_, [this] { return stop_ || woken_; });
    woken_ = false;
  }
}

}  // namespace strongroom::kms
