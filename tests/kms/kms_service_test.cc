// The KMS protocol endpoint: the client side is written here with the JOSE module, as a client of
// the protocol would. The vault is the in-memory one (tests/support/fake_vault.h) in
// kms_protocol_tests, which needs no SoftHSM2; kms_tests runs some of the same tests on a real
// SoftHSM2 token (tests/support/test_vault.h). The HSM's failures are injected through the fake
// (KmsVaultFaultTest).
#include "strongroom/kms/kms_service.h"

#include <Poco/DateTimeFormat.h>
#include <Poco/DateTimeFormatter.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/URI.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "../support/fake_vault.h"
#include "../support/kms_database.h"
#include "../support/test_dir.h"
#include "../support/test_vault.h"
#include "../support/tool_steps.h"
#include "strongroom/kms/audit_log.h"
#include "strongroom/kms/key_cache.h"
#include "strongroom/kms/kms_store.h"
#include "strongroom/kms/org_policy.h"
#include "strongroom/kms/search_keys.h"

namespace strongroom::kms {
namespace {

using Poco::JSON::Object;

constexpr char kIssuer[] = "https://idp.acme.test";
constexpr char kGlobexIssuer[] = "https://idp.globex.test";
constexpr std::int64_t kStartMs = 1'800'000'000'000;

std::span<const std::uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

Object::Ptr Parse(std::string_view text) {
  Poco::JSON::Parser parser;
  return parser.parse(std::string(text)).extract<Object::Ptr>();
}

std::string Json(const Object& o) {
  std::ostringstream out;
  o.stringify(out);
  return out.str();
}

std::string Rfc3339ForTest(std::int64_t ms) {
  return Poco::DateTimeFormatter::format(Poco::Timestamp(ms * 1000),
                                         Poco::DateTimeFormat::ISO8601_FRAC_FORMAT);
}

struct Channel {
  std::string uri;
  SecretBytes key;
};

// On both engines (tests/support/kms_database.h).
class KmsServiceTest : public ::testing::TestWithParam<Database::Engine> {
 protected:
  // The vault the service runs on: the test program's (test_vault.h), or a fixture's own.
  virtual std::unique_ptr<hsm::Vault> MakeVault() { return testing::NewTestVault(); }

  void SetUp() override {
    vault_ = MakeVault();
    ASSERT_TRUE(vault_);

    Result<std::string> target = testing::NewKmsDatabase(GetParam(), dir_.path());
    ASSERT_TRUE(target.ok()) << target.error().ToString();
    target_ = *target;
    auto db = testing::OpenKmsDatabase(GetParam(), target_);
    ASSERT_TRUE(db.ok()) << db.error().ToString();
    db_ = std::move(db).value();

    issuer_key_ =
        std::make_unique<jose::EcKeyPair>(std::move(jose::EcKeyPair::Generate("idp-1")).value());
    globex_key_ =
        std::make_unique<jose::EcKeyPair>(std::move(jose::EcKeyPair::Generate("idp-g")).value());
    service_ = NewService();
    ASSERT_TRUE(service_);
  }

  std::unique_ptr<KmsService> NewService(KmsServiceHooks hooks = {},
                                         std::size_t max_requests = kMaxRequestsPerChannel) {
    TrustedIssuer issuer{kIssuer, "acme", {*issuer_key_->PublicKey()}, {"acme.test"}};
    TrustedIssuer globex{kGlobexIssuer, "globex", {*globex_key_->PublicKey()}, {"globex.test"}};
    auto verifier = JwtVerifier::New({issuer, globex}, "kms", std::chrono::seconds(30),
                                     [this] { return now_ms_.load() / 1000; });
    KmsServiceConfig config{"kms.acme.test", "kms", {}};
    config.max_requests_per_channel = max_requests;
    auto service = KmsService::New(
        config, *vault_, *db_, std::move(*verifier), [this] { return now_ms_.load(); }, hooks);
    EXPECT_TRUE(service.ok()) << service.error().ToString();
    return service.ok() ? std::move(service).value() : nullptr;
  }

  // Users whose name ends in "@globex.test" come from globex's identity provider.
  std::string Token(const std::string& user, const std::string& audience = "kms") {
    const bool globex = user.ends_with("@globex.test");
    return *MintJwt(
        globex ? *globex_key_ : *issuer_key_,
        {globex ? kGlobexIssuer : kIssuer, user, audience, now_ms_.load() / 1000 - 5, 7200});
  }

  Object Request(const std::string& method, const std::string& uri, const std::string& bearer) {
    Object request;
    Object client, credential;
    credential.set("bearer", bearer);
    client.set("clientId", "test-client");
    client.set("credential", credential);
    request.set("client", client);
    request.set("method", method);
    request.set("uri", uri);
    request.set("requestId", "req-" + std::to_string(++request_counter_));
    return request;
  }

  // create /ecdhe; returns the verified answer.
  Object::Ptr CreateEcdhe(const std::string& bearer, jose::EcKeyPair& mine) {
    Object request = Request("create", "/ecdhe", bearer);
    request.set("jwk", Parse(*mine.PublicJwkJson()));
    auto jwe =
        jose::EncryptRsaOaepJwe(service_->PublicKey(), "kms://kms.acme.test", Bytes(Json(request)));
    EXPECT_TRUE(jwe.ok());
    KmsReply reply = service_->Handle(*jwe);
    EXPECT_EQ(reply.content_type, "application/jose") << reply.body;
    // draft-02 4.6: the key-agreement answer names the static key by its well-known kid.
    EXPECT_EQ(jose::PeekHeader(reply.body)->kid, "kms://kms.acme.test");
    const std::string_view ps256[] = {"PS256"};
    auto verified = jose::VerifyJws(reply.body, service_->PublicKey(), ps256);
    EXPECT_TRUE(verified.ok()) << (verified.ok() ? "" : verified.error().ToString());
    return verified.ok() ? Parse(verified->payload()) : nullptr;
  }

  Channel Open(const std::string& user) {
    auto mine = jose::EcKeyPair::Generate();
    Object::Ptr answer = CreateEcdhe(Token(user), *mine);
    EXPECT_EQ(answer->getValue<int>("status"), 201) << Json(*answer);
    Object::Ptr key = answer->getObject("key");
    auto theirs = jose::PublicJwk::Parse(Json(*key->getObject("jwk")));
    auto shared = jose::DeriveEphemeralKey(*mine, *theirs);
    return {key->getValue<std::string>("uri"), std::move(*shared)};
  }

  std::string Seal(const Channel& channel, const Object& request) {
    return *jose::EncryptDir(channel.key.view(), channel.uri, Bytes(Json(request)));
  }

  // Sends a sealed request; returns the opened answer, or nullptr with the plain reply.
  Object::Ptr Send(const Channel& channel, const Object& request, KmsReply* raw = nullptr) {
    return Deliver(channel, Seal(channel, request), raw);
  }

  // Delivers sealed bytes (the same bytes, as often as a relay likes).
  Object::Ptr Deliver(const Channel& channel, const std::string& sealed, KmsReply* raw = nullptr) {
    KmsReply reply = service_->Handle(sealed);
    if (raw) *raw = reply;
    if (reply.content_type != "application/jose") return nullptr;
    if (jose::PeekHeader(reply.body)->part_count == 3) return nullptr;  // a signed refusal
    auto opened =
        jose::DecryptDir(reply.body, [&](const jose::JoseHeader& h) -> Result<SecretBytes> {
          if (h.kid != channel.uri) return Error(ErrorCode::kInvalidArgument, "kid");
          return SecretBytes(channel.key.view());
        });
    EXPECT_TRUE(opened.ok());
    return opened.ok() ? Parse(opened->plaintext.as_string_view()) : nullptr;
  }

  // A refusal signed with the static key (draft-02, Error Messages): HTTP `status`, a PS256 JWS
  // with kid = the cluster over {status, reason}, and no requestId (one signature serves many).
  void ExpectSignedRefusal(const KmsReply& reply, int status, const std::string& reason_part) {
    EXPECT_EQ(reply.http_status, status);
    ASSERT_EQ(reply.content_type, "application/jose") << reply.body;
    auto header = jose::PeekHeader(reply.body);
    ASSERT_TRUE(header.ok());
    EXPECT_EQ(header->part_count, 3);
    EXPECT_EQ(header->kid, "kms://kms.acme.test");
    const std::string_view ps256[] = {"PS256"};
    auto verified = jose::VerifyJws(reply.body, service_->PublicKey(), ps256);
    ASSERT_TRUE(verified.ok()) << verified.error().ToString();
    Object::Ptr payload = Parse(verified->payload());
    EXPECT_EQ(payload->getValue<int>("status"), status);
    EXPECT_NE(payload->getValue<std::string>("reason").find(reason_part), std::string::npos)
        << Json(*payload);
    EXPECT_FALSE(payload->has("requestId"));
  }

  std::int64_t Count(const std::string& table) {
    std::int64_t n = -1;
    EXPECT_TRUE(db_->WithSession([&](Poco::Data::Session& s) -> Status {
                     SqlStatement count = Database::Prepare(s, "SELECT COUNT(*) FROM " + table);
                     if (count.Next()) n = count.Int(0);
                     return OkStatus();
                   })
                    .ok());
    return n;
  }

  // The [kms] database setting, or the [database] section, that names the test's database.
  std::string DatabaseConfig() const {
    return GetParam() == Database::Engine::kPostgres
               ? "[database]\nengine = postgresql\nconninfo = " + target_ + "\n"
               : "[kms]\ndatabase = " + target_ + "\n";
  }

  std::unique_ptr<hsm::Vault> vault_;
  testing::TestDir dir_;
  std::string target_;  // the SQLite file or the PostgreSQL connection string
  std::unique_ptr<Database> db_;
  std::unique_ptr<jose::EcKeyPair> issuer_key_;
  std::unique_ptr<jose::EcKeyPair> globex_key_;
  std::unique_ptr<KmsService> service_;
  std::atomic<std::int64_t> now_ms_{kStartMs};
  int request_counter_ = 0;
};

INSTANTIATE_TEST_SUITE_P(Engines, KmsServiceTest, testing::kBothEngines, testing::EngineName);

TEST_P(KmsServiceTest, InfoPublishesTheClusterAndItsRsaKey) {
  Object::Ptr info = Parse(service_->InfoJson());
  EXPECT_EQ(info->getValue<std::string>("kmsCluster"), "kms://kms.acme.test");
  Object::Ptr key = info->getObject("rsaPublicKey");
  ASSERT_TRUE(key);
  EXPECT_EQ(key->getValue<std::string>("kty"), "RSA");
  EXPECT_EQ(key->getValue<std::string>("kid"), "kms://kms.acme.test");
}

TEST_P(KmsServiceTest, EcdheChannelCarriesAPing) {
  Channel channel = Open("alice@acme.test");
  EXPECT_EQ(channel.uri.rfind("kms://kms.acme.test/ecdhe/", 0), 0u);
  Object ping = Request("update", "/ping", Token("alice@acme.test"));
  Object::Ptr answer = Send(channel, ping);
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->getValue<int>("status"), 200);
  EXPECT_EQ(answer->getValue<std::string>("requestId"), ping.getValue<std::string>("requestId"));
  // draft-02 4.7.12: a ping is safe; it leaves no audit record.
  const std::int64_t audited = Count("audit");
  EXPECT_EQ(
      Send(channel, Request("update", "/ping", Token("alice@acme.test")))->getValue<int>("status"),
      200);
  EXPECT_EQ(Count("audit"), audited);
}

TEST_P(KmsServiceTest, DeletedEphemeralKeyIsNeverAcceptedAgain) {
  Channel channel = Open("alice@acme.test");
  Object::Ptr deleted = Send(channel, Request("delete", channel.uri, Token("alice@acme.test")));
  ASSERT_TRUE(deleted);
  EXPECT_EQ(deleted->getValue<int>("status"), 204);
  EXPECT_FALSE(deleted->has("key"));  // draft-02 4.7.2
  KmsReply raw;
  EXPECT_EQ(Send(channel, Request("update", "/ping", Token("alice@acme.test")), &raw), nullptr);
  ExpectSignedRefusal(raw, 401, "deleted");
}

TEST_P(KmsServiceTest, ExpiredEphemeralKeyIsRefused) {
  Channel channel = Open("alice@acme.test");
  now_ms_ += 3600 * 1000;
  KmsReply raw;
  EXPECT_EQ(Send(channel, Request("update", "/ping", Token("alice@acme.test")), &raw), nullptr);
  ExpectSignedRefusal(raw, 401, "expired");
}

TEST_P(KmsServiceTest, CoreTokenAndOtherUsersAreRefused) {
  auto mine = jose::EcKeyPair::Generate();
  Object::Ptr answer = CreateEcdhe(Token("alice@acme.test", "core"), *mine);
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->getValue<int>("status"), 401);
  EXPECT_FALSE(answer->has("key"));  // draft-02 4.7.1: no key agreement after a failed check
  EXPECT_EQ(Count("ephemeral_keys"), 0);
  Channel channel = Open("alice@acme.test");
  Object::Ptr foreign = Send(channel, Request("update", "/ping", Token("bob@acme.test")));
  ASSERT_TRUE(foreign);
  EXPECT_EQ(foreign->getValue<int>("status"), 403);
}

