// Root rotation and the rewrap job against two real SoftHSM2 tokens (primary and standby).
#include "strongroom/kms/rewrap_job.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <numeric>
#include <thread>

#include "../support/kms_database.h"
#include "../support/softhsm_sandbox.h"
#include "../support/test_dir.h"
#include "strongroom/common/rfc3339.h"
#include "strongroom/hsm/key_vault.h"
#include "strongroom/kms/audit_log.h"
#include "strongroom/kms/kms_store.h"
#include "strongroom/kms/reconcile_job.h"
#include "strongroom/kms/search_keys.h"

namespace strongroom::kms {
namespace {

using testing::kSoftHsmModule;
using testing::SoftHsmSandbox;

constexpr std::int64_t kNowMs = 1'800'000'000'000;

std::uint32_t VersionOf(const std::vector<std::uint8_t>& blob) {
  auto view = hsm::ParseWrappedKey(blob);
  return view.ok() ? view->root_version : 0;
}

// On both engines (tests/support/kms_database.h).
class RewrapJobTest : public ::testing::TestWithParam<Database::Engine> {
 protected:
  void SetUp() override {
    for (const char* name : {"primary", "standby"}) {
      hsm::TokenConfig token;
      token.name = name;
      token.uri = SoftHsmSandbox::Get().Uri(kSoftHsmModule,
                                            SoftHsmSandbox::Get().CreateToken(kSoftHsmModule));
      tokens_.push_back(token);
    }
    auto vault = hsm::KeyVault::Open({tokens_});
    ASSERT_TRUE(vault.ok()) << vault.error().ToString();
    vault_ = std::move(vault).value();
    ASSERT_TRUE(vault_->InitRoot("acme").ok());
    ASSERT_TRUE(vault_->InitRoot("globex").ok());
    Result<std::string> target = testing::NewKmsDatabase(GetParam(), dir_.path());
    ASSERT_TRUE(target.ok()) << target.error().ToString();
    target_ = *target;
    OpenDatabase();
  }

  // Opens the test's database again, as a restarted kmsd does.
  void OpenDatabase() {
    db_.reset();
    auto db = testing::OpenKmsDatabase(GetParam(), target_);
    ASSERT_TRUE(db.ok()) << db.error().ToString();
    db_ = std::move(db).value();
  }

  // The jobs on the test's clock (now_ms_), waiting for probes at `probe_interval`.
  std::unique_ptr<RewrapJobs> NewJobs(
      RewrapJobs::RotationHook hook = {},
      std::chrono::milliseconds probe_interval = std::chrono::milliseconds(0)) {
    return std::make_unique<RewrapJobs>(
        *vault_, *db_, [this] { return now_ms_.load(); }, std::move(hook), probe_interval);
  }

  // Another KMS node's vault on the same tokens, without a probe, that has wrapped a key of `org`:
  // it goes on wrapping under the version it has cached until it is opened again.
  std::unique_ptr<hsm::KeyVault> OtherNodesVault(const std::string& org) {
    auto vault = hsm::KeyVault::Open({tokens_});
    EXPECT_TRUE(vault.ok()) << vault.error().ToString();
    if (!vault.ok()) return nullptr;
    EXPECT_TRUE(
        (*vault)->Wrap({org, "kms://kms.test/keys/warm-up"}, SecretBytes::Random(32).view()).ok());
    return std::move(vault).value();
  }

  // Creates `n` keys of `org`, wrapped under every token (by `vault`, the test's own if null);
  // remembers their material.
  void CreateKeys(const std::string& org, int n, hsm::Vault* vault = nullptr) {
    if (vault == nullptr) vault = vault_.get();
    std::vector<KeyRecord> records;
    for (int i = 0; i < n; ++i) {
      KeyRecord k;
      k.uri = "kms://kms.test/keys/" + org + "-" + std::to_string(material_.size());
      k.org = org;
      k.creator = "alice";
      k.client_id = "test";
      k.created_ms = kNowMs;
      k.bind_deadline_ms = kNowMs + 600'000;
      SecretBytes key = SecretBytes::Random(32);
      auto wrapped = vault->Wrap({org, k.uri}, key.view());
      ASSERT_TRUE(wrapped.ok()) << wrapped.error().ToString();
      ASSERT_EQ(wrapped->blobs.size(), 2u);
      k.blobs = wrapped->blobs;
      material_.emplace(k.uri, std::move(key));
      records.push_back(std::move(k));
    }
    ASSERT_TRUE(
        db_->InTransaction([&](Poco::Data::Session& s) { return KmsStore::InsertKeys(s, records); })
            .ok());
  }

