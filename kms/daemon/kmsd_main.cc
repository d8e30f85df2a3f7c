// kmsd: the Key Management Server. Serves the KMS protocol over HTTPS (kms_server.h) with the
// keys in the HSM (the [hsm] sections) and the database of [kms] database; with a [relay]
// section, also through cored over connections it dials out (relay_connector.h).
//
//   kmsd [--config FILE] [--port-file PATH]
//
// FILE defaults to $STRONGROOM_KMS_CONFIG, then /etc/strongroom/kms.ini. --port-file writes the
// bound port (useful with listen = host:0). SIGTERM or SIGINT stops it gracefully: no new
// connections, requests in flight finish, then the database and the tokens are closed. One line
// per start, stop and error goes to stderr; never a key, PIN, token or message body.

#include <cstdlib>
#include <functional>
#include <iostream>
#include <set>

#include "strongroom/common/daemon.h"
#include "strongroom/common/database.h"
#include "strongroom/hsm/key_vault.h"
#include "strongroom/kms/hsm_settings.h"
#include "strongroom/kms/identity_certificate.h"
#include "strongroom/kms/kms_server.h"
#include "strongroom/kms/kms_service.h"
#include "strongroom/kms/kms_store.h"
#include "strongroom/kms/kmsd_settings.h"
#include "strongroom/kms/ops_server.h"
#include "strongroom/kms/reconcile_job.h"
#include "strongroom/kms/relay_connector.h"

namespace strongroom::kms {
namespace {

// kmsd starts with the tokens it can use and repairs the others in the background; it refuses to
// start only when an organization it serves has no token ready. Says which tokens it starts
// without, and why.
Status CheckTokensAtStart(const hsm::KeyVault& vault, const KmsdSettings& settings,
                          const std::function<void(const std::string&)>& log) {
  for (const hsm::TokenHealth& health : vault.Health()) {
    if (health.state == hsm::TokenState::kLoginRefused) {
      log("token '" + health.name + "' is refused and never logged in again: " + health.detail);
    } else if (health.state != hsm::TokenState::kReady) {
      log("token '" + health.name + "' is unavailable; starting without it, it is opened in the " +
          "background once it is back: " + health.detail);
    }
  }
  std::set<std::string> orgs;
  for (const JwtIssuerSettings& issuer : settings.issuers) orgs.insert(issuer.org);
  for (const std::string& org : orgs) {
    if (!vault.ReadyFor(org).empty()) continue;
    std::string why;
    bool all_refused = true;
    for (const auto& token : vault.tokens()) {
      if (!token->Serves(org)) continue;
      const hsm::TokenHealth health = token->Health();
      all_refused = all_refused && health.state == hsm::TokenState::kLoginRefused;
      why += (why.empty() ? "" : "; ") + health.detail;
    }
    if (why.empty()) why = "no configured token serves it";
    // A PIN refused everywhere is the operator's to fix (77), like a wrong PIN always was.
    return Error(all_refused && !vault.tokens().empty() ? ErrorCode::kUnauthenticated
                                                        : ErrorCode::kUnavailable,
                 "no HSM token is ready for organization " + org + ": " + why);
  }
  return OkStatus();
}

class Kmsd : public DaemonApplication {
 public:
  Kmsd()
      : DaemonApplication({"kmsd", "The Strongroom Key Management Server.", "STRONGROOM_KMS_CONFIG",
                           "/etc/strongroom/kms.ini"}) {}

