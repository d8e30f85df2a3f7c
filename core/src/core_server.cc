#include "strongroom/core/core_server.h"

#include <Poco/Exception.h>
#include <Poco/JSON/Object.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/Net/WebSocket.h>
#include <Poco/NumberParser.h>
#include <Poco/String.h>
#include <Poco/URI.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <iostream>
#include <mutex>
#include <set>
#include <sstream>
#include <unordered_map>

#include "strongroom/common/http_support.h"
#include "strongroom/common/kms_uri.h"
#include "strongroom/common/tls.h"
#include "strongroom/core/api_json.h"

namespace strongroom::core {
namespace {

using http::HasBody;
using http::MediaType;
using http::ReadBody;
using http::SendError;
using http::SendJson;
using Poco::JSON::Object;
using Poco::Net::HTTPResponse;
using Poco::Net::HTTPServerRequest;
using Poco::Net::HTTPServerResponse;

constexpr std::size_t kMaxTrackedUsers = 100000;

void LogError(const std::string& what) { std::cerr << "cored: error: " << what << std::endl; }

std::string Stringify(const Object& object) {
  std::ostringstream out;
  object.stringify(out);
  return out.str();
}

// "INVALID_ARGUMENT" -> "invalid_argument"; an error with a reason has the reason's code
// ("key_rotation_required"), so clients act on it without parsing the message.
std::string CodeFor(const Error& error) {
  if (error.reason() != ErrorReason::kNone) return std::string(ErrorReasonName(error.reason()));
  return Poco::toLower(std::string(ErrorCodeName(error.code())));
}

void SendError(HTTPServerResponse& response, const Error& error) {
  const int status = HttpStatusFor(error.code());
  if (status == 503) response.set("Retry-After", "1");
  SendError(response, status, CodeFor(error), error.message());
}

// "kms://host/resources/<id>" -> "kms://host"; "" (no KMS) when it is not a KMS URI.
std::string ClusterOf(const std::string& uri) {
  Result<KmsUri> parsed = KmsUri::Parse(uri);
  return parsed.ok() ? parsed->cluster() : "";
}

// Per-user token buckets: rate_per_s a second, up to burst.
class RateLimiter {
 public:
  RateLimiter(double rate, double burst) : rate_(rate), burst_(burst) {}

  // 0 when the request may go on; otherwise the seconds to wait (at least 1).
  int Take(const std::string& user) {
    const double now =
        std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    Shard& shard = shards_[std::hash<std::string>()(user) % shards_.size()];
    std::lock_guard<std::mutex> lock(shard.mutex);
    if (shard.buckets.size() > kMaxTrackedUsers / shards_.size()) {
      // Forget users whose bucket has refilled: they are where a new one starts.
      for (auto it = shard.buckets.begin(); it != shard.buckets.end();) {
        it = (now - it->second.at) * rate_ >= burst_ ? shard.buckets.erase(it) : std::next(it);
      }
    }
    auto [it, fresh] = shard.buckets.try_emplace(user, Bucket{burst_, now});
    Bucket& bucket = it->second;
    if (!fresh) {
      bucket.tokens = std::min(burst_, bucket.tokens + (now - bucket.at) * rate_);
      bucket.at = now;
    }
    if (bucket.tokens >= 1.0) {
      bucket.tokens -= 1.0;
      return 0;
    }
    return std::max(1, static_cast<int>(std::ceil((1.0 - bucket.tokens) / rate_)));
  }

 private:
  struct Bucket {
    double tokens;
    double at;
  };
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, Bucket> buckets;
  };
  const double rate_;
  const double burst_;
  std::array<Shard, 16> shards_;
};

}  // namespace

struct CoreServer::State {
  CoreService& service;
  const JwtVerifier& verifier;
  RealtimeHub& hub;
  KmsRelay& relay;
  const CoreServerOptions options;
  RateLimiter limiter;
};

