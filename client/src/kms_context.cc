#include "strongroom/client/kms_context.h"

#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Parser.h>
#include <Poco/UUIDGenerator.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "strongroom/common/kms_uri.h"
#include "strongroom/common/rfc3339.h"

namespace strongroom::client {
namespace {

using Poco::JSON::Object;

constexpr char kDefaultClientId[] = "strongroom-sdk";

bool IsJose(const std::string& content_type) {
  return content_type.rfind("application/jose", 0) == 0;
}

// Reads leave nothing behind, so a read the KMS refused as a replay is simply sealed afresh.
bool IsRead(const std::string& method, const std::string& uri) {
  return method == "retrieve" || (method == "update" && uri == "/ping");
}

// A write that failed after a send that may have executed, with a KMS that answers again: what it
// did is worth finding out (a KMS still unreachable after every attempt would not tell).
bool Unsettled(const Result<Object::Ptr>& answer, bool maybe_executed) {
  return !answer.ok() && maybe_executed && answer.error().code() != ErrorCode::kUnavailable;
}

bool IsReplayRefusal(const Object& answer) {
  return AnswerStatus(answer) == 409 && answer.has("reason") &&
         answer.get("reason").toString() == kReplayedReason;
}

Poco::JSON::Array Strings(const std::vector<std::string>& items) {
  Poco::JSON::Array array;
  for (const std::string& item : items) array.add(item);
  return array;
}

// "create /resources" from a method and a URI, for messages (the host and query are dropped).
std::string Describe(const std::string& method, const std::string& uri,
                     const std::string& cluster) {
  Result<KmsUri> parsed = KmsUri::Parse(uri, cluster);
  if (!parsed.ok()) return method + " " + uri;
  return method + " " + (parsed->IsCluster() ? "/" : parsed->path());
}

}  // namespace

Result<std::unique_ptr<KmsContext>> KmsContext::New(KmsContextOptions options, KmsInfo info,
                                                    KmsTransport transport) {
  if (!options.kms_token || !transport) {
    return Error(ErrorCode::kInvalidArgument, "a KMS context needs a KMS token and a transport");
  }
  if (options.client_id.empty()) options.client_id = kDefaultClientId;
  if (options.max_attempts < 1) options.max_attempts = 1;
  if (!options.now_ms) options.now_ms = UnixNowMs;
  if (!options.sleep) {
    options.sleep = [](std::chrono::milliseconds wait) { std::this_thread::sleep_for(wait); };
  }
  SR_RETURN_IF_ERROR(VerifyKmsIdentity(info, options.trust, options.now_ms() / 1000));
  return std::unique_ptr<KmsContext>(
      new KmsContext(std::move(options), std::move(info), std::move(transport)));
}

Result<std::unique_ptr<KmsContext>> KmsContext::OverHttps(KmsContextOptions options,
                                                          const HttpsTransportOptions& https) {
  SR_ASSIGN_OR_RETURN(std::unique_ptr<HttpsTransport> created, HttpsTransport::New(https));
  std::shared_ptr<HttpsTransport> transport(std::move(created));
  if (!options.fetch_info) options.fetch_info = [transport] { return transport->GetInfo(); };
  Result<std::string> document = transport->GetInfo();
  for (int attempt = 1; !document.ok() && document.error().code() == ErrorCode::kUnavailable &&
                        attempt < std::max(1, options.max_attempts);
       ++attempt) {
    const auto wait = std::min(options.max_backoff, options.initial_backoff * (1 << attempt));
    if (options.sleep) {
      options.sleep(wait);
    } else {
      std::this_thread::sleep_for(wait);
    }
    document = transport->GetInfo();
  }
  if (!document.ok()) return document.error();
  SR_ASSIGN_OR_RETURN(KmsInfo info, ParseKmsInfo(*document));
  KmsTransport post = [transport](const std::string& message) { return transport->Post(message); };
  return New(std::move(options), std::move(info), std::move(post));
}

Result<std::unique_ptr<KmsContext>> KmsContext::OverRelay(KmsContextOptions options,
                                                          std::string_view kms_info_json,
                                                          RelayTransportOptions relay) {
  SR_ASSIGN_OR_RETURN(KmsInfo info, ParseKmsInfo(kms_info_json));
  if (relay.cluster.empty()) relay.cluster = info.cluster;
  if (relay.cluster != options.trust.cluster) {
    return Error(ErrorCode::kInvalidArgument, "the relay is set up for " + relay.cluster +
                                                  ", the trust for " + options.trust.cluster);
  }
  SR_ASSIGN_OR_RETURN(std::unique_ptr<RelayTransport> transport,
                      RelayTransport::New(std::move(relay)));
  return New(std::move(options), std::move(info),
             MakeKmsTransport(std::shared_ptr<RelayTransport>(std::move(transport))));
}

KmsContext::KmsContext(KmsContextOptions options, KmsInfo info, KmsTransport transport)
    : options_(std::move(options)),
      cluster_(info.cluster),
      transport_(std::move(transport)),
      info_(std::move(info)),
      jitter_(std::random_device()()) {}

KmsInfo KmsContext::info() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return info_;
}

