// The search index store: opaque tokens per activity (the indexer's keyed hashes of words; the
// core never sees a word or a search key), written and matched by the configured indexer identity
// only. Puts go through the group-commit writer like every change; matches read beside it.
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

  // Adds the tokens to the activity's set: putting the same tokens again changes nothing.
  Status PutIndexTokens(const Caller& caller, const std::string& id, const std::string& activity_id,
                        const std::vector<std::string>& tokens);
  Result<SearchPage> MatchTokens(const Caller& caller, const SearchQuery& query);

  // The seq the tokens of `activity`'s text are stored under (an edit's: its target's), or none
  // when that text is no longer a message's.
  static std::optional<std::int64_t> IndexedAs(const Activity& activity);

 private:
  Status CheckIndexer(const Caller& caller) const;

  const std::string indexer_user_id_;
  const std::string indexer_org_;
  Database& db_;
  GroupCommitWriter& writer_;
};

}  // namespace strongroom::core::internal

#endif  // STRONGROOM_CORE_SRC_INDEX_STORE_H_
