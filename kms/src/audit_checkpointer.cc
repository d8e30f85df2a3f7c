#include "strongroom/kms/audit_checkpointer.h"

#include <algorithm>
#include <iostream>

#include "strongroom/common/rfc3339.h"

namespace strongroom::kms {

using std::chrono_literals::operator""ms;

AuditCheckpointer::AuditCheckpointer(Database& db, AuditCheckpointerOptions options)
    : db_(db), options_(std::move(options)) {
  // Records an earlier run left unsigned are signed at once; those appended from now on wait for
  // the cadence.
  Result<std::int64_t> waiting = AuditCheckpoints::Unsigned(db_);
  const bool sign_at_start = !waiting.ok() || *waiting > 0;
  thread_ = std::thread([this, sign_at_start] { Run(sign_at_start); });
}

AuditCheckpointer::~AuditCheckpointer() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
  (void)Checkpoint();  // whatever the last turn left unsigned
}

void AuditCheckpointer::Appended(std::size_t records) {
  const auto n = static_cast<std::int64_t>(records);
  const std::int64_t before = pending_.fetch_add(n);
  if (before < options_.every_records && before + n >= options_.every_records) {
    std::lock_guard lock(mutex_);  // so the job cannot miss the wake-up between test and wait
    wake_.notify_one();
  }
}

AuditCheckpointer::Stats AuditCheckpointer::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void AuditCheckpointer::Run(bool sign_at_start) {
  const std::chrono::milliseconds poll = std::min(options_.every, std::chrono::milliseconds(1000));
  // Since when every record older than this was signed: the time trigger counts from here.
  auto clean_since = std::chrono::steady_clock::now() - (sign_at_start ? options_.every : 0ms);
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    lock.unlock();
    pending_.store(0);
    const auto now = std::chrono::steady_clock::now();
    Result<std::int64_t> waiting = AuditCheckpoints::Unsigned(db_);
    if (waiting.ok() && *waiting == 0) clean_since = now;
    const bool due = waiting.ok() && (*waiting >= options_.every_records ||
                                      (*waiting > 0 && now - clean_since >= options_.every));
    if (due && Checkpoint()) clean_since = now;
    lock.lock();
    wake_.wait_for(lock, poll,
                   [&] { return stopping_ || pending_.load() >= options_.every_records; });
  }
}

bool AuditCheckpointer::Checkpoint() {
  const std::int64_t now_ms = options_.clock ? options_.clock() : UnixNowMs();
  const CheckpointKey key = options_.key();
  Result<std::optional<AuditCheckpoint>> signed_head =
      AuditCheckpoints::SignHead(db_, options_.kms, key.kid, key.sign, now_ms);
  bool was_failing = false;
  {
    std::lock_guard lock(mutex_);
    was_failing = failing_;
    failing_ = !signed_head.ok();
    if (!signed_head.ok()) {
      ++stats_.failures;
    } else if (signed_head->has_value()) {
      ++stats_.checkpoints;
    }
  }
  if (!signed_head.ok() && !was_failing) {
    Log("audit: cannot sign a checkpoint of the audit log (retrying): " +
        signed_head.error().ToString());
  } else if (signed_head.ok() && was_failing) {
    Log("audit: checkpoints of the audit log are signed again");
  }
  return signed_head.ok();
}

void AuditCheckpointer::Log(const std::string& line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::cerr << "kmsd: " << line << std::endl;
  }
}

}  // namespace strongroom::kms
