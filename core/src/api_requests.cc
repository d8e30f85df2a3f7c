#include "strongroom/core/api_requests.h"

#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/NumberParser.h>
#include <Poco/URI.h>

#include <algorithm>
#include <initializer_list>
#include <limits>

#include "strongroom/common/kms_uri.h"
#include "strongroom/common/strict_json.h"
#include "strongroom/core/kms_relay.h"

namespace strongroom::core {
namespace {

using Poco::JSON::Object;

// Query strings are short; anything longer is not ours.
constexpr std::size_t kMaxQueryBytes = 4096;

// A name the client sent (an unknown field or query parameter), for an error message: at most
// 64 bytes, and every byte that is not printable ASCII shown as '?', so the message stays short
// and valid UTF-8 in the JSON error body whatever the name held (query names are percent-decoded
// bytes; 64 bytes of a JSON name may end inside a character).
std::string Quoted(const std::string& name) {
  constexpr std::size_t kMaxQuotedBytes = 64;
  std::string out = name.substr(0, kMaxQuotedBytes);
  for (char& c : out) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte > 0x7e) c = '?';
  }
  return "\"" + out + (name.size() > kMaxQuotedBytes ? "...\"" : "\"");
}

Error BadField(const std::string& name, const std::string& what) {
  return Error(ErrorCode::kInvalidArgument, "\"" + name + "\" must be " + what);
}

Result<Object::Ptr> ParseObject(std::string_view body) {
  if (body.size() > kMaxJsonRequestBytes) {
    return Error(ErrorCode::kInvalidArgument,
                 "a request body is at most " + std::to_string(kMaxJsonRequestBytes) + " bytes");
  }
  // A member given twice is refused, not read as the last one.
  Result<Object::Ptr> object = ParseStrictJsonObject(body);
  if (!object.ok()) {
    return Error(ErrorCode::kInvalidArgument,
                 "the body must be a JSON object with each member once");
  }
  return object;
}

Status CheckFields(const Object& object, std::initializer_list<const char*> allowed) {
  for (const auto& [name, value] : object) {
    bool known = false;
    for (const char* field : allowed) known = known || name == field;
    if (!known) {
      return Error(ErrorCode::kInvalidArgument, "unknown field " + Quoted(name));
    }
  }
  return OkStatus();
}

Result<std::string> StringField(const Object& object, const std::string& name, bool required) {
  if (!object.has(name) || object.isNull(name)) {
    if (required) return Error(ErrorCode::kInvalidArgument, "\"" + name + "\" is required");
    return std::string();
  }
  const Poco::Dynamic::Var& value = object.get(name);
  if (!value.isString()) return BadField(name, "a string");
  return value.extract<std::string>();
}

Result<std::vector<std::string>> StringArrayField(const Object& object, const std::string& name,
                                                  bool required, std::size_t max_items) {
  std::vector<std::string> out;
  if (!object.has(name) || object.isNull(name)) {
    if (required) return Error(ErrorCode::kInvalidArgument, "\"" + name + "\" is required");
    return out;
  }
  Poco::JSON::Array::Ptr array = object.getArray(name);
  if (array.isNull()) return BadField(name, "an array of strings");
  if (array->size() > max_items) {
    return BadField(name, "an array of at most " + std::to_string(max_items) + " strings");
  }
  for (std::size_t i = 0; i < array->size(); ++i) {
    const Poco::Dynamic::Var& item = array->get(static_cast<unsigned>(i));
    if (!item.isString()) return BadField(name, "an array of strings");
    out.push_back(item.extract<std::string>());
  }
  return out;
}

// A whole number field from min to max.
Result<std::optional<std::int64_t>> IntegerField(const Object& object, const std::string& name,
                                                 std::int64_t min, std::int64_t max) {
  if (!object.has(name) || object.isNull(name)) return std::optional<std::int64_t>();
  const Poco::Dynamic::Var& value = object.get(name);
  if (!value.isInteger()) return BadField(name, "a whole number");
  std::int64_t number = 0;
  try {
    number = value.convert<Poco::Int64>();
  } catch (const Poco::Exception&) {
    return BadField(name, "a whole number");
  }
  if (number < min || number > max) {
    return BadField(name, "from " + std::to_string(min) + " to " + std::to_string(max));
  }
  return std::optional<std::int64_t>(number);
}

Result<std::string> KmsMessageField(const Object& object) {
  SR_ASSIGN_OR_RETURN(std::string message, StringField(object, "kmsMessage", false));
  if (message.size() > kMaxRelayMessageBytes) {
    return BadField("kmsMessage", "at most " + std::to_string(kMaxRelayMessageBytes) + " bytes");
  }
  return message;
}

