// KmsContext against the real KMS service in process (SoftHSM2 token, SQLite): the identity
// checked against a CA, typed operations, channel renewal and renegotiation, retries with
// backoff (sleeps recorded, not slept), answers matched by requestId, sealed requests for
// embedding, and compliance retrievals on behalf of a user.
#include "strongroom/client/kms_context.h"

#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <sstream>

#include "../support/softhsm_sandbox.h"
#include "../support/test_dir.h"
#include "strongroom/hsm/key_vault.h"
#include "strongroom/kms/audit_log.h"
#include "strongroom/kms/identity_certificate.h"
#include "strongroom/kms/kms_service.h"
#include "strongroom/kms/kms_store.h"
#include "strongroom/kms/org_policy.h"
#include "test_pki.h"

namespace strongroom::client {
namespace {

using testing::kSoftHsmModule;
using testing::SoftHsmSandbox;

constexpr char kIssuer[] = "https://idp.acme.test";
constexpr char kCluster[] = "kms://kms.acme.test";

std::int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class KmsContextTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string label = SoftHsmSandbox::Get().CreateToken(kSoftHsmModule);
    hsm::TokenConfig token;
    token.name = "primary";
    token.uri = SoftHsmSandbox::Get().Uri(kSoftHsmModule, label);
    vault_ = std::move(hsm::KeyVault::Open({{token}})).value();
    ASSERT_TRUE(vault_->InitRoot("acme").ok());
    auto rsa = vault_->tokens()[0]->CreateIdentityKey("kms", 2048);
    ASSERT_TRUE(rsa.ok()) << rsa.error().ToString();

    // The identity chain: a test CA certifies the token's key for kms.acme.test.
    testing::TestCa ca = testing::TestCa::Make("Strongroom client test CA");
    const std::string ca_pem = testing::Pem(ca.cert.get());
    const std::string ca_key = testing::PrivateKeyPem(ca.key.get());
    auto chain_pem = kms::CertifyIdentityKey(
        *rsa, {"kms.acme.test", 2}, ca_pem,
        SecretBytes({reinterpret_cast<const std::uint8_t*>(ca_key.data()), ca_key.size()}));
    ASSERT_TRUE(chain_pem.ok()) << chain_pem.error().ToString();
    auto chain = kms::ParseIdentityChain(*chain_pem, *rsa);
    ASSERT_TRUE(chain.ok()) << chain.error().ToString();
    roots_ = (dir_ / "roots.pem").string();
    std::ofstream(roots_) << ca_pem;
    testing::TestCa stranger = testing::TestCa::Make("Another CA");
    other_roots_ = (dir_ / "other.pem").string();
    std::ofstream(other_roots_) << testing::Pem(stranger.cert.get());

    db_ = std::move(Database::OpenSqlite((dir_ / "kms.db").string(), kms::KmsStore::Migrations()))
              .value();
    issuer_key_ =
        std::make_unique<jose::EcKeyPair>(std::move(jose::EcKeyPair::Generate("idp-1")).value());
    TrustedIssuer issuer{kIssuer, "acme", {*issuer_key_->PublicKey()}};
    auto verifier = JwtVerifier::New({issuer}, "kms", std::chrono::seconds(30));
    kms_now_ = WallMs();
    auto service = kms::KmsService::New({"kms.acme.test", "kms", {*chain}}, *vault_, *db_,
                                        std::move(*verifier), [this] { return kms_now_.load(); });
    ASSERT_TRUE(service.ok()) << service.error().ToString();
    service_ = std::move(service).value();
    auto info = ParseKmsInfo(service_->InfoJson());
    ASSERT_TRUE(info.ok());
    info_ = std::make_unique<KmsInfo>(std::move(info).value());
    client_now_ = WallMs();
  }

  std::string Token(const std::string& user) {
    return *MintJwt(*issuer_key_, {kIssuer, user, "kms", std::time(nullptr) - 5, 3600});
  }

