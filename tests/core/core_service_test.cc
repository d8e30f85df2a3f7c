#include "strongroom/core/core_service.h"

#include <Poco/Data/RecordSet.h>
#include <Poco/Data/Statement.h>
#include <gtest/gtest.h>
#include <openssl/sha.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "../support/test_dir.h"
#include "../support/test_engines.h"
#include "core_store.h"
#include "index_postings.h"
#include "strongroom/common/jose/base64url.h"
#include "strongroom/common/jose/dir_jwe.h"
#include "strongroom/common/jwt.h"
#include "strongroom/common/sql_statement.h"
#include "validation.h"

namespace strongroom::core {
namespace {

using Poco::Data::Keywords::into;
using Poco::Data::Keywords::now;
using Poco::Data::Keywords::useRef;

constexpr char kKms[] = "kms://kms.acme.test";

std::string KeyUri() { return std::string(kKms) + "/keys/" + internal::NewUuid(); }
std::string ResourceUri() { return std::string(kKms) + "/resources/" + internal::NewUuid(); }

// A real dir/A256GCM JWE under a throwaway key; the core never opens it.
std::string Jwe(const std::string& kid, const std::string& text = "hello") {
  static const std::vector<std::uint8_t> kKey(32, 7);
  return jose::EncryptDir(
             kKey, kid, std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()))
      .value();
}

std::string B64(const std::string& text) { return jose::Base64UrlEncode(text); }
std::string B64(std::size_t n, char fill = 'x') { return B64(std::string(n, fill)); }

// A compact JWE assembled part by part, for shapes EncryptDir would never produce.
std::string Compact(const std::string& header_json, const std::string& encrypted_key,
                    const std::string& iv, const std::string& ciphertext, const std::string& tag) {
  return B64(header_json) + "." + encrypted_key + "." + iv + "." + ciphertext + "." + tag;
}

std::string Header(const std::string& kid) {
  return R"({"alg":"dir","enc":"A256GCM","kid":")" + kid + R"("})";
}

std::vector<std::string> Ids(const std::vector<Activity>& activities) {
  std::vector<std::string> ids;
  for (const Activity& a : activities) ids.push_back(a.id);
  return ids;
}

// The service on a database of the test's: CoreServiceTest runs on both engines, the suites on
// SQLite alone (what SQLite's files, log and query plans show) are CoreServiceSqliteTest.
class CoreServiceFixture : public ::testing::Test {
 protected:
  virtual Database::Engine engine() const = 0;

  void SetUp() override {
    auto where = testing::TestDatabase::New(engine(), dir_ / "core.db");
    ASSERT_TRUE(where.ok()) << where.error().ToString();
    where_ = std::move(where).value();
    Open();
  }

  void Open(CoreServiceConfig config = {}, DatabaseOptions options = {}) {
    auto db = where_.Open(CoreService::Migrations(), CoreService::PostgresMigrations(), options);
    ASSERT_TRUE(db.ok()) << db.error().ToString();
    db_ = std::move(db).value();
    if (config.files_dir.empty()) config.files_dir = (dir_ / "files").string();
    if (config.indexer_user_id.empty()) {
      config.indexer_user_id = indexer_.user_id;
      config.indexer_org = indexer_.org;
    }
    auto service = CoreService::New(config, *db_, [this] { return ++clock_ms_; });
    ASSERT_TRUE(service.ok()) << service.error().ToString();
    service_ = std::move(service).value();
    service_->SetActivityListener([this](const std::vector<CoreService::Committed>& committed) {
      std::lock_guard lock(heard_mutex_);
      ++commits_heard_;
      if (committed.empty()) ++empty_commits_heard_;
      for (const CoreService::Committed& c : committed) {
        heard_.push_back({c.activity, c.recipients});
        heard_orgs_[c.activity.id] = c.conversation_org;
      }
    });
  }

  // The files under `dir`, at any depth, but the nodes' locks (see directory_blob_store.h).
  static std::vector<std::filesystem::path> FilesUnder(const std::filesystem::path& dir) {
    std::vector<std::filesystem::path> found;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
      if (entry.is_regular_file() && entry.path().extension() != ".lock") {
        found.push_back(entry.path());
      }
    }
    return found;
  }

  void Reopen(CoreServiceConfig config = {}, DatabaseOptions options = {}) {
    service_.reset();
    db_.reset();
    Open(std::move(config), options);
  }

  // Pieces of the text of `content` (a JWE's IV, ciphertext and tag), every 1,000 characters: a
  // long one is stored over several pages, each with a header, so the whole would not be found.
  static std::vector<std::string> Pieces(const std::string& content) {
    const std::string text = content.substr(content.find("..") + 2);
    std::vector<std::string> pieces;
    for (std::size_t at = 0; at + 24 <= text.size(); at += 1000)
      pieces.push_back(text.substr(at, 24));
    return pieces;
  }

  // Which of the database's files (core.db, its write-ahead log) hold any of `pieces`.
  std::vector<std::string> FilesHolding(const std::vector<std::string>& pieces) {
    std::vector<std::string> found;
    for (const char* name : {"core.db", "core.db-wal"}) {
      std::ifstream in(dir_ / name, std::ios::binary);
      const std::string bytes((std::istreambuf_iterator<char>(in)), {});
      for (const std::string& piece : pieces) {
        if (bytes.find(piece) != std::string::npos) {
          found.push_back(name);
          break;
        }
      }
    }
    return found;
  }

  Conversation Create(const Caller& creator, const std::vector<std::string>& others,
                      std::string key = "") {
    NewConversation request;
    request.kms_resource_uri = ResourceUri();
    request.key_uri = key.empty() ? KeyUri() : key;
    request.participants = others;
    auto created = service_->CreateConversation(creator, request);
    EXPECT_TRUE(created.ok()) << created.error().ToString();
    return created.ok() ? *created : Conversation{};
  }

  Activity Post(const Caller& sender, const Conversation& c, const std::string& text = "hi") {
    auto current = service_->GetConversation(sender, c.id);
    EXPECT_TRUE(current.ok()) << current.error().ToString();
    NewPost post;
    post.content = Jwe(current.ok() ? current->current_key_uri : c.current_key_uri, text);
    auto posted = service_->PostActivity(sender, c.id, post);
    EXPECT_TRUE(posted.ok()) << posted.error().ToString();
    return posted.ok() ? *posted : Activity{};
  }

  std::int64_t Count(const std::string& table) {
    std::int64_t n = -1;
    Status counted = db_->WithSession([&](Poco::Data::Session& s) -> Status {
      SqlStatement count = Database::Prepare(s, "SELECT COUNT(*) FROM " + table);
      if (count.Next()) n = count.Int(0);
      return OkStatus();
    });
    EXPECT_TRUE(counted.ok()) << counted.error().ToString();
    return n;
  }

  // Every table's row count: what "nothing was stored" compares.
  std::map<std::string, std::int64_t> Counts() {
    std::map<std::string, std::int64_t> counts;
    for (const char* table : {"conversations", "memberships", "conversation_keys", "activities",
                              "files", "index_rooms", "index_postings", "index_sets"}) {
      counts[table] = Count(table);
    }
    counts["index entries"] = Entries();
    return counts;
  }

  // The search index store's entries (a token each, less duplicates within an activity).
  std::int64_t Entries() {
    std::int64_t entries = -1;
    Status counted = db_->WithSession([&](Poco::Data::Session& s) -> Status {
      entries = internal::IndexPostings::Count(s).entries;
      return OkStatus();
    });
    EXPECT_TRUE(counted.ok()) << counted.error().ToString();
    return entries;
  }

  std::string QueryPlan(const std::string& sql) {
    std::string plan;
    Status explained = db_->WithSession([&](Poco::Data::Session& s) -> Status {
      Poco::Data::Statement select(s);
      select << "EXPLAIN QUERY PLAN " + sql;
      // The plan is made when the statement is prepared, whatever the values bound.
      for (char c : sql) {
        if (c == '?') select, Poco::Data::Keywords::bind(Poco::Int64{0});
      }
      select.execute();
      Poco::Data::RecordSet rows(select);
      for (bool row = rows.moveFirst(); row; row = rows.moveNext()) {
        plan += rows["detail"].convert<std::string>() + "\n";
      }
      return OkStatus();
    });
    EXPECT_TRUE(explained.ok()) << explained.error().ToString();
    return plan;
  }

  // The activities of the conversation that a search for `tokens` finds, newest first, read
  // `page` at a time through next_before.
  std::vector<std::string> Match(const Conversation& c, const std::vector<std::string>& tokens,
                                 std::size_t page = kDefaultPageSize) {
    SearchQuery query;
    query.queries = {{c.id, tokens}};
    query.limit = page;
    std::vector<std::string> ids;
    for (;;) {
      auto found = service_->MatchTokens(indexer_, query);
      EXPECT_TRUE(found.ok()) << found.error().ToString();
      if (!found.ok()) break;
      for (const IndexMatch& m : found->items) ids.push_back(m.activity_id);
      if (!found->next_before) break;
      query.before = found->next_before;
    }
    return ids;
  }

  // A token (base64url) whose stored key has `bucket` and is none of `taken`'s, found by trying
  // names in turn (1 in 256 has the bucket).
  static std::string TokenInBucket(std::uint8_t bucket, const std::string& name,
                                   std::set<internal::IndexKey>* taken = nullptr) {
    for (int i = 0;; ++i) {
      std::string token = name + std::to_string(i);
      const internal::IndexKey key = internal::IndexKey::Of(token);
      if (key.bucket != bucket) continue;
      if (taken != nullptr && !taken->insert(key).second) continue;
      return token;
    }
  }

  // The stored entries of the chunk of `bucket` that holds the activity at `seq`.
  std::string ChunkBytes(const std::string& conversation_id, std::int64_t seq,
                         std::uint8_t bucket) {
    std::string bytes;
    Status read = db_->WithSession([&](Poco::Data::Session& s) -> Status {
      SqlStatement room = Database::Prepare(s, internal::IndexPostings::kRoomSql);
      room.Bind(conversation_id);
      if (!room.Next()) return OkStatus();
      SqlStatement chunk = Database::Prepare(s, internal::IndexPostings::kChunkAtOrBelowSql);
      chunk.Bind(room.Int(0)).Bind(std::int64_t{bucket}).Bind(seq);
      if (chunk.Next()) {
        const std::span<const std::uint8_t> blob = chunk.Blob(1);
        bytes.assign(blob.begin(), blob.end());
      }
      return OkStatus();
    });
    EXPECT_TRUE(read.ok()) << read.error().ToString();
    return bytes;
  }

  std::vector<internal::IndexKey> EntriesOf(const Activity& a) {
    std::vector<internal::IndexKey> keys;
    Status read = db_->WithSession([&](Poco::Data::Session& s) -> Status {
      keys = internal::IndexPostings::EntriesOf(s, a.conversation_id, a.seq);
      return OkStatus();
    });
    EXPECT_TRUE(read.ok()) << read.error().ToString();
    return keys;
  }

  static std::vector<internal::IndexKey> KeysOf(const std::vector<std::string>& tokens) {
    std::set<internal::IndexKey> keys;
    for (const std::string& token : tokens) keys.insert(internal::IndexKey::Of(token));
    return {keys.begin(), keys.end()};
  }

  std::vector<std::pair<Activity, std::vector<std::string>>> Heard() {
    std::lock_guard lock(heard_mutex_);
    return heard_;
  }

  testing::TestDir dir_;
  testing::TestDatabase where_;
  std::unique_ptr<Database> db_;
  std::unique_ptr<CoreService> service_;
  std::atomic<std::int64_t> clock_ms_{1700000000000};
  std::mutex heard_mutex_;
  std::vector<std::pair<Activity, std::vector<std::string>>> heard_;
  std::map<std::string, std::string> heard_orgs_;  // activity id -> Committed::conversation_org
  std::size_t commits_heard_ = 0;                  // listener calls: one per commit
  std::size_t empty_commits_heard_ = 0;            // calls without an activity (never expected)

  const Caller alice_{"alice@acme.test", "acme"};
  const Caller bob_{"bob@acme.test", "acme"};
  const Caller carol_{"carol@acme.test", "acme"};
  const Caller mallory_{"mallory@evil.test", "evil"};
  const Caller indexer_{"indexer", "acme"};
};

class CoreServiceTest : public CoreServiceFixture,
                        public ::testing::WithParamInterface<Database::Engine> {
 protected:
  Database::Engine engine() const override { return GetParam(); }
};

INSTANTIATE_TEST_SUITE_P(Engines, CoreServiceTest, testing::kBothEngines, testing::EngineName);

class CoreServiceSqliteTest : public CoreServiceFixture {
 protected:
  Database::Engine engine() const override { return Database::Engine::kSqlite; }
};

// --- content checks -------------------------------------------------------------------------

TEST(CheckContentJweTest, AcceptsDirA256GcmAndReturnsTheKid) {
  const std::string kid = KeyUri();
  auto checked = CheckContentJwe(Jwe(kid));
  ASSERT_TRUE(checked.ok()) << checked.error().ToString();
  EXPECT_EQ(*checked, kid);
}

TEST(CheckContentJweTest, RefusesEveryOtherShape) {
  const std::string kid = KeyUri();
  const std::string iv = B64(12), ct = B64(5), tag = B64(16);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"empty", ""},
      {"four parts", B64(Header(kid)) + ".." + iv + "." + ct},
      {"six parts", Compact(Header(kid), "", iv, ct, tag) + "."},
      {"alg",
       Compact(R"({"alg":"A256KW","enc":"A256GCM","kid":")" + kid + R"("})", "", iv, ct, tag)},
      {"enc", Compact(R"({"alg":"dir","enc":"A128GCM","kid":")" + kid + R"("})", "", iv, ct, tag)},
      {"no kid", Compact(R"({"alg":"dir","enc":"A256GCM"})", "", iv, ct, tag)},
      {"empty kid", Compact(Header(""), "", iv, ct, tag)},
      {"kid not a string", Compact(R"({"alg":"dir","enc":"A256GCM","kid":7})", "", iv, ct, tag)},
      {"long kid", Compact(Header(std::string(kMaxUriBytes + 1, 'k')), "", iv, ct, tag)},
      {"zip", Compact(R"({"alg":"dir","enc":"A256GCM","zip":"DEF","kid":")" + kid + R"("})", "", iv,
                      ct, tag)},
      {"crit", Compact(R"({"alg":"dir","enc":"A256GCM","crit":["x"],"x":1,"kid":")" + kid + R"("})",
                       "", iv, ct, tag)},
      {"duplicate member",
       Compact(R"({"alg":"dir","alg":"dir","enc":"A256GCM","kid":")" + kid + R"("})", "", iv, ct,
               tag)},
      {"header not JSON", Compact("{alg:dir}", "", iv, ct, tag)},
      {"encrypted key", Compact(Header(kid), B64(32), iv, ct, tag)},
      {"short IV", Compact(Header(kid), "", B64(11), ct, tag)},
      {"long IV", Compact(Header(kid), "", B64(16), ct, tag)},
      {"empty ciphertext", Compact(Header(kid), "", iv, "", tag)},
      {"short tag", Compact(Header(kid), "", iv, ct, B64(15))},
      // "eHg" is "xx"; "eHh" decodes to the same bytes with non-zero trailing bits.
      {"non-canonical", Compact(Header(kid), "", iv, "eHh", tag)},
      {"padding", Compact(Header(kid), "", iv, "eHg=", tag)},
      {"standard base64", Compact(Header(kid), "", iv, "a+b/", tag)},
  };
  for (const auto& [name, jwe] : cases) {
    auto checked = CheckContentJwe(jwe);
    ASSERT_FALSE(checked.ok()) << name;
    EXPECT_EQ(checked.error().code(), ErrorCode::kInvalidArgument) << name;
  }
}

