#include "strongroom/kms/ops_server.h"

#include <Poco/AutoPtr.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/String.h>
#include <Poco/Util/IniFileConfiguration.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <sstream>
#include <vector>

#include "strongroom/common/config_file.h"
#include "strongroom/common/https_server.h"
#include "strongroom/common/rfc3339.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/common/tls.h"
#include "strongroom/common/token_file.h"
#include "strongroom/kms/audit_log.h"
#include "strongroom/kms/org_policy.h"
#include "strongroom/kms/serving_health.h"

namespace strongroom::kms {
namespace {

using Poco::JSON::Object;

using http::Request;
using http::Response;

constexpr std::size_t kMaxOperatorName = 64;
constexpr std::size_t kMaxFailuresShown = 20;

// A job's progress lists its first failures, when they can be read (the counts are there anyway).
void SetFailures(Object& body, const Result<std::vector<JobFailure>>& failures) {
  if (!failures.ok()) return;
  Poco::JSON::Array list;
  for (const JobFailure& f : *failures) {
    Object item;
    item.set("kind", f.kind);
    item.set("uri", f.uri);
    item.set("token", f.token);
    item.set("error", f.error);
    list.add(item);
  }
  body.set("failures", list);
}

Response JsonResponse(int status, const Object& body) {
  std::ostringstream out;
  body.stringify(out);
  return Response::Json(status, out.str());
}

// The organization the path names, or the refusal of an invalid name.
http::OrAnswer<std::string> OrgOf(const Request& request) {
  const std::string& org = request.param("org");
  SR_RETURN_IF_ERROR(hsm::ValidateOrgName(org));
  return org;
}

bool ValidOperatorName(const std::string& name) {
  return !name.empty() && name.size() <= kMaxOperatorName &&
         std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '@' || c == '-';
         });
}

std::array<std::uint8_t, 32> Sha256(std::span<const std::uint8_t> data) {
  std::array<std::uint8_t, 32> digest{};
  unsigned int size = 0;
  EVP_Digest(data.data(), data.size(), digest.data(), &size, EVP_sha256(), nullptr);
  return digest;
}

// Whether kmsd serves `org`: a token that serves it holds a root key of it. NOT_FOUND when none
// does; a token that cannot say is passed over, and its error is the answer if no other token
// holds a root key of the org (the org may well be served: the operator should retry).
Status CheckServed(hsm::Vault& vault, const std::string& org) {
  std::optional<Error> outage;
  for (hsm::VaultToken* token : vault.Tokens()) {
    if (!token->Serves(org)) continue;
    Result<std::vector<hsm::RootKeyInfo>> keys = token->ListRootKeys(org);
    if (!keys.ok()) {
      outage = keys.error();
    } else if (!keys->empty()) {
      return OkStatus();
    }
  }
  if (outage) return *outage;
  return Error(ErrorCode::kNotFound, "this KMS does not serve organization " + org +
                                         ": no token holds a root key of it (kmsctl hsm "
                                         "init-root --org " +
                                         org + ")");
}

// What every job's progress shows.
Object JobJson(const JobProgress& p) {
  Object o;
  o.set("jobId", p.job_id);
  o.set("state", p.state);
  o.set("total", p.total);
  o.set("done", p.done);
  o.set("failed", p.failed);
  o.set("remaining", std::max<std::int64_t>(0, p.total - p.done - p.failed));
  o.set("ratePerSecond", p.rate_per_second);
  o.set("startedMs", p.started_ms);
  o.set("updatedMs", p.updated_ms);
  o.set("lastError", p.last_error);
  return o;
}

Object ProgressJson(const RewrapProgress& p) {
  Object o = JobJson(p);
  o.set("org", p.org);
  o.set("rootVersion", p.root_version);
  return o;
}

Object MissingJson(const MissingWraps& missing) {
  Object o;
  for (const auto& [token, n] : missing.by_token) o.set(token, n);
  return o;
}

Object ReconcileJson(const ReconcileProgress& p, const std::optional<MissingWraps>& missing) {
  Object o = JobJson(p);
  o.set("startedBy", p.started_by);
  Poco::JSON::Array waiting;
  for (const std::string& token : p.waiting_for) waiting.add(token);
  o.set("waitingFor", waiting);
  if (missing) {
    o.set("missing", MissingJson(*missing));
    o.set("countedMs", missing->counted_ms);
  }
  return o;
}

}  // namespace

