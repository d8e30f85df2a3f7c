#include "strongroom/kms/kms_store.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "../support/postgres_cluster.h"
#include "../support/test_dir.h"
#include "strongroom/kms/org_policy.h"

namespace strongroom::kms {
namespace {

constexpr char kR1[] = "kms://kms.acme.test/resources/r1";
constexpr char kR2[] = "kms://kms.acme.test/resources/r2";

hsm::TokenBlob Blob(const std::string& token, std::uint32_t version, std::uint8_t fill) {
  std::vector<std::uint8_t> iv(hsm::kGcmIvSize, fill);
  std::vector<std::uint8_t> body(hsm::kWrappedKeyPlainSize + hsm::kGcmTagSize, fill);
  return {token, hsm::EncodeWrappedKey(version, iv, body)};
}

KeyRecord Key(const std::string& id) {
  KeyRecord k;
  k.uri = "kms://kms.acme.test/keys/" + id;
  k.org = "acme";
  k.creator = "alice";
  k.client_id = "cli-1";
  k.created_ms = 1000;
  k.bind_deadline_ms = 601000;
  k.blobs = {Blob("primary", 1, 1), Blob("standby", 1, 2)};
  return k;
}

AuthorizationRecord Auth(const std::string& resource, const std::string& who,
                         const std::string& role = "participant") {
  static int n = 0;
  return {"kms://kms.acme.test/authorizations/a" + std::to_string(++n),
          resource,
          who,
          role,
          "alice",
          1000 + n};
}

// The store on both engines: SQLite in a file of the test's, PostgreSQL in a database of its own on
// the test program's throwaway cluster.
class KmsStoreTest : public ::testing::TestWithParam<Database::Engine> {
 protected:
  void SetUp() override {
    Result<std::unique_ptr<Database>> db = Error(ErrorCode::kInternal, "not opened");
    if (GetParam() == Database::Engine::kPostgres) {
      Result<std::string> conninfo = testing::PostgresCluster::NewDatabase();
      ASSERT_TRUE(conninfo.ok()) << conninfo.error().ToString();
      db = Database::OpenPostgres(*conninfo, KmsStore::PostgresMigrations());
    } else {
      db = Database::OpenSqlite((dir_ / "kms.db").string(), KmsStore::Migrations());
    }
    ASSERT_TRUE(db.ok()) << db.error().ToString();
    db_ = std::move(db).value();
    ASSERT_TRUE(Tx([](Poco::Data::Session& s) -> Status {
                  SR_RETURN_IF_ERROR(KmsStore::InsertResource(s, {kR1, "acme", "alice", 1000, {}}));
                  return KmsStore::InsertResource(s, {kR2, "acme", "bob", 1000, {}});
                }).ok());
  }
  Status Tx(const std::function<Status(Poco::Data::Session&)>& work) {
    return db_->InTransaction(work);
  }
  template <typename T>
  T Read(const std::function<Result<T>(Poco::Data::Session&)>& query) {
    std::optional<T> out;
    Status s = db_->WithSession([&](Poco::Data::Session& session) -> Status {
      Result<T> r = query(session);
      if (!r.ok()) return r.error();
      out = std::move(r).value();
      return OkStatus();
    });
    EXPECT_TRUE(s.ok()) << s.error().ToString();
    return out ? std::move(*out) : T{};
  }
  std::optional<std::string> RoleOf(const std::string& resource, const std::string& user) {
    return Read<std::optional<std::string>>(
        [&](Poco::Data::Session& s) { return KmsStore::RoleOf(s, resource, user); });
  }