TEST(ValidationTest, UserIdsAreBoundedTextWithoutControlCharacters) {
  EXPECT_TRUE(internal::CheckUserId("alice@acme.test", "user").ok());
  EXPECT_TRUE(internal::CheckUserId("zoë ünïcode", "user").ok());
  EXPECT_TRUE(internal::CheckUserId(std::string(kMaxUserIdBytes, 'a'), "user").ok());
  for (const std::string& bad :
       {std::string(), std::string(kMaxUserIdBytes + 1, 'a'), std::string("a\nb"),
        std::string("a\0b", 3), std::string("a\x7f"), std::string("\xc3"), std::string("\xc2\x85"),
        std::string("\xed\xa0\x80"), std::string("\xc0\xaf")}) {
    EXPECT_FALSE(internal::CheckUserId(bad, "user").ok()) << bad;
  }
}

TEST(ValidationTest, KmsUrlsNameAResourceOrKeyByUuid) {
  const std::string id = internal::NewUuid();
  auto ok = internal::CheckKmsUri("kms://kms.acme.test:8443/keys/" + id, "keys", "key");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, "kms://kms.acme.test:8443");
  for (const std::string& bad : std::vector<std::string>{
           "kms://kms.acme.test/resources/" + id, "https://kms.acme.test/keys/" + id,
           "kms:///keys/" + id, "kms://kms acme/keys/" + id,
           "kms://kms.acme.test/keys/" + id + "/x", "kms://kms.acme.test/keys/" + id + "?authId=x",
           "kms://kms.acme.test/keys/not-a-uuid",
           "kms://kms.acme.test/keys/ABCDEF01-2345-4789-8abc-def012345678",
           // One spelling only: conversations compare these URLs as strings.
           "kms://KMS.acme.test/keys/" + id, "KMS://kms.acme.test/keys/" + id,
           "kms://kms.acme.test/keys/%" +
               internal::Hex(reinterpret_cast<const unsigned char*>(id.data()), 1) + id.substr(1),
           "kms://kms.acme.test/keys/" + id + "%",
           "kms://" + std::string(kMaxUriBytes, 'h') + "/keys/" + id}) {
    EXPECT_FALSE(internal::CheckKmsUri(bad, "keys", "key").ok()) << bad;
  }
}

// --- conversations --------------------------------------------------------------------------

TEST_P(CoreServiceTest, CreateStoresTheConversationAndItsCreateActivity) {
  NewConversation request;
  request.kms_resource_uri = ResourceUri();
  request.key_uri = KeyUri();
  request.participants = {carol_.user_id, bob_.user_id, bob_.user_id};
  request.encrypted_title = Jwe(request.key_uri, "Project X");
  auto created = service_->CreateConversation(alice_, request);
  ASSERT_TRUE(created.ok()) << created.error().ToString();
  EXPECT_TRUE(internal::IsUuid(created->id));
  EXPECT_EQ(created->participants,
            (std::vector<std::string>{alice_.user_id, bob_.user_id, carol_.user_id}));
  EXPECT_EQ(created->current_key_uri, request.key_uri);
  EXPECT_EQ(created->created_by, alice_.user_id);
  EXPECT_EQ(created->last_seq, 1);
  EXPECT_EQ(service_->LastSeq(), 1);

  auto got = service_->GetConversation(bob_, created->id);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(got->kms_resource_uri, request.kms_resource_uri);
  EXPECT_EQ(got->encrypted_title, request.encrypted_title);
  EXPECT_EQ(got->participants, created->participants);
  EXPECT_EQ(got->created_ms, created->created_ms);
  EXPECT_EQ(got->last_seq, 1);

  auto history = service_->History(carol_, created->id, {});
  ASSERT_TRUE(history.ok());
  ASSERT_EQ(history->items.size(), 1u);
  const Activity& a = history->items[0];
  EXPECT_EQ(a.verb, "create");
  EXPECT_EQ(a.seq, 1);
  EXPECT_EQ(a.actor, alice_.user_id);
  EXPECT_EQ(a.key_uri, request.key_uri);
  EXPECT_EQ(a.content, request.encrypted_title);
  EXPECT_EQ(a.object_users, created->participants);
  ASSERT_EQ(Heard().size(), 1u);
  EXPECT_EQ(Heard()[0].first.id, a.id);
  EXPECT_EQ(Heard()[0].second, created->participants);
}

TEST_P(CoreServiceTest, NonParticipantsAndUnknownIdsGetTheSameNotFound) {
  const Conversation c = Create(alice_, {bob_.user_id});
  for (const std::string& id :
       {c.id, internal::NewUuid(), std::string("../../etc/passwd"), std::string(10000, 'a')}) {
    const Caller& who = id == c.id ? mallory_ : alice_;
    auto got = service_->GetConversation(who, id);
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.error().code(), ErrorCode::kNotFound);
    EXPECT_EQ(got.error().message(), "no such conversation");
    NewPost post;
    post.content = Jwe(c.current_key_uri);
    EXPECT_EQ(service_->PostActivity(who, id, post).error().code(), ErrorCode::kNotFound);
    EXPECT_EQ(service_->History(who, id, {}).error().code(), ErrorCode::kNotFound);
    EXPECT_EQ(service_->GetActivity(who, id, internal::NewUuid()).error().code(),
              ErrorCode::kNotFound);
    EXPECT_EQ(service_->AddParticipants(who, id, {mallory_.user_id}).error().code(),
              ErrorCode::kNotFound);
    EXPECT_EQ(service_->RemoveParticipant(who, id, alice_.user_id).error().code(),
              ErrorCode::kNotFound);
    EXPECT_EQ(service_->RotateKey(who, id, KeyUri()).error().code(), ErrorCode::kNotFound);
    EXPECT_EQ(service_->SetTitle(who, id, "").error().code(), ErrorCode::kNotFound);
    EXPECT_EQ(service_->CheckCanUpload(who, id).error().code(), ErrorCode::kNotFound);
    EXPECT_EQ(service_->BeginUpload(who, id).error().code(), ErrorCode::kNotFound);
    EXPECT_EQ(service_->OpenFile(who, id, internal::NewUuid()).error().code(),
              ErrorCode::kNotFound);
  }
  EXPECT_EQ(Count("activities"), 1);
}

