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

namespace {

// A set's tokens checked (count, form) and turned into what the store keeps of each
// (posting_chunk.h), before the writer's turn.
Result<std::vector<IndexKey>> CheckedKeys(const std::vector<std::string>& tokens) {
  if (tokens.size() > kMaxIndexTokensPerActivity) {
    return Invalid("at most " + std::to_string(kMaxIndexTokensPerActivity) +
                   " index tokens per activity");
  }
  std::vector<IndexKey> keys;
  keys.reserve(tokens.size());
  for (const std::string& token : tokens) {
    SR_RETURN_IF_ERROR(CheckIndexToken(token));
    keys.push_back(IndexKey::Of(token));
  }
  return keys;
}

// In the writer: the seq under which the activity's tokens are kept, none when its text is no
// longer a message's (IndexedAs), or NOT_FOUND.
Result<std::optional<std::int64_t>> IndexedSeq(Batch& b, const std::string& conversation_id,
                                               const std::string& activity_id) {
  if (!b.State(conversation_id)) return NoSuchConversation();
  std::optional<Activity> activity = CoreStore::FindActivity(*b.s, conversation_id, activity_id);
  if (!activity) return NoSuchActivity();
  return IndexStore::IndexedAs(*activity);
}

}  // namespace

Status IndexStore::PutIndexTokens(const Caller& caller, const std::string& id,
                                  const std::string& activity_id,
                                  const std::vector<std::string>& tokens) {
  SR_RETURN_IF_ERROR(CheckIndexer(caller));
  if (!IsUuid(id)) return NoSuchConversation();
  if (!IsUuid(activity_id)) return NoSuchActivity();
  SR_ASSIGN_OR_RETURN(std::vector<IndexKey> keys, CheckedKeys(tokens));
  Result<Activity> put = writer_.Submit([&](Batch& b) -> Result<Activity> {
    // Checked in the writer, after every committed edit: tokens of text that is no longer a
    // message's never reach the store, however late the indexer is.
    SR_ASSIGN_OR_RETURN(std::optional<std::int64_t> seq, IndexedSeq(b, id, activity_id));
    if (seq) IndexPostings::Replace(*b.s, id, *seq, keys);
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
  std::set<std::pair<std::string, std::string>> seen;
  std::vector<std::vector<IndexKey>> keys(sets.size());
  for (std::size_t i = 0; i < sets.size(); ++i) {
    const IndexTokenSet& set = sets[i];
    if (!IsUuid(set.conversation_id)) return in_set(i, NoSuchConversation());
    if (!IsUuid(set.activity_id)) return in_set(i, NoSuchActivity());
    if (!seen.insert({set.conversation_id, set.activity_id}).second) {
      return in_set(i, Invalid("a batch names each activity once"));
    }
    Result<std::vector<IndexKey>> checked = CheckedKeys(set.tokens);
    if (!checked.ok()) return in_set(i, checked.error());
    keys[i] = std::move(checked).value();
  }
  Result<Activity> put = writer_.Submit([&](Batch& b) -> Result<Activity> {
    // Checks first: a change that fails must have written nothing.
    std::vector<std::optional<std::int64_t>> indexed_as(sets.size());
    for (std::size_t i = 0; i < sets.size(); ++i) {
      Result<std::optional<std::int64_t>> seq =
          IndexedSeq(b, sets[i].conversation_id, sets[i].activity_id);
      if (!seq.ok()) return in_set(i, seq.error());
      indexed_as[i] = *seq;
    }
    for (std::size_t i = 0; i < sets.size(); ++i) {
      if (indexed_as[i]) {
        IndexPostings::Replace(*b.s, sets[i].conversation_id, *indexed_as[i], keys[i]);
      }
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
  SR_RETURN_IF_ERROR(db_.InReadTransaction([&](Poco::Data::Session& s) -> Status {
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