namespace {

// Created per request by Poco; every exception ends here.
class Handler : public Poco::Net::HTTPRequestHandler {
 public:
  explicit Handler(std::shared_ptr<CoreServer::State> state) : state_(std::move(state)) {}

  void handleRequest(HTTPServerRequest& request, HTTPServerResponse& response) override {
    try {
      if (std::optional<std::string> problem = http::FramingProblem(request)) {
        return http::RefuseFraming(request, response, *problem);
      }
      Route(request, response);
    } catch (const std::exception& e) {
      LogError(std::string("a request failed: ") + e.what());
      if (!response.sent()) {
        response.setKeepAlive(false);
        try {
          SendError(response, 500, "internal", "the core failed to process the request");
        } catch (...) {
        }
      }
    }
  }

 private:
  using Segments = std::vector<std::string>;

  void Route(HTTPServerRequest& request, HTTPServerResponse& response) {
    const Poco::URI uri(request.getURI());
    Segments path;
    uri.getPathSegments(path);
    const std::string query = uri.getRawQuery();
    const std::string& method = request.getMethod();

    if (path == Segments{"health"}) {
      if (method != HTTPServerRequest::HTTP_GET) return NotAllowed(request, response, "GET");
      return Health(response);
    }
    if (path == Segments{"relay", "kms"}) {
      if (method != HTTPServerRequest::HTTP_GET) return NotAllowed(request, response, "GET");
      Status attached = HandleRelayUpgrade(state_->relay, request, response);
      if (!attached.ok() && !response.sent()) SendError(response, attached.error());
      return;
    }

    // Everything else is a user's (or the indexer's) request.
    Result<VerifiedJwt> token = Authenticate(request);
    if (!token.ok()) {
      Discard(request, response);
      response.set("WWW-Authenticate", "Bearer");
      return SendError(response, token.error());
    }
    const Caller caller{token->subject(), token->org()};
    if (const int wait = state_->limiter.Take(caller.user_id); wait > 0) {
      Discard(request, response);
      response.set("Retry-After", std::to_string(wait));
      return SendError(response, 429, "rate_limited",
                       "too many requests; retry in " + std::to_string(wait) + " s");
    }

    if (path == Segments{"kms", "messages"}) {
      if (method != HTTPServerRequest::HTTP_POST) return NotAllowed(request, response, "POST");
      return RelayMessage(request, response, query);
    }
    if (path.size() >= 2 && path[0] == "v1") {
      if (path == Segments{"v1", "events"}) {
        if (method != HTTPServerRequest::HTTP_GET) return NotAllowed(request, response, "GET");
        return Events(request, response, caller, query);
      }
      if (path[1] == "conversations") return Conversations(request, response, caller, path, query);
      if (path[1] == "index") return Index(request, response, caller, path);
      if (path[1] == "compliance") return Compliance(request, response, caller, path, query);
    }
    Discard(request, response);
    SendError(response, 404, "not_found", "no such endpoint (see docs/api/core.md)");
  }

  Result<VerifiedJwt> Authenticate(const HTTPServerRequest& request) {
    const std::string header = request.get("Authorization", "");
    constexpr std::string_view kBearer = "Bearer ";
    if (header.size() <= kBearer.size() || Poco::icompare(header.substr(0, 7), "bearer ") != 0) {
      return Error(ErrorCode::kUnauthenticated, "an Authorization: Bearer <token> is required");
    }
    return state_->verifier.Verify(std::string_view(header).substr(kBearer.size()));
  }

  void Discard(HTTPServerRequest& request, HTTPServerResponse& response) {
    http::Discard(request, response);
  }

  void NotAllowed(HTTPServerRequest& request, HTTPServerResponse& response,
                  const std::string& allow) {
    Discard(request, response);
    response.set("Allow", allow);
    SendError(response, 405, "method_not_allowed", "use " + allow);
  }

  void Health(HTTPServerResponse& response) {
    Object json;
    json.set("status", "ok");
    json.set("realtimeConnections", state_->hub.connections());
    Object kms;  // each KMS cluster allowed to attach, and its relay connections now
    for (const auto& [cluster, connections] : state_->relay.ConnectedClusters()) {
      kms.set(cluster, connections);
    }
    json.set("kms", kms);
    SendJson(response, 200, Stringify(json));
  }

