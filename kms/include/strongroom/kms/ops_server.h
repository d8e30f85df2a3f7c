// The KMS's operations listener: a second HTTPS server, apart from the protocol endpoint, for
// the operators of the security realm (kmsctl ops ...).
//
//   GET  /ops/health                  tokens' health, the database, keys missing wraps (200/503)
//   GET  /ops/metrics                 Prometheus text exposition format 0.0.4
//   GET  /ops/orgs/<org>/policy       the organization's policy (defaults if never set)
//   PUT  /ops/orgs/<org>/policy       replaces it (audited as "policy.update")
//                                     (both 404 for an org no token holds a root key of)
//   POST /ops/orgs/<org>/rotate-root  rotates the root key and starts the rewrap job (202)
//   GET  /ops/orgs/<org>/rewrap       the latest rewrap job's progress
//   POST /ops/orgs/<org>/rotate-search-key  makes search-key version n+1 current (201; audited
//                                     "search-key.rotate"); older versions stay (search_keys.h)
//   GET  /ops/reconcile               the latest reconciliation job's progress
//   POST /ops/reconcile               starts one (202), or resumes the active one (200)
//
// TLS always (a certificate and key are required). Every request needs
// `Authorization: Bearer <operator token>`; the token is read once from a file that only its owner
// may read (mode 0600 or stricter), and only its SHA-256 is kept, compared with the presented
// token's digest in constant time. Anything else is 401 before the request is looked at. An
// operator may name themselves in `X-Strongroom-Operator` (1-64 of [A-Za-z0-9._@-]); the audit
// records it as "operator:<name>" (self-declared: the token is shared by operators).
//
// Answers are JSON, errors {"code","message"} with the codes named as ErrorCode names them
// ("NOT_FOUND"); request bodies are at most kMaxOpsBodyBytes.
//
// Configuration ([ops] of the kmsd INI; the section absent = no operations listener):
//   [ops]
//   listen = 127.0.0.1:9443          ; host:port, [v6]:port; port 0 = any free port
//   tls_cert = /etc/strongroom/tls/ops.crt
//   tls_key = /etc/strongroom/tls/ops.key
//   token_file = /etc/strongroom/ops.token   ; mode 0600, holds the operator token
//   max_threads = 4                  ; optional: requests served at once (1-64)
//   max_open_connections = 4096      ; optional: connections open at once (1-65536)
//   max_connections_per_peer = 64    ; optional: open from one IP address (0 = no limit)
//   rewrap_batch = 256               ; optional: blobs per rewrap transaction (1-4096)
//   rewrap_idle_ms = 5000            ; optional: how often an idle rewrap worker looks for work
#ifndef STRONGROOM_KMS_OPS_SERVER_H_
#define STRONGROOM_KMS_OPS_SERVER_H_

#include <Poco/Util/AbstractConfiguration.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "strongroom/common/database.h"
#include "strongroom/common/error.h"
#include "strongroom/common/http_router.h"
#include "strongroom/common/listener_settings.h"
#include "strongroom/hsm/vault.h"
#include "strongroom/kms/key_cache.h"
#include "strongroom/kms/metrics.h"
#include "strongroom/kms/reconcile_job.h"
#include "strongroom/kms/rewrap_job.h"
#include "strongroom/kms/search_keys.h"

namespace strongroom::http {
class HttpsServer;
}

namespace strongroom::kms {

inline constexpr std::size_t kMaxOpsBodyBytes = 64 * 1024;
inline constexpr std::size_t kMinOpsTokenBytes = 32;
inline constexpr std::size_t kMaxOpsTokenBytes = 4096;

// The listener's max_connections is the section's max_threads (1-64).
inline const WorkerSetting kOpsWorkers{"max_threads", 1, 64};

struct OpsSettings {
  ListenerSettings listener{.port = 9443,
                            .max_connections = 4,
                            .max_connections_per_peer = 64,
                            .keep_alive_timeout = std::chrono::seconds(10),
                            .io_timeout = std::chrono::seconds(10)};
  std::string token_file;
  std::size_t rewrap_batch = kDefaultRewrapBatch;
  std::chrono::milliseconds rewrap_idle{5000};
};

// nullopt when the configuration has no [ops] section; unknown keys are refused.
Result<std::optional<OpsSettings>> ReadOpsSettings(const Poco::Util::AbstractConfiguration& config);

// Reads the operator token from `path`: a regular file of mode 0600 or stricter, holding one token
// of kMinOpsTokenBytes to kMaxOpsTokenBytes printable characters (a final newline is ignored).
// Returns its SHA-256; the token itself is zeroized.
Result<std::array<std::uint8_t, 32>> ReadOpsTokenDigest(const std::string& path);

// The operations listener and its routes: an http::Endpoint, so the routes are answered without a
// socket too (http::Answer).
class OpsServer : public http::Endpoint {
 public:
  using Clock = std::function<std::int64_t()>;  // milliseconds since the epoch

