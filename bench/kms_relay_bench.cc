// What the relay through the core costs: one sealed KMS round trip (update /ping, and a sealed key
// retrieval) sent by a client over HTTPS directly to the KMS's listener (KmsServer), against the
// same message sent over HTTPS to a core-like listener that relays it (POST /kms/messages ->
// KmsRelay::Forward -> WebSocket -> RelayConnector -> KmsService::Handle), in the same process and
// the same run. The bar: the relay adds under 1 ms at the median.
//
// BM_Paired* alternate a direct and a relayed round trip in every iteration (this VM drifts by
// 10-30% from second to second, see docs/benchmarks.md) and report both medians and the median
// of the per-pair difference (added_p50_us). The others report the median and the 99th
// percentile of their round trips (p50_us, p99_us).
// BM_RelayForwardOnly calls Forward in process (no client HTTPS hop): the relay leg alone.
// Hermetic: SoftHSM2 token, SQLite database, TLS certificates (openssl) and relay token in a
// temporary directory of their own; everything on 127.0.0.1 with ephemeral ports.
//
//   build-release/bench/kms_relay_bench --benchmark_min_time=3
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/SecureServerSocket.h>
#include <Poco/ThreadPool.h>
#include <benchmark/benchmark.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "softhsm_token_dir.h"
#include "strongroom/client/https_transport.h"
#include "strongroom/client/kms_session.h"
#include "strongroom/common/database.h"
#include "strongroom/common/jwt.h"
#include "strongroom/common/tls.h"
#include "strongroom/core/kms_relay.h"
#include "strongroom/hsm/key_vault.h"
#include "strongroom/kms/key_cache.h"
#include "strongroom/kms/kms_server.h"
#include "strongroom/kms/kms_service.h"
#include "strongroom/kms/kms_store.h"
#include "strongroom/kms/relay_connector.h"

namespace strongroom::bench {
namespace {

constexpr char kIssuer[] = "https://idp.acme.example";
constexpr char kCluster[] = "kms://kms.acme.example";
constexpr char kRelayToken[] = "5f0d3b9a7c1e4f2a8b6d0c3e5a7f9b1d2c4e6a8f0b3d5c7e9a1f2b4d6c8e0a3f";
constexpr std::size_t kRelayConnections = 4;

void Die(const std::string& what) {
  std::fprintf(stderr, "kms_relay_bench: %s\n", what.c_str());
  std::exit(1);
}

template <typename T>
T Must(Result<T> result, const char* what) {
  if (!result.ok()) Die(std::string(what) + ": " + result.error().ToString());
  return std::move(result).value();
}

// A stand-in for cored's two relay routes (its real server is core_server.cc): GET /relay/kms
// for the KMS, POST /kms/messages?cluster=... for clients.
class CoreHandler : public Poco::Net::HTTPRequestHandler {
 public:
  explicit CoreHandler(core::KmsRelay& relay) : relay_(relay) {}
  void handleRequest(Poco::Net::HTTPServerRequest& request,
                     Poco::Net::HTTPServerResponse& response) override {
    const std::string path = request.getURI().substr(0, request.getURI().find('?'));
    if (path == core::kRelayPath) {
      (void)core::HandleRelayUpgrade(relay_, request, response);
      return;
    }
    std::string body(
        static_cast<std::size_t>(std::max<Poco::Int64>(
            0, std::min<Poco::Int64>(request.getContentLength64(), core::kMaxRelayMessageBytes))),
        '\0');
    request.stream().read(body.data(), static_cast<std::streamsize>(body.size()));
    auto answer = relay_.Forward(kCluster, body);
    if (!answer.ok()) {
      response.setStatusAndReason(Poco::Net::HTTPResponse::HTTP_SERVICE_UNAVAILABLE);
      response.setContentType("application/json");
      response.sendBuffer("{}", 2);
      return;
    }
    response.setStatusAndReason(
        static_cast<Poco::Net::HTTPResponse::HTTPStatus>(answer->http_status));
    response.setContentType(answer->content_type);
    response.sendBuffer(answer->body.data(), answer->body.size());
  }

