// indexerd's query path: IndexerRoutes (indexer_server.h) answered by http::Answer without a
// socket, over the real SearchService, a real JwtVerifier (tokens minted with a key made here), a
// real IndexerStore on SQLite filled by the real pipeline, and the in-memory KMS and core of
// indexer_fakes.h. indexerd_test.cc drives the daemon over HTTPS against kmsd and cored.
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/HTTPRequest.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <ctime>
#include <sstream>

#include "../support/test_dir.h"
#include "indexer_fakes.h"
#include "strongroom/client/content.h"
#include "strongroom/common/jwt.h"
#include "strongroom/indexer/indexer_server.h"

namespace strongroom::indexer {
namespace {

using Poco::JSON::Object;
using testing::FakeCore;
using testing::FakeKms;

constexpr char kIssuer[] = "https://idp.acme.test";
constexpr char kGlobexIssuer[] = "https://idp.globex.test";
constexpr char kAlice[] = "alice@acme.test";
constexpr char kBob[] = "bob@acme.test";
constexpr char kMallory[] = "mallory@globex.test";
constexpr char kOfficer[] = "officer@acme.test";
constexpr char kCarol[] = "carol@acme.test";
constexpr char kRoomA[] = "3d6f0a1b-2c4e-4f5a-8b9c-0d1e2f3a4b5c";
constexpr char kRoomB[] = "81c2a0b1-2c4e-4f5a-8b9c-0d1e2f3a4b5c";
constexpr char kResourceA[] = "kms://kms.acme.test/resources/a";
constexpr char kResourceB[] = "kms://kms.acme.test/resources/b";

Object::Ptr Parse(const std::string& text) {
  return Poco::JSON::Parser().parse(text).extract<Object::Ptr>();
}

class IndexerRoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = Database::OpenSqlite((dir_ / "indexer.db").string(), IndexerStore::Migrations());
    ASSERT_TRUE(db.ok());
    db_ = std::move(db).value();
    store_.emplace(*IndexerStore::New(*db_));
    auto pipeline =
        IndexingPipeline::New(kms_, core_, *store_, keys_, "english", [](const std::string&) {});
    ASSERT_TRUE(pipeline.ok());
    pipeline_ = std::move(pipeline).value();
    acme_key_ = std::make_unique<jose::EcKeyPair>(jose::EcKeyPair::Generate("acme-1").value());
    globex_key_ = std::make_unique<jose::EcKeyPair>(jose::EcKeyPair::Generate("globex-1").value());
    auto verifier = JwtVerifier::New(
        {TrustedIssuer{kIssuer, "acme", {*acme_key_->PublicKey()}, {"acme.test"}},
         TrustedIssuer{kGlobexIssuer, "globex", {*globex_key_->PublicKey()}, {"globex.test"}}},
        "indexer", std::chrono::seconds(60));
    ASSERT_TRUE(verifier.ok()) << verifier.error().ToString();
    verifier_ = std::make_unique<JwtVerifier>(std::move(verifier).value());
    auto kms_verifier = JwtVerifier::New(
        {TrustedIssuer{kIssuer, "acme", {*acme_key_->PublicKey()}, {"acme.test"}},
         TrustedIssuer{kGlobexIssuer, "globex", {*globex_key_->PublicKey()}, {"globex.test"}}},
        "kms", std::chrono::seconds(60));
    ASSERT_TRUE(kms_verifier.ok());
    kms_verifier_ = std::make_unique<JwtVerifier>(std::move(kms_verifier).value());
    search_ = std::make_unique<SearchService>(kms_, core_, *store_, keys_, "english");
    // An officer's KMS channel: the fake KMS as it answers the token's subject.
    OfficerKmsOpener open_kms =
        [this](const std::string& token) -> Result<std::unique_ptr<IndexerKms>> {
      ++officer_channels_;
      SR_ASSIGN_OR_RETURN(VerifiedJwt officer, kms_verifier_->Verify(token));
      return kms_.As(officer.subject());
    };
    open_kms_ = open_kms;
    MakeRoutes({1000, 1000, [this] { return now_s_; }});
    kms_.officers = {kOfficer};

