#include "strongroom/core/kms_relay.h"

#include <Poco/Exception.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/WebSocket.h>
#include <Poco/String.h>
#include <Poco/Timespan.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include "strongroom/common/kms_uri.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/common/token_file.h"
#include "websocket_frame_reader.h"

namespace strongroom::core {
namespace {

using Clock = std::chrono::steady_clock;
using Poco::Net::WebSocket;

constexpr std::uint16_t kCloseTryAgainLater = 1013;  // RFC 6455 registry: "Try Again Later"
constexpr int kPingFrame =
    static_cast<int>(WebSocket::FRAME_FLAG_FIN) | static_cast<int>(WebSocket::FRAME_OP_PING);
constexpr int kPongFrame =
    static_cast<int>(WebSocket::FRAME_FLAG_FIN) | static_cast<int>(WebSocket::FRAME_OP_PONG);

std::array<std::uint8_t, 32> Sha256(const void* data, std::size_t size) {
  std::array<std::uint8_t, 32> digest{};
  unsigned int length = 0;
  if (EVP_Digest(data, size, digest.data(), &length, EVP_sha256(), nullptr) != 1 ||
      length != digest.size()) {
    std::abort();  // SHA-256 is always available in OpenSSL; failing here is a broken build
  }
  return digest;
}

// Compact JOSE: base64url segments separated by dots. Nothing in it needs escaping in JSON.
bool IsCompactJose(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
  });
}

Error NotConnected(const std::string& cluster) {
  return Error(ErrorCode::kUnavailable, "the KMS " + cluster + " is not connected");
}

// The socket is readable while nobody expects anything from it: the KMS closed it (or broke the
// protocol). Only the file descriptor is looked at, never the TLS state, so any thread may ask.
bool ReadableWhileIdle(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) != 0;
}

// Poco's TLS socket waits once for SO_RCVTIMEO in recv() and once more in poll() before it gives
// up, so the receive timeout is set to half of what the caller may wait.
void SetReceiveTimeout(WebSocket& socket, Clock::duration wait) {
  const auto half = std::chrono::duration_cast<std::chrono::microseconds>(wait) / 2;
  socket.setReceiveTimeout(Poco::Timespan(std::max<std::int64_t>(half.count(), 1000)));
}

std::string JsonError(ErrorCode code, const std::string& message) {
  Poco::JSON::Object error;
  error.set("code", Poco::toLower(std::string(ErrorCodeName(code))));
  error.set("message", message);
  std::ostringstream out;
  error.stringify(out);
  return out.str();
}

}  // namespace

struct RelayConnection {
  std::unique_ptr<WebSocket> socket;
  std::unique_ptr<WebSocketFrameReader> frames;  // what the KMS sends, held to RFC 6455
  // How the connection is closed when it is dropped: a protocol error unless the frame reader
  // found something more precise (a frame too long is 1009).
  std::uint16_t close_status = WebSocket::WS_PROTOCOL_ERROR;
  std::string close_reason;
  int fd = -1;
  Clock::time_point last_activity;
  std::uint64_t serial = 0;
};

class KmsRelay::Impl {
 public:
  explicit Impl(KmsRelayOptions options) : options_(std::move(options)) {
    for (const auto& [name, digest] : options_.clusters) clusters_[name].digest = digest;
    janitor_ = std::thread([this] { JanitorLoop(); });
  }

  ~Impl() {
    std::vector<std::shared_ptr<RelayConnection>> idle;
    {
      std::unique_lock lock(mu_);
      stopping_ = true;
      // Connections in use are only shut down (a syscall on the descriptor, never the TLS state
      // another thread owns): their users see the failure and give them back.
      for (auto& [name, cluster] : clusters_) {
        for (const auto& connection : cluster.all) ::shutdown(connection->fd, SHUT_RDWR);
        cluster.available.notify_all();
      }
      wake_janitor_.notify_all();
    }
    janitor_.join();
    std::unique_lock lock(mu_);
    all_returned_.wait(lock, [this] { return leased_ == 0; });
    for (auto& [name, cluster] : clusters_) {
      idle.insert(idle.end(), cluster.idle.begin(), cluster.idle.end());
      cluster.idle.clear();
      cluster.all.clear();
    }
    lock.unlock();
    for (const auto& connection : idle) Close(*connection, WebSocket::WS_ENDPOINT_GOING_AWAY);
  }

