// The daemon's IndexerKms, IndexerCore and ActivityStream over the SDK: a KmsContext over direct
// HTTPS to the KMS (indexerd is in the security realm beside kmsd), and a CoreClient with the
// indexer's core identity. And where its bearer tokens come from: a command.
#ifndef STRONGROOM_INDEXER_INDEXER_CLIENTS_H_
#define STRONGROOM_INDEXER_INDEXER_CLIENTS_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "strongroom/client/core_client.h"
#include "strongroom/client/kms_context.h"
#include "strongroom/client/token_source.h"
#include "strongroom/common/error.h"
#include "strongroom/indexer/indexer_ports.h"

namespace strongroom::indexer {

// Runs `command` ("{audience}" replaced by `audience`) with /bin/sh and takes what it prints (one
// token; trailing white space dropped). The token is kept until one minute before its "exp" (read
// from its payload, not verified: the services verify it), then the command runs again; a token
// without a readable "exp" is kept for five minutes. The command's failure, or an empty output, is
// UNAUTHENTICATED without its output. Thread-safe. `now_s` is injectable for tests.
client::TokenSource CommandTokenSource(std::string command, const std::string& audience,
                                       std::function<std::int64_t()> now_s = {});

class KmsContextIndexerKms : public IndexerKms {
 public:
  KmsContextIndexerKms(client::KmsContext& kms, std::string org)
      : kms_(kms), org_(std::move(org)) {}
  Result<client::KmsKey> RetrieveKey(const std::string& key_uri) override {
    return kms_.RetrieveKey(key_uri);
  }
  Result<client::KmsSearchKey> CurrentSearchKey() override { return kms_.RetrieveSearchKey(); }
  Result<client::KmsSearchKey> SearchKey(std::uint32_t version) override {
    return kms_.RetrieveSearchKey(org_, version);
  }
  Result<client::KmsAuthorizationPage> ListAuthorizations(
      const std::string& user, const std::string& cursor, std::size_t limit,
      const std::string& on_behalf_of) override {
    return kms_.ListAuthorizations(user, cursor, limit, on_behalf_of);
  }
  Status Check() override { return kms_.Ping(); }

 private:
  client::KmsContext& kms_;
  const std::string org_;
};

class CoreClientIndexerCore : public IndexerCore {
 public:
  explicit CoreClientIndexerCore(client::CoreClient& core) : core_(core) {}
  Status PutTokenSets(const std::vector<TokenSet>& sets) override {
    return core_.PutIndexTokenSets(sets);
  }
  Result<IndexPage> Search(const std::vector<RoomQuery>& queries,
                           std::optional<std::int64_t> before, std::size_t limit) override {
    return core_.SearchIndex(queries, before, limit);
  }

 private:
  client::CoreClient& core_;
};

// A compliance officer's KMS channel (OfficerKmsOpener): a KmsContext over direct HTTPS with the
// officer's token, closed when the returned object goes.
OfficerKmsOpener OfficerKmsOverHttps(client::KmsContextOptions base,
                                     client::HttpsTransportOptions https, std::string org);

// GET /v1/index/events from the cursor, as an ActivityStream.
StreamOpener CoreStreamOpener(client::CoreClient& core);

}  // namespace strongroom::indexer

#endif  // STRONGROOM_INDEXER_INDEXER_CLIENTS_H_
