#include "strongroom/kms/kmsd_settings.h"

#include <Poco/AutoPtr.h>
#include <Poco/Exception.h>
#include <Poco/String.h>
#include <Poco/StringTokenizer.h>
#include <Poco/Util/IniFileConfiguration.h>

#include <fstream>
#include <set>
#include <sstream>

#include "strongroom/kms/config_file.h"

namespace strongroom::kms {
namespace {

using Poco::Util::AbstractConfiguration;

Result<std::string> Required(const AbstractConfiguration& config, const std::string& key,
                             const std::string& what) {
  std::string value = SettingText(config, key);
  if (value.empty()) {
    const std::size_t dot = key.rfind('.');
    return Error(ErrorCode::kInvalidArgument, "the configuration names no " + what + " (set " +
                                                  key.substr(dot + 1) + " = ... in section [" +
                                                  key.substr(0, dot) + "])");
  }
  return value;
}

Result<std::string> ReadSmallFile(const std::string& path, std::size_t max) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error(ErrorCode::kNotFound, "cannot read " + path);
  std::string text(max + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > max) {
    return Error(ErrorCode::kInvalidArgument,
                 path + " is larger than " + std::to_string(max) + " bytes");
  }
  return text;
}

}  // namespace

Result<KmsdSettings> ReadKmsdSettings(const AbstractConfiguration& config) {
  SR_RETURN_IF_ERROR(
      CheckSettingKeys(config, "kms",
                       {"host", "database", "listen", "tls_cert", "tls_key", "identity_key",
                        "identity_chain", "max_connections", "max_in_flight", "key_cache_entries",
                        "key_cache_age_s", "metadata_cache_entries"}));
  KmsdSettings out;
  SR_ASSIGN_OR_RETURN(out.host, Required(config, "kms.host", "KMS host name"));
  if (out.host.find_first_of("/?#@ \t") != std::string::npos || out.host.size() > 253) {
    return Error(ErrorCode::kInvalidArgument,
                 "kms.host must be a host name (the KMS is kms://<host>), got '" + out.host + "'");
  }
  SR_ASSIGN_OR_RETURN(out.database, Required(config, "kms.database", "database"));
  if (config.hasProperty("kms.listen")) {
    SR_ASSIGN_OR_RETURN(ListenAddress listen,
                        ParseListenSetting("kms.listen", SettingText(config, "kms.listen")));
    out.listen_host = listen.host;
    out.listen_port = listen.port;
  }
  SR_ASSIGN_OR_RETURN(out.tls_cert, Required(config, "kms.tls_cert", "TLS certificate"));
  SR_ASSIGN_OR_RETURN(out.tls_key, Required(config, "kms.tls_key", "TLS private key"));
  if (config.hasProperty("kms.identity_key")) {
    SR_ASSIGN_OR_RETURN(out.identity_key,
                        Required(config, "kms.identity_key", "identity key name"));
  }
  SR_ASSIGN_OR_RETURN(out.identity_chain,
                      Required(config, "kms.identity_chain", "identity certificate chain"));
  SR_ASSIGN_OR_RETURN(out.max_connections,
                      UnsignedSetting(config, "kms.max_connections", out.max_connections, 1, 4096));
  SR_ASSIGN_OR_RETURN(out.max_in_flight,
                      UnsignedSetting(config, "kms.max_in_flight", out.max_in_flight, 1, 4096));
  SR_ASSIGN_OR_RETURN(out.key_cache_entries, UnsignedSetting(config, "kms.key_cache_entries",
                                                             out.key_cache_entries, 0, 10'000'000));
  SR_ASSIGN_OR_RETURN(
      std::uint64_t key_cache_age_s,
      UnsignedSetting(config, "kms.key_cache_age_s",
                      static_cast<std::size_t>(out.key_cache_age.count()), 1, 86400));
  out.key_cache_age = std::chrono::seconds(static_cast<std::int64_t>(key_cache_age_s));
  SR_ASSIGN_OR_RETURN(out.metadata_cache_entries,
                      UnsignedSetting(config, "kms.metadata_cache_entries",
                                      out.metadata_cache_entries, 0, 10'000'000));

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
    SR_ASSIGN_OR_RETURN(out.jwt_audience, Required(config, "jwt.audience", "token audience"));
  }
  SR_ASSIGN_OR_RETURN(
      std::uint64_t skew,
      UnsignedSetting(config, "jwt.skew_s", static_cast<std::uint64_t>(out.jwt_skew.count()), 0,
                      static_cast<std::uint64_t>(kMaxClockSkew.count())));
  out.jwt_skew = std::chrono::seconds(skew);

  std::set<std::string> seen_issuers;
  for (const std::string& name : names) {
    const std::string section = "jwt." + name;
    SR_RETURN_IF_ERROR(CheckSettingKeys(config, section, {"issuer", "org", "jwks"}));
    JwtIssuerSettings issuer;
    issuer.name = name;
    SR_ASSIGN_OR_RETURN(issuer.issuer, Required(config, section + ".issuer", "issuer URL"));
    SR_ASSIGN_OR_RETURN(issuer.org, Required(config, section + ".org", "organization"));
    SR_ASSIGN_OR_RETURN(issuer.jwks_path, Required(config, section + ".jwks", "JWKS file"));
    if (!seen_issuers.insert(issuer.issuer).second) {
      return Error(ErrorCode::kInvalidArgument,
                   "issuer " + issuer.issuer + " is configured twice (in [" + section + "])");
    }
    out.issuers.push_back(std::move(issuer));
  }
  return out;
}

Result<KmsdSettings> LoadKmsdSettings(const std::string& path) {
  SR_ASSIGN_OR_RETURN(auto config, LoadConfigFile(path));
  return ReadKmsdSettings(*config);
}

Result<JwtVerifier> MakeJwtVerifier(const KmsdSettings& settings) {
  std::vector<TrustedIssuer> issuers;
  for (const JwtIssuerSettings& issuer : settings.issuers) {
    SR_ASSIGN_OR_RETURN(std::string jwks, ReadSmallFile(issuer.jwks_path, kMaxJwksFileBytes));
    Result<std::vector<jose::PublicJwk>> keys = ParseJwks(jwks);
    if (!keys.ok()) {
      return Error(ErrorCode::kInvalidArgument, "the JWKS of issuer " + issuer.name + " (" +
                                                    issuer.jwks_path +
                                                    ") is unusable: " + keys.error().message());
    }
    issuers.push_back({issuer.issuer, issuer.org, std::move(keys).value()});
  }
  return JwtVerifier::New(std::move(issuers), settings.jwt_audience, settings.jwt_skew);
}

}  // namespace strongroom::kms