  Status CheckCredential(std::string_view cluster, std::string_view token) const {
    const auto it = clusters_.find(std::string(cluster));
    std::array<std::uint8_t, 32> presented = Sha256(token.data(), token.size());
    const bool ok =
        it != clusters_.end() && !token.empty() &&
        CRYPTO_memcmp(presented.data(), it->second.digest.data(), presented.size()) == 0;
    OPENSSL_cleanse(presented.data(), presented.size());
    if (!ok) {
      return Error(ErrorCode::kUnauthenticated,
                   "the relay token is not the one configured for this KMS cluster");
    }
    return OkStatus();
  }

  void Attach(const std::string& cluster_name, std::unique_ptr<WebSocket> socket) {
    if (!socket) return;
    auto connection = std::make_shared<RelayConnection>();
    try {
      socket->setMaxPayloadSize(static_cast<int>(kMaxRelayAnswerFrameBytes));
      socket->setNoDelay(true);
      socket->setSendTimeout(Poco::Timespan(
          std::chrono::duration_cast<std::chrono::microseconds>(options_.answer_timeout).count()));
      connection->fd = static_cast<int>(socket->impl()->sockfd());
      connection->frames =
          std::make_unique<WebSocketFrameReader>(*socket, kMaxRelayAnswerFrameBytes);
    } catch (const Poco::Exception& e) {
      Log(cluster_name + ": a relay connection could not be set up: " + e.displayText());
      return;
    }
    connection->socket = std::move(socket);
    connection->last_activity = Clock::now();
    std::string refused;
    std::size_t connected = 0;
    {
      std::lock_guard lock(mu_);
      const auto it = clusters_.find(cluster_name);
      if (stopping_) {
        refused = "the relay is stopping";
      } else if (it == clusters_.end()) {
        refused = "no such KMS cluster is configured";
      } else if (it->second.all.size() >= kMaxRelayConnectionsPerCluster) {
        refused = "it has " + std::to_string(kMaxRelayConnectionsPerCluster) + " connections";
      } else {
        connection->serial = ++serial_;
        it->second.all.push_back(connection);
        it->second.idle.push_back(connection);
        connected = it->second.all.size();
        it->second.available.notify_one();
      }
    }
    if (!refused.empty()) {
      Log(cluster_name + ": a relay connection was refused: " + refused);
      Close(*connection, kCloseTryAgainLater);
      return;
    }
    Log(cluster_name + ": relay connection attached (" + std::to_string(connected) + " connected)");
  }

  Result<KmsRelayAnswer> Forward(const std::string& cluster_name, std::string_view message) {
    if (message.empty() || message.size() > kMaxRelayMessageBytes) {
      return Error(ErrorCode::kInvalidArgument,
                   "a KMS message is 1 to " + std::to_string(kMaxRelayMessageBytes) + " bytes");
    }
    if (!IsCompactJose(message)) {
      return Error(ErrorCode::kInvalidArgument,
                   "a KMS message is compact JOSE (base64url segments separated by dots)");
    }
    const auto it = clusters_.find(cluster_name);  // the map's keys never change
    if (it == clusters_.end()) return NotConnected(cluster_name);
    Cluster& cluster = it->second;

    const std::int64_t id = next_id_.fetch_add(1, std::memory_order_relaxed);
    std::string frame;
    frame.reserve(message.size() + 40);
    frame.append("{\"id\":").append(std::to_string(id)).append(",\"body\":\"");
    frame.append(message).append("\"}");

    SR_ASSIGN_OR_RETURN(std::shared_ptr<RelayConnection> connection,
                        Lease(cluster_name, cluster, Clock::now() + options_.lease_timeout));
    Result<KmsRelayAnswer> answer = Exchange(*connection, id, frame);
    if (answer.ok()) {
      GiveBack(cluster, connection);
    } else {
      Drop(cluster_name, cluster, connection, answer.error().message());
    }
    return answer;
  }

  std::size_t Connected(const std::string& cluster_name) const {
    std::lock_guard lock(mu_);
    const auto it = clusters_.find(cluster_name);
    return it == clusters_.end() ? 0 : it->second.all.size();
  }

  std::map<std::string, std::size_t> ConnectedClusters() const {
    std::lock_guard lock(mu_);
    std::map<std::string, std::size_t> out;
    for (const auto& [name, cluster] : clusters_) out[name] = cluster.all.size();
    return out;
  }

  void Log(const std::string& line) const {
    if (options_.log) {
      options_.log(line);
    } else {
      std::cerr << "cored: " << line << std::endl;
    }
  }

