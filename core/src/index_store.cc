#include "index_store.h"

#include <algorithm>
#include <iterator>
#include <optional>
#include <set>
#include <utility>

#include "core_store.h"
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
  const std::set<std::string> unique(tokens.begin(), tokens.end());
  const std::vector<std::string> distinct(unique.begin(), unique.end());
  Result<Activity> put = writer_.Submit([&](Batch& b) -> Result<Activity> {
    if (!b.State(id)) return NoSuchConversation();
    std::optional<Activity> activity = CoreStore::FindActivity(*b.s, id, activity_id);
    if (!activity) return no_activity;
    // Checked in the writer, after every committed edit: tokens of text that is no longer a
    // message's never reach the store, however late the indexer is.
    if (std::optional<std::int64_t> seq = IndexedAs(*activity)) {
      CoreStore::ReplaceIndexTokens(*b.s, id, *seq, distinct);
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
  std::vector<std::pair<std::string, std::vector<std::string>>> rooms;
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
    const std::set<std::string> tokens(room.tokens.begin(), room.tokens.end());
    rooms.emplace_back(room.conversation_id,
                       std::vector<std::string>(tokens.begin(), tokens.end()));
  }
  const std::int64_t before = query.before.value_or(kNoSeq);
  SearchPage page;
  // Each conversation's newest limit + 1 matches, from one snapshot; then the newest of them all.
  SR_RETURN_IF_ERROR(ReadTransaction(db_, [&](Poco::Data::Session& s) -> Status {
    for (const auto& [id, tokens] : rooms) {
      std::vector<IndexMatch> found = CoreStore::MatchTokens(s, id, tokens, before, query.limit);
      page.items.insert(page.items.end(), std::make_move_iterator(found.begin()),
                        std::make_move_iterator(found.end()));
    }
    return OkStatus();
  }));
  std::sort(page.items.begin(), page.items.end(),
            [](const IndexMatch& a, const IndexMatch& b) { return a.seq > b.seq; });
  if (page.items.size() > query.limit) {
    page.items.resize(query.limit);
    page.next_before = page.items.back().seq;
  }
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
