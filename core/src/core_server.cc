#include "strongroom/core/core_server.h"

#include <Poco/Exception.h>
#include <Poco/JSON/Object.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/Net/WebSocket.h>
#include <Poco/String.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "strongroom/common/https_server.h"
#include "strongroom/common/kms_uri.h"
#include "strongroom/core/api_json.h"

namespace strongroom::core {
namespace {

using http::Request;
using http::Response;
using Poco::JSON::Object;
using Poco::Net::HTTPServerRequest;
using Poco::Net::HTTPServerResponse;

constexpr std::size_t kMaxTrackedUsers = 100000;
constexpr char kNotFound[] = "no such endpoint (see docs/api/core.md)";

std::string Stringify(const Object& object) {
  std::ostringstream out;
  object.stringify(out);
  return out.str();
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

class CoreRoutes::Impl {
 public:
  Impl(CoreService& service, const JwtVerifier& verifier, RealtimeHub& hub, KmsRelay& relay,
       const CoreServerOptions& options)
      : service_(service),
        verifier_(verifier),
        hub_(hub),
        relay_(relay),
        max_file_bytes_(options.max_file_bytes),
        limiter_(options.rate_per_s, options.rate_burst) {
    open_.Add("GET", "/health", [this](Request&) { return Health(); })
        .Add("GET", "/relay/kms", [this](Request&) { return AttachRelay(); });
    // Conversations and their parts.
    users_
        .Add("GET", "/v1/conversations",
             [this](Request& r, const Caller& c) { return ListConversations(r, c); })
        .Add("POST", "/v1/conversations",
             [this](Request& r, const Caller& c) { return CreateConversation(r, c); })
        .Add("GET", "/v1/conversations/{id}",
             [this](Request& r, const Caller& c) { return GetConversation(r, c); })
        .Add("POST", "/v1/conversations/{id}/participants",
             [this](Request& r, const Caller& c) { return AddParticipants(r, c); })
        .Add("DELETE", "/v1/conversations/{id}/participants/{user}",
             [this](Request& r, const Caller& c) { return RemoveParticipant(r, c); })
        .Add("PUT", "/v1/conversations/{id}/key",
             [this](Request& r, const Caller& c) { return RotateKey(r, c); })
        .Add("PUT", "/v1/conversations/{id}/title",
             [this](Request& r, const Caller& c) { return SetTitle(r, c); })
        .Add("GET", "/v1/conversations/{id}/activities",
             [this](Request& r, const Caller& c) { return History(r, c); })
        .Add("POST", "/v1/conversations/{id}/activities",
             [this](Request& r, const Caller& c) { return PostActivity(r, c); })
        .Add("GET", "/v1/conversations/{id}/activities/{activity}",
             [this](Request& r, const Caller& c) { return GetActivity(r, c); })
        .Add("PUT", "/v1/conversations/{id}/activities/{activity}",
             [this](Request& r, const Caller& c) { return EditActivity(r, c); })
        .Add("DELETE", "/v1/conversations/{id}/activities/{activity}",
             [this](Request& r, const Caller& c) { return RetractActivity(r, c); })
        .Add("POST", "/v1/conversations/{id}/files",
             [this](Request& r, const Caller& c) { return Upload(r, c); })
        .Add("GET", "/v1/conversations/{id}/files/{file}",
             [this](Request& r, const Caller& c) { return Download(r, c); });
    // Realtime, the relay of sealed KMS messages, compliance reads, the index.
    users_.Add("GET", "/v1/events", [this](Request& r, const Caller& c) { return Events(r, c); })
        .Add("POST", "/kms/messages", [this](Request& r, const Caller&) { return RelayMessage(r); })
        .Add("GET", "/v1/compliance/conversations",
             [this](Request& r, const Caller& c) { return ComplianceConversations(r, c); })
        .Add("GET", "/v1/compliance/conversations/{id}/activities",
             [this](Request& r, const Caller& c) { return ComplianceHistory(r, c); });
    AddIndexRoutes(users_);
    // What the indexer may use: nothing else (Serve).
    AddIndexRoutes(indexer_);
  }

  // /health and /relay/kms are anyone's; everything else, unknown paths included, is a user's (or
  // the indexer's): a core token first, then the user's rate.
  Response Serve(Request& request) {
    if (open_.HasPath(request)) return open_.Dispatch(request);
    Result<VerifiedJwt> token = Authenticate(request);
    if (!token.ok()) return Response(token.error()).With("WWW-Authenticate", "Bearer");
    const Caller caller{token->subject(), token->org()};
    if (const int wait = limiter_.Take(caller.user_id); wait > 0) {
      return Response::Refusal(429, "rate_limited",
                               "too many requests; retry in " + std::to_string(wait) + " s")
          .With("Retry-After", std::to_string(wait));
    }
    if (service_.IsIndexer(caller)) {
      // The indexer's identity writes and searches the index and follows its stream, and is
      // refused everything else, unknown paths included.
      if (!indexer_.HasPath(request)) {
        return Error(ErrorCode::kPermissionDenied,
                     "the indexer may only use the index (/v1/index/...)");
      }
      return indexer_.Dispatch(request, caller);
    }
    return users_.Dispatch(request, caller);
  }

 private:
  // The index's routes. They are in both tables: the indexer's, and the users', where the
  // service refuses every caller but the indexer (403, not 404).
  void AddIndexRoutes(http::Routes<const Caller&>& routes) {
    routes
        .Add("POST", "/v1/index/search",
             [this](Request& r, const Caller& c) { return Search(r, c); })
        .Add("PUT", "/v1/index/{conversation}/{activity}",
             [this](Request& r, const Caller& c) { return PutIndexTokens(r, c); })
        .Add("POST", "/v1/index/sets",
             [this](Request& r, const Caller& c) { return PutIndexTokenSets(r, c); })
        .Add("GET", "/v1/index/events",
             [this](Request& r, const Caller& c) { return IndexEvents(r, c); });
  }

  Result<VerifiedJwt> Authenticate(const Request& request) {
    const std::string header = request.header("Authorization");
    constexpr std::string_view kBearer = "Bearer ";
    if (header.size() <= kBearer.size() || Poco::icompare(header.substr(0, 7), "bearer ") != 0) {
      return Error(ErrorCode::kUnauthenticated, "an Authorization: Bearer <token> is required");
    }
    return verifier_.Verify(std::string_view(header).substr(kBearer.size()));
  }

  // 503 while the database does not answer: the node cannot serve, and a front's check takes it
  // out (deploy/haproxy), as kmsd's does.
  Response Health() {
    const bool database = service_.CheckDatabase().ok();
    Object json;
    json.set("status", database ? "ok" : "unavailable");
    json.set("database", database);
    json.set("realtimeConnections", hub_.connections());
    Object kms;  // each KMS cluster allowed to attach, and its relay connections now
    for (const auto& [cluster, connections] : relay_.ConnectedClusters()) {
      kms.set(cluster, connections);
    }
    json.set("kms", kms);
    if (!database) return Response::Json(503, Stringify(json)).With("Retry-After", "1");
    return Response::Json(200, Stringify(json));
  }

  // kmsd's relay connection: HandleRelayUpgrade checks its credential and takes it over.
  Response AttachRelay() {
    return Response::TakeOver(
        [this](HTTPServerRequest& request, HTTPServerResponse& response) -> Status {
          return HandleRelayUpgrade(relay_, request, response);
        });
  }

  // The request's JSON body parsed by `parse`, or the refusal.
  template <typename Parse>
  static auto ParsedBody(Request& request, Parse parse)
      -> http::OrAnswer<std::decay_t<decltype(parse(std::string_view()).value())>> {
    SR_ASSIGN_OR_RETURN(std::string body,
                        http::ReadBodyAs(request, "application/json", kMaxJsonRequestBytes,
                                         "a request body", "body_size"));
    auto parsed = parse(body);
    if (!parsed.ok()) return parsed.error();
    return std::move(parsed).value();
  }

  // Relays an embedded sealed KMS message to the KMS of `resource_uri` before the core changes
  // anything. nullopt when there is none; an error when the KMS cannot be reached or could not
  // even open it (then nothing is changed here).
  Result<std::optional<KmsRelayAnswer>> RelayEmbedded(const std::string& message,
                                                      const std::string& resource_uri) {
    if (message.empty()) return std::optional<KmsRelayAnswer>();
    SR_ASSIGN_OR_RETURN(KmsRelayAnswer answer, relay_.Forward(ClusterOf(resource_uri), message));
    if (answer.http_status != 200) {
      return Error(ErrorCode::kFailedPrecondition, "the KMS refused the embedded message (HTTP " +
                                                       std::to_string(answer.http_status) +
                                                       "); nothing was changed");
    }
    return std::optional<KmsRelayAnswer>(std::move(answer));
  }

  // POST /kms/messages?kms=<cluster>: a client's sealed KMS message, relayed as it is.
  Response RelayMessage(Request& request) {
    SR_ASSIGN_OR_RETURN(std::string cluster, ParseRelayQuery(request.query()));
    SR_ASSIGN_OR_RETURN(std::string message,
                        http::ReadBodyAs(request, "application/jose", kMaxRelayMessageBytes,
                                         "a KMS message", "message_size"));
    SR_ASSIGN_OR_RETURN(KmsRelayAnswer answer, relay_.Forward(cluster, message));
    Response response;
    response.status = answer.http_status;
    response.content_type = std::move(answer.content_type);
    response.body = std::move(answer.body);
    if (answer.http_status == 503) response.With("Retry-After", "1");
    return response;
  }

  // GET /v1/events: the caller's realtime WebSocket, from its cursor (the newest seq when none).
  Response Events(Request& request, const Caller& caller) {
    SR_ASSIGN_OR_RETURN(std::optional<std::int64_t> cursor, ParseEventsQuery(request.query()));
    const std::int64_t after = cursor.value_or(service_.LastSeq());
    return WebSocketStream("GET /v1/events",
                           [this, user = caller.user_id, after](Poco::Net::WebSocket& socket) {
                             return hub_.Serve(user, after, socket);
                           });
  }

  // GET /v1/index/events: the indexer's WebSocket, from its cursor (0, the beginning, when none).
  Response IndexEvents(Request& request, const Caller& caller) {
    SR_ASSIGN_OR_RETURN(std::optional<std::int64_t> cursor, ParseEventsQuery(request.query()));
    if (!service_.IsIndexer(caller)) {
      return Error(ErrorCode::kPermissionDenied, "only the indexer follows the indexer's stream");
    }
    return WebSocketStream("GET /v1/index/events", [this, caller, after = cursor.value_or(0)](
                                                       Poco::Net::WebSocket& socket) {
      return hub_.ServeIndexer(caller, after, socket);
    });
  }

  // The request upgraded to a WebSocket that `serve` streams to until it ends; `what` names the
  // route in the error for a request that is not an upgrade.
  static Response WebSocketStream(std::string what,
                                  std::function<Status(Poco::Net::WebSocket&)> serve) {
    return Response::TakeOver([what = std::move(what), serve = std::move(serve)](
                                  HTTPServerRequest& upgrade,
                                  HTTPServerResponse& response) -> Status {
      std::unique_ptr<Poco::Net::WebSocket> socket;
      try {
        socket = std::make_unique<Poco::Net::WebSocket>(upgrade, response);
      } catch (const Poco::Net::WebSocketException& e) {
        return Error(ErrorCode::kInvalidArgument, what + " is a WebSocket upgrade: " + e.message());
      }
      return EndStream(*socket, serve(*socket));
    });
  }

  // A stream that ended because the caller has too many: closed saying so (1008).
  static Status EndStream(Poco::Net::WebSocket& socket, const Status& served) {
    if (!served.ok() && served.error().code() == ErrorCode::kResourceExhausted) {
      try {
        socket.shutdown(Poco::Net::WebSocket::WS_POLICY_VIOLATION, served.error().message());
      } catch (const Poco::Exception&) {
        // the peer is gone
      }
    }
    return OkStatus();
  }

  Response ListConversations(Request& request, const Caller& caller) {
    SR_ASSIGN_OR_RETURN(ListQuery list, ParseListQuery(request.query()));
    SR_ASSIGN_OR_RETURN(auto page, service_.ListConversations(caller, list.before, list.limit));
    return Response::Json(200, ConversationPageJson(page, list.limit));
  }

  Response CreateConversation(Request& request, const Caller& caller) {
    SR_ASSIGN_OR_RETURN(auto create, ParsedBody(request, ParseCreateConversation));
    SR_ASSIGN_OR_RETURN(auto answer,
                        RelayEmbedded(create.kms_message, create.conversation.kms_resource_uri));
    SR_ASSIGN_OR_RETURN(Conversation conversation,
                        service_.CreateConversation(caller, create.conversation));
    return Response::Json(201,
                          WithKmsAnswer("conversation", ConversationJson(conversation), answer));
  }

  Response GetConversation(Request& request, const Caller& caller) {
    SR_ASSIGN_OR_RETURN(Conversation conversation,
                        service_.GetConversation(caller, request.param("id")));
    return Response::Json(200, ConversationJson(conversation));
  }

  // A membership or key change: the embedded KMS message (if any) goes to the conversation's KMS
  // first; only when the KMS took it does `change` run. Answers {activity, kmsAnswer?}.
  template <typename Change>
  Response ChangeMembers(const Caller& caller, const std::string& id,
                         const std::string& kms_message, Change change) {
    SR_ASSIGN_OR_RETURN(Conversation conversation, service_.GetConversation(caller, id));
    SR_ASSIGN_OR_RETURN(auto answer, RelayEmbedded(kms_message, conversation.kms_resource_uri));
    SR_ASSIGN_OR_RETURN(Activity activity, change());
    return Response::Json(200, WithKmsAnswer("activity", ActivityJson(activity), answer));
  }

  Response AddParticipants(Request& request, const Caller& caller) {
    const std::string& id = request.param("id");
    SR_ASSIGN_OR_RETURN(auto add, ParsedBody(request, ParseAddParticipants));
    return ChangeMembers(caller, id, add.kms_message,
                         [&] { return service_.AddParticipants(caller, id, add.user_ids); });
  }

  // The body, with the removal's KMS message, is optional.
  Response RemoveParticipant(Request& request, const Caller& caller) {
    const std::string& id = request.param("id");
    const std::string& user = request.param("user");
    std::string kms_message;
    if (request.has_body()) {
      SR_ASSIGN_OR_RETURN(kms_message, ParsedBody(request, ParseRemoveParticipant));
    }
    return ChangeMembers(caller, id, kms_message,
                         [&] { return service_.RemoveParticipant(caller, id, user); });
  }

  Response RotateKey(Request& request, const Caller& caller) {
    const std::string& id = request.param("id");
    SR_ASSIGN_OR_RETURN(auto rotate, ParsedBody(request, ParseRotateKey));
    return ChangeMembers(caller, id, rotate.kms_message,
                         [&] { return service_.RotateKey(caller, id, rotate.key_uri); });
  }

  Response SetTitle(Request& request, const Caller& caller) {
    SR_ASSIGN_OR_RETURN(std::string title, ParsedBody(request, ParseSetTitle));
    SR_ASSIGN_OR_RETURN(Activity activity, service_.SetTitle(caller, request.param("id"), title));
    return Response::Json(200, ActivityJson(activity));
  }

  Response PostActivity(Request& request, const Caller& caller) {
    SR_ASSIGN_OR_RETURN(NewPost post, ParsedBody(request, ParsePost));
    SR_ASSIGN_OR_RETURN(Activity activity,
                        service_.PostActivity(caller, request.param("id"), post));
    return Response::Json(201, ActivityJson(activity));
  }

  Response History(Request& request, const Caller& caller) {
    SR_ASSIGN_OR_RETURN(HistoryQuery query, ParseHistoryQuery(request.query()));
    return HistoryAnswer(service_.History(caller, request.param("id"), query));
  }

  Response GetActivity(Request& request, const Caller& caller) {
    SR_ASSIGN_OR_RETURN(Activity activity, service_.GetActivity(caller, request.param("id"),
                                                                request.param("activity")));
    return Response::Json(200, ActivityJson(activity));
  }

  // PUT .../activities/{activity} {content}: the author's edit; 200 the "edit" activity.
  Response EditActivity(Request& request, const Caller& caller) {
    SR_ASSIGN_OR_RETURN(std::string content, ParsedBody(request, ParseEdit));
    SR_ASSIGN_OR_RETURN(
        Activity activity,
        service_.EditActivity(caller, request.param("id"), request.param("activity"), content));
    return Response::Json(200, ActivityJson(activity));
  }

  // DELETE .../activities/{activity}, no body: the author's retraction; 200 the "retract"
  // activity (the same one again for a message retracted before).
  Response RetractActivity(Request& request, const Caller& caller) {
    if (request.has_body()) {
      return Error(ErrorCode::kInvalidArgument, "a retraction takes no body");
    }
    SR_ASSIGN_OR_RETURN(Activity activity, service_.RetractActivity(caller, request.param("id"),
                                                                    request.param("activity")));
    return Response::Json(200, ActivityJson(activity));
  }

  static Response HistoryAnswer(Result<HistoryPage> page) {
    if (!page.ok()) return page.error();
    return Response::Json(200, HistoryPageJson(*page));
  }

  // GET /v1/compliance/conversations?user=U and .../{id}/activities?user=U: a compliance
  // officer's reads (CoreService::ComplianceConversations / ComplianceHistory). Each access is
  // one log line naming the officer, the user and the conversation; never content.
  Response ComplianceConversations(Request& request, const Caller& caller) {
    SR_ASSIGN_OR_RETURN(ComplianceListQuery query, ParseComplianceListQuery(request.query()));
    auto page =
        service_.ComplianceConversations(caller, query.user, query.list.before, query.list.limit);
    LogCompliance(caller, query.user, "(list)", page.ok() ? Status() : page.error());
    if (!page.ok()) return page.error();
    return Response::Json(200, ConversationPageJson(*page, query.list.limit));
  }

  Response ComplianceHistory(Request& request, const Caller& caller) {
    SR_ASSIGN_OR_RETURN(ComplianceHistoryQuery query, ParseComplianceHistoryQuery(request.query()));
    const std::string& id = request.param("id");
    auto page = service_.ComplianceHistory(caller, query.user, id, query.history);
    LogCompliance(caller, query.user, id, page.ok() ? Status() : page.error());
    return HistoryAnswer(std::move(page));
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
              << quoted(conversation) << ": "
              << (outcome.ok() ? "ok"
                               : http::ErrorCodeText(outcome.error(), http::CodeStyle::kSnakeCase))
              << std::endl;
  }

  // The encrypted file, streamed to the files directory as it arrives; never more than
  // max_file_bytes.
  Response Upload(Request& request, const Caller& caller) {
    const std::uint64_t max = max_file_bytes_;
    if (request.media_type() != "application/octet-stream") {
      return Response::Refusal(
          415, "media_type", "upload the encrypted file as Content-Type: application/octet-stream");
    }
    auto too_large = [&] {
      return Response::Refusal(413, "file_size",
                               "an encrypted file is at most " + std::to_string(max) + " bytes")
          .Closing();
    };
    const Poco::Net::HTTPRequest& head = request.head();
    if (head.hasContentLength() && static_cast<std::uint64_t>(head.getContentLength64()) > max) {
      return too_large();
    }
    SR_ASSIGN_OR_RETURN(std::unique_ptr<CoreService::Upload> upload,
                        service_.BeginUpload(caller, request.param("id")));
    std::vector<char> chunk(64 * 1024);
    while (const std::size_t n = request.Read(chunk.data(), chunk.size())) {
      Status written = upload->Write(chunk.data(), n);
      if (!written.ok()) {
        if (written.error().code() == ErrorCode::kResourceExhausted) return too_large();
        return Response(written.error()).Closing();
      }
    }
    if (head.hasContentLength() &&
        upload->size() != static_cast<std::uint64_t>(head.getContentLength64())) {
      return Response(Error(ErrorCode::kInvalidArgument,
                            "the upload ended before Content-Length bytes arrived"))
          .Closing();
    }
    SR_ASSIGN_OR_RETURN(FileInfo file, service_.FinishUpload(std::move(upload)));
    return Response::Json(201, FileJson(file));
  }

  Response Download(Request& request, const Caller& caller) {
    SR_ASSIGN_OR_RETURN(auto file,
                        service_.OpenFile(caller, request.param("id"), request.param("file")));
    Response response;
    response.content_type = "application/octet-stream";
    response.file = std::move(file.second);
    return response.With("X-Content-SHA256", file.first.sha256_hex);
  }

  Response Search(Request& request, const Caller& caller) {
    SR_ASSIGN_OR_RETURN(SearchQuery query, ParsedBody(request, ParseSearch));
    SR_ASSIGN_OR_RETURN(SearchPage page, service_.MatchTokens(caller, query));
    return Response::Json(200, SearchPageJson(page));
  }

  // PUT /v1/index/{conversation}/{activity}: the indexer's tokens for one activity; 204.
  Response PutIndexTokens(Request& request, const Caller& caller) {
    SR_ASSIGN_OR_RETURN(std::vector<std::string> tokens, ParsedBody(request, ParseIndexTokens));
    SR_RETURN_IF_ERROR(service_.PutIndexTokens(caller, request.param("conversation"),
                                               request.param("activity"), tokens));
    Response response;
    response.status = 204;
    return response;
  }

  // POST /v1/index/sets: a batch of the indexer's token sets, all or nothing; 204.
  Response PutIndexTokenSets(Request& request, const Caller& caller) {
    SR_ASSIGN_OR_RETURN(std::vector<IndexTokenSet> sets, ParsedBody(request, ParseIndexTokenSets));
    SR_RETURN_IF_ERROR(service_.PutIndexTokenSets(caller, sets));
    Response response;
    response.status = 204;
    return response;
  }

  CoreService& service_;
  const JwtVerifier& verifier_;
  RealtimeHub& hub_;
  KmsRelay& relay_;
  const std::uint64_t max_file_bytes_;
  RateLimiter limiter_;
  http::Routes<> open_{kNotFound};
  http::Routes<const Caller&> users_{kNotFound};
  http::Routes<const Caller&> indexer_{kNotFound};
};

CoreRoutes::CoreRoutes(CoreService& service, const JwtVerifier& verifier, RealtimeHub& hub,
                       KmsRelay& relay, const CoreServerOptions& options)
    : http::Endpoint("cored", "the core failed to process the request",
                     http::CodeStyle::kSnakeCase),
      impl_(std::make_unique<Impl>(service, verifier, hub, relay, options)) {}

CoreRoutes::~CoreRoutes() = default;

http::Response CoreRoutes::Serve(http::Request& request) { return impl_->Serve(request); }

Result<std::unique_ptr<CoreServer>> CoreServer::Start(const CoreServerOptions& options,
                                                      CoreService& service,
                                                      const JwtVerifier& verifier, RealtimeHub& hub,
                                                      KmsRelay& relay) {
  if (options.listener.max_connections < 4 || options.rate_per_s < 1 || options.rate_burst < 1) {
    return Error(ErrorCode::kInvalidArgument,
                 "max_connections must be >= 4, rate_per_s and rate_burst >= 1");
  }
  auto routes = std::make_unique<CoreRoutes>(service, verifier, hub, relay, options);
  SR_ASSIGN_OR_RETURN(std::unique_ptr<http::HttpsServer> server,
                      StartHttpsListener(options.listener, "the core's HTTPS listener", "cored",
                                         http::EndpointHandlerFactory(*routes)));
  return std::unique_ptr<CoreServer>(new CoreServer(std::move(routes), hub, std::move(server)));
}

CoreServer::CoreServer(std::unique_ptr<CoreRoutes> routes, RealtimeHub& hub,
                       std::unique_ptr<http::HttpsServer> server)
    : routes_(std::move(routes)), hub_(hub), server_(std::move(server)) {}

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
  hub_.Stop();      // realtime loops end and close their sockets
  server_->Stop();  // waits for each connection's request in flight
}

}  // namespace strongroom::core
