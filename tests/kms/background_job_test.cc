#include "strongroom/kms/background_job.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

namespace strongroom::kms {
namespace {

using std::chrono::milliseconds;

// Counts rounds and lets the test choose what each round answers.
class Rounds {
 public:
  JobWorker::Round Run() {
    std::lock_guard lock(mutex_);
    ++count_;
    changed_.notify_all();
    JobWorker::Round round{.busy = busy_left_ > 0, .error = error_};
    if (busy_left_ > 0) --busy_left_;
    return round;
  }
  void Set(int busy_left, std::optional<Error> error) {
    std::lock_guard lock(mutex_);
    busy_left_ = busy_left;
    error_ = std::move(error);
  }
  int count() {
    std::lock_guard lock(mutex_);
    return count_;
  }
  // Waits (at most a minute: a hang fails rather than blocks the suite) for `n` rounds in all.
  bool WaitFor(int n) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, std::chrono::minutes(1), [&] { return count_ >= n; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  int count_ = 0;
  int busy_left_ = 0;
  std::optional<Error> error_;
};

constexpr milliseconds kNever{std::chrono::hours(1)};

TEST(JobWorkerTest, RunsRoundAfterRoundWhileBusyThenWaitsForAWake) {
  Rounds rounds;
  rounds.Set(4, std::nullopt);  // the first four rounds say more is waiting
  JobWorker worker(kNever, [&] { return rounds.Run(); });
  ASSERT_TRUE(rounds.WaitFor(5));  // four busy rounds and the idle one after them
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(rounds.count(), 5);  // then it waits: the interval is an hour

  worker.Wake();
  ASSERT_TRUE(rounds.WaitFor(6));
  worker.Stop();
  const int stopped_at = rounds.count();
  worker.Wake();
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(rounds.count(), stopped_at);  // no round after Stop
}

TEST(JobWorkerTest, RunsAgainEveryIntervalWhenIdle) {
  Rounds rounds;
  JobWorker worker(milliseconds(10), [&] { return rounds.Run(); });
  EXPECT_TRUE(rounds.WaitFor(3));
}

TEST(JobWorkerTest, KeepsTheLastRoundsErrorUntilARoundSucceeds) {
  Rounds rounds;
  rounds.Set(0, Error(ErrorCode::kUnavailable, "database is down"));
  JobWorker worker(kNever, [&] { return rounds.Run(); });
  ASSERT_TRUE(rounds.WaitFor(1));
  worker.Stop();  // the round's result is recorded before Stop returns
  ASSERT_TRUE(worker.last_error().has_value());
  EXPECT_EQ(worker.last_error()->code(), ErrorCode::kUnavailable);

  Rounds healed;
  healed.Set(0, Error(ErrorCode::kUnavailable, "database is down"));
  JobWorker second(kNever, [&] { return healed.Run(); });
  ASSERT_TRUE(healed.WaitFor(1));
  healed.Set(0, std::nullopt);
  second.Wake();
  ASSERT_TRUE(healed.WaitFor(2));
  second.Stop();
  EXPECT_FALSE(second.last_error().has_value());
}

}  // namespace
}  // namespace strongroom::kms
