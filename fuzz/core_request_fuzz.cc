// libFuzzer target for the core API's request parsers (core/include/strongroom/core/api_requests.h)
// and the content check every post goes through (CheckContentJwe), plus one mode that sends a post
// body through CoreService::PostActivity on a real SQLite database in a temporary directory. The
// input format (a mode byte) is in core_request_input.h; docs/testing.md says how to run it.
//
// After every input what must hold is checked, and a violation aborts:
//   - a refusal is INVALID_ARGUMENT with a message of at most kMaxErrorMessageBytes that survives
//     the trip through the JSON error body the server sends ({"code","message"}, Poco's
//     stringify and parser): client input echoed in a message is bounded and never breaks it;
//   - an accepted request respects the limits of api_requests.h and core_service.h (sizes,
//     counts, page sizes, non-negative cursors, before and after not both), and comes back the
//     same when written as JSON (or a query string) and parsed again;
//   - a number in a query string is decimal digits only;
//   - an accepted JWE has 5 parts, an empty encrypted key, a 12-byte IV, a non-empty ciphertext,
//     a 16-byte tag and a protected header that Poco's JSON parser (not the jansson that
//     CheckContentJwe uses) also reads as alg "dir", enc "A256GCM" and the same non-empty kid of
//     at most kMaxUriBytes;
//   - mode n: PostActivity stores exactly what was posted under the current key, or refuses with
//     INVALID_ARGUMENT, FAILED_PRECONDITION ("key rotation required") or ALREADY_EXISTS and
//     stores nothing; it never accepts content CheckContentJwe refuses, and never refuses a plain
//     post of a well-formed JWE under the current key.
//
// Built twice: as the libFuzzer target (STRONGROOM_FUZZ) and, with replay_main.cc, as the CTest
// replay of the checked-in corpus.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/URI.h>
#include <stdlib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core_request_input.h"
#include "strongroom/common/database.h"
#include "strongroom/common/jose.h"
#include "strongroom/core/api_requests.h"
#include "strongroom/core/core_service.h"
#include "strongroom/core/kms_relay.h"

