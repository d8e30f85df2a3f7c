// Signed checkpoints of the audit chain (issue 11): a consistent rewrite of the whole table, which
// the bare chain cannot see, fails verification because its head no longer matches what the
// identity key signed (a key of the in-memory vault, tests/support/fake_vault.h: the signature is
// the same PS256 a token makes).
#include "strongroom/kms/audit_checkpoints.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "../support/audit_rewrite.h"
#include "../support/fake_vault.h"
#include "../support/kms_database.h"
#include "../support/test_dir.h"
#include "strongroom/kms/audit_checkpointer.h"
#include "strongroom/kms/audit_writer.h"
#include "strongroom/kms/kms_store.h"

namespace strongroom::kms {
namespace {

constexpr char kKms[] = "kms://kms.acme.test";

// A token with an identity key, and another token with another, shared by the tests.
struct IdentityToken {
  testing::FakeVault vault{
      std::vector<testing::FakeVault::TokenSpec>{{"primary", {}}, {"other", {}}}};
  hsm::RsaPublicKey key = std::move(vault.token(0).CreateIdentityKey("kms")).value();
  hsm::RsaPublicKey other_key = std::move(vault.token(1).CreateIdentityKey("kms")).value();

  static IdentityToken& Get() {
    static IdentityToken* token = new IdentityToken();
    return *token;
  }
  jose::JwsSigner Signer(bool other = false) {
    hsm::VaultToken& token = vault.token(other ? 1 : 0);
    return [&token](std::span<const std::uint8_t> input) { return token.SignPs256("kms", input); };
  }
};

// On both engines (tests/support/kms_database.h).
class AuditCheckpointsTest : public ::testing::TestWithParam<Database::Engine> {
 protected:
  void SetUp() override {
    Result<std::string> target = testing::NewKmsDatabase(GetParam(), dir_.path());
    ASSERT_TRUE(target.ok()) << target.error().ToString();
    Result<std::unique_ptr<Database>> db = testing::OpenKmsDatabase(GetParam(), *target);
    ASSERT_TRUE(db.ok()) << db.error().ToString();
    db_ = std::move(db).value();
  }

  IdentityToken& identity() { return IdentityToken::Get(); }

  void Append(int n) {
    ASSERT_TRUE(db_->InTransaction([&](Poco::Data::Session& s) -> Status {
                     std::vector<AuditRecord> records;
                     for (int i = 0; i < n; ++i) {
                       records.push_back({0, 1'800'000'000'000 + i, "acme", "alice", "key.retrieve",
                                          "kms://kms.acme.test/resources/r1",
                                          "kms://kms.acme.test/keys/k" + std::to_string(i), "ok",
                                          ""});
                     }
                     return AuditLog::AppendAll(s, records);
                   })
                    .ok());
  }

  std::optional<AuditCheckpoint> Sign(bool other_key = false) {
    const IdentityToken& id = identity();
    auto signed_head = AuditCheckpoints::SignHead(
        *db_, kKms, AuditCheckpoints::Thumbprint(other_key ? id.other_key : id.key),
        identity().Signer(other_key), 1'800'000'000'000);
    EXPECT_TRUE(signed_head.ok()) << signed_head.error().ToString();
    return signed_head.ok() ? *signed_head : std::nullopt;
  }

  CheckpointVerdict Verify(const hsm::RsaPublicKey* key) {
    auto verdict = AuditCheckpoints::Verify(*db_, key, kKms);
    EXPECT_TRUE(verdict.ok()) << verdict.error().ToString();
    return verdict.ok() ? *verdict : CheckpointVerdict{};
  }
  CheckpointVerdict Verify() { return Verify(&identity().key); }

  void Exec(const std::string& sql) {
    ASSERT_TRUE(db_->WithSession([&](Poco::Data::Session& s) -> Status {
                     Database::Prepare(s, sql).Run();
                     return OkStatus();
                   })
                    .ok());
  }

  testing::TestDir dir_;
  std::unique_ptr<Database> db_;
};

INSTANTIATE_TEST_SUITE_P(Engines, AuditCheckpointsTest, testing::kBothEngines, testing::EngineName);

TEST_P(AuditCheckpointsTest, AnUntouchedLogPassesAndReportsItsUnsignedTail) {
  EXPECT_TRUE(Verify().ok());
  EXPECT_FALSE(Sign().has_value());  // nothing to sign in an empty log
  Append(1000);
  auto first = Sign();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->seq, 1000);
  EXPECT_FALSE(Sign().has_value());  // the head is signed already
  Append(1500);
  ASSERT_TRUE(Sign().has_value());
  Append(7);