TEST_P(CoreServiceTest, InvalidCreationsAreRefusedAndStoreNothing) {
  Create(alice_, {bob_.user_id});
  const auto before = Counts();
  const std::string key = KeyUri();
  auto valid = [&] {
    NewConversation r;
    r.kms_resource_uri = ResourceUri();
    r.key_uri = key;
    r.participants = {bob_.user_id};
    return r;
  };
  std::vector<std::pair<std::string, NewConversation>> cases;
  cases.push_back({"resource URL", valid()});
  cases.back().second.kms_resource_uri = "kms://kms.acme.test/keys/" + internal::NewUuid();
  cases.push_back({"key URL", valid()});
  cases.back().second.key_uri = "kms://kms.acme.test/keys/nope";
  cases.push_back({"key on another KMS", valid()});
  cases.back().second.key_uri = "kms://other.test/keys/" + internal::NewUuid();
  cases.push_back({"empty user", valid()});
  cases.back().second.participants = {""};
  cases.push_back({"control character", valid()});
  cases.back().second.participants = {"bob\r\nX-Injected: 1"};
  cases.push_back({"long user", valid()});
  cases.back().second.participants = {std::string(kMaxUserIdBytes + 1, 'b')};
  cases.push_back({"too many users", valid()});
  cases.back().second.participants.clear();
  for (std::size_t i = 0; i <= kMaxUsersPerChange; ++i) {
    cases.back().second.participants.push_back("user" + std::to_string(i));
  }
  cases.push_back({"title not a JWE", valid()});
  cases.back().second.encrypted_title = "Project X";
  cases.push_back({"title under another key", valid()});
  cases.back().second.encrypted_title = Jwe(KeyUri());
  cases.push_back({"title too large", valid()});
  cases.back().second.encrypted_title = Jwe(key, std::string(kMaxTitleBytes, 't'));
  for (const auto& [name, request] : cases) {
    auto created = service_->CreateConversation(alice_, request);
    ASSERT_FALSE(created.ok()) << name;
    EXPECT_EQ(created.error().code(), ErrorCode::kInvalidArgument) << name;
  }
  EXPECT_EQ(service_->CreateConversation({"", "acme"}, valid()).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(Counts(), before);
  EXPECT_EQ(service_->LastSeq(), 1);
  EXPECT_EQ(Heard().size(), 1u);
}

TEST_P(CoreServiceTest, ConversationsPerUserAreLimited) {
  CoreServiceConfig config;
  config.max_conversations_per_user = 2;
  Reopen(config);
  Create(alice_, {});
  Create(bob_, {alice_.user_id});
  const auto before = Counts();
  NewConversation request;
  request.kms_resource_uri = ResourceUri();
  request.key_uri = KeyUri();
  request.participants = {carol_.user_id};
  EXPECT_EQ(service_->CreateConversation(alice_, request).error().code(),
            ErrorCode::kResourceExhausted);
  const Conversation carols = Create(carol_, {});
  EXPECT_EQ(service_->AddParticipants(carol_, carols.id, {alice_.user_id}).error().code(),
            ErrorCode::kResourceExhausted);
  EXPECT_EQ(Count("activities"), before.at("activities") + 1);
}

TEST_P(CoreServiceTest, ListConversationsIsNewestActivityFirstAndPaged) {
  std::vector<Conversation> mine;
  for (int i = 0; i < 5; ++i) mine.push_back(Create(alice_, {bob_.user_id}));
  Create(carol_, {});   // not alice's
  Post(bob_, mine[1]);  // mine[1] is now the newest
  auto page = service_->ListConversations(alice_, std::nullopt, 3);
  ASSERT_TRUE(page.ok()) << page.error().ToString();
  ASSERT_EQ(page->size(), 3u);
  EXPECT_EQ((*page)[0].id, mine[1].id);
  EXPECT_EQ((*page)[1].id, mine[4].id);
  EXPECT_EQ((*page)[2].id, mine[3].id);
  EXPECT_EQ((*page)[0].participants, (std::vector<std::string>{alice_.user_id, bob_.user_id}));
  EXPECT_EQ((*page)[0].last_seq, service_->LastSeq());
  auto next = service_->ListConversations(alice_, page->back().last_seq, 3);
  ASSERT_TRUE(next.ok());
  ASSERT_EQ(next->size(), 2u);
  EXPECT_EQ((*next)[0].id, mine[2].id);
  EXPECT_EQ((*next)[1].id, mine[0].id);

  ASSERT_TRUE(service_->RemoveParticipant(alice_, mine[0].id, alice_.user_id).ok());
  auto after_leaving = service_->ListConversations(alice_, std::nullopt, kMaxPageSize);
  ASSERT_TRUE(after_leaving.ok());
  EXPECT_EQ(after_leaving->size(), 4u);
  EXPECT_TRUE(service_->ListConversations(mallory_, std::nullopt, 10)->empty());
  EXPECT_EQ(service_->ListConversations(alice_, std::nullopt, 0).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(service_->ListConversations(alice_, std::nullopt, kMaxPageSize + 1).error().code(),
            ErrorCode::kInvalidArgument);
}

// --- participants ---------------------------------------------------------------------------

TEST_P(CoreServiceTest, ParticipantsAreAddedRemovedAndLeave) {
  const Conversation c = Create(alice_, {bob_.user_id});
  auto added = service_->AddParticipants(bob_, c.id, {carol_.user_id, alice_.user_id});
  ASSERT_TRUE(added.ok()) << added.error().ToString();
  EXPECT_EQ(added->verb, "add");
  EXPECT_EQ(added->actor, bob_.user_id);
  EXPECT_EQ(added->object_users, std::vector<std::string>{carol_.user_id});
  EXPECT_EQ(service_->AddParticipants(bob_, c.id, {carol_.user_id}).error().code(),
            ErrorCode::kAlreadyExists);
  EXPECT_TRUE(service_->GetConversation(carol_, c.id).ok());

  auto removed = service_->RemoveParticipant(carol_, c.id, bob_.user_id);
  ASSERT_TRUE(removed.ok()) << removed.error().ToString();
  EXPECT_EQ(removed->verb, "remove");
  EXPECT_EQ(removed->object_users, std::vector<std::string>{bob_.user_id});
  EXPECT_EQ(service_->GetConversation(bob_, c.id).error().code(), ErrorCode::kNotFound);
  NewPost post;
  post.content = Jwe(c.current_key_uri);
  EXPECT_EQ(service_->PostActivity(bob_, c.id, post).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(service_->RemoveParticipant(alice_, c.id, bob_.user_id).error().code(),
            ErrorCode::kNotFound);

  auto left = service_->RemoveParticipant(carol_, c.id, carol_.user_id);
  ASSERT_TRUE(left.ok());
  EXPECT_EQ(left->verb, "leave");
  auto last = service_->RemoveParticipant(alice_, c.id, alice_.user_id);
  ASSERT_FALSE(last.ok());
  EXPECT_EQ(last.error().code(), ErrorCode::kFailedPrecondition);

  ASSERT_TRUE(service_->AddParticipants(alice_, c.id, {bob_.user_id}).ok());
  auto got = service_->GetConversation(bob_, c.id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->participants, (std::vector<std::string>{alice_.user_id, bob_.user_id}));
}

TEST_P(CoreServiceTest, InvalidParticipantChangesStoreNothing) {
  const Conversation c = Create(alice_, {bob_.user_id});
  const auto before = Counts();
  std::vector<std::string> too_many;
  for (std::size_t i = 0; i <= kMaxUsersPerChange; ++i) too_many.push_back("u" + std::to_string(i));
  EXPECT_EQ(service_->AddParticipants(alice_, c.id, too_many).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(service_->AddParticipants(alice_, c.id, {}).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(service_->AddParticipants(alice_, c.id, {"ok", "bad\x01"}).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(service_->RemoveParticipant(alice_, c.id, "").error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(Counts(), before);
}

TEST_P(CoreServiceTest, AConversationHoldsAtMostMaxParticipants) {
  const Conversation c = Create(alice_, {});
  for (std::size_t added = 1; added < kMaxParticipants;) {
    std::vector<std::string> users;
    for (std::size_t i = 0; i < kMaxUsersPerChange && added < kMaxParticipants; ++i, ++added) {
      users.push_back("user" + std::to_string(added));
    }
    ASSERT_TRUE(service_->AddParticipants(alice_, c.id, users).ok());
  }
  auto full = service_->AddParticipants(alice_, c.id, {"one-too-many"});
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(service_->GetConversation(alice_, c.id)->participants.size(), kMaxParticipants);
}

// --- activities -----------------------------------------------------------------------------

TEST_P(CoreServiceTest, PostStoresTheActivityAndTellsTheListener) {
  const Conversation c = Create(alice_, {bob_.user_id});
  NewPost post;
  post.content = Jwe(c.current_key_uri, "secret words");
  auto posted = service_->PostActivity(bob_, c.id, post);
  ASSERT_TRUE(posted.ok()) << posted.error().ToString();
  EXPECT_EQ(posted->verb, "post");
  EXPECT_EQ(posted->seq, 2);
  EXPECT_EQ(posted->actor, bob_.user_id);
  EXPECT_EQ(posted->content, post.content);
  EXPECT_EQ(posted->key_uri, c.current_key_uri);
  EXPECT_GT(posted->published_ms, c.created_ms);
  auto got = service_->GetActivity(alice_, c.id, posted->id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->seq, posted->seq);
  EXPECT_EQ(got->content, post.content);
  EXPECT_EQ(got->published_ms, posted->published_ms);
  EXPECT_EQ(service_->GetActivity(alice_, c.id, internal::NewUuid()).error().code(),
            ErrorCode::kNotFound);
  const Conversation other = Create(alice_, {});
  EXPECT_EQ(service_->GetActivity(alice_, other.id, posted->id).error().code(),
            ErrorCode::kNotFound);
  const auto heard = Heard();
  ASSERT_EQ(heard.size(), 3u);
  EXPECT_EQ(heard[1].first.id, posted->id);
  EXPECT_EQ(heard[1].second, (std::vector<std::string>{alice_.user_id, bob_.user_id}));
  EXPECT_EQ(service_->GetConversation(alice_, c.id)->last_seq, posted->seq);
}

// A post's statements (the insert, which also tells a first attempt from a retry, and the
// conversation's last seq) are compiled once per pooled connection and kept: the writer thread
// does not compile SQL for every post, and a first attempt looks nothing up (a round trip less on
// a database server).
TEST_P(CoreServiceTest, PostsDoNotCompileTheirStatementsAgain) {
  const Conversation c = Create(alice_, {bob_.user_id});
  auto post = [&](int i) {
    NewPost p;
    p.content = Jwe(c.current_key_uri, "words " + std::to_string(i));
    p.client_activity_id = "client-" + std::to_string(i);
    auto posted = service_->PostActivity(bob_, c.id, p);
    ASSERT_TRUE(posted.ok()) << posted.error().ToString();
  };
  // Warm every pooled connection the writer may take.
  for (int i = 0; i < 20; ++i) ASSERT_NO_FATAL_FAILURE(post(i));
  const std::uint64_t compiled = db_->statements_compiled();
  auto uses = [&](std::string_view start) {
    std::uint64_t n = 0;
    for (const auto& [sql, count] : db_->KeptStatementUses()) {
      if (sql.rfind(start, 0) == 0) n += count;
    }
    return n;
  };
  const std::uint64_t inserts = uses("INSERT INTO activities");
  const std::uint64_t last_seqs = uses("UPDATE conversations SET last_seq");
  const std::uint64_t lookups = uses("SELECT seq, id, conversation_id");
  for (int i = 20; i < 70; ++i) ASSERT_NO_FATAL_FAILURE(post(i));
  EXPECT_EQ(db_->statements_compiled(), compiled);  // nothing compiled for the last 50
  EXPECT_EQ(uses("INSERT INTO activities"), inserts + 50);
  EXPECT_EQ(uses("UPDATE conversations SET last_seq"), last_seqs + 50);
  EXPECT_EQ(uses("SELECT seq, id, conversation_id"), lookups);
  EXPECT_EQ(service_->GetConversation(alice_, c.id)->last_seq, 71);
}

TEST_P(CoreServiceTest, InvalidPostsAreRefusedAndStoreNothing) {
  const Conversation c = Create(alice_, {bob_.user_id});
  const Conversation other = Create(alice_, {});
  const auto before = Counts();
  auto refuse = [&](const NewPost& post, ErrorCode code, const std::string& name) {
    auto posted = service_->PostActivity(alice_, c.id, post);
    ASSERT_FALSE(posted.ok()) << name;
    EXPECT_EQ(posted.error().code(), code) << name << ": " << posted.error().ToString();
  };
  NewPost post;
  post.content = "plaintext!";
  refuse(post, ErrorCode::kInvalidArgument, "not a JWE");
  post.content = Jwe(KeyUri());
  refuse(post, ErrorCode::kInvalidArgument, "undeclared kid");
  post.content = Jwe(other.current_key_uri);
  refuse(post, ErrorCode::kInvalidArgument, "another conversation's key");
  post.content = Jwe(c.current_key_uri, std::string(kMaxContentBytes, 'x'));
  refuse(post, ErrorCode::kInvalidArgument, "too large");
  post.content = Jwe(c.current_key_uri);
  post.client_activity_id = "has space";
  refuse(post, ErrorCode::kInvalidArgument, "client id");
  post.client_activity_id = std::string(kMaxClientActivityIdBytes + 1, 'a');
  refuse(post, ErrorCode::kInvalidArgument, "long client id");
  post.client_activity_id.clear();
  post.file_ids = {"not-a-uuid"};
  refuse(post, ErrorCode::kInvalidArgument, "file id");
  post.file_ids = {internal::NewUuid()};
  refuse(post, ErrorCode::kInvalidArgument, "unknown file");
  const std::string twice = internal::NewUuid();
  post.file_ids = {twice, twice};
  refuse(post, ErrorCode::kInvalidArgument, "file twice");
  post.file_ids.assign(kMaxFileIdsPerActivity + 1, internal::NewUuid());
  refuse(post, ErrorCode::kInvalidArgument, "too many files");
  EXPECT_EQ(Counts(), before);
  EXPECT_EQ(Heard().size(), 2u);
}

TEST_P(CoreServiceTest, AfterRotationTheOldKeyIsRefusedWithKeyRotationRequired) {
  const Conversation c = Create(alice_, {bob_.user_id});
  const std::string old_key = c.current_key_uri;
  const std::string new_key = KeyUri();
  auto rotated = service_->RotateKey(bob_, c.id, new_key);
  ASSERT_TRUE(rotated.ok()) << rotated.error().ToString();
  EXPECT_EQ(rotated->verb, "rotate");
  EXPECT_EQ(rotated->key_uri, new_key);
  EXPECT_EQ(service_->GetConversation(alice_, c.id)->current_key_uri, new_key);
  const auto before = Counts();

  NewPost post;
  post.content = Jwe(old_key);
  auto refused = service_->PostActivity(alice_, c.id, post);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(refused.error().reason(), ErrorReason::kKeyRotationRequired)
      << refused.error().message();
  auto title = service_->SetTitle(alice_, c.id, Jwe(old_key, "title"));
  ASSERT_FALSE(title.ok());
  EXPECT_EQ(title.error().reason(), ErrorReason::kKeyRotationRequired);
  EXPECT_EQ(Counts(), before);

  post.content = Jwe(new_key);
  EXPECT_TRUE(service_->PostActivity(alice_, c.id, post).ok());
  EXPECT_EQ(service_->RotateKey(alice_, c.id, old_key).error().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(service_->RotateKey(alice_, c.id, new_key).error().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(service_->RotateKey(alice_, c.id, "kms://other.test/keys/" + internal::NewUuid())
                .error()
                .code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(service_->RotateKey(alice_, c.id, ResourceUri()).error().code(),
            ErrorCode::kInvalidArgument);
}

TEST_P(CoreServiceTest, TitlesAreJweUnderTheCurrentKey) {
  const Conversation c = Create(alice_, {bob_.user_id});
  const std::string title = Jwe(c.current_key_uri, "Launch");
  auto set = service_->SetTitle(bob_, c.id, title);
  ASSERT_TRUE(set.ok()) << set.error().ToString();
  EXPECT_EQ(set->verb, "title");
  EXPECT_EQ(set->content, title);
  EXPECT_EQ(service_->GetConversation(alice_, c.id)->encrypted_title, title);
  EXPECT_EQ(service_->SetTitle(bob_, c.id, "Launch").error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(service_->SetTitle(bob_, c.id, Jwe(KeyUri())).error().code(),
            ErrorCode::kInvalidArgument);
  ASSERT_TRUE(service_->SetTitle(bob_, c.id, "").ok());
  EXPECT_EQ(service_->GetConversation(alice_, c.id)->encrypted_title, "");
}

TEST_P(CoreServiceTest, ARetriedPostWithTheSameClientIdIsStoredOnce) {
  const Conversation c = Create(alice_, {bob_.user_id});
  NewPost post;
  post.content = Jwe(c.current_key_uri);
  post.client_activity_id = "retry-1";
  auto first = service_->PostActivity(alice_, c.id, post);
  ASSERT_TRUE(first.ok());
  auto second = service_->PostActivity(alice_, c.id, post);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->id, first->id);
  EXPECT_EQ(second->seq, first->seq);
  EXPECT_EQ(second->client_activity_id, "retry-1");
  EXPECT_EQ(Count("activities"), 2);
  EXPECT_EQ(Heard().size(), 2u);  // the listener heard it once
  // The retry took no seq: the next post follows the first without a gap.
  NewPost next;
  next.content = Jwe(c.current_key_uri);
  next.client_activity_id = "retry-2";
  auto after = service_->PostActivity(alice_, c.id, next);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->seq, first->seq + 1);

  // A retry after a rotation still finds what the first attempt stored.
  ASSERT_TRUE(service_->RotateKey(alice_, c.id, KeyUri()).ok());
  auto third = service_->PostActivity(alice_, c.id, post);
  ASSERT_TRUE(third.ok()) << third.error().ToString();
  EXPECT_EQ(third->id, first->id);

  // The same id with other content is a conflict; another sender's id is their own.
  NewPost different = post;
  different.content = Jwe(service_->GetConversation(alice_, c.id)->current_key_uri, "other");
  EXPECT_EQ(service_->PostActivity(alice_, c.id, different).error().code(),
            ErrorCode::kAlreadyExists);
  auto bobs = service_->PostActivity(bob_, c.id, different);
  ASSERT_TRUE(bobs.ok());
  EXPECT_NE(bobs->id, first->id);
}

TEST_P(CoreServiceTest, ConcurrentRetriesOfOnePostStoreItOnce) {
  const Conversation c = Create(alice_, {});
  NewPost post;
  post.content = Jwe(c.current_key_uri);
  post.client_activity_id = "same";
  std::vector<std::thread> threads;
  std::vector<std::string> ids(8);
  for (std::size_t t = 0; t < ids.size(); ++t) {
    threads.emplace_back([&, t] {
      auto posted = service_->PostActivity(alice_, c.id, post);
      if (posted.ok()) ids[t] = posted->id;
    });
  }
  for (std::thread& t : threads) t.join();
  for (const std::string& id : ids) EXPECT_EQ(id, ids[0]);
  EXPECT_FALSE(ids[0].empty());
  EXPECT_EQ(Count("activities"), 2);
}

TEST_P(CoreServiceTest, HistoryPagesBothWaysWithMore) {
  const Conversation c = Create(alice_, {bob_.user_id});
  std::vector<Activity> all = {service_->History(alice_, c.id, {})->items[0]};
  for (int i = 0; i < 9; ++i) all.push_back(Post(i % 2 ? alice_ : bob_, c));
  Create(alice_, {});  // another conversation's activity in between changes nothing
  all.push_back(Post(alice_, c));
  ASSERT_EQ(all.size(), 11u);

  HistoryQuery newest;
  newest.limit = 4;
  auto page = service_->History(bob_, c.id, newest);
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->more);
  EXPECT_EQ(Ids(page->items), Ids({all.begin() + 7, all.end()}));

  HistoryQuery older;
  older.before = page->items.front().seq;
  older.limit = 4;
  page = service_->History(bob_, c.id, older);
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->more);
  EXPECT_EQ(Ids(page->items), Ids({all.begin() + 3, all.begin() + 7}));
  older.before = page->items.front().seq;
  page = service_->History(bob_, c.id, older);
  ASSERT_TRUE(page.ok());
  EXPECT_FALSE(page->more);
  EXPECT_EQ(Ids(page->items), Ids({all.begin(), all.begin() + 3}));

  HistoryQuery newer;
  newer.after = all[2].seq;
  newer.limit = 5;
  page = service_->History(bob_, c.id, newer);
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->more);
  EXPECT_EQ(Ids(page->items), Ids({all.begin() + 3, all.begin() + 8}));
  newer.after = page->items.back().seq;
  page = service_->History(bob_, c.id, newer);
  ASSERT_TRUE(page.ok());
  EXPECT_FALSE(page->more);
  EXPECT_EQ(Ids(page->items), Ids({all.begin() + 8, all.end()}));

  HistoryQuery between;
  between.after = all[1].seq;
  between.before = all[5].seq;
  between.limit = 2;
  page = service_->History(bob_, c.id, between);
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->more);
  EXPECT_EQ(Ids(page->items), Ids({all.begin() + 2, all.begin() + 4}));

  HistoryQuery exact;
  exact.limit = 11;
  page = service_->History(bob_, c.id, exact);
  EXPECT_FALSE(page->more);
  EXPECT_EQ(page->items.size(), 11u);

  HistoryQuery bad;
  bad.limit = 0;
  EXPECT_EQ(service_->History(bob_, c.id, bad).error().code(), ErrorCode::kInvalidArgument);
  bad.limit = kMaxPageSize + 1;
  EXPECT_EQ(service_->History(bob_, c.id, bad).error().code(), ErrorCode::kInvalidArgument);
}

// --- the realtime stream's replay -----------------------------------------------------------

TEST_P(CoreServiceTest, EventsSinceFollowsMembershipIntervals) {
  const Conversation c = Create(alice_, {bob_.user_id});
  const Activity p1 = Post(alice_, c, "before carol");
  const Activity add = *service_->AddParticipants(bob_, c.id, {carol_.user_id});
  const Activity p2 = Post(carol_, c, "while carol is in");
  const Activity remove = *service_->RemoveParticipant(alice_, c.id, carol_.user_id);
  const Activity p3 = Post(bob_, c, "after carol");
  const Activity readd = *service_->AddParticipants(alice_, c.id, {carol_.user_id});
  const Activity p4 = Post(bob_, c, "carol is back");
  const Conversation other = Create(bob_, {});

  auto carols = service_->EventsSince(carol_.user_id, 0, kMaxPageSize);
  ASSERT_TRUE(carols.ok()) << carols.error().ToString();
  EXPECT_EQ(Ids(*carols), Ids({add, p2, remove, readd, p4}));
  auto bobs = service_->EventsSince(bob_.user_id, 0, kMaxPageSize);
  ASSERT_TRUE(bobs.ok());
  EXPECT_EQ(bobs->size(), 9u);  // everything, and his own other conversation
  EXPECT_EQ(bobs->back().conversation_id, other.id);
  EXPECT_TRUE(service_->EventsSince(mallory_.user_id, 0, kMaxPageSize)->empty());

  // Resuming from a cursor returns what follows it, in pages.
  auto resumed = service_->EventsSince(carol_.user_id, p2.seq, 2);
  ASSERT_TRUE(resumed.ok());
  EXPECT_EQ(Ids(*resumed), Ids({remove, readd}));
  resumed = service_->EventsSince(carol_.user_id, readd.seq, 2);
  EXPECT_EQ(Ids(*resumed), Ids({p4}));
  EXPECT_TRUE(service_->EventsSince(carol_.user_id, p4.seq, 2)->empty());

  EXPECT_EQ(service_->EventsSince("", 0, 10).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(service_->EventsSince(bob_.user_id, 0, 0).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(service_->EventsSince(bob_.user_id, 0, kMaxEventsPage)->size(), 9u);
  EXPECT_EQ(service_->EventsSince(bob_.user_id, 0, kMaxEventsPage + 1).error().code(),
            ErrorCode::kInvalidArgument);
}

TEST_P(CoreServiceTest, ListenerRecipientsAreWhatEventsSinceReturns) {
  const std::vector<Caller> users = {alice_, bob_, carol_, mallory_};
  const Conversation a = Create(alice_, {bob_.user_id});
  const Conversation b = Create(carol_, {alice_.user_id, mallory_.user_id});
  Post(alice_, a);
  ASSERT_TRUE(service_->AddParticipants(bob_, a.id, {carol_.user_id}).ok());
  Post(carol_, b);
  ASSERT_TRUE(service_->RemoveParticipant(carol_, b.id, mallory_.user_id).ok());
  Post(carol_, a);
  ASSERT_TRUE(service_->RemoveParticipant(alice_, a.id, alice_.user_id).ok());
  Post(bob_, a);
  ASSERT_TRUE(service_->AddParticipants(carol_, b.id, {mallory_.user_id, bob_.user_id}).ok());
  ASSERT_TRUE(service_->RotateKey(bob_, b.id, KeyUri()).ok());
  Post(mallory_, b);

  std::map<std::string, std::vector<std::string>> expected;
  for (const auto& [activity, recipients] : Heard()) {
    for (const std::string& user : recipients) expected[user].push_back(activity.id);
  }
  for (const Caller& user : users) {
    auto events = service_->EventsSince(user.user_id, 0, kMaxPageSize);
    ASSERT_TRUE(events.ok());
    EXPECT_EQ(Ids(*events), expected[user.user_id]) << user.user_id;
  }
}

TEST_P(CoreServiceTest, ConcurrentPostersAreAllStoredAndHeardInSeqOrder) {
  const Conversation c1 = Create(alice_, {bob_.user_id, carol_.user_id});
  const Conversation c2 = Create(bob_, {alice_.user_id});
  constexpr int kThreads = 16, kPosts = 40;
  std::vector<std::thread> threads;
  std::mutex mutex;
  std::vector<Activity> acknowledged;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const Caller& sender = t % 3 == 0 ? alice_ : t % 3 == 1 ? bob_ : carol_;
      const Conversation& c = t % 3 == 2 ? c1 : (t % 2 ? c1 : c2);
      for (int i = 0; i < kPosts; ++i) {
        NewPost post;
        post.content = Jwe(c.current_key_uri, std::to_string(t) + "/" + std::to_string(i));
        post.client_activity_id = "t" + std::to_string(t) + "-" + std::to_string(i);
        auto posted = service_->PostActivity(sender, c.id, post);
        if (!posted.ok()) {
          ++failures;
          continue;
        }
        std::lock_guard lock(mutex);
        acknowledged.push_back(*posted);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  ASSERT_EQ(failures.load(), 0);
  ASSERT_EQ(acknowledged.size(), static_cast<std::size_t>(kThreads * kPosts));

  const auto heard = Heard();
  ASSERT_EQ(heard.size(), acknowledged.size() + 2);
  for (std::size_t i = 0; i < heard.size(); ++i) {
    EXPECT_EQ(heard[i].first.seq, static_cast<std::int64_t>(i + 1));  // gapless, in order
  }
  EXPECT_EQ(service_->LastSeq(), static_cast<std::int64_t>(heard.size()));
  {
    std::lock_guard lock(heard_mutex_);
    EXPECT_EQ(empty_commits_heard_, 0u);
    EXPECT_GE(commits_heard_, 1u);
    EXPECT_LE(commits_heard_, heard.size());  // a commit's activities are heard in one call
  }
  std::set<std::string> heard_ids;
  for (const auto& [activity, recipients] : heard) heard_ids.insert(activity.id);
  for (const Activity& a : acknowledged) {
    EXPECT_EQ(heard_ids.count(a.id), 1u);
    auto stored = service_->GetActivity(alice_, a.conversation_id, a.id);
    ASSERT_TRUE(stored.ok());
    EXPECT_EQ(stored->seq, a.seq);
    EXPECT_EQ(stored->content, a.content);
  }
  EXPECT_EQ(Count("activities"), static_cast<std::int64_t>(heard.size()));
  // Each conversation's newest activity is its last_seq.
  for (const Conversation* c : {&c1, &c2}) {
    auto newest = service_->History(alice_, c->id, {});
    ASSERT_TRUE(newest.ok());
    EXPECT_EQ(service_->GetConversation(alice_, c->id)->last_seq, newest->items.back().seq);
  }
}

// --- files ----------------------------------------------------------------------------------

// Two services on one database, as two cored nodes on one PostgreSQL database (or two processes
// on one SQLite file), posting at once: their writers take turns, each batch numbering its
// activities after the newest committed one, so seqs stay unique and without gaps whichever node
// posts, and both nodes read the same history.
TEST_P(CoreServiceTest, TwoServicesOnOneDatabaseNumberActivitiesWithoutGaps) {
  const Conversation c = Create(alice_, {bob_.user_id});
  auto other_db = where_.Open(CoreService::Migrations(), CoreService::PostgresMigrations());
  ASSERT_TRUE(other_db.ok()) << other_db.error().ToString();
  CoreServiceConfig config;
  config.files_dir = (dir_ / "other-files").string();
  config.indexer_user_id = indexer_.user_id;
  config.indexer_org = indexer_.org;
  auto other = CoreService::New(config, **other_db, [this] { return ++clock_ms_; });
  ASSERT_TRUE(other.ok()) << other.error().ToString();
  constexpr int kPostsPerThread = 15;
  std::vector<std::thread> posters;
  for (int t = 0; t < 4; ++t) {
    posters.emplace_back([&, t] {
      CoreService& node = t % 2 == 0 ? *service_ : **other;
      const Caller& sender = t < 2 ? alice_ : bob_;
      for (int i = 0; i < kPostsPerThread; ++i) {
        NewPost post;
        post.content = Jwe(c.current_key_uri, std::to_string(t) + "/" + std::to_string(i));
        auto posted = node.PostActivity(sender, c.id, post);
        EXPECT_TRUE(posted.ok()) << posted.error().ToString();
      }
    });
  }
  for (std::thread& poster : posters) poster.join();
  HistoryQuery query;
  query.limit = kMaxPageSize;
  for (CoreService* node : {service_.get(), other->get()}) {
    auto page = node->History(bob_, c.id, query);
    ASSERT_TRUE(page.ok()) << page.error().ToString();
    ASSERT_EQ(page->items.size(), 1u + 4 * kPostsPerThread);
    for (std::size_t i = 0; i < page->items.size(); ++i) {
      EXPECT_EQ(page->items[i].seq, static_cast<std::int64_t>(i) + 1);
    }
    auto conversation = node->GetConversation(alice_, c.id);
    ASSERT_TRUE(conversation.ok()) << conversation.error().ToString();
    EXPECT_EQ(conversation->last_seq, 1 + 4 * kPostsPerThread);
  }
}

TEST_P(CoreServiceTest, UploadedFilesAreStoredHashedAndOnlyParticipantsOpenThem) {
  const Conversation c = Create(alice_, {bob_.user_id});
  ASSERT_TRUE(service_->CheckCanUpload(bob_, c.id).ok());
  auto upload = service_->BeginUpload(bob_, c.id);
  ASSERT_TRUE(upload.ok()) << upload.error().ToString();
  std::string blob;
  for (int i = 0; i < 1000; ++i) blob += "encrypted bytes " + std::to_string(i) + "\n";
  for (std::size_t at = 0; at < blob.size(); at += 1000) {
    ASSERT_TRUE(
        (*upload)->Write(blob.data() + at, std::min<std::size_t>(1000, blob.size() - at)).ok());
  }
  EXPECT_EQ((*upload)->size(), blob.size());
  auto info = service_->FinishUpload(std::move(*upload));
  ASSERT_TRUE(info.ok()) << info.error().ToString();
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(blob.data()), blob.size(), digest);
  EXPECT_EQ(info->sha256_hex, internal::Hex(digest, sizeof digest));
  EXPECT_EQ(info->size, blob.size());
  EXPECT_EQ(info->uploader, bob_.user_id);
  EXPECT_EQ(info->conversation_id, c.id);

  auto opened = service_->OpenFile(alice_, c.id, info->id);
  ASSERT_TRUE(opened.ok()) << opened.error().ToString();
  EXPECT_EQ(opened->first.sha256_hex, info->sha256_hex);
  EXPECT_EQ(opened->first.created_ms, info->created_ms);
  std::ifstream in(opened->second, std::ios::binary);
  std::stringstream read;
  read << in.rdbuf();
  EXPECT_EQ(read.str(), blob);
  struct stat st {};
  ASSERT_EQ(::stat(opened->second.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  EXPECT_EQ(service_->OpenFile(mallory_, c.id, info->id).error().code(), ErrorCode::kNotFound);
  const Conversation other = Create(mallory_, {});
  EXPECT_EQ(service_->OpenFile(mallory_, other.id, info->id).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(service_->OpenFile(alice_, c.id, internal::NewUuid()).error().code(),
            ErrorCode::kNotFound);

  // A share refers to files of its own conversation only.
  NewPost share;
  share.content = Jwe(c.current_key_uri, "{file reference}");
  share.file_ids = {info->id};
  auto shared = service_->PostActivity(alice_, c.id, share);
  ASSERT_TRUE(shared.ok()) << shared.error().ToString();
  EXPECT_EQ(shared->verb, "share");
  EXPECT_EQ(service_->GetActivity(bob_, c.id, shared->id)->file_ids, share.file_ids);
  NewPost elsewhere;
  elsewhere.content = Jwe(other.current_key_uri);
  elsewhere.file_ids = {info->id};
  EXPECT_EQ(service_->PostActivity(mallory_, other.id, elsewhere).error().code(),
            ErrorCode::kInvalidArgument);
}

TEST_P(CoreServiceTest, UploadsPastTheLimitAreRefusedAndLeaveNoFile) {
  CoreServiceConfig config;
  config.max_file_bytes = 1000;
  Reopen(config);
  const Conversation c = Create(alice_, {});
  auto upload = service_->BeginUpload(alice_, c.id);
  ASSERT_TRUE(upload.ok());
  const std::string chunk(600, 'x');
  ASSERT_TRUE((*upload)->Write(chunk.data(), chunk.size()).ok());
  Status over = (*upload)->Write(chunk.data(), chunk.size());
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().code(), ErrorCode::kResourceExhausted);
  EXPECT_TRUE(FilesUnder(dir_ / "files").empty());
  EXPECT_FALSE((*upload)->Write("x", 1).ok());
  EXPECT_FALSE(service_->FinishUpload(std::move(*upload)).ok());
  EXPECT_EQ(Count("files"), 0);

  // Exactly the limit is fine; an abandoned upload leaves nothing behind.
  auto exact = service_->BeginUpload(alice_, c.id);
  const std::string full(1000, 'y');
  ASSERT_TRUE((*exact)->Write(full.data(), full.size()).ok());
  EXPECT_TRUE(service_->FinishUpload(std::move(*exact)).ok());
  {
    auto abandoned = service_->BeginUpload(alice_, c.id);
    ASSERT_TRUE((*abandoned)->Write("z", 1).ok());
  }
  EXPECT_EQ(FilesUnder(dir_ / "files").size(), 1u);
  EXPECT_EQ(Count("files"), 1);
}

// A crash can leave an upload unfinished, or a blob renamed into place but not recorded: the next
// start removes the first and moves the second aside once it is old (no client was given their ids;
// a restored or wrong database must not cost blobs; a young one may be another node's about to be
// recorded), and keeps every recorded blob and any file not the core's. How several nodes share
// the directory, directory_blob_store_test.cc shows.
TEST_P(CoreServiceTest, StartingAgainRemovesUnfinishedUploadsAndUnrecordedBlobsOnly) {
  const Conversation c = Create(alice_, {});
  auto upload = service_->BeginUpload(alice_, c.id);
  ASSERT_TRUE(upload.ok());
  ASSERT_TRUE((*upload)->Write("kept", 4).ok());
  auto kept = service_->FinishUpload(std::move(*upload));
  ASSERT_TRUE(kept.ok()) << kept.error().ToString();
  const std::filesystem::path files = dir_ / "files";
  // 600 more recorded blobs (rows written directly), so the lookups span several batches.
  std::vector<std::string> recorded;
  for (int i = 0; i < 600; ++i) recorded.push_back(internal::NewUuid());
  ASSERT_TRUE(db_->InTransaction([&](Poco::Data::Session& s) -> Status {
                   for (const std::string& id : recorded) {
                     FileInfo f{id, c.id, alice_.user_id, 0, std::string(64, '0'), 1};
                     internal::CoreStore::InsertFile(s, f);
                   }
                   return OkStatus();
                 })
                  .ok());
  for (const std::string& id : recorded) std::ofstream(files / id);
  const std::string unrecorded = internal::NewUuid();
  std::ofstream(files / unrecorded) << "renamed, then the process died";
  const std::string young = internal::NewUuid();
  std::ofstream(files / young) << "renamed a moment ago, perhaps by another node";
  std::filesystem::last_write_time(
      files / unrecorded, std::filesystem::file_time_type::clock::now() - std::chrono::hours(2));
  // The upload of a process that is gone: its lock is free.
  std::filesystem::create_directories(files / "uploads" / "gone");
  std::ofstream(files / "uploads" / "gone.lock");
  std::ofstream(files / "uploads" / "gone" / (internal::NewUuid() + ".upload")) << "half an upload";
  std::ofstream(files / "NOTES.txt") << "not the core's";

  Reopen();
  EXPECT_EQ(service_->startup_cleanup().unfinished_uploads, 1u);
  EXPECT_EQ(service_->startup_cleanup().unrecorded_blobs, 1u);
  EXPECT_FALSE(std::filesystem::exists(files / unrecorded));
  EXPECT_TRUE(std::filesystem::exists(files / "unrecorded" / unrecorded));
  EXPECT_TRUE(std::filesystem::exists(files / young));
  EXPECT_FALSE(std::filesystem::exists(files / "uploads" / "gone"));
  EXPECT_TRUE(std::filesystem::exists(files / "NOTES.txt"));
  auto opened = service_->OpenFile(alice_, c.id, kept->id);
  ASSERT_TRUE(opened.ok()) << opened.error().ToString();
  std::size_t left = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(files)) ++left;
  EXPECT_EQ(left, 605u);  // the recorded blobs, the young one, NOTES.txt, unrecorded/, uploads/

  Reopen();
  EXPECT_EQ(service_->startup_cleanup().unfinished_uploads, 0u);
  EXPECT_EQ(service_->startup_cleanup().unrecorded_blobs, 0u);
  EXPECT_TRUE(service_->OpenFile(alice_, c.id, kept->id).ok());
}

TEST_P(CoreServiceTest, AnUploadFinishedAfterTheUploaderLeftIsNotKept) {
  const Conversation c = Create(alice_, {bob_.user_id});
  auto upload = service_->BeginUpload(bob_, c.id);
  ASSERT_TRUE(upload.ok());
  ASSERT_TRUE((*upload)->Write("abc", 3).ok());
  ASSERT_TRUE(service_->RemoveParticipant(alice_, c.id, bob_.user_id).ok());
  auto finished = service_->FinishUpload(std::move(*upload));
  ASSERT_FALSE(finished.ok());
  EXPECT_EQ(finished.error().code(), ErrorCode::kNotFound);
  EXPECT_TRUE(FilesUnder(dir_ / "files").empty());
  EXPECT_EQ(Count("files"), 0);
}

// --- the search index store -----------------------------------------------------------------

TEST_P(CoreServiceTest, OnlyTheIndexerUsesTheIndex) {
  const Conversation c = Create(alice_, {});
  const Activity a = Post(alice_, c);
  SearchQuery query;
  query.queries = {{c.id, {"tok"}}};
  for (const Caller& caller : {alice_, Caller{indexer_.user_id, "evil"},
                               Caller{"someone", indexer_.org}, Caller{"", ""}}) {
    EXPECT_EQ(service_->PutIndexTokens(caller, c.id, a.id, {"tok"}).error().code(),
              ErrorCode::kPermissionDenied);
    EXPECT_EQ(service_->MatchTokens(caller, query).error().code(), ErrorCode::kPermissionDenied);
  }
  EXPECT_EQ(Entries(), 0);

  // Without an indexer configured, nobody is the indexer.
  CoreServiceConfig config;
  config.indexer_user_id = "";
  config.indexer_org = "";
  service_.reset();
  config.files_dir = (dir_ / "files").string();
  auto none = CoreService::New(config, *db_);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ((*none)->PutIndexTokens(Caller{"", ""}, c.id, a.id, {"tok"}).error().code(),
            ErrorCode::kPermissionDenied);
}

TEST_P(CoreServiceTest, IndexTokensMatchAllTokensWithinTheConversationsNewestFirst) {
  const Conversation c1 = Create(alice_, {});
  const Conversation c2 = Create(alice_, {});
  const Conversation c3 = Create(bob_, {});
  std::vector<Activity> hits;
  for (int i = 0; i < 5; ++i) {
    const Activity a = Post(alice_, i % 2 ? c1 : c2);
    ASSERT_TRUE(service_
                    ->PutIndexTokens(indexer_, a.conversation_id, a.id,
                                     {"apple", "pear", "decoy" + std::to_string(i)})
                    .ok());
    hits.push_back(a);
  }
  const Activity only_apple = Post(alice_, c1);
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c1.id, only_apple.id, {"apple"}).ok());
  const Activity elsewhere = Post(bob_, c3);
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c3.id, elsewhere.id, {"apple", "pear"}).ok());
  // Putting again changes nothing.
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c3.id, elsewhere.id, {"pear", "apple"}).ok());
  EXPECT_EQ(Entries(), 5 * 3 + 1 + 2);

  SearchQuery query;
  query.queries = {{c1.id, {"pear", "apple", "apple"}}, {c2.id, {"apple", "pear"}}};
  query.limit = 2;
  std::vector<std::string> found;
  for (int page = 0; page < 5; ++page) {
    auto matched = service_->MatchTokens(indexer_, query);
    ASSERT_TRUE(matched.ok()) << matched.error().ToString();
    for (const IndexMatch& m : matched->items) {
      found.push_back(m.activity_id);
      auto it = std::find_if(hits.begin(), hits.end(),
                             [&](const Activity& a) { return a.id == m.activity_id; });
      ASSERT_NE(it, hits.end());
      EXPECT_EQ(m.conversation_id, it->conversation_id);
      EXPECT_EQ(m.seq, it->seq);
    }
    if (!matched->next_before) break;
    query.before = matched->next_before;
  }
  std::vector<std::string> expected;
  for (auto it = hits.rbegin(); it != hits.rend(); ++it) expected.push_back(it->id);
  EXPECT_EQ(found, expected);

  query.before.reset();
  query.queries = {{c1.id, {"decoy3", "apple"}}, {c2.id, {"decoy3", "apple"}}};
  auto one = service_->MatchTokens(indexer_, query);
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(one->items.size(), 1u);
  EXPECT_EQ(one->items[0].activity_id, hits[3].id);
  EXPECT_FALSE(one->next_before.has_value());
  query.queries = {{c3.id, {"apple"}}};
  one = service_->MatchTokens(indexer_, query);
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(one->items.size(), 1u);
  EXPECT_EQ(one->items[0].activity_id, elsewhere.id);
  query.queries = {{c3.id, {"unknown"}}};
  EXPECT_TRUE(service_->MatchTokens(indexer_, query)->items.empty());
}

TEST_P(CoreServiceTest, InvalidIndexRequestsAreRefusedAndStoreNothing) {
  const Conversation c = Create(alice_, {});
  const Conversation other = Create(alice_, {});
  const Activity a = Post(alice_, c);
  EXPECT_EQ(service_->PutIndexTokens(indexer_, other.id, a.id, {"t"}).error().code(),
            ErrorCode::kNotFound);
  EXPECT_EQ(service_->PutIndexTokens(indexer_, internal::NewUuid(), a.id, {"t"}).error().code(),
            ErrorCode::kNotFound);
  EXPECT_EQ(service_->PutIndexTokens(indexer_, c.id, internal::NewUuid(), {"t"}).error().code(),
            ErrorCode::kNotFound);
  EXPECT_EQ(service_->PutIndexTokens(indexer_, c.id, a.id, {"has space"}).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(
      service_->PutIndexTokens(indexer_, c.id, a.id, {std::string(kMaxIndexTokenBytes + 1, 'a')})
          .error()
          .code(),
      ErrorCode::kInvalidArgument);
  std::vector<std::string> too_many;
  for (std::size_t i = 0; i <= kMaxIndexTokensPerActivity; ++i) {
    too_many.push_back("t" + std::to_string(i));
  }
  EXPECT_EQ(service_->PutIndexTokens(indexer_, c.id, a.id, too_many).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(Entries(), 0);

  SearchQuery query;  // no query
  EXPECT_EQ(service_->MatchTokens(indexer_, query).error().code(), ErrorCode::kInvalidArgument);
  query.queries = {{"nope", {"t"}}};
  EXPECT_EQ(service_->MatchTokens(indexer_, query).error().code(), ErrorCode::kInvalidArgument);
  query.queries = {{c.id, std::vector<std::string>(kMaxSearchTokens + 1, "t")}};
  EXPECT_EQ(service_->MatchTokens(indexer_, query).error().code(), ErrorCode::kInvalidArgument);
  query.queries = {{c.id, {}}};
  EXPECT_EQ(service_->MatchTokens(indexer_, query).error().code(), ErrorCode::kInvalidArgument);
  query.queries = {{c.id, {"t"}}, {other.id, {"u"}}, {c.id, {"v"}}};  // c twice
  EXPECT_EQ(service_->MatchTokens(indexer_, query).error().code(), ErrorCode::kInvalidArgument);
  query.queries = {{c.id, {"t"}}, {other.id, {"bad token"}}};
  EXPECT_EQ(service_->MatchTokens(indexer_, query).error().code(), ErrorCode::kInvalidArgument);
  query.queries.clear();
  for (std::size_t i = 0; i <= kMaxSearchConversations; ++i) {
    query.queries.push_back({internal::NewUuid(), {"t"}});
  }
  EXPECT_EQ(service_->MatchTokens(indexer_, query).error().code(), ErrorCode::kInvalidArgument);
  query.queries.pop_back();  // 1,000 is allowed
  EXPECT_TRUE(service_->MatchTokens(indexer_, query).ok());
  query.queries = {{c.id, {"t"}}};
  query.limit = 0;
  EXPECT_EQ(service_->MatchTokens(indexer_, query).error().code(), ErrorCode::kInvalidArgument);
}

TEST_P(CoreServiceTest, EachConversationOfASearchHasItsOwnTokens) {
  // The same word has another token in each room: a search asks each room for its own.
  const Conversation c1 = Create(alice_, {});
  const Conversation c2 = Create(alice_, {});
  const Activity in1 = Post(alice_, c1);
  const Activity in2 = Post(alice_, c2);
  const Activity both_in2 = Post(alice_, c2);
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c1.id, in1.id, {"word-c1", "x"}).ok());
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c2.id, in2.id, {"word-c2", "x"}).ok());
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c2.id, both_in2.id, {"word-c1", "y"}).ok());
  auto ids = [&](const std::vector<RoomQuery>& rooms) {
    SearchQuery query;
    query.queries = rooms;
    std::vector<std::string> out;
    auto page = service_->MatchTokens(indexer_, query);
    EXPECT_TRUE(page.ok()) << page.error().ToString();
    if (page.ok()) {
      for (const IndexMatch& m : page->items) out.push_back(m.activity_id);
    }
    return out;
  };
  // c1's token is asked of c1 only: c2's activity that happens to hold it is not a match.
  EXPECT_EQ(ids({{c1.id, {"word-c1"}}, {c2.id, {"word-c2"}}}),
            (std::vector<std::string>{in2.id, in1.id}));
  EXPECT_EQ(ids({{c1.id, {"word-c1", "x"}}, {c2.id, {"word-c2", "y"}}}),
            (std::vector<std::string>{in1.id}));
  EXPECT_EQ(ids({{c2.id, {"word-c1"}}}), (std::vector<std::string>{both_in2.id}));
  // Paging runs across the rooms, newest first.
  SearchQuery query;
  query.queries = {{c1.id, {"x"}}, {c2.id, {"x", "word-c2"}}};
  query.limit = 1;
  auto first = service_->MatchTokens(indexer_, query);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->items.size(), 1u);
  EXPECT_EQ(first->items[0].activity_id, in2.id);
  EXPECT_EQ(first->items[0].conversation_id, c2.id);
  ASSERT_TRUE(first->next_before.has_value());
  query.before = first->next_before;
  auto second = service_->MatchTokens(indexer_, query);
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(second->items.size(), 1u);
  EXPECT_EQ(second->items[0].activity_id, in1.id);
  EXPECT_EQ(second->items[0].conversation_id, c1.id);
  EXPECT_FALSE(second->next_before.has_value());
}

