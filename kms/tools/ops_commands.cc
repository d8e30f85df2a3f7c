#include "ops_commands.h"

#include <Poco/AutoPtr.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/JSON/Stringifier.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/StreamCopier.h>
#include <Poco/URI.h>
#include <Poco/Util/IniFileConfiguration.h>
#include <fcntl.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "strongroom/common/config_file.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/kms/ops_server.h"

namespace strongroom::kms {
namespace {

using Poco::JSON::Object;

struct Endpoint {
  std::string host;
  std::uint16_t port = 0;
  std::string ca;
  std::string token_file;
};

struct Answer {
  int status = 0;
  std::string body;
};

ErrorCode CodeFromName(const std::string& name) {
  for (ErrorCode code :
       {ErrorCode::kInvalidArgument, ErrorCode::kNotFound, ErrorCode::kAlreadyExists,
        ErrorCode::kPermissionDenied, ErrorCode::kUnauthenticated, ErrorCode::kFailedPrecondition,
        ErrorCode::kResourceExhausted, ErrorCode::kUnavailable, ErrorCode::kDataLoss,
        ErrorCode::kUnimplemented}) {
    if (ErrorCodeName(code) == name) return code;
  }
  return ErrorCode::kInternal;
}

// --url, --ca and --token-file, each falling back to the configuration's [ops] section.
Result<Endpoint> Resolve(const CtlOptions& options, const OpsOptions& ops) {
  Endpoint e;
  std::string url = ops.url;
  e.ca = ops.ca;
  e.token_file = ops.token_file;
  if (url.empty() || e.ca.empty() || e.token_file.empty()) {
    Result<Poco::AutoPtr<Poco::Util::IniFileConfiguration>> config =
        LoadConfigFile(options.config_path);
    if (!config.ok()) {
      return Error(ErrorCode::kInvalidArgument,
                   config.error().message() + " (or give --url, --ca and --token-file)");
    }
    SR_ASSIGN_OR_RETURN(std::optional<OpsSettings> settings, ReadOpsSettings(**config));
    if (!settings) {
      return Error(
          ErrorCode::kInvalidArgument,
          options.config_path + " has no [ops] section; give --url, --ca and --token-file");
    }
    if (url.empty()) {
      std::string host = settings->listener.host;
      if (host == "0.0.0.0") host = "127.0.0.1";
      if (host == "::") host = "::1";
      if (host.find(':') != std::string::npos) host = "[" + host + "]";
      url = "https://" + host + ":" + std::to_string(settings->listener.port);
    }
    if (e.ca.empty()) e.ca = settings->listener.tls_cert;
    if (e.token_file.empty()) e.token_file = settings->token_file;
  }
  try {
    Poco::URI uri(url);
    if (uri.getScheme() != "https" || uri.getHost().empty() || uri.getPort() == 0 ||
        (!uri.getPath().empty() && uri.getPath() != "/")) {
      return Error(ErrorCode::kInvalidArgument,
                   "--url must be https://HOST:PORT (the operations listener), got " + url);
    }
    e.host = uri.getHost();
    e.port = uri.getPort();
  } catch (const Poco::Exception&) {
    return Error(ErrorCode::kInvalidArgument, "--url is not a URL: " + url);
  }
  return e;
}

// The operator token, as text; the caller zeroizes it.
Result<std::string> ReadToken(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return Error(ErrorCode::kInvalidArgument, "cannot open the token file " + path);
  SecretBytes content(kMaxOpsTokenBytes + 3);
  std::size_t size = 0;
  for (ssize_t n; size < content.size() &&
                  (n = ::read(fd, content.data() + size, content.size() - size)) > 0;) {
    size += static_cast<std::size_t>(n);
  }
  ::close(fd);
  while (size > 0 && (content.data()[size - 1] == '\n' || content.data()[size - 1] == '\r')) {
    --size;
  }
  if (size == 0 || size > kMaxOpsTokenBytes) {
    return Error(ErrorCode::kInvalidArgument, "the token file " + path + " holds no usable token");
  }
  return std::string(reinterpret_cast<const char*>(content.data()), size);
}

class OpsClient {
 public:
  static Result<OpsClient> New(const Endpoint& endpoint, const std::string& operator_name) {
    SR_ASSIGN_OR_RETURN(std::string token, ReadToken(endpoint.token_file));
    OpsClient client(endpoint, operator_name);
    client.authorization_ = "Bearer " + token;
    ZeroizeString(token);
    try {
      Poco::Net::Context::Params params;
      params.caLocation = endpoint.ca;
      params.verificationMode = Poco::Net::Context::VERIFY_RELAXED;
      params.loadDefaultCAs = false;
      client.context_ = new Poco::Net::Context(Poco::Net::Context::TLS_CLIENT_USE, params);
      client.context_->requireMinimumProtocol(Poco::Net::Context::PROTO_TLSV1_2);
      // The certificates in --ca are trusted as they are, so the server's own certificate (the
      // default, from [ops] tls_cert) pins it even when a CA issued it.
      X509_STORE_set_flags(SSL_CTX_get_cert_store(client.context_->sslContext()),
                           X509_V_FLAG_PARTIAL_CHAIN);
    } catch (const Poco::Exception& e) {
      return Error(ErrorCode::kInvalidArgument,
                   "cannot use " + endpoint.ca + " as trusted certificates: " + e.displayText());
    }
    return client;
  }
  OpsClient(OpsClient&& other) noexcept = default;
  ~OpsClient() { ZeroizeString(authorization_); }

