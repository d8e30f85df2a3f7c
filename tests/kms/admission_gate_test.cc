#include "strongroom/kms/admission_gate.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
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

}  // namespace
}  // namespace strongroom::kms
