// The session pool against a real SoftHSM2 token.
#include "strongroom/hsm/session_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "../support/softhsm_sandbox.h"
#include "strongroom/hsm/token.h"

namespace strongroom::hsm {
namespace {

using namespace std::chrono_literals;
using testing::kSoftHsmModule;
using testing::SoftHsmSandbox;

class SessionPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string label = SoftHsmSandbox::Get().CreateToken(kSoftHsmModule);
    TokenConfig config;
    config.name = "pool-test";
    config.uri = SoftHsmSandbox::Get().Uri(kSoftHsmModule, label);
    auto token = Token::Open(config);  // finds the slot and logs in
    ASSERT_TRUE(token.ok()) << token.error().ToString();
    token_ = std::move(token).value();
  }
  static auto In(std::chrono::milliseconds ms) { return std::chrono::steady_clock::now() + ms; }
  std::unique_ptr<Token> token_;
};

TEST_F(SessionPoolTest, LeasesAreExclusiveAndBounded) {
  std::shared_ptr<Module> module = *Module::Load(kSoftHsmModule);
  SessionPool pool(module, token_->slot(), 2, "pool-test");
  auto a = pool.Acquire(In(1s));
  auto b = pool.Acquire(In(1s));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->handle(), b->handle());
  EXPECT_EQ(pool.stats().open, 2u);
}

TEST_F(SessionPoolTest, ExhaustedPoolGivesUpAtTheDeadline) {
  std::shared_ptr<Module> module = *Module::Load(kSoftHsmModule);
  SessionPool pool(module, token_->slot(), 1, "pool-test");
  std::optional<Result<SessionLease>> held(pool.Acquire(In(1s)));
  ASSERT_TRUE(held->ok());
  auto start = std::chrono::steady_clock::now();
  auto refused = pool.Acquire(In(100ms));
  auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kUnavailable);
  EXPECT_NE(refused.error().message().find("pool-test"), std::string::npos);
  EXPECT_GE(waited, 100ms);
  EXPECT_EQ(pool.stats().timed_out, 1u);
  EXPECT_EQ(pool.stats().waited, 1u);
  // The time lost to the timeout is counted as wait time.
  EXPECT_GE(pool.stats().wait_micros, 100'000u);
  held.reset();  // the lease goes back
  EXPECT_TRUE(pool.Acquire(In(100ms)).ok());
}

TEST_F(SessionPoolTest, WaiterGetsTheSessionWhenItIsReturned) {
  std::shared_ptr<Module> module = *Module::Load(kSoftHsmModule);
  SessionPool pool(module, token_->slot(), 1, "pool-test");
  std::optional<Result<SessionLease>> held(pool.Acquire(In(1s)));
  const CK_SESSION_HANDLE handle = (*held)->handle();
  std::thread releaser([&] {
    std::this_thread::sleep_for(50ms);
    held.reset();
  });
  auto got = pool.Acquire(In(10s));
  releaser.join();
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(got->handle(), handle);  // the same session, reused
  EXPECT_EQ(pool.stats().waited, 1u);
  EXPECT_EQ(pool.stats().open, 1u);
}

TEST_F(SessionPoolTest, AReturnedSessionGoesToTheLongestWaiterNotBackToItsHolder) {
  std::shared_ptr<Module> module = *Module::Load(kSoftHsmModule);
  SessionPool pool(module, token_->slot(), 1, "pool-test");
  std::optional<Result<SessionLease>> held(pool.Acquire(In(1s)));
  std::atomic<bool> waiter_served{false};
  std::thread waiter([&] {
    auto lease = pool.Acquire(In(10s));
    ASSERT_TRUE(lease.ok());
    waiter_served = true;
    std::this_thread::sleep_for(20ms);
  });
  while (pool.stats().waited == 0) std::this_thread::yield();
  held.reset();                        // give it back ...
  auto again = pool.Acquire(In(10s));  // ... and at once ask again, as a busy caller would
  EXPECT_TRUE(waiter_served.load());   // the queued caller was served first
  ASSERT_TRUE(again.ok());
  waiter.join();
}

TEST_F(SessionPoolTest, WaitersAreServedInArrivalOrder) {
  std::shared_ptr<Module> module = *Module::Load(kSoftHsmModule);
  SessionPool pool(module, token_->slot(), 1, "pool-test");
  std::optional<Result<SessionLease>> held(pool.Acquire(In(1s)));
  std::mutex order_mutex;
  std::vector<int> order;
  std::vector<std::thread> waiters;
  for (int i = 0; i < 4; ++i) {
    waiters.emplace_back([&, i] {
      auto lease = pool.Acquire(In(10s));
      std::lock_guard lock(order_mutex);
      order.push_back(i);
    });
    while (pool.stats().waited < static_cast<std::uint64_t>(i + 1)) std::this_thread::yield();
  }
  held.reset();
  for (auto& t : waiters) t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3}));
}

TEST_F(SessionPoolTest, BrokenSessionIsClosedAndReplaced) {
  std::shared_ptr<Module> module = *Module::Load(kSoftHsmModule);
  SessionPool pool(module, token_->slot(), 1, "pool-test");
  CK_SESSION_HANDLE first;
  {
    auto lease = pool.Acquire(In(1s));
    ASSERT_TRUE(lease.ok());
    first = lease->handle();
    lease->MarkBroken();
  }
  EXPECT_EQ(pool.stats().open, 0u);
  EXPECT_EQ(pool.stats().replaced, 1u);
  CK_SESSION_INFO info;
  EXPECT_EQ(module->fn()->C_GetSessionInfo(first, &info), CKR_SESSION_HANDLE_INVALID);
  auto next = pool.Acquire(In(1s));
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(module->fn()->C_GetSessionInfo(next->handle(), &info), CKR_OK);
}

TEST_F(SessionPoolTest, ReturnedSessionsAreUsedFirstInFirstOut) {
  std::shared_ptr<Module> module = *Module::Load(kSoftHsmModule);
  SessionPool pool(module, token_->slot(), 2, "pool-test");
  CK_SESSION_HANDLE first, second;
  {
    auto a = pool.Acquire(In(1s));
    auto b = pool.Acquire(In(1s));
    first = a->handle();
    second = b->handle();
  }  // b is destroyed first, then a: idle order is [b, a]
  auto next = pool.Acquire(In(1s));
  EXPECT_EQ(next->handle(), second);
  (void)first;
}

}  // namespace
}  // namespace strongroom::hsm
