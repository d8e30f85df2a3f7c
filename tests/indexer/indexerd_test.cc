// indexerd against the real thing: kmsd on a SoftHSM2 token, cored and indexerd as child processes
// on 127.0.0.1 (port 0, --port-file), TLS from a throwaway CA, tokens from `strongroom-idp` keys
// (indexerd gets its own by running `strongroom-idp token` as its token command). Users are the
// SDK over direct HTTPS to the KMS. The organization's policy names the indexer and makes it
// cloudAgent of every new room; cored names it as its indexer.
//
// What is checked: a member finds a post by another form of its words, a non-member, a removed
// member and another organization's user find nothing or are refused; an edit replaces what is
// found and a retract removes it; indexerd killed with SIGKILL in the middle of a burst and
// restarted leaves every activity indexed exactly once (its tokens counted in cored's database);
// and after indexing marker words, cored's database, its write-ahead log and its log hold no word,
// no stem and no key. Waits are bounded and fail with a message; nothing is timed.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/Process.h>
#include <Poco/StreamCopier.h>
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "../support/daemon_process.h"
#include "../support/haproxy_front.h"
#include "../support/softhsm_sandbox.h"
#include "../support/test_dir.h"
#include "../support/tool_steps.h"
#include "index_postings.h"
#include "strongroom/client/conversation.h"
#include "strongroom/client/core_client.h"
#include "strongroom/client/kms_context.h"
#include "strongroom/client/search.h"
#include "strongroom/common/database.h"
#include "strongroom/common/jose/base64url.h"
#include "strongroom/common/jwt.h"
#include "strongroom/core/core_service.h"
#include "strongroom/indexer/room_search_key.h"
#include "strongroom/kms/kms_store.h"
#include "strongroom/kms/org_policy.h"

namespace strongroom::indexer {
namespace {

using client::Conversations;
using client::CoreClient;
using client::KmsContext;
using Poco::JSON::Object;
using strongroom::testing::DaemonProcess;
using strongroom::testing::FreePort;
using strongroom::testing::InitTestIdps;
using strongroom::testing::kSoftHsmModule;
using strongroom::testing::MakeTestTls;
using strongroom::testing::SoftHsmSandbox;
using strongroom::testing::TestDir;
using strongroom::testing::Tool;
using strongroom::testing::ToolRun;
using strongroom::testing::ToolSteps;
namespace fs = std::filesystem;

constexpr char kKmsHost[] = "kms.acme.test";
constexpr char kCluster[] = "kms://kms.acme.test";
constexpr char kAlice[] = "alice@acme.test";
constexpr char kBob[] = "bob@acme.test";
constexpr char kCarol[] = "carol@acme.test";
constexpr char kMallory[] = "mallory@globex.test";
constexpr char kIndexer[] = "indexer@acme.test";
constexpr char kOfficer[] = "officer@acme.test";
constexpr auto kPatience = std::chrono::seconds(90);

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// A CA and TLS certificate for 127.0.0.1, identity providers for acme and globex, and a SoftHSM2
// token with acme's root key and the KMS's identity key certified for kms.acme.test.
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
  std::string ca() const { return (dir_ / "ca.pem").string(); }
  std::string idp(const std::string& org) const { return (dir_ / ("idp-" + org)).string(); }
  std::string jwks(const std::string& org) const { return idp(org) + "/jwks.json"; }
  const std::string& hsm_section() const { return hsm_section_; }
  const std::string& error() const { return steps_.error(); }

  std::string Token(const std::string& user, const std::string& audience) const {
    const std::string org = user.substr(user.find('@') + 1, user.find('.') - user.find('@') - 1);
    const std::string key_text = ReadFile(fs::path(idp(org)) / "signing-key.jwk");
    SecretBytes jwk({reinterpret_cast<const std::uint8_t*>(key_text.data()), key_text.size()});
    auto key = jose::EcKeyPair::FromPrivateJwk(jwk);
    if (!key.ok()) return "";
    auto token = MintJwt(
        *key, {"https://idp." + org + ".test", user, audience, std::time(nullptr) - 5, 3600});
    return token.ok() ? *token : "";
  }

 private:
  Environment() {
    Poco::Net::initializeSSL();
    dir_ = fs::temp_directory_path() / ("sr-indexerd-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const std::string d = dir_.string();
    MakeTestTls(steps_, d, "Strongroom indexerd test CA");
    InitTestIdps(steps_, d, IDP_PATH, {"acme", "globex"});
    const std::string label = SoftHsmSandbox::Get().CreateToken(kSoftHsmModule, "indexerd");
    hsm_section_ = "[hsm]\ntokens = primary\nnode_id = test\n[hsm.primary]\nuri = " +
                   SoftHsmSandbox::Get().Uri(kSoftHsmModule, label) + "\n";
    const std::string hsm_ini = (dir_ / "hsm.ini").string();
    std::ofstream(hsm_ini) << hsm_section_;
    const Poco::Process::Env env{{"SOFTHSM2_CONF", SoftHsmSandbox::Get().dir() + "/softhsm2.conf"}};
    for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
             {"--config", hsm_ini, "hsm", "init-root", "--org", "acme"},
             {"--config", hsm_ini, "hsm", "init-identity"},
             {"--config", hsm_ini, "hsm", "certify-identity", "--ca-cert", d + "/ca.pem",
              "--ca-key", d + "/ca.key", "--host", kKmsHost, "--out", d + "/identity.pem", "--days",
              "2"}}) {
      steps_.Run(KMSCTL_PATH, args, env);
    }
  }

