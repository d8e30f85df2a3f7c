// The KMS relay end to end in one process: a real Poco HTTPS server on 127.0.0.1 whose
// GET /relay/kms goes to HandleRelayUpgrade (cored's half), a real KmsService on a SoftHSM2 token
// behind a real RelayConnector (kmsd's half), and the KMS protocol's client (KmsSession) talking
// through KmsRelay::Forward.
#include "strongroom/core/kms_relay.h"

#include <Poco/JSON/Parser.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/Net/SecureServerSocket.h>
#include <Poco/Net/WebSocket.h>
#include <Poco/StreamCopier.h>
#include <Poco/ThreadPool.h>
#include <Poco/Util/IniFileConfiguration.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "../support/raw_websocket.h"
#include "../support/softhsm_sandbox.h"
#include "../support/test_dir.h"
#include "../support/wait_until.h"
#include "strongroom/client/kms_session.h"
#include "strongroom/common/database.h"
#include "strongroom/common/jwt.h"
#include "strongroom/common/tls.h"
#include "strongroom/hsm/key_vault.h"
#include "strongroom/kms/kms_service.h"
#include "strongroom/kms/kms_store.h"
#include "strongroom/kms/kmsd_settings.h"
#include "strongroom/kms/relay_connector.h"

namespace strongroom::core {
namespace {

using Poco::JSON::Object;
using Poco::Net::WebSocket;
using testing::kSoftHsmModule;
using testing::RawWebSocket;
using testing::SoftHsmSandbox;
using testing::WaitUntil;
namespace fs = std::filesystem;

// Both halves speak one wire; the KMS does not link the core, so the constants are repeated.
static_assert(std::string_view(kRelayPath) == kms::kRelayUpgradePath);
static_assert(std::string_view(kRelayClusterHeader) == kms::kRelayClusterHeaderName);
static_assert(kMaxRelayMessageBytes == kms::kMaxRelayRequestBodyBytes);
static_assert(kMaxRelayAnswerBytes == kms::kMaxRelayAnswerBodyBytes);
static_assert(kRelayFrameEnvelopeBytes == kms::kRelayEnvelopeBytes);
static_assert(kMaxRelayConnectionsPerCluster == kms::kMaxRelayConnectorConnections);
static_assert(kMinRelayTokenBytes == kms::kMinRelayTokenLength);
static_assert(kMaxRelayTokenBytes == kms::kMaxRelayTokenLength);

constexpr char kIssuer[] = "https://idp.acme.test";
constexpr char kCluster[] = "kms://kms.acme.test";
constexpr char kRogueCluster[] = "kms://rogue.test";  // a raw WebSocket client plays the KMS
constexpr char kBigCluster[] = "kms://big.test";      // a connector whose answers are too large
constexpr char kToken[] = "9e1c5a7f3b2d8e4c6a0f1b3d5e7c9a2b4d6f8e0a1c3b5d7f9e2a4c6b8d0f1e3a";
constexpr char kWrongToken[] = "0000000000000000000000000000000000000000000000000000000000000000";
constexpr auto kPatience = std::chrono::seconds(60);  // for what must happen, not how fast

void WriteFile(const fs::path& path, const std::string& content, mode_t mode) {
  std::ofstream(path) << content;
  ::chmod(path.c_str(), mode);
}

std::array<std::uint8_t, 32> Sha256(std::string_view text) {
  std::array<std::uint8_t, 32> digest{};
  unsigned int length = 0;
  EVP_Digest(text.data(), text.size(), digest.data(), &length, EVP_sha256(), nullptr);
  return digest;
}

// What every test shares: TLS certificates, and a KMS on a SoftHSM2 token (slow to make).
struct Environment {
  fs::path dir;
  std::unique_ptr<hsm::KeyVault> vault;
  std::unique_ptr<Database> db;
  std::unique_ptr<jose::EcKeyPair> issuer_key;
  std::unique_ptr<kms::KmsService> service;
  std::unique_ptr<client::KmsInfo> info;
  std::string error;