  // The body of a JSON request, or nullopt with the error already sent.
  std::optional<std::string> JsonBody(HTTPServerRequest& request, HTTPServerResponse& response) {
    if (MediaType(request) != "application/json") {
      Discard(request, response);
      SendError(response, 415, "media_type", "send the body as Content-Type: application/json");
      return std::nullopt;
    }
    std::optional<std::string> body = ReadBody(request, kMaxJsonRequestBytes);
    if (!body) {
      http::RefuseBody(
          request, response, 413, "body_size",
          "a request body is at most " + std::to_string(kMaxJsonRequestBytes) + " bytes");
    }
    return body;
  }

  // Relays an embedded sealed KMS message to the KMS of `resource_uri` before the core changes
  // anything. nullopt when there is none; an error when the KMS cannot be reached or could not
  // even open it (then nothing is changed here).
  Result<std::optional<KmsRelayAnswer>> RelayEmbedded(const std::string& message,
                                                      const std::string& resource_uri) {
    if (message.empty()) return std::optional<KmsRelayAnswer>();
    SR_ASSIGN_OR_RETURN(KmsRelayAnswer answer,
                        state_->relay.Forward(ClusterOf(resource_uri), message));
    if (answer.http_status != 200) {
      return Error(ErrorCode::kFailedPrecondition, "the KMS refused the embedded message (HTTP " +
                                                       std::to_string(answer.http_status) +
                                                       "); nothing was changed");
    }
    return std::optional<KmsRelayAnswer>(std::move(answer));
  }

  void RelayMessage(HTTPServerRequest& request, HTTPServerResponse& response,
                    const std::string& query) {
    Result<std::string> cluster = ParseRelayQuery(query);
    if (!cluster.ok()) {
      Discard(request, response);
      return SendError(response, cluster.error());
    }
    if (MediaType(request) != "application/jose") {
      Discard(request, response);
      return SendError(response, 415, "media_type",
                       "a KMS message is sent as Content-Type: application/jose");
    }
    std::optional<std::string> body = ReadBody(request, kMaxRelayMessageBytes);
    if (!body) {
      return http::RefuseBody(
          request, response, 413, "message_size",
          "a KMS message is at most " + std::to_string(kMaxRelayMessageBytes) + " bytes");
    }
    Result<KmsRelayAnswer> answer = state_->relay.Forward(*cluster, *body);
    if (!answer.ok()) return SendError(response, answer.error());
    response.setStatusAndReason(static_cast<HTTPResponse::HTTPStatus>(answer->http_status));
    response.setContentType(answer->content_type);
    response.set("Cache-Control", "no-store");
    if (answer->http_status == 503) response.set("Retry-After", "1");
    response.sendBuffer(answer->body.data(), answer->body.size());
  }

  void Events(HTTPServerRequest& request, HTTPServerResponse& response, const Caller& caller,
              const std::string& query) {
    Result<std::optional<std::int64_t>> cursor = ParseEventsQuery(query);
    if (!cursor.ok()) return SendError(response, cursor.error());
    const std::int64_t after = cursor->value_or(state_->service.LastSeq());
    std::unique_ptr<Poco::Net::WebSocket> socket;
    try {
      socket = std::make_unique<Poco::Net::WebSocket>(request, response);
    } catch (const Poco::Net::WebSocketException& e) {
      if (!response.sent()) {
        SendError(response, 400, "invalid_argument",
                  "GET /v1/events is a WebSocket upgrade: " + e.message());
      }
      return;
    }
    Status served = state_->hub.Serve(caller.user_id, after, *socket);
    if (!served.ok() && served.error().code() == ErrorCode::kResourceExhausted) {
      try {
        socket->shutdown(Poco::Net::WebSocket::WS_POLICY_VIOLATION, served.error().message());
      } catch (const Poco::Exception&) {
      }
    }
  }