 private:
  core::KmsRelay& relay_;
};

class CoreFactory : public Poco::Net::HTTPRequestHandlerFactory {
 public:
  explicit CoreFactory(core::KmsRelay& relay) : relay_(relay) {}
  Poco::Net::HTTPRequestHandler* createRequestHandler(
      const Poco::Net::HTTPServerRequest&) override {
    return new CoreHandler(relay_);
  }

 private:
  core::KmsRelay& relay_;
};

struct Fixture {
  std::unique_ptr<SoftHsmTokenDir> dir;
  std::unique_ptr<hsm::KeyVault> vault;
  std::unique_ptr<Database> db;
  std::unique_ptr<jose::EcKeyPair> issuer;
  std::unique_ptr<kms::KeyCache> cache;
  std::unique_ptr<kms::KmsService> service;
  std::unique_ptr<client::KmsInfo> info;
  std::unique_ptr<kms::KmsServer> kms_server;  // the direct path
  std::unique_ptr<core::KmsRelay> relay;
  std::unique_ptr<Poco::ThreadPool> core_pool;
  std::unique_ptr<Poco::Net::HTTPServer> core_server;  // the relayed path
  std::uint16_t core_port = 0;
  std::unique_ptr<kms::RelayConnector> connector;
};

Fixture* fixture = nullptr;

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream(path) << content;
  ::chmod(path.c_str(), 0600);
}

void SetUp() {
  signal(SIGPIPE, SIG_IGN);
  fixture = new Fixture;
  fixture->dir = Must(SoftHsmTokenDir::Create(), "token dir");
  const std::string d = fixture->dir->dir();
  auto module = Must(hsm::Module::Load(kSoftHsmModule), "module");
  if (Status s = fixture->dir->InitializeToken(*module, "srrelay"); !s.ok()) {
    Die(s.error().ToString());
  }
  hsm::TokenConfig token;
  token.name = "primary";
  token.uri = fixture->dir->Uri("srrelay");
  fixture->vault = Must(hsm::KeyVault::Open({{token}}), "vault");
  Must(fixture->vault->InitRoot("acme"), "root key");
  Must(fixture->vault->tokens()[0]->CreateIdentityKey("kms", 2048), "identity key");
  fixture->db = Must(Database::OpenSqlite(d + "/kms.db", kms::KmsStore::Migrations()), "database");
  fixture->issuer = std::make_unique<jose::EcKeyPair>(Must(jose::EcKeyPair::Generate("i"), "key"));
  TrustedIssuer issuer{kIssuer, "acme", {Must(fixture->issuer->PublicKey(), "issuer key")}};
  JwtVerifier verifier =
      Must(JwtVerifier::New({issuer}, "kms", std::chrono::seconds(30)), "verifier");
  fixture->cache = std::make_unique<kms::KeyCache>(100000, std::chrono::minutes(10));
  kms::KmsServiceConfig config;
  config.host = "kms.acme.example";
  kms::KmsServiceHooks hooks;
  hooks.key_cache = fixture->cache.get();
  fixture->service = Must(
      kms::KmsService::New(config, *fixture->vault, *fixture->db, std::move(verifier), {}, hooks),
      "service");
  fixture->info = std::make_unique<client::KmsInfo>(
      Must(client::ParseKmsInfo(fixture->service->InfoJson()), "info"));

  // One CA and one certificate for 127.0.0.1, used by both listeners.
  WriteFile(d + "/server.ext", "subjectAltName = IP:127.0.0.1\n");
  const std::string script =
      "cd '" + d +
      "' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
      "-out ca.pem -days 2 -subj '/CN=relay bench CA' 2>/dev/null && openssl req -newkey ec "
      "-pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key -out tls.csr -subj '/CN=127.0.0.1' "
      "2>/dev/null && openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
      "-out tls.pem -days 2 -extfile server.ext 2>/dev/null";
  if (std::system(script.c_str()) != 0) Die("openssl could not make the certificates");
  WriteFile(d + "/relay.token", std::string(kRelayToken) + "\n");

  kms::KmsServerOptions direct;
  direct.listener.port = 0;
  direct.listener.tls_cert = d + "/tls.pem";
  direct.listener.tls_key = d + "/tls.key";
  fixture->kms_server = Must(kms::KmsServer::Start(direct, *fixture->service), "KmsServer");

  core::KmsRelayOptions relay_options;
  relay_options.clusters = {
      {kCluster, Must(core::ReadRelayTokenDigest(d + "/relay.token"), "relay token")}};
  relay_options.log = [](const std::string&) {};
  fixture->relay = Must(core::KmsRelay::New(relay_options), "relay");
  auto context =
      Must(MakeTlsServerContext("the bench core", d + "/tls.pem", d + "/tls.key"), "core TLS");
  Poco::Net::SecureServerSocket socket(Poco::Net::SocketAddress("127.0.0.1", 0), 64, context);
  fixture->core_port = socket.address().port();
  Poco::Net::HTTPServerParams::Ptr params = new Poco::Net::HTTPServerParams;
  params->setMaxThreads(32);
  fixture->core_pool = std::make_unique<Poco::ThreadPool>(4, 64);
  fixture->core_server = std::make_unique<Poco::Net::HTTPServer>(
      new CoreFactory(*fixture->relay), *fixture->core_pool, socket, params);
  fixture->core_server->start();

  kms::RelayConnectorOptions connector;
  connector.url = "https://127.0.0.1:" + std::to_string(fixture->core_port);
  connector.ca_file = d + "/ca.pem";
  connector.token_file = d + "/relay.token";
  connector.cluster = kCluster;
  connector.connections = kRelayConnections;
  connector.log = [](const std::string&) {};
  fixture->connector =
      Must(kms::RelayConnector::New(connector, *fixture->service), "relay connector");
  fixture->connector->Start();
  for (int i = 0; i < 1000 && fixture->relay->Connected(kCluster) < kRelayConnections; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (fixture->relay->Connected(kCluster) < kRelayConnections) Die("the relay did not connect");
}

enum class Path { kDirect, kRelay, kForwardOnly };

// One user's channel over the given path, with one bound key to retrieve.
struct Client {
  std::unique_ptr<client::HttpsTransport> https;
  std::unique_ptr<client::KmsSession> session;
  std::string key;
};

Client NewClient(Path path, int index) {
  Client c;
  client::KmsTransport transport;
  if (path == Path::kForwardOnly) {
    transport = [](const std::string& message) -> Result<client::KmsResponse> {
      SR_ASSIGN_OR_RETURN(core::KmsRelayAnswer answer, fixture->relay->Forward(kCluster, message));
      return client::KmsResponse{answer.http_status, answer.content_type, std::move(answer.body)};
    };
  } else {
    const std::uint16_t port =
        path == Path::kDirect ? fixture->kms_server->port() : fixture->core_port;
    c.https = Must(client::HttpsTransport::New({"https://127.0.0.1:" + std::to_string(port),
                                                fixture->dir->dir() + "/ca.pem"}),
                   "transport");
    transport = client::MakeKmsTransport(*c.https);
  }
  const std::string user = "user" + std::to_string(index) + "@acme.example";
  std::string bearer =
      Must(MintJwt(*fixture->issuer, {kIssuer, user, "kms", std::time(nullptr) - 5, 86400}), "jwt");
  c.session = Must(
      client::KmsSession::Open(*fixture->info, "bench-" + std::to_string(index), bearer, transport),
      "session");
  Poco::JSON::Object count;
  count.set("count", 1);
  auto created = Must(c.session->Call("create", "/keys", count), "create keys");
  Poco::JSON::Array::Ptr keys = created->getArray("keys");
  if (!keys) Die("create /keys failed");
  c.key = keys->getObject(0)->getValue<std::string>("uri");
  Poco::JSON::Array uris;
  uris.add(c.key);
  Poco::JSON::Object resource;
  resource.set("keyUris", uris);
  auto made = Must(c.session->Call("create", "/resources", resource), "create resource");
  if (made->getValue<int>("status") != 201) Die("create /resources failed");
  return c;
}

void RoundTrips(benchmark::State& state, Path path, bool retrieve) {
  Client c = NewClient(path, static_cast<int>(path) * 100 + state.thread_index());
  std::vector<double> micros;
  micros.reserve(100000);
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    auto answer =
        retrieve ? c.session->Call("retrieve", c.key) : c.session->Call("update", "/ping");
    micros.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
            .count());
    if (!answer.ok() || (*answer)->getValue<int>("status") != 200) {
      state.SkipWithError("a round trip failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
  if (micros.empty()) return;
  std::sort(micros.begin(), micros.end());
  state.counters["p50_us"] = micros[micros.size() / 2];
  state.counters["p99_us"] = micros[std::min(micros.size() - 1, micros.size() * 99 / 100)];
}

double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// Paired: each iteration makes one direct and one relayed round trip, alternating which goes
// first, so the machine's drift hits both alike; added_p50_us is the median of the per-pair
// differences (relayed minus direct).
void Paired(benchmark::State& state, bool retrieve) {
  Client direct = NewClient(Path::kDirect, 200 + state.thread_index());
  Client relayed = NewClient(Path::kRelay, 300 + state.thread_index());
  std::vector<double> direct_us, relay_us, added_us;
  bool relay_first = false;
  auto once = [retrieve](Client& c) -> double {
    const auto start = std::chrono::steady_clock::now();
    auto answer =
        retrieve ? c.session->Call("retrieve", c.key) : c.session->Call("update", "/ping");
    const double micros =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
    return answer.ok() && (*answer)->getValue<int>("status") == 200 ? micros : -1;
  };
  for (auto _ : state) {
    double d = 0, r = 0;
    if (relay_first) {
      r = once(relayed);
      d = once(direct);
    } else {
      d = once(direct);
      r = once(relayed);
    }
    relay_first = !relay_first;
    if (d < 0 || r < 0) {
      state.SkipWithError("a round trip failed");
      break;
    }
    direct_us.push_back(d);
    relay_us.push_back(r);
    added_us.push_back(r - d);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["direct_p50_us"] = Median(direct_us);
  state.counters["relay_p50_us"] = Median(relay_us);
  state.counters["added_p50_us"] = Median(added_us);
}

void BM_PairedPing(benchmark::State& state) { Paired(state, false); }
void BM_PairedRetrieve(benchmark::State& state) { Paired(state, true); }

void BM_DirectPing(benchmark::State& state) { RoundTrips(state, Path::kDirect, false); }
void BM_RelayPing(benchmark::State& state) { RoundTrips(state, Path::kRelay, false); }
void BM_DirectRetrieve(benchmark::State& state) { RoundTrips(state, Path::kDirect, true); }
void BM_RelayRetrieve(benchmark::State& state) { RoundTrips(state, Path::kRelay, true); }
void BM_RelayForwardOnlyPing(benchmark::State& state) {
  RoundTrips(state, Path::kForwardOnly, false);
}

BENCHMARK(BM_PairedPing)->UseRealTime();
BENCHMARK(BM_PairedRetrieve)->UseRealTime();
BENCHMARK(BM_DirectPing)->UseRealTime();
BENCHMARK(BM_RelayPing)->UseRealTime();
BENCHMARK(BM_DirectRetrieve)->UseRealTime();
BENCHMARK(BM_RelayRetrieve)->UseRealTime();
BENCHMARK(BM_RelayForwardOnlyPing)->UseRealTime();
BENCHMARK(BM_DirectRetrieve)->Threads(4)->UseRealTime();
BENCHMARK(BM_RelayRetrieve)->Threads(4)->UseRealTime();

}  // namespace
}  // namespace strongroom::bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  strongroom::bench::SetUp();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  // The relay's two halves and the listeners before the service; the token directory last.
  auto* f = strongroom::bench::fixture;
  f->connector.reset();
  f->core_server->stopAll(true);
  f->core_server.reset();
  f->relay.reset();
  f->kms_server.reset();
  f->service.reset();
  f->db.reset();
  f->vault.reset();
  delete f;
  return 0;
}