Result<bool> KmsContext::RefreshIdentity() {
  if (!options_.fetch_info) return false;
  SR_ASSIGN_OR_RETURN(std::string document, options_.fetch_info());
  SR_ASSIGN_OR_RETURN(KmsInfo fetched, ParseKmsInfo(document));
  // Trusted exactly as the first one: the pinned roots, and the host of the same cluster.
  SR_RETURN_IF_ERROR(VerifyKmsIdentity(fetched, options_.trust, options_.now_ms() / 1000));
  SR_ASSIGN_OR_RETURN(std::string now_json, info_.rsa_public_key.ToJson());
  SR_ASSIGN_OR_RETURN(std::string fetched_json, fetched.rsa_public_key.ToJson());
  if (fetched_json == now_json) return false;
  info_ = std::move(fetched);
  ++stats_.identity_refreshes;
  return true;
}

KmsContext::~KmsContext() = default;

KmsContext::Stats KmsContext::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

Status KmsContext::Connect() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (int attempt = 1;; ++attempt) {
    Result<std::shared_ptr<KmsSession>> channel = Channel();
    if (channel.ok()) return OkStatus();
    if (channel.error().code() != ErrorCode::kUnavailable || attempt >= options_.max_attempts) {
      return channel.error();
    }
    ++stats_.retries;
    Backoff(attempt, 0);
  }
}

void KmsContext::Renegotiate() {
  std::lock_guard<std::mutex> lock(mutex_);
  session_.reset();
}

Status KmsContext::Close() {
  std::shared_ptr<KmsSession> session;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    session = std::move(session_);
  }
  if (!session) return OkStatus();
  return session->Close();
}

Result<std::shared_ptr<KmsSession>> KmsContext::Channel() {
  if (session_) {
    const std::int64_t expires = session_->expires_ms();
    const std::int64_t margin =
        std::chrono::duration_cast<std::chrono::milliseconds>(options_.renew_before).count();
    if (expires == 0 || options_.now_ms() < expires - margin) return session_;
    session_.reset();  // due for renewal; requests sealed on it keep their copy
  }
  return OpenChannel();
}

Result<std::shared_ptr<KmsSession>> KmsContext::OpenChannel() {
  SR_ASSIGN_OR_RETURN(std::string token, options_.kms_token());
  Result<std::unique_ptr<KmsSession>> opened =
      KmsSession::Open(info_, options_.client_id, token, transport_);
  // Refused as sealed to an identity whose token is down, or answered with a signature our key
  // does not verify: the KMS may serve with another identity now.
  if (!opened.ok() && (opened.error().reason() == ErrorReason::kIdentityUnavailable ||
                       opened.error().code() == ErrorCode::kDataLoss)) {
    Result<bool> changed = RefreshIdentity();
    if (!changed.ok() && changed.error().code() != ErrorCode::kUnavailable) return changed.error();
    if (changed.ok() && *changed) {
      opened = KmsSession::Open(info_, options_.client_id, std::move(token), transport_);
    }
  }
  if (!opened.ok()) return opened.error();
  ++stats_.channels_opened;
  session_ = std::shared_ptr<KmsSession>(std::move(opened).value());
  return session_;
}