TEST_P(KmsServiceTest, MalformedMessagesGetClearErrorsAndChangeNothing) {
  EXPECT_EQ(service_->Handle("").http_status, 413);
  EXPECT_EQ(service_->Handle("not.a.jwe").http_status, 400);
  EXPECT_EQ(service_->Handle(std::string(kMaxKmsMessageBytes + 1, 'a')).http_status, 413);
  std::string none_header = jose::Base64UrlEncode(std::string(R"({"alg":"none"})"));
  EXPECT_EQ(service_->Handle(none_header + "....").http_status, 400);
  auto stranger =
      jose::EncryptDir(SecretBytes::Random(32).view(), "kms://kms.acme.test/ecdhe/x", Bytes("{}"));
  KmsReply unknown = service_->Handle(*stranger);
  ExpectSignedRefusal(unknown, 401, "unknown");
  auto to_kms = jose::EncryptRsaOaepJwe(service_->PublicKey(), std::nullopt, Bytes("{}"));
  std::string tampered = *to_kms;
  tampered[tampered.size() - 3] = tampered[tampered.size() - 3] == 'A' ? 'B' : 'A';
  EXPECT_EQ(service_->Handle(tampered).http_status, 400);
  // A well-sealed request that is not a request gets a sealed 400, and a good channel still works.
  Channel channel = Open("alice@acme.test");
  Object not_request;
  not_request.set("hello", "world");
  Object::Ptr refused = Send(channel, not_request);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->getValue<int>("status"), 400);
  Object::Ptr unknown_op = Send(channel, Request("explode", "/keys", Token("alice@acme.test")));
  EXPECT_EQ(unknown_op->getValue<int>("status"), 404);
}

TEST_P(KmsServiceTest, ChannelsSurviveARestart) {
  Channel channel = Open("alice@acme.test");
  service_ = NewService();  // a new process would see the same database and token
  Object::Ptr answer = Send(channel, Request("update", "/ping", Token("alice@acme.test")));
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->getValue<int>("status"), 200);
}

class KmsKeysTest : public KmsServiceTest {
 protected:
  Object::Ptr Call(const Channel& channel, Object request) { return Send(channel, request); }

  std::vector<Object::Ptr> CreateKeys(const Channel& channel, const std::string& user, int n) {
    Object request = Request("create", "/keys", Token(user));
    request.set("count", n);
    Object::Ptr answer = Send(channel, request);
    EXPECT_EQ(answer->getValue<int>("status"), 201) << Json(*answer);
    std::vector<Object::Ptr> keys;
    Poco::JSON::Array::Ptr array = answer->getArray("keys");
    for (unsigned i = 0; array && i < array->size(); ++i) keys.push_back(array->getObject(i));
    return keys;
  }

  Object::Ptr Retrieve(const Channel& channel, const std::string& user, const std::string& uri) {
    return Send(channel, Request("retrieve", uri, Token(user)));
  }

  static Poco::JSON::Array Strings(std::initializer_list<std::string> values) {
    Poco::JSON::Array array;
    for (const std::string& v : values) array.add(v);
    return array;
  }

  // create /resources; returns the resource's URI ("" on failure).
  std::string CreateResource(const Channel& channel, const std::string& user,
                             const Poco::JSON::Array& auth_ids,
                             const Poco::JSON::Array& key_uris = {}) {
    Object create = Request("create", "/resources", Token(user));
    create.set("authIds", auth_ids);
    create.set("keyUris", key_uris);
    Object::Ptr created = Send(channel, create);
    EXPECT_EQ(created->getValue<int>("status"), 201) << Json(*created);
    return created->getValue<int>("status") == 201
               ? created->getObject("resource")->getValue<std::string>("uri")
               : "";
  }

  Object::Ptr Bind(const Channel& channel, const std::string& user, const std::string& key_uri,
                   const std::string& resource) {
    Object bind = Request("update", key_uri, Token(user));
    bind.set("resourceUri", resource);
    return Send(channel, bind);
  }

  Object::Ptr Authorize(const Channel& channel, const std::string& user,
                        const std::string& resource, const Poco::JSON::Array& auth_ids,
                        const std::string& role = "") {
    Object add = Request("create", "/authorizations", Token(user));
    add.set("resourceUri", resource);
    add.set("authIds", auth_ids);
    if (!role.empty()) add.set("roleUri", role);
    return Send(channel, add);
  }

  // A retrieval by a compliance officer on behalf of `target`.
  Object::Ptr OnBehalf(const Channel& channel, const std::string& officer,
                       const std::string& target, const std::string& method,
                       const std::string& uri) {
    Object request = Request(method, uri, Token(officer));
    Object client, credential;
    credential.set("bearer", Token(officer));
    credential.set("userId", target);
    credential.set("onBehalfOf", target);
    client.set("clientId", "compliance-client");
    client.set("credential", credential);
    request.set("client", client);
    return Send(channel, request);
  }

  void SetPolicy(const OrgPolicy& policy) {
    ASSERT_TRUE(db_->InTransaction([&](Poco::Data::Session& s) {
                     return PolicyStore::Put(s, policy, now_ms_.load());
                   })
                    .ok());
  }

  static int StatusOf(const Object::Ptr& answer) {
    return answer ? answer->getValue<int>("status") : -1;
  }
};

INSTANTIATE_TEST_SUITE_P(Engines, KmsKeysTest, testing::kBothEngines, testing::EngineName);

TEST_P(KmsKeysTest, CreatedKeysAreRandom256BitAndReadableByTheirCreatorOnly) {
  Channel alice = Open("alice@acme.test");
  Channel bob = Open("bob@acme.test");
  auto keys = CreateKeys(alice, "alice@acme.test", 3);
  ASSERT_EQ(keys.size(), 3u);
  std::set<std::string> material;
  for (const Object::Ptr& key : keys) {
    Object::Ptr jwk = key->getObject("jwk");
    EXPECT_EQ(jwk->getValue<std::string>("kty"), "oct");
    EXPECT_EQ(jwk->getValue<std::string>("kid"), key->getValue<std::string>("uri"));
    auto k = jose::Base64UrlDecode(jwk->getValue<std::string>("k"));
    ASSERT_TRUE(k.ok());
    EXPECT_EQ(k->size(), 32u);
    material.insert(jwk->getValue<std::string>("k"));
    // draft-02 4.7.5: each key names the requesting client and user.
    EXPECT_EQ(key->getValue<std::string>("clientId"), "test-client");
    EXPECT_EQ(key->getValue<std::string>("userId"), "alice@acme.test");
  }
  EXPECT_EQ(material.size(), 3u);
  const std::string uri = keys[0]->getValue<std::string>("uri");
  Object::Ptr mine = Retrieve(alice, "alice@acme.test", uri);
  ASSERT_EQ(mine->getValue<int>("status"), 200) << Json(*mine);
  EXPECT_EQ(mine->getObject("key")->getObject("jwk")->getValue<std::string>("k"),
            keys[0]->getObject("jwk")->getValue<std::string>("k"));
  EXPECT_EQ(Retrieve(bob, "bob@acme.test", uri)->getValue<int>("status"), 403);
}

TEST_P(KmsKeysTest, ChannelKeysAreCachedApartFromContentKeys) {
  KeyCache content(0, std::chrono::minutes(5));  // the content-key cache turned off
  KeyCache channels(8, std::chrono::minutes(5));
  service_ = NewService({&content, nullptr, &channels});
  Channel alice = Open("alice@acme.test");
  const std::string uri =
      CreateKeys(alice, "alice@acme.test", 1).at(0)->getValue<std::string>("uri");
  for (int i = 0; i < 3; ++i) EXPECT_EQ(StatusOf(Retrieve(alice, "alice@acme.test", uri)), 200);
  // The channel's key was unwrapped once and then found; every content key was unwrapped anew.
  EXPECT_EQ(channels.stats().entries, 1u);
  EXPECT_GE(channels.stats().hits, 3u);
  EXPECT_EQ(content.stats().hits, 0u);
  EXPECT_EQ(content.stats().entries, 0u);
  // Deleting the channel drops its key from memory too.
  EXPECT_EQ(StatusOf(Send(alice, Request("delete", alice.uri, Token("alice@acme.test")))), 204);
  EXPECT_EQ(channels.stats().entries, 0u);
}

TEST_P(KmsKeysTest, AClientMayNameANewResourceButNeverReuseOrForgeOne) {
  Channel alice = Open("alice@acme.test");
  const std::string uri = "kms://kms.acme.test/resources/0f8c3a52-7d1e-4b6a-9c2f-3e5d7a9b1c4d";
  Object create = Request("create", "/resources", Token("alice@acme.test"));
  create.set("resourceUri", uri);
  create.set("authIds", Strings({"bob@acme.test"}));
  Object::Ptr created = Send(alice, create);
  ASSERT_EQ(StatusOf(created), 201) << Json(*created);
  EXPECT_EQ(created->getObject("resource")->getValue<std::string>("uri"), uri);
  Channel bob = Open("bob@acme.test");
  EXPECT_EQ(StatusOf(Send(bob, Request("retrieve", uri, Token("bob@acme.test")))), 200);

  // The same URI again, by anyone, is refused and changes nothing.
  Channel carol = Open("carol@acme.test");
  Object again = Request("create", "/resources", Token("carol@acme.test"));
  again.set("resourceUri", uri);
  EXPECT_EQ(StatusOf(Send(carol, again)), 409);
  EXPECT_EQ(StatusOf(Send(carol, Request("retrieve", uri, Token("carol@acme.test")))), 403);
  // Another KMS's URI, another kind of object, or anything but a lower-case UUID is refused.
  for (const char* bad : {"kms://kms.globex.test/resources/0f8c3a52-7d1e-4b6a-9c2f-3e5d7a9b1c4e",
                          "kms://kms.acme.test/keys/0f8c3a52-7d1e-4b6a-9c2f-3e5d7a9b1c4e",
                          "kms://kms.acme.test/resources/0F8C3A52-7D1E-4B6A-9C2F-3E5D7A9B1C4E",
                          "kms://kms.acme.test/resources/../keys/x"}) {
    Object forged = Request("create", "/resources", Token("carol@acme.test"));
    forged.set("resourceUri", bad);
    EXPECT_EQ(StatusOf(Send(carol, forged)), 400) << bad;
  }
}

TEST_P(KmsKeysTest, ResourceBindsKeysAndAuthorizesItsMembers) {
  Channel alice = Open("alice@acme.test");
  Channel bob = Open("bob@acme.test");
  Channel carol = Open("carol@acme.test");
  auto keys = CreateKeys(alice, "alice@acme.test", 1);
  const std::string key_uri = keys[0]->getValue<std::string>("uri");
  Object create = Request("create", "/resources", Token("alice@acme.test"));
  Poco::JSON::Array members, key_uris;
  members.add("bob@acme.test");
  key_uris.add(key_uri);
  create.set("authIds", members);
  create.set("keyUris", key_uris);
  Object::Ptr created = Send(alice, create);
  ASSERT_EQ(created->getValue<int>("status"), 201) << Json(*created);
  const std::string resource = created->getObject("resource")->getValue<std::string>("uri");
  EXPECT_EQ(created->getObject("resource")->getArray("authorizationUris")->size(), 2u);

  Object::Ptr for_bob = Retrieve(bob, "bob@acme.test", key_uri);
  ASSERT_EQ(for_bob->getValue<int>("status"), 200) << Json(*for_bob);
  EXPECT_EQ(for_bob->getObject("key")->getValue<std::string>("resourceUri"), resource);
  EXPECT_EQ(for_bob->getObject("key")->getObject("jwk")->getValue<std::string>("k"),
            keys[0]->getObject("jwk")->getValue<std::string>("k"));
  EXPECT_EQ(Retrieve(carol, "carol@acme.test", key_uri)->getValue<int>("status"), 403);

  // A bound key is never bound again, and the failed request leaves nothing behind.
  Object again = Request("create", "/resources", Token("alice@acme.test"));
  Poco::JSON::Array carol_only;
  carol_only.add("carol@acme.test");
  again.set("authIds", carol_only);
  again.set("keyUris", key_uris);
  EXPECT_EQ(Send(alice, again)->getValue<int>("status"), 409);
  EXPECT_EQ(Retrieve(carol, "carol@acme.test", key_uri)->getValue<int>("status"), 403);

  // Another user cannot bind alice's keys.
  auto more = CreateKeys(alice, "alice@acme.test", 1);
  Object stolen = Request("create", "/resources", Token("bob@acme.test"));
  Poco::JSON::Array stolen_keys;
  stolen_keys.add(more[0]->getValue<std::string>("uri"));
  stolen.set("keyUris", stolen_keys);
  EXPECT_EQ(Send(bob, stolen)->getValue<int>("status"), 403);
}

TEST_P(KmsKeysTest, KeyRetrievalsAndDenialsAreAudited) {
  Channel alice = Open("alice@acme.test");
  Channel bob = Open("bob@acme.test");
  auto keys = CreateKeys(alice, "alice@acme.test", 1);
  const std::string uri = keys[0]->getValue<std::string>("uri");
  Retrieve(alice, "alice@acme.test", uri);
  Retrieve(bob, "bob@acme.test", uri);
  AuditFilter by_bob;
  by_bob.actor = "bob@acme.test";
  auto bob_records = AuditLog::Query(*db_, by_bob);
  ASSERT_TRUE(bob_records.ok());
  ASSERT_EQ(bob_records->size(), 1u);
  EXPECT_EQ((*bob_records)[0].action, "key.retrieve");
  EXPECT_EQ((*bob_records)[0].outcome, "denied");
  EXPECT_EQ((*bob_records)[0].key, uri);
  auto verdict = AuditLog::Verify(*db_);
  ASSERT_TRUE(verdict.ok());
  EXPECT_TRUE(verdict->ok());
  EXPECT_EQ(verdict->records, 3);  // key.create, alice's retrieval, bob's denial
}

