// cored's routes (CoreRoutes, core_server.h) without a socket: each request is made as a value
// and answered by http::Answer, over a real CoreService on SQLite, a real JwtVerifier (tokens
// minted with a key made here), a RealtimeHub and a KmsRelay with no KMS attached. cored_test.cc
// drives the same routes through the cored binary over HTTPS.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/UUIDGenerator.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <algorithm>
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "../support/test_dir.h"
#include "strongroom/common/jose/dir_jwe.h"
#include "strongroom/common/jwt.h"
#include "strongroom/core/core_server.h"

namespace strongroom::core {
namespace {

using Poco::JSON::Object;

constexpr char kIssuer[] = "https://idp.acme.test";
constexpr char kAlice[] = "alice@acme.test";
constexpr char kBob[] = "bob@acme.test";
constexpr char kIndexer[] = "indexer@acme.test";
constexpr char kKms[] = "kms://kms.acme.test";

std::string NewUuid() { return Poco::UUIDGenerator::defaultGenerator().createRandom().toString(); }

Object::Ptr Parse(const std::string& text) {
  return Poco::JSON::Parser().parse(text).extract<Object::Ptr>();
}

std::string CodeOf(const http::Response& answer) {
  return Parse(answer.body)->getValue<std::string>("code");
}

std::string Sha256Hex(const std::string& data) {
  unsigned char digest[32];
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr);
  std::string hex;
  for (unsigned i = 0; i < length; ++i) {
    hex += "0123456789abcdef"[digest[i] >> 4];
    hex += "0123456789abcdef"[digest[i] & 15];
  }
  return hex;
}

class CoreRoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = Database::OpenSqlite((dir_ / "core.db").string(), CoreService::Migrations());
    ASSERT_TRUE(db.ok()) << db.error().ToString();
    db_ = std::move(db).value();
    CoreServiceConfig config;
    config.files_dir = (dir_ / "files").string();
    config.indexer_user_id = kIndexer;
    config.indexer_org = "acme";
    auto service = CoreService::New(config, *db_);
    ASSERT_TRUE(service.ok()) << service.error().ToString();
    service_ = std::move(service).value();
    auto key = jose::EcKeyPair::Generate("acme-1");
    ASSERT_TRUE(key.ok());
    key_ = std::make_unique<jose::EcKeyPair>(std::move(key).value());
    TrustedIssuer issuer{kIssuer, "acme", {*key_->PublicKey()}, {"acme.test"}};
    auto verifier = JwtVerifier::New({issuer}, "core", std::chrono::seconds(60));
    ASSERT_TRUE(verifier.ok()) << verifier.error().ToString();
    verifier_ = std::make_unique<JwtVerifier>(std::move(verifier).value());
    hub_ = std::make_unique<RealtimeHub>(*service_);
    auto relay = KmsRelay::New({});
    ASSERT_TRUE(relay.ok());
    relay_ = std::move(relay).value();
    options_.max_file_bytes = 1024;
    Make();
  }

  void Make() {
    routes_ = std::make_unique<CoreRoutes>(*service_, *verifier_, *hub_, *relay_, options_);
  }

  std::string Bearer(const std::string& user, const std::string& audience = "core") {
    return *MintJwt(*key_, {kIssuer, user, audience, std::time(nullptr) - 5, 3600});
  }

  // The answer to `method target` with `body`; `user` empty: no Authorization.
  http::Response Call(const std::string& method, const std::string& target, const std::string& user,
                      const std::string& body = "", const std::string& type = "application/json") {
    Poco::Net::HTTPRequest head(method, target, Poco::Net::HTTPMessage::HTTP_1_1);
    if (!user.empty()) head.set("Authorization", "Bearer " + Bearer(user));
    if (!body.empty()) {
      head.setContentLength64(static_cast<Poco::Int64>(body.size()));
      head.setContentType(type);
    }
    std::istringstream stream(body);
    http::Request request(head, stream);
    return http::Answer(*routes_, request);
  }

  // A conversation of alice's (and bob's, when `with_bob`), with its current key.
  std::string CreateConversation(bool with_bob = false) {
    const std::string body = "{\"kmsResourceUri\":\"" + std::string(kKms) + "/resources/" +
                             NewUuid() + "\",\"keyUri\":\"" + key_uri_ + "\"" +
                             (with_bob ? ",\"participants\":[\"" + std::string(kBob) + "\"]" : "") +
                             "}";
    http::Response created = Call("POST", "/v1/conversations", kAlice, body);
    EXPECT_EQ(created.status, 201) << created.body;
    return Parse(created.body)->getObject("conversation")->getValue<std::string>("id");
  }

  std::string Content(const std::string& text) {
    static const std::vector<std::uint8_t> kKey(32, 7);
    return jose::EncryptDir(
               kKey, key_uri_,
               std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()))
        .value();
  }

  testing::TestDir dir_;
  std::unique_ptr<Database> db_;
  std::unique_ptr<CoreService> service_;
  std::unique_ptr<jose::EcKeyPair> key_;
  std::unique_ptr<JwtVerifier> verifier_;
  std::unique_ptr<RealtimeHub> hub_;
  std::unique_ptr<KmsRelay> relay_;
  CoreServerOptions options_;
  std::unique_ptr<CoreRoutes> routes_;
  const std::string key_uri_ = std::string(kKms) + "/keys/" + NewUuid();
};