  // Runs `parse` on the request's JSON body; nullopt with the error sent when that fails.
  template <typename Parse>
  auto ParsedBody(HTTPServerRequest& request, HTTPServerResponse& response, Parse parse)
      -> std::optional<std::decay_t<decltype(parse(std::string_view()).value())>> {
    std::optional<std::string> body = JsonBody(request, response);
    if (!body) return std::nullopt;
    auto parsed = parse(*body);
    if (!parsed.ok()) {
      SendError(response, parsed.error());
      return std::nullopt;
    }
    return std::move(parsed).value();
  }

  void Conversations(HTTPServerRequest& request, HTTPServerResponse& response, const Caller& caller,
                     const Segments& path, const std::string& query) {
    const std::string& method = request.getMethod();
    CoreService& service = state_->service;
    if (path.size() == 2) {  // /v1/conversations
      if (method == HTTPServerRequest::HTTP_POST) {
        return CreateConversation(request, response, caller);
      }
      if (method != HTTPServerRequest::HTTP_GET) return NotAllowed(request, response, "GET, POST");
      Result<ListQuery> list = ParseListQuery(query);
      if (!list.ok()) return SendError(response, list.error());
      auto page = service.ListConversations(caller, list->before, list->limit);
      if (!page.ok()) return SendError(response, page.error());
      return SendJson(response, 200, ConversationPageJson(*page, list->limit));
    }
    const std::string& id = path[2];
    if (path.size() == 3) {  // /v1/conversations/{id}
      if (method != HTTPServerRequest::HTTP_GET) return NotAllowed(request, response, "GET");
      auto conversation = service.GetConversation(caller, id);
      if (!conversation.ok()) return SendError(response, conversation.error());
      return SendJson(response, 200, ConversationJson(*conversation));
    }
    const std::string& part = path[3];
    if (part == "participants" && path.size() == 4) {
      if (method != HTTPServerRequest::HTTP_POST) return NotAllowed(request, response, "POST");
      auto add = ParsedBody(request, response, ParseAddParticipants);
      if (!add) return;
      return ChangeMembers(response, caller, id, add->kms_message,
                           [&] { return service.AddParticipants(caller, id, add->user_ids); });
    }
    if (part == "participants" && path.size() == 5) {
      if (method != HTTPServerRequest::HTTP_DELETE) return NotAllowed(request, response, "DELETE");
      std::string kms_message;
      const bool has_body = (request.hasContentLength() && request.getContentLength64() > 0) ||
                            request.getChunkedTransferEncoding();
      if (has_body) {
        auto removal = ParsedBody(request, response, ParseRemoveParticipant);
        if (!removal) return;
        kms_message = std::move(*removal);
      }
      const std::string& user = path[4];
      return ChangeMembers(response, caller, id, kms_message,
                           [&] { return service.RemoveParticipant(caller, id, user); });
    }
    if (part == "key" && path.size() == 4) {
      if (method != HTTPServerRequest::HTTP_PUT) return NotAllowed(request, response, "PUT");
      auto rotate = ParsedBody(request, response, ParseRotateKey);
      if (!rotate) return;
      return ChangeMembers(response, caller, id, rotate->kms_message,
                           [&] { return service.RotateKey(caller, id, rotate->key_uri); });
    }
    if (part == "title" && path.size() == 4) {
      if (method != HTTPServerRequest::HTTP_PUT) return NotAllowed(request, response, "PUT");
      auto title = ParsedBody(request, response, ParseSetTitle);
      if (!title) return;
      auto activity = service.SetTitle(caller, id, *title);
      if (!activity.ok()) return SendError(response, activity.error());
      return SendJson(response, 200, ActivityJson(*activity));
    }
    if (part == "activities" && path.size() == 4) {
      if (method == HTTPServerRequest::HTTP_POST) {
        auto post = ParsedBody(request, response, ParsePost);
        if (!post) return;
        auto activity = service.PostActivity(caller, id, *post);
        if (!activity.ok()) return SendError(response, activity.error());
        return SendJson(response, 201, ActivityJson(*activity));
      }
      if (method != HTTPServerRequest::HTTP_GET) return NotAllowed(request, response, "GET, POST");
      return History(response, caller, id, query);
    }
    if (part == "activities" && path.size() == 5) {
      if (method != HTTPServerRequest::HTTP_GET) return NotAllowed(request, response, "GET");
      auto activity = service.GetActivity(caller, id, path[4]);
      if (!activity.ok()) return SendError(response, activity.error());
      return SendJson(response, 200, ActivityJson(*activity));
    }
    if (part == "files" && path.size() == 4) {
      if (method != HTTPServerRequest::HTTP_POST) return NotAllowed(request, response, "POST");
      return Upload(request, response, caller, id);
    }
    if (part == "files" && path.size() == 5) {
      if (method != HTTPServerRequest::HTTP_GET) return NotAllowed(request, response, "GET");
      return Download(response, caller, id, path[4]);
    }
    Discard(request, response);
    SendError(response, 404, "not_found", "no such endpoint (see docs/api/core.md)");
  }

