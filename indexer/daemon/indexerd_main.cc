// indexerd: the search indexer of one organization (docs/operations/indexerd.md). It follows the
// core's indexer stream from its persisted cursor, retrieves content keys and its organization's
// search key over its own KMS channel, and puts opaque tokens into the core's index store; it
// answers its organization's users' searches over the rooms the KMS says they may read.
//
//   indexerd [--config FILE] [--port-file PATH]
//
// FILE defaults to $STRONGROOM_INDEXER_CONFIG, then /etc/strongroom/indexer.ini. SIGTERM or SIGINT
// stops it: the listener first, then the stream (the batch in hand is committed or, if cut short,
// replayed on the next start). One line per start, stop and error on stderr; never a token, a
// query, a term or content.

#include <chrono>
#include <mutex>

#include "strongroom/client/core_client.h"
#include "strongroom/client/kms_context.h"
#include "strongroom/common/daemon.h"
#include "strongroom/common/database.h"
#include "strongroom/common/jwt_settings.h"
#include "strongroom/indexer/indexer_clients.h"
#include "strongroom/indexer/indexer_server.h"
#include "strongroom/indexer/indexer_store.h"
#include "strongroom/indexer/indexerd_settings.h"
#include "strongroom/indexer/indexing_pipeline.h"
#include "strongroom/indexer/search_service.h"

namespace strongroom::indexer {
namespace {

// The KMS channel's health, asked at most every few seconds (a ping over the channel).
class KmsHealth {
 public:
  explicit KmsHealth(IndexerKms& kms) : kms_(kms) {}
  Status Check() {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto now = std::chrono::steady_clock::now();
    if (!checked_ || now - checked_at_ > std::chrono::seconds(5)) {
      last_ = kms_.Check();
      checked_ = true;
      checked_at_ = now;
    }
    return last_;
  }

 private:
  IndexerKms& kms_;
  std::mutex mutex_;
  bool checked_ = false;
  std::chrono::steady_clock::time_point checked_at_;
  Status last_ = OkStatus();
};

class Indexerd : public DaemonApplication {
 public:
  Indexerd()
      : DaemonApplication({"indexerd", "The Strongroom search indexer.",
                           "STRONGROOM_INDEXER_CONFIG", "/etc/strongroom/indexer.ini"}) {}

 private:
  Status Serve(const std::string& config_path, const std::string& port_file) override {
    SR_ASSIGN_OR_RETURN(IndexerdSettings settings, LoadIndexerdSettings(config_path));
    SR_ASSIGN_OR_RETURN(JwtVerifier verifier, MakeJwtVerifier(settings.jwt));
    SR_ASSIGN_OR_RETURN(std::unique_ptr<Database> db,
                        OpenDatabase(settings.database, IndexerStore::Migrations(),
                                     IndexerStore::PostgresMigrations()));
    Log("database: " + settings.database.Describe());
    SR_ASSIGN_OR_RETURN(IndexerStore store, IndexerStore::New(*db));

    client::KmsContextOptions kms_options;
    kms_options.client_id = settings.client_id;
    kms_options.kms_token = CommandTokenSource(settings.token_command, "kms");
    kms_options.trust = {settings.kms_cluster, settings.kms_ca_file};
    SR_ASSIGN_OR_RETURN(
        std::unique_ptr<client::KmsContext> kms_context,
        client::KmsContext::OverHttps(kms_options, {settings.kms_url, settings.kms_ca_file}));
    SR_ASSIGN_OR_RETURN(
        std::unique_ptr<client::CoreClient> core_client,
        client::CoreClient::New({settings.core_url, settings.core_ca_file,
                                 CommandTokenSource(settings.token_command, "core")}));
    KmsContextIndexerKms kms(*kms_context, settings.org);
    CoreClientIndexerCore core(*core_client);
    SearchKeys keys(kms);
    auto log = [this](const std::string& line) { Log(line); };
    SR_ASSIGN_OR_RETURN(std::unique_ptr<IndexingPipeline> pipeline,
                        IndexingPipeline::New(kms, core, store, keys, settings.language, log));
    IndexerLoop loop(*pipeline, store, CoreStreamOpener(*core_client), log);
    // The re-index after a search-key rotation: its own pipeline (a TermExtractor per thread).
    SR_ASSIGN_OR_RETURN(std::unique_ptr<IndexingPipeline> reindex_pipeline,
                        IndexingPipeline::New(kms, core, store, keys, settings.language, log));
    ReindexJob reindex(
        *reindex_pipeline, store, keys, CoreStreamOpener(*core_client), log,
        std::chrono::duration_cast<std::chrono::milliseconds>(settings.search_key_check));
    SearchService search(kms, core, store, keys, settings.language);
    KmsHealth kms_health(kms);
    // Compliance searches: the officer's KMS token is verified as the KMS would (the same
    // issuers, audience kms), and the KMS lists the user's rooms over the officer's own channel.
    JwtSettings kms_jwt = settings.jwt;
    kms_jwt.audience = "kms";
    SR_ASSIGN_OR_RETURN(JwtVerifier kms_verifier, MakeJwtVerifier(kms_jwt));
    client::KmsContextOptions officer_options = kms_options;
    officer_options.client_id = settings.client_id + "-compliance";
    IndexerRoutes routes(
        search, verifier, settings.org,
        {[&loop] { return loop.state(); }, [&kms_health] { return kms_health.Check(); },
         [&reindex] { return reindex.progress(); },
         [&reindex] { return reindex.current_version(); }, [&db] { return db->Ping(); }},
        {&kms_verifier,
         OfficerKmsOverHttps(officer_options, {settings.kms_url, settings.kms_ca_file},
                             settings.org)},
        {static_cast<double>(settings.search_rate_per_s),
         static_cast<double>(settings.search_rate_burst)});

    SR_ASSIGN_OR_RETURN(std::unique_ptr<IndexerServer> server,
                        IndexerServer::Start(settings.listener, routes));
    loop.Start();
    reindex.Start();
    if (!port_file.empty()) SR_RETURN_IF_ERROR(WritePortFile(port_file, server->port()));
    Log("serving on https://" + settings.listener.host + ":" + std::to_string(server->port()) +
        " for organization " + settings.org + " (language " + settings.language + ")");

    waitForTerminationRequest();
    Log("stopping: closing the listener, then the stream");
    server->Stop();
    server.reset();
    reindex.Stop();
    loop.Stop();
    (void)kms_context->Close();
    Log("stopped at seq " + std::to_string(loop.state().cursor));
    return OkStatus();
  }
};

}  // namespace
}  // namespace strongroom::indexer

int main(int argc, char** argv) {
  return strongroom::DaemonMain<strongroom::indexer::Indexerd>(argc, argv);
}