  fs::path dir_;
  std::string hsm_section_;
  ToolSteps steps_;
};

Environment& env() { return Environment::Get(); }

struct HttpAnswer {
  int status = 0;
  std::string body;
};

// One HTTPS request to 127.0.0.1:port; status 0 when it got no answer.
HttpAnswer Https(std::uint16_t port, const std::string& method, const std::string& path,
                 const std::string& bearer = "", const std::string& body = "") {
  try {
    Poco::Net::Context::Params params;
    params.caLocation = env().ca();
    params.verificationMode = Poco::Net::Context::VERIFY_STRICT;
    Poco::Net::Context::Ptr context(
        new Poco::Net::Context(Poco::Net::Context::TLS_CLIENT_USE, params));
    Poco::Net::HTTPSClientSession session("127.0.0.1", port, context);
    session.setTimeout(Poco::Timespan(30, 0));
    Poco::Net::HTTPRequest request(method, path, Poco::Net::HTTPMessage::HTTP_1_1);
    if (!bearer.empty()) request.set("Authorization", "Bearer " + bearer);
    if (!body.empty()) {
      request.setContentType("application/json");
      request.setContentLength64(static_cast<Poco::Int64>(body.size()));
    }
    session.sendRequest(request) << body;
    Poco::Net::HTTPResponse response;
    std::istream& in = session.receiveResponse(response);
    HttpAnswer answer;
    answer.status = response.getStatus();
    Poco::StreamCopier::copyToString(in, answer.body);
    return answer;
  } catch (const Poco::Exception&) {
    return {};
  }
}

Object::Ptr Parse(const std::string& text) {
  try {
    return Poco::JSON::Parser().parse(text).extract<Object::Ptr>();
  } catch (const Poco::Exception&) {
    return nullptr;
  }
}

struct User {
  std::string id;
  std::unique_ptr<CoreClient> core;
  std::unique_ptr<KmsContext> kms;
  std::unique_ptr<Conversations> sdk;
};

class IndexerdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    signal(SIGPIPE, SIG_IGN);
    ASSERT_TRUE(env().error().empty()) << env().error();
    dir_ = std::make_unique<TestDir>();
    fs::create_directories(path("files"));
    // The SDK creates rooms with the KMS message embedded, which cored relays to the KMS.
    relay_token_ = path("relay.token").string();
    std::ofstream(relay_token_)
        << "6a0f3c2e9b1d4a5f8e7c6b5a49382716a0f3c2e9b1d4a5f8e7c6b5a493827160\n";
    ::chmod(relay_token_.c_str(), 0600);
    ASSERT_TRUE(StartCored());
    ASSERT_TRUE(PrepareKmsDatabase());
    ASSERT_TRUE(StartKmsd());
    ASSERT_TRUE(WaitForRelay());
    WriteIndexerConfig();
    ASSERT_TRUE(StartIndexerd());
  }

  void TearDown() override {
    users_.clear();
    indexerd_.Stop(SIGKILL);
    kmsd_.Stop(SIGKILL);
    cored_.Stop(SIGKILL);
    if (HasFailure()) {
      std::cerr << "--- indexerd's log ---\n"
                << indexerd_.LogTail(4000) << "\n--- cored's log ---\n"
                << cored_.LogTail(3000) << "\n--- kmsd's log ---\n"
                << kmsd_.LogTail(3000) << "\n";
    }
    dir_.reset();
  }

  fs::path path(const std::string& name) const { return *dir_ / name; }

  std::string JwtSections() const {
    return "[jwt.acme]\nissuer = https://idp.acme.test\norg = acme\nsubject_domains = acme.test\n"
           "jwks = " +
           env().jwks("acme") +
           "\n[jwt.globex]\nissuer = https://idp.globex.test\norg = globex\n"
           "subject_domains = globex.test\njwks = " +
           env().jwks("globex") + "\n";
  }

  bool StartCored() {
    std::ofstream(path("core.ini"))
        << "[core]\ndatabase = " << path("core.db").string()
        << "\nfiles_dir = " << path("files").string()
        << "\nlisten = 127.0.0.1:0\ntls_cert = " << (env().dir() / "tls.pem").string()
        << "\ntls_key = " << (env().dir() / "tls.key").string() << "\nindexer = " << kIndexer
        << "\nindexer_org = acme\nmax_connections = 64\nrate_per_s = 100000\n"
        << "rate_burst = 100000\nrelays = kms1\n[relay.kms1]\ncluster = " << kCluster
        << "\ntoken_file = " << relay_token_ << "\n[compliance]\nacme = " << kOfficer
        << "\n[jwt]\nissuers = acme, globex\nskew_s = 0\n"
        << JwtSections();
    const bool started = cored_.Start(
        {CORED_PATH,
         {"--config", path("core.ini").string()},
         {},
         path("cored.log").string(),
         path("cored.port").string()},
        [](std::uint16_t port) { return Https(port, "GET", "/health").status == 200; });
    EXPECT_TRUE(started) << cored_.error();
    return started;
  }

  bool PrepareKmsDatabase() {
    auto db = Database::OpenSqlite(path("kms.db").string(), kms::KmsStore::Migrations());
    EXPECT_TRUE(db.ok()) << db.error().ToString();
    if (!db.ok()) return false;
    kms::OrgPolicy policy;
    policy.org = "acme";
    policy.indexer = kIndexer;
    policy.indexer_cloud_agent = true;
    policy.compliance_officers = {kOfficer};
    Status put = (*db)->InTransaction(
        [&](Poco::Data::Session& s) { return kms::PolicyStore::Put(s, policy, 1); });
    EXPECT_TRUE(put.ok()) << put.error().ToString();
    return put.ok();
  }

  bool StartKmsd() {
    const std::string d = env().dir().string();
    // The operations listener, for kmsctl ops (a port of its own: kmsd reports only the other).
    ops_token_ = path("ops.token").string();
    std::ofstream(ops_token_) << std::string(64, 'e') << "\n";
    ::chmod(ops_token_.c_str(), 0600);
    ops_port_ = FreePort();
    std::ofstream(path("kms.ini"))
        << env().hsm_section() << "[kms]\nhost = " << kKmsHost
        << "\ndatabase = " << path("kms.db").string() << "\nlisten = 127.0.0.1:0\ntls_cert = " << d
        << "/tls.pem\ntls_key = " << d << "/tls.key\nidentity_chain = " << d
        << "/identity.pem\n[ops]\nlisten = 127.0.0.1:" << ops_port_ << "\ntls_cert = " << d
        << "/tls.pem\ntls_key = " << d << "/tls.key\ntoken_file = " << ops_token_
        << "\n[relay]\nurl = https://127.0.0.1:" << cored_.port() << "\nca_file = " << d
        << "/ca.pem\ntoken_file = " << relay_token_
        << "\nconnections = 2\n[jwt]\nissuers = acme, globex\nskew_s = 0\n"
        << JwtSections();
    const bool started = kmsd_.Start(
        {KMSD_PATH,
         {"--config", path("kms.ini").string()},
         {{"SOFTHSM2_CONF", SoftHsmSandbox::Get().dir() + "/softhsm2.conf"}},
         path("kmsd.log").string(),
         path("kmsd.port").string()},
        [](std::uint16_t port) { return Https(port, "GET", "/kms/info").status == 200; });
    EXPECT_TRUE(started) << kmsd_.error();
    return started;
  }

  // Bounded wait until a message relayed through cored reaches the KMS.
  bool WaitForRelay() {
    auto core = CoreClient::New({"https://127.0.0.1:" + std::to_string(cored_.port()), env().ca(),
                                 client::StaticToken(env().Token(kAlice, "core"))});
    EXPECT_TRUE(core.ok());
    if (!core.ok()) return false;
    const auto deadline = std::chrono::steady_clock::now() + kPatience;
    while (std::chrono::steady_clock::now() < deadline) {
      auto answer = (*core)->RelayKmsMessage(kCluster, "e30.e30.e30");
      if (answer.ok() && answer->http_status != 503) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ADD_FAILURE() << "kmsd did not attach to cored's relay";
    return false;
  }

  void WriteIndexerConfig() {
    const std::string d = env().dir().string();
    std::ofstream(path("indexer.ini"))
        << "[indexer]\norg = acme\nsubject = " << kIndexer
        << "\ndatabase = " << path("indexer.db").string()
        << "\nlisten = 127.0.0.1:0\ntls_cert = " << d << "/tls.pem\ntls_key = " << d
        << "/tls.key\ntoken_command = " << IDP_PATH << " token --dir " << env().idp("acme")
        << " --subject " << kIndexer << " --audience {audience} --ttl 3600\n"
        << "[kms]\nurl = https://127.0.0.1:" << kmsd_.port() << "\ncluster = " << kCluster
        << "\nca_file = " << env().ca() << "\n[core]\nurl = https://127.0.0.1:" << cored_.port()
        << "\nca_file = " << env().ca() << "\n[jwt]\nissuers = acme, globex\nskew_s = 0\n"
        << JwtSections();
  }

  bool StartIndexerd() {
    const bool started = indexerd_.Start(
        {INDEXERD_PATH,
         {"--config", path("indexer.ini").string()},
         {},
         path("indexerd.log").string(),
         path("indexerd.port").string()},
        [](std::uint16_t port) { return Https(port, "GET", "/health").status == 200; });
    EXPECT_TRUE(started) << indexerd_.error();
    return started;
  }

  User* As(const std::string& user_id) {
    auto user = std::make_unique<User>();
    user->id = user_id;
    auto core = CoreClient::New({"https://127.0.0.1:" + std::to_string(cored_.port()), env().ca(),
                                 client::StaticToken(env().Token(user_id, "core"))});
    EXPECT_TRUE(core.ok());
    if (!core.ok()) return nullptr;
    user->core = std::move(core).value();
    client::KmsContextOptions options;
    options.client_id = "indexerd-test";
    options.kms_token = client::StaticToken(env().Token(user_id, "kms"));
    options.trust = {kCluster, env().ca()};
    auto kms = KmsContext::OverHttps(
        options, {"https://127.0.0.1:" + std::to_string(kmsd_.port()), env().ca()});
    EXPECT_TRUE(kms.ok()) << kms.error().ToString();
    if (!kms.ok()) return nullptr;
    user->kms = std::move(kms).value();
    client::ConversationsOptions sdk_options;
    sdk_options.user_id = user_id;
    sdk_options.pool.target = 2;
    auto sdk = Conversations::New(*user->core, *user->kms, sdk_options);
    EXPECT_TRUE(sdk.ok());
    if (!sdk.ok()) return nullptr;
    user->sdk = std::move(sdk).value();
    users_.push_back(std::move(user));
    return users_.back().get();
  }

  // indexerd's stream cursor, from its /health (-1 when it does not answer).
  std::int64_t Cursor() {
    HttpAnswer health = Https(indexerd_.port(), "GET", "/health");
    Object::Ptr json = Parse(health.body);
    if (!json || !json->getObject("core")) return -1;
    return json->getObject("core")->getValue<std::int64_t>("cursor");
  }
  // Bounded wait until indexerd has indexed up to `seq`.
  bool IndexedUpTo(std::int64_t seq) {
    const auto deadline = std::chrono::steady_clock::now() + kPatience;
    while (std::chrono::steady_clock::now() < deadline) {
      if (Cursor() >= seq) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ADD_FAILURE() << "indexerd did not index up to seq " << seq << " (cursor " << Cursor() << ")";
    return false;
  }

  HttpAnswer Search(const std::string& user, const std::string& query,
                    const std::string& extra = "") {
    Object body;
    body.set("query", query);
    std::ostringstream text;
    body.stringify(text);
    std::string json = text.str();
    if (!extra.empty()) json = json.substr(0, json.size() - 1) + "," + extra + "}";
    return Https(indexerd_.port(), "POST", "/v1/search", env().Token(user, "indexer"), json);
  }
  // The activity ids a search by `user` answers (a failure unless 200).
  std::vector<std::string> Found(const std::string& user, const std::string& query) {
    HttpAnswer answer = Search(user, query);
    EXPECT_EQ(answer.status, 200) << answer.body;
    std::vector<std::string> ids;
    Object::Ptr json = Parse(answer.body);
    if (answer.status != 200 || !json) return ids;
    auto items = json->getArray("items");
    for (std::size_t i = 0; i < items->size(); ++i) {
      ids.push_back(
          items->getObject(static_cast<unsigned>(i))->getValue<std::string>("activityId"));
    }
    return ids;
  }

  // Index entries per activity seq in cored's database (a token each: two of an activity's 8
  // tokens agree on the 24 bits the store keeps about once in 600,000 activities).
  std::map<std::int64_t, std::int64_t> TokensPerActivity() {
    std::map<std::int64_t, std::int64_t> counts;
    auto db = Database::OpenSqlite(path("core.db").string(), core::CoreService::Migrations());
    EXPECT_TRUE(db.ok()) << db.error().ToString();
    if (!db.ok()) return counts;
    Status read = (*db)->WithSession([&](Poco::Data::Session& s) {
      std::vector<Poco::Int64> seqs;
      std::vector<std::string> conversations;
      s << "SELECT a.seq, a.conversation_id FROM index_sets i JOIN activities a USING (seq)",
          Poco::Data::Keywords::into(seqs), Poco::Data::Keywords::into(conversations),
          Poco::Data::Keywords::now;
      for (std::size_t i = 0; i < seqs.size(); ++i) {
        counts[seqs[i]] = static_cast<std::int64_t>(
            core::internal::IndexPostings::EntriesOf(s, conversations[i], seqs[i]).size());
      }
      return OkStatus();
    });
    EXPECT_TRUE(read.ok()) << read.error().ToString();
    return counts;
  }

  // kmsctl ops ... against kmsd's operations listener.
  ToolRun Kmsctl(std::vector<std::string> args) {
    const std::vector<std::string> flags = {
        "--url",        "https://127.0.0.1:" + std::to_string(ops_port_),
        "--ca",         env().ca(),
        "--token-file", ops_token_};
    args.insert(args.end(), flags.begin(), flags.end());
    return Tool(KMSCTL_PATH, args);
  }

  std::unique_ptr<TestDir> dir_;
  std::string relay_token_;
  std::string ops_token_;
  std::uint16_t ops_port_ = 0;
  DaemonProcess cored_, kmsd_, indexerd_;
  std::vector<std::unique_ptr<User>> users_;
};

TEST_F(IndexerdTest, AMemberFindsAPostByAnotherFormOfItsWordsOthersFindNothing) {
  User* alice = As(kAlice);
  ASSERT_TRUE(alice);
  auto room = alice->sdk->Create("Launch room", {kBob});
  ASSERT_TRUE(room.ok()) << room.error().ToString();
  auto post = alice->sdk->Send(room->id, "The launch checklists are ready for review");
  ASSERT_TRUE(post.ok()) << post.error().ToString();
  auto other = alice->sdk->Send(room->id, "Lunch is at noon");
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(IndexedUpTo(other->seq));

  EXPECT_EQ(Found(kBob, "Launched CHECKLIST"), std::vector<std::string>{post->id});
  EXPECT_EQ(Found(kAlice, "review"), std::vector<std::string>{post->id});
  // The room's title is found by its create activity.
  EXPECT_EQ(Found(kAlice, "rooms").size(), 1u);
  // Carol, of the same organization but not a member, finds nothing; naming the room is refused.
  EXPECT_TRUE(Found(kCarol, "launch").empty());
  HttpAnswer named = Search(kCarol, "launch", "\"room\":\"" + room->id + "\"");
  EXPECT_EQ(named.status, 403) << named.body;
  // Another organization's user is refused; a core token is not an indexer token.
  EXPECT_EQ(Search(kMallory, "launch").status, 403);
  EXPECT_EQ(Https(indexerd_.port(), "POST", "/v1/search", env().Token(kBob, "core"),
                  "{\"query\":\"launch\"}")
                .status,
            401);
  // Bad queries are clear errors.
  EXPECT_EQ(Search(kBob, "").status, 400);
  std::string many;
  for (int i = 0; i < 33; ++i) many += "w" + std::to_string(i) + " ";
  EXPECT_EQ(Search(kBob, many).status, 400);

  // Bob removed (the SDK deletes his KMS authorization and rotates): he finds nothing there.
  auto removed = alice->sdk->RemoveMember(room->id, kBob);
  ASSERT_TRUE(removed.ok()) << removed.error().ToString();
  EXPECT_TRUE(Found(kBob, "launch").empty());
  EXPECT_TRUE(Found(kBob, "checklist").empty());
  EXPECT_EQ(Found(kAlice, "checklist"), std::vector<std::string>{post->id});
  EXPECT_EQ(Found(kAlice, "launch").size(), 2u);  // the post and the room's title
}

TEST_F(IndexerdTest, TheSdkAndTheCliFetchDecryptAndMarkWhatIndexerdFinds) {
  User* alice = As(kAlice);
  User* bob = As(kBob);
  ASSERT_TRUE(alice && bob);
  auto room = alice->sdk->Create("Ops", {kBob});
  ASSERT_TRUE(room.ok());
  auto post = alice->sdk->Send(room->id, "The launch checklists are ready for review");
  ASSERT_TRUE(post.ok());
  ASSERT_TRUE(IndexedUpTo(post->seq));

  auto searcher = client::Searcher::New({"https://127.0.0.1:" + std::to_string(indexerd_.port()),
                                         env().ca(),
                                         client::StaticToken(env().Token(kBob, "indexer")),
                                         {}},
                                        *bob->core, *bob->sdk);
  ASSERT_TRUE(searcher.ok()) << searcher.error().ToString();
  client::SearchQuery query;
  query.query = "Launched checklist";
  auto results = (*searcher)->Search(query);
  ASSERT_TRUE(results.ok()) << results.error().ToString();
  ASSERT_EQ(results->hits.size(), 1u);
  EXPECT_EQ(results->dropped, 0u);
  EXPECT_EQ(results->hits[0].message.activity.id, post->id);
  EXPECT_EQ(results->hits[0].snippet,
            "The \u00ablaunch\u00bb \u00abchecklists\u00bb are ready for review");
  // indexerd's refusals come back as errors of their kind.
  query.query = "";
  auto refused = (*searcher)->Search(query);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument);

  // The CLI, with a profile that names the indexer.
  const std::string home = path("cli-home").string();
  std::ofstream(path("bob.core")) << env().Token(kBob, "core");
  std::ofstream(path("bob.kms")) << env().Token(kBob, "kms");
  std::ofstream(path("bob.indexer")) << env().Token(kBob, "indexer");
  const std::string cli = "STRONGROOM_HOME=" + home + " " + STRONGROOM_PATH;
  const std::string login =
      cli + " login --user " + kBob + " --core https://127.0.0.1:" + std::to_string(cored_.port()) +
      " --ca " + env().ca() + " --kms-cluster " + kCluster +
      " --kms-url https://127.0.0.1:" + std::to_string(kmsd_.port()) + " --core-token-file " +
      path("bob.core").string() + " --kms-token-file " + path("bob.kms").string() +
      " --indexer https://127.0.0.1:" + std::to_string(indexerd_.port()) +
      " --indexer-token-file " + path("bob.indexer").string() + " --no-check > /dev/null";
  ASSERT_EQ(std::system(login.c_str()), 0);
  FILE* pipe = ::popen((cli + " search launches 2>&1").c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buffer[4096];
  for (std::size_t got; (got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) {
    out.append(buffer, got);
  }
  EXPECT_EQ(::pclose(pipe), 0) << out;
  EXPECT_NE(out.find("[Ops] alice@acme.test: The \u00ablaunch\u00bb checklists"), std::string::npos)
      << out;
}

TEST_F(IndexerdTest, AComplianceOfficerSearchesAUsersRoomsTheKmsDecides) {
  User* alice = As(kAlice);
  User* officer = As(kOfficer);
  User* carol = As(kCarol);
  ASSERT_TRUE(alice && officer && carol);
  auto room = alice->sdk->Create("", {kBob});
  ASSERT_TRUE(room.ok());
  auto post = alice->sdk->Send(room->id, "The merger closes on Friday");
  ASSERT_TRUE(post.ok());
  ASSERT_TRUE(IndexedUpTo(post->seq));
  auto searcher_of = [&](User* who) {
    return client::Searcher::New({"https://127.0.0.1:" + std::to_string(indexerd_.port()),
                                  env().ca(), client::StaticToken(env().Token(who->id, "indexer")),
                                  client::StaticToken(env().Token(who->id, "kms"))},
                                 *who->core, *who->sdk);
  };
  client::SearchQuery query;
  query.query = "Mergers";
  auto as_officer = searcher_of(officer);
  ASSERT_TRUE(as_officer.ok());
  auto found = (*as_officer)->ComplianceSearch(kBob, query);
  ASSERT_TRUE(found.ok()) << found.error().ToString();
  ASSERT_EQ(found->hits.size(), 1u);
  EXPECT_EQ(found->hits[0].message.activity.id, post->id);
  EXPECT_EQ(found->hits[0].snippet, "The \u00abmerger\u00bb closes on Friday");
  // Carol is no officer: the KMS refuses to list bob's rooms for her.
  auto as_carol = searcher_of(carol);
  ASSERT_TRUE(as_carol.ok());
  auto refused = (*as_carol)->ComplianceSearch(kBob, query);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kPermissionDenied) << refused.error().ToString();
}

TEST_F(IndexerdTest, AnEditReplacesWhatIsFoundAndARetractRemovesIt) {
  User* alice = As(kAlice);
  ASSERT_TRUE(alice);
  auto room = alice->sdk->Create("", {kBob});
  ASSERT_TRUE(room.ok());
  auto post = alice->sdk->Send(room->id, "quarterly budget draft");
  ASSERT_TRUE(post.ok());
  ASSERT_TRUE(IndexedUpTo(post->seq));
  EXPECT_EQ(Found(kBob, "draft"), std::vector<std::string>{post->id});

  auto edit = alice->sdk->Edit(room->id, post->id, "quarterly budget final");
  ASSERT_TRUE(edit.ok()) << edit.error().ToString();
  ASSERT_TRUE(IndexedUpTo(edit->seq));
  EXPECT_TRUE(Found(kBob, "draft").empty());
  EXPECT_EQ(Found(kBob, "final"), std::vector<std::string>{post->id});  // the post, edited

  auto retract = alice->sdk->Retract(room->id, post->id);
  ASSERT_TRUE(retract.ok()) << retract.error().ToString();
  ASSERT_TRUE(IndexedUpTo(retract->seq));
  EXPECT_TRUE(Found(kBob, "final").empty());
  EXPECT_TRUE(Found(kBob, "budget").empty());
}

TEST_F(IndexerdTest, KilledMidBurstAndRestartedItIndexesEveryActivityExactlyOnce) {
  User* alice = As(kAlice);
  ASSERT_TRUE(alice);
  auto room = alice->sdk->Create("", {kBob});
  ASSERT_TRUE(room.ok());
  constexpr int kPosts = 300;
  std::vector<client::Activity> posts;
  bool killed = false;
  std::int64_t cursor_at_kill = 0;
  for (int i = 0; i < kPosts; ++i) {
    auto post = alice->sdk->Send(room->id, "burst message number " + std::to_string(i));
    ASSERT_TRUE(post.ok()) << post.error().ToString();
    posts.push_back(*post);
    // Once indexerd is part-way through, kill it without warning.
    if (!killed && i >= kPosts / 3 && Cursor() > posts.front().seq) {
      cursor_at_kill = Cursor();
      EXPECT_EQ(indexerd_.Stop(SIGKILL), -SIGKILL);
      killed = true;
    }
  }
  ASSERT_TRUE(killed) << "indexerd indexed nothing while the burst was posted";
  EXPECT_LT(cursor_at_kill, posts.back().seq) << "the kill came after the burst was indexed";
  ASSERT_TRUE(StartIndexerd());
  ASSERT_TRUE(IndexedUpTo(posts.back().seq));

  // Every post has exactly its set: 4 terms ("burst", "messag", "number", the number) padded to
  // the first bucket, 8 tokens; none is missing and none has more.
  const std::map<std::int64_t, std::int64_t> counts = TokensPerActivity();
  for (const client::Activity& post : posts) {
    auto it = counts.find(post.seq);
    ASSERT_NE(it, counts.end()) << "seq " << post.seq << " was not indexed";
    EXPECT_EQ(it->second, 8) << "seq " << post.seq;
  }
  EXPECT_EQ(Found(kBob, "burst message").size(), 50u);  // the first page of a default search
  const std::string number = "number " + std::to_string(kPosts / 2);
  EXPECT_EQ(Found(kBob, number), std::vector<std::string>{posts[kPosts / 2].id});
}

TEST_F(IndexerdTest, ASearchKeyRotationReindexesEverythingAndSearchFindsItThroughout) {
  // indexerd asks the KMS for the current search key version every second.
  ASSERT_EQ(indexerd_.Stop(SIGTERM), 0);
  std::ofstream(path("indexer.ini"), std::ios::app) << "[indexer]\nsearch_key_check_s = 1\n";
  ASSERT_TRUE(StartIndexerd());
  User* alice = As(kAlice);
  ASSERT_TRUE(alice);
  auto room = alice->sdk->Create("", {kBob});
  ASSERT_TRUE(room.ok());
  constexpr int kPosts = 120;
  std::vector<std::string> ids;
  std::int64_t last_seq = 0;
  for (int i = 0; i < kPosts; ++i) {
    auto post = alice->sdk->Send(room->id, "rotation message number " + std::to_string(i));
    ASSERT_TRUE(post.ok()) << post.error().ToString();
    ids.push_back(post->id);
    last_seq = post->seq;
  }
  std::sort(ids.begin(), ids.end());
  ASSERT_TRUE(IndexedUpTo(last_seq));
  const auto all_found = [&] {
    HttpAnswer answer = Search(kBob, "rotation message", "\"limit\":200");
    std::vector<std::string> found;
    Object::Ptr json = Parse(answer.body);
    if (answer.status != 200 || !json) return found;
    auto items = json->getArray("items");
    for (std::size_t i = 0; i < items->size(); ++i) {
      found.push_back(
          items->getObject(static_cast<unsigned>(i))->getValue<std::string>("activityId"));
    }
    std::sort(found.begin(), found.end());
    return found;
  };
  ASSERT_EQ(all_found(), ids);  // before

  // The core's store as the indexer sees it: which activities a version's token of a word finds.
  client::KmsContextOptions options;
  options.client_id = "indexerd-test-as-indexer";
  options.kms_token = client::StaticToken(env().Token(kIndexer, "kms"));
  options.trust = {kCluster, env().ca()};
  auto as_indexer = KmsContext::OverHttps(
      options, {"https://127.0.0.1:" + std::to_string(kmsd_.port()), env().ca()});
  ASSERT_TRUE(as_indexer.ok());
  auto core_as_indexer =
      CoreClient::New({"https://127.0.0.1:" + std::to_string(cored_.port()), env().ca(),
                       client::StaticToken(env().Token(kIndexer, "core"))});
  ASSERT_TRUE(core_as_indexer.ok());
  const auto stored_under = [&](std::uint32_t version) -> std::size_t {
    auto key = (*as_indexer)->RetrieveSearchKey("acme", version);
    EXPECT_TRUE(key.ok()) << key.error().ToString();
    if (!key.ok()) return 0;
    auto room_key = RoomSearchKey::Derive(key->key, room->id, version);
    EXPECT_TRUE(room_key.ok());
    auto page = (*core_as_indexer)->SearchIndex({{room->id, {room_key->Token("rotat")}}}, {}, 200);
    EXPECT_TRUE(page.ok()) << page.error().ToString();
    return page.ok() ? page->items.size() : 0;
  };
  ASSERT_EQ(stored_under(1), static_cast<std::size_t>(kPosts));

  // The operator rotates. indexerd notices within a second and starts the job; it is killed
  // without warning as soon as /health shows the job, and started again.
  ToolRun rotated = Kmsctl({"ops", "rotate-search-key", "--org", "acme"});
  ASSERT_EQ(rotated.exit_code, 0) << rotated.err;
  const auto job_state = [&]() -> std::string {
    Object::Ptr json = Parse(Https(indexerd_.port(), "GET", "/health").body);
    if (!json || !json->getObject("reindex")) return "";
    return json->getObject("reindex")->getValue<std::string>("state");
  };
  auto deadline = std::chrono::steady_clock::now() + kPatience;
  while (job_state().empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_FALSE(job_state().empty()) << "indexerd did not start a re-index";
  EXPECT_EQ(all_found(), ids);  // during
  EXPECT_EQ(indexerd_.Stop(SIGKILL), -SIGKILL);
  ASSERT_TRUE(StartIndexerd());
  EXPECT_EQ(all_found(), ids);  // during, or after if it was done
  // A post made after the rotation is indexed with the new version.
  auto late = alice->sdk->Send(room->id, "rotation message late");
  ASSERT_TRUE(late.ok());
  ids.push_back(late->id);
  std::sort(ids.begin(), ids.end());
  ASSERT_TRUE(IndexedUpTo(late->seq));
  deadline = std::chrono::steady_clock::now() + kPatience;
  while (job_state() != "done" && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(job_state(), "done") << Https(indexerd_.port(), "GET", "/health").body;

  // After: search finds everything, the core holds every post under version 2 and none under
  // version 1, each post with exactly its one set, and the log told the job's progress.
  EXPECT_EQ(all_found(), ids);
  EXPECT_EQ(stored_under(1), 0u);
  EXPECT_EQ(stored_under(2), static_cast<std::size_t>(kPosts + 1));
  const std::map<std::int64_t, std::int64_t> counts = TokensPerActivity();
  for (const auto& [seq, tokens] : counts) EXPECT_EQ(tokens, 8) << "seq " << seq;
  Object::Ptr health = Parse(Https(indexerd_.port(), "GET", "/health").body);
  ASSERT_TRUE(health);
  EXPECT_EQ(health->getValue<int>("searchKeyVersion"), 2);
  EXPECT_EQ(health->getObject("reindex")->getValue<int>("targetVersion"), 2);
  const std::string log = ReadFile(path("indexerd.log"));
  EXPECT_NE(log.find("re-index to search key version 2 started"), std::string::npos) << log;
  // (The "done" line may be the killed process's last words or its successor's: the job's log
  // lines are checked by ReindexTest.)
  EXPECT_EQ(log.find("rotation"), std::string::npos);
}

TEST_F(IndexerdTest, CoredsFilesHoldNoWordNoStemAndNoKeyAfterIndexing) {
  User* alice = As(kAlice);
  ASSERT_TRUE(alice);
  auto room = alice->sdk->Create("Zanzibarian plans", {kBob});
  ASSERT_TRUE(room.ok());
  auto post = alice->sdk->Send(room->id, "Xylophonists quokkaesque Brontosauruses");
  ASSERT_TRUE(post.ok());
  ASSERT_TRUE(IndexedUpTo(post->seq));
  ASSERT_EQ(Found(kBob, "xylophonist").size(), 1u);

  // The words, their stems and case forms; the content key; the organization's search key and
  // the room's key (fetched here as the indexer would), raw and in base64url.
  std::vector<std::string> needles = {"Xylophonist", "xylophonist", "quokkaesqu", "Brontosaur",
                                      "brontosaur",  "Zanzibar",    "zanzibar"};
  auto key = alice->kms->RetrieveKey(room->current_key_uri);
  ASSERT_TRUE(key.ok()) << key.error().ToString();
  client::KmsContextOptions options;
  options.client_id = "indexerd-test-as-indexer";
  options.kms_token = client::StaticToken(env().Token(kIndexer, "kms"));
  options.trust = {kCluster, env().ca()};
  auto as_indexer = KmsContext::OverHttps(
      options, {"https://127.0.0.1:" + std::to_string(kmsd_.port()), env().ca()});
  ASSERT_TRUE(as_indexer.ok());
  auto search_key = (*as_indexer)->RetrieveSearchKey();
  ASSERT_TRUE(search_key.ok()) << search_key.error().ToString();
  auto room_key = RoomSearchKey::Derive(search_key->key, room->id, search_key->version);
  ASSERT_TRUE(room_key.ok());
  for (const SecretBytes* secret : {&key->key, &search_key->key}) {
    needles.push_back(std::string(secret->as_string_view()));
    needles.push_back(jose::Base64UrlEncode(secret->view()));
  }
  for (const fs::path& file : {path("core.db"), path("core.db-wal"), path("cored.log")}) {
    const std::string bytes = ReadFile(file);
    for (const std::string& needle : needles) {
      EXPECT_EQ(bytes.find(needle), std::string::npos)
          << file.filename() << " holds a word, stem or key (needle " << needles.size() << ")";
    }
  }
  // The core holds the room's tokens for the words, and nothing it could read them from.
  EXPECT_NE(ReadFile(path("core.db")).size() + ReadFile(path("core.db-wal")).size(), 0u);
  const std::map<std::int64_t, std::int64_t> counts = TokensPerActivity();
  EXPECT_EQ(counts.at(post->seq), 8);
  // indexerd's own database holds no word either, and its log no word.
  for (const fs::path& file : {path("indexer.db"), path("indexer.db-wal"), path("indexerd.log")}) {
    const std::string bytes = ReadFile(file);
    for (const std::string& needle : needles) {
      EXPECT_EQ(bytes.find(needle), std::string::npos) << file.filename();
    }
  }
}

TEST_F(IndexerdTest, ExitsWithTheStatusOfItsErrorAndHealthTellsTheTruth) {
  // The KMS gone: /health says so (503), and the stream stays connected.
  kmsd_.Stop(SIGKILL);
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  HttpAnswer health;
  while (std::chrono::steady_clock::now() < deadline) {
    health = Https(indexerd_.port(), "GET", "/health");
    if (health.status == 503) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_EQ(health.status, 503) << health.body;
  Object::Ptr json = Parse(health.body);
  ASSERT_TRUE(json);
  EXPECT_FALSE(json->getObject("kms")->getValue<bool>("ok"));
  // A bad setting is EX_USAGE before anything starts; a KMS that cannot be reached at start is
  // EX_UNAVAILABLE.
  EXPECT_EQ(indexerd_.Stop(SIGTERM), 0);
  DaemonProcess no_kms;
  EXPECT_FALSE(no_kms.Start({INDEXERD_PATH,
                             {"--config", path("indexer.ini").string()},
                             {},
                             path("no-kms.log").string(),
                             path("no-kms.port").string()}));
  EXPECT_NE(no_kms.error().find("exit status 69"), std::string::npos) << no_kms.error();
  std::ofstream(path("bad.ini")) << ReadFile(path("indexer.ini")) << "[indexer]\nlangauge = x\n";
  DaemonProcess bad;
  EXPECT_FALSE(bad.Start({INDEXERD_PATH,
                          {"--config", path("bad.ini").string()},
                          {},
                          path("bad.log").string(),
                          path("bad.port").string()}));
  EXPECT_NE(bad.error().find("exit status 64"), std::string::npos) << bad.error();
  EXPECT_NE(ReadFile(path("bad.log")).find("langauge"), std::string::npos);
}

}  // namespace
}  // namespace strongroom::indexer
