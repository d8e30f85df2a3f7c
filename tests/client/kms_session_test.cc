// The KMS protocol's client side against the real KMS service (in process, SoftHSM2 token).
#include "strongroom/client/kms_session.h"

#include <gtest/gtest.h>

#include "../support/softhsm_sandbox.h"
#include "../support/test_dir.h"
#include "strongroom/hsm/key_vault.h"
#include "strongroom/kms/kms_service.h"
#include "strongroom/kms/kms_store.h"

namespace strongroom::client {
namespace {

using Poco::JSON::Object;
using testing::kSoftHsmModule;
using testing::SoftHsmSandbox;

constexpr char kIssuer[] = "https://idp.acme.test";

class KmsSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string label = SoftHsmSandbox::Get().CreateToken(kSoftHsmModule);
    hsm::TokenConfig token;
    token.name = "primary";
    token.uri = SoftHsmSandbox::Get().Uri(kSoftHsmModule, label);
    vault_ = std::move(hsm::KeyVault::Open({{token}})).value();
    ASSERT_TRUE(vault_->InitRoot("acme").ok());
    ASSERT_TRUE(vault_->tokens()[0]->CreateIdentityKey("kms", 2048).ok());
    db_ = std::move(Database::OpenSqlite((dir_ / "kms.db").string(), kms::KmsStore::Migrations()))
              .value();
    issuer_key_ =
        std::make_unique<jose::EcKeyPair>(std::move(jose::EcKeyPair::Generate("idp-1")).value());
    TrustedIssuer issuer{kIssuer, "acme", {*issuer_key_->PublicKey()}};
    auto verifier = JwtVerifier::New({issuer}, "kms", std::chrono::seconds(30));
    service_ = std::move(kms::KmsService::New({"kms.acme.test", "kms", {}}, *vault_, *db_,
                                              std::move(*verifier)))
                   .value();
    info_ = std::make_unique<KmsInfo>(std::move(ParseKmsInfo(service_->InfoJson())).value());
  }

  std::string Token(const std::string& user) {
    return *MintJwt(*issuer_key_, {kIssuer, user, "kms", std::time(nullptr) - 5, 3600});
  }

  KmsTransport Direct() {
    return [this](const std::string& message) -> Result<KmsResponse> {
      kms::KmsReply reply = service_->Handle(message);
      last_body_ = reply.body;
      return KmsResponse{reply.http_status, reply.content_type, reply.body};
    };
  }

  std::unique_ptr<hsm::KeyVault> vault_;
  testing::TestDir dir_;
  std::unique_ptr<Database> db_;
  std::unique_ptr<jose::EcKeyPair> issuer_key_;
  std::unique_ptr<kms::KmsService> service_;
  std::unique_ptr<KmsInfo> info_;
  std::string last_body_;
};