  CheckpointVerdict verdict = Verify();
  EXPECT_TRUE(verdict.ok()) << verdict.problem;
  EXPECT_EQ(verdict.chain.records, 2507);
  EXPECT_EQ(verdict.checkpoints, 2);
  ASSERT_TRUE(verdict.last.has_value());
  EXPECT_EQ(verdict.last->seq, 2500);
  EXPECT_EQ(verdict.last->kms, kKms);
  EXPECT_EQ(verdict.unsigned_records, 7);
}

TEST_P(AuditCheckpointsTest, AConsistentRewriteOfTheWholeTableFails) {
  Append(1200);
  ASSERT_TRUE(Sign().has_value());
  Append(30);
  ASSERT_TRUE(Verify().ok());

  ASSERT_TRUE(testing::RewriteAuditChain(*db_, 5, "mallory").ok());
  // The bare chain cannot tell: every hash was recomputed.
  auto chain = AuditLog::Verify(*db_);
  ASSERT_TRUE(chain.ok());
  EXPECT_TRUE(chain->ok()) << chain->problem;
  // The signed head can.
  CheckpointVerdict verdict = Verify();
  EXPECT_FALSE(verdict.ok());
  ASSERT_TRUE(verdict.bad_checkpoint.has_value());
  EXPECT_EQ(*verdict.bad_checkpoint, 1200);
  EXPECT_NE(verdict.problem.find("rewritten"), std::string::npos) << verdict.problem;
}

TEST_P(AuditCheckpointsTest, ATamperedOrForeignCheckpointFails) {
  Append(10);
  ASSERT_TRUE(Sign().has_value());
  ASSERT_TRUE(Verify().ok());
  // One character of the signature changed.
  std::string jws;
  ASSERT_TRUE(db_->WithSession([&](Poco::Data::Session& s) -> Status {
                   SqlStatement select =
                       Database::Prepare(s, "SELECT jws FROM audit_checkpoints WHERE seq = 10");
                   if (select.Next()) jws = select.Text(0);
                   return OkStatus();
                 })
                  .ok());
  ASSERT_FALSE(jws.empty());
  std::string tampered = jws;
  char& c = tampered[tampered.size() - 10];
  c = c == 'A' ? 'B' : 'A';
  auto put = [&](const std::string& text) {
    ASSERT_TRUE(db_->WithSession([&](Poco::Data::Session& s) -> Status {
                     Database::Prepare(s, "UPDATE audit_checkpoints SET jws = ? WHERE seq = 10")
                         .Bind(text)
                         .Run();
                     return OkStatus();
                   })
                    .ok());
  };
  put(tampered);
  CheckpointVerdict verdict = Verify();
  EXPECT_FALSE(verdict.ok());
  EXPECT_EQ(verdict.bad_checkpoint, std::optional<std::int64_t>(10));
  EXPECT_NE(verdict.problem.find("signature does not verify"), std::string::npos)
      << verdict.problem;

  // A checkpoint of the same head signed by another key in another HSM.
  Exec("DELETE FROM audit_checkpoints");
  ASSERT_TRUE(Sign(/*other_key=*/true).has_value());
  verdict = Verify();
  EXPECT_FALSE(verdict.ok());
  EXPECT_NE(verdict.problem.find("signature does not verify"), std::string::npos)
      << verdict.problem;
  // Which passes against that other key: the failure is the key, not the checkpoint.
  EXPECT_TRUE(Verify(&identity().other_key).ok());
}

// Each token holds an identity key of its own, and whichever is in service signs: checkpoints of
// both keys verify against the tokens' keys together, each by the key its kid names.
TEST_P(AuditCheckpointsTest, CheckpointsOfEveryTokensIdentityVerifyTogether) {
  Append(10);
  ASSERT_TRUE(Sign().has_value());
  Append(5);
  ASSERT_TRUE(Sign(/*other_key=*/true).has_value());
  Append(3);
  const std::vector<hsm::RsaPublicKey> both = {identity().key, identity().other_key};
  auto verdict = AuditCheckpoints::Verify(*db_, both, kKms);
  ASSERT_TRUE(verdict.ok()) << verdict.error().ToString();
  EXPECT_TRUE(verdict->ok()) << verdict->problem;
  EXPECT_EQ(verdict->checkpoints, 2);
  EXPECT_EQ(verdict->last->seq, 15);
  EXPECT_EQ(verdict->unsigned_records, 3);
  // Either key alone fails on the other's checkpoint.
  EXPECT_FALSE(Verify().ok());
  EXPECT_FALSE(Verify(&identity().other_key).ok());
  // Unless the other token's key could not be read: its checkpoint is then not checked, neither
  // trusted nor failed.
  auto partial = AuditCheckpoints::Verify(*db_, std::vector<hsm::RsaPublicKey>{identity().key},
                                          kKms, /*keys_incomplete=*/true);
  ASSERT_TRUE(partial.ok()) << partial.error().ToString();
  EXPECT_TRUE(partial->ok()) << partial->problem;
  EXPECT_EQ(partial->checkpoints, 1);
  EXPECT_EQ(partial->unverifiable, 1);
  EXPECT_EQ(partial->last->seq, 10);
}

TEST_P(AuditCheckpointsTest, ACheckpointOfAnotherKmsFails) {
  Append(10);
  ASSERT_TRUE(Sign().has_value());
  auto verdict = AuditCheckpoints::Verify(*db_, &identity().key, "kms://kms.globex.test");
  ASSERT_TRUE(verdict.ok());
  EXPECT_FALSE(verdict->ok());
  EXPECT_NE(verdict->problem.find("signed for kms://kms.acme.test, not kms://kms.globex.test"),
            std::string::npos)
      << verdict->problem;
}

TEST_P(AuditCheckpointsTest, RemovedCheckpointsAreReportedOnceTheTailIsLong) {
  for (int i = 0; i < 5; ++i) {
    Append(1000);
    ASSERT_TRUE(Sign().has_value());
  }
  ASSERT_TRUE(Verify().ok());
  // The last checkpoint removed: 1000 unsigned records are what kmsd may leave.
  Exec("DELETE FROM audit_checkpoints WHERE seq = 5000");
  CheckpointVerdict verdict = Verify();
  EXPECT_TRUE(verdict.ok()) << verdict.problem;
  EXPECT_EQ(verdict.unsigned_records, 1000);
  // The whole table removed: 5000 unsigned records are not.
  Exec("DELETE FROM audit_checkpoints");
  verdict = Verify();
  EXPECT_FALSE(verdict.ok());
  EXPECT_EQ(verdict.unsigned_records, 5000);
  EXPECT_NE(verdict.problem.find("without any signed checkpoint"), std::string::npos)
      << verdict.problem;
}

TEST_P(AuditCheckpointsTest, ALogCutBackBehindACheckpointFails) {
  Append(100);
  ASSERT_TRUE(Sign().has_value());
  Exec("DELETE FROM audit WHERE seq > 90");
  CheckpointVerdict verdict = Verify();
  EXPECT_FALSE(verdict.ok());
  EXPECT_EQ(verdict.bad_checkpoint, std::optional<std::int64_t>(100));
  EXPECT_NE(verdict.problem.find("removed"), std::string::npos) << verdict.problem;
}

TEST_P(AuditCheckpointsTest, WithoutAKeyCheckpointsAreCountedNotTrusted) {
  Append(20);
  ASSERT_TRUE(Sign().has_value());
  CheckpointVerdict verdict = Verify(nullptr);
  EXPECT_EQ(verdict.unverifiable, 1);
  EXPECT_EQ(verdict.checkpoints, 0);
  EXPECT_FALSE(verdict.last.has_value());
}

// The checkpointer's cadence: by records (nudged by the group-commit writer), by time, at start
// for what an earlier run left, and at a clean shutdown.
class AuditCheckpointerTest : public AuditCheckpointsTest {
 protected:
  AuditCheckpointerOptions Options(std::int64_t records, std::chrono::milliseconds every) {
    AuditCheckpointerOptions options;
    options.kms = kKms;
    options.key = [this] {
      return CheckpointKey{AuditCheckpoints::Thumbprint(identity().key), identity().Signer()};
    };
    options.every_records = records;
    options.every = every;
    return options;
  }
  std::int64_t LastSeq() {
    auto last = AuditCheckpoints::LastSeq(*db_);
    EXPECT_TRUE(last.ok());
    return last.ok() ? *last : -1;
  }
  // Waits (up to a minute, for a loaded machine) until a checkpoint covers `seq`.
  bool WaitForCheckpoint(std::int64_t seq) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (LastSeq() < seq) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
  }
  static AuditRecord Record(int i) {
    return {0, 1000 + i, "acme", "user" + std::to_string(i), "key.retrieve", "", "", "ok", ""};
  }
};

