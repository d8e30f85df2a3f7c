#include "index_store.h"

#include <algorithm>
#include <functional>
#include <optional>
#include <set>
#include <utility>

#include "core_store.h"
#include "index_postings.h"
#include "validation.h"

namespace strongroom::core::internal {

IndexStore::IndexStore(std::string indexer_user_id, std::string indexer_org, Database& db,
                       GroupCommitWriter& writer)
    : indexer_user_id_(std::move(indexer_user_id)),
      indexer_org_(std::move(indexer_org)),
      db_(db),
      writer_(writer) {}

Status IndexStore::PutIndexTokens(const Caller& caller, const std::string& id,
                                  const std::string& activity_id,
                                  const std::vector<std::string>& tokens) {
  SR_RETURN_IF_ERROR(CheckIndexer(caller));
  if (!IsUuid(id)) return NoSuchConversation();
  const Error no_activity(ErrorCode::kNotFound, "no such activity in this conversation");
  if (!IsUuid(activity_id)) return no_activity;
  if (tokens.size() > kMaxIndexTokensPerActivity) {
    return Invalid("at most " + std::to_string(kMaxIndexTokensPerActivity) +
                   " index tokens per activity");
  }
  for (const std::string& token : tokens) SR_RETURN_IF_ERROR(CheckIndexToken(token));
  // What the store keeps of each token (posting_chunk.h), computed before the writer's turn.
  std::vector<IndexKey> keys;
  keys.reserve(tokens.size());
  for (const std::string& token : tokens) keys.push_back(IndexKey::Of(token));
  Result<Activity> put = writer_.Submit([&](Batch& b) -> Result<Activity> {
    if (!b.State(id)) return NoSuchConversation();
    std::optional<Activity> activity = CoreStore::FindActivity(*b.s, id, activity_id);
    if (!activity) return no_activity;
    // Checked in the writer, after every committed edit: tokens of text that is no longer a
    // message's never reach the store, however late the indexer is.
    if (std::optional<std::int64_t> seq = IndexedAs(*activity)) {
      IndexPostings::Replace(*b.s, id, *seq, keys);
    }
    return Activity{};
  });
  if (!put.ok()) return put.error();
  return OkStatus();
}

// Every set checked before any is written, as PutIndexTokens checks one; one change of the writer
// (one transaction) for them all.
Status IndexStore::PutIndexTokenSets(const Caller& caller, const std::vector<IndexTokenSet>& sets) {
  SR_RETURN_IF_ERROR(CheckIndexer(caller));
  if (sets.empty() || sets.size() > kMaxIndexSetsPerBatch) {
    return Invalid("a batch has 1 to " + std::to_string(kMaxIndexSetsPerBatch) + " token sets");
  }
  const auto in_set = [](std::size_t i, const Error& error) {
    return Error(error.code(), "set " + std::to_string(i) + ": " + error.message());
  };
  const Error no_activity(ErrorCode::kNotFound, "no such activity in this conversation");
  std::set<std::pair<std::string, std::string>> seen;
  std::vector<std::vector<IndexKey>> keys(sets.size());
  for (std::size_t i = 0; i < sets.size(); ++i) {
    const IndexTokenSet& set = sets[i];
    if (!IsUuid(set.conversation_id)) return in_set(i, NoSuchConversation());
    if (!IsUuid(set.activity_id)) return in_set(i, no_activity);
    if (!seen.insert({set.conversation_id, set.activity_id}).second) {
      return in_set(i, Invalid("a batch names each activity once"));
    }
    if (set.tokens.size() > kMaxIndexTokensPerActivity) {
      return in_set(i, Invalid("at most " + std::to_string(kMaxIndexTokensPerActivity) +
                               " index tokens per activity"));
    }
    for (const std::string& token : set.tokens) {
      if (Status checked = CheckIndexToken(token); !checked.ok()) return in_set(i, checked.error());
      keys[i].push_back(IndexKey::Of(token));
    }
  }
  Result<Activity> put = writer_.Submit([&](Batch& b) -> Result<Activity> {
    // Checks first: a change that fails must have written nothing.
    std::vector<std::optional<std::int64_t>> indexed_as(sets.size());
    for (std::size_t i = 0; i < sets.size(); ++i) {
      if (!b.State(sets[i].conversation_id)) return in_set(i, NoSuchConversation());
      std::optional<Activity> activity =
          CoreStore::FindActivity(*b.s, sets[i].conversation_id, sets[i].activity_id);
      if (!activity) return in_set(i, no_activity);
      indexed_as[i] = IndexedAs(*activity);
    }
    for (std::size_t i = 0; i < sets.size(); ++i) {
      if (indexed_as[i])
        IndexPostings::Replace(*b.s, sets[i].conversation_id, *indexed_as[i], keys[i]);
    }
    return Activity{};
  });
  if (!put.ok()) return put.error();
  return OkStatus();
}

Result<SearchPage> IndexStore::MatchTokens(const Caller& caller, const SearchQuery& query) {
  SR_RETURN_IF_ERROR(CheckIndexer(caller));
  if (query.queries.empty() || query.queries.size() > kMaxSearchConversations) {
    return Invalid("a search has 1 to " + std::to_string(kMaxSearchConversations) +
                   " queries, one per conversation");
  }
  SR_RETURN_IF_ERROR(CheckPageSize(query.limit));
  std::set<std::string> seen;
  std::vector<std::pair<std::string, std::vector<IndexKey>>> rooms;
  rooms.reserve(query.queries.size());
  for (const RoomQuery& room : query.queries) {
    if (!IsUuid(room.conversation_id)) return Invalid("a conversation id is not a conversation id");
    if (!seen.insert(room.conversation_id).second) {
      return Invalid("a search names each conversation once");
    }
    if (room.tokens.empty() || room.tokens.size() > kMaxSearchTokens) {
      return Invalid("a conversation's query has 1 to " + std::to_string(kMaxSearchTokens) +
                     " tokens");
    }
    for (const std::string& token : room.tokens) SR_RETURN_IF_ERROR(CheckIndexToken(token));
    std::vector<IndexKey> keys;
    for (const std::string& token : room.tokens) keys.push_back(IndexKey::Of(token));
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    rooms.emplace_back(room.conversation_id, std::move(keys));
  }
  const std::int64_t before = query.before.value_or(kNoSeq);
  SearchPage page;
  // Each conversation's newest limit + 1 matches, then the newest of them all and their ids, from
  // one snapshot.
  SR_RETURN_IF_ERROR(ReadTransaction(db_, [&](Poco::Data::Session& s) -> Status {
    std::vector<std::pair<std::int64_t, const std::string*>> found;
    for (const auto& [id, keys] : rooms) {
      for (std::int64_t seq : IndexPostings::Match(s, id, keys, before, query.limit + 1)) {
        found.emplace_back(seq, &id);
      }
    }
    std::sort(found.begin(), found.end(), std::greater<>());
    if (found.size() > query.limit) {
      found.resize(query.limit);
      page.next_before = found.back().first;
    }
    for (const auto& [seq, id] : found) {
      std::optional<std::string> activity_id = IndexPostings::ActivityId(s, seq);
      if (activity_id) page.items.push_back({*id, std::move(*activity_id), seq});
    }
    return OkStatus();
  }));
  return page;
}

std::optional<std::int64_t> IndexStore::IndexedAs(const Activity& activity) {
  if (activity.verb == "retract") return std::nullopt;
  if (activity.verb == "edit") {
    // Its content is cleared when a later edit or a retraction supersedes it.
    if (activity.content.empty()) return std::nullopt;
    return activity.target_seq;
  }
  if (activity.edited_ms != 0 || activity.retracted_ms != 0) return std::nullopt;
  return activity.seq;
}

Status IndexStore::CheckIndexer(const Caller& caller) const {
  if (indexer_user_id_.empty() || caller.user_id != indexer_user_id_ ||
      caller.org != indexer_org_) {
    return Error(ErrorCode::kPermissionDenied, "only the indexer may use the search index");
  }
  return OkStatus();
}

}  // namespace strongroom::core::internal
