// The KMS's hot path in process: sealed key retrieval through KmsService::Handle (open the JWE,
// verify the bearer token, check the authorization, fetch and unwrap the key, seal the answer),
// with and without the key cache, beside the raw token unwrap rate measured in the same run.
//
// The client side of each thread is a KmsSession (client/) whose transport calls Handle directly,
// so the figures are the server's work plus the client's sealing and opening, without HTTP or TLS
// (the load run against kmsd, bench/run-kms-load.sh, adds those). Hermetic: SoftHSM2 token and
// SQLite database in a temporary directory of their own.
//
//   build-release/bench/kms_service_bench --benchmark_min_time=2
#include <benchmark/benchmark.h>

#include <ctime>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "softhsm_token_dir.h"
#include "strongroom/client/kms_session.h"
#include "strongroom/common/database.h"
#include "strongroom/common/jwt.h"
#include "strongroom/hsm/key_vault.h"
#include "strongroom/kms/key_cache.h"
#include "strongroom/kms/kms_service.h"
#include "strongroom/kms/kms_store.h"

namespace strongroom::bench {
namespace {

constexpr char kIssuer[] = "https://idp.acme.example";
constexpr int kKeysPerResource = 64;

struct Fixture {
  std::unique_ptr<SoftHsmTokenDir> dir;
  std::unique_ptr<hsm::KeyVault> vault;
  std::unique_ptr<Database> db;
  std::unique_ptr<jose::EcKeyPair> issuer;
  std::unique_ptr<kms::KeyCache> cache;
  std::unique_ptr<kms::KmsService> cached;    // with the key cache
  std::unique_ptr<kms::KmsService> uncached;  // without
  std::unique_ptr<client::KmsInfo> info;
  std::vector<hsm::TokenBlob> blobs;  // one wrapped key, for the raw unwrap rate
  std::string blob_uri;
};

Fixture* fixture = nullptr;

void Die(const std::string& what) {
  std::fprintf(stderr, "kms_service_bench: %s\n", what.c_str());
  std::exit(1);
}

template <typename T>
T Must(Result<T> result, const char* what) {
  if (!result.ok()) Die(std::string(what) + ": " + result.error().ToString());
  return std::move(result).value();
}

std::unique_ptr<kms::KmsService> NewService(kms::KeyCache* cache) {
  TrustedIssuer issuer{kIssuer, "acme", {Must(fixture->issuer->PublicKey(), "issuer key")}};
  JwtVerifier verifier =
      Must(JwtVerifier::New({issuer}, "kms", std::chrono::seconds(30)), "verifier");
  kms::KmsServiceConfig config;
  config.host = "kms.acme.example";
  kms::KmsServiceHooks hooks;
  hooks.key_cache = cache;
  return Must(
      kms::KmsService::New(config, *fixture->vault, *fixture->db, std::move(verifier), {}, hooks),
      "service");
}

void SetUp() {
  fixture = new Fixture;
  fixture->dir = Must(SoftHsmTokenDir::Create(), "token dir");
  auto module = Must(hsm::Module::Load(kSoftHsmModule), "module");
  if (Status s = fixture->dir->InitializeToken(*module, "srkms"); !s.ok())
    Die(s.error().ToString());
  hsm::TokenConfig token;
  token.name = "primary";
  token.uri = fixture->dir->Uri("srkms");
  fixture->vault = Must(hsm::KeyVault::Open({{token}}), "vault");
  Must(fixture->vault->InitRoot("acme"), "root key");
  Must(fixture->vault->tokens()[0]->CreateIdentityKey("kms", 2048), "identity key");
  fixture->db =
      Must(Database::OpenSqlite(fixture->dir->dir() + "/kms.db", kms::KmsStore::Migrations()),
           "database");
  fixture->issuer = std::make_unique<jose::EcKeyPair>(Must(jose::EcKeyPair::Generate("i"), "key"));
  fixture->cache = std::make_unique<kms::KeyCache>(100000, std::chrono::minutes(10));
  fixture->cached = NewService(fixture->cache.get());
  fixture->uncached = NewService(nullptr);
  fixture->info = std::make_unique<client::KmsInfo>(
      Must(client::ParseKmsInfo(fixture->cached->InfoJson()), "info"));
  fixture->blob_uri = "kms://kms.acme.example/keys/raw";
  std::vector<std::uint8_t> key(32, 7);
  fixture->blobs = Must(fixture->vault->Wrap({"acme", fixture->blob_uri}, key), "wrap").blobs;
}

// One user's session with a resource of bound keys, per benchmark thread.
struct Client {
  std::unique_ptr<client::KmsSession> session;
  std::vector<std::string> keys;
};

Client NewClient(kms::KmsService& service, int index) {
  const std::string user = "user" + std::to_string(index) + "@acme.example";
  std::string bearer =
      Must(MintJwt(*fixture->issuer, {kIssuer, user, "kms", std::time(nullptr) - 5, 86400}), "jwt");
  client::KmsTransport direct = [&service](const std::string& message) {
    kms::KmsReply reply = service.Handle(message);
    return Result<client::KmsResponse>(
        client::KmsResponse{reply.http_status, reply.content_type, std::move(reply.body)});
  };
  Client c;
  c.session = Must(
      client::KmsSession::Open(*fixture->info, "bench-" + std::to_string(index), bearer, direct),
      "session");
  Poco::JSON::Object count;
  count.set("count", kKeysPerResource);
  auto created = Must(c.session->Call("create", "/keys", count), "create keys");
  Poco::JSON::Array uris;
  Poco::JSON::Array::Ptr keys = created->getArray("keys");
  if (!keys) Die("create /keys answered " + std::to_string(created->getValue<int>("status")));
  for (unsigned i = 0; i < keys->size(); ++i) {
    c.keys.push_back(keys->getObject(i)->getValue<std::string>("uri"));
    uris.add(c.keys.back());
  }
  Poco::JSON::Object resource;
  resource.set("keyUris", uris);
  auto made = Must(c.session->Call("create", "/resources", resource), "create resource");
  if (made->getValue<int>("status") != 201) Die("create /resources failed");
  return c;
}

void SealedRetrieve(benchmark::State& state, bool cache) {
  kms::KmsService& service = cache ? *fixture->cached : *fixture->uncached;
  Client c = NewClient(service, state.thread_index());
  std::size_t next = 0;
  for (auto _ : state) {
    auto answer = c.session->Call("retrieve", c.keys[next++ % c.keys.size()]);
    if (!answer.ok() || (*answer)->getValue<int>("status") != 200) {
      state.SkipWithError("retrieval failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_SealedRetrieveCached(benchmark::State& state) { SealedRetrieve(state, true); }
void BM_SealedRetrieveUncached(benchmark::State& state) { SealedRetrieve(state, false); }

// The token's own rate for the same mechanism: one unwrap (C_DecryptInit + C_Decrypt AES-GCM)
// through the vault, no KMS around it.
void BM_RawTokenUnwrap(benchmark::State& state) {
  for (auto _ : state) {
    auto key = fixture->vault->Unwrap({"acme", fixture->blob_uri}, fixture->blobs);
    if (!key.ok()) {
      state.SkipWithError("unwrap failed");
      break;
    }
    benchmark::DoNotOptimize(key->data());
  }
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK(BM_SealedRetrieveCached)->Threads(1)->Threads(2)->Threads(16)->UseRealTime();
BENCHMARK(BM_SealedRetrieveUncached)->Threads(1)->Threads(2)->Threads(16)->UseRealTime();
BENCHMARK(BM_RawTokenUnwrap)->Threads(1)->Threads(2)->Threads(16)->UseRealTime();

}  // namespace
}  // namespace strongroom::bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  strongroom::bench::SetUp();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  // Services before the database and vault they use; the token directory last.
  auto* f = strongroom::bench::fixture;
  f->cached.reset();
  f->uncached.reset();
  f->db.reset();
  f->vault.reset();
  delete f;
  return 0;
}