void KmsContext::Backoff(int attempt, int retry_after_s) {
  using std::chrono::milliseconds;
  const int shift = std::min(attempt - 1, 16);
  milliseconds wait = std::min(options_.max_backoff, options_.initial_backoff * (1 << shift));
  // Full jitter in [wait/2, wait], so clients that failed together do not retry together.
  const auto low = wait.count() / 2;
  std::uniform_int_distribution<std::int64_t> spread(low, std::max(low, wait.count()));
  wait = milliseconds(spread(jitter_));
  if (retry_after_s > 0) {
    const milliseconds asked =
        std::min<milliseconds>(std::chrono::seconds(retry_after_s),
                               std::chrono::duration_cast<milliseconds>(options_.max_retry_after));
    wait = std::max(wait, asked);
  }
  options_.sleep(wait);
}

std::string KmsContext::Absolute(const std::string& uri) const {
  Result<KmsUri> parsed = KmsUri::Parse(uri, cluster_);
  return parsed.ok() ? parsed->ToString() : uri;
}

Result<Object::Ptr> KmsContext::Run(const std::string& method, const std::string& uri,
                                    const Object& fields, int expected_status,
                                    const std::string& on_behalf_of, bool* maybe_executed) {
  const std::string what = Describe(method, uri, cluster_);
  std::lock_guard<std::mutex> lock(mutex_);
  bool renegotiated = false;
  bool refreshed = false;
  for (int attempt = 1;; ++attempt) {
    Error last(ErrorCode::kUnavailable, "");
    int retry_after_s = 0;
    bool wait = true;
    Result<std::shared_ptr<KmsSession>> channel = Channel();
    if (!channel.ok()) {
      if (channel.error().code() != ErrorCode::kUnavailable) return channel.error();
      last = channel.error();
    } else {
      KmsSession& session = **channel;
      SR_ASSIGN_OR_RETURN(std::string token, options_.kms_token());
      session.set_bearer(std::move(token));
      SR_ASSIGN_OR_RETURN(std::string message, session.Seal(method, uri, fields, on_behalf_of));
      const std::string request_id = session.last_request_id();
      Result<KmsResponse> response = transport_(message);
      if (!response.ok()) {
        if (response.error().code() != ErrorCode::kUnavailable) return response.error();
        // It may have reached the KMS and executed there, with only the answer lost.
        if (maybe_executed != nullptr) *maybe_executed = true;
        last = response.error();
      } else if (Result<std::optional<KmsRefusal>> refusal =
                     ReadKmsRefusal(*response, info_.rsa_public_key);
                 !refusal.ok() || *refusal) {
        if (!refusal.ok() && refusal.error().code() == ErrorCode::kDataLoss && !refreshed) {
          // Signed by a key we do not hold: the KMS may serve with another identity now.
          refreshed = true;
          Result<bool> changed = RefreshIdentity();
          if (!changed.ok() && changed.error().code() != ErrorCode::kUnavailable) {
            return changed.error();
          }
          if (changed.ok() && *changed) refusal = ReadKmsRefusal(*response, info_.rsa_public_key);
        }
        if (!refusal.ok()) return refusal.error();
        if ((*refusal)->status != 401 || renegotiated) {
          return Error(ErrorCode::kUnauthenticated,
                       what + " refused by the KMS: " + std::to_string((*refusal)->status) + " " +
                           (*refusal)->reason);
        }
        // The KMS no longer knows the channel (expired early, deleted, used up, a fresh
        // database): once per operation, negotiate a new one and send again.
        renegotiated = true;
        ++stats_.renegotiations;
        session_.reset();
        --attempt;
        continue;
      } else if (!IsJose(response->content_type)) {
        // OpenAnswer turns a plain reply into its Error.
        Result<Object::Ptr> plain = session.OpenAnswer(*response, request_id);
        const Error error =
            plain.ok() ? Error(ErrorCode::kInternal, "unexpected plain answer") : plain.error();
        if (response->http_status != 429 && response->http_status != 503) return error;
        last = error;
        retry_after_s = response->retry_after_s;
      } else {
        SR_ASSIGN_OR_RETURN(Object::Ptr answer, session.OpenAnswer(*response, request_id));
        Status status = CheckAnswerStatus(*answer, expected_status, what);
        if (status.ok()) return answer;
        if (IsReplayRefusal(*answer)) {
          // A resend of this very message (by a transport, or a relay) reached the KMS after the
          // message itself: nothing ran the second time. A read is sealed afresh; whether a write
          // ran is for the caller to find out (maybe_executed).
          if (!IsRead(method, uri)) {
            if (maybe_executed != nullptr) *maybe_executed = true;
            return status.error();
          }
          wait = false;
        } else if (AnswerStatus(*answer) != 503) {
          return status.error();
        }
        last = status.error();  // the KMS's HSM or database is busy: worth another try
      }
    }
    if (attempt >= options_.max_attempts) {
      return Error(ErrorCode::kUnavailable,
                   what + " failed " + std::to_string(attempt) + " times; last: " + last.message());
    }
    ++stats_.retries;
    if (wait) Backoff(attempt, retry_after_s);
  }
}