    key_a_ = kms_.AddKey(kResourceA);
    key_b_ = kms_.AddKey(kResourceB);
    kms_.Authorize(kAlice, kResourceA);
    kms_.Authorize(kAlice, kResourceB);
    kms_.Authorize(kBob, kResourceA);
  }

  void MakeRoutes(SearchRateLimit rate) {
    routes_ = std::make_unique<IndexerRoutes>(
        *search_, *verifier_, "acme",
        HealthSource{[this] { return stream_state_; }, [this] { return kms_.Check(); },
                     [this] { return reindex_; }, [] { return 2u; },
                     [this] {
                       return database_up_ ? OkStatus()
                                           : Status(Error(ErrorCode::kUnavailable, "no database"));
                     }},
        ComplianceSearchSupport{kms_verifier_.get(), open_kms_}, std::move(rate));
  }

  std::string Post(const std::string& room, const std::string& key_uri, const std::string& text) {
    client::Activity activity;
    activity.seq = ++seq_;
    activity.id = "act-" + std::to_string(seq_);
    activity.conversation_id = room;
    activity.verb = "post";
    activity.key_uri = key_uri;
    activity.content = *client::EncryptText(kms_.KeyBytes(key_uri), key_uri, text);
    core_.Register(activity);
    EXPECT_TRUE(pipeline_->Process({activity}).ok());
    return activity.id;
  }

  std::string Token(const std::string& user, const std::string& audience = "indexer") {
    const bool globex = user.find("globex") != std::string::npos;
    return *MintJwt(globex ? *globex_key_ : *acme_key_, {globex ? kGlobexIssuer : kIssuer, user,
                                                         audience, std::time(nullptr) - 5, 3600});
  }

  http::Response Call(const std::string& method, const std::string& target,
                      const std::string& bearer, const std::string& body = "",
                      const std::string& type = "application/json") {
    Poco::Net::HTTPRequest head(method, target, Poco::Net::HTTPMessage::HTTP_1_1);
    if (!bearer.empty()) head.set("Authorization", "Bearer " + bearer);
    if (!body.empty()) {
      head.setContentLength64(static_cast<Poco::Int64>(body.size()));
      head.setContentType(type);
    }
    std::istringstream stream(body);
    http::Request request(head, stream);
    return http::Answer(*routes_, request);
  }

  http::Response Search(const std::string& user, const std::string& body) {
    return Call("POST", "/v1/search", Token(user), body);
  }
  static std::string Query(const std::string& query) {
    Object json;
    json.set("query", query);
    std::ostringstream out;
    json.stringify(out);
    return out.str();
  }
  // The activity ids of a 200 answer, in its order.
  static std::vector<std::string> Ids(const http::Response& answer) {
    EXPECT_EQ(answer.status, 200) << answer.body;
    std::vector<std::string> ids;
    if (answer.status != 200) return ids;
    auto items = Parse(answer.body)->getArray("items");
    for (std::size_t i = 0; i < items->size(); ++i) {
      ids.push_back(
          items->getObject(static_cast<unsigned>(i))->getValue<std::string>("activityId"));
    }
    return ids;
  }
  static std::string Code(const http::Response& answer) {
    return Parse(answer.body)->getValue<std::string>("code");
  }

  ::strongroom::testing::TestDir dir_;
  FakeKms kms_;
  FakeCore core_;
  SearchKeys keys_{kms_};
  std::unique_ptr<Database> db_;
  std::optional<IndexerStore> store_;
  std::unique_ptr<IndexingPipeline> pipeline_;
  std::unique_ptr<jose::EcKeyPair> acme_key_, globex_key_;
  std::unique_ptr<JwtVerifier> verifier_, kms_verifier_;
  int officer_channels_ = 0;
  std::unique_ptr<SearchService> search_;
  std::unique_ptr<IndexerRoutes> routes_;
  IndexerLoop::State stream_state_;
  bool database_up_ = true;
  std::optional<JobProgress> reindex_;
  OfficerKmsOpener open_kms_;
  double now_s_ = 1000;
  std::string key_a_, key_b_;
  std::int64_t seq_ = 0;
};

