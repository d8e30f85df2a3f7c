#include "strongroom/client/core_client.h"

#include <Poco/Buffer.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/WebSocket.h>
#include <Poco/String.h>
#include <Poco/URI.h>

#include <algorithm>
#include <sstream>
#include <thread>

#include "https_client.h"
#include "strongroom/client/core_json.h"
#include "strongroom/common/rfc3339.h"

namespace strongroom::client {
namespace {

using Poco::JSON::Array;
using Poco::JSON::Object;

constexpr std::size_t kMaxJsonAnswerBytes = 16 * 1024 * 1024;
constexpr int kMaxFramePayload = 64 * 1024 * 1024;

std::string Stringify(const Object& object) {
  std::ostringstream out;
  object.stringify(out);
  return out.str();
}

Array Strings(const std::vector<std::string>& items) {
  Array array;
  for (const std::string& item : items) array.add(item);
  return array;
}

Result<Object::Ptr> ParseObject(const std::string& text, const char* what) {
  try {
    Poco::JSON::Parser parser;
    Object::Ptr object = parser.parse(text).extract<Object::Ptr>();
    if (object) return object;
  } catch (const Poco::Exception&) {
  } catch (const std::exception&) {
  }
  return Error(ErrorCode::kInvalidArgument, std::string("the core's ") + what + " is not JSON");
}

// An answer of the core: its JSON object read by `read`.
template <typename Read>
auto AnswerFrom(const std::string& answer, Read read) -> decltype(read(std::declval<Object&>())) {
  SR_ASSIGN_OR_RETURN(Object::Ptr json, ParseObject(answer, "answer"));
  return read(*json);
}

ErrorCode CodeFor(const std::string& code, int status) {
  static constexpr ErrorCode kAll[] = {
      ErrorCode::kInvalidArgument,   ErrorCode::kNotFound,        ErrorCode::kAlreadyExists,
      ErrorCode::kPermissionDenied,  ErrorCode::kUnauthenticated, ErrorCode::kFailedPrecondition,
      ErrorCode::kResourceExhausted, ErrorCode::kUnavailable,     ErrorCode::kDataLoss,
      ErrorCode::kUnimplemented,     ErrorCode::kInternal};
  for (ErrorCode candidate : kAll) {
    if (Poco::toLower(std::string(ErrorCodeName(candidate))) == code) return candidate;
  }
  if (code == "rate_limited") return ErrorCode::kUnavailable;
  if (code == "file_size") return ErrorCode::kResourceExhausted;
  switch (status) {
    case 401:
      return ErrorCode::kUnauthenticated;
    case 403:
      return ErrorCode::kPermissionDenied;
    case 404:
      return ErrorCode::kNotFound;
    case 409:
      return ErrorCode::kFailedPrecondition;
    case 429:
    case 502:
    case 503:
    case 504:
      return ErrorCode::kUnavailable;
    case 501:
      return ErrorCode::kUnimplemented;
    default:
      return status >= 400 && status < 500 ? ErrorCode::kInvalidArgument : ErrorCode::kInternal;
  }
}

// The core's JSON error as an Error: "<code>: <message>", the HTTP status as its native code, and
// the reason a code names ("key_rotation_required").
Error CoreError(int status, const std::string& body) {
  std::string code, message;
  Result<Object::Ptr> json = ParseObject(body, "error");
  auto text = [&](const char* name) {
    const Object& object = **json;
    return object.has(name) && object.get(name).isString() ? object.getValue<std::string>(name)
                                                           : std::string();
  };
  if (json.ok()) {
    code = text("code");
    message = text("message");
  }
  if (code.empty()) code = "http_" + std::to_string(status);
  if (message.empty()) message = "the core answered HTTP " + std::to_string(status);
  const std::uint64_t native = static_cast<std::uint64_t>(status);
  if (ErrorReason reason = ErrorReasonNamed(code); reason != ErrorReason::kNone) {
    return Error(reason, code + ": " + message, native);
  }
  return Error(CodeFor(code, status), code + ": " + message, native);
}

std::string Query(const std::vector<std::pair<std::string, std::string>>& parameters) {
  std::string query;
  for (const auto& [name, value] : parameters) {
    query += (query.empty() ? "?" : "&") + name + "=" + value;
  }
  return query;
}

// The query of a history page: limit, and before and after when given.
std::vector<std::pair<std::string, std::string>> HistoryParameters(const HistoryQuery& query) {
  std::vector<std::pair<std::string, std::string>> parameters = {
      {"limit", std::to_string(query.limit)}};
  if (query.before) parameters.emplace_back("before", std::to_string(*query.before));
  if (query.after) parameters.emplace_back("after", std::to_string(*query.after));
  return parameters;
}

// A query parameter's value, percent-encoded.
std::string Encoded(const std::string& value) {
  std::string out;
  Poco::URI::encode(value, "!#$&'()*+,/:;=?@[]%", out);
  return out;
}

// Path segments we build from ids: refuse anything that would change the path.
Status CheckSegment(const std::string& segment, const char* what) {
  if (segment.empty() || segment.size() > 512 ||
      segment.find_first_of("/?#%& \t\r\n") != std::string::npos) {
    return Error(ErrorCode::kInvalidArgument,
                 std::string("malformed ") + what + " '" + segment + "'");
  }
  return OkStatus();
}

}  // namespace

std::string CoreErrorCode(const Error& error) {
  const std::uint64_t status = error.native_code();
  if (status < 400 || status > 599) return "";
  const std::size_t colon = error.message().find(':');
  return colon == std::string::npos ? "" : error.message().substr(0, colon);
}

Result<std::unique_ptr<CoreClient>> CoreClient::New(CoreClientOptions options) {
  if (!options.token) return Error(ErrorCode::kInvalidArgument, "the core client needs a token");
  if (options.max_attempts < 1) options.max_attempts = 1;
  if (!options.sleep) {
    options.sleep = [](std::chrono::milliseconds wait) { std::this_thread::sleep_for(wait); };
  }
  SR_ASSIGN_OR_RETURN(auto https, internal::HttpsClient::New(options.base_url, options.ca_file,
                                                             options.timeout, "the core"));
  return std::unique_ptr<CoreClient>(new CoreClient(std::move(options), std::move(https)));
}

CoreClient::CoreClient(CoreClientOptions options, std::unique_ptr<internal::HttpsClient> https)
    : options_(std::move(options)), https_(std::move(https)) {}

CoreClient::~CoreClient() = default;

Result<std::string> CoreClient::Call(const std::string& method, const std::string& target,
                                     const std::string& body, bool idempotent, int* status) {
  for (int attempt = 1;; ++attempt) {
    SR_ASSIGN_OR_RETURN(std::string token, options_.token());
    Result<internal::HttpAnswer> answer = [&] {
      std::lock_guard<std::mutex> lock(mutex_);
      return https_->Exchange(method, target, token, body.empty() ? "" : "application/json", body,
                              kMaxJsonAnswerBytes);
    }();
    ZeroizeString(token);
    int retry_after_s = 0;
    Error failure(ErrorCode::kUnavailable, "");
    if (!answer.ok()) {
      if (answer.error().code() != ErrorCode::kUnavailable || !idempotent) return answer.error();
      failure = answer.error();
    } else if (answer->status >= 200 && answer->status < 300) {
      if (status) *status = answer->status;
      return std::move(answer->body);
    } else {
      failure = CoreError(answer->status, answer->body);
      if (answer->status != 429 && answer->status != 503) return failure;
      retry_after_s = answer->retry_after_s;
    }
    if (attempt >= options_.max_attempts) return failure;
    const auto backoff = std::chrono::milliseconds(100 << std::min(attempt - 1, 5));
    options_.sleep(std::max<std::chrono::milliseconds>(
        backoff, std::chrono::seconds(std::min(retry_after_s, 10))));
  }
}

Result<CreatedConversation> CoreClient::CreateConversation(const NewConversation& request) {
  Object body;
  body.set("kmsResourceUri", request.kms_resource_uri);
  body.set("keyUri", request.key_uri);
  if (!request.participants.empty()) body.set("participants", Strings(request.participants));
  if (!request.encrypted_title.empty()) body.set("encryptedTitle", request.encrypted_title);
  if (!request.kms_message.empty()) body.set("kmsMessage", request.kms_message);
  SR_ASSIGN_OR_RETURN(std::string answer, Call("POST", "/v1/conversations", Stringify(body),
                                               /*idempotent=*/false));
  return AnswerFrom(answer, CreatedConversationFromJson);
}

Result<ConversationPage> CoreClient::ListConversations(std::optional<std::int64_t> before,
                                                       std::size_t limit) {
  std::vector<std::pair<std::string, std::string>> query = {{"limit", std::to_string(limit)}};
  if (before) query.emplace_back("before", std::to_string(*before));
  SR_ASSIGN_OR_RETURN(std::string answer,
                      Call("GET", "/v1/conversations" + Query(query), "", true));
  return AnswerFrom(answer, ConversationPageFromJson);
}

Result<ConversationPage> CoreClient::ComplianceConversations(const std::string& user,
                                                             std::optional<std::int64_t> before,
                                                             std::size_t limit) {
  std::vector<std::pair<std::string, std::string>> query = {{"user", Encoded(user)},
                                                            {"limit", std::to_string(limit)}};
  if (before) query.emplace_back("before", std::to_string(*before));
  SR_ASSIGN_OR_RETURN(std::string answer,
                      Call("GET", "/v1/compliance/conversations" + Query(query), "", true));
  return AnswerFrom(answer, ConversationPageFromJson);
}

Result<HistoryPage> CoreClient::ComplianceHistory(const std::string& user, const std::string& id,
                                                  const HistoryQuery& query) {
  SR_RETURN_IF_ERROR(CheckSegment(id, "conversation id"));
  std::vector<std::pair<std::string, std::string>> parameters = HistoryParameters(query);
  parameters.emplace(parameters.begin(), "user", Encoded(user));
  SR_ASSIGN_OR_RETURN(
      std::string answer,
      Call("GET", "/v1/compliance/conversations/" + id + "/activities" + Query(parameters), "",
           true));
  return AnswerFrom(answer, HistoryPageFromJson);
}

Result<Conversation> CoreClient::GetConversation(const std::string& id) {
  SR_RETURN_IF_ERROR(CheckSegment(id, "conversation id"));
  SR_ASSIGN_OR_RETURN(std::string answer, Call("GET", "/v1/conversations/" + id, "", true));
  return AnswerFrom(
      answer, [](const Object& json) { return Result<Conversation>(ConversationFromJson(json)); });
}

Result<Change> CoreClient::AddParticipants(const std::string& id,
                                           const std::vector<std::string>& users,
                                           const std::string& kms_message) {
  SR_RETURN_IF_ERROR(CheckSegment(id, "conversation id"));
  Object body;
  body.set("userIds", Strings(users));
  if (!kms_message.empty()) body.set("kmsMessage", kms_message);
  SR_ASSIGN_OR_RETURN(std::string answer, Call("POST", "/v1/conversations/" + id + "/participants",
                                               Stringify(body), false));
  return AnswerFrom(answer, ChangeFromJson);
}

Result<Change> CoreClient::RemoveParticipant(const std::string& id, const std::string& user,
                                             const std::string& kms_message) {
  SR_RETURN_IF_ERROR(CheckSegment(id, "conversation id"));
  SR_RETURN_IF_ERROR(CheckSegment(user, "user id"));
  std::string body;
  if (!kms_message.empty()) {
    Object json;
    json.set("kmsMessage", kms_message);
    body = Stringify(json);
  }
  SR_ASSIGN_OR_RETURN(
      std::string answer,
      Call("DELETE", "/v1/conversations/" + id + "/participants/" + user, body, false));
  return AnswerFrom(answer, ChangeFromJson);
}

Result<Change> CoreClient::RotateKey(const std::string& id, const std::string& key_uri,
                                     const std::string& kms_message) {
  SR_RETURN_IF_ERROR(CheckSegment(id, "conversation id"));
  Object body;
  body.set("keyUri", key_uri);
  if (!kms_message.empty()) body.set("kmsMessage", kms_message);
  SR_ASSIGN_OR_RETURN(std::string answer,
                      Call("PUT", "/v1/conversations/" + id + "/key", Stringify(body), false));
  return AnswerFrom(answer, ChangeFromJson);
}

Result<Activity> CoreClient::SetTitle(const std::string& id, const std::string& encrypted_title) {
  SR_RETURN_IF_ERROR(CheckSegment(id, "conversation id"));
  Object body;
  body.set("encryptedTitle", encrypted_title);
  SR_ASSIGN_OR_RETURN(std::string answer,
                      Call("PUT", "/v1/conversations/" + id + "/title", Stringify(body), false));
  return AnswerFrom(answer, ActivityFromJson);
}

Result<Activity> CoreClient::Post(const std::string& id, const std::string& content,
                                  const std::vector<std::string>& file_ids,
                                  const std::string& client_activity_id) {
  SR_RETURN_IF_ERROR(CheckSegment(id, "conversation id"));
  Object body;
  body.set("content", content);
  if (!file_ids.empty()) body.set("fileIds", Strings(file_ids));
  if (!client_activity_id.empty()) body.set("clientActivityId", client_activity_id);
  SR_ASSIGN_OR_RETURN(std::string answer,
                      Call("POST", "/v1/conversations/" + id + "/activities", Stringify(body),
                           /*idempotent=*/!client_activity_id.empty()));
  return AnswerFrom(answer, ActivityFromJson);
}

Result<HistoryPage> CoreClient::History(const std::string& id, const HistoryQuery& query) {
  SR_RETURN_IF_ERROR(CheckSegment(id, "conversation id"));
  SR_ASSIGN_OR_RETURN(
      std::string answer,
      Call("GET", "/v1/conversations/" + id + "/activities" + Query(HistoryParameters(query)), "",
           true));
  return AnswerFrom(answer, HistoryPageFromJson);
}

Result<Activity> CoreClient::GetActivity(const std::string& id, const std::string& activity_id) {
  SR_RETURN_IF_ERROR(CheckSegment(id, "conversation id"));
  SR_RETURN_IF_ERROR(CheckSegment(activity_id, "activity id"));
  SR_ASSIGN_OR_RETURN(
      std::string answer,
      Call("GET", "/v1/conversations/" + id + "/activities/" + activity_id, "", true));
  return AnswerFrom(answer, ActivityFromJson);
}

Result<Activity> CoreClient::EditActivity(const std::string& id, const std::string& activity_id,
                                          const std::string& content) {
  SR_RETURN_IF_ERROR(CheckSegment(id, "conversation id"));
  SR_RETURN_IF_ERROR(CheckSegment(activity_id, "activity id"));
  Object body;
  body.set("content", content);
  SR_ASSIGN_OR_RETURN(std::string answer,
                      Call("PUT", "/v1/conversations/" + id + "/activities/" + activity_id,
                           Stringify(body), /*idempotent=*/true));
  return AnswerFrom(answer, ActivityFromJson);
}

Result<Activity> CoreClient::RetractActivity(const std::string& id,
                                             const std::string& activity_id) {
  SR_RETURN_IF_ERROR(CheckSegment(id, "conversation id"));
  SR_RETURN_IF_ERROR(CheckSegment(activity_id, "activity id"));
  SR_ASSIGN_OR_RETURN(std::string answer,
                      Call("DELETE", "/v1/conversations/" + id + "/activities/" + activity_id, "",
                           /*idempotent=*/true));
  return AnswerFrom(answer, ActivityFromJson);
}

Result<std::string> CoreClient::StreamExchange(const std::string& method, const std::string& target,
                                               const std::string& content_type, std::uint64_t size,
                                               const BodyWriter& write, const BodyReader& read,
                                               int expected_status) {
  SR_ASSIGN_OR_RETURN(std::string token, options_.token());
  std::lock_guard<std::mutex> lock(streams_mutex_);
  if (!streams_) {
    SR_ASSIGN_OR_RETURN(streams_, internal::HttpsClient::New(options_.base_url, options_.ca_file,
                                                             options_.timeout, "the core"));
  }
  internal::HttpsClient::BodyWriter writer;
  if (write) writer = [&](std::ostream& out) { return write(out); };
  internal::HttpsClient::BodyReader reader;
  if (read) {
    reader = [&](std::istream& in, const internal::HttpAnswer& head) {
      return read(in, head.sha256);
    };
  }
  Result<internal::HttpAnswer> answer =
      streams_->Stream(method, target, token, content_type, size, writer, reader);
  ZeroizeString(token);
  if (!answer.ok()) return answer.error();
  if (answer->status != expected_status) return CoreError(answer->status, answer->body);
  return std::move(answer->body);
}

Result<FileInfo> CoreClient::UploadFile(const std::string& id, std::uint64_t size,
                                        const BodyWriter& write) {
  SR_RETURN_IF_ERROR(CheckSegment(id, "conversation id"));
  SR_ASSIGN_OR_RETURN(std::string answer,
                      StreamExchange("POST", "/v1/conversations/" + id + "/files",
                                     "application/octet-stream", size, write, {}, 201));
  return AnswerFrom(answer, FileInfoFromJson);
}

Status CoreClient::DownloadFile(const std::string& id, const std::string& file_id,
                                const BodyReader& read) {
  SR_RETURN_IF_ERROR(CheckSegment(id, "conversation id"));
  SR_RETURN_IF_ERROR(CheckSegment(file_id, "file id"));
  Result<std::string> answer =
      StreamExchange("GET", "/v1/conversations/" + id + "/files/" + file_id, "", 0, {}, read, 200);
  if (!answer.ok()) return answer.error();
  return OkStatus();
}

Result<KmsResponse> CoreClient::RelayKmsMessage(const std::string& cluster,
                                                const std::string& message) {
  SR_ASSIGN_OR_RETURN(std::string token, options_.token());
  std::lock_guard<std::mutex> lock(mutex_);
  Result<internal::HttpAnswer> answer =
      https_->Exchange("POST", "/kms/messages?cluster=" + cluster, token, "application/jose",
                       message, 4 * 1024 * 1024);
  ZeroizeString(token);
  if (!answer.ok()) return answer.error();
  return KmsResponse{answer->status, std::move(answer->content_type), std::move(answer->body),
                     answer->retry_after_s};
}

Result<std::unique_ptr<EventStream>> CoreClient::OpenEvents(std::optional<std::int64_t> cursor) {
  return OpenStream("/v1/events", cursor);
}

Result<std::unique_ptr<EventStream>> CoreClient::OpenIndexEvents(std::int64_t cursor) {
  return OpenStream("/v1/index/events", cursor);
}

Status CoreClient::PutIndexTokens(const std::string& id, const std::string& activity_id,
                                  const std::vector<std::string>& tokens) {
  SR_RETURN_IF_ERROR(CheckSegment(id, "conversation id"));
  SR_RETURN_IF_ERROR(CheckSegment(activity_id, "activity id"));
  Object body;
  body.set("tokens", Strings(tokens));
  Result<std::string> answer =
      Call("PUT", "/v1/index/" + id + "/" + activity_id, Stringify(body), /*idempotent=*/true);
  if (!answer.ok()) return answer.error();
  return OkStatus();
}

Status CoreClient::PutIndexTokenSets(const std::vector<IndexTokenSet>& sets) {
  Array list;
  for (const IndexTokenSet& set : sets) {
    Object item;
    item.set("conversationId", set.conversation_id);
    item.set("activityId", set.activity_id);
    item.set("tokens", Strings(set.tokens));
    list.add(item);
  }
  Object body;
  body.set("sets", list);
  Result<std::string> answer = Call("POST", "/v1/index/sets", Stringify(body), /*idempotent=*/true);
  if (!answer.ok()) return answer.error();
  return OkStatus();
}

Result<IndexSearchPage> CoreClient::SearchIndex(const std::vector<IndexSearchQuery>& queries,
                                                std::optional<std::int64_t> before,
                                                std::size_t limit) {
  Array list;
  for (const IndexSearchQuery& query : queries) {
    Object item;
    item.set("conversationId", query.conversation_id);
    item.set("tokens", Strings(query.tokens));
    list.add(item);
  }
  Object body;
  body.set("queries", list);
  if (before) body.set("before", *before);
  body.set("limit", limit);
  SR_ASSIGN_OR_RETURN(std::string answer,
                      Call("POST", "/v1/index/search", Stringify(body), /*idempotent=*/true));
  return AnswerFrom(answer, [](const Object& json) -> Result<IndexSearchPage> {
    IndexSearchPage page;
    try {
      Array::Ptr items = json.getArray("items");
      if (!items) return Error(ErrorCode::kInvalidArgument, "the core's search has no items");
      for (std::size_t i = 0; i < items->size(); ++i) {
        Object::Ptr item = items->getObject(static_cast<unsigned>(i));
        if (!item) return Error(ErrorCode::kInvalidArgument, "a search match is not an object");
        IndexSearchMatch match;
        match.conversation_id = item->getValue<std::string>("conversationId");
        match.activity_id = item->getValue<std::string>("activityId");
        match.seq = item->getValue<std::int64_t>("seq");
        page.items.push_back(std::move(match));
      }
      if (json.has("next") && !json.isNull("next")) page.next = json.getValue<std::int64_t>("next");
    } catch (const Poco::Exception&) {
      return Error(ErrorCode::kInvalidArgument, "the core's search answer is malformed");
    }
    return page;
  });
}

Result<std::unique_ptr<EventStream>> CoreClient::OpenStream(const std::string& path,
                                                            std::optional<std::int64_t> cursor) {
  // The connector copies what it needs, so the stream may outlive nothing but the options.
  const std::string host = https_->host();
  const std::uint16_t port = https_->port();
  Poco::Net::Context::Ptr context = https_->context();
  const std::chrono::seconds timeout = options_.timeout;
  TokenSource token_source = options_.token;
  EventStream::Connector connect = [=](std::optional<std::int64_t> at)
      -> Result<std::pair<std::unique_ptr<Poco::Net::HTTPSClientSession>,
                          std::unique_ptr<Poco::Net::WebSocket>>> {
    SR_ASSIGN_OR_RETURN(std::string token, token_source());
    try {
      auto session = std::make_unique<Poco::Net::HTTPSClientSession>(host, port, context);
      session->setTimeout(Poco::Timespan(timeout.count(), 0));
      Poco::Net::HTTPRequest request(Poco::Net::HTTPRequest::HTTP_GET,
                                     path + (at ? "?cursor=" + std::to_string(*at) : std::string()),
                                     Poco::Net::HTTPMessage::HTTP_1_1);
      request.set("Authorization", "Bearer " + token);
      ZeroizeString(token);
      Poco::Net::HTTPResponse response;
      auto socket = std::make_unique<Poco::Net::WebSocket>(*session, request, response);
      socket->setMaxPayloadSize(kMaxFramePayload);
      return std::make_pair(std::move(session), std::move(socket));
    } catch (const Poco::Net::WebSocketException& e) {
      ZeroizeString(token);
      return Error(e.code() == Poco::Net::WebSocket::WS_ERR_UNAUTHORIZED
                       ? ErrorCode::kUnauthenticated
                       : ErrorCode::kUnavailable,
                   "the core refused the event stream: " + e.displayText());
    } catch (const Poco::Exception& e) {
      ZeroizeString(token);
      return Error(ErrorCode::kUnavailable, "cannot open the event stream: " + e.displayText());
    }
  };
  auto stream = std::unique_ptr<EventStream>(
      new EventStream(std::move(connect), cursor, options_.max_attempts, options_.sleep));
  SR_RETURN_IF_ERROR(stream->Reconnect());
  return stream;
}

EventStream::EventStream(Connector connect, std::optional<std::int64_t> cursor, int max_attempts,
                         std::function<void(std::chrono::milliseconds)> sleep)
    : connect_(std::move(connect)),
      cursor_(cursor),
      max_attempts_(std::max(1, max_attempts)),
      sleep_(std::move(sleep)) {}

EventStream::~EventStream() { Close(); }

void EventStream::Close() {
  if (socket_) {
    try {
      socket_->shutdown();
      socket_->close();
    } catch (const Poco::Exception&) {
    }
  }
  socket_.reset();
  session_.reset();
  closed_ = true;
}

Status EventStream::Reconnect() {
  socket_.reset();
  session_.reset();
  for (int attempt = 1;; ++attempt) {
    auto connected = connect_(cursor_);
    if (connected.ok()) {
      session_ = std::move(connected->first);
      socket_ = std::move(connected->second);
      closed_ = false;
      return OkStatus();
    }
    if (connected.error().code() != ErrorCode::kUnavailable || attempt >= max_attempts_) {
      closed_ = true;
      return connected.error();
    }
    sleep_(std::chrono::milliseconds(200 << std::min(attempt - 1, 5)));
  }
}

Result<std::vector<Activity>> EventStream::Next(std::chrono::milliseconds patience) {
  std::vector<Activity> out;
  if (closed_ && !socket_) {
    SR_RETURN_IF_ERROR(Reconnect());
  }
  const auto deadline = std::chrono::steady_clock::now() + patience;
  bool reconnected = false;
  while (out.empty()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    try {
      socket_->setReceiveTimeout(Poco::Timespan(left.count() * 1000));
      Poco::Buffer<char> buffer(0);
      int flags = 0;
      const int n = socket_->receiveFrame(buffer, flags);
      const int opcode = flags & Poco::Net::WebSocket::FRAME_OP_BITMASK;
      if (opcode == Poco::Net::WebSocket::FRAME_OP_PING) {
        socket_->sendFrame(buffer.begin(), n,
                           static_cast<int>(Poco::Net::WebSocket::FRAME_FLAG_FIN) |
                               static_cast<int>(Poco::Net::WebSocket::FRAME_OP_PONG));
        continue;
      }
      if (n <= 0 || opcode == Poco::Net::WebSocket::FRAME_OP_CLOSE) {
        throw Poco::Net::NetException("the core closed the event stream");
      }
      if (opcode != Poco::Net::WebSocket::FRAME_OP_TEXT) continue;
      Result<Object::Ptr> frame =
          ParseObject(std::string(buffer.begin(), static_cast<std::size_t>(n)), "event frame");
      if (!frame.ok()) return Error(ErrorCode::kInvalidArgument, "an event frame is not {events}");
      SR_ASSIGN_OR_RETURN(std::vector<Activity> events, EventsFromJson(**frame));
      for (Activity& activity : events) {
        if (cursor_ && activity.seq <= *cursor_) continue;  // seen before a reconnect
        cursor_ = activity.seq;
        out.push_back(std::move(activity));
      }
    } catch (const Poco::TimeoutException&) {
      break;
    } catch (const Poco::Exception&) {
      // The connection dropped (or the core is going away): resume from the cursor, once per
      // call, so a core that keeps closing is reported rather than spun on.
      if (reconnected) return Error(ErrorCode::kUnavailable, "the event stream keeps dropping");
      reconnected = true;
      SR_RETURN_IF_ERROR(Reconnect());
    }
  }
  return out;
}

}  // namespace strongroom::client
