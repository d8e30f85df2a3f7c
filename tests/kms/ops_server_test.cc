// The operations listener over real HTTPS on 127.0.0.1 (port 0), with a throwaway CA made by the
// openssl command, a real SoftHSM2 token, and the database on each engine (SQLite, PostgreSQL).
#include "strongroom/kms/ops_server.h"

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/Pipe.h>
#include <Poco/PipeStream.h>
#include <Poco/Process.h>
#include <Poco/StreamCopier.h>
#include <Poco/Util/IniFileConfiguration.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cctype>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "../support/connection_flood.h"
#include "../support/kms_database.h"
#include "../support/softhsm_sandbox.h"
#include "../support/test_dir.h"
#include "prometheus_text.h"
#include "strongroom/hsm/key_vault.h"
#include "strongroom/kms/audit_log.h"
#include "strongroom/kms/kms_store.h"
#include "strongroom/kms/org_policy.h"
#include "strongroom/kms/reconcile_job.h"

namespace strongroom::kms {
namespace {

using Poco::JSON::Object;
using testing::kSoftHsmModule;
using testing::SoftHsmSandbox;

constexpr char kOperatorToken[] =
    "4f1c2a9e7b3d58e6a0c4f2b19d7e3a5c8b6f0e2d4a1c9b7e5f3d2a0c8e6b4f1a";

Object::Ptr Parse(const std::string& text) {
  Poco::JSON::Parser parser;
  return parser.parse(text).extract<Object::Ptr>();
}

void WriteFile(const std::filesystem::path& path, const std::string& content, mode_t mode) {
  std::ofstream(path) << content;
  ::chmod(path.c_str(), mode);
}

// A CA and a server certificate for localhost / 127.0.0.1, made with the openssl command.
void MakeCertificates(const std::filesystem::path& dir, const std::string& ca_name) {
  const std::string d = dir.string();
  WriteFile(dir / "ext.cnf", "subjectAltName=DNS:localhost,IP:127.0.0.1\n", 0600);
  const std::string script =
      "cd '" + d +
      "' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " +
      ca_name + ".key -out " + ca_name + ".pem -days 2 -subj '/CN=" + ca_name +
      "' 2>/dev/null && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
      "-keyout ops.key -out ops.csr -subj '/CN=localhost' 2>/dev/null && openssl x509 -req -in "
      "ops.csr -CA " +
      ca_name + ".pem -CAkey " + ca_name +
      ".key -CAcreateserial -out ops.crt -days 2 -extfile ext.cnf 2>/dev/null";
  ASSERT_EQ(std::system(script.c_str()), 0) << script;
}

struct HttpAnswer {
  int status = 0;
  std::string content_type;
  std::string body;
  std::map<std::string, std::string> headers;
};

class OpsServerTest : public ::testing::TestWithParam<Database::Engine> {
 protected:
  void SetUp() override {
    hsm::TokenConfig token;
    token.name = "primary";
    token.uri = SoftHsmSandbox::Get().Uri(kSoftHsmModule,
                                          SoftHsmSandbox::Get().CreateToken(kSoftHsmModule));
    auto vault = hsm::KeyVault::Open({{token}});
    ASSERT_TRUE(vault.ok()) << vault.error().ToString();
    vault_ = std::move(vault).value();
    ASSERT_TRUE(vault_->InitRoot("acme").ok());
    Result<std::string> target = testing::NewKmsDatabase(GetParam(), dir_.path());
    ASSERT_TRUE(target.ok()) << target.error().ToString();
    auto db = testing::OpenKmsDatabase(GetParam(), *target);
    ASSERT_TRUE(db.ok()) << db.error().ToString();
    db_ = std::move(db).value();
    cache_ = std::make_unique<KeyCache>(100, std::chrono::minutes(5));
    jobs_ = std::make_unique<RewrapJobs>(*vault_, *db_);
    worker_ = std::make_unique<RewrapWorker>(*jobs_, std::chrono::milliseconds(50), 8);

    MakeCertificates(dir_.path(), "ca");
    WriteFile(dir_ / "ops.token", std::string(kOperatorToken) + "\n", 0600);
    settings_.listener.host = "127.0.0.1";
    settings_.listener.port = 0;
    settings_.listener.tls_cert = (dir_ / "ops.crt").string();
    settings_.listener.tls_key = (dir_ / "ops.key").string();
    settings_.token_file = (dir_ / "ops.token").string();
    search_keys_ = std::make_unique<SearchKeys>("kms://kms.test", *vault_, *db_);
    auto server = OpsServer::New(settings_, *vault_, *db_, metrics_, *jobs_, *cache_, worker_.get(),
                                 {}, nullptr, search_keys_.get());
    ASSERT_TRUE(server.ok()) << server.error().ToString();
    server_ = std::move(server).value();
    ASSERT_TRUE(server_->Start().ok());
    ASSERT_NE(server_->port(), 0);

    Poco::Net::Context::Params params;
    params.caLocation = (dir_ / "ca.pem").string();
    params.verificationMode = Poco::Net::Context::VERIFY_RELAXED;
    params.loadDefaultCAs = false;
    client_context_ = new Poco::Net::Context(Poco::Net::Context::TLS_CLIENT_USE, params);
  }

  void TearDown() override {
    if (server_) server_->Stop();
    server_.reset();
    worker_.reset();
  }

  HttpAnswer Call(const std::string& method, const std::string& path,
                  std::optional<std::string> token = std::string(kOperatorToken),
                  const std::string& body = "", const std::string& operator_name = "") {
    Poco::Net::HTTPSClientSession session("127.0.0.1", server_->port(), client_context_);
    Poco::Net::HTTPRequest request(method, path, Poco::Net::HTTPMessage::HTTP_1_1);
    if (token) request.set("Authorization", "Bearer " + *token);
    if (!operator_name.empty()) request.set("X-Strongroom-Operator", operator_name);
    if (!body.empty() || method == "PUT" || method == "POST") {
      request.setContentLength64(static_cast<Poco::Int64>(body.size()));
      request.setContentType("application/json");
    }
    session.sendRequest(request) << body;
    Poco::Net::HTTPResponse response;
    std::istream& in = session.receiveResponse(response);
    HttpAnswer answer;
    answer.status = static_cast<int>(response.getStatus());
    answer.content_type = response.getContentType();
    for (const auto& [name, value] : response) answer.headers[name] = value;
    Poco::StreamCopier::copyToString(in, answer.body);
    return answer;
  }