  Environment() {
    signal(SIGPIPE, SIG_IGN);  // a write to a connection the peer closed must not end the test
    dir = fs::temp_directory_path() / ("sr-relay-" + std::to_string(getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    const std::string d = dir.string();
    WriteFile(dir / "server.ext", "subjectAltName = IP:127.0.0.1, DNS:localhost\n", 0600);
    const std::string script =
        "cd '" + d +
        "' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
        "-out ca.pem -days 2 -subj '/CN=relay test CA' 2>/dev/null && openssl req -newkey ec "
        "-pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key -out tls.csr -subj "
        "'/CN=127.0.0.1' 2>/dev/null && openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key "
        "-CAcreateserial -out tls.pem -days 2 -extfile server.ext 2>/dev/null";
    if (std::system(script.c_str()) != 0) {
      error = "openssl could not make the test certificates";
      return;
    }
    WriteFile(dir / "relay.token", std::string(kToken) + "\n", 0600);
    WriteFile(dir / "wrong.token", std::string(kWrongToken) + "\n", 0600);

    hsm::TokenConfig token;
    token.name = "primary";
    token.uri = SoftHsmSandbox::Get().Uri(kSoftHsmModule,
                                          SoftHsmSandbox::Get().CreateToken(kSoftHsmModule));
    auto opened = hsm::KeyVault::Open({{token}});
    if (!opened.ok()) {
      error = opened.error().ToString();
      return;
    }
    vault = std::move(opened).value();
    if (!vault->InitRoot("acme").ok() || !vault->tokens()[0]->CreateIdentityKey("kms", 2048).ok()) {
      error = "cannot set up the token";
      return;
    }
    auto database = Database::OpenSqlite((dir / "kms.db").string(), kms::KmsStore::Migrations());
    if (!database.ok()) {
      error = database.error().ToString();
      return;
    }
    db = std::move(database).value();
    issuer_key =
        std::make_unique<jose::EcKeyPair>(std::move(jose::EcKeyPair::Generate("idp-1")).value());
    TrustedIssuer issuer{kIssuer, "acme", {*issuer_key->PublicKey()}};
    auto verifier = JwtVerifier::New({issuer}, "kms", std::chrono::seconds(30));
    auto made =
        kms::KmsService::New({"kms.acme.test", "kms", {}}, *vault, *db, std::move(*verifier));
    if (!made.ok()) {
      error = made.error().ToString();
      return;
    }
    service = std::move(made).value();
    info = std::make_unique<client::KmsInfo>(
        std::move(client::ParseKmsInfo(service->InfoJson())).value());
  }

  ~Environment() {
    service.reset();
    db.reset();
    vault.reset();
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }

  std::string Bearer(const std::string& user) const {
    return *MintJwt(*issuer_key, {kIssuer, user, "kms", std::time(nullptr) - 5, 3600});
  }
};

// The core's side of the test: an HTTPS server whose only route is GET /relay/kms. In capture
// mode it upgrades without the relay and hands the sockets to the test (a fake cored).
class TestCore {
 public:
  TestCore(KmsRelay& relay, const fs::path& dir) : relay_(relay) {
    auto context = MakeTlsServerContext("the test core", (dir / "tls.pem").string(),
                                        (dir / "tls.key").string());
    if (!context.ok()) throw std::runtime_error(context.error().ToString());
    Poco::Net::SecureServerSocket socket(Poco::Net::SocketAddress("127.0.0.1", 0), 64, *context);
    port_ = socket.address().port();
    Poco::Net::HTTPServerParams::Ptr params = new Poco::Net::HTTPServerParams;
    params->setMaxThreads(16);
    params->setKeepAlive(true);
    server_ = std::make_unique<Poco::Net::HTTPServer>(new Factory(*this), pool_, socket, params);
    server_->start();
  }

  ~TestCore() {
    server_->stopAll(true);
    std::lock_guard lock(mu_);
    captured_.clear();
    Poco::Net::uninitializeSSL();
  }

  std::uint16_t port() const { return port_; }
  std::string url() const { return "https://127.0.0.1:" + std::to_string(port_); }
  int refused() const { return refused_.load(); }
  void set_capture(bool capture) { capture_ = capture; }

  // The next socket upgraded in capture mode, or null when none came within kPatience.
  std::unique_ptr<WebSocket> NextCaptured() {
    std::unique_lock lock(mu_);
    if (!captured_cv_.wait_for(lock, kPatience, [this] { return !captured_.empty(); })) {
      return nullptr;
    }
    std::unique_ptr<WebSocket> socket = std::move(captured_.front());
    captured_.pop_front();
    return socket;
  }

 private:
  class Handler : public Poco::Net::HTTPRequestHandler {
   public:
    explicit Handler(TestCore& core) : core_(core) {}
    void handleRequest(Poco::Net::HTTPServerRequest& request,
                       Poco::Net::HTTPServerResponse& response) override {
      if (request.getURI() != kRelayPath) {
        response.setStatusAndReason(Poco::Net::HTTPResponse::HTTP_NOT_FOUND);
        response.send();
        return;
      }
      if (core_.capture_) {
        auto socket = std::make_unique<WebSocket>(request, response);
        std::lock_guard lock(core_.mu_);
        core_.captured_.push_back(std::move(socket));
        core_.captured_cv_.notify_all();
        return;
      }
      Status status = HandleRelayUpgrade(core_.relay_, request, response);
      if (!status.ok()) core_.refused_.fetch_add(1);
    }

   private:
    TestCore& core_;
  };

  class Factory : public Poco::Net::HTTPRequestHandlerFactory {
   public:
    explicit Factory(TestCore& core) : core_(core) {}
    Poco::Net::HTTPRequestHandler* createRequestHandler(
        const Poco::Net::HTTPServerRequest&) override {
      return new Handler(core_);
    }

   private:
    TestCore& core_;
  };

  KmsRelay& relay_;
  std::uint16_t port_ = 0;
  Poco::ThreadPool pool_{2, 32};
  std::unique_ptr<Poco::Net::HTTPServer> server_;
  std::atomic<int> refused_{0};
  std::atomic<bool> capture_{false};
  std::mutex mu_;
  std::condition_variable captured_cv_;
  std::deque<std::unique_ptr<WebSocket>> captured_;
};

struct HttpAnswer {
  int status = 0;
  std::string body;
  std::string www_authenticate;
};

class KmsRelayTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { env_ = new Environment(); }
  static void TearDownTestSuite() {
    delete env_;
    env_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(env_->error.empty()) << env_->error;
    StartRelay({});
  }

  void TearDown() override {
    connectors_.clear();
    core_.reset();
    relay_.reset();
  }

  void StartRelay(KmsRelayOptions options) {
    connectors_.clear();
    core_.reset();
    relay_.reset();
    const auto digest = Sha256(kToken);
    options.clusters = {{kCluster, digest}, {kRogueCluster, digest}, {kBigCluster, digest}};
    options.log = [this](const std::string& line) { Remember("core: " + line); };
    auto relay = KmsRelay::New(std::move(options));
    ASSERT_TRUE(relay.ok()) << relay.error().ToString();
    relay_ = std::move(relay).value();
    core_ = std::make_unique<TestCore>(*relay_, env_->dir);
  }

  kms::RelayConnectorOptions ConnectorOptions(std::size_t connections = 4) {
    kms::RelayConnectorOptions options;
    options.url = core_->url();
    options.ca_file = (env_->dir / "ca.pem").string();
    options.token_file = (env_->dir / "relay.token").string();
    options.cluster = kCluster;
    options.connections = connections;
    options.backoff_initial = std::chrono::milliseconds(20);
    options.backoff_max = std::chrono::milliseconds(200);
    options.log = [this](const std::string& line) { Remember("kms: " + line); };
    return options;
  }

  // A started connector for the test's KMS.
  kms::RelayConnector* Connect(kms::RelayConnectorOptions options) {
    auto connector = kms::RelayConnector::New(std::move(options), *env_->service);
    EXPECT_TRUE(connector.ok()) << connector.error().ToString();
    if (!connector.ok()) return nullptr;
    connectors_.push_back(std::move(connector).value());
    connectors_.back()->Start();
    return connectors_.back().get();
  }

  client::KmsTransport ThroughRelay(const std::string& cluster = kCluster) {
    return [this, cluster](const std::string& message) -> Result<client::KmsResponse> {
      SR_ASSIGN_OR_RETURN(KmsRelayAnswer answer, relay_->Forward(cluster, message));
      return client::KmsResponse{answer.http_status, answer.content_type, answer.body};
    };
  }

  std::unique_ptr<client::KmsSession> OpenSession(const std::string& user) {
    auto session =
        client::KmsSession::Open(*env_->info, "cli-" + user, env_->Bearer(user), ThroughRelay());
    EXPECT_TRUE(session.ok()) << session.error().ToString();
    return session.ok() ? std::move(session).value() : nullptr;
  }

  // A Forward that must end by itself well within kPatience (the relay's lease timeout is
  // longer than that in the tests that use this, so a wait would show).
  Result<KmsRelayAnswer> ForwardWithin(const std::string& cluster, const std::string& message) {
    auto future = std::async(
        std::launch::async, [this, cluster, message] { return relay_->Forward(cluster, message); });
    if (future.wait_for(kPatience) != std::future_status::ready) {
      ADD_FAILURE() << "Forward waited instead of failing at once";
      future.wait();
    }
    return future.get();
  }

  Poco::Net::Context::Ptr ClientContext() {
    auto context = MakeTlsClientContext("the test client", (env_->dir / "ca.pem").string());
    EXPECT_TRUE(context.ok());
    Poco::Net::uninitializeSSL();  // the contexts of this test live no longer than the fixture
    return *context;
  }

  // A plain HTTPS request to the test core.
  HttpAnswer Call(const std::string& method, const std::map<std::string, std::string>& headers) {
    Poco::Net::HTTPSClientSession session("127.0.0.1", core_->port(), ClientContext());
    Poco::Net::HTTPRequest request(method, kRelayPath, Poco::Net::HTTPMessage::HTTP_1_1);
    for (const auto& [name, value] : headers) request.set(name, value);
    session.sendRequest(request);
    Poco::Net::HTTPResponse response;
    std::istream& in = session.receiveResponse(response);
    HttpAnswer answer;
    answer.status = static_cast<int>(response.getStatus());
    answer.www_authenticate = response.get("WWW-Authenticate", "");
    std::ostringstream body;
    Poco::StreamCopier::copyStream(in, body);
    answer.body = body.str();
    return answer;
  }

  // A WebSocket attached to the relay as `cluster`, driven by the test (a rogue KMS).
  std::unique_ptr<WebSocket> RawKms(const std::string& cluster) {
    Poco::Net::HTTPSClientSession session("127.0.0.1", core_->port(), ClientContext());
    Poco::Net::HTTPRequest request(Poco::Net::HTTPRequest::HTTP_GET, kRelayPath,
                                   Poco::Net::HTTPMessage::HTTP_1_1);
    request.set("Authorization", std::string("Bearer ") + kToken);
    request.set(kRelayClusterHeader, cluster);
    Poco::Net::HTTPResponse response;
    return std::make_unique<WebSocket>(session, request, response);
  }

  void Remember(const std::string& line) {
    std::lock_guard lock(log_mu_);
    log_.push_back(line);
  }
  std::vector<std::string> Log() {
    std::lock_guard lock(log_mu_);
    return log_;
  }
  bool Logged(const std::string& text) {
    for (const std::string& line : Log()) {
      if (line.find(text) != std::string::npos) return true;
    }
    return false;
  }

  static Environment* env_;
  std::unique_ptr<KmsRelay> relay_;
  std::unique_ptr<TestCore> core_;
  std::vector<std::unique_ptr<kms::RelayConnector>> connectors_;
  std::mutex log_mu_;
  std::vector<std::string> log_;
};

Environment* KmsRelayTest::env_ = nullptr;

TEST_F(KmsRelayTest, EcdheResourcesAndKeysTravelThroughTheRelay) {
  kms::RelayConnector* connector = Connect(ConnectorOptions(4));
  ASSERT_NE(connector, nullptr);
  // The core counts a connection once the handshake is answered, the connector a moment later,
  // once its side of the handshake returns: wait for both.
  ASSERT_TRUE(
      WaitUntil([&] { return relay_->Connected(kCluster) == 4 && connector->connected() == 4u; }));
  EXPECT_EQ(relay_->ConnectedClusters().at(kCluster), 4u);
  EXPECT_EQ(relay_->ConnectedClusters().at(kRogueCluster), 0u);

  auto alice = OpenSession("alice@acme.test");
  auto bob = OpenSession("bob@acme.test");
  ASSERT_TRUE(alice && bob);
  EXPECT_EQ(alice->ephemeral_uri().rfind("kms://kms.acme.test/ecdhe/", 0), 0u);

  Object count;
  count.set("count", 1);
  auto created = alice->Call("create", "/keys", count);
  ASSERT_TRUE(created.ok()) << created.error().ToString();
  ASSERT_EQ((*created)->getValue<int>("status"), 201);
  auto key = (*created)->getArray("keys")->getObject(0);
  const std::string key_uri = key->getValue<std::string>("uri");

  Object resource;
  Poco::JSON::Array members, key_uris;
  members.add("bob@acme.test");
  key_uris.add(key_uri);
  resource.set("authIds", members);
  resource.set("keyUris", key_uris);
  auto made = alice->Call("create", "/resources", resource);
  ASSERT_TRUE(made.ok()) << made.error().ToString();
  ASSERT_EQ((*made)->getValue<int>("status"), 201);

  // Bob, authorized through the resource, gets the same key through the relay.
  auto retrieved = bob->Call("retrieve", key_uri);
  ASSERT_TRUE(retrieved.ok()) << retrieved.error().ToString();
  ASSERT_EQ((*retrieved)->getValue<int>("status"), 200);
  EXPECT_EQ((*retrieved)->getObject("key")->getObject("jwk")->getValue<std::string>("k"),
            key->getObject("jwk")->getValue<std::string>("k"));

  // A plain error of the KMS (a message it cannot open) comes back as the KMS answered it.
  auto garbage = relay_->Forward(kCluster, "e30.e30.e30");
  ASSERT_TRUE(garbage.ok()) << garbage.error().ToString();
  EXPECT_GE(garbage->http_status, 400);
  EXPECT_EQ(garbage->content_type, "application/json");

  // Neither log names the token; the relay never logs a body.
  for (const std::string& line : Log()) {
    EXPECT_EQ(line.find(kToken), std::string::npos) << line;
    EXPECT_EQ(line.find("e30.e30"), std::string::npos) << line;
  }
}

// Issue 10 through the relay: what the core relays it may keep and send again; kmsd refuses the
// repeat, sealed, and a message under a deleted key comes back as the draft's signed refusal.
TEST_F(KmsRelayTest, AMessageTheCoreSendsAgainIsRefusedAsAReplay) {
  kms::RelayConnector* connector = Connect(ConnectorOptions(2));
  ASSERT_NE(connector, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return relay_->Connected(kCluster) == 2; }));
  auto alice = OpenSession("alice@acme.test");
  ASSERT_TRUE(alice);
  Object count;
  count.set("count", 1);
  auto sealed = alice->Seal("create", "/keys", count);
  ASSERT_TRUE(sealed.ok());
  const std::string request_id = alice->last_request_id();
  auto relay = [&](const std::string& message) {
    auto answer = relay_->Forward(kCluster, message);
    EXPECT_TRUE(answer.ok()) << answer.error().ToString();
    return client::KmsResponse{answer->http_status, answer->content_type, answer->body};
  };
  auto first = alice->OpenAnswer(relay(*sealed), request_id);
  ASSERT_TRUE(first.ok()) << first.error().ToString();
  EXPECT_EQ((*first)->getValue<int>("status"), 201);
  auto second = alice->OpenAnswer(relay(*sealed), request_id);
  ASSERT_TRUE(second.ok()) << second.error().ToString();
  EXPECT_EQ((*second)->getValue<int>("status"), 409);
  EXPECT_EQ((*second)->getValue<std::string>("reason"), "replayed request");

