// The KMS protocol's operations: who the caller of an opened request is (its bearer, and an
// officer's onBehalfOf), what its method and uri name, and the keys, resources and authorizations
// it reads or changes, each change one transaction with its audit record. How a message is opened
// and its answer sealed is the channel's (kms_channels.h); this file begins where the channel
// hands over the request's plaintext.
#include "strongroom/kms/kms_service.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <algorithm>
#include <set>
#include <utility>

#include "kms_channels.h"
#include "kms_messages.h"
#include "strongroom/common/kms_uri.h"
#include "strongroom/common/rfc3339.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/kms/audit_checkpointer.h"
#include "strongroom/kms/audit_log.h"
#include "strongroom/kms/audit_writer.h"
#include "strongroom/kms/key_cache.h"
#include "strongroom/kms/kms_store.h"
#include "strongroom/kms/message_json.h"
#include "strongroom/kms/metrics.h"
#include "strongroom/kms/org_policy.h"
#include "strongroom/kms/search_keys.h"

namespace strongroom::kms {

using internal::Answer;
using internal::NewUri;
using internal::Rfc3339;

namespace {

using Poco::JSON::Object;

// Poco counts true and false as integers; a count is a JSON number without a fraction.
bool IsWholeNumber(const Object& object, const char* name) {
  if (!object.has(name)) return false;
  const Poco::Dynamic::Var& value = object.get(name);
  return value.isInteger() && !value.isBoolean();
}

// Whether `uri` is <cluster>/<kind>/<a UUID in lower-case hex with dashes>, in the form NewUri
// writes (a URI a client proposes is stored as it is).
bool IsOwnUri(const std::string& uri, const std::string& cluster, const std::string& kind) {
  Result<KmsUri> parsed = KmsUri::Parse(uri);
  return parsed.ok() && parsed->cluster() == cluster && parsed->IsUuidItem(kind) &&
         parsed->ToString() == uri;
}

// The strings of a JSON array member, at most `max`; nullopt when absent or malformed.
std::optional<std::vector<std::string>> StringArray(const Object& request, const char* name,
                                                    std::size_t max) {
  if (!request.has(name)) return std::vector<std::string>();
  Poco::JSON::Array::Ptr array = request.getArray(name);
  if (!array || array->size() > max) return std::nullopt;
  std::vector<std::string> out;
  for (unsigned i = 0; i < static_cast<unsigned>(array->size()); ++i) {
    if (!array->get(i).isString()) return std::nullopt;
    std::string value = array->getElement<std::string>(i);
    if (value.empty() || value.size() > 1024) return std::nullopt;
    out.push_back(std::move(value));
  }
  return out;
}

Object KeyJson(const KeyRecord& key, const SecretBytes& material) {
  Object jwk;
  jwk.set("kty", "oct");
  jwk.set("kid", key.uri);
  jwk.set("k", jose::Base64UrlEncode(material.view()));
  Object out;
  out.set("uri", key.uri);
  out.set("jwk", jwk);
  out.set("userId", key.creator);
  out.set("clientId", key.client_id);
  out.set("createDate", Rfc3339(key.created_ms));
  if (key.resource_uri) {
    out.set("resourceUri", *key.resource_uri);
    out.set("bindDate", Rfc3339(*key.bound_ms));
    out.set("expirationDate", Rfc3339(*key.stop_encrypt_ms));
  } else {
    out.set("expirationDate", Rfc3339(key.bind_deadline_ms));
  }
  return out;
}

}  // namespace

// The operation a request names, from its method and (absolute) uri.
struct KmsService::Route {
  enum class Op {
    kPing,
    kCreateKeys,
    kRetrieveKey,
    kBindKey,
    kCreateResource,
    kRetrieveResource,
    kRetrieveResourceKeys,
    kCreateAuthorizations,
    kListAuthorizations,
    kDeleteAuthorization,
    kDeleteAuthorizationByAuthId,
    kDeleteEcdhe,
    kRetrieveSearchKey,
    kListUserAuthorizations,
    kUnknown,
  };
  Op op = Op::kUnknown;
  std::string target;                  // the key, resource, authorization or ecdhe URI
  std::optional<std::string> auth_id;  // ?authId=<x>
  const char* metric = "other";
  bool read_only() const {
    return op == Op::kRetrieveKey || op == Op::kRetrieveResource ||
           op == Op::kRetrieveResourceKeys || op == Op::kListAuthorizations ||
           op == Op::kRetrieveSearchKey || op == Op::kListUserAuthorizations;
  }
};

struct KmsService::Caller {
  std::string user;   // whose rights apply: the authenticated user, or whom an officer acts for
  std::string actor;  // the authenticated user
  std::string org;
  std::string client_id;
  std::string request_id;
  // The record that the request was executed, until it is committed; the first audit record of
  // the request carries it.
  std::optional<ExecutedRequest>* unrecorded = nullptr;
  bool on_behalf() const { return user != actor; }
  std::string Detail(const std::string& more = {}) const {
    // On behalf first, in AuditLog's form: `kmsctl audit query --user` finds it there.
    std::string detail =
        on_behalf() ? AuditLog::OnBehalfOf(user) + ", client " + client_id : "client " + client_id;
    if (!more.empty()) detail += ", " + more;
    return detail;
  }
};

namespace {

// Whether `uri` is <cluster>/resources/<id>, in the form the KMS writes and looks up.
bool IsResourceUri(const std::string& uri, const std::string& cluster) {
  Result<KmsUri> parsed = KmsUri::Parse(uri);
  return parsed.ok() && parsed->cluster() == cluster && parsed->IsItem("resources") &&
         parsed->ToString() == uri;
}

constexpr const char* kRoles[] = {"participant", "cloudAgent", "orgAgent"};

}  // namespace

Result<std::unique_ptr<KmsService>> KmsService::New(KmsServiceConfig config, hsm::Vault& vault,
                                                    Database& db, JwtVerifier verifier, Clock clock,
                                                    KmsServiceHooks hooks) {
  if (config.host.empty() || config.host.find_first_of("/?# ") != std::string::npos) {
    return Error(ErrorCode::kInvalidArgument, "the KMS host name is empty or malformed");
  }
  if (vault.Tokens().empty()) return Error(ErrorCode::kInvalidArgument, "no HSM token");
  if (!clock) clock = UnixNowMs;
  if (config.audit_checkpoint_records < 1 ||
      config.audit_checkpoint_records > kAuditCheckpointRecords ||
      config.audit_checkpoint_interval <= std::chrono::milliseconds(0)) {
    return Error(ErrorCode::kInvalidArgument,
                 "audit checkpoints are signed every 1 to 1000 records and a positive interval");
  }
  SR_ASSIGN_OR_RETURN(std::unique_ptr<KmsIdentities> identities,
                      KmsIdentities::New(vault, "kms://" + config.host, config.identity_key,
                                         config.identity_chains));
  return std::unique_ptr<KmsService>(new KmsService(std::move(config), vault, std::move(identities),
                                                    db, std::move(verifier), std::move(clock),
                                                    hooks));
}

KmsService::KmsService(KmsServiceConfig config, hsm::Vault& vault,
                       std::unique_ptr<KmsIdentities> identities, Database& db,
                       JwtVerifier verifier, Clock clock, KmsServiceHooks hooks)
    : config_(std::move(config)),
      cluster_("kms://" + config_.host),
      vault_(vault),
      identities_(std::move(identities)),
      db_(db),
      verifier_(std::move(verifier)),
      clock_(std::move(clock)),
      hooks_(hooks),
      checkpoints_(std::make_unique<AuditCheckpointer>(
          db, AuditCheckpointerOptions{cluster_,
                                       [this] {
                                         // The identity in service signs, and its kid says so.
                                         KmsIdentities::IdentityPtr identity =
                                             identities_->Current();
                                         return CheckpointKey{
                                             identity->thumbprint,
                                             [this, identity](std::span<const std::uint8_t> in) {
                                               return identities_->Sign(*identity, in);
                                             }};
                                       },
                                       config_.audit_checkpoint_records,
                                       config_.audit_checkpoint_interval,
                                       clock_,
                                       {}})),
      audit_(std::make_unique<AuditWriter>(
          db, Database::Durability::kDeferred, std::chrono::milliseconds(50),
          [checkpoints = checkpoints_.get()](std::size_t n) { checkpoints->Appended(n); })),
      channels_(std::make_unique<internal::KmsChannels>(
          internal::KmsChannels::Options{cluster_, config_.metadata_cache_entries,
                                         config_.metadata_cache_age,
                                         config_.max_requests_per_channel},
          vault_, *identities_, db, verifier_, clock_, *audit_,
          hooks_.channel_key_cache != nullptr ? hooks_.channel_key_cache : hooks_.key_cache)),
      search_keys_(std::make_unique<SearchKeys>(cluster_, vault_, db, clock_)),
      bound_keys_(config_.metadata_cache_entries, config_.metadata_cache_age),
      roles_(config_.metadata_cache_entries, config_.metadata_cache_age) {}

std::string KmsService::InfoJson() const { return identities_->Current()->info_json; }

jose::PublicJwk KmsService::PublicKey() const { return identities_->Current()->jwk; }

ServingHealth KmsService::Health() const { return CheckServingHealth(vault_, db_); }

KmsService::~KmsService() = default;

KmsReply KmsService::Handle(std::string_view message) {
  const auto started = std::chrono::steady_clock::now();
  std::string operation = "unsealed";
  KmsReply reply;
  try {
    if (message.empty() || message.size() > kMaxKmsMessageBytes) {
      reply = internal::PlainError(413, "message_size", "a KMS message is 1 byte to 256 KiB");
    } else if (Result<jose::JoseHeader> header = jose::PeekHeader(message);
               !header.ok() || header->part_count != 5) {
      reply = internal::PlainError(400, "not_jwe", "a KMS message is a compact JWE");
    } else if (header->alg == "RSA-OAEP") {
      operation = "create_ecdhe";
      reply = channels_->Create(message, &operation);
    } else if (header->alg == "dir" && header->kid) {
      reply = channels_->Open(
          message, *header->kid, &operation,
          [this](const SecretBytes& plaintext, const EphemeralKeyRecord& channel,
                 std::optional<ExecutedRequest>* unrecorded, std::string* executed) {
            return Execute(plaintext, channel, unrecorded, executed);
          });
    } else {
      reply = internal::PlainError(400, "algorithm",
                                   "a KMS message is RSA-OAEP (create /ecdhe) or dir");
    }
  } catch (const std::exception&) {
    reply = internal::PlainError(500, "internal", "the KMS failed to process the message");
  }
  if (hooks_.metrics) {
    hooks_.metrics->RecordRequest(operation, reply.http_status,
                                  std::chrono::steady_clock::now() - started);
  }
  return reply;
}

Result<SecretBytes> KmsService::UnwrapCached(const std::string& org, const std::string& uri,
                                             const std::vector<hsm::TokenBlob>& blobs,
                                             KeyCache* cache) {
  if (cache != nullptr) {
    if (std::optional<SecretBytes> hit = cache->Get(uri)) return std::move(*hit);
  }
  SR_ASSIGN_OR_RETURN(SecretBytes key, vault_.Unwrap({org, uri}, blobs));
  if (cache != nullptr) cache->Put(uri, key.view());
  return key;
}

internal::SealedAnswer KmsService::Execute(const SecretBytes& plaintext,
                                           const EphemeralKeyRecord& ephemeral,
                                           std::optional<ExecutedRequest>* unrecorded,
                                           std::string* operation) {
  Result<internal::Request> request = internal::ParseRequest(plaintext, cluster_);
  if (!request.ok()) {
    return Answer(400, internal::RequestIdOf(plaintext), request.error().message());
  }
  const internal::Request& r = *request;
  Result<VerifiedJwt> user = verifier_.Verify(r.bearer);
  if (!user.ok()) return Answer(401, r.request_id, "user authentication failed");
  if (user->subject() != ephemeral.user_id || user->org() != ephemeral.org) {
    return Answer(403, r.request_id, "the ephemeral key belongs to another user");
  }

  // What the request names.
  Route route;
  // A uri that is not a well-formed KMS URI (an invalid percent escape, a query other than one
  // authId) answers 400; a well-formed one that names nothing here, 404.
  Result<KmsUri> named = KmsUri::Parse(r.uri, cluster_);
  if (!named.ok() && named.error().code() != ErrorCode::kNotFound) {
    return Answer(400, r.request_id, named.error().message());
  }
  const KmsUri* parts = named.ok() && named->cluster() == cluster_ ? &*named : nullptr;
  if (parts && !parts->auth_id()) {
    const std::string& m = r.method;
    const std::string& c = parts->collection();
    const std::string target = parts->ToString();
    const bool item = !parts->id().empty() && parts->sub().empty();
    const bool top = parts->id().empty();
    using Op = Route::Op;
    if (m == "update" && c == "ping" && top) route = {Op::kPing, "", {}, "ping"};
    if (m == "create" && c == "keys" && top) route = {Op::kCreateKeys, "", {}, "create_keys"};
    if (m == "retrieve" && c == "keys" && item)
      route = {Op::kRetrieveKey, target, {}, "retrieve_key"};
    if (m == "update" && c == "keys" && item) route = {Op::kBindKey, target, {}, "update_key"};
    if (m == "create" && c == "resources" && top) {
      route = {Op::kCreateResource, "", {}, "create_resource"};
    }
    if (m == "retrieve" && c == "resources" && item) {
      route = {Op::kRetrieveResource, target, {}, "retrieve_resource"};
    }
    const std::string resource = cluster_ + "/resources/" + parts->id();
    if (m == "retrieve" && c == "resources" && parts->sub() == "keys") {
      route = {Op::kRetrieveResourceKeys, resource, {}, "retrieve_keys"};
    }
    if (m == "retrieve" && c == "resources" && parts->sub() == "authorizations") {
      route = {Op::kListAuthorizations, resource, {}, "retrieve_authorizations"};
    }
    if (m == "create" && c == "authorizations" && top) {
      route = {Op::kCreateAuthorizations, "", {}, "create_authorizations"};
    }
    if (m == "delete" && c == "authorizations" && item) {
      route = {Op::kDeleteAuthorization, target, {}, "delete_authorization"};
    }
    if (m == "delete" && c == "ecdhe" && item)
      route = {Op::kDeleteEcdhe, target, {}, "delete_ecdhe"};
    // The current search key (top), or one version (/search-keys/<org>/<version>).
    if (m == "retrieve" && c == "search-keys" && (top || !parts->sub().empty())) {
      route = {Op::kRetrieveSearchKey, top ? "" : target, {}, "retrieve_search_key"};
    }
    if (m == "retrieve" && c == "authorizations" && top) {
      route = {Op::kListUserAuthorizations, "", {}, "retrieve_user_authorizations"};
    }
  } else if (parts && parts->collection() == "authorizations" && parts->id().empty()) {
    if (r.method == "retrieve") {
      route = {Route::Op::kListUserAuthorizations, "", parts->auth_id(),
               "retrieve_user_authorizations"};
    }
  } else if (parts && parts->collection() == "resources" && !parts->id().empty()) {
    const std::string resource = cluster_ + "/resources/" + parts->id();
    if (parts->sub() == "authorizations" && r.method == "retrieve") {
      route = {Route::Op::kListAuthorizations, resource, parts->auth_id(),
               "retrieve_authorizations"};
    }
    if (parts->sub() == "authorizations" && r.method == "delete") {
      route = {Route::Op::kDeleteAuthorizationByAuthId, resource, parts->auth_id(),
               "delete_authorization"};
    }
  }
  *operation = route.metric;
  if (route.op == Route::Op::kUnknown) {
    return Answer(404, r.request_id, "unknown method or uri");
  }

  Caller caller{user->subject(), user->subject(), user->org(),
                r.client_id,     r.request_id,    unrecorded};
  // Compliance: {credential: {onBehalfOf: <user>, userId: <user>, bearer: <officer's token>}}.
  if (r.on_behalf) {
    Object::Ptr credential = r.Json().getObject("client")->getObject("credential");
    const Poco::Dynamic::Var target = credential->get("onBehalfOf");
    const std::string target_user = target.isString() ? target.convert<std::string>() : "";
    if (target_user.empty() || target_user.size() > 256 ||
        (credential->has("userId") && credential->get("userId").toString() != target_user)) {
      return Answer(400, r.request_id, "onBehalfOf must name one user (and match userId)");
    }
    Result<OrgPolicy> policy = OrgPolicy{};
    Status read_policy = db_.WithSession([&](Poco::Data::Session& s) -> Status {
      policy = PolicyStore::Get(s, caller.org);
      return policy.ok() ? OkStatus() : policy.error();
    });
    if (!read_policy.ok()) return Answer(503, r.request_id, "the KMS database is unavailable");
    caller.user = target_user;
    if (!policy->IsComplianceOfficer(caller.actor) || !route.read_only()) {
      (void)Audit(caller, "compliance.retrieve", route.target, "", "denied",
                  route.read_only() ? "not a compliance officer" : "only retrievals on behalf");
      return Answer(403, r.request_id,
                    "onBehalfOf is for the organization's compliance officers, and "
                    "only for retrievals");
    }
  }

  if (route.op == Route::Op::kPing) return Answer(200, r.request_id);
  if (!route.read_only()) {
    // A write is recorded before it executes: a crash between the two leaves it refused as a
    // replay, never done twice.
    Status recorded = audit_->Append(**unrecorded);
    if (!recorded.ok()) {
      return Answer(503, r.request_id, "the KMS could not record the request; retry later");
    }
    unrecorded->reset();
  }
  if (route.op == Route::Op::kDeleteEcdhe) {
    if (route.target != ephemeral.uri) {
      return Answer(403, r.request_id, "only the channel's own ephemeral key can be deleted");
    }
    Status deleted = channels_->Delete(ephemeral.uri);
    if (!deleted.ok()) return Answer(HttpStatusFor(deleted.error().code()), r.request_id);
    return Answer(204, r.request_id);
  }
  // A retrieval reads nothing more of the request: a plain one is never parsed into a tree.
  if (route.op == Route::Op::kRetrieveKey) return RetrieveKey(caller, route.target);
  return Dispatch(caller, route, r.Json());
}

Object KmsService::Dispatch(const Caller& caller, const Route& route, const Object& request) {
  using Op = Route::Op;
  switch (route.op) {
    case Op::kCreateKeys:
      return CreateKeys(caller, request);
    case Op::kBindKey:
      return BindKey(caller, route.target, request);
    case Op::kCreateResource:
      return CreateResource(caller, request);
    case Op::kRetrieveResource:
      return RetrieveResource(caller, route.target);
    case Op::kRetrieveResourceKeys:
      return RetrieveResourceKeys(caller, route.target, request);
    case Op::kCreateAuthorizations:
      return CreateAuthorizations(caller, request);
    case Op::kListAuthorizations:
      return ListAuthorizations(caller, route.target, route.auth_id);
    case Op::kDeleteAuthorization:
      return DeleteAuthorization(caller, route.target, std::nullopt);
    case Op::kRetrieveSearchKey:
      return RetrieveSearchKey(caller, route);
    case Op::kListUserAuthorizations:
      return ListUserAuthorizations(caller, route.auth_id, request);
    case Op::kDeleteAuthorizationByAuthId:
      if (!route.auth_id) {
        return Answer(400, caller.request_id, "delete by resource needs ?authId=<id>");
      }
      return DeleteAuthorization(caller, route.target, route.auth_id);
    default:  // kRetrieveKey: Execute calls RetrieveKey itself
      return Answer(404, caller.request_id, "unknown method or uri");
  }
}

Status KmsService::Audit(const Caller& caller, std::string action, std::string resource,
                         std::string key, std::string outcome, std::string detail) {
  AuditRecord record{0,
                     clock_(),
                     caller.org,
                     caller.actor,
                     std::move(action),
                     std::move(resource),
                     std::move(key),
                     std::move(outcome),
                     caller.Detail(detail)};
  // A retrieval or refusal changes nothing else: its record joins the next group commit.
  std::optional<ExecutedRequest> executed;
  if (caller.unrecorded != nullptr) executed = std::exchange(*caller.unrecorded, std::nullopt);
  Status appended = audit_->Append(std::move(record), executed);
  if (!appended.ok() && executed) *caller.unrecorded = std::move(executed);
  return appended;
}

Object KmsService::CreateKeys(const Caller& caller, const Object& request) {
  if (!IsWholeNumber(request, "count")) {
    return Answer(400, caller.request_id, "count must be a whole number");
  }
  const long long count = request.getValue<long long>("count");
  if (count < 1 || count > static_cast<long long>(kMaxKeysPerRequest)) {
    return Answer(400, caller.request_id, "count must be 1 to 100");
  }
  Result<OrgPolicy> policy = OrgPolicy{};
  Status read = db_.WithSession([&](Poco::Data::Session& s) -> Status {
    policy = PolicyStore::Get(s, caller.org);
    return policy.ok() ? OkStatus() : policy.error();
  });
  if (!read.ok()) return Answer(503, caller.request_id, "the KMS database is unavailable");
  const std::int64_t now_ms = clock_();
  std::vector<KeyRecord> keys;
  std::vector<SecretBytes> material;
  for (long long i = 0; i < count; ++i) {
    KeyRecord key;
    key.uri = NewUri(cluster_, "keys");
    key.org = caller.org;
    key.creator = caller.user;
    key.client_id = caller.client_id;
    key.created_ms = now_ms;
    key.bind_deadline_ms = now_ms + policy->bind_deadline_s * 1000;
    material.push_back(SecretBytes::Random(hsm::kWrappedKeyPlainSize));
    Result<hsm::WrapResult> wrapped = vault_.Wrap({key.org, key.uri}, material.back().view());
    if (!wrapped.ok()) {
      return Answer(HttpStatusFor(wrapped.error().code()), caller.request_id,
                    "the KMS could not protect new keys");
    }
    key.blobs = std::move(wrapped->blobs);
    keys.push_back(std::move(key));
  }
  Status stored = audit_->Write([&](Poco::Data::Session& s) -> Status {
    SR_RETURN_IF_ERROR(KmsStore::InsertKeys(s, keys));
    AuditRecord record{0,           now_ms,       caller.org,
                       caller.user, "key.create", "",
                       "",          "ok",         caller.Detail(std::to_string(count) + " keys")};
    return AuditLog::Append(s, record);
  });
  if (!stored.ok()) return Answer(503, caller.request_id, "the KMS database is unavailable");
  Poco::JSON::Array out;
  for (std::size_t i = 0; i < keys.size(); ++i) out.add(KeyJson(keys[i], material[i]));
  Object answer = Answer(201, caller.request_id);
  answer.set("keys", out);
  return answer;
}

internal::SealedAnswer KmsService::RetrieveKey(const Caller& caller, const std::string& uri) {
  // The hot path: a bound key's record and the caller's role usually come from memory.
  std::optional<KeyRecord> key = bound_keys_.Get(uri);
  std::optional<std::string> role;
  bool role_known = false;
  if (key && key->org == caller.org) {
    if (auto cached = roles_.Get(*key->resource_uri + "\n" + caller.user)) {
      role = *cached;
      role_known = true;
    }
  }
  if (!key || (key->org == caller.org && !role_known)) {
    const std::uint64_t key_generation = bound_keys_.generation();
    const std::uint64_t role_generation = roles_.generation();
    Status read = db_.WithSession([&](Poco::Data::Session& s) -> Status {
      SR_ASSIGN_OR_RETURN(key, KmsStore::FindKey(s, uri));
      if (key && key->resource_uri && key->org == caller.org) {
        SR_ASSIGN_OR_RETURN(role, KmsStore::RoleOf(s, *key->resource_uri, caller.user));
      }
      return OkStatus();
    });
    if (!read.ok()) return Answer(503, caller.request_id, "the KMS database is unavailable");
    if (key && key->resource_uri) {  // bound keys never change (but for rewrapped blobs)
      bound_keys_.Put(uri, *key, key_generation);
      if (key->org == caller.org) {
        roles_.Put(*key->resource_uri + "\n" + caller.user, role, role_generation);
      }
    }
  }
  // An unbound key goes to its creator only, never on behalf of someone.
  const bool allowed =
      key && key->org == caller.org &&
      (key->resource_uri ? role.has_value() : key->creator == caller.user && !caller.on_behalf());
  if (!allowed) {
    // Unknown and forbidden look the same to the caller; the audit log tells them apart.
    (void)Audit(caller, "key.retrieve", key && key->resource_uri ? *key->resource_uri : "", uri,
                key ? "denied" : "not found");
    return Answer(403, caller.request_id, "not authorized for this key");
  }
  Result<SecretBytes> material = UnwrapCached(key->org, key->uri, key->blobs, hooks_.key_cache);
  if (!material.ok()) {
    (void)Audit(caller, "key.retrieve", key->resource_uri.value_or(""), uri,
                "failed: " + std::string(ErrorCodeName(material.error().code())));
    return Answer(HttpStatusFor(material.error().code()), caller.request_id,
                  "the KMS could not open the key");
  }
  // No key leaves before its retrieval is in the audit log.
  if (!Audit(caller, "key.retrieve", key->resource_uri.value_or(""), uri, "ok",
             role ? "as " + *role : "")
           .ok()) {
    return Answer(503, caller.request_id, "the KMS could not audit the retrieval; retry later");
  }
  return internal::SealedAnswer(caller.request_id,
                                RetrievedKeyAnswer(caller.request_id, *key, material->view()));
}

Object KmsService::BindKey(const Caller& caller, const std::string& uri, const Object& request) {
  if (!request.has("resourceUri") || !request.get("resourceUri").isString()) {
    return Answer(400, caller.request_id, "binding a key needs resourceUri");
  }
  std::string resource = request.getValue<std::string>("resourceUri");
  if (!resource.empty() && resource.front() == '/') resource = cluster_ + resource;
  if (!IsResourceUri(resource, cluster_)) {
    return Answer(400, caller.request_id, "resourceUri is not a resource of this KMS");
  }
  const std::int64_t now_ms = clock_();
  KeyRecord bound;
  Status done = audit_->Write([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(std::optional<KeyRecord> key, KmsStore::FindKey(s, uri));
    SR_ASSIGN_OR_RETURN(std::optional<ResourceRecord> found, KmsStore::FindResource(s, resource));
    std::optional<std::string> role;
    if (found && found->org == caller.org) {
      SR_ASSIGN_OR_RETURN(role, KmsStore::RoleOf(s, resource, caller.user));
    }
    if (!key || key->org != caller.org || key->creator != caller.user) {
      return Error(ErrorCode::kPermissionDenied, "the key is not the caller's");
    }
    if (!found || role != "participant") {
      return Error(ErrorCode::kPermissionDenied, "the caller is not a participant of the resource");
    }
    if (key->resource_uri) return Error(ErrorCode::kFailedPrecondition, "the key is bound already");
    if (now_ms >= key->bind_deadline_ms) {
      return Error(ErrorCode::kFailedPrecondition, "the key passed its bind deadline");
    }
    SR_ASSIGN_OR_RETURN(OrgPolicy policy, PolicyStore::Get(s, caller.org));
    const std::int64_t stop_ms = now_ms + policy.encrypt_lifetime_s * 1000;
    SR_RETURN_IF_ERROR(KmsStore::BindKey(s, uri, resource, now_ms, stop_ms));
    bound = std::move(*key);
    bound.resource_uri = resource;
    bound.bound_ms = now_ms;
    bound.stop_encrypt_ms = stop_ms;
    AuditRecord record{0,        now_ms, caller.org, caller.user,    "key.bind",
                       resource, uri,    "ok",       caller.Detail()};
    return AuditLog::Append(s, record);
  });
  if (!done.ok()) {
    (void)Audit(caller, "key.bind", resource, uri, "refused: " + done.error().message());
    return Answer(HttpStatusFor(done.error().code()), caller.request_id, done.error().message());
  }
  Result<SecretBytes> material = UnwrapCached(bound.org, bound.uri, bound.blobs, hooks_.key_cache);
  if (!material.ok()) {
    return Answer(HttpStatusFor(material.error().code()), caller.request_id,
                  "the key is bound, but the KMS could not open it now; retrieve it later");
  }
  Object answer = Answer(200, caller.request_id);
  answer.set("key", KeyJson(bound, *material));
  return answer;
}

namespace {

// A resource used as an authId lends its members; it must be a resource of the same organization.
// Any other authId is a user id.
Status CheckAuthId(Poco::Data::Session& s, const std::string& auth_id, const std::string& org) {
  if (auth_id.rfind("kms://", 0) != 0) return OkStatus();
  SR_ASSIGN_OR_RETURN(std::optional<ResourceRecord> other, KmsStore::FindResource(s, auth_id));
  if (!other || other->org != org) {
    return Error(ErrorCode::kInvalidArgument,
                 "authId " + auth_id + " is not a resource of this organization");
  }
  return OkStatus();
}

}  // namespace

Object KmsService::CreateResource(const Caller& caller, const Object& request) {
  std::optional<std::vector<std::string>> auth_ids =
      StringArray(request, "authIds", kMaxIdsPerRequest);
  // The Webex SDK sends userIds; the draft says authIds.
  if (auth_ids && auth_ids->empty() && request.has("userIds")) {
    auth_ids = StringArray(request, "userIds", kMaxIdsPerRequest);
  }
  std::optional<std::vector<std::string>> key_uris =
      StringArray(request, "keyUris", kMaxIdsPerRequest);
  if (!auth_ids || !key_uris) {
    return Answer(400, caller.request_id,
                  "authIds and keyUris must be arrays of at most 1000 non-empty strings");
  }
  for (std::string& key_uri : *key_uris) {
    if (key_uri.front() == '/') key_uri = cluster_ + key_uri;
  }
  // A client may name the new resource itself (kms://<host>/resources/<random UUID>), so that a
  // conversation created at the core in the same operation can carry the resource's URI; the KMS
  // never reuses one.
  std::string uri = NewUri(cluster_, "resources");
  if (request.has("resourceUri")) {
    const Poco::Dynamic::Var& proposed = request.get("resourceUri");
    if (!proposed.isString() || !IsOwnUri(proposed.extract<std::string>(), cluster_, "resources")) {
      return Answer(400, caller.request_id,
                    "resourceUri must be " + cluster_ + "/resources/<UUID in lower-case hex>");
    }
    uri = proposed.extract<std::string>();
  }
  const std::int64_t now_ms = clock_();
  ResourceRecord resource{uri, caller.org, caller.user, now_ms, {}};
  std::vector<AuthorizationRecord> authorizations;
  std::set<std::string> seen;
  auto authorize = [&](const std::string& who, const char* role) {
    if (!seen.insert(who).second) return;
    authorizations.push_back(
        {NewUri(cluster_, "authorizations"), resource.uri, who, role, caller.user, now_ms});
  };
  authorize(caller.user, "participant");
  for (std::string& who : *auth_ids) {
    if (who.front() == '/') who = cluster_ + who;
    authorize(who, "participant");
  }
  std::vector<KeyRecord> bound;
  Status created = audit_->Write([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(OrgPolicy policy, PolicyStore::Get(s, caller.org));
    if (policy.indexer && policy.indexer_cloud_agent) authorize(*policy.indexer, "cloudAgent");
    for (const AuthorizationRecord& a : authorizations) {
      SR_RETURN_IF_ERROR(CheckAuthId(s, a.auth_id, caller.org));
    }
    SR_ASSIGN_OR_RETURN(std::optional<ResourceRecord> existing,
                        KmsStore::FindResource(s, resource.uri));
    if (existing) return Error(ErrorCode::kAlreadyExists, "the resource exists already");
    SR_RETURN_IF_ERROR(KmsStore::InsertResource(s, resource));
    SR_RETURN_IF_ERROR(KmsStore::InsertAuthorizations(s, authorizations));
    for (const std::string& key_uri : *key_uris) {
      SR_ASSIGN_OR_RETURN(std::optional<KeyRecord> key, KmsStore::FindKey(s, key_uri));
      if (!key || key->org != caller.org || key->creator != caller.user) {
        return Error(ErrorCode::kPermissionDenied, "key " + key_uri + " is not the caller's");
      }
      if (key->resource_uri) {
        return Error(ErrorCode::kFailedPrecondition, "key " + key_uri + " is bound already");
      }
      if (now_ms >= key->bind_deadline_ms) {
        return Error(ErrorCode::kFailedPrecondition,
                     "key " + key_uri + " passed its bind deadline");
      }
      const std::int64_t stop_ms = now_ms + policy.encrypt_lifetime_s * 1000;
      SR_RETURN_IF_ERROR(KmsStore::BindKey(s, key_uri, resource.uri, now_ms, stop_ms));
    }
    AuditRecord record{0,
                       now_ms,
                       caller.org,
                       caller.user,
                       "resource.create",
                       resource.uri,
                       "",
                       "ok",
                       caller.Detail(std::to_string(authorizations.size()) + " authorizations, " +
                                     std::to_string(key_uris->size()) + " keys bound")};
    return AuditLog::Append(s, record);
  });
  roles_.Invalidate();  // a resource named as an authId elsewhere may have gained members
  if (!created.ok()) {
    (void)Audit(caller, "resource.create", "", "", "refused: " + created.error().message());
    return Answer(HttpStatusFor(created.error().code()), caller.request_id,
                  created.error().message());
  }
  Poco::JSON::Array authorization_uris, bound_uris;
  for (const AuthorizationRecord& a : authorizations) authorization_uris.add(a.uri);
  for (const std::string& key_uri : *key_uris) bound_uris.add(key_uri);
  Object out;
  out.set("uri", resource.uri);
  out.set("createDate", Rfc3339(resource.created_ms));
  out.set("authorizationUris", authorization_uris);
  out.set("keyUris", bound_uris);
  Object answer = Answer(201, caller.request_id);
  answer.set("resource", out);
  return answer;
}

namespace {

Object AuthorizationJson(const AuthorizationRecord& a) {
  Object out;
  out.set("uri", a.uri);
  out.set("resourceUri", a.resource_uri);
  out.set("authId", a.auth_id);
  out.set("roleUri", a.role);
  out.set("createDate", Rfc3339(a.created_ms));
  return out;
}

// The caller's role on a resource of its own organization, or nullopt.
Result<std::optional<std::string>> RoleOn(Poco::Data::Session& s, const std::string& resource,
                                          const std::string& org, const std::string& user,
                                          std::optional<ResourceRecord>* found = nullptr) {
  SR_ASSIGN_OR_RETURN(std::optional<ResourceRecord> record, KmsStore::FindResource(s, resource));
  if (found) *found = record;
  if (!record || record->org != org) return std::optional<std::string>();
  return KmsStore::RoleOf(s, resource, user);
}

}  // namespace

Object KmsService::RetrieveResource(const Caller& caller, const std::string& resource) {
  std::optional<ResourceRecord> found;
  std::vector<AuthorizationRecord> authorizations;
  std::vector<KeyRecord> keys;
  Status read = db_.WithSession([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(std::optional<std::string> role,
                        RoleOn(s, resource, caller.org, caller.user, &found));
    if (!role) return Error(ErrorCode::kPermissionDenied, "not authorized on this resource");
    SR_ASSIGN_OR_RETURN(authorizations, KmsStore::Authorizations(s, resource));
    KeyQuery all;
    all.count = kMaxKeysPerRetrieval;
    SR_ASSIGN_OR_RETURN(keys, KmsStore::KeysOfResource(s, resource, all));
    return OkStatus();
  });
  if (!read.ok()) {
    if (read.error().code() == ErrorCode::kPermissionDenied) {
      (void)Audit(caller, "resource.retrieve", resource, "", "denied");
    }
    return Answer(HttpStatusFor(read.error().code()), caller.request_id, read.error().message());
  }
  Poco::JSON::Array authorization_json, key_uris;
  for (const AuthorizationRecord& a : authorizations) authorization_json.add(AuthorizationJson(a));
  for (const KeyRecord& k : keys) key_uris.add(k.uri);
  Object out;
  out.set("uri", found->uri);
  out.set("createDate", Rfc3339(found->created_ms));
  out.set("authorizations", authorization_json);
  out.set("keyUris", key_uris);
  Object answer = Answer(200, caller.request_id);
  answer.set("resource", out);
  return answer;
}

Object KmsService::RetrieveResourceKeys(const Caller& caller, const std::string& resource,
                                        const Object& request) {
  KeyQuery query;
  for (const char* name : {"boundAfter", "boundBefore"}) {
    if (!request.has(name)) continue;
    std::optional<std::int64_t> ms;
    if (request.get(name).isString()) ms = ParseRfc3339Ms(request.getValue<std::string>(name));
    if (!ms) return Answer(400, caller.request_id, std::string(name) + " must be RFC 3339");
    (std::string_view(name) == "boundAfter" ? query.bound_after_ms : query.bound_before_ms) = ms;
  }
  if (request.has("count")) {
    const long long count =
        IsWholeNumber(request, "count") ? request.getValue<long long>("count") : 0;
    if (count < 1 || count > static_cast<long long>(kMaxKeysPerRetrieval)) {
      return Answer(400, caller.request_id, "count must be 1 to 1000");
    }
    query.count = static_cast<std::size_t>(count);
  }
  std::vector<KeyRecord> keys;
  std::optional<std::string> role;
  Status read = db_.WithSession([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(role, RoleOn(s, resource, caller.org, caller.user));
    if (!role) return Error(ErrorCode::kPermissionDenied, "not authorized on this resource");
    SR_ASSIGN_OR_RETURN(keys, KmsStore::KeysOfResource(s, resource, query));
    return OkStatus();
  });
  if (!read.ok()) {
    if (read.error().code() == ErrorCode::kPermissionDenied) {
      (void)Audit(caller, "key.retrieve", resource, "", "denied");
    }
    return Answer(HttpStatusFor(read.error().code()), caller.request_id, read.error().message());
  }
  Poco::JSON::Array out;
  for (const KeyRecord& key : keys) {
    Result<SecretBytes> material = UnwrapCached(key.org, key.uri, key.blobs, hooks_.key_cache);
    if (!material.ok()) {
      (void)Audit(caller, "key.retrieve", resource, key.uri,
                  "failed: " + std::string(ErrorCodeName(material.error().code())));
      return Answer(HttpStatusFor(material.error().code()), caller.request_id,
                    "the KMS could not open a key");
    }
    out.add(KeyJson(key, *material));
  }
  if (!Audit(caller, "key.retrieve", resource, "", "ok",
             std::to_string(keys.size()) + " keys as " + *role)
           .ok()) {
    return Answer(503, caller.request_id, "the KMS could not audit the retrieval; retry later");
  }
  Object answer = Answer(200, caller.request_id);
  answer.set("keys", out);
  return answer;
}

Object KmsService::CreateAuthorizations(const Caller& caller, const Object& request) {
  std::optional<std::vector<std::string>> auth_ids =
      StringArray(request, "authIds", kMaxIdsPerRequest);
  if (auth_ids && auth_ids->empty() && request.has("userIds")) {
    auth_ids = StringArray(request, "userIds", kMaxIdsPerRequest);
  }
  if (!request.has("resourceUri") || !request.get("resourceUri").isString() || !auth_ids ||
      auth_ids->empty()) {
    return Answer(400, caller.request_id, "resourceUri and 1 to 1000 authIds are required");
  }
  std::string role = "participant";
  if (request.has("roleUri")) {
    role = request.get("roleUri").isString() ? request.getValue<std::string>("roleUri") : "";
    if (std::find(std::begin(kRoles), std::end(kRoles), role) == std::end(kRoles)) {
      return Answer(400, caller.request_id, "roleUri must be participant, cloudAgent or orgAgent");
    }
  }
  std::string resource = request.getValue<std::string>("resourceUri");
  if (!resource.empty() && resource.front() == '/') resource = cluster_ + resource;
  const std::int64_t now_ms = clock_();
  std::vector<AuthorizationRecord> created;
  Status done = audit_->Write([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(std::optional<std::string> mine,
                        RoleOn(s, resource, caller.org, caller.user));
    if (mine != "participant") {
      return Error(ErrorCode::kPermissionDenied, "only participants of the resource authorize");
    }
    SR_ASSIGN_OR_RETURN(OrgPolicy policy, PolicyStore::Get(s, caller.org));
    std::set<std::string> seen;
    for (std::string who : *auth_ids) {
      if (who.front() == '/') who = cluster_ + who;
      if (!seen.insert(who).second) continue;
      if (role == "orgAgent" && !policy.IsComplianceOfficer(who)) {
        return Error(ErrorCode::kPermissionDenied,
                     "orgAgent is only for the organization's compliance officers");
      }
      SR_RETURN_IF_ERROR(CheckAuthId(s, who, caller.org));
      created.push_back(
          {NewUri(cluster_, "authorizations"), resource, who, role, caller.user, now_ms});
    }
    SR_RETURN_IF_ERROR(KmsStore::InsertAuthorizations(s, created));
    AuditRecord record{0,
                       now_ms,
                       caller.org,
                       caller.user,
                       "authorization.create",
                       resource,
                       "",
                       "ok",
                       caller.Detail(std::to_string(created.size()) + " as " + role)};
    return AuditLog::Append(s, record);
  });
  roles_.Invalidate();
  if (!done.ok()) {
    (void)Audit(caller, "authorization.create", resource, "", "refused: " + done.error().message());
    return Answer(HttpStatusFor(done.error().code()), caller.request_id, done.error().message());
  }
  Poco::JSON::Array out;
  for (const AuthorizationRecord& a : created) out.add(AuthorizationJson(a));
  Object answer = Answer(201, caller.request_id);
  answer.set("authorizations", out);
  return answer;
}

Object KmsService::ListAuthorizations(const Caller& caller, const std::string& resource,
                                      const std::optional<std::string>& auth_id) {
  std::vector<AuthorizationRecord> found;
  Status read = db_.WithSession([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(std::optional<std::string> role,
                        RoleOn(s, resource, caller.org, caller.user));
    if (!role) return Error(ErrorCode::kPermissionDenied, "not authorized on this resource");
    SR_ASSIGN_OR_RETURN(found, KmsStore::Authorizations(s, resource, auth_id));
    return OkStatus();
  });
  if (!read.ok()) {
    return Answer(HttpStatusFor(read.error().code()), caller.request_id, read.error().message());
  }
  Poco::JSON::Array out;
  for (const AuthorizationRecord& a : found) out.add(AuthorizationJson(a));
  Object answer = Answer(200, caller.request_id);
  answer.set("authorizations", out);
  return answer;
}

Object KmsService::DeleteAuthorization(const Caller& caller, const std::string& uri,
                                       const std::optional<std::string>& auth_id) {
  std::optional<AuthorizationRecord> deleted;
  const std::int64_t now_ms = clock_();
  Status done = audit_->Write([&](Poco::Data::Session& s) -> Status {
    if (auth_id) {  // uri is the resource
      SR_ASSIGN_OR_RETURN(std::vector<AuthorizationRecord> matching,
                          KmsStore::Authorizations(s, uri, auth_id));
      if (!matching.empty()) deleted = matching.front();
    } else {
      SR_ASSIGN_OR_RETURN(deleted, KmsStore::FindAuthorization(s, uri));
    }
    std::optional<std::string> role;
    if (deleted) {
      SR_ASSIGN_OR_RETURN(role, RoleOn(s, deleted->resource_uri, caller.org, caller.user));
    }
    // A participant removes anyone; anyone may remove their own authorization (leave).
    if (!deleted || !role || (role != "participant" && deleted->auth_id != caller.user)) {
      return Error(ErrorCode::kPermissionDenied, "not authorized for this authorization");
    }
    SR_RETURN_IF_ERROR(KmsStore::DeleteAuthorization(s, deleted->uri));
    AuditRecord record{0,
                       now_ms,
                       caller.org,
                       caller.user,
                       "authorization.delete",
                       deleted->resource_uri,
                       "",
                       "ok",
                       caller.Detail("authId " + deleted->auth_id)};
    return AuditLog::Append(s, record);
  });
  roles_.Invalidate();
  if (!done.ok()) {
    (void)Audit(caller, "authorization.delete", auth_id ? uri : "", "",
                "refused: " + done.error().message());
    return Answer(HttpStatusFor(done.error().code()), caller.request_id, done.error().message());
  }
  Object answer = Answer(200, caller.request_id);
  answer.set("authorization", AuthorizationJson(*deleted));
  return answer;
}

namespace {

// A search key's version as a URI names it: 1 to 4294967295 in decimal, no leading zero.
std::optional<std::uint32_t> SearchKeyVersion(const std::string& text) {
  if (text.empty() || text.size() > 10 || text.front() == '0' ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  const unsigned long long value = std::stoull(text);
  if (value > 0xffffffffULL) return std::nullopt;
  return static_cast<std::uint32_t>(value);
}

}  // namespace

Object KmsService::RetrieveSearchKey(const Caller& caller, const Route& route) {
  // Which org and version: the caller's own current one, or the one the URI names.
  std::string org = caller.org;
  std::optional<std::uint32_t> version;
  if (!route.target.empty()) {
    Result<KmsUri> named = KmsUri::Parse(route.target);
    if (!named.ok()) return Answer(400, caller.request_id, named.error().message());
    org = named->id();
    version = SearchKeyVersion(named->sub());
    if (!version) {
      return Answer(400, caller.request_id,
                    "a search key's version is a whole number from 1 (/search-keys/<org>/<n>)");
    }
  }
  Result<OrgPolicy> policy = OrgPolicy{};
  Status read_policy = db_.WithSession([&](Poco::Data::Session& s) -> Status {
    policy = PolicyStore::Get(s, caller.org);
    return policy.ok() ? OkStatus() : policy.error();
  });
  if (!read_policy.ok()) return Answer(503, caller.request_id, "the KMS database is unavailable");
  // Only the organization's indexer, in its own name, for its own organization.
  const bool indexer = policy->indexer && *policy->indexer == caller.actor && !caller.on_behalf();
  if (!indexer || org != caller.org) {
    (void)Audit(
        caller, "search-key.retrieve", "", route.target, "denied",
        !indexer ? "not the organization's indexer" : "another organization's key (" + org + ")");
    return Answer(403, caller.request_id,
                  "search keys are for the organization's indexer, of its own organization");
  }
  Result<std::optional<SearchKeyRecord>> key = std::optional<SearchKeyRecord>();
  if (version) {
    key = search_keys_->Find(org, *version);
  } else {
    Result<SearchKeyRecord> current = search_keys_->Current(org, caller.actor);
    key = current.ok() ? Result<std::optional<SearchKeyRecord>>(std::move(current).value())
                       : Result<std::optional<SearchKeyRecord>>(current.error());
  }
  if (!key.ok()) {
    (void)Audit(caller, "search-key.retrieve", "", route.target,
                "failed: " + std::string(ErrorCodeName(key.error().code())));
    return Answer(HttpStatusFor(key.error().code()), caller.request_id,
                  "the KMS could not make or read the search key");
  }
  if (!*key) {
    (void)Audit(caller, "search-key.retrieve", "", route.target, "not found");
    return Answer(404, caller.request_id, "the organization has no such search-key version");
  }
  const SearchKeyRecord& found = **key;
  Result<SecretBytes> material = search_keys_->Open(found);
  if (!material.ok()) {
    (void)Audit(caller, "search-key.retrieve", "", found.uri,
                "failed: " + std::string(ErrorCodeName(material.error().code())));
    return Answer(HttpStatusFor(material.error().code()), caller.request_id,
                  "the KMS could not open the search key");
  }
  // No key leaves before its retrieval is in the audit log.
  if (!Audit(caller, "search-key.retrieve", "", found.uri, "ok",
             "version " + std::to_string(found.version))
           .ok()) {
    return Answer(503, caller.request_id, "the KMS could not audit the retrieval; retry later");
  }
  Object jwk;
  jwk.set("kty", "oct");
  jwk.set("kid", found.uri);
  jwk.set("k", jose::Base64UrlEncode(material->view()));
  Object out;
  out.set("uri", found.uri);
  out.set("version", static_cast<Poco::Int64>(found.version));
  out.set("jwk", jwk);
  out.set("createDate", Rfc3339(found.created_ms));
  Object answer = Answer(200, caller.request_id);
  answer.set("searchKey", out);
  return answer;
}

Object KmsService::ListUserAuthorizations(const Caller& caller,
                                          const std::optional<std::string>& auth_id,
                                          const Object& request) {
  if (!auth_id || auth_id->empty()) {
    return Answer(400, caller.request_id, "retrieve /authorizations needs ?authId=<user>");
  }
  std::size_t limit = kDefaultAuthorizationsPerPage;
  if (request.has("limit")) {
    const long long n = IsWholeNumber(request, "limit") ? request.getValue<long long>("limit") : 0;
    if (n < 1 || n > static_cast<long long>(kMaxAuthorizationsPerPage)) {
      return Answer(400, caller.request_id, "limit must be a whole number from 1 to 1000");
    }
    limit = static_cast<std::size_t>(n);
  }
  std::string cursor;
  if (request.has("cursor")) {
    const Poco::Dynamic::Var& value = request.get("cursor");
    if (!value.isString() || !IsResourceUri(value.extract<std::string>(), cluster_)) {
      return Answer(400, caller.request_id,
                    "cursor must be the cursor of a previous answer (a resource URI)");
    }
    cursor = value.extract<std::string>();
  }
  // The user itself (an officer on its behalf included: caller.user is then that user), or, in
  // its own name, the organization's indexer. Only the caller's organization's resources are
  // listed: a user id is a user of the caller's organization.
  bool allowed = *auth_id == caller.user;
  if (!allowed && !caller.on_behalf()) {
    Result<OrgPolicy> policy = OrgPolicy{};
    Status read_policy = db_.WithSession([&](Poco::Data::Session& s) -> Status {
      policy = PolicyStore::Get(s, caller.org);
      return policy.ok() ? OkStatus() : policy.error();
    });
    if (!read_policy.ok()) return Answer(503, caller.request_id, "the KMS database is unavailable");
    allowed = policy->indexer && *policy->indexer == caller.actor;
  }
  if (!allowed) {
    (void)Audit(caller, "authorization.list", "", "", "denied", "authId " + *auth_id);
    return Answer(403, caller.request_id,
                  "only the user, its organization's indexer or a compliance officer on its behalf "
                  "lists a user's authorizations");
  }
  std::vector<UserAuthorization> found;
  bool more = false;
  Status read = db_.WithSession([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(found,
                        KmsStore::ResourcesOf(s, caller.org, *auth_id, cursor, limit, &more));
    return OkStatus();
  });
  if (!read.ok()) return Answer(503, caller.request_id, "the KMS database is unavailable");
  if (!Audit(caller, "authorization.list", "", "", "ok",
             "authId " + *auth_id + ", " + std::to_string(found.size()) + " resources")
           .ok()) {
    return Answer(503, caller.request_id, "the KMS could not audit the retrieval; retry later");
  }
  Poco::JSON::Array out;
  for (const UserAuthorization& a : found) {
    Object item;
    item.set("resourceUri", a.resource_uri);
    item.set("roleUri", a.role);
    out.add(item);
  }
  Object answer = Answer(200, caller.request_id);
  answer.set("authorizations", out);
  if (more) answer.set("cursor", found.back().resource_uri);
  return answer;
}

}  // namespace strongroom::kms
