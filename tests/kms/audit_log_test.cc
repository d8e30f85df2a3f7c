#include "strongroom/kms/audit_log.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "../support/kms_database.h"
#include "../support/processes_together.h"
#include "../support/test_dir.h"

namespace strongroom::kms {
namespace {

using Poco::Data::Keywords::now;
using Engine = Database::Engine;

// The log on both engines: SQLite in a file of the test's, PostgreSQL in a database of its own on
// the test program's throwaway cluster.
class AuditLogTest : public ::testing::TestWithParam<Engine> {
 protected:
  void SetUp() override {
    Result<testing::TestDatabase> where = testing::TestDatabase::New(GetParam(), dir_ / "kms.db");
    ASSERT_TRUE(where.ok()) << where.error().ToString();
    where_ = *where;
    auto db = OpenAnother();
    ASSERT_TRUE(db.ok()) << db.error().ToString();
    db_ = std::move(db).value();
  }

  // Another Database on the test's database, as another process (kmsd node) would open it.
  Result<std::unique_ptr<Database>> OpenAnother() const {
    const std::vector<Migration> schema = {AuditLog::Schema(1, GetParam()),
                                           AuditLog::RequestSchema(2, GetParam())};
    return where_.Open(schema, schema);
  }

  // A blob literal of `hex` in the engine's SQL.
  std::string Bytes(const std::string& hex) const { return testing::BytesLiteral(GetParam(), hex); }

  void AppendMany(int n, const std::string& actor = "alice", std::int64_t at = 1000) {
    ASSERT_TRUE(db_->InTransaction([&](Poco::Data::Session& s) -> Status {
                     for (int i = 0; i < n; ++i) {
                       AuditRecord r{0,
                                     at + i,
                                     "acme",
                                     actor,
                                     "key.retrieve",
                                     "kms://kms.acme.test/resources/r1",
                                     "kms://kms.acme.test/keys/k" + std::to_string(i),
                                     "ok",
                                     ""};
                       SR_RETURN_IF_ERROR(AuditLog::Append(s, r));
                     }
                     return OkStatus();
                   })
                    .ok());
  }

  void Exec(const std::string& sql) {
    Status done = db_->WithSession([&](Poco::Data::Session& s) -> Status {
      Database::Prepare(s, sql).Run();
      return OkStatus();
    });
    ASSERT_TRUE(done.ok()) << sql << ": " << done.error().ToString();
  }

  AuditVerdict Verify() {
    auto verdict = AuditLog::Verify(*db_);
    EXPECT_TRUE(verdict.ok()) << verdict.error().ToString();
    return verdict.ok() ? *verdict : AuditVerdict{};
  }