  // The KMS in process, behind a transport that counts calls and fails on request.
  KmsTransport Transport() {
    return [this](const std::string& message) -> Result<KmsResponse> {
      ++calls_;
      if (fail_next_ > 0) {
        --fail_next_;
        return Error(ErrorCode::kUnavailable, "connection refused (injected)");
      }
      if (busy_next_ > 0) {
        --busy_next_;
        return KmsResponse{503, "application/json", R"({"code":"busy","message":"later"})", 3};
      }
      kms::KmsReply reply = service_->Handle(message);
      if (lose_answer_next_ > 0) {  // it ran at the KMS; the answer never comes back
        --lose_answer_next_;
        return Error(ErrorCode::kUnavailable, "connection reset (injected)");
      }
      if (resend_next_ > 0) {  // as a transport that sends the same bytes again on a new connection
        --resend_next_;
        reply = service_->Handle(message);
      }
      KmsResponse response{reply.http_status, reply.content_type, reply.body};
      if (replay_ && last_answer_) return *last_answer_;
      last_answer_ = response;
      return response;
    };
  }

  int Replays() {
    kms::AuditFilter filter;
    auto records = kms::AuditLog::Query(*db_, filter);
    EXPECT_TRUE(records.ok());
    int n = 0;
    for (const auto& r : *records) n += r.action == "request.replay" ? 1 : 0;
    return n;
  }

  KmsContextOptions Options(const std::string& user, const std::string& roots = "") {
    KmsContextOptions options;
    options.client_id = "test-" + user;
    options.kms_token = StaticToken(Token(user));
    options.trust = {kCluster, roots.empty() ? roots_ : roots};
    options.now_ms = [this] { return client_now_.load(); };
    options.sleep = [this](std::chrono::milliseconds wait) { sleeps_.push_back(wait); };
    return options;
  }

  std::unique_ptr<KmsContext> Context(const std::string& user) {
    auto context = KmsContext::New(Options(user), *info_, Transport());
    EXPECT_TRUE(context.ok()) << context.error().ToString();
    return context.ok() ? std::move(context).value() : nullptr;
  }

  void SetComplianceOfficers(const std::vector<std::string>& officers) {
    kms::OrgPolicy policy;
    policy.org = "acme";
    policy.compliance_officers = officers;
    ASSERT_TRUE(db_->InTransaction([&](Poco::Data::Session& s) {
                     return kms::PolicyStore::Put(s, policy, kms_now_.load());
                   })
                    .ok());
  }

  std::unique_ptr<hsm::KeyVault> vault_;
  strongroom::testing::TestDir dir_;
  std::string roots_, other_roots_;
  std::unique_ptr<Database> db_;
  std::unique_ptr<jose::EcKeyPair> issuer_key_;
  std::unique_ptr<kms::KmsService> service_;
  std::unique_ptr<KmsInfo> info_;
  std::atomic<std::int64_t> kms_now_{0}, client_now_{0};
  int calls_ = 0, fail_next_ = 0, busy_next_ = 0, lose_answer_next_ = 0, resend_next_ = 0;
  bool replay_ = false;
  std::optional<KmsResponse> last_answer_;
  std::vector<std::chrono::milliseconds> sleeps_;
};