TEST_P(KmsKeysTest, AbsurdCountsAndMalformedListsAreRefused) {
  Channel alice = Open("alice@acme.test");
  for (int count : {0, -1, static_cast<int>(kMaxKeysPerRequest) + 1}) {
    Object request = Request("create", "/keys", Token("alice@acme.test"));
    request.set("count", count);
    EXPECT_EQ(Send(alice, request)->getValue<int>("status"), 400) << count;
  }
  Object text_count = Request("create", "/keys", Token("alice@acme.test"));
  text_count.set("count", "3");
  EXPECT_EQ(Send(alice, text_count)->getValue<int>("status"), 400);
  Object bad_ids = Request("create", "/resources", Token("alice@acme.test"));
  Poco::JSON::Array mixed;
  mixed.add("bob@acme.test");
  mixed.add(7);
  bad_ids.set("authIds", mixed);
  EXPECT_EQ(Send(alice, bad_ids)->getValue<int>("status"), 400);
  EXPECT_EQ(Retrieve(alice, "alice@acme.test", "/keys/no-such-key")->getValue<int>("status"), 403);
}

TEST_P(KmsKeysTest, MembersAddListAndRemoveAuthorizations) {
  Channel alice = Open("alice@acme.test");
  Channel carol = Open("carol@acme.test");
  Channel mallory = Open("mallory@acme.test");
  auto keys = CreateKeys(alice, "alice@acme.test", 1);
  const std::string key_uri = keys[0]->getValue<std::string>("uri");
  Object create = Request("create", "/resources", Token("alice@acme.test"));
  Poco::JSON::Array key_uris;
  key_uris.add(key_uri);
  create.set("keyUris", key_uris);
  const std::string resource =
      Send(alice, create)->getObject("resource")->getValue<std::string>("uri");

  // A non-member cannot add anyone, not even themselves.
  Object sneak = Request("create", "/authorizations", Token("mallory@acme.test"));
  sneak.set("resourceUri", resource);
  Poco::JSON::Array self;
  self.add("mallory@acme.test");
  sneak.set("authIds", self);
  EXPECT_EQ(Send(mallory, sneak)->getValue<int>("status"), 403);

  Object add = Request("create", "/authorizations", Token("alice@acme.test"));
  add.set("resourceUri", resource);
  Poco::JSON::Array carol_id;
  carol_id.add("carol@acme.test");
  add.set("authIds", carol_id);
  Object::Ptr added = Send(alice, add);
  ASSERT_EQ(added->getValue<int>("status"), 201) << Json(*added);
  const std::string carol_auth =
      added->getArray("authorizations")->getObject(0)->getValue<std::string>("uri");
  EXPECT_EQ(Retrieve(carol, "carol@acme.test", key_uri)->getValue<int>("status"), 200);
  EXPECT_EQ(Send(alice, add)->getValue<int>("status"), 409);  // already authorized

  Object list = Request("retrieve", resource + "/authorizations", Token("carol@acme.test"));
  Object::Ptr listed = Send(carol, list);
  ASSERT_EQ(listed->getValue<int>("status"), 200);
  EXPECT_EQ(listed->getArray("authorizations")->size(), 2u);
  Object one = Request("retrieve", resource + "/authorizations?authId=carol@acme.test",
                       Token("carol@acme.test"));
  EXPECT_EQ(Send(carol, one)->getArray("authorizations")->size(), 1u);
  Object peek = Request("retrieve", resource + "/authorizations", Token("mallory@acme.test"));
  EXPECT_EQ(Send(mallory, peek)->getValue<int>("status"), 403);

  EXPECT_EQ(Send(mallory, Request("delete", carol_auth, Token("mallory@acme.test")))
                ->getValue<int>("status"),
            403);
  Object::Ptr removed = Send(alice, Request("delete", carol_auth, Token("alice@acme.test")));
  ASSERT_EQ(removed->getValue<int>("status"), 200) << Json(*removed);
  EXPECT_EQ(Retrieve(carol, "carol@acme.test", key_uri)->getValue<int>("status"), 403);
}

TEST_P(KmsKeysTest, KeysAreBoundOnceByTheirCreatorWhoIsAParticipant) {
  Channel alice = Open("alice@acme.test");
  Channel bob = Open("bob@acme.test");
  const std::string resource = CreateResource(alice, "alice@acme.test", Strings({"bob@acme.test"}));
  const std::string other = CreateResource(bob, "bob@acme.test", Strings({}));
  auto keys = CreateKeys(alice, "alice@acme.test", 2);
  const std::string key_uri = keys[0]->getValue<std::string>("uri");

  EXPECT_EQ(StatusOf(Bind(bob, "bob@acme.test", key_uri, resource)), 403);   // not bob's key
  EXPECT_EQ(StatusOf(Bind(alice, "alice@acme.test", key_uri, other)), 403);  // not her resource
  EXPECT_EQ(StatusOf(Bind(alice, "alice@acme.test", key_uri, "kms://elsewhere/resources/x")), 400);
  EXPECT_EQ(StatusOf(Retrieve(bob, "bob@acme.test", key_uri)), 403);  // still unbound

  now_ms_ += 1000;
  Object::Ptr bound = Bind(alice, "alice@acme.test", key_uri, resource);
  ASSERT_EQ(StatusOf(bound), 200) << Json(*bound);
  Object::Ptr key = bound->getObject("key");
  EXPECT_EQ(key->getValue<std::string>("resourceUri"), resource);
  EXPECT_EQ(key->getValue<std::string>("bindDate"), Rfc3339ForTest(now_ms_.load()));
  EXPECT_EQ(key->getValue<std::string>("expirationDate"),
            Rfc3339ForTest(now_ms_.load() + 86400 * 1000));  // default encrypt lifetime
  EXPECT_EQ(key->getObject("jwk")->getValue<std::string>("k"),
            keys[0]->getObject("jwk")->getValue<std::string>("k"));
  EXPECT_EQ(StatusOf(Retrieve(bob, "bob@acme.test", key_uri)), 200);
  EXPECT_EQ(StatusOf(Bind(alice, "alice@acme.test", key_uri, resource)), 409);  // never re-bound

  // Past the bind deadline (10 minutes by default) the other key can no longer be bound.
  now_ms_ += 600 * 1000;
  EXPECT_EQ(
      StatusOf(Bind(alice, "alice@acme.test", keys[1]->getValue<std::string>("uri"), resource)),
      409);
}

TEST_P(KmsKeysTest, ResourceAndItsKeysAreRetrievedNewestFirstWithinBounds) {
  Channel alice = Open("alice@acme.test");
  Channel mallory = Open("mallory@acme.test");
  const std::string resource = CreateResource(alice, "alice@acme.test", Strings({}));
  auto keys = CreateKeys(alice, "alice@acme.test", 3);
  std::vector<std::int64_t> bound_at;
  for (const Object::Ptr& key : keys) {
    now_ms_ += 10'000;
    bound_at.push_back(now_ms_.load());
    ASSERT_EQ(StatusOf(Bind(alice, "alice@acme.test", key->getValue<std::string>("uri"), resource)),
              200);
  }
  Object::Ptr got = Retrieve(alice, "alice@acme.test", resource);
  ASSERT_EQ(StatusOf(got), 200) << Json(*got);
  EXPECT_EQ(got->getObject("resource")->getArray("keyUris")->size(), 3u);
  EXPECT_EQ(got->getObject("resource")->getArray("authorizations")->size(), 1u);
  EXPECT_EQ(StatusOf(Retrieve(mallory, "mallory@acme.test", resource)), 403);

  auto list = [&](std::optional<std::int64_t> after, std::optional<std::int64_t> before,
                  std::optional<int> count) {
    Object request = Request("retrieve", resource + "/keys", Token("alice@acme.test"));
    if (after) request.set("boundAfter", Rfc3339ForTest(*after));
    if (before) request.set("boundBefore", Rfc3339ForTest(*before));
    if (count) request.set("count", *count);
    return Send(alice, request);
  };
  auto uris = [](const Object::Ptr& answer) {
    std::vector<std::string> out;
    Poco::JSON::Array::Ptr array = answer->getArray("keys");
    for (unsigned i = 0; array && i < array->size(); ++i) {
      out.push_back(array->getObject(i)->getValue<std::string>("uri"));
    }
    return out;
  };
  const std::string k0 = keys[0]->getValue<std::string>("uri");
  const std::string k1 = keys[1]->getValue<std::string>("uri");
  const std::string k2 = keys[2]->getValue<std::string>("uri");
  EXPECT_EQ(uris(list({}, {}, {})), (std::vector<std::string>{k2, k1, k0}));
  EXPECT_EQ(uris(list({}, {}, 2)), (std::vector<std::string>{k2, k1}));  // the newest two
  EXPECT_EQ(uris(list(bound_at[0], {}, {})), (std::vector<std::string>{k2, k1}));
  EXPECT_EQ(uris(list({}, bound_at[2], {})), (std::vector<std::string>{k1, k0}));
  EXPECT_EQ(uris(list(bound_at[0], bound_at[2], {})), (std::vector<std::string>{k1}));
  EXPECT_EQ(StatusOf(list({}, {}, 0)), 400);
  EXPECT_EQ(StatusOf(list({}, {}, 1001)), 400);
  Object bad_date = Request("retrieve", resource + "/keys", Token("alice@acme.test"));
  bad_date.set("boundAfter", "yesterday");
  EXPECT_EQ(StatusOf(Send(alice, bad_date)), 400);
  Object stranger = Request("retrieve", resource + "/keys", Token("mallory@acme.test"));
  EXPECT_EQ(StatusOf(Send(mallory, stranger)), 403);
}

TEST_P(KmsKeysTest, AgentsReadKeysButNeitherAuthorizeNorBind) {
  Channel alice = Open("alice@acme.test");
  Channel robot = Open("svc-robot@acme.test");
  auto keys = CreateKeys(alice, "alice@acme.test", 1);
  const std::string key_uri = keys[0]->getValue<std::string>("uri");
  const std::string resource =
      CreateResource(alice, "alice@acme.test", Strings({}), Strings({key_uri}));
  Object::Ptr added =
      Authorize(alice, "alice@acme.test", resource, Strings({"svc-robot@acme.test"}), "cloudAgent");
  ASSERT_EQ(StatusOf(added), 201) << Json(*added);
  EXPECT_EQ(added->getArray("authorizations")->getObject(0)->getValue<std::string>("roleUri"),
            "cloudAgent");
  EXPECT_EQ(StatusOf(Retrieve(robot, "svc-robot@acme.test", key_uri)), 200);
  EXPECT_EQ(
      StatusOf(Authorize(robot, "svc-robot@acme.test", resource, Strings({"mallory@acme.test"}))),
      403);
  auto robot_keys = CreateKeys(robot, "svc-robot@acme.test", 1);
  EXPECT_EQ(StatusOf(Bind(robot, "svc-robot@acme.test", robot_keys[0]->getValue<std::string>("uri"),
                          resource)),
            403);
  // Unknown roles are refused; orgAgent only goes to the organization's compliance officers.
  EXPECT_EQ(StatusOf(Authorize(alice, "alice@acme.test", resource, Strings({"x"}), "admin")), 400);
  EXPECT_EQ(StatusOf(Authorize(alice, "alice@acme.test", resource, Strings({"dave@acme.test"}),
                               "orgAgent")),
            403);
  OrgPolicy policy;
  policy.org = "acme";
  policy.compliance_officers = {"carol@acme.test"};
  SetPolicy(policy);
  EXPECT_EQ(StatusOf(Authorize(alice, "alice@acme.test", resource, Strings({"carol@acme.test"}),
                               "orgAgent")),
            201);
}

TEST_P(KmsKeysTest, AResourceAsAuthIdLendsItsMembers) {
  Channel alice = Open("alice@acme.test");
  Channel bob = Open("bob@acme.test");
  Channel gina = Open("gina@globex.test");
  const std::string team = CreateResource(alice, "alice@acme.test", Strings({"bob@acme.test"}));
  auto keys = CreateKeys(alice, "alice@acme.test", 1);
  const std::string key_uri = keys[0]->getValue<std::string>("uri");
  const std::string room =
      CreateResource(alice, "alice@acme.test", Strings({team}), Strings({key_uri}));
  EXPECT_EQ(StatusOf(Retrieve(bob, "bob@acme.test", key_uri)), 200);

  // Bob leaves the team (deleting his own authorization by authId) and loses the room too.
  Object leave =
      Request("delete", team + "/authorizations?authId=bob@acme.test", Token("bob@acme.test"));
  ASSERT_EQ(StatusOf(Send(bob, leave)), 200);
  EXPECT_EQ(StatusOf(Retrieve(bob, "bob@acme.test", key_uri)), 403);

  // Another organization's resource cannot lend its members.
  const std::string foreign = CreateResource(gina, "gina@globex.test", Strings({}));
  Object create = Request("create", "/resources", Token("alice@acme.test"));
  create.set("authIds", Strings({foreign}));
  EXPECT_EQ(StatusOf(Send(alice, create)), 400);
  EXPECT_EQ(StatusOf(Authorize(alice, "alice@acme.test", room, Strings({foreign}))), 400);
  EXPECT_EQ(StatusOf(Authorize(alice, "alice@acme.test", room,
                               Strings({"kms://kms.acme.test/resources/no-such"}))),
            400);
  EXPECT_EQ(StatusOf(Retrieve(gina, "gina@globex.test", key_uri)), 403);
}

