#include "strongroom/kms/kms_server.h"

#include <Poco/JSON/Object.h>
#include <Poco/Net/SSLManager.h>

#include <cstdint>
#include <functional>
#include <sstream>
#include <string>

#include "strongroom/common/https_server.h"
#include "strongroom/kms/metrics.h"

namespace strongroom::kms {
namespace {

// Who asks, for the admission gate's fairness: the connection (its peer address and port). Never
// 0, which the gate reads as nobody in particular.
std::uint64_t ConnectionKey(const http::Request& request) {
  return std::hash<std::string>{}(request.peer().toString()) | 1;
}

}  // namespace

KmsRoutes::KmsRoutes(HandleMessage handle, InfoJson info, CheckHealth health,
                     const KmsServerOptions& options)
    : http::Endpoint("kmsd", "the KMS failed to process the request", http::CodeStyle::kSnakeCase),
      handle_(std::move(handle)),
      info_(std::move(info)),
      health_(std::move(health)),
      metrics_(options.metrics),
      gate_(options.max_in_flight, options.max_queued, options.queue_wait),
      routes_("no such endpoint (POST /kms/messages, GET /kms/info, GET /health)") {
  routes_.Add("POST", "/kms/messages", [this](http::Request& request) { return Message(request); })
      .Add("GET", "/kms/info",
           [this](http::Request&) { return http::Response::Json(200, info_()); })
      .Add("GET", "/health", [this](http::Request&) { return Health(); });
}

http::Response KmsRoutes::Serve(http::Request& request) {
  requests_.fetch_add(1, std::memory_order_relaxed);
  // A load balancer's health check is not held in line behind the requests it balances.
  if (request.segments().size() == 1 && request.segments()[0] == "health") {
    return routes_.Dispatch(request);
  }
  if (!gate_.Enter(ConnectionKey(request))) {
    if (metrics_ != nullptr) metrics_->RecordOverload();
    return http::Response::Refusal(503, "overloaded", "the KMS is busy; retry in a second")
        .With("Retry-After", "1");
  }
  struct Leave {
    AdmissionGate& gate;
    ~Leave() { gate.Release(); }
  } leave{gate_};
  return routes_.Dispatch(request);
}

http::Response KmsRoutes::Message(http::Request& request) {
  // Read at its size, never more than one byte past the limit: a message is a few KiB, so no
  // 256 KiB buffer is filled per request.
  SR_ASSIGN_OR_RETURN(std::string message,
                      http::ReadBodyAs(request, "application/jose", kMaxKmsMessageBytes,
                                       "a KMS message", "message_size"));
  KmsReply reply = handle_(message);
  http::Response response;
  response.status = reply.http_status;
  response.content_type = std::move(reply.content_type);
  response.body = std::move(reply.body);
  if (reply.http_status == 503) response.With("Retry-After", "1");
  return response;
}

http::Response KmsRoutes::Health() const {
  const ServingHealth health = health_();
  Poco::JSON::Object body;
  body.set("status", health.status());
  body.set("database", health.database.ok());
  body.set("tokensReady", health.ready);
  body.set("tokens", health.tokens.size());
  std::ostringstream out;
  body.stringify(out);
  http::Response response = http::Response::Json(health.serving() ? 200 : 503, out.str());
  if (!health.serving()) response.With("Retry-After", "1");
  return response;
}

KmsServerCounters KmsRoutes::counters() const {
  const AdmissionGate::Counters gate = gate_.counters();
  return {requests_.load(), gate.refused, gate.waited};
}

Result<std::unique_ptr<KmsServer>> KmsServer::Start(const KmsServerOptions& options,
                                                    KmsService& service) {
  if (options.listener.max_connections < 1 || options.max_in_flight < 1) {
    return Error(ErrorCode::kInvalidArgument, "max_connections and max_in_flight must be >= 1");
  }
  auto routes = std::make_unique<KmsRoutes>(
      [&service](std::string_view message) { return service.Handle(message); },
      [&service] { return service.InfoJson(); }, [&service] { return service.Health(); }, options);
  ListenerSettings listener = options.listener;
  listener.linger = options.linger;
  SR_ASSIGN_OR_RETURN(std::unique_ptr<http::HttpsServer> server,
                      StartHttpsListener(listener, "the KMS's HTTPS listener", "kmsd",
                                         http::EndpointHandlerFactory(*routes)));
  return std::unique_ptr<KmsServer>(new KmsServer(std::move(routes), std::move(server)));
}

KmsServer::KmsServer(std::unique_ptr<KmsRoutes> routes, std::unique_ptr<http::HttpsServer> server)
    : routes_(std::move(routes)), server_(std::move(server)) {}

KmsServer::~KmsServer() {
  Stop();
  server_.reset();
  Poco::Net::uninitializeSSL();
}

void KmsServer::Stop() { server_->Stop(); }

std::uint16_t KmsServer::port() const { return server_->port(); }

KmsServerCounters KmsServer::counters() const { return routes_->counters(); }

}  // namespace strongroom::kms
