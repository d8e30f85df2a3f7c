// Search over the rooms a user may read (docs/api/indexer.md): the SDK asks indexerd where the
// matches are, fetches those activities from the core, decrypts them, drops the false positives
// (an activity whose decrypted text does not have every term of the query: a 64-bit token can
// collide, and a core could answer what was not asked) and builds a snippet with the matching
// words marked. The text never leaves the client; indexerd and the core see only the query's
// tokens and activity ids.
//
// Terms are the indexer's own pipeline (strongroom_indexer_text: ICU, NFKC case folding, Snowball
// stemming in the language indexerd names in its answer), so "launches" marks "Launched".
#ifndef STRONGROOM_CLIENT_SEARCH_H_
#define STRONGROOM_CLIENT_SEARCH_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "strongroom/client/conversation.h"
#include "strongroom/client/core_client.h"
#include "strongroom/client/token_source.h"
#include "strongroom/common/error.h"

namespace strongroom::client {

namespace internal {
class HttpsClient;
}

struct SearcherOptions {
  std::string indexer_url;  // https://host[:port] of indexerd
  std::string ca_file;
  TokenSource token;      // the user's token for the indexer (audience "indexer")
  TokenSource kms_token;  // compliance searches only: the officer's token for the KMS
  std::chrono::seconds timeout{30};
};

struct SearchQuery {
  std::string query;
  std::optional<std::string> room;  // a conversation id
  std::size_t limit = 20;           // 1-200
  std::optional<std::int64_t> before;
};

// The markers around a matching word in a snippet.
inline constexpr char kMarkOpen[] = "\u00ab";   // «
inline constexpr char kMarkClose[] = "\u00bb";  // »

struct SearchHit {
  Message message;      // the activity as the core holds it now, decrypted
  std::string snippet;  // the text around the first match, matching words «marked»
};

struct SearchResults {
  std::vector<SearchHit> hits;       // newest first
  std::optional<std::int64_t> next;  // pass as `before` for the next page
  std::size_t dropped = 0;           // matches whose text did not have every term
};

class Searcher {
 public:
  // `core` and `sdk` (the same user's) must outlive the searcher.
  static Result<std::unique_ptr<Searcher>> New(SearcherOptions options, CoreClient& core,
                                               Conversations& sdk);
  ~Searcher();
  Searcher(const Searcher&) = delete;
  Searcher& operator=(const Searcher&) = delete;

  // indexerd's errors as Errors of their kind (INVALID_ARGUMENT for a bad query,
  // PERMISSION_DENIED for a room the user may not search, UNAVAILABLE...). A match that can no
  // longer be fetched (retracted since, or the user removed) is dropped.
  Result<SearchResults> Search(const SearchQuery& query);
  // A compliance officer's search of `user`'s rooms (POST /v1/compliance/search): indexerd asks
  // the KMS for the user's rooms over a channel in the officer's name, onBehalfOf the user (the
  // KMS refuses non-officers and audits it); the matches are read through the core's compliance
  // reads and decrypted with keys retrieved onBehalfOf the user (each retrieval audited).
  Result<SearchResults> ComplianceSearch(const std::string& user, const SearchQuery& query);

 private:
  Searcher(SearcherOptions options, CoreClient& core, Conversations& sdk,
           std::unique_ptr<internal::HttpsClient> https);
  // Asks indexerd at `path` (with the officer's KMS token when `kms_token` is not empty); the
  // matches and the index's language.
  struct Found {
    std::vector<IndexSearchMatch> matches;
    std::optional<std::int64_t> next;
    std::string language;
  };
  Result<Found> Ask(const std::string& path, const SearchQuery& query, const std::string& user);
  // Keeps the messages whose text has every term, with snippets.
  Result<SearchResults> Keep(const Found& found, const SearchQuery& query,
                             std::vector<std::optional<Message>>& messages);

  const SearcherOptions options_;
  CoreClient& core_;
  Conversations& sdk_;
  std::mutex mutex_;
  std::unique_ptr<internal::HttpsClient> https_;
};

// The snippet of `text` for `terms` (of `language`): up to about 160 bytes around the first word
// whose terms include one of them, every such word between kMarkOpen and kMarkClose; empty when
// no word matches. Exposed for tests.
Result<std::string> MakeSnippet(std::string_view text, const std::vector<std::string>& terms,
                                const std::string& language);

}  // namespace strongroom::client

#endif  // STRONGROOM_CLIENT_SEARCH_H_
