// The KMS keeps handing out keys when its primary HSM token fails mid-load: every key is wrapped
// under the root keys of both tokens, and retrieval goes on from the standby. A fault of a token
// is answered as the HSM being unavailable (503, hsm_unavailable), and the token comes back by
// itself once the fault is gone. Each token holds an identity key of its own, certified for the
// same host, so new clients open channels with the standby's identity while the primary is down
// (and the SDK's KmsContext, holding the primary's, fetches the new one). The primary fails through
// the fault-injecting PKCS#11 module (tests/support/fault_pkcs11.h) over real SoftHSM2 tokens; the
// key cache is off, so every retrieval unwraps in a token. Keys made while the primary is down are
// wrapped for it by the reconciliation once it is back.
#include <Poco/AutoPtr.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Util/IniFileConfiguration.h>
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "../client/test_pki.h"
#include "../support/fault_pkcs11.h"
#include "../support/softhsm_sandbox.h"
#include "../support/test_dir.h"
#include "prometheus_text.h"
#include "strongroom/client/kms_context.h"
#include "strongroom/client/kms_identity.h"
#include "strongroom/client/kms_session.h"
#include "strongroom/hsm/key_vault.h"
#include "strongroom/kms/hsm_settings.h"
#include "strongroom/kms/identity_certificate.h"
#include "strongroom/kms/kms_service.h"
#include "strongroom/kms/kms_store.h"
#include "strongroom/kms/metrics.h"
#include "strongroom/kms/reconcile_job.h"

namespace strongroom::kms {
namespace {

using Poco::JSON::Object;
using testing::SoftHsmSandbox;

constexpr char kFaultModule[] = SR_FAULT_MODULE_PATH;
constexpr char kIssuer[] = "https://idp.acme.test";

TEST(KmsFailoverTest, RetrievalGoesOnFromTheStandbyWhenThePrimaryFailsMidLoad) {
  void* handle = dlopen(kFaultModule, RTLD_NOW);
  ASSERT_NE(handle, nullptr);
  auto fail_token = reinterpret_cast<sr_fault_fail_token_fn>(dlsym(handle, "sr_fault_fail_token"));
  auto clear = reinterpret_cast<sr_fault_clear_fn>(dlsym(handle, "sr_fault_clear"));
  ASSERT_TRUE(fail_token && clear);
  clear();

  hsm::TokenConfig primary, standby;
  const std::string primary_label = SoftHsmSandbox::Get().CreateToken(kFaultModule);
  primary.name = "primary";
  primary.uri = SoftHsmSandbox::Get().Uri(kFaultModule, primary_label);
  standby.name = "standby";
  standby.uri =
      SoftHsmSandbox::Get().Uri(kFaultModule, SoftHsmSandbox::Get().CreateToken(kFaultModule));
  auto vault = std::move(hsm::KeyVault::Open({{primary, standby}})).value();
  ASSERT_TRUE(vault->InitRoot("acme").ok());
  ASSERT_TRUE(vault->tokens()[0]->CreateIdentityKey("kms", 2048).ok());
  testing::TestDir dir;
  auto db =
      std::move(Database::OpenSqlite((dir / "kms.db").string(), KmsStore::Migrations())).value();
  auto issuer_key = std::move(jose::EcKeyPair::Generate("idp")).value();
  TrustedIssuer issuer{kIssuer, "acme", {*issuer_key.PublicKey()}};
  KmsServiceConfig config;
  config.host = "kms.acme.test";
  auto service =
      std::move(
          KmsService::New(config, *vault, *db,
                          std::move(*JwtVerifier::New({issuer}, "kms", std::chrono::seconds(30))),
                          {}, {}))
          .value();  // no key cache: every retrieval unwraps in a token
  auto info = std::move(client::ParseKmsInfo(service->InfoJson())).value();
  client::KmsTransport direct = [&](const std::string& message) {
    KmsReply reply = service->Handle(message);
    return Result<client::KmsResponse>(
        client::KmsResponse{reply.http_status, reply.content_type, reply.body});
  };

  // Each reader: its own channel and a resource of keys, all made while both tokens are up.
  constexpr int kReaders = 4;
  struct Reader {
    std::unique_ptr<client::KmsSession> session;
    std::vector<std::pair<std::string, std::string>> keys;  // uri, material (base64url)
  };
  std::vector<Reader> readers(kReaders);
  for (int r = 0; r < kReaders; ++r) {
    const std::string user = "user" + std::to_string(r) + "@acme.test";
    auto token = MintJwt(issuer_key, {kIssuer, user, "kms", std::time(nullptr) - 5, 3600});
    readers[r].session = std::move(client::KmsSession::Open(info, "c", *token, direct)).value();
    Object count;
    count.set("count", 8);
    auto created = readers[r].session->Call("create", "/keys", count);
    ASSERT_TRUE(created.ok());
    Poco::JSON::Array uris;
    for (unsigned i = 0; i < (*created)->getArray("keys")->size(); ++i) {
      Object::Ptr key = (*created)->getArray("keys")->getObject(i);
      readers[r].keys.emplace_back(key->getValue<std::string>("uri"),
                                   key->getObject("jwk")->getValue<std::string>("k"));
      uris.add(readers[r].keys.back().first);
    }
    Object resource;
    resource.set("keyUris", uris);
    ASSERT_EQ(
        (*readers[r].session->Call("create", "/resources", resource))->getValue<int>("status"),
        201);
  }

  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> threads;
  for (int r = 0; r < kReaders; ++r) {
    threads.emplace_back([&, r] {
      for (std::size_t i = 0; !stop.load(); ++i) {
        const auto& [uri, material] = readers[r].keys[i % readers[r].keys.size()];
        auto answer = readers[r].session->Call("retrieve", uri);
        if (answer.ok() && (*answer)->getValue<int>("status") == 200 &&
            (*answer)->getObject("key")->getObject("jwk")->getValue<std::string>("k") == material) {
          ++ok;
        } else {
          ++failed;
        }
      }
    });
  }
  while (ok.load() < 100) std::this_thread::yield();
  fail_token(primary_label.c_str(), CKR_DEVICE_REMOVED, -1);  // the primary goes away
  const int at_failure = ok.load();
  while (ok.load() < at_failure + 200 && failed.load() == 0) std::this_thread::yield();
  stop = true;
  for (std::thread& t : threads) t.join();
  clear();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GE(ok.load(), at_failure + 200);
  EXPECT_EQ(vault->Health()[0].state, hsm::TokenState::kUnavailable);
}

// The KMS under an HSM fault, as kmsd runs it: the vault from [hsm] settings (so its background
// probe runs at the default period), metrics over it, no key cache. Clients open channels (create
// /ecdhe) and create and retrieve keys in a light loop while a token fails, and stop before it is
// cleared: the token must come back by itself, without a request and without a restart.
class KmsHsmFaultTest : public ::testing::Test {
 protected:
  struct Outcome {
    std::string what;  // "ecdhe", "keys", "retrieve"
    int http_status = 0;
    std::string code;     // of a plain error
    int sealed = 0;       // the protocol status of a sealed answer
    bool during = false;  // while the vault reported the faulty token unavailable
  };

