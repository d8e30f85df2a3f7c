// The settings of an HTTPS listener, read the same way from each daemon's section of its INI file
// (kmsd's [kms] and [ops], cored's [core]; config_file.h) and handed to the HTTPS edge
// (https_server.h):
//
//   listen = 127.0.0.1:8443           ; optional: host:port, [v6]:port; port 0 = any free port
//   tls_cert = /etc/strongroom/tls/x.crt  ; PEM: the HTTPS server certificate (+ chain)
//   tls_key = /etc/strongroom/tls/x.key   ; PEM: its private key (unencrypted)
//   max_connections = 64              ; optional: requests served at once (the worker threads);
//                                     ; the section names this key and its range (WorkerSetting)
//   max_open_connections = 4096       ; optional: connections open at once, idle ones included
//                                     ; (1-65536)
//   max_connections_per_peer = 256    ; optional: open from one IP address (0-65536; 0 = no limit)
//
// The defaults are the section's own (each daemon's settings struct holds them). tls_cert and
// tls_key are required: a Strongroom listener always speaks TLS.
#ifndef STRONGROOM_COMMON_LISTENER_SETTINGS_H_
#define STRONGROOM_COMMON_LISTENER_SETTINGS_H_

#include <Poco/Util/AbstractConfiguration.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <set>
#include <string>

#include "strongroom/common/error.h"
#include "strongroom/common/https_server.h"

namespace strongroom {

struct ListenerSettings {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;                       // 0: any free port
  std::string tls_cert{};                       // PEM: the server certificate, then its chain
  std::string tls_key{};                        // PEM: its private key, unencrypted
  std::size_t max_connections = 64;             // requests served at once (worker threads)
  std::size_t max_open_connections = 4096;      // connections open at once
  std::size_t max_connections_per_peer = 256;   // from one IP address; 0: no limit
  std::chrono::seconds keep_alive_timeout{15};  // not configurable
  std::chrono::seconds io_timeout{30};          // reading a request, writing an answer
  std::chrono::microseconds linger{0};          // not configurable: the daemon's (https_server.h)

  // The HTTPS edge's options for this listener; `server_name` names its threads.
  http::HttpsServerOptions ServerOptions(std::string server_name) const;
};

// How a section names and bounds the requests its listener serves at once: max_connections
// (1 to 4096) unless it says otherwise (cored: 4 to 4096; kmsd's [ops]: max_threads, 1 to 64).
struct WorkerSetting {
  std::string key = "max_connections";
  std::uint64_t min = 1;
  std::uint64_t max = 4096;
};

// The keys ReadListenerSettings reads, to be allowed by the section's CheckSettingKeys.
std::set<std::string> ListenerSettingKeys(const WorkerSetting& workers = {});

// Reads the listener keys of [section] over `defaults` (a key that is absent keeps its default).
// INVALID_ARGUMENT naming the setting and what it must be: a bad listen address, a number out of
// range, tls_cert or tls_key absent. Other keys of the section are not looked at.
Result<ListenerSettings> ReadListenerSettings(const Poco::Util::AbstractConfiguration& config,
                                              const std::string& section,
                                              const ListenerSettings& defaults,
                                              const WorkerSetting& workers = {});

// Loads the listener's TLS certificate and key (INVALID_ARGUMENT naming `what`, "the core's HTTPS
// listener", and the files) and starts the HTTPS edge serving `factory` on it; `server_name` names
// its threads. A started server holds a reference to Poco's SSL initialization, which the caller
// releases with Poco::Net::uninitializeSSL() once the server is gone; one that fails to start
// leaves none.
Result<std::unique_ptr<http::HttpsServer>> StartHttpsListener(
    const ListenerSettings& settings, const std::string& what, std::string server_name,
    Poco::Net::HTTPRequestHandlerFactory::Ptr factory);

}  // namespace strongroom

#endif  // STRONGROOM_COMMON_LISTENER_SETTINGS_H_