TEST_F(CoreRoutesTest, EveryPathButHealthAndTheRelayNeedsACoreTokenUnknownOnesToo) {
  for (const auto& [method, target] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/v1/conversations"},
           {"POST", "/kms/messages?cluster=kms://kms.acme.test"},
           {"GET", "/v1/events"},
           {"GET", "/v1/nothing"},
           {"DELETE", "/v1/index/search"}}) {
    http::Response answer = Call(method, target, "");
    EXPECT_EQ(answer.status, 401) << method << " " << target;
    EXPECT_EQ(CodeOf(answer), "unauthenticated");
    EXPECT_EQ(answer.header("WWW-Authenticate"), "Bearer");
  }
  // A token for the KMS is not one for the core.
  Poco::Net::HTTPRequest head("GET", "/v1/conversations", Poco::Net::HTTPMessage::HTTP_1_1);
  head.set("Authorization", "Bearer " + Bearer(kAlice, "kms"));
  std::istringstream none;
  http::Request kms_token(head, none);
  EXPECT_EQ(http::Answer(*routes_, kms_token).status, 401);

  http::Response health = Call("GET", "/health", "");
  ASSERT_EQ(health.status, 200);
  EXPECT_EQ(Parse(health.body)->getValue<std::string>("status"), "ok");
  http::Response post_health = Call("POST", "/health", "");
  EXPECT_EQ(post_health.status, 405);
  EXPECT_EQ(post_health.header("Allow"), "GET");
  // The relay's own credential is checked when it takes the connection over.
  http::Response relay = Call("GET", "/relay/kms", "");
  EXPECT_EQ(relay.status, 101);
  EXPECT_TRUE(relay.takeover);
}

TEST_F(CoreRoutesTest, AConversationIsCreatedListedAndShownToItsParticipantsOnly) {
  const std::string id = CreateConversation();
  http::Response mine = Call("GET", "/v1/conversations/" + id, kAlice);
  ASSERT_EQ(mine.status, 200) << mine.body;
  EXPECT_EQ(Parse(mine.body)->getValue<std::string>("id"), id);
  EXPECT_EQ(mine.content_type, "application/json");
  http::Response list = Call("GET", "/v1/conversations?limit=10", kAlice);
  ASSERT_EQ(list.status, 200) << list.body;
  EXPECT_EQ(Parse(list.body)->getArray("items")->size(), 1u);
  http::Response not_bobs = Call("GET", "/v1/conversations/" + id, kBob);
  EXPECT_EQ(not_bobs.status, 404);
  EXPECT_EQ(CodeOf(not_bobs), "not_found");
  EXPECT_EQ(Call("GET", "/v1/conversations?limit=x", kAlice).status, 400);
}

// A percent-encoded slash does not start a segment of its own: the target below names one
// conversation whose id holds a slash, not the participants route of the conversation before it.
TEST_F(CoreRoutesTest, AnEncodedSlashDoesNotReachAnotherRoute) {
  const std::string id = CreateConversation();
  const std::string body = "{\"userIds\":[\"" + std::string(kBob) + "\"]}";
  http::Response added = Call("POST", "/v1/conversations/" + id + "%2Fparticipants", kAlice, body);
  EXPECT_EQ(added.status, 405) << added.body;  // GET /v1/conversations/{id} only
  http::Response shown = Call("GET", "/v1/conversations/" + id + "%2Fparticipants", kAlice);
  EXPECT_NE(shown.status, 200) << shown.body;
  EXPECT_EQ(Call("GET", "/v1/conversations/" + id, kBob).status, 404);  // bob was not added
}