TEST_P(KmsKeysTest, PercentEncodedAuthIdsAreDecodedOnce) {
  Channel alice = Open("alice@acme.test");
  Channel carol = Open("carol@acme.test");
  Channel dave = Open("dave@acme.test");
  const std::string team = CreateResource(alice, "alice@acme.test", Strings({"dave@acme.test"}));
  auto keys = CreateKeys(alice, "alice@acme.test", 1);
  const std::string key_uri = keys[0]->getValue<std::string>("uri");
  const std::string room = CreateResource(
      alice, "alice@acme.test",
      Strings({"carol@acme.test", "a+b@acme.test", "x+y@acme.test", team}), Strings({key_uri}));
  auto by_auth_id = [&](const std::string& method, const std::string& query) {
    return Send(
        alice, Request(method, room + "/authorizations?authId=" + query, Token("alice@acme.test")));
  };
  auto members = [&] {
    Object::Ptr listed =
        Send(alice, Request("retrieve", room + "/authorizations", Token("alice@acme.test")));
    return listed->getArray("authorizations")->size();
  };
  ASSERT_EQ(members(), 5u);  // alice and the four named
  ASSERT_EQ(StatusOf(Retrieve(carol, "carol@acme.test", key_uri)), 200);
  ASSERT_EQ(StatusOf(Retrieve(dave, "dave@acme.test", key_uri)), 200);

  // An invalid percent escape answers 400 and changes nothing.
  for (const char* bad : {"carol%G1acme.test", "carol%40acme.test%", "carol%4"}) {
    Object::Ptr refused = by_auth_id("delete", bad);
    ASSERT_EQ(StatusOf(refused), 400) << bad;
    EXPECT_NE(refused->getValue<std::string>("reason").find("percent escape"), std::string::npos)
        << refused->getValue<std::string>("reason");
  }
  EXPECT_EQ(StatusOf(by_auth_id("delete", "carol@acme.test&authId=dave@acme.test")), 400);
  // Double-encoded, the value is decoded once, to "carol%40acme.test": nobody.
  EXPECT_EQ(StatusOf(by_auth_id("delete", "carol%2540acme.test")), 403);
  EXPECT_EQ(members(), 5u);
  EXPECT_EQ(StatusOf(Retrieve(carol, "carol@acme.test", key_uri)), 200);

  // As a standard encoder writes it.
  Object::Ptr listed = by_auth_id("retrieve", "carol%40acme.test");
  ASSERT_EQ(StatusOf(listed), 200) << Json(*listed);
  EXPECT_EQ(listed->getArray("authorizations")->size(), 1u);
  Object::Ptr removed = by_auth_id("delete", "carol%40acme.test");
  ASSERT_EQ(StatusOf(removed), 200) << Json(*removed);
  EXPECT_EQ(removed->getObject("authorization")->getValue<std::string>("authId"),
            "carol@acme.test");
  EXPECT_EQ(StatusOf(Retrieve(carol, "carol@acme.test", key_uri)), 403);

  // '+' is a literal plus, and so is %2B.
  removed = by_auth_id("delete", "a%2Bb%40acme.test");
  ASSERT_EQ(StatusOf(removed), 200) << Json(*removed);
  EXPECT_EQ(removed->getObject("authorization")->getValue<std::string>("authId"), "a+b@acme.test");
  removed = by_auth_id("delete", "x+y@acme.test");
  ASSERT_EQ(StatusOf(removed), 200) << Json(*removed);
  EXPECT_EQ(removed->getObject("authorization")->getValue<std::string>("authId"), "x+y@acme.test");

  // A lent resource's URI as authId, percent-encoded, ends the loan.
  std::string encoded_team;
  Poco::URI::encode(team, ":/", encoded_team);
  ASSERT_EQ(encoded_team.find("kms%3A%2F%2Fkms.acme.test%2Fresources%2F"), 0u) << encoded_team;
  removed = by_auth_id("delete", encoded_team);
  ASSERT_EQ(StatusOf(removed), 200) << Json(*removed);
  EXPECT_EQ(removed->getObject("authorization")->getValue<std::string>("authId"), team);
  EXPECT_EQ(StatusOf(Retrieve(dave, "dave@acme.test", key_uri)), 403);
  EXPECT_EQ(members(), 1u);  // alice alone
}

TEST_P(KmsKeysTest, ComplianceOfficersRetrieveOnBehalfOfTheirOwnOrganizationOnly) {
  Channel alice = Open("alice@acme.test");
  Channel carol = Open("carol@acme.test");  // acme's compliance officer
  Channel dave = Open("dave@acme.test");    // not an officer
  Channel gina = Open("gina@globex.test");  // globex's compliance officer
  OrgPolicy acme;
  acme.org = "acme";
  acme.compliance_officers = {"carol@acme.test"};
  SetPolicy(acme);
  OrgPolicy globex;
  globex.org = "globex";
  globex.compliance_officers = {"gina@globex.test"};
  SetPolicy(globex);
  auto keys = CreateKeys(alice, "alice@acme.test", 1);
  const std::string key_uri = keys[0]->getValue<std::string>("uri");
  const std::string resource =
      CreateResource(alice, "alice@acme.test", Strings({"bob@acme.test"}), Strings({key_uri}));

  Object::Ptr got = OnBehalf(carol, "carol@acme.test", "bob@acme.test", "retrieve", key_uri);
  ASSERT_EQ(StatusOf(got), 200) << Json(*got);
  EXPECT_EQ(got->getObject("key")->getObject("jwk")->getValue<std::string>("k"),
            keys[0]->getObject("jwk")->getValue<std::string>("k"));
  EXPECT_EQ(
      StatusOf(OnBehalf(carol, "carol@acme.test", "bob@acme.test", "retrieve", resource + "/keys")),
      200);
  // Only what the user could see, only retrievals, only officers, only the officer's own org.
  EXPECT_EQ(StatusOf(OnBehalf(carol, "carol@acme.test", "mallory@acme.test", "retrieve", key_uri)),
            403);
  EXPECT_EQ(StatusOf(OnBehalf(carol, "carol@acme.test", "bob@acme.test", "delete",
                              resource + "/authorizations?authId=bob@acme.test")),
            403);
  EXPECT_EQ(StatusOf(OnBehalf(dave, "dave@acme.test", "bob@acme.test", "retrieve", key_uri)), 403);
  EXPECT_EQ(StatusOf(OnBehalf(gina, "gina@globex.test", "bob@acme.test", "retrieve", key_uri)),
            403);

  AuditFilter by_carol;
  by_carol.actor = "carol@acme.test";
  auto records = AuditLog::Query(*db_, by_carol);
  ASSERT_TRUE(records.ok());
  ASSERT_GE(records->size(), 3u);
  bool saw_ok = false, saw_denied = false;
  for (const AuditRecord& r : *records) {
    EXPECT_NE(r.detail.find("on behalf of"), std::string::npos) << r.detail;
    saw_ok |= r.key == key_uri && r.outcome == "ok";
    saw_denied |= r.outcome == "denied";
  }
  EXPECT_TRUE(saw_ok);
  EXPECT_TRUE(saw_denied);
  AuditFilter by_gina;
  by_gina.actor = "gina@globex.test";
  auto gina_records = AuditLog::Query(*db_, by_gina);
  ASSERT_TRUE(gina_records.ok());
  ASSERT_EQ(gina_records->size(), 1u);
  EXPECT_EQ((*gina_records)[0].outcome, "denied");
}

// Issue 16: `kmsctl audit query --user bob` listed bob's own requests only, not what a compliance
// officer retrieved on his behalf; the records name the officer as actor and bob in the detail.
// A clientId that imitates that detail does not put a record under bob.
TEST_P(KmsKeysTest, AnAuditQueryForAUserShowsWhatOfficersDidOnTheirBehalf) {
  Channel alice = Open("alice@acme.test");
  Channel bob = Open("bob@acme.test");
  Channel carol = Open("carol@acme.test");  // acme's compliance officer
  Channel dave = Open("dave@acme.test");
  OrgPolicy acme;
  acme.org = "acme";
  acme.compliance_officers = {"carol@acme.test"};
  SetPolicy(acme);
  const std::string key_uri =
      CreateKeys(alice, "alice@acme.test", 1)[0]->getValue<std::string>("uri");
  const std::string resource =
      CreateResource(alice, "alice@acme.test", Strings({"bob@acme.test"}), Strings({key_uri}));
  ASSERT_EQ(StatusOf(Retrieve(bob, "bob@acme.test", key_uri)), 200);
  ASSERT_EQ(StatusOf(OnBehalf(carol, "carol@acme.test", "bob@acme.test", "retrieve", key_uri)),
            200);
  ASSERT_EQ(StatusOf(OnBehalf(carol, "carol@acme.test", "bob@acme.test", "delete",
                              resource + "/authorizations?authId=bob@acme.test")),
            403);
  ASSERT_EQ(StatusOf(Retrieve(carol, "carol@acme.test", key_uri)), 403);  // in her own name
  for (const std::string& client_id : {std::string("x, on behalf of bob@acme.test"),
                                       std::string(R"(on behalf of "bob@acme.test")"),
                                       std::string(R"(x", on behalf of "bob@acme.test")")}) {
    Object request = Request("retrieve", key_uri, Token("dave@acme.test"));
    Object client, credential;
    credential.set("bearer", Token("dave@acme.test"));
    client.set("clientId", client_id);
    client.set("credential", credential);
    request.set("client", client);
    ASSERT_EQ(StatusOf(Send(dave, request)), 403) << client_id;
  }

  const std::string config = (dir_ / "audit.ini").string();
  std::ofstream(config) << DatabaseConfig();
  testing::ToolRun query = testing::Tool(
      KMSCTL_PATH, {"--config", config, "audit", "query", "--user", "bob@acme.test", "--json"});
  ASSERT_EQ(query.exit_code, 0) << query.err;
  std::istringstream lines(query.out);
  std::string line;
  std::vector<std::pair<std::string, std::string>> found;  // actor, outcome
  while (std::getline(lines, line)) {
    Object::Ptr record = Parse(line);
    found.emplace_back(record->getValue<std::string>("actor"),
                       record->getValue<std::string>("outcome"));
    if (found.back().first != "bob@acme.test") {
      EXPECT_EQ(record->getValue<std::string>("detail").rfind(R"(on behalf of "bob@acme.test")", 0),
                0u)
          << line;
    }
  }
  auto has = [&](const std::string& actor, const std::string& outcome) {
    return std::count(found.begin(), found.end(), std::make_pair(actor, outcome));
  };
  EXPECT_GE(has("bob@acme.test", "ok"), 1) << query.out;
  EXPECT_EQ(has("carol@acme.test", "ok"), 1) << query.out;      // the retrieval on his behalf
  EXPECT_EQ(has("carol@acme.test", "denied"), 1) << query.out;  // the refused delete
  EXPECT_EQ(found.size(), static_cast<std::size_t>(has("bob@acme.test", "ok") + 2)) << query.out;
}

TEST_P(KmsKeysTest, PolicyGrantsTheIndexerAndSetsLifetimes) {
  OrgPolicy policy;
  policy.org = "acme";
  policy.indexer = "svc-indexer@acme.test";
  policy.indexer_cloud_agent = true;
  policy.bind_deadline_s = 60;
  policy.encrypt_lifetime_s = 7200;
  SetPolicy(policy);
  Channel alice = Open("alice@acme.test");
  Channel indexer = Open("svc-indexer@acme.test");
  auto keys = CreateKeys(alice, "alice@acme.test", 1);
  EXPECT_EQ(keys[0]->getValue<std::string>("expirationDate"),
            Rfc3339ForTest(now_ms_.load() + 60 * 1000));
  const std::string key_uri = keys[0]->getValue<std::string>("uri");
  const std::string resource =
      CreateResource(alice, "alice@acme.test", Strings({}), Strings({key_uri}));
  Object::Ptr got = Retrieve(indexer, "svc-indexer@acme.test", key_uri);
  ASSERT_EQ(StatusOf(got), 200) << Json(*got);
  EXPECT_EQ(got->getObject("key")->getValue<std::string>("expirationDate"),
            Rfc3339ForTest(now_ms_.load() + 7200 * 1000));
  Object list = Request("retrieve", resource + "/authorizations?authId=svc-indexer@acme.test",
                        Token("alice@acme.test"));
  Object::Ptr listed = Send(alice, list);
  ASSERT_EQ(listed->getArray("authorizations")->size(), 1u);
  EXPECT_EQ(listed->getArray("authorizations")->getObject(0)->getValue<std::string>("roleUri"),
            "cloudAgent");
}

TEST_P(KmsKeysTest, UnknownUrisAndMethodsAreNotFound) {
  Channel alice = Open("alice@acme.test");
  for (const auto& [method, uri] :
       std::vector<std::pair<std::string, std::string>>{{"retrieve", "/nothing"},
                                                        {"update", "/resources"},
                                                        {"retrieve", "/keys/a/b/c"},
                                                        {"retrieve", "/keys/../../etc"},
                                                        {"retrieve", "kms://other.host/keys/x"},
                                                        {"delete", "/keys/x"},
                                                        {"retrieve", "/resources/x/secrets"}}) {
    EXPECT_EQ(StatusOf(Send(alice, Request(method, uri, Token("alice@acme.test")))), 404)
        << method << " " << uri;
  }
}

// Issue 10's repro: the core keeps alice's sealed "authorize carol" and, after bob removed carol,
// sends it again. The repeat is refused, audited with alice's name, and carol stays out.
TEST_P(KmsKeysTest, AReplayedAuthorizationDoesNotReadmitARemovedMember) {
  Channel alice = Open("alice@acme.test");
  Channel bob = Open("bob@acme.test");
  Channel carol = Open("carol@acme.test");
  auto keys = CreateKeys(alice, "alice@acme.test", 1);
  const std::string key_uri = keys[0]->getValue<std::string>("uri");
  const std::string resource =
      CreateResource(alice, "alice@acme.test", Strings({"bob@acme.test"}), Strings({key_uri}));
  Object add = Request("create", "/authorizations", Token("alice@acme.test"));
  add.set("resourceUri", resource);
  add.set("authIds", Strings({"carol@acme.test"}));
  const std::string sealed = Seal(alice, add);
  EXPECT_EQ(StatusOf(Deliver(alice, sealed)), 201);
  EXPECT_EQ(StatusOf(Retrieve(carol, "carol@acme.test", key_uri)), 200);
  Object remove = Request("delete", resource + "/authorizations?authId=carol@acme.test",
                          Token("bob@acme.test"));
  EXPECT_EQ(StatusOf(Send(bob, remove)), 200);
  EXPECT_EQ(StatusOf(Retrieve(carol, "carol@acme.test", key_uri)), 403);

  Object::Ptr replayed = Deliver(alice, sealed);
  ASSERT_TRUE(replayed);
  EXPECT_EQ(StatusOf(replayed), 409);
  EXPECT_EQ(replayed->getValue<std::string>("reason"), "replayed request");
  EXPECT_EQ(replayed->getValue<std::string>("requestId"), add.getValue<std::string>("requestId"));
  EXPECT_EQ(StatusOf(Retrieve(carol, "carol@acme.test", key_uri)), 403);

  AuditFilter by_alice;
  by_alice.actor = "alice@acme.test";
  auto records = AuditLog::Query(*db_, by_alice);
  ASSERT_TRUE(records.ok());
  int replays = 0;
  for (const AuditRecord& r : *records) {
    if (r.action != "request.replay") continue;
    ++replays;
    EXPECT_EQ(r.outcome, "refused");
    EXPECT_EQ(r.resource, alice.uri);
  }
  EXPECT_EQ(replays, 1);
}

// Every operation, read or write: the second delivery of the same bytes is a sealed 409 and
// changes nothing; a request sealed afresh still works.
TEST_P(KmsKeysTest, EverySealedRequestExecutesAtMostOnce) {
  Channel alice = Open("alice@acme.test");
  Channel bob = Open("bob@acme.test");
  auto twice = [&](const Channel& channel, const Object& request, int first) {
    const std::string sealed = Seal(channel, request);
    Object::Ptr answer = Deliver(channel, sealed);
    EXPECT_EQ(StatusOf(answer), first) << (answer ? Json(*answer) : "plain");
    Object::Ptr again = Deliver(channel, sealed);
    EXPECT_EQ(StatusOf(again), 409)
        << request.getValue<std::string>("method") << " " << request.getValue<std::string>("uri");
    if (again) {
      EXPECT_EQ(again->getValue<std::string>("reason"), "replayed request");
    }
    return answer;
  };
  const std::string a = "alice@acme.test", b = "bob@acme.test";

  Object create = Request("create", "/keys", Token(a));
  create.set("count", 3);
  Object::Ptr created = twice(alice, create, 201);
  EXPECT_EQ(Count("keys"), 3);
  const std::string key1 = created->getArray("keys")->getObject(0)->getValue<std::string>("uri");
  const std::string key2 = created->getArray("keys")->getObject(1)->getValue<std::string>("uri");

  Object resource = Request("create", "/resources", Token(a));
  resource.set("authIds", Strings({b}));
  resource.set("keyUris", Strings({key1}));
  const std::string uri =
      twice(alice, resource, 201)->getObject("resource")->getValue<std::string>("uri");
  EXPECT_EQ(Count("resources"), 1);

  Object bind = Request("update", key2, Token(a));
  bind.set("resourceUri", uri);
  twice(alice, bind, 200);
  twice(bob, Request("retrieve", key1, Token(b)), 200);
  twice(bob, Request("retrieve", uri, Token(b)), 200);
  twice(bob, Request("retrieve", uri + "/keys", Token(b)), 200);
  twice(bob, Request("retrieve", uri + "/authorizations", Token(b)), 200);
  twice(alice, Request("update", "/ping", Token(a)), 200);

  // The query form names a member, not one authorization: a replay must not remove bob again
  // after he was added back.
  twice(alice, Request("delete", uri + "/authorizations?authId=" + b, Token(a)), 200);
  Object add_back = Request("create", "/authorizations", Token(a));
  add_back.set("resourceUri", uri);
  add_back.set("authIds", Strings({b}));
  twice(alice, add_back, 201);
  EXPECT_EQ(StatusOf(Retrieve(bob, b, key1)), 200);

  // A fresh seal of the same request is a new request.
  EXPECT_EQ(StatusOf(Send(alice, Request("update", "/ping", Token(a)))), 200);
  // Once the channel is deleted, anything under it, a repeat included, meets the signed refusal.
  const std::string close = Seal(alice, Request("delete", alice.uri, Token(a)));
  EXPECT_EQ(StatusOf(Deliver(alice, close)), 204);
  KmsReply raw;
  EXPECT_EQ(Deliver(alice, close, &raw), nullptr);
  ExpectSignedRefusal(raw, 401, "deleted");
}

TEST_P(KmsServiceTest, ARestartDoesNotReopenTheReplayWindow) {
  Channel channel = Open("alice@acme.test");
  const std::string read = Seal(channel, Request("update", "/ping", Token("alice@acme.test")));
  Object create = Request("create", "/keys", Token("alice@acme.test"));
  create.set("count", 1);
  const std::string write = Seal(channel, create);
  EXPECT_EQ(Deliver(channel, read)->getValue<int>("status"), 200);
  Object::Ptr created = Deliver(channel, write);
  ASSERT_EQ(created->getValue<int>("status"), 201);
  // A retrieval: its record of execution is its audit row (replay_guard.h).
  const std::string key = created->getArray("keys")->getObject(0)->getValue<std::string>("uri");
  const std::string retrieve = Seal(channel, Request("retrieve", key, Token("alice@acme.test")));
  EXPECT_EQ(Deliver(channel, retrieve)->getValue<int>("status"), 200);
  service_ = NewService();  // a new process: nothing in memory, the same database
  EXPECT_EQ(Deliver(channel, read)->getValue<int>("status"), 409);
  EXPECT_EQ(Deliver(channel, write)->getValue<int>("status"), 409);
  EXPECT_EQ(Deliver(channel, retrieve)->getValue<int>("status"), 409);
  EXPECT_EQ(Count("keys"), 1);
  EXPECT_EQ(
      Send(channel, Request("update", "/ping", Token("alice@acme.test")))->getValue<int>("status"),
      200);
}

TEST_P(KmsServiceTest, AChannelPastItsRequestLimitMustBeRenegotiated) {
  service_ = NewService({}, 3);
  Channel channel = Open("alice@acme.test");
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Send(channel, Request("update", "/ping", Token("alice@acme.test")))
                  ->getValue<int>("status"),
              200);
  }
  KmsReply raw;
  EXPECT_EQ(Send(channel, Request("update", "/ping", Token("alice@acme.test")), &raw), nullptr);
  ExpectSignedRefusal(raw, 401, "negotiate a new one");
  Channel fresh = Open("alice@acme.test");
  EXPECT_EQ(
      Send(fresh, Request("update", "/ping", Token("alice@acme.test")))->getValue<int>("status"),
      200);
}