TEST_F(KmsContextTest, KeysResourcesAndAuthorizationsThroughTypedCalls) {
  auto alice = Context("alice"), bob = Context("bob"), carol = Context("carol");
  ASSERT_TRUE(alice && bob && carol);
  auto keys = alice->CreateKeys(3);
  ASSERT_TRUE(keys.ok()) << keys.error().ToString();
  ASSERT_EQ(keys->size(), 3u);
  for (const KmsKey& key : *keys) {
    EXPECT_FALSE(key.bound());
    EXPECT_EQ(key.key.size(), 32u);
    EXPECT_GT(key.bind_deadline_ms, kms_now_.load());
    EXPECT_EQ(key.uri.rfind(std::string(kCluster) + "/keys/", 0), 0u);
  }
  auto resource = alice->CreateResource({"bob"}, {(*keys)[0].uri});
  ASSERT_TRUE(resource.ok()) << resource.error().ToString();
  EXPECT_EQ(resource->key_uris, std::vector<std::string>{(*keys)[0].uri});

  auto for_bob = bob->RetrieveKey((*keys)[0].uri);
  ASSERT_TRUE(for_bob.ok()) << for_bob.error().ToString();
  EXPECT_TRUE(for_bob->bound());
  EXPECT_EQ(for_bob->resource_uri, resource->uri);
  EXPECT_GT(for_bob->stop_encrypting_ms, for_bob->bound_ms);
  EXPECT_TRUE(ConstantTimeEquals(for_bob->key.view(), (*keys)[0].key.view()));
  auto for_carol = carol->RetrieveKey((*keys)[0].uri);
  ASSERT_FALSE(for_carol.ok());
  EXPECT_EQ(for_carol.error().code(), ErrorCode::kPermissionDenied);

  auto bound = alice->BindKey((*keys)[1].uri, resource->uri);
  ASSERT_TRUE(bound.ok()) << bound.error().ToString();
  EXPECT_EQ(bound->resource_uri, resource->uri);
  EXPECT_GT(bound->stop_encrypting_ms, 0);
  auto rebound = alice->BindKey((*keys)[1].uri, resource->uri);
  ASSERT_FALSE(rebound.ok());  // never re-bound; a refusal is final, not retried
  EXPECT_EQ(rebound.error().code(), ErrorCode::kAlreadyExists) << rebound.error().ToString();

  kms_now_ += 1000;  // a later bind date than the first key's
  ASSERT_TRUE(alice->BindKey((*keys)[2].uri, resource->uri).ok());
  auto listed = bob->RetrieveResourceKeys(resource->uri, {});
  ASSERT_TRUE(listed.ok()) << listed.error().ToString();
  ASSERT_EQ(listed->size(), 3u);
  EXPECT_EQ((*listed)[0].uri, (*keys)[2].uri);  // newest bind first

  auto added = alice->Authorize(resource->uri, {"carol"});
  ASSERT_TRUE(added.ok()) << added.error().ToString();
  ASSERT_EQ(added->size(), 1u);
  EXPECT_EQ((*added)[0].auth_id, "carol");
  EXPECT_TRUE(carol->RetrieveKey((*keys)[0].uri).ok());
  auto read = alice->RetrieveResource(resource->uri);
  ASSERT_TRUE(read.ok()) << read.error().ToString();
  EXPECT_EQ(read->authorizations.size(), 3u);

  auto removed = alice->DeleteAuthorization(resource->uri, "carol");
  ASSERT_TRUE(removed.ok()) << removed.error().ToString();
  EXPECT_EQ(removed->auth_id, "carol");
  EXPECT_FALSE(carol->RetrieveKey((*keys)[0].uri).ok());
  EXPECT_FALSE(alice->DeleteAuthorization(resource->uri, "carol?authId=bob").ok());
  EXPECT_EQ(alice->stats().renegotiations, 0);
  EXPECT_EQ(alice->stats().retries, 0);
}