INSTANTIATE_TEST_SUITE_P(Engines, AuditCheckpointerTest, testing::kBothEngines,
                         testing::EngineName);

TEST_P(AuditCheckpointerTest, SignsEveryNRecordsCommittedByTheWriter) {
  AuditCheckpointer checkpointer(*db_, Options(100, std::chrono::hours(1)));
  AuditWriter writer(*db_, Database::Durability::kDeferred, std::chrono::milliseconds(50),
                     [&](std::size_t n) { checkpointer.Appended(n); });
  for (int i = 0; i < 99; ++i) ASSERT_TRUE(writer.Append(Record(i)).ok());
  EXPECT_EQ(LastSeq(), 0);  // fewer than 100 records, and an hour has not passed
  ASSERT_TRUE(writer.Append(Record(99)).ok());
  ASSERT_TRUE(WaitForCheckpoint(100));
  for (int i = 100; i < 200; ++i) ASSERT_TRUE(writer.Append(Record(i)).ok());
  ASSERT_TRUE(WaitForCheckpoint(200));
  EXPECT_GE(checkpointer.stats().checkpoints, 2u);
  EXPECT_TRUE(Verify().ok());
}

TEST_P(AuditCheckpointerTest, SignsAFewRecordsOnceTheIntervalHasPassed) {
  AuditCheckpointer checkpointer(*db_, Options(1000, std::chrono::milliseconds(200)));
  Append(3);  // inside another transaction: no nudge, found by the job's poll
  ASSERT_TRUE(WaitForCheckpoint(3));
  CheckpointVerdict verdict = Verify();
  EXPECT_TRUE(verdict.ok()) << verdict.problem;
  EXPECT_EQ(verdict.unsigned_records, 0);
}

