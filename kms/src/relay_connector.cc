#include "strongroom/kms/relay_connector.h"

#include <Poco/Buffer.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/Net/WebSocket.h>
#include <Poco/Timespan.h>
#include <Poco/URI.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <random>
#include <sstream>

#include "strongroom/common/kms_uri.h"
#include "strongroom/common/tls.h"
#include "strongroom/common/token_file.h"

namespace strongroom::kms {
namespace {

using Clock = std::chrono::steady_clock;
using Poco::Net::WebSocket;

constexpr int kPongFrame =
    static_cast<int>(WebSocket::FRAME_FLAG_FIN) | static_cast<int>(WebSocket::FRAME_OP_PONG);
// A connection that lived this long, or served a request, counts as good: the next failure
// starts the backoff from the beginning again.
constexpr std::chrono::seconds kGoodConnection{10};

Poco::Timespan ToTimespan(std::chrono::milliseconds duration) {
  return Poco::Timespan(std::chrono::duration_cast<std::chrono::microseconds>(duration).count());
}

std::string JsonError(const std::string& code, const std::string& message) {
  Poco::JSON::Object error;
  error.set("code", code);
  error.set("message", message);
  std::ostringstream out;
  error.stringify(out);
  return out.str();
}

std::string AnswerFrame(std::int64_t id, const KmsReply& reply) {
  Poco::JSON::Object frame;
  frame.set("id", id);
  frame.set("status", reply.http_status);
  frame.set("contentType", reply.content_type);
  frame.set("body", reply.body);
  std::ostringstream out;
  frame.stringify(out);
  return out.str();
}

}  // namespace

Result<SecretBytes> ReadRelayToken(const std::string& path) {
  return ReadTokenFile(path, "relay token file", kMinRelayTokenLength, kMaxRelayTokenLength);
}

Result<std::unique_ptr<RelayConnector>> RelayConnector::New(RelayConnectorOptions options,
                                                            KmsService& service) {
  return New(std::move(options),
             [&service](std::string_view message) { return service.Handle(message); });
}

Result<std::unique_ptr<RelayConnector>> RelayConnector::New(RelayConnectorOptions options,
                                                            Handler handler) {
  if (!handler) return Error(ErrorCode::kInvalidArgument, "the relay connector needs a handler");
  Poco::URI uri;
  try {
    uri = Poco::URI(options.url);
  } catch (const Poco::Exception&) {
    return Error(ErrorCode::kInvalidArgument,
                 "relay.url must be https://host[:port], got '" + options.url + "'");
  }
  if (uri.getScheme() != "https" || uri.getHost().empty() || !uri.getUserInfo().empty() ||
      !(uri.getPath().empty() || uri.getPath() == "/") || !uri.getRawQuery().empty() ||
      !uri.getFragment().empty()) {
    return Error(
        ErrorCode::kInvalidArgument,
        "relay.url must be https://host[:port] (cored, no path), got '" + options.url + "'");
  }
  if (Result<KmsUri> cluster = KmsUri::ParseCluster(options.cluster);
      !cluster.ok() || cluster->ToString() != options.cluster) {
    return Error(ErrorCode::kInvalidArgument,
                 "the relay's cluster is kms://<host>, got '" + options.cluster + "'");
  }
  if (options.connections < 1 || options.connections > kMaxRelayConnectorConnections) {
    return Error(ErrorCode::kInvalidArgument,
                 "relay.connections must be 1 to " + std::to_string(kMaxRelayConnectorConnections));
  }
  if (options.idle_timeout.count() <= 0 || options.connect_timeout.count() <= 0 ||
      options.backoff_initial.count() <= 0 || options.backoff_max < options.backoff_initial) {
    return Error(ErrorCode::kInvalidArgument,
                 "the relay's timeouts must be positive and its backoff range ordered");
  }
  SR_ASSIGN_OR_RETURN(SecretBytes token, ReadRelayToken(options.token_file));
  SR_ASSIGN_OR_RETURN(Poco::Net::Context::Ptr context,
                      MakeTlsClientContext("the KMS relay to " + options.url, options.ca_file));
  const std::string host = uri.getHost();
  const std::uint16_t port = uri.getPort();
  return std::unique_ptr<RelayConnector>(new RelayConnector(
      std::move(options), host, port, std::move(context), std::move(token), std::move(handler)));
}

RelayConnector::RelayConnector(RelayConnectorOptions options, std::string host, std::uint16_t port,
                               Poco::Net::Context::Ptr context, SecretBytes token, Handler handler)
    : options_(std::move(options)),
      host_(std::move(host)),
      port_(port),
      context_(std::move(context)),
      token_(std::move(token)),
      handler_(std::move(handler)) {}

RelayConnector::~RelayConnector() {
  Stop();
  Poco::Net::uninitializeSSL();  // paired with MakeTlsClientContext's initializeSSL
}

void RelayConnector::Start() {
  std::lock_guard lock(mu_);
  if (!threads_.empty()) return;
  stopping_ = false;
  sockets_.assign(options_.connections, -1);
  for (std::size_t i = 0; i < options_.connections; ++i) {
    threads_.emplace_back([this, i] { Run(i); });
  }
  Log("relay: dialing " + options_.url + " as " + options_.cluster + " with " +
      std::to_string(options_.connections) + " connection(s)");
}

void RelayConnector::Stop() {
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mu_);
    if (threads_.empty()) return;
    stopping_ = true;
    // Only the descriptors are touched here (never the TLS state the threads own): receives
    // and sends fail at once, and each thread closes its own connection.
    for (int fd : sockets_) {
      if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
    }
    threads.swap(threads_);
  }
  wake_.notify_all();
  for (std::thread& thread : threads) thread.join();
  Log("relay: stopped to " + options_.url);
}

