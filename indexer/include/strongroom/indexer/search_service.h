// indexerd's queries (docs/api/indexer.md): a user's search over the rooms the KMS says they may
// read, never the rooms the core would name.
//
//   1. the query's terms (QueryParser: the pipeline that indexed them, the organization's
//      language; 1-32 terms, at most 2 KiB of UTF-8);
//   2. the resources the user is authorized on, from the KMS (retrieve /authorizations?authId=,
//      asked by the organization's indexer about a user of its organization), to the rooms the
//      indexer has indexed for those resources (IndexerStore); with `room`, that room only, and
//      PERMISSION_DENIED when it is not among them (one answer whether the room exists or not);
//   3. each room's tokens for the terms (RoomSearchKey of every version from the room's stored
//      one to the current one: while a re-index after a search-key rotation is not done, a room
//      holds tokens of both), the core's index search (one request per version, at most 1,000
//      rooms per core request; more are asked in several and merged, an activity found twice
//      kept once);
//   4. the matches, newest first: {conversationId, activityId, seq}, with `next` for paging.
// The client fetches the activities, decrypts them, drops false positives and builds snippets.
#ifndef STRONGROOM_INDEXER_SEARCH_SERVICE_H_
#define STRONGROOM_INDEXER_SEARCH_SERVICE_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/indexer/indexer_ports.h"
#include "strongroom/indexer/indexer_store.h"
#include "strongroom/indexer/indexing_pipeline.h"
#include "strongroom/indexer/term_extractor.h"

namespace strongroom::indexer {

inline constexpr std::size_t kMaxSearchLimit = 200;
inline constexpr std::size_t kDefaultSearchLimit = 50;
inline constexpr std::size_t kMaxRoomsPerCoreSearch = 1000;
// A user's authorizations read from the KMS, at most (1,000 per page).
inline constexpr std::size_t kMaxAuthorizationsRead = 100000;

struct SearchRequest {
  std::string user;  // whose rooms: the caller, or for compliance the named user
  std::string query;
  std::optional<std::string> room;  // a conversation id: that room only
  std::size_t limit = kDefaultSearchLimit;
  std::optional<std::int64_t> before;
};

class SearchService {
 public:
  SearchService(IndexerKms& kms, IndexerCore& core, IndexerStore& store, SearchKeys& keys,
                std::string language)
      : kms_(kms), core_(core), store_(store), keys_(keys), language_(std::move(language)) {}

  // Thread-safe. INVALID_ARGUMENT for a bad query or limit; PERMISSION_DENIED for a room the
  // user may not search; the KMS's or the core's errors otherwise.
  Result<IndexPage> Search(const SearchRequest& request);
  // A compliance officer's search of `request.user`'s rooms: the rooms listed over the officer's
  // own KMS channel `onBehalfOf` the user (the KMS refuses anyone but an officer of the user's
  // organization: PERMISSION_DENIED), the rest as Search.
  Result<IndexPage> ComplianceSearch(const SearchRequest& request, IndexerKms& officer_kms);
  // The stemming language of the organization's index, which clients need to check matches.
  const std::string& language() const { return language_; }

 private:
  Result<std::vector<std::string>> Terms(const std::string& query);
  Result<std::vector<std::string>> AuthorizedResources(IndexerKms& kms, const std::string& user,
                                                       const std::string& on_behalf_of);
  Result<IndexPage> SearchIn(const SearchRequest& request, IndexerKms& kms,
                             const std::string& on_behalf_of);

  IndexerKms& kms_;
  IndexerCore& core_;
  IndexerStore& store_;
  SearchKeys& keys_;
  const std::string language_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<TermExtractor>> idle_extractors_;  // one per query in flight
};

}  // namespace strongroom::indexer

#endif  // STRONGROOM_INDEXER_SEARCH_SERVICE_H_
