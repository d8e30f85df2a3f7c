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
// When the line itself is full (an operator set it shorter than the number of clients), the
// clients in it re-enter it as soon as they are answered, and a refused client that honours
// Retry-After would find it full again and again. So each client's recent service is kept: the
// slots it was given, fading by half every `kServiceHalfLife`. A request that finds the line full
// takes the place of the waiter whose client was served most recently and most, if that is more
// than one slot beyond its own; that waiter is refused instead. Clients are told apart by a key
// the caller chooses (kmsd: the connection); key 0 is nobody in particular and takes nobody's
// place.
//
// Thread-safe.
#ifndef STRONGROOM_KMS_ADMISSION_GATE_H_
#define STRONGROOM_KMS_ADMISSION_GATE_H_

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <unordered_map>

namespace strongroom::kms {

class AdmissionGate {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kServiceHalfLife{1000};
  // At most this many clients' service is remembered; when full, the less served half is
  // forgotten.
  static constexpr std::size_t kMaxClients = 4096;

  AdmissionGate(std::size_t slots, std::size_t max_waiting, std::chrono::milliseconds max_wait,
                std::function<Clock::time_point()> now = Clock::now)
      : slots_(slots), max_waiting_(max_waiting), max_wait_(max_wait), now_(std::move(now)) {}
  AdmissionGate(const AdmissionGate&) = delete;
  AdmissionGate& operator=(const AdmissionGate&) = delete;

  // True when the caller holds a slot (and must Release() it); false when refused. `client`
  // identifies who asks (0: unknown).
  bool Enter(std::uint64_t client = 0);
  void Release();

  struct Counters {
    std::size_t busy = 0;         // slots held now
    std::size_t waiting = 0;      // requests in line now
    std::uint64_t waited = 0;     // admitted after waiting in line
    std::uint64_t refused = 0;    // queue full, waited out, or displaced
    std::uint64_t displaced = 0;  // refused while waiting, for a client served less
    std::size_t remembered = 0;   // clients whose recent service is kept (<= kMaxClients)
  };
  Counters counters() const;

 private:
  struct Waiter {
    std::uint64_t client = 0;
    std::condition_variable wake;
    bool admitted = false;
    bool displaced = false;
  };
  struct Service {
    double slots = 0;  // as of `at`
    Clock::time_point at;
  };
  // mutex_ held. The client's recent service as of `now`; Served() adds a slot given.
  double RecentService(std::uint64_t client, Clock::time_point now) const;
  void Served(std::uint64_t client, Clock::time_point now);
  const std::size_t slots_;
  const std::size_t max_waiting_;
  const std::chrono::milliseconds max_wait_;
  const std::function<Clock::time_point()> now_;
  mutable std::mutex mutex_;
  std::list<Waiter*> line_;
  std::unordered_map<std::uint64_t, Service> service_;
  Counters counters_;
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_ADMISSION_GATE_H_
