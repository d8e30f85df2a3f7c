#include "strongroom/client/core_json.h"

#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "strongroom/common/rfc3339.h"

namespace strongroom::client {
namespace {

using Poco::JSON::Array;
using Poco::JSON::Object;

std::string Text(const Object& object, const char* name) {
  return object.has(name) && object.get(name).isString() ? object.getValue<std::string>(name) : "";
}

std::int64_t Integer(const Object& object, const char* name) {
  if (!object.has(name)) return 0;
  try {
    return object.getValue<Poco::Int64>(name);
  } catch (const Poco::Exception&) {
    return 0;
  }
}

std::vector<std::string> TextList(const Object& object, const char* name) {
  std::vector<std::string> out;
  Array::Ptr array = object.getArray(name);
  for (unsigned i = 0; array && i < static_cast<unsigned>(array->size()); ++i) {
    if (array->get(i).isString()) out.push_back(array->getElement<std::string>(i));
  }
  return out;
}

std::int64_t Date(const Object& object, const char* name) {
  return ParseRfc3339Ms(Text(object, name)).value_or(0);
}

Array::Ptr Strings(const std::vector<std::string>& items) {
  Array::Ptr array = new Array;
  for (const std::string& item : items) array->add(item);
  return array;
}

// Every object of the array `name`, read by `read` (an item that is not an object is skipped).
template <typename T, typename Read>
Result<std::vector<T>> ItemsFrom(const Object& json, const char* name, Read read) {
  std::vector<T> out;
  Array::Ptr items = json.getArray(name);
  for (unsigned i = 0; items && i < static_cast<unsigned>(items->size()); ++i) {
    Object::Ptr item = items->getObject(i);
    if (!item) continue;
    Result<T> parsed = read(*item);
    if (!parsed.ok()) return parsed.error();
    out.push_back(std::move(parsed).value());
  }
  return out;
}

// A member whose value is a string, and a member whose value is an array of strings. An optional
// text member is left out of what is written when it is empty.
template <typename T>
struct TextMember {
  const char* name;
  std::string T::*field;
  bool optional = false;
};
template <typename T>
struct ListMember {
  const char* name;
  std::vector<std::string> T::*field;
};

template <typename T, std::size_t N>
void ReadMembers(const Object& json, const TextMember<T> (&members)[N], T& out) {
  for (const TextMember<T>& member : members) out.*member.field = Text(json, member.name);
}
template <typename T, std::size_t N>
void ReadMembers(const Object& json, const ListMember<T> (&members)[N], T& out) {
  for (const ListMember<T>& member : members) out.*member.field = TextList(json, member.name);
}

// The members of each object (docs/api/core.md) but its numbers and times.
constexpr TextMember<Activity> kActivityTexts[] = {
    {"id", &Activity::id},
    {"conversationId", &Activity::conversation_id},
    {"actor", &Activity::actor},
    {"verb", &Activity::verb},
    {"content", &Activity::content, true},
    {"keyUri", &Activity::key_uri, true},
    {"clientActivityId", &Activity::client_activity_id, true},
    {"targetId", &Activity::target_id, true},
};
constexpr ListMember<Activity> kActivityLists[] = {
    {"objectUsers", &Activity::object_users},
    {"fileIds", &Activity::file_ids},
};
constexpr TextMember<Conversation> kConversationTexts[] = {
    {"id", &Conversation::id},
    {"kmsResourceUri", &Conversation::kms_resource_uri},
    {"currentKeyUri", &Conversation::current_key_uri},
    {"encryptedTitle", &Conversation::encrypted_title, true},
    {"createdBy", &Conversation::created_by},
};
constexpr ListMember<Conversation> kConversationLists[] = {
    {"participants", &Conversation::participants},
};
constexpr TextMember<FileInfo> kFileTexts[] = {
    {"id", &FileInfo::id},
    {"conversationId", &FileInfo::conversation_id},
    {"uploader", &FileInfo::uploader},
    {"sha256", &FileInfo::sha256},
};

std::optional<KmsResponse> KmsAnswerFrom(const Object& json) {
  Object::Ptr answer = json.getObject("kmsAnswer");
  if (!answer) return std::nullopt;
  return KmsResponse{static_cast<int>(Integer(*answer, "status")), Text(*answer, "contentType"),
                     Text(*answer, "body")};
}

}  // namespace

Result<Activity> ActivityFromJson(const Object& json) {
  auto malformed = [](const std::string& why) {
    return Error(ErrorCode::kInvalidArgument, "an activity is malformed: " + why);
  };
  if (!json.has("seq") || !json.get("seq").isInteger()) return malformed("it has no seq");
  for (const char* required : {"id", "conversationId", "verb"}) {
    if (!json.has(required) || !json.get(required).isString()) {
      return malformed(std::string("it has no ") + required);
    }
  }
  Activity a;
  try {
    a.seq = json.getValue<Poco::Int64>("seq");
  } catch (const Poco::Exception&) {
    return malformed("its seq is out of range");
  }
  ReadMembers(json, kActivityTexts, a);
  ReadMembers(json, kActivityLists, a);
  a.published_ms = Date(json, "published");
  a.target_seq = Integer(json, "targetSeq");
  a.edited_ms = Date(json, "edited");
  a.retracted_ms = Date(json, "retracted");
  return a;
}

Object::Ptr ActivityToJson(const Activity& a) {
  Object::Ptr o = new Object;
  o->set("seq", a.seq);
  for (const TextMember<Activity>& member : kActivityTexts) {
    if (!member.optional || !(a.*member.field).empty()) o->set(member.name, a.*member.field);
  }
  for (const ListMember<Activity>& member : kActivityLists) {
    if (!(a.*member.field).empty()) o->set(member.name, Strings(a.*member.field));
  }
  o->set("published", FormatRfc3339Ms(a.published_ms));
  if (!a.target_id.empty()) o->set("targetSeq", a.target_seq);
  if (a.edited_ms != 0) o->set("edited", FormatRfc3339Ms(a.edited_ms));
  if (a.retracted_ms != 0) o->set("retracted", FormatRfc3339Ms(a.retracted_ms));
  return o;
}

Conversation ConversationFromJson(const Object& json) {
  Conversation c;
  ReadMembers(json, kConversationTexts, c);
  ReadMembers(json, kConversationLists, c);
  c.created_ms = Date(json, "created");
  c.last_seq = Integer(json, "lastSeq");
  return c;
}

Result<FileInfo> FileInfoFromJson(const Object& json) {
  FileInfo file;
  ReadMembers(json, kFileTexts, file);
  file.size = static_cast<std::uint64_t>(std::max<std::int64_t>(0, Integer(json, "size")));
  file.created_ms = Date(json, "created");
  if (file.id.empty()) return Error(ErrorCode::kInvalidArgument, "the core's answer has no id");
  return file;
}

Result<ConversationPage> ConversationPageFromJson(const Object& json) {
  ConversationPage page;
  SR_ASSIGN_OR_RETURN(page.items, ItemsFrom<Conversation>(json, "items", [](const Object& item) {
                        return Result<Conversation>(ConversationFromJson(item));
                      }));
  if (json.has("next")) page.next = Integer(json, "next");
  return page;
}

Result<HistoryPage> HistoryPageFromJson(const Object& json) {
  HistoryPage page;
  SR_ASSIGN_OR_RETURN(page.items, ItemsFrom<Activity>(json, "items", ActivityFromJson));
  page.more = json.has("more") && json.get("more").isBoolean() && json.getValue<bool>("more");
  return page;
}

Result<CreatedConversation> CreatedConversationFromJson(const Object& json) {
  Object::Ptr conversation = json.getObject("conversation");
  if (!conversation) {
    return Error(ErrorCode::kInvalidArgument, "the core's answer has no conversation");
  }
  return CreatedConversation{ConversationFromJson(*conversation), KmsAnswerFrom(json)};
}

Result<Change> ChangeFromJson(const Object& json) {
  Object::Ptr activity = json.getObject("activity");
  if (!activity) return Error(ErrorCode::kInvalidArgument, "the core's answer has no activity");
  SR_ASSIGN_OR_RETURN(Activity read, ActivityFromJson(*activity));
  return Change{std::move(read), KmsAnswerFrom(json)};
}

Result<std::vector<Activity>> EventsFromJson(const Object& json) {
  if (!json.getArray("events")) {
    return Error(ErrorCode::kInvalidArgument, "an event frame is not {events}");
  }
  return ItemsFrom<Activity>(json, "events", ActivityFromJson);
}

}  // namespace strongroom::client