TEST_P(AuditCheckpointerTest, SignsWhatAnEarlierRunLeftAndAgainAtShutdown) {
  Append(5);
  {
    AuditCheckpointer checkpointer(*db_, Options(1000, std::chrono::hours(1)));
    ASSERT_TRUE(WaitForCheckpoint(5));  // at start
    Append(7);
    EXPECT_EQ(LastSeq(), 5);  // 7 records, an hour not passed: nothing yet
  }
  EXPECT_EQ(LastSeq(), 12);  // the shutdown checkpoint
  CheckpointVerdict verdict = Verify();
  EXPECT_TRUE(verdict.ok()) << verdict.problem;
  EXPECT_EQ(verdict.checkpoints, 2);
  EXPECT_EQ(verdict.unsigned_records, 0);
}

TEST_P(AuditCheckpointerTest, AnHsmThatCannotSignIsLoggedOnceAndRetried) {
  std::atomic<bool> hsm_down{true};
  std::mutex log_mutex;
  std::vector<std::string> lines;
  AuditCheckpointerOptions options = Options(1000, std::chrono::milliseconds(20));
  const CheckpointKey key = options.key();
  options.key = [&, key] {
    jose::JwsSigner sign =
        [&, key](std::span<const std::uint8_t> input) -> Result<std::vector<std::uint8_t>> {
      if (hsm_down) return Error(ErrorCode::kUnavailable, "token unavailable");
      return key.sign(input);
    };
    return CheckpointKey{key.kid, sign};
  };
  options.log = [&](const std::string& line) {
    std::lock_guard lock(log_mutex);
    lines.push_back(line);
  };
  AuditCheckpointer checkpointer(*db_, options);
  Append(4);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (checkpointer.stats().failures < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GE(checkpointer.stats().failures, 3u);
  EXPECT_EQ(LastSeq(), 0);
  hsm_down = false;
  ASSERT_TRUE(WaitForCheckpoint(4));
  // The checkpoint is stored before the checkpointer says so in its log.
  auto logged = [&] {
    std::lock_guard lock(log_mutex);
    return lines.size();
  };
  while (logged() < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::lock_guard lock(log_mutex);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[0].find("cannot sign a checkpoint"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("token unavailable"), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find("signed again"), std::string::npos) << lines[1];
}

}  // namespace
}  // namespace strongroom::kms