TEST_P(CoreServiceTest, TheIndexerFollowsEveryActivityOfItsOrganizationsConversations) {
  const Conversation ours = Create(alice_, {bob_.user_id});
  const Conversation theirs = Create(mallory_, {alice_.user_id});
  const Activity post = Post(bob_, ours, "indexed words");
  Post(mallory_, theirs, "not the indexer's");
  auto title = service_->SetTitle(alice_, ours.id, Jwe(ours.current_key_uri, "a title"));
  ASSERT_TRUE(title.ok());
  auto edit = service_->EditActivity(bob_, ours.id, post.id, Jwe(ours.current_key_uri, "edited"));
  ASSERT_TRUE(edit.ok());
  const Activity second = Post(alice_, ours, "more words");
  auto retract = service_->RetractActivity(alice_, ours.id, second.id);
  ASSERT_TRUE(retract.ok());
  ASSERT_TRUE(service_->AddParticipants(alice_, ours.id, {carol_.user_id}).ok());

  auto all = service_->IndexerEventsSince(indexer_, 0, kMaxEventsPage);
  ASSERT_TRUE(all.ok()) << all.error().ToString();
  std::vector<std::string> verbs;
  for (const Activity& a : *all) {
    EXPECT_EQ(a.conversation_id, ours.id);
    verbs.push_back(a.verb);
  }
  EXPECT_EQ(verbs, (std::vector<std::string>{"create", "post", "title", "edit", "post", "retract",
                                             "add"}));
  for (std::size_t i = 1; i < all->size(); ++i) EXPECT_GT((*all)[i].seq, (*all)[i - 1].seq);
  // As participants see them: the title's and the edit's ciphertext, the edit's target.
  EXPECT_EQ((*all)[2].content, title->content);
  EXPECT_EQ((*all)[3].content, edit->content);
  EXPECT_EQ((*all)[3].target_id, post.id);
  EXPECT_EQ((*all)[3].target_seq, post.seq);
  EXPECT_EQ((*all)[5].target_id, second.id);

  // From a cursor, in pages.
  auto after_post = service_->IndexerEventsSince(indexer_, post.seq, 2);
  ASSERT_TRUE(after_post.ok());
  ASSERT_EQ(after_post->size(), 2u);
  EXPECT_EQ((*after_post)[0].id, title->id);
  EXPECT_EQ((*after_post)[1].id, edit->id);
  EXPECT_TRUE(service_->IndexerEventsSince(indexer_, all->back().seq, 10)->empty());

  // The live stream's side: each committed activity names its conversation's organization.
  EXPECT_EQ(heard_orgs_.at(post.id), "acme");
  EXPECT_EQ(heard_orgs_.at(all->back().id), "acme");
  std::size_t heard_theirs = 0;
  for (const auto& [activity, recipients] : Heard()) {
    if (activity.conversation_id != theirs.id) continue;
    EXPECT_EQ(heard_orgs_.at(activity.id), "evil");
    ++heard_theirs;
  }
  EXPECT_EQ(heard_theirs, 2u);  // create, post
  Reopen();                     // the organization is read back with the conversation's state
  const Activity later = Post(alice_, ours);
  EXPECT_EQ(heard_orgs_.at(later.id), "acme");

  // Nobody else reads it, nor the indexer's user id from another organization.
  for (const Caller& caller : {alice_, mallory_, Caller{indexer_.user_id, "evil"}}) {
    EXPECT_EQ(service_->IndexerEventsSince(caller, 0, 10).error().code(),
              ErrorCode::kPermissionDenied);
    EXPECT_FALSE(service_->IsIndexer(caller));
  }
  EXPECT_TRUE(service_->IsIndexer(indexer_));
  EXPECT_EQ(service_->IndexerEventsSince(indexer_, 0, 0).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(service_->IndexerEventsSince(indexer_, 0, kMaxEventsPage + 1).error().code(),
            ErrorCode::kInvalidArgument);
}

TEST_P(CoreServiceTest, APutReplacesTheActivitysTokenSet) {
  const Conversation c = Create(alice_, {});
  const Activity a = Post(alice_, c);
  const Activity b = Post(alice_, c);
  auto match = [&](const std::string& token) {
    SearchQuery query;
    query.queries = {{c.id, {token}}};
    std::vector<std::string> out;
    auto page = service_->MatchTokens(indexer_, query);
    EXPECT_TRUE(page.ok());
    if (page.ok()) {
      for (const IndexMatch& m : page->items) out.push_back(m.activity_id);
    }
    return out;
  };
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, a.id, {"one", "two", "three"}).ok());
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, b.id, {"two", "four"}).ok());
  const auto stored = Counts();
  // A replay (the indexer crashed before it moved its cursor) stores the same set.
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, a.id, {"three", "one", "two", "one"}).ok());
  EXPECT_EQ(Counts(), stored);
  EXPECT_EQ(match("one"), (std::vector<std::string>{a.id}));
  // A shorter set removes the rest; b's tokens stay as they were.
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, a.id, {"two", "five"}).ok());
  EXPECT_TRUE(match("one").empty());
  EXPECT_TRUE(match("three").empty());
  EXPECT_EQ(match("five"), (std::vector<std::string>{a.id}));
  EXPECT_EQ(match("two"), (std::vector<std::string>{b.id, a.id}));
  EXPECT_EQ(match("four"), (std::vector<std::string>{b.id}));
  EXPECT_EQ(Entries(), 4);
  // An empty set removes them all.
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, a.id, {}).ok());
  EXPECT_EQ(match("two"), (std::vector<std::string>{b.id}));
  EXPECT_EQ(Entries(), 2);
}