Result<std::optional<OpsSettings>> ReadOpsSettings(
    const Poco::Util::AbstractConfiguration& config) {
  Poco::Util::AbstractConfiguration::Keys keys;
  config.keys("ops", keys);
  if (keys.empty()) return std::optional<OpsSettings>();
  std::set<std::string> allowed = ListenerSettingKeys(kOpsWorkers);
  allowed.insert({"token_file", "rewrap_batch", "rewrap_idle_ms"});
  SR_RETURN_IF_ERROR(CheckSettingKeys(config, "ops", allowed));
  OpsSettings out;
  SR_ASSIGN_OR_RETURN(out.listener, ReadListenerSettings(config, "ops", out.listener, kOpsWorkers));
  SR_ASSIGN_OR_RETURN(out.token_file,
                      RequiredSetting(config, "ops.token_file", "operator token file"));
  SR_ASSIGN_OR_RETURN(out.rewrap_batch, UnsignedSetting(config, "ops.rewrap_batch",
                                                        out.rewrap_batch, 1, kMaxRewrapBatch));
  SR_ASSIGN_OR_RETURN(out.rewrap_idle, DurationSetting(config, "ops.rewrap_idle_ms",
                                                       out.rewrap_idle, 10, 3'600'000));
  return std::optional<OpsSettings>(std::move(out));
}

Result<std::array<std::uint8_t, 32>> ReadOpsTokenDigest(const std::string& path) {
  SR_ASSIGN_OR_RETURN(SecretBytes token, ReadTokenFile(path, "operator token file",
                                                       kMinOpsTokenBytes, kMaxOpsTokenBytes));
  return Sha256(token.view());
}

struct OpsServer::Tls {
  Poco::Net::Context::Ptr context;
};

struct OpsServer::Call {
  std::string actor;  // "operator", or "operator:<name>"
  std::string body;
};

Result<std::unique_ptr<OpsServer>> OpsServer::New(const OpsSettings& settings, hsm::Vault& vault,
                                                  Database& db, Metrics& metrics, RewrapJobs& jobs,
                                                  KeyCache& cache, RewrapWorker* worker,
                                                  Clock clock, ReconcileWorker* reconcile,
                                                  SearchKeys* search_keys) {
  if (settings.listener.max_connections < kOpsWorkers.min ||
      settings.listener.max_connections > kOpsWorkers.max) {
    return Error(ErrorCode::kInvalidArgument, "ops max_threads must be 1 to 64");
  }
  SR_ASSIGN_OR_RETURN(auto digest, ReadOpsTokenDigest(settings.token_file));
  auto tls = std::make_unique<Tls>();
  SR_ASSIGN_OR_RETURN(tls->context,
                      MakeTlsServerContext("the operations listener", settings.listener.tls_cert,
                                           settings.listener.tls_key));
  std::unique_ptr<OpsServer> server(new OpsServer(settings, digest, vault, db, metrics, jobs, cache,
                                                  worker, std::move(clock), reconcile,
                                                  search_keys));
  server->tls_ = std::move(tls);
  return server;
}