  std::string CreateEphemeral(const std::string& org, std::int64_t expires_ms, bool deleted) {
    EphemeralKeyRecord e;
    e.uri = "kms://kms.test/ecdhe/" + std::to_string(material_.size());
    e.org = org;
    e.user_id = "alice";
    e.client_id = "test";
    e.created_ms = kNowMs - 1000;
    e.expires_ms = expires_ms;
    SecretBytes key = SecretBytes::Random(32);
    auto wrapped = vault_->Wrap({org, e.uri}, key.view());
    EXPECT_TRUE(wrapped.ok());
    e.blobs = wrapped->blobs;
    material_.emplace(e.uri, std::move(key));
    EXPECT_TRUE(db_->InTransaction([&](Poco::Data::Session& s) -> Status {
                     SR_RETURN_IF_ERROR(KmsStore::InsertEphemeralKey(s, e));
                     return deleted ? KmsStore::DeleteEphemeralKey(s, e.uri) : OkStatus();
                   })
                    .ok());
    return e.uri;
  }

  std::vector<hsm::TokenBlob> BlobsOf(const std::string& uri) {
    std::vector<hsm::TokenBlob> out;
    EXPECT_TRUE(db_->WithSession([&](Poco::Data::Session& s) -> Status {
                     if (uri.find("/ecdhe/") != std::string::npos) {
                       SR_ASSIGN_OR_RETURN(auto e, KmsStore::FindEphemeralKey(s, uri));
                       if (e) out = e->blobs;
                     } else {
                       SR_ASSIGN_OR_RETURN(auto k, KmsStore::FindKey(s, uri));
                       if (k) out = k->blobs;
                     }
                     return OkStatus();
                   })
                    .ok());
    return out;
  }

  // Every blob of `org`'s keys is at `version` and opens, on its own token, to the same key.
  void ExpectKeysAt(const std::string& org, std::uint32_t version) {
    for (const auto& [uri, key] : material_) {
      if (uri.find("/keys/" + org + "-") == std::string::npos) continue;
      const std::vector<hsm::TokenBlob> blobs = BlobsOf(uri);
      ASSERT_EQ(blobs.size(), 2u) << uri;
      for (const hsm::TokenBlob& blob : blobs) {
        EXPECT_EQ(VersionOf(blob.blob), version) << uri << " on " << blob.token;
        auto opened = vault_->FindToken(blob.token)->Unwrap({org, uri}, blob.blob);
        ASSERT_TRUE(opened.ok()) << opened.error().ToString();
        EXPECT_TRUE(ConstantTimeEquals(opened->view(), key.view())) << uri;
      }
    }
  }

  // Runs batches until the job ends; returns the number of blobs re-wrapped.
  std::size_t RunToEnd(RewrapJobs& jobs, std::size_t batch) {
    std::size_t rewrapped = 0;
    for (int i = 0; i < 1000; ++i) {
      auto result = jobs.RunOnce(batch);
      EXPECT_TRUE(result.ok()) << result.error().ToString();
      if (!result.ok()) break;
      EXPECT_FALSE(result->outage) << result->outage->ToString();
      rewrapped += result->rewrapped;
      if (result->finished || !result->job_id) break;
    }
    return rewrapped;
  }

  std::vector<AuditRecord> Audit(const std::string& action) {
    AuditFilter filter;
    filter.limit = 1000;
    auto records = AuditLog::Query(*db_, filter);
    EXPECT_TRUE(records.ok());
    std::vector<AuditRecord> out;
    for (AuditRecord& r : *records) {
      if (r.action == action) out.push_back(r);
    }
    return out;
  }