Result<Poco::URI::QueryParameters> ParseQuery(std::string_view query,
                                              std::initializer_list<const char*> allowed) {
  if (query.size() > kMaxQueryBytes) {
    return Error(ErrorCode::kInvalidArgument, "the query string is too long");
  }
  Poco::URI::QueryParameters params;
  try {
    Poco::URI uri;
    uri.setRawQuery(std::string(query));
    params = uri.getQueryParameters();
  } catch (const Poco::Exception&) {
    return Error(ErrorCode::kInvalidArgument, "malformed query string");
  }
  for (std::size_t i = 0; i < params.size(); ++i) {
    bool known = false;
    for (const char* name : allowed) known = known || params[i].first == name;
    if (!known) {
      return Error(ErrorCode::kInvalidArgument,
                   "unknown query parameter " + Quoted(params[i].first));
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (params[j].first == params[i].first) {
        return Error(ErrorCode::kInvalidArgument,
                     "query parameter " + Quoted(params[i].first) + " given twice");
      }
    }
  }
  return params;
}

Result<std::optional<std::int64_t>> SeqParam(const Poco::URI::QueryParameters& params,
                                             const std::string& name) {
  for (const auto& [key, value] : params) {
    if (key != name) continue;
    // Decimal digits only: Poco's number parser alone would also take "-0", "+5", " 5" and
    // "1,000" (a thousands separator).
    Poco::Int64 parsed = 0;
    if (value.empty() || value.size() > 19 ||
        !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        !Poco::NumberParser::tryParse64(value, parsed) || parsed < 0) {
      return Error(ErrorCode::kInvalidArgument, name + " must be a whole number >= 0");
    }
    return std::optional<std::int64_t>(parsed);
  }
  return std::optional<std::int64_t>();
}

Result<std::size_t> LimitParam(const Poco::URI::QueryParameters& params) {
  SR_ASSIGN_OR_RETURN(std::optional<std::int64_t> limit, SeqParam(params, "limit"));
  if (!limit) return kDefaultPageSize;
  if (*limit < 1 || *limit > static_cast<std::int64_t>(kMaxPageSize)) {
    return Error(ErrorCode::kInvalidArgument, "limit must be 1 to " + std::to_string(kMaxPageSize));
  }
  return static_cast<std::size_t>(*limit);
}

}  // namespace

Result<CreateConversationRequest> ParseCreateConversation(std::string_view body) {
  SR_ASSIGN_OR_RETURN(Object::Ptr object, ParseObject(body));
  SR_RETURN_IF_ERROR(CheckFields(
      *object, {"kmsResourceUri", "keyUri", "participants", "encryptedTitle", "kmsMessage"}));
  CreateConversationRequest out;
  NewConversation& create = out.conversation;
  SR_ASSIGN_OR_RETURN(create.kms_resource_uri, StringField(*object, "kmsResourceUri", true));
  SR_ASSIGN_OR_RETURN(create.key_uri, StringField(*object, "keyUri", true));
  SR_ASSIGN_OR_RETURN(create.participants,
                      StringArrayField(*object, "participants", false, kMaxUsersPerChange));
  SR_ASSIGN_OR_RETURN(create.encrypted_title, StringField(*object, "encryptedTitle", false));
  SR_ASSIGN_OR_RETURN(out.kms_message, KmsMessageField(*object));
  if (Result<KmsUri> uri = KmsUri::Parse(create.kms_resource_uri);
      !uri.ok() || uri->ToString() != create.kms_resource_uri ||
      create.kms_resource_uri.size() > kMaxUriBytes) {
    return BadField("kmsResourceUri", "a kms:// resource URL");
  }
  return out;
}

Result<AddParticipantsRequest> ParseAddParticipants(std::string_view body) {
  SR_ASSIGN_OR_RETURN(Object::Ptr object, ParseObject(body));
  SR_RETURN_IF_ERROR(CheckFields(*object, {"userIds", "kmsMessage"}));
  AddParticipantsRequest out;
  SR_ASSIGN_OR_RETURN(out.user_ids, StringArrayField(*object, "userIds", true, kMaxUsersPerChange));
  if (out.user_ids.empty()) return BadField("userIds", "a non-empty array of user ids");
  SR_ASSIGN_OR_RETURN(out.kms_message, KmsMessageField(*object));
  return out;
}

Result<std::string> ParseRemoveParticipant(std::string_view body) {
  if (body.empty()) return std::string();
  SR_ASSIGN_OR_RETURN(Object::Ptr object, ParseObject(body));
  SR_RETURN_IF_ERROR(CheckFields(*object, {"kmsMessage"}));
  return KmsMessageField(*object);
}