TEST_F(KmsContextTest, AuthIdsAreSentPercentEncoded) {
  auto alice = Context("alice"), dave = Context("dave");
  ASSERT_TRUE(alice && dave);
  auto keys = alice->CreateKeys(1);
  ASSERT_TRUE(keys.ok()) << keys.error().ToString();
  auto team = alice->CreateResource({"dave"}, {});
  ASSERT_TRUE(team.ok()) << team.error().ToString();
  // Nothing in an authId changes what the URI names, nor is read as anything but itself.
  const std::vector<std::string> odd = {"a+b@acme.test", "x&authId=alice", "what?#% zoë",
                                        "carol%40acme.test"};
  std::vector<std::string> members = odd;
  members.push_back(team->uri);
  auto room = alice->CreateResource(members, {(*keys)[0].uri});
  ASSERT_TRUE(room.ok()) << room.error().ToString();
  ASSERT_TRUE(dave->RetrieveKey((*keys)[0].uri).ok());
  for (const std::string& auth_id : odd) {
    auto removed = alice->DeleteAuthorization(room->uri, auth_id);
    ASSERT_TRUE(removed.ok()) << auth_id << ": " << removed.error().ToString();
    EXPECT_EQ(removed->auth_id, auth_id);
  }
  auto unlent = alice->DeleteAuthorization(room->uri, team->uri);
  ASSERT_TRUE(unlent.ok()) << unlent.error().ToString();
  EXPECT_EQ(unlent->auth_id, team->uri);
  EXPECT_FALSE(dave->RetrieveKey((*keys)[0].uri).ok());

  auto sealed = alice->SealDeleteAuthorization(room->uri, "alice");
  ASSERT_TRUE(sealed.ok()) << sealed.error().ToString();
  EXPECT_EQ(sealed->what,
            "delete " + room->uri.substr(std::string(kCluster).size()) + "/authorizations");
  // What cannot be sent is refused before anything is.
  const int calls = calls_;
  EXPECT_FALSE(alice->DeleteAuthorization((*keys)[0].uri, "dave").ok());  // not a resource
  EXPECT_FALSE(alice->DeleteAuthorization(room->uri, "").ok());
  EXPECT_FALSE(alice->DeleteAuthorization(room->uri, "a\nb").ok());
  EXPECT_FALSE(alice->DeleteAuthorization(room->uri, std::string(400, '&')).ok());  // too long
  EXPECT_EQ(calls_, calls);
}

TEST_F(KmsContextTest, AChannelTheKmsExpiredIsRenegotiatedOnce) {
  auto alice = Context("alice");
  ASSERT_TRUE(alice);
  ASSERT_TRUE(alice->Ping().ok());
  EXPECT_EQ(alice->stats().channels_opened, 1);
  // The KMS's clock runs past the channel's lifetime; the client's does not notice.
  kms_now_ += 2 * 3600 * 1000;
  Status ping = alice->Ping();
  ASSERT_TRUE(ping.ok()) << ping.error().ToString();
  EXPECT_EQ(alice->stats().renegotiations, 1);
  EXPECT_EQ(alice->stats().channels_opened, 2);
  EXPECT_TRUE(sleeps_.empty());  // renegotiation does not back off
}

TEST_F(KmsContextTest, AChannelIsRenewedBeforeItExpires) {
  auto alice = Context("alice");
  ASSERT_TRUE(alice);
  ASSERT_TRUE(alice->Ping().ok());
  const int calls = calls_;
  ASSERT_TRUE(alice->Ping().ok());
  EXPECT_EQ(calls_, calls + 1);  // the same channel: one message
  // 30 s left of the channel's hour, less than renew_before (60 s).
  client_now_ += 3600 * 1000 - 30 * 1000;
  kms_now_ += 3600 * 1000 - 30 * 1000;
  ASSERT_TRUE(alice->Ping().ok());
  EXPECT_EQ(alice->stats().channels_opened, 2);
  EXPECT_EQ(alice->stats().renegotiations, 0);  // renewed ahead, never refused
}

