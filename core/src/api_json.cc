#include "strongroom/core/api_json.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <sstream>

#include "strongroom/common/rfc3339.h"

namespace strongroom::core {
namespace {

using Poco::JSON::Object;

std::string Stringify(const Object& object) {
  std::ostringstream out;
  object.stringify(out);
  return out.str();
}

// Appends `text` as a JSON string, straight into the string instead of going through Poco's
// character-at-a-time stream writer.
void AppendJsonString(std::string& out, std::string_view text) {
  out += '"';
  std::size_t run = 0;  // start of the bytes not yet copied
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(text.substr(run, i - run));
    run = i + 1;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default: {
        static constexpr char kHex[] = "0123456789abcdef";
        out += "\\u00";
        out += kHex[c >> 4];
        out += kHex[c & 0xf];
      }
    }
  }
  out.append(text.substr(run));
  out += '"';
}

// ,"name":"value" (not the first member of an object).
void AppendMember(std::string& out, std::string_view name, std::string_view value) {
  out += ",\"";
  out += name;
  out += "\":";
  AppendJsonString(out, value);
}

// ,"name":["value",...]
void AppendMember(std::string& out, std::string_view name, const std::vector<std::string>& items) {
  out += ",\"";
  out += name;
  out += "\":[";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    AppendJsonString(out, items[i]);
  }
  out += ']';
}

// {"items":[<each item's JSON>]<tail>}
template <typename Item, typename Write>
std::string Items(const std::vector<Item>& items, Write write, const std::string& tail) {
  std::string out = "{\"items\":[";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    out += write(items[i]);
  }
  return out + "]" + tail + "}";
}

Object ConversationObject(const Conversation& conversation) {
  Object json;
  json.set("id", conversation.id);
  json.set("kmsResourceUri", conversation.kms_resource_uri);
  json.set("currentKeyUri", conversation.current_key_uri);
  if (!conversation.encrypted_title.empty()) {
    json.set("encryptedTitle", conversation.encrypted_title);
  }
  Poco::JSON::Array participants;
  for (const std::string& user : conversation.participants) participants.add(user);
  json.set("participants", participants);
  json.set("createdBy", conversation.created_by);
  json.set("created", FormatRfc3339Ms(conversation.created_ms));
  json.set("lastSeq", conversation.last_seq);
  return json;
}

}  // namespace

std::string ActivityJson(const Activity& activity) {
  std::string out;
  out.reserve(256 + activity.content.size());
  out += "{\"seq\":";
  out += std::to_string(activity.seq);
  AppendMember(out, "id", activity.id);
  AppendMember(out, "conversationId", activity.conversation_id);
  AppendMember(out, "actor", activity.actor);
  AppendMember(out, "verb", activity.verb);
  if (!activity.content.empty()) AppendMember(out, "content", activity.content);
  if (!activity.key_uri.empty()) AppendMember(out, "keyUri", activity.key_uri);
  if (!activity.object_users.empty()) AppendMember(out, "objectUsers", activity.object_users);
  if (!activity.file_ids.empty()) AppendMember(out, "fileIds", activity.file_ids);
  if (!activity.client_activity_id.empty()) {
    AppendMember(out, "clientActivityId", activity.client_activity_id);
  }
  AppendMember(out, "published", FormatRfc3339Ms(activity.published_ms));
  if (!activity.target_id.empty()) {
    AppendMember(out, "targetId", activity.target_id);
    out += ",\"targetSeq\":";
    out += std::to_string(activity.target_seq);
  }
  if (activity.edited_ms != 0) AppendMember(out, "edited", FormatRfc3339Ms(activity.edited_ms));
  if (activity.retracted_ms != 0) {
    AppendMember(out, "retracted", FormatRfc3339Ms(activity.retracted_ms));
  }
  out += '}';
  return out;
}

std::string HistoryPageJson(const HistoryPage& page) {
  return Items(page.items, ActivityJson, page.more ? ",\"more\":true" : ",\"more\":false");
}

std::string ConversationJson(const Conversation& conversation) {
  return Stringify(ConversationObject(conversation));
}

std::string ConversationPageJson(const std::vector<Conversation>& page, std::size_t limit) {
  const bool full = !page.empty() && page.size() == limit;
  return Items(page, ConversationJson,
               full ? ",\"next\":" + std::to_string(page.back().last_seq) : "");
}

std::string FileJson(const FileInfo& file) {
  Object json;
  json.set("id", file.id);
  json.set("conversationId", file.conversation_id);
  json.set("uploader", file.uploader);
  json.set("size", file.size);
  json.set("sha256", file.sha256_hex);
  json.set("created", FormatRfc3339Ms(file.created_ms));
  return Stringify(json);
}

std::string SearchPageJson(const SearchPage& page) {
  auto match = [](const IndexMatch& m) {
    Object item;
    item.set("conversationId", m.conversation_id);
    item.set("activityId", m.activity_id);
    item.set("seq", m.seq);
    return Stringify(item);
  };
  return Items(page.items, match,
               page.next_before ? ",\"next\":" + std::to_string(*page.next_before) : "");
}

std::string WithKmsAnswer(std::string_view member, const std::string& object_json,
                          const std::optional<KmsRelayAnswer>& answer) {
  std::string out = "{\"";
  out += member;
  out += "\":" + object_json;
  if (answer) {
    Object kms;
    kms.set("status", answer->http_status);
    kms.set("contentType", answer->content_type);
    kms.set("body", answer->body);
    out += ",\"kmsAnswer\":" + Stringify(kms);
  }
  return out + "}";
}

}  // namespace strongroom::core
