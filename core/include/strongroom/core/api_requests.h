// The core API's request parsers: JSON bodies and query strings into the service's requests.
// Pure functions (no I/O, no state), so the HTTP handlers stay thin and the fuzz target
// (fuzz/core_request_fuzz.cc) reaches every parser directly.
//
// Bodies must be one JSON object with only the fields named below (an unknown field is refused, so
// a client's typo is not silently ignored); any failure is INVALID_ARGUMENT naming the field.
// Field values are checked for type and count here; the service checks their content (URIs, JWE
// shape, user ids).
#ifndef STRONGROOM_CORE_API_REQUESTS_H_
#define STRONGROOM_CORE_API_REQUESTS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/core/model.h"

namespace strongroom::core {

inline constexpr std::size_t kMaxJsonRequestBytes = 512 * 1024;

// {kmsResourceUri, keyUri, participants?, encryptedTitle?, kmsMessage?}
struct CreateConversationRequest {
  NewConversation conversation;
  std::string kms_message;  // a sealed KMS message to relay first, or empty
};
Result<CreateConversationRequest> ParseCreateConversation(std::string_view body);

// {userIds, kmsMessage?}
struct AddParticipantsRequest {
  std::vector<std::string> user_ids;
  std::string kms_message;
};
Result<AddParticipantsRequest> ParseAddParticipants(std::string_view body);

// {kmsMessage?}, or an empty body: the embedded message of a removal, if any.
Result<std::string> ParseRemoveParticipant(std::string_view body);

// {keyUri, kmsMessage?}
struct RotateKeyRequest {
  std::string key_uri;
  std::string kms_message;
};
Result<RotateKeyRequest> ParseRotateKey(std::string_view body);

// {encryptedTitle}
Result<std::string> ParseSetTitle(std::string_view body);

// {content, fileIds?, clientActivityId?}
Result<NewPost> ParsePost(std::string_view body);

// {content}: an edit's new content.
Result<std::string> ParseEdit(std::string_view body);

// {tokens}
Result<std::vector<std::string>> ParseIndexTokens(std::string_view body);

// {sets: [{conversationId, activityId, tokens}, ...]}: 1..kMaxIndexSetsPerBatch sets.
Result<std::vector<IndexTokenSet>> ParseIndexTokenSets(std::string_view body);

// {queries: [{conversationId, tokens}, ...], before?, limit?}
Result<SearchQuery> ParseSearch(std::string_view body);

// Query strings (the part after '?', still percent-encoded).
// history: before=<seq>&after=<seq>&limit=<n> (before and after exclusive, not both)
Result<HistoryQuery> ParseHistoryQuery(std::string_view query);
// conversations: before=<seq>&limit=<n>
struct ListQuery {
  std::optional<std::int64_t> before;
  std::size_t limit = kDefaultPageSize;
};
Result<ListQuery> ParseListQuery(std::string_view query);
// compliance: user=<user id> (required) and the list's or history's parameters
struct ComplianceListQuery {
  std::string user;
  ListQuery list;
};
Result<ComplianceListQuery> ParseComplianceListQuery(std::string_view query);
struct ComplianceHistoryQuery {
  std::string user;
  HistoryQuery history;
};
Result<ComplianceHistoryQuery> ParseComplianceHistoryQuery(std::string_view query);
// events: cursor=<seq>
Result<std::optional<std::int64_t>> ParseEventsQuery(std::string_view query);
// relay: cluster=kms://<host>
Result<std::string> ParseRelayQuery(std::string_view query);

}  // namespace strongroom::core

#endif  // STRONGROOM_CORE_API_REQUESTS_H_