TEST_F(CoreRoutesTest, KnownPathsWithAnotherMethodAre405WithAllowAndOthers404) {
  const struct {
    const char* method;
    const char* target;
    const char* allow;
  } refused[] = {
      {"PATCH", "/v1/conversations", "GET, POST"},
      {"PUT", "/v1/conversations/c/activities", "GET, POST"},
      {"POST", "/v1/conversations/c", "GET"},
      {"GET", "/v1/conversations/c/participants/u", "DELETE"},
      {"POST", "/v1/conversations/c/activities/a", "GET, PUT, DELETE"},
      {"GET", "/v1/index/search", "POST"},
      {"GET", "/v1/index/c/a", "PUT"},
      {"POST", "/v1/events", "GET"},
      {"GET", "/kms/messages", "POST"},
  };
  for (const auto& r : refused) {
    http::Response answer = Call(r.method, r.target, kAlice);
    EXPECT_EQ(answer.status, 405) << r.method << " " << r.target;
    EXPECT_EQ(answer.header("Allow"), r.allow) << r.target;
    EXPECT_EQ(CodeOf(answer), "method_not_allowed");
  }
  for (const char* target : {"/v1", "/v1/compliance/other", "/v1/conversations/c/x",
                             "/v1/conversations/c/files/f/g", "/kms"}) {
    http::Response answer = Call("GET", target, kAlice);
    EXPECT_EQ(answer.status, 404) << target;
    EXPECT_EQ(CodeOf(answer), "not_found");
  }
  // A path that is not validly percent-encoded is bad input (it was an exception, and a 500).
  http::Response bad = Call("GET", "/v1/conversations/%zz", kAlice);
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(CodeOf(bad), "invalid_argument");
}

TEST_F(CoreRoutesTest, ABodyMustBeJsonWithinItsLimitAndWellFormedOrNothingIsMade) {
  const std::string body = "{\"kmsResourceUri\":\"" + std::string(kKms) + "/resources/" +
                           NewUuid() + "\",\"keyUri\":\"" + key_uri_ + "\"}";
  http::Response text = Call("POST", "/v1/conversations", kAlice, body, "text/plain");
  EXPECT_EQ(text.status, 415);
  EXPECT_EQ(CodeOf(text), "media_type");
  http::Response big =
      Call("POST", "/v1/conversations", kAlice, std::string(kMaxJsonRequestBytes + 1, ' '));
  EXPECT_EQ(big.status, 413);
  EXPECT_EQ(CodeOf(big), "body_size");
  EXPECT_TRUE(big.close);
  http::Response unknown = Call("POST", "/v1/conversations", kAlice, "{\"kmsResourceUri\":1}");
  EXPECT_EQ(unknown.status, 400);
  EXPECT_EQ(CodeOf(unknown), "invalid_argument");
  EXPECT_EQ(Call("GET", "/v1/conversations", kAlice).body, "{\"items\":[]}");
}

TEST_F(CoreRoutesTest, AFloodFromOneUserIs429WithRetryAfterAndOthersAreServed) {
  options_.rate_per_s = 1;
  options_.rate_burst = 1;
  Make();
  std::optional<http::Response> limited;
  for (int i = 0; i < 10 && !limited; ++i) {
    http::Response answer = Call("GET", "/v1/conversations", kAlice);
    if (answer.status == 429) limited = answer;
  }
  ASSERT_TRUE(limited) << "ten requests at once within a rate of one a second";
  EXPECT_EQ(CodeOf(*limited), "rate_limited");
  EXPECT_GE(std::stoi(limited->header("Retry-After")), 1);
  EXPECT_EQ(Call("GET", "/v1/conversations", kBob).status, 200);
}

TEST_F(CoreRoutesTest, EventsTakeTheConnectionOverAndABadCursorIs400) {
  http::Response events = Call("GET", "/v1/events?cursor=0", kAlice);
  EXPECT_EQ(events.status, 101);
  EXPECT_TRUE(events.takeover);
  http::Response bad = Call("GET", "/v1/events?cursor=x", kAlice);
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(CodeOf(bad), "invalid_argument");
  EXPECT_FALSE(bad.takeover);
}

