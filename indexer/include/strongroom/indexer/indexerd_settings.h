// Reads indexerd's configuration file: the [indexer] section (its identity, database, listener,
// stemming language and where its bearer tokens come from), [kms] and [core] (whom it talks to),
// and the [jwt] sections (the identity providers whose "indexer" tokens it accepts from users;
// common/jwt_settings.h).
//
//   [indexer]
//   org = acme                                 ; the organization it indexes
//   subject = indexer@acme.example             ; its service identity (the org policy's indexer)
//   database = /var/lib/strongroom/indexer.db   ; SQLite; or a [database] section naming
//                                     ; PostgreSQL (database_settings.h)
//   listen = 127.0.0.1:9444                    ; host:port, [v6]:port; port 0 = any free port
//   tls_cert = /etc/strongroom/tls/indexer.crt
//   tls_key = /etc/strongroom/tls/indexer.key
//   token_command = /usr/local/bin/indexer-token {audience}  ; prints a token for kms or core
//   language = english                         ; optional: the org policy's stemming language
//   client_id = indexerd                       ; optional: names it in the KMS's audit log
//   max_connections = 64                       ; optional: requests served at once (4-4096)
//   max_open_connections = 4096                ; optional: the listener's (listener_settings.h)
//   max_connections_per_peer = 256             ; optional: likewise
//   search_rate_per_s = 10                     ; optional: each user's searches a second (1-10000)
//   search_rate_burst = 20                     ; optional: and at once (1-10000)
//   search_key_check_s = 300                   ; optional: how often the KMS is asked for a new
//                                              ; search key version (1-86400)
//
//   [kms]
//   url = https://kms.acme.example:8443        ; the KMS, reached directly (the security realm)
//   cluster = kms://kms.acme.example           ; its identity
//   ca_file = /etc/strongroom/tls/ca.crt       ; its TLS CA, and the roots of its identity
//
//   [core]
//   url = https://core.acme.example:9443
//   ca_file = /etc/strongroom/tls/ca.crt
//
// Unknown keys are refused, so a typo never silently falls back to a default; the subject must be
// a user of `org` by the [jwt] issuers (as cored checks its `[core] indexer`).
#ifndef STRONGROOM_INDEXER_INDEXERD_SETTINGS_H_
#define STRONGROOM_INDEXER_INDEXERD_SETTINGS_H_

#include <Poco/Util/AbstractConfiguration.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "strongroom/common/database_settings.h"
#include "strongroom/common/error.h"
#include "strongroom/common/jwt_settings.h"
#include "strongroom/common/listener_settings.h"

namespace strongroom::indexer {

struct IndexerdSettings {
  std::string org;
  std::string subject;
  DatabaseSettings database;
  ListenerSettings listener{.port = 9444, .max_connections = 64};
  std::string token_command;  // with "{audience}" where the audience goes
  std::string language = "english";
  std::string client_id = "indexerd";
  std::uint32_t search_rate_per_s = 10;
  std::uint32_t search_rate_burst = 20;
  std::chrono::seconds search_key_check{300};
  std::string kms_url;
  std::string kms_cluster;
  std::string kms_ca_file;
  std::string core_url;
  std::string core_ca_file;
  JwtSettings jwt;  // audience "indexer" unless set
};

Result<IndexerdSettings> ReadIndexerdSettings(const Poco::Util::AbstractConfiguration& config);
Result<IndexerdSettings> LoadIndexerdSettings(const std::string& path);

}  // namespace strongroom::indexer

#endif  // STRONGROOM_INDEXER_INDEXERD_SETTINGS_H_