 private:
  Status Serve(const std::string& config_path, const std::string& port_file) override {
    SR_ASSIGN_OR_RETURN(KmsdSettings settings, LoadKmsdSettings(config_path));
    SR_ASSIGN_OR_RETURN(hsm::HsmConfig hsm_config, LoadHsmSettings(config_path));
    hsm_config.start_degraded = true;  // a missing or failing token is repaired, not fatal
    SR_ASSIGN_OR_RETURN(std::unique_ptr<hsm::KeyVault> vault, hsm::KeyVault::Open(hsm_config));
    SR_RETURN_IF_ERROR(
        CheckTokensAtStart(*vault, settings, [this](const std::string& line) { Log(line); }));
    SR_ASSIGN_OR_RETURN(
        std::unique_ptr<Database> db,
        OpenDatabase(settings.database, KmsStore::Migrations(), KmsStore::PostgresMigrations()));
    Log("database: " + settings.database.Describe());
    SR_ASSIGN_OR_RETURN(std::vector<IdentityChain> chains,
                        LoadIdentityChains(settings.identity_chain));
    SR_ASSIGN_OR_RETURN(JwtVerifier verifier, MakeJwtVerifier(settings));
    KmsServiceConfig config;
    config.host = settings.host;
    config.identity_key = settings.identity_key;
    config.identity_chains = std::move(chains);
    config.metadata_cache_entries = settings.metadata_cache_entries;
    // Unwrapped keys are cached (bounded, zeroized, cleared on root rotation); metrics for /ops.
    Metrics metrics;
    KeyCache cache(settings.key_cache_entries, settings.key_cache_age);
    // Channel keys apart, so key_cache_entries = 0 still leaves one unwrap per retrieval, not two;
    // as many as the channel records kept in memory.
    KeyCache channel_keys(settings.metadata_cache_entries, settings.key_cache_age);
    SR_ASSIGN_OR_RETURN(std::unique_ptr<KmsService> service,
                        KmsService::New(std::move(config), *vault, *db, std::move(verifier), {},
                                        KmsServiceHooks{&cache, &metrics, &channel_keys}));

    // Keys made while a token was down are wrapped for it once it is back (reconcile_job.h).
    auto reconcile_jobs = std::make_unique<ReconcileJobs>(*vault, *db);
    auto reconcile = std::make_unique<ReconcileWorker>(*reconcile_jobs);

    // Every setting and file the listeners and the relay need is read and checked before any
    // listener opens: a bad one stops kmsd before it says it serves.
    // A rewrap job waits for the other nodes' probes; the nodes share probe_interval_ms.
    SR_ASSIGN_OR_RETURN(std::unique_ptr<Operations> operations,
                        Operations::New(config_path, *vault, *db, metrics, cache, reconcile.get(),
                                        hsm_config.probe_interval));
    // One connector per cored node that [relay] url lists: each keeps its own connections up.
    std::vector<std::unique_ptr<RelayConnector>> relays;
    if (settings.relay) {
      for (const std::string& url : settings.relay->urls) {
        RelayConnectorOptions relay_options;
        relay_options.url = url;
        relay_options.ca_file = settings.relay->ca_file;
        relay_options.token_file = settings.relay->token_file;
        relay_options.cluster = "kms://" + settings.host;
        relay_options.connections = settings.relay->connections;
        relay_options.idle_timeout = settings.relay->idle_timeout;
        SR_ASSIGN_OR_RETURN(std::unique_ptr<RelayConnector> relay,
                            RelayConnector::New(std::move(relay_options), *service));
        relays.push_back(std::move(relay));
      }
    }

    KmsServerOptions options;
    options.listener = settings.listener;
    options.max_in_flight = settings.max_in_flight;
    options.max_queued = settings.max_queued;
    options.queue_wait = settings.queue_wait;
    options.metrics = &metrics;
    for (const std::string& line : service->identities().Describe()) Log(line);
    SR_ASSIGN_OR_RETURN(std::unique_ptr<KmsServer> server, KmsServer::Start(options, *service));
    if (operations) SR_RETURN_IF_ERROR(operations->Listen());
    if (!port_file.empty()) SR_RETURN_IF_ERROR(WritePortFile(port_file, server->port()));
    Log("serving kms://" + settings.host + " on https://" + settings.listener.host + ":" +
        std::to_string(server->port()) + " (" + std::to_string(vault->tokens().size()) +
        " token(s), max_connections " + std::to_string(settings.listener.max_connections) +
        ", max_in_flight " + std::to_string(settings.max_in_flight) + ")");

    // The operations listener and the rewrap worker, if [ops] is configured.
    if (operations) {
      Log("operations listener on https://" + operations->settings().listener.host + ":" +
          std::to_string(operations->port()));
    }
    // The relay through cored, if [relay] is configured: connections kmsd dials out to every
    // node it names and keeps up.
    for (const auto& relay : relays) relay->Start();

    waitForTerminationRequest();
    Log("stopping: finishing requests in flight");
    for (const auto& relay : relays) relay->Stop();
    operations.reset();
    reconcile.reset();
    reconcile_jobs.reset();
    server->Stop();
    const KmsServerCounters counters = server->counters();
    server.reset();
    service.reset();
    db.reset();
    vault.reset();
    Log("stopped after " + std::to_string(counters.requests) + " request(s), " +
        std::to_string(counters.queued) + " admitted after waiting for a slot, " +
        std::to_string(counters.overloaded) + " refused as overloaded");
    return OkStatus();
  }
};

}  // namespace
}  // namespace strongroom::kms

int main(int argc, char** argv) {
  return strongroom::DaemonMain<strongroom::kms::Kmsd>(argc, argv);
}
