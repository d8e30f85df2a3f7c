// The reconciliation job against real SoftHSM2 tokens (a primary and a standby) through the
// fault-injecting PKCS#11 module (tests/support/fault_pkcs11.h): keys that a token missed while it
// was down get a wrap for it, the job resumes from its cursor after a restart, and a token that is
// still down is never claimed done.
#include "strongroom/kms/reconcile_job.h"

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <thread>

#include "../support/fault_pkcs11.h"
#include "../support/kms_database.h"
#include "../support/softhsm_sandbox.h"
#include "../support/test_dir.h"
#include "../support/wait_until.h"
#include "strongroom/hsm/key_vault.h"
#include "strongroom/kms/audit_log.h"
#include "strongroom/kms/kms_store.h"
#include "strongroom/kms/search_keys.h"

namespace strongroom::kms {
namespace {

using testing::SoftHsmSandbox;

constexpr char kFaultModule[] = SR_FAULT_MODULE_PATH;
constexpr std::int64_t kNowMs = 1'800'000'000'000;

std::uint32_t VersionOf(const std::vector<std::uint8_t>& blob) {
  auto view = hsm::ParseWrappedKey(blob);
  return view.ok() ? view->root_version : 0;
}

bool WaitFor(const std::function<bool()>& condition) { return testing::WaitUntil(condition); }

// On both engines (tests/support/kms_database.h).
class ReconcileJobTest : public ::testing::TestWithParam<Database::Engine> {
 protected:
  void SetUp() override {
    handle_ = dlopen(kFaultModule, RTLD_NOW);
    ASSERT_NE(handle_, nullptr);
    fail_token_ = reinterpret_cast<sr_fault_fail_token_fn>(dlsym(handle_, "sr_fault_fail_token"));
    clear_ = reinterpret_cast<sr_fault_clear_fn>(dlsym(handle_, "sr_fault_clear"));
    ASSERT_TRUE(fail_token_ && clear_);
    clear_();
  }
  void TearDown() override {
    if (clear_) clear_();
  }

  // Opens the vault (probing every 50 ms, so a token comes back by itself) and the database.
  // `extra_acme_token` adds a third token that serves acme only. A failed assertion here (as in
  // every helper below) ends only the helper: tests call it through ASSERT_NO_FATAL_FAILURE, so
  // that they end too instead of going on without a vault or a database.
  void Open(bool extra_acme_token = false) {
    std::vector<hsm::TokenConfig> tokens;
    for (const char* name : {"primary", "standby", "acme-only"}) {
      if (std::string(name) == "acme-only" && !extra_acme_token) break;
      hsm::TokenConfig token;
      token.name = name;
      labels_[name] = SoftHsmSandbox::Get().CreateToken(kFaultModule);
      token.uri = SoftHsmSandbox::Get().Uri(kFaultModule, labels_[name]);
      if (std::string(name) == "acme-only") token.orgs = {"acme"};
      tokens.push_back(token);
    }
    auto vault = hsm::KeyVault::Open({tokens, std::chrono::milliseconds(50)});
    ASSERT_TRUE(vault.ok()) << vault.error().ToString();
    vault_ = std::move(vault).value();
    for (const char* org : {"acme", "globex"}) {
      auto roots = vault_->InitRoot(org);
      ASSERT_TRUE(roots.ok()) << org << ": " << roots.error().ToString();
    }
    ASSERT_NO_FATAL_FAILURE(OpenDatabase());
  }

  // Opens the test's database (made at the first call), again after a restart.
  void OpenDatabase() {
    db_.reset();
    if (target_.empty()) {
      Result<std::string> target = testing::NewKmsDatabase(GetParam(), dir_.path());
      ASSERT_TRUE(target.ok()) << target.error().ToString();
      target_ = *target;
    }
    auto db = testing::OpenKmsDatabase(GetParam(), target_);
    ASSERT_TRUE(db.ok()) << db.error().ToString();
    db_ = std::move(db).value();
  }

  std::unique_ptr<ReconcileJobs> NewJobs() {
    return std::make_unique<ReconcileJobs>(*vault_, *db_, [] { return kNowMs; });
  }

