// Unbound keys created ahead of need, so creating a conversation or rotating its key takes a key
// at once instead of waiting for `create /keys` at the KMS.
//
// Take() hands out a pooled key that still has at least `min_bind_time` before its bind deadline
// (keys closer to it are dropped, zeroized: a key bound too late is refused by the KMS). When the
// pool falls below `low_water`, it is topped up to `target` in one create: on its own thread
// (`background`, the default for long-running clients) or, without one, by the Take() that finds
// it empty (a command-line run that needs one key creates a few, never waits twice). A Take() on an
// empty pool creates keys itself either way.
//
// Thread-safe. The destructor stops the refill thread (waiting for a create in flight).
#ifndef STRONGROOM_CLIENT_KEY_POOL_H_
#define STRONGROOM_CLIENT_KEY_POOL_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "strongroom/client/kms_objects.h"
#include "strongroom/common/error.h"

namespace strongroom::client {

struct KeyPoolOptions {
  std::size_t target = 8;     // keys held after a refill (1-100)
  std::size_t low_water = 2;  // a refill starts when fewer are left
  bool background = true;
  std::chrono::milliseconds min_bind_time{std::chrono::seconds(120)};
  std::function<std::int64_t()> now_ms = {};  // default: the system clock
};

class KeyPool {
 public:
  // Makes `count` (1-100) unbound keys: KmsContext::CreateKeys, usually.
  using Creator = std::function<Result<std::vector<KmsKey>>(std::size_t count)>;

  KeyPool(Creator create, KeyPoolOptions options = {});
  ~KeyPool();
  KeyPool(const KeyPool&) = delete;
  KeyPool& operator=(const KeyPool&) = delete;

  Result<KmsKey> Take();
  // Tops the pool up to `target` now, on the calling thread.
  Status Fill();
  // Starts a background refill if the pool is below low water (no-op without `background`).
  void Nudge();

  std::size_t size() const;
  struct Stats {
    std::size_t creates = 0;  // calls of the creator
    std::size_t created = 0;  // keys it made
    std::size_t expired = 0;  // keys dropped near their bind deadline
    std::size_t taken = 0;
  };
  Stats stats() const;
  // The last background refill's failure, if it failed.
  std::optional<Error> last_error() const;

 private:
  void DropExpired();  // mutex_ held
  // Creates `want` keys into the pool; with `claim`, moves one of them into it.
  Status Refill(std::size_t want, std::optional<KmsKey>* claim);
  void Loop();

  const Creator create_;
  const KeyPoolOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<KmsKey> keys_;
  Stats stats_;
  std::optional<Error> last_error_;
  bool refill_wanted_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace strongroom::client

#endif  // STRONGROOM_CLIENT_KEY_POOL_H_
