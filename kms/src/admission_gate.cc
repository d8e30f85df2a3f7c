#include "strongroom/kms/admission_gate.h"

#include <algorithm>

namespace strongroom::kms {

bool AdmissionGate::Enter() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (counters_.busy < slots_ && line_.empty()) {
    ++counters_.busy;
    return true;
  }
  if (line_.size() >= max_waiting_ || max_wait_.count() == 0) {
    ++counters_.refused;
    return false;
  }
  Waiter me;
  line_.push_back(&me);
  counters_.waiting = line_.size();
  me.wake.wait_for(lock, max_wait_, [&] { return me.admitted; });
  if (me.admitted) {  // Release() handed its slot over and took us out of the line
    ++counters_.waited;
    return true;
  }
  line_.erase(std::find(line_.begin(), line_.end(), &me));
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
