#include "strongroom/core/cored_settings.h"

#include <algorithm>
#include <set>

#include "strongroom/common/config_file.h"
#include "strongroom/common/kms_uri.h"
#include "validation.h"

namespace strongroom::core {

using Poco::Util::AbstractConfiguration;

namespace {

// max_connections from 4, as CoreServer::Start wants it.
const WorkerSetting kCoreWorkers{"max_connections", 4, 4096};

// A service identity or officer configured for `org` must be a user of it: one of its issuers
// signs for `user` (subject_domains), so no other organization's can.
Status CheckUserOf(const SubjectOrganizations& subjects, const std::string& user,
                   const std::string& org, const std::string& key) {
  if (subjects.OrganizationOf(user) == org) return OkStatus();
  return Error(ErrorCode::kInvalidArgument,
               key + ": '" + user + "' is not a user of organization '" + org +
                   "': no [jwt] issuer of it lists the user's domain in subject_domains");
}

// [compliance] <org> = user, user: each org one of a configured issuer's, each user id valid and a
// user of that org.
Status ReadComplianceOfficers(const AbstractConfiguration& config,
                              const SubjectOrganizations& subjects, CoredSettings& out) {
  std::set<std::string> orgs;
  for (const JwtIssuerSettings& issuer : out.jwt.issuers) orgs.insert(issuer.org);
  AbstractConfiguration::Keys keys;
  config.keys("compliance", keys);
  for (const std::string& org : keys) {
    const std::string key = "compliance." + org;
    if (!orgs.contains(org)) {
      return Error(ErrorCode::kInvalidArgument,
                   key + ": '" + org + "' is not the organization of a configured [jwt] issuer");
    }
    std::vector<std::string> officers;
    std::string text = SettingText(config, key);
    std::size_t start = 0;
    while (start <= text.size()) {
      std::size_t comma = text.find(',', start);
      if (comma == std::string::npos) comma = text.size();
      std::string user = text.substr(start, comma - start);
      user.erase(0, user.find_first_not_of(" \t"));
      user.erase(user.find_last_not_of(" \t") + 1);
      start = comma + 1;
      if (user.empty()) continue;
      SR_RETURN_IF_ERROR(internal::CheckUserId(user, key + ": a user id"));
      SR_RETURN_IF_ERROR(CheckUserOf(subjects, user, org, key));
      if (std::find(officers.begin(), officers.end(), user) == officers.end()) {
        officers.push_back(user);
      }
    }
    if (officers.empty() || officers.size() > kMaxComplianceOfficers) {
      return Error(ErrorCode::kInvalidArgument, key + " must name 1 to " +
                                                    std::to_string(kMaxComplianceOfficers) +
                                                    " comma-separated user ids");
    }
    out.compliance_officers[org] = std::move(officers);
  }
  return OkStatus();
}

}  // namespace

Result<CoredSettings> ReadCoredSettings(const AbstractConfiguration& config) {
  SR_ASSIGN_OR_RETURN(std::vector<std::string> relays,
                      NameListSetting(config, "core.relays", kMaxRelayClusters));
  std::set<std::string> allowed = ListenerSettingKeys(kCoreWorkers);
  allowed.insert({"database", "files_dir", "indexer", "indexer_org", "max_file_mb", "rate_per_s",
                  "rate_burst", "relays", "cluster_poll_ms"});
  SR_RETURN_IF_ERROR(CheckSettingKeys(config, "core", allowed));

  CoredSettings out;
  SR_ASSIGN_OR_RETURN(out.database, ReadDatabaseSettings(config, "core"));
  SR_ASSIGN_OR_RETURN(out.files_dir,
                      RequiredSetting(config, "core.files_dir", "directory for files"));
  SR_ASSIGN_OR_RETURN(out.listener,
                      ReadListenerSettings(config, "core", out.listener, kCoreWorkers));
  out.indexer = SettingText(config, "core.indexer");
  out.indexer_org = SettingText(config, "core.indexer_org");
  if (out.indexer.empty() != out.indexer_org.empty()) {
    return Error(ErrorCode::kInvalidArgument,
                 "core.indexer and core.indexer_org are set together or not at all");
  }
  SR_ASSIGN_OR_RETURN(
      std::uint64_t max_file_mb,
      UnsignedSetting(config, "core.max_file_mb", out.max_file_bytes >> 20, 1, 4096));
  out.max_file_bytes = max_file_mb << 20;
  SR_ASSIGN_OR_RETURN(std::uint64_t rate,
                      UnsignedSetting(config, "core.rate_per_s", out.rate_per_s, 1, 100000));
  out.rate_per_s = static_cast<std::uint32_t>(rate);
  SR_ASSIGN_OR_RETURN(std::uint64_t burst,
                      UnsignedSetting(config, "core.rate_burst", rate * 2, 1, 1000000));
  out.rate_burst = static_cast<std::uint32_t>(burst);
  // On PostgreSQL (the engine several nodes share) a node follows the others unless told not to.
  const std::chrono::milliseconds default_poll =
      out.database.engine == Database::Engine::kPostgres ? kPostgresClusterPoll : out.cluster_poll;
  SR_ASSIGN_OR_RETURN(out.cluster_poll,
                      DurationSetting(config, "core.cluster_poll_ms", default_poll, 0,
                                      static_cast<std::uint64_t>(kMaxClusterPoll.count())));
  if (out.cluster_poll.count() != 0 && out.cluster_poll < kMinClusterPoll) {
    return Error(ErrorCode::kInvalidArgument, "core.cluster_poll_ms must be 0 (one node) or " +
                                                  std::to_string(kMinClusterPoll.count()) + " to " +
                                                  std::to_string(kMaxClusterPoll.count()) +
                                                  ", got " +
                                                  std::to_string(out.cluster_poll.count()));
  }

  // [relay.<name>] sections show up as keys of [relay] too.
  std::set<std::string> relay_sections(relays.begin(), relays.end());
  SR_RETURN_IF_ERROR(CheckSettingKeys(config, "relay", relay_sections));
  std::set<std::string> clusters;
  for (const std::string& name : relays) {
    const std::string section = "relay." + name;
    SR_RETURN_IF_ERROR(CheckSettingKeys(config, section, {"cluster", "token_file"}));
    RelayClusterSettings relay;
    relay.name = name;
    SR_ASSIGN_OR_RETURN(relay.cluster,
                        RequiredSetting(config, section + ".cluster", "KMS cluster (kms://host)"));
    // The form a conversation's KMS URLs have (validation.cc, CheckKmsUri), so a configured
    // cluster is one that clients can reach.
    if (Result<KmsUri> named = KmsUri::ParseCluster(relay.cluster);
        !named.ok() || named->ToString() != relay.cluster) {
      return Error(ErrorCode::kInvalidArgument,
                   section + ".cluster must be kms://<host>, got '" + relay.cluster + "'");
    }
    if (!clusters.insert(relay.cluster).second) {
      return Error(ErrorCode::kInvalidArgument,
                   "the KMS cluster " + relay.cluster + " is configured twice");
    }
    SR_ASSIGN_OR_RETURN(relay.token_file,
                        RequiredSetting(config, section + ".token_file", "relay token file"));
    out.relays.push_back(std::move(relay));
  }

  SR_ASSIGN_OR_RETURN(out.jwt, ReadJwtSettings(config, "core"));
  SR_ASSIGN_OR_RETURN(const SubjectOrganizations subjects, SubjectOrganizationsOf(out.jwt));
  if (!out.indexer.empty()) {
    SR_RETURN_IF_ERROR(CheckUserOf(subjects, out.indexer, out.indexer_org, "core.indexer"));
  }
  SR_RETURN_IF_ERROR(ReadComplianceOfficers(config, subjects, out));
  return out;
}

Result<CoredSettings> LoadCoredSettings(const std::string& path) {
  SR_ASSIGN_OR_RETURN(auto config, LoadConfigFile(path));
  return ReadCoredSettings(*config);
}

}  // namespace strongroom::core
