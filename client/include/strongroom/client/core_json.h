// The core API's objects in JSON, as the SDK reads them (docs/api/core.md): one reader per wire
// object, and the one writer the client needs (an activity as the core wrote it, for an export a
// compliance officer reads back). The core writes these objects in core/api_json.h; the test
// tests/client/core_json_test.cc holds the two to the same members.
//
// Readers take what they know and leave out the rest; a member of the wrong type reads as absent.
// An activity needs its seq, id, conversationId and verb (INVALID_ARGUMENT "an activity is
// malformed: ..." otherwise), a file its id; answers need the object they carry.
#ifndef STRONGROOM_CLIENT_CORE_JSON_H_
#define STRONGROOM_CLIENT_CORE_JSON_H_

#include <Poco/JSON/Object.h>

#include <vector>

#include "strongroom/client/core_client.h"
#include "strongroom/common/error.h"

namespace strongroom::client {

Result<Activity> ActivityFromJson(const Poco::JSON::Object& json);
Poco::JSON::Object::Ptr ActivityToJson(const Activity& activity);
Conversation ConversationFromJson(const Poco::JSON::Object& json);
Result<FileInfo> FileInfoFromJson(const Poco::JSON::Object& json);

// The core's answers: {items, next?}, {items, more}, {conversation, kmsAnswer?},
// {activity, kmsAnswer?} and a realtime frame {events}.
Result<ConversationPage> ConversationPageFromJson(const Poco::JSON::Object& json);
Result<HistoryPage> HistoryPageFromJson(const Poco::JSON::Object& json);
Result<CreatedConversation> CreatedConversationFromJson(const Poco::JSON::Object& json);
Result<Change> ChangeFromJson(const Poco::JSON::Object& json);
Result<std::vector<Activity>> EventsFromJson(const Poco::JSON::Object& json);

}  // namespace strongroom::client

#endif  // STRONGROOM_CLIENT_CORE_JSON_H_