  void CreateConversation(HTTPServerRequest& request, HTTPServerResponse& response,
                          const Caller& caller) {
    auto create = ParsedBody(request, response, ParseCreateConversation);
    if (!create) return;
    auto answer = RelayEmbedded(create->kms_message, create->conversation.kms_resource_uri);
    if (!answer.ok()) return SendError(response, answer.error());
    auto conversation = state_->service.CreateConversation(caller, create->conversation);
    if (!conversation.ok()) return SendError(response, conversation.error());
    SendJson(response, 201,
             WithKmsAnswer("conversation", ConversationJson(*conversation), *answer));
  }

  // A membership or key change: the embedded KMS message (if any) goes to the conversation's KMS
  // first; only when the KMS took it does `change` run. Answers {activity, kmsAnswer?}.
  template <typename Change>
  void ChangeMembers(HTTPServerResponse& response, const Caller& caller, const std::string& id,
                     const std::string& kms_message, Change change) {
    auto conversation = state_->service.GetConversation(caller, id);
    if (!conversation.ok()) return SendError(response, conversation.error());
    auto answer = RelayEmbedded(kms_message, conversation->kms_resource_uri);
    if (!answer.ok()) return SendError(response, answer.error());
    Result<Activity> activity = change();
    if (!activity.ok()) return SendError(response, activity.error());
    SendJson(response, 200, WithKmsAnswer("activity", ActivityJson(*activity), *answer));
  }

  void History(HTTPServerResponse& response, const Caller& caller, const std::string& id,
               const std::string& query) {
    Result<HistoryQuery> parsed = ParseHistoryQuery(query);
    if (!parsed.ok()) return SendError(response, parsed.error());
    SendHistory(response, state_->service.History(caller, id, *parsed));
  }

  // GET /v1/compliance/conversations?user=U and .../{id}/activities?user=U: a compliance
  // officer's reads (CoreService::ComplianceConversations / ComplianceHistory). Each access is
  // one log line naming the officer, the user and the conversation; never content.
  void Compliance(HTTPServerRequest& request, HTTPServerResponse& response, const Caller& caller,
                  const Segments& path, const std::string& query) {
    const bool list = path.size() == 3 && path[2] == "conversations";
    const bool history = path.size() == 5 && path[2] == "conversations" && path[4] == "activities";
    if (!list && !history) {
      Discard(request, response);
      return SendError(response, 404, "not_found", "no such endpoint (see docs/api/core.md)");
    }
    if (request.getMethod() != HTTPServerRequest::HTTP_GET) {
      return NotAllowed(request, response, "GET");
    }
    CoreService& service = state_->service;
    if (list) {
      Result<ComplianceListQuery> parsed = ParseComplianceListQuery(query);
      if (!parsed.ok()) return SendError(response, parsed.error());
      auto page = service.ComplianceConversations(caller, parsed->user, parsed->list.before,
                                                  parsed->list.limit);
      LogCompliance(caller, parsed->user, "(list)", page.ok() ? Status() : page.error());
      if (!page.ok()) return SendError(response, page.error());
      return SendJson(response, 200, ConversationPageJson(*page, parsed->list.limit));
    }
    Result<ComplianceHistoryQuery> parsed = ParseComplianceHistoryQuery(query);
    if (!parsed.ok()) return SendError(response, parsed.error());
    auto page = service.ComplianceHistory(caller, parsed->user, path[3], parsed->history);
    LogCompliance(caller, parsed->user, path[3], page.ok() ? Status() : page.error());
    SendHistory(response, std::move(page));
  }