Result<SealedRequest> KmsContext::SealFor(const std::string& method, const std::string& uri,
                                          const Object& fields, int expected_status) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (int attempt = 1;; ++attempt) {
    Result<std::shared_ptr<KmsSession>> channel = Channel();
    if (channel.ok()) {
      KmsSession& session = **channel;
      SR_ASSIGN_OR_RETURN(std::string token, options_.kms_token());
      session.set_bearer(std::move(token));
      SR_ASSIGN_OR_RETURN(std::string message, session.Seal(method, uri, fields));
      return SealedRequest{std::move(message), session.last_request_id(),
                           Describe(method, uri, cluster_), expected_status, *channel};
    }
    if (channel.error().code() != ErrorCode::kUnavailable || attempt >= options_.max_attempts) {
      return channel.error();
    }
    ++stats_.retries;
    Backoff(attempt, 0);
  }
}

Result<Object::Ptr> KmsContext::OpenAnswer(const SealedRequest& request,
                                           const KmsResponse& answer) const {
  if (!request.session) {
    return Error(ErrorCode::kInvalidArgument, "the sealed request has no channel");
  }
  SR_ASSIGN_OR_RETURN(Object::Ptr opened, request.session->OpenAnswer(answer, request.request_id));
  SR_RETURN_IF_ERROR(CheckAnswerStatus(*opened, request.expected_status, request.what));
  return opened;
}

Status KmsContext::Ping() {
  SR_ASSIGN_OR_RETURN(Object::Ptr answer, Run("update", "/ping", Object(), 200));
  (void)answer;
  return OkStatus();
}

Result<std::vector<KmsKey>> KmsContext::CreateKeys(std::size_t count) {
  if (count < 1 || count > 100) {
    return Error(ErrorCode::kInvalidArgument, "create /keys makes 1 to 100 keys at a time");
  }
  Object fields;
  fields.set("count", static_cast<int>(count));
  bool maybe_executed = false;
  Result<Object::Ptr> answer = Run("create", "/keys", fields, 201, "", &maybe_executed);
  // Keys made for a lost answer reach nobody and expire unbound: make others.
  if (Unsettled(answer, maybe_executed)) answer = Run("create", "/keys", fields, 201);
  if (!answer.ok()) return answer.error();
  return ParseKmsKeys(**answer);
}