TEST_P(CoreServiceTest, ATokenAgreeingWithAnotherOn24BitsMatchesItsActivities) {
  // The store keeps 24 bits of each token (posting_chunk.h): two tokens that agree on them are one
  // to a search, a false positive the client drops when it decrypts the activity. Two such tokens,
  // found by trying names until two agree (some 5,000 tries), and one that shares the bucket only.
  std::map<internal::IndexKey, std::string> seen;
  std::string first, second;
  for (int i = 0; second.empty(); ++i) {
    std::string token = "collide" + std::to_string(i);
    auto [it, added] = seen.emplace(internal::IndexKey::Of(token), token);
    if (!added) {
      first = it->second;
      second = std::move(token);
    }
  }
  const internal::IndexKey key = internal::IndexKey::Of(first);
  std::set<internal::IndexKey> taken = {key};
  const std::string bucket_only = TokenInBucket(key.bucket, "near", &taken);
  ASSERT_NE(first, second);

  const Conversation c = Create(alice_, {});
  const Activity has_first = Post(alice_, c);
  const Activity has_bucket_only = Post(alice_, c);
  const Activity has_second = Post(alice_, c);
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, has_first.id, {first, "other"}).ok());
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, has_bucket_only.id, {bucket_only}).ok());
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, has_second.id, {second}).ok());

  EXPECT_EQ(Match(c, {second}), (std::vector<std::string>{has_second.id, has_first.id}));
  EXPECT_EQ(Match(c, {first}), (std::vector<std::string>{has_second.id, has_first.id}));
  EXPECT_EQ(Match(c, {second, "other"}), (std::vector<std::string>{has_first.id}));
  EXPECT_EQ(Match(c, {bucket_only}), (std::vector<std::string>{has_bucket_only.id}));
  // A query's two tokens that agree are one.
  EXPECT_EQ(Match(c, {first, second}), (std::vector<std::string>{has_second.id, has_first.id}));
  // Within one activity they are one entry.
  const Activity has_both = Post(alice_, c);
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, has_both.id, {first, second}).ok());
  EXPECT_EQ(EntriesOf(has_both), (std::vector<internal::IndexKey>{key}));
}

TEST_P(CoreServiceTest, ChunksSplitAndMatchAsAScanWouldWhateverTheOrderOfPuts) {
  const Conversation c = Create(alice_, {});
  // Four tokens in one bucket, so that its entries fill several chunks, and a few elsewhere.
  std::set<internal::IndexKey> taken;
  const std::uint8_t dense = internal::IndexKey::Of("dense").bucket;
  std::vector<std::string> tokens;
  for (int i = 0; i < 4; ++i) tokens.push_back(TokenInBucket(dense, "dense", &taken));
  for (const char* other : {"sparse1", "sparse2"}) {
    ASSERT_NE(internal::IndexKey::Of(other).bucket, dense);
    tokens.push_back(other);
  }
  std::vector<Activity> posts;
  for (int i = 0; i < 240; ++i) posts.push_back(Post(alice_, c));
  std::mt19937 rng(14);
  std::map<std::string, std::vector<std::string>> sets;  // activity id -> its tokens
  auto put = [&](const Activity& a, bool empty) {
    std::vector<std::string> set;
    if (!empty) {
      for (const std::string& token : tokens) {
        if (rng() % 2) set.push_back(token);
      }
      set.push_back("decoy" + std::to_string(rng()));
    }
    ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, a.id, set).ok());
    sets[a.id] = set;
  };
  // Out of seq order (entries put in a chunk's middle split it), then a third replaced and some
  // removed.
  std::vector<Activity> order = posts;
  std::shuffle(order.begin(), order.end(), rng);
  for (const Activity& a : order) put(a, false);
  std::shuffle(order.begin(), order.end(), rng);
  for (std::size_t i = 0; i < order.size() / 3; ++i) put(order[i], i % 8 == 0);

  std::int64_t dense_chunks = 0;
  std::int64_t largest = 0;
  ASSERT_TRUE(db_->WithSession([&](Poco::Data::Session& s) -> Status {
                   SqlStatement count =
                       Database::Prepare(s, "SELECT COUNT(*) FROM index_postings WHERE bucket = ?");
                   count.Bind(std::int64_t{dense});
                   if (count.Next()) dense_chunks = count.Int(0);
                   SqlStatement size =
                       Database::Prepare(s, "SELECT MAX(LENGTH(entries)) FROM index_postings");
                   if (size.Next()) largest = size.Int(0);
                   return OkStatus();
                 })
                  .ok());
  EXPECT_GE(dense_chunks, 3);
  EXPECT_LE(largest, static_cast<std::int64_t>(internal::IndexPostings::kChunkBytes));
  for (const Activity& a : posts) EXPECT_EQ(EntriesOf(a), KeysOf(sets[a.id])) << a.seq;

  // Every query of one to three of the tokens, paged, against a scan of what was put.
  auto scan = [&](const std::vector<std::string>& query) {
    std::vector<std::string> ids;
    for (auto it = posts.rbegin(); it != posts.rend(); ++it) {
      const std::vector<std::string>& set = sets[it->id];
      if (std::all_of(query.begin(), query.end(), [&](const std::string& t) {
            return std::find(set.begin(), set.end(), t) != set.end();
          })) {
        ids.push_back(it->id);
      }
    }
    return ids;
  };
  std::size_t found = 0;
  for (std::size_t a = 0; a < tokens.size(); ++a) {
    EXPECT_EQ(Match(c, {tokens[a]}, 7), scan({tokens[a]})) << tokens[a];
    for (std::size_t b = a + 1; b < tokens.size(); ++b) {
      EXPECT_EQ(Match(c, {tokens[a], tokens[b]}, 7), scan({tokens[a], tokens[b]}));
      for (std::size_t d = b + 1; d < tokens.size(); ++d) {
        const std::vector<std::string> three = {tokens[a], tokens[b], tokens[d]};
        const std::vector<std::string> expected = scan(three);
        EXPECT_EQ(Match(c, three, 5), expected);
        found += expected.size();
      }
    }
  }
  EXPECT_GT(found, 100u);  // the queries found something to compare
}

