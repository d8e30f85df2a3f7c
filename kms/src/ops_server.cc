#include "strongroom/kms/ops_server.h"

#include <Poco/AutoPtr.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/Net/SecureServerSocket.h>
#include <Poco/Net/SocketAddress.h>
#include <Poco/String.h>
#include <Poco/URI.h>
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
#include "strongroom/common/http_support.h"
#include "strongroom/common/rfc3339.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/common/tls.h"
#include "strongroom/common/token_file.h"
#include "strongroom/kms/audit_log.h"
#include "strongroom/kms/org_policy.h"

namespace strongroom::kms {
namespace {

using Poco::JSON::Object;

constexpr std::size_t kMaxOperatorName = 64;
constexpr std::size_t kMaxFailuresShown = 20;
constexpr std::size_t kMaxOpsDrainBytes = 1024 * 1024;  // read and dropped after a too-large body

std::string Json(const Object& o) {
  std::ostringstream out;
  o.stringify(out);
  return out.str();
}

OpsReply JsonReply(int status, const Object& body) {
  OpsReply reply;
  reply.status = status;
  reply.body = Json(body);
  return reply;
}

OpsReply ErrorReply(int status, ErrorCode code, const std::string& message) {
  Object body;
  body.set("code", std::string(ErrorCodeName(code)));
  body.set("message", message);
  return JsonReply(status, body);
}

OpsReply ErrorReply(const Error& error) {
  return ErrorReply(HttpStatusFor(error.code()), error.code(), error.message());
}

std::string Text(const Poco::Util::AbstractConfiguration& config, const std::string& key) {
  std::string value = config.getString(key, "");
  const auto first = value.find_first_not_of(" \t");
  const auto last = value.find_last_not_of(" \t");
  return first == std::string::npos ? "" : value.substr(first, last - first + 1);
}

Result<std::int64_t> Integer(const Poco::Util::AbstractConfiguration& config,
                             const std::string& key, std::int64_t low, std::int64_t high) {
  const std::string text = Text(config, key);
  std::int64_t value = 0;
  std::size_t used = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (text.empty() || used != text.size() || value < low || value > high) {
    return Error(ErrorCode::kInvalidArgument, key + " must be an integer from " +
                                                  std::to_string(low) + " to " +
                                                  std::to_string(high) + ", got '" + text + "'");
  }
  return value;
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
Status CheckServed(hsm::KeyVault& vault, const std::string& org) {
  std::optional<Error> outage;
  for (const auto& token : vault.tokens()) {
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

Object ProgressJson(const RewrapProgress& p) {
  Object o;
  o.set("jobId", p.job_id);
  o.set("org", p.org);
  o.set("rootVersion", p.root_version);
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

}  // namespace

Result<std::optional<OpsSettings>> ReadOpsSettings(
    const Poco::Util::AbstractConfiguration& config) {
  Poco::Util::AbstractConfiguration::Keys keys;
  config.keys("ops", keys);
  if (keys.empty()) return std::optional<OpsSettings>();
  SR_RETURN_IF_ERROR(CheckSettingKeys(
      config, "ops",
      {"listen", "tls_cert", "tls_key", "token_file", "max_threads", "max_open_connections",
       "max_connections_per_peer", "rewrap_batch", "rewrap_idle_ms"}));
  OpsSettings out;
  if (config.hasProperty("ops.listen")) {
    SR_ASSIGN_OR_RETURN(ListenAddress listen,
                        ParseListenSetting("ops.listen", Text(config, "ops.listen")));
    out.listen_host = listen.host;
    out.listen_port = listen.port;
  }
  out.tls_cert = Text(config, "ops.tls_cert");
  out.tls_key = Text(config, "ops.tls_key");
  out.token_file = Text(config, "ops.token_file");
  for (const auto& [key, value] :
       {std::pair{"ops.tls_cert", &out.tls_cert}, std::pair{"ops.tls_key", &out.tls_key},
        std::pair{"ops.token_file", &out.token_file}}) {
    if (value->empty()) {
      return Error(ErrorCode::kInvalidArgument,
                   std::string(key) +
                       " is required: the operations listener always uses TLS "
                       "and an operator token");
    }
  }
  if (config.hasProperty("ops.max_threads")) {
    SR_ASSIGN_OR_RETURN(std::int64_t n, Integer(config, "ops.max_threads", 1, 64));
    out.max_threads = static_cast<std::size_t>(n);
  }
  if (config.hasProperty("ops.max_open_connections")) {
    SR_ASSIGN_OR_RETURN(std::int64_t n, Integer(config, "ops.max_open_connections", 1, 65536));
    out.max_open_connections = static_cast<std::size_t>(n);
  }
  if (config.hasProperty("ops.max_connections_per_peer")) {
    SR_ASSIGN_OR_RETURN(std::int64_t n, Integer(config, "ops.max_connections_per_peer", 0, 65536));
    out.max_connections_per_peer = static_cast<std::size_t>(n);
  }
  if (config.hasProperty("ops.rewrap_batch")) {
    SR_ASSIGN_OR_RETURN(std::int64_t n, Integer(config, "ops.rewrap_batch", 1,
                                                static_cast<std::int64_t>(kMaxRewrapBatch)));
    out.rewrap_batch = static_cast<std::size_t>(n);
  }
  if (config.hasProperty("ops.rewrap_idle_ms")) {
    SR_ASSIGN_OR_RETURN(std::int64_t n, Integer(config, "ops.rewrap_idle_ms", 10, 3'600'000));
    out.rewrap_idle = std::chrono::milliseconds(n);
  }
  return std::optional<OpsSettings>(std::move(out));
}

Result<std::array<std::uint8_t, 32>> ReadOpsTokenDigest(const std::string& path) {
  SR_ASSIGN_OR_RETURN(SecretBytes token, ReadTokenFile(path, "operator token file",
                                                       kMinOpsTokenBytes, kMaxOpsTokenBytes));
  return Sha256(token.view());
}

// Reads a body of at most kMaxOpsBodyBytes into `body`; false if it is longer (then up to
// kMaxOpsDrainBytes are read and dropped).
static bool ReadBody(std::istream& in, std::string& body) {
  std::vector<char> buffer(kMaxOpsBodyBytes + 1);
  in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
  std::size_t got = static_cast<std::size_t>(in.gcount());
  if (got <= kMaxOpsBodyBytes) {
    body.assign(buffer.data(), got);
    return true;
  }
  while (in && got < kMaxOpsDrainBytes) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    got += static_cast<std::size_t>(in.gcount());
  }
  return false;
}

// The adapter that meets Poco: the one place exceptions are caught.
class OpsRequestHandler : public Poco::Net::HTTPRequestHandler {
 public:
  explicit OpsRequestHandler(OpsServer& server) : server_(server) {}

  void handleRequest(Poco::Net::HTTPServerRequest& request,
                     Poco::Net::HTTPServerResponse& response) override {
    OpsReply reply;
    try {
      if (std::optional<std::string> problem = http::FramingProblem(request)) {
        return http::RefuseFraming(request, response, *problem);
      }
      OpsRequest r;
      r.method = request.getMethod();
      r.path = Poco::URI(request.getURI()).getPath();
      r.authorization = request.get("Authorization", "");
      r.operator_name = request.get("X-Strongroom-Operator", "");
      // The body is read (bounded) before answering, even a refusal: a server that closes with
      // unread input makes TCP reset the connection, and the client may lose the answer.
      bool too_big = request.hasContentLength() &&
                     request.getContentLength64() > static_cast<Poco::Int64>(kMaxOpsDrainBytes);
      if (!too_big) too_big = !ReadBody(request.stream(), r.body);
      if (!server_.Authorized(r.authorization)) {
        r.body.clear();
        reply = server_.Handle(r);  // 401
        response.setKeepAlive(false);
      } else if (too_big) {
        reply =
            ErrorReply(413, ErrorCode::kResourceExhausted,
                       "the request body exceeds " + std::to_string(kMaxOpsBodyBytes) + " bytes");
        response.setKeepAlive(false);
      } else {
        reply = server_.Handle(r);
      }
    } catch (const Poco::Exception& e) {
      reply = ErrorReply(500, ErrorCode::kInternal, "the request failed: " + e.displayText());
    } catch (const std::exception& e) {
      reply = ErrorReply(500, ErrorCode::kInternal, std::string("the request failed: ") + e.what());
    }
    try {
      response.setStatusAndReason(static_cast<Poco::Net::HTTPResponse::HTTPStatus>(reply.status));
      response.setContentType(reply.content_type);
      response.set("Cache-Control", "no-store");
      for (const auto& [name, value] : reply.headers) response.set(name, value);
      response.setContentLength64(static_cast<Poco::Int64>(reply.body.size()));
      response.send() << reply.body;
    } catch (const std::exception&) {
      // The client went away; nothing to tell it.
    }
  }

 private:
  OpsServer& server_;
};

namespace {

class OpsHandlerFactory : public Poco::Net::HTTPRequestHandlerFactory {
 public:
  explicit OpsHandlerFactory(OpsServer& server) : server_(server) {}
  Poco::Net::HTTPRequestHandler* createRequestHandler(
      const Poco::Net::HTTPServerRequest&) override {
    return new OpsRequestHandler(server_);
  }

 private:
  OpsServer& server_;
};

}  // namespace

struct OpsServer::Tls {
  Poco::Net::Context::Ptr context;
};

Result<std::unique_ptr<OpsServer>> OpsServer::New(const OpsSettings& settings, hsm::KeyVault& vault,
                                                  Database& db, Metrics& metrics, RewrapJobs& jobs,
                                                  KeyCache& cache, RewrapWorker* worker,
                                                  Clock clock) {
  if (settings.max_threads == 0 || settings.max_threads > 64) {
    return Error(ErrorCode::kInvalidArgument, "ops max_threads must be 1 to 64");
  }
  SR_ASSIGN_OR_RETURN(auto digest, ReadOpsTokenDigest(settings.token_file));
  auto tls = std::make_unique<Tls>();
  SR_ASSIGN_OR_RETURN(tls->context, MakeTlsServerContext("the operations listener",
                                                         settings.tls_cert, settings.tls_key));
  std::unique_ptr<OpsServer> server(
      new OpsServer(settings, digest, vault, db, metrics, jobs, cache, worker, std::move(clock)));
  server->tls_ = std::move(tls);
  return server;
}

OpsServer::OpsServer(const OpsSettings& settings, std::array<std::uint8_t, 32> token_digest,
                     hsm::KeyVault& vault, Database& db, Metrics& metrics, RewrapJobs& jobs,
                     KeyCache& cache, RewrapWorker* worker, Clock clock)
    : settings_(settings),
      token_digest_(token_digest),
      vault_(vault),
      db_(db),
      metrics_(metrics),
      jobs_(jobs),
      cache_(cache),
      worker_(worker),
      clock_(std::move(clock)) {}

OpsServer::~OpsServer() {
  Stop();
  tls_.reset();
  Poco::Net::uninitializeSSL();
}

Status OpsServer::Start() {
  if (server_) return Error(ErrorCode::kFailedPrecondition, "the operations listener runs already");
  http::HttpsServerOptions https;
  https.listen_host = settings_.listen_host;
  https.listen_port = settings_.listen_port;
  https.max_threads = settings_.max_threads;
  https.max_connections = settings_.max_open_connections;
  https.max_connections_per_peer = settings_.max_connections_per_peer;
  https.keep_alive_timeout = std::chrono::seconds(10);
  https.io_timeout = std::chrono::seconds(10);
  https.server_name = "kmsd-ops";
  Result<std::unique_ptr<http::HttpsServer>> server =
      http::HttpsServer::Start(https, tls_->context, new OpsHandlerFactory(*this));
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

OpsReply OpsServer::Handle(const OpsRequest& request) {
  const auto start = std::chrono::steady_clock::now();
  OpsReply reply;
  try {
    if (!Authorized(request.authorization)) {
      reply = ErrorReply(401, ErrorCode::kUnauthenticated,
                         "an operator token is required: Authorization: Bearer <token>");
      reply.headers["WWW-Authenticate"] = "Bearer realm=\"strongroom-ops\"";
    } else if (!request.operator_name.empty() && !ValidOperatorName(request.operator_name)) {
      reply = ErrorReply(400, ErrorCode::kInvalidArgument,
                         "X-Strongroom-Operator must be 1-64 of [A-Za-z0-9._@-]");
    } else {
      const std::string actor = request.operator_name.empty() ? std::string("operator")
                                                              : "operator:" + request.operator_name;
      const std::string& path = request.path;
      const std::string& method = request.method;
      auto allow = [&](const char* allowed) {
        OpsReply r =
            ErrorReply(405, ErrorCode::kInvalidArgument,
                       method + " is not allowed on " + path + " (allowed: " + allowed + ")");
        r.headers["Allow"] = allowed;
        return r;
      };
      constexpr std::string_view kOrgs = "/ops/orgs/";
      if (path == "/ops/health") {
        reply = method == "GET" ? Health() : allow("GET");
      } else if (path == "/ops/metrics") {
        if (method == "GET") {
          reply.content_type = "text/plain; version=0.0.4; charset=utf-8";
          reply.body = metrics_.RenderPrometheus({&cache_, &vault_});
        } else {
          reply = allow("GET");
        }
      } else if (path.compare(0, kOrgs.size(), kOrgs) == 0) {
        const std::string rest = path.substr(kOrgs.size());
        const auto slash = rest.find('/');
        const std::string org = rest.substr(0, slash);
        const std::string what = slash == std::string::npos ? "" : rest.substr(slash + 1);
        Status valid = hsm::ValidateOrgName(org);
        if (!valid.ok()) {
          reply = ErrorReply(valid.error());
        } else if (what == "policy") {
          reply = method == "GET"   ? GetPolicy(org)
                  : method == "PUT" ? PutPolicy(org, actor, request.body)
                                    : allow("GET, PUT");
        } else if (what == "rotate-root") {
          reply = method == "POST" ? RotateRoot(org, actor) : allow("POST");
        } else if (what == "rewrap") {
          reply = method == "GET" ? GetRewrap(org) : allow("GET");
        } else {
          reply = ErrorReply(404, ErrorCode::kNotFound, "no operations endpoint " + path);
        }
      } else {
        reply = ErrorReply(404, ErrorCode::kNotFound, "no operations endpoint " + path);
      }
    }
  } catch (const Poco::Exception& e) {
    reply = ErrorReply(500, ErrorCode::kInternal, "the request failed: " + e.displayText());
  } catch (const std::exception& e) {
    reply = ErrorReply(500, ErrorCode::kInternal, std::string("the request failed: ") + e.what());
  }
  metrics_.RecordRequest("ops", reply.status, std::chrono::steady_clock::now() - start);
  return reply;
}

OpsReply OpsServer::Health() {
  Object body;
  Object database;
  Status reachable = db_.WithSession([](Poco::Data::Session& s) -> Status {
    int one = 0;
    s << "SELECT 1", Poco::Data::Keywords::into(one), Poco::Data::Keywords::now;
    return one == 1 ? OkStatus() : Status(Error(ErrorCode::kInternal, "SELECT 1 failed"));
  });
  database.set("reachable", reachable.ok());
  database.set("schemaVersion", db_.schema_version());
  if (!reachable.ok()) database.set("error", reachable.error().ToString());
  body.set("database", database);

  Poco::JSON::Array tokens;
  std::size_t ready = 0;
  const std::vector<hsm::TokenHealth> health = vault_.Health();
  for (const hsm::TokenHealth& h : health) {
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
    if (h.state == hsm::TokenState::kReady) ++ready;
  }
  body.set("tokens", tokens);
  // The KMS serves while the database answers and at least one token is ready.
  const bool serving = reachable.ok() && ready > 0;
  body.set("status", !serving ? "unavailable" : ready == health.size() ? "ok" : "degraded");
  return JsonReply(serving ? 200 : 503, body);
}

OpsReply OpsServer::GetPolicy(const std::string& org) {
  if (Status served = CheckServed(vault_, org); !served.ok()) return ErrorReply(served.error());
  std::string json;
  Status read = db_.WithSession([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(OrgPolicy policy, PolicyStore::Get(s, org));
    json = PolicyStore::ToJson(policy);
    return OkStatus();
  });
  if (!read.ok()) return ErrorReply(read.error());
  OpsReply reply;
  reply.body = std::move(json);
  return reply;
}

OpsReply OpsServer::PutPolicy(const std::string& org, const std::string& actor,
                              const std::string& body) {
  if (Status served = CheckServed(vault_, org); !served.ok()) return ErrorReply(served.error());
  Result<OrgPolicy> policy = PolicyStore::FromJson(body, org);
  if (!policy.ok()) return ErrorReply(policy.error());
  const std::int64_t now = Now();
  Status stored = db_.InTransaction([&](Poco::Data::Session& s) -> Status {
    SR_RETURN_IF_ERROR(PolicyStore::Put(s, *policy, now));
    AuditRecord record;
    record.at_ms = now;
    record.org = org;
    record.actor = actor;
    record.action = "policy.update";
    record.outcome = "ok";
    std::string detail = PolicyStore::ToJson(*policy);  // user ids and lifetimes; no secrets
    if (detail.size() > kMaxAuditField) detail = detail.substr(0, kMaxAuditField - 3) + "...";
    record.detail = std::move(detail);
    return AuditLog::Append(s, record);
  });
  if (!stored.ok()) return ErrorReply(stored.error());
  OpsReply reply;
  reply.body = PolicyStore::ToJson(*policy);
  return reply;
}

OpsReply OpsServer::RotateRoot(const std::string& org, const std::string& actor) {
  Result<kms::RewrapProgress> job = jobs_.Rotate(org, actor);
  if (!job.ok()) return ErrorReply(job.error());
  cache_.Clear();  // nothing unwrapped under the old version outlives the rotation
  if (worker_ != nullptr) worker_->Wake();
  return JsonReply(202, ProgressJson(*job));
}

OpsReply OpsServer::GetRewrap(const std::string& org) {
  Result<kms::RewrapProgress> job = jobs_.Progress(org);
  if (!job.ok()) return ErrorReply(job.error());
  Object body = ProgressJson(*job);
  if (job->failed > 0) {
    Result<std::vector<RewrapFailure>> failures = jobs_.Failures(job->job_id, kMaxFailuresShown);
    if (failures.ok()) {
      Poco::JSON::Array list;
      for (const RewrapFailure& f : *failures) {
        Object item;
        item.set("kind", f.kind);
        item.set("uri", f.uri);
        item.set("token", f.token);
        item.set("error", f.error);
        list.add(item);
      }
      body.set("failures", list);
    }
  }
  return JsonReply(200, body);
}

Operations::Operations(OpsSettings settings, hsm::KeyVault& vault, Database& db, KeyCache& cache)
    : settings_(std::move(settings)),
      jobs_(vault, db, {}, [&cache](const std::string&) { cache.Clear(); }),
      worker_(jobs_, settings_.rewrap_idle, settings_.rewrap_batch) {}

Operations::~Operations() {
  if (server_) server_->Stop();
  server_.reset();
  worker_.Stop();
}

Result<std::unique_ptr<Operations>> Operations::New(const std::string& config_path,
                                                    hsm::KeyVault& vault, Database& db,
                                                    Metrics& metrics, KeyCache& cache) {
  SR_ASSIGN_OR_RETURN(auto config, LoadConfigFile(config_path));
  SR_ASSIGN_OR_RETURN(std::optional<OpsSettings> settings, ReadOpsSettings(*config));
  if (!settings) return std::unique_ptr<Operations>();
  std::unique_ptr<Operations> ops(new Operations(*settings, vault, db, cache));
  SR_ASSIGN_OR_RETURN(ops->server_, OpsServer::New(ops->settings_, vault, db, metrics, ops->jobs_,
                                                   cache, &ops->worker_));
  return ops;
}

Status Operations::Listen() { return server_->Start(); }

Result<std::unique_ptr<Operations>> Operations::Start(const std::string& config_path,
                                                      hsm::KeyVault& vault, Database& db,
                                                      Metrics& metrics, KeyCache& cache) {
  SR_ASSIGN_OR_RETURN(std::unique_ptr<Operations> ops, New(config_path, vault, db, metrics, cache));
  if (ops) SR_RETURN_IF_ERROR(ops->Listen());
  return ops;
}

}  // namespace strongroom::kms