 private:
  struct Cluster {
    std::array<std::uint8_t, 32> digest{};
    std::vector<std::shared_ptr<RelayConnection>> all;  // attached, idle or leased
    std::deque<std::shared_ptr<RelayConnection>> idle;  // oldest use first
    std::condition_variable available;                  // idle gained one, or all lost one
  };

  // One idle connection of the cluster, now used by the caller alone.
  Result<std::shared_ptr<RelayConnection>> Lease(const std::string& name, Cluster& cluster,
                                                 Clock::time_point deadline) {
    std::unique_lock lock(mu_);
    for (;;) {
      if (stopping_) return Error(ErrorCode::kUnavailable, "the KMS relay is stopping");
      if (cluster.all.empty()) return NotConnected(name);
      if (!cluster.idle.empty()) {
        std::shared_ptr<RelayConnection> connection = std::move(cluster.idle.front());
        cluster.idle.pop_front();
        ++leased_;
        if (!ReadableWhileIdle(connection->fd)) return connection;
        // Closed by the KMS while idle (it stopped): drop it and take the next, nothing was sent.
        lock.unlock();
        Drop(name, cluster, connection, "closed by the KMS");
        lock.lock();
        continue;
      }
      if (Clock::now() >= deadline) {
        return Error(ErrorCode::kUnavailable, "all " + std::to_string(cluster.all.size()) +
                                                  " connections of the KMS " + name +
                                                  " stayed busy; retry shortly");
      }
      cluster.available.wait_until(lock, deadline);
    }
  }

  void GiveBack(Cluster& cluster, const std::shared_ptr<RelayConnection>& connection) {
    std::lock_guard lock(mu_);
    connection->last_activity = Clock::now();
    cluster.idle.push_back(connection);
    --leased_;
    cluster.available.notify_one();
    all_returned_.notify_all();
  }

  void Drop(const std::string& name, Cluster& cluster,
            const std::shared_ptr<RelayConnection>& connection, const std::string& why) {
    std::size_t connected = 0;
    {
      std::lock_guard lock(mu_);
      cluster.all.erase(std::remove(cluster.all.begin(), cluster.all.end(), connection),
                        cluster.all.end());
      connected = cluster.all.size();
      // Waiters look again: with none attached they fail at once instead of waiting.
      cluster.available.notify_all();
    }
    // Closed after it left the registry, so no other thread shuts down a reused descriptor.
    Close(*connection, connection->close_status, connection->close_reason);
    Log(name + ": relay connection dropped: " + why + " (" + std::to_string(connected) +
        " connected)");
    std::lock_guard lock(mu_);
    --leased_;
    all_returned_.notify_all();
  }

  static void Close(RelayConnection& connection, std::uint16_t status,
                    const std::string& reason = {}) {
    if (!connection.socket) return;
    CloseWebSocket(*connection.socket, status, reason);
    connection.frames.reset();
    connection.socket.reset();
  }

  // A frame the reader refused, as the relay reports it; a broken protocol also decides how the
  // connection is closed when the caller drops it.
  static Error FrameError(RelayConnection& connection, const Error& error) {
    const std::uint16_t status = WebSocketFrameReader::CloseStatusFor(error);
    if (status == 0) return Error(ErrorCode::kUnavailable, "the KMS closed the relay connection");
    connection.close_status = status;
    connection.close_reason = error.message();
    return Error(ErrorCode::kUnavailable, "the KMS broke the relay protocol: " + error.message());
  }

