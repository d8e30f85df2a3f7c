// Reads the kmsd part of a KMS configuration file: the [kms] section (listener, TLS, identity,
// limits) and the [jwt] sections (the identity providers whose tokens the KMS accepts). The [hsm]
// sections are read by hsm_settings.h.
//
//   [kms]
//   host = kms.example.com            ; the KMS is kms://<host>
//   database = /var/lib/strongroom/kms.db     ; SQLite; or a [database] section naming
//                                     ; PostgreSQL, for several kmsd nodes (database_settings.h)
//   listen = 127.0.0.1:8443           ; host:port, [v6]:port; port 0 = any free port
//   tls_cert = /etc/strongroom/tls/kms.crt      ; PEM: the HTTPS server certificate (+ chain)
//   tls_key = /etc/strongroom/tls/kms.key       ; PEM: its private key (unencrypted)
//   identity_key = kms                ; optional: the RSA identity keys' name in the tokens
//   identity_chain = /etc/strongroom/identity.pem ; PEM: per token, a leaf certifying its
//                                     ; identity key, then CAs (identity_certificate.h)
//   max_connections = 64              ; optional: requests served at once (1-4096)
//   max_open_connections = 4096       ; optional: connections open at once, idle ones included
//                                     ; (1-65536)
//   max_connections_per_peer = 256    ; optional: open from one IP address (0 = no limit; set
//                                     ; it to 0 or high behind a proxy, which is one peer)
//   max_in_flight = 32                ; optional: requests processed at once (1-4096)
//   max_queued = 64                   ; optional: requests waiting for one of those, first come
//                                     ; first served (0-65536; 0: refuse at once)
//   queue_wait_ms = 100               ; optional: longest wait in that line before 503 (0-10000)
//   key_cache_entries = 50000         ; optional: unwrapped keys kept in memory (0 = off)
//   key_cache_age_s = 300             ; optional: how long a key stays cached (1-86400)
//   metadata_cache_entries = 16384    ; optional: channel/key records and authorization
//                                     ; decisions kept in memory (0 = off)
//
//   [jwt]
//   audience = kms                    ; optional, default kms
//   skew_s = 60                       ; optional: clock skew allowed (0-300)
//   issuers = acme, globex
//
//   [jwt.acme]
//   issuer = https://idp.acme.example ; the exact "iss"
//   org = acme                        ; the organization of its users
//   jwks = /etc/strongroom/idp/acme.jwks.json
//   subject_domains = acme.example    ; its users' subjects are user@<one of these>; required of
//                                     ; every issuer when they are of several organizations
//
//   [relay]                           ; optional: serve the protocol through cored too, over
//                                     ; connections kmsd opens (relay_connector.h)
//   url = https://core.example.com:8443           ; cored, no path; several cored nodes of one
//                                     ; core (behind one front) are listed comma-separated, at
//                                     ; most 16: kmsd keeps `connections` up to each, so a client
//                                     ; reaches the KMS whichever node serves it
//   ca_file = /etc/strongroom/tls/core-ca.pem     ; PEM: the CAs cored's certificate chains to
//   token_file = /etc/strongroom/relay.token      ; mode 0600; the token of cored's [relay.<n>]
//   connections = 4                   ; optional: connections kept up = requests at once (1-64)
//   idle_timeout_s = 45               ; optional: silence that means a dead link (10-3600); more
//                                     ; than twice cored's ping interval
//
// Unknown keys in these sections are refused, so a typo never silently falls back to a default.
// Key lifetimes (ephemeral channels included) are each organization's policy (org_policy.h).
// Relative paths are taken relative to the working directory.
#ifndef STRONGROOM_KMS_KMSD_SETTINGS_H_
#define STRONGROOM_KMS_KMSD_SETTINGS_H_

#include <Poco/Util/AbstractConfiguration.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "strongroom/common/database_settings.h"
#include "strongroom/common/error.h"
#include "strongroom/common/jwt.h"
#include "strongroom/common/jwt_settings.h"
#include "strongroom/common/listener_settings.h"

namespace strongroom::kms {

// A kmsd dials at most this many cored nodes.
inline constexpr std::size_t kMaxRelayCoreNodes = 16;

struct KmsdRelaySettings {
  std::vector<std::string> urls;  // one RelayConnector each, in the order the file lists them
  std::string ca_file;
  std::string token_file;
  std::size_t connections = 4;
  std::chrono::seconds idle_timeout{45};
};

struct KmsdSettings {
  std::string host;
  DatabaseSettings database;
  ListenerSettings listener{.port = 8443, .max_connections = 64};  // the protocol listener
  std::string identity_key = "kms";
  std::string identity_chain;
  std::size_t max_in_flight = 32;
  std::size_t max_queued = 64;
  std::chrono::milliseconds queue_wait{100};
  std::size_t key_cache_entries = 50000;
  std::chrono::seconds key_cache_age{300};
  std::size_t metadata_cache_entries = 16384;

  std::string jwt_audience = "kms";
  std::chrono::seconds jwt_skew{60};
  std::vector<JwtIssuerSettings> issuers;

  std::optional<KmsdRelaySettings> relay;  // when the file has a [relay] section
};

Result<KmsdSettings> ReadKmsdSettings(const Poco::Util::AbstractConfiguration& config);

// Loads an INI file and reads its kmsd settings.
Result<KmsdSettings> LoadKmsdSettings(const std::string& path);

// Reads each issuer's JWKS file and builds the verifier for the KMS's bearer tokens.
Result<JwtVerifier> MakeJwtVerifier(const KmsdSettings& settings);

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_KMSD_SETTINGS_H_