  testing::TestDir dir_;
  std::string target_;  // the SQLite file or the PostgreSQL connection string
  std::atomic<std::int64_t> now_ms_{kNowMs};
  std::vector<hsm::TokenConfig> tokens_;
  std::unique_ptr<hsm::KeyVault> vault_;
  std::unique_ptr<Database> db_;
  std::map<std::string, SecretBytes> material_;
};

INSTANTIATE_TEST_SUITE_P(Engines, RewrapJobTest, testing::kBothEngines, testing::EngineName);

TEST_P(RewrapJobTest, RotationRewrapsEveryBlobOnBothTokensAndKeysOpenToTheSameMaterial) {
  CreateKeys("acme", 30);
  CreateKeys("globex", 5);
  const std::string live = CreateEphemeral("acme", kNowMs + 3'600'000, false);
  const std::string expired = CreateEphemeral("acme", kNowMs - 1, false);
  const std::string deleted = CreateEphemeral("acme", kNowMs + 3'600'000, true);
  auto jobs = NewJobs();

  auto rotated = jobs->Rotate("acme", "operator-1");
  ASSERT_TRUE(rotated.ok()) << rotated.error().ToString();
  EXPECT_EQ(rotated->root_version, 2u);
  EXPECT_EQ(rotated->state, "running");
  EXPECT_EQ(rotated->total, 30 * 2 + 2);  // 30 keys and one live ephemeral key, on two tokens

  EXPECT_EQ(RunToEnd(*jobs, 16), 62u);
  auto progress = jobs->Progress("acme");
  ASSERT_TRUE(progress.ok());
  EXPECT_EQ(progress->state, "done");
  EXPECT_EQ(progress->done, 62);
  EXPECT_EQ(progress->total, 62);
  EXPECT_EQ(progress->failed, 0);

  ExpectKeysAt("acme", 2);
  ExpectKeysAt("globex", 1);  // another organization is not touched
  for (const hsm::TokenBlob& blob : BlobsOf(live)) {
    EXPECT_EQ(VersionOf(blob.blob), 2u);
    auto opened = vault_->FindToken(blob.token)->Unwrap({"acme", live}, blob.blob);
    ASSERT_TRUE(opened.ok());
    EXPECT_TRUE(ConstantTimeEquals(opened->view(), material_.at(live).view()));
  }
  for (const std::string& gone : {expired, deleted}) {
    for (const hsm::TokenBlob& blob : BlobsOf(gone)) EXPECT_EQ(VersionOf(blob.blob), 1u);
  }
  // The old version stays on both tokens.
  auto roots = vault_->ListRoots("acme");
  ASSERT_TRUE(roots.ok());
  for (const hsm::RootKeySet& set : *roots) EXPECT_EQ(set.keys.size(), 2u) << set.token;

  auto rotate_audit = Audit("root.rotate");
  ASSERT_EQ(rotate_audit.size(), 1u);
  EXPECT_EQ(rotate_audit[0].actor, "operator-1");
  EXPECT_EQ(rotate_audit[0].outcome, "ok");
  auto rewrap_audit = Audit("root.rewrap");
  ASSERT_EQ(rewrap_audit.size(), 1u);
  EXPECT_EQ(rewrap_audit[0].outcome, "ok");
  EXPECT_TRUE(AuditLog::Verify(*db_)->ok());

  auto idle = jobs->RunOnce(16);  // nothing left to do
  ASSERT_TRUE(idle.ok());
  EXPECT_FALSE(idle->job_id);
}

// Issue 14: the organization's search keys are wrapped like content keys, and re-wrapped with them.
TEST_P(RewrapJobTest, RotationRewrapsTheOrganizationsSearchKeysToo) {
  CreateKeys("acme", 3);
  SearchKeys search_keys("kms://kms.test", *vault_, *db_, [] { return kNowMs; });
  auto v1 = search_keys.Current("acme", "svc-indexer");
  ASSERT_TRUE(v1.ok()) << v1.error().ToString();
  auto v2 = search_keys.Rotate("acme", "operator-1");
  ASSERT_TRUE(v2.ok()) << v2.error().ToString();
  auto globex = search_keys.Current("globex", "svc-indexer");
  ASSERT_TRUE(globex.ok());
  std::map<std::uint32_t, SecretBytes> material;
  for (const SearchKeyRecord* key : {&*v1, &*v2}) {
    auto opened = search_keys.Open(*key);
    ASSERT_TRUE(opened.ok());
    material.emplace(key->version, std::move(*opened));
  }
  auto jobs = NewJobs();
  auto rotated = jobs->Rotate("acme", "operator-1");
  ASSERT_TRUE(rotated.ok()) << rotated.error().ToString();
  EXPECT_EQ(rotated->total, 3 * 2 + 2 * 2);  // 3 keys and 2 search-key versions, two tokens
  EXPECT_EQ(RunToEnd(*jobs, 4), 10u);
  EXPECT_EQ(jobs->Progress("acme")->state, "done");

  ExpectKeysAt("acme", 2);
  for (std::uint32_t version : {1u, 2u}) {
    auto key = search_keys.Find("acme", version);
    ASSERT_TRUE(key.ok() && *key);
    ASSERT_EQ((*key)->blobs.size(), 2u);
    for (const hsm::TokenBlob& blob : (*key)->blobs) {
      EXPECT_EQ(VersionOf(blob.blob), 2u) << (*key)->uri << " on " << blob.token;
      auto opened = vault_->FindToken(blob.token)->Unwrap({"acme", (*key)->uri}, blob.blob);
      ASSERT_TRUE(opened.ok()) << opened.error().ToString();
      EXPECT_TRUE(ConstantTimeEquals(opened->view(), material.at(version).view()));
    }
  }
  auto untouched = search_keys.Find("globex", 1);
  ASSERT_TRUE(untouched.ok() && *untouched);
  for (const hsm::TokenBlob& blob : (*untouched)->blobs) EXPECT_EQ(VersionOf(blob.blob), 1u);
  // `kmsctl hsm roots` counts the search keys' blobs under the version that wraps them.
  ASSERT_TRUE(db_->WithSession([&](Poco::Data::Session& s) -> Status {
                   SR_ASSIGN_OR_RETURN(auto uses, KmsStore::RootVersionUses(s, "acme", kNowMs));
                   for (const RootVersionUse& use : uses) {
                     EXPECT_EQ(use.version, 2u);
                     EXPECT_EQ(use.keys, 3 + 2) << use.token;
                   }
                   return OkStatus();
                 })
                  .ok());
}

TEST_P(RewrapJobTest, AnInterruptedJobResumesInANewInstanceWithoutRepeatingWork) {
  CreateKeys("acme", 40);
  std::size_t first_run = 0;
  {
    auto jobs = NewJobs();
    ASSERT_TRUE(jobs->Rotate("acme", "operator-1").ok());
    auto batch = jobs->RunOnce(16);
    ASSERT_TRUE(batch.ok()) << batch.error().ToString();
    first_run = batch->rewrapped;
    EXPECT_EQ(first_run, 16u);
    EXPECT_FALSE(batch->finished);
  }  // the process "stops" here
  OpenDatabase();
  auto resumed = NewJobs();
  auto before = resumed->Progress("acme");
  ASSERT_TRUE(before.ok());
  EXPECT_EQ(before->state, "running");
  EXPECT_EQ(before->done, 16);

  const std::size_t second_run = RunToEnd(*resumed, 16);
  EXPECT_EQ(first_run + second_run, 80u);  // 40 keys on two tokens, each once
  auto progress = resumed->Progress("acme");
  ASSERT_TRUE(progress.ok());
  EXPECT_EQ(progress->state, "done");
  EXPECT_EQ(progress->done, 80);
  EXPECT_EQ(progress->total, 80);
  ExpectKeysAt("acme", 2);
}

TEST_P(RewrapJobTest, ATamperedBlobIsCountedAsFailedAndNotRetried) {
  CreateKeys("acme", 5);
  const std::string victim = material_.begin()->first;
  std::vector<hsm::TokenBlob> blobs = BlobsOf(victim);
  hsm::TokenBlob tampered = blobs[0];
  tampered.blob[30] ^= 0x01;  // inside the ciphertext; the header still says version 1
  ASSERT_TRUE(db_->InTransaction(
                     [&](Poco::Data::Session& s) { return KmsStore::PutBlob(s, victim, tampered); })
                  .ok());

  auto jobs = NewJobs();
  ASSERT_TRUE(jobs->Rotate("acme", "operator-1").ok());
  RunToEnd(*jobs, 4);
  auto progress = jobs->Progress("acme");
  ASSERT_TRUE(progress.ok());
  EXPECT_EQ(progress->state, "failed");
  EXPECT_EQ(progress->failed, 1);
  EXPECT_EQ(progress->done, 9);
  EXPECT_NE(progress->last_error.find("DATA_LOSS"), std::string::npos) << progress->last_error;
  auto failures = jobs->Failures(progress->job_id);
  ASSERT_TRUE(failures.ok());
  ASSERT_EQ(failures->size(), 1u);
  EXPECT_EQ((*failures)[0].uri, victim);
  EXPECT_EQ((*failures)[0].token, tampered.token);

  // Not repaired from the other token's blob, and not tried again.
  for (const hsm::TokenBlob& blob : BlobsOf(victim)) {
    EXPECT_EQ(VersionOf(blob.blob), blob.token == tampered.token ? 1u : 2u);
  }
  auto again = jobs->RunOnce(4);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->job_id);
  EXPECT_EQ(jobs->Progress("acme")->failed, 1);
  auto rewrap_audit = Audit("root.rewrap");
  ASSERT_EQ(rewrap_audit.size(), 1u);
  EXPECT_EQ(rewrap_audit[0].outcome, "failed");
}

TEST_P(RewrapJobTest, ASecondRotationSupersedesTheRunningJobAndTheHookRuns) {
  CreateKeys("acme", 10);
  std::vector<std::string> hooked;
  auto jobs = NewJobs([&](const std::string& org) { hooked.push_back(org); });
  auto first = jobs->Rotate("acme", "operator-1");
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(jobs->RunOnce(4).ok());
  auto second = jobs->Rotate("acme", "operator-2");
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->root_version, 3u);
  EXPECT_EQ(second->total, 20);  // every blob is below v3, the four already at v2 too
  EXPECT_EQ(hooked, (std::vector<std::string>{"acme", "acme"}));