  void SetUp() override {
    handle_ = dlopen(kFaultModule, RTLD_NOW);
    ASSERT_NE(handle_, nullptr);
    fail_token_ = reinterpret_cast<sr_fault_fail_token_fn>(dlsym(handle_, "sr_fault_fail_token"));
    clear_ = reinterpret_cast<sr_fault_clear_fn>(dlsym(handle_, "sr_fault_clear"));
    ASSERT_TRUE(fail_token_ && clear_);
    clear_();
  }
  void TearDown() override {
    Stop();
    if (clear_) clear_();
  }

  void Open(int tokens) {
    std::string ini = "[hsm]\ntokens = primary";
    if (tokens > 1) ini += ", standby";
    ini += "\nnode_id = test\n";
    for (int i = 0; i < tokens; ++i) {
      labels_.push_back(SoftHsmSandbox::Get().CreateToken(kFaultModule));
      ini += std::string("[hsm.") + (i == 0 ? "primary" : "standby") +
             "]\nuri = " + SoftHsmSandbox::Get().Uri(kFaultModule, labels_.back()) + "\n";
    }
    std::istringstream in(ini);
    Poco::AutoPtr<Poco::Util::IniFileConfiguration> settings(
        new Poco::Util::IniFileConfiguration(in));
    auto config = ReadHsmSettings(*settings);
    ASSERT_TRUE(config.ok()) << config.error().ToString();
    auto vault = hsm::KeyVault::Open(*config);
    ASSERT_TRUE(vault.ok()) << vault.error().ToString();
    vault_ = std::move(vault).value();
    ASSERT_TRUE(vault_->InitRoot("acme").ok());
    // An identity key in each token, each certified for the KMS's host by the test CA.
    ca_ = testing::TestCa::Make("Strongroom failover test CA");
    const std::string ca_pem = testing::Pem(ca_.cert.get());
    const std::string ca_key = testing::PrivateKeyPem(ca_.key.get());
    std::ofstream((dir_ / "roots.pem").string()) << ca_pem;
    std::vector<IdentityChain> chains;
    for (const auto& token : vault_->tokens()) {
      auto key = token->CreateIdentityKey("kms", 2048);
      ASSERT_TRUE(key.ok()) << key.error().ToString();
      auto pem = CertifyIdentityKey(
          *key, {"kms.acme.test", 2}, ca_pem,
          SecretBytes({reinterpret_cast<const std::uint8_t*>(ca_key.data()), ca_key.size()}));
      ASSERT_TRUE(pem.ok()) << pem.error().ToString();
      chains.push_back(std::move(ParseIdentityChain(*pem, *key)).value());
    }
    db_ =
        std::move(Database::OpenSqlite((dir_ / "kms.db").string(), KmsStore::Migrations())).value();
    issuer_key_ =
        std::make_unique<jose::EcKeyPair>(std::move(jose::EcKeyPair::Generate("idp")).value());
    TrustedIssuer issuer{kIssuer, "acme", {*issuer_key_->PublicKey()}};
    KmsServiceConfig config_kms;
    config_kms.host = "kms.acme.test";
    config_kms.metadata_cache_entries = 0;  // every message reads its channel from the database
    config_kms.identity_chains = std::move(chains);
    service_ =
        std::move(
            KmsService::New(config_kms, *vault_, *db_,
                            std::move(*JwtVerifier::New({issuer}, "kms", std::chrono::seconds(30))),
                            {}, KmsServiceHooks{nullptr, &metrics_, nullptr}))
            .value();
    info_ = std::make_unique<client::KmsInfo>(
        std::move(client::ParseKmsInfo(service_->InfoJson())).value());
  }

