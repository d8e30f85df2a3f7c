#include "strongroom/kms/admission_gate.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

namespace strongroom::kms {
namespace {

using std::chrono::milliseconds;

TEST(AdmissionGateTest, FreeSlotsAreTakenAtOnceAndReleased) {
  AdmissionGate gate(2, 0, milliseconds(0));
  EXPECT_TRUE(gate.Enter());
  EXPECT_TRUE(gate.Enter());
  EXPECT_FALSE(gate.Enter());  // no line: refused at once
  EXPECT_EQ(gate.counters().busy, 2u);
  gate.Release();
  EXPECT_TRUE(gate.Enter());
  gate.Release();
  gate.Release();
  EXPECT_EQ(gate.counters().busy, 0u);
  EXPECT_EQ(gate.counters().refused, 1u);
}

TEST(AdmissionGateTest, AWaiterGetsTheReleasedSlotAndAFullLineRefuses) {
  AdmissionGate gate(1, 1, milliseconds(10000));
  ASSERT_TRUE(gate.Enter());
  std::atomic<bool> admitted{false};
  std::thread waiter([&] {
    admitted = gate.Enter();
    if (admitted) gate.Release();
  });
  while (gate.counters().waiting == 0) std::this_thread::yield();
  EXPECT_FALSE(gate.Enter());  // the line (of one) is full
  gate.Release();              // hands the slot to the waiter
  waiter.join();
  EXPECT_TRUE(admitted.load());
  const AdmissionGate::Counters counters = gate.counters();
  EXPECT_EQ(counters.waited, 1u);
  EXPECT_EQ(counters.refused, 1u);
  EXPECT_EQ(counters.busy, 0u);
  EXPECT_EQ(counters.waiting, 0u);
}

TEST(AdmissionGateTest, AWaiterThatWaitsOutItsTimeIsRefusedAndLeavesTheLine) {
  AdmissionGate gate(1, 8, milliseconds(20));
  ASSERT_TRUE(gate.Enter());
  EXPECT_FALSE(gate.Enter());
  EXPECT_EQ(gate.counters().waiting, 0u);
  gate.Release();
  EXPECT_TRUE(gate.Enter());  // nobody left in line: the slot is free again
  gate.Release();
}

TEST(AdmissionGateTest, FreedSlotsGoToTheLongestWaiterFirst) {
  AdmissionGate gate(1, 16, milliseconds(10000));
  ASSERT_TRUE(gate.Enter());
  constexpr int kWaiters = 8;
  std::vector<int> order;
  std::mutex order_mutex;
  std::vector<std::thread> threads;
  for (int i = 0; i < kWaiters; ++i) {
    threads.emplace_back([&, i] {
      ASSERT_TRUE(gate.Enter());
      {
        std::lock_guard<std::mutex> lock(order_mutex);
        order.push_back(i);
      }
      gate.Release();
    });
    // Each joins the line before the next one starts.
    while (gate.counters().waiting != static_cast<std::size_t>(i + 1)) std::this_thread::yield();
  }
  gate.Release();
  for (std::thread& t : threads) t.join();
  ASSERT_EQ(order.size(), static_cast<std::size_t>(kWaiters));
  for (int i = 0; i < kWaiters; ++i) EXPECT_EQ(order[i], i);
}

// Runs gate.Enter(client) on a thread of its own; the result is known after Join().
class Attempt {
 public:
  Attempt(AdmissionGate& gate, std::uint64_t client)
      : thread_([this, &gate, client] { admitted_ = gate.Enter(client); }) {}
  bool Join() {
    thread_.join();
    return admitted_;
  }

