#include "strongroom/kms/kmsd_settings.h"

#include <Poco/AutoPtr.h>
#include <Poco/Exception.h>
#include <Poco/String.h>
#include <Poco/StringTokenizer.h>
#include <Poco/URI.h>
#include <Poco/Util/IniFileConfiguration.h>

#include <fstream>
#include <set>
#include <sstream>

#include "strongroom/common/config_file.h"
#include "strongroom/common/jwt_settings.h"
#include "strongroom/common/kms_uri.h"

namespace strongroom::kms {

using Poco::Util::AbstractConfiguration;

namespace {

Result<std::optional<KmsdRelaySettings>> ReadRelaySettings(const AbstractConfiguration& config) {
  AbstractConfiguration::Keys keys;
  config.keys("relay", keys);
  if (keys.empty()) return std::optional<KmsdRelaySettings>();
  SR_RETURN_IF_ERROR(CheckSettingKeys(
      config, "relay", {"url", "ca_file", "token_file", "connections", "idle_timeout_s"}));
  KmsdRelaySettings relay;
  if (Result<std::string> url = RequiredSetting(config, "relay.url", "core URL for the relay");
      !url.ok()) {
    return url.error();
  }
  SR_ASSIGN_OR_RETURN(relay.urls, NameListSetting(config, "relay.url", kMaxRelayCoreNodes));
  for (const std::string& url : relay.urls) {
    bool usable = false;
    try {
      const Poco::URI uri(url);
      usable = uri.getScheme() == "https" && !uri.getHost().empty() && uri.getUserInfo().empty() &&
               (uri.getPath().empty() || uri.getPath() == "/") && uri.getRawQuery().empty() &&
               uri.getFragment().empty();
    } catch (const Poco::Exception&) {
    }
    if (!usable) {
      return Error(
          ErrorCode::kInvalidArgument,
          "relay.url must list https://host[:port] of cored nodes (no path), got '" + url + "'");
    }
  }
  if (relay.urls.empty()) {
    return Error(ErrorCode::kInvalidArgument, "relay.url names no cored node");
  }
  SR_ASSIGN_OR_RETURN(relay.ca_file,
                      RequiredSetting(config, "relay.ca_file", "CA file for cored's certificate"));
  SR_ASSIGN_OR_RETURN(relay.token_file,
                      RequiredSetting(config, "relay.token_file", "relay token file"));
  SR_ASSIGN_OR_RETURN(relay.connections,
                      UnsignedSetting(config, "relay.connections", relay.connections, 1, 64));
  SR_ASSIGN_OR_RETURN(relay.idle_timeout, DurationSetting(config, "relay.idle_timeout_s",
                                                          relay.idle_timeout, 10, 3600));
  return std::optional<KmsdRelaySettings>(std::move(relay));
}

}  // namespace

Result<KmsdSettings> ReadKmsdSettings(const AbstractConfiguration& config) {
  std::set<std::string> allowed = ListenerSettingKeys();
  allowed.insert({"host", "database", "identity_key", "identity_chain", "max_in_flight",
                  "max_queued", "queue_wait_ms", "key_cache_entries", "key_cache_age_s",
                  "metadata_cache_entries"});
  SR_RETURN_IF_ERROR(CheckSettingKeys(config, "kms", allowed));
  KmsdSettings out;
  SR_ASSIGN_OR_RETURN(out.host, RequiredSetting(config, "kms.host", "KMS host name"));
  // Every URI the KMS hands out starts with kms://<host>, and requests are read with KmsUri, which
  // writes hosts in lower case.
  const std::string cluster = "kms://" + out.host;
  if (Result<KmsUri> named = KmsUri::ParseCluster(cluster);
      !named.ok() || named->ToString() != cluster) {
    return Error(ErrorCode::kInvalidArgument,
                 "kms.host must be a lower-case host name (the KMS is kms://<host>), got '" +
                     out.host + "'");
  }
  SR_ASSIGN_OR_RETURN(out.database, ReadDatabaseSettings(config, "kms"));
  SR_ASSIGN_OR_RETURN(out.listener, ReadListenerSettings(config, "kms", out.listener));
  if (config.hasProperty("kms.identity_key")) {
    SR_ASSIGN_OR_RETURN(out.identity_key,
                        RequiredSetting(config, "kms.identity_key", "identity key name"));
  }
  SR_ASSIGN_OR_RETURN(out.identity_chain,
                      RequiredSetting(config, "kms.identity_chain", "identity certificate chain"));
  SR_ASSIGN_OR_RETURN(out.max_in_flight,
                      UnsignedSetting(config, "kms.max_in_flight", out.max_in_flight, 1, 4096));
  SR_ASSIGN_OR_RETURN(out.max_queued,
                      UnsignedSetting(config, "kms.max_queued", out.max_queued, 0, 65536));
  SR_ASSIGN_OR_RETURN(out.queue_wait,
                      DurationSetting(config, "kms.queue_wait_ms", out.queue_wait, 0, 10000));
  SR_ASSIGN_OR_RETURN(out.key_cache_entries, UnsignedSetting(config, "kms.key_cache_entries",
                                                             out.key_cache_entries, 0, 10'000'000));
  SR_ASSIGN_OR_RETURN(out.key_cache_age,
                      DurationSetting(config, "kms.key_cache_age_s", out.key_cache_age, 1, 86400));
  SR_ASSIGN_OR_RETURN(out.metadata_cache_entries,
                      UnsignedSetting(config, "kms.metadata_cache_entries",
                                      out.metadata_cache_entries, 0, 10'000'000));

  SR_ASSIGN_OR_RETURN(JwtSettings jwt, ReadJwtSettings(config, out.jwt_audience));
  out.jwt_audience = std::move(jwt.audience);
  out.jwt_skew = jwt.skew;
  out.issuers = std::move(jwt.issuers);
  SR_ASSIGN_OR_RETURN(out.relay, ReadRelaySettings(config));
  return out;
}

Result<KmsdSettings> LoadKmsdSettings(const std::string& path) {
  SR_ASSIGN_OR_RETURN(auto config, LoadConfigFile(path));
  return ReadKmsdSettings(*config);
}

Result<JwtVerifier> MakeJwtVerifier(const KmsdSettings& settings) {
  return MakeJwtVerifier(JwtSettings{settings.jwt_audience, settings.jwt_skew, settings.issuers});
}

}  // namespace strongroom::kms