  auto ping = alice->Seal("update", "/ping");
  ASSERT_TRUE(alice->Close().ok());
  auto refusal = client::ReadKmsRefusal(relay(*ping), env_->info->rsa_public_key);
  ASSERT_TRUE(refusal.ok()) << refusal.error().ToString();
  ASSERT_TRUE(refusal->has_value());
  EXPECT_EQ((*refusal)->status, 401);
}

TEST_F(KmsRelayTest, AConnectorWithTheWrongTokenIsRefusedAndNeverAttached) {
  kms::RelayConnectorOptions options = ConnectorOptions(2);
  options.token_file = (env_->dir / "wrong.token").string();
  kms::RelayConnector* connector = Connect(options);
  ASSERT_NE(connector, nullptr);
  ASSERT_TRUE(
      WaitUntil([&] { return core_->refused() >= 4 && connector->connection_attempts() >= 4; }));
  EXPECT_EQ(relay_->Connected(kCluster), 0u);
  EXPECT_EQ(connector->connected(), 0u);
  EXPECT_TRUE(WaitUntil([&] { return Logged("refused the relay token"); }));
  // The core logs each refused login, with the peer and the cluster, never the token.
  EXPECT_TRUE(WaitUntil([&] { return Logged("core: relay login refused from 127.0.0.1:"); }));
  EXPECT_TRUE(WaitUntil([&] { return Logged("for cluster '" + std::string(kCluster) + "'"); }));
  for (const std::string& line : Log()) {
    EXPECT_EQ(line.find(kWrongToken), std::string::npos) << line;
  }
  // The right token for another cluster is no credential for this one.
  EXPECT_FALSE(relay_->CheckCredential(kCluster, kWrongToken).ok());
  EXPECT_FALSE(relay_->CheckCredential("kms://unknown.test", kToken).ok());
  EXPECT_FALSE(relay_->CheckCredential(kCluster, "").ok());
  EXPECT_TRUE(relay_->CheckCredential(kCluster, kToken).ok());
  auto forward = ForwardWithin(kCluster, "e30.e30.e30");
  ASSERT_FALSE(forward.ok());
  EXPECT_EQ(forward.error().code(), ErrorCode::kUnavailable);
}

TEST_F(KmsRelayTest, UpgradeRequestsThatAreNotARelayGetJsonErrors) {
  const std::map<std::string, std::string> upgrade = {
      {"Connection", "Upgrade"},
      {"Upgrade", "websocket"},
      {"Sec-WebSocket-Version", "13"},
      {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
      {kRelayClusterHeader, kCluster}};
  HttpAnswer none = Call("GET", upgrade);
  EXPECT_EQ(none.status, 401);
  EXPECT_NE(none.body.find("\"code\":\"unauthenticated\""), std::string::npos) << none.body;
  EXPECT_EQ(none.www_authenticate.rfind("Bearer", 0), 0u);

  auto wrong = upgrade;
  wrong["Authorization"] = std::string("Bearer ") + kWrongToken;
  EXPECT_EQ(Call("GET", wrong).status, 401);
  auto other_cluster = upgrade;
  other_cluster["Authorization"] = std::string("Bearer ") + kToken;
  other_cluster[kRelayClusterHeader] = "kms://unknown.test";
  EXPECT_EQ(Call("GET", other_cluster).status, 401);

  // The right credential without a WebSocket handshake is no upgrade either.
  HttpAnswer plain = Call(
      "GET", {{"Authorization", std::string("Bearer ") + kToken}, {kRelayClusterHeader, kCluster}});
  EXPECT_EQ(plain.status, 400);
  EXPECT_NE(plain.body.find("WebSocket"), std::string::npos) << plain.body;
  // The scheme is case-insensitive (RFC 9110 11.1): past the credential, to the handshake.
  EXPECT_EQ(Call("GET", {{"Authorization", std::string("BEARER ") + kToken},
                         {kRelayClusterHeader, kCluster}})
                .status,
            400);
  EXPECT_EQ(Call("POST", {{"Authorization", std::string("Bearer ") + kToken}}).status, 405);
  EXPECT_EQ(relay_->Connected(kCluster), 0u);
  for (const std::string& line : Log()) EXPECT_EQ(line.find(kToken), std::string::npos) << line;
}

TEST_F(KmsRelayTest, AnUnknownOrUnconnectedClusterIsUnavailableAtOnce) {
  KmsRelayOptions options;
  options.lease_timeout = std::chrono::minutes(5);  // a wait would show as a hang
  StartRelay(options);
  for (const std::string& cluster : std::vector<std::string>{"kms://nowhere.test", kCluster}) {
    auto forward = ForwardWithin(cluster, "e30.e30.e30");
    ASSERT_FALSE(forward.ok()) << cluster;
    EXPECT_EQ(forward.error().code(), ErrorCode::kUnavailable);
    EXPECT_NE(forward.error().message().find("is not connected"), std::string::npos)
        << forward.error().message();
  }
}

TEST_F(KmsRelayTest, TheKmsGoingAwayFailsForwardsAtOnceAndItsReturnIsPickedUp) {
  KmsRelayOptions relay_options;
  relay_options.lease_timeout = std::chrono::minutes(5);
  StartRelay(relay_options);
  kms::RelayConnector* connector = Connect(ConnectorOptions(4));
  ASSERT_NE(connector, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return relay_->Connected(kCluster) == 4; }));
  auto alice = OpenSession("alice@acme.test");
  ASSERT_TRUE(alice);
  auto ping = alice->Call("update", "/ping");
  ASSERT_TRUE(ping.ok()) << ping.error().ToString();