TEST_F(CoreRoutesTest, ASealedKmsMessageIsRelayedOr503WhenItsKmsIsNotAttached) {
  const std::string target = "/kms/messages?cluster=" + std::string(kKms);
  http::Response json = Call("POST", target, kAlice, "a.b.c.d.e", "application/json");
  EXPECT_EQ(json.status, 415);
  EXPECT_EQ(CodeOf(json), "media_type");
  http::Response unnamed = Call("POST", "/kms/messages", kAlice, "a.b.c.d.e", "application/jose");
  EXPECT_EQ(unnamed.status, 400);
  // No KMS of that cluster is attached to this relay: 503 at once, with Retry-After.
  http::Response absent = Call("POST", target, kAlice, "a.b.c.d.e", "application/jose");
  EXPECT_EQ(absent.status, 503);
  EXPECT_EQ(CodeOf(absent), "unavailable");
  EXPECT_EQ(absent.header("Retry-After"), "1");
}

TEST_F(CoreRoutesTest, AFileIsStreamedInAndAnsweredAsTheStoredFile) {
  const std::string id = CreateConversation();
  const std::string blob = "an encrypted file's bytes";
  http::Response stored =
      Call("POST", "/v1/conversations/" + id + "/files", kAlice, blob, "application/octet-stream");
  ASSERT_EQ(stored.status, 201) << stored.body;
  const std::string file_id = Parse(stored.body)->getValue<std::string>("id");
  EXPECT_EQ(Parse(stored.body)->getValue<std::string>("sha256"), Sha256Hex(blob));

  http::Response download = Call("GET", "/v1/conversations/" + id + "/files/" + file_id, kAlice);
  ASSERT_EQ(download.status, 200) << download.body;
  EXPECT_EQ(download.content_type, "application/octet-stream");
  EXPECT_EQ(download.header("X-Content-SHA256"), Sha256Hex(blob));
  std::ifstream file(download.file, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(file), {}), blob);
  EXPECT_EQ(Call("GET", "/v1/conversations/" + id + "/files/" + file_id, kBob).status, 404);

  http::Response text =
      Call("POST", "/v1/conversations/" + id + "/files", kAlice, blob, "text/plain");
  EXPECT_EQ(text.status, 415);
  http::Response big =
      Call("POST", "/v1/conversations/" + id + "/files", kAlice,
           std::string(options_.max_file_bytes + 1, 'x'), "application/octet-stream");
  EXPECT_EQ(big.status, 413);
  EXPECT_EQ(CodeOf(big), "file_size");
  EXPECT_TRUE(big.close);
}

TEST_F(CoreRoutesTest, TheIndexerPutsTokensWith204AndFindsThem) {
  const std::string id = CreateConversation();
  http::Response posted = Call("POST", "/v1/conversations/" + id + "/activities", kAlice,
                               "{\"content\":\"" + Content("hello") + "\"}");
  ASSERT_EQ(posted.status, 201) << posted.body;
  const std::string activity = Parse(posted.body)->getValue<std::string>("id");

  const std::string tokens = "{\"tokens\":[\"dG9rZW4\"]}";
  http::Response refused = Call("PUT", "/v1/index/" + id + "/" + activity, kAlice, tokens);
  EXPECT_EQ(refused.status, 403);
  EXPECT_EQ(CodeOf(refused), "permission_denied");
  http::Response put = Call("PUT", "/v1/index/" + id + "/" + activity, kIndexer, tokens);
  EXPECT_EQ(put.status, 204) << put.body;
  EXPECT_EQ(put.body, "");
  EXPECT_EQ(put.content_type, "");

  http::Response found =
      Call("POST", "/v1/index/search", kIndexer,
           "{\"queries\":[{\"conversationId\":\"" + id + "\",\"tokens\":[\"dG9rZW4\"]}]}");
  ASSERT_EQ(found.status, 200) << found.body;
  auto items = Parse(found.body)->getArray("items");
  ASSERT_EQ(items->size(), 1u);
  EXPECT_EQ(items->getObject(0)->getValue<std::string>("activityId"), activity);
}