OpsServer::OpsServer(const OpsSettings& settings, std::array<std::uint8_t, 32> token_digest,
                     hsm::Vault& vault, Database& db, Metrics& metrics, RewrapJobs& jobs,
                     KeyCache& cache, RewrapWorker* worker, Clock clock, ReconcileWorker* reconcile,
                     SearchKeys* search_keys)
    : http::Endpoint("kmsd-ops", "the operations request failed", http::CodeStyle::kUpperCase),
      settings_(settings),
      token_digest_(token_digest),
      vault_(vault),
      db_(db),
      metrics_(metrics),
      jobs_(jobs),
      cache_(cache),
      worker_(worker),
      clock_(std::move(clock)),
      reconcile_(reconcile),
      search_keys_(search_keys),
      routes_("no such operations endpoint (see docs/operations/ops-api.md)") {
  routes_.Add("GET", "/ops/health", [this](Request&, const Call&) { return Health(); })
      .Add("GET", "/ops/metrics",
           [this](Request&, const Call&) {
             Response response;
             response.content_type = "text/plain; version=0.0.4; charset=utf-8";
             MetricSources sources{&cache_, &vault_};
             if (reconcile_ != nullptr) sources.missing_wraps = reconcile_->jobs().last_count();
             response.body = metrics_.RenderPrometheus(sources);
             return response;
           })
      .Add("GET", "/ops/reconcile", [this](Request&, const Call&) { return GetReconcile(); })
      .Add("POST", "/ops/reconcile",
           [this](Request&, const Call& call) { return StartReconcile(call.actor); })
      .Add("GET", "/ops/orgs/{org}/policy",
           [this](Request& request, const Call&) -> Response {
             SR_ASSIGN_OR_RETURN(std::string org, OrgOf(request));
             return GetPolicy(org);
           })
      .Add("PUT", "/ops/orgs/{org}/policy",
           [this](Request& request, const Call& call) -> Response {
             SR_ASSIGN_OR_RETURN(std::string org, OrgOf(request));
             return PutPolicy(org, call.actor, call.body);
           })
      .Add("POST", "/ops/orgs/{org}/rotate-root",
           [this](Request& request, const Call& call) -> Response {
             SR_ASSIGN_OR_RETURN(std::string org, OrgOf(request));
             return RotateRoot(org, call.actor);
           })
      .Add("GET", "/ops/orgs/{org}/rewrap",
           [this](Request& request, const Call&) -> Response {
             SR_ASSIGN_OR_RETURN(std::string org, OrgOf(request));
             return GetRewrap(org);
           })
      .Add("POST", "/ops/orgs/{org}/rotate-search-key",
           [this](Request& request, const Call& call) -> Response {
             SR_ASSIGN_OR_RETURN(std::string org, OrgOf(request));
             return RotateSearchKey(org, call.actor);
           });
}

OpsServer::~OpsServer() {
  Stop();
  tls_.reset();
  Poco::Net::uninitializeSSL();
}

Status OpsServer::Start() {
  if (server_) return Error(ErrorCode::kFailedPrecondition, "the operations listener runs already");
  Result<std::unique_ptr<http::HttpsServer>> server =
      http::HttpsServer::Start(settings_.listener.ServerOptions("kmsd-ops"), tls_->context,
                               http::EndpointHandlerFactory(*this));
  if (!server.ok()) {
    return Error(ErrorCode::kUnavailable, "the operations listener: " + server.error().message());
  }
  server_ = std::move(server).value();
  port_ = server_->port();
  return OkStatus();
}

void OpsServer::Stop() {
  if (!server_) return;
  server_->Stop();
  server_.reset();
}

std::int64_t OpsServer::Now() const { return clock_ ? clock_() : UnixNowMs(); }

bool OpsServer::Authorized(const std::string& authorization) const {
  // The scheme is case-insensitive (RFC 9110 11.1); the token is compared as it is.
  constexpr std::string_view kBearer = "bearer ";
  if (authorization.size() <= kBearer.size() ||
      Poco::icompare(authorization, 0, kBearer.size(), kBearer.data()) != 0 ||
      authorization.size() > kBearer.size() + kMaxOpsTokenBytes) {
    return false;
  }
  const std::string_view token = std::string_view(authorization).substr(kBearer.size());
  const auto digest = Sha256({reinterpret_cast<const std::uint8_t*>(token.data()), token.size()});
  return ConstantTimeEquals(digest, token_digest_);
}

Response OpsServer::Serve(Request& request) {
  // Counted when the answer leaves, whatever it is: an exception is answered 500 by the adapter.
  struct Count {
    Metrics& metrics;
    const std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
    int status = 500;
    ~Count() { metrics.RecordRequest("ops", status, std::chrono::steady_clock::now() - start); }
  } count{metrics_};
  Response response = Handle(request);
  count.status = response.status;
  return response;
}

Response OpsServer::Handle(Request& request) {
  if (!Authorized(request.header("Authorization"))) {
    return Response(Error(ErrorCode::kUnauthenticated,
                          "an operator token is required: Authorization: Bearer <token>"))
        .With("WWW-Authenticate", "Bearer realm=\"strongroom-ops\"")
        .Closing();
  }
  std::optional<std::string> body = request.ReadBody(kMaxOpsBodyBytes);
  if (!body) {
    Response too_big =
        Error(ErrorCode::kResourceExhausted,
              "the request body exceeds " + std::to_string(kMaxOpsBodyBytes) + " bytes");
    too_big.status = 413;
    return too_big.Closing();
  }
  const std::string operator_name = request.header("X-Strongroom-Operator");
  if (!operator_name.empty() && !ValidOperatorName(operator_name)) {
    return Error(ErrorCode::kInvalidArgument,
                 "X-Strongroom-Operator must be 1-64 of [A-Za-z0-9._@-]");
  }
  const Call call{operator_name.empty() ? std::string("operator") : "operator:" + operator_name,
                  std::move(*body)};
  return routes_.Dispatch(request, call);
}