  testing::TestDir dir_;
  testing::TestDatabase where_;
  std::unique_ptr<Database> db_;
};

INSTANTIATE_TEST_SUITE_P(Engines, AuditLogTest, testing::kBothEngines, testing::EngineName);

TEST_P(AuditLogTest, IntactLogVerifiesAndNumbersDensely) {
  AppendMany(5);
  AuditVerdict verdict = Verify();
  EXPECT_TRUE(verdict.ok()) << verdict.problem;
  EXPECT_EQ(verdict.records, 5);
  auto all = AuditLog::Query(*db_, {});
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 5u);
  EXPECT_EQ((*all)[0].seq, 1);
  EXPECT_EQ((*all)[4].seq, 5);
}

TEST_P(AuditLogTest, EditedRecordIsFound) {
  AppendMany(5);
  Exec("UPDATE audit SET outcome = 'denied' WHERE seq = 3");
  AuditVerdict verdict = Verify();
  ASSERT_FALSE(verdict.ok());
  EXPECT_EQ(*verdict.bad_seq, 3);
  EXPECT_EQ(verdict.problem, "record was altered");
}

// The sealed request a record executed is in its hash: changed, removed or added, it is found.
TEST_P(AuditLogTest, AnAlteredRequestIsFound) {
  for (const std::string& edit :
       {"UPDATE audit SET message = " + Bytes("00") + " || substr(message, 2) WHERE seq = 2",
        std::string("UPDATE audit SET channel = 'kms://other/ecdhe/1' WHERE seq = 2"),
        "UPDATE audit SET channel = '', message = " + Bytes("") + " WHERE seq = 2",
        "UPDATE audit SET channel = 'c', message = " + Bytes("01") + " WHERE seq = 3"}) {
    Exec("DELETE FROM audit");
    ASSERT_TRUE(db_->InTransaction([&](Poco::Data::Session& s) -> Status {
                     for (int i = 0; i < 3; ++i) {
                       AuditRecord r{0,  1000 + i, "acme", "alice", "key.retrieve",
                                     "", "k",      "ok",   ""};
                       if (i == 1) {
                         r.channel = "kms://kms.acme.test/ecdhe/1";
                         r.message = std::string(28, '\x5a');
                       }
                       SR_RETURN_IF_ERROR(AuditLog::Append(s, r));
                     }
                     return OkStatus();
                   })
                    .ok());
    ASSERT_TRUE(Verify().ok()) << edit;
    Exec(edit);
    AuditVerdict verdict = Verify();
    ASSERT_FALSE(verdict.ok()) << edit;
    EXPECT_EQ(verdict.problem, "record was altered") << edit;
  }
}

// A log written before audit rows carried requests verifies once the columns are added: a record
// without a request hashes as it always did.
TEST(AuditLogMigrationTest, ALogWrittenBeforeTheRequestColumnsStillVerifies) {
  testing::TestDir dir;
  const std::string path = (dir / "kms.db").string();
  {
    const std::vector<Migration> before = {AuditLog::Schema(1)};
    auto old = Database::OpenSqlite(path, before);
    ASSERT_TRUE(old.ok());
    ASSERT_TRUE(
        (*old)
            ->InTransaction([&](Poco::Data::Session& s) -> Status {
              AuditHash previous{};
              for (int i = 1; i <= 3; ++i) {
                AuditRecord r{i, 1000 + i, "acme", "alice", "key.retrieve", "", "k", "ok", ""};
                const AuditHash hash = AuditLog::Hash(previous, r);
                Poco::Data::BLOB prev_blob(previous.data(), previous.size());
                Poco::Data::BLOB hash_blob(hash.data(), hash.size());
                s << "INSERT INTO audit (seq, at_ms, org, actor, action, resource, key, "
                     "outcome, detail, prev_hash, hash) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    Poco::Data::Keywords::use(r.seq), Poco::Data::Keywords::use(r.at_ms),
                    Poco::Data::Keywords::use(r.org), Poco::Data::Keywords::use(r.actor),
                    Poco::Data::Keywords::use(r.action), Poco::Data::Keywords::use(r.resource),
                    Poco::Data::Keywords::use(r.key), Poco::Data::Keywords::use(r.outcome),
                    Poco::Data::Keywords::use(r.detail), Poco::Data::Keywords::use(prev_blob),
                    Poco::Data::Keywords::use(hash_blob), now;
                previous = hash;
              }
              return OkStatus();
            })
            .ok());
  }
  const std::vector<Migration> after = {AuditLog::Schema(1), AuditLog::RequestSchema(2)};
  auto migrated = Database::OpenSqlite(path, after);
  ASSERT_TRUE(migrated.ok()) << migrated.error().ToString();
  auto verdict = AuditLog::Verify(**migrated);
  ASSERT_TRUE(verdict.ok()) << verdict.error().ToString();
  EXPECT_TRUE(verdict->ok()) << verdict->problem;
  EXPECT_EQ(verdict->records, 3);
}

TEST_P(AuditLogTest, RemovedRecordIsFound) {
  AppendMany(5);
  Exec("DELETE FROM audit WHERE seq = 2");
  AuditVerdict verdict = Verify();
  ASSERT_FALSE(verdict.ok());
  EXPECT_EQ(*verdict.bad_seq, 2);
  EXPECT_NE(verdict.problem.find("missing"), std::string::npos);
}

TEST_P(AuditLogTest, RemovedAndRenumberedRecordIsFound) {
  AppendMany(5);
  Exec("DELETE FROM audit WHERE seq = 2");
  Exec("UPDATE audit SET seq = seq - 1 WHERE seq > 2");
  AuditVerdict verdict = Verify();
  ASSERT_FALSE(verdict.ok());
  EXPECT_EQ(*verdict.bad_seq, 2);
}

// Issue 11: verify walked seq >= 1 while query lists every row, so a forged "ok" record at seq 0
// or -7 passed verification with the same head and came first in query's output.
TEST_P(AuditLogTest, ARecordNumberedOutsideTheChainFailsVerification) {
  AppendMany(3);
  const AuditHash head = Verify().head;
  for (const char* seq : {"0", "-7"}) {
    Exec(std::string("INSERT INTO audit (seq, at_ms, org, actor, action, resource, key, outcome, "
                     "detail, prev_hash, hash) SELECT ") +
         seq +
         ", at_ms, org, 'carol', action, resource, key, 'ok', detail, prev_hash, hash "
         "FROM audit WHERE seq = 1");
    AuditVerdict verdict = Verify();
    ASSERT_FALSE(verdict.ok()) << seq;
    EXPECT_EQ(*verdict.bad_seq, -7 * (std::string(seq) == "-7"));
    EXPECT_NE(verdict.problem.find("outside the chain"), std::string::npos);
  }
  Exec("DELETE FROM audit WHERE seq < 1");
  EXPECT_TRUE(Verify().ok());
  EXPECT_EQ(Verify().head, head);
}

TEST_P(AuditLogTest, ReorderedRecordsAreFound) {
  AppendMany(5);
  // Swap records 3 and 4 wholesale, hashes included.
  Exec("UPDATE audit SET seq = -3 WHERE seq = 3");
  Exec("UPDATE audit SET seq = 3 WHERE seq = 4");
  Exec("UPDATE audit SET seq = 4 WHERE seq = -3");
  AuditVerdict verdict = Verify();
  ASSERT_FALSE(verdict.ok());
  EXPECT_EQ(*verdict.bad_seq, 3);
}

TEST_P(AuditLogTest, TruncatedTailChangesTheHead) {
  AppendMany(5);
  const AuditHash head = Verify().head;
  Exec("DELETE FROM audit WHERE seq = 5");
  AuditVerdict verdict = Verify();
  EXPECT_TRUE(verdict.ok());      // the chain alone cannot tell ...
  EXPECT_NE(verdict.head, head);  // ... which is why the head is kept elsewhere
}

TEST_P(AuditLogTest, RolledBackRecordLeavesNoGap) {
  AppendMany(2);
  Status refused = db_->InTransaction([](Poco::Data::Session& s) -> Status {
    AuditRecord r{0, 5000, "acme", "bob", "key.retrieve", "", "", "ok", ""};
    SR_RETURN_IF_ERROR(AuditLog::Append(s, r));
    return Error(ErrorCode::kPermissionDenied, "the operation failed after auditing");
  });
  EXPECT_FALSE(refused.ok());
  AppendMany(1);
  AuditVerdict verdict = Verify();
  EXPECT_TRUE(verdict.ok()) << verdict.problem;
  EXPECT_EQ(verdict.records, 3);
}

TEST_P(AuditLogTest, VerifiesAcrossBatches) {
  AppendMany(2500);
  AuditVerdict verdict = Verify();
  EXPECT_TRUE(verdict.ok()) << verdict.problem;
  EXPECT_EQ(verdict.records, 2500);
  Exec("UPDATE audit SET detail = 'x' WHERE seq = 2001");
  EXPECT_EQ(*Verify().bad_seq, 2001);
}

// A batch's records go in with a statement per power of two they hold (a round trip each on a
// server): 100 records are three inserts (64, 32 and 4 rows), numbered and chained in order.
TEST_P(AuditLogTest, ABatchGoesInWithAStatementPerPowerOfTwoItHolds) {
  AppendMany(1);  // the chain's first record, alone
  auto inserts = [&] {
    std::uint64_t n = 0;
    for (const auto& [sql, count] : db_->KeptStatementUses()) {
      if (sql.starts_with("INSERT INTO audit ")) n += count;
    }
    return n;
  };
  const std::uint64_t before = inserts();
  std::vector<AuditRecord> batch;
  for (int i = 0; i < 100; ++i) {
    batch.push_back({0, 2000 + i, "acme", "bob", "key.retrieve", "kms://kms.acme.test/resources/r1",
                     "kms://kms.acme.test/keys/b" + std::to_string(i), "ok", ""});
  }
  ASSERT_TRUE(db_->InTransaction([&](Poco::Data::Session& s) -> Status {
                   return AuditLog::AppendAll(s, batch);
                 })
                  .ok());
  EXPECT_EQ(inserts() - before, 3u);
  EXPECT_EQ(batch.front().seq, 2);
  EXPECT_EQ(batch.back().seq, 101);
  AuditVerdict verdict = Verify();
  EXPECT_TRUE(verdict.ok()) << verdict.problem;
  EXPECT_EQ(verdict.records, 101);
  AuditFilter bobs;
  bobs.actor = "bob";
  bobs.limit = 200;
  auto stored = AuditLog::Query(*db_, bobs);
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->size(), 100u);
  for (std::size_t i = 0; i < stored->size(); ++i) {
    EXPECT_EQ((*stored)[i].seq, static_cast<std::int64_t>(i + 2));
    EXPECT_EQ((*stored)[i].key, "kms://kms.acme.test/keys/b" + std::to_string(i));
  }
}

