// cored's HTTPS listener: the REST API over CoreService, the realtime WebSockets, the KMS relay's
// two ends (clients' POST /kms/messages and kmsd's GET /relay/kms), and /health. The API is
// described in docs/api/core.md and docs/api/core-openapi.yaml.
//
// Every request but /health and /relay/kms carries `Authorization: Bearer <JWT>` whose audience
// is "core"; a KMS token (audience "kms") is refused. Errors are JSON {"code", "message"} with
// the HTTP status of the error's kind; bodies, tokens and content are never logged.
//
// Limits: JSON bodies at most kMaxJsonRequestBytes (api_requests.h) (413 beyond, with the
// connection closed when the body is larger than it is worth reading); files at most
// max_file_bytes, streamed to disk; each user at most rate_per_s requests a second with bursts of
// rate_burst (429 with Retry-After).
//
// Threads: Poco serves each connection on one thread for as long as it lives (keep-alive HTTP,
// or a WebSocket), so max_connections bounds the clients served at once; further connections
// queue in the accept backlog.
#ifndef STRONGROOM_CORE_CORE_SERVER_H_
#define STRONGROOM_CORE_CORE_SERVER_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "strongroom/common/error.h"
#include "strongroom/common/http_router.h"
#include "strongroom/common/jwt.h"
#include "strongroom/common/listener_settings.h"
#include "strongroom/core/api_requests.h"
#include "strongroom/core/core_service.h"
#include "strongroom/core/kms_relay.h"
#include "strongroom/core/realtime_hub.h"

namespace strongroom::http {
class HttpsServer;
}

namespace strongroom::core {

struct CoreServerOptions {
  // max_connections: requests and WebSockets served at once (at least 4); port 0: any free port
  // (see CoreServer::port())
  ListenerSettings listener{.port = 9443, .max_connections = 256};
  std::uint64_t max_file_bytes = 100ull * 1024 * 1024;
  std::uint32_t rate_per_s = 200;
  std::uint32_t rate_burst = 400;
};

// The API as route tables of small handlers, without a socket: GET /health and GET /relay/kms
// for anyone, every other path (unknown ones too) after the caller's core token and rate limit.
// CoreServer serves it over HTTPS; tests call http::Answer on it. `service`, `verifier`, `hub`
// and `relay` must outlive it.
class CoreRoutes : public http::Endpoint {
 public:
  CoreRoutes(CoreService& service, const JwtVerifier& verifier, RealtimeHub& hub, KmsRelay& relay,
             const CoreServerOptions& options);
  ~CoreRoutes() override;
  CoreRoutes(const CoreRoutes&) = delete;
  CoreRoutes& operator=(const CoreRoutes&) = delete;

  http::Response Serve(http::Request& request) override;

 private:
  class Impl;  // the handlers, the route tables, the rate limiter
  std::unique_ptr<Impl> impl_;
};

class CoreServer {
 public:
  // Binds and starts serving. `service`, `verifier`, `hub` and `relay` must outlive the server.
  static Result<std::unique_ptr<CoreServer>> Start(const CoreServerOptions& options,
                                                   CoreService& service,
                                                   const JwtVerifier& verifier, RealtimeHub& hub,
                                                   KmsRelay& relay);
  ~CoreServer();  // Stop()s
  CoreServer(const CoreServer&) = delete;
  CoreServer& operator=(const CoreServer&) = delete;

  std::uint16_t port() const;

  // Stops accepting, ends realtime connections, waits for requests in flight. Idempotent.
  void Stop();

 private:
  CoreServer(std::unique_ptr<CoreRoutes> routes, RealtimeHub& hub,
             std::unique_ptr<http::HttpsServer> server);

  std::unique_ptr<CoreRoutes> routes_;
  RealtimeHub& hub_;
  std::unique_ptr<http::HttpsServer> server_;  // stopped before routes_ goes
  bool stopped_ = false;
};

}  // namespace strongroom::core

#endif  // STRONGROOM_CORE_CORE_SERVER_H_
