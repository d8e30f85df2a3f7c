// The client SDK against the real thing: `cored` and `kmsd` as child processes on 127.0.0.1 (port
// 0, --port-file), kmsd on a SoftHSM2 token and attached to cored's relay, TLS and the KMS's
// identity chain from a throwaway CA made by the openssl tool and `kmsctl hsm certify-identity`,
// tokens from `strongroom-idp` keys. Every test runs twice: with the KMS reached through the core's
// relay, and directly over HTTPS.
//
// What is checked: a conversation created by one user is read by another (text, title, a file);
// a non-member gets nothing from the core or the KMS; adding a member authorizes them for the
// history, removing one rotates the conversation so they cannot read what follows; a compliance
// officer reads on a user's behalf and one of another organization cannot; the realtime stream
// delivers what the SDK decrypts. Waits are bounded and fail with a message; nothing is timed.
#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/Pipe.h>
#include <Poco/PipeStream.h>
#include <Poco/Process.h>
#include <Poco/StreamCopier.h>
#include <gtest/gtest.h>
#include <openssl/rand.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "../support/daemon_process.h"
#include "../support/softhsm_sandbox.h"
#include "../support/test_dir.h"
#include "../support/tool_steps.h"
#include "strongroom/client/conversation.h"
#include "strongroom/client/core_client.h"
#include "strongroom/client/https_transport.h"
#include "strongroom/client/kms_context.h"
#include "strongroom/common/database.h"
#include "strongroom/common/jwt.h"
#include "strongroom/kms/kms_store.h"
#include "strongroom/kms/org_policy.h"

