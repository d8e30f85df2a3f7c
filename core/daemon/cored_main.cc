// cored: the messaging core. Serves the core's REST API, realtime WebSockets and the KMS relay
// over HTTPS (core_server.h), with conversations and activities in [core] database and encrypted
// files under [core] files_dir. It holds ciphertext only and links no PKCS#11 code.
//
//   cored [--config FILE] [--port-file PATH]
//
// FILE defaults to $STRONGROOM_CORE_CONFIG, then /etc/strongroom/core.ini. --port-file writes the
// bound port (useful with listen = host:0). SIGTERM or SIGINT stops it gracefully: no new
// connections, realtime connections closed (clients resume with their cursor), requests in flight
// finish, then the database is closed. One line per start, stop and error goes to stderr; never a
// token, a body or content.

#include <cstdlib>
#include <iostream>

#include "strongroom/common/daemon.h"
#include "strongroom/common/database.h"
#include "strongroom/common/jwt_settings.h"
#include "strongroom/core/core_server.h"
#include "strongroom/core/core_service.h"
#include "strongroom/core/cored_settings.h"
#include "strongroom/core/kms_relay.h"
#include "strongroom/core/realtime_hub.h"

namespace strongroom::core {
namespace {

class Cored : public DaemonApplication {
 public:
  Cored()
      : DaemonApplication({"cored", "The Strongroom messaging core.", "STRONGROOM_CORE_CONFIG",
                           "/etc/strongroom/core.ini"}) {}

 private:
  Status Serve(const std::string& config_path, const std::string& port_file) override {
    SR_ASSIGN_OR_RETURN(CoredSettings settings, LoadCoredSettings(config_path));
    SR_ASSIGN_OR_RETURN(JwtVerifier verifier, MakeJwtVerifier(settings.jwt));
    KmsRelayOptions relay_options;
    for (const RelayClusterSettings& relay : settings.relays) {
      SR_ASSIGN_OR_RETURN(relay_options.clusters[relay.cluster],
                          ReadRelayTokenDigest(relay.token_file));
    }
    relay_options.log = [this](const std::string& line) { Log(line); };
    SR_ASSIGN_OR_RETURN(std::unique_ptr<KmsRelay> relay, KmsRelay::New(std::move(relay_options)));
    SR_ASSIGN_OR_RETURN(std::unique_ptr<Database> db,
                        OpenDatabase(settings.database, CoreService::Migrations(),
                                     CoreService::PostgresMigrations()));
    Log("database: " + settings.database.Describe());
    CoreServiceConfig config;
    config.indexer_user_id = settings.indexer;
    config.indexer_org = settings.indexer_org;
    config.compliance_officers = settings.compliance_officers;
    config.organization_of = [subjects = verifier.subjects()](std::string_view user_id) {
      return subjects.OrganizationOf(user_id);
    };
    config.files_dir = settings.files_dir;
    config.max_file_bytes = settings.max_file_bytes;
    config.cluster_poll = settings.cluster_poll;
    SR_ASSIGN_OR_RETURN(std::unique_ptr<CoreService> service,
                        CoreService::New(std::move(config), *db));
    if (const auto& cleanup = service->startup_cleanup();
        cleanup.unfinished_uploads + cleanup.unrecorded_blobs > 0) {
      Log("files: removed " + std::to_string(cleanup.unfinished_uploads) +
          " unfinished upload(s); moved " + std::to_string(cleanup.unrecorded_blobs) +
          " stored but unrecorded blob(s) into " + settings.files_dir + "/unrecorded/");
    }
    RealtimeHub hub(*service);
    service->SetActivityListener(
        [&hub](const std::vector<CoreService::Committed>& committed) { hub.Publish(committed); });

    CoreServerOptions options;
    options.listener = settings.listener;
    options.max_file_bytes = settings.max_file_bytes;
    options.rate_per_s = settings.rate_per_s;
    options.rate_burst = settings.rate_burst;
    SR_ASSIGN_OR_RETURN(std::unique_ptr<CoreServer> server,
                        CoreServer::Start(options, *service, verifier, hub, *relay));
    if (!port_file.empty()) SR_RETURN_IF_ERROR(WritePortFile(port_file, server->port()));
    Log("serving on https://" + settings.listener.host + ":" + std::to_string(server->port()) +
        " (" + std::to_string(settings.relays.size()) + " KMS cluster(s) may attach, " +
        "max_connections " + std::to_string(settings.listener.max_connections) + ")");

    waitForTerminationRequest();
    Log("stopping: closing realtime connections, finishing requests in flight");
    server->Stop();
    server.reset();
    service->SetActivityListener({});
    relay.reset();
    service.reset();
    db.reset();
    Log("stopped");
    return OkStatus();
  }
};

}  // namespace
}  // namespace strongroom::core

int main(int argc, char** argv) {
  return strongroom::DaemonMain<strongroom::core::Cored>(argc, argv);
}
