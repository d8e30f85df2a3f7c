#include "strongroom/common/jwt_settings.h"

#include <Poco/StringTokenizer.h>

#include <set>

#include "strongroom/common/config_file.h"

namespace strongroom {

Result<JwtSettings> ReadJwtSettings(const Poco::Util::AbstractConfiguration& config,
                                    const std::string& default_audience) {
  JwtSettings out;
  out.audience = default_audience;
  if (!config.hasProperty("jwt.issuers")) {
    return Error(ErrorCode::kInvalidArgument,
                 "the configuration names no token issuers (set issuers = ... in section [jwt])");
  }
  Poco::StringTokenizer names(
      config.getRawString("jwt.issuers"), ",",
      Poco::StringTokenizer::TOK_TRIM | Poco::StringTokenizer::TOK_IGNORE_EMPTY);
  if (names.count() == 0) return Error(ErrorCode::kInvalidArgument, "jwt.issuers lists none");
  if (names.count() > kMaxJwtIssuers) {
    return Error(ErrorCode::kInvalidArgument,
                 "jwt.issuers lists more than " + std::to_string(kMaxJwtIssuers));
  }
  std::set<std::string> allowed = {"audience", "skew_s", "issuers"};
  for (const std::string& name : names) {
    if (allowed.count(name)) {
      return Error(ErrorCode::kInvalidArgument, "jwt.issuers names '" + name +
                                                    "', which is a setting of [jwt], not an "
                                                    "issuer section");
    }
  }
  std::set<std::string> issuer_names(names.begin(), names.end());
  if (issuer_names.size() != names.count()) {
    return Error(ErrorCode::kInvalidArgument, "jwt.issuers names an issuer twice");
  }
  allowed.insert(issuer_names.begin(), issuer_names.end());
  SR_RETURN_IF_ERROR(CheckSettingKeys(config, "jwt", allowed));
  if (config.hasProperty("jwt.audience")) {
    SR_ASSIGN_OR_RETURN(out.audience, RequiredSetting(config, "jwt.audience", "token audience"));
  }
  SR_ASSIGN_OR_RETURN(out.skew, DurationSetting(config, "jwt.skew_s", out.skew, 0,
                                                static_cast<std::uint64_t>(kMaxClockSkew.count())));

  std::set<std::string> seen_issuers;
  for (const std::string& name : names) {
    const std::string section = "jwt." + name;
    SR_RETURN_IF_ERROR(
        CheckSettingKeys(config, section, {"issuer", "org", "jwks", "subject_domains"}));
    JwtIssuerSettings issuer;
    issuer.name = name;
    SR_ASSIGN_OR_RETURN(issuer.issuer, RequiredSetting(config, section + ".issuer", "issuer URL"));
    SR_ASSIGN_OR_RETURN(issuer.org, RequiredSetting(config, section + ".org", "organization"));
    SR_ASSIGN_OR_RETURN(issuer.jwks_path, RequiredSetting(config, section + ".jwks", "JWKS file"));
    if (config.hasProperty(section + ".subject_domains")) {
      SR_ASSIGN_OR_RETURN(
          issuer.subject_domains,
          NameListSetting(config, section + ".subject_domains", kMaxSubjectDomains));
      if (issuer.subject_domains.empty()) {
        return Error(ErrorCode::kInvalidArgument, section + ".subject_domains lists none");
      }
    }
    if (!seen_issuers.insert(issuer.issuer).second) {
      return Error(ErrorCode::kInvalidArgument,
                   "issuer " + issuer.issuer + " is configured twice (in [" + section + "])");
    }
    out.issuers.push_back(std::move(issuer));
  }
  Result<SubjectOrganizations> subjects = SubjectOrganizationsOf(out);
  if (!subjects.ok()) {
    return Error(ErrorCode::kInvalidArgument, "[jwt]: " + subjects.error().message());
  }
  return out;
}

Result<SubjectOrganizations> SubjectOrganizationsOf(const JwtSettings& settings) {
  std::vector<SubjectOrganizations::Issuer> issuers;
  for (const JwtIssuerSettings& issuer : settings.issuers) {
    issuers.push_back({issuer.issuer, issuer.org, issuer.subject_domains});
  }
  return SubjectOrganizations::New(issuers);
}

Result<JwtVerifier> MakeJwtVerifier(const JwtSettings& settings) {
  std::vector<TrustedIssuer> issuers;
  for (const JwtIssuerSettings& issuer : settings.issuers) {
    SR_ASSIGN_OR_RETURN(std::string jwks, ReadSmallFile(issuer.jwks_path, kMaxJwksFileBytes));
    Result<std::vector<jose::PublicJwk>> keys = ParseJwks(jwks);
    if (!keys.ok()) {
      return Error(ErrorCode::kInvalidArgument, "the JWKS of issuer " + issuer.name + " (" +
                                                    issuer.jwks_path +
                                                    ") is unusable: " + keys.error().message());
    }
    issuers.push_back({issuer.issuer, issuer.org, std::move(keys).value(), issuer.subject_domains});
  }
  return JwtVerifier::New(std::move(issuers), settings.audience, settings.skew);
}

}  // namespace strongroom