  // `n` keys of `org` wrapped under the named tokens only, as the KMS stores a key made while the
  // others were down; remembers their material. Returns their URIs.
  std::vector<std::string> CreateKeys(const std::string& org, int n,
                                      const std::vector<std::string>& wrapped_by) {
    std::vector<KeyRecord> records;
    std::vector<std::string> uris;
    for (int i = 0; i < n; ++i) {
      KeyRecord k;
      k.uri = "kms://kms.test/keys/" + org + "-" + std::to_string(1000 + material_.size());
      k.org = org;
      k.creator = "alice";
      k.client_id = "test";
      k.created_ms = kNowMs;
      k.bind_deadline_ms = kNowMs + 600'000;
      SecretBytes key = SecretBytes::Random(32);
      for (const std::string& token : wrapped_by) {
        auto blob = vault_->FindToken(token)->Wrap({org, k.uri}, key.view());
        EXPECT_TRUE(blob.ok()) << blob.error().ToString();
        k.blobs.push_back({token, *blob});
      }
      material_.emplace(k.uri, std::move(key));
      uris.push_back(k.uri);
      records.push_back(std::move(k));
    }
    EXPECT_TRUE(
        db_->InTransaction([&](Poco::Data::Session& s) { return KmsStore::InsertKeys(s, records); })
            .ok());
    return uris;
  }

  std::string CreateEphemeral(const std::string& org, std::int64_t expires_ms,
                              const std::vector<std::string>& wrapped_by) {
    EphemeralKeyRecord e;
    e.uri = "kms://kms.test/ecdhe/" + std::to_string(1000 + material_.size());
    e.org = org;
    e.user_id = "alice";
    e.client_id = "test";
    e.created_ms = kNowMs - 1000;
    e.expires_ms = expires_ms;
    SecretBytes key = SecretBytes::Random(32);
    for (const std::string& token : wrapped_by) {
      auto blob = vault_->FindToken(token)->Wrap({org, e.uri}, key.view());
      EXPECT_TRUE(blob.ok());
      e.blobs.push_back({token, *blob});
    }
    material_.emplace(e.uri, std::move(key));
    EXPECT_TRUE(db_->InTransaction(
                       [&](Poco::Data::Session& s) { return KmsStore::InsertEphemeralKey(s, e); })
                    .ok());
    return e.uri;
  }

  std::map<std::string, std::vector<std::uint8_t>> BlobsOf(const std::string& uri) {
    std::vector<hsm::TokenBlob> blobs;
    EXPECT_TRUE(db_->WithSession([&](Poco::Data::Session& s) -> Status {
                     if (uri.find("/ecdhe/") != std::string::npos) {
                       SR_ASSIGN_OR_RETURN(auto e, KmsStore::FindEphemeralKey(s, uri));
                       if (e) blobs = e->blobs;
                     } else {
                       SR_ASSIGN_OR_RETURN(auto k, KmsStore::FindKey(s, uri));
                       if (k) blobs = k->blobs;
                     }
                     return OkStatus();
                   })
                    .ok());
    std::map<std::string, std::vector<std::uint8_t>> out;
    for (hsm::TokenBlob& b : blobs) out[b.token] = std::move(b.blob);
    return out;
  }

  // The key has a blob for each of `tokens`, and each opens on its own token alone to the key.
  void ExpectWrappedUnder(const std::string& org, const std::string& uri,
                          const std::vector<std::string>& tokens) {
    const auto blobs = BlobsOf(uri);
    ASSERT_EQ(blobs.size(), tokens.size()) << uri;
    for (const std::string& token : tokens) {
      ASSERT_TRUE(blobs.count(token)) << uri << " lacks " << token;
      auto opened = vault_->FindToken(token)->Unwrap({org, uri}, blobs.at(token));
      ASSERT_TRUE(opened.ok()) << uri << " on " << token << ": " << opened.error().ToString();
      EXPECT_TRUE(ConstantTimeEquals(opened->view(), material_.at(uri).view())) << uri;
    }
  }