namespace {

Object BindFields(const std::string& resource_uri) {
  Object fields;
  fields.set("resourceUri", resource_uri);
  return fields;
}

Object ResourceFields(const std::vector<std::string>& auth_ids,
                      const std::vector<std::string>& key_uris, const std::string& resource_uri) {
  Object fields;
  fields.set("authIds", Strings(auth_ids));
  fields.set("keyUris", Strings(key_uris));
  if (!resource_uri.empty()) fields.set("resourceUri", resource_uri);
  return fields;
}

Object AuthorizeFields(const std::string& resource_uri, const std::vector<std::string>& auth_ids,
                       const std::string& role) {
  Object fields;
  fields.set("resourceUri", resource_uri);
  fields.set("authIds", Strings(auth_ids));
  if (!role.empty()) fields.set("roleUri", role);
  return fields;
}

// <resource>/authorizations?authId=<auth_id>, the authId percent-encoded (a user id, or a
// resource's URI), so that nothing in it changes what the URI names.
Result<std::string> ByAuthId(const std::string& cluster, const std::string& resource_uri,
                             const std::string& auth_id) {
  Result<KmsUri> resource = KmsUri::Parse(resource_uri, cluster);
  if (!resource.ok() || !resource->IsItem("resources")) {
    return Error(ErrorCode::kInvalidArgument, "'" + resource_uri + "' is not a resource URI");
  }
  Result<KmsUri> uri =
      KmsUri::Make(resource->cluster(), "resources", resource->id(), "authorizations", auth_id);
  if (!uri.ok()) {
    return Error(ErrorCode::kInvalidArgument,
                 "'" + auth_id + "' is not a user id or resource: " + uri.error().message());
  }
  return uri->ToString();
}

Result<KmsKey> KeyOf(const Object& answer) {
  Object::Ptr key = answer.getObject("key");
  if (!key) return Error(ErrorCode::kInvalidArgument, "the KMS's answer has no \"key\"");
  return ParseKmsKey(*key);
}

Result<KmsResource> ResourceOf(const Object& answer) {
  Object::Ptr resource = answer.getObject("resource");
  if (!resource) return Error(ErrorCode::kInvalidArgument, "the KMS's answer has no \"resource\"");
  return ParseKmsResource(*resource);
}

}  // namespace

Result<KmsKey> KmsContext::BindKey(const std::string& key_uri, const std::string& resource_uri) {
  bool maybe_executed = false;
  Result<Object::Ptr> answer =
      Run("update", key_uri, BindFields(resource_uri), 200, "", &maybe_executed);
  if (Unsettled(answer, maybe_executed)) {
    Result<KmsKey> now = RetrieveKey(key_uri);
    if (now.ok() && now->resource_uri == Absolute(resource_uri)) return now;
    answer = Run("update", key_uri, BindFields(resource_uri), 200);
  }
  if (!answer.ok()) return answer.error();
  return KeyOf(**answer);
}

Result<KmsResource> KmsContext::CreateResource(const std::vector<std::string>& auth_ids,
                                               const std::vector<std::string>& key_uris,
                                               const std::string& resource_uri) {
  const std::string uri = resource_uri.empty() ? NewResourceUri() : resource_uri;
  const Object fields = ResourceFields(auth_ids, key_uris, uri);
  bool maybe_executed = false;
  Result<Object::Ptr> answer = Run("create", "/resources", fields, 201, "", &maybe_executed);
  if (Unsettled(answer, maybe_executed)) {
    if (Result<KmsResource> now = RetrieveResource(uri); now.ok()) return now;
    answer = Run("create", "/resources", fields, 201);
  }
  if (!answer.ok()) return answer.error();
  SR_ASSIGN_OR_RETURN(KmsResource resource, ResourceOf(**answer));
  if (resource.uri != uri) {
    return Error(ErrorCode::kInvalidArgument, "the KMS created another resource than named");
  }
  return resource;
}