  EXPECT_EQ(RunToEnd(*jobs, 8), 20u);
  auto progress = jobs->Progress("acme");
  ASSERT_TRUE(progress.ok());
  EXPECT_EQ(progress->job_id, second->job_id);
  EXPECT_EQ(progress->state, "done");
  ExpectKeysAt("acme", 3);
  // The first job is marked superseded, not done.
  bool superseded = false;
  ASSERT_TRUE(db_->WithSession([&](Poco::Data::Session& s) -> Status {
                   SqlStatement select =
                       Database::Prepare(s, "SELECT state FROM rewrap_jobs WHERE id = ?");
                   superseded = select.Bind(first->job_id).Next() && select.Text(0) == "superseded";
                   return OkStatus();
                 })
                  .ok());
  EXPECT_TRUE(superseded);
}

// Keys made while the primary was down are wrapped by the standby alone. Re-wrapping every blob
// there is does not put them under the new version on the primary: the job must not say "done"
// until the reconciliation has wrapped them for it.
TEST_P(RewrapJobTest, AJobIsNotDoneWhileKeysLackAWrapUnderAToken) {
  CreateKeys("acme", 10);
  int dropped = 0;
  for (const auto& [uri, key] : material_) {
    if (dropped == 6) break;
    ASSERT_TRUE(db_->InTransaction([&, &uri = uri](Poco::Data::Session& s) -> Status {
                     Database::Prepare(s,
                                       "DELETE FROM key_blobs WHERE key_uri = ? "
                                       "AND token = 'primary'")
                         .Bind(uri)
                         .Run();
                     return OkStatus();
                   })
                    .ok());
    ++dropped;
  }
  auto jobs = NewJobs();
  ASSERT_TRUE(jobs->Rotate("acme", "operator-1").ok());
  bool stopped = false;
  for (int i = 0; i < 100 && !stopped; ++i) {
    auto batch = jobs->RunOnce(8);
    ASSERT_TRUE(batch.ok()) << batch.error().ToString();
    ASSERT_FALSE(batch->finished);
    stopped = batch->outage.has_value();
  }
  ASSERT_TRUE(stopped);
  auto progress = jobs->Progress("acme");
  ASSERT_TRUE(progress.ok());
  EXPECT_EQ(progress->state, "running");
  EXPECT_EQ(progress->done, 14);  // every blob there is: four keys on two tokens, six on one
  EXPECT_NE(progress->last_error.find("6 wraps of acme's keys are missing (primary 6)"),
            std::string::npos)
      << progress->last_error;

  ReconcileJobs reconcile(*vault_, *db_, [] { return kNowMs; });
  ASSERT_TRUE(reconcile.Start("operator-1").ok());
  for (int i = 0; i < 100; ++i) {
    auto batch = reconcile.RunOnce(4);
    ASSERT_TRUE(batch.ok()) << batch.error().ToString();
    if (batch->finished) break;
  }
  EXPECT_EQ(reconcile.Progress()->state, "done");
  auto finished = jobs->RunOnce(8);
  ASSERT_TRUE(finished.ok());
  EXPECT_TRUE(finished->finished);
  EXPECT_EQ(jobs->Progress("acme")->state, "done");
  ExpectKeysAt("acme", 2);  // the wraps the reconciliation added are under the new version
}