  // Sends one request frame and reads frames until the answer with its id. Any failure leaves
  // the connection in an unknown state: the caller drops it.
  Result<KmsRelayAnswer> Exchange(RelayConnection& connection, std::int64_t id,
                                  const std::string& frame) {
    WebSocket& socket = *connection.socket;
    const auto deadline = Clock::now() + options_.answer_timeout;
    try {
      socket.sendFrame(frame.data(), static_cast<int>(frame.size()), WebSocket::FRAME_TEXT);
      for (;;) {
        const auto left = deadline - Clock::now();
        if (left <= Clock::duration::zero()) break;
        SetReceiveTimeout(socket, left);
        Result<ClientFrame> received = connection.frames->Next();
        if (!received.ok()) return FrameError(connection, received.error());
        const int opcode = received->opcode();
        if (opcode == WebSocket::FRAME_OP_PING) {
          socket.sendFrame(received->payload.data(), static_cast<int>(received->payload.size()),
                           kPongFrame);
          continue;
        }
        if (opcode == WebSocket::FRAME_OP_PONG) continue;
        if (opcode == WebSocket::FRAME_OP_CLOSE) {
          return Error(ErrorCode::kUnavailable, "the KMS closed the relay connection");
        }
        if (opcode != WebSocket::FRAME_OP_TEXT || !received->fin()) {
          return Error(ErrorCode::kUnavailable,
                       "the KMS sent a frame the relay does not use (opcode " +
                           std::to_string(opcode) + ")");
        }
        std::optional<std::int64_t> answer_id;
        Result<KmsRelayAnswer> answer = ParseAnswer(received->payload, answer_id);
        if (answer_id && *answer_id != id) continue;  // not ours (a late answer): skip it
        return answer;
      }
    } catch (const Poco::TimeoutException&) {
      // The deadline passed while waiting.
    } catch (const Poco::Net::WebSocketException& e) {
      return Error(ErrorCode::kUnavailable, "the relay connection failed: " + e.displayText());
    } catch (const Poco::Exception& e) {
      return Error(ErrorCode::kUnavailable, "the relay connection failed: " + e.displayText());
    } catch (const std::exception& e) {
      return Error(ErrorCode::kUnavailable,
                   std::string("the relay connection failed: ") + e.what());
    }
    return Error(
        ErrorCode::kUnavailable,
        "the KMS did not answer within " + std::to_string(options_.answer_timeout.count()) + " ms");
  }

  // {"id", "status", "contentType", "body"}; `id` is set when the frame names one.
  static Result<KmsRelayAnswer> ParseAnswer(std::string_view text,
                                            std::optional<std::int64_t>& id) {
    const Error malformed(ErrorCode::kUnavailable, "the KMS sent a malformed relay answer");
    Poco::JSON::Object::Ptr object;
    try {
      Poco::JSON::Parser parser;
      object = parser.parse(std::string(text)).extract<Poco::JSON::Object::Ptr>();
    } catch (const Poco::Exception&) {
      return malformed;
    }
    if (object.isNull()) return malformed;
    try {
      const Poco::Dynamic::Var id_value = object->get("id");
      if (!id_value.isInteger()) return malformed;
      id = id_value.convert<std::int64_t>();
      const Poco::Dynamic::Var status = object->get("status");
      const Poco::Dynamic::Var content_type = object->get("contentType");
      const Poco::Dynamic::Var body = object->get("body");
      if (!status.isInteger() || !content_type.isString() || !body.isString()) return malformed;
      KmsRelayAnswer answer;
      const std::int64_t code = status.convert<std::int64_t>();
      if (code < 100 || code > 599) return malformed;
      answer.http_status = static_cast<int>(code);
      answer.content_type = content_type.extract<std::string>();
      answer.body = body.extract<std::string>();
      if (answer.body.size() > kMaxRelayAnswerBytes || answer.content_type.size() > 256) {
        return Error(ErrorCode::kUnavailable, "the KMS's relay answer is larger than " +
                                                  std::to_string(kMaxRelayAnswerBytes) + " bytes");
      }
      return answer;
    } catch (const Poco::Exception&) {
      return malformed;
    }
  }

  // Every tick: idle connections the KMS closed are dropped, and those idle for ping_interval
  // are leased and pinged; one that does not answer within answer_timeout is dropped.
  void JanitorLoop() {
    const auto tick = std::clamp<Clock::duration>(
        std::chrono::duration_cast<Clock::duration>(options_.ping_interval) / 2,
        std::chrono::milliseconds(10), std::chrono::seconds(1));
    std::unique_lock lock(mu_);
    while (!stopping_) {
      wake_janitor_.wait_for(lock, tick);
      if (stopping_) break;
      struct Chore {
        const std::string* name;
        Cluster* cluster;
        std::shared_ptr<RelayConnection> connection;
        bool closed;
      };
      std::vector<Chore> chores;
      const auto now = Clock::now();
      for (auto& [name, cluster] : clusters_) {
        for (auto it = cluster.idle.begin(); it != cluster.idle.end();) {
          const bool closed = ReadableWhileIdle((*it)->fd);
          if (closed || now - (*it)->last_activity >= options_.ping_interval) {
            chores.push_back({&name, &cluster, std::move(*it), closed});
            it = cluster.idle.erase(it);
            ++leased_;
          } else {
            ++it;
          }
        }
      }
      if (chores.empty()) continue;
      lock.unlock();
      for (Chore& chore : chores) {
        Status alive = chore.closed ? Status(Error(ErrorCode::kUnavailable, "closed by the KMS"))
                                    : Ping(*chore.connection);
        if (alive.ok()) {
          GiveBack(*chore.cluster, chore.connection);
        } else {
          Drop(*chore.name, *chore.cluster, chore.connection, alive.error().message());
        }
      }
      lock.lock();
    }
  }