TEST_P(CoreServiceTest, AnActivitysMostTokensMayAllBeInOneBucket) {
  // 512 tokens with distinct keys in one bucket: the activity's entries are one chunk, larger than
  // a chunk grows otherwise (an activity's entries are never split), and a later activity's entry
  // starts the next chunk.
  const Conversation c = Create(alice_, {});
  const Activity full = Post(alice_, c);
  const Activity next = Post(alice_, c);
  std::set<internal::IndexKey> taken;
  std::vector<std::string> tokens;
  for (int i = 0; tokens.size() < kMaxIndexTokensPerActivity; ++i) {
    std::string token = "full" + std::to_string(i);
    const internal::IndexKey key = internal::IndexKey::Of(token);
    if (key.bucket == 7 && taken.insert(key).second) tokens.push_back(std::move(token));
  }
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, full.id, tokens).ok());
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, next.id, {tokens[0]}).ok());
  EXPECT_EQ(EntriesOf(full).size(), kMaxIndexTokensPerActivity);
  EXPECT_GT(ChunkBytes(c.id, full.seq, 7).size(), internal::IndexPostings::kChunkBytes);
  EXPECT_EQ(ChunkBytes(c.id, next.seq, 7).size(), 3u);
  EXPECT_EQ(Count("index_postings"), 2);
  const std::vector<std::string> most(tokens.end() - kMaxSearchTokens, tokens.end());
  EXPECT_EQ(Match(c, most), (std::vector<std::string>{full.id}));
  EXPECT_EQ(Match(c, {tokens[0]}), (std::vector<std::string>{next.id, full.id}));
  // Replaced by a set of one, in place.
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, full.id, {tokens[1]}).ok());
  EXPECT_EQ(Entries(), 2);
  EXPECT_EQ(Match(c, most), std::vector<std::string>{});
  EXPECT_EQ(Match(c, {tokens[1]}), (std::vector<std::string>{full.id}));
}

TEST_F(CoreServiceSqliteTest, Migration4ConvertsTheTokenRowsAndLeavesNoTokenText) {
  // A database as migrations 1-3 left it, with a row per token.
  service_.reset();
  db_.reset();
  for (const char* name : {"core.db", "core.db-wal", "core.db-shm"}) {
    std::filesystem::remove(dir_ / name);
  }
  const std::vector<Migration> all = CoreService::Migrations();
  ASSERT_EQ(all.size(), 4u);
  const std::string room1 = internal::NewUuid(), room2 = internal::NewUuid();
  const std::vector<std::string> tokens = {"bWlncmF0ZWQtb25l", "bWlncmF0ZWQtdHdv",
                                           "bWlncmF0ZWQtdGhyZWU"};
  std::vector<std::string> ids;
  {
    auto v3 = Database::OpenSqlite((dir_ / "core.db").string(), std::span(all).first(3));
    ASSERT_TRUE(v3.ok()) << v3.error().ToString();
    ASSERT_TRUE((*v3)
                    ->InTransaction([&](Poco::Data::Session& s) -> Status {
                      for (const std::string& id : {room1, room2}) {
                        s << "INSERT INTO conversations (id, kms_resource_uri, current_key_uri, "
                             "encrypted_title, created_by, created_ms, last_seq, created_by_org) "
                             "VALUES (?, ?, ?, '', 'alice@acme.test', 1, 0, 'acme')",
                            useRef(id), Poco::Data::Keywords::bind(ResourceUri()),
                            Poco::Data::Keywords::bind(KeyUri()), now;
                      }
                      for (int seq = 1; seq <= 6; ++seq) {
                        ids.push_back(internal::NewUuid());
                        s << "INSERT INTO activities (seq, id, conversation_id, actor, verb, "
                             "content, key_uri, object_users, file_ids, client_activity_id, "
                             "published_ms) VALUES (?, ?, ?, 'alice@acme.test', 'post', 'x', "
                             "'k', '[]', '[]', '', 1)",
                            Poco::Data::Keywords::bind(seq), useRef(ids.back()),
                            useRef(seq % 2 ? room1 : room2), now;
                        // Every activity has token 0, even ones token 1, the last token 2.
                        for (std::size_t t = 0; t < tokens.size(); ++t) {
                          if ((t == 1 && seq % 2) || (t == 2 && seq != 6)) continue;
                          s << "INSERT INTO index_tokens (token, conversation_id, seq) "
                               "VALUES (?, ?, ?)",
                              useRef(tokens[t]), useRef(seq % 2 ? room1 : room2),
                              Poco::Data::Keywords::bind(seq), now;
                        }
                      }
                      return OkStatus();
                    })
                    .ok());
  }
  ASSERT_FALSE(FilesHolding(tokens).empty()) << "the scan finds no stored token";

  auto migrated = Database::OpenSqlite((dir_ / "core.db").string(), all);
  ASSERT_TRUE(migrated.ok()) << migrated.error().ToString();
  EXPECT_EQ((*migrated)->schema_version(), 4);
  // The old rows' text is gone from the database and its log as soon as it is open.
  EXPECT_EQ(FilesHolding(tokens), std::vector<std::string>{});
  migrated->reset();

  Open();
  EXPECT_EQ(Count("index_rooms"), 2);
  EXPECT_EQ(Count("index_sets"), 6);
  EXPECT_EQ(Entries(), 6 + 3 + 1);
  Poco::Int64 old_tables = -1;
  ASSERT_TRUE(db_->WithSession([&](Poco::Data::Session& s) -> Status {
                   s << "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'index_tokens%'",
                       into(old_tables), now;
                   return OkStatus();
                 })
                  .ok());
  EXPECT_EQ(old_tables, 0);
  // The same tokens find the same activities.
  Conversation c1, c2;
  c1.id = room1;
  c2.id = room2;
  EXPECT_EQ(Match(c1, {tokens[0]}), (std::vector<std::string>{ids[4], ids[2], ids[0]}));
  EXPECT_EQ(Match(c2, {tokens[0], tokens[1]}, 1),
            (std::vector<std::string>{ids[5], ids[3], ids[1]}));
  EXPECT_EQ(Match(c1, {tokens[1]}), std::vector<std::string>{});
  EXPECT_EQ(Match(c2, {tokens[2]}), (std::vector<std::string>{ids[5]}));
  // And the store goes on from there.
  Activity sixth;
  sixth.id = ids[5];
  sixth.conversation_id = room2;
  sixth.seq = 6;
  EXPECT_EQ(EntriesOf(sixth), KeysOf(tokens));
}

// --- edits and retractions ------------------------------------------------------------------

TEST_P(CoreServiceTest, AnEditIsAnActivityOfItsOwnAndTheMessageCarriesTheNewContent) {
  const Conversation c = Create(alice_, {bob_.user_id});
  const Activity post = Post(alice_, c, "first words");
  const Activity later = Post(bob_, c, "a reply");
  const std::string new_content = Jwe(c.current_key_uri, "better words");
  auto edited = service_->EditActivity(alice_, c.id, post.id, new_content);
  ASSERT_TRUE(edited.ok()) << edited.error().ToString();
  EXPECT_EQ(edited->verb, "edit");
  EXPECT_EQ(edited->seq, later.seq + 1);  // the next seq: the stream has no gap and no reuse
  EXPECT_EQ(edited->actor, alice_.user_id);
  EXPECT_EQ(edited->content, new_content);
  EXPECT_EQ(edited->key_uri, c.current_key_uri);
  EXPECT_EQ(edited->target_id, post.id);
  EXPECT_EQ(edited->target_seq, post.seq);
  // Heard by every participant, like any activity.
  const auto heard = Heard();
  ASSERT_FALSE(heard.empty());
  EXPECT_EQ(heard.back().first.id, edited->id);
  EXPECT_EQ(heard.back().first.target_id, post.id);
  EXPECT_EQ(heard.back().second, (std::vector<std::string>{alice_.user_id, bob_.user_id}));
  EXPECT_EQ(service_->GetConversation(bob_, c.id)->last_seq, edited->seq);

  // The message keeps its seq and carries the new content and when it changed.
  auto message = service_->GetActivity(bob_, c.id, post.id);
  ASSERT_TRUE(message.ok());
  EXPECT_EQ(message->seq, post.seq);
  EXPECT_EQ(message->verb, "post");
  EXPECT_EQ(message->content, new_content);
  EXPECT_EQ(message->edited_ms, edited->published_ms);
  EXPECT_EQ(message->retracted_ms, 0);
  auto page = service_->History(bob_, c.id, {});
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->items.size(), 4u);
  EXPECT_EQ(page->items[1].id, post.id);
  EXPECT_EQ(page->items[1].content, new_content);
  EXPECT_EQ(page->items[3].id, edited->id);

  // A second edit supersedes the first: the first edit's content is gone too.
  const std::string newest = Jwe(c.current_key_uri, "best words");
  auto again = service_->EditActivity(alice_, c.id, post.id, newest);
  ASSERT_TRUE(again.ok()) << again.error().ToString();
  EXPECT_EQ(service_->GetActivity(bob_, c.id, post.id)->content, newest);
  auto first_edit = service_->GetActivity(bob_, c.id, edited->id);
  ASSERT_TRUE(first_edit.ok());
  EXPECT_EQ(first_edit->verb, "edit");
  EXPECT_EQ(first_edit->target_id, post.id);
  EXPECT_TRUE(first_edit->content.empty());
  EXPECT_TRUE(first_edit->key_uri.empty());
  EXPECT_EQ(service_->GetActivity(bob_, c.id, again->id)->content, newest);
  // The other message is untouched.
  EXPECT_EQ(service_->GetActivity(bob_, c.id, later.id)->content, later.content);
  EXPECT_EQ(service_->GetActivity(bob_, c.id, later.id)->edited_ms, 0);

  // The realtime replay carries the message as it is now, then both edits.
  auto events = service_->EventsSince(bob_.user_id, post.seq - 1, 10);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 4u);
  EXPECT_EQ((*events)[0].content, newest);
  EXPECT_EQ((*events)[2].id, edited->id);
  EXPECT_EQ((*events)[3].id, again->id);
}

TEST_P(CoreServiceTest, ARetriedEditIsStoredOnce) {
  const Conversation c = Create(alice_, {});
  const Activity post = Post(alice_, c);
  const std::string content = Jwe(c.current_key_uri, "edited");
  auto first = service_->EditActivity(alice_, c.id, post.id, content);
  ASSERT_TRUE(first.ok()) << first.error().ToString();
  const std::size_t heard = Heard().size();
  const auto counts = Counts();
  // Even after a rotation: the retry finds what the first attempt stored.
  ASSERT_TRUE(service_->RotateKey(alice_, c.id, KeyUri()).ok());
  auto second = service_->EditActivity(alice_, c.id, post.id, content);
  ASSERT_TRUE(second.ok()) << second.error().ToString();
  EXPECT_EQ(second->id, first->id);
  EXPECT_EQ(Counts()["activities"], counts.at("activities") + 1);  // the rotation only
  EXPECT_EQ(Heard().size(), heard + 1);
  // The content the post had in the first place changes nothing either: the answer is the post.
  const Activity other = Post(alice_, c);
  auto unchanged = service_->EditActivity(alice_, c.id, other.id, other.content);
  ASSERT_TRUE(unchanged.ok()) << unchanged.error().ToString();
  EXPECT_EQ(unchanged->id, other.id);
  EXPECT_EQ(unchanged->edited_ms, 0);
}