std::string KmsContext::NewResourceUri() const {
  return cluster_ + "/resources/" +
         Poco::UUIDGenerator::defaultGenerator().createRandom().toString();
}

Result<KmsResource> KmsContext::RetrieveResource(const std::string& resource_uri) {
  SR_ASSIGN_OR_RETURN(Object::Ptr answer, Run("retrieve", resource_uri, Object(), 200));
  return ResourceOf(*answer);
}

Result<KmsKey> KmsContext::RetrieveKey(const std::string& key_uri,
                                       const std::string& on_behalf_of) {
  SR_ASSIGN_OR_RETURN(Object::Ptr answer,
                      Run("retrieve", Absolute(key_uri), Object(), 200, on_behalf_of));
  SR_ASSIGN_OR_RETURN(KmsKey key, KeyOf(*answer));
  if (key.uri != Absolute(key_uri)) {
    return Error(ErrorCode::kInvalidArgument, "the KMS answered with another key");
  }
  return key;
}

Result<KmsSearchKey> KmsContext::RetrieveSearchKey() {
  SR_ASSIGN_OR_RETURN(Object::Ptr answer, Run("retrieve", Absolute("/search-keys"), Object(), 200));
  Object::Ptr key = answer->getObject("searchKey");
  if (!key) return Error(ErrorCode::kInvalidArgument, "the KMS's answer has no \"searchKey\"");
  SR_ASSIGN_OR_RETURN(KmsSearchKey parsed, ParseKmsSearchKey(*key));
  if (parsed.uri.rfind(cluster_ + "/search-keys/", 0) != 0) {
    return Error(ErrorCode::kInvalidArgument, "the KMS answered with another KMS's search key");
  }
  return parsed;
}

Result<KmsSearchKey> KmsContext::RetrieveSearchKey(const std::string& org, std::uint32_t version) {
  SR_ASSIGN_OR_RETURN(KmsUri uri,
                      KmsUri::Make(cluster_, "search-keys", org, std::to_string(version)));
  SR_ASSIGN_OR_RETURN(Object::Ptr answer, Run("retrieve", uri.ToString(), Object(), 200));
  Object::Ptr key = answer->getObject("searchKey");
  if (!key) return Error(ErrorCode::kInvalidArgument, "the KMS's answer has no \"searchKey\"");
  SR_ASSIGN_OR_RETURN(KmsSearchKey parsed, ParseKmsSearchKey(*key));
  if (parsed.uri != uri.ToString()) {
    return Error(ErrorCode::kInvalidArgument, "the KMS answered with another search key");
  }
  return parsed;
}

Result<KmsAuthorizationPage> KmsContext::ListAuthorizations(const std::string& user,
                                                            const std::string& cursor,
                                                            std::size_t limit,
                                                            const std::string& on_behalf_of) {
  if (limit < 1 || limit > 1000) {
    return Error(ErrorCode::kInvalidArgument, "list authorizations takes a limit of 1 to 1000");
  }
  SR_ASSIGN_OR_RETURN(KmsUri uri, KmsUri::Make(cluster_, "authorizations", {}, {}, user));
  Object fields;
  fields.set("limit", static_cast<int>(limit));
  if (!cursor.empty()) fields.set("cursor", cursor);
  SR_ASSIGN_OR_RETURN(Object::Ptr answer,
                      Run("retrieve", uri.ToString(), fields, 200, on_behalf_of));
  return ParseKmsAuthorizationPage(*answer);
}

Result<std::vector<KmsKey>> KmsContext::RetrieveResourceKeys(const std::string& resource_uri,
                                                             const KeyQuery& query,
                                                             const std::string& on_behalf_of) {
  if (query.count < 1 || query.count > 1000) {
    return Error(ErrorCode::kInvalidArgument, "retrieve keys takes a count of 1 to 1000");
  }
  Object fields;
  fields.set("count", static_cast<int>(query.count));
  if (query.bound_after_ms) fields.set("boundAfter", FormatRfc3339Ms(*query.bound_after_ms));
  if (query.bound_before_ms) fields.set("boundBefore", FormatRfc3339Ms(*query.bound_before_ms));
  SR_ASSIGN_OR_RETURN(Object::Ptr answer,
                      Run("retrieve", resource_uri + "/keys", fields, 200, on_behalf_of));
  return ParseKmsKeys(*answer);
}

