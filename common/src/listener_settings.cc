#include "strongroom/common/listener_settings.h"

#include <Poco/Net/SSLManager.h>

#include <utility>

#include "strongroom/common/config_file.h"
#include "strongroom/common/tls.h"

namespace strongroom {

http::HttpsServerOptions ListenerSettings::ServerOptions(std::string server_name) const {
  http::HttpsServerOptions options;
  options.listen_host = host;
  options.listen_port = port;
  options.max_threads = max_connections;
  options.max_connections = max_open_connections;
  options.max_connections_per_peer = max_connections_per_peer;
  options.keep_alive_timeout = keep_alive_timeout;
  options.io_timeout = io_timeout;
  options.linger = linger;
  options.server_name = std::move(server_name);
  return options;
}

std::set<std::string> ListenerSettingKeys(const WorkerSetting& workers) {
  return {"listen",
          "tls_cert",
          "tls_key",
          workers.key,
          "max_open_connections",
          "max_connections_per_peer"};
}

Result<ListenerSettings> ReadListenerSettings(const Poco::Util::AbstractConfiguration& config,
                                              const std::string& section,
                                              const ListenerSettings& defaults,
                                              const WorkerSetting& workers) {
  const std::string prefix = section + ".";
  ListenerSettings out = defaults;
  if (config.hasProperty(prefix + "listen")) {
    SR_ASSIGN_OR_RETURN(
        ListenAddress listen,
        ParseListenSetting(prefix + "listen", SettingText(config, prefix + "listen")));
    out.host = std::move(listen.host);
    out.port = listen.port;
  }
  SR_ASSIGN_OR_RETURN(out.tls_cert,
                      RequiredSetting(config, prefix + "tls_cert", "TLS certificate"));
  SR_ASSIGN_OR_RETURN(out.tls_key, RequiredSetting(config, prefix + "tls_key", "TLS private key"));
  SR_ASSIGN_OR_RETURN(
      out.max_connections,
      UnsignedSetting(config, prefix + workers.key, out.max_connections, workers.min, workers.max));
  SR_ASSIGN_OR_RETURN(
      out.max_open_connections,
      UnsignedSetting(config, prefix + "max_open_connections", out.max_open_connections, 1, 65536));
  SR_ASSIGN_OR_RETURN(out.max_connections_per_peer,
                      UnsignedSetting(config, prefix + "max_connections_per_peer",
                                      out.max_connections_per_peer, 0, 65536));
  return out;
}

Result<std::unique_ptr<http::HttpsServer>> StartHttpsListener(
    const ListenerSettings& settings, const std::string& what, std::string server_name,
    Poco::Net::HTTPRequestHandlerFactory::Ptr factory) {
  SR_ASSIGN_OR_RETURN(Poco::Net::Context::Ptr context,
                      MakeTlsServerContext(what, settings.tls_cert, settings.tls_key));
  Result<std::unique_ptr<http::HttpsServer>> server = http::HttpsServer::Start(
      settings.ServerOptions(std::move(server_name)), context, std::move(factory));
  if (!server.ok()) Poco::Net::uninitializeSSL();
  return server;
}

}  // namespace strongroom
