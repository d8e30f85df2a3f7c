// The search index store: opaque tokens per activity (the indexer's keyed hashes of words; the
// core never sees a word or a search key), written and matched by the configured indexer identity
// only. Puts go through the group-commit writer like every change; matches read beside it.
//
// Thread-safe.
#ifndef STRONGROOM_CORE_SRC_INDEX_STORE_H_
#define STRONGROOM_CORE_SRC_INDEX_STORE_H_

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

 private:
  Status CheckIndexer(const Caller& caller) const;

  const std::string indexer_user_id_;
  const std::string indexer_org_;
  Database& db_;
  GroupCommitWriter& writer_;
};

}  // namespace strongroom::core::internal

#endif  // STRONGROOM_CORE_SRC_INDEX_STORE_H_