  testing::TestDir dir_;
  std::unique_ptr<Database> db_;
};

INSTANTIATE_TEST_SUITE_P(Engines, KmsStoreTest,
                         ::testing::Values(Database::Engine::kSqlite, Database::Engine::kPostgres),
                         [](const ::testing::TestParamInfo<Database::Engine>& engine) {
                           return engine.param == Database::Engine::kPostgres ? "postgres"
                                                                              : "sqlite";
                         });

// Both engines' schemas have the same versions.
TEST(KmsStoreSchemaTest, BothEnginesHaveEveryMigration) {
  const std::vector<Migration> sqlite = KmsStore::Migrations(),
                               postgres = KmsStore::PostgresMigrations();
  ASSERT_EQ(sqlite.size(), postgres.size());
  for (std::size_t i = 0; i < sqlite.size(); ++i) {
    EXPECT_EQ(sqlite[i].version, postgres[i].version);
    EXPECT_EQ(sqlite[i].description, postgres[i].description);
  }
}

TEST_P(KmsStoreTest, ResourcesAreStoredOnce) {
  auto found = Read<std::optional<ResourceRecord>>(
      [](Poco::Data::Session& s) { return KmsStore::FindResource(s, kR1); });
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->creator, "alice");
  Status again = Tx([](Poco::Data::Session& s) {
    return KmsStore::InsertResource(s, {kR1, "acme", "mallory", 2000, {}});
  });
  EXPECT_EQ(again.error().code(), ErrorCode::kAlreadyExists);
}

TEST_P(KmsStoreTest, KeysKeepTheirWrappedBlobsAndBindOnce) {
  ASSERT_TRUE(Tx([](Poco::Data::Session& s) { return KmsStore::InsertKeys(s, {Key("k1")}); }).ok());
  auto key = Read<std::optional<KeyRecord>>(
      [](Poco::Data::Session& s) { return KmsStore::FindKey(s, Key("k1").uri); });
  ASSERT_TRUE(key.has_value());
  EXPECT_FALSE(key->resource_uri.has_value());
  ASSERT_EQ(key->blobs.size(), 2u);
  EXPECT_EQ(key->blobs[0].token, "primary");
  EXPECT_EQ(key->blobs[0].blob, Blob("primary", 1, 1).blob);

  ASSERT_TRUE(Tx([](Poco::Data::Session& s) {
                return KmsStore::BindKey(s, Key("k1").uri, kR1, 5000, 86405000);
              }).ok());
  Status rebind = Tx([](Poco::Data::Session& s) {
    return KmsStore::BindKey(s, Key("k1").uri, kR2, 6000, 86406000);
  });
  EXPECT_EQ(rebind.error().code(), ErrorCode::kFailedPrecondition);
  key = Read<std::optional<KeyRecord>>(
      [](Poco::Data::Session& s) { return KmsStore::FindKey(s, Key("k1").uri); });
  EXPECT_EQ(key->resource_uri, std::optional<std::string>(kR1));
  EXPECT_EQ(key->bound_ms, std::optional<std::int64_t>(5000));

  EXPECT_EQ(Tx([](Poco::Data::Session& s) {
              return KmsStore::BindKey(s, "kms://kms.acme.test/keys/none", kR1, 1, 2);
            })
                .error()
                .code(),
            ErrorCode::kNotFound);
  ASSERT_TRUE(Tx([](Poco::Data::Session& s) { return KmsStore::InsertKeys(s, {Key("k2")}); }).ok());
  EXPECT_FALSE(Tx([](Poco::Data::Session& s) {
                 return KmsStore::BindKey(s, Key("k2").uri, "kms://kms.acme.test/resources/no", 1,
                                          2);
               }).ok());  // the resource must exist
}

// Creating keys and binding them to a new resource (kmsd's create + bind) compiles its statements
// once per connection: the second round compiles nothing and re-binds the first round's.
TEST_P(KmsStoreTest, CreateAndBindCompileTheirStatementsOnce) {
  auto round = [&](const std::string& n) {
    const std::string resource = "kms://kms.acme.test/resources/round" + n;
    ASSERT_TRUE(Tx([&](Poco::Data::Session& s) -> Status {
                  return KmsStore::InsertKeys(s, {Key("a" + n), Key("b" + n)});
                }).ok());
    ASSERT_TRUE(
        Tx([&](Poco::Data::Session& s) -> Status {
          SR_ASSIGN_OR_RETURN(std::optional<ResourceRecord> existing,
                              KmsStore::FindResource(s, resource));
          if (existing) return Error(ErrorCode::kAlreadyExists, "exists");
          SR_RETURN_IF_ERROR(KmsStore::InsertResource(s, {resource, "acme", "alice", 2000, {}}));
          SR_RETURN_IF_ERROR(
              KmsStore::InsertAuthorizations(s, {Auth(resource, "alice"), Auth(resource, "bob")}));
          for (const char* id : {"a", "b"}) {
            SR_ASSIGN_OR_RETURN(std::optional<KeyRecord> key,
                                KmsStore::FindKey(s, Key(id + n).uri));
            if (!key || key->blobs.size() != 2) return Error(ErrorCode::kInternal, "key?");
            SR_RETURN_IF_ERROR(KmsStore::BindKey(s, key->uri, resource, 3000, 4000));
          }
          return OkStatus();
        }).ok());
    EXPECT_EQ(RoleOf(resource, "bob"), std::optional<std::string>("participant"));
  };
  round("1");
  const std::uint64_t compiled = db_->statements_compiled();
  round("2");
  EXPECT_EQ(db_->statements_compiled(), compiled);
  const auto uses = db_->KeptStatementUses();
  auto used = [&](std::string_view prefix) {
    std::uint64_t n = 0;
    for (const auto& [sql, count] : uses) n += sql.starts_with(prefix) ? count : 0;
    return n;
  };
  EXPECT_EQ(used("INSERT INTO keys "), 2u);       // once per InsertKeys
  EXPECT_EQ(used("INSERT INTO key_blobs "), 8u);  // PutBlob: two tokens, two keys, two rounds
  EXPECT_EQ(used("UPDATE keys SET resource_uri"), 4u);
  EXPECT_EQ(used("SELECT uri, org, creator, client_id"), 4u);  // FindKey
  EXPECT_EQ(used("SELECT token, blob FROM key_blobs"), 4u);
  EXPECT_EQ(used("INSERT INTO authorizations "), 2u);
  EXPECT_EQ(used("WITH RECURSIVE reach"), 2u);  // RoleOf
  auto key = Read<std::optional<KeyRecord>>(
      [](Poco::Data::Session& s) { return KmsStore::FindKey(s, Key("b2").uri); });
  ASSERT_TRUE(key.has_value());
  EXPECT_EQ(key->resource_uri, std::optional<std::string>("kms://kms.acme.test/resources/round2"));
  EXPECT_EQ(key->stop_encrypt_ms, std::optional<std::int64_t>(4000));
  EXPECT_EQ(key->blobs[1].blob, Blob("standby", 1, 2).blob);
}

TEST_P(KmsStoreTest, KeysAreNeverStoredUnwrapped) {
  KeyRecord bare = Key("bare");
  bare.blobs.clear();
  EXPECT_FALSE(Tx([&](Poco::Data::Session& s) { return KmsStore::InsertKeys(s, {bare}); }).ok());
  KeyRecord garbage = Key("garbage");
  garbage.blobs = {{"primary", {1, 2, 3}}};
  EXPECT_FALSE(Tx([&](Poco::Data::Session& s) { return KmsStore::InsertKeys(s, {garbage}); }).ok());
}

TEST_P(KmsStoreTest, KeysOfAResourceComeNewestFirstWithinBounds) {
  ASSERT_TRUE(Tx([](Poco::Data::Session& s) -> Status {
                std::vector<KeyRecord> keys;
                for (int i = 0; i < 5; ++i) keys.push_back(Key("b" + std::to_string(i)));
                SR_RETURN_IF_ERROR(KmsStore::InsertKeys(s, keys));
                for (int i = 0; i < 5; ++i) {
                  SR_RETURN_IF_ERROR(KmsStore::BindKey(s, keys[i].uri, kR1, 1000 * (i + 1), 0));
                }
                return OkStatus();
              }).ok());
  auto all = Read<std::vector<KeyRecord>>(
      [](Poco::Data::Session& s) { return KmsStore::KeysOfResource(s, kR1, {}); });
  ASSERT_EQ(all.size(), 5u);
  EXPECT_EQ(all[0].bound_ms, std::optional<std::int64_t>(5000));
  EXPECT_EQ(all[0].blobs.size(), 2u);
  auto window = Read<std::vector<KeyRecord>>([](Poco::Data::Session& s) {
    return KmsStore::KeysOfResource(s, kR1, {1000, 5000, 100});
  });
  ASSERT_EQ(window.size(), 3u);  // bound at 2000, 3000, 4000
  auto newest = Read<std::vector<KeyRecord>>([](Poco::Data::Session& s) {
    return KmsStore::KeysOfResource(s, kR1, {{}, {}, 2});
  });
  ASSERT_EQ(newest.size(), 2u);
  EXPECT_EQ(newest[1].bound_ms, std::optional<std::int64_t>(4000));
  Status bad = db_->WithSession([](Poco::Data::Session& s) -> Status {
    return KmsStore::KeysOfResource(s, kR1, {{}, {}, 0}).ok()
               ? Status(Error(ErrorCode::kInternal, "count 0 accepted"))
               : OkStatus();
  });
  EXPECT_TRUE(bad.ok());
}

TEST_P(KmsStoreTest, RewrappedBlobReplacesTheOld) {
  ASSERT_TRUE(Tx([](Poco::Data::Session& s) { return KmsStore::InsertKeys(s, {Key("k1")}); }).ok());
  ASSERT_TRUE(Tx([](Poco::Data::Session& s) {
                return KmsStore::PutBlob(s, Key("k1").uri, Blob("primary", 2, 9));
              }).ok());
  auto key = Read<std::optional<KeyRecord>>(
      [](Poco::Data::Session& s) { return KmsStore::FindKey(s, Key("k1").uri); });
  ASSERT_EQ(key->blobs.size(), 2u);
  EXPECT_EQ(key->blobs[0].blob, Blob("primary", 2, 9).blob);
}

TEST_P(KmsStoreTest, AuthorizationsAreUniquePerResourceAndDeletable) {
  AuthorizationRecord bob = Auth(kR1, "bob");
  ASSERT_TRUE(Tx([&](Poco::Data::Session& s) {
                return KmsStore::InsertAuthorizations(s, {Auth(kR1, "alice"), bob});
              }).ok());
  EXPECT_EQ(Tx([](Poco::Data::Session& s) {
              return KmsStore::InsertAuthorizations(s, {Auth(kR1, "bob")});
            })
                .error()
                .code(),
            ErrorCode::kAlreadyExists);
  EXPECT_EQ(Tx([](Poco::Data::Session& s) {
              return KmsStore::InsertAuthorizations(s, {Auth(kR1, "carol", "admin")});
            })
                .error()
                .code(),
            ErrorCode::kInvalidArgument);
  auto all = Read<std::vector<AuthorizationRecord>>(
      [](Poco::Data::Session& s) { return KmsStore::Authorizations(s, kR1); });
  EXPECT_EQ(all.size(), 2u);
  auto only_bob = Read<std::vector<AuthorizationRecord>>(
      [](Poco::Data::Session& s) { return KmsStore::Authorizations(s, kR1, "bob"); });
  ASSERT_EQ(only_bob.size(), 1u);
  EXPECT_EQ(only_bob[0].uri, bob.uri);
  ASSERT_TRUE(
      Tx([&](Poco::Data::Session& s) { return KmsStore::DeleteAuthorization(s, bob.uri); }).ok());
  EXPECT_EQ(Tx([&](Poco::Data::Session& s) { return KmsStore::DeleteAuthorization(s, bob.uri); })
                .error()
                .code(),
            ErrorCode::kNotFound);
  EXPECT_FALSE(RoleOf(kR1, "bob").has_value());
}

TEST_P(KmsStoreTest, AllOrNothingAcrossObjects) {
  const std::string r3 = "kms://kms.acme.test/resources/r3";
  Status s = Tx([&](Poco::Data::Session& session) -> Status {
    SR_RETURN_IF_ERROR(KmsStore::InsertResource(session, {r3, "acme", "alice", 1, {}}));
    return KmsStore::InsertAuthorizations(session, {Auth(r3, "alice"), Auth(r3, "alice")});
  });
  EXPECT_EQ(s.error().code(), ErrorCode::kAlreadyExists);
  auto found = Read<std::optional<ResourceRecord>>(
      [&](Poco::Data::Session& session) { return KmsStore::FindResource(session, r3); });
  EXPECT_FALSE(found.has_value());
}

TEST_P(KmsStoreTest, MembershipIsInheritedThroughResourceAuthIds) {
  ASSERT_TRUE(Tx([](Poco::Data::Session& s) {
                return KmsStore::InsertAuthorizations(
                    s, {Auth(kR1, "alice"), Auth(kR1, kR2), Auth(kR2, "bob", "cloudAgent")});
              }).ok());
  EXPECT_EQ(RoleOf(kR1, "alice"), std::optional<std::string>("participant"));
  EXPECT_EQ(RoleOf(kR1, "bob"), std::optional<std::string>("cloudAgent"));  // via r2
  EXPECT_FALSE(RoleOf(kR2, "alice").has_value());  // inheritance runs one way
  EXPECT_FALSE(RoleOf(kR1, "carol").has_value());
}

TEST_P(KmsStoreTest, InheritanceCyclesEndAndDepthIsBounded) {
  ASSERT_TRUE(Tx([](Poco::Data::Session& s) {
                return KmsStore::InsertAuthorizations(s, {Auth(kR1, kR2), Auth(kR2, kR1)});
              }).ok());
  EXPECT_FALSE(RoleOf(kR1, "nobody").has_value());  // terminates
  // A chain longer than kMaxInheritanceDepth is not followed to its end.
  std::vector<std::string> chain;
  for (int i = 0; i <= kMaxInheritanceDepth + 1; ++i) {
    chain.push_back("kms://kms.acme.test/resources/c" + std::to_string(i));
  }
  ASSERT_TRUE(Tx([&](Poco::Data::Session& s) -> Status {
                for (const std::string& r : chain) {
                  SR_RETURN_IF_ERROR(KmsStore::InsertResource(s, {r, "acme", "alice", 1, {}}));
                }
                for (std::size_t i = 0; i + 1 < chain.size(); ++i) {
                  SR_RETURN_IF_ERROR(
                      KmsStore::InsertAuthorizations(s, {Auth(chain[i], chain[i + 1])}));
                }
                return KmsStore::InsertAuthorizations(s, {Auth(chain.back(), "dave")});
              }).ok());
  EXPECT_FALSE(RoleOf(chain[0], "dave").has_value());
  EXPECT_TRUE(RoleOf(chain[2], "dave").has_value());
}

EphemeralKeyRecord Channel(const std::string& id, std::int64_t created_ms,
                           std::int64_t expires_ms) {
  EphemeralKeyRecord k;
  k.uri = "kms://kms.acme.test/ecdhe/" + id;
  k.org = "acme";
  k.user_id = "alice";
  k.client_id = "cli-1";
  k.created_ms = created_ms;
  k.expires_ms = expires_ms;
  k.blobs = {Blob("primary", 3, 7)};
  return k;
}

TEST_P(KmsStoreTest, EphemeralKeysAreStoredWrappedAndDeletedOnce) {
  ASSERT_TRUE(Tx([](Poco::Data::Session& s) {
                return KmsStore::InsertEphemeralKey(s, Channel("c1", 1000, 9000));
              }).ok());
  auto found = Read<std::optional<EphemeralKeyRecord>>([](Poco::Data::Session& s) {
    return KmsStore::FindEphemeralKey(s, Channel("c1", 0, 0).uri);
  });
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->expires_ms, 9000);
  EXPECT_FALSE(found->deleted);
  ASSERT_EQ(found->blobs.size(), 1u);
  EXPECT_EQ(found->blobs[0].blob, Blob("primary", 3, 7).blob);
  auto added = Read<bool>([](Poco::Data::Session& s) {
    return KmsStore::AddMissingEphemeralBlob(s, Channel("c1", 0, 0).uri, Blob("standby", 3, 8));
  });
  EXPECT_TRUE(added);
  auto again = Read<bool>([](Poco::Data::Session& s) {
    return KmsStore::AddMissingEphemeralBlob(s, Channel("c1", 0, 0).uri, Blob("standby", 3, 9));
  });
  EXPECT_FALSE(again);  // there is one for that token
  const std::string uri = Channel("c1", 0, 0).uri;
  ASSERT_TRUE(
      Tx([&](Poco::Data::Session& s) { return KmsStore::DeleteEphemeralKey(s, uri); }).ok());
  EXPECT_EQ(Tx([&](Poco::Data::Session& s) { return KmsStore::DeleteEphemeralKey(s, uri); })
                .error()
                .code(),
            ErrorCode::kNotFound);
  found = Read<std::optional<EphemeralKeyRecord>>(
      [&](Poco::Data::Session& s) { return KmsStore::FindEphemeralKey(s, uri); });
  ASSERT_TRUE(found.has_value());
  EXPECT_TRUE(found->deleted);
  EXPECT_EQ(found->blobs.size(), 2u);
}