  static void LogCompliance(const Caller& officer, const std::string& user,
                            const std::string& conversation, const Status& outcome) {
    // Ids only, quoted, with anything but printable ASCII shown as '?' so that no id can forge
    // another line or field.
    auto quoted = [](const std::string& id) {
      std::string out = "\"";
      for (const char c : id.substr(0, 2 * kMaxUserIdBytes)) {
        const auto byte = static_cast<unsigned char>(c);
        out += (byte < 0x20 || byte > 0x7e || c == '"') ? '?' : c;
      }
      return out + "\"";
    };
    std::cerr << "cored: compliance: officer " << quoted(officer.user_id) << " (org "
              << quoted(officer.org) << ") read user " << quoted(user) << " conversation "
              << quoted(conversation) << ": " << (outcome.ok() ? "ok" : CodeFor(outcome.error()))
              << std::endl;
  }

  void SendHistory(HTTPServerResponse& response, Result<HistoryPage> page) {
    if (!page.ok()) return SendError(response, page.error());
    SendJson(response, 200, HistoryPageJson(*page));
  }

  void Upload(HTTPServerRequest& request, HTTPServerResponse& response, const Caller& caller,
              const std::string& id) {
    const std::uint64_t max = state_->options.max_file_bytes;
    if (MediaType(request) != "application/octet-stream") {
      Discard(request, response);
      return SendError(response, 415, "media_type",
                       "upload the encrypted file as Content-Type: application/octet-stream");
    }
    auto too_large = [&] {
      http::RefuseBody(request, response, 413, "file_size",
                       "an encrypted file is at most " + std::to_string(max) + " bytes");
    };
    if (request.hasContentLength() &&
        static_cast<std::uint64_t>(request.getContentLength64()) > max) {
      return too_large();
    }
    auto upload = state_->service.BeginUpload(caller, id);
    if (!upload.ok()) {
      Discard(request, response);
      return SendError(response, upload.error());
    }
    std::istream& in = request.stream();
    std::vector<char> chunk(64 * 1024);
    while (HasBody(request) && in) {
      in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      const auto n = static_cast<std::size_t>(in.gcount());
      if (n == 0) break;
      Status written = (*upload)->Write(chunk.data(), n);
      if (!written.ok()) {
        if (written.error().code() == ErrorCode::kResourceExhausted) return too_large();
        response.setKeepAlive(false);
        return SendError(response, written.error());
      }
    }
    if (request.hasContentLength() &&
        (*upload)->size() != static_cast<std::uint64_t>(request.getContentLength64())) {
      response.setKeepAlive(false);
      return SendError(response, 400, "invalid_argument",
                       "the upload ended before Content-Length bytes arrived");
    }
    auto file = state_->service.FinishUpload(std::move(upload).value());
    if (!file.ok()) return SendError(response, file.error());
    SendJson(response, 201, FileJson(*file));
  }

  void Download(HTTPServerResponse& response, const Caller& caller, const std::string& id,
                const std::string& file_id) {
    auto file = state_->service.OpenFile(caller, id, file_id);
    if (!file.ok()) return SendError(response, file.error());
    response.set("Cache-Control", "no-store");
    response.set("X-Content-SHA256", file->first.sha256_hex);
    response.sendFile(file->second, "application/octet-stream");
  }

