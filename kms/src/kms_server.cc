#include "strongroom/kms/kms_server.h"

#include <Poco/Exception.h>
#include <Poco/JSON/Object.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/Net/SecureServerSocket.h>
#include <Poco/Net/SocketAddress.h>
#include <Poco/String.h>
#include <Poco/ThreadPool.h>

#include <algorithm>
#include <iostream>
#include <sstream>

#include "strongroom/common/tls.h"
#include "strongroom/kms/admission_gate.h"
#include "strongroom/kms/metrics.h"

namespace strongroom::kms {
namespace {

using Poco::Net::HTTPResponse;
using Poco::Net::HTTPServerRequest;
using Poco::Net::HTTPServerResponse;

constexpr char kMessagesPath[] = "/kms/messages";
constexpr char kInfoPath[] = "/kms/info";
// A too-large body up to this size is read and dropped so the client sees the 413 on a connection
// that stays usable; a larger one is answered at once and the connection is closed.
constexpr std::size_t kMaxDrainBytes = 4 * 1024 * 1024;

void SendJson(HTTPServerResponse& response, int status, const std::string& body) {
  response.setStatusAndReason(static_cast<HTTPResponse::HTTPStatus>(status));
  response.setContentType("application/json");
  response.set("Cache-Control", "no-store");
  response.sendBuffer(body.data(), body.size());
}

void SendError(HTTPServerResponse& response, int status, const std::string& code,
               const std::string& message) {
  Poco::JSON::Object error;
  error.set("code", code);
  error.set("message", message);
  std::ostringstream out;
  error.stringify(out);
  SendJson(response, status, out.str());
}

// Reads and drops up to `limit` bytes; true when the stream ended within it.
bool Drain(std::istream& in, std::size_t limit) {
  char buffer[16 * 1024];
  std::size_t total = 0;
  while (in && total <= limit) {
    in.read(buffer, sizeof buffer);
    total += static_cast<std::size_t>(in.gcount());
  }
  return total <= limit && in.eof();
}

void LogError(const std::string& what) { std::cerr << "kmsd: error: " << what << std::endl; }

}  // namespace

struct KmsServer::State {
  KmsService& service;
  const std::string info_json;
  Metrics* const metrics;
  AdmissionGate gate;
  std::atomic<std::uint64_t> requests{0};
};

// Created per request by Poco; holds no state of its own. Every exception ends here.
class KmsServer::Handler : public Poco::Net::HTTPRequestHandler {
 public:
  explicit Handler(std::shared_ptr<State> state) : state_(std::move(state)) {}

  void handleRequest(HTTPServerRequest& request, HTTPServerResponse& response) override {
    state_->requests.fetch_add(1, std::memory_order_relaxed);
    try {
      if (!state_->gate.Enter()) {
        if (state_->metrics != nullptr) state_->metrics->RecordOverload();
        response.set("Retry-After", "1");
        // The body is read and dropped (bounded) so the connection stays usable; an oversize one
        // closes it.
        response.setKeepAlive(response.getKeepAlive() &&
                              Drain(request.stream(), kMaxKmsMessageBytes));
        SendError(response, 503, "overloaded", "the KMS is busy; retry in a second");
        return;
      }
      struct Leave {
        AdmissionGate& gate;
        ~Leave() { gate.Release(); }
      } leave{state_->gate};
      Route(request, response);
    } catch (const std::exception& e) {
      LogError(std::string("a request failed: ") + e.what());
      if (!response.sent()) {
        response.setKeepAlive(false);
        try {
          SendError(response, 500, "internal", "the KMS failed to process the request");
        } catch (...) {
        }
      }
    }
  }

 private:
  void Route(HTTPServerRequest& request, HTTPServerResponse& response) {
    std::string path = request.getURI();
    path = path.substr(0, path.find('?'));
    const std::string& method = request.getMethod();
    if (path == kMessagesPath) {
      if (method != HTTPServerRequest::HTTP_POST) return NotAllowed(response, "POST");
      return Message(request, response);
    }
    if (path == kInfoPath) {
      if (method != HTTPServerRequest::HTTP_GET) return NotAllowed(response, "GET");
      return SendJson(response, 200, state_->info_json);
    }
    response.setKeepAlive(response.getKeepAlive() && Drain(request.stream(), kMaxDrainBytes));
    SendError(response, 404, "not_found", "no such endpoint (POST /kms/messages, GET /kms/info)");
  }

  void NotAllowed(HTTPServerResponse& response, const char* allow) {
    response.set("Allow", allow);
    SendError(response, 405, "method_not_allowed", std::string("use ") + allow);
  }

