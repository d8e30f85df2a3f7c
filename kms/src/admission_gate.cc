#include "strongroom/kms/admission_gate.h"

#include <algorithm>
#include <cmath>

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
    // Forget whoever has faded to almost nothing; if nobody has, the least served.
    std::erase_if(service_,
                  [&](const auto& entry) { return RecentService(entry.first, now) < 0.01; });
    if (service_.size() >= kMaxClients) {
      service_.erase(
          std::min_element(service_.begin(), service_.end(), [&](const auto& a, const auto& b) {
            return RecentService(a.first, now) < RecentService(b.first, now);
          }));
    }
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
  return counters_;
}

}  // namespace strongroom::kms
