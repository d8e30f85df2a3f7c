#include "strongroom/kms/kms_server.h"

#include <Poco/Exception.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/String.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>

#include "strongroom/common/http_support.h"
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

using http::Discard;
using http::SendError;
using http::SendJson;

void LogError(const std::string& what) { std::cerr << "kmsd: error: " << what << std::endl; }

// Who asks, for the admission gate's fairness: the connection (its peer address and port). Never
// 0, which the gate reads as nobody in particular.
std::uint64_t ConnectionKey(const HTTPServerRequest& request) {
  return std::hash<std::string>{}(request.clientAddress().toString()) | 1;
}

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
      if (std::optional<std::string> problem = http::FramingProblem(request)) {
        return http::RefuseFraming(request, response, *problem);
      }
      if (!state_->gate.Enter(ConnectionKey(request))) {
        if (state_->metrics != nullptr) state_->metrics->RecordOverload();
        response.set("Retry-After", "1");
        // The body is read and dropped (bounded) so the connection stays usable; an oversize one
        // closes it.
        Discard(request, response);
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
    Discard(request, response);
    SendError(response, 404, "not_found", "no such endpoint (POST /kms/messages, GET /kms/info)");
  }

  void NotAllowed(HTTPServerResponse& response, const char* allow) {
    response.set("Allow", allow);
    SendError(response, 405, "method_not_allowed", std::string("use ") + allow);
  }

  void Message(HTTPServerRequest& request, HTTPServerResponse& response) {
    if (http::MediaType(request) != "application/jose") {
      Discard(request, response);
      return SendError(response, 415, "media_type",
                       "a KMS message is sent as Content-Type: application/jose");
    }
    // Read at its size, never more than one byte past the limit: a message is a few KiB, so no
    // 256 KiB buffer is filled per request.
    std::optional<std::string> body = http::ReadBody(request, kMaxKmsMessageBytes);
    if (!body) {
      return http::RefuseBody(
          request, response, 413, "message_size",
          "a KMS message is at most " + std::to_string(kMaxKmsMessageBytes) + " bytes");
    }
    KmsReply reply = state_->service.Handle(*body);
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
  http::HttpsServerOptions https;
  https.listen_host = options.listen_host;
  https.listen_port = options.listen_port;
  https.max_threads = options.max_connections;
  https.max_connections = options.max_open_connections;
  https.max_connections_per_peer = options.max_connections_per_peer;
  https.keep_alive_timeout = options.keep_alive_timeout;
  https.io_timeout = options.io_timeout;
  https.server_name = "kmsd";
  SR_ASSIGN_OR_RETURN(std::unique_ptr<http::HttpsServer> server,
                      http::HttpsServer::Start(https, context, new HandlerFactory(state)));
  return std::unique_ptr<KmsServer>(new KmsServer(std::move(state), std::move(server)));
}

KmsServer::KmsServer(std::shared_ptr<State> state, std::unique_ptr<http::HttpsServer> server)
    : state_(std::move(state)), server_(std::move(server)) {}

KmsServer::~KmsServer() {
  Stop();
  server_.reset();
  Poco::Net::uninitializeSSL();
}

void KmsServer::Stop() { server_->Stop(); }

std::uint16_t KmsServer::port() const { return server_->port(); }

KmsServerCounters KmsServer::counters() const {
  const AdmissionGate::Counters gate = state_->gate.counters();
  return {state_->requests.load(), gate.refused, gate.waited};
}

}  // namespace strongroom::kms