  // An answer of 400 or more becomes its error, unless `raw`.
  Result<Answer> Call(const std::string& method, const std::string& path,
                      const std::string& body = "", bool raw = false) {
    try {
      Poco::Net::HTTPSClientSession session(endpoint_.host, endpoint_.port, context_);
      session.setTimeout(Poco::Timespan(30, 0));
      Poco::Net::HTTPRequest request(method, path, Poco::Net::HTTPMessage::HTTP_1_1);
      request.set("Authorization", authorization_);
      if (!operator_name_.empty()) request.set("X-Strongroom-Operator", operator_name_);
      if (method == "PUT" || method == "POST") {
        request.setContentType("application/json");
        request.setContentLength64(static_cast<Poco::Int64>(body.size()));
      }
      session.sendRequest(request) << body;
      Poco::Net::HTTPResponse response;
      std::istream& in = session.receiveResponse(response);
      Answer answer;
      answer.status = static_cast<int>(response.getStatus());
      Poco::StreamCopier::copyToString(in, answer.body);
      if (answer.status >= 400 && !raw) return ErrorOf(answer);
      return answer;
    } catch (const Poco::Exception& e) {
      return Error(ErrorCode::kUnavailable,
                   "cannot reach the operations listener at " + endpoint_.host + ":" +
                       std::to_string(endpoint_.port) + ": " + e.displayText());
    }
  }

 private:
  OpsClient(const Endpoint& endpoint, const std::string& operator_name)
      : endpoint_(endpoint), operator_name_(operator_name) {}

  static Error ErrorOf(const Answer& answer) {
    std::string code, message = answer.body;
    try {
      Poco::JSON::Parser parser;
      Object::Ptr o = parser.parse(answer.body).extract<Object::Ptr>();
      code = o->optValue<std::string>("code", "");
      message = o->optValue<std::string>("message", answer.body);
    } catch (const Poco::Exception&) {
    }
    return Error(code.empty() ? ErrorCode::kInternal : CodeFromName(code),
                 "kmsd answered HTTP " + std::to_string(answer.status) + ": " + message);
  }

