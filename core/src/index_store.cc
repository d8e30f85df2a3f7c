#include "index_store.h"

#include <optional>
#include <set>

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
      CoreStore::InsertIndexTokens(*b.s, id, *seq, distinct);
    }
    return Activity{};
  });
  if (!put.ok()) return put.error();
  return OkStatus();
}

Result<SearchPage> IndexStore::MatchTokens(const Caller& caller, const SearchQuery& query) {
  SR_RETURN_IF_ERROR(CheckIndexer(caller));
  if (query.conversation_ids.empty() || query.conversation_ids.size() > kMaxSearchConversations) {
    return Invalid("a search names 1 to " + std::to_string(kMaxSearchConversations) +
                   " conversations");
  }
  if (query.tokens.empty() || query.tokens.size() > kMaxSearchTokens) {
    return Invalid("a search has 1 to " + std::to_string(kMaxSearchTokens) + " tokens");
  }
  SR_RETURN_IF_ERROR(CheckPageSize(query.limit));
  for (const std::string& id : query.conversation_ids) {
    if (!IsUuid(id)) return Invalid("a conversation id is not a conversation id");
  }
  for (const std::string& token : query.tokens) SR_RETURN_IF_ERROR(CheckIndexToken(token));
  const std::set<std::string> ids(query.conversation_ids.begin(), query.conversation_ids.end());
  const std::set<std::string> tokens(query.tokens.begin(), query.tokens.end());
  SearchPage page;
  SR_RETURN_IF_ERROR(Read(db_, [&](Poco::Data::Session& s) -> Status {
    page.items = CoreStore::MatchTokens(s, {ids.begin(), ids.end()}, {tokens.begin(), tokens.end()},
                                        query.before.value_or(kNoSeq), query.limit);
    return OkStatus();
  }));
  if (page.items.size() > query.limit) {
    page.items.pop_back();
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