  std::string Bearer(const std::string& user) {
    return *MintJwt(*issuer_key_, {kIssuer, user, "kms", std::time(nullptr) - 5, 3600});
  }

  // A transport straight into the service that keeps what came back.
  client::KmsTransport Recording(std::shared_ptr<KmsReply> last) {
    return [this, last](const std::string& message) {
      *last = service_->Handle(message);
      return Result<client::KmsResponse>(
          client::KmsResponse{last->http_status, last->content_type, last->body});
    };
  }

  static std::string CodeOf(const KmsReply& reply) {
    if (reply.content_type != "application/json") return "";
    Poco::JSON::Parser parser;
    return parser.parse(reply.body).extract<Object::Ptr>()->getValue<std::string>("code");
  }

  // One round of the load: a new channel, and on the long-lived one a new key and a retrieval.
  void Round(client::KmsSession& session, std::shared_ptr<KmsReply> last,
             const std::string& key_uri, int n) {
    const bool during = vault_->Health()[faulty_].state != hsm::TokenState::kReady;
    auto reply = std::make_shared<KmsReply>();
    auto opened = client::KmsSession::Open(
        *info_, "c", Bearer("u" + std::to_string(n) + "@acme.test"), Recording(reply));
    Record({"ecdhe", reply->http_status, CodeOf(*reply), 0, during});
    Object count;
    count.set("count", 1);
    auto created = session.Call("create", "/keys", count);
    Record({"keys", last->http_status, CodeOf(*last),
            created.ok() ? (*created)->getValue<int>("status") : 0, during});
    auto retrieved = session.Call("retrieve", key_uri);
    Record({"retrieve", last->http_status, CodeOf(*last),
            retrieved.ok() ? (*retrieved)->getValue<int>("status") : 0, during});
    if (opened.ok()) (void)(*opened)->Close();
  }

  void Record(Outcome outcome) {
    std::lock_guard lock(mutex_);
    outcomes_.push_back(std::move(outcome));
  }
  std::vector<Outcome> Outcomes() {
    std::lock_guard lock(mutex_);
    return outcomes_;
  }
  int Count(bool during) {
    int n = 0;
    for (const Outcome& o : Outcomes()) n += o.during == during && o.what == "retrieve";
    return n;
  }

