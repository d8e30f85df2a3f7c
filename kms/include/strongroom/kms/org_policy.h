// An organization's policy, set by its operators through the operations API (never through the
// KMS protocol): who its compliance officers are (they may retrieve keys on behalf of the org's
// users, as orgAgent), the indexer's service identity and whether it is granted cloudAgent on new
// resources, and the lifetimes of the keys the KMS hands out.
//
// JSON form (the operations API's body, all members optional; absent = default):
//   {"complianceOfficers": ["carol"], "indexer": "svc-indexer", "indexerCloudAgent": true,
//    "bindDeadlineSeconds": 600, "encryptLifetimeSeconds": 86400,
//    "ephemeralLifetimeSeconds": 3600}
#ifndef STRONGROOM_KMS_ORG_POLICY_H_
#define STRONGROOM_KMS_ORG_POLICY_H_

#include <Poco/Data/Session.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strongroom/common/database.h"
#include "strongroom/common/error.h"

namespace strongroom::kms {

inline constexpr std::size_t kMaxComplianceOfficers = 100;
inline constexpr std::size_t kMaxPolicyJsonBytes = 64 * 1024;

struct OrgPolicy {
  std::string org;
  std::vector<std::string> compliance_officers;  // users granted orgAgent for the org
  std::optional<std::string> indexer;            // the indexer's service identity (a user id)
  bool indexer_cloud_agent = false;              // grant it cloudAgent on new resources
  std::int64_t bind_deadline_s = 600;            // 60 s .. 1 day
  std::int64_t encrypt_lifetime_s = 86400;       // 1 hour .. 1 year
  std::int64_t ephemeral_lifetime_s = 3600;      // 60 s .. 1 day

  bool IsComplianceOfficer(std::string_view user) const;
};

class PolicyStore {
 public:
  static Migration Schema(int version);

  // The stored policy, or the defaults when none was set.
  static Result<OrgPolicy> Get(Poco::Data::Session& s, const std::string& org);
  // Validates and stores (replacing the previous one); the caller audits the change.
  static Status Put(Poco::Data::Session& s, const OrgPolicy& policy, std::int64_t now_ms);

  // INVALID_ARGUMENT naming the offending member on anything malformed, unknown or out of range;
  // a member given twice is refused too (not named).
  static Result<OrgPolicy> FromJson(std::string_view json, const std::string& org);
  static std::string ToJson(const OrgPolicy& policy);
  static Status Validate(const OrgPolicy& policy);
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_ORG_POLICY_H_
