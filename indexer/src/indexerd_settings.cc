#include "strongroom/indexer/indexerd_settings.h"

#include <set>

#include "strongroom/common/config_file.h"
#include "strongroom/common/kms_uri.h"
#include "strongroom/indexer/term_extractor.h"

namespace strongroom::indexer {

using Poco::Util::AbstractConfiguration;

namespace {

const WorkerSetting kIndexerWorkers{"max_connections", 4, 4096};

Result<std::string> HttpsUrlSetting(const AbstractConfiguration& config, const std::string& key,
                                    const std::string& what) {
  SR_ASSIGN_OR_RETURN(std::string url, RequiredSetting(config, key, what));
  const std::string scheme = "https://";
  if (url.compare(0, scheme.size(), scheme) != 0 || url.size() == scheme.size() ||
      url.find('/', scheme.size()) != std::string::npos) {
    return Error(ErrorCode::kInvalidArgument, key + " must be https://host[:port] without a path");
  }
  return url;
}

}  // namespace

Result<IndexerdSettings> ReadIndexerdSettings(const AbstractConfiguration& config) {
  std::set<std::string> allowed = ListenerSettingKeys(kIndexerWorkers);
  allowed.insert({"org", "subject", "database", "token_command", "language", "client_id",
                  "search_rate_per_s", "search_rate_burst", "search_key_check_s"});
  SR_RETURN_IF_ERROR(CheckSettingKeys(config, "indexer", allowed));
  SR_RETURN_IF_ERROR(CheckSettingKeys(config, "kms", {"url", "cluster", "ca_file"}));
  SR_RETURN_IF_ERROR(CheckSettingKeys(config, "core", {"url", "ca_file"}));

  IndexerdSettings out;
  SR_ASSIGN_OR_RETURN(out.org, RequiredSetting(config, "indexer.org", "organization"));
  SR_ASSIGN_OR_RETURN(out.subject,
                      RequiredSetting(config, "indexer.subject", "indexer identity (subject)"));
  SR_ASSIGN_OR_RETURN(out.database, ReadDatabaseSettings(config, "indexer"));
  SR_ASSIGN_OR_RETURN(out.listener,
                      ReadListenerSettings(config, "indexer", out.listener, kIndexerWorkers));
  SR_ASSIGN_OR_RETURN(out.token_command,
                      RequiredSetting(config, "indexer.token_command", "token command"));
  if (out.token_command.find("{audience}") == std::string::npos) {
    return Error(ErrorCode::kInvalidArgument,
                 "indexer.token_command must contain {audience} (it is run for kms and for core)");
  }
  if (config.hasProperty("indexer.language")) {
    out.language = SettingText(config, "indexer.language");
  }
  if (Result<TermExtractor> extractor = TermExtractor::New(out.language); !extractor.ok()) {
    return Error(ErrorCode::kInvalidArgument, "indexer.language: " + extractor.error().message());
  }
  if (config.hasProperty("indexer.client_id")) {
    out.client_id = SettingText(config, "indexer.client_id");
    if (out.client_id.empty() || out.client_id.size() > 64) {
      return Error(ErrorCode::kInvalidArgument, "indexer.client_id must be 1-64 characters");
    }
  }
  SR_ASSIGN_OR_RETURN(std::uint64_t rate, UnsignedSetting(config, "indexer.search_rate_per_s",
                                                          out.search_rate_per_s, 1, 10000));
  out.search_rate_per_s = static_cast<std::uint32_t>(rate);
  SR_ASSIGN_OR_RETURN(std::uint64_t burst, UnsignedSetting(config, "indexer.search_rate_burst",
                                                           out.search_rate_burst, 1, 10000));
  out.search_rate_burst = static_cast<std::uint32_t>(burst);
  SR_ASSIGN_OR_RETURN(out.search_key_check, DurationSetting(config, "indexer.search_key_check_s",
                                                            out.search_key_check, 1, 86400));

  SR_ASSIGN_OR_RETURN(out.kms_url, HttpsUrlSetting(config, "kms.url", "KMS URL"));
  SR_ASSIGN_OR_RETURN(out.kms_cluster,
                      RequiredSetting(config, "kms.cluster", "KMS cluster (kms://host)"));
  if (Result<KmsUri> named = KmsUri::ParseCluster(out.kms_cluster);
      !named.ok() || named->ToString() != out.kms_cluster) {
    return Error(ErrorCode::kInvalidArgument,
                 "kms.cluster must be kms://<host>, got '" + out.kms_cluster + "'");
  }
  SR_ASSIGN_OR_RETURN(out.kms_ca_file, RequiredSetting(config, "kms.ca_file", "KMS CA file"));
  SR_ASSIGN_OR_RETURN(out.core_url, HttpsUrlSetting(config, "core.url", "core URL"));
  SR_ASSIGN_OR_RETURN(out.core_ca_file, RequiredSetting(config, "core.ca_file", "core CA file"));

  SR_ASSIGN_OR_RETURN(out.jwt, ReadJwtSettings(config, "indexer"));
  SR_ASSIGN_OR_RETURN(const SubjectOrganizations subjects, SubjectOrganizationsOf(out.jwt));
  if (subjects.OrganizationOf(out.subject) != out.org) {
    return Error(ErrorCode::kInvalidArgument,
                 "indexer.subject: '" + out.subject + "' is not a user of organization '" +
                     out.org + "': no [jwt] issuer of it lists the user's domain");
  }
  return out;
}

Result<IndexerdSettings> LoadIndexerdSettings(const std::string& path) {
  SR_ASSIGN_OR_RETURN(auto config, LoadConfigFile(path));
  return ReadIndexerdSettings(*config);
}

}  // namespace strongroom::indexer