// The replay record: what a channel executed is found again, whole, and forgotten with the
// channel.
TEST_P(KmsStoreTest, ExecutedRequestsAreKeptPerChannelUntilItIsSpent) {
  const EphemeralKeyRecord live = Channel("live", 1000, 9000), spent = Channel("spent", 1000, 2000);
  const std::string m1(28, '\x01'), m2(28, '\x02'), m3(28, '\x03');
  ASSERT_TRUE(Tx([&](Poco::Data::Session& s) -> Status {
                SR_RETURN_IF_ERROR(KmsStore::InsertEphemeralKey(s, live));
                SR_RETURN_IF_ERROR(KmsStore::InsertEphemeralKey(s, spent));
                const std::vector<ExecutedRequest> requests = {
                    {live.uri, m1, 1500, "acme", "alice", 1000},
                    {live.uri, m2, 1600, "acme", "alice", 1000},
                    {spent.uri, m3, 1700, "acme", "alice", 1000}};
                return KmsStore::InsertExecutedRequests(s, requests);
              }).ok());
  auto executed = Read<std::vector<std::string>>(
      [&](Poco::Data::Session& s) { return KmsStore::ExecutedRequestsOf(s, live, 28); });
  EXPECT_EQ(executed, (std::vector<std::string>{m1, m2}));
  auto removed = Read<std::int64_t>(
      [](Poco::Data::Session& s) { return KmsStore::DeleteSpentExecutedRequests(s, 5000); });
  EXPECT_EQ(removed, 1);  // the spent channel's row
  executed = Read<std::vector<std::string>>(
      [&](Poco::Data::Session& s) { return KmsStore::ExecutedRequestsOf(s, spent, 28); });
  EXPECT_TRUE(executed.empty());
  executed = Read<std::vector<std::string>>(
      [&](Poco::Data::Session& s) { return KmsStore::ExecutedRequestsOf(s, live, 28); });
  EXPECT_EQ(executed.size(), 2u);
}