// The records of channels that expired or were deleted are swept when a channel is opened (at most
// once a minute); those of live channels stay.
TEST_P(KmsServiceTest, ExecutedRequestsOfSpentChannelsAreForgotten) {
  Channel spent = Open("alice@acme.test");
  Channel deleted = Open("alice@acme.test");
  for (int i = 0; i < 3; ++i) Send(spent, Request("update", "/ping", Token("alice@acme.test")));
  Send(deleted, Request("delete", deleted.uri, Token("alice@acme.test")));
  EXPECT_EQ(Count("executed_requests"), 4);
  now_ms_ += 3600 * 1000;  // `spent` expires
  Channel live = Open("alice@acme.test");
  Send(live, Request("update", "/ping", Token("alice@acme.test")));
  EXPECT_EQ(Count("executed_requests"), 1);
}

TEST_P(KmsServiceTest, OneSignedRefusalServesEveryUnknownKid) {
  auto first = jose::EncryptDir(SecretBytes::Random(32).view(),
                                "kms://kms.acme.test/ecdhe/" + std::string(36, 'a'), Bytes("{}"));
  auto second = jose::EncryptDir(SecretBytes::Random(32).view(), "anything", Bytes("{}"));
  KmsReply one = service_->Handle(*first);
  KmsReply two = service_->Handle(*second);
  ExpectSignedRefusal(one, 401, "unknown");
  EXPECT_EQ(one.body, two.body);  // PS256 is randomized: equal bodies are one signature
  now_ms_ += kSignedRefusalReuseMs;
  KmsReply later = service_->Handle(*first);
  ExpectSignedRefusal(later, 401, "unknown");
  EXPECT_NE(later.body, one.body);
}

TEST_P(KmsServiceTest, ARepeatedCreateEcdheIsRefusedAndOpensNoChannel) {
  auto mine = jose::EcKeyPair::Generate();
  Object request = Request("create", "/ecdhe", Token("alice@acme.test"));
  request.set("jwk", Parse(*mine->PublicJwkJson()));
  auto jwe =
      jose::EncryptRsaOaepJwe(service_->PublicKey(), "kms://kms.acme.test", Bytes(Json(request)));
  EXPECT_EQ(service_->Handle(*jwe).http_status, 200);
  EXPECT_EQ(Count("ephemeral_keys"), 1);
  KmsReply again = service_->Handle(*jwe);
  ExpectSignedRefusal(again, 409, "replayed request");
  EXPECT_EQ(service_->Handle(*jwe).body, again.body);
  EXPECT_EQ(Count("ephemeral_keys"), 1);
}

// draft-02 4.7.8 and 4.7.3: a request that creates several objects fails whole.
TEST_P(KmsKeysTest, AuthorizationsAndResourcesAreAllOrNothing) {
  Channel alice = Open("alice@acme.test");
  Channel carol = Open("carol@acme.test");
  Channel globex = Open("gina@globex.test");
  const std::string foreign = CreateResource(globex, "gina@globex.test", Strings({}));
  const std::string resource =
      CreateResource(alice, "alice@acme.test", Strings({"carol@acme.test"}));
  EXPECT_EQ(
      StatusOf(Authorize(alice, "alice@acme.test", resource, Strings({"dave@acme.test", foreign}))),
      400);
  EXPECT_EQ(StatusOf(Authorize(alice, "alice@acme.test", resource,
                               Strings({"dave@acme.test", "carol@acme.test"}))),
            409);
  // 4.7.10: an authId with no authorization lists as an empty array.
  Object::Ptr dave =
      Send(carol, Request("retrieve", resource + "/authorizations?authId=dave@acme.test",
                          Token("carol@acme.test")));
  ASSERT_EQ(StatusOf(dave), 200);
  EXPECT_EQ(dave->getArray("authorizations")->size(), 0u);

  // A named resource whose creation failed (a foreign resource as authId) is not taken.
  const std::string named = "kms://kms.acme.test/resources/0d5b2f6e-8a4c-4c1e-9b7a-3f2e1d0c9b8a";
  Object create = Request("create", "/resources", Token("alice@acme.test"));
  create.set("resourceUri", named);
  create.set("authIds", Strings({"bob@acme.test", foreign}));
  EXPECT_EQ(StatusOf(Send(alice, create)), 400);
  EXPECT_EQ(Count("resources"), 2);
  // A key past its bind deadline fails the creation, and stays unbound.
  auto keys = CreateKeys(alice, "alice@acme.test", 1);
  const std::string key = keys[0]->getValue<std::string>("uri");
  now_ms_ += 601 * 1000;
  Object late = Request("create", "/resources", Token("alice@acme.test"));
  late.set("resourceUri", named);
  late.set("authIds", Strings({"bob@acme.test"}));
  late.set("keyUris", Strings({key}));
  EXPECT_EQ(StatusOf(Send(alice, late)), 409);
  EXPECT_EQ(Count("resources"), 2);
  Object::Ptr unbound = Retrieve(alice, "alice@acme.test", key);
  ASSERT_EQ(StatusOf(unbound), 200);
  EXPECT_FALSE(unbound->getObject("key")->has("resourceUri"));
  Object fine = Request("create", "/resources", Token("alice@acme.test"));
  fine.set("resourceUri", named);
  fine.set("authIds", Strings({"bob@acme.test"}));
  EXPECT_EQ(StatusOf(Send(alice, fine)), 201);
}