namespace strongroom::fuzz {
namespace {

using core::CoreService;
using Poco::JSON::Object;

// An error message quotes at most a short piece of the input: the longest fixed text of a
// parser's message plus 64 bytes of a name, with room to spare.
constexpr std::size_t kMaxErrorMessageBytes = 256;
// The harness's service is rebuilt after this many stored posts, so the database stays small.
constexpr int kPostsPerDatabase = 20000;

// SR_FUZZ_TRACE=1: one line per input, the mode and what became of it (accepted, or the error's
// code and message; the parsers' messages quote at most a field name, never a value).
const bool trace = [] {
  const char* value = std::getenv("SR_FUZZ_TRACE");
  return value != nullptr && std::string_view(value) == "1";
}();

void Trace(const char* mode, const Error* error) {
  if (!trace) return;
  std::fprintf(stderr, "core_request_fuzz: %s: %s\n", mode,
               error == nullptr ? "accepted" : error->ToString().c_str());
}

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "core_request_fuzz: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

void Check(bool holds, const char* mode, const std::string& what) {
  if (!holds) Fail(std::string("invariant (") + mode + "): " + what);
}

template <typename T>
T Must(Result<T> result, const char* what) {
  if (!result.ok()) Fail(std::string(what) + ": " + result.error().ToString());
  return std::move(result).value();
}

std::string ToJson(const Object& object) {
  std::ostringstream out;
  object.stringify(out);
  return out.str();
}

// nullptr unless `text` is a JSON object.
Object::Ptr ParseJson(std::string_view text) {
  try {
    Poco::JSON::Parser parser;
    Poco::Dynamic::Var parsed = parser.parse(std::string(text));
    if (parsed.type() != typeid(Object::Ptr)) return nullptr;
    return parsed.extract<Object::Ptr>();
  } catch (const std::exception&) {
    return nullptr;
  }
}

Poco::JSON::Array ToArray(const std::vector<std::string>& items) {
  Poco::JSON::Array array;
  for (const std::string& item : items) array.add(item);
  return array;
}

// Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF).
bool IsUtf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    std::size_t n = 0;
    std::uint32_t cp = 0, min = 0;
    if (lead < 0x80) {
      ++i;
      continue;
    } else if ((lead & 0xe0) == 0xc0) {
      n = 1, cp = lead & 0x1fu, min = 0x80;
    } else if ((lead & 0xf0) == 0xe0) {
      n = 2, cp = lead & 0x0fu, min = 0x800;
    } else if ((lead & 0xf8) == 0xf0) {
      n = 3, cp = lead & 0x07u, min = 0x10000;
    } else {
      return false;
    }
    if (i + n >= text.size()) return false;
    for (std::size_t k = 1; k <= n; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (next & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n + 1;
  }
  return true;
}

// What holds for every refusal of a parser: INVALID_ARGUMENT with a short message that the
// server's JSON error body carries unchanged.
void CheckRefusal(const Error& error, const char* mode) {
  Check(error.code() == ErrorCode::kInvalidArgument, mode, "refused with " + error.ToString());
  const std::string& message = error.message();
  Check(!message.empty(), mode, "a refusal without a message");
  Check(message.size() <= kMaxErrorMessageBytes, mode,
        "an error message of " + std::to_string(message.size()) + " bytes");
  // Poco's JSON writer would escape stray bytes one by one: the client would read other
  // characters than the server meant.
  Check(IsUtf8(message), mode, "an error message is not valid UTF-8");
  Object body;
  body.set("code", "invalid_argument");
  body.set("message", message);
  Object::Ptr back = ParseJson(ToJson(body));
  Check(back && back->has("message") && back->get("message").isString() &&
            back->getValue<std::string>("message") == message,
        mode, "an error message does not survive its JSON body");
}

// The value if `result` is OK; checks the refusal and returns nullopt otherwise.
template <typename T>
std::optional<T> Accepted(Result<T> result, const char* mode) {
  if (!result.ok()) {
    Trace(mode, &result.error());
    CheckRefusal(result.error(), mode);
    return std::nullopt;
  }
  Trace(mode, nullptr);
  return std::move(result).value();
}

// Parses `text` again, which was written from an accepted request; it must be accepted.
template <typename T>
T Reparsed(Result<T> result, const char* mode, const std::string& text) {
  if (!result.ok()) {
    Fail(std::string("invariant (") + mode + "): an accepted request written again as " +
         text.substr(0, 200) + " is refused: " + result.error().message());
  }
  return std::move(result).value();
}

void CheckKmsMessage(const std::string& message, const char* mode) {
  Check(message.size() <= core::kMaxRelayMessageBytes, mode, "an oversize kmsMessage accepted");
}

void CheckBody(std::string_view body, const char* mode) {
  Check(body.size() <= core::kMaxJsonRequestBytes, mode, "an oversize body accepted");
}

bool IsDigits(std::string_view text) {
  if (text.empty() || text.size() > 19) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// A number in an accepted query string must be written in decimal digits: split the raw query
// the plain way and look at the numeric parameters' decoded values.
void CheckQueryNumbers(std::string_view query, const char* mode) {
  std::size_t start = 0;
  while (start <= query.size()) {
    std::size_t end = query.find('&', start);
    if (end == std::string_view::npos) end = query.size();
    const std::string_view part = query.substr(start, end - start);
    const std::size_t eq = part.find('=');
    std::string name, value;
    try {
      Poco::URI::decode(std::string(part.substr(0, eq)), name, true);
      if (eq != std::string_view::npos) {
        Poco::URI::decode(std::string(part.substr(eq + 1)), value, true);
      }
    } catch (const std::exception&) {
      Fail(std::string("invariant (") + mode + "): an accepted query does not decode");
    }
    if (name == "before" || name == "after" || name == "limit" || name == "cursor") {
      Check(IsDigits(value), mode,
            "the number \"" + value.substr(0, 40) + "\" of " + name +
                " is accepted, but it is not decimal digits");
    }
    start = end + 1;
  }
}

std::string SeqQuery(const std::vector<std::pair<std::string, std::optional<std::int64_t>>>& params,
                     std::size_t limit) {
  std::string query;
  for (const auto& [name, value] : params) {
    if (value) query += name + "=" + std::to_string(*value) + "&";
  }
  return query + "limit=" + std::to_string(limit);
}

void CheckLimit(std::size_t limit, const char* mode) {
  Check(limit >= 1 && limit <= core::kMaxPageSize, mode, "a page size of " + std::to_string(limit));
}

void CheckCursor(const std::optional<std::int64_t>& cursor, const char* mode) {
  Check(!cursor || *cursor >= 0, mode, "a negative cursor");
}

// --- one function per mode -------------------------------------------------------------------

void RunCreateConversation(std::string_view body) {
  const char* mode = "create conversation";
  auto parsed = Accepted(core::ParseCreateConversation(body), mode);
  if (!parsed) return;
  CheckBody(body, mode);
  const core::NewConversation& c = parsed->conversation;
  Check(
      c.kms_resource_uri.rfind("kms://", 0) == 0 && c.kms_resource_uri.size() <= core::kMaxUriBytes,
      mode, "kmsResourceUri is not a kms:// URL of at most kMaxUriBytes");
  Check(c.participants.size() <= core::kMaxUsersPerChange, mode, "too many participants");
  CheckKmsMessage(parsed->kms_message, mode);

  Object json;
  json.set("kmsResourceUri", c.kms_resource_uri);
  json.set("keyUri", c.key_uri);
  if (!c.participants.empty()) json.set("participants", ToArray(c.participants));
  if (!c.encrypted_title.empty()) json.set("encryptedTitle", c.encrypted_title);
  if (!parsed->kms_message.empty()) json.set("kmsMessage", parsed->kms_message);
  const std::string text = ToJson(json);
  auto again = Reparsed(core::ParseCreateConversation(text), mode, text);
  Check(again.conversation.kms_resource_uri == c.kms_resource_uri &&
            again.conversation.key_uri == c.key_uri &&
            again.conversation.participants == c.participants &&
            again.conversation.encrypted_title == c.encrypted_title &&
            again.kms_message == parsed->kms_message,
        mode, "the request written again parses differently");
}

void RunAddParticipants(std::string_view body) {
  const char* mode = "add participants";
  auto parsed = Accepted(core::ParseAddParticipants(body), mode);
  if (!parsed) return;
  CheckBody(body, mode);
  Check(!parsed->user_ids.empty() && parsed->user_ids.size() <= core::kMaxUsersPerChange, mode,
        std::to_string(parsed->user_ids.size()) + " userIds accepted");
  CheckKmsMessage(parsed->kms_message, mode);

  Object json;
  json.set("userIds", ToArray(parsed->user_ids));
  if (!parsed->kms_message.empty()) json.set("kmsMessage", parsed->kms_message);
  const std::string text = ToJson(json);
  auto again = Reparsed(core::ParseAddParticipants(text), mode, text);
  Check(again.user_ids == parsed->user_ids && again.kms_message == parsed->kms_message, mode,
        "the request written again parses differently");
}

void RunRemoveParticipant(std::string_view body) {
  const char* mode = "remove participant";
  auto parsed = Accepted(core::ParseRemoveParticipant(body), mode);
  if (!parsed) return;
  CheckBody(body, mode);
  CheckKmsMessage(*parsed, mode);
  Check(!body.empty() || parsed->empty(), mode, "an empty body carries a kmsMessage");

  Object json;
  if (!parsed->empty()) json.set("kmsMessage", *parsed);
  const std::string text = ToJson(json);
  Check(Reparsed(core::ParseRemoveParticipant(text), mode, text) == *parsed, mode,
        "the request written again parses differently");
}

void RunRotateKey(std::string_view body) {
  const char* mode = "rotate key";
  auto parsed = Accepted(core::ParseRotateKey(body), mode);
  if (!parsed) return;
  CheckBody(body, mode);
  CheckKmsMessage(parsed->kms_message, mode);

  Object json;
  json.set("keyUri", parsed->key_uri);
  if (!parsed->kms_message.empty()) json.set("kmsMessage", parsed->kms_message);
  const std::string text = ToJson(json);
  auto again = Reparsed(core::ParseRotateKey(text), mode, text);
  Check(again.key_uri == parsed->key_uri && again.kms_message == parsed->kms_message, mode,
        "the request written again parses differently");
}

void RunSetTitle(std::string_view body) {
  const char* mode = "set title";
  auto parsed = Accepted(core::ParseSetTitle(body), mode);
  if (!parsed) return;
  CheckBody(body, mode);

  Object json;
  json.set("encryptedTitle", *parsed);
  const std::string text = ToJson(json);
  Check(Reparsed(core::ParseSetTitle(text), mode, text) == *parsed, mode,
        "the request written again parses differently");
}

void RunEdit(std::string_view body) {
  const char* mode = "edit";
  auto parsed = Accepted(core::ParseEdit(body), mode);
  if (!parsed) return;
  CheckBody(body, mode);

  Object json;
  json.set("content", *parsed);
  const std::string text = ToJson(json);
  Check(Reparsed(core::ParseEdit(text), mode, text) == *parsed, mode,
        "the request written again parses differently");
}

void CheckPost(const core::NewPost& post, std::string_view body, const char* mode) {
  CheckBody(body, mode);
  Check(post.file_ids.size() <= core::kMaxFileIdsPerActivity, mode, "too many fileIds");

  Object json;
  json.set("content", post.content);
  if (!post.file_ids.empty()) json.set("fileIds", ToArray(post.file_ids));
  if (!post.client_activity_id.empty()) json.set("clientActivityId", post.client_activity_id);
  const std::string text = ToJson(json);
  auto again = Reparsed(core::ParsePost(text), mode, text);
  Check(again.content == post.content && again.file_ids == post.file_ids &&
            again.client_activity_id == post.client_activity_id,
        mode, "the request written again parses differently");
}

void RunPost(std::string_view body) {
  const char* mode = "post";
  auto parsed = Accepted(core::ParsePost(body), mode);
  if (parsed) CheckPost(*parsed, body, mode);
}

void RunIndexTokens(std::string_view body) {
  const char* mode = "index tokens";
  auto parsed = Accepted(core::ParseIndexTokens(body), mode);
  if (!parsed) return;
  CheckBody(body, mode);
  Check(parsed->size() <= core::kMaxIndexTokensPerActivity, mode, "too many tokens");

  Object json;
  json.set("tokens", ToArray(*parsed));
  const std::string text = ToJson(json);
  Check(Reparsed(core::ParseIndexTokens(text), mode, text) == *parsed, mode,
        "the request written again parses differently");
}

void RunIndexTokenSets(std::string_view body) {
  const char* mode = "index token sets";
  auto parsed = Accepted(core::ParseIndexTokenSets(body), mode);
  if (!parsed) return;
  CheckBody(body, mode);
  Check(!parsed->empty() && parsed->size() <= core::kMaxIndexSetsPerBatch, mode,
        std::to_string(parsed->size()) + " sets accepted");
  Poco::JSON::Array sets;
  for (const core::IndexTokenSet& set : *parsed) {
    Check(set.tokens.size() <= core::kMaxIndexTokensPerActivity, mode, "too many tokens");
    Object item;
    item.set("conversationId", set.conversation_id);
    item.set("activityId", set.activity_id);
    item.set("tokens", ToArray(set.tokens));
    sets.add(item);
  }

  Object json;
  json.set("sets", sets);
  const std::string text = ToJson(json);
  auto again = Reparsed(core::ParseIndexTokenSets(text), mode, text);
  bool same = again.size() == parsed->size();
  for (std::size_t i = 0; same && i < again.size(); ++i) {
    same = again[i].conversation_id == (*parsed)[i].conversation_id &&
           again[i].activity_id == (*parsed)[i].activity_id &&
           again[i].tokens == (*parsed)[i].tokens;
  }
  Check(same, mode, "the request written again parses differently");
}

void RunSearch(std::string_view body) {
  const char* mode = "search";
  auto parsed = Accepted(core::ParseSearch(body), mode);
  if (!parsed) return;
  CheckBody(body, mode);
  Check(!parsed->queries.empty() && parsed->queries.size() <= core::kMaxSearchConversations, mode,
        std::to_string(parsed->queries.size()) + " queries accepted");
  Poco::JSON::Array queries;
  for (const core::RoomQuery& room : parsed->queries) {
    Check(!room.tokens.empty() && room.tokens.size() <= core::kMaxSearchTokens, mode,
          std::to_string(room.tokens.size()) + " tokens accepted");
    Object item;
    item.set("conversationId", room.conversation_id);
    item.set("tokens", ToArray(room.tokens));
    queries.add(item);
  }
  CheckLimit(parsed->limit, mode);
  CheckCursor(parsed->before, mode);

  Object json;
  json.set("queries", queries);
  if (parsed->before) json.set("before", *parsed->before);
  json.set("limit", parsed->limit);
  const std::string text = ToJson(json);
  auto again = Reparsed(core::ParseSearch(text), mode, text);
  bool same = again.queries.size() == parsed->queries.size() && again.before == parsed->before &&
              again.limit == parsed->limit;
  for (std::size_t i = 0; same && i < again.queries.size(); ++i) {
    same = again.queries[i].conversation_id == parsed->queries[i].conversation_id &&
           again.queries[i].tokens == parsed->queries[i].tokens;
  }
  Check(same, mode, "the request written again parses differently");
}

void RunHistoryQuery(std::string_view query) {
  const char* mode = "history query";
  auto parsed = Accepted(core::ParseHistoryQuery(query), mode);
  if (!parsed) return;
  CheckQueryNumbers(query, mode);
  Check(!(parsed->before && parsed->after), mode, "before and after both accepted");
  CheckCursor(parsed->before, mode);
  CheckCursor(parsed->after, mode);
  CheckLimit(parsed->limit, mode);

  const std::string text =
      SeqQuery({{"before", parsed->before}, {"after", parsed->after}}, parsed->limit);
  auto again = Reparsed(core::ParseHistoryQuery(text), mode, text);
  Check(again.before == parsed->before && again.after == parsed->after &&
            again.limit == parsed->limit,
        mode, "the query written again parses differently");
}

void RunListQuery(std::string_view query) {
  const char* mode = "list query";
  auto parsed = Accepted(core::ParseListQuery(query), mode);
  if (!parsed) return;
  CheckQueryNumbers(query, mode);
  CheckCursor(parsed->before, mode);
  CheckLimit(parsed->limit, mode);

  const std::string text = SeqQuery({{"before", parsed->before}}, parsed->limit);
  auto again = Reparsed(core::ParseListQuery(text), mode, text);
  Check(again.before == parsed->before && again.limit == parsed->limit, mode,
        "the query written again parses differently");
}

void RunEventsQuery(std::string_view query) {
  const char* mode = "events query";
  auto parsed = Accepted(core::ParseEventsQuery(query), mode);
  if (!parsed) return;
  CheckQueryNumbers(query, mode);
  CheckCursor(*parsed, mode);

  const std::string text = *parsed ? "cursor=" + std::to_string(**parsed) : "";
  Check(Reparsed(core::ParseEventsQuery(text), mode, text) == *parsed, mode,
        "the query written again parses differently");
}

void RunRelayQuery(std::string_view query) {
  const char* mode = "relay query";
  auto parsed = Accepted(core::ParseRelayQuery(query), mode);
  if (!parsed) return;
  const std::string& cluster = *parsed;
  Check(
      cluster.rfind("kms://", 0) == 0 && cluster.size() > 6 && cluster.size() <= core::kMaxUriBytes,
      mode, "the cluster is not kms://<host> of at most kMaxUriBytes");
  // The host as a conversation's KMS URL may have it (CheckKmsUri): nothing else can match.
  for (std::size_t i = 6; i < cluster.size(); ++i) {
    const char c = cluster[i];
    const bool host = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '-' || c == ':';
    Check(host, mode,
          "the cluster's host has a byte " + std::to_string(static_cast<unsigned char>(c)));
  }
  Poco::URI uri;
  uri.addQueryParameter("cluster", cluster);
  const std::string text = uri.getRawQuery();
  Check(Reparsed(core::ParseRelayQuery(text), mode, text) == cluster, mode,
        "the query written again parses differently");
}

// An independent reading of an accepted JWE: plain splitting, base64url and Poco's JSON parser.
void CheckAcceptedJwe(std::string_view jwe, const std::string& kid, const char* mode) {
  Check(!kid.empty() && kid.size() <= core::kMaxUriBytes, mode,
        "a kid of " + std::to_string(kid.size()) + " bytes accepted");
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  for (;;) {
    const std::size_t dot = jwe.find('.', start);
    parts.push_back(jwe.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  Check(parts.size() == 5, mode, "a JWE of " + std::to_string(parts.size()) + " parts accepted");
  Check(parts[1].empty(), mode, "a JWE with an encrypted key accepted");
  auto decode = [&](std::string_view part, const char* name) {
    Result<std::vector<std::uint8_t>> bytes = jose::Base64UrlDecode(part);
    Check(bytes.ok(), mode, std::string("an accepted JWE's ") + name + " is not base64url");
    Check(jose::Base64UrlEncode(std::span<const std::uint8_t>(*bytes)) == part, mode,
          std::string("an accepted JWE's ") + name + " is not canonical base64url");
    return std::move(bytes).value();
  };
  const std::vector<std::uint8_t> header = decode(parts[0], "header");
  Check(decode(parts[2], "IV").size() == 12, mode, "an accepted JWE's IV is not 12 bytes");
  Check(!decode(parts[3], "ciphertext").empty(), mode, "an accepted JWE has no ciphertext");
  Check(decode(parts[4], "tag").size() == 16, mode, "an accepted JWE's tag is not 16 bytes");
  Object::Ptr fields =
      ParseJson(std::string_view(reinterpret_cast<const char*>(header.data()), header.size()));
  Check(fields != nullptr, mode, "an accepted JWE's header is not a JSON object to Poco");
  auto member = [&](const char* name) -> std::optional<std::string> {
    if (!fields->has(name) || !fields->get(name).isString()) return std::nullopt;
    return fields->getValue<std::string>(name);
  };
  Check(member("alg") == "dir" && member("enc") == "A256GCM", mode,
        "an accepted JWE is not alg dir, enc A256GCM to Poco");
  Check(member("kid") == kid, mode, "Poco reads another kid from an accepted JWE");
  Check(!fields->has("zip") && !fields->has("crit"), mode, "an accepted JWE has zip or crit");
}

void RunContentJwe(std::string_view jwe) {
  const char* mode = "content JWE";
  auto kid = Accepted(core::CheckContentJwe(jwe), mode);
  if (kid) CheckAcceptedJwe(jwe, *kid, mode);
}

// --- mode n: a post through the service ------------------------------------------------------

class ServiceHarness {
 public:
  ServiceHarness() { Open(); }
  ~ServiceHarness() { Close(); }

  void Run(std::string_view input);

 private:
  void Open();
  void Close();

  std::string dir_;
  std::unique_ptr<Database> db_;
  std::unique_ptr<CoreService> service_;
  std::string conversation_;
  std::string file_id_;
  int posts_ = 0;
};

const core::Caller kAlice{kCoreAlice, "fuzzorg"};

void ServiceHarness::Open() {
  std::string templ =
      (std::filesystem::temp_directory_path() / "core_request_fuzz-XXXXXX").string();
  if (mkdtemp(templ.data()) == nullptr) Fail("mkdtemp failed");
  dir_ = templ;
  db_ =
      Must(Database::OpenSqlite(dir_ + "/core.db", CoreService::Migrations()), "open the database");
  core::CoreServiceConfig config;
  config.files_dir = dir_ + "/files";
  service_ = Must(CoreService::New(config, *db_), "start the service");
  core::NewConversation create;
  create.kms_resource_uri = kCoreResource;
  create.key_uri = kCoreOldKey;
  create.participants = {kCoreAlice, kCoreBob};
  conversation_ = Must(service_->CreateConversation(kAlice, create), "create the conversation").id;
  Must(service_->RotateKey(kAlice, conversation_, kCoreCurrentKey), "rotate its key");
  auto upload = Must(service_->BeginUpload(kAlice, conversation_), "begin an upload");
  const std::string blob = "an encrypted file, as far as the core knows";
  if (!upload->Write(blob.data(), blob.size()).ok()) Fail("write the upload");
  file_id_ = Must(service_->FinishUpload(std::move(upload)), "finish the upload").id;
  posts_ = 0;
}

void ServiceHarness::Close() {
  service_.reset();
  db_.reset();
  std::error_code ignored;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  dir_.clear();
}

void ServiceHarness::Run(std::string_view input) {
  const char* mode = "service post";
  std::string body(input);
  for (std::size_t at = body.find(kFileId); at != std::string::npos;
       at = body.find(kFileId, at + file_id_.size())) {
    body.replace(at, std::string_view(kFileId).size(), file_id_);
  }
  auto post = Accepted(core::ParsePost(body), mode);
  if (!post) return;
  CheckPost(*post, body, mode);

  const std::int64_t before = service_->LastSeq();
  Result<core::Activity> posted = service_->PostActivity(kAlice, conversation_, *post);
  Result<std::string> kid = core::CheckContentJwe(post->content);
  if (!posted.ok()) {
    const Error& error = posted.error();
    Trace("service post: PostActivity", &error);
    const bool expected = error.code() == ErrorCode::kInvalidArgument ||
                          error.code() == ErrorCode::kAlreadyExists ||
                          (error.code() == ErrorCode::kFailedPrecondition &&
                           error.message().rfind("key rotation required", 0) == 0);
    Check(expected, mode, "refused with " + error.ToString());
    Check(service_->LastSeq() == before, mode, "a refused post stored an activity");
    Check(!(kid.ok() && *kid == kCoreCurrentKey && post->content.size() <= core::kMaxContentBytes &&
            post->file_ids.empty() && post->client_activity_id.empty()),
          mode, "a well-formed post under the current key refused: " + error.ToString());
    return;
  }
  Trace("service post: PostActivity", nullptr);
  const core::Activity& activity = *posted;
  Check(kid.ok(), mode, "content that CheckContentJwe refuses was stored");
  CheckAcceptedJwe(post->content, *kid, mode);
  Check(*kid == kCoreCurrentKey && activity.key_uri == *kid, mode,
        "content under another key than the current one was stored");
  Check(post->content.size() <= core::kMaxContentBytes, mode, "oversize content stored");
  Check(activity.content == post->content && activity.file_ids == post->file_ids &&
            activity.client_activity_id == post->client_activity_id &&
            activity.conversation_id == conversation_ && activity.actor == kAlice.user_id &&
            activity.verb == (post->file_ids.empty() ? "post" : "share"),
        mode, "the stored activity is not what was posted");
  if (activity.seq > before) {
    Check(service_->LastSeq() == activity.seq, mode, "the new activity is not the last one");
    ++posts_;
  } else {
    Check(!post->client_activity_id.empty(), mode,
          "an old activity returned for a post without clientActivityId");
  }
  core::Activity stored =
      Must(service_->GetActivity(kAlice, conversation_, activity.id), "read the post back");
  Check(stored.seq == activity.seq && stored.content == activity.content &&
            stored.file_ids == activity.file_ids,
        mode, "the activity read back differs from the one acknowledged");
  if (posts_ >= kPostsPerDatabase) {
    Close();
    Open();
  }
}

// Created at the first input of mode n; closed at exit so the temporary directory goes too.
ServiceHarness* service_harness = nullptr;

void CloseServiceHarness() {
  delete service_harness;
  service_harness = nullptr;
}

void Run(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return;
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  const auto mode = static_cast<CoreRequestMode>(
      static_cast<std::uint8_t>(data[0] - static_cast<std::uint8_t>('a')) % kCoreRequestModes);
  switch (mode) {
    case CoreRequestMode::kCreateConversation:
      return RunCreateConversation(rest);
    case CoreRequestMode::kAddParticipants:
      return RunAddParticipants(rest);
    case CoreRequestMode::kRemoveParticipant:
      return RunRemoveParticipant(rest);
    case CoreRequestMode::kRotateKey:
      return RunRotateKey(rest);
    case CoreRequestMode::kSetTitle:
      return RunSetTitle(rest);
    case CoreRequestMode::kPost:
      return RunPost(rest);
    case CoreRequestMode::kIndexTokens:
      return RunIndexTokens(rest);
    case CoreRequestMode::kSearch:
      return RunSearch(rest);
    case CoreRequestMode::kHistoryQuery:
      return RunHistoryQuery(rest);
    case CoreRequestMode::kListQuery:
      return RunListQuery(rest);
    case CoreRequestMode::kEventsQuery:
      return RunEventsQuery(rest);
    case CoreRequestMode::kRelayQuery:
      return RunRelayQuery(rest);
    case CoreRequestMode::kContentJwe:
      return RunContentJwe(rest);
    case CoreRequestMode::kEdit:
      return RunEdit(rest);
    case CoreRequestMode::kIndexTokenSets:
      return RunIndexTokenSets(rest);
    case CoreRequestMode::kServicePost:
      if (service_harness == nullptr) {
        service_harness = new ServiceHarness();
        std::atexit(CloseServiceHarness);
      }
      return service_harness->Run(rest);
  }
}

}  // namespace
}  // namespace strongroom::fuzz

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) { return 0; }

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    strongroom::fuzz::Run(data, size);
  } catch (const std::exception& e) {
    strongroom::fuzz::Fail(std::string("an exception escaped: ") + e.what());
  }
  return 0;
}