TEST_F(KmsContextTest, TransportFailuresAndBusyAnswersAreRetriedWithBackoff) {
  auto alice = Context("alice");
  ASSERT_TRUE(alice);
  ASSERT_TRUE(alice->Connect().ok());
  fail_next_ = 2;
  busy_next_ = 1;
  auto keys = alice->CreateKeys(1);
  ASSERT_TRUE(keys.ok()) << keys.error().ToString();
  EXPECT_EQ(alice->stats().retries, 3);
  ASSERT_EQ(sleeps_.size(), 3u);
  EXPECT_GE(sleeps_[0].count(), 50);  // jittered in [initial/2, initial]
  EXPECT_LE(sleeps_[0].count(), 100);
  EXPECT_GE(sleeps_[1].count(), 100);  // doubled
  EXPECT_LE(sleeps_[1].count(), 200);
  EXPECT_GE(sleeps_[2].count(), 3000);  // the busy answer's Retry-After: 3

  // A KMS that never answers: max_attempts sends, then UNAVAILABLE.
  sleeps_.clear();
  const int calls = calls_;
  fail_next_ = 100;
  auto down = alice->CreateKeys(1);
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.error().code(), ErrorCode::kUnavailable);
  EXPECT_EQ(calls_ - calls, 5);
  EXPECT_EQ(sleeps_.size(), 4u);
  for (auto wait : sleeps_) EXPECT_LE(wait.count(), 2000);  // capped at max_backoff
}

TEST_F(KmsContextTest, AnAnswerToAnotherRequestIsRefusedNotRetried) {
  auto alice = Context("alice");
  ASSERT_TRUE(alice);
  ASSERT_TRUE(alice->Ping().ok());
  replay_ = true;  // the transport answers every request with the previous answer
  const int calls = calls_;
  auto keys = alice->CreateKeys(1);
  ASSERT_FALSE(keys.ok());
  EXPECT_EQ(keys.error().code(), ErrorCode::kDataLoss);
  EXPECT_NE(keys.error().message().find("another request"), std::string::npos);
  EXPECT_EQ(calls_, calls + 1);
}

TEST_F(KmsContextTest, SealedRequestsOpenOnTheirChannelEvenAfterARenewal) {
  auto alice = Context("alice");
  ASSERT_TRUE(alice);
  auto keys = alice->CreateKeys(2);
  ASSERT_TRUE(keys.ok());
  auto resource = alice->CreateResource({}, {(*keys)[0].uri});
  ASSERT_TRUE(resource.ok());
  auto sealed = alice->SealBindKey((*keys)[1].uri, resource->uri);
  ASSERT_TRUE(sealed.ok()) << sealed.error().ToString();
  EXPECT_EQ(sealed->what.rfind("update /keys/", 0), 0u) << sealed->what;
  const std::string first_channel = sealed->session->ephemeral_uri();

  alice->Renegotiate();
  ASSERT_TRUE(alice->Ping().ok());  // a new channel
  auto again = alice->SealAuthorize(resource->uri, {"bob"});
  ASSERT_TRUE(again.ok());
  EXPECT_NE(again->session->ephemeral_uri(), first_channel);

  // What the core would do: relay the sealed message, return the KMS's answer as it came.
  kms::KmsReply reply = service_->Handle(sealed->message);
  auto opened = alice->OpenAnswer(*sealed, {reply.http_status, reply.content_type, reply.body});
  ASSERT_TRUE(opened.ok()) << opened.error().ToString();
  EXPECT_EQ((*opened)->getObject("key")->getValue<std::string>("resourceUri"), resource->uri);
  // The answer to one sealed request does not pass for another's.
  EXPECT_FALSE(alice->OpenAnswer(*again, {reply.http_status, reply.content_type, reply.body}).ok());
  // A refusal inside a sealed answer is the operation's error.
  auto sealed_again = alice->SealBindKey((*keys)[1].uri, resource->uri);
  kms::KmsReply refused = service_->Handle(sealed_again->message);
  auto refusal =
      alice->OpenAnswer(*sealed_again, {refused.http_status, refused.content_type, refused.body});
  ASSERT_FALSE(refusal.ok());
  EXPECT_EQ(refusal.error().code(), ErrorCode::kAlreadyExists);
}