Response OpsServer::Health() {
  const ServingHealth health = CheckServingHealth(vault_, db_);
  Object body;
  Object database;
  database.set("reachable", health.database.ok());
  database.set("schemaVersion", db_.schema_version());
  if (!health.database.ok()) database.set("error", health.database.error().ToString());
  body.set("database", database);

  Poco::JSON::Array tokens;
  for (const hsm::TokenHealth& h : health.tokens) {
    Object token;
    token.set("name", h.name);
    token.set("state", std::string(hsm::TokenStateName(h.state)));
    if (!h.detail.empty()) token.set("detail", h.detail);
    token.set("moduleResets", h.module_resets);
    token.set("loginAttempts", h.login_attempts);
    token.set("repairs", h.repairs);
    Object pool;
    pool.set("capacity", h.pool.capacity);
    pool.set("open", h.pool.open);
    pool.set("idle", h.pool.idle);
    pool.set("acquired", h.pool.acquired);
    pool.set("waited", h.pool.waited);
    pool.set("timedOut", h.pool.timed_out);
    pool.set("waitSeconds", static_cast<double>(h.pool.wait_micros) / 1e6);
    token.set("pool", pool);
    tokens.add(token);
  }
  body.set("tokens", tokens);
  // Keys that lack a wrap under some token hang on fewer tokens than configured: degraded until
  // the reconciliation has wrapped them (its last count; health never runs the query itself).
  std::int64_t missing_wraps = 0;
  if (reconcile_ != nullptr) {
    if (std::optional<MissingWraps> missing = reconcile_->jobs().last_count()) {
      Object wraps;
      wraps.set("missing", MissingJson(*missing));
      wraps.set("countedMs", missing->counted_ms);
      body.set("wraps", wraps);
      missing_wraps = missing->total();
    }
  }
  // The KMS serves while the database answers and at least one token is ready.
  const std::string status = health.status();
  body.set("status", status == "ok" && missing_wraps != 0 ? "degraded" : status);
  return JsonResponse(health.serving() ? 200 : 503, body);
}

Response OpsServer::GetPolicy(const std::string& org) {
  if (Status served = CheckServed(vault_, org); !served.ok()) return Response(served.error());
  std::string json;
  Status read = db_.WithSession([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(OrgPolicy policy, PolicyStore::Get(s, org));
    json = PolicyStore::ToJson(policy);
    return OkStatus();
  });
  if (!read.ok()) return Response(read.error());
  return Response::Json(200, std::move(json));
}

Response OpsServer::PutPolicy(const std::string& org, const std::string& actor,
                              const std::string& body) {
  if (Status served = CheckServed(vault_, org); !served.ok()) return Response(served.error());
  Result<OrgPolicy> policy = PolicyStore::FromJson(body, org);
  if (!policy.ok()) return Response(policy.error());
  const std::int64_t now = Now();
  Status stored = db_.InTransaction([&](Poco::Data::Session& s) -> Status {
    SR_RETURN_IF_ERROR(PolicyStore::Put(s, *policy, now));
    std::string detail = PolicyStore::ToJson(*policy);  // user ids and lifetimes; no secrets
    if (detail.size() > kMaxAuditField) detail = detail.substr(0, kMaxAuditField - 3) + "...";
    AuditRecord record{.at_ms = now,
                       .org = org,
                       .actor = actor,
                       .action = "policy.update",
                       .outcome = "ok",
                       .detail = std::move(detail)};
    return AuditLog::Append(s, record);
  });
  if (!stored.ok()) return Response(stored.error());
  return Response::Json(200, PolicyStore::ToJson(*policy));
}

Response OpsServer::RotateRoot(const std::string& org, const std::string& actor) {
  Result<kms::RewrapProgress> job = jobs_.Rotate(org, actor);
  if (!job.ok()) return Response(job.error());
  cache_.Clear();  // nothing unwrapped under the old version outlives the rotation
  if (worker_ != nullptr) worker_->Wake();
  return JsonResponse(202, ProgressJson(*job));
}

