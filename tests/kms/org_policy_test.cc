#include "strongroom/kms/org_policy.h"

#include <gtest/gtest.h>

#include "../support/kms_database.h"
#include "../support/test_dir.h"
#include "strongroom/kms/kms_store.h"

namespace strongroom::kms {
namespace {

TEST(OrgPolicyTest, ParsesEveryMemberAndRoundTrips) {
  auto policy = PolicyStore::FromJson(
      R"({"complianceOfficers":["carol","dan"],"indexer":"svc-indexer","indexerCloudAgent":true,
          "bindDeadlineSeconds":120,"encryptLifetimeSeconds":7200,"ephemeralLifetimeSeconds":900})",
      "acme");
  ASSERT_TRUE(policy.ok()) << policy.error().ToString();
  EXPECT_EQ(policy->org, "acme");
  EXPECT_EQ(policy->compliance_officers, (std::vector<std::string>{"carol", "dan"}));
  EXPECT_TRUE(policy->IsComplianceOfficer("dan"));
  EXPECT_FALSE(policy->IsComplianceOfficer("da"));
  EXPECT_EQ(policy->indexer, "svc-indexer");
  EXPECT_TRUE(policy->indexer_cloud_agent);
  EXPECT_EQ(policy->bind_deadline_s, 120);
  EXPECT_EQ(policy->encrypt_lifetime_s, 7200);
  EXPECT_EQ(policy->ephemeral_lifetime_s, 900);
  std::string json = PolicyStore::ToJson(*policy);
  EXPECT_NE(json.find(R"("org":"acme")"), std::string::npos);
}

TEST(OrgPolicyTest, RefusesWhatIsMalformedUnknownOrOutOfRange) {
  for (const char* bad : {
           "[]",
           "not json",
           R"({"complianceOfficer":["carol"]})",           // typo: unknown member
           R"({"complianceOfficers":"carol"})",            // not an array
           R"({"complianceOfficers":["carol","carol"]})",  // duplicate
           R"({"complianceOfficers":[""]})",
           R"({"complianceOfficers":[7]})",
           R"({"indexer":5})",
           R"({"indexerCloudAgent":true})",  // without an indexer
           R"({"indexer":"x","indexerCloudAgent":"yes"})",
           R"({"bindDeadlineSeconds":59})",
           R"({"bindDeadlineSeconds":"600"})",
           R"({"encryptLifetimeSeconds":100000000})",
           R"({"ephemeralLifetimeSeconds":0})",
           // A member twice: Poco's parser kept the last (issue 16).
           R"({"complianceOfficers":["carol"],"complianceOfficers":["mallory"]})",
           R"({"indexer":"svc-a","indexer":"svc-b"})",
       }) {
    auto policy = PolicyStore::FromJson(bad, "acme");
    EXPECT_FALSE(policy.ok()) << bad;
    if (!policy.ok()) {
      EXPECT_EQ(policy.error().code(), ErrorCode::kInvalidArgument) << bad;
    }
  }
  EXPECT_FALSE(PolicyStore::FromJson(std::string(kMaxPolicyJsonBytes + 1, ' '), "acme").ok());
}

// The store on both engines (tests/support/kms_database.h).
class OrgPolicyStoreTest : public ::testing::TestWithParam<Database::Engine> {};

INSTANTIATE_TEST_SUITE_P(Engines, OrgPolicyStoreTest, testing::kBothEngines, testing::EngineName);

TEST_P(OrgPolicyStoreTest, StoredPoliciesReplaceTheDefaults) {
  testing::TestDir dir;
  Result<std::string> target = testing::NewKmsDatabase(GetParam(), dir.path());
  ASSERT_TRUE(target.ok()) << target.error().ToString();
  auto db = testing::OpenKmsDatabase(GetParam(), *target);
  ASSERT_TRUE(db.ok()) << db.error().ToString();
  OrgPolicy read;
  ASSERT_TRUE((*db)
                  ->WithSession([&](Poco::Data::Session& s) -> Status {
                    SR_ASSIGN_OR_RETURN(read, PolicyStore::Get(s, "acme"));
                    return OkStatus();
                  })
                  .ok());
  EXPECT_TRUE(read.compliance_officers.empty());
  EXPECT_EQ(read.bind_deadline_s, 600);

  OrgPolicy policy;
  policy.org = "acme";
  policy.compliance_officers = {"carol"};
  policy.ephemeral_lifetime_s = 120;
  ASSERT_TRUE(
      (*db)
          ->InTransaction([&](Poco::Data::Session& s) { return PolicyStore::Put(s, policy, 1); })
          .ok());
  policy.ephemeral_lifetime_s = 5;  // invalid: nothing changes
  EXPECT_FALSE(
      (*db)
          ->InTransaction([&](Poco::Data::Session& s) { return PolicyStore::Put(s, policy, 2); })
          .ok());
  ASSERT_TRUE((*db)
                  ->WithSession([&](Poco::Data::Session& s) -> Status {
                    SR_ASSIGN_OR_RETURN(read, PolicyStore::Get(s, "acme"));
                    return OkStatus();
                  })
                  .ok());
  EXPECT_EQ(read.compliance_officers, (std::vector<std::string>{"carol"}));
  EXPECT_EQ(read.ephemeral_lifetime_s, 120);
}

}  // namespace
}  // namespace strongroom::kms