TEST_F(IndexerRoutesTest, AMemberFindsAPostByAnotherFormOfItsWordsNewestFirst) {
  const std::string older = Post(kRoomA, key_a_, "The launch checklist is ready");
  Post(kRoomA, key_a_, "lunch at noon");
  const std::string newer = Post(kRoomB, key_b_, "Launched: checklists");
  http::Response answer = Search(kAlice, Query("launches CHECKLIST"));
  EXPECT_EQ(Ids(answer), (std::vector<std::string>{newer, older}));
  EXPECT_FALSE(Parse(answer.body)->has("next"));
  EXPECT_EQ(Parse(answer.body)->getValue<std::string>("language"), "english");
  // Each room was asked with its own tokens: the core never got one token for two rooms.
  ASSERT_EQ(core_.searched.size(), 1u);
  ASSERT_EQ(core_.searched[0].size(), 2u);
  EXPECT_NE(core_.searched[0][0].tokens, core_.searched[0][1].tokens);
}

TEST_F(IndexerRoutesTest, TheRoomsComeFromTheKmsNotFromTheCore) {
  Post(kRoomA, key_a_, "budget forecast");
  const std::string in_b = Post(kRoomB, key_b_, "budget forecast");
  // Bob is authorized on A only: B's post is never found, and B is never searched for him.
  http::Response answer = Search(kBob, Query("budget"));
  ASSERT_EQ(Ids(answer).size(), 1u);
  EXPECT_NE(Ids(answer)[0], in_b);
  ASSERT_EQ(core_.searched.back().size(), 1u);
  EXPECT_EQ(core_.searched.back()[0].conversation_id, kRoomA);
  // Naming room B is refused, as naming a room that does not exist is, and nothing is searched.
  const std::size_t searches = core_.searched.size();
  for (const char* room : {kRoomB, "00000000-0000-4000-8000-000000000000"}) {
    http::Response refused =
        Search(kBob, "{\"query\":\"budget\",\"room\":\"" + std::string(room) + "\"}");
    EXPECT_EQ(refused.status, 403) << refused.body;
    EXPECT_EQ(Code(refused), "permission_denied");
  }
  EXPECT_EQ(core_.searched.size(), searches);
  // A member removed from A (the KMS's authorization deleted) finds nothing there any more.
  kms_.Deauthorize(kBob, kResourceA);
  EXPECT_TRUE(Ids(Search(kBob, Query("budget"))).empty());
  // A room of his own, named: only that room is searched.
  EXPECT_EQ(Ids(Search(kAlice, "{\"query\":\"budget\",\"room\":\"" + std::string(kRoomB) + "\"}")),
            std::vector<std::string>{in_b});
}

TEST_F(IndexerRoutesTest, PagesWithLimitAndBefore) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i)
    ids.push_back(Post(kRoomA, key_a_, "status report " + std::to_string(i)));
  http::Response first = Search(kAlice, "{\"query\":\"report\",\"limit\":2}");
  EXPECT_EQ(Ids(first), (std::vector<std::string>{ids[4], ids[3]}));
  const std::int64_t next = Parse(first.body)->getValue<std::int64_t>("next");
  http::Response second =
      Search(kAlice, "{\"query\":\"report\",\"limit\":2,\"before\":" + std::to_string(next) + "}");
  EXPECT_EQ(Ids(second), (std::vector<std::string>{ids[2], ids[1]}));
  http::Response last =
      Search(kAlice, "{\"query\":\"report\",\"limit\":2,\"before\":" +
                         std::to_string(Parse(second.body)->getValue<std::int64_t>("next")) + "}");
  EXPECT_EQ(Ids(last), std::vector<std::string>{ids[0]});
  EXPECT_FALSE(Parse(last.body)->has("next"));
}

