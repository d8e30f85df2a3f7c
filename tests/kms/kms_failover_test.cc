// The KMS keeps handing out keys when its primary HSM token fails mid-load: every key is wrapped
// under the root keys of both tokens, and retrieval goes on from the standby. The primary fails
// through the fault-injecting PKCS#11 module (tests/support/fault_pkcs11.h) over real SoftHSM2
// tokens; the key cache is off, so every retrieval unwraps in a token.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "../support/fault_pkcs11.h"
#include "../support/softhsm_sandbox.h"
#include "../support/test_dir.h"
#include "strongroom/client/kms_session.h"
#include "strongroom/kms/kms_service.h"
#include "strongroom/kms/kms_store.h"

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

}  // namespace
}  // namespace strongroom::kms