TEST_P(KmsStoreTest, SearchKeysAreVersionedPerOrganization) {
  SearchKeyRecord v1{"kms://kms.acme.test/search-keys/acme/1",
                     "acme",
                     1,
                     "indexer",
                     1000,
                     {Blob("primary", 1, 4)}};
  SearchKeyRecord v2{
      "kms://kms.acme.test/search-keys/acme/2", "acme", 2, "ops", 2000, {Blob("primary", 1, 5)}};
  ASSERT_TRUE(Tx([&](Poco::Data::Session& s) -> Status {
                SR_RETURN_IF_ERROR(KmsStore::InsertSearchKey(s, v1));
                return KmsStore::InsertSearchKey(s, v2);
              }).ok());
  EXPECT_EQ(
      Tx([&](Poco::Data::Session& s) { return KmsStore::InsertSearchKey(s, v1); }).error().code(),
      ErrorCode::kAlreadyExists);
  auto newest = Read<std::optional<SearchKeyRecord>>(
      [](Poco::Data::Session& s) { return KmsStore::FindSearchKey(s, "acme", std::nullopt); });
  ASSERT_TRUE(newest.has_value());
  EXPECT_EQ(newest->version, 2u);
  EXPECT_EQ(newest->blobs[0].blob, Blob("primary", 1, 5).blob);
  auto first = Read<std::optional<SearchKeyRecord>>(
      [](Poco::Data::Session& s) { return KmsStore::FindSearchKey(s, "acme", 1u); });
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->creator, "indexer");
  EXPECT_TRUE(Read<bool>([&](Poco::Data::Session& s) {
    return KmsStore::AddMissingSearchKeyBlob(s, v1.uri, Blob("standby", 1, 6));
  }));
  ASSERT_TRUE(Tx([&](Poco::Data::Session& s) {
                return KmsStore::PutSearchKeyBlob(s, v1.uri, Blob("primary", 2, 7));
              }).ok());
  first = Read<std::optional<SearchKeyRecord>>(
      [](Poco::Data::Session& s) { return KmsStore::FindSearchKey(s, "acme", 1u); });
  ASSERT_EQ(first->blobs.size(), 2u);
  EXPECT_EQ(first->blobs[0].blob, Blob("primary", 2, 7).blob);
  EXPECT_FALSE(Read<std::optional<SearchKeyRecord>>([](Poco::Data::Session& s) {
                 return KmsStore::FindSearchKey(s, "other", std::nullopt);
               }).has_value());
}

