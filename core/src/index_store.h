// The search index store: opaque tokens per activity (the indexer's keyed hashes of words; the
// core never sees a word or a search key), written and matched by the configured indexer identity
// only. Puts go through the group-commit writer like every change; matches read beside it. A put
// replaces the activity's set, so a replayed put stores the same set (the indexer delivers at
// least once). A search names each conversation with its own tokens (each room has its own key).
//
// Edits and retractions (core_service.h) remove a message's tokens in their own transaction. The
// indexer then indexes the edit's text from the stream: tokens put for an edit are stored for the
// message it edited, so a search finds the message. Tokens put for text that is no longer the
// message's (the message's own text after an edit or a retraction, an edit a later one superseded,
// a retraction) are not stored, and the answer is the same: an indexer that is behind cannot bring
// old text back into the index.
//
// Thread-safe.
#ifndef STRONGROOM_CORE_SRC_INDEX_STORE_H_
#define STRONGROOM_CORE_SRC_INDEX_STORE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "group_commit_writer.h"
#include "strongroom/common/database.h"
#include "strongroom/common/error.h"
#include "strongroom/core/model.h"

namespace strongroom::core::internal {

class IndexStore {
 public:
  // `indexer_user_id` and `indexer_org` name the indexer (both empty: there is none, and every
  // call is PERMISSION_DENIED). `db` and `writer` must outlive the store.
  IndexStore(std::string indexer_user_id, std::string indexer_org, Database& db,
             GroupCommitWriter& writer);

  // Replaces the activity's token set with `tokens` (duplicates count once): putting the same
  // set again changes nothing, a shorter one removes the rest.
  Status PutIndexTokens(const Caller& caller, const std::string& id, const std::string& activity_id,
                        const std::vector<std::string>& tokens);
  // The same for up to kMaxIndexSetsPerBatch activities at once, in one transaction: every set is
  // checked before any is written, and a refusal names the set ("set 3: ...").
  Status PutIndexTokenSets(const Caller& caller, const std::vector<IndexTokenSet>& sets);
  // Per conversation of the query, the activities that have every one of its tokens; newest
  // first across them all, a page of query.limit.
  Result<SearchPage> MatchTokens(const Caller& caller, const SearchQuery& query);

  // The seq the tokens of `activity`'s text are stored under (an edit's: its target's), or none
  // when that text is no longer a message's.
  static std::optional<std::int64_t> IndexedAs(const Activity& activity);

  // PERMISSION_DENIED unless `caller` is the indexer (its user id and organization).
  Status CheckIndexer(const Caller& caller) const;
  const std::string& indexer_org() const { return indexer_org_; }

 private:
  const std::string indexer_user_id_;
  const std::string indexer_org_;
  Database& db_;
  GroupCommitWriter& writer_;
};

}  // namespace strongroom::core::internal

#endif  // STRONGROOM_CORE_SRC_INDEX_STORE_H_