namespace strongroom::client {
namespace {

using strongroom::testing::DaemonProcess;
using strongroom::testing::InitTestIdps;
using strongroom::testing::kSoftHsmModule;
using strongroom::testing::MakeTestTls;
using strongroom::testing::SoftHsmSandbox;
using strongroom::testing::TestDir;
using strongroom::testing::ToolSteps;
namespace fs = std::filesystem;

constexpr char kKmsHost[] = "kms.acme.test";
constexpr char kCluster[] = "kms://kms.acme.test";
constexpr char kAlice[] = "alice@acme.test";
constexpr char kBob[] = "bob@acme.test";
constexpr char kCarol[] = "carol@acme.test";
constexpr char kOfficer[] = "officer@acme.test";
constexpr char kGlobexOfficer[] = "officer@globex.test";
constexpr auto kPatience = std::chrono::seconds(60);

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string RandomBytes(std::size_t size) {
  std::string bytes(size, '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(bytes.data()), static_cast<int>(size));
  return bytes;
}

// What every test shares: a CA, the TLS certificate of both daemons (127.0.0.1), identity
// providers for acme and globex, and a SoftHSM2 token with both organizations' root keys and the
// KMS's identity key certified for kms.acme.test.
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
  std::string jwks(const std::string& org) const {
    return (dir_ / ("idp-" + org) / "jwks.json").string();
  }
  const std::string& hsm_section() const { return hsm_section_; }
  const std::string& error() const { return steps_.error(); }

  std::string Token(const std::string& user, const std::string& audience) const {
    const std::string org = user.substr(user.find('@') + 1, user.find('.') - user.find('@') - 1);
    const std::string key_text = ReadFile(dir_ / ("idp-" + org) / "signing-key.jwk");
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
    dir_ = fs::temp_directory_path() / ("sr-sdk-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const std::string d = dir_.string();
    MakeTestTls(steps_, d, "Strongroom SDK test CA");
    InitTestIdps(steps_, d, IDP_PATH, {"acme", "globex"});
    const std::string label = SoftHsmSandbox::Get().CreateToken(kSoftHsmModule, "sdk");
    hsm_section_ = "[hsm]\ntokens = primary\nnode_id = test\n[hsm.primary]\nuri = " +
                   SoftHsmSandbox::Get().Uri(kSoftHsmModule, label) + "\n";
    const std::string hsm_ini = (dir_ / "hsm.ini").string();
    std::ofstream(hsm_ini) << hsm_section_;
    const Poco::Process::Env env{{"SOFTHSM2_CONF", SoftHsmSandbox::Get().dir() + "/softhsm2.conf"}};
    for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
             {"--config", hsm_ini, "hsm", "init-root", "--org", "acme"},
             {"--config", hsm_ini, "hsm", "init-root", "--org", "globex"},
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

// GET /health on cored, or GET /kms/info on kmsd: whether the daemon serves.
bool Serves(std::uint16_t port, const std::string& path) {
  try {
    Poco::Net::Context::Params params;
    params.caLocation = env().ca();
    params.verificationMode = Poco::Net::Context::VERIFY_STRICT;
    Poco::Net::Context::Ptr context(
        new Poco::Net::Context(Poco::Net::Context::TLS_CLIENT_USE, params));
    Poco::Net::HTTPSClientSession session("127.0.0.1", port, context);
    session.setTimeout(Poco::Timespan(10, 0));
    Poco::Net::HTTPRequest request("GET", path, Poco::Net::HTTPMessage::HTTP_1_1);
    session.sendRequest(request);
    Poco::Net::HTTPResponse response;
    std::istream& in = session.receiveResponse(response);
    std::string ignored;
    Poco::StreamCopier::copyToString(in, ignored);
    return response.getStatus() == Poco::Net::HTTPResponse::HTTP_OK;
  } catch (const Poco::Exception&) {
    return false;
  }
}

// One user's SDK: the core client, the KMS context (relay or direct) and the conversations layer.
struct User {
  std::string id;
  std::unique_ptr<CoreClient> core;
  std::unique_ptr<KmsContext> kms;
  std::unique_ptr<Conversations> sdk;
};

enum class Route { kRelay, kDirect };

class SdkEndToEndTest : public ::testing::TestWithParam<Route> {
 protected:
  void SetUp() override {
    signal(SIGPIPE, SIG_IGN);
    ASSERT_TRUE(env().error().empty()) << env().error();
    dir_ = std::make_unique<TestDir>();
    fs::create_directories(path("files"));
    relay_token_ = path("relay.token").string();
    std::ofstream(relay_token_)
        << "6a0f3c2e9b1d4a5f8e7c6b5a49382716a0f3c2e9b1d4a5f8e7c6b5a493827160\n";
    ::chmod(relay_token_.c_str(), 0600);
    ASSERT_TRUE(StartCored());
    ASSERT_TRUE(PrepareKmsDatabase());
    ASSERT_TRUE(StartKmsd());
    ASSERT_TRUE(WaitForRelay());
    kms_info_json_ = FetchKmsInfo();
    ASSERT_FALSE(kms_info_json_.empty());
  }

  void TearDown() override {
    users_.clear();
    kmsd_.Stop(SIGKILL);
    cored_.Stop(SIGKILL);
    // No request ended in an exception cored did not expect (a 500).
    const std::string log = ReadFile(path("cored.log"));
    EXPECT_EQ(log.find("a request failed"), std::string::npos) << log;
    if (HasFailure()) {
      std::cerr << "--- cored's log ---\n"
                << cored_.LogTail(4000) << "\n--- kmsd's log ---\n"
                << kmsd_.LogTail(4000) << "\n";
    }
    dir_.reset();
  }

  fs::path path(const std::string& name) const { return *dir_ / name; }

  bool StartCored() {
    std::ofstream ini(path("core.ini"));
    ini << "[core]\ndatabase = " << path("core.db").string()
        << "\nfiles_dir = " << path("files").string()
        << "\nlisten = 127.0.0.1:0\ntls_cert = " << (env().dir() / "tls.pem").string()
        << "\ntls_key = " << (env().dir() / "tls.key").string()
        << "\nmax_connections = 64\nmax_file_mb = 4\nrate_per_s = 100000\nrate_burst = 100000\n"
        << "relays = kms1\n[relay.kms1]\ncluster = " << kCluster
        << "\ntoken_file = " << relay_token_ << "\n[jwt]\nissuers = acme, globex\nskew_s = 0\n"
        << "[jwt.acme]\nissuer = https://idp.acme.test\norg = acme\nsubject_domains = acme.test\n"
        << "jwks = " << env().jwks("acme")
        << "\n[jwt.globex]\nissuer = https://idp.globex.test\norg = globex\n"
        << "subject_domains = globex.test\njwks = " << env().jwks("globex") << "\n";
    ini.close();
    const bool started = cored_.Start({CORED_PATH,
                                       {"--config", path("core.ini").string()},
                                       {},
                                       path("cored.log").string(),
                                       path("cored.port").string()},
                                      [](std::uint16_t port) { return Serves(port, "/health"); });
    EXPECT_TRUE(started) << cored_.error();
    return started;
  }

  // The organizations' policies, written before kmsd starts: acme and globex each have a
  // compliance officer.
  bool PrepareKmsDatabase() {
    auto db = Database::OpenSqlite(path("kms.db").string(), kms::KmsStore::Migrations());
    EXPECT_TRUE(db.ok()) << db.error().ToString();
    if (!db.ok()) return false;
    for (const auto& [org, officer] : std::vector<std::pair<std::string, std::string>>{
             {"acme", kOfficer}, {"globex", kGlobexOfficer}}) {
      kms::OrgPolicy policy;
      policy.org = org;
      policy.compliance_officers = {officer};
      Status put = (*db)->InTransaction(
          [&](Poco::Data::Session& s) { return kms::PolicyStore::Put(s, policy, 1); });
      EXPECT_TRUE(put.ok()) << put.error().ToString();
      if (!put.ok()) return false;
    }
    return true;
  }

  bool StartKmsd() {
    const std::string d = env().dir().string();
    std::ofstream(path("kms.ini"))
        << env().hsm_section() << "[kms]\nhost = " << kKmsHost
        << "\ndatabase = " << path("kms.db").string() << "\nlisten = 127.0.0.1:0\ntls_cert = " << d
        << "/tls.pem"
        << "\ntls_key = " << d << "/tls.key\nidentity_chain = " << d << "/identity.pem\n"
        << "[relay]\nurl = https://127.0.0.1:" << cored_.port() << "\nca_file = " << d
        << "/ca.pem\ntoken_file = " << relay_token_ << "\nconnections = 4\n"
        << "[jwt]\nissuers = acme, globex\nskew_s = 0\n"
        << "[jwt.acme]\nissuer = https://idp.acme.test\norg = acme\nsubject_domains = acme.test\n"
        << "jwks = " << env().jwks("acme") << "\n[jwt.globex]\nissuer = https://idp.globex.test\n"
        << "org = globex\nsubject_domains = globex.test\njwks = " << env().jwks("globex") << "\n";
    const bool started =
        kmsd_.Start({KMSD_PATH,
                     {"--config", path("kms.ini").string()},
                     {{"SOFTHSM2_CONF", SoftHsmSandbox::Get().dir() + "/softhsm2.conf"}},
                     path("kmsd.log").string(),
                     path("kmsd.port").string()},
                    [](std::uint16_t port) { return Serves(port, "/kms/info"); });
    EXPECT_TRUE(started) << kmsd_.error();
    return started;
  }

  // Bounded wait until a message relayed through cored reaches the KMS (cored stops answering
  // 503 "not connected").
  bool WaitForRelay() {
    auto core = CoreClient::New({"https://127.0.0.1:" + std::to_string(cored_.port()), env().ca(),
                                 StaticToken(env().Token(kAlice, "core"))});
    EXPECT_TRUE(core.ok());
    if (!core.ok()) return false;
    const auto deadline = std::chrono::steady_clock::now() + kPatience;
    while (std::chrono::steady_clock::now() < deadline) {
      auto answer = (*core)->RelayKmsMessage(kCluster, "e30.e30.e30");
      if (answer.ok() && answer->http_status != 503) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ADD_FAILURE() << "kmsd did not attach to cored's relay within " << kPatience.count() << " s";
    return false;
  }

  // The KMS's /kms/info document, which a relay client has in its configuration.
  std::string FetchKmsInfo() {
    auto https = HttpsTransport::New({KmsUrl(), env().ca()});
    EXPECT_TRUE(https.ok());
    if (!https.ok()) return "";
    auto info = (*https)->GetInfo();
    EXPECT_TRUE(info.ok()) << info.error().ToString();
    return info.ok() ? *info : "";
  }

  std::string CoreUrl() const { return "https://127.0.0.1:" + std::to_string(cored_.port()); }
  std::string KmsUrl() const { return "https://127.0.0.1:" + std::to_string(kmsd_.port()); }

  // A user's SDK over the route under test; null (with a failure) when it cannot be made.
  User* As(const std::string& user_id) {
    auto user = std::make_unique<User>();
    user->id = user_id;
    auto core = CoreClient::New({CoreUrl(), env().ca(), StaticToken(env().Token(user_id, "core"))});
    EXPECT_TRUE(core.ok()) << core.error().ToString();
    if (!core.ok()) return nullptr;
    user->core = std::move(core).value();
    KmsContextOptions options;
    options.client_id = "sdk-test-" + user_id.substr(0, user_id.find('@'));
    options.kms_token = StaticToken(env().Token(user_id, "kms"));
    options.trust = {kCluster, env().ca()};
    Result<std::unique_ptr<KmsContext>> kms =
        GetParam() == Route::kRelay
            ? KmsContext::OverRelay(
                  options, kms_info_json_,
                  {CoreUrl(), env().ca(), kCluster, StaticToken(env().Token(user_id, "core"))})
            : KmsContext::OverHttps(options, {KmsUrl(), env().ca()});
    EXPECT_TRUE(kms.ok()) << kms.error().ToString();
    if (!kms.ok()) return nullptr;
    user->kms = std::move(kms).value();
    ConversationsOptions sdk_options;
    sdk_options.user_id = user_id;
    sdk_options.pool.target = 4;
    auto sdk = Conversations::New(*user->core, *user->kms, sdk_options);
    EXPECT_TRUE(sdk.ok()) << sdk.error().ToString();
    if (!sdk.ok()) return nullptr;
    user->sdk = std::move(sdk).value();
    users_.push_back(std::move(user));
    return users_.back().get();
  }

  // The texts of a page's posts, in order ("<error>" where one did not decrypt).
  static std::vector<std::string> Texts(const MessagePage& page) {
    std::vector<std::string> texts;
    for (const Message& message : page.messages) {
      if (message.activity.verb != "post") continue;
      texts.push_back(message.text ? *message.text : "<" + message.error->ToString() + ">");
    }
    return texts;
  }

  std::unique_ptr<TestDir> dir_;
  DaemonProcess cored_, kmsd_;
  std::string relay_token_;
  std::string kms_info_json_;
  std::vector<std::unique_ptr<User>> users_;
};

TEST_P(SdkEndToEndTest, AConversationCreatedByOneUserIsReadByTheOther) {
  User* alice = As(kAlice);
  User* bob = As(kBob);
  ASSERT_TRUE(alice && bob);
  auto created = alice->sdk->Create("Vault codes", {kBob});
  ASSERT_TRUE(created.ok()) << created.error().ToString();
  EXPECT_EQ(created->kms_resource_uri.rfind(std::string(kCluster) + "/resources/", 0), 0u);
  EXPECT_EQ(created->participants, (std::vector<std::string>{kAlice, kBob}));
  EXPECT_EQ(created->encrypted_title.find("Vault"), std::string::npos);

  auto sent = alice->sdk->Send(created->id, "Bob, the code changes on Monday.");
  ASSERT_TRUE(sent.ok()) << sent.error().ToString();
  EXPECT_EQ(sent->verb, "post");
  EXPECT_EQ(sent->key_uri, created->current_key_uri);
  EXPECT_EQ(sent->content.find("Monday"), std::string::npos);  // the core holds ciphertext

  // Bob knows nothing yet: he finds the conversation at the core, the key at the KMS.
  auto listed = bob->core->ListConversations();
  ASSERT_TRUE(listed.ok()) << listed.error().ToString();
  ASSERT_EQ(listed->items.size(), 1u);
  auto title = bob->sdk->Title(listed->items[0]);
  ASSERT_TRUE(title.ok()) << title.error().ToString();
  EXPECT_EQ(*title, "Vault codes");
  auto read = bob->sdk->Read(created->id);
  ASSERT_TRUE(read.ok()) << read.error().ToString();
  ASSERT_EQ(read->messages.size(), 2u);
  EXPECT_EQ(read->messages[0].activity.verb, "create");
  ASSERT_TRUE(read->messages[0].text) << read->messages[0].error->ToString();
  EXPECT_EQ(*read->messages[0].text, "Vault codes");
  EXPECT_EQ(Texts(*read), std::vector<std::string>{"Bob, the code changes on Monday."});

  ASSERT_TRUE(bob->sdk->Send(created->id, "Thanks, Alice.").ok());
  auto back = alice->sdk->Read(created->id);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(Texts(*back),
            (std::vector<std::string>{"Bob, the code changes on Monday.", "Thanks, Alice."}));

  // A file: encrypted while it uploads, the reference sealed in a share.
  const std::string file_bytes = RandomBytes(300 * 1024 + 11);
  const std::string file_path = path("plans.pdf").string();
  std::ofstream(file_path, std::ios::binary) << file_bytes;
  std::uint64_t progress_done = 0;
  auto shared = alice->sdk->SendFile(
      created->id, file_path, [&](std::uint64_t done, std::uint64_t) { progress_done = done; });
  ASSERT_TRUE(shared.ok()) << shared.error().ToString();
  EXPECT_EQ(shared->verb, "share");
  ASSERT_EQ(shared->file_ids.size(), 1u);
  EXPECT_EQ(progress_done, file_bytes.size());
  // The blob at the core is not the file.
  const std::string stored = ReadFile(path("files") / shared->file_ids[0]);
  EXPECT_EQ(stored.size(), file_bytes.size());
  EXPECT_EQ(stored.find(file_bytes.substr(1000, 64)), std::string::npos);
  auto with_file = bob->sdk->Read(created->id);
  ASSERT_TRUE(with_file.ok());
  const Message& share = with_file->messages.back();
  ASSERT_TRUE(share.file) << (share.error ? share.error->ToString() : "no reference");
  EXPECT_EQ(share.file->name, "plans.pdf");
  EXPECT_EQ(share.file->size, file_bytes.size());
  const std::string out_path = path("received.pdf").string();
  Status got = bob->sdk->GetFile(created->id, *share.file, out_path);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_TRUE(ReadFile(out_path) == file_bytes);
  struct stat info {};
  ASSERT_EQ(stat(out_path.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
}

TEST_P(SdkEndToEndTest, ANonMemberGetsNothingFromTheCoreOrTheKms) {
  User* alice = As(kAlice);
  User* carol = As(kCarol);
  ASSERT_TRUE(alice && carol);
  auto created = alice->sdk->Create("", {kBob});
  ASSERT_TRUE(created.ok()) << created.error().ToString();
  ASSERT_TRUE(alice->sdk->Send(created->id, "members only").ok());

  auto at_core = carol->sdk->Read(created->id);
  ASSERT_FALSE(at_core.ok());
  EXPECT_EQ(at_core.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(CoreErrorCode(at_core.error()), "not_found");
  auto at_kms = carol->kms->RetrieveKey(created->current_key_uri);
  ASSERT_FALSE(at_kms.ok());
  EXPECT_EQ(at_kms.error().code(), ErrorCode::kPermissionDenied);
}

TEST_P(SdkEndToEndTest, AddingAuthorizesForHistoryAndRemovingRotatesThemOut) {
  User* alice = As(kAlice);
  User* bob = As(kBob);
  User* carol = As(kCarol);
  ASSERT_TRUE(alice && bob && carol);
  auto created = alice->sdk->Create("Board", {kBob});
  ASSERT_TRUE(created.ok()) << created.error().ToString();
  ASSERT_TRUE(alice->sdk->Send(created->id, "before carol").ok());

  auto added = alice->sdk->AddMember(created->id, kCarol);
  ASSERT_TRUE(added.ok()) << added.error().ToString();
  EXPECT_EQ(added->verb, "add");
  auto carol_reads = carol->sdk->Read(created->id);
  ASSERT_TRUE(carol_reads.ok()) << carol_reads.error().ToString();
  EXPECT_EQ(Texts(*carol_reads), std::vector<std::string>{"before carol"});  // history too

  auto bob_before = bob->sdk->Read(created->id);  // bob caches the first key
  ASSERT_TRUE(bob_before.ok());
  auto removed = alice->sdk->RemoveMember(created->id, kBob);
  ASSERT_TRUE(removed.ok()) << removed.error().ToString();
  EXPECT_EQ(removed->removed.verb, "remove");
  ASSERT_TRUE(removed->rotated);
  EXPECT_EQ(removed->rotated->verb, "rotate");
  EXPECT_NE(removed->rotated->key_uri, created->current_key_uri);

  auto after = alice->sdk->Send(created->id, "after bob");
  ASSERT_TRUE(after.ok()) << after.error().ToString();
  EXPECT_EQ(after->key_uri, removed->rotated->key_uri);
  auto carol_after = carol->sdk->Read(created->id);
  ASSERT_TRUE(carol_after.ok());
  EXPECT_EQ(Texts(*carol_after), (std::vector<std::string>{"before carol", "after bob"}));

  // Bob: the core shows him nothing more, and the KMS refuses him the new key, so even the
  // ciphertext (here as alice's client saw it) stays closed to him.
  EXPECT_FALSE(bob->sdk->Read(created->id).ok());
  auto new_key = bob->kms->RetrieveKey(after->key_uri);
  ASSERT_FALSE(new_key.ok());
  EXPECT_EQ(new_key.error().code(), ErrorCode::kPermissionDenied);
  Message for_bob = bob->sdk->Decrypt(*after);
  EXPECT_FALSE(for_bob.text);
  ASSERT_TRUE(for_bob.error);
  // A post under the old key is refused by the core; the SDK moves to the current key by itself.
  User* alice_again = As(kAlice);  // a second device whose view of the conversation is old
  ASSERT_TRUE(alice_again);
  ASSERT_TRUE(alice_again->sdk->Get(created->id).ok());
  auto late = alice->sdk->Rotate(created->id);
  ASSERT_TRUE(late.ok()) << late.error().ToString();
  auto from_old_view = alice_again->sdk->Send(created->id, "from the second device");
  ASSERT_TRUE(from_old_view.ok()) << from_old_view.error().ToString();
  EXPECT_EQ(from_old_view->key_uri, late->key_uri);
}

TEST_P(SdkEndToEndTest, AComplianceOfficerReadsOnAUsersBehalfAndAnotherOrgsCannot) {
  User* alice = As(kAlice);
  User* officer = As(kOfficer);
  User* outsider = As(kGlobexOfficer);
  ASSERT_TRUE(alice && officer && outsider);
  auto created = alice->sdk->Create("Deal", {kBob});
  ASSERT_TRUE(created.ok()) << created.error().ToString();
  ASSERT_TRUE(alice->sdk->Send(created->id, "the price is 42").ok());
  // The activities as the core stores them (here fetched by alice's client; an export would do).
  auto history = alice->core->History(created->id);
  ASSERT_TRUE(history.ok());

  auto read = officer->sdk->ReadOnBehalfOf(kAlice, history->items);
  ASSERT_TRUE(read.ok()) << read.error().ToString();
  ASSERT_EQ(read->size(), 2u);
  ASSERT_TRUE((*read)[1].text) << (*read)[1].error->ToString();
  EXPECT_EQ(*(*read)[1].text, "the price is 42");
  // Not for the officer in their own name, and not for another organization's officer.
  EXPECT_FALSE(officer->kms->RetrieveKey(created->current_key_uri).ok());
  auto refused = outsider->sdk->ReadOnBehalfOf(kAlice, history->items);
  ASSERT_TRUE(refused.ok());
  ASSERT_EQ(refused->size(), 2u);
  EXPECT_FALSE((*refused)[1].text);
  ASSERT_TRUE((*refused)[1].error);
  EXPECT_EQ((*refused)[1].error->code(), ErrorCode::kPermissionDenied);
}

TEST_P(SdkEndToEndTest, TheEventStreamDeliversWhatTheSdkDecrypts) {
  User* alice = As(kAlice);
  User* bob = As(kBob);
  ASSERT_TRUE(alice && bob);
  auto stream = bob->core->OpenEvents(0);
  ASSERT_TRUE(stream.ok()) << stream.error().ToString();
  auto created = alice->sdk->Create("Live", {kBob});
  ASSERT_TRUE(created.ok()) << created.error().ToString();
  auto sent = alice->sdk->Send(created->id, "are you there?");
  ASSERT_TRUE(sent.ok());

  std::vector<Activity> events;
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  while (std::chrono::steady_clock::now() < deadline &&
         (events.empty() || events.back().id != sent->id)) {
    auto next = (*stream)->Next(std::chrono::seconds(5));
    ASSERT_TRUE(next.ok()) << next.error().ToString();
    events.insert(events.end(), next->begin(), next->end());
  }
  ASSERT_FALSE(events.empty());
  ASSERT_EQ(events.back().id, sent->id) << "bob never received the post";
  EXPECT_EQ(events.front().verb, "create");
  Message message = bob->sdk->Decrypt(events.back());
  ASSERT_TRUE(message.text) << message.error->ToString();
  EXPECT_EQ(*message.text, "are you there?");
  EXPECT_EQ((*stream)->cursor().value_or(-1), sent->seq);
}

TEST_P(SdkEndToEndTest, AnAuthorEditsAndRetractsAndTheOtherSeesItLiveAndInHistory) {
  User* alice = As(kAlice);
  User* bob = As(kBob);
  ASSERT_TRUE(alice && bob);
  auto created = alice->sdk->Create("Edits", {kBob});
  ASSERT_TRUE(created.ok()) << created.error().ToString();
  auto sent = alice->sdk->Send(created->id, "the meeting is on Mondy");
  ASSERT_TRUE(sent.ok()) << sent.error().ToString();
  auto stream = bob->core->OpenEvents(sent->seq);
  ASSERT_TRUE(stream.ok()) << stream.error().ToString();

  // bob may read alice's message but not change it; nothing changed.
  auto refused = bob->sdk->Edit(created->id, sent->id, "bob's words");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(bob->sdk->Retract(created->id, sent->id).error().code(), ErrorCode::kPermissionDenied);

  auto edited = alice->sdk->Edit(created->id, sent->id, "the meeting is on Monday");
  ASSERT_TRUE(edited.ok()) << edited.error().ToString();
  EXPECT_EQ(edited->verb, "edit");
  EXPECT_EQ(edited->target_id, sent->id);
  // Live: bob's stream carries the edit, which he decrypts and tells apart from a new message.
  std::vector<Activity> events;
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  while (std::chrono::steady_clock::now() < deadline && events.empty()) {
    auto next = (*stream)->Next(std::chrono::seconds(5));
    ASSERT_TRUE(next.ok()) << next.error().ToString();
    events.insert(events.end(), next->begin(), next->end());
  }
  ASSERT_EQ(events.size(), 1u) << "bob did not receive the edit alone";
  EXPECT_EQ(events[0].id, edited->id);
  EXPECT_EQ(events[0].target_seq, sent->seq);
  Message live = bob->sdk->Decrypt(events[0]);
  ASSERT_TRUE(live.text) << live.error->ToString();
  EXPECT_EQ(*live.text, "the meeting is on Monday");
  // History: the post carries the new text and says it was edited.
  auto page = bob->sdk->Read(created->id);
  ASSERT_TRUE(page.ok()) << page.error().ToString();
  EXPECT_EQ(Texts(*page), (std::vector<std::string>{"the meeting is on Monday"}));
  auto post = std::find_if(page->messages.begin(), page->messages.end(),
                           [&](const Message& m) { return m.activity.id == sent->id; });
  ASSERT_NE(post, page->messages.end());
  EXPECT_EQ(post->activity.edited_ms, edited->published_ms);

  auto retracted = alice->sdk->Retract(created->id, sent->id);
  ASSERT_TRUE(retracted.ok()) << retracted.error().ToString();
  EXPECT_EQ(retracted->verb, "retract");
  auto again = alice->sdk->Retract(created->id, sent->id);
  ASSERT_TRUE(again.ok()) << again.error().ToString();
  EXPECT_EQ(again->id, retracted->id);
  events.clear();
  while (std::chrono::steady_clock::now() < deadline && events.empty()) {
    auto next = (*stream)->Next(std::chrono::seconds(5));
    ASSERT_TRUE(next.ok()) << next.error().ToString();
    events.insert(events.end(), next->begin(), next->end());
  }
  ASSERT_EQ(events.size(), 1u) << "bob did not receive the retraction once";
  EXPECT_EQ(events[0].verb, "retract");
  EXPECT_EQ(events[0].target_id, sent->id);
  page = bob->sdk->Read(created->id);
  ASSERT_TRUE(page.ok()) << page.error().ToString();
  for (const Message& m : page->messages) {
    EXPECT_FALSE(m.error) << m.activity.verb << ": " << m.error->ToString();
    EXPECT_FALSE(m.text && m.text->find("meeting") != std::string::npos)
        << "bob still reads the text of " << m.activity.verb << " #" << m.activity.seq;
  }
  post = std::find_if(page->messages.begin(), page->messages.end(),
                      [&](const Message& m) { return m.activity.id == sent->id; });
  ASSERT_NE(post, page->messages.end());
  EXPECT_EQ(post->activity.retracted_ms, retracted->published_ms);
  EXPECT_TRUE(post->activity.content.empty());
  auto late = alice->sdk->Edit(created->id, sent->id, "too late");
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.error().code(), ErrorCode::kFailedPrecondition);
}

INSTANTIATE_TEST_SUITE_P(Routes, SdkEndToEndTest, ::testing::Values(Route::kRelay, Route::kDirect),
                         [](const ::testing::TestParamInfo<Route>& param) {
                           return param.param == Route::kRelay ? "ThroughTheCoreRelay"
                                                               : "DirectHttps";
                         });

}  // namespace
}  // namespace strongroom::client
