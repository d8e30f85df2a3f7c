// Reads cored's configuration file: the [core] section, the [jwt] sections (the identity
// providers whose "core" tokens it accepts; common/jwt_settings.h) and the KMS clusters allowed to
// attach to the relay.
//
//   [core]
//   database = /var/lib/strongroom/core.db      ; SQLite; or a [database] section naming
//                                     ; PostgreSQL (database_settings.h)
//   files_dir = /var/lib/strongroom/files      ; encrypted blobs
//   listen = 127.0.0.1:9443                    ; host:port, [v6]:port; port 0 = any free port
//   tls_cert = /etc/strongroom/tls/core.crt    ; PEM: the HTTPS server certificate (+ chain)
//   tls_key = /etc/strongroom/tls/core.key     ; PEM: its private key (unencrypted)
//   indexer = indexer@acme                     ; optional: the indexer's token subject ...
//   indexer_org = acme                         ; ... and organization
//   max_connections = 256       ; optional: requests served at once, WebSockets included
//   max_open_connections = 4096 ; optional: connections open at once, idle ones included
//   max_connections_per_peer = 256  ; optional: open from one IP address (0 = no limit)
//   max_file_mb = 100           ; optional: largest encrypted file (1-4096 MiB)
//   rate_per_s = 200            ; optional: requests per second per user (1-100000) ...
//   rate_burst = 400            ; ... with bursts of this many
//   relays = kms1               ; optional: the KMS clusters that may attach to the relay
//   cluster_poll_ms = 100       ; optional: several nodes on one database (0 = one node;
//                               ; default 0 on SQLite, 100 on PostgreSQL)
//
//   [relay.kms1]
//   cluster = kms://kms.acme.example    ; the KMS's kms://<host>
//   token_file = /etc/strongroom/relay/kms1.token  ; its relay token (mode 0600)
//
//   [compliance]                        ; optional: compliance officers per organization
//   acme = officer@acme.test, audit@acme.test   ; <org> = token subjects of that org's officers
//
// Each [compliance] key is the organization of a configured [jwt.<n>] issuer; its officers read
// (ciphertext only) the conversations created by a user of that organization (docs/api/core.md).
// Each officer, and the indexer, must be a user of their organization: one of its issuers signs
// for them (their domain is in its subject_domains, or it lists none).
//
// Unknown keys are refused, so a typo never silently falls back to a default.
#ifndef STRONGROOM_CORE_CORED_SETTINGS_H_
#define STRONGROOM_CORE_CORED_SETTINGS_H_

#include <Poco/Util/AbstractConfiguration.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "strongroom/common/database_settings.h"
#include "strongroom/common/error.h"
#include "strongroom/common/jwt_settings.h"
#include "strongroom/common/listener_settings.h"
#include "strongroom/core/core_service.h"

namespace strongroom::core {

inline constexpr std::size_t kMaxRelayClusters = 64;
inline constexpr std::size_t kMaxComplianceOfficers = 100;  // per organization

struct RelayClusterSettings {
  std::string name;  // the [relay.<name>] section
  std::string cluster;
  std::string token_file;
};

struct CoredSettings {
  DatabaseSettings database;
  std::string files_dir;
  ListenerSettings listener{.port = 9443, .max_connections = 256};
  std::string indexer;
  std::string indexer_org;
  std::uint64_t max_file_bytes = 100ull * 1024 * 1024;
  std::uint32_t rate_per_s = 200;
  std::uint32_t rate_burst = 400;
  std::vector<RelayClusterSettings> relays;
  // CoreServiceConfig::cluster_poll: 0 (one node) or kMinClusterPoll to kMaxClusterPoll.
  std::chrono::milliseconds cluster_poll{0};  // kPostgresClusterPoll on PostgreSQL
  JwtSettings jwt;                            // audience "core" unless set
  // organization -> its compliance officers' user ids ([compliance])
  std::map<std::string, std::vector<std::string>> compliance_officers;
};

Result<CoredSettings> ReadCoredSettings(const Poco::Util::AbstractConfiguration& config);
Result<CoredSettings> LoadCoredSettings(const std::string& path);

}  // namespace strongroom::core

#endif  // STRONGROOM_CORE_CORED_SETTINGS_H_