  // Runs batches until the job ends or waits; returns the wraps added.
  std::size_t RunToEnd(ReconcileJobs& jobs, std::size_t batch) {
    std::size_t wrapped = 0;
    for (int i = 0; i < 1000; ++i) {
      auto result = jobs.RunOnce(batch);
      EXPECT_TRUE(result.ok()) << result.error().ToString();
      if (!result.ok()) break;
      wrapped += result->wrapped;
      if (result->finished || result->outage || !result->job_id) break;
    }
    return wrapped;
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

  void Fail(const std::string& token) {
    fail_token_(labels_.at(token).c_str(), CKR_DEVICE_REMOVED, -1);
    ASSERT_TRUE(WaitFor(
        [&] { return vault_->FindToken(token)->Health().state == hsm::TokenState::kUnavailable; }));
  }
  void Recover(const std::string& token) {
    clear_();
    ASSERT_TRUE(WaitFor([&] {
      return vault_->FindToken(token)->Health().state == hsm::TokenState::kReady;
    })) << vault_->FindToken(token)->Health().detail;
  }

  void* handle_ = nullptr;
  sr_fault_fail_token_fn fail_token_ = nullptr;
  sr_fault_clear_fn clear_ = nullptr;
  std::map<std::string, std::string> labels_;
  testing::TestDir dir_;
  std::string target_;  // the SQLite file or the PostgreSQL connection string
  std::unique_ptr<hsm::KeyVault> vault_;
  std::unique_ptr<Database> db_;
  std::map<std::string, SecretBytes> material_;
};

INSTANTIATE_TEST_SUITE_P(Engines, ReconcileJobTest, testing::kBothEngines, testing::EngineName);

TEST_P(ReconcileJobTest, KeysMissingAWrapAreCountedAndWrappedForTheTokensThatLackThem) {
  ASSERT_NO_FATAL_FAILURE(Open());
  const auto standby_only = CreateKeys("acme", 30, {"standby"});
  const auto complete = CreateKeys("acme", 5, {"primary", "standby"});
  const auto globex = CreateKeys("globex", 4, {"primary"});
  const std::string live = CreateEphemeral("acme", kNowMs + 3'600'000, {"primary"});
  const std::string expired = CreateEphemeral("acme", kNowMs - 1, {"primary"});
  const std::string deleted = CreateEphemeral("acme", kNowMs + 3'600'000, {"primary"});
  ASSERT_TRUE(db_->InTransaction([&](Poco::Data::Session& s) {
                   return KmsStore::DeleteEphemeralKey(s, deleted);
                 })
                  .ok());
  auto jobs = NewJobs();

  auto counted = jobs->Count();
  ASSERT_TRUE(counted.ok()) << counted.error().ToString();
  EXPECT_EQ(counted->of("primary"), 30);
  EXPECT_EQ(counted->of("standby"), 4 + 1);  // globex's keys and the live channel key
  EXPECT_EQ(jobs->last_count()->total(), 35);

  auto started = jobs->Start("operator-1");
  ASSERT_TRUE(started.ok()) << started.error().ToString();
  EXPECT_EQ(started->state, "running");
  EXPECT_EQ(started->total, 35);
  EXPECT_EQ(RunToEnd(*jobs, 8), 35u);
  auto progress = jobs->Progress();
  ASSERT_TRUE(progress.ok());
  EXPECT_EQ(progress->state, "done");
  EXPECT_EQ(progress->done, 35);
  EXPECT_EQ(progress->failed, 0);
  EXPECT_EQ(progress->total, 35);
  EXPECT_EQ(jobs->last_count()->total(), 0);  // the round's end counted again

  for (const auto& uri : standby_only) ExpectWrappedUnder("acme", uri, {"primary", "standby"});
  for (const auto& uri : complete) ExpectWrappedUnder("acme", uri, {"primary", "standby"});
  for (const auto& uri : globex) ExpectWrappedUnder("globex", uri, {"primary", "standby"});
  ExpectWrappedUnder("acme", live, {"primary", "standby"});
  EXPECT_EQ(BlobsOf(expired).size(), 1u);  // refused anyway: not worth a wrap
  EXPECT_EQ(BlobsOf(deleted).size(), 1u);
  // The new wraps are under the token's current root version.
  EXPECT_EQ(VersionOf(BlobsOf(standby_only[0]).at("primary")), 1u);

  auto begun = Audit("reconcile.start");
  ASSERT_EQ(begun.size(), 1u);
  EXPECT_EQ(begun[0].actor, "operator-1");
  auto ended = Audit("reconcile.end");
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].outcome, "ok");
  EXPECT_TRUE(AuditLog::Verify(*db_)->ok());

