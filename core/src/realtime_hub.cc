#include "strongroom/core/realtime_hub.h"

#include <Poco/Exception.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/WebSocket.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <iostream>
#include <string_view>

#include "strongroom/core/api_json.h"
#include "websocket_frame_reader.h"

namespace strongroom::core {
namespace {

using Poco::Net::WebSocket;

constexpr int kPingFrame =
    static_cast<int>(WebSocket::FRAME_FLAG_FIN) | static_cast<int>(WebSocket::FRAME_OP_PING);
constexpr int kPongFrame =
    static_cast<int>(WebSocket::FRAME_FLAG_FIN) | static_cast<int>(WebSocket::FRAME_OP_PONG);
// A client sends control frames only; anything longer is refused (1009).
constexpr std::size_t kMaxClientFrameBytes = 1024;

// Sends one text frame {"events":[...]} made of already-serialized activities.
void SendEvents(WebSocket& socket, const std::vector<std::shared_ptr<const std::string>>& events,
                std::size_t begin, std::size_t end) {
  std::string frame = "{\"events\":[";
  for (std::size_t i = begin; i < end; ++i) {
    if (i != begin) frame += ',';
    frame += *events[i];
  }
  frame += "]}";
  socket.sendFrame(frame.data(), static_cast<int>(frame.size()), WebSocket::FRAME_TEXT);
}

}  // namespace

struct RealtimeHub::Subscriber {
  struct Item {
    std::int64_t seq;
    std::shared_ptr<const std::string> json;
  };
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<Item> queue;
  bool overflowed = false;
};

RealtimeHub::RealtimeHub(CoreService& service, RealtimeOptions options)
    : service_(service), options_(options) {}

RealtimeHub::~RealtimeHub() { Stop(); }

void RealtimeHub::Publish(const std::vector<CoreService::Committed>& committed) {
  std::vector<Subscriber*> woken;
  std::lock_guard<std::mutex> lock(mutex_);
  for (const CoreService::Committed& c : committed) {
    std::shared_ptr<const std::string> json;
    auto queue = [&](const std::set<Subscriber*>& subscribers) {
      if (!json) json = std::make_shared<const std::string>(ActivityJson(c.activity));
      for (Subscriber* subscriber : subscribers) {
        std::lock_guard<std::mutex> sub_lock(subscriber->mutex);
        if (subscriber->overflowed) continue;
        if (subscriber->queue.size() >= options_.max_queued) {
          subscriber->queue.clear();  // it catches up from the store instead
          subscriber->overflowed = true;
        } else {
          subscriber->queue.push_back({c.activity.seq, json});
        }
        woken.push_back(subscriber);
      }
    };
    for (const std::string& user : c.recipients) {
      auto found = by_user_.find(user);
      if (found != by_user_.end()) queue(found->second);
    }
    if (!c.conversation_org.empty()) {
      auto found = by_org_.find(c.conversation_org);
      if (found != by_org_.end()) queue(found->second);
    }
  }
  // Once each, after the whole commit is queued: registered subscribers stay valid while mutex_
  // is held (a Serve loop unregisters under it).
  std::sort(woken.begin(), woken.end());
  woken.erase(std::unique(woken.begin(), woken.end()), woken.end());
  for (Subscriber* subscriber : woken) subscriber->ready.notify_one();
}

Status RealtimeHub::Serve(const std::string& user_id, std::int64_t cursor, WebSocket& socket) {
  return Stream(by_user_, user_id, cursor, socket, [&](std::int64_t after, std::size_t limit) {
    return service_.EventsSince(user_id, after, limit);
  });
}

Status RealtimeHub::ServeIndexer(const Caller& indexer, std::int64_t cursor, WebSocket& socket) {
  if (!service_.IsIndexer(indexer)) {
    return Error(ErrorCode::kPermissionDenied, "only the indexer follows the indexer's stream");
  }
  return Stream(by_org_, indexer.org, cursor, socket, [&](std::int64_t after, std::size_t limit) {
    return service_.IndexerEventsSince(indexer, after, limit);
  });
}

Status RealtimeHub::Stream(std::map<std::string, std::set<Subscriber*>>& registry,
                           const std::string& key, std::int64_t cursor, WebSocket& socket,
                           const Replay& replay) {
  Subscriber subscriber;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return Error(ErrorCode::kUnavailable, "the core is shutting down");
    auto& mine = registry[key];
    if (mine.size() >= options_.max_connections_per_user) {
      if (mine.empty()) registry.erase(key);
      return Error(ErrorCode::kResourceExhausted,
                   "at most " + std::to_string(options_.max_connections_per_user) +
                       " realtime connections per user");
    }
    mine.insert(&subscriber);
    ++connections_;
  }
  struct Unregister {
    RealtimeHub& hub;
    std::map<std::string, std::set<Subscriber*>>& registry;
    const std::string& key;
    Subscriber* subscriber;
    ~Unregister() {
      std::lock_guard<std::mutex> lock(hub.mutex_);
      auto found = registry.find(key);
      found->second.erase(subscriber);
      if (found->second.empty()) registry.erase(found);
      --hub.connections_;
    }
  } unregister{*this, registry, key, &subscriber};

