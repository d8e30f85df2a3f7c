// Waiting in tests for what must happen, never for how fast: `condition` is polled until it holds
// or `patience` (a minute unless given) is over, and a test asserts the result. Nothing is timed.
#ifndef STRONGROOM_TESTS_SUPPORT_WAIT_UNTIL_H_
#define STRONGROOM_TESTS_SUPPORT_WAIT_UNTIL_H_

#include <chrono>
#include <functional>
#include <thread>

namespace strongroom::testing {

inline bool WaitUntil(const std::function<bool()>& condition,
                      std::chrono::milliseconds poll = std::chrono::milliseconds(20),
                      std::chrono::milliseconds patience = std::chrono::minutes(1)) {
  const auto deadline = std::chrono::steady_clock::now() + patience;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(poll);
  }
  return condition();
}

}  // namespace strongroom::testing

#endif  // STRONGROOM_TESTS_SUPPORT_WAIT_UNTIL_H_