  auto idle = jobs->RunOnce(8);  // nothing is active now
  ASSERT_TRUE(idle.ok());
  EXPECT_FALSE(idle->job_id);
}

// Issue 14: a search key made while a token was down is wrapped for it once it is back.
TEST_P(ReconcileJobTest, ASearchKeyMadeWhileATokenWasDownIsWrappedForItLater) {
  ASSERT_NO_FATAL_FAILURE(Open());
  SearchKeys search_keys("kms://kms.test", *vault_, *db_, [] { return kNowMs; });
  ASSERT_NO_FATAL_FAILURE(Fail("primary"));
  auto made = search_keys.Current("acme", "svc-indexer");
  ASSERT_TRUE(made.ok()) << made.error().ToString();
  ASSERT_EQ(made->blobs.size(), 1u);
  EXPECT_EQ(made->blobs[0].token, "standby");
  auto material = search_keys.Open(*made);
  ASSERT_TRUE(material.ok());
  ASSERT_NO_FATAL_FAILURE(Recover("primary"));

  auto jobs = NewJobs();
  auto counted = jobs->Count();
  ASSERT_TRUE(counted.ok()) << counted.error().ToString();
  EXPECT_EQ(counted->of("primary"), 1);
  EXPECT_EQ(counted->of("standby"), 0);
  ASSERT_TRUE(jobs->Start("operator-1").ok());
  EXPECT_EQ(RunToEnd(*jobs, 8), 1u);
  EXPECT_EQ(jobs->Progress()->state, "done");
  EXPECT_EQ(jobs->last_count()->total(), 0);

  auto stored = search_keys.Find("acme", 1);
  ASSERT_TRUE(stored.ok() && *stored);
  ASSERT_EQ((*stored)->blobs.size(), 2u);
  for (const hsm::TokenBlob& blob : (*stored)->blobs) {
    auto opened = vault_->FindToken(blob.token)->Unwrap({"acme", (*stored)->uri}, blob.blob);
    ASSERT_TRUE(opened.ok()) << blob.token << ": " << opened.error().ToString();
    EXPECT_TRUE(ConstantTimeEquals(opened->view(), material->view())) << blob.token;
  }
}

TEST_P(ReconcileJobTest, AnInterruptedJobResumesFromItsCursorWithoutRepeatingWork) {
  ASSERT_NO_FATAL_FAILURE(Open());
  const auto uris = CreateKeys("acme", 40, {"standby"});
  std::map<std::string, std::vector<std::uint8_t>> first_wraps;
  {
    auto jobs = NewJobs();
    ASSERT_TRUE(jobs->Start("operator-1").ok());
    auto batch = jobs->RunOnce(16);
    ASSERT_TRUE(batch.ok()) << batch.error().ToString();
    EXPECT_EQ(batch->wrapped, 16u);
    EXPECT_FALSE(batch->finished);
    for (const auto& uri : uris) {
      auto blobs = BlobsOf(uri);
      if (blobs.count("primary")) first_wraps[uri] = blobs.at("primary");
    }
  }  // the process "stops" here
  ASSERT_EQ(first_wraps.size(), 16u);
  ASSERT_NO_FATAL_FAILURE(OpenDatabase());
  auto resumed = NewJobs();
  auto before = resumed->Progress();
  ASSERT_TRUE(before.ok());
  EXPECT_EQ(before->state, "running");
  EXPECT_EQ(before->done, 16);

  // The next batch starts after the cursor: all 16 keys it wraps are ones the first run had not.
  auto next = resumed->RunOnce(16);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->wrapped, 16u);
  EXPECT_EQ(RunToEnd(*resumed, 16), 8u);
  auto progress = resumed->Progress();
  ASSERT_TRUE(progress.ok());
  EXPECT_EQ(progress->state, "done");
  EXPECT_EQ(progress->done, 40);  // each key once
  for (const auto& uri : uris) ExpectWrappedUnder("acme", uri, {"primary", "standby"});
  for (const auto& [uri, blob] : first_wraps) {
    EXPECT_EQ(BlobsOf(uri).at("primary"), blob) << uri << " was wrapped again";
  }
}