TEST_P(KmsStoreTest, AUsersResourcesComeWithTheNearestRoleAPageAtATime) {
  ASSERT_TRUE(Tx([](Poco::Data::Session& s) {
                return KmsStore::InsertAuthorizations(
                    s, {Auth(kR1, "alice"), Auth(kR2, kR1, "cloudAgent"), Auth(kR2, "alice")});
              }).ok());
  bool more = true;
  auto page = Read<std::vector<UserAuthorization>>([&](Poco::Data::Session& s) {
    return KmsStore::ResourcesOf(s, "acme", "alice", "", 1, &more);
  });
  ASSERT_EQ(page.size(), 1u);
  EXPECT_EQ(page[0].resource_uri, kR1);
  EXPECT_TRUE(more);
  page = Read<std::vector<UserAuthorization>>([&](Poco::Data::Session& s) {
    return KmsStore::ResourcesOf(s, "acme", "alice", kR1, 10, &more);
  });
  ASSERT_EQ(page.size(), 1u);
  EXPECT_EQ(page[0].resource_uri, kR2);
  EXPECT_EQ(page[0].role, "participant");  // her own, nearer than the one through r1
  EXPECT_FALSE(more);
}

TEST_P(KmsStoreTest, RootVersionUsesCountEveryWrap) {
  ASSERT_TRUE(Tx([](Poco::Data::Session& s) -> Status {
                SR_RETURN_IF_ERROR(KmsStore::InsertKeys(s, {Key("k1"), Key("k2")}));
                SR_RETURN_IF_ERROR(
                    KmsStore::InsertSearchKey(s, {"kms://kms.acme.test/search-keys/acme/1",
                                                  "acme",
                                                  1,
                                                  "indexer",
                                                  1000,
                                                  {Blob("primary", 1, 4)}}));
                SR_RETURN_IF_ERROR(KmsStore::InsertEphemeralKey(s, Channel("c1", 1000, 9000)));
                return KmsStore::InsertEphemeralKey(s, Channel("old", 1000, 2000));
              }).ok());
  auto uses = Read<std::vector<RootVersionUse>>(
      [](Poco::Data::Session& s) { return KmsStore::RootVersionUses(s, "acme", 5000); });
  ASSERT_EQ(uses.size(), 3u);  // (primary, 1), (primary, 3), (standby, 1)
  EXPECT_EQ(uses[0].token, "primary");
  EXPECT_EQ(uses[0].version, 1u);
  EXPECT_EQ(uses[0].keys, 3);  // two keys and the search key
  EXPECT_EQ(uses[1].version, 3u);
  EXPECT_EQ(uses[1].channel_keys, 1);  // the live channel only
  EXPECT_EQ(uses[2].token, "standby");
  EXPECT_EQ(uses[2].keys, 2);
}

