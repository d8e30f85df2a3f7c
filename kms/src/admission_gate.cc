#include "strongroom/kms/admission_gate.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <utility>
#include <vector>

namespace strongroom::kms {

double AdmissionGate::RecentService(std::uint64_t client, Clock::time_point now) const {
  if (client == 0) return 0;
  auto found = service_.find(client);
  if (found == service_.end()) return 0;
  const std::chrono::duration<double> since = now - found->second.at;
  return found->second.slots * std::exp2(-since / std::chrono::duration<double>(kServiceHalfLife));
}

void AdmissionGate::Served(std::uint64_t client, Clock::time_point now) {
  if (client == 0) return;
  if (service_.size() >= kMaxClients && !service_.count(client)) {
    // Forget the less served half in one pass: with a new connection per request (no keep-alive)
    // this runs once per kMaxClients / 2 new clients, not on every one.
    std::vector<std::pair<double, std::uint64_t>> by_service;
    by_service.reserve(service_.size());
    for (const auto& [key, ignored] : service_) {
      by_service.emplace_back(RecentService(key, now), key);
    }
    const auto half = by_service.begin() + static_cast<std::ptrdiff_t>(by_service.size() / 2);
    std::nth_element(by_service.begin(), half, by_service.end());
    for (auto it = by_service.begin(); it != half; ++it) service_.erase(it->second);
  }
  const double slots = RecentService(client, now) + 1;
  service_[client] = Service{slots, now};
}

bool AdmissionGate::Enter(std::uint64_t client) {
  std::unique_lock<std::mutex> lock(mutex_);
  const Clock::time_point now = now_();
  if (counters_.busy < slots_ && line_.empty()) {
    ++counters_.busy;
    Served(client, now);
    return true;
  }
  if (max_waiting_ == 0 || max_wait_.count() == 0) {
    ++counters_.refused;
    return false;
  }
  Waiter me;
  me.client = client;
  if (line_.size() >= max_waiting_) {
    // A full line: take the place of the waiter served most, if more than a slot beyond us.
    auto most = line_.end();
    if (client != 0) {
      double most_service = RecentService(client, now) + 1;
      for (auto it = line_.begin(); it != line_.end(); ++it) {
        const double service = RecentService((*it)->client, now);
        if (service > most_service) {
          most_service = service;
          most = it;
        }
      }
    }
    if (most == line_.end()) {
      ++counters_.refused;
      return false;
    }
    Waiter* displaced = *most;
    line_.erase(most);
    displaced->displaced = true;
    displaced->wake.notify_one();
  }
  line_.push_back(&me);
  counters_.waiting = line_.size();
  me.wake.wait_for(lock, max_wait_, [&] { return me.admitted || me.displaced; });
  if (me.admitted) {  // Release() handed its slot over and took us out of the line
    ++counters_.waited;
    Served(client, now_());
    return true;
  }
  if (me.displaced) {
    ++counters_.displaced;  // already out of the line
  } else {
    line_.erase(std::find(line_.begin(), line_.end(), &me));
  }
  counters_.waiting = line_.size();
  ++counters_.refused;
  return false;
}

void AdmissionGate::Release() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (line_.empty()) {
    --counters_.busy;
    return;
  }
  // The slot passes straight to the longest waiter: busy stays the same.
  Waiter* next = line_.front();
  line_.pop_front();
  counters_.waiting = line_.size();
  next->admitted = true;
  next->wake.notify_one();
}

AdmissionGate::Counters AdmissionGate::counters() const {
  std::lock_guard<std::mutex> lock(mutex_);
  Counters counters = counters_;
  counters.remembered = service_.size();
  return counters;
}

}  // namespace strongroom::kms