  void CreateKeys(int n) {
    std::vector<KeyRecord> records;
    for (int i = 0; i < n; ++i) {
      KeyRecord k;
      k.uri = "kms://kms.test/keys/" + std::to_string(i);
      k.org = "acme";
      k.creator = "alice";
      k.client_id = "test";
      k.bind_deadline_ms = 1;
      SecretBytes key = SecretBytes::Random(32);
      k.blobs = vault_->Wrap({"acme", k.uri}, key.view())->blobs;
      records.push_back(std::move(k));
    }
    ASSERT_TRUE(
        db_->InTransaction([&](Poco::Data::Session& s) { return KmsStore::InsertKeys(s, records); })
            .ok());
  }

  std::size_t RootVersions() { return (*vault_->ListRoots("acme"))[0].keys.size(); }

  std::vector<AuditRecord> Audit() {
    AuditFilter filter;
    filter.limit = 1000;
    return *AuditLog::Query(*db_, filter);
  }

  testing::TestDir dir_;
  std::unique_ptr<hsm::KeyVault> vault_;
  std::unique_ptr<Database> db_;
  Metrics metrics_;
  std::unique_ptr<KeyCache> cache_;
  std::unique_ptr<RewrapJobs> jobs_;
  std::unique_ptr<RewrapWorker> worker_;
  std::unique_ptr<SearchKeys> search_keys_;
  OpsSettings settings_;
  std::unique_ptr<OpsServer> server_;
  Poco::Net::Context::Ptr client_context_;
};

INSTANTIATE_TEST_SUITE_P(Engines, OpsServerTest, testing::kBothEngines, testing::EngineName);

TEST_P(OpsServerTest, AMissingOrWrongOperatorTokenIs401AndChangesNothing) {
  const std::string almost = std::string(kOperatorToken).substr(0, 63) + "0";
  const std::optional<std::string> tokens[] = {std::nullopt, "", almost,
                                               std::string(kOperatorToken) + "0", "x"};
  const std::pair<const char*, const char*> calls[] = {{"GET", "/ops/health"},
                                                       {"GET", "/ops/metrics"},
                                                       {"POST", "/ops/orgs/acme/rotate-root"},
                                                       {"PUT", "/ops/orgs/acme/policy"},
                                                       {"GET", "/ops/orgs/acme/rewrap"},
                                                       {"POST", "/ops/reconcile"},
                                                       {"GET", "/nowhere"}};
  for (const auto& token : tokens) {
    for (const auto& [method, path] : calls) {
      HttpAnswer answer =
          Call(method, path, token, std::string(method) == "PUT" ? R"({"indexer":"mallory"})" : "");
      EXPECT_EQ(answer.status, 401) << method << " " << path;
      EXPECT_EQ(Parse(answer.body)->getValue<std::string>("code"), "UNAUTHENTICATED");
      EXPECT_EQ(answer.headers["WWW-Authenticate"], "Bearer realm=\"strongroom-ops\"");
    }
  }
  // Another scheme with the right token is refused too.
  Poco::Net::HTTPSClientSession session("127.0.0.1", server_->port(), client_context_);
  Poco::Net::HTTPRequest request("GET", "/ops/health", Poco::Net::HTTPMessage::HTTP_1_1);
  request.set("Authorization", std::string("Basic ") + kOperatorToken);
  session.sendRequest(request);
  Poco::Net::HTTPResponse response;
  session.receiveResponse(response);
  EXPECT_EQ(response.getStatus(), Poco::Net::HTTPResponse::HTTP_UNAUTHORIZED);

  EXPECT_EQ(RootVersions(), 1u);
  EXPECT_EQ(jobs_->Progress("acme").error().code(), ErrorCode::kNotFound);
  std::string policy;
  ASSERT_TRUE(db_->WithSession([&](Poco::Data::Session& s) -> Status {
                   SR_ASSIGN_OR_RETURN(OrgPolicy p, PolicyStore::Get(s, "acme"));
                   EXPECT_FALSE(p.indexer);
                   return OkStatus();
                 })
                  .ok());
  EXPECT_TRUE(Audit().empty());
}

// Issue 16: every answer said "OK" whatever its status ("HTTP/1.1 401 OK").
TEST_P(OpsServerTest, EveryAnswerCarriesTheReasonPhraseOfItsStatus) {
  auto status_line = [&](const std::string& method, const std::string& path,
                         const std::string& token) {
    testing::TlsConnection c;
    EXPECT_TRUE(c.Open(server_->port()));
    EXPECT_TRUE(c.Write(method + " " + path +
                        " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
                        "Authorization: Bearer " +
                        token + "\r\n\r\n"));
    const std::string answer = c.ReadAnswer();
    return answer.substr(0, answer.find("\r\n"));
  };
  EXPECT_EQ(status_line("GET", "/ops/health", kOperatorToken), "HTTP/1.1 200 OK");
  EXPECT_EQ(status_line("GET", "/ops/health", "wrong"), "HTTP/1.1 401 Unauthorized");
  EXPECT_EQ(status_line("GET", "/ops/nothing", kOperatorToken), "HTTP/1.1 404 Not Found");
  EXPECT_EQ(status_line("DELETE", "/ops/health", kOperatorToken),
            "HTTP/1.1 405 Method Not Allowed");
  EXPECT_EQ(status_line("POST", "/ops/orgs/initech/rotate-root", kOperatorToken),
            "HTTP/1.1 409 Conflict");
  EXPECT_EQ(status_line("POST", "/ops/orgs/acme/rotate-root", kOperatorToken),
            "HTTP/1.1 202 Accepted");
}

// Issue 16: the scheme of `Authorization` is case-insensitive (RFC 9110 11.1), the token is not.
TEST_P(OpsServerTest, TheBearerSchemeIsCaseInsensitiveAndTheTokenIsNot) {
  for (const char* scheme : {"bearer", "BEARER", "bEaReR"}) {
    Poco::Net::HTTPSClientSession session("127.0.0.1", server_->port(), client_context_);
    Poco::Net::HTTPRequest request("GET", "/ops/health", Poco::Net::HTTPMessage::HTTP_1_1);
    request.set("Authorization", std::string(scheme) + " " + kOperatorToken);
    session.sendRequest(request);
    Poco::Net::HTTPResponse response;
    session.receiveResponse(response);
    EXPECT_EQ(response.getStatus(), Poco::Net::HTTPResponse::HTTP_OK) << scheme;
  }
  std::string upper = kOperatorToken;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  ASSERT_NE(upper, kOperatorToken);
  EXPECT_EQ(Call("GET", "/ops/health", upper).status, 401);
}

TEST_P(OpsServerTest, HealthShowsTheTokensAndTheDatabase) {
  HttpAnswer answer = Call("GET", "/ops/health");
  ASSERT_EQ(answer.status, 200) << answer.body;
  EXPECT_EQ(answer.content_type, "application/json");
  Object::Ptr health = Parse(answer.body);
  EXPECT_EQ(health->getValue<std::string>("status"), "ok");
  EXPECT_TRUE(health->getObject("database")->getValue<bool>("reachable"));
  EXPECT_EQ(health->getObject("database")->getValue<int>("schemaVersion"), db_->schema_version());
  auto tokens = health->getArray("tokens");
  ASSERT_EQ(tokens->size(), 1u);
  EXPECT_EQ(tokens->getObject(0)->getValue<std::string>("name"), "primary");
  EXPECT_EQ(tokens->getObject(0)->getValue<std::string>("state"), "ready");
  EXPECT_EQ(tokens->getObject(0)->getObject("pool")->getValue<int>("capacity"), 16);
}

TEST_P(OpsServerTest, MetricsAreValidPrometheusText) {
  metrics_.RecordRequest("retrieve_key", 200, std::chrono::milliseconds(3));
  const std::vector<std::uint8_t> key(32, 9);
  cache_->Put("kms://kms.test/keys/x", key);
  (void)cache_->Get("kms://kms.test/keys/x");
  ASSERT_EQ(Call("GET", "/ops/health").status, 200);
  HttpAnswer answer = Call("GET", "/ops/metrics");
  ASSERT_EQ(answer.status, 200);
  EXPECT_EQ(answer.content_type, "text/plain; version=0.0.4; charset=utf-8");
  auto samples = testing::ParsePrometheus(answer.body);
  ASSERT_TRUE(samples.ok()) << samples.error().ToString() << "\n" << answer.body;
  auto value = [&](const std::string& name, const std::map<std::string, std::string>& labels) {
    for (const auto& s : *samples) {
      if (s.name == name && s.labels == labels) return s.value;
    }
    return -1.0;
  };
  EXPECT_EQ(
      value("strongroom_kms_requests_total", {{"operation", "retrieve_key"}, {"code", "200"}}), 1);
  EXPECT_EQ(value("strongroom_kms_requests_total", {{"operation", "ops"}, {"code", "200"}}), 1);
  EXPECT_EQ(value("strongroom_kms_key_cache_hits_total", {}), 1);
  EXPECT_EQ(value("strongroom_hsm_token_up", {{"token", "primary"}}), 1);
}

TEST_P(OpsServerTest, RotateRootStartsTheJobAndProgressReachesDone) {
  CreateKeys(20);
  const std::vector<std::uint8_t> key(32, 3);
  cache_->Put("kms://kms.test/keys/0", key);
  HttpAnswer answer = Call("POST", "/ops/orgs/acme/rotate-root", kOperatorToken, "", "carol");
  ASSERT_EQ(answer.status, 202) << answer.body;
  Object::Ptr job = Parse(answer.body);
  EXPECT_EQ(job->getValue<int>("rootVersion"), 2);
  EXPECT_EQ(job->getValue<int>("total"), 20);
  EXPECT_EQ(cache_->stats().entries, 0u);  // cleared on rotation
  EXPECT_EQ(RootVersions(), 2u);

  Object::Ptr progress;
  for (int i = 0; i < 400; ++i) {
    HttpAnswer poll = Call("GET", "/ops/orgs/acme/rewrap");
    ASSERT_EQ(poll.status, 200) << poll.body;
    progress = Parse(poll.body);
    if (progress->getValue<std::string>("state") != "running") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  EXPECT_EQ(progress->getValue<std::string>("state"), "done");
  EXPECT_EQ(progress->getValue<int>("done"), 20);
  EXPECT_EQ(progress->getValue<int>("remaining"), 0);
  EXPECT_EQ(progress->getValue<std::int64_t>("jobId"), job->getValue<std::int64_t>("jobId"));

  bool audited = false;
  for (const AuditRecord& r : Audit()) {
    if (r.action == "root.rotate") audited = r.actor == "operator:carol" && r.outcome == "ok";
  }
  EXPECT_TRUE(audited);
}

TEST_P(OpsServerTest, RotatingAnUnknownOrganizationIsRefused) {
  HttpAnswer answer = Call("POST", "/ops/orgs/initech/rotate-root");
  EXPECT_EQ(answer.status, 409) << answer.body;
  EXPECT_EQ(Parse(answer.body)->getValue<std::string>("code"), "FAILED_PRECONDITION");
  EXPECT_EQ(Call("GET", "/ops/orgs/initech/rewrap").status, 404);
}

// Issue 14: an operator makes a new version of the organization's search key current.
TEST_P(OpsServerTest, RotateSearchKeyMakesTheNextVersionCurrentAndIsAudited) {
  HttpAnswer first = Call("POST", "/ops/orgs/acme/rotate-search-key", kOperatorToken, "", "carol");
  ASSERT_EQ(first.status, 201) << first.body;
  EXPECT_EQ(Parse(first.body)->getValue<int>("version"), 1);
  HttpAnswer second = Call("POST", "/ops/orgs/acme/rotate-search-key", kOperatorToken, "", "carol");
  ASSERT_EQ(second.status, 201) << second.body;
  Object::Ptr rotated = Parse(second.body);
  EXPECT_EQ(rotated->getValue<int>("version"), 2);
  EXPECT_EQ(rotated->getValue<std::string>("uri"), "kms://kms.test/search-keys/acme/2");
  EXPECT_EQ(rotated->getValue<std::string>("org"), "acme");
  auto current = search_keys_->Current("acme", "svc-indexer");
  ASSERT_TRUE(current.ok());
  EXPECT_EQ(current->version, 2u);
  auto old = search_keys_->Find("acme", 1);
  ASSERT_TRUE(old.ok() && *old);  // the old version stays

  // An organization this KMS does not serve: 404, nothing made.
  HttpAnswer unknown = Call("POST", "/ops/orgs/initech/rotate-search-key");
  EXPECT_EQ(unknown.status, 404) << unknown.body;
  EXPECT_FALSE(*search_keys_->Find("initech", 1));
  EXPECT_EQ(Call("GET", "/ops/orgs/acme/rotate-search-key").status, 405);

  int audited = 0;
  for (const AuditRecord& r : Audit()) {
    if (r.action != "search-key.rotate") continue;
    ++audited;
    EXPECT_EQ(r.actor, "operator:carol");
    EXPECT_EQ(r.outcome, "ok");
  }
  EXPECT_EQ(audited, 2);
}

TEST_P(OpsServerTest, PolicyIsReadAndReplacedWithAnAuditRecord) {
  HttpAnswer defaults = Call("GET", "/ops/orgs/acme/policy");
  ASSERT_EQ(defaults.status, 200) << defaults.body;
  HttpAnswer put = Call("PUT", "/ops/orgs/acme/policy", kOperatorToken,
                        R"({"complianceOfficers":["carol"],"indexer":"svc-indexer",)"
                        R"("indexerCloudAgent":true,"bindDeadlineSeconds":900})",
                        "dave");
  ASSERT_EQ(put.status, 200) << put.body;
  Object::Ptr stored = Parse(Call("GET", "/ops/orgs/acme/policy").body);
  EXPECT_EQ(stored->getValue<std::string>("indexer"), "svc-indexer");
  EXPECT_EQ(stored->getValue<int>("bindDeadlineSeconds"), 900);
  std::vector<AuditRecord> audit = Audit();
  ASSERT_EQ(audit.size(), 1u);
  EXPECT_EQ(audit[0].action, "policy.update");
  EXPECT_EQ(audit[0].actor, "operator:dave");
  EXPECT_EQ(audit[0].org, "acme");
}

TEST_P(OpsServerTest, BadPolicyBodiesAreRefusedAndChangeNothing) {
  const std::string before = Call("GET", "/ops/orgs/acme/policy").body;
  for (const std::string& body : {std::string("{not json"), std::string(R"({"unknown":1})"),
                                  std::string(R"({"bindDeadlineSeconds":-5})")}) {
    HttpAnswer answer = Call("PUT", "/ops/orgs/acme/policy", kOperatorToken, body);
    EXPECT_EQ(answer.status, 400) << body << " -> " << answer.body;
    EXPECT_EQ(Parse(answer.body)->getValue<std::string>("code"), "INVALID_ARGUMENT");
  }
  HttpAnswer big =
      Call("PUT", "/ops/orgs/acme/policy", kOperatorToken, std::string(kMaxOpsBodyBytes + 1, ' '));
  EXPECT_EQ(big.status, 413);
  EXPECT_EQ(Call("GET", "/ops/orgs/acme/policy").body, before);
  EXPECT_TRUE(Audit().empty());
}

// Issue 16: a policy with a member twice was taken with the last one, and a policy for an
// organization this KMS does not serve (a typo) was stored as if it mattered.
TEST_P(OpsServerTest, APolicyWithAMemberTwiceOrForAnOrganizationNotServedIsRefused) {
  const std::string before = Call("GET", "/ops/orgs/acme/policy").body;
  HttpAnswer twice = Call("PUT", "/ops/orgs/acme/policy", kOperatorToken,
                          R"({"complianceOfficers":["carol"],"complianceOfficers":["mallory"]})");
  EXPECT_EQ(twice.status, 400) << twice.body;
  EXPECT_EQ(Parse(twice.body)->getValue<std::string>("code"), "INVALID_ARGUMENT");
  EXPECT_EQ(Call("GET", "/ops/orgs/acme/policy").body, before);

  // initech is a valid name, but no token holds a root key of it.
  HttpAnswer put = Call("PUT", "/ops/orgs/initech/policy", kOperatorToken,
                        R"({"complianceOfficers":["mallory"]})");
  EXPECT_EQ(put.status, 404) << put.body;
  EXPECT_EQ(Parse(put.body)->optValue<std::string>("code", ""), "NOT_FOUND");
  EXPECT_NE(Parse(put.body)->optValue<std::string>("message", "").find("initech"),
            std::string::npos);
  HttpAnswer get = Call("GET", "/ops/orgs/initech/policy");
  EXPECT_EQ(get.status, 404) << get.body;
  bool stored = true;
  ASSERT_TRUE(db_->WithSession([&](Poco::Data::Session& s) -> Status {
                   SqlStatement count = Database::Prepare(s, "SELECT COUNT(*) FROM org_policies");
                   stored = !count.Next() || count.Int(0) != 0;
                   return OkStatus();
                 })
                  .ok());
  EXPECT_FALSE(stored);
  EXPECT_TRUE(Audit().empty());
}

TEST_P(OpsServerTest, UnknownPathsMethodsAndNamesAreClearErrors) {
  HttpAnswer missing = Call("GET", "/ops/nothing");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(Parse(missing.body)->getValue<std::string>("code"), "NOT_FOUND");
  HttpAnswer method = Call("DELETE", "/ops/health");
  EXPECT_EQ(method.status, 405);
  EXPECT_EQ(method.headers["Allow"], "GET");
  EXPECT_EQ(Call("POST", "/ops/orgs/Not%20An%20Org/rotate-root").status, 400);
  EXPECT_EQ(Call("GET", "/ops/health", kOperatorToken, "", "bad name!").status, 400);
  EXPECT_EQ(RootVersions(), 1u);
}

// Issue 11: two Content-Lengths (or one beside Transfer-Encoding) are where request smuggling
// behind a proxy starts; the operations listener refuses them whole, before the token is read,
// and a policy in such a body is never applied.
TEST_P(OpsServerTest, AmbiguousBodyFramingIsRefusedAndChangesNothing) {
  const std::string body = R"({"complianceOfficers":["mallory@acme.test"]})";
  for (const std::string& framing :
       {"Content-Length: " + std::to_string(body.size()) + "\r\nContent-Length: 2\r\n",
        "Content-Length: " + std::to_string(body.size()) + "\r\nTransfer-Encoding: chunked\r\n"}) {
    testing::TlsConnection c;
    ASSERT_TRUE(c.Open(server_->port()));
    ASSERT_TRUE(
        c.Write("PUT /ops/orgs/acme/policy HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Authorization: Bearer " +
                std::string(kOperatorToken) + "\r\nContent-Type: application/json\r\n" + framing +
                "\r\n" + body));
    const std::string answer = c.ReadAnswer();
    EXPECT_EQ(answer.rfind("HTTP/1.1 400", 0), 0u) << answer;
    EXPECT_NE(answer.find("\"bad_framing\""), std::string::npos) << answer;
  }
  HttpAnswer policy = Call("GET", "/ops/orgs/acme/policy");
  EXPECT_EQ(policy.status, 200);
  EXPECT_EQ(policy.body.find("mallory"), std::string::npos) << policy.body;
}

// The routes answer without a socket (http::Answer): the token is checked before the body is
// read, and the operations API names its codes as ErrorCode does.
TEST_P(OpsServerTest, TheRoutesAnswerWithoutASocketAndReadNoBodyBeforeTheToken) {
  auto answer = [&](const std::string& method, const std::string& target, bool token,
                    std::istringstream& body, std::size_t length = 0) {
    Poco::Net::HTTPRequest head(method, target, Poco::Net::HTTPMessage::HTTP_1_1);
    if (token) head.set("Authorization", std::string("Bearer ") + kOperatorToken);
    if (length > 0) head.setContentLength64(static_cast<Poco::Int64>(length));
    http::Request request(head, body);
    return http::Answer(*server_, request);
  };
  const std::string policy = R"({"indexer":"mallory"})";
  std::istringstream unread(policy);
  http::Response refused = answer("PUT", "/ops/orgs/acme/policy", false, unread, policy.size());
  EXPECT_EQ(refused.status, 401);
  EXPECT_EQ(Parse(refused.body)->getValue<std::string>("code"), "UNAUTHENTICATED");
  EXPECT_EQ(refused.header("WWW-Authenticate"), "Bearer realm=\"strongroom-ops\"");
  EXPECT_TRUE(refused.close);
  EXPECT_EQ(unread.tellg(), 0);  // not a byte of it read

  std::istringstream none;
  http::Response health = answer("GET", "/ops/health", true, none);
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(Parse(health.body)->getValue<std::string>("status"), "ok");
  http::Response method = answer("DELETE", "/ops/orgs/acme/policy", true, none);
  EXPECT_EQ(method.status, 405);
  EXPECT_EQ(method.header("Allow"), "GET, PUT");
  EXPECT_EQ(Parse(method.body)->getValue<std::string>("code"), "method_not_allowed");
  http::Response unknown = answer("GET", "/ops/orgs/acme", true, none);
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(Parse(unknown.body)->getValue<std::string>("code"), "NOT_FOUND");
  http::Response bad_org = answer("GET", "/ops/orgs/Not%20An%20Org/policy", true, none);
  EXPECT_EQ(bad_org.status, 400);
  EXPECT_EQ(Parse(bad_org.body)->getValue<std::string>("code"), "INVALID_ARGUMENT");

  std::istringstream stored(policy);
  http::Response put = answer("PUT", "/ops/orgs/acme/policy", true, stored, policy.size());
  EXPECT_EQ(put.status, 200) << put.body;
  EXPECT_EQ(Parse(put.body)->getValue<std::string>("indexer"), "mallory");
  ASSERT_EQ(Audit().size(), 1u);
  EXPECT_EQ(Audit()[0].actor, "operator");
}

TEST_P(OpsServerTest, TheListenerSpeaksOnlyTls) {
  // Plain HTTP gets no HTTP answer.
  Poco::Net::HTTPClientSession plain("127.0.0.1", server_->port());
  plain.setTimeout(Poco::Timespan(5, 0));
  Poco::Net::HTTPRequest request("GET", "/ops/health", Poco::Net::HTTPMessage::HTTP_1_1);
  request.set("Authorization", std::string("Bearer ") + kOperatorToken);
  bool answered_200 = false;
  try {
    plain.sendRequest(request);
    Poco::Net::HTTPResponse response;
    plain.receiveResponse(response);
    answered_200 = response.getStatus() == Poco::Net::HTTPResponse::HTTP_OK;
  } catch (const Poco::Exception&) {
  }
  EXPECT_FALSE(answered_200);

  // A client that trusts another CA refuses the server's certificate.
  const std::filesystem::path other = dir_ / "other";
  std::filesystem::create_directories(other);
  MakeCertificates(other, "other-ca");
  Poco::Net::Context::Params params;
  params.caLocation = (other / "other-ca.pem").string();
  params.verificationMode = Poco::Net::Context::VERIFY_RELAXED;
  Poco::Net::Context::Ptr strangers =
      new Poco::Net::Context(Poco::Net::Context::TLS_CLIENT_USE, params);
  Poco::Net::HTTPSClientSession session("127.0.0.1", server_->port(), strangers);
  EXPECT_ANY_THROW({
    session.sendRequest(request);
    Poco::Net::HTTPResponse response;
    session.receiveResponse(response);
  });
}

struct CtlRun {
  int exit_code = -1;
  std::string out, err;
};

CtlRun Kmsctl(const std::vector<std::string>& args) {
  Poco::Pipe out_pipe, err_pipe;
  Poco::ProcessHandle handle =
      Poco::Process::launch(KMSCTL_PATH, args, ".", nullptr, &out_pipe, &err_pipe);
  Poco::PipeInputStream out_stream(out_pipe), err_stream(err_pipe);
  CtlRun run;
  std::thread err_reader([&] { Poco::StreamCopier::copyToString(err_stream, run.err); });
  Poco::StreamCopier::copyToString(out_stream, run.out);
  err_reader.join();
  run.exit_code = handle.wait();
  return run;
}

TEST_P(OpsServerTest, KmsctlOpsDrivesTheListener) {
  const std::string url = "https://127.0.0.1:" + std::to_string(server_->port());
  const std::vector<std::string> flags = {
      "--url", url, "--ca", (dir_ / "ca.pem").string(), "--token-file", settings_.token_file};
  auto with = [&](std::vector<std::string> args) {
    args.insert(args.end(), flags.begin(), flags.end());
    return Kmsctl(args);
  };
  CtlRun health = with({"ops", "health"});
  ASSERT_EQ(health.exit_code, 0) << health.err;
  EXPECT_EQ(Parse(health.out)->getValue<std::string>("status"), "ok");

  CtlRun metrics = with({"ops", "metrics"});
  ASSERT_EQ(metrics.exit_code, 0) << metrics.err;
  EXPECT_TRUE(testing::ParsePrometheus(metrics.out).ok()) << metrics.out;

  WriteFile(dir_ / "policy.json", R"({"complianceOfficers":["carol"]})", 0600);
  CtlRun set = with({"ops", "policy", "set", "acme", "--file", (dir_ / "policy.json").string(),
                     "--operator", "erin"});
  ASSERT_EQ(set.exit_code, 0) << set.err;
  CtlRun get = with({"ops", "policy", "get", "acme"});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(Parse(get.out)->getArray("complianceOfficers")->getElement<std::string>(0), "carol");

  // A wrong token: refused, and said so.
  WriteFile(dir_ / "wrong.token", std::string(64, 'a'), 0600);
  CtlRun refused =
      Kmsctl({"ops", "rotate-root", "acme", "--url", url, "--ca", (dir_ / "ca.pem").string(),
              "--token-file", (dir_ / "wrong.token").string()});
  EXPECT_EQ(refused.exit_code, 77);  // UNAUTHENTICATED (docs/exit-status.md)
  EXPECT_NE(refused.err.find("HTTP 401"), std::string::npos) << refused.err;
  EXPECT_EQ(RootVersions(), 1u);
}

TEST_P(OpsServerTest, KmsctlRotatesAndWaitsForTheRewrapWithTheConfigsOpsSection) {
  CreateKeys(12);
  // The [ops] section alone says where to go; the server's own certificate is the trust anchor.
  const std::string config = (dir_ / "kms.ini").string();
  WriteFile(config,
            "[ops]\nlisten = 127.0.0.1:" + std::to_string(server_->port()) + "\ntls_cert = " +
                settings_.listener.tls_cert + "\ntls_key = " + settings_.listener.tls_key +
                "\ntoken_file = " + settings_.token_file + "\n",
            0600);
  CtlRun rotate = Kmsctl({"--config", config, "ops", "rotate-root", "acme"});
  ASSERT_EQ(rotate.exit_code, 0) << rotate.err;
  EXPECT_NE(rotate.out.find("kmsctl ops rewrap acme --wait"), std::string::npos) << rotate.out;
  CtlRun wait = Kmsctl({"--config", config, "ops", "rewrap", "acme", "--wait"});
  ASSERT_EQ(wait.exit_code, 0) << wait.err;
  EXPECT_NE(wait.out.find("to root v2: done, 12/12 re-wrapped (100.0%), 0 failed"),
            std::string::npos)
      << wait.out;
  CtlRun unknown = Kmsctl({"--config", config, "ops", "rewrap", "globex"});
  EXPECT_EQ(unknown.exit_code, 66);  // NOT_FOUND
  EXPECT_NE(unknown.err.find("HTTP 404"), std::string::npos) << unknown.err;

  CtlRun search = Kmsctl({"--config", config, "ops", "rotate-search-key", "--org", "acme"});
  ASSERT_EQ(search.exit_code, 0) << search.err;
  EXPECT_NE(search.out.find("kms://kms.test/search-keys/acme/1"), std::string::npos) << search.out;
  CtlRun no_org = Kmsctl({"--config", config, "ops", "rotate-search-key"});
  EXPECT_EQ(no_org.exit_code, 64);  // usage
  EXPECT_NE(no_org.err.find("--org"), std::string::npos) << no_org.err;
}

// A key that lacks a wrap under a configured token shows in health (degraded), in the metric and
// in /ops/reconcile; here one no configured token can open (its only blob is for a token that was
// retired), so every job fails on it and says which key, and health stays degraded.
TEST_P(OpsServerTest, KeysMissingWrapsShowInHealthMetricsAndTheReconcileEndpoints) {
  ReconcileJobs reconcile(*vault_, *db_);
  ReconcileWorker::Options options;
  options.interval = std::chrono::milliseconds(20);
  options.busy_recount = std::chrono::milliseconds(20);
  options.idle_recount = std::chrono::milliseconds(20);
  ReconcileWorker reconcile_worker(reconcile, options);
  server_->Stop();
  auto server = OpsServer::New(settings_, *vault_, *db_, metrics_, *jobs_, *cache_, worker_.get(),
                               {}, &reconcile_worker);
  ASSERT_TRUE(server.ok()) << server.error().ToString();
  server_ = std::move(server).value();
  ASSERT_TRUE(server_->Start().ok());
  auto missing = [&]() -> double {
    auto samples = testing::ParsePrometheus(Call("GET", "/ops/metrics").body);
    if (!samples.ok()) return -1;
    for (const auto& sample : *samples) {
      if (sample.name == "strongroom_keys_missing_wraps" &&
          sample.labels.at("token") == "primary") {
        return sample.value;
      }
    }
    return -1;
  };
  auto wait_for = [](const std::function<bool()>& condition) {
    for (int i = 0; i < 1500 && !condition(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return condition();
  };
  ASSERT_TRUE(wait_for([&] { return missing() == 0; }));
  Object::Ptr health = Parse(Call("GET", "/ops/health").body);
  EXPECT_EQ(health->getValue<std::string>("status"), "ok");
  EXPECT_EQ(health->getObject("wraps")->getObject("missing")->getValue<int>("primary"), 0);
  EXPECT_EQ(Call("GET", "/ops/reconcile").status, 404);

  KeyRecord orphan;
  orphan.uri = "kms://kms.test/keys/orphan";
  orphan.org = "acme";
  orphan.creator = "alice";
  orphan.client_id = "test";
  orphan.bind_deadline_ms = 1;
  SecretBytes key = SecretBytes::Random(32);
  orphan.blobs = {{"retired", vault_->Wrap({"acme", orphan.uri}, key.view())->blobs[0].blob}};
  ASSERT_TRUE(
      db_->InTransaction([&](Poco::Data::Session& s) { return KmsStore::InsertKeys(s, {orphan}); })
          .ok());
  ASSERT_TRUE(wait_for([&] { return missing() == 1; })) << missing();
  HttpAnswer degraded = Call("GET", "/ops/health");
  EXPECT_EQ(degraded.status, 200);  // the KMS serves; a key hangs on fewer tokens than configured
  health = Parse(degraded.body);
  EXPECT_EQ(health->getValue<std::string>("status"), "degraded");
  EXPECT_EQ(health->getObject("wraps")->getObject("missing")->getValue<int>("primary"), 1);

  // The worker started a job by itself: the primary is ready and lacks a wrap. It cannot open the
  // key, so the job fails on it and says so.
  auto state = [&] {
    HttpAnswer answer = Call("GET", "/ops/reconcile");
    return answer.status == 200 ? Parse(answer.body)->getValue<std::string>("state") : "";
  };
  ASSERT_TRUE(wait_for([&] { return state() == "failed"; })) << Call("GET", "/ops/reconcile").body;
  Object::Ptr job = Parse(Call("GET", "/ops/reconcile").body);
  EXPECT_EQ(job->getValue<std::string>("startedBy"), "kms");
  EXPECT_EQ(job->getValue<int>("failed"), 1);
  EXPECT_EQ(job->getObject("missing")->getValue<int>("primary"), 1);
  ASSERT_EQ(job->getArray("failures")->size(), 1u);
  EXPECT_EQ(job->getArray("failures")->getObject(0)->getValue<std::string>("uri"), orphan.uri);
  EXPECT_EQ(Parse(Call("GET", "/ops/health").body)->getValue<std::string>("status"), "degraded");

  // An operator starts another: 202, audited with their name.
  HttpAnswer started = Call("POST", "/ops/reconcile", std::string(kOperatorToken), "", "erin");
  ASSERT_EQ(started.status, 202) << started.body;
  EXPECT_EQ(Parse(started.body)->getValue<std::string>("startedBy"), "operator:erin");
  EXPECT_EQ(Parse(started.body)->getValue<int>("jobId"), job->getValue<int>("jobId") + 1);
  ASSERT_TRUE(wait_for([&] { return state() == "failed"; }));
  bool audited = false;
  for (const AuditRecord& r : Audit()) {
    audited = audited || (r.action == "reconcile.start" && r.actor == "operator:erin");
  }
  EXPECT_TRUE(audited);
  HttpAnswer put = Call("PUT", "/ops/reconcile", std::string(kOperatorToken), "{}");
  EXPECT_EQ(put.status, 405);
  EXPECT_EQ(put.headers["Allow"], "GET, POST");

  const std::vector<std::string> flags = {
      "--url",        "https://127.0.0.1:" + std::to_string(server_->port()),
      "--ca",         (dir_ / "ca.pem").string(),
      "--token-file", settings_.token_file};
  std::vector<std::string> args = {"ops", "reconcile", "start", "--wait"};
  args.insert(args.end(), flags.begin(), flags.end());
  CtlRun ctl = Kmsctl(args);
  EXPECT_EQ(ctl.exit_code, 65) << ctl.out << ctl.err;
  EXPECT_NE(ctl.out.find(": failed, 0/1 wraps added"), std::string::npos) << ctl.out;
  EXPECT_NE(ctl.out.find("missing now: primary 1"), std::string::npos) << ctl.out;
  EXPECT_NE(ctl.out.find("failed: key " + orphan.uri), std::string::npos) << ctl.out;
  args = {"ops", "reconcile", "stop"};
  args.insert(args.end(), flags.begin(), flags.end());
  EXPECT_EQ(Kmsctl(args).exit_code, 64);
  server_->Stop();
}

TEST_P(OpsServerTest, OperationsStartsFromTheConfigurationAndRunsRotationsToTheEnd) {
  const std::string without = (dir_ / "plain.ini").string();
  WriteFile(without, "[kms]\nhost = kms.test\n", 0600);
  auto none = Operations::Start(without, *vault_, *db_, metrics_, *cache_);
  ASSERT_TRUE(none.ok()) << none.error().ToString();
  EXPECT_EQ(*none, nullptr);

  CreateKeys(6);
  const std::string config = (dir_ / "ops.ini").string();
  WriteFile(config,
            "[kms]\nhost = kms.test\n[ops]\nlisten = 127.0.0.1:0\ntls_cert = " +
                settings_.listener.tls_cert + "\ntls_key = " + settings_.listener.tls_key +
                "\ntoken_file = " + settings_.token_file + "\nrewrap_idle_ms = 20\n",
            0600);
  // The vault's probe interval reaches the job: it waits twice that for the other nodes' probes.
  const auto probe_interval = std::chrono::milliseconds(500);
  auto ops = Operations::Start(config, *vault_, *db_, metrics_, *cache_, nullptr, probe_interval);
  ASSERT_TRUE(ops.ok()) << ops.error().ToString();
  ASSERT_NE(*ops, nullptr);
  server_->Stop();  // the fixture's listener and worker; from here on, the ones Operations started
  worker_->Stop();
  const std::uint16_t port = (*ops)->port();
  ASSERT_NE(port, 0);
  auto call = [&](const std::string& method, const std::string& path) {
    Poco::Net::HTTPSClientSession session("127.0.0.1", port, client_context_);
    Poco::Net::HTTPRequest request(method, path, Poco::Net::HTTPMessage::HTTP_1_1);
    request.set("Authorization", std::string("Bearer ") + kOperatorToken);
    request.setContentLength64(0);
    session.sendRequest(request);
    Poco::Net::HTTPResponse response;
    std::string body;
    Poco::StreamCopier::copyToString(session.receiveResponse(response), body);
    return std::make_pair(static_cast<int>(response.getStatus()), body);
  };
  ASSERT_EQ(call("POST", "/ops/orgs/acme/rotate-root").first, 202);
  std::string state = "running";
  Poco::JSON::Object::Ptr job;
  for (int i = 0; i < 400 && state == "running"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
    auto [status, body] = call("GET", "/ops/orgs/acme/rewrap");
    ASSERT_EQ(status, 200) << body;
    job = Parse(body);
    state = job->getValue<std::string>("state");
  }
  EXPECT_EQ(state, "done");  // Operations' own worker ran the job
  EXPECT_GE(job->getValue<std::int64_t>("updatedMs") - job->getValue<std::int64_t>("startedMs"),
            kProbeWaitFactor * probe_interval.count());
  ops->reset();
}

TEST(OpsSettingsTest, TheOpsSectionIsReadStrictly) {
  auto read = [](const std::string& ini) {
    std::istringstream in(ini);
    Poco::AutoPtr<Poco::Util::IniFileConfiguration> config(
        new Poco::Util::IniFileConfiguration(in));
    return ReadOpsSettings(*config);
  };
  auto none = read("[kms]\nhost = k\n");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(*none);
  auto full = read(
      "[ops]\nlisten = [::1]:9444\ntls_cert = c.pem\ntls_key = k.pem\ntoken_file = t\n"
      "rewrap_batch = 64\nmax_open_connections = 512\nmax_connections_per_peer = 0\n");
  ASSERT_TRUE(full.ok()) << full.error().ToString();
  EXPECT_EQ((*full)->listener.host, "::1");
  EXPECT_EQ((*full)->listener.port, 9444);
  EXPECT_EQ((*full)->rewrap_batch, 64u);
  EXPECT_EQ((*full)->listener.max_open_connections, 512u);
  EXPECT_EQ((*full)->listener.max_connections_per_peer, 0u);
  EXPECT_FALSE(read("[ops]\nlisten = 127.0.0.1:1\ntls_cert = c\ntls_key = k\ntoken_file = t\n"
                    "tls_certs = typo\n")
                   .ok());
  EXPECT_FALSE(read("[ops]\nlisten = 127.0.0.1:1\ntls_key = k\ntoken_file = t\n").ok());
  EXPECT_FALSE(read("[ops]\nlisten = 127.0.0.1\ntls_cert = c\ntls_key = k\ntoken_file = t\n").ok());
  EXPECT_FALSE(
      read("[ops]\nlisten = 127.0.0.1:70000\ntls_cert = c\ntls_key = k\ntoken_file = t\n").ok());
  EXPECT_FALSE(read("[ops]\ntls_cert = c\ntls_key = k\ntoken_file = t\nrewrap_batch = 0\n").ok());
  EXPECT_FALSE(
      read("[ops]\ntls_cert = c\ntls_key = k\ntoken_file = t\nmax_open_connections = 0\n").ok());
  EXPECT_FALSE(
      read("[ops]\ntls_cert = c\ntls_key = k\ntoken_file = t\nmax_connections_per_peer = x\n")
          .ok());
}

TEST(OpsSettingsTest, TheTokenFileMustBePrivateAndHoldALongToken) {
  testing::TestDir dir;
  WriteFile(dir / "good", std::string(kOperatorToken) + "\n", 0600);
  auto digest = ReadOpsTokenDigest((dir / "good").string());
  ASSERT_TRUE(digest.ok()) << digest.error().ToString();
  WriteFile(dir / "same", kOperatorToken, 0400);  // no newline: the same token
  EXPECT_EQ(*ReadOpsTokenDigest((dir / "same").string()), *digest);

  WriteFile(dir / "shared", kOperatorToken, 0640);
  auto shared = ReadOpsTokenDigest((dir / "shared").string());
  ASSERT_FALSE(shared.ok());
  EXPECT_NE(shared.error().message().find("0600"), std::string::npos);
  WriteFile(dir / "short", "tooshort\n", 0600);
  EXPECT_FALSE(ReadOpsTokenDigest((dir / "short").string()).ok());
  WriteFile(dir / "spaces", std::string(kOperatorToken) + " more\n", 0600);
  EXPECT_FALSE(ReadOpsTokenDigest((dir / "spaces").string()).ok());
  EXPECT_FALSE(ReadOpsTokenDigest((dir / "absent").string()).ok());
}

}  // namespace
}  // namespace strongroom::kms