  // Starts the light load: one channel made while every token is up, then rounds every 20 ms.
  void StartLoad() {
    auto last = std::make_shared<KmsReply>();
    session_ =
        std::move(client::KmsSession::Open(*info_, "c", Bearer("owner@acme.test"), Recording(last)))
            .value();
    Object count;
    count.set("count", 1);
    auto created = session_->Call("create", "/keys", count);
    ASSERT_TRUE(created.ok());
    ASSERT_EQ((*created)->getValue<int>("status"), 201);
    key_uri_ = (*created)->getArray("keys")->getObject(0)->getValue<std::string>("uri");
    loader_ = std::thread([this, last] {
      for (int n = 0; !stop_.load(); ++n) {
        Round(*session_, last, key_uri_, n);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    });
  }
  void Stop() {
    stop_ = true;
    if (loader_.joinable()) loader_.join();
  }

  bool WaitFor(const std::function<bool()>& condition) {
    for (int i = 0; i < 3000; ++i) {  // at most a minute; nothing is timed
      if (condition()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return condition();
  }

  // strongroom_hsm_token_up of each token, as /ops/metrics renders it.
  std::map<std::string, double> TokenUp() {
    auto samples = strongroom::testing::ParsePrometheus(
        metrics_.RenderPrometheus(MetricSources{nullptr, vault_.get()}));
    std::map<std::string, double> up;
    if (!samples.ok()) return up;
    for (const auto& sample : *samples) {
      if (sample.name == "strongroom_hsm_token_up") up[sample.labels.at("token")] = sample.value;
    }
    return up;
  }

  // What a client trusts: the test CA, for kms://kms.acme.test.
  client::KmsTrust Trust() const { return {"kms://kms.acme.test", (dir_ / "roots.pem").string()}; }
  bool PrimaryIs(hsm::TokenState state) {
    return WaitFor([&] { return vault_->Health()[0].state == state; });
  }

  void* handle_ = nullptr;
  testing::TestCa ca_;
  sr_fault_fail_token_fn fail_token_ = nullptr;
  sr_fault_clear_fn clear_ = nullptr;
  std::vector<std::string> labels_;
  std::size_t faulty_ = 0;
  testing::TestDir dir_;
  std::unique_ptr<hsm::KeyVault> vault_;
  std::unique_ptr<Database> db_;
  std::unique_ptr<jose::EcKeyPair> issuer_key_;
  Metrics metrics_;
  std::unique_ptr<KmsService> service_;
  std::unique_ptr<client::KmsInfo> info_;
  std::unique_ptr<client::KmsSession> session_;
  std::string key_uri_;
  std::thread loader_;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::vector<Outcome> outcomes_;
};

TEST_F(KmsHsmFaultTest, AFaultOfTheOnlyTokenIs503HsmUnavailableAndHealsWithoutARestart) {
  Open(1);
  StartLoad();
  ASSERT_TRUE(WaitFor([&] { return Count(false) >= 3; }));
  fail_token_(labels_[0].c_str(), CKR_DEVICE_ERROR, -1);
  ASSERT_TRUE(WaitFor([&] { return Count(true) >= 5; })) << "the token was never reported down";
  EXPECT_EQ(vault_->Health()[0].state, hsm::TokenState::kUnavailable);
  EXPECT_EQ(TokenUp()["primary"], 0);
  Stop();

  for (const Outcome& o : Outcomes()) {
    if (!o.during) continue;
    SCOPED_TRACE(o.what + ": HTTP " + std::to_string(o.http_status) + " " + o.code + " sealed " +
                 std::to_string(o.sealed));
    if (o.what == "ecdhe") {
      // The static key is in the token: no channel, and a retryable answer, never "undecryptable".
      EXPECT_EQ(o.http_status, 503);
      EXPECT_EQ(o.code, "hsm_unavailable");
    } else if (o.http_status == 200) {
      EXPECT_EQ(o.sealed, 503);  // a sealed answer: the request was read, the token failed it
    } else {
      EXPECT_EQ(o.http_status, 503);  // the channel's own key could not be opened
      EXPECT_EQ(o.code, "hsm_unavailable");
    }
  }

  // Nothing asks the KMS for anything now: the probe alone finds the token back.
  clear_();
  ASSERT_TRUE(WaitFor([&] { return vault_->Health()[0].state == hsm::TokenState::kReady; }))
      << vault_->Health()[0].detail;
  EXPECT_EQ(TokenUp()["primary"], 1);
  auto last = std::make_shared<KmsReply>();
  auto session = client::KmsSession::Open(*info_, "c", Bearer("late@acme.test"), Recording(last));
  ASSERT_TRUE(session.ok()) << last->http_status << " " << last->body;
  Object count;
  count.set("count", 1);
  auto created = (*session)->Call("create", "/keys", count);
  ASSERT_TRUE(created.ok());
  EXPECT_EQ((*created)->getValue<int>("status"), 201);
  auto retrieved = session_->Call("retrieve", key_uri_);
  ASSERT_TRUE(retrieved.ok());
  EXPECT_EQ((*retrieved)->getValue<int>("status"), 200);
}

TEST_F(KmsHsmFaultTest, TheStandbyServesWhileThePrimaryFaultsAndThePrimaryHealsByItself) {
  Open(2);
  StartLoad();
  ASSERT_TRUE(WaitFor([&] { return Count(false) >= 3; }));
  fail_token_(labels_[0].c_str(), CKR_DEVICE_ERROR, -1);
  ASSERT_TRUE(WaitFor([&] { return Count(true) >= 5; })) << "the primary was never reported down";
  auto health = vault_->Health();
  EXPECT_EQ(health[0].state, hsm::TokenState::kUnavailable);
  EXPECT_EQ(health[1].state, hsm::TokenState::kReady);
  EXPECT_EQ(TokenUp()["primary"], 0);
  EXPECT_EQ(TokenUp()["standby"], 1);
  Stop();

  for (const Outcome& o : Outcomes()) {
    if (!o.during) continue;
    SCOPED_TRACE(o.what + ": HTTP " + std::to_string(o.http_status) + " " + o.code + " sealed " +
                 std::to_string(o.sealed));
    if (o.what == "ecdhe") {
      // Sealed to the primary's identity (fetched before the fault): the client must fetch the
      // identity in service, the standby's (tests below).
      EXPECT_EQ(o.http_status, 503);
      EXPECT_EQ(o.code, "identity_unavailable");
    } else {
      EXPECT_EQ(o.http_status, 200);  // the standby opens the channel and wraps the new keys
      EXPECT_EQ(o.sealed, o.what == "keys" ? 201 : 200);
    }
  }

  clear_();
  ASSERT_TRUE(WaitFor([&] { return vault_->Health()[0].state == hsm::TokenState::kReady; }))
      << vault_->Health()[0].detail;
  EXPECT_EQ(TokenUp()["primary"], 1);
  auto last = std::make_shared<KmsReply>();
  auto session = client::KmsSession::Open(*info_, "c", Bearer("late@acme.test"), Recording(last));
  ASSERT_TRUE(session.ok()) << last->http_status << " " << last->body;
}

// The finding this answers: keys made while the primary was down were wrapped by the standby alone,
// and stayed so after the primary came back, so losing the standby later lost them. Now the
// reconciliation counts them, waits while the primary is down (never "done"), wraps them for the
// primary by itself once it is back, and the primary alone then serves every one of them.
TEST_F(KmsHsmFaultTest, KeysMadeWhileThePrimaryIsDownAreServedByThePrimaryAloneOnceReconciled) {
  Open(2);
  ReconcileJobs jobs(*vault_, *db_);
  ReconcileWorker::Options options;
  options.interval = std::chrono::milliseconds(20);
  options.batch = 16;
  options.busy_recount = std::chrono::milliseconds(50);
  ReconcileWorker worker(jobs, options);
  auto missing = [&](const std::string& token) -> double {
    MetricSources sources{nullptr, vault_.get(), jobs.last_count()};
    auto samples = strongroom::testing::ParsePrometheus(metrics_.RenderPrometheus(sources));
    if (!samples.ok()) return -1;
    for (const auto& sample : *samples) {
      if (sample.name == "strongroom_keys_missing_wraps" && sample.labels.at("token") == token) {
        return sample.value;
      }
    }
    return -1;
  };
  ASSERT_TRUE(WaitFor([&] { return missing("primary") == 0 && missing("standby") == 0; }));

  // A channel opened while both tokens are up; then the primary fails.
  auto last = std::make_shared<KmsReply>();
  auto session = client::KmsSession::Open(*info_, "c", Bearer("owner@acme.test"), Recording(last));
  ASSERT_TRUE(session.ok()) << last->http_status << " " << last->body;
  fail_token_(labels_[0].c_str(), CKR_DEVICE_REMOVED, -1);
  ASSERT_TRUE(WaitFor([&] { return vault_->Health()[0].state == hsm::TokenState::kUnavailable; }));

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
  ASSERT_TRUE(WaitFor([&] { return missing("primary") == 50; })) << missing("primary");
  EXPECT_EQ(missing("standby"), 0);
  // An operator's job waits for the primary rather than claiming it done.
  ASSERT_TRUE(jobs.Start("operator:test").ok());
  worker.Wake();
  ASSERT_TRUE(WaitFor([&] { return jobs.Progress()->state == "waiting"; }))
      << jobs.Progress()->state;
  EXPECT_EQ(jobs.Progress()->waiting_for, (std::vector<std::string>{"primary"}));
  EXPECT_EQ(jobs.Progress()->done, 0);

  // The fault is cleared; the vault's probe repairs the primary, the job goes on by itself.
  clear_();
  ASSERT_TRUE(WaitFor([&] { return jobs.Progress()->state == "done"; }))
      << jobs.Progress()->state << ": " << jobs.Progress()->last_error;
  EXPECT_EQ(vault_->Health()[0].state, hsm::TokenState::kReady);
  EXPECT_EQ(jobs.Progress()->done, 50);
  EXPECT_EQ(missing("primary"), 0);
  EXPECT_EQ(missing("standby"), 0);
  worker.Stop();

  // Now the standby goes: every key comes from the primary alone (no key cache in this service).
  fail_token_(labels_[1].c_str(), CKR_DEVICE_REMOVED, -1);
  ASSERT_TRUE(WaitFor([&] { return vault_->Health()[1].state == hsm::TokenState::kUnavailable; }));
  for (const auto& [uri, material] : keys) {
    auto retrieved = (*session)->Call("retrieve", uri);
    ASSERT_TRUE(retrieved.ok()) << uri << ": " << retrieved.error().ToString();
    ASSERT_EQ((*retrieved)->getValue<int>("status"), 200) << uri << ": " << last->body;
    EXPECT_EQ((*retrieved)->getObject("key")->getObject("jwk")->getValue<std::string>("k"),
              material);
  }
  EXPECT_EQ(vault_->Health()[1].state, hsm::TokenState::kUnavailable);
}

// Issue 16: with the primary down, a new client still opens a channel and reads its keys. The KMS
// publishes the standby's identity (certified for the same host) as soon as the primary is
// unavailable; a create /ecdhe sealed to the primary's refuses with 503 identity_unavailable.
// (Before, the identity key was in the first token only: every new channel was 503
// hsm_unavailable while it was down.)
TEST_F(KmsHsmFaultTest, ANewClientOpensAChannelAndReadsItsKeysWhileThePrimaryIsDown) {
  Open(2);
  auto last = std::make_shared<KmsReply>();
  auto owner = client::KmsSession::Open(*info_, "c", Bearer("owner@acme.test"), Recording(last));
  ASSERT_TRUE(owner.ok());
  Object count;
  count.set("count", 3);
  auto created = (*owner)->Call("create", "/keys", count);
  ASSERT_TRUE(created.ok());
  Poco::JSON::Array uris;
  std::map<std::string, std::string> material;
  for (unsigned i = 0; i < (*created)->getArray("keys")->size(); ++i) {
    Object::Ptr key = (*created)->getArray("keys")->getObject(i);
    material[key->getValue<std::string>("uri")] = key->getObject("jwk")->getValue<std::string>("k");
    uris.add(key->getValue<std::string>("uri"));
  }
  Object resource;
  resource.set("keyUris", uris);
  resource.set("authIds", Poco::JSON::Array().add("reader@acme.test"));
  auto made = (*owner)->Call("create", "/resources", resource);
  ASSERT_TRUE(made.ok());
  ASSERT_EQ((*made)->getValue<int>("status"), 201);
  const std::string resource_uri = (*made)->getObject("resource")->getValue<std::string>("uri");

  fail_token_(labels_[0].c_str(), CKR_DEVICE_REMOVED, -1);  // the primary goes away
  ASSERT_TRUE(PrimaryIs(hsm::TokenState::kUnavailable));    // found by the probe, no request

  // /kms/info now publishes the standby's identity, certified for the same host.
  auto now = client::ParseKmsInfo(service_->InfoJson());
  ASSERT_TRUE(now.ok());
  EXPECT_NE(*now->rsa_public_key.ToJson(), *info_->rsa_public_key.ToJson());
  Status trusted = client::VerifyKmsIdentity(*now, Trust());
  EXPECT_TRUE(trusted.ok()) << trusted.error().ToString();

  // A new client with it opens a channel and reads the keys (from the standby).
  auto reader = client::KmsSession::Open(*now, "c", Bearer("reader@acme.test"), Recording(last));
  ASSERT_TRUE(reader.ok()) << reader.error().ToString() << " " << last->body;
  Object query;
  query.set("count", 10);
  auto keys = (*reader)->Call("retrieve", resource_uri + "/keys", query);
  ASSERT_TRUE(keys.ok()) << keys.error().ToString();
  ASSERT_EQ((*keys)->getValue<int>("status"), 200);
  ASSERT_EQ((*keys)->getArray("keys")->size(), material.size());
  for (unsigned i = 0; i < (*keys)->getArray("keys")->size(); ++i) {
    Object::Ptr key = (*keys)->getArray("keys")->getObject(i);
    EXPECT_EQ(key->getObject("jwk")->getValue<std::string>("k"),
              material[key->getValue<std::string>("uri")]);
  }

  // A client still sealing to the primary's identity is told to fetch the new one: retryable.
  std::string stale_message;
  client::KmsTransport keep = [&](const std::string& message) {
    stale_message = message;
    return Recording(last)(message);
  };
  auto stale = client::KmsSession::Open(*info_, "c", Bearer("late@acme.test"), keep);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(last->http_status, 503);
  EXPECT_EQ(CodeOf(*last), "identity_unavailable");
  EXPECT_EQ(stale.error().code(), ErrorCode::kUnavailable) << stale.error().ToString();
  EXPECT_EQ(stale.error().reason(), ErrorReason::kIdentityUnavailable) << stale.error().ToString();

  // Once the primary is back, its identity serves again, and the standby's still opens channels
  // for the clients that hold it.
  clear_();
  ASSERT_TRUE(PrimaryIs(hsm::TokenState::kReady)) << vault_->Health()[0].detail;
  EXPECT_EQ(*client::ParseKmsInfo(service_->InfoJson())->rsa_public_key.ToJson(),
            *info_->rsa_public_key.ToJson());
  EXPECT_TRUE(client::KmsSession::Open(*now, "c", Bearer("reader@acme.test"), Recording(last)).ok())
      << last->body;
  EXPECT_TRUE(client::KmsSession::Open(*info_, "c", Bearer("late@acme.test"), Recording(last)).ok())
      << last->body;
  // The message refused as identity_unavailable was not counted as seen: it opens now.
  EXPECT_EQ(service_->Handle(stale_message).http_status, 200);
  EXPECT_EQ(service_->Handle(stale_message).http_status, 409);
}

// A message that no identity opens, while every token is up, is still the message's fault.
TEST_F(KmsHsmFaultTest, AMessageNoIdentityOpensIsUndecryptable) {
  Open(2);
  auto stranger =
      jose::PublicJwk::FromRsa(std::vector<std::uint8_t>(256, 0xC5),
                               std::vector<std::uint8_t>{0x01, 0x00, 0x01}, "kms://kms.acme.test");
  ASSERT_TRUE(stranger.ok()) << stranger.error().ToString();
  auto jwe = jose::EncryptRsaOaepJwe(
      *stranger, "kms://kms.acme.test",
      std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>("{}"), 2));
  ASSERT_TRUE(jwe.ok()) << jwe.error().ToString();
  KmsReply reply = service_->Handle(*jwe);
  EXPECT_EQ(reply.http_status, 400);
  EXPECT_EQ(CodeOf(reply), "undecryptable");
}

// The SDK (issue 16): a KmsContext that holds the primary's identity, asked to read while the
// primary is down, is refused the handshake as identity_unavailable, fetches /kms/info again,
// checks the new identity against its pinned roots and host, and reads. A document whose chain
// its roots do not trust is refused, and the context keeps the identity it had.
TEST_F(KmsHsmFaultTest, TheSdkFetchesTheIdentityInServiceWhenItsOwnIsUnavailable) {
  Open(2);
  auto last = std::make_shared<KmsReply>();
  client::KmsContextOptions options;
  options.client_id = "sdk";
  options.kms_token = client::StaticToken(Bearer("owner@acme.test"));
  options.trust = Trust();
  options.sleep = [](std::chrono::milliseconds) {};
  int fetches = 0;
  options.fetch_info = [&]() -> Result<std::string> {
    ++fetches;
    return service_->InfoJson();
  };
  auto context = client::KmsContext::New(options, *info_, Recording(last));
  ASSERT_TRUE(context.ok()) << context.error().ToString();
  auto keys = (*context)->CreateKeys(2);  // its first channel, with the primary's identity
  ASSERT_TRUE(keys.ok()) << keys.error().ToString();
  auto resource = (*context)->CreateResource({}, {(*keys)[0].uri, (*keys)[1].uri});
  ASSERT_TRUE(resource.ok()) << resource.error().ToString();

  // A second context, made before the outage, has no channel yet.
  auto late = client::KmsContext::New(options, *info_, Recording(last));
  ASSERT_TRUE(late.ok());
  fail_token_(labels_[0].c_str(), CKR_DEVICE_REMOVED, -1);
  ASSERT_TRUE(PrimaryIs(hsm::TokenState::kUnavailable));

  auto read = (*late)->RetrieveResourceKeys(resource->uri, {});
  ASSERT_TRUE(read.ok()) << read.error().ToString();
  ASSERT_EQ(read->size(), 2u);
  EXPECT_EQ((*late)->stats().identity_refreshes, 1);
  EXPECT_EQ(fetches, 1);
  EXPECT_EQ(*(*late)->info().rsa_public_key.ToJson(),
            *client::ParseKmsInfo(service_->InfoJson())->rsa_public_key.ToJson());
  for (const client::KmsKey& key : *read) {
    EXPECT_TRUE(key.uri == (*keys)[0].uri || key.uri == (*keys)[1].uri) << key.uri;
  }

  // The standby's identity certified by a CA the client does not trust: refused, unchanged.
  const std::string standby_info = service_->InfoJson();
  testing::TestCa stranger = testing::TestCa::Make("Not the KMS's CA");
  const std::string stranger_key = testing::PrivateKeyPem(stranger.key.get());
  auto standby_key = vault_->tokens()[1]->IdentityPublicKey("kms");
  ASSERT_TRUE(standby_key.ok());
  auto forged_pem =
      CertifyIdentityKey(*standby_key, {"kms.acme.test", 2}, testing::Pem(stranger.cert.get()),
                         SecretBytes({reinterpret_cast<const std::uint8_t*>(stranger_key.data()),
                                      stranger_key.size()}));
  ASSERT_TRUE(forged_pem.ok());
  auto forged_chain = ParseIdentityChain(*forged_pem, *standby_key);
  ASSERT_TRUE(forged_chain.ok());
  auto forged_jwk = jose::PublicJwk::FromRsa(standby_key->modulus, standby_key->public_exponent,
                                             "kms://kms.acme.test", forged_chain->der);
  const std::string forged =
      "{\"kmsCluster\":\"kms://kms.acme.test\",\"rsaPublicKey\":" + *forged_jwk->ToJson() + "}";
  options.fetch_info = [&]() -> Result<std::string> { return forged; };
  auto fooled = client::KmsContext::New(options, *info_, Recording(last));
  ASSERT_TRUE(fooled.ok());
  Status connected = (*fooled)->Connect();
  ASSERT_FALSE(connected.ok());
  EXPECT_EQ(connected.error().code(), ErrorCode::kUnauthenticated) << connected.error().ToString();
  EXPECT_EQ((*fooled)->stats().identity_refreshes, 0);
  EXPECT_EQ(*(*fooled)->info().rsa_public_key.ToJson(), *info_->rsa_public_key.ToJson());
  EXPECT_NE(standby_info, forged);

  // Without a way to fetch /kms/info (a relay given no fetch_info), the handshake is retried like
  // any 503 and then fails UNAVAILABLE with the reason, the identity unchanged.
  options.fetch_info = {};
  auto stuck = client::KmsContext::New(options, *info_, Recording(last));
  ASSERT_TRUE(stuck.ok());
  Status tried = (*stuck)->Connect();
  ASSERT_FALSE(tried.ok());
  EXPECT_EQ(tried.error().code(), ErrorCode::kUnavailable) << tried.error().ToString();
  EXPECT_EQ(tried.error().reason(), ErrorReason::kIdentityUnavailable) << tried.error().ToString();
  EXPECT_EQ((*stuck)->stats().identity_refreshes, 0);
}

// A refusal the KMS signs before reading a message (here: the channel was deleted) comes from the
// identity in service. A context that holds the primary's identity while the standby's serves
// cannot verify it with its key: it fetches /kms/info once, verifies the refusal with the new key,
// and negotiates a new channel. (Before, the refusal was DATA_LOSS: "altered or forged".)
TEST_F(KmsHsmFaultTest, TheSdkVerifiesARefusalSignedByTheNewIdentityAfterFetchingIt) {
  Open(2);
  auto last = std::make_shared<KmsReply>();
  client::KmsContextOptions options;
  options.client_id = "sdk";
  options.kms_token = client::StaticToken(Bearer("owner@acme.test"));
  options.trust = Trust();
  options.sleep = [](std::chrono::milliseconds) {};
  options.fetch_info = [&]() -> Result<std::string> { return service_->InfoJson(); };
  auto context = client::KmsContext::New(options, *info_, Recording(last));
  ASSERT_TRUE(context.ok()) << context.error().ToString();
  ASSERT_TRUE((*context)->Ping().ok());  // a channel, under the primary's identity

  fail_token_(labels_[0].c_str(), CKR_DEVICE_REMOVED, -1);
  ASSERT_TRUE(PrimaryIs(hsm::TokenState::kUnavailable));
  ASSERT_TRUE(db_->InTransaction([&](Poco::Data::Session& s) -> Status {
                   s << "UPDATE ephemeral_keys SET deleted = 1", Poco::Data::Keywords::now;
                   return OkStatus();
                 })
                  .ok());

  Status pinged = (*context)->Ping();
  ASSERT_TRUE(pinged.ok()) << pinged.error().ToString();
  EXPECT_EQ((*context)->stats().identity_refreshes, 1);
  EXPECT_EQ((*context)->stats().renegotiations, 1);
  EXPECT_EQ((*context)->stats().channels_opened, 2);
}

// A create /ecdhe the HSM could not serve is not counted as seen: the same message is accepted
// once the token is back (a repeat of one it did serve is refused).
TEST_F(KmsHsmFaultTest, ACreateEcdheRefusedForAnHsmFaultMayBeSentAgain) {
  Open(1);
  std::string sent;
  auto reply = std::make_shared<KmsReply>();
  client::KmsTransport keep = [&](const std::string& message) {
    sent = message;
    return Recording(reply)(message);
  };
  fail_token_(labels_[0].c_str(), CKR_DEVICE_ERROR, -1);
  EXPECT_FALSE(client::KmsSession::Open(*info_, "c", Bearer("again@acme.test"), keep).ok());
  EXPECT_EQ(reply->http_status, 503);
  EXPECT_EQ(CodeOf(*reply), "hsm_unavailable");
  clear_();
  ASSERT_TRUE(WaitFor([&] { return vault_->Health()[0].state == hsm::TokenState::kReady; }));
  EXPECT_EQ(service_->Handle(sent).http_status, 200);  // a signed 201
  EXPECT_EQ(service_->Handle(sent).http_status, 409);  // now it was seen
}

// A channel whose stored key no configured token can open is not an outage: 500, not a 503 that
// would have the client retry, and never the undocumented code "hsm".
TEST_F(KmsHsmFaultTest, AChannelKeyNoTokenCanOpenIsAnInternalError) {
  Open(1);
  auto last = std::make_shared<KmsReply>();
  auto session = client::KmsSession::Open(*info_, "c", Bearer("x@acme.test"), Recording(last));
  ASSERT_TRUE(session.ok());
  const std::string uri = (*session)->ephemeral_uri();
  ASSERT_TRUE(db_->InTransaction([&](Poco::Data::Session& s) -> Status {
                   s << "UPDATE ephemeral_blobs SET token = 'retired' WHERE uri = ?",
                       Poco::Data::Keywords::use(const_cast<std::string&>(uri)),
                       Poco::Data::Keywords::now;
                   return OkStatus();
                 })
                  .ok());
  EXPECT_FALSE((*session)->Call("update", "/ping").ok());
  EXPECT_EQ(last->http_status, 500);
  EXPECT_EQ(CodeOf(*last), "internal");
}

}  // namespace
}  // namespace strongroom::kms