TEST_P(RewrapJobTest, AnOrganizationWithoutKeysIsDoneAtOnce) {
  auto jobs = NewJobs();
  auto rotated = jobs->Rotate("globex", "operator-1");
  ASSERT_TRUE(rotated.ok());
  EXPECT_EQ(rotated->total, 0);
  auto batch = jobs->RunOnce(16);
  ASSERT_TRUE(batch.ok());
  EXPECT_TRUE(batch->finished);
  EXPECT_EQ(jobs->Progress("globex")->state, "done");
}

// Other nodes wrap under the old version until their probes find the new one: a job whose blobs
// are all re-wrapped stays running for two probe intervals after its start, and says why.
TEST_P(RewrapJobTest, AJobWaitsTwoProbeIntervalsForTheOtherNodesBeforeItIsDone) {
  CreateKeys("acme", 4);
  auto jobs = NewJobs({}, std::chrono::milliseconds(1000));
  ASSERT_TRUE(jobs->Rotate("acme", "operator-1").ok());
  const std::int64_t settled_ms = kNowMs + kProbeWaitFactor * 1000;

  auto batch = jobs->RunOnce(256);
  ASSERT_TRUE(batch.ok()) << batch.error().ToString();
  EXPECT_EQ(batch->rewrapped, 8u);
  EXPECT_FALSE(batch->finished);
  ASSERT_TRUE(batch->outage);
  const std::string waiting = "waiting until " + FormatRfc3339Ms(settled_ms);
  EXPECT_NE(batch->outage->message().find(waiting), std::string::npos) << batch->outage->message();
  auto progress = jobs->Progress("acme");
  ASSERT_TRUE(progress.ok());
  EXPECT_EQ(progress->state, "running");
  EXPECT_NE(progress->last_error.find(waiting), std::string::npos) << progress->last_error;
  ExpectKeysAt("acme", 2);  // everything is re-wrapped; the job is not done yet all the same

  now_ms_ = settled_ms - 1;
  batch = jobs->RunOnce(256);
  ASSERT_TRUE(batch.ok());
  EXPECT_FALSE(batch->finished);
  EXPECT_EQ(jobs->Progress("acme")->state, "running");

  now_ms_ = settled_ms;
  batch = jobs->RunOnce(256);
  ASSERT_TRUE(batch.ok());
  EXPECT_TRUE(batch->finished);
  EXPECT_FALSE(batch->outage);
  progress = jobs->Progress("acme");
  EXPECT_EQ(progress->state, "done");
  EXPECT_EQ(progress->done, 8);
  ASSERT_EQ(Audit("root.rewrap").size(), 1u);
}