TEST_P(CoreServiceTest, ARetractionLeavesATombstoneAndRetractingAgainChangesNothing) {
  const Conversation c = Create(alice_, {bob_.user_id});
  auto upload = service_->BeginUpload(bob_, c.id);
  ASSERT_TRUE(upload.ok());
  ASSERT_TRUE((*upload)->Write("blob", 4).ok());
  auto file = service_->FinishUpload(std::move(*upload));
  ASSERT_TRUE(file.ok());
  NewPost share;
  share.content = Jwe(c.current_key_uri, "the file reference");
  share.file_ids = {file->id};
  share.client_activity_id = "share-1";
  auto shared = service_->PostActivity(bob_, c.id, share);
  ASSERT_TRUE(shared.ok()) << shared.error().ToString();
  ASSERT_EQ(shared->verb, "share");

  auto retracted = service_->RetractActivity(bob_, c.id, shared->id);
  ASSERT_TRUE(retracted.ok()) << retracted.error().ToString();
  EXPECT_EQ(retracted->verb, "retract");
  EXPECT_EQ(retracted->seq, shared->seq + 1);
  EXPECT_EQ(retracted->target_id, shared->id);
  EXPECT_EQ(retracted->target_seq, shared->seq);
  EXPECT_TRUE(retracted->content.empty());
  EXPECT_EQ(Heard().back().first.id, retracted->id);

  auto tombstone = service_->GetActivity(alice_, c.id, shared->id);
  ASSERT_TRUE(tombstone.ok());
  EXPECT_EQ(tombstone->seq, shared->seq);
  EXPECT_EQ(tombstone->verb, "share");
  EXPECT_EQ(tombstone->actor, bob_.user_id);
  EXPECT_TRUE(tombstone->content.empty());
  EXPECT_TRUE(tombstone->key_uri.empty());
  EXPECT_TRUE(tombstone->file_ids.empty());
  EXPECT_EQ(tombstone->retracted_ms, retracted->published_ms);

  // Again: the same retraction, nothing stored, nothing heard.
  const auto counts = Counts();
  const std::size_t heard = Heard().size();
  auto again = service_->RetractActivity(bob_, c.id, shared->id);
  ASSERT_TRUE(again.ok()) << again.error().ToString();
  EXPECT_EQ(again->id, retracted->id);
  EXPECT_EQ(Counts(), counts);
  EXPECT_EQ(Heard().size(), heard);
  // A retried post of the retracted message gets it as it is now, not a conflict.
  auto retried = service_->PostActivity(bob_, c.id, share);
  ASSERT_TRUE(retried.ok()) << retried.error().ToString();
  EXPECT_EQ(retried->id, shared->id);
  EXPECT_NE(retried->retracted_ms, 0);
  // A retracted message cannot be edited.
  auto edit = service_->EditActivity(bob_, c.id, shared->id, Jwe(c.current_key_uri, "x"));
  ASSERT_FALSE(edit.ok());
  EXPECT_EQ(edit.error().code(), ErrorCode::kInvalidArgument);  // a share is never edited
  const Activity post = Post(alice_, c, "to retract");
  ASSERT_TRUE(service_->RetractActivity(alice_, c.id, post.id).ok());
  edit = service_->EditActivity(alice_, c.id, post.id, Jwe(c.current_key_uri, "x"));
  ASSERT_FALSE(edit.ok());
  EXPECT_EQ(edit.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(Counts()["activities"], counts.at("activities") + 2);  // the post, its retraction
}

TEST_P(CoreServiceTest, OnlyTheAuthorEditsOrRetractsAMessageAndBadRequestsChangeNothing) {
  const Conversation c = Create(alice_, {bob_.user_id});
  const Conversation other = Create(alice_, {});
  const Activity post = Post(alice_, c, "alice's words");
  const Activity elsewhere = Post(alice_, other, "elsewhere");
  const std::string old_key = c.current_key_uri;
  auto rotated = service_->RotateKey(alice_, c.id, KeyUri());
  ASSERT_TRUE(rotated.ok());
  const std::string key = rotated->key_uri;
  auto edit = service_->EditActivity(alice_, c.id, post.id, Jwe(key, "edit"));
  ASSERT_TRUE(edit.ok()) << edit.error().ToString();
  const auto counts = Counts();
  const std::size_t heard = Heard().size();
  const std::int64_t last = service_->LastSeq();

  auto edit_refused = [&](const Caller& caller, const std::string& id,
                          const std::string& activity_id, const std::string& content,
                          ErrorCode code, const std::string& name) {
    auto answer = service_->EditActivity(caller, id, activity_id, content);
    ASSERT_FALSE(answer.ok()) << name;
    EXPECT_EQ(answer.error().code(), code) << name << ": " << answer.error().ToString();
  };
  auto retract_refused = [&](const Caller& caller, const std::string& id,
                             const std::string& activity_id, ErrorCode code,
                             const std::string& name) {
    auto answer = service_->RetractActivity(caller, id, activity_id);
    ASSERT_FALSE(answer.ok()) << name;
    EXPECT_EQ(answer.error().code(), code) << name << ": " << answer.error().ToString();
  };
  const std::string good = Jwe(key, "a good edit");
  edit_refused(bob_, c.id, post.id, good, ErrorCode::kPermissionDenied, "another participant");
  retract_refused(bob_, c.id, post.id, ErrorCode::kPermissionDenied, "another participant");
  edit_refused(carol_, c.id, post.id, good, ErrorCode::kNotFound, "not a participant");
  retract_refused(carol_, c.id, post.id, ErrorCode::kNotFound, "not a participant");
  edit_refused(alice_, c.id, internal::NewUuid(), good, ErrorCode::kNotFound, "no such activity");
  retract_refused(alice_, c.id, "not-a-uuid", ErrorCode::kNotFound, "not an id");
  edit_refused(alice_, c.id, elsewhere.id, good, ErrorCode::kNotFound, "another conversation's");
  retract_refused(alice_, internal::NewUuid(), post.id, ErrorCode::kNotFound, "no conversation");
  // Only messages: not the creation, a rotation, an edit or a retraction.
  const std::string create_id = service_->History(alice_, c.id, {})->items.front().id;
  edit_refused(alice_, c.id, create_id, good, ErrorCode::kInvalidArgument, "the creation");
  retract_refused(alice_, c.id, rotated->id, ErrorCode::kInvalidArgument, "a rotation");
  edit_refused(alice_, c.id, edit->id, good, ErrorCode::kInvalidArgument, "an edit");
  retract_refused(alice_, c.id, edit->id, ErrorCode::kInvalidArgument, "an edit");
  // The content as a post's.
  edit_refused(alice_, c.id, post.id, Jwe(old_key, "old key"), ErrorCode::kFailedPrecondition,
               "under the key before the rotation");
  edit_refused(alice_, c.id, post.id, Jwe(KeyUri(), "unknown key"), ErrorCode::kInvalidArgument,
               "under a key never declared");
  edit_refused(alice_, c.id, post.id, "plain words", ErrorCode::kInvalidArgument, "not a JWE");
  edit_refused(alice_, c.id, post.id, "", ErrorCode::kInvalidArgument, "empty");
  edit_refused(alice_, c.id, post.id, Jwe(key, std::string(kMaxContentBytes, 'x')),
               ErrorCode::kInvalidArgument, "too large");
  auto old_key_error = service_->EditActivity(alice_, c.id, post.id, Jwe(old_key, "old key"));
  EXPECT_EQ(old_key_error.error().reason(), ErrorReason::kKeyRotationRequired);

  EXPECT_EQ(Counts(), counts);
  EXPECT_EQ(Heard().size(), heard);
  EXPECT_EQ(service_->LastSeq(), last);
  EXPECT_EQ(service_->GetActivity(alice_, c.id, post.id)->content, edit->content);
  // A participant who was the author but left may no longer change it.
  ASSERT_TRUE(service_->RemoveParticipant(alice_, c.id, alice_.user_id).ok());
  edit_refused(alice_, c.id, post.id, good, ErrorCode::kNotFound, "the author who left");
}

TEST_P(CoreServiceTest, EditsAndRetractionsRemoveTheMessagesIndexTokensAndLateOnesAreNotStored) {
  const Conversation c = Create(alice_, {});
  const Activity post = Post(alice_, c, "old words");
  const Activity kept = Post(alice_, c, "other words");
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, post.id, {"old", "words"}).ok());
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, kept.id, {"other", "words"}).ok());
  auto match = [&](const std::vector<std::string>& tokens) {
    SearchQuery query;
    query.queries = {{c.id, tokens}};
    std::vector<std::string> ids;
    auto page = service_->MatchTokens(indexer_, query);
    EXPECT_TRUE(page.ok());
    if (page.ok()) {
      for (const IndexMatch& m : page->items) ids.push_back(m.activity_id);
    }
    return ids;
  };
  ASSERT_EQ(match({"old"}), (std::vector<std::string>{post.id}));

  auto edit = service_->EditActivity(alice_, c.id, post.id, Jwe(c.current_key_uri, "new text"));
  ASSERT_TRUE(edit.ok()) << edit.error().ToString();
  EXPECT_TRUE(match({"old"}).empty());
  EXPECT_EQ(match({"words"}), (std::vector<std::string>{kept.id}));
  EXPECT_EQ(Entries(), 2);
  // An indexer still behind puts the old text's tokens: nothing is stored.
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, post.id, {"old", "words"}).ok());
  EXPECT_TRUE(match({"old"}).empty());
  EXPECT_EQ(Entries(), 2);
  // The edit's tokens are the message's: a search finds the message.
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, edit->id, {"new", "text"}).ok());
  EXPECT_EQ(match({"new", "text"}), (std::vector<std::string>{post.id}));

  auto newer = service_->EditActivity(alice_, c.id, post.id, Jwe(c.current_key_uri, "newer"));
  ASSERT_TRUE(newer.ok()) << newer.error().ToString();
  EXPECT_TRUE(match({"new"}).empty());
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, edit->id, {"new", "text"}).ok());
  EXPECT_TRUE(match({"new"}).empty()) << "a superseded edit's tokens were stored";
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, newer->id, {"newer"}).ok());
  EXPECT_EQ(match({"newer"}), (std::vector<std::string>{post.id}));

  auto retracted = service_->RetractActivity(alice_, c.id, post.id);
  ASSERT_TRUE(retracted.ok()) << retracted.error().ToString();
  EXPECT_TRUE(match({"newer"}).empty());
  EXPECT_EQ(Entries(), 2);
  for (const std::string& id : {post.id, edit->id, newer->id, retracted->id}) {
    ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, id, {"late"}).ok());
  }
  EXPECT_TRUE(match({"late"}).empty());
  EXPECT_EQ(Entries(), 2);
  EXPECT_EQ(match({"other"}), (std::vector<std::string>{kept.id}));
}

TEST_F(CoreServiceSqliteTest, TheOldContentAndTokensAreGoneFromTheDatabaseAndItsLogWhenAnswered) {
  const Conversation c = Create(alice_, {bob_.user_id});
  // Messages around them on the same pages, a long one on overflow pages of its own.
  std::vector<Activity> posted;
  for (int i = 0; i < 40; ++i) posted.push_back(Post(i % 2 ? alice_ : bob_, c, "filler"));
  const Activity small = Post(alice_, c, "a short message");
  const Activity large = Post(bob_, c, std::string(20000, 'L'));
  posted.push_back(small);
  posted.push_back(large);
  for (int i = 0; i < 40; ++i) posted.push_back(Post(i % 2 ? alice_ : bob_, c, "filler"));
  const std::vector<std::string> tokens = {"c21hbGwtdG9rZW4tb25l", "bGFyZ2UtdG9rZW4tdHdv"};
  // The store keeps 24 bits of a token, an entry in a chunk of its bucket's entries: the fillers'
  // entries in the same buckets make each chunk long enough for the scan to tell it apart.
  const std::uint8_t small_bucket = internal::IndexKey::Of(tokens[0]).bucket;
  const std::uint8_t large_bucket = internal::IndexKey::Of(tokens[1]).bucket;
  ASSERT_NE(small_bucket, large_bucket);
  const std::vector<std::string> fillers = {TokenInBucket(small_bucket, "filler"),
                                            TokenInBucket(large_bucket, "filler")};
  for (const Activity& a : posted) {  // in seq order, as indexerd puts them
    const std::vector<std::string> put = a.id == small.id   ? std::vector{tokens[0]}
                                         : a.id == large.id ? std::vector{tokens[1]}
                                                            : fillers;
    ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, a.id, put).ok());
  }
  const std::string small_chunk = ChunkBytes(c.id, small.seq, small_bucket);
  const std::string large_chunk = ChunkBytes(c.id, large.seq, large_bucket);
  ASSERT_GT(small_chunk.size(), 200u);
  ASSERT_GT(large_chunk.size(), 200u);
  ASSERT_FALSE(FilesHolding(Pieces(small.content)).empty()) << "the scan finds nothing stored";
  ASSERT_FALSE(FilesHolding(Pieces(large.content)).empty()) << "the scan finds nothing stored";
  ASSERT_FALSE(FilesHolding({small_chunk}).empty()) << "the scan finds no stored chunk";
  ASSERT_FALSE(FilesHolding({large_chunk}).empty()) << "the scan finds no stored chunk";
  EXPECT_EQ(FilesHolding(tokens), std::vector<std::string>{}) << "a token's text is stored";

  const std::string replacement = Jwe(c.current_key_uri, "the edited message");
  auto edited = service_->EditActivity(alice_, c.id, small.id, replacement);
  ASSERT_TRUE(edited.ok()) << edited.error().ToString();
  EXPECT_EQ(FilesHolding(Pieces(small.content)), std::vector<std::string>{});
  EXPECT_EQ(FilesHolding({small_chunk}), std::vector<std::string>{});
  EXPECT_FALSE(FilesHolding(Pieces(replacement)).empty());
  EXPECT_TRUE(EntriesOf(small).empty());
  EXPECT_EQ(Match(c, {fillers[0]}).size(), 80u);  // the chunk's other entries stay

  ASSERT_TRUE(service_->RetractActivity(bob_, c.id, large.id).ok());
  EXPECT_EQ(FilesHolding(Pieces(large.content)), std::vector<std::string>{});
  EXPECT_EQ(FilesHolding({large_chunk}), std::vector<std::string>{});
  EXPECT_TRUE(EntriesOf(large).empty());
  EXPECT_EQ(Match(c, {fillers[1]}).size(), 80u);
  // And after a restart, which reads the database and its log again.
  Reopen();
  EXPECT_EQ(FilesHolding(Pieces(small.content)), std::vector<std::string>{});
  EXPECT_EQ(FilesHolding(Pieces(large.content)), std::vector<std::string>{});
  EXPECT_EQ(FilesHolding({small_chunk, large_chunk}), std::vector<std::string>{});
  EXPECT_EQ(service_->GetActivity(alice_, c.id, small.id)->content, replacement);
}

TEST_F(CoreServiceSqliteTest, AReaderHoldingTheLogDelaysTheScrubUntilItEnds) {
  DatabaseOptions options;
  options.busy_timeout = std::chrono::milliseconds(200);
  Reopen({}, options);
  const Conversation c = Create(alice_, {});
  const Activity post = Post(alice_, c, "words to take back");
  // A reader whose snapshot holds the post, until told to end.
  std::mutex mutex;
  std::condition_variable changed;
  bool reading = false, release = false;
  std::thread reader([&] {
    (void)db_->WithSession([&](Poco::Data::Session& s) -> Status {
      s << "BEGIN", now;
      Poco::Int64 n = 0;
      s << "SELECT COUNT(*) FROM activities", into(n), now;
      {
        std::unique_lock lock(mutex);
        reading = true;
        changed.notify_all();
        changed.wait(lock, [&] { return release; });
      }
      s << "COMMIT", now;
      return OkStatus();
    });
  });
  {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return reading; });
  }
  // Answered although the log could not be emptied; the old bytes are still there.
  auto retracted = service_->RetractActivity(alice_, c.id, post.id);
  ASSERT_TRUE(retracted.ok()) << retracted.error().ToString();
  EXPECT_FALSE(FilesHolding(Pieces(post.content)).empty())
      << "the reader did not hold the log: this test shows nothing";
  {
    std::lock_guard lock(mutex);
    release = true;
  }
  changed.notify_all();
  reader.join();
  // The writer tries again on its own, with nothing else to do.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!FilesHolding(Pieces(post.content)).empty() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(FilesHolding(Pieces(post.content)), std::vector<std::string>{});
}

TEST_F(CoreServiceSqliteTest, AScrubLeftUndoneWhenTheServiceStoppedIsDoneWhenItStartsAgain) {
  DatabaseOptions options;
  options.busy_timeout = std::chrono::milliseconds(200);
  Reopen({}, options);
  const Conversation c = Create(alice_, {});
  const Activity post = Post(alice_, c, "words to take back");
  std::mutex mutex;
  std::condition_variable changed;
  bool reading = false, release = false;
  std::thread reader([&] {
    (void)db_->WithSession([&](Poco::Data::Session& s) -> Status {
      s << "BEGIN", now;
      Poco::Int64 n = 0;
      s << "SELECT COUNT(*) FROM activities", into(n), now;
      {
        std::unique_lock lock(mutex);
        reading = true;
        changed.notify_all();
        changed.wait(lock, [&] { return release; });
      }
      s << "COMMIT", now;
      return OkStatus();
    });
  });
  {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return reading; });
  }
  ASSERT_TRUE(service_->RetractActivity(alice_, c.id, post.id).ok());
  // Stopped while the reader still holds the log (as a crash would leave it), then released.
  service_.reset();
  {
    std::lock_guard lock(mutex);
    release = true;
  }
  changed.notify_all();
  reader.join();
  ASSERT_FALSE(FilesHolding(Pieces(post.content)).empty())
      << "the log was emptied before the service started again: this test shows nothing";

  CoreServiceConfig config;
  config.files_dir = (dir_ / "files").string();
  auto again = CoreService::New(config, *db_);
  ASSERT_TRUE(again.ok()) << again.error().ToString();
  service_ = std::move(again).value();
  // The writer empties the log before it takes its first change.
  Post(alice_, c, "after the start");
  EXPECT_EQ(FilesHolding(Pieces(post.content)), std::vector<std::string>{});
}

// --- durability and storage -----------------------------------------------------------------

