// The KMS's HTTPS protocol listener: the HTTPS edge of common/ (TLS 1.2 or newer, always) serving
// KmsRoutes, a route table over KmsService::Handle.
//
//   POST /kms/messages   body: one compact-JOSE KMS message (Content-Type application/jose), at
//                        most kMaxKmsMessageBytes; the answer is KmsService::Handle's reply as is.
//   GET  /kms/info       {"kmsCluster": "kms://<host>", "rsaPublicKey": {RSA JWK with x5c}}
//   GET  /health         200 {"status": "ok" | "degraded", "database": true, "tokensReady": n,
//                        "tokens": m} while the database answers and a token is ready; otherwise
//                        503 {"status": "unavailable", ...} with Retry-After. For load balancers:
//                        no token, never behind the admission gate (a busy node is not a dead
//                        one), no names or details (those are /ops/health's, ops_server.h)
//   anything else        404 (unknown path) or 405 (known path, other method), JSON error body
//
// Errors of the listener itself are JSON {"code", "message"} (http_router.h). Bodies are never
// logged.
//
// Threads: the edge's one thread holds idle and half-read connections; a complete request is
// served by one of max_connections workers (https_server.h). A worker that answered waits up to
// `linger` (2 ms) for the same connection's next request and serves it too, so a busy keep-alive
// client's requests cost no hand-off from the edge and back; a slow or idle client goes back to
// the edge after the linger.
//
// Overload: at most max_in_flight requests are processed at once (admission_gate.h). A request
// arriving when all are busy waits in a first-come-first-served line of at most max_queued for at
// most queue_wait; one that finds the line full or waits that out gets 503 with Retry-After: 1
// and a JSON error, never an unbounded queue. A 503 from the service (an HSM session pool
// timeout) carries Retry-After too.
//
// Stop() stops accepting, lets requests in flight finish and closes idle connections.
#ifndef STRONGROOM_KMS_KMS_SERVER_H_
#define STRONGROOM_KMS_KMS_SERVER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "strongroom/common/error.h"
#include "strongroom/common/http_router.h"
#include "strongroom/common/listener_settings.h"
#include "strongroom/kms/admission_gate.h"
#include "strongroom/kms/kms_service.h"

namespace strongroom::http {
class HttpsServer;
}

namespace strongroom::kms {

class Metrics;

struct KmsServerOptions {
  // port 0: any free port (see KmsServer::port())
  ListenerSettings listener{.port = 8443, .max_connections = 64};
  std::size_t max_in_flight = 32;
  std::size_t max_queued = 64;  // requests waiting for a slot, first come first served
  std::chrono::milliseconds queue_wait{100};  // longest wait for a slot before a 503
  // How long a worker that answered waits for the connection's next request before the edge does
  // (https_server.h): a busy client's requests then cost no hand-off from the edge and back.
  std::chrono::microseconds linger{2000};
  Metrics* metrics = nullptr;  // optional: counts overload refusals; outlives the server
};

// What the listener counts, for logs and tests.
struct KmsServerCounters {
  std::uint64_t requests = 0;
  std::uint64_t overloaded = 0;  // answered 503: the line for a slot was full or waited out
  std::uint64_t queued = 0;      // admitted after waiting in line for a slot
};

// The listener's routes, without a socket: GET /health (what `health` finds at that request,
// KmsService::Health in kmsd), then the admission gate, then POST /kms/messages (to `handle`,
// KmsService::Handle in kmsd) and GET /kms/info (what `info` returns at that request,
// KmsService::InfoJson in kmsd: the identity in service changes when a token fails). KmsServer
// serves it over HTTPS; tests call http::Answer on it.
class KmsRoutes : public http::Endpoint {
 public:
  using HandleMessage = std::function<KmsReply(std::string_view message)>;
  using InfoJson = std::function<std::string()>;
  using CheckHealth = std::function<ServingHealth()>;

  // `options` gives the gate (max_in_flight, max_queued, queue_wait) and the metrics.
  KmsRoutes(HandleMessage handle, InfoJson info, CheckHealth health,
            const KmsServerOptions& options);

  http::Response Serve(http::Request& request) override;
  KmsServerCounters counters() const;

 private:
  http::Response Message(http::Request& request);
  http::Response Health() const;

  const HandleMessage handle_;
  const InfoJson info_;
  const CheckHealth health_;
  Metrics* const metrics_;
  AdmissionGate gate_;
  std::atomic<std::uint64_t> requests_{0};
  http::Routes<> routes_;
};

class KmsServer {
 public:
  // Binds, loads the TLS certificate and key, and starts serving. `service` must outlive the
  // server; GET /kms/info answers its InfoJson() (the identity in service) at each request.
  static Result<std::unique_ptr<KmsServer>> Start(const KmsServerOptions& options,
                                                  KmsService& service);
  ~KmsServer();  // Stop()s
  KmsServer(const KmsServer&) = delete;
  KmsServer& operator=(const KmsServer&) = delete;

  std::uint16_t port() const;
  KmsServerCounters counters() const;

  // Stops accepting, waits for requests in flight, closes idle keep-alive connections. Idempotent.
  void Stop();

 private:
  KmsServer(std::unique_ptr<KmsRoutes> routes, std::unique_ptr<http::HttpsServer> server);

  std::unique_ptr<KmsRoutes> routes_;
  std::unique_ptr<http::HttpsServer> server_;  // stopped before routes_ goes
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_KMS_SERVER_H_