  Status Ping(RelayConnection& connection) {
    WebSocket& socket = *connection.socket;
    const std::string payload = std::to_string(++pings_);
    const auto deadline = Clock::now() + options_.answer_timeout;
    try {
      socket.sendFrame(payload.data(), static_cast<int>(payload.size()), kPingFrame);
      for (;;) {
        const auto left = deadline - Clock::now();
        if (left <= Clock::duration::zero()) break;
        SetReceiveTimeout(socket, left);
        Result<ClientFrame> received = connection.frames->Next();
        if (!received.ok()) {
          if (WebSocketFrameReader::CloseStatusFor(received.error()) == 0) {
            return Error(ErrorCode::kUnavailable, "closed by the KMS");
          }
          return FrameError(connection, received.error());
        }
        const int opcode = received->opcode();
        if (opcode == WebSocket::FRAME_OP_CLOSE) {
          return Error(ErrorCode::kUnavailable, "closed by the KMS");
        }
        if (opcode == WebSocket::FRAME_OP_PING) {
          socket.sendFrame(received->payload.data(), static_cast<int>(received->payload.size()),
                           kPongFrame);
        } else if (opcode == WebSocket::FRAME_OP_PONG && received->payload == payload) {
          return OkStatus();
        }
        // Anything else (a late answer, an older pong) is skipped.
      }
    } catch (const Poco::TimeoutException&) {
    } catch (const Poco::Exception& e) {
      return Error(ErrorCode::kUnavailable, "ping failed: " + e.displayText());
    } catch (const std::exception& e) {
      return Error(ErrorCode::kUnavailable, std::string("ping failed: ") + e.what());
    }
    return Error(
        ErrorCode::kUnavailable,
        "no answer to a ping within " + std::to_string(options_.answer_timeout.count()) + " ms");
  }

  const KmsRelayOptions options_;
  mutable std::mutex mu_;
  std::map<std::string, Cluster> clusters_;  // keys fixed at construction
  std::condition_variable wake_janitor_;
  std::condition_variable all_returned_;
  bool stopping_ = false;
  std::size_t leased_ = 0;  // connections taken out of `idle` and not yet given back or dropped
  std::uint64_t serial_ = 0;
  std::uint64_t pings_ = 0;  // the janitor's alone
  std::atomic<std::int64_t> next_id_{1};
  std::thread janitor_;
};

Result<std::unique_ptr<KmsRelay>> KmsRelay::New(KmsRelayOptions options) {
  for (const auto& [name, digest] : options.clusters) {
    if (Result<KmsUri> cluster = KmsUri::ParseCluster(name);
        !cluster.ok() || cluster->ToString() != name) {
      return Error(ErrorCode::kInvalidArgument,
                   "a KMS cluster is named kms://<host>, got '" + name + "'");
    }
  }
  if (options.lease_timeout.count() <= 0 || options.answer_timeout.count() <= 0 ||
      options.ping_interval.count() <= 0) {
    return Error(ErrorCode::kInvalidArgument,
                 "the relay's lease timeout, answer timeout and ping interval must be positive");
  }
  return std::unique_ptr<KmsRelay>(new KmsRelay(std::make_unique<Impl>(std::move(options))));
}