 private:
  std::atomic<bool> admitted_{false};
  std::thread thread_;
};

void WaitForLine(const AdmissionGate& gate, std::size_t waiting) {
  while (gate.counters().waiting != waiting) std::this_thread::yield();
}

class AdmissionGateFairnessTest : public ::testing::Test {
 protected:
  AdmissionGate::Clock::time_point Now() const { return start_ + milliseconds(now_ms_.load()); }
  // `times` slots given to `client` and released at once (the gate must be idle).
  static void Serve(AdmissionGate& gate, std::uint64_t client, int times) {
    for (int i = 0; i < times; ++i) {
      ASSERT_TRUE(gate.Enter(client));
      gate.Release();
    }
  }
  const AdmissionGate::Clock::time_point start_ = AdmissionGate::Clock::now();
  std::atomic<std::int64_t> now_ms_{0};
};

// A full line: a client served less takes the place of the waiter served most (by more than a
// slot); that waiter is refused. Clients served alike, and unknown clients, take nobody's place.
TEST_F(AdmissionGateFairnessTest, AClientServedLessTakesThePlaceOfTheWaiterServedMost) {
  AdmissionGate gate(1, 2, milliseconds(60000), [this] { return Now(); });
  Serve(gate, 2, 10);          // client 2 was served ten times just now; 3, 4 and 5 never
  ASSERT_TRUE(gate.Enter(1));  // client 1 holds the slot
  Attempt served_most(gate, 2);
  WaitForLine(gate, 1);
  Attempt never_served(gate, 3);
  WaitForLine(gate, 2);
  Attempt newcomer(gate, 4);  // in, in place of client 2
  EXPECT_FALSE(served_most.Join());
  WaitForLine(gate, 2);
  EXPECT_EQ(gate.counters().displaced, 1u);
  EXPECT_FALSE(gate.Enter(5));  // served no less than anyone in line: refused
  EXPECT_FALSE(gate.Enter(0));  // nobody in particular
  EXPECT_FALSE(gate.Enter(2));  // served most of all

  gate.Release();  // to client 3, who waited longest
  EXPECT_TRUE(never_served.Join());
  gate.Release();
  EXPECT_TRUE(newcomer.Join());
  gate.Release();
  const AdmissionGate::Counters counters = gate.counters();
  EXPECT_EQ(counters.busy, 0u);
  EXPECT_EQ(counters.waiting, 0u);
  EXPECT_EQ(counters.waited, 2u);
  EXPECT_EQ(counters.displaced, 1u);
  EXPECT_EQ(counters.refused, 4u);  // client 2 displaced, then 5, 0 and 2 refused
}

// Service fades by half every kServiceHalfLife: ten slots ten seconds ago count for nothing.
TEST_F(AdmissionGateFairnessTest, ServiceLongAgoCountsForNothing) {
  AdmissionGate gate(1, 1, milliseconds(60000), [this] { return Now(); });
  Serve(gate, 2, 10);
  now_ms_ += 10 * AdmissionGate::kServiceHalfLife.count();
  ASSERT_TRUE(gate.Enter(1));
  Attempt waiting(gate, 2);
  WaitForLine(gate, 1);
  EXPECT_FALSE(gate.Enter(3));  // client 2's ten slots have faded to 0.01: it keeps its place
  EXPECT_EQ(gate.counters().displaced, 0u);
  gate.Release();
  EXPECT_TRUE(waiting.Join());
  gate.Release();

  // ... while the same ten slots a second ago still count for five.
  Serve(gate, 2, 10);
  now_ms_ += AdmissionGate::kServiceHalfLife.count();
  ASSERT_TRUE(gate.Enter(1));
  Attempt again(gate, 2);
  WaitForLine(gate, 1);
  Attempt fresh(gate, 3);
  EXPECT_FALSE(again.Join());
  gate.Release();
  EXPECT_TRUE(fresh.Join());
  gate.Release();
}

// The clients remembered are bounded; when the bound is reached the less served half goes, so a
// client served much is still known after a flood of one-request connections.
TEST_F(AdmissionGateFairnessTest, RememberedClientsAreBoundedAndTheMostServedKept) {
  AdmissionGate gate(1, 1, milliseconds(60000), [this] { return Now(); });
  Serve(gate, 7, 10);
  for (std::uint64_t client = 1000; client < 1000 + 3 * AdmissionGate::kMaxClients; ++client) {
    Serve(gate, client, 1);
  }
  EXPECT_LE(gate.counters().remembered, AdmissionGate::kMaxClients);
  EXPECT_GE(gate.counters().remembered, AdmissionGate::kMaxClients / 2);
  ASSERT_TRUE(gate.Enter(1));
  Attempt served_much(gate, 7);
  WaitForLine(gate, 1);
  Attempt fresh(gate, 99);  // served less than client 7, who is still remembered
  EXPECT_FALSE(served_much.Join());
  gate.Release();
  EXPECT_TRUE(fresh.Join());
  gate.Release();
}

}  // namespace
}  // namespace strongroom::kms