TEST_F(KmsSessionTest, InfoNamesTheClusterAndItsRsaKey) {
  EXPECT_EQ(info_->cluster, "kms://kms.acme.test");
  EXPECT_EQ(info_->rsa_public_key.type(), jose::PublicJwk::Type::kRsa);
  EXPECT_FALSE(ParseKmsInfo(R"({"kmsCluster":"https://x","rsaPublicKey":{}})").ok());
  EXPECT_FALSE(ParseKmsInfo("not json").ok());
}

TEST_F(KmsSessionTest, OpensAChannelAndCreatesAndRetrievesAKey) {
  auto session = KmsSession::Open(*info_, "cli-1", Token("alice"), Direct());
  ASSERT_TRUE(session.ok()) << session.error().ToString();
  EXPECT_EQ((*session)->ephemeral_uri().rfind("kms://kms.acme.test/ecdhe/", 0), 0u);
  EXPECT_GT((*session)->expires_ms(), 0);

  auto ping = (*session)->Call("update", "/ping");
  ASSERT_TRUE(ping.ok()) << ping.error().ToString();
  EXPECT_EQ((*ping)->getValue<int>("status"), 200);

  Object count;
  count.set("count", 2);
  auto created = (*session)->Call("create", "/keys", count);
  ASSERT_TRUE(created.ok());
  ASSERT_EQ((*created)->getValue<int>("status"), 201);
  auto keys = (*created)->getArray("keys");
  ASSERT_EQ(keys->size(), 2u);
  const std::string uri = keys->getObject(0)->getValue<std::string>("uri");
  auto retrieved = (*session)->Call("retrieve", uri);
  ASSERT_TRUE(retrieved.ok());
  EXPECT_EQ((*retrieved)->getObject("key")->getObject("jwk")->getValue<std::string>("k"),
            keys->getObject(0)->getObject("jwk")->getValue<std::string>("k"));
}

TEST_F(KmsSessionTest, AnswersForAnotherRequestOrUnderAnotherKeyAreRefused) {
  auto alice = std::move(KmsSession::Open(*info_, "cli-1", Token("alice"), Direct())).value();
  auto bob = std::move(KmsSession::Open(*info_, "cli-2", Token("bob"), Direct())).value();
  auto sealed = alice->Seal("update", "/ping");
  ASSERT_TRUE(sealed.ok());
  kms::KmsReply reply = service_->Handle(*sealed);
  KmsResponse response{reply.http_status, reply.content_type, reply.body};
  EXPECT_TRUE(alice->OpenAnswer(response).ok());
  EXPECT_EQ(alice->OpenAnswer(response, "some-other-request").error().code(), ErrorCode::kDataLoss);
  EXPECT_EQ(bob->OpenAnswer(response).error().code(), ErrorCode::kDataLoss);  // alice's channel
  KmsResponse altered = response;
  altered.body[altered.body.size() - 5] = altered.body[altered.body.size() - 5] == 'A' ? 'B' : 'A';
  EXPECT_EQ(alice->OpenAnswer(altered).error().code(), ErrorCode::kDataLoss);
}

TEST_F(KmsSessionTest, ClosedChannelIsRefusedByTheKms) {
  auto session = std::move(KmsSession::Open(*info_, "cli-1", Token("alice"), Direct())).value();
  auto sealed_before_close = session->Seal("update", "/ping");
  ASSERT_TRUE(sealed_before_close.ok());
  ASSERT_TRUE(session->Close().ok());
  EXPECT_FALSE(session->Call("update", "/ping").ok());  // the session knows it is closed
  kms::KmsReply replayed = service_->Handle(*sealed_before_close);
  KmsResponse response{replayed.http_status, replayed.content_type, replayed.body};
  auto refusal = ReadKmsRefusal(response, info_->rsa_public_key);
  ASSERT_TRUE(refusal.ok()) << refusal.error().ToString();
  ASSERT_TRUE(refusal->has_value());
  EXPECT_EQ((*refusal)->status, 401);
  EXPECT_NE((*refusal)->reason.find("deleted"), std::string::npos);
  auto opened = session->OpenAnswer(response);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().code(), ErrorCode::kUnauthenticated);
}

TEST_F(KmsSessionTest, ARefusalNotSignedByTheKmsIsNotBelieved) {
  auto session = std::move(KmsSession::Open(*info_, "cli-1", Token("alice"), Direct())).value();
  auto sealed = session->Seal("update", "/ping");
  ASSERT_TRUE(sealed.ok());
  ASSERT_TRUE(session->Close().ok());
  kms::KmsReply reply = service_->Handle(*sealed);
  std::string body = reply.body;
  body[body.size() - 5] = body[body.size() - 5] == 'A' ? 'B' : 'A';  // break the signature
  auto refusal =
      ReadKmsRefusal({reply.http_status, reply.content_type, body}, info_->rsa_public_key);
  EXPECT_FALSE(refusal.ok());
  // A sealed answer is no refusal.
  auto other = std::move(KmsSession::Open(*info_, "cli-2", Token("alice"), Direct())).value();
  kms::KmsReply sealed_answer = service_->Handle(*other->Seal("update", "/ping"));
  auto none =
      ReadKmsRefusal({sealed_answer.http_status, sealed_answer.content_type, sealed_answer.body},
                     info_->rsa_public_key);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST_F(KmsSessionTest, ABadBearerFailsToOpenWithUnauthenticated) {
  auto session = KmsSession::Open(*info_, "cli-1", "not-a-jwt", Direct());
  ASSERT_FALSE(session.ok());
  EXPECT_EQ(session.error().code(), ErrorCode::kUnauthenticated);
}

TEST_F(KmsSessionTest, AForgedEcdheAnswerIsRefused) {
  // A transport that answers with something not signed by the KMS's key.
  KmsTransport forged = [this](const std::string& message) -> Result<KmsResponse> {
    kms::KmsReply reply = service_->Handle(message);
    std::string body = reply.body;
    body[body.size() - 5] = body[body.size() - 5] == 'A' ? 'B' : 'A';  // break the signature
    return KmsResponse{reply.http_status, reply.content_type, body};
  };
  auto opened = KmsSession::Open(*info_, "cli-1", Token("alice"), forged);
  ASSERT_FALSE(opened.ok());
  // Altered on the way: DATA_LOSS (the CLI's exit 5), not the caller's bad input.
  EXPECT_EQ(opened.error().code(), ErrorCode::kDataLoss);
}

}  // namespace
}  // namespace strongroom::client