TEST_P(CoreServiceTest, EverythingIsThereAfterARestart) {
  const Conversation c = Create(alice_, {bob_.user_id});
  Post(alice_, c);
  ASSERT_TRUE(service_->AddParticipants(alice_, c.id, {carol_.user_id}).ok());
  const std::string old_key = c.current_key_uri;
  ASSERT_TRUE(service_->RotateKey(bob_, c.id, KeyUri()).ok());
  NewPost retried;
  retried.content = Jwe(service_->GetConversation(alice_, c.id)->current_key_uri);
  retried.client_activity_id = "before-restart";
  const Activity posted = *service_->PostActivity(carol_, c.id, retried);
  ASSERT_TRUE(service_->PutIndexTokens(indexer_, c.id, posted.id, {"word"}).ok());
  auto upload = service_->BeginUpload(alice_, c.id);
  ASSERT_TRUE((*upload)->Write("blob", 4).ok());
  const FileInfo file = *service_->FinishUpload(std::move(*upload));
  const Conversation before = *service_->GetConversation(alice_, c.id);
  const HistoryPage history = *service_->History(alice_, c.id, {});
  const std::int64_t last_seq = service_->LastSeq();

  Reopen();

  EXPECT_EQ(service_->LastSeq(), last_seq);
  auto after = service_->GetConversation(carol_, c.id);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->participants, before.participants);
  EXPECT_EQ(after->current_key_uri, before.current_key_uri);
  EXPECT_EQ(after->last_seq, before.last_seq);
  auto reread = service_->History(alice_, c.id, {});
  ASSERT_TRUE(reread.ok());
  ASSERT_EQ(reread->items.size(), history.items.size());
  for (std::size_t i = 0; i < history.items.size(); ++i) {
    EXPECT_EQ(reread->items[i].id, history.items[i].id);
    EXPECT_EQ(reread->items[i].seq, history.items[i].seq);
    EXPECT_EQ(reread->items[i].content, history.items[i].content);
    EXPECT_EQ(reread->items[i].object_users, history.items[i].object_users);
    EXPECT_EQ(reread->items[i].published_ms, history.items[i].published_ms);
  }
  // The retry, the rotation, the file and the index survived too; new seqs continue.
  EXPECT_EQ(service_->PostActivity(carol_, c.id, retried)->id, posted.id);
  NewPost stale;
  stale.content = Jwe(old_key);
  EXPECT_EQ(service_->PostActivity(alice_, c.id, stale).error().code(),
            ErrorCode::kFailedPrecondition);
  EXPECT_EQ(Post(bob_, *after).seq, last_seq + 1);
  auto opened = service_->OpenFile(bob_, c.id, file.id);
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ(opened->first.sha256_hex, file.sha256_hex);
  SearchQuery query;
  query.queries = {{c.id, {"word"}}};
  auto matched = service_->MatchTokens(indexer_, query);
  ASSERT_TRUE(matched.ok());
  ASSERT_EQ(matched->items.size(), 1u);
  EXPECT_EQ(matched->items[0].activity_id, posted.id);
}

TEST_P(CoreServiceTest, RestartRemovesUnfinishedUploads) {
  const Conversation c = Create(alice_, {});
  auto upload = service_->BeginUpload(alice_, c.id);
  ASSERT_TRUE((*upload)->Write("partial", 7).ok());
  // A crash leaves the temporary file: simulate it by copying it aside and back.
  const std::vector<std::filesystem::path> temps = FilesUnder(dir_ / "files");
  ASSERT_EQ(temps.size(), 1u);
  const std::filesystem::path& temp = temps[0];
  std::filesystem::copy_file(temp, dir_ / "saved");
  upload->reset();
  std::filesystem::copy_file(dir_ / "saved", temp);
  Reopen();
  EXPECT_TRUE(FilesUnder(dir_ / "files").empty());
}

TEST_P(CoreServiceTest, NewRefusesADatabaseWithoutTheCoreSchema) {
  auto other = Database::OpenSqlite((dir_ / "other.db").string(), {});
  ASSERT_TRUE(other.ok());
  CoreServiceConfig config;
  config.files_dir = (dir_ / "files").string();
  auto service = CoreService::New(config, **other);
  ASSERT_FALSE(service.ok());
  EXPECT_EQ(service.error().code(), ErrorCode::kFailedPrecondition);
  config.files_dir = "";
  EXPECT_EQ(CoreService::New(config, *db_).error().code(), ErrorCode::kInvalidArgument);
  config.files_dir = (dir_ / "files").string();
  config.indexer_user_id = "indexer";
  EXPECT_EQ(CoreService::New(config, *db_).error().code(), ErrorCode::kInvalidArgument);
}

TEST_F(CoreServiceSqliteTest, HotQueriesUseTheirIndexes) {
  const std::string history = QueryPlan(internal::CoreStore::kHistoryNewestSql);
  EXPECT_NE(history.find("USING INDEX activities_by_conversation"), std::string::npos) << history;
  EXPECT_EQ(history.find("TEMP B-TREE"), std::string::npos) << history;

  // Per membership of the user, one index range of the conversation's activities bounded on
  // both sides (the interval and the cursor), at most `limit` long.
  const std::string events = QueryPlan(internal::CoreStore::kEventsSinceSql);
  EXPECT_NE(events.find("SEARCH m USING INDEX memberships_by_user (user_id=?)"), std::string::npos)
      << events;
  EXPECT_NE(events.find("SEARCH s USING COVERING INDEX activities_by_conversation "
                        "(conversation_id=? AND seq>? AND seq<?)"),
            std::string::npos)
      << events;
  EXPECT_EQ(events.find("SCAN"), std::string::npos) << events;

  // An edit's and a retraction's lookups by target, and the removal of a message's tokens.
  for (const char* sql :
       {internal::CoreStore::kClearEditsSql, internal::CoreStore::kLatestOfTargetSql}) {
    const std::string plan = QueryPlan(sql);
    EXPECT_NE(plan.find("USING INDEX activities_by_target (target_seq=?)"), std::string::npos)
        << plan;
  }
  // The search index store: a bucket's chunk at or below a seq is the last row of a range of the
  // primary key (read backwards, no sort); a room by its conversation, a bucket list by its seq.
  const std::string chunk = QueryPlan(internal::IndexPostings::kChunkAtOrBelowSql);
  EXPECT_NE(chunk.find("SEARCH index_postings USING PRIMARY KEY (room=? AND bucket=? AND "
                       "first_seq<?)"),
            std::string::npos)
      << chunk;
  EXPECT_EQ(chunk.find("TEMP B-TREE"), std::string::npos) << chunk;
  const std::string room = QueryPlan(internal::IndexPostings::kRoomSql);
  EXPECT_NE(room.find("USING COVERING INDEX sqlite_autoindex_index_rooms_1 (conversation_id=?)"),
            std::string::npos)
      << room;
  const std::string set = QueryPlan(internal::IndexPostings::kSetSql);
  EXPECT_NE(set.find("SEARCH index_sets USING INTEGER PRIMARY KEY (rowid=?)"), std::string::npos)
      << set;

  // The indexer's backlog: activities by seq from the cursor, each one's conversation by its key
  // (no scan of either table, no sort).
  const std::string backlog = QueryPlan(internal::CoreStore::kOrganizationEventsSinceSql);
  EXPECT_NE(backlog.find("SEARCH a USING INTEGER PRIMARY KEY (rowid>?)"), std::string::npos)
      << backlog;
  EXPECT_NE(backlog.find("SEARCH c USING INDEX sqlite_autoindex_conversations_1 (id=?)"),
            std::string::npos)
      << backlog;
  EXPECT_EQ(backlog.find("SCAN"), std::string::npos) << backlog;
  EXPECT_EQ(backlog.find("TEMP B-TREE"), std::string::npos) << backlog;

  const std::string list = QueryPlan(internal::CoreStore::kListConversationsSql);
  EXPECT_NE(list.find("SEARCH m USING INDEX memberships_by_user (user_id=? AND left_seq=?)"),
            std::string::npos)
      << list;
  EXPECT_EQ(list.find("SCAN"), std::string::npos) << list;
}

TEST(StringArrayTest, RoundTrips) {
  for (const std::vector<std::string>& values :
       {std::vector<std::string>{}, std::vector<std::string>{""},
        std::vector<std::string>{"a", "b\"c", "d\\e", "zoë", "[,]"}}) {
    EXPECT_EQ(internal::DecodeStringArray(internal::EncodeStringArray(values)), values);
  }
}

// Compliance: an officer of acme reads, ciphertext only, the conversations created by a user of
// acme that the named user is or was a member of; nobody else does.
TEST_P(CoreServiceTest, ComplianceOfficersReadTheirOrganizationsConversationsOfAUser) {
  const Caller officer{"officer@acme.test", "acme"};
  const Caller globex_officer{"officer@globex.test", "globex"};
  const Caller posing{"officer@acme.test", "globex"};  // listed for acme, token of globex
  CoreServiceConfig config;
  config.compliance_officers["acme"] = {officer.user_id};
  config.compliance_officers["globex"] = {globex_officer.user_id};
  Reopen(config);

  Conversation with_bob = Create(alice_, {bob_.user_id});
  const Activity hello = Post(alice_, with_bob, "hello bob");
  Conversation carol_only = Create(carol_, {});
  Conversation by_mallory = Create(mallory_, {alice_.user_id});  // created by another org
  Conversation left = Create(bob_, {alice_.user_id});
  Post(alice_, left, "before leaving");
  ASSERT_TRUE(service_->RemoveParticipant(alice_, left.id, alice_.user_id).ok());

  auto listed = service_->ComplianceConversations(officer, alice_.user_id, std::nullopt, 50);
  ASSERT_TRUE(listed.ok()) << listed.error().ToString();
  std::vector<std::string> ids;
  for (const Conversation& c : *listed) ids.push_back(c.id);
  EXPECT_EQ(ids, (std::vector<std::string>{left.id, with_bob.id}));  // newest activity first
  auto paged =
      service_->ComplianceConversations(officer, alice_.user_id, listed->front().last_seq, 50);
  ASSERT_TRUE(paged.ok());
  ASSERT_EQ(paged->size(), 1u);
  EXPECT_EQ(paged->front().id, with_bob.id);

  auto history = service_->ComplianceHistory(officer, alice_.user_id, with_bob.id, {});
  ASSERT_TRUE(history.ok()) << history.error().ToString();
  auto as_alice = service_->History(alice_, with_bob.id, {});
  ASSERT_TRUE(as_alice.ok());
  EXPECT_EQ(Ids(history->items), Ids(as_alice->items));  // exactly what participants read
  EXPECT_EQ(history->items.back().content, hello.content);
  // A conversation the user left is still hers to account for.
  EXPECT_TRUE(service_->ComplianceHistory(officer, alice_.user_id, left.id, {}).ok());

  // Not hers, created by another org, unknown: the same NOT_FOUND.
  for (const std::string& id : {carol_only.id, by_mallory.id, std::string("nope"),
                                std::string("00000000-0000-4000-8000-000000000000")}) {
    auto refused = service_->ComplianceHistory(officer, alice_.user_id, id, {});
    ASSERT_FALSE(refused.ok()) << id;
    EXPECT_EQ(refused.error().code(), ErrorCode::kNotFound) << id;
  }
  // An officer of another org sees none of acme's conversations.
  auto other = service_->ComplianceConversations(globex_officer, alice_.user_id, std::nullopt, 50);
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(other->empty());
  EXPECT_EQ(
      service_->ComplianceHistory(globex_officer, alice_.user_id, with_bob.id, {}).error().code(),
      ErrorCode::kNotFound);
  // Users who are not officers of their token's org are refused.
  for (const Caller& who : {alice_, bob_, mallory_, posing}) {
    EXPECT_EQ(
        service_->ComplianceConversations(who, alice_.user_id, std::nullopt, 50).error().code(),
        ErrorCode::kPermissionDenied)
        << who.user_id;
    EXPECT_EQ(service_->ComplianceHistory(who, alice_.user_id, with_bob.id, {}).error().code(),
              ErrorCode::kPermissionDenied)
        << who.user_id;
  }
  // Bad input.
  EXPECT_EQ(service_->ComplianceConversations(officer, "", std::nullopt, 50).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(
      service_->ComplianceConversations(officer, alice_.user_id, std::nullopt, 0).error().code(),
      ErrorCode::kInvalidArgument);
}

// A database of schema version 1 (before creators' organizations were recorded) is migrated in
// place: its conversations stay readable by their participants and are read by no officer.
TEST_F(CoreServiceSqliteTest, ConversationsFromBeforeMigration2AreReadByNoOfficer) {
  const Caller officer{"officer@acme.test", "acme"};
  service_.reset();
  db_.reset();
  const std::string path = (dir_ / "v1.db").string();
  const std::string id = "3d6f0c8e-1b2a-4c3d-8e9f-0a1b2c3d4e5f";
  {
    std::vector<Migration> v1 = {CoreService::Migrations().front()};
    auto old = Database::OpenSqlite(path, v1);
    ASSERT_TRUE(old.ok()) << old.error().ToString();
    Status written = (*old)->WithSession([&](Poco::Data::Session& s) -> Status {
      s << "INSERT INTO conversations VALUES (?, 'kms://kms.acme.test/resources/"
           "00000000-0000-4000-8000-000000000001', 'kms://kms.acme.test/keys/"
           "00000000-0000-4000-8000-000000000002', '', 'alice@acme.test', 1, 0)",
          useRef(id), now;
      s << "INSERT INTO memberships VALUES (?, 'alice@acme.test', 0, NULL)", useRef(id), now;
      return OkStatus();
    });
    ASSERT_TRUE(written.ok()) << written.error().ToString();
  }
  auto db = Database::OpenSqlite(path, CoreService::Migrations());
  ASSERT_TRUE(db.ok()) << db.error().ToString();
  EXPECT_EQ((*db)->schema_version(), static_cast<int>(CoreService::Migrations().size()));
  CoreServiceConfig config;
  config.files_dir = (dir_ / "files").string();
  config.compliance_officers["acme"] = {officer.user_id};
  auto service = CoreService::New(config, **db);
  ASSERT_TRUE(service.ok()) << service.error().ToString();
  auto mine = (*service)->ListConversations(alice_, std::nullopt, 50);
  ASSERT_TRUE(mine.ok()) << mine.error().ToString();
  ASSERT_EQ(mine->size(), 1u);
  EXPECT_EQ(mine->front().id, id);
  auto listed = (*service)->ComplianceConversations(officer, alice_.user_id, std::nullopt, 50);
  ASSERT_TRUE(listed.ok()) << listed.error().ToString();
  EXPECT_TRUE(listed->empty());
  EXPECT_EQ((*service)->ComplianceHistory(officer, alice_.user_id, id, {}).error().code(),
            ErrorCode::kNotFound);
}

// Issue 11: with acme's and globex's identity providers trusted, a user of either may be added (a
// room may cross organizations), a user whom no trusted provider signs for may not.
TEST_P(CoreServiceTest, UsersOfNoTrustedOrganizationAreNotAdded) {
  // A participant who joined before the rule applied can still be removed.
  const Conversation old = Create(alice_, {bob_.user_id, "legacy@initech.test"});
  auto subjects =
      SubjectOrganizations::New({{"https://idp.acme.test", "acme", {"acme.test"}},
                                 {"https://idp.globex.test", "globex", {"globex.test"}}});
  ASSERT_TRUE(subjects.ok()) << subjects.error().ToString();
  CoreServiceConfig config;
  config.organization_of = [subjects = *subjects](std::string_view user) {
    return subjects.OrganizationOf(user);
  };
  Reopen(config);

  const Conversation c = Create(alice_, {bob_.user_id, "gina@GLOBEX.test"});
  EXPECT_EQ(c.participants,
            (std::vector<std::string>{alice_.user_id, bob_.user_id, "gina@GLOBEX.test"}));
  const auto before = Counts();
  for (const std::string stranger : {"eve@initech.test", "eve", "eve@sub.acme.test"}) {
    NewConversation request;
    request.kms_resource_uri = ResourceUri();
    request.key_uri = KeyUri();
    request.participants = {carol_.user_id, stranger};
    auto created = service_->CreateConversation(alice_, request);
    ASSERT_FALSE(created.ok()) << stranger;
    EXPECT_EQ(created.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(created.error().message().find("'" + stranger + "'"), std::string::npos)
        << created.error().message();
    auto added = service_->AddParticipants(alice_, c.id, {carol_.user_id, stranger});
    ASSERT_FALSE(added.ok()) << stranger;
    EXPECT_EQ(added.error().code(), ErrorCode::kInvalidArgument);
  }
  EXPECT_EQ(Counts(), before) << "a refused change stored something";

  EXPECT_TRUE(service_->AddParticipants(alice_, c.id, {carol_.user_id, "hans@globex.test"}).ok());
  auto removed = service_->RemoveParticipant(alice_, old.id, "legacy@initech.test");
  EXPECT_TRUE(removed.ok()) << removed.error().ToString();
}

}  // namespace
}  // namespace strongroom::core