  connector->Stop();
  EXPECT_EQ(connector->connected(), 0u);
  auto sealed = alice->Seal("update", "/ping");
  ASSERT_TRUE(sealed.ok());
  auto gone = ForwardWithin(kCluster, *sealed);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code(), ErrorCode::kUnavailable);
  // The relay lets go of every closed connection, so later requests fail without any wait.
  ASSERT_TRUE(WaitUntil([&] { return relay_->Connected(kCluster) == 0; }));
  auto none = ForwardWithin(kCluster, *sealed);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().message().find("is not connected"), std::string::npos);

  // The KMS comes back: the same channel works again (the KMS kept its ephemeral key).
  const std::uint64_t attempts = connector->connection_attempts();
  connector->Start();
  ASSERT_TRUE(WaitUntil([&] { return relay_->Connected(kCluster) == 4; }));
  EXPECT_GT(connector->connection_attempts(), attempts);
  auto again = alice->Call("update", "/ping");
  ASSERT_TRUE(again.ok()) << again.error().ToString();
  EXPECT_EQ((*again)->getValue<int>("status"), 200);
  EXPECT_TRUE(WaitUntil([&] { return Logged("kms: relay: stopped to https://"); }));
  EXPECT_TRUE(
      WaitUntil([&] { return Logged("core: kms://kms.acme.test: relay connection dropped"); }));
}