TEST_F(KmsContextTest, OnBehalfOfRetrievalsAreForComplianceOfficersOnly) {
  SetComplianceOfficers({"officer"});
  auto alice = Context("alice"), officer = Context("officer"), mallory = Context("mallory");
  ASSERT_TRUE(alice && officer && mallory);
  auto keys = alice->CreateKeys(1);
  ASSERT_TRUE(keys.ok());
  ASSERT_TRUE(alice->CreateResource({}, {(*keys)[0].uri}).ok());
  EXPECT_FALSE(officer->RetrieveKey((*keys)[0].uri).ok());  // not for themselves
  auto for_alice = officer->RetrieveKey((*keys)[0].uri, "alice");
  ASSERT_TRUE(for_alice.ok()) << for_alice.error().ToString();
  EXPECT_TRUE(ConstantTimeEquals(for_alice->key.view(), (*keys)[0].key.view()));
  auto impostor = mallory->RetrieveKey((*keys)[0].uri, "alice");
  ASSERT_FALSE(impostor.ok());
  EXPECT_EQ(impostor.error().code(), ErrorCode::kPermissionDenied);
}

TEST_F(KmsContextTest, AnUntrustedIdentityIsRefusedBeforeAnythingIsSent) {
  auto refused = KmsContext::New(Options("alice", other_roots_), *info_, Transport());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kUnauthenticated);
  KmsContextOptions wrong_cluster = Options("alice");
  wrong_cluster.trust.cluster = "kms://kms.globex.test";
  EXPECT_FALSE(KmsContext::New(wrong_cluster, *info_, Transport()).ok());
  EXPECT_EQ(calls_, 0);
}

// Writes whose answer was lost on the way back: the SDK sends the write again (sealed afresh) and,
// when the KMS says it is done already, asks the KMS's state instead of failing or doing it twice.
TEST_F(KmsContextTest, AWriteWhoseAnswerWasLostEndsAsDoneOnce) {
  auto alice = Context("alice");
  ASSERT_TRUE(alice);
  auto keys = alice->CreateKeys(2);
  ASSERT_TRUE(keys.ok());
  const std::string resource = alice->NewResourceUri();
  lose_answer_next_ = 1;
  auto created = alice->CreateResource({"bob"}, {(*keys)[0].uri}, resource);
  ASSERT_TRUE(created.ok()) << created.error().ToString();
  EXPECT_EQ(created->uri, resource);

  lose_answer_next_ = 1;
  auto bound = alice->BindKey((*keys)[1].uri, resource);
  ASSERT_TRUE(bound.ok()) << bound.error().ToString();
  EXPECT_EQ(bound->resource_uri, resource);

  lose_answer_next_ = 1;
  auto added = alice->Authorize(resource, {"carol"});
  ASSERT_TRUE(added.ok()) << added.error().ToString();
  ASSERT_EQ(added->size(), 1u);
  EXPECT_EQ((*added)[0].auth_id, "carol");

  lose_answer_next_ = 1;
  auto removed = alice->DeleteAuthorization(resource, "carol");
  ASSERT_TRUE(removed.ok()) << removed.error().ToString();
  auto now = alice->RetrieveResource(resource);
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->authorizations.size(), 2u);  // alice and bob; carol once added, once removed
}