// Issue 13: the writes of concurrent requests go through one group commit (audit_writer.h). Each
// is answered after the commit that holds it, a refused one fails alone, and every write and its
// audit record is stored.
TEST_P(KmsKeysTest, ConcurrentCreatesAndBindsAreEachAnsweredAndStored) {
  constexpr int kUsers = 8, kKeys = 5;
  std::vector<std::string> users;
  std::vector<Channel> channels;
  for (int i = 0; i < kUsers; ++i) {
    users.push_back("user" + std::to_string(i) + "@acme.test");
    channels.push_back(Open(users.back()));
  }
  // Sealed on this thread (the fixture's request ids are not thread-safe), delivered at once.
  auto deliver_all = [&](const std::vector<std::pair<int, std::string>>& sealed) {
    std::vector<Object::Ptr> answers(sealed.size());
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < sealed.size(); ++i) {
      threads.emplace_back(
          [&, i] { answers[i] = Deliver(channels[sealed[i].first], sealed[i].second); });
    }
    for (std::thread& t : threads) t.join();
    return answers;
  };
  std::vector<std::pair<int, std::string>> creates;
  for (int i = 0; i < kUsers; ++i) {
    Object create = Request("create", "/keys", Token(users[i]));
    create.set("count", kKeys);
    creates.emplace_back(i, Seal(channels[i], create));
  }
  std::vector<Object::Ptr> created = deliver_all(creates);
  std::vector<Poco::JSON::Array> keys(kUsers);
  for (int i = 0; i < kUsers; ++i) {
    ASSERT_EQ(StatusOf(created[i]), 201);
    Poco::JSON::Array::Ptr array = created[i]->getArray("keys");
    ASSERT_EQ(array->size(), static_cast<std::size_t>(kKeys));
    for (unsigned k = 0; k < array->size(); ++k) {
      keys[i].add(array->getObject(k)->getValue<std::string>("uri"));
    }
  }
  EXPECT_EQ(Count("keys"), kUsers * kKeys);
  // Each user binds their keys to a resource of their own with the next user as a member; and,
  // in the same moment, user 1 tries to bind user 0's keys (refused: they are not user 1's).
  std::vector<std::pair<int, std::string>> binds;
  for (int i = 0; i < kUsers; ++i) {
    Object create = Request("create", "/resources", Token(users[i]));
    create.set("authIds", Strings({users[(i + 1) % kUsers]}));
    create.set("keyUris", keys[i]);
    binds.emplace_back(i, Seal(channels[i], create));
  }
  Object stolen = Request("create", "/resources", Token(users[1]));
  stolen.set("keyUris", keys[0]);
  binds.emplace_back(1, Seal(channels[1], stolen));
  std::vector<Object::Ptr> bound = deliver_all(binds);
  for (int i = 0; i < kUsers; ++i) EXPECT_EQ(StatusOf(bound[i]), 201) << Json(*bound[i]);
  EXPECT_EQ(StatusOf(bound[kUsers]), 403);
  EXPECT_EQ(Count("resources"), kUsers);
  EXPECT_EQ(Count("keys WHERE resource_uri IS NOT NULL"), kUsers * kKeys);
  // The member reads each key; the refused attempt left user 0's resource and keys as they were.
  for (int i = 0; i < kUsers; ++i) {
    Object::Ptr read = Retrieve(channels[(i + 1) % kUsers], users[(i + 1) % kUsers],
                                keys[i].getElement<std::string>(0));
    ASSERT_EQ(StatusOf(read), 200);
    EXPECT_EQ(read->getObject("key")->getValue<std::string>("resourceUri"),
              bound[i]->getObject("resource")->getValue<std::string>("uri"));
  }
  auto verdict = AuditLog::Verify(*db_);
  ASSERT_TRUE(verdict.ok());
  EXPECT_TRUE(verdict->ok()) << verdict->problem;
  EXPECT_EQ(Count("audit WHERE action = 'key.create' AND outcome = 'ok'"), kUsers);
  EXPECT_EQ(Count("audit WHERE action = 'resource.create' AND outcome = 'ok'"), kUsers);
  EXPECT_EQ(Count("audit WHERE action = 'resource.create' AND outcome LIKE 'refused:%'"), 1);
}

// A request the KMS cannot parse still names itself in the refusal when its requestId can be read.
TEST_P(KmsServiceTest, AMalformedRequestIsRefusedWithItsOwnRequestId) {
  Channel channel = Open("alice@acme.test");
  Object request;
  request.set("method", "update");
  request.set("uri", "/ping");
  request.set("requestId", "r-77");
  Object::Ptr refused = Send(channel, request);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->getValue<int>("status"), 400);
  EXPECT_EQ(refused->getValue<std::string>("requestId"), "r-77");
}

// Issue 11: a member given twice is refused, not read as the last one, and a count is a number.
TEST_P(KmsKeysTest, DuplicateMembersAndBooleanCountsAreRefused) {
  Channel alice = Open("alice@acme.test");
  const std::string bearer = Token("alice@acme.test");
  const std::string head = R"({"client":{"clientId":"c","credential":{"bearer":")" + bearer +
                           R"("}},"method":"create","uri":"/keys","requestId":"r-1",)";
  for (const std::string& tail :
       {std::string(R"("count":1,"count":100})"), std::string(R"("count":true})"),
        std::string(R"("count":1.5})"), std::string(R"("count":"1"})")}) {
    auto sealed = jose::EncryptDir(alice.key.view(), alice.uri, Bytes(head + tail));
    Object::Ptr answer = Deliver(alice, *sealed);
    ASSERT_TRUE(answer) << tail;
    EXPECT_EQ(StatusOf(answer), 400) << tail;
  }
  // Two bearers in one credential: which user would it be? Neither.
  const std::string two_bearers =
      R"({"client":{"clientId":"c","credential":{"bearer":")" + Token("bob@acme.test") +
      R"(","bearer":")" + bearer +
      R"("}},"method":"create","uri":"/keys","requestId":"r-2","count":1})";
  auto sealed = jose::EncryptDir(alice.key.view(), alice.uri, Bytes(two_bearers));
  EXPECT_EQ(StatusOf(Deliver(alice, *sealed)), 400);
  EXPECT_EQ(Count("keys"), 0);
}

// A retrieval's request is read without a JSON tree when it is written plainly, and its answer is
// written without one (message_json.h): however the request is written, it is answered as the
// strict parser and the Poco answer did, and what that parser refuses is refused as before.
TEST_P(KmsKeysTest, ARetrievalIsAnsweredAlikeHoweverItsRequestIsWritten) {
  Channel alice = Open("alice@acme.test");
  const std::string bearer = Token("alice@acme.test");
  auto keys = CreateKeys(alice, "alice@acme.test", 2);
  const std::string unbound = keys[0]->getValue<std::string>("uri");
  const std::string bound = keys[1]->getValue<std::string>("uri");
  const std::string resource =
      CreateResource(alice, "alice@acme.test", Strings({}), Strings({bound}));
  ASSERT_NE(resource, "");
  // The key as create /keys and retrieve /resources/<id>/keys write it (Poco's objects).
  Object::Ptr listed = Send(alice, Request("retrieve", resource + "/keys", bearer));
  ASSERT_EQ(StatusOf(listed), 200);
  const std::map<std::string, std::string> expected = {
      {unbound, Json(*keys[0])}, {bound, Json(*listed->getArray("keys")->getObject(0))}};

  auto deliver = [&](const std::string& text) {
    return Deliver(alice, *jose::EncryptDir(alice.key.view(), alice.uri, Bytes(text)));
  };
  auto request = [&](const std::string& uri, const std::string& more = "") {
    return R"({"method":"retrieve","uri":")" + uri + R"(","requestId":"r-1",)" + more +
           R"("client":{"clientId":"test-client","credential":{"bearer":")" + bearer + R"("}}})";
  };
  for (const std::string& uri : {unbound, bound}) {
    std::string escaped = uri;  // "\/" for every "/", as Poco and the SDK write it
    for (std::size_t at = 0; (at = escaped.find('/', at)) != std::string::npos; at += 2) {
      escaped.replace(at, 1, "\\/");
    }
    for (const std::string& text : {
             request(uri),
             request(escaped),
             // Plain, with spaces, other members and their order changed.
             R"( { "client" : { "credential" : { "bearer" : ")" + bearer +
                 R"(" , "x" : [ 1 , null ] } , "clientId" : "test-client" } , "uri" : ")" + uri +
                 R"(" , "requestId" : "r-1" , "method" : "retrieve" } )",
             // Not plain, left to the parser: a fraction, text beyond ASCII, deep nesting.
             request(uri, R"("n":1.5,)"),
             request(uri, "\"note\":\"caf\xc3\xa9 \\u00e9\","),
             request(uri, R"("x":{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":1}}}}}}}},)"),
         }) {
      Object::Ptr answer = deliver(text);
      ASSERT_EQ(StatusOf(answer), 200) << text;
      EXPECT_EQ(answer->getValue<std::string>("requestId"), "r-1");
      EXPECT_EQ(answer->size(), 3u) << Json(*answer);
      // Members, values and their JSON kinds: Json() writes members in name order.
      EXPECT_EQ(Json(*answer->getObject("key")), expected.at(uri)) << text;
    }
  }

  // What the strict parser refuses, or a field missing or of another kind, is refused as before,
  // naming the requestId when it can be read.
  const std::string refused_json = "the request is not a JSON object with each member once";
  const std::string refused_fields =
      "a request needs method, uri, requestId, client.clientId and client.credential.bearer";
  const std::string b = R"("bearer":")" + bearer + R"(")";
  for (
      const auto& [text, reason] : std::vector<std::pair<std::string, std::string>>{
          {request(unbound, R"("uri":"/ping",)"), refused_json},
          {request(unbound, R"("client":{},)"), refused_json},
          {R"({"method":"retrieve","uri":")" + unbound +
               R"(","requestId":"r-1","client":{"clientId":"test-client","credential":{)" + b +
               "," + b + "}}}",
           refused_json},
          {request(unbound) + " x", refused_json},
          {request(unbound) + "{}", refused_json},
          {request(unbound).substr(0, request(unbound).size() - 1), refused_json},
          {request(unbound, R"("n":01,)"), refused_json},
          {request(unbound, R"("n":'x',)"), refused_json},
          {R"({"method":"retrieve","uri":")" + unbound +
               R"(","requestId":"r-1","client":{"clientId":"test-client","credential":{}}})",
           refused_fields},
          {R"({"method":7,"uri":")" + unbound + R"(","requestId":"r-1",)" +
               R"("client":{"clientId":"test-client","credential":{)" + b + "}}}",
           refused_fields},
          {R"({"method":"retrieve","uri":")" + unbound +
               R"(","requestId":"r-1","client":{"clientId":"test-client","credential":{"bearer":1}}})",
           refused_fields},
          {R"({"method":"retrieve","uri":")" + unbound +
               R"(","requestId":"r-1","client":{"clientId":"test-client","credential":")" + bearer +
               R"("}})",
           refused_fields},
      }) {
    Object::Ptr answer = deliver(text);
    ASSERT_TRUE(answer) << text;
    EXPECT_EQ(StatusOf(answer), 400) << text;
    EXPECT_EQ(answer->getValue<std::string>("reason"), reason) << text;
    EXPECT_FALSE(answer->has("key")) << text;
  }
  // onBehalfOf, of whatever kind, makes it a compliance request, read from the whole request.
  for (const std::string& target : {std::string("null"), std::string("\"\""), std::string("7")}) {
    const std::string text = R"({"method":"retrieve","uri":")" + unbound +
                             R"(","requestId":"r-1","client":{"clientId":"test-client",)" +
                             R"("credential":{"onBehalfOf":)" + target + "," + b + "}}}";
    Object::Ptr answer = deliver(text);
    EXPECT_EQ(StatusOf(answer), 400) << text;
    EXPECT_EQ(answer->getValue<std::string>("reason"),
              "onBehalfOf must name one user (and match userId)");
  }
  const std::string officer = R"({"method":"retrieve","uri":")" + unbound +
                              R"(","requestId":"r-1","client":{"clientId":"test-client",)" +
                              R"("credential":{"onBehalfOf":"bob@acme.test",)" + b + "}}}";
  EXPECT_EQ(StatusOf(deliver(officer)), 403);  // alice is no compliance officer
}

// The HSM's failures, injected through the in-memory vault: a primary and a standby token, each
// with its own root keys and identity key, as kmsd runs them.
class KmsVaultFaultTest : public KmsKeysTest {
 protected:
  std::unique_ptr<hsm::Vault> MakeVault() override {
    auto vault = std::make_unique<testing::FakeVault>(
        std::vector<testing::FakeVault::TokenSpec>{{"primary", {}}, {"standby", {}}});
    EXPECT_TRUE(vault->InitRoot("acme").ok());
    EXPECT_TRUE(vault->CreateIdentityKeys("kms").ok());
    primary_ = &vault->token("primary");
    standby_ = &vault->token("standby");
    return vault;
  }

  // A key of alice's bound to a resource she made; returns its URI and material ("k").
  std::pair<std::string, std::string> BoundKey(const Channel& alice) {
    Object::Ptr key = CreateKeys(alice, "alice@acme.test", 1).at(0);
    const std::string uri = key->getValue<std::string>("uri");
    EXPECT_NE(CreateResource(alice, "alice@acme.test", Strings({}), Strings({uri})), "");
    return {uri, key->getObject("jwk")->getValue<std::string>("k")};
  }

  testing::FakeToken* primary_ = nullptr;
  testing::FakeToken* standby_ = nullptr;
};

INSTANTIATE_TEST_SUITE_P(Engines, KmsVaultFaultTest, testing::kBothEngines, testing::EngineName);

TEST_P(KmsVaultFaultTest, KeysAreServedByTheStandbyWhileThePrimaryIsDown) {
  Channel alice = Open("alice@acme.test");
  const auto [uri, material] = BoundKey(alice);
  primary_->MarkUnavailable();
  const std::uint64_t primary_unwraps = primary_->calls().unwraps;
  Object::Ptr answer = Retrieve(alice, "alice@acme.test", uri);
  ASSERT_EQ(StatusOf(answer), 200) << Json(*answer);
  EXPECT_EQ(answer->getObject("key")->getObject("jwk")->getValue<std::string>("k"), material);
  EXPECT_EQ(primary_->calls().unwraps, primary_unwraps);  // never asked while down
  EXPECT_GE(standby_->calls().unwraps, 2u);               // the channel's key and the content key
}

TEST_P(KmsVaultFaultTest, ACallWhoseTokenIsRemovedMidCallGoesToTheStandby) {
  Channel alice = Open("alice@acme.test");
  const auto [uri, material] = BoundKey(alice);
  primary_->RemoveMidCall();
  Object::Ptr answer = Retrieve(alice, "alice@acme.test", uri);
  ASSERT_EQ(StatusOf(answer), 200) << Json(*answer);
  EXPECT_EQ(answer->getObject("key")->getObject("jwk")->getValue<std::string>("k"), material);
  EXPECT_EQ(primary_->Health().state, hsm::TokenState::kUnavailable);
  // Keys made meanwhile are wrapped by the standby alone, for the reconciliation to complete.
  EXPECT_EQ(CreateKeys(alice, "alice@acme.test", 2).size(), 2u);
  EXPECT_EQ(Count("key_blobs WHERE token = 'primary'"), 1);
  EXPECT_EQ(Count("key_blobs WHERE token = 'standby'"), 3);
}