  void Index(HTTPServerRequest& request, HTTPServerResponse& response, const Caller& caller,
             const Segments& path) {
    const std::string& method = request.getMethod();
    if (path.size() == 3 && path[2] == "search") {
      if (method != HTTPServerRequest::HTTP_POST) return NotAllowed(request, response, "POST");
      auto query = ParsedBody(request, response, ParseSearch);
      if (!query) return;
      auto page = state_->service.MatchTokens(caller, *query);
      if (!page.ok()) return SendError(response, page.error());
      return SendJson(response, 200, SearchPageJson(*page));
    }
    if (path.size() == 4) {  // /v1/index/{conversation}/{activity}
      if (method != HTTPServerRequest::HTTP_PUT) return NotAllowed(request, response, "PUT");
      auto tokens = ParsedBody(request, response, ParseIndexTokens);
      if (!tokens) return;
      Status put = state_->service.PutIndexTokens(caller, path[2], path[3], *tokens);
      if (!put.ok()) return SendError(response, put.error());
      response.setStatusAndReason(HTTPResponse::HTTP_NO_CONTENT);
      response.setContentLength(0);
      response.send();
      return;
    }
    Discard(request, response);
    SendError(response, 404, "not_found", "no such endpoint (see docs/api/core.md)");
  }

  std::shared_ptr<CoreServer::State> state_;
};

class HandlerFactory : public Poco::Net::HTTPRequestHandlerFactory {
 public:
  explicit HandlerFactory(std::shared_ptr<CoreServer::State> state) : state_(std::move(state)) {}
  Poco::Net::HTTPRequestHandler* createRequestHandler(const HTTPServerRequest&) override {
    return new Handler(state_);
  }

 private:
  std::shared_ptr<CoreServer::State> state_;
};

}  // namespace

Result<std::unique_ptr<CoreServer>> CoreServer::Start(const CoreServerOptions& options,
                                                      CoreService& service,
                                                      const JwtVerifier& verifier, RealtimeHub& hub,
                                                      KmsRelay& relay) {
  if (options.max_connections < 4 || options.rate_per_s < 1 || options.rate_burst < 1) {
    return Error(ErrorCode::kInvalidArgument,
                 "max_connections must be >= 4, rate_per_s and rate_burst >= 1");
  }
  SR_ASSIGN_OR_RETURN(auto context, MakeTlsServerContext("the core's HTTPS listener",
                                                         options.tls_cert, options.tls_key));
  auto state = std::shared_ptr<State>(new State{
      service, verifier, hub, relay, options, RateLimiter(options.rate_per_s, options.rate_burst)});
  http::HttpsServerOptions https;
  https.listen_host = options.listen_host;
  https.listen_port = options.listen_port;
  https.max_threads = options.max_connections;
  https.max_connections = options.max_open_connections;
  https.max_connections_per_peer = options.max_connections_per_peer;
  https.keep_alive_timeout = options.keep_alive_timeout;
  https.io_timeout = options.io_timeout;
  https.server_name = "cored";
  Result<std::unique_ptr<http::HttpsServer>> server =
      http::HttpsServer::Start(https, context, new HandlerFactory(state));
  if (!server.ok()) {
    Poco::Net::uninitializeSSL();
    return server.error();
  }
  return std::unique_ptr<CoreServer>(new CoreServer(std::move(state), std::move(server).value()));
}

CoreServer::CoreServer(std::shared_ptr<State> state, std::unique_ptr<http::HttpsServer> server)
    : state_(std::move(state)), server_(std::move(server)) {}

CoreServer::~CoreServer() {
  Stop();
  server_.reset();
  Poco::Net::uninitializeSSL();
}

std::uint16_t CoreServer::port() const { return server_->port(); }

void CoreServer::Stop() {
  if (stopped_) return;
  stopped_ = true;
  server_->StopAccepting();
  state_->hub.Stop();  // realtime loops end and close their sockets
  server_->Stop();     // waits for each connection's request in flight
}

}  // namespace strongroom::core