Result<std::vector<KmsAuthorization>> KmsContext::Authorize(
    const std::string& resource_uri, const std::vector<std::string>& auth_ids,
    const std::string& role) {
  const Object fields = AuthorizeFields(resource_uri, auth_ids, role);
  bool maybe_executed = false;
  Result<Object::Ptr> answer = Run("create", "/authorizations", fields, 201, "", &maybe_executed);
  if (Unsettled(answer, maybe_executed)) {
    if (Result<KmsResource> now = RetrieveResource(resource_uri); now.ok()) {
      const std::string wanted = role.empty() ? "participant" : role;
      std::vector<KmsAuthorization> found;
      for (const std::string& who : auth_ids) {
        for (const KmsAuthorization& a : now->authorizations) {
          if (a.auth_id == Absolute(who) && a.role == wanted) found.push_back(a);
        }
      }
      if (found.size() == auth_ids.size()) return found;
    }
    answer = Run("create", "/authorizations", fields, 201);
  }
  if (!answer.ok()) return answer.error();
  return ParseKmsAuthorizations(**answer);
}

Result<KmsAuthorization> KmsContext::DeleteAuthorization(const std::string& resource_uri,
                                                         const std::string& auth_id) {
  SR_ASSIGN_OR_RETURN(std::string uri, ByAuthId(cluster_, resource_uri, auth_id));
  bool maybe_executed = false;
  Result<Object::Ptr> answer = Run("delete", uri, Object(), 200, "", &maybe_executed);
  if (Unsettled(answer, maybe_executed)) {
    // Gone is done; so is a resource the caller can no longer see (it removed itself).
    Result<KmsResource> now = RetrieveResource(resource_uri);
    const bool gone =
        now.ok() ? std::none_of(
                       now->authorizations.begin(), now->authorizations.end(),
                       [&](const KmsAuthorization& a) { return a.auth_id == Absolute(auth_id); })
                 : now.error().code() == ErrorCode::kPermissionDenied;
    if (gone) return KmsAuthorization{"", Absolute(resource_uri), auth_id, ""};
    answer = Run("delete", uri, Object(), 200);
  }
  if (!answer.ok()) return answer.error();
  Object::Ptr authorization = (*answer)->getObject("authorization");
  if (!authorization) {
    return Error(ErrorCode::kInvalidArgument, "the KMS's answer has no \"authorization\"");
  }
  return ParseKmsAuthorization(*authorization);
}

Result<SealedRequest> KmsContext::SealCreateResource(const std::vector<std::string>& auth_ids,
                                                     const std::vector<std::string>& key_uris,
                                                     const std::string& resource_uri) {
  return SealFor("create", "/resources", ResourceFields(auth_ids, key_uris, resource_uri), 201);
}

Result<SealedRequest> KmsContext::SealBindKey(const std::string& key_uri,
                                              const std::string& resource_uri) {
  return SealFor("update", key_uri, BindFields(resource_uri), 200);
}

Result<SealedRequest> KmsContext::SealAuthorize(const std::string& resource_uri,
                                                const std::vector<std::string>& auth_ids,
                                                const std::string& role) {
  return SealFor("create", "/authorizations", AuthorizeFields(resource_uri, auth_ids, role), 201);
}

Result<SealedRequest> KmsContext::SealDeleteAuthorization(const std::string& resource_uri,
                                                          const std::string& auth_id) {
  SR_ASSIGN_OR_RETURN(std::string uri, ByAuthId(cluster_, resource_uri, auth_id));
  return SealFor("delete", uri, Object(), 200);
}

}  // namespace strongroom::client