TEST_P(ReconcileJobTest, ATokenThatIsStillDownIsNotClaimedDone) {
  ASSERT_NO_FATAL_FAILURE(Open());
  const auto uris = CreateKeys("acme", 20, {"standby"});
  auto jobs = NewJobs();
  ASSERT_NO_FATAL_FAILURE(Fail("primary"));

  // Nothing a ready token lacks: the worker's check starts no job on its own...
  ASSERT_TRUE(jobs->Check(std::chrono::milliseconds(0), std::chrono::milliseconds(0), 0).ok());
  EXPECT_EQ(jobs->last_count()->of("primary"), 20);
  EXPECT_EQ(jobs->Progress().error().code(), ErrorCode::kNotFound);
  // ...and one an operator starts waits for the primary instead of ending done.
  ASSERT_TRUE(jobs->Start("operator-1").ok());
  EXPECT_EQ(RunToEnd(*jobs, 8), 0u);
  auto waiting = jobs->Progress();
  ASSERT_TRUE(waiting.ok());
  EXPECT_EQ(waiting->state, "waiting");
  EXPECT_EQ(waiting->waiting_for, (std::vector<std::string>{"primary"}));
  EXPECT_NE(waiting->last_error.find("'primary'"), std::string::npos) << waiting->last_error;
  EXPECT_EQ(waiting->done, 0);
  auto again = jobs->RunOnce(8);  // still down: nothing to do, still waiting
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->outage);
  EXPECT_EQ(jobs->Progress()->state, "waiting");
  // An operator's start resumes the waiting job at once (no second job); it waits again.
  bool started = true;
  auto resumed = jobs->Start("operator-2", &started);
  ASSERT_TRUE(resumed.ok());
  EXPECT_FALSE(started);
  EXPECT_EQ(resumed->job_id, waiting->job_id);
  EXPECT_EQ(resumed->state, "running");
  EXPECT_EQ(RunToEnd(*jobs, 8), 0u);
  EXPECT_EQ(jobs->Progress()->state, "waiting");

  // The keys only the standby holds wait for the standby too: with the primary back and the
  // standby down, nothing can open them.
  ASSERT_NO_FATAL_FAILURE(Recover("primary"));
  ASSERT_NO_FATAL_FAILURE(Fail("standby"));
  EXPECT_EQ(RunToEnd(*jobs, 8), 0u);
  waiting = jobs->Progress();
  EXPECT_EQ(waiting->state, "waiting");
  EXPECT_EQ(waiting->waiting_for, (std::vector<std::string>{"standby"}));
  EXPECT_EQ(waiting->failed, 0);  // an outage, not a key that cannot be opened

  ASSERT_NO_FATAL_FAILURE(Recover("standby"));
  EXPECT_EQ(RunToEnd(*jobs, 8), 20u);
  EXPECT_EQ(jobs->Progress()->state, "done");
  for (const auto& uri : uris) ExpectWrappedUnder("acme", uri, {"primary", "standby"});
}

TEST_P(ReconcileJobTest, AKeyNoTokenCanOpenIsAFailureAndNeverCopied) {
  ASSERT_NO_FATAL_FAILURE(Open());
  const auto uris = CreateKeys("acme", 5, {"standby"});
  const std::string victim = uris[2];
  std::vector<std::uint8_t> tampered = BlobsOf(victim).at("standby");
  tampered[30] ^= 0x01;
  ASSERT_TRUE(db_->InTransaction([&](Poco::Data::Session& s) {
                   return KmsStore::PutBlob(s, victim, {"standby", tampered});
                 })
                  .ok());
  auto jobs = NewJobs();
  ASSERT_TRUE(jobs->Check(std::chrono::milliseconds(0), std::chrono::milliseconds(0), 0).ok());
  auto started = jobs->Progress();  // the check started it: the primary is ready and lacks keys
  ASSERT_TRUE(started.ok());
  EXPECT_EQ(started->started_by, "kms");
  EXPECT_EQ(RunToEnd(*jobs, 2), 4u);

  auto progress = jobs->Progress();
  ASSERT_TRUE(progress.ok());
  EXPECT_EQ(progress->state, "failed");
  EXPECT_EQ(progress->done, 4);
  EXPECT_EQ(progress->failed, 1);
  auto failures = jobs->Failures(progress->job_id);
  ASSERT_TRUE(failures.ok());
  ASSERT_EQ(failures->size(), 1u);
  EXPECT_EQ((*failures)[0].uri, victim);
  EXPECT_EQ((*failures)[0].token, "primary");
  EXPECT_NE((*failures)[0].error.find("DATA_LOSS"), std::string::npos) << (*failures)[0].error;
  EXPECT_EQ(BlobsOf(victim).count("primary"), 0u);  // nothing made from a tampered blob
  EXPECT_EQ(jobs->last_count()->of("primary"), 1);  // and it is still counted as missing
  EXPECT_EQ(Audit("reconcile.end").at(0).outcome, "failed");

  // The worker's check does not start the same futile job again and again.
  ASSERT_TRUE(jobs->Check(std::chrono::milliseconds(0), std::chrono::milliseconds(0), 0).ok());
  EXPECT_EQ(jobs->Progress()->job_id, progress->job_id);
  // A new key a ready token lacks is a change: a new job, which tries the victim once more.
  CreateKeys("acme", 1, {"standby"});
  ASSERT_TRUE(jobs->Check(std::chrono::milliseconds(0), std::chrono::milliseconds(0), 0).ok());
  EXPECT_EQ(jobs->Progress()->job_id, progress->job_id + 1);
  EXPECT_EQ(RunToEnd(*jobs, 8), 1u);
  EXPECT_EQ(jobs->Progress()->state, "failed");
}