TEST_F(IndexerRoutesTest, BadQueriesAreClearErrorsAndSearchNothing) {
  Post(kRoomA, key_a_, "anything");
  std::string many;
  for (int i = 0; i < 33; ++i) many += "word" + std::to_string(i) + " ";
  struct Case {
    std::string body;
    int status;
    std::string code;
  };
  for (const Case& c : std::vector<Case>{
           {Query(""), 400, "invalid_argument"},                             // no term
           {Query("... !!! ???"), 400, "invalid_argument"},                  // no word either
           {Query(many), 400, "invalid_argument"},                           // 33 terms
           {Query(std::string(3000, 'a') + " b"), 400, "invalid_argument"},  // over 2 KiB
           {"{\"query\":\"caf\xc3\"}", 400, "invalid_argument"},             // not UTF-8
           {"{\"query\":\"x\",\"extra\":1}", 400, "invalid_argument"},
           {"{\"query\":5}", 400, "invalid_argument"},
           {"{\"query\":\"x\",\"limit\":0}", 400, "invalid_argument"},
           {"{\"query\":\"x\",\"limit\":201}", 400, "invalid_argument"},
           {"{\"query\":\"x\",\"before\":0}", 400, "invalid_argument"},
           {"{\"query\":\"x\",\"room\":\"ROOM\"}", 400, "invalid_argument"},
           {"{\"query\":\"x\",\"query\":\"y\"}", 400, "invalid_argument"},
           {"not json", 400, "invalid_argument"},
           {"{\"query\":\"" + std::string(20000, 'a') + "\"}", 413, "body_size"}}) {
    http::Response answer = Search(kAlice, c.body);
    EXPECT_EQ(answer.status, c.status) << c.body.substr(0, 80) << " -> " << answer.body;
    EXPECT_EQ(Code(answer), c.code) << c.body.substr(0, 80);
  }
  http::Response text = Call("POST", "/v1/search", Token(kAlice), Query("x"), "text/plain");
  EXPECT_EQ(text.status, 415);
  EXPECT_TRUE(core_.searched.empty());
  EXPECT_EQ(kms_.authorization_lists, 0);
}

TEST_F(IndexerRoutesTest, OnlyIndexerTokensOfTheIndexersOrganization) {
  Post(kRoomA, key_a_, "anything");
  EXPECT_EQ(Call("POST", "/v1/search", "", Query("anything")).status, 401);
  for (const char* audience : {"core", "kms"}) {
    http::Response answer = Call("POST", "/v1/search", Token(kAlice, audience), Query("anything"));
    EXPECT_EQ(answer.status, 401) << audience;
    EXPECT_EQ(answer.header("WWW-Authenticate"), "Bearer");
  }
  http::Response foreign = Search(kMallory, Query("anything"));
  EXPECT_EQ(foreign.status, 403);
  EXPECT_EQ(Code(foreign), "permission_denied");
  EXPECT_EQ(kms_.authorization_lists, 0);  // nothing was asked about mallory
  EXPECT_EQ(Call("GET", "/v1/nothing", Token(kAlice)).status, 404);
  EXPECT_EQ(Call("GET", "/v1/search", Token(kAlice)).status, 405);
}