TEST_F(CoreRoutesTest, TheIndexerIsRefusedEveryRouteButTheIndexAndItsStream) {
  const std::string id = CreateConversation();
  http::Response posted = Call("POST", "/v1/conversations/" + id + "/activities", kAlice,
                               "{\"content\":\"" + Content("hello") + "\"}");
  ASSERT_EQ(posted.status, 201) << posted.body;
  const std::string activity = Parse(posted.body)->getValue<std::string>("id");
  const std::string conversation = "/v1/conversations/" + id;
  const std::string create = "{\"kmsResourceUri\":\"" + std::string(kKms) + "/resources/" +
                             NewUuid() + "\",\"keyUri\":\"" + key_uri_ + "\"}";
  const struct {
    const char* method;
    std::string target;
    std::string body;
  } refused[] = {
      {"GET", "/v1/conversations", ""},
      {"POST", "/v1/conversations", create},
      {"GET", conversation, ""},
      {"POST", conversation + "/participants", "{\"userIds\":[\"" + std::string(kIndexer) + "\"]}"},
      {"DELETE", conversation + "/participants/" + kAlice, ""},
      {"PUT", conversation + "/key", "{\"keyUri\":\"" + std::string(kKms) + "/keys/x\"}"},
      {"PUT", conversation + "/title", "{\"encryptedTitle\":\"\"}"},
      {"GET", conversation + "/activities", ""},
      {"POST", conversation + "/activities", "{\"content\":\"" + Content("x") + "\"}"},
      {"GET", conversation + "/activities/" + activity, ""},
      {"PUT", conversation + "/activities/" + activity, "{\"content\":\"" + Content("y") + "\"}"},
      {"DELETE", conversation + "/activities/" + activity, ""},
      {"POST", conversation + "/files", ""},
      {"GET", conversation + "/files/" + NewUuid(), ""},
      {"GET", "/v1/events?cursor=0", ""},
      {"POST", "/kms/messages?cluster=" + std::string(kKms), ""},
      {"GET", "/v1/compliance/conversations?user=" + std::string(kAlice), ""},
      {"GET", "/v1/compliance/conversations/" + id + "/activities?user=" + kAlice, ""},
      {"GET", "/v1/no-such-path", ""},
  };
  for (const auto& r : refused) {
    http::Response answer = Call(r.method, r.target, kIndexer, r.body);
    EXPECT_EQ(answer.status, 403) << r.method << " " << r.target << ": " << answer.body;
    EXPECT_EQ(CodeOf(answer), "permission_denied") << r.target;
    EXPECT_FALSE(answer.takeover) << r.target;
  }
  // Nothing changed: alice's conversation has its one post, and no other was made.
  http::Response history = Call("GET", conversation + "/activities", kAlice);
  ASSERT_EQ(history.status, 200);
  EXPECT_EQ(Parse(history.body)->getArray("items")->size(), 2u);  // create, post
  http::Response list = Call("GET", "/v1/conversations", kAlice);
  EXPECT_EQ(Parse(list.body)->getArray("items")->size(), 1u);

  // What it may use.
  EXPECT_EQ(
      Call("PUT", "/v1/index/" + id + "/" + activity, kIndexer, "{\"tokens\":[\"dA\"]}").status,
      204);
  EXPECT_EQ(Call("POST", "/v1/index/search", kIndexer,
                 "{\"queries\":[{\"conversationId\":\"" + id + "\",\"tokens\":[\"dA\"]}]}")
                .status,
            200);
  http::Response stream = Call("GET", "/v1/index/events?cursor=0", kIndexer);
  EXPECT_EQ(stream.status, 101);
  EXPECT_TRUE(stream.takeover);
  http::Response bad = Call("GET", "/v1/index/events?cursor=x", kIndexer);
  EXPECT_EQ(bad.status, 400);
  EXPECT_FALSE(bad.takeover);

  // And nobody else follows the indexer's stream.
  http::Response other = Call("GET", "/v1/index/events?cursor=0", kAlice);
  EXPECT_EQ(other.status, 403);
  EXPECT_EQ(CodeOf(other), "permission_denied");
  EXPECT_FALSE(other.takeover);
}