TEST_P(KmsVaultFaultTest, WithEveryTokenDownASealedRequestIsHsmUnavailable) {
  Channel alice = Open("alice@acme.test");
  primary_->MarkUnavailable();
  standby_->MarkUnavailable();
  KmsReply raw;
  EXPECT_EQ(Send(alice, Request("update", "/ping", Token("alice@acme.test")), &raw), nullptr);
  EXPECT_EQ(raw.http_status, 503);
  EXPECT_EQ(raw.content_type, "application/json");
  EXPECT_NE(raw.body.find("hsm_unavailable"), std::string::npos) << raw.body;
  primary_->Restore();
  EXPECT_EQ(StatusOf(Send(alice, Request("update", "/ping", Token("alice@acme.test")))), 200);
}

TEST_P(KmsVaultFaultTest, AnIntegrityFailureIsAnAlarmAndNeverPassedToTheStandby) {
  KeyCache channels(8, std::chrono::minutes(5));  // the channel's key stays usable
  service_ = NewService({nullptr, nullptr, &channels});
  Channel alice = Open("alice@acme.test");
  const auto [uri, material] = BoundKey(alice);
  primary_->FailIntegrity();
  const std::uint64_t standby_unwraps = standby_->calls().unwraps;
  Object::Ptr answer = Retrieve(alice, "alice@acme.test", uri);
  EXPECT_EQ(StatusOf(answer), 500);
  EXPECT_EQ(answer->getValue<std::string>("reason").find(material), std::string::npos);
  EXPECT_EQ(standby_->calls().unwraps, standby_unwraps);
  AuditFilter all;
  all.limit = 100;
  auto records = AuditLog::Query(*db_, all);
  ASSERT_TRUE(records.ok());
  EXPECT_TRUE(std::any_of(records->begin(), records->end(), [&](const AuditRecord& r) {
    return r.action == "key.retrieve" && r.key == uri && r.outcome == "failed: DATA_LOSS";
  }));
  // A channel whose own key fails the check cannot be used at all, and says so plainly.
  Channel bob = Open("bob@acme.test");  // its key wrapped, not yet unwrapped
  KmsReply raw;
  EXPECT_EQ(Send(bob, Request("update", "/ping", Token("bob@acme.test")), &raw), nullptr);
  EXPECT_EQ(raw.http_status, 500);
  EXPECT_NE(raw.body.find("ephemeral key"), std::string::npos) << raw.body;
}

TEST_P(KmsVaultFaultTest, ARootKeyPastItsWrapLimitRefusesNewKeysUntilRotated) {
  Channel alice = Open("alice@acme.test");
  primary_->SetWrapLimit(1);  // the channel's key used the one wrap of v1
  Object request = Request("create", "/keys", Token("alice@acme.test"));
  request.set("count", 1);
  EXPECT_EQ(StatusOf(Send(alice, request)), 429);
  EXPECT_EQ(Count("keys"), 0);
  ASSERT_TRUE(vault_->RotateRoot("acme").ok());
  EXPECT_EQ(CreateKeys(alice, "alice@acme.test", 1).size(), 1u);
}

TEST_P(KmsVaultFaultTest, TheIdentityInServiceMovesToTheStandbyAndBack) {
  const std::string primary_info = service_->InfoJson();
  primary_->MarkUnavailable();
  const std::string standby_info = service_->InfoJson();
  EXPECT_NE(standby_info, primary_info);
  auto standby_key = standby_->IdentityPublicKey("kms");
  ASSERT_TRUE(standby_key.ok());
  auto expected = jose::PublicJwk::FromRsa(standby_key->modulus, standby_key->public_exponent,
                                           "kms://kms.acme.test", {});
  EXPECT_EQ(service_->PublicKey().ToJson().value(), expected->ToJson().value());
  // A channel opens under the standby's identity, its answer signed by the standby.
  const std::uint64_t signatures = standby_->calls().signatures;
  Channel alice = Open("alice@acme.test");
  EXPECT_GT(standby_->calls().signatures, signatures);
  primary_->Restore();
  EXPECT_EQ(service_->InfoJson(), primary_info);
}

TEST_P(KmsVaultFaultTest, ACreateEcdheSealedToADownTokensIdentityIsIdentityUnavailable) {
  auto standby_key = standby_->IdentityPublicKey("kms");
  ASSERT_TRUE(standby_key.ok());
  auto standby_jwk = jose::PublicJwk::FromRsa(standby_key->modulus, standby_key->public_exponent,
                                              "kms://kms.acme.test", {});
  ASSERT_TRUE(standby_jwk.ok());
  auto mine = jose::EcKeyPair::Generate();
  Object request = Request("create", "/ecdhe", Token("alice@acme.test"));
  request.set("jwk", Parse(*mine->PublicJwkJson()));
  auto sealed = jose::EncryptRsaOaepJwe(*standby_jwk, "kms://kms.acme.test", Bytes(Json(request)));
  ASSERT_TRUE(sealed.ok());
  standby_->MarkUnavailable();
  KmsReply reply = service_->Handle(*sealed);
  EXPECT_EQ(reply.http_status, 503);
  EXPECT_NE(reply.body.find("identity_unavailable"), std::string::npos) << reply.body;
  EXPECT_EQ(Count("ephemeral_keys"), 0);
  // Once the standby is back, the same message opens a channel (it was not counted as seen).
  standby_->Restore();
  KmsReply opened = service_->Handle(*sealed);
  EXPECT_EQ(opened.http_status, 200) << opened.body;
  EXPECT_EQ(Count("ephemeral_keys"), 1);
}

// Issue 14: the organizations' search keys, for their indexers only.
class KmsSearchKeyTest : public KmsKeysTest {
 protected:
  void SetUp() override {
    KmsKeysTest::SetUp();
    OrgPolicy acme;
    acme.org = "acme";
    acme.indexer = "svc-indexer@acme.test";
    acme.compliance_officers = {"carol@acme.test"};
    SetPolicy(acme);
    OrgPolicy globex;
    globex.org = "globex";
    globex.indexer = "svc-indexer@globex.test";
    SetPolicy(globex);
  }

  Object::Ptr SearchKeyOf(const Object::Ptr& answer) {
    EXPECT_EQ(StatusOf(answer), 200) << (answer ? Json(*answer) : "plain");
    return answer && answer->has("searchKey") ? answer->getObject("searchKey") : nullptr;
  }

  std::vector<AuditRecord> Audited(const std::string& action) {
    AuditFilter all;
    auto records = AuditLog::Query(*db_, all);
    EXPECT_TRUE(records.ok());
    std::vector<AuditRecord> out;
    for (const AuditRecord& r : records.ok() ? *records : std::vector<AuditRecord>()) {
      if (r.action == action) out.push_back(r);
    }
    return out;
  }
};

INSTANTIATE_TEST_SUITE_P(Engines, KmsSearchKeyTest, testing::kBothEngines, testing::EngineName);

TEST_P(KmsSearchKeyTest, TheIndexerGetsItsOrganizationsKeyMadeOnTheFirstRequest) {
  Channel indexer = Open("svc-indexer@acme.test");
  const std::string me = "svc-indexer@acme.test";
  EXPECT_EQ(Count("search_keys"), 0);
  Object::Ptr first = SearchKeyOf(Retrieve(indexer, me, "/search-keys"));
  ASSERT_TRUE(first);
  EXPECT_EQ(first->getValue<std::string>("uri"), "kms://kms.acme.test/search-keys/acme/1");
  EXPECT_EQ(first->getValue<int>("version"), 1);
  Object::Ptr jwk = first->getObject("jwk");
  EXPECT_EQ(jwk->getValue<std::string>("kty"), "oct");
  EXPECT_EQ(jwk->getValue<std::string>("kid"), first->getValue<std::string>("uri"));
  const std::string k = jwk->getValue<std::string>("k");
  EXPECT_EQ(jose::Base64UrlDecode(k)->size(), 32u);
  // Stored once, only wrapped, one blob per token.
  EXPECT_EQ(Count("search_keys"), 1);
  EXPECT_EQ(Count("search_key_blobs"), static_cast<std::int64_t>(vault_->Tokens().size()));
  EXPECT_EQ(Count("keys"), 0);  // no content key, nothing retrieve /keys/<id> could reach

  // The same key again, as the current one and by its version.
  Object::Ptr again = SearchKeyOf(Retrieve(indexer, me, "/search-keys"));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->getObject("jwk")->getValue<std::string>("k"), k);
  Object::Ptr by_version = SearchKeyOf(Retrieve(indexer, me, "/search-keys/acme/1"));
  ASSERT_TRUE(by_version);
  EXPECT_EQ(by_version->getObject("jwk")->getValue<std::string>("k"), k);
  EXPECT_EQ(Count("search_keys"), 1);

  ASSERT_EQ(Audited("search-key.create").size(), 1u);
  const std::vector<AuditRecord> retrievals = Audited("search-key.retrieve");
  ASSERT_EQ(retrievals.size(), 3u);
  for (const AuditRecord& r : retrievals) {
    EXPECT_EQ(r.actor, me);
    EXPECT_EQ(r.outcome, "ok");
    EXPECT_EQ(r.key, "kms://kms.acme.test/search-keys/acme/1");
    EXPECT_EQ(r.detail.find(k), std::string::npos);  // never the key itself
  }
}

TEST_P(KmsSearchKeyTest, OnlyTheIndexerOfTheSameOrganizationGetsAKey) {
  Channel alice = Open("alice@acme.test");
  Channel carol = Open("carol@acme.test");  // acme's compliance officer
  Channel acme_indexer = Open("svc-indexer@acme.test");
  Channel globex_indexer = Open("svc-indexer@globex.test");
  // Refused before any key exists: a refusal makes none.
  EXPECT_EQ(StatusOf(Retrieve(alice, "alice@acme.test", "/search-keys")), 403);
  EXPECT_EQ(StatusOf(Retrieve(globex_indexer, "svc-indexer@globex.test", "/search-keys/acme/1")),
            403);
  EXPECT_EQ(Count("search_keys"), 0);
  Object::Ptr acme_key =
      SearchKeyOf(Retrieve(acme_indexer, "svc-indexer@acme.test", "/search-keys"));
  ASSERT_TRUE(acme_key);

  // Not a member, not an officer (in its own name or on the indexer's behalf), not another
  // organization's indexer, and not the indexer for another organization.
  EXPECT_EQ(StatusOf(Retrieve(alice, "alice@acme.test", "/search-keys")), 403);
  EXPECT_EQ(StatusOf(Retrieve(alice, "alice@acme.test", "/search-keys/acme/1")), 403);
  EXPECT_EQ(StatusOf(Retrieve(carol, "carol@acme.test", "/search-keys/acme/1")), 403);
  EXPECT_EQ(StatusOf(OnBehalf(carol, "carol@acme.test", "svc-indexer@acme.test", "retrieve",
                              "/search-keys/acme/1")),
            403);
  EXPECT_EQ(StatusOf(OnBehalf(carol, "carol@acme.test", "svc-indexer@acme.test", "retrieve",
                              "/search-keys")),
            403);
  Object::Ptr cross = Retrieve(globex_indexer, "svc-indexer@globex.test", "/search-keys/acme/1");
  EXPECT_EQ(StatusOf(cross), 403);
  EXPECT_FALSE(cross->has("searchKey"));
  EXPECT_EQ(StatusOf(Retrieve(acme_indexer, "svc-indexer@acme.test", "/search-keys/globex/1")),
            403);

  // globex's indexer has a key of its own, unrelated to acme's.
  Object::Ptr globex_key =
      SearchKeyOf(Retrieve(globex_indexer, "svc-indexer@globex.test", "/search-keys"));
  ASSERT_TRUE(globex_key);
  EXPECT_EQ(globex_key->getValue<std::string>("uri"), "kms://kms.acme.test/search-keys/globex/1");
  EXPECT_NE(globex_key->getObject("jwk")->getValue<std::string>("k"),
            acme_key->getObject("jwk")->getValue<std::string>("k"));

  // Every refusal is audited, the cross-organization one under the asking indexer's name.
  std::vector<AuditRecord> denied;
  for (const AuditRecord& r : Audited("search-key.retrieve")) {
    if (r.outcome == "denied") denied.push_back(r);
  }
  EXPECT_EQ(denied.size(), 9u);
  EXPECT_EQ(std::count_if(denied.begin(), denied.end(),
                          [](const AuditRecord& r) {
                            return r.actor == "svc-indexer@globex.test" && r.org == "globex" &&
                                   r.key == "kms://kms.acme.test/search-keys/acme/1";
                          }),
            2);
}

TEST_P(KmsSearchKeyTest, AnOrganizationWithoutAnIndexerHasNoKeyToGive) {
  OrgPolicy none;
  none.org = "acme";
  SetPolicy(none);
  Channel indexer = Open("svc-indexer@acme.test");
  EXPECT_EQ(StatusOf(Retrieve(indexer, "svc-indexer@acme.test", "/search-keys")), 403);
  EXPECT_EQ(Count("search_keys"), 0);
}

TEST_P(KmsSearchKeyTest, UnknownVersionsAreNotFoundAndMalformedOnesRefused) {
  Channel indexer = Open("svc-indexer@acme.test");
  const std::string me = "svc-indexer@acme.test";
  EXPECT_EQ(StatusOf(Retrieve(indexer, me, "/search-keys/acme/1")), 404);  // none made yet
  ASSERT_TRUE(SearchKeyOf(Retrieve(indexer, me, "/search-keys")));
  EXPECT_EQ(StatusOf(Retrieve(indexer, me, "/search-keys/acme/2")), 404);
  EXPECT_EQ(StatusOf(Retrieve(indexer, me, "/search-keys/acme/4294967295")), 404);
  for (const char* version : {"0", "01", "-1", "abc", "4294967296", "99999999999"}) {
    Object::Ptr refused = Retrieve(indexer, me, std::string("/search-keys/acme/") + version);
    EXPECT_EQ(StatusOf(refused), 400) << version;
    EXPECT_NE(refused->getValue<std::string>("reason").find("version"), std::string::npos);
  }
  EXPECT_EQ(StatusOf(Retrieve(indexer, me, "/search-keys/acme")), 404);  // names nothing
  EXPECT_EQ(StatusOf(Send(indexer, Request("create", "/search-keys", Token(me)))), 404);
  EXPECT_EQ(StatusOf(Send(indexer, Request("delete", "/search-keys/acme/1", Token(me)))), 404);
  EXPECT_EQ(Count("search_keys"), 1);
}

