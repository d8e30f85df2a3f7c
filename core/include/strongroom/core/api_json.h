// The JSON the core's API answers with (docs/api/core.md): one writer per wire object, used by the
// HTTP handlers and the realtime stream alike. Members that are empty (an activity's content,
// key, users, files and client id; a conversation's title) are left out. Activities are written by
// hand: they are serialized once per page or per push and make up most of what history and
// realtime cost. The SDK reads these objects with client/core_json.h; tests/client/core_json_test
// checks that it reads back every member written here.
#ifndef STRONGROOM_CORE_API_JSON_H_
#define STRONGROOM_CORE_API_JSON_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strongroom/core/kms_relay.h"
#include "strongroom/core/model.h"

namespace strongroom::core {

// {seq, id, conversationId, actor, verb, content?, keyUri?, objectUsers?, fileIds?,
//  clientActivityId?, published, targetId?, targetSeq?, edited?, retracted?}
std::string ActivityJson(const Activity& activity);
// {items: [activity, ...], more}
std::string HistoryPageJson(const HistoryPage& page);

// {id, kmsResourceUri, currentKeyUri, encryptedTitle?, participants, createdBy, created, lastSeq}
std::string ConversationJson(const Conversation& conversation);
// {items: [conversation, ...], next?}: `next` (the last item's lastSeq) when the page is full,
// that is when it holds `limit` items.
std::string ConversationPageJson(const std::vector<Conversation>& page, std::size_t limit);

// {id, conversationId, uploader, size, sha256, created}
std::string FileJson(const FileInfo& file);

// {items: [{conversationId, activityId, seq}, ...], next?}
std::string SearchPageJson(const SearchPage& page);

// {<member>: <object_json>, kmsAnswer?: {status, contentType, body}}: a change's result and the
// KMS's answer to the message embedded in it, if there was one.
std::string WithKmsAnswer(std::string_view member, const std::string& object_json,
                          const std::optional<KmsRelayAnswer>& answer);

}  // namespace strongroom::core

#endif  // STRONGROOM_CORE_API_JSON_H_