  socket.setSendTimeout(Poco::Timespan(options_.send_timeout.count(), 0));
  std::int64_t last = cursor;
  // Replays from the store everything after `last` the subscriber may see.
  auto catch_up = [&]() -> Status {
    for (;;) {
      SR_ASSIGN_OR_RETURN(std::vector<Activity> page, replay(last, options_.replay_page));
      if (page.empty()) return OkStatus();
      std::vector<std::shared_ptr<const std::string>> events;
      events.reserve(page.size());
      for (const Activity& activity : page) {
        events.push_back(std::make_shared<const std::string>(ActivityJson(activity)));
      }
      SendEvents(socket, events, 0, events.size());
      last = page.back().seq;
      if (page.size() < options_.replay_page) return OkStatus();
    }
  };

  try {
    SR_RETURN_IF_ERROR(catch_up());
    auto last_traffic = std::chrono::steady_clock::now();
    WebSocketFrameReader frames(socket, kMaxClientFrameBytes);
    for (;;) {
      std::deque<Subscriber::Item> items;
      bool overflowed = false;
      {
        std::unique_lock<std::mutex> lock(subscriber.mutex);
        subscriber.ready.wait_for(lock, std::chrono::milliseconds(200), [&] {
          return !subscriber.queue.empty() || subscriber.overflowed || stopping_;
        });
        if (stopping_) break;
        items.swap(subscriber.queue);
        overflowed = subscriber.overflowed;
        subscriber.overflowed = false;
      }
      if (overflowed) {
        SR_RETURN_IF_ERROR(catch_up());
        last_traffic = std::chrono::steady_clock::now();
      } else if (!items.empty()) {
        std::vector<std::shared_ptr<const std::string>> events;
        for (Subscriber::Item& item : items) {
          if (item.seq <= last) continue;  // already replayed
          events.push_back(std::move(item.json));
          last = item.seq;
        }
        for (std::size_t at = 0; at < events.size(); at += options_.replay_page) {
          SendEvents(socket, events, at, std::min(events.size(), at + options_.replay_page));
        }
        if (!events.empty()) last_traffic = std::chrono::steady_clock::now();
      }
      // The client sends nothing but control frames; read them when they are there.
      while (socket.available() > 0 ||
             socket.poll(Poco::Timespan(0), Poco::Net::Socket::SELECT_READ)) {
        Result<ClientFrame> frame = frames.Next();
        if (!frame.ok()) {
          const std::uint16_t status = WebSocketFrameReader::CloseStatusFor(frame.error());
          if (status == 0) return OkStatus();  // the client went away
          CloseWebSocket(socket, status, frame.error().message());
          return Error(ErrorCode::kInvalidArgument, frame.error().message());
        }
        if (frame->opcode() == WebSocket::FRAME_OP_CLOSE) {
          socket.shutdown();
          return OkStatus();
        }
        if (frame->opcode() == WebSocket::FRAME_OP_PING) {
          socket.sendFrame(frame->payload.data(), static_cast<int>(frame->payload.size()),
                           kPongFrame);
        }
      }
      if (std::chrono::steady_clock::now() - last_traffic > options_.ping_interval) {
        socket.sendFrame("", 0, kPingFrame);
        last_traffic = std::chrono::steady_clock::now();
      }
    }
    socket.shutdown(WebSocket::WS_ENDPOINT_GOING_AWAY, "the core is shutting down");
  } catch (const Poco::Exception& e) {
    // A client that went away or stopped reading: it reconnects with its cursor.
    return Error(ErrorCode::kUnavailable, "realtime connection ended: " + e.displayText());
  }
  return OkStatus();
}

void RealtimeHub::Stop() {
  stopping_ = true;
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [user, subscribers] : by_user_) {
    for (Subscriber* subscriber : subscribers) {
      std::lock_guard<std::mutex> sub_lock(subscriber->mutex);
      subscriber->ready.notify_all();
    }
  }
}

std::size_t RealtimeHub::connections() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return connections_;
}

}  // namespace strongroom::core