Result<RotateKeyRequest> ParseRotateKey(std::string_view body) {
  SR_ASSIGN_OR_RETURN(Object::Ptr object, ParseObject(body));
  SR_RETURN_IF_ERROR(CheckFields(*object, {"keyUri", "kmsMessage"}));
  RotateKeyRequest out;
  SR_ASSIGN_OR_RETURN(out.key_uri, StringField(*object, "keyUri", true));
  SR_ASSIGN_OR_RETURN(out.kms_message, KmsMessageField(*object));
  return out;
}

Result<std::string> ParseSetTitle(std::string_view body) {
  SR_ASSIGN_OR_RETURN(Object::Ptr object, ParseObject(body));
  SR_RETURN_IF_ERROR(CheckFields(*object, {"encryptedTitle"}));
  return StringField(*object, "encryptedTitle", true);
}

Result<NewPost> ParsePost(std::string_view body) {
  SR_ASSIGN_OR_RETURN(Object::Ptr object, ParseObject(body));
  SR_RETURN_IF_ERROR(CheckFields(*object, {"content", "fileIds", "clientActivityId"}));
  NewPost post;
  SR_ASSIGN_OR_RETURN(post.content, StringField(*object, "content", true));
  SR_ASSIGN_OR_RETURN(post.file_ids,
                      StringArrayField(*object, "fileIds", false, kMaxFileIdsPerActivity));
  SR_ASSIGN_OR_RETURN(post.client_activity_id, StringField(*object, "clientActivityId", false));
  return post;
}

Result<std::string> ParseEdit(std::string_view body) {
  SR_ASSIGN_OR_RETURN(Object::Ptr object, ParseObject(body));
  SR_RETURN_IF_ERROR(CheckFields(*object, {"content"}));
  return StringField(*object, "content", true);
}

Result<std::vector<std::string>> ParseIndexTokens(std::string_view body) {
  SR_ASSIGN_OR_RETURN(Object::Ptr object, ParseObject(body));
  SR_RETURN_IF_ERROR(CheckFields(*object, {"tokens"}));
  return StringArrayField(*object, "tokens", true, kMaxIndexTokensPerActivity);
}

Result<std::vector<IndexTokenSet>> ParseIndexTokenSets(std::string_view body) {
  SR_ASSIGN_OR_RETURN(Object::Ptr object, ParseObject(body));
  SR_RETURN_IF_ERROR(CheckFields(*object, {"sets"}));
  if (!object->has("sets") || object->isNull("sets")) {
    return Error(ErrorCode::kInvalidArgument, "\"sets\" is required");
  }
  Poco::JSON::Array::Ptr sets = object->getArray("sets");
  const std::string one_to_max =
      "an array of 1 to " + std::to_string(kMaxIndexSetsPerBatch) + " token sets";
  if (sets.isNull() || sets->size() == 0 || sets->size() > kMaxIndexSetsPerBatch) {
    return BadField("sets", one_to_max);
  }
  std::vector<IndexTokenSet> out;
  out.reserve(sets->size());
  for (std::size_t i = 0; i < sets->size(); ++i) {
    Object::Ptr item = sets->getObject(static_cast<unsigned>(i));
    if (item.isNull()) {
      return BadField("sets", "an array of {\"conversationId\", \"activityId\", \"tokens\"}");
    }
    SR_RETURN_IF_ERROR(CheckFields(*item, {"conversationId", "activityId", "tokens"}));
    IndexTokenSet set;
    SR_ASSIGN_OR_RETURN(set.conversation_id, StringField(*item, "conversationId", true));
    SR_ASSIGN_OR_RETURN(set.activity_id, StringField(*item, "activityId", true));
    SR_ASSIGN_OR_RETURN(set.tokens,
                        StringArrayField(*item, "tokens", true, kMaxIndexTokensPerActivity));
    out.push_back(std::move(set));
  }
  return out;
}