// A key another node wraps under the old version while the job waits (its probe has not found the
// new version) is re-wrapped before the job ends done, whether a batch in the window or the last
// one finds it.
TEST_P(RewrapJobTest, KeysAnotherNodeWrapsUnderTheOldVersionInTheWindowAreRewrappedBeforeDone) {
  std::unique_ptr<hsm::KeyVault> other = OtherNodesVault("acme");
  ASSERT_TRUE(other);
  CreateKeys("acme", 3);
  auto jobs = NewJobs({}, std::chrono::milliseconds(1000));
  ASSERT_TRUE(jobs->Rotate("acme", "operator-1").ok());
  auto batch = jobs->RunOnce(256);
  ASSERT_TRUE(batch.ok());
  EXPECT_EQ(batch->rewrapped, 6u);
  EXPECT_FALSE(batch->finished);

  now_ms_ = kNowMs + 1500;
  CreateKeys("acme", 2, other.get());
  for (const auto& [uri, key] : material_) {
    for (const hsm::TokenBlob& blob : BlobsOf(uri)) {
      if (uri.ends_with("-3") || uri.ends_with("-4")) {
        EXPECT_EQ(VersionOf(blob.blob), 1u) << uri;  // the other node still wraps under v1
      }
    }
  }
  batch = jobs->RunOnce(256);
  ASSERT_TRUE(batch.ok());
  EXPECT_EQ(batch->rewrapped, 4u);
  EXPECT_FALSE(batch->finished);

  now_ms_ = kNowMs + 1999;
  CreateKeys("acme", 1, other.get());
  now_ms_ = kNowMs + 2000;
  batch = jobs->RunOnce(256);
  ASSERT_TRUE(batch.ok());
  EXPECT_EQ(batch->rewrapped, 2u);
  EXPECT_TRUE(batch->finished);
  auto progress = jobs->Progress("acme");
  ASSERT_TRUE(progress.ok());
  EXPECT_EQ(progress->state, "done");
  EXPECT_EQ(progress->done, 12);
  EXPECT_EQ(progress->total, 12);  // total follows what the other node added
  ExpectKeysAt("acme", 2);
}