TEST_F(CoreRoutesTest, TheAuthorEditsWithPutAndRetractsWithDeleteOthersAreRefused) {
  const std::string id = CreateConversation(/*with_bob=*/true);
  http::Response posted = Call("POST", "/v1/conversations/" + id + "/activities", kAlice,
                               "{\"content\":\"" + Content("hello") + "\"}");
  ASSERT_EQ(posted.status, 201) << posted.body;
  const std::string activity = Parse(posted.body)->getValue<std::string>("id");
  const std::int64_t seq = Parse(posted.body)->getValue<std::int64_t>("seq");
  const std::string target = "/v1/conversations/" + id + "/activities/" + activity;
  const std::string edit = "{\"content\":\"" + Content("hello, edited") + "\"}";

  http::Response bobs = Call("PUT", target, kBob, edit);
  EXPECT_EQ(bobs.status, 403);
  EXPECT_EQ(CodeOf(bobs), "permission_denied");
  EXPECT_EQ(Call("DELETE", target, kBob).status, 403);
  http::Response extra = Call("PUT", target, kAlice, "{\"content\":\"x\",\"fileIds\":[]}");
  EXPECT_EQ(extra.status, 400);
  EXPECT_EQ(CodeOf(extra), "invalid_argument");
  EXPECT_EQ(Call("PUT", target, kAlice, "{}").status, 400);
  EXPECT_EQ(Call("PUT", target, kAlice, edit, "text/plain").status, 415);
  http::Response with_body = Call("DELETE", target, kAlice, "{}");
  EXPECT_EQ(with_body.status, 400);
  EXPECT_EQ(CodeOf(with_body), "invalid_argument");
  http::Response unknown =
      Call("PUT", "/v1/conversations/" + id + "/activities/" + NewUuid(), kAlice, edit);
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(CodeOf(unknown), "not_found");
  // Nothing of the refusals changed the message.
  EXPECT_EQ(Call("GET", target, kAlice).body, posted.body);

  http::Response edited = Call("PUT", target, kAlice, edit);
  ASSERT_EQ(edited.status, 200) << edited.body;
  Object::Ptr edit_activity = Parse(edited.body);
  EXPECT_EQ(edit_activity->getValue<std::string>("verb"), "edit");
  EXPECT_EQ(edit_activity->getValue<std::string>("targetId"), activity);
  EXPECT_EQ(edit_activity->getValue<std::int64_t>("targetSeq"), seq);
  EXPECT_EQ(edit_activity->getValue<std::string>("content"),
            Parse(edit)->getValue<std::string>("content"));
  Object::Ptr message = Parse(Call("GET", target, kBob).body);
  EXPECT_EQ(message->getValue<std::int64_t>("seq"), seq);
  EXPECT_EQ(message->getValue<std::string>("content"),
            Parse(edit)->getValue<std::string>("content"));
  EXPECT_EQ(message->getValue<std::string>("edited"),
            edit_activity->getValue<std::string>("published"));
  EXPECT_FALSE(message->has("retracted"));

  http::Response retracted = Call("DELETE", target, kAlice);
  ASSERT_EQ(retracted.status, 200) << retracted.body;
  Object::Ptr retraction = Parse(retracted.body);
  EXPECT_EQ(retraction->getValue<std::string>("verb"), "retract");
  EXPECT_EQ(retraction->getValue<std::string>("targetId"), activity);
  EXPECT_FALSE(retraction->has("content"));
  http::Response again = Call("DELETE", target, kAlice);
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(Parse(again.body)->getValue<std::string>("id"),
            retraction->getValue<std::string>("id"));
  message = Parse(Call("GET", target, kBob).body);
  EXPECT_FALSE(message->has("content"));
  EXPECT_FALSE(message->has("keyUri"));
  EXPECT_EQ(message->getValue<std::string>("retracted"),
            retraction->getValue<std::string>("published"));
  http::Response late = Call("PUT", target, kAlice, edit);
  EXPECT_EQ(late.status, 409);
  EXPECT_EQ(CodeOf(late), "failed_precondition");
}

// POST /v1/index/sets: the body of `sets` (conversation, activity, tokens) as the indexer sends it.
std::string SetsBody(const std::vector<std::tuple<std::string, std::string, std::string>>& sets) {
  std::string body = "{\"sets\":[";
  for (std::size_t i = 0; i < sets.size(); ++i) {
    const auto& [conversation, activity, tokens] = sets[i];
    body += (i ? "," : "") + std::string("{\"conversationId\":\"") + conversation +
            "\",\"activityId\":\"" + activity + "\",\"tokens\":[" + tokens + "]}";
  }
  return body + "]}";
}

