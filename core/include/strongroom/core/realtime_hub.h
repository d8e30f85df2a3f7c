// Realtime delivery: each connected client holds a WebSocket (GET /v1/events?cursor=<seq>) on
// which cored pushes the activities it may see, in sequence order, as text frames
// {"events": [activity, ...]}.
//
// Exactly once and in order, across reconnects: a client remembers the seq of the last activity
// it received and reconnects with it as the cursor. The hub registers the connection first (from
// then on every committed activity for the user is queued for it), then replays what the store
// has after the cursor (CoreService::EventsSince), then drains the queue, skipping what the replay
// already sent. The service publishes activities in commit order, so nothing falls between the
// replay and the queue and nothing is sent twice.
//
// Slow clients: each connection's queue is bounded (max_queued); one that overflows drops its
// queue and catches up from the store instead, so memory stays bounded and nothing is lost. A
// connection whose sends block longer than send_timeout is closed (the client reconnects with its
// cursor). Idle connections get a ping every ping_interval.
//
// One thread per connection (the HTTP server's): it is the only one that reads or writes its
// socket, as OpenSSL requires.
#ifndef STRONGROOM_CORE_REALTIME_HUB_H_
#define STRONGROOM_CORE_REALTIME_HUB_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "strongroom/core/core_service.h"

namespace Poco::Net {
class WebSocket;
}

namespace strongroom::core {

struct RealtimeOptions {
  std::size_t max_queued = 4096;  // activities queued per connection before it catches up
  std::size_t replay_page = 500;  // activities per replay read (and at most per frame)
  std::chrono::seconds ping_interval{30};
  std::chrono::seconds send_timeout{10};
  std::size_t max_connections_per_user = 32;
};

class RealtimeHub {
 public:
  RealtimeHub(CoreService& service, RealtimeOptions options = {});
  ~RealtimeHub();
  RealtimeHub(const RealtimeHub&) = delete;
  RealtimeHub& operator=(const RealtimeHub&) = delete;

  // The service's ActivityListener: queues a commit's activities for their recipients'
  // connections, and wakes each connection once for all of them (one frame, not one per
  // activity).
  void Publish(const std::vector<CoreService::Committed>& committed);

  // Serves one upgraded connection until the client closes it, it fails, or Stop(). Returns
  // RESOURCE_EXHAUSTED at once when the user has max_connections_per_user open, and
  // INVALID_ARGUMENT once it closed the connection on a frame that breaks RFC 6455 (status 1002;
  // 1009 for a frame over 1 KiB: the client sends control frames only).
  Status Serve(const std::string& user_id, std::int64_t cursor, Poco::Net::WebSocket& socket);

  // The indexer's stream (GET /v1/index/events): the same frames, delivery and slow-consumer
  // handling as Serve, for every activity of the conversations created by a user of the indexer's
  // organization (CoreService::IndexerEventsSince), from `cursor`. PERMISSION_DENIED at once
  // (nothing sent) for anyone but the indexer.
  Status ServeIndexer(const Caller& indexer, std::int64_t cursor, Poco::Net::WebSocket& socket);

  // Ends every Serve loop promptly (each closes its socket with 1001 "going away").
  void Stop();

  std::size_t connections() const;

  struct Subscriber;

 private:
  using Replay =
      std::function<Result<std::vector<Activity>>(std::int64_t after, std::size_t limit)>;
  // Registers a connection under `key` in `registry`, then replays with `replay` from `cursor`
  // and sends what Publish queues for it until it ends.
  Status Stream(std::map<std::string, std::set<Subscriber*>>& registry, const std::string& key,
                std::int64_t cursor, Poco::Net::WebSocket& socket, const Replay& replay);

  CoreService& service_;
  const RealtimeOptions options_;
  mutable std::mutex mutex_;
  std::map<std::string, std::set<Subscriber*>> by_user_;
  std::map<std::string, std::set<Subscriber*>> by_org_;  // the indexers' streams, by organization
  std::size_t connections_ = 0;
  std::atomic<bool> stopping_{false};
};

}  // namespace strongroom::core

#endif  // STRONGROOM_CORE_REALTIME_HUB_H_