Result<SearchQuery> ParseSearch(std::string_view body) {
  SR_ASSIGN_OR_RETURN(Object::Ptr object, ParseObject(body));
  SR_RETURN_IF_ERROR(CheckFields(*object, {"queries", "before", "limit"}));
  if (!object->has("queries") || object->isNull("queries")) {
    return Error(ErrorCode::kInvalidArgument, "\"queries\" is required");
  }
  Poco::JSON::Array::Ptr queries = object->getArray("queries");
  const std::string one_to_max =
      "an array of 1 to " + std::to_string(kMaxSearchConversations) + " queries";
  if (queries.isNull() || queries->size() == 0 || queries->size() > kMaxSearchConversations) {
    return BadField("queries", one_to_max);
  }
  SearchQuery query;
  query.queries.reserve(queries->size());
  for (std::size_t i = 0; i < queries->size(); ++i) {
    Object::Ptr room = queries->getObject(static_cast<unsigned>(i));
    if (room.isNull()) {
      return BadField("queries", "an array of {\"conversationId\", \"tokens\"} objects");
    }
    SR_RETURN_IF_ERROR(CheckFields(*room, {"conversationId", "tokens"}));
    RoomQuery part;
    SR_ASSIGN_OR_RETURN(part.conversation_id, StringField(*room, "conversationId", true));
    SR_ASSIGN_OR_RETURN(part.tokens, StringArrayField(*room, "tokens", true, kMaxSearchTokens));
    if (part.tokens.empty()) return BadField("tokens", "a non-empty array");
    query.queries.push_back(std::move(part));
  }
  SR_ASSIGN_OR_RETURN(query.before,
                      IntegerField(*object, "before", 0, std::numeric_limits<std::int64_t>::max()));
  SR_ASSIGN_OR_RETURN(std::optional<std::int64_t> limit,
                      IntegerField(*object, "limit", 1, static_cast<std::int64_t>(kMaxPageSize)));
  if (limit) query.limit = static_cast<std::size_t>(*limit);
  return query;
}

namespace {

Result<HistoryQuery> HistoryFrom(const Poco::URI::QueryParameters& params) {
  HistoryQuery out;
  SR_ASSIGN_OR_RETURN(out.before, SeqParam(params, "before"));
  SR_ASSIGN_OR_RETURN(out.after, SeqParam(params, "after"));
  SR_ASSIGN_OR_RETURN(out.limit, LimitParam(params));
  if (out.before && out.after) {
    return Error(ErrorCode::kInvalidArgument, "give before or after, not both");
  }
  return out;
}

Result<ListQuery> ListFrom(const Poco::URI::QueryParameters& params) {
  ListQuery out;
  SR_ASSIGN_OR_RETURN(out.before, SeqParam(params, "before"));
  SR_ASSIGN_OR_RETURN(out.limit, LimitParam(params));
  return out;
}

Result<std::string> UserFrom(const Poco::URI::QueryParameters& params) {
  for (const auto& [key, value] : params) {
    if (key == "user" && !value.empty()) return value;
  }
  return Error(ErrorCode::kInvalidArgument, "name the user read with ?user=<user id>");
}

}  // namespace

Result<HistoryQuery> ParseHistoryQuery(std::string_view query) {
  SR_ASSIGN_OR_RETURN(Poco::URI::QueryParameters params,
                      ParseQuery(query, {"before", "after", "limit"}));
  return HistoryFrom(params);
}

Result<ListQuery> ParseListQuery(std::string_view query) {
  SR_ASSIGN_OR_RETURN(Poco::URI::QueryParameters params, ParseQuery(query, {"before", "limit"}));
  return ListFrom(params);
}

Result<ComplianceListQuery> ParseComplianceListQuery(std::string_view query) {
  SR_ASSIGN_OR_RETURN(Poco::URI::QueryParameters params,
                      ParseQuery(query, {"user", "before", "limit"}));
  ComplianceListQuery out;
  SR_ASSIGN_OR_RETURN(out.user, UserFrom(params));
  SR_ASSIGN_OR_RETURN(out.list, ListFrom(params));
  return out;
}

Result<ComplianceHistoryQuery> ParseComplianceHistoryQuery(std::string_view query) {
  SR_ASSIGN_OR_RETURN(Poco::URI::QueryParameters params,
                      ParseQuery(query, {"user", "before", "after", "limit"}));
  ComplianceHistoryQuery out;
  SR_ASSIGN_OR_RETURN(out.user, UserFrom(params));
  SR_ASSIGN_OR_RETURN(out.history, HistoryFrom(params));
  return out;
}

Result<std::optional<std::int64_t>> ParseEventsQuery(std::string_view query) {
  SR_ASSIGN_OR_RETURN(Poco::URI::QueryParameters params, ParseQuery(query, {"cursor"}));
  return SeqParam(params, "cursor");
}

Result<std::string> ParseRelayQuery(std::string_view query) {
  SR_ASSIGN_OR_RETURN(Poco::URI::QueryParameters params, ParseQuery(query, {"cluster"}));
  // Written as conversations' KMS URLs have it (validation.cc, CheckKmsUri), the host in lower
  // case, so that it matches the relay's configured cluster.
  for (const auto& [key, value] : params) {
    Result<KmsUri> cluster = KmsUri::ParseCluster(value);
    if (cluster.ok() && value.size() <= kMaxUriBytes) return cluster->ToString();
  }
  return Error(ErrorCode::kInvalidArgument, "name the KMS with ?cluster=kms://<host>");
}

}  // namespace strongroom::core