Response OpsServer::RotateSearchKey(const std::string& org, const std::string& actor) {
  if (search_keys_ == nullptr) {
    return Response(Error(ErrorCode::kFailedPrecondition,
                          "this kmsd has no [kms] host, so no search keys to rotate"));
  }
  if (Status served = CheckServed(vault_, org); !served.ok()) return Response(served.error());
  Result<SearchKeyRecord> key = search_keys_->Rotate(org, actor);
  if (!key.ok()) return Response(key.error());
  Object body;
  body.set("org", key->org);
  body.set("uri", key->uri);
  body.set("version", static_cast<Poco::Int64>(key->version));
  body.set("createdMs", key->created_ms);
  return JsonResponse(201, body);
}

Response OpsServer::GetRewrap(const std::string& org) {
  Result<kms::RewrapProgress> job = jobs_.Progress(org);
  if (!job.ok()) return Response(job.error());
  Object body = ProgressJson(*job);
  if (job->failed > 0) {
    SetFailures(body, jobs_.Failures(job->job_id, kMaxFailuresShown));
  }
  return JsonResponse(200, body);
}

Response OpsServer::GetReconcile() {
  if (reconcile_ == nullptr) {
    return Response(Error(ErrorCode::kNotFound, "no reconciliation runs in this process"));
  }
  Result<ReconcileProgress> job = reconcile_->jobs().Progress();
  if (!job.ok()) return Response(job.error());
  Object body = ReconcileJson(*job, reconcile_->jobs().last_count());
  if (job->failed > 0) {
    SetFailures(body, reconcile_->jobs().Failures(job->job_id, kMaxFailuresShown));
  }
  return JsonResponse(200, body);
}

Response OpsServer::StartReconcile(const std::string& actor) {
  if (reconcile_ == nullptr) {
    return Response(Error(ErrorCode::kNotFound, "no reconciliation runs in this process"));
  }
  bool started = false;
  Result<ReconcileProgress> job = reconcile_->jobs().Start(actor, &started);
  if (!job.ok()) return Response(job.error());
  reconcile_->Wake();
  return JsonResponse(started ? 202 : 200, ReconcileJson(*job, reconcile_->jobs().last_count()));
}

Operations::Operations(OpsSettings settings, hsm::Vault& vault, Database& db, KeyCache& cache,
                       const std::string& host, std::chrono::milliseconds probe_interval)
    : settings_(std::move(settings)),
      jobs_(
          vault, db, {}, [&cache](const std::string&) { cache.Clear(); }, probe_interval),
      worker_(jobs_, settings_.rewrap_idle, settings_.rewrap_batch),
      search_keys_(host.empty() ? nullptr
                                : std::make_unique<SearchKeys>("kms://" + host, vault, db)) {}

Operations::~Operations() {
  if (server_) server_->Stop();
  server_.reset();
  worker_.Stop();
}

Result<std::unique_ptr<Operations>> Operations::New(const std::string& config_path,
                                                    hsm::Vault& vault, Database& db,
                                                    Metrics& metrics, KeyCache& cache,
                                                    ReconcileWorker* reconcile,
                                                    std::chrono::milliseconds probe_interval) {
  SR_ASSIGN_OR_RETURN(auto config, LoadConfigFile(config_path));
  SR_ASSIGN_OR_RETURN(std::optional<OpsSettings> settings, ReadOpsSettings(*config));
  if (!settings) return std::unique_ptr<Operations>();
  // The search keys' URIs name the KMS's host ([kms] host, which kmsd requires).
  const std::string host = config->hasProperty("kms.host") ? SettingText(*config, "kms.host") : "";
  std::unique_ptr<Operations> ops(
      new Operations(*settings, vault, db, cache, host, probe_interval));
  SR_ASSIGN_OR_RETURN(ops->server_,
                      OpsServer::New(ops->settings_, vault, db, metrics, ops->jobs_, cache,
                                     &ops->worker_, {}, reconcile, ops->search_keys_.get()));
  return ops;
}

Status Operations::Listen() { return server_->Start(); }

Result<std::unique_ptr<Operations>> Operations::Start(const std::string& config_path,
                                                      hsm::Vault& vault, Database& db,
                                                      Metrics& metrics, KeyCache& cache,
                                                      ReconcileWorker* reconcile,
                                                      std::chrono::milliseconds probe_interval) {
  SR_ASSIGN_OR_RETURN(std::unique_ptr<Operations> ops,
                      New(config_path, vault, db, metrics, cache, reconcile, probe_interval));
  if (ops) SR_RETURN_IF_ERROR(ops->Listen());
  return ops;
}

}  // namespace strongroom::kms