std::size_t RelayConnector::connected() const {
  std::lock_guard lock(mu_);
  return connected_;
}

std::uint64_t RelayConnector::connection_attempts() const {
  std::lock_guard lock(mu_);
  return attempts_;
}

void RelayConnector::Log(const std::string& line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::cerr << "kmsd: " << line << std::endl;
  }
}

void RelayConnector::Run(std::size_t index) {
  const std::string name = "relay connection " + std::to_string(index + 1) + "/" +
                           std::to_string(options_.connections) + " to " + options_.url;
  std::mt19937_64 random(std::random_device{}());
  auto backoff = options_.backoff_initial;
  std::string last_logged;  // the failure last logged; the same one is not logged again
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      ++attempts_;
    }
    bool up = false;
    bool served = false;
    const auto started = Clock::now();
    Status status = Connect(index, up, served);
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    if (up) {
      Log(name + " lost: " + (status.ok() ? "closed" : status.error().message()) +
          "; reconnecting");
      last_logged.clear();
      if (served || Clock::now() - started >= kGoodConnection) backoff = options_.backoff_initial;
    } else if (status.error().message() != last_logged) {
      last_logged = status.error().message();
      Log(name + " cannot connect: " + last_logged + "; retrying with backoff");
    }
    // Half the backoff, plus a random part of the other half, so connections spread out.
    const auto half = backoff / 2;
    std::uniform_int_distribution<std::int64_t> jitter(0, std::max<std::int64_t>(half.count(), 0));
    const auto delay = half + std::chrono::milliseconds(jitter(random));
    backoff = std::min(backoff * 2, options_.backoff_max);
    std::unique_lock lock(mu_);
    if (wake_.wait_for(lock, delay, [this] { return stopping_; })) return;
  }
}

Status RelayConnector::Connect(std::size_t index, bool& up, bool& served) {
  std::unique_ptr<WebSocket> socket;
  {
    Poco::Net::HTTPRequest request(Poco::Net::HTTPRequest::HTTP_GET, kRelayUpgradePath,
                                   Poco::Net::HTTPMessage::HTTP_1_1);
    request.set(kRelayClusterHeaderName, options_.cluster);
    {
      std::string authorization = "Bearer ";
      authorization.append(token_.as_string_view());
      request.set("Authorization", authorization);
      ZeroizeString(authorization);
    }
    // The request's own copy of the header is wiped however the upgrade ends.
    struct WipeAuthorization {
      Poco::Net::HTTPRequest& request;
      ~WipeAuthorization() {
        if (request.has("Authorization")) {
          ZeroizeString(const_cast<std::string&>(request.get("Authorization")));
        }
      }
    } wipe{request};
    Poco::Net::HTTPResponse response;
    try {
      Poco::Net::HTTPSClientSession session(host_, port_, context_);
      const Poco::Timespan timeout = ToTimespan(options_.connect_timeout);
      session.setTimeout(timeout, timeout, timeout);
      socket = std::make_unique<WebSocket>(session, request, response);
    } catch (const Poco::Net::WebSocketException& e) {
      if (e.code() == WebSocket::WS_ERR_UNAUTHORIZED ||
          response.getStatus() == Poco::Net::HTTPResponse::HTTP_UNAUTHORIZED) {
        return Error(ErrorCode::kUnauthenticated,
                     "cored refused the relay token for " + options_.cluster +
                         " (401; is its [relay.<n>] token_file the same token?)");
      }
      return Error(ErrorCode::kUnavailable,
                   "cored did not upgrade to the relay (HTTP " +
                       std::to_string(static_cast<int>(response.getStatus())) + ")");
    } catch (const Poco::Exception& e) {
      return Error(ErrorCode::kUnavailable,
                   "cannot reach " + options_.url + ": " + e.displayText());
    }
  }
  {
    std::lock_guard lock(mu_);
    if (stopping_) return OkStatus();
    sockets_[index] = static_cast<int>(socket->impl()->sockfd());
    ++connected_;
  }
  up = true;
  Log("relay connection " + std::to_string(index + 1) + "/" + std::to_string(options_.connections) +
      " up to " + options_.url);
  Status status = Serve(*socket, served);
  {
    std::lock_guard lock(mu_);
    sockets_[index] = -1;
    --connected_;
  }
  // Closed after it left sockets_, so Stop() never shuts down a reused descriptor.
  try {
    socket->setSendTimeout(Poco::Timespan(1, 0));
    socket->shutdown(status.ok() ? WebSocket::WS_ENDPOINT_GOING_AWAY
                                 : WebSocket::WS_PROTOCOL_ERROR);
  } catch (...) {
    // The connection is gone already.
  }
  try {
    socket->close();
  } catch (...) {
  }
  return status;
}

