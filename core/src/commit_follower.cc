#include "commit_follower.h"

#include <utility>

namespace strongroom::core::internal {

CommitFollower::CommitFollower(Database& db, std::chrono::milliseconds poll_interval,
                               std::int64_t published_through, Publish publish)
    : db_(db),
      poll_interval_(poll_interval),
      publish_(std::move(publish)),
      published_through_(published_through),
      thread_([this] { Run(); }) {}

CommitFollower::~CommitFollower() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void CommitFollower::Wake() {
  {
    std::lock_guard lock(mutex_);
    woken_ = true;
  }
  wake_.notify_one();
}

void CommitFollower::Run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, poll_interval_, [&] { return woken_ || stopping_; });
    if (stopping_) return;
    // A wake that comes while this reads is kept for the next turn: its commit may be after the
    // read's snapshot.
    woken_ = false;
    lock.unlock();
    CatchUp();
    lock.lock();
  }
}

void CommitFollower::CatchUp() {
  for (;;) {
    std::vector<StoredCommit> page;
    const std::int64_t after = published_through_.load();
    const Status read = Read(db_, [&](Poco::Data::Session& s) -> Status {
      page = CoreStore::CommittedAfter(s, after, kPage);
      return OkStatus();
    });
    // A failed read is tried again from the same seq at the next wake or poll; subscribers lose
    // nothing meanwhile (they catch up from the store when they reconnect).
    if (!read.ok() || page.empty()) return;
    publish_(page);
    published_through_.store(page.back().activity.seq);
    if (page.size() < kPage) return;
  }
}

}  // namespace strongroom::core::internal
