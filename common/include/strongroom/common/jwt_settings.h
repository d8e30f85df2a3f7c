// The [jwt] sections of a service's configuration file: the identity providers whose bearer
// tokens the service accepts (kmsd with audience "kms", cored with "core").
//
//   [jwt]
//   audience = kms                    ; optional; the service's default otherwise
//   skew_s = 60                       ; optional: clock skew allowed (0-300)
//   issuers = acme, globex
//
//   [jwt.acme]
//   issuer = https://idp.acme.example ; the exact "iss"
//   org = acme                        ; the organization of its users
//   jwks = /etc/strongroom/idp/acme.jwks.json
//   subject_domains = acme.example    ; its subjects are user@<one of these>
//
// Unknown keys are refused, and so is a [jwt.<name>] section that jwt.issuers does not list.
// subject_domains (1 to kMaxSubjectDomains DNS names) is required of every issuer when the issuers
// are of several organizations, and no domain may be listed for two organizations (see
// SubjectOrganizations in jwt.h): a token whose sub is not in a domain of its issuer is refused.
#ifndef STRONGROOM_COMMON_JWT_SETTINGS_H_
#define STRONGROOM_COMMON_JWT_SETTINGS_H_

#include <Poco/Util/AbstractConfiguration.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/common/jwt.h"

namespace strongroom {

inline constexpr std::size_t kMaxJwtIssuers = 64;
inline constexpr std::size_t kMaxJwksFileBytes = 256 * 1024;

struct JwtIssuerSettings {
  std::string name;  // the [jwt.<name>] section
  std::string issuer;
  std::string org;
  std::string jwks_path;
  std::vector<std::string> subject_domains;  // as written; empty when not set
};

struct JwtSettings {
  std::string audience;
  std::chrono::seconds skew{60};
  std::vector<JwtIssuerSettings> issuers;
};

Result<JwtSettings> ReadJwtSettings(const Poco::Util::AbstractConfiguration& config,
                                    const std::string& default_audience);

// Whose users the configured issuers sign for (ReadJwtSettings has checked it can be built).
Result<SubjectOrganizations> SubjectOrganizationsOf(const JwtSettings& settings);

// Reads each issuer's JWKS file and builds the verifier.
Result<JwtVerifier> MakeJwtVerifier(const JwtSettings& settings);

}  // namespace strongroom

#endif  // STRONGROOM_COMMON_JWT_SETTINGS_H_