// POST /v1/compliance/search: the user's rooms as the KMS lists them onBehalfOf the user over the
// officer's own channel, so the KMS decides who is an officer.
TEST_F(IndexerRoutesTest, AComplianceOfficerSearchesAUsersRoomsAsTheKmsAllows) {
  const std::string in_a = Post(kRoomA, key_a_, "merger talks");
  const std::string in_b = Post(kRoomB, key_b_, "merger plans");
  auto compliance = [&](const std::string& officer, const std::string& user,
                        const std::string& kms_token_of) {
    Poco::Net::HTTPRequest head("POST", "/v1/compliance/search", Poco::Net::HTTPMessage::HTTP_1_1);
    head.set("Authorization", "Bearer " + Token(officer));
    if (!kms_token_of.empty()) {
      head.set(kKmsAuthorizationHeader, "Bearer " + Token(kms_token_of, "kms"));
    }
    const std::string body = "{\"user\":\"" + user + "\",\"query\":\"merger\"}";
    head.setContentLength64(static_cast<Poco::Int64>(body.size()));
    head.setContentType("application/json");
    std::istringstream stream(body);
    http::Request request(head, stream);
    return http::Answer(*routes_, request);
  };
  EXPECT_EQ(Ids(compliance(kOfficer, kAlice, kOfficer)), (std::vector<std::string>{in_b, in_a}));
  EXPECT_EQ(Ids(compliance(kOfficer, kBob, kOfficer)), std::vector<std::string>{in_a});
  // Not an officer: the KMS refuses the listing.
  http::Response carol = compliance(kCarol, kAlice, kCarol);
  EXPECT_EQ(carol.status, 403) << carol.body;
  // No KMS token, or another user's: refused before the KMS is asked.
  const int channels = officer_channels_;
  EXPECT_EQ(compliance(kOfficer, kAlice, "").status, 401);
  EXPECT_EQ(compliance(kCarol, kAlice, kOfficer).status, 401);
  // A user of another organization, or an officer of another organization: 403.
  EXPECT_EQ(compliance(kOfficer, kMallory, kOfficer).status, 403);
  EXPECT_EQ(compliance(kMallory, kAlice, kMallory).status, 403);
  EXPECT_EQ(officer_channels_, channels);
  // A compliance body without its user is a bad request.
  http::Response no_user =
      Call("POST", "/v1/compliance/search", Token(kOfficer), "{\"query\":\"merger\"}");
  EXPECT_TRUE(no_user.status == 400 || no_user.status == 401) << no_user.body;
  // And a user's own search takes no "user".
  EXPECT_EQ(Search(kAlice, "{\"query\":\"merger\",\"user\":\"bob@acme.test\"}").status, 400);
}

TEST_F(IndexerRoutesTest, AServiceThatIsDownIs503) {
  Post(kRoomA, key_a_, "anything");
  kms_.SetAvailable(false);
  http::Response answer = Search(kAlice, Query("anything"));
  EXPECT_EQ(answer.status, 503);
  EXPECT_EQ(answer.header("Retry-After"), "1");
}

TEST_F(IndexerRoutesTest, HealthTellsTheStreamAndTheKmsAsTheyAre) {
  stream_state_.stream_connected = true;
  stream_state_.cursor = 42;
  stream_state_.lag_ms = 7;
  http::Response ok = Call("GET", "/health", "");
  EXPECT_EQ(ok.status, 200) << ok.body;
  Object::Ptr json = Parse(ok.body);
  EXPECT_EQ(json->getValue<std::string>("status"), "ok");
  EXPECT_EQ(json->getObject("core")->getValue<std::int64_t>("cursor"), 42);
  EXPECT_EQ(json->getObject("core")->getValue<std::int64_t>("lagMs"), 7);
  EXPECT_TRUE(json->getObject("kms")->getValue<bool>("ok"));

  kms_.SetAvailable(false);
  http::Response kms_down = Call("GET", "/health", "");
  EXPECT_EQ(kms_down.status, 503);
  EXPECT_FALSE(Parse(kms_down.body)->getObject("kms")->getValue<bool>("ok"));
  kms_.SetAvailable(true);
  stream_state_.stream_connected = false;
  stream_state_.last_error = "the core refused the event stream";
  http::Response stream_down = Call("GET", "/health", "");
  EXPECT_EQ(stream_down.status, 503);
  EXPECT_FALSE(Parse(stream_down.body)->getObject("core")->getValue<bool>("streamConnected"));
  stream_state_.stream_connected = true;
  EXPECT_TRUE(Parse(Call("GET", "/health", "").body)->getValue<bool>("database"));
  database_up_ = false;
  http::Response database_down = Call("GET", "/health", "");
  EXPECT_EQ(database_down.status, 503);
  const std::pair<std::string, std::string> retry_after{"Retry-After", "1"};
  EXPECT_NE(std::find(database_down.headers.begin(), database_down.headers.end(), retry_after),
            database_down.headers.end());
  EXPECT_FALSE(Parse(database_down.body)->getValue<bool>("database"));
  EXPECT_EQ(Parse(database_down.body)->getValue<std::string>("status"), "unavailable");
}