TEST_P(AuditLogTest, QueryFiltersByActorResourceAndTime) {
  AppendMany(3, "alice", 1000);
  AppendMany(2, "bob", 2000);
  AuditFilter by_actor;
  by_actor.actor = "bob";
  EXPECT_EQ(AuditLog::Query(*db_, by_actor)->size(), 2u);
  AuditFilter by_time;
  by_time.from_ms = 1001;
  by_time.to_ms = 2001;
  EXPECT_EQ(AuditLog::Query(*db_, by_time)->size(), 3u);  // alice 1001, 1002; bob 2000
  AuditFilter by_resource;
  by_resource.resource = "kms://kms.acme.test/resources/other";
  EXPECT_TRUE(AuditLog::Query(*db_, by_resource)->empty());
  AuditFilter limited;
  limited.limit = 2;
  EXPECT_EQ(AuditLog::Query(*db_, limited)->size(), 2u);
  limited.limit = 0;
  EXPECT_EQ(AuditLog::Query(*db_, limited).error().code(), ErrorCode::kInvalidArgument);
  limited.limit = kMaxAuditQuery + 1;
  EXPECT_EQ(AuditLog::Query(*db_, limited).error().code(), ErrorCode::kInvalidArgument);
}

// A user's records are theirs and those whose detail starts with AuditLog::OnBehalfOf(user): the
// user's name quoted and escaped, so neither a name that extends another nor one with a quote
// in it passes for it.
TEST_P(AuditLogTest, QueryByUserFindsWhatWasDoneOnTheirBehalf) {
  EXPECT_EQ(AuditLog::OnBehalfOf("bob"), R"(on behalf of "bob")");
  EXPECT_EQ(AuditLog::OnBehalfOf(R"(b"o\b)"), R"(on behalf of "b\"o\\b")");
  const std::pair<const char*, std::string> records[] = {
      {"bob", "client c"},
      {"carol", AuditLog::OnBehalfOf("bob") + ", client c"},
      {"carol", AuditLog::OnBehalfOf("bob2") + ", client c"},
      {"carol", AuditLog::OnBehalfOf(R"(bob", x)") + ", client c"},
      {"dave", "client " + AuditLog::OnBehalfOf("bob")},
      {"carol", "client c"},
  };
  ASSERT_TRUE(db_->InTransaction([&](Poco::Data::Session& s) -> Status {
                   for (const auto& [actor, detail] : records) {
                     AuditRecord r{0, 1000, "acme", actor, "key.retrieve", "", "", "ok", detail};
                     SR_RETURN_IF_ERROR(AuditLog::Append(s, r));
                   }
                   return OkStatus();
                 })
                  .ok());
  AuditFilter bob;
  bob.user = "bob";
  auto found = AuditLog::Query(*db_, bob);
  ASSERT_TRUE(found.ok()) << found.error().ToString();
  ASSERT_EQ(found->size(), 2u);
  EXPECT_EQ((*found)[0].seq, 1);
  EXPECT_EQ((*found)[1].seq, 2);
  AuditFilter quoted;
  quoted.user = R"(bob", x)";
  found = AuditLog::Query(*db_, quoted);
  ASSERT_TRUE(found.ok());
  ASSERT_EQ(found->size(), 1u);
  EXPECT_EQ((*found)[0].seq, 4);
  AuditFilter carol;
  carol.user = "carol";
  EXPECT_EQ(AuditLog::Query(*db_, carol)->size(), 4u);  // her own, never anyone else's
}

TEST_P(AuditLogTest, OversizeOrIncompleteRecordsAreRefused) {
  Status s = db_->InTransaction([](Poco::Data::Session& session) -> Status {
    AuditRecord big{0, 1, "acme", std::string(kMaxAuditField + 1, 'a'), "x", "", "", "ok", ""};
    return AuditLog::Append(session, big);
  });
  EXPECT_EQ(s.error().code(), ErrorCode::kInvalidArgument);
  s = db_->InTransaction([](Poco::Data::Session& session) -> Status {
    AuditRecord no_action{0, 1, "acme", "alice", "", "", "", "ok", ""};
    return AuditLog::Append(session, no_action);
  });
  EXPECT_EQ(s.error().code(), ErrorCode::kInvalidArgument);
  s = db_->InTransaction([](Poco::Data::Session& session) -> Status {
    AuditRecord half_a_request{0, 1, "acme", "alice", "x", "", "", "ok", ""};
    half_a_request.channel = "kms://kms.acme.test/ecdhe/1";  // and no message
    return AuditLog::Append(session, half_a_request);
  });
  EXPECT_EQ(s.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(Verify().records, 0);
}

// Several processes (kmsd nodes on one database) appending at once extend one chain: each append
// reads the head and inserts inside a write transaction, and write transactions run one at a time
// on both engines (on PostgreSQL, behind the writers' advisory lock). Four processes, released
// together, append 25 transactions of two records each; the chain verifies with every record.
TEST_P(AuditLogTest, WritersOfSeveralProcessesExtendOneChain) {
  constexpr int kProcesses = 4, kTransactions = 25;
  const int succeeded = testing::RunProcessesTogether(kProcesses, [&](int i) {
    auto db = OpenAnother();
    if (!db.ok()) return false;
    for (int t = 0; t < kTransactions; ++t) {
      Status appended = (*db)->InTransaction([&](Poco::Data::Session& s) -> Status {
        for (int r = 0; r < 2; ++r) {
          AuditRecord record{0,  1000 + t, "acme", "node-" + std::to_string(i), "key.retrieve", "",
                             "", "ok",     ""};
          SR_RETURN_IF_ERROR(AuditLog::Append(s, record));
        }
        return OkStatus();
      });
      if (!appended.ok()) {
        std::fprintf(stderr, "%s\n", appended.error().ToString().c_str());
        return false;
      }
    }
    return true;
  });
  EXPECT_EQ(succeeded, kProcesses) << "a writer failed";
  AuditVerdict verdict = Verify();
  EXPECT_TRUE(verdict.ok()) << verdict.problem;
  EXPECT_EQ(verdict.records, kProcesses * kTransactions * 2);
  for (int i = 0; i < kProcesses; ++i) {
    AuditFilter node;
    node.actor = "node-" + std::to_string(i);
    EXPECT_EQ(AuditLog::Query(*db_, node)->size(), std::size_t{kTransactions * 2});
  }
}

}  // namespace
}  // namespace strongroom::kms
