// Admission of requests to a bounded number of slots, first come first served, with a short and
// bounded wait: the overload policy of kmsd's protocol listener.
//
// A request takes a slot at once when one is free and nobody waits. Otherwise it joins a FIFO
// queue of at most `max_waiting` and waits at most `max_wait` for a slot; a freed slot goes to
// the request that has waited longest. A request that finds the queue full, or waits out
// `max_wait`, is refused (the listener answers 503 with Retry-After). So the KMS never queues
// without bound — neither in count nor in time — and, unlike refusing whoever arrives while all
// slots are busy, no client starves while others keep their connections busy: a client refused
// once and retrying later stands in line with everyone else instead of losing every race for a
// freed slot to clients that never let go of one.
//
// Thread-safe.
#ifndef STRONGROOM_KMS_ADMISSION_GATE_H_
#define STRONGROOM_KMS_ADMISSION_GATE_H_

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <list>
#include <mutex>

namespace strongroom::kms {

class AdmissionGate {
 public:
  AdmissionGate(std::size_t slots, std::size_t max_waiting, std::chrono::milliseconds max_wait)
      : slots_(slots), max_waiting_(max_waiting), max_wait_(max_wait) {}
  AdmissionGate(const AdmissionGate&) = delete;
  AdmissionGate& operator=(const AdmissionGate&) = delete;

  // True when the caller holds a slot (and must Release() it); false when refused.
  bool Enter();
  void Release();

  struct Counters {
    std::size_t busy = 0;       // slots held now
    std::size_t waiting = 0;    // requests in line now
    std::uint64_t waited = 0;   // admitted after waiting in line
    std::uint64_t refused = 0;  // queue full or waited out
  };
  Counters counters() const;

 private:
  struct Waiter {
    std::condition_variable wake;
    bool admitted = false;
  };
  const std::size_t slots_;
  const std::size_t max_waiting_;
  const std::chrono::milliseconds max_wait_;
  mutable std::mutex mutex_;
  std::list<Waiter*> line_;
  Counters counters_;
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_ADMISSION_GATE_H_
