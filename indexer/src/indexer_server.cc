#include "strongroom/indexer/indexer_server.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/String.h>

#include <cmath>
#include <sstream>

#include "strongroom/common/https_server.h"
#include "strongroom/common/strict_json.h"
#include "strongroom/indexer/room_search_key.h"

namespace strongroom::indexer {

using http::Request;
using http::Response;
using Poco::JSON::Array;
using Poco::JSON::Object;

namespace {

std::string Stringify(const Object& object) {
  std::ostringstream out;
  object.stringify(out);
  return out.str();
}

Error Invalid(const std::string& message) { return Error(ErrorCode::kInvalidArgument, message); }

// A whole number member of at most 19 digits' size, or nullopt when absent or null.
Result<std::optional<std::int64_t>> IntegerMember(const Object& object, const std::string& name) {
  if (!object.has(name) || object.isNull(name)) return std::optional<std::int64_t>();
  const Poco::Dynamic::Var value = object.get(name);
  if (!value.isInteger()) return Invalid(name + " must be a whole number");
  try {
    return std::optional<std::int64_t>(value.convert<std::int64_t>());
  } catch (const Poco::Exception&) {
    return Invalid(name + " is out of range");
  }
}

}  // namespace

Result<SearchRequest> ParseSearchBody(std::string_view body, bool compliance) {
  SR_ASSIGN_OR_RETURN(Object::Ptr object, ParseStrictJsonObject(body));
  for (const std::string& name : object->getNames()) {
    if (name != "query" && name != "room" && name != "limit" && name != "before" &&
        (!compliance || name != "user")) {
      return Invalid("unknown field \"" + name.substr(0, 64) + "\"");
    }
  }
  SearchRequest request;
  if (compliance) {
    if (!object->has("user") || object->isNull("user") || !object->get("user").isString()) {
      return Invalid("user is required, a user id");
    }
    request.user = object->getValue<std::string>("user");
    if (request.user.empty() || request.user.size() > 256) {
      return Invalid("user must be a user id of 1-256 bytes");
    }
  }
  if (!object->has("query") || object->isNull("query") || !object->get("query").isString()) {
    return Invalid("query is required, a string");
  }
  request.query = object->getValue<std::string>("query");
  if (object->has("room") && !object->isNull("room")) {
    if (!object->get("room").isString()) return Invalid("room must be a conversation id");
    std::string room = object->getValue<std::string>("room");
    if (!IsLowercaseUuid(room)) return Invalid("room must be a conversation id (a lowercase UUID)");
    request.room = std::move(room);
  }
  SR_ASSIGN_OR_RETURN(std::optional<std::int64_t> limit, IntegerMember(*object, "limit"));
  if (limit) {
    if (*limit < 1 || *limit > static_cast<std::int64_t>(kMaxSearchLimit)) {
      return Invalid("limit must be 1-" + std::to_string(kMaxSearchLimit));
    }
    request.limit = static_cast<std::size_t>(*limit);
  }
  SR_ASSIGN_OR_RETURN(request.before, IntegerMember(*object, "before"));
  if (request.before && *request.before < 1) return Invalid("before must be a seq above 0");
  return request;
}

SearchRateLimiter::SearchRateLimiter(SearchRateLimit limit) : limit_(std::move(limit)) {}

int SearchRateLimiter::Take(const std::string& user) {
  constexpr std::size_t kMaxTrackedUsers = 100000;
  const double now =
      limit_.now_s
          ? limit_.now_s()
          : std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
                .count();
  std::lock_guard<std::mutex> lock(mutex_);
  if (buckets_.size() >= kMaxTrackedUsers) {
    for (auto it = buckets_.begin(); it != buckets_.end();) {
      it =
          (now - it->second.at) * limit_.per_s >= limit_.burst ? buckets_.erase(it) : std::next(it);
    }
    if (buckets_.size() >= kMaxTrackedUsers) buckets_.clear();  // a flood of users: start over
  }
  auto [it, fresh] = buckets_.try_emplace(user, Bucket{limit_.burst, now});
  Bucket& bucket = it->second;
  if (!fresh) {
    bucket.tokens = std::min(limit_.burst, bucket.tokens + (now - bucket.at) * limit_.per_s);
    bucket.at = now;
  }
  if (bucket.tokens >= 1.0) {
    bucket.tokens -= 1.0;
    return 0;
  }
  return std::max(1, static_cast<int>(std::ceil((1.0 - bucket.tokens) / limit_.per_s)));
}

IndexerRoutes::IndexerRoutes(SearchService& search, const JwtVerifier& verifier, std::string org,
                             HealthSource health, ComplianceSearchSupport compliance,
                             SearchRateLimit rate)
    : http::Endpoint("indexerd", "the indexer failed to process the request",
                     http::CodeStyle::kSnakeCase),
      search_(search),
      verifier_(verifier),
      org_(std::move(org)),
      health_(std::move(health)),
      compliance_(std::move(compliance)),
      limiter_(std::move(rate)) {
  open_.Add("GET", "/health", [this](Request&) { return Health(); });
  users_.Add("POST", "/v1/search",
             [this](Request& r, const VerifiedJwt& c) { return Search(r, c); });
  if (compliance_.kms_verifier && compliance_.open_kms) {
    users_.Add("POST", "/v1/compliance/search",
               [this](Request& r, const VerifiedJwt& c) { return ComplianceSearch(r, c); });
  }
}

Response IndexerRoutes::Serve(Request& request) {
  if (open_.HasPath(request)) return open_.Dispatch(request);
  const std::string header = request.header("Authorization");
  if (header.size() <= 7 || Poco::icompare(header.substr(0, 7), "bearer ") != 0) {
    return Response(
               Error(ErrorCode::kUnauthenticated, "an Authorization: Bearer <token> is required"))
        .With("WWW-Authenticate", "Bearer");
  }
  Result<VerifiedJwt> caller = verifier_.Verify(std::string_view(header).substr(7));
  if (!caller.ok()) return Response(caller.error()).With("WWW-Authenticate", "Bearer");
  if (caller->org() != org_) {
    return Error(ErrorCode::kPermissionDenied,
                 "this indexer serves the users of organization '" + org_ + "' only");
  }
  if (users_.HasPath(request)) {
    if (const int wait = limiter_.Take(caller->subject()); wait > 0) {
      return Response::Refusal(429, "rate_limited",
                               "too many searches; retry in " + std::to_string(wait) + " s")
          .With("Retry-After", std::to_string(wait));
    }
  }
  return users_.Dispatch(request, *caller);
}

Response IndexerRoutes::Health() {
  const IndexerLoop::State stream = health_.stream();
  const Status kms = health_.kms();
  const bool database = !health_.database || health_.database().ok();
  Object json;
  const bool ok = stream.stream_connected && kms.ok() && database;
  json.set("status", ok ? "ok" : "unavailable");
  if (health_.database) json.set("database", database);
  Object kms_json;
  kms_json.set("ok", kms.ok());
  if (!kms.ok()) kms_json.set("error", kms.error().message());
  json.set("kms", kms_json);
  Object core_json;
  core_json.set("streamConnected", stream.stream_connected);
  core_json.set("cursor", stream.cursor);
  core_json.set("lagMs", stream.lag_ms);
  core_json.set("indexed", stream.indexed);
  core_json.set("skipped", stream.skipped);
  core_json.set("lagP50Ms", stream.lag_p50_ms);
  core_json.set("lagP99Ms", stream.lag_p99_ms);
  if (!stream.last_error.empty()) core_json.set("error", stream.last_error);
  json.set("core", core_json);
  if (health_.search_key_version) json.set("searchKeyVersion", health_.search_key_version());
  if (health_.reindex) {
    if (std::optional<JobProgress> job = health_.reindex()) {
      Object reindex;
      reindex.set("state", job->state);
      reindex.set("targetVersion", job->target_version);
      reindex.set("cursor", job->cursor);
      reindex.set("endSeq", job->end_seq);
      reindex.set("done", job->done);
      reindex.set("total", job->total);
      json.set("reindex", reindex);
    }
  }
  Response response = Response::Json(ok ? 200 : 503, Stringify(json));
  if (!ok) response.With("Retry-After", "1");
  return response;
}

Response IndexerRoutes::Search(Request& request, const VerifiedJwt& caller) {
  SR_ASSIGN_OR_RETURN(
      std::string body,
      http::ReadBodyAs(request, "application/json", kMaxSearchBodyBytes, "a search", "body_size"));
  SR_ASSIGN_OR_RETURN(SearchRequest search, ParseSearchBody(body));
  search.user = caller.subject();
  SR_ASSIGN_OR_RETURN(IndexPage page, search_.Search(search));
  return PageAnswer(page, search_.language());
}

Response IndexerRoutes::ComplianceSearch(Request& request, const VerifiedJwt& caller) {
  // The officer's KMS token, for the same user as their indexer token.
  const std::string header = request.header(kKmsAuthorizationHeader);
  if (header.size() <= 7 || Poco::icompare(header.substr(0, 7), "bearer ") != 0) {
    return Error(ErrorCode::kUnauthenticated, std::string("a compliance search carries ") +
                                                  kKmsAuthorizationHeader +
                                                  ": Bearer <your KMS token>");
  }
  const std::string kms_token = header.substr(7);
  Result<VerifiedJwt> kms_caller = compliance_.kms_verifier->Verify(kms_token);
  if (!kms_caller.ok()) {
    return Error(ErrorCode::kUnauthenticated,
                 "the KMS token was refused: " + kms_caller.error().message());
  }
  if (kms_caller->subject() != caller.subject() || kms_caller->org() != caller.org()) {
    return Error(ErrorCode::kUnauthenticated, "the KMS token is another user's");
  }
  SR_ASSIGN_OR_RETURN(
      std::string body,
      http::ReadBodyAs(request, "application/json", kMaxSearchBodyBytes, "a search", "body_size"));
  SR_ASSIGN_OR_RETURN(SearchRequest search, ParseSearchBody(body, /*compliance=*/true));
  if (verifier_.subjects().OrganizationOf(search.user) != org_) {
    return Error(ErrorCode::kPermissionDenied,
                 "this indexer serves the users of organization '" + org_ + "' only");
  }
  SR_ASSIGN_OR_RETURN(std::unique_ptr<IndexerKms> officer_kms, compliance_.open_kms(kms_token));
  SR_ASSIGN_OR_RETURN(IndexPage page, search_.ComplianceSearch(search, *officer_kms));
  return PageAnswer(page, search_.language());
}

Response IndexerRoutes::PageAnswer(const IndexPage& page, const std::string& language) {
  Array items;
  for (const IndexMatch& match : page.items) {
    Object item;
    item.set("conversationId", match.conversation_id);
    item.set("activityId", match.activity_id);
    item.set("seq", match.seq);
    items.add(item);
  }
  Object json;
  json.set("items", items);
  if (page.next) json.set("next", *page.next);
  json.set("language", language);
  return Response::Json(200, Stringify(json));
}

Result<std::unique_ptr<IndexerServer>> IndexerServer::Start(const ListenerSettings& listener,
                                                            IndexerRoutes& routes) {
  SR_ASSIGN_OR_RETURN(std::unique_ptr<http::HttpsServer> server,
                      StartHttpsListener(listener, "the indexer's HTTPS listener", "indexerd",
                                         http::EndpointHandlerFactory(routes)));
  return std::unique_ptr<IndexerServer>(new IndexerServer(std::move(server)));
}

IndexerServer::IndexerServer(std::unique_ptr<http::HttpsServer> server)
    : server_(std::move(server)) {}

IndexerServer::~IndexerServer() {
  Stop();
  server_.reset();
  Poco::Net::uninitializeSSL();
}

std::uint16_t IndexerServer::port() const { return server_->port(); }

void IndexerServer::Stop() {
  if (server_) server_->Stop();
}

}  // namespace strongroom::indexer