TEST_F(KmsRelayTest, EightThreadsAtOnceEachGetTheirOwnAnswers) {
  KmsRelayOptions relay_options;
  relay_options.lease_timeout = std::chrono::seconds(30);  // 8 callers share 3 connections
  StartRelay(relay_options);
  ASSERT_NE(Connect(ConnectorOptions(3)), nullptr);
  ASSERT_TRUE(WaitUntil([&] { return relay_->Connected(kCluster) == 3; }));
  constexpr int kThreads = 8;
  constexpr int kRounds = 12;
  std::atomic<int> good{0};
  std::mutex failures_mu;
  std::vector<std::string> failures;
  auto fail = [&](const std::string& what) {
    std::lock_guard lock(failures_mu);
    failures.push_back(what);
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string user = "user" + std::to_string(t) + "@acme.test";
      auto session = client::KmsSession::Open(*env_->info, "cli-" + std::to_string(t),
                                              env_->Bearer(user), ThroughRelay());
      if (!session.ok()) return fail(session.error().ToString());
      for (int round = 0; round < kRounds; ++round) {
        // Each answer is sealed under the thread's own channel and names its request: an answer
        // meant for another caller would not open, or would carry another requestId.
        Object count;
        count.set("count", 1);
        auto created = (*session)->Call("create", "/keys", count);
        if (!created.ok()) return fail(created.error().ToString());
        if ((*created)->getValue<int>("status") != 201) return fail("create /keys failed");
        auto key = (*created)->getArray("keys")->getObject(0);
        auto retrieved = (*session)->Call("retrieve", key->getValue<std::string>("uri"));
        if (!retrieved.ok()) return fail(retrieved.error().ToString());
        if ((*retrieved)->getObject("key")->getValue<std::string>("userId") != user ||
            (*retrieved)->getObject("key")->getObject("jwk")->getValue<std::string>("k") !=
                key->getObject("jwk")->getValue<std::string>("k")) {
          return fail("a retrieval answered with another key");
        }
        good.fetch_add(1);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_TRUE(failures.empty()) << failures.front();
  EXPECT_EQ(good.load(), kThreads * kRounds);
  EXPECT_EQ(relay_->Connected(kCluster), 3u);  // nothing was dropped on the way
}

TEST_F(KmsRelayTest, AnOversizeOrNonJoseMessageIsRefusedBeforeItIsSent) {
  ASSERT_NE(Connect(ConnectorOptions(1)), nullptr);
  ASSERT_TRUE(WaitUntil([&] { return relay_->Connected(kCluster) == 1; }));
  const std::string oversize(kMaxRelayMessageBytes + 1, 'A');
  for (const std::string& message :
       {oversize, std::string(), std::string("{\"json\":\"not jose\"}"), std::string("a b.c")}) {
    auto forward = relay_->Forward(kCluster, message);
    ASSERT_FALSE(forward.ok());
    EXPECT_EQ(forward.error().code(), ErrorCode::kInvalidArgument) << forward.error().message();
  }
  // The largest message travels (the KMS refuses it, but it is its answer that comes back).
  auto largest = relay_->Forward(kCluster, std::string(kMaxRelayMessageBytes, 'A'));
  ASSERT_TRUE(largest.ok()) << largest.error().ToString();
  EXPECT_GE(largest->http_status, 400);
  EXPECT_EQ(relay_->Connected(kCluster), 1u);
  auto alice = OpenSession("alice@acme.test");
  ASSERT_TRUE(alice);
}

TEST_F(KmsRelayTest, AnOversizeAnswerFrameDropsThatConnection) {
  std::unique_ptr<WebSocket> rogue = RawKms(kRogueCluster);
  ASSERT_TRUE(WaitUntil([&] { return relay_->Connected(kRogueCluster) == 1; }));
  std::thread kms([&] {
    try {
      Poco::Buffer<char> request(0);
      int flags = 0;
      rogue->receiveFrame(request, flags);
      const std::string answer(kMaxRelayAnswerFrameBytes + 1, 'x');
      rogue->sendFrame(answer.data(), static_cast<int>(answer.size()), WebSocket::FRAME_TEXT);
    } catch (const Poco::Exception&) {
      // The relay hangs up in the middle of the frame.
    }
  });
  auto forward = relay_->Forward(kRogueCluster, "e30.e30.e30");
  kms.join();
  ASSERT_FALSE(forward.ok());
  EXPECT_EQ(forward.error().code(), ErrorCode::kUnavailable);
  EXPECT_EQ(relay_->Connected(kRogueCluster), 0u);
}

// Issue 11: Poco accepted an unmasked frame and one with a reserved bit set from the attached KMS
// (a WebSocket client); RFC 6455 says the core fails such a connection with a close frame of
// status 1002. The answer in such a frame is not passed on.
TEST_F(KmsRelayTest, AnUnmaskedOrReservedBitAnswerIsClosedWithAProtocolError) {
  const std::map<std::string, std::string> headers = {
      {"Authorization", std::string("Bearer ") + kToken}, {kRelayClusterHeader, kRogueCluster}};
  struct Case {
    const char* what;
    std::uint8_t first_byte;
    bool masked;
    bool accepted;
  };
  for (const Case& c : {Case{"an unmasked answer", 0x81, false, false},
                        Case{"an answer with RSV1 set", 0xc1, true, false},
                        Case{"a proper answer", 0x81, true, true}}) {
    std::string error;
    auto rogue = RawWebSocket::Open(core_->port(), ClientContext(), kRelayPath, headers, &error);
    ASSERT_TRUE(rogue) << error;
    ASSERT_TRUE(WaitUntil([&] { return relay_->Connected(kRogueCluster) == 1; })) << c.what;
    std::thread kms([&] {
      std::optional<RawWebSocket::Frame> request = rogue->Read(kPatience);
      if (!request) return;
      Poco::JSON::Parser parser;
      const auto id = parser.parse(request->payload).extract<Object::Ptr>()->getValue<int>("id");
      const std::string answer = "{\"id\":" + std::to_string(id) +
                                 ",\"status\":200,\"contentType\":\"application/jose\","
                                 "\"body\":\"e30.e30.e30\"}";
      rogue->Send(RawWebSocket::MakeFrame(c.first_byte, answer, c.masked));
    });
    auto forward = relay_->Forward(kRogueCluster, "e30.e30.e30");
    kms.join();
    if (c.accepted) {
      ASSERT_TRUE(forward.ok()) << c.what << ": " << forward.error().ToString();
      EXPECT_EQ(forward->body, "e30.e30.e30");
      EXPECT_EQ(relay_->Connected(kRogueCluster), 1u);
      continue;
    }
    ASSERT_FALSE(forward.ok()) << c.what << " was passed on";
    EXPECT_EQ(forward.error().code(), ErrorCode::kUnavailable);
    EXPECT_NE(forward.error().message().find("protocol"), std::string::npos)
        << forward.error().message();
    std::optional<RawWebSocket::Frame> close = rogue->ReadClose(kPatience);
    ASSERT_TRUE(close) << c.what << ": no close frame";
    EXPECT_EQ(close->close_status(), 1002) << c.what;
    EXPECT_TRUE(rogue->EndsWithin(kPatience)) << c.what << ": the connection stayed open";
    EXPECT_EQ(relay_->Connected(kRogueCluster), 0u);
  }
}

TEST_F(KmsRelayTest, AConnectorAnswersAnAnswerTooLargeForTheRelayWithAnError) {
  kms::RelayConnectorOptions options = ConnectorOptions(1);
  options.cluster = kBigCluster;
  auto connector = kms::RelayConnector::New(options, [](std::string_view) {
    return kms::KmsReply{200, "application/jose", std::string(kMaxRelayAnswerBytes + 1, 'A')};
  });
  ASSERT_TRUE(connector.ok()) << connector.error().ToString();
  (*connector)->Start();
  ASSERT_TRUE(WaitUntil([&] { return relay_->Connected(kBigCluster) == 1; }));
  auto forward = relay_->Forward(kBigCluster, "e30.e30.e30");
  ASSERT_TRUE(forward.ok()) << forward.error().ToString();
  EXPECT_EQ(forward->http_status, 500);
  EXPECT_NE(forward->body.find("answer_size"), std::string::npos) << forward->body;
  EXPECT_EQ(relay_->Connected(kBigCluster), 1u);
  (*connector)->Stop();
}

TEST_F(KmsRelayTest, AConnectorHangsUpOnAnOversizeOrMalformedFrameAndDialsAgain) {
  core_->set_capture(true);  // the test plays cored
  ASSERT_NE(Connect(ConnectorOptions(1)), nullptr);
  for (const std::string& frame :
       {std::string("{\"id\":1,\"body\":\"") + std::string(kMaxRelayRequestFrameBytes, 'A') + "\"}",
        std::string("not json"), std::string("{\"id\":\"1\",\"body\":\"e30\"}")}) {
    std::unique_ptr<WebSocket> socket = core_->NextCaptured();
    ASSERT_NE(socket, nullptr) << "the connector did not dial (again)";
    bool hung_up = false;
    try {
      socket->sendFrame(frame.data(), static_cast<int>(frame.size()), WebSocket::FRAME_TEXT);
      socket->setReceiveTimeout(Poco::Timespan(30, 0));
      Poco::Buffer<char> buffer(0);
      int flags = 0;
      const int n = socket->receiveFrame(buffer, flags);
      hung_up = (n <= 0 && flags == 0) ||
                (flags & WebSocket::FRAME_OP_BITMASK) == WebSocket::FRAME_OP_CLOSE;
    } catch (const Poco::TimeoutException&) {
      hung_up = false;
    } catch (const Poco::Exception&) {
      hung_up = true;  // reset by the connector
    }
    EXPECT_TRUE(hung_up) << "the connector answered a frame it must refuse";
  }
}

TEST_F(KmsRelayTest, IdleConnectionsArePingedAndASilentOneIsDropped) {
  KmsRelayOptions options;
  options.ping_interval = std::chrono::seconds(1);
  // Long enough that a connector on a loaded machine (CI runs tests two at a time on two cores)
  // always answers in time; the silent KMS is dropped all the same, just later.
  options.answer_timeout = std::chrono::milliseconds(5000);
  StartRelay(options);
  kms::RelayConnector* connector = Connect(ConnectorOptions(2));
  ASSERT_NE(connector, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return relay_->Connected(kCluster) == 2; }));
  const std::uint64_t attempts = connector->connection_attempts();

  // A KMS that never reads: its pings go unanswered.
  std::unique_ptr<WebSocket> silent = RawKms(kRogueCluster);
  ASSERT_TRUE(WaitUntil([&] { return relay_->Connected(kRogueCluster) == 1; }));
  ASSERT_TRUE(WaitUntil([&] { return relay_->Connected(kRogueCluster) == 0; }));
  EXPECT_TRUE(WaitUntil([&] { return Logged("no answer to a ping"); }));

  // Meanwhile the connector answered every ping and kept its connections.
  EXPECT_EQ(relay_->Connected(kCluster), 2u);
  EXPECT_EQ(connector->connection_attempts(), attempts);
  auto alice = OpenSession("alice@acme.test");
  ASSERT_TRUE(alice);
}