  // Reads the token file and the TLS certificate and key; does not listen yet. `worker`, if
  // given, is woken after a rotation. `reconcile`, if given, is the reconciliation: its count of
  // keys missing wraps goes into health and metrics, and /ops/reconcile reaches its jobs.
  // `search_keys`, if given, is what rotate-search-key rotates (without it, 409).
  static Result<std::unique_ptr<OpsServer>> New(const OpsSettings& settings, hsm::Vault& vault,
                                                Database& db, Metrics& metrics, RewrapJobs& jobs,
                                                KeyCache& cache, RewrapWorker* worker = nullptr,
                                                Clock clock = {},
                                                ReconcileWorker* reconcile = nullptr,
                                                SearchKeys* search_keys = nullptr);
  ~OpsServer();
  OpsServer(const OpsServer&) = delete;
  OpsServer& operator=(const OpsServer&) = delete;

  Status Start();
  void Stop();
  // The port listened on (the actual one when configured as 0); 0 before Start.
  std::uint16_t port() const { return port_; }

  // The answer to one request: the operator token (401 before anything else, the body unread),
  // the body (at most kMaxOpsBodyBytes), the operator's name, then the routes. Counted in the
  // metrics whatever the answer.
  http::Response Serve(http::Request& request) override;

 private:
  struct Tls;   // the TLS context
  struct Call;  // who asks (the audit's actor) and the body

  OpsServer(const OpsSettings& settings, std::array<std::uint8_t, 32> token_digest,
            hsm::Vault& vault, Database& db, Metrics& metrics, RewrapJobs& jobs, KeyCache& cache,
            RewrapWorker* worker, Clock clock, ReconcileWorker* reconcile, SearchKeys* search_keys);

  http::Response Handle(http::Request& request);
  http::Response Health();
  http::Response GetPolicy(const std::string& org);
  http::Response PutPolicy(const std::string& org, const std::string& actor,
                           const std::string& body);
  http::Response RotateRoot(const std::string& org, const std::string& actor);
  http::Response GetRewrap(const std::string& org);
  http::Response RotateSearchKey(const std::string& org, const std::string& actor);
  http::Response GetReconcile();
  http::Response StartReconcile(const std::string& actor);
  bool Authorized(const std::string& authorization) const;
  std::int64_t Now() const;

  const OpsSettings settings_;
  const std::array<std::uint8_t, 32> token_digest_;
  hsm::Vault& vault_;
  Database& db_;
  Metrics& metrics_;
  RewrapJobs& jobs_;
  KeyCache& cache_;
  RewrapWorker* const worker_;
  const Clock clock_;
  ReconcileWorker* const reconcile_;
  SearchKeys* const search_keys_;
  http::Routes<const Call&> routes_;

  std::unique_ptr<Tls> tls_;
  std::unique_ptr<http::HttpsServer> server_;
  std::uint16_t port_ = 0;
};

// What kmsd runs for its operators, built from the [ops] section of its configuration file: the
// rewrap jobs, the worker thread that runs them (rotation also clears `cache`) and the listener.
// The reconciliation runs whether or not there is an [ops] section (kmsd starts its worker); the
// listener reports on it if given.
class Operations {
 public:
  // Reads [ops] and everything it names (the token file, the TLS certificate and key) and starts
  // the rewrap worker, but does not listen yet: kmsd checks every setting before any listener
  // opens. nullptr (and OK) when the file has no [ops] section: no listener and no rewrap worker.
  // `probe_interval` is the vault's ([hsm] probe_interval_ms): a rewrap job waits for the other
  // nodes' probes (RewrapJobs).
  static Result<std::unique_ptr<Operations>> New(
      const std::string& config_path, hsm::Vault& vault, Database& db, Metrics& metrics,
      KeyCache& cache, ReconcileWorker* reconcile = nullptr,
      std::chrono::milliseconds probe_interval = std::chrono::milliseconds(0));
  // Opens the listener.
  Status Listen();
  // New, then Listen.
  static Result<std::unique_ptr<Operations>> Start(
      const std::string& config_path, hsm::Vault& vault, Database& db, Metrics& metrics,
      KeyCache& cache, ReconcileWorker* reconcile = nullptr,
      std::chrono::milliseconds probe_interval = std::chrono::milliseconds(0));
  ~Operations();  // the listener stops first, then the worker
  Operations(const Operations&) = delete;
  Operations& operator=(const Operations&) = delete;

  std::uint16_t port() const { return server_->port(); }
  const OpsSettings& settings() const { return settings_; }

 private:
  Operations(OpsSettings settings, hsm::Vault& vault, Database& db, KeyCache& cache,
             const std::string& host, std::chrono::milliseconds probe_interval);

  const OpsSettings settings_;
  RewrapJobs jobs_;
  RewrapWorker worker_;
  std::unique_ptr<SearchKeys> search_keys_;  // null without [kms] host
  std::unique_ptr<OpsServer> server_;
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_OPS_SERVER_H_