class CoreIndexSetsTest : public CoreRoutesTest {
 protected:
  // A post of alice's in `conversation`; its activity id.
  std::string Post(const std::string& conversation) {
    http::Response posted = Call("POST", "/v1/conversations/" + conversation + "/activities",
                                 kAlice, "{\"content\":\"" + Content("hello") + "\"}");
    EXPECT_EQ(posted.status, 201) << posted.body;
    return Parse(posted.body)->getValue<std::string>("id");
  }
  // The activities of `conversation` the indexer finds by `token`.
  std::vector<std::string> Found(const std::string& conversation, const std::string& token) {
    http::Response found = Call("POST", "/v1/index/search", kIndexer,
                                "{\"queries\":[{\"conversationId\":\"" + conversation +
                                    "\",\"tokens\":[\"" + token + "\"]}]}");
    EXPECT_EQ(found.status, 200) << found.body;
    std::vector<std::string> ids;
    auto items = Parse(found.body)->getArray("items");
    for (std::size_t i = 0; i < items->size(); ++i) {
      ids.push_back(
          items->getObject(static_cast<unsigned>(i))->getValue<std::string>("activityId"));
    }
    std::sort(ids.begin(), ids.end());
    return ids;
  }
};

TEST_F(CoreIndexSetsTest, TheIndexerPutsManyActivitiesSetsInOneRequest) {
  const std::string one = CreateConversation();
  const std::string two = CreateConversation();
  const std::string a = Post(one), b = Post(one), c = Post(two);
  http::Response put = Call(
      "POST", "/v1/index/sets", kIndexer,
      SetsBody({{one, a, "\"dA\",\"YQ\""}, {one, b, "\"dA\""}, {two, c, "\"dA\",\"Yw\",\"Yw\""}}));
  EXPECT_EQ(put.status, 204) << put.body;
  EXPECT_EQ(put.body, "");
  std::vector<std::string> both = {a, b};
  std::sort(both.begin(), both.end());
  EXPECT_EQ(Found(one, "dA"), both);
  EXPECT_EQ(Found(one, "YQ"), std::vector<std::string>{a});
  EXPECT_EQ(Found(two, "Yw"), std::vector<std::string>{c});
  // Each set replaces its activity's set, as a PUT does: the same batch again changes nothing, a
  // shorter set removes the rest.
  EXPECT_EQ(Call("POST", "/v1/index/sets", kIndexer, SetsBody({{one, a, "\"YQ\""}})).status, 204);
  EXPECT_EQ(Found(one, "dA"), std::vector<std::string>{b});
  EXPECT_EQ(Found(one, "YQ"), std::vector<std::string>{a});
}