TEST_P(ReconcileJobTest, ATokenServingSomeOrganizationsLacksOnlyTheirKeys) {
  ASSERT_NO_FATAL_FAILURE(Open(/*extra_acme_token=*/true));
  const auto acme = CreateKeys("acme", 6, {"primary", "standby"});
  const auto globex = CreateKeys("globex", 6, {"primary", "standby"});  // acme-only never serves
  auto jobs = NewJobs();
  auto counted = jobs->Count();
  ASSERT_TRUE(counted.ok());
  EXPECT_EQ(counted->of("acme-only"), 6);
  EXPECT_EQ(counted->of("primary"), 0);
  EXPECT_EQ(counted->of("standby"), 0);
  ASSERT_TRUE(jobs->Start("operator-1").ok());
  EXPECT_EQ(RunToEnd(*jobs, 4), 6u);
  EXPECT_EQ(jobs->Progress()->state, "done");
  for (const auto& uri : acme) ExpectWrappedUnder("acme", uri, {"acme-only", "primary", "standby"});
  for (const auto& uri : globex) ExpectWrappedUnder("globex", uri, {"primary", "standby"});
}

TEST_P(ReconcileJobTest, BadRequestsAreRefusedAndChangeNothing) {
  ASSERT_NO_FATAL_FAILURE(Open());
  auto jobs = NewJobs();
  EXPECT_EQ(jobs->Start("").error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(jobs->Start(std::string(257, 'a')).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(jobs->RunOnce(0).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(jobs->RunOnce(kMaxReconcileBatch + 1).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(jobs->Failures(1, 0).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(jobs->Progress().error().code(), ErrorCode::kNotFound);
  EXPECT_TRUE(Audit("reconcile.start").empty());
}

TEST_P(ReconcileJobTest, TheWorkerWrapsForATokenOnceItIsBackWithoutBeingAsked) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_NO_FATAL_FAILURE(Fail("primary"));
  const auto uris = CreateKeys("acme", 12, {"standby"});
  auto jobs = NewJobs();
  ReconcileWorker::Options options;
  options.interval = std::chrono::milliseconds(20);
  options.batch = 5;
  options.busy_recount = std::chrono::milliseconds(20);
  ReconcileWorker worker(*jobs, options);
  ASSERT_TRUE(WaitFor([&] {
    auto count = jobs->last_count();
    return count && count->of("primary") == 12;
  }));
  ASSERT_NO_FATAL_FAILURE(Recover("primary"));
  ASSERT_TRUE(WaitFor([&] {
    auto progress = jobs->Progress();
    return progress.ok() && progress->state == "done";
  })) << jobs->Progress()->state;
  worker.Stop();
  EXPECT_EQ(jobs->Progress()->started_by, "kms");
  EXPECT_EQ(jobs->Progress()->done, 12);
  EXPECT_EQ(jobs->last_count()->total(), 0);
  for (const auto& uri : uris) ExpectWrappedUnder("acme", uri, {"primary", "standby"});
}

}  // namespace
}  // namespace strongroom::kms
