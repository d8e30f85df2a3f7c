// kmsd as a child process while SoftHSM2's token directory is taken away for three seconds and put
// back, under a light load of clients (a new channel and a new key every 100 ms), with one token
// and with a primary and a standby. While the token is away kmsd answers that its HSM is
// unavailable (503, hsm_unavailable, Retry-After), never that a message does not decrypt or a key
// does not exist, and /ops/health and /ops/metrics say the token is down. Once the directory is
// back kmsd finds the token again by itself: no restart, and no request needed; and the keys made
// while the primary was away are wrapped for it then, so the primary alone serves them.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Pipe.h>
#include <Poco/PipeStream.h>
#include <Poco/Process.h>
#include <Poco/StreamCopier.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <istream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <tuple>

#include "../support/softhsm_sandbox.h"
#include "../support/tool_steps.h"
#include "../support/wait_until.h"
#include "prometheus_text.h"
#include "strongroom/client/https_transport.h"
#include "strongroom/client/kms_context.h"
#include "strongroom/client/kms_session.h"
#include "strongroom/common/jwt.h"

namespace strongroom::kms {
namespace {

using client::HttpsTransport;
using client::KmsSession;
using Poco::JSON::Object;
using testing::kSoftHsmModule;
using testing::SoftHsmSandbox;
namespace fs = std::filesystem;

constexpr char kHost[] = "kms.acme.test";
constexpr char kOperatorToken[] =
    "9a1c2e4b6d8f0a2c4e6b8d0f1a3c5e7b9d1f3a5c7e9b1d3f5a7c9e1b3d5f7a9c";

Poco::Process::Env SoftHsmEnv() {
  return {{"SOFTHSM2_CONF", SoftHsmSandbox::Get().dir() + "/softhsm2.conf"}};
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

Object::Ptr ParseObject(const std::string& text) {
  Poco::JSON::Parser parser;
  return parser.parse(text).extract<Object::Ptr>();
}

bool WaitFor(const std::function<bool()>& condition) { return testing::WaitUntil(condition); }

// What the tests share: the CA, the TLS certificate (for both listeners), the IdP, the operator
// token. Each test has tokens of its own, since it takes one away.
class Environment {
 public:
  static Environment& Get() {
    static Environment environment;
    return environment;
  }
  ~Environment() {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
  const fs::path& dir() const { return dir_; }
  const std::string& error() const { return steps_.error(); }
  std::string Token(const std::string& user) const {
    const std::string key_text = ReadFile(dir_ / "idp-acme" / "signing-key.jwk");
    SecretBytes jwk({reinterpret_cast<const std::uint8_t*>(key_text.data()), key_text.size()});
    auto key = jose::EcKeyPair::FromPrivateJwk(jwk);
    const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
    auto token = MintJwt(*key, {"https://idp.acme.test", user, "kms", now - 5, 3600});
    return token.ok() ? *token : "";
  }

 private:
  Environment() {
    dir_ = fs::temp_directory_path() / ("sr-kmsd-hsm-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const std::string d = dir_.string();
    testing::MakeTestTls(steps_, d, "Strongroom kmsd HSM fault test CA");
    testing::InitTestIdps(steps_, d, IDP_PATH, {"acme"});
    std::ofstream(dir_ / "ops.token") << kOperatorToken << "\n";
    ::chmod((dir_ / "ops.token").c_str(), 0600);
  }
  fs::path dir_;
  testing::ToolSteps steps_;
};

// What one request of the load met.
struct Outcome {
  std::string what;  // "ecdhe" or "keys"
  int http_status = 0;
  std::string code;  // of a plain JSON error
  int retry_after = 0;
  int sealed = 0;  // the protocol status of a sealed answer
  std::chrono::steady_clock::time_point started;
};

std::string Describe(const std::vector<Outcome>& outcomes) {
  std::string out;
  for (const Outcome& o : outcomes) {
    out += o.what + ":" + std::to_string(o.http_status) + "/" + o.code + "/" +
           std::to_string(o.sealed) + " ";
  }
  return out;
}

class KmsdHsmFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    signal(SIGPIPE, SIG_IGN);
    ASSERT_TRUE(env().error().empty()) << env().error();
    dir_ = env().dir() / ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }

  void TearDown() override {
    StopLoad();
    if (!away_.empty() && fs::exists(away_)) fs::rename(away_, home_);
    if (kmsd_) {
      kill(static_cast<pid_t>(kmsd_->id()), SIGKILL);
      int status = 0;
      waitpid(static_cast<pid_t>(kmsd_->id()), &status, 0);
    }
    if (stderr_reader_.joinable()) stderr_reader_.join();
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  static Environment& env() { return Environment::Get(); }

  // Makes `tokens` tokens (each holds an identity key), their root keys for acme and the
  // identity chains, and starts kmsd with an operations listener.
  void Start(int tokens) {
    ASSERT_NO_FATAL_FAILURE(Prepare(tokens));
    ASSERT_NO_FATAL_FAILURE(Launch());
    ASSERT_EQ(Health()->getValue<std::string>("status"), "ok");
  }

  // The tokens, keys and chains of Start, and kmsd's configuration: `pin_files` replaces a token's
  // PIN file in kmsd's configuration (not kmsctl's) by index.
  void Prepare(int tokens, const std::map<int, std::string>& pin_files = {}) {
    const std::string d = env().dir().string();
    std::string hsm = "[hsm]\ntokens = primary";
    if (tokens > 1) hsm += ", standby";
    hsm += "\nnode_id = test\n";
    std::string kmsd_hsm = hsm + "probe_interval_ms = 200\n";
    for (int i = 0; i < tokens; ++i) {
      labels_.push_back(SoftHsmSandbox::Get().CreateToken(kSoftHsmModule, "fault"));
      const std::string section = std::string("[hsm.") + (i == 0 ? "primary" : "standby") + "]";
      hsm +=
          section + "\nuri = " + SoftHsmSandbox::Get().Uri(kSoftHsmModule, labels_.back()) + "\n";
      const std::string uri =
          pin_files.count(i) != 0
              ? SoftHsmSandbox::Get().Uri(kSoftHsmModule, labels_.back(), pin_files.at(i))
              : SoftHsmSandbox::Get().Uri(kSoftHsmModule, labels_.back());
      kmsd_hsm += section + "\nuri = " + uri + "\n";
    }
    const std::string hsm_ini = (dir_ / "hsm.ini").string();
    std::ofstream(hsm_ini) << hsm;
    testing::ToolSteps steps;
    steps.Run(KMSCTL_PATH, {"--config", hsm_ini, "hsm", "init-root", "--org", "acme"},
              SoftHsmEnv());
    steps.Run(KMSCTL_PATH, {"--config", hsm_ini, "hsm", "init-identity"}, SoftHsmEnv());
    steps.Run(
        KMSCTL_PATH,
        {"--config", hsm_ini, "hsm", "certify-identity", "--ca-cert", d + "/ca.pem", "--ca-key",
         d + "/ca.key", "--host", kHost, "--out", (dir_ / "identity.pem").string(), "--days", "2"},
        SoftHsmEnv());
    ASSERT_TRUE(steps.error().empty()) << steps.error();

    std::ofstream(dir_ / "kms.ini")
        << kmsd_hsm << "[kms]\nhost = " << kHost << "\ndatabase = " << (dir_ / "kms.db").string()
        << "\nlisten = 127.0.0.1:0\ntls_cert = " << d << "/tls.pem\ntls_key = " << d
        << "/tls.key\nidentity_chain = " << (dir_ / "identity.pem").string()
        << "\n[ops]\nlisten = 127.0.0.1:0\ntls_cert = " << d << "/tls.pem\ntls_key = " << d
        << "/tls.key\ntoken_file = " << d
        << "/ops.token\n[jwt]\nissuers = acme\nskew_s = 0\n[jwt.acme]\n"
        << "issuer = https://idp.acme.test\norg = acme\njwks = " << d << "/idp-acme/jwks.json\n";
  }

  // Starts kmsd on the configuration Prepare wrote and waits until both listeners serve.
  void Launch() {
    const fs::path ini = dir_ / "kms.ini";
    const fs::path port_file = dir_ / "port";
    fs::remove(port_file);
    {
      std::lock_guard lock(stderr_mutex_);
      stderr_.clear();
    }
    stderr_pipe_ = Poco::Pipe();  // a fresh one: launch closes the last one's write end
    kmsd_ = std::make_unique<Poco::ProcessHandle>(Poco::Process::launch(
        KMSD_PATH, {"--config", ini.string(), "--port-file", port_file.string()}, ".", nullptr,
        nullptr, &stderr_pipe_, SoftHsmEnv()));
    // kmsd names the operations listener's port on stderr; keep reading so it never blocks.
    ReadStderr();
    const std::string marker = "operations listener on https://127.0.0.1:";
    ASSERT_TRUE(WaitFor([&] {
      std::lock_guard lock(stderr_mutex_);
      return stderr_.find(marker) != std::string::npos || !Poco::Process::isRunning(*kmsd_);
    })) << Stderr();
    ASSERT_TRUE(Poco::Process::isRunning(*kmsd_)) << "kmsd exited at start: " << Stderr();
    {
      std::lock_guard lock(stderr_mutex_);
      ops_port_ = static_cast<std::uint16_t>(
          std::stoi(stderr_.substr(stderr_.find(marker) + marker.size())));
    }
    const std::string bound = ReadFile(port_file);
    ASSERT_FALSE(bound.empty());
    base_url_ = "https://127.0.0.1:" + bound.substr(0, bound.find('\n'));
    info_ = FetchInfo();
    ASSERT_TRUE(info_);
  }
  // Starts kmsd on the configuration Prepare wrote, expecting it to refuse: its exit status.
  int LaunchRefused() {
    {
      std::lock_guard lock(stderr_mutex_);
      stderr_.clear();
    }
    stderr_pipe_ = Poco::Pipe();
    kmsd_ = std::make_unique<Poco::ProcessHandle>(
        Poco::Process::launch(KMSD_PATH, {"--config", (dir_ / "kms.ini").string()}, ".", nullptr,
                              nullptr, &stderr_pipe_, SoftHsmEnv()));
    ReadStderr();
    const int status = kmsd_->wait();
    kmsd_.reset();
    stderr_reader_.join();
    return status;
  }
  // Stops kmsd as an operator does (SIGTERM: it finishes, signs a last audit checkpoint and
  // exits); its exit status.
  int Stop() {
    kill(static_cast<pid_t>(kmsd_->id()), SIGTERM);
    const int status = kmsd_->wait();
    kmsd_.reset();
    stderr_reader_.join();
    return status;
  }
  void ReadStderr() {
    stderr_reader_ = std::thread([this] {
      Poco::PipeInputStream in(stderr_pipe_);
      std::string line;
      while (std::getline(in, line)) {
        std::lock_guard lock(stderr_mutex_);
        stderr_ += line + "\n";
      }
    });
  }
  std::string Stderr() {
    std::lock_guard lock(stderr_mutex_);
    return stderr_;
  }
  // GET /kms/info now; null if it fails.
  std::unique_ptr<client::KmsInfo> FetchInfo() {
    auto https = Transport();
    if (!https) return nullptr;
    auto text = https->GetInfo();
    EXPECT_TRUE(text.ok()) << text.error().ToString();
    if (!text.ok()) return nullptr;
    auto info = client::ParseKmsInfo(*text);
    EXPECT_TRUE(info.ok()) << info.error().ToString();
    return info.ok() ? std::make_unique<client::KmsInfo>(std::move(info).value()) : nullptr;
  }
  // The SDK over HTTPS, as a new client makes it: /kms/info fetched now, checked against the CA.
  Result<std::unique_ptr<client::KmsContext>> NewContext(const std::string& user) {
    client::KmsContextOptions options;
    options.client_id = "sdk-" + user;
    options.kms_token = client::StaticToken(env().Token(user));
    options.trust = {std::string("kms://") + kHost, (env().dir() / "ca.pem").string()};
    return client::KmsContext::OverHttps(options, {base_url_, (env().dir() / "ca.pem").string()});
  }
  static std::string KeyJson(const client::KmsInfo& info) {
    auto json = info.rsa_public_key.ToJson();
    return json.ok() ? *json : "";
  }

  std::unique_ptr<HttpsTransport> Transport() {
    auto https = HttpsTransport::New({base_url_, (env().dir() / "ca.pem").string()});
    return https.ok() ? std::move(https).value() : nullptr;
  }

  // GET on the operations listener, with the operator token.
  std::pair<int, std::string> Ops(const std::string& path) {
    return Get(ops_port_, path, std::string("Bearer ") + kOperatorToken);
  }
  // GET /health on the protocol listener, as a load balancer asks it: no token. The status, the
  // body and Retry-After.
  std::tuple<int, std::string, std::string> PublicHealth() {
    const std::uint16_t port =
        static_cast<std::uint16_t>(std::stoi(base_url_.substr(base_url_.rfind(':') + 1)));
    std::string retry_after;
    auto [status, body] = Get(port, "/health", "", &retry_after);
    return {status, body, retry_after};
  }
  std::pair<int, std::string> Get(std::uint16_t port, const std::string& path,
                                  const std::string& authorization,
                                  std::string* retry_after = nullptr) {
    Poco::Net::Context::Params params;
    params.caLocation = (env().dir() / "ca.pem").string();
    params.verificationMode = Poco::Net::Context::VERIFY_STRICT;
    Poco::Net::Context::Ptr context(
        new Poco::Net::Context(Poco::Net::Context::TLS_CLIENT_USE, params));
    Poco::Net::HTTPSClientSession session("127.0.0.1", port, context);
    Poco::Net::HTTPRequest request("GET", path, Poco::Net::HTTPMessage::HTTP_1_1);
    if (!authorization.empty()) request.set("Authorization", authorization);
    session.sendRequest(request);
    Poco::Net::HTTPResponse response;
    std::string body;
    Poco::StreamCopier::copyToString(session.receiveResponse(response), body);
    if (retry_after != nullptr) *retry_after = response.get("Retry-After", "");
    return {static_cast<int>(response.getStatus()), body};
  }
  Object::Ptr Health() { return ParseObject(Ops("/ops/health").second); }
  std::string TokenState(const std::string& name) {
    Poco::JSON::Array::Ptr tokens = Health()->getArray("tokens");
    for (unsigned i = 0; i < tokens->size(); ++i) {
      if (tokens->getObject(i)->getValue<std::string>("name") == name) {
        return tokens->getObject(i)->getValue<std::string>("state");
      }
    }
    return "";
  }
  std::int64_t TokenLogins(const std::string& name) {
    Poco::JSON::Array::Ptr tokens = Health()->getArray("tokens");
    for (unsigned i = 0; i < tokens->size(); ++i) {
      if (tokens->getObject(i)->getValue<std::string>("name") == name) {
        return tokens->getObject(i)->getValue<std::int64_t>("loginAttempts");
      }
    }
    return -1;
  }
  std::int64_t TokenRepairs(const std::string& name) {
    Poco::JSON::Array::Ptr tokens = Health()->getArray("tokens");
    for (unsigned i = 0; i < tokens->size(); ++i) {
      if (tokens->getObject(i)->getValue<std::string>("name") == name) {
        return tokens->getObject(i)->getValue<std::int64_t>("repairs");
      }
    }
    return -1;
  }
  // Sessions leased from the token's pool so far: one more each probe round of a ready token.
  std::int64_t TokenLeases(const std::string& name) {
    Poco::JSON::Array::Ptr tokens = Health()->getArray("tokens");
    for (unsigned i = 0; i < tokens->size(); ++i) {
      if (tokens->getObject(i)->getValue<std::string>("name") == name) {
        return tokens->getObject(i)->getObject("pool")->getValue<std::int64_t>("acquired");
      }
    }
    return -1;
  }
  double TokenUp(const std::string& name) {
    auto samples = testing::ParsePrometheus(Ops("/ops/metrics").second);
    if (!samples.ok()) return -1;
    for (const auto& sample : *samples) {
      if (sample.name == "strongroom_hsm_token_up" && sample.labels.at("token") == name) {
        return sample.value;
      }
    }
    return -1;
  }
  // strongroom_hsm_token_state{token=name,state=state}: 1 for the token's state, 0 otherwise.
  double TokenStateMetric(const std::string& name, const std::string& state) {
    auto samples = testing::ParsePrometheus(Ops("/ops/metrics").second);
    if (!samples.ok()) return -1;
    for (const auto& sample : *samples) {
      if (sample.name == "strongroom_hsm_token_state" && sample.labels.at("token") == name &&
          sample.labels.at("state") == state) {
        return sample.value;
      }
    }
    return -1;
  }

  // The light load: every 100 ms a new channel, and a new key on a channel opened while all was
  // well, each over its own HTTPS connection to kmsd.
  void StartLoad() {
    load_https_ = Transport();
    ASSERT_TRUE(load_https_);
    auto session = KmsSession::Open(*info_, "load", env().Token("owner"),
                                    client::MakeKmsTransport(*load_https_));
    ASSERT_TRUE(session.ok()) << session.error().ToString();
    load_session_ = std::move(session).value();
    loader_ = std::thread([this] {
      auto https = Transport();
      for (int n = 0; !stop_.load(); ++n) {
        const auto started = std::chrono::steady_clock::now();
        Outcome ecdhe;
        ecdhe.what = "ecdhe";
        ecdhe.started = started;
        client::KmsTransport recording = [&](const std::string& message) {
          auto response = https->Post(message);
          if (response.ok()) {
            ecdhe.http_status = response->http_status;
            ecdhe.retry_after = response->retry_after_s;
            if (response->content_type == "application/json") {
              ecdhe.code = ParseObject(response->body)->getValue<std::string>("code");
            }
          }
          return response;
        };
        auto opened =
            KmsSession::Open(*info_, "load", env().Token("u" + std::to_string(n)), recording);
        if (opened.ok()) (void)(*opened)->Close();
        Record(ecdhe);

        Outcome keys;
        keys.what = "keys";
        keys.started = started;
        Object count;
        count.set("count", 1);
        auto sealed = load_session_->Seal("create", "/keys", count);
        auto response =
            sealed.ok() ? load_https_->Post(*sealed) : Result<client::KmsResponse>(sealed.error());
        if (response.ok()) {
          keys.http_status = response->http_status;
          keys.retry_after = response->retry_after_s;
          if (response->content_type == "application/json") {
            keys.code = ParseObject(response->body)->getValue<std::string>("code");
          } else if (response->http_status == 200) {
            auto answer = load_session_->OpenAnswer(*response, load_session_->last_request_id());
            if (answer.ok()) keys.sealed = (*answer)->getValue<int>("status");
          }
        }
        Record(keys);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
  }
  void StopLoad() {
    stop_ = true;
    if (loader_.joinable()) loader_.join();
  }
  void Record(const Outcome& outcome) {
    std::lock_guard lock(outcomes_mutex_);
    outcomes_.push_back(outcome);
  }
  // The outcomes of the rounds that began at `since` or later (a round under way when the state
  // changed may have met either state), and forgets all.
  std::vector<Outcome> TakeOutcomes(std::chrono::steady_clock::time_point since = {}) {
    std::lock_guard lock(outcomes_mutex_);
    std::vector<Outcome> out;
    for (Outcome& o : outcomes_) {
      if (o.started >= since) out.push_back(std::move(o));
    }
    outcomes_.clear();
    return out;
  }
  std::size_t Rounds(std::chrono::steady_clock::time_point since = {}) {
    std::lock_guard lock(outcomes_mutex_);
    std::size_t rounds = 0;
    for (const Outcome& o : outcomes_) rounds += o.what == "keys" && o.started >= since;
    return rounds;
  }

  void TakeAway(const std::string& label) {
    home_ = SoftHsmSandbox::Get().TokenDirectory(label);
    // Out of the token directory: SoftHSM2 takes any directory in it for a token.
    away_ = SoftHsmSandbox::Get().dir() + "/away-" + label;
    fs::rename(home_, away_);
  }
  void PutBack() { fs::rename(away_, home_); }

  fs::path dir_;
  std::vector<std::string> labels_;
  std::string home_, away_;
  std::unique_ptr<Poco::ProcessHandle> kmsd_;
  Poco::Pipe stderr_pipe_;
  std::thread stderr_reader_;
  std::mutex stderr_mutex_;
  std::string stderr_;
  std::uint16_t ops_port_ = 0;
  std::string base_url_;
  std::unique_ptr<client::KmsInfo> info_;
  std::unique_ptr<HttpsTransport> load_https_;
  std::unique_ptr<KmsSession> load_session_;
  std::thread loader_;
  std::atomic<bool> stop_{false};
  std::mutex outcomes_mutex_;
  std::vector<Outcome> outcomes_;
};

TEST_F(KmsdHsmFaultTest, TheOnlyTokenTakenAwayIsAnOutageAndKmsdRecoversWhenItIsBack) {
  Start(1);
  StartLoad();
  ASSERT_TRUE(WaitFor([&] { return Rounds() >= 3; }));
  for (const Outcome& o : TakeOutcomes()) {
    ASSERT_EQ(o.http_status, 200) << o.code;
  }

  TakeAway(labels_[0]);
  // Health tells the truth by itself (the probe), whatever the requests meet meanwhile.
  ASSERT_TRUE(WaitFor([&] { return TokenState("primary") == "unavailable"; }))
      << Ops("/ops/health").second;
  const auto [health_status, health_body] = Ops("/ops/health");
  EXPECT_EQ(health_status, 503) << health_body;
  EXPECT_EQ(ParseObject(health_body)->getValue<std::string>("status"), "unavailable");
  EXPECT_EQ(TokenUp("primary"), 0);
  // The protocol listener's health, which a load balancer asks, says so too.
  const auto [public_status, public_body, retry_after] = PublicHealth();
  EXPECT_EQ(public_status, 503) << public_body;
  EXPECT_EQ(public_body, R"({"database":true,"status":"unavailable","tokens":1,"tokensReady":0})");
  EXPECT_EQ(retry_after, "1");
  const auto known_away = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor([&] { return Rounds(known_away) >= 10; }));
  std::this_thread::sleep_for(std::chrono::seconds(1));  // away three seconds in all, at least
  const std::vector<Outcome> during = TakeOutcomes(known_away);
  ASSERT_FALSE(during.empty());
  for (const Outcome& o : during) {
    SCOPED_TRACE(Describe(during));
    if (o.what == "ecdhe" || o.http_status != 200) {
      // No channel without the static key; never "undecryptable", never a code outside the table.
      EXPECT_EQ(o.http_status, 503);
      EXPECT_EQ(o.code, "hsm_unavailable");
      EXPECT_GE(o.retry_after, 1);
    } else {
      EXPECT_EQ(o.sealed, 503);  // read on a channel whose key kmsd holds, not 404
    }
  }

  PutBack();
  ASSERT_TRUE(WaitFor([&] { return TokenState("primary") == "ready"; }))
      << Ops("/ops/health").second;
  EXPECT_EQ(Health()->getValue<std::string>("status"), "ok");
  EXPECT_EQ(std::get<0>(PublicHealth()), 200);
  EXPECT_EQ(std::get<1>(PublicHealth()),
            R"({"database":true,"status":"ok","tokens":1,"tokensReady":1})");
  EXPECT_EQ(TokenUp("primary"), 1);
  EXPECT_GE(TokenRepairs("primary"), 1);  // found again by a repair, not by a restart
  const auto back = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor([&] { return Rounds(back) >= 3; }));
  const std::vector<Outcome> after = TakeOutcomes(back);
  for (const Outcome& o : after) {
    SCOPED_TRACE(Describe(after));
    EXPECT_EQ(o.http_status, 200);
    if (o.what == "keys") {
      EXPECT_EQ(o.sealed, 201);
    }
  }
}

TEST_F(KmsdHsmFaultTest, WithTheStandbyKeysGoOnWhileThePrimaryIsAwayAndItComesBackByItself) {
  Start(2);
  // Each token holds an identity key; kmsd names them at start, and which one serves.
  EXPECT_NE(
      Stderr().find("identity: token 'primary' holds identity key kms (RSA-3072, thumbprint "),
      std::string::npos)
      << Stderr();
  EXPECT_NE(Stderr().find("), in service\n"), std::string::npos) << Stderr();
  EXPECT_NE(
      Stderr().find("identity: token 'standby' holds identity key kms (RSA-3072, thumbprint "),
      std::string::npos)
      << Stderr();
  StartLoad();
  ASSERT_TRUE(WaitFor([&] { return Rounds() >= 3; }));
  TakeOutcomes();

  TakeAway(labels_[0]);
  ASSERT_TRUE(WaitFor([&] { return TokenState("primary") == "unavailable"; }))
      << Ops("/ops/health").second;
  const auto [health_status, health_body] = Ops("/ops/health");
  EXPECT_EQ(health_status, 200) << health_body;  // the standby serves
  EXPECT_EQ(ParseObject(health_body)->getValue<std::string>("status"), "degraded");
  EXPECT_EQ(std::get<1>(PublicHealth()),
            R"({"database":true,"status":"degraded","tokens":2,"tokensReady":1})");
  EXPECT_EQ(TokenState("standby"), "ready");
  EXPECT_EQ(TokenUp("primary"), 0);
  EXPECT_EQ(TokenUp("standby"), 1);
  const auto known_away = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor([&] { return Rounds(known_away) >= 10; }));
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const std::vector<Outcome> during = TakeOutcomes(known_away);
  ASSERT_FALSE(during.empty());
  for (const Outcome& o : during) {
    SCOPED_TRACE(Describe(during));
    if (o.what == "ecdhe") {
      // Sealed to the primary's identity, fetched before: fetch the one in service (below).
      EXPECT_EQ(o.http_status, 503);
      EXPECT_EQ(o.code, "identity_unavailable");
      EXPECT_GE(o.retry_after, 1);
    } else {
      EXPECT_EQ(o.http_status, 200);  // the standby opens the channel and wraps the new key
      EXPECT_EQ(o.sealed, 201);
    }
  }

  PutBack();
  ASSERT_TRUE(WaitFor([&] { return TokenState("primary") == "ready"; }))
      << Ops("/ops/health").second;
  // "ok" once the keys made meanwhile are wrapped for the primary too (the next test follows that
  // closely); until then a key may hang on the standby alone, and health says "degraded".
  ASSERT_TRUE(WaitFor([&] { return Health()->getValue<std::string>("status") == "ok"; }))
      << Ops("/ops/health").second;
  EXPECT_EQ(TokenUp("primary"), 1);
  EXPECT_GE(TokenRepairs("primary"), 1);  // found again by a repair, not by a restart
  const auto back = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor([&] { return Rounds(back) >= 3; }));
  const std::vector<Outcome> after = TakeOutcomes(back);
  for (const Outcome& o : after) {
    SCOPED_TRACE(Describe(after));
    EXPECT_EQ(o.http_status, 200);
  }
}

// Keys made while the primary is away are wrapped by the standby alone: /ops/health says degraded
// and strongroom_keys_missing_wraps counts them, and once the primary is back kmsd wraps them for
// it by itself (no operator, no restart). Then the standby goes, and the primary alone serves
// every one of them.
TEST_F(KmsdHsmFaultTest, KeysMadeWhileThePrimaryIsAwayAreWrappedForItOnceItIsBack) {
  Start(2);
  auto https = Transport();
  ASSERT_TRUE(https);
  auto session =
      KmsSession::Open(*info_, "keys", env().Token("owner"), client::MakeKmsTransport(*https));
  ASSERT_TRUE(session.ok()) << session.error().ToString();
  auto missing = [&](const std::string& token) -> double {
    auto samples = testing::ParsePrometheus(Ops("/ops/metrics").second);
    if (!samples.ok()) return -1;
    for (const auto& sample : *samples) {
      if (sample.name == "strongroom_keys_missing_wraps" && sample.labels.at("token") == token) {
        return sample.value;
      }
    }
    return -1;
  };

  TakeAway(labels_[0]);
  ASSERT_TRUE(WaitFor([&] { return TokenState("primary") == "unavailable"; }))
      << Ops("/ops/health").second;
  Object count;
  count.set("count", 50);
  auto created = (*session)->Call("create", "/keys", count);
  ASSERT_TRUE(created.ok()) << created.error().ToString();
  ASSERT_EQ((*created)->getValue<int>("status"), 201);
  std::vector<std::pair<std::string, std::string>> keys;  // uri, material (base64url)
  for (unsigned i = 0; i < (*created)->getArray("keys")->size(); ++i) {
    Object::Ptr key = (*created)->getArray("keys")->getObject(i);
    keys.emplace_back(key->getValue<std::string>("uri"),
                      key->getObject("jwk")->getValue<std::string>("k"));
  }
  ASSERT_EQ(keys.size(), 50u);
  ASSERT_TRUE(WaitFor([&] { return missing("primary") == 50; })) << Ops("/ops/metrics").second;
  Object::Ptr health = Health();
  EXPECT_EQ(health->getValue<std::string>("status"), "degraded");
  EXPECT_EQ(health->getObject("wraps")->getObject("missing")->getValue<int>("primary"), 50);

  PutBack();
  auto reconciled = [&] {
    const auto [status, body] = Ops("/ops/reconcile");
    return status == 200 && ParseObject(body)->getValue<std::string>("state") == "done";
  };
  ASSERT_TRUE(WaitFor(reconciled)) << Ops("/ops/reconcile").second;
  Object::Ptr job = ParseObject(Ops("/ops/reconcile").second);
  EXPECT_EQ(job->getValue<std::string>("startedBy"), "kms");
  EXPECT_EQ(job->getValue<int>("done"), 50);
  EXPECT_EQ(missing("primary"), 0);
  EXPECT_EQ(missing("standby"), 0);
  EXPECT_EQ(Health()->getValue<std::string>("status"), "ok");
  const std::vector<std::string> ops = {
      "--url",        "https://127.0.0.1:" + std::to_string(ops_port_),
      "--ca",         (env().dir() / "ca.pem").string(),
      "--token-file", (env().dir() / "ops.token").string()};
  auto kmsctl = [&](std::vector<std::string> args) {
    args.insert(args.end(), ops.begin(), ops.end());
    return testing::Tool(KMSCTL_PATH, args);
  };
  const testing::ToolRun shown = kmsctl({"ops", "reconcile"});
  EXPECT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_NE(shown.out.find(": done, 50/50 wraps added (100.0%), 0 failed"), std::string::npos)
      << shown.out;

  TakeAway(labels_[1]);
  ASSERT_TRUE(WaitFor([&] { return TokenState("standby") == "unavailable"; }))
      << Ops("/ops/health").second;
  for (const auto& [uri, material] : keys) {
    auto retrieved = (*session)->Call("retrieve", uri);
    ASSERT_TRUE(retrieved.ok()) << uri << ": " << retrieved.error().ToString();
    ASSERT_EQ((*retrieved)->getValue<int>("status"), 200) << uri;
    EXPECT_EQ((*retrieved)->getObject("key")->getObject("jwk")->getValue<std::string>("k"),
              material);
  }

  // The other way round: a key made now lacks the standby, and a job started for it waits for the
  // standby rather than ending done.
  count.set("count", 1);
  ASSERT_EQ((*(*session)->Call("create", "/keys", count))->getValue<int>("status"), 201);
  const testing::ToolRun waiting = kmsctl({"ops", "reconcile", "start", "--wait"});
  EXPECT_EQ(waiting.exit_code, 69) << waiting.out << waiting.err;
  EXPECT_NE(waiting.out.find(": waiting, "), std::string::npos) << waiting.out;
  EXPECT_NE(waiting.err.find("waits for token(s) standby"), std::string::npos) << waiting.err;
  EXPECT_EQ(Health()->getValue<std::string>("status"), "degraded");
}

// Issue 16: a new client (the SDK over HTTPS, /kms/info fetched now) opens a channel and reads its
// keys while the primary's token directory is away: kmsd publishes the standby's identity,
// certified for the same host. A context made before, holding the primary's identity, is refused
// the handshake as identity_unavailable, fetches /kms/info again and reads too. (Before, every new
// channel was 503 hsm_unavailable until the primary was back: `strongroom read` exited 5.)
TEST_F(KmsdHsmFaultTest, ANewClientOpensAChannelAndReadsItsKeysWhileThePrimaryIsAway) {
  Start(2);
  auto owner = NewContext("owner");
  ASSERT_TRUE(owner.ok()) << owner.error().ToString();
  auto keys = (*owner)->CreateKeys(2);
  ASSERT_TRUE(keys.ok()) << keys.error().ToString();
  auto resource = (*owner)->CreateResource({"reader"}, {(*keys)[0].uri, (*keys)[1].uri});
  ASSERT_TRUE(resource.ok()) << resource.error().ToString();
  auto before = NewContext("reader");  // the primary's identity, no channel yet
  ASSERT_TRUE(before.ok()) << before.error().ToString();

  TakeAway(labels_[0]);
  ASSERT_TRUE(WaitFor([&] { return TokenState("primary") == "unavailable"; }))
      << Ops("/ops/health").second;
  auto fresh = NewContext("reader");
  ASSERT_TRUE(fresh.ok()) << fresh.error().ToString();
  EXPECT_NE(KeyJson((*fresh)->info()), KeyJson(*info_));  // the standby's identity
  auto read = (*fresh)->RetrieveResourceKeys(resource->uri, {});
  ASSERT_TRUE(read.ok()) << read.error().ToString();
  ASSERT_EQ(read->size(), 2u);
  auto read_before = (*before)->RetrieveResourceKeys(resource->uri, {});
  ASSERT_TRUE(read_before.ok()) << read_before.error().ToString();
  EXPECT_EQ(read_before->size(), 2u);
  EXPECT_EQ((*before)->stats().identity_refreshes, 1);
  EXPECT_EQ(KeyJson((*before)->info()), KeyJson((*fresh)->info()));

  PutBack();
  ASSERT_TRUE(WaitFor([&] { return TokenState("primary") == "ready"; }))
      << Ops("/ops/health").second;
  auto now = FetchInfo();
  ASSERT_TRUE(now);
  EXPECT_EQ(KeyJson(*now), KeyJson(*info_));  // the first token's identity serves again
  // Clients holding the standby's keep opening channels with it.
  (*fresh)->Renegotiate();
  EXPECT_TRUE((*fresh)->Ping().ok());
}

// kmsd starts without a token whose directory is missing, serves from the other (health
// degraded, the token unavailable), and opens it by itself once it is back. (Before, kmsd exited
// 78 at start.)
TEST_F(KmsdHsmFaultTest, KmsdStartsWithThePrimaryMissingAndOpensItOnceItIsBack) {
  ASSERT_NO_FATAL_FAILURE(Prepare(2));
  TakeAway(labels_[0]);
  ASSERT_NO_FATAL_FAILURE(Launch());
  const auto [health_status, health_body] = Ops("/ops/health");
  EXPECT_EQ(health_status, 200) << health_body;
  EXPECT_EQ(ParseObject(health_body)->getValue<std::string>("status"), "degraded");
  EXPECT_EQ(TokenState("primary"), "unavailable");
  EXPECT_EQ(TokenState("standby"), "ready");
  EXPECT_EQ(TokenUp("primary"), 0);
  EXPECT_NE(Stderr().find("token 'primary' is unavailable; starting without it"), std::string::npos)
      << Stderr();
  // Each token's identity, or why it has none yet.
  EXPECT_NE(
      Stderr().find("identity: token 'standby' holds identity key kms (RSA-3072, thumbprint "),
      std::string::npos)
      << Stderr();
  EXPECT_NE(Stderr().find("), in service\n"), std::string::npos) << Stderr();
  EXPECT_NE(Stderr().find("identity: token 'primary' is unavailable ("), std::string::npos)
      << Stderr();
  EXPECT_NE(Stderr().find("; read when the token is back\n"), std::string::npos) << Stderr();

  auto client = NewContext("owner");  // the standby's identity
  ASSERT_TRUE(client.ok()) << client.error().ToString();
  auto keys = (*client)->CreateKeys(1);
  ASSERT_TRUE(keys.ok()) << keys.error().ToString();
  auto resource = (*client)->CreateResource({}, {(*keys)[0].uri});
  ASSERT_TRUE(resource.ok()) << resource.error().ToString();
  auto read = (*client)->RetrieveResourceKeys(resource->uri, {});
  ASSERT_TRUE(read.ok()) << read.error().ToString();
  ASSERT_EQ(read->size(), 1u);
  EXPECT_TRUE(ConstantTimeEquals(read->front().key.view(), (*keys)[0].key.view()));

  PutBack();
  ASSERT_TRUE(WaitFor([&] { return TokenState("primary") == "ready"; }))
      << Ops("/ops/health").second;
  // ok once the keys and channel keys made without it are wrapped for it too (reconciliation).
  ASSERT_TRUE(WaitFor([&] { return Health()->getValue<std::string>("status") == "ok"; }))
      << Ops("/ops/health").second;
  EXPECT_EQ(TokenUp("primary"), 1);
  EXPECT_GE(TokenRepairs("primary"), 1);
  auto now = FetchInfo();
  ASSERT_TRUE(now);
  EXPECT_NE(KeyJson(*now), KeyJson(*info_));  // the primary's identity, now that it is open
  auto later = NewContext("owner");
  ASSERT_TRUE(later.ok()) << later.error().ToString();
  auto again = (*later)->RetrieveResourceKeys(resource->uri, {});
  ASSERT_TRUE(again.ok()) << again.error().ToString();
  EXPECT_EQ(again->size(), 1u);
}

TEST_F(KmsdHsmFaultTest, KmsdStartsWithTheStandbyMissingAndOpensItOnceItIsBack) {
  ASSERT_NO_FATAL_FAILURE(Prepare(2));
  TakeAway(labels_[1]);
  ASSERT_NO_FATAL_FAILURE(Launch());
  const auto [health_status, health_body] = Ops("/ops/health");
  EXPECT_EQ(health_status, 200) << health_body;
  EXPECT_EQ(ParseObject(health_body)->getValue<std::string>("status"), "degraded");
  EXPECT_EQ(TokenState("primary"), "ready");
  EXPECT_EQ(TokenState("standby"), "unavailable");
  EXPECT_EQ(TokenUp("standby"), 0);

  auto client = NewContext("owner");
  ASSERT_TRUE(client.ok()) << client.error().ToString();
  auto keys = (*client)->CreateKeys(1);
  ASSERT_TRUE(keys.ok()) << keys.error().ToString();

  PutBack();
  ASSERT_TRUE(WaitFor([&] { return TokenState("standby") == "ready"; }))
      << Ops("/ops/health").second;
  // ok once the keys and channel keys made without it are wrapped for it too (reconciliation).
  ASSERT_TRUE(WaitFor([&] { return Health()->getValue<std::string>("status") == "ok"; }))
      << Ops("/ops/health").second;
  EXPECT_EQ(TokenUp("standby"), 1);
  auto now = FetchInfo();
  ASSERT_TRUE(now);
  EXPECT_EQ(KeyJson(*now), KeyJson(*info_));  // the primary's identity throughout
  EXPECT_TRUE((*client)->CreateKeys(1).ok());
}

// A wrong PIN in one token's PIN file: kmsd says so at start, starts on the other token, shows
// the token login-refused, and never logs in to it again, not even once the PIN file is right.
// (Before, kmsd exited 77.)
TEST_F(KmsdHsmFaultTest, AWrongPinRefusesThatTokenForGoodAndKmsdStartsOnTheOther) {
  const std::string pin_file = SoftHsmSandbox::Get().WriteFile("kmsd-wrong-primary.pin", "0000\n");
  ASSERT_NO_FATAL_FAILURE(Prepare(2, {{0, pin_file}}));
  ASSERT_NO_FATAL_FAILURE(Launch());
  const std::string log = Stderr();
  EXPECT_NE(log.find("token 'primary' is refused and never logged in again"), std::string::npos)
      << log;
  EXPECT_NE(log.find("wrong PIN"), std::string::npos) << log;
  EXPECT_EQ(log.find("0000\n"), std::string::npos);
  EXPECT_EQ(TokenState("primary"), "login-refused");
  EXPECT_EQ(TokenState("standby"), "ready");
  EXPECT_EQ(Health()->getValue<std::string>("status"), "degraded");
  EXPECT_EQ(TokenLogins("primary"), 1);
  EXPECT_EQ(TokenStateMetric("primary", "login-refused"), 1);
  EXPECT_EQ(TokenUp("primary"), 0);
  EXPECT_EQ(TokenUp("standby"), 1);

  auto client = NewContext("owner");  // the standby's identity
  ASSERT_TRUE(client.ok()) << client.error().ToString();
  EXPECT_TRUE((*client)->CreateKeys(1).ok());

  // The right PIN now in the file: still refused, still one C_Login, however many probe rounds
  // pass (ten here: each leases one of the standby's sessions). Only a restart reads the PIN again.
  std::ofstream(pin_file, std::ios::trunc) << testing::kUserPin << "\n";
  const std::int64_t leases = TokenLeases("standby");
  ASSERT_TRUE(WaitFor([&] { return TokenLeases("standby") >= leases + 10; }));
  EXPECT_EQ(TokenState("primary"), "login-refused");
  EXPECT_EQ(TokenLogins("primary"), 1);
  EXPECT_EQ(TokenRepairs("primary"), 0);
}

// kmsd refuses to start only when an organization it serves has no token ready, with an exit
// status that says why: 77 when every token's PIN was refused, 69 when a token is missing or
// failing (and none is ready); or when no token has a usable identity (78): here the standby is
// ready but the identity chain file certifies only the primary's key, and the primary is missing.
TEST_F(KmsdHsmFaultTest, KmsdRefusesToStartOnlyWithoutAReadyTokenOrAUsableIdentity) {
  const std::string pin_file = SoftHsmSandbox::Get().WriteFile("kmsd-wrong-both.pin", "0000\n");
  ASSERT_NO_FATAL_FAILURE(Prepare(2, {{0, pin_file}, {1, pin_file}}));
  EXPECT_EQ(LaunchRefused(), 77) << Stderr();
  EXPECT_NE(Stderr().find("no HSM token is ready for organization acme"), std::string::npos)
      << Stderr();
  EXPECT_NE(Stderr().find("token 'standby': wrong PIN"), std::string::npos) << Stderr();
  EXPECT_EQ(Stderr().find("serving"), std::string::npos) << Stderr();
  labels_.clear();

  ASSERT_NO_FATAL_FAILURE(Prepare(2, {{1, pin_file}}));
  TakeAway(labels_[0]);
  EXPECT_EQ(LaunchRefused(), 69) << Stderr();
  EXPECT_NE(Stderr().find("no HSM token is ready for organization acme"), std::string::npos)
      << Stderr();
  EXPECT_NE(Stderr().find("token 'primary' could not be opened at start"), std::string::npos)
      << Stderr();
  EXPECT_NE(Stderr().find("token 'standby': wrong PIN"), std::string::npos) << Stderr();
  PutBack();
  labels_.clear();

  ASSERT_NO_FATAL_FAILURE(Prepare(2));
  const std::string d = env().dir().string();
  fs::remove(dir_ / "identity.pem");
  testing::ToolSteps steps;
  steps.Run(KMSCTL_PATH,
            {"--config", (dir_ / "hsm.ini").string(), "hsm", "certify-identity", "--ca-cert",
             d + "/ca.pem", "--ca-key", d + "/ca.key", "--host", kHost, "--out",
             (dir_ / "identity.pem").string(), "--days", "2", "--token", "primary"},
            SoftHsmEnv());
  ASSERT_TRUE(steps.error().empty()) << steps.error();
  TakeAway(labels_[0]);
  EXPECT_EQ(LaunchRefused(), 78) << Stderr();
  EXPECT_NE(Stderr().find("no token has a usable identity key now"), std::string::npos) << Stderr();
  EXPECT_NE(Stderr().find("token 'standby': no chain of the identity chain file certifies its "
                          "identity key"),
            std::string::npos)
      << Stderr();
  PutBack();

  // A chain file that does not verify stops kmsd whatever its tokens (78).
  const std::string chains = ReadFile(dir_ / "identity.pem");
  std::ofstream(dir_ / "identity.pem", std::ios::trunc)
      << ReadFile(env().dir() / "ca.pem") << chains;
  EXPECT_EQ(LaunchRefused(), 78) << Stderr();
  EXPECT_NE(Stderr().find("identity.pem: the identity chain starts with a CA certificate"),
            std::string::npos)
      << Stderr();
}

// Audit checkpoints are signed by the identity in service: the primary's while it is up, the
// standby's while kmsd runs without it. `kmsctl audit verify` reads every token's identity key and
// checks each checkpoint against the key it names; with a token down it cannot check that token's
// checkpoints, and says so (69) rather than calling the log intact or tampered.
TEST_F(KmsdHsmFaultTest, AuditVerifyChecksCheckpointsSignedByEitherTokensIdentity) {
  Start(2);
  auto owner = NewContext("owner");
  ASSERT_TRUE(owner.ok()) << owner.error().ToString();
  auto keys = (*owner)->CreateKeys(2);
  ASSERT_TRUE(keys.ok()) << keys.error().ToString();
  auto resource = (*owner)->CreateResource({}, {(*keys)[0].uri, (*keys)[1].uri});
  ASSERT_TRUE(resource.ok()) << resource.error().ToString();
  ASSERT_TRUE((*owner)->RetrieveResourceKeys(resource->uri, {}).ok());
  EXPECT_EQ(Stop(), 0) << Stderr();  // a checkpoint signed by the primary's identity

  TakeAway(labels_[0]);
  ASSERT_NO_FATAL_FAILURE(Launch());
  auto reader = NewContext("owner");  // the standby's identity
  ASSERT_TRUE(reader.ok()) << reader.error().ToString();
  ASSERT_TRUE((*reader)->RetrieveResourceKeys(resource->uri, {}).ok());
  EXPECT_EQ(Stop(), 0) << Stderr();  // one signed by the standby's

  const std::string ini = (dir_ / "kms.ini").string();
  const testing::ToolRun away =
      testing::Tool(KMSCTL_PATH, {"--config", ini, "audit", "verify"}, SoftHsmEnv());
  EXPECT_EQ(away.exit_code, 69) << away.out << away.err;
  EXPECT_NE(away.err.find("1 signed checkpoint(s) name an identity key kmsctl could not read"),
            std::string::npos)
      << away.err;
  EXPECT_NE(away.err.find("token 'primary'"), std::string::npos) << away.err;

  PutBack();
  const testing::ToolRun verified =
      testing::Tool(KMSCTL_PATH, {"--config", ini, "audit", "verify"}, SoftHsmEnv());
  ASSERT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  EXPECT_NE(verified.out.find("audit log intact: "), std::string::npos) << verified.out;
  EXPECT_NE(verified.out.find("identity keys in tokens 'primary', 'standby'"), std::string::npos)
      << verified.out;
  EXPECT_NE(verified.out.find("(2 checkpoint(s) checked)"), std::string::npos) << verified.out;
  EXPECT_NE(verified.out.find("unsigned: 0 records"), std::string::npos) << verified.out;
}

}  // namespace
}  // namespace strongroom::kms