TEST_P(RewrapJobTest, BadRequestsAreRefusedAndChangeNothing) {
  auto jobs = NewJobs();
  auto bad_org = jobs->Rotate("Not An Org!", "operator-1");
  ASSERT_FALSE(bad_org.ok());
  EXPECT_EQ(bad_org.error().code(), ErrorCode::kInvalidArgument);
  auto no_actor = jobs->Rotate("acme", "");
  ASSERT_FALSE(no_actor.ok());
  EXPECT_EQ(no_actor.error().code(), ErrorCode::kInvalidArgument);
  auto unknown = jobs->Rotate("initech", "operator-1");  // never initialized: not created here
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code(), ErrorCode::kFailedPrecondition);
  auto none = vault_->ListRoots("initech");
  ASSERT_TRUE(none.ok());
  for (const hsm::RootKeySet& set : *none) EXPECT_TRUE(set.keys.empty());
  EXPECT_EQ(jobs->Progress("initech").error().code(), ErrorCode::kNotFound);
  auto refused = Audit("root.rotate");  // the refusal is audited
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].outcome, "failed");
  EXPECT_EQ(jobs->RunOnce(0).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(jobs->RunOnce(kMaxRewrapBatch + 1).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(jobs->Progress("nobody").error().code(), ErrorCode::kNotFound);
  auto roots = vault_->ListRoots("acme");
  ASSERT_TRUE(roots.ok());
  for (const hsm::RootKeySet& set : *roots) EXPECT_EQ(set.keys.size(), 1u);
}

// Two nodes (two Databases on one database) rotating at once: a job's id is read and inserted in
// one transaction, and transactions run one at a time on either engine, so each gets a job of its
// own (taking one id twice would fail the second insert).
TEST_P(RewrapJobTest, TwoNodesRotatingAtOnceEachGetAJobOfTheirOwn) {
  CreateKeys("acme", 4);
  CreateKeys("globex", 4);
  auto other = testing::OpenKmsDatabase(GetParam(), target_);
  ASSERT_TRUE(other.ok()) << other.error().ToString();
  RewrapJobs here(*vault_, *db_, [] { return kNowMs; });
  RewrapJobs there(*vault_, **other, [] { return kNowMs; });
  constexpr int kRounds = 5;
  std::vector<std::int64_t> ids;
  std::mutex ids_mutex;
  auto rotate = [&](RewrapJobs& jobs, const std::string& org) {
    for (int i = 0; i < kRounds; ++i) {
      Result<RewrapProgress> job = jobs.Rotate(org, "operator-" + org);
      ASSERT_TRUE(job.ok()) << org << ": " << job.error().ToString();
      std::lock_guard lock(ids_mutex);
      ids.push_back(job->job_id);
    }
  };
  std::thread acme([&] { rotate(here, "acme"); });
  std::thread globex([&] { rotate(there, "globex"); });
  acme.join();
  globex.join();
  std::sort(ids.begin(), ids.end());
  std::vector<std::int64_t> expected(2 * kRounds);
  std::iota(expected.begin(), expected.end(), 1);
  EXPECT_EQ(ids, expected);
  EXPECT_EQ(Audit("root.rotate").size(), 2u * kRounds);
}

TEST_P(RewrapJobTest, TheWorkerThreadFinishesAJob) {
  CreateKeys("acme", 12);
  auto jobs = NewJobs();
  RewrapWorker worker(*jobs, std::chrono::milliseconds(20), 5);
  ASSERT_TRUE(jobs->Rotate("acme", "operator-1").ok());
  worker.Wake();
  for (int i = 0; i < 500 && jobs->Progress("acme")->state == "running"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  worker.Stop();
  EXPECT_EQ(jobs->Progress("acme")->state, "done");
  EXPECT_EQ(jobs->Progress("acme")->done, 24);
  ExpectKeysAt("acme", 2);
}

}  // namespace
}  // namespace strongroom::kms