TEST_F(KmsRelayTest, RelayTokenFilesMustBePrivateAndHoldAToken) {
  const fs::path dir = env_->dir / "tokens";
  fs::create_directories(dir);
  WriteFile(dir / "open", std::string(kToken) + "\n", 0644);
  WriteFile(dir / "empty", "\n", 0600);
  WriteFile(dir / "short", "abc\n", 0600);
  WriteFile(dir / "spaces", std::string(kToken) + " x\n", 0600);
  WriteFile(dir / "good", std::string(kToken) + "\n", 0600);
  for (const char* name : {"open", "empty", "short", "spaces", "missing"}) {
    auto digest = ReadRelayTokenDigest((dir / name).string());
    ASSERT_FALSE(digest.ok()) << name;
    EXPECT_EQ(digest.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(digest.error().message().find(kToken), std::string::npos);
    EXPECT_FALSE(kms::ReadRelayToken((dir / name).string()).ok()) << name;
  }
  EXPECT_NE(ReadRelayTokenDigest((dir / "open").string()).error().message().find("0600"),
            std::string::npos);
  EXPECT_NE(ReadRelayTokenDigest((dir / "empty").string()).error().message().find("empty"),
            std::string::npos);
  auto digest = ReadRelayTokenDigest((dir / "good").string());
  ASSERT_TRUE(digest.ok()) << digest.error().ToString();
  EXPECT_EQ(*digest, Sha256(kToken));
  auto token = kms::ReadRelayToken((dir / "good").string());
  ASSERT_TRUE(token.ok());
  EXPECT_EQ(token->as_string_view(), kToken);
}

TEST_F(KmsRelayTest, KmsdReadsItsRelaySection) {
  const std::string base =
      "[kms]\nhost = kms.acme.test\ndatabase = k.db\ntls_cert = c\ntls_key = k\n"
      "identity_chain = i\n[jwt]\nissuers = acme\n[jwt.acme]\nissuer = https://idp\norg = acme\n"
      "jwks = j\n";
  auto read = [&](const std::string& text) {
    std::istringstream in(text);
    Poco::AutoPtr<Poco::Util::IniFileConfiguration> config =
        new Poco::Util::IniFileConfiguration(in);
    return kms::ReadKmsdSettings(*config);
  };
  auto without = read(base);
  ASSERT_TRUE(without.ok()) << without.error().ToString();
  EXPECT_FALSE(without->relay.has_value());

  auto with = read(base +
                   "[relay]\nurl = https://core.acme.test:8443\nca_file = ca.pem\n"
                   "token_file = relay.token\nconnections = 8\n");
  ASSERT_TRUE(with.ok()) << with.error().ToString();
  ASSERT_TRUE(with->relay.has_value());
  EXPECT_EQ(with->relay->urls, std::vector<std::string>{"https://core.acme.test:8443"});
  EXPECT_EQ(with->relay->ca_file, "ca.pem");
  EXPECT_EQ(with->relay->token_file, "relay.token");
  EXPECT_EQ(with->relay->connections, 8u);
  EXPECT_EQ(with->relay->idle_timeout, std::chrono::seconds(45));

  // Several cored nodes, comma-separated.
  auto nodes = read(base +
                    "[relay]\nurl = https://core-a.acme.test:8443 , https://core-b.acme.test\n"
                    "ca_file = ca.pem\ntoken_file = relay.token\n");
  ASSERT_TRUE(nodes.ok()) << nodes.error().ToString();
  EXPECT_EQ(nodes->relay->urls, (std::vector<std::string>{"https://core-a.acme.test:8443",
                                                          "https://core-b.acme.test"}));

  const std::string good = "url = https://core\nca_file = ca.pem\ntoken_file = t\n";
  std::string seventeen = "url = https://core0";
  for (int node = 1; node < 17; ++node) seventeen += ", https://core" + std::to_string(node);
  for (const std::string& relay : std::vector<std::string>{
           "url = https://core\n",                                       // no ca_file, token_file
           "url = http://core\nca_file = ca.pem\ntoken_file = t\n",      // not TLS
           "url = https://core/v1\nca_file = ca.pem\ntoken_file = t\n",  // a path
           "url = https://a, http://b\nca_file = ca.pem\ntoken_file = t\n",   // one not TLS
           "url = https://a, https://a\nca_file = ca.pem\ntoken_file = t\n",  // twice
           "url = ,\nca_file = ca.pem\ntoken_file = t\n",                     // none
           seventeen + "\nca_file = ca.pem\ntoken_file = t\n",                // > 16
           good + "connections = 0\n", good + "connections = 65\n", good + "conections = 4\n",
           good + "idle_timeout_s = 1\n"}) {
    EXPECT_FALSE(read(base + "[relay]\n" + relay).ok()) << relay;
  }
}

}  // namespace
}  // namespace strongroom::core