  Endpoint endpoint_;
  std::string operator_name_;
  std::string authorization_;
  Poco::Net::Context::Ptr context_;
};

Status PrintJson(const std::string& body, std::ostream& out) {
  try {
    Poco::JSON::Parser parser;
    Poco::JSON::Stringifier::stringify(parser.parse(body), out, 2);
    out << "\n";
  } catch (const Poco::Exception&) {
    out << body << "\n";
  }
  return OkStatus();
}

// "D/T <what> (P%), F failed, R/s": the counts every job's progress line shows.
std::string JobCounts(const Object& p, const std::string& what) {
  const auto total = p.getValue<std::int64_t>("total");
  const auto done = p.getValue<std::int64_t>("done");
  const auto failed = p.getValue<std::int64_t>("failed");
  char percent[16];
  std::snprintf(
      percent, sizeof percent, "%.1f",
      total == 0 ? 100.0 : 100.0 * static_cast<double>(done + failed) / static_cast<double>(total));
  char rate[32];
  std::snprintf(rate, sizeof rate, "%.1f", p.getValue<double>("ratePerSecond"));
  return std::to_string(done) + "/" + std::to_string(total) + " " + what + " (" + percent + "%), " +
         std::to_string(failed) + " failed, " + rate + "/s";
}

std::string WithLastError(std::string line, const Object& p) {
  const std::string last_error = p.optValue<std::string>("lastError", "");
  if (!last_error.empty()) line += "; last error: " + last_error;
  return line;
}

std::string ProgressLine(const Object& p) {
  return WithLastError("rewrap " + p.getValue<std::string>("org") + " job " +
                           std::to_string(p.getValue<std::int64_t>("jobId")) + " to root v" +
                           std::to_string(p.getValue<std::int64_t>("rootVersion")) + ": " +
                           p.getValue<std::string>("state") + ", " + JobCounts(p, "re-wrapped"),
                       p);
}

std::string ReconcileLine(const Object& p) {
  std::string line = "reconcile job " + std::to_string(p.getValue<std::int64_t>("jobId")) + ": " +
                     p.getValue<std::string>("state") + ", " + JobCounts(p, "wraps added");
  if (Object::Ptr missing = p.getObject("missing")) {
    std::string counts;
    std::vector<std::string> names;
    missing->getNames(names);
    for (const std::string& name : names) {
      counts += (counts.empty() ? "" : ", ") + name + " " +
                std::to_string(missing->getValue<std::int64_t>(name));
    }
    line += "; missing now: " + counts;
  }
  return WithLastError(std::move(line), p);
}

// Reads a job's progress at `path`, one line each time, until it no longer runs (or once, without
// --wait), then lists the failures of a failed job. Returns the last progress read.
Result<Object::Ptr> FollowJob(OpsClient& client, const std::string& path,
                              std::string (*line)(const Object&), const OpsOptions& ops,
                              std::ostream& out) {
  for (;;) {
    SR_ASSIGN_OR_RETURN(Answer answer, client.Call("GET", path));
    Object::Ptr p;
    try {
      Poco::JSON::Parser parser;
      p = parser.parse(answer.body).extract<Object::Ptr>();
    } catch (const Poco::Exception&) {
      return Error(ErrorCode::kInternal, "kmsd answered something that is not JSON");
    }
    out << line(*p) << std::endl;
    const std::string state = p->getValue<std::string>("state");
    if (state == "running" && ops.wait) {
      std::this_thread::sleep_for(ops.interval);
      continue;
    }
    if (state == "failed") {
      if (auto failures = p->getArray("failures")) {
        for (std::size_t i = 0; i < failures->size(); ++i) {
          out << "  failed: "
              << failures->getObject(static_cast<unsigned>(i))->getValue<std::string>("error")
              << "\n";
        }
      }
    }
    return p;
  }
}

Status Rewrap(OpsClient& client, const std::string& org, const OpsOptions& ops, std::ostream& out) {
  SR_ASSIGN_OR_RETURN(Object::Ptr p,
                      FollowJob(client, "/ops/orgs/" + org + "/rewrap", ProgressLine, ops, out));
  if (p->getValue<std::string>("state") == "failed") {
    return Error(ErrorCode::kDataLoss,
                 std::to_string(p->getValue<std::int64_t>("failed")) + " blobs of " + org +
                     " could not be re-wrapped; they still need the old root version");
  }
  return OkStatus();
}

Status Reconcile(OpsClient& client, bool start, const OpsOptions& ops, std::ostream& out) {
  if (start) {
    // 202: a new job; 200: the active one, resumed at once if it was waiting.
    SR_ASSIGN_OR_RETURN(Answer started, client.Call("POST", "/ops/reconcile"));
    (void)started;
  }
  SR_ASSIGN_OR_RETURN(Object::Ptr p, FollowJob(client, "/ops/reconcile", ReconcileLine, ops, out));
  const std::string state = p->getValue<std::string>("state");
  if (state == "failed") {
    return Error(ErrorCode::kDataLoss,
                 std::to_string(p->getValue<std::int64_t>("failed")) +
                     " wraps could not be added: no configured token can open those keys");
  }
  if (state == "waiting") {
    std::string tokens;
    if (auto waiting = p->getArray("waitingFor")) {
      for (std::size_t i = 0; i < waiting->size(); ++i) {
        tokens += (tokens.empty() ? "" : ", ") +
                  waiting->getElement<std::string>(static_cast<unsigned>(i));
      }
    }
    return Error(ErrorCode::kUnavailable,
                 "the reconciliation waits for " +
                     (tokens.empty() ? std::string("the tokens") : "token(s) " + tokens) +
                     " (kmsctl ops health, kmsctl hsm check)");
  }
  return OkStatus();
}

}  // namespace

Status RunOpsCommand(const std::vector<std::string>& args, const CtlOptions& options,
                     const OpsOptions& ops, std::ostream& out) {
  const std::string sub = args.empty() ? "" : args[0];
  auto need = [&](std::size_t n, const char* usage) -> Status {
    if (args.size() != n) {
      return Error(ErrorCode::kInvalidArgument, std::string("usage: kmsctl ops ") + usage);
    }
    return OkStatus();
  };
  if (sub == "health" || sub == "metrics") {
    SR_RETURN_IF_ERROR(need(1, sub == "health" ? "health" : "metrics"));
  } else if (sub == "policy") {
    if (args.size() != 3 || (args[1] != "get" && args[1] != "set")) {
      return Error(ErrorCode::kInvalidArgument,
                   "usage: kmsctl ops policy get ORG | policy set ORG --file F");
    }
    if (args[1] == "set" && ops.file.empty()) {
      return Error(ErrorCode::kInvalidArgument, "ops policy set needs --file POLICY.json");
    }
  } else if (sub == "rotate-root" || sub == "rewrap") {
    SR_RETURN_IF_ERROR(need(2, sub == "rewrap" ? "rewrap ORG [--wait]" : "rotate-root ORG"));
  } else if (sub == "rotate-search-key") {
    SR_RETURN_IF_ERROR(need(1, "rotate-search-key --org ORG"));
    if (options.org.empty()) {
      return Error(ErrorCode::kInvalidArgument, "usage: kmsctl ops rotate-search-key --org ORG");
    }
  } else if (sub == "reconcile") {
    if (args.size() > 2 || (args.size() == 2 && args[1] != "start")) {
      return Error(ErrorCode::kInvalidArgument, "usage: kmsctl ops reconcile [start] [--wait]");
    }
  } else {
    return Error(ErrorCode::kInvalidArgument,
                 sub.empty() ? "ops needs a subcommand (kmsctl --help lists them)"
                             : "unknown ops subcommand '" + sub + "'");
  }
  const std::string org = sub == "rotate-search-key"               ? options.org
                          : sub != "reconcile" && args.size() >= 2 ? args.back()
                                                                   : "";
  if (!org.empty()) SR_RETURN_IF_ERROR(hsm::ValidateOrgName(org));

  SR_ASSIGN_OR_RETURN(Endpoint endpoint, Resolve(options, ops));
  SR_ASSIGN_OR_RETURN(OpsClient client, OpsClient::New(endpoint, ops.operator_name));
  if (sub == "health") {
    SR_ASSIGN_OR_RETURN(Answer answer, client.Call("GET", "/ops/health", "", /*raw=*/true));
    if (answer.status != 200 && answer.status != 503) {
      return Error(ErrorCode::kInternal,
                   "kmsd answered HTTP " + std::to_string(answer.status) + ": " + answer.body);
    }
    SR_RETURN_IF_ERROR(PrintJson(answer.body, out));
    if (answer.status == 503) {
      return Error(ErrorCode::kUnavailable, "kmsd is not serving: see the health report above");
    }
    return OkStatus();
  }
  if (sub == "metrics") {
    SR_ASSIGN_OR_RETURN(Answer answer, client.Call("GET", "/ops/metrics"));
    out << answer.body;
    return OkStatus();
  }
  if (sub == "policy" && args[1] == "get") {
    SR_ASSIGN_OR_RETURN(Answer answer, client.Call("GET", "/ops/orgs/" + org + "/policy"));
    return PrintJson(answer.body, out);
  }
  if (sub == "policy") {
    std::ifstream in(ops.file, std::ios::binary);
    if (!in) return Error(ErrorCode::kInvalidArgument, "cannot read " + ops.file);
    std::string body(kMaxOpsBodyBytes + 1, '\0');
    in.read(body.data(), static_cast<std::streamsize>(body.size()));
    body.resize(static_cast<std::size_t>(in.gcount()));
    if (body.size() > kMaxOpsBodyBytes) {
      return Error(ErrorCode::kInvalidArgument,
                   ops.file + " is larger than " + std::to_string(kMaxOpsBodyBytes) + " bytes");
    }
    SR_ASSIGN_OR_RETURN(Answer answer, client.Call("PUT", "/ops/orgs/" + org + "/policy", body));
    return PrintJson(answer.body, out);
  }
  if (sub == "rotate-root") {
    SR_ASSIGN_OR_RETURN(Answer answer, client.Call("POST", "/ops/orgs/" + org + "/rotate-root"));
    SR_RETURN_IF_ERROR(PrintJson(answer.body, out));
    out << "follow the rewrap with: kmsctl ops rewrap " << org << " --wait\n";
    return OkStatus();
  }
  if (sub == "rotate-search-key") {
    SR_ASSIGN_OR_RETURN(Answer answer,
                        client.Call("POST", "/ops/orgs/" + org + "/rotate-search-key"));
    SR_RETURN_IF_ERROR(PrintJson(answer.body, out));
    out << "the indexer re-indexes " << org << " with the new version; older ones stay readable\n";
    return OkStatus();
  }
  if (sub == "reconcile") return Reconcile(client, args.size() == 2, ops, out);
  return Rewrap(client, org, ops, out);
}

}  // namespace strongroom::kms