  void Message(HTTPServerRequest& request, HTTPServerResponse& response) {
    const std::string media_type = Poco::toLower(
        Poco::trim(request.getContentType().substr(0, request.getContentType().find(';'))));
    if (media_type != "application/jose") {
      response.setKeepAlive(response.getKeepAlive() && Drain(request.stream(), kMaxDrainBytes));
      return SendError(response, 415, "media_type",
                       "a KMS message is sent as Content-Type: application/jose");
    }
    auto too_large = [&] {
      response.setKeepAlive(response.getKeepAlive() && Drain(request.stream(), kMaxDrainBytes));
      SendError(response, 413, "message_size",
                "a KMS message is at most " + std::to_string(kMaxKmsMessageBytes) + " bytes");
    };
    if (request.hasContentLength() &&
        request.getContentLength64() > static_cast<Poco::Int64>(kMaxKmsMessageBytes)) {
      if (request.getContentLength64() > static_cast<Poco::Int64>(kMaxDrainBytes)) {
        response.setKeepAlive(false);
        return SendError(
            response, 413, "message_size",
            "a KMS message is at most " + std::to_string(kMaxKmsMessageBytes) + " bytes");
      }
      return too_large();
    }
    // Read what the request says it sends (or, chunked, 16 KiB at a time), never more than one
    // byte past the limit: a message is a few KiB, so no 256 KiB buffer is filled per request.
    std::string body;
    if (request.hasContentLength())
      body.reserve(static_cast<std::size_t>(request.getContentLength64()));
    std::istream& in = request.stream();
    char chunk[16 * 1024];
    while (in && body.size() <= kMaxKmsMessageBytes) {
      const std::size_t want = std::min(sizeof chunk, kMaxKmsMessageBytes + 1 - body.size());
      in.read(chunk, static_cast<std::streamsize>(want));
      body.append(chunk, static_cast<std::size_t>(in.gcount()));
    }
    if (body.size() > kMaxKmsMessageBytes) return too_large();

    KmsReply reply = state_->service.Handle(body);
    response.setStatusAndReason(static_cast<HTTPResponse::HTTPStatus>(reply.http_status));
    response.setContentType(reply.content_type);
    response.set("Cache-Control", "no-store");
    if (reply.http_status == 503) response.set("Retry-After", "1");
    response.sendBuffer(reply.body.data(), reply.body.size());
  }

  std::shared_ptr<State> state_;
};

namespace {

class HandlerFactory : public Poco::Net::HTTPRequestHandlerFactory {
 public:
  explicit HandlerFactory(std::shared_ptr<KmsServer::State> state) : state_(std::move(state)) {}
  Poco::Net::HTTPRequestHandler* createRequestHandler(const HTTPServerRequest&) override {
    return new KmsServer::Handler(state_);
  }

 private:
  std::shared_ptr<KmsServer::State> state_;
};

}  // namespace

Result<std::unique_ptr<KmsServer>> KmsServer::Start(const KmsServerOptions& options,
                                                    KmsService& service, std::string info_json) {
  if (options.max_connections < 1 || options.max_in_flight < 1) {
    return Error(ErrorCode::kInvalidArgument, "max_connections and max_in_flight must be >= 1");
  }
  SR_ASSIGN_OR_RETURN(auto context, MakeTlsServerContext("the KMS's HTTPS listener",
                                                         options.tls_cert, options.tls_key));

  auto state = std::shared_ptr<State>(
      new State{service, std::move(info_json), options.metrics,
                AdmissionGate(options.max_in_flight, options.max_queued, options.queue_wait)});
  const int threads = static_cast<int>(options.max_connections);
  auto pool = std::make_unique<Poco::ThreadPool>("kms-https", 2, std::max(2, threads), 60);
  std::unique_ptr<Poco::Net::HTTPServer> server;
  std::uint16_t port = 0;
  try {
    Poco::Net::SecureServerSocket socket(
        Poco::Net::SocketAddress(options.listen_host, options.listen_port), 64, context);
    port = socket.address().port();
    Poco::AutoPtr<Poco::Net::HTTPServerParams> params(new Poco::Net::HTTPServerParams);
    params->setMaxThreads(threads);
    params->setMaxQueued(threads);
    params->setKeepAlive(true);
    params->setMaxKeepAliveRequests(0);  // no limit per connection
    params->setKeepAliveTimeout(Poco::Timespan(options.keep_alive_timeout.count(), 0));
    params->setTimeout(Poco::Timespan(options.io_timeout.count(), 0));
    params->setServerName("kmsd");
    server =
        std::make_unique<Poco::Net::HTTPServer>(new HandlerFactory(state), *pool, socket, params);
    server->start();
  } catch (const Poco::Exception& e) {
    return Error(ErrorCode::kUnavailable, "cannot listen on " + options.listen_host + ":" +
                                              std::to_string(options.listen_port) + ": " +
                                              e.displayText());
  }
  return std::unique_ptr<KmsServer>(
      new KmsServer(std::move(state), std::move(pool), std::move(server), port));
}

KmsServer::KmsServer(std::shared_ptr<State> state, std::unique_ptr<Poco::ThreadPool> pool,
                     std::unique_ptr<Poco::Net::HTTPServer> server, std::uint16_t port)
    : state_(std::move(state)), pool_(std::move(pool)), server_(std::move(server)), port_(port) {}

KmsServer::~KmsServer() {
  Stop();
  server_.reset();
  pool_.reset();
  Poco::Net::uninitializeSSL();
}

void KmsServer::Stop() {
  if (stopped_) return;
  stopped_ = true;
  server_->stopAll(false);  // waits for each connection's request in flight
  pool_->joinAll();
}

KmsServerCounters KmsServer::counters() const {
  const AdmissionGate::Counters gate = state_->gate.counters();
  return {state_->requests.load(), gate.refused, gate.waited};
}

}  // namespace strongroom::kms