TEST_F(CoreIndexSetsTest, OnlyTheConfiguredIndexerOfItsOrganizationPutsSets) {
  const std::string id = CreateConversation();
  const std::string a = Post(id);
  const std::string body = SetsBody({{id, a, "\"dA\""}});
  http::Response alices = Call("POST", "/v1/index/sets", kAlice, body);
  EXPECT_EQ(alices.status, 403);
  EXPECT_EQ(CodeOf(alices), "permission_denied");
  // Another organization's indexer (its own identity provider, its own users).
  auto globex_key = jose::EcKeyPair::Generate("globex-1");
  ASSERT_TRUE(globex_key.ok());
  auto verifier = JwtVerifier::New(
      {{kIssuer, "acme", {*key_->PublicKey()}, {"acme.test"}},
       {"https://idp.globex.test", "globex", {*globex_key->PublicKey()}, {"globex.test"}}},
      "core", std::chrono::seconds(60));
  ASSERT_TRUE(verifier.ok()) << verifier.error().ToString();
  CoreRoutes routes(*service_, *verifier, *hub_, *relay_, options_);
  Poco::Net::HTTPRequest head("POST", "/v1/index/sets", Poco::Net::HTTPMessage::HTTP_1_1);
  head.set("Authorization",
           "Bearer " + *MintJwt(*globex_key, {"https://idp.globex.test", "indexer@globex.test",
                                              "core", std::time(nullptr) - 5, 3600}));
  head.setContentType("application/json");
  head.setContentLength64(static_cast<Poco::Int64>(body.size()));
  std::istringstream stream(body);
  http::Request request(head, stream);
  http::Response globex = http::Answer(routes, request);
  EXPECT_EQ(globex.status, 403) << globex.body;
  EXPECT_EQ(CodeOf(globex), "permission_denied");
  // The indexer's user id with another organization (as a token of another issuer would give):
  // the organization is part of the indexer's identity.
  Status other_org = service_->PutIndexTokenSets({kIndexer, "globex"}, {{id, a, {"dA"}}});
  ASSERT_FALSE(other_org.ok());
  EXPECT_EQ(other_org.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_TRUE(Found(id, "dA").empty());
  // The configured indexer.
  EXPECT_EQ(Call("POST", "/v1/index/sets", kIndexer, body).status, 204);
  EXPECT_EQ(Found(id, "dA"), std::vector<std::string>{a});
}

TEST_F(CoreIndexSetsTest, ABadSetRefusesTheWholeBatchAndChangesNothing) {
  const std::string id = CreateConversation();
  const std::string a = Post(id), b = Post(id);
  ASSERT_EQ(Call("POST", "/v1/index/sets", kIndexer, SetsBody({{id, a, "\"b2xk\""}})).status, 204);
  const std::tuple<std::string, std::string, std::string> good = {id, a, "\"bmV3\""};
  std::vector<std::tuple<std::string, std::string, std::string>> too_many;
  for (std::size_t i = 0; i < kMaxIndexSetsPerBatch + 1; ++i) too_many.push_back(good);
  const struct {
    std::string body;
    int status;
    std::string message;  // in the answer's message
  } refused[] = {
      {SetsBody(too_many), 400, "1 to 256"},
      {"{\"sets\":[]}", 400, "1 to 256"},
      {"{}", 400, "sets"},
      {"{\"sets\":[{\"conversationId\":\"" + id + "\",\"activityId\":\"" + a + "\"}]}", 400,
       "tokens"},
      {SetsBody({good, {id, b, "\"not a token!\""}}), 400, "set 1"},
      {SetsBody({good, {NewUuid(), b, "\"dA\""}}), 404, "set 1: no such conversation"},
      {SetsBody({good, {id, NewUuid(), "\"dA\""}}), 404, "set 1: no such activity"},
      {SetsBody({good, {id, "x", "\"dA\""}}), 404, "set 1"},
      {SetsBody({good, {id, b, "\"dA\""}, good}), 400, "set 2: a batch names each activity once"},
  };
  for (const auto& r : refused) {
    http::Response answer = Call("POST", "/v1/index/sets", kIndexer, r.body);
    EXPECT_EQ(answer.status, r.status) << r.body.substr(0, 200) << ": " << answer.body;
    EXPECT_NE(Parse(answer.body)->getValue<std::string>("message").find(r.message),
              std::string::npos)
        << answer.body;
  }
  // Nothing of any refused batch was written: a keeps its old set, b has none.
  EXPECT_EQ(Found(id, "b2xk"), std::vector<std::string>{a});
  EXPECT_TRUE(Found(id, "bmV3").empty());
  EXPECT_TRUE(Found(id, "dA").empty());
}

TEST_F(CoreIndexSetsTest, ABatchCountsAsOneRequestAgainstTheIndexersRate) {
  options_.rate_per_s = 1;
  options_.rate_burst = 2;
  Make();
  const std::string id = CreateConversation();  // alice's request, her own bucket
  std::vector<std::tuple<std::string, std::string, std::string>> sets;
  // Alice's posts, made through the service, not the routes (her bucket is not the point).
  for (int i = 0; i < 100; ++i) {
    auto post = service_->PostActivity({kAlice, "acme"}, id, {Content("x"), {}, ""});
    ASSERT_TRUE(post.ok()) << post.error().ToString();
    sets.emplace_back(id, post->id, "\"dA\"");
  }
  // A burst of 2: two batches of 100 sets each go through, the third request is one too many.
  EXPECT_EQ(Call("POST", "/v1/index/sets", kIndexer, SetsBody(sets)).status, 204);
  EXPECT_EQ(Call("POST", "/v1/index/sets", kIndexer, SetsBody(sets)).status, 204);
  http::Response limited = Call("POST", "/v1/index/sets", kIndexer, SetsBody(sets));
  EXPECT_EQ(limited.status, 429) << limited.body;
  EXPECT_EQ(CodeOf(limited), "rate_limited");
}

}  // namespace
}  // namespace strongroom::core