// A transport that resends the very same bytes (as HttpsClient does once on a dead keep-alive
// connection) meets the KMS's replay refusal; every operation still ends as the user meant.
TEST_F(KmsContextTest, AResentMessageIsRefusedAsAReplayAndTheOperationStillSucceeds) {
  auto alice = Context("alice");
  ASSERT_TRUE(alice);
  // A resent create /ecdhe is refused (signed 409) before the HSM decrypts it; the channel the
  // first copy opened is lost with its answer, and the SDK opens another after a backoff.
  resend_next_ = 1;
  ASSERT_TRUE(alice->Connect().ok());
  EXPECT_EQ(alice->stats().channels_opened, 1);
  EXPECT_EQ(sleeps_.size(), 1u);
  sleeps_.clear();

  resend_next_ = 1;
  auto keys = alice->CreateKeys(2);
  ASSERT_TRUE(keys.ok()) << keys.error().ToString();
  EXPECT_EQ(Replays(), 1);
  const std::string resource = alice->NewResourceUri();
  resend_next_ = 1;
  ASSERT_TRUE(alice->CreateResource({"bob"}, {(*keys)[0].uri}, resource).ok());
  resend_next_ = 1;
  auto bound = alice->BindKey((*keys)[1].uri, resource);
  ASSERT_TRUE(bound.ok()) << bound.error().ToString();
  resend_next_ = 1;
  ASSERT_TRUE(alice->Authorize(resource, {"carol"}).ok());
  resend_next_ = 1;
  ASSERT_TRUE(alice->DeleteAuthorization(resource, "carol").ok());
  resend_next_ = 1;
  auto key = alice->RetrieveKey((*keys)[0].uri);  // a read: sealed afresh at once
  ASSERT_TRUE(key.ok()) << key.error().ToString();
  resend_next_ = 1;
  ASSERT_TRUE(alice->Ping().ok());
  EXPECT_EQ(Replays(), 7);
  EXPECT_TRUE(sleeps_.empty());  // a replay refusal is no reason to back off

  auto now = alice->RetrieveResource(resource);
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->key_uris.size(), 2u);
  EXPECT_EQ(now->authorizations.size(), 2u);
}

// Issue 14: a search key in an answer is used only if it is what it says: its version in its URI,
// an oct JWK of 32 bytes whose kid is the URI.
TEST(KmsSearchKeyAnswerTest, ASearchKeyIsCheckedBeforeUse) {
  const std::string k(43, 'A');  // base64url of 32 zero bytes (but the last bits)
  auto answer = [&](const std::string& uri, const Poco::Dynamic::Var& version,
                    const std::string& kid, const std::string& key) {
    Poco::JSON::Object jwk;
    jwk.set("kty", "oct");
    jwk.set("kid", kid);
    jwk.set("k", key);
    Poco::JSON::Object out;
    out.set("uri", uri);
    out.set("version", version);
    out.set("jwk", jwk);
    out.set("createDate", "2027-01-02T03:04:05.000Z");
    // As an answer arrives: parsed from its JSON text (members are objects by pointer).
    std::ostringstream text;
    out.stringify(text);
    Poco::JSON::Parser parser;
    return *parser.parse(text.str()).extract<Poco::JSON::Object::Ptr>();
  };
  const std::string uri = "kms://kms.acme.test/search-keys/acme/2";
  auto good = ParseKmsSearchKey(answer(uri, 2, uri, k));
  ASSERT_TRUE(good.ok()) << good.error().ToString();
  EXPECT_EQ(good->version, 2u);
  EXPECT_EQ(good->key.size(), 32u);
  for (const auto& [what, bad] : std::vector<std::pair<std::string, Poco::JSON::Object>>{
           {"another version", answer(uri, 3, uri, k)},
           {"a boolean version", answer("kms://kms.acme.test/search-keys/acme/1", true,
                                        "kms://kms.acme.test/search-keys/acme/1", k)},
           {"a content key's URI",
            answer("kms://kms.acme.test/keys/2", 2, "kms://kms.acme.test/keys/2", k)},
           {"another kid", answer(uri, 2, "kms://kms.acme.test/search-keys/acme/1", k)},
           {"a short key", answer(uri, 2, uri, std::string(22, 'A'))}}) {
    auto parsed = ParseKmsSearchKey(bad);
    ASSERT_FALSE(parsed.ok()) << what;
    EXPECT_EQ(parsed.error().code(), ErrorCode::kInvalidArgument) << what;
  }
}

}  // namespace
}  // namespace strongroom::client