TEST_P(KmsSearchKeyTest, RotationMakesTheNextVersionCurrentAndKeepsTheOldOnes) {
  Channel indexer = Open("svc-indexer@acme.test");
  const std::string me = "svc-indexer@acme.test";
  Object::Ptr v1 = SearchKeyOf(Retrieve(indexer, me, "/search-keys"));
  ASSERT_TRUE(v1);
  SearchKeys keys("kms://kms.acme.test", *vault_, *db_, [this] { return now_ms_.load(); });
  auto rotated = keys.Rotate("acme", "operator:olga");
  ASSERT_TRUE(rotated.ok()) << rotated.error().ToString();
  EXPECT_EQ(rotated->version, 2u);
  EXPECT_EQ(rotated->uri, "kms://kms.acme.test/search-keys/acme/2");

  Object::Ptr v2 = SearchKeyOf(Retrieve(indexer, me, "/search-keys"));
  ASSERT_TRUE(v2);
  EXPECT_EQ(v2->getValue<int>("version"), 2);
  EXPECT_NE(v2->getObject("jwk")->getValue<std::string>("k"),
            v1->getObject("jwk")->getValue<std::string>("k"));
  Object::Ptr old = SearchKeyOf(Retrieve(indexer, me, "/search-keys/acme/1"));
  ASSERT_TRUE(old);
  EXPECT_EQ(old->getObject("jwk")->getValue<std::string>("k"),
            v1->getObject("jwk")->getValue<std::string>("k"));
  const std::vector<AuditRecord> rotations = Audited("search-key.rotate");
  ASSERT_EQ(rotations.size(), 1u);
  EXPECT_EQ(rotations[0].actor, "operator:olga");
  EXPECT_EQ(rotations[0].key, "kms://kms.acme.test/search-keys/acme/2");
  // An organization name that is not a URI segment has no search key, and says so.
  auto dotted = keys.Rotate("acme.corp", "operator");
  ASSERT_FALSE(dotted.ok());
  EXPECT_EQ(dotted.error().code(), ErrorCode::kInvalidArgument);
}

TEST_P(KmsSearchKeyTest, ASearchKeyRequestExecutesAtMostOnce) {
  Channel indexer = Open("svc-indexer@acme.test");
  const std::string me = "svc-indexer@acme.test";
  for (const std::string uri : {"/search-keys", "/search-keys/acme/1"}) {
    const std::string sealed = Seal(indexer, Request("retrieve", uri, Token(me)));
    EXPECT_EQ(StatusOf(Deliver(indexer, sealed)), 200) << uri;
    Object::Ptr again = Deliver(indexer, sealed);
    EXPECT_EQ(StatusOf(again), 409) << uri;
    EXPECT_FALSE(again->has("searchKey"));
  }
}

// Issue 14: which resources a user is authorized on, for the user, its organization's indexer and
// its organization's compliance officers.
class KmsUserAuthorizationsTest : public KmsSearchKeyTest {
 protected:
  Object::Ptr List(const Channel& channel, const std::string& caller, const std::string& user,
                   std::optional<int> limit = std::nullopt, const std::string& cursor = "") {
    Object request = Request("retrieve", "/authorizations?authId=" + user, Token(caller));
    if (limit) request.set("limit", *limit);
    if (!cursor.empty()) request.set("cursor", cursor);
    return Send(channel, request);
  }

  // Every page of `user`'s resources, `limit` at a time: {resourceUri: roleUri}.
  std::map<std::string, std::string> ListAll(const Channel& channel, const std::string& caller,
                                             const std::string& user, int limit,
                                             int* pages = nullptr) {
    std::map<std::string, std::string> out;
    std::string cursor, last;
    for (int page = 1; page <= 100; ++page) {
      Object::Ptr answer = List(channel, caller, user, limit, cursor);
      EXPECT_EQ(StatusOf(answer), 200) << (answer ? Json(*answer) : "plain");
      if (StatusOf(answer) != 200) break;
      Poco::JSON::Array::Ptr items = answer->getArray("authorizations");
      EXPECT_LE(items->size(), static_cast<std::size_t>(limit));
      for (unsigned i = 0; i < items->size(); ++i) {
        const std::string uri = items->getObject(i)->getValue<std::string>("resourceUri");
        EXPECT_GT(uri, last);  // in URI order, no repeats
        last = uri;
        out[uri] = items->getObject(i)->getValue<std::string>("roleUri");
      }
      if (pages) *pages = page;
      if (!answer->has("cursor")) break;
      EXPECT_EQ(items->size(), static_cast<std::size_t>(limit));  // only full pages go on
      cursor = answer->getValue<std::string>("cursor");
    }
    return out;
  }
};

INSTANTIATE_TEST_SUITE_P(Engines, KmsUserAuthorizationsTest, testing::kBothEngines,
                         testing::EngineName);

TEST_P(KmsUserAuthorizationsTest, AUserListsItsResourcesPageByPage) {
  Channel alice = Open("alice@acme.test");
  Channel bob = Open("bob@acme.test");
  std::set<std::string> bobs;
  for (int i = 0; i < 5; ++i) {
    bobs.insert(CreateResource(alice, "alice@acme.test", Strings({"bob@acme.test"})));
  }
  CreateResource(alice, "alice@acme.test", Strings({}));  // not bob's
  // A resource that names one of bob's as an authId lends him its membership.
  const std::string lent = CreateResource(alice, "alice@acme.test", Strings({*bobs.begin()}));
  bobs.insert(lent);
  // One bob was removed from is not his any more.
  const std::string left = CreateResource(alice, "alice@acme.test", Strings({"bob@acme.test"}));
  ASSERT_EQ(StatusOf(Send(alice, Request("delete", left + "/authorizations?authId=bob@acme.test",
                                         Token("alice@acme.test")))),
            200);

  int pages = 0;
  const std::map<std::string, std::string> listed =
      ListAll(bob, "bob@acme.test", "bob@acme.test", 2, &pages);
  EXPECT_EQ(pages, 3);
  std::set<std::string> uris;
  for (const auto& [uri, role] : listed) {
    uris.insert(uri);
    EXPECT_EQ(role, "participant") << uri;
  }
  EXPECT_EQ(uris, bobs);
  // The default page holds them all, with no cursor.
  Object::Ptr whole = List(bob, "bob@acme.test", "bob@acme.test");
  ASSERT_EQ(StatusOf(whole), 200);
  EXPECT_EQ(whole->getArray("authorizations")->size(), bobs.size());
  EXPECT_FALSE(whole->has("cursor"));
  EXPECT_EQ(ListAll(alice, "alice@acme.test", "alice@acme.test", 1000).size(), 8u);
  // Someone authorized nowhere gets an empty list.
  Channel dave = Open("dave@acme.test");
  EXPECT_TRUE(ListAll(dave, "dave@acme.test", "dave@acme.test", 10).empty());
}

TEST_P(KmsUserAuthorizationsTest, TheIndexerListsUsersOfItsOwnOrganizationOnly) {
  Channel alice = Open("alice@acme.test");
  Channel dave = Open("dave@acme.test");
  Channel indexer = Open("svc-indexer@acme.test");
  Channel globex_indexer = Open("svc-indexer@globex.test");
  const std::string resource = CreateResource(alice, "alice@acme.test", Strings({"bob@acme.test"}));
  const std::map<std::string, std::string> expected{{resource, "participant"}};
  EXPECT_EQ(ListAll(indexer, "svc-indexer@acme.test", "bob@acme.test", 10), expected);
  EXPECT_EQ(ListAll(indexer, "svc-indexer@acme.test", "alice@acme.test", 10), expected);

  // Another member, another organization's indexer: refused, or nothing of acme's.
  EXPECT_EQ(StatusOf(List(alice, "alice@acme.test", "bob@acme.test")), 403);
  EXPECT_EQ(StatusOf(List(dave, "dave@acme.test", "bob@acme.test")), 403);
  Object::Ptr cross = List(globex_indexer, "svc-indexer@globex.test", "bob@acme.test");
  ASSERT_EQ(StatusOf(cross), 200);  // globex's own resources naming that id: none
  EXPECT_EQ(cross->getArray("authorizations")->size(), 0u);

  AuditFilter by_dave;
  by_dave.actor = "dave@acme.test";
  auto records = AuditLog::Query(*db_, by_dave);
  ASSERT_TRUE(records.ok());
  std::vector<std::string> outcomes;
  for (const AuditRecord& r : *records) {
    if (r.action == "authorization.list") outcomes.push_back(r.outcome);
  }
  EXPECT_EQ(outcomes, std::vector<std::string>{"denied"});
}

TEST_P(KmsUserAuthorizationsTest, AComplianceOfficerListsOnBehalfOfAUserAndIsAudited) {
  Channel alice = Open("alice@acme.test");
  Channel carol = Open("carol@acme.test");  // acme's compliance officer
  Channel dave = Open("dave@acme.test");
  const std::string resource = CreateResource(alice, "alice@acme.test", Strings({"bob@acme.test"}));
  auto list_for = [&](const Channel& channel, const std::string& officer, const std::string& target,
                      const std::string& user) {
    return OnBehalf(channel, officer, target, "retrieve", "/authorizations?authId=" + user);
  };
  Object::Ptr listed = list_for(carol, "carol@acme.test", "bob@acme.test", "bob@acme.test");
  ASSERT_EQ(StatusOf(listed), 200) << Json(*listed);
  ASSERT_EQ(listed->getArray("authorizations")->size(), 1u);
  EXPECT_EQ(listed->getArray("authorizations")->getObject(0)->getValue<std::string>("resourceUri"),
            resource);
  // Only the user it acts for; only officers; the officer in its own name is no one special.
  EXPECT_EQ(StatusOf(list_for(carol, "carol@acme.test", "bob@acme.test", "alice@acme.test")), 403);
  EXPECT_EQ(StatusOf(list_for(dave, "dave@acme.test", "bob@acme.test", "bob@acme.test")), 403);
  EXPECT_EQ(StatusOf(List(carol, "carol@acme.test", "bob@acme.test")), 403);
  // Acting for the indexer does not lend the officer the indexer's right to list others.
  EXPECT_EQ(StatusOf(list_for(carol, "carol@acme.test", "svc-indexer@acme.test", "bob@acme.test")),
            403);

  AuditFilter by_carol;
  by_carol.actor = "carol@acme.test";
  auto records = AuditLog::Query(*db_, by_carol);
  ASSERT_TRUE(records.ok());
  int ok = 0;
  for (const AuditRecord& r : *records) {
    if (r.action != "authorization.list") continue;
    if (r.outcome == "ok") {
      ++ok;
      EXPECT_EQ(r.detail.rfind(R"(on behalf of "bob@acme.test")", 0), 0u) << r.detail;
    }
  }
  EXPECT_EQ(ok, 1);
}

TEST_P(KmsUserAuthorizationsTest, BadParametersAreRefusedWithAReason) {
  Channel bob = Open("bob@acme.test");
  const std::string me = "bob@acme.test";
  Object::Ptr no_auth_id = Send(bob, Request("retrieve", "/authorizations", Token(me)));
  EXPECT_EQ(StatusOf(no_auth_id), 400);
  EXPECT_NE(no_auth_id->getValue<std::string>("reason").find("authId"), std::string::npos);
  EXPECT_EQ(StatusOf(Send(bob, Request("retrieve", "/authorizations?authId=", Token(me)))), 400);
  EXPECT_EQ(StatusOf(Send(bob, Request("retrieve", "/authorizations?user=bob", Token(me)))), 400);
  for (const Poco::Dynamic::Var& limit :
       std::vector<Poco::Dynamic::Var>{0, 1001, -1, std::string("5"), true, 2.5}) {
    Object request = Request("retrieve", "/authorizations?authId=" + me, Token(me));
    request.set("limit", limit);
    Object::Ptr refused = Send(bob, request);
    EXPECT_EQ(StatusOf(refused), 400) << limit.toString();
    EXPECT_NE(refused->getValue<std::string>("reason").find("limit"), std::string::npos);
  }
  for (const Poco::Dynamic::Var& cursor : std::vector<Poco::Dynamic::Var>{
           5, std::string("nonsense"), std::string("kms://other.test/resources/x"),
           std::string("kms://kms.acme.test/keys/x")}) {
    Object request = Request("retrieve", "/authorizations?authId=" + me, Token(me));
    request.set("cursor", cursor);
    Object::Ptr refused = Send(bob, request);
    EXPECT_EQ(StatusOf(refused), 400) << cursor.toString();
    EXPECT_NE(refused->getValue<std::string>("reason").find("cursor"), std::string::npos);
  }
  // Anything but retrieve names nothing.
  EXPECT_EQ(StatusOf(Send(bob, Request("delete", "/authorizations?authId=" + me, Token(me)))), 404);
}

TEST_P(KmsUserAuthorizationsTest, AListingExecutesAtMostOnce) {
  Channel bob = Open("bob@acme.test");
  const std::string sealed = Seal(
      bob, Request("retrieve", "/authorizations?authId=bob@acme.test", Token("bob@acme.test")));
  EXPECT_EQ(StatusOf(Deliver(bob, sealed)), 200);
  Object::Ptr again = Deliver(bob, sealed);
  EXPECT_EQ(StatusOf(again), 409);
  EXPECT_FALSE(again->has("authorizations"));
}

}  // namespace
}  // namespace strongroom::kms