KmsRelay::KmsRelay(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
KmsRelay::~KmsRelay() = default;

Status KmsRelay::CheckCredential(std::string_view cluster, std::string_view token) const {
  return impl_->CheckCredential(cluster, token);
}

void KmsRelay::Log(const std::string& line) const { impl_->Log(line); }

void KmsRelay::Attach(const std::string& cluster, std::unique_ptr<Poco::Net::WebSocket> socket) {
  impl_->Attach(cluster, std::move(socket));
}

Result<KmsRelayAnswer> KmsRelay::Forward(const std::string& cluster, std::string_view message) {
  return impl_->Forward(cluster, message);
}

std::size_t KmsRelay::Connected(const std::string& cluster) const {
  return impl_->Connected(cluster);
}

std::map<std::string, std::size_t> KmsRelay::ConnectedClusters() const {
  return impl_->ConnectedClusters();
}

namespace {

void SendJsonError(Poco::Net::HTTPServerResponse& response, int status, ErrorCode code,
                   const std::string& message) {
  const std::string body = JsonError(code, message);
  response.setStatusAndReason(static_cast<Poco::Net::HTTPResponse::HTTPStatus>(status));
  response.setContentType("application/json");
  response.set("Cache-Control", "no-store");
  response.sendBuffer(body.data(), body.size());
}

Status Refuse(Poco::Net::HTTPServerResponse& response, ErrorCode code, const std::string& message) {
  SendJsonError(response, HttpStatusFor(code), code, message);
  return Error(code, message);
}

}  // namespace

Status HandleRelayUpgrade(KmsRelay& relay, Poco::Net::HTTPServerRequest& request,
                          Poco::Net::HTTPServerResponse& response) {
  try {
    if (request.getMethod() != Poco::Net::HTTPRequest::HTTP_GET) {
      response.set("Allow", "GET");
      SendJsonError(response, 405, ErrorCode::kInvalidArgument,
                    std::string(kRelayPath) + " is a WebSocket upgrade (GET)");
      return Error(ErrorCode::kInvalidArgument, "the relay upgrade is a GET");
    }
    const std::string cluster = request.get(kRelayClusterHeader, "");
    Status credential = Error(ErrorCode::kUnauthenticated, "");
    {
      std::string authorization = request.get("Authorization", "");
      constexpr std::string_view kBearer = "bearer ";
      if (authorization.size() > kBearer.size() &&
          Poco::icompare(authorization.substr(0, kBearer.size()), std::string(kBearer)) == 0 &&
          !cluster.empty()) {
        std::string token = Poco::trim(authorization.substr(kBearer.size()));
        credential = relay.CheckCredential(cluster, token);
        ZeroizeString(token);
      }
      ZeroizeString(authorization);
    }
    if (!credential.ok()) {
      // Who tried, and for which cluster (as sent: bounded, printable), never what token.
      std::string named = cluster.substr(0, 128);
      for (char& c : named) {
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
      }
      relay.Log("relay login refused from " + request.clientAddress().toString() +
                " for cluster '" + named + "': no relay token, or not that cluster's");
      response.set("WWW-Authenticate", "Bearer realm=\"strongroom-kms-relay\"");
      return Refuse(response, ErrorCode::kUnauthenticated,
                    "the relay needs the KMS cluster's relay token (Authorization: Bearer) and "
                    "its name (" +
                        std::string(kRelayClusterHeader) + ")");
    }
    if (!request.hasToken("Connection", "upgrade") ||
        Poco::icompare(request.get("Upgrade", ""), "websocket") != 0) {
      return Refuse(response, ErrorCode::kInvalidArgument,
                    std::string(kRelayPath) + " is a WebSocket upgrade");
    }
    if (relay.Connected(cluster) >= kMaxRelayConnectionsPerCluster) {
      response.set("Retry-After", "10");
      return Refuse(response, ErrorCode::kUnavailable,
                    "the KMS cluster has " + std::to_string(kMaxRelayConnectionsPerCluster) +
                        " relay connections already");
    }
    std::unique_ptr<WebSocket> socket;
    try {
      socket = std::make_unique<WebSocket>(request, response);
    } catch (const Poco::Net::WebSocketException& e) {
      if (response.sent()) return Error(ErrorCode::kUnavailable, e.displayText());
      return Refuse(response, ErrorCode::kInvalidArgument,
                    "not a valid WebSocket handshake: " + e.message());
    }
    relay.Attach(cluster, std::move(socket));
    return OkStatus();
  } catch (const Poco::Exception& e) {
    return Error(ErrorCode::kUnavailable, "the relay upgrade failed: " + e.displayText());
  } catch (const std::exception& e) {
    return Error(ErrorCode::kUnavailable, std::string("the relay upgrade failed: ") + e.what());
  }
}

Result<std::array<std::uint8_t, 32>> ReadRelayTokenDigest(const std::string& path) {
  SR_ASSIGN_OR_RETURN(SecretBytes token, ReadTokenFile(path, "relay token file",
                                                       kMinRelayTokenBytes, kMaxRelayTokenBytes));
  return Sha256(token.data(), token.size());
}

}  // namespace strongroom::core