TEST_F(IndexerRoutesTest, EachUsersSearchesAreRateLimitedWith429AndRetryAfter) {
  MakeRoutes({1, 3, [this] { return now_s_; }});  // 1 a second, bursts of 3
  const std::string post = Post(kRoomA, key_a_, "launch checklist");
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Search(kBob, Query("launch")).status, 200) << i;
  const int searches_before = static_cast<int>(core_.searched.size());
  http::Response limited = Search(kBob, Query("launch"));
  EXPECT_EQ(limited.status, 429) << limited.body;
  EXPECT_EQ(Code(limited), "rate_limited");
  EXPECT_EQ(limited.content_type.substr(0, 16), "application/json");
  bool retry_after = false;
  for (const auto& [name, value] : limited.headers) {
    if (name == "Retry-After") retry_after = value == "1";
  }
  EXPECT_TRUE(retry_after);
  EXPECT_EQ(static_cast<int>(core_.searched.size()), searches_before);  // nothing was searched
  // Compliance searches count too (here without the KMS token: refused, but counted).
  const std::string compliance = "{\"user\":\"bob@acme.test\",\"query\":\"launch\"}";
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Call("POST", "/v1/compliance/search", Token(kOfficer), compliance).status, 401);
  }
  EXPECT_EQ(Call("POST", "/v1/compliance/search", Token(kOfficer), compliance).status, 429);
  // Another user is served meanwhile; a second later bob may search again.
  EXPECT_EQ(Ids(Search(kAlice, Query("launch"))), std::vector<std::string>{post});
  now_s_ += 1;
  EXPECT_EQ(Ids(Search(kBob, Query("launch"))), std::vector<std::string>{post});
  EXPECT_EQ(Search(kBob, Query("launch")).status, 429);
  // /health is nobody's search: never limited (503 here: the stream is not connected).
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Call("GET", "/health", "").status, 503);
}

TEST_F(IndexerRoutesTest, HealthShowsTheReindexJobAndTheLagPercentiles) {
  stream_state_.stream_connected = true;
  stream_state_.lag_p50_ms = 12;
  stream_state_.lag_p99_ms = 340;
  reindex_ = JobProgress{"reindex", "running", 2, 1042, 300, 1200, 5000};
  http::Response health = Call("GET", "/health", "");
  ASSERT_EQ(health.status, 200) << health.body;
  Object::Ptr json = Parse(health.body);
  EXPECT_EQ(json->getValue<int>("searchKeyVersion"), 2);
  EXPECT_EQ(json->getObject("core")->getValue<int>("lagP50Ms"), 12);
  EXPECT_EQ(json->getObject("core")->getValue<int>("lagP99Ms"), 340);
  Object::Ptr job = json->getObject("reindex");
  ASSERT_TRUE(job);
  EXPECT_EQ(job->getValue<std::string>("state"), "running");
  EXPECT_EQ(job->getValue<int>("targetVersion"), 2);
  EXPECT_EQ(job->getValue<int>("cursor"), 1042);
  EXPECT_EQ(job->getValue<int>("endSeq"), 5000);
  EXPECT_EQ(job->getValue<int>("done"), 300);
  EXPECT_EQ(job->getValue<int>("total"), 1200);
}

}  // namespace
}  // namespace strongroom::indexer