TEST_P(KmsStoreTest, OrganizationPoliciesReplaceTheDefaults) {
  auto get = [&] {
    return Read<OrgPolicy>([](Poco::Data::Session& s) { return PolicyStore::Get(s, "acme"); });
  };
  EXPECT_TRUE(get().compliance_officers.empty());
  EXPECT_EQ(get().bind_deadline_s, 600);
  OrgPolicy policy;
  policy.org = "acme";
  policy.compliance_officers = {"carol"};
  policy.ephemeral_lifetime_s = 120;
  ASSERT_TRUE(Tx([&](Poco::Data::Session& s) { return PolicyStore::Put(s, policy, 1); }).ok());
  policy.compliance_officers = {"dave"};
  ASSERT_TRUE(Tx([&](Poco::Data::Session& s) { return PolicyStore::Put(s, policy, 2); }).ok());
  policy.ephemeral_lifetime_s = 5;  // invalid: nothing changes
  EXPECT_FALSE(Tx([&](Poco::Data::Session& s) { return PolicyStore::Put(s, policy, 3); }).ok());
  EXPECT_EQ(get().compliance_officers, (std::vector<std::string>{"dave"}));
  EXPECT_EQ(get().ephemeral_lifetime_s, 120);
}

}  // namespace
}  // namespace strongroom::kms