Status RelayConnector::Serve(WebSocket& socket, bool& served) {
  try {
    socket.setMaxPayloadSize(static_cast<int>(kMaxRelayRequestBodyBytes + kRelayEnvelopeBytes));
    socket.setNoDelay(true);
    // Poco's TLS socket waits for SO_RCVTIMEO once in recv() and once more in poll().
    socket.setReceiveTimeout(ToTimespan(options_.idle_timeout / 2));
    socket.setSendTimeout(ToTimespan(options_.idle_timeout));
    Poco::Buffer<char> buffer(0);
    for (;;) {
      buffer.resize(0);
      int flags = 0;
      const int n = socket.receiveFrame(buffer, flags);
      const int opcode = flags & WebSocket::FRAME_OP_BITMASK;
      if ((n <= 0 && flags == 0) || opcode == WebSocket::FRAME_OP_CLOSE) {
        return Error(ErrorCode::kUnavailable, "cored closed the connection");
      }
      if (opcode == WebSocket::FRAME_OP_PING) {
        socket.sendFrame(buffer.begin(), n, kPongFrame);
        continue;
      }
      if (opcode == WebSocket::FRAME_OP_PONG) continue;
      if (opcode != WebSocket::FRAME_OP_TEXT || (flags & WebSocket::FRAME_FLAG_FIN) == 0) {
        return Error(ErrorCode::kUnavailable, "cored sent a frame the relay does not use (opcode " +
                                                  std::to_string(opcode) + ")");
      }
      bool malformed = false;
      const std::string answer =
          Answer(std::string_view(buffer.begin(), static_cast<std::size_t>(n)), malformed);
      if (malformed) return Error(ErrorCode::kUnavailable, "cored sent a malformed relay frame");
      socket.sendFrame(answer.data(), static_cast<int>(answer.size()), WebSocket::FRAME_TEXT);
      served = true;
    }
  } catch (const Poco::TimeoutException&) {
    return Error(ErrorCode::kUnavailable,
                 "nothing from cored for " + std::to_string(options_.idle_timeout.count()) + " ms");
  } catch (const Poco::Net::WebSocketException& e) {
    return Error(ErrorCode::kUnavailable, e.displayText());
  } catch (const Poco::Exception& e) {
    return Error(ErrorCode::kUnavailable, e.displayText());
  } catch (const std::exception& e) {
    return Error(ErrorCode::kUnavailable, e.what());
  }
}

// The answer frame to a request frame; `malformed` when the frame is not {"id": n, "body": s}
// (then there is nobody to answer and the connection is dropped).
std::string RelayConnector::Answer(std::string_view frame, bool& malformed) {
  std::int64_t id = 0;
  std::string body;
  try {
    Poco::JSON::Parser parser;
    Poco::JSON::Object::Ptr object =
        parser.parse(std::string(frame)).extract<Poco::JSON::Object::Ptr>();
    const Poco::Dynamic::Var id_value = object.isNull() ? Poco::Dynamic::Var() : object->get("id");
    const Poco::Dynamic::Var body_value =
        object.isNull() ? Poco::Dynamic::Var() : object->get("body");
    if (!id_value.isInteger() || !body_value.isString()) {
      malformed = true;
      return {};
    }
    id = id_value.convert<std::int64_t>();
    body = body_value.extract<std::string>();
  } catch (const Poco::Exception&) {
    malformed = true;
    return {};
  }
  KmsReply reply;
  if (body.size() > kMaxRelayRequestBodyBytes) {
    reply = {413, "application/json",
             JsonError("message_size", "a KMS message is at most " +
                                           std::to_string(kMaxRelayRequestBodyBytes) + " bytes")};
  } else {
    try {
      reply = handler_(body);
    } catch (const std::exception&) {
      reply = {500, "application/json",
               JsonError("internal", "the KMS failed to process the request")};
    }
  }
  std::string answer =
      reply.body.size() > kMaxRelayAnswerBodyBytes ? std::string() : AnswerFrame(id, reply);
  if (answer.empty() || answer.size() > kMaxRelayAnswerBodyBytes + kRelayEnvelopeBytes) {
    answer = AnswerFrame(id, {500, "application/json",
                              JsonError("answer_size",
                                        "the KMS's answer is larger than the relay "
                                        "carries (" +
                                            std::to_string(kMaxRelayAnswerBodyBytes) + " bytes)")});
  }
  return answer;
}

}  // namespace strongroom::kms
