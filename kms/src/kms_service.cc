#include "strongroom/kms/kms_service.h"

#include <Poco/DateTimeFormat.h>
#include <Poco/DateTimeFormatter.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Timestamp.h>
#include <Poco/UUIDGenerator.h>

#include <set>
#include <sstream>

#include "strongroom/kms/audit_log.h"
#include "strongroom/kms/kms_store.h"

namespace strongroom::kms {
namespace {

using Poco::JSON::Object;

constexpr char kJose[] = "application/jose";

std::int64_t SystemMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Rfc3339(std::int64_t ms) {
  return Poco::DateTimeFormatter::format(Poco::Timestamp(ms * 1000),
                                         Poco::DateTimeFormat::ISO8601_FRAC_FORMAT);
}

std::string ToJson(const Object& object) {
  std::ostringstream out;
  object.stringify(out);
  return out.str();
}

KmsReply PlainError(int status, const std::string& code, const std::string& message) {
  Object error;
  error.set("code", code);
  error.set("message", message);
  return {status, "application/json", ToJson(error)};
}

int StatusFor(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return 400;
    case ErrorCode::kUnauthenticated:
      return 401;
    case ErrorCode::kPermissionDenied:
      return 403;
    case ErrorCode::kNotFound:
      return 404;
    case ErrorCode::kAlreadyExists:
    case ErrorCode::kFailedPrecondition:
      return 409;
    case ErrorCode::kResourceExhausted:
      return 429;
    case ErrorCode::kUnavailable:
      return 503;
    case ErrorCode::kUnimplemented:
      return 501;
    case ErrorCode::kDataLoss:
    case ErrorCode::kInternal:
      return 500;
  }
  return 500;
}

// The parts of a request every operation needs, from the decrypted JSON.
struct Request {
  Poco::JSON::Object::Ptr json;
  std::string method;
  std::string uri;  // made absolute: kms://<host>/...
  std::string request_id;
  std::string client_id;
  std::string bearer;
};

Result<Request> ParseRequest(const SecretBytes& plaintext, const std::string& cluster) {
  Request r;
  try {
    Poco::JSON::Parser parser;
    Poco::Dynamic::Var parsed = parser.parse(std::string(plaintext.as_string_view()));
    r.json = parsed.extract<Object::Ptr>();
  } catch (const Poco::Exception&) {
    return Error(ErrorCode::kInvalidArgument, "the request is not a JSON object");
  } catch (const std::exception&) {
    return Error(ErrorCode::kInvalidArgument, "the request is not a JSON object");
  }
  auto text = [&](Object::Ptr object, const char* name) -> std::string {
    if (!object || !object->has(name) || !object->get(name).isString()) return "";
    return object->getValue<std::string>(name);
  };
  r.method = text(r.json, "method");
  r.uri = text(r.json, "uri");
  r.request_id = text(r.json, "requestId");
  Object::Ptr client = r.json->getObject("client");
  r.client_id = text(client, "clientId");
  Object::Ptr credential = client ? client->getObject("credential") : nullptr;
  r.bearer = text(credential, "bearer");
  if (r.method.empty() || r.uri.empty() || r.request_id.empty() || r.client_id.empty() ||
      r.bearer.empty()) {
    return Error(ErrorCode::kInvalidArgument,
                 "a request needs method, uri, requestId, client.clientId and "
                 "client.credential.bearer");
  }
  if (r.request_id.size() > 256 || r.client_id.size() > 256 || r.uri.size() > 1024) {
    return Error(ErrorCode::kInvalidArgument, "requestId, clientId or uri is too long");
  }
  if (r.uri.front() == '/') r.uri = cluster + r.uri;
  return r;
}

Object Answer(int status, const std::string& request_id, const std::string& reason = {}) {
  Object answer;
  answer.set("status", status);
  answer.set("requestId", request_id);
  if (!reason.empty()) answer.set("reason", reason);
  return answer;
}

std::string NewUri(const std::string& cluster, const char* kind) {
  return cluster + "/" + kind + "/" +
         Poco::UUIDGenerator::defaultGenerator().createRandom().toString();
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

struct KmsService::Caller {
  std::string user;
  std::string org;
  std::string client_id;
  std::string request_id;
};

Result<std::unique_ptr<KmsService>> KmsService::New(KmsServiceConfig config, hsm::KeyVault& vault,
                                                    Database& db, JwtVerifier verifier,
                                                    Clock clock) {
  if (config.host.empty() || config.host.find_first_of("/?# ") != std::string::npos) {
    return Error(ErrorCode::kInvalidArgument, "the KMS host name is empty or malformed");
  }
  if (vault.tokens().empty()) return Error(ErrorCode::kInvalidArgument, "no HSM token");
  hsm::Token& identity = *vault.tokens().front();
  SR_RETURN_IF_ERROR(identity.CheckIdentityMechanisms());
  SR_ASSIGN_OR_RETURN(hsm::RsaPublicKey rsa, identity.IdentityPublicKey(config.identity_key));
  const std::string cluster = "kms://" + config.host;
  SR_ASSIGN_OR_RETURN(jose::PublicJwk jwk,
                      jose::PublicJwk::FromRsa(rsa.modulus, rsa.public_exponent, cluster));
  if (!clock) clock = SystemMillis;
  return std::unique_ptr<KmsService>(new KmsService(std::move(config), vault, identity, db,
                                                    std::move(verifier), std::move(clock),
                                                    std::move(jwk)));
}

KmsService::KmsService(KmsServiceConfig config, hsm::KeyVault& vault, hsm::Token& identity,
                       Database& db, JwtVerifier verifier, Clock clock, jose::PublicJwk public_key)
    : config_(std::move(config)),
      cluster_("kms://" + config_.host),
      vault_(vault),
      identity_(identity),
      db_(db),
      verifier_(std::move(verifier)),
      clock_(std::move(clock)),
      public_key_(std::move(public_key)) {
  Object info;
  info.set("kmsCluster", cluster_);
  Result<std::string> jwk = public_key_.ToJson();
  if (jwk.ok()) {
    Poco::JSON::Parser parser;
    info.set("rsaPublicKey", parser.parse(*jwk).extract<Object::Ptr>());
  }
  info_json_ = ToJson(info);
}

KmsReply KmsService::Handle(std::string_view message) {
  try {
    if (message.empty() || message.size() > kMaxKmsMessageBytes) {
      return PlainError(413, "message_size", "a KMS message is 1 byte to 256 KiB");
    }
    Result<jose::JoseHeader> header = jose::PeekHeader(message);
    if (!header.ok() || header->part_count != 5) {
      return PlainError(400, "not_jwe", "a KMS message is a compact JWE");
    }
    if (header->alg == "RSA-OAEP") return HandleEcdheCreate(message);
    if (header->alg == "dir" && header->kid) return HandleSealed(message, *header->kid);
    return PlainError(400, "algorithm", "a KMS message is RSA-OAEP (create /ecdhe) or dir");
  } catch (const std::exception&) {
    return PlainError(500, "internal", "the KMS failed to process the message");
  }
}

KmsReply KmsService::HandleEcdheCreate(std::string_view message) {
  Result<jose::DecryptedJwe> opened =
      jose::DecryptRsaOaepJwe(message, [&](std::span<const std::uint8_t> encrypted_key) {
        return identity_.DecryptRsaOaep(config_.identity_key, encrypted_key);
      });
  if (!opened.ok()) {
    if (opened.error().code() == ErrorCode::kUnavailable) {
      return PlainError(503, "hsm_unavailable", "the KMS's HSM is unavailable; retry later");
    }
    return PlainError(400, "undecryptable", "the message could not be decrypted");
  }
  // From here on the answer is signed, so the client can trust even a refusal.
  auto sign = [&](const Object& answer, int http_status) -> KmsReply {
    Object header;
    header.set("alg", "PS256");
    header.set("kid", cluster_);
    std::string payload = ToJson(answer);
    Result<std::string> jws = jose::SignJwsWith(
        ToJson(header), {reinterpret_cast<const std::uint8_t*>(payload.data()), payload.size()},
        [&](std::span<const std::uint8_t> input) {
          return identity_.SignPs256(config_.identity_key, input);
        });
    if (!jws.ok()) return PlainError(503, "hsm_unavailable", "the KMS could not sign its answer");
    return {http_status, kJose, *jws};
  };
  Result<Request> request = ParseRequest(opened->plaintext, cluster_);
  if (!request.ok()) return sign(Answer(400, "", request.error().message()), 200);
  const Request& r = *request;
  if (r.method != "create" || r.uri != cluster_ + "/ecdhe") {
    return sign(Answer(400, r.request_id, "an RSA-OAEP message must be create /ecdhe"), 200);
  }
  Result<VerifiedJwt> user = verifier_.Verify(r.bearer);
  if (!user.ok()) return sign(Answer(401, r.request_id, "user authentication failed"), 200);
  Object::Ptr jwk_json = r.json->getObject("jwk");
  if (!jwk_json) return sign(Answer(400, r.request_id, "missing jwk"), 200);
  Result<jose::PublicJwk> theirs = jose::PublicJwk::Parse(ToJson(*jwk_json));
  if (!theirs.ok() || theirs->type() != jose::PublicJwk::Type::kEcP256) {
    return sign(Answer(400, r.request_id, "jwk must be an EC P-256 public key"), 200);
  }
  Result<jose::EcKeyPair> mine = jose::EcKeyPair::Generate();
  if (!mine.ok()) return sign(Answer(500, r.request_id, "internal error"), 200);
  Result<SecretBytes> shared = jose::DeriveEphemeralKey(*mine, *theirs);
  if (!shared.ok()) return sign(Answer(400, r.request_id, "ECDH with the jwk failed"), 200);

  EphemeralKeyRecord record;
  record.uri =
      cluster_ + "/ecdhe/" + Poco::UUIDGenerator::defaultGenerator().createRandom().toString();
  record.org = user->org();
  record.user_id = user->subject();
  record.client_id = r.client_id;
  record.created_ms = clock_();
  record.expires_ms = record.created_ms + config_.ephemeral_lifetime.count() * 1000;
  Result<hsm::WrapResult> wrapped = vault_.Wrap({record.org, record.uri}, shared->view());
  if (!wrapped.ok()) {
    return sign(Answer(StatusFor(wrapped.error().code()), r.request_id,
                       "the KMS could not protect the ephemeral key"),
                200);
  }
  record.blobs = wrapped->blobs;
  Status stored = db_.InTransaction(
      [&](Poco::Data::Session& s) { return KmsStore::InsertEphemeralKey(s, record); });
  if (!stored.ok()) return sign(Answer(503, r.request_id, "the KMS database is unavailable"), 200);

  Object key;
  key.set("uri", record.uri);
  Result<std::string> my_jwk = mine->PublicJwkJson();
  Poco::JSON::Parser parser;
  key.set("jwk", parser.parse(*my_jwk).extract<Object::Ptr>());
  key.set("userId", record.user_id);
  key.set("clientId", record.client_id);
  key.set("createDate", Rfc3339(record.created_ms));
  key.set("expirationDate", Rfc3339(record.expires_ms));
  Object answer = Answer(201, r.request_id);
  answer.set("key", key);
  return sign(answer, 200);
}

KmsReply KmsService::HandleSealed(std::string_view message, const std::string& kid) {
  Result<std::optional<EphemeralKeyRecord>> found = std::optional<EphemeralKeyRecord>();
  Status read = db_.WithSession([&](Poco::Data::Session& s) -> Status {
    found = KmsStore::FindEphemeralKey(s, kid);
    return found.ok() ? OkStatus() : found.error();
  });
  if (!read.ok()) return PlainError(503, "database_unavailable", "retry later");
  if (!found->has_value()) return PlainError(401, "unknown_kid", "unknown ephemeral key");
  const EphemeralKeyRecord& ephemeral = **found;
  if (ephemeral.deleted) return PlainError(401, "deleted_kid", "the ephemeral key was deleted");
  if (clock_() >= ephemeral.expires_ms) {
    return PlainError(401, "expired_kid", "the ephemeral key has expired");
  }
  Result<SecretBytes> channel_key = vault_.Unwrap({ephemeral.org, ephemeral.uri}, ephemeral.blobs);
  if (!channel_key.ok()) {
    return PlainError(StatusFor(channel_key.error().code()), "hsm",
                      "the KMS could not open the ephemeral key");
  }
  Result<jose::DecryptedJwe> opened = jose::DecryptDir(
      message, [&](const jose::JoseHeader&) { return SecretBytes(channel_key->view()); });
  if (!opened.ok()) return PlainError(400, "undecryptable", "the message could not be decrypted");

  auto seal = [&](const Object& answer) -> KmsReply {
    std::string payload = ToJson(answer);
    Result<std::string> jwe =
        jose::EncryptDir(channel_key->view(), ephemeral.uri,
                         {reinterpret_cast<const std::uint8_t*>(payload.data()), payload.size()});
    if (!jwe.ok()) return PlainError(500, "internal", "the KMS could not seal its answer");
    return {200, kJose, *jwe};
  };
  Result<Request> request = ParseRequest(opened->plaintext, cluster_);
  if (!request.ok()) return seal(Answer(400, "", request.error().message()));
  const Request& r = *request;
  Result<VerifiedJwt> user = verifier_.Verify(r.bearer);
  if (!user.ok()) return seal(Answer(401, r.request_id, "user authentication failed"));
  if (user->subject() != ephemeral.user_id || user->org() != ephemeral.org) {
    return seal(Answer(403, r.request_id, "the ephemeral key belongs to another user"));
  }
  if (r.method == "update" && r.uri == cluster_ + "/ping") return seal(Answer(200, r.request_id));
  const Caller caller{user->subject(), user->org(), r.client_id, r.request_id};
  if (r.method == "create" && r.uri == cluster_ + "/keys") {
    return seal(CreateKeys(caller, *r.json));
  }
  if (r.method == "retrieve" && r.uri.rfind(cluster_ + "/keys/", 0) == 0) {
    return seal(RetrieveKey(caller, r.uri));
  }
  if (r.method == "create" && r.uri == cluster_ + "/resources") {
    return seal(CreateResource(caller, *r.json));
  }
  if (r.method == "create" && r.uri == cluster_ + "/authorizations") {
    return seal(CreateAuthorizations(caller, *r.json));
  }
  if (r.method == "retrieve" && r.uri.rfind(cluster_ + "/resources/", 0) == 0 &&
      r.uri.find("/authorizations") != std::string::npos) {
    return seal(ListAuthorizations(caller, r.uri));
  }
  if (r.method == "delete" && r.uri.rfind(cluster_ + "/authorizations/", 0) == 0) {
    return seal(DeleteAuthorization(caller, r.uri));
  }
  if (r.method == "delete" && r.uri.rfind(cluster_ + "/ecdhe/", 0) == 0) {
    if (r.uri != ephemeral.uri) {
      return seal(Answer(403, r.request_id, "only the channel's own ephemeral key can be deleted"));
    }
    Status deleted = db_.InTransaction(
        [&](Poco::Data::Session& s) { return KmsStore::DeleteEphemeralKey(s, ephemeral.uri); });
    if (!deleted.ok()) return seal(Answer(StatusFor(deleted.error().code()), r.request_id));
    return seal(Answer(204, r.request_id));
  }
  return seal(Answer(404, r.request_id, "unknown method or uri"));
}

void KmsService::Audit(const Caller& caller, std::string action, std::string resource,
                       std::string key, std::string outcome) {
  AuditRecord record{0,
                     clock_(),
                     caller.org,
                     caller.user,
                     std::move(action),
                     std::move(resource),
                     std::move(key),
                     std::move(outcome),
                     "client " + caller.client_id};
  // A refusal changes nothing else, so its record is a transaction of its own.
  (void)db_.InTransaction([&](Poco::Data::Session& s) { return AuditLog::Append(s, record); });
}

Object KmsService::CreateKeys(const Caller& caller, const Object& request) {
  if (!request.has("count") || !request.get("count").isInteger()) {
    return Answer(400, caller.request_id, "count must be a whole number");
  }
  const long long count = request.getValue<long long>("count");
  if (count < 1 || count > static_cast<long long>(kMaxKeysPerRequest)) {
    return Answer(400, caller.request_id, "count must be 1 to 100");
  }
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
    key.bind_deadline_ms = now_ms + config_.bind_deadline.count() * 1000;
    material.push_back(SecretBytes::Random(hsm::kWrappedKeyPlainSize));
    Result<hsm::WrapResult> wrapped = vault_.Wrap({key.org, key.uri}, material.back().view());
    if (!wrapped.ok()) {
      return Answer(StatusFor(wrapped.error().code()), caller.request_id,
                    "the KMS could not protect new keys");
    }
    key.blobs = std::move(wrapped->blobs);
    keys.push_back(std::move(key));
  }
  Status stored = db_.InTransaction([&](Poco::Data::Session& s) -> Status {
    SR_RETURN_IF_ERROR(KmsStore::InsertKeys(s, keys));
    AuditRecord record{
        0,           now_ms,       caller.org,
        caller.user, "key.create", "",
        "",          "ok",         std::to_string(count) + " keys, client " + caller.client_id};
    return AuditLog::Append(s, record);
  });
  if (!stored.ok()) return Answer(503, caller.request_id, "the KMS database is unavailable");
  Poco::JSON::Array out;
  for (std::size_t i = 0; i < keys.size(); ++i) out.add(KeyJson(keys[i], material[i]));
  Object answer = Answer(201, caller.request_id);
  answer.set("keys", out);
  return answer;
}

Object KmsService::RetrieveKey(const Caller& caller, const std::string& uri) {
  std::optional<KeyRecord> key;
  std::optional<std::string> role;
  Status read = db_.WithSession([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(key, KmsStore::FindKey(s, uri));
    if (key && key->resource_uri) {
      SR_ASSIGN_OR_RETURN(role, KmsStore::RoleOf(s, *key->resource_uri, caller.user));
    }
    return OkStatus();
  });
  if (!read.ok()) return Answer(503, caller.request_id, "the KMS database is unavailable");
  const bool allowed = key && key->org == caller.org &&
                       (key->resource_uri ? role.has_value() : key->creator == caller.user);
  if (!allowed) {
    // Unknown and forbidden look the same to the caller; the audit log tells them apart.
    Audit(caller, "key.retrieve", key && key->resource_uri ? *key->resource_uri : "", uri,
          key ? "denied" : "not found");
    return Answer(403, caller.request_id, "not authorized for this key");
  }
  Result<SecretBytes> material = vault_.Unwrap({key->org, key->uri}, key->blobs);
  if (!material.ok()) {
    Audit(caller, "key.retrieve", key->resource_uri.value_or(""), uri,
          "failed: " + std::string(ErrorCodeName(material.error().code())));
    return Answer(StatusFor(material.error().code()), caller.request_id,
                  "the KMS could not open the key");
  }
  Audit(caller, "key.retrieve", key->resource_uri.value_or(""), uri, "ok");
  Object answer = Answer(200, caller.request_id);
  answer.set("key", KeyJson(*key, *material));
  return answer;
}

Object KmsService::CreateResource(const Caller& caller, const Object& request) {
  std::optional<std::vector<std::string>> auth_ids =
      StringArray(request, "authIds", kMaxIdsPerRequest);
  std::optional<std::vector<std::string>> key_uris =
      StringArray(request, "keyUris", kMaxIdsPerRequest);
  if (!auth_ids || !key_uris) {
    return Answer(400, caller.request_id,
                  "authIds and keyUris must be arrays of at most 1000 non-empty strings");
  }
  const std::int64_t now_ms = clock_();
  ResourceRecord resource{NewUri(cluster_, "resources"), caller.org, caller.user, now_ms, {}};
  std::vector<AuthorizationRecord> authorizations;
  std::set<std::string> seen;
  seen.insert(caller.user);
  authorizations.push_back({NewUri(cluster_, "authorizations"), resource.uri, caller.user,
                            "participant", caller.user, now_ms});
  for (const std::string& who : *auth_ids) {
    if (!seen.insert(who).second) continue;
    authorizations.push_back({NewUri(cluster_, "authorizations"), resource.uri, who, "participant",
                              caller.user, now_ms});
  }
  Status created = db_.InTransaction([&](Poco::Data::Session& s) -> Status {
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
      SR_RETURN_IF_ERROR(KmsStore::BindKey(s, key_uri, resource.uri, now_ms,
                                           now_ms + config_.encrypt_lifetime.count() * 1000));
    }
    AuditRecord record{0,
                       now_ms,
                       caller.org,
                       caller.user,
                       "resource.create",
                       resource.uri,
                       "",
                       "ok",
                       std::to_string(authorizations.size()) + " authorizations, " +
                           std::to_string(key_uris->size()) + " keys bound"};
    return AuditLog::Append(s, record);
  });
  if (!created.ok()) {
    Audit(caller, "resource.create", "", "", "refused: " + created.error().message());
    return Answer(StatusFor(created.error().code()), caller.request_id, created.error().message());
  }
  Poco::JSON::Array authorization_uris, bound;
  for (const AuthorizationRecord& a : authorizations) authorization_uris.add(a.uri);
  for (const std::string& key_uri : *key_uris) bound.add(key_uri);
  Object out;
  out.set("uri", resource.uri);
  out.set("authorizationUris", authorization_uris);
  out.set("keyUris", bound);
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

}  // namespace

Object KmsService::CreateAuthorizations(const Caller& caller, const Object& request) {
  std::optional<std::vector<std::string>> auth_ids =
      StringArray(request, "authIds", kMaxIdsPerRequest);
  if (!request.has("resourceUri") || !request.get("resourceUri").isString() || !auth_ids ||
      auth_ids->empty()) {
    return Answer(400, caller.request_id, "resourceUri and 1 to 1000 authIds are required");
  }
  std::string resource = request.getValue<std::string>("resourceUri");
  if (resource.front() == '/') resource = cluster_ + resource;
  const std::int64_t now_ms = clock_();
  std::vector<AuthorizationRecord> created;
  Status done = db_.InTransaction([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(std::optional<ResourceRecord> found, KmsStore::FindResource(s, resource));
    SR_ASSIGN_OR_RETURN(std::optional<std::string> role,
                        KmsStore::RoleOf(s, resource, caller.user));
    if (!found || found->org != caller.org || !role) {
      return Error(ErrorCode::kPermissionDenied, "not authorized on this resource");
    }
    for (const std::string& who : *auth_ids) {
      created.push_back(
          {NewUri(cluster_, "authorizations"), resource, who, "participant", caller.user, now_ms});
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
                       std::to_string(created.size()) + " authorizations"};
    return AuditLog::Append(s, record);
  });
  if (!done.ok()) {
    Audit(caller, "authorization.create", resource, "", "refused: " + done.error().message());
    return Answer(StatusFor(done.error().code()), caller.request_id, done.error().message());
  }
  Poco::JSON::Array out;
  for (const AuthorizationRecord& a : created) out.add(AuthorizationJson(a));
  Object answer = Answer(201, caller.request_id);
  answer.set("authorizations", out);
  return answer;
}

Object KmsService::ListAuthorizations(const Caller& caller, const std::string& uri) {
  // kms://<host>/resources/<id>/authorizations[?authId=<x>]
  const std::size_t path_end = uri.find("/authorizations");
  const std::string resource = uri.substr(0, path_end);
  const std::string rest = uri.substr(path_end + std::string("/authorizations").size());
  std::optional<std::string> auth_id;
  if (rest.rfind("?authId=", 0) == 0 && rest.size() > 8) {
    auth_id = rest.substr(8);
  } else if (!rest.empty()) {
    return Answer(404, caller.request_id, "unknown uri");
  }
  std::vector<AuthorizationRecord> found;
  Status read = db_.WithSession([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(std::optional<std::string> role,
                        KmsStore::RoleOf(s, resource, caller.user));
    if (!role) return Error(ErrorCode::kPermissionDenied, "not authorized on this resource");
    SR_ASSIGN_OR_RETURN(found, KmsStore::Authorizations(s, resource, auth_id));
    return OkStatus();
  });
  if (!read.ok())
    return Answer(StatusFor(read.error().code()), caller.request_id, read.error().message());
  Poco::JSON::Array out;
  for (const AuthorizationRecord& a : found) out.add(AuthorizationJson(a));
  Object answer = Answer(200, caller.request_id);
  answer.set("authorizations", out);
  return answer;
}

Object KmsService::DeleteAuthorization(const Caller& caller, const std::string& uri) {
  std::optional<AuthorizationRecord> deleted;
  const std::int64_t now_ms = clock_();
  Status done = db_.InTransaction([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(deleted, KmsStore::FindAuthorization(s, uri));
    std::optional<std::string> role;
    if (deleted) {
      SR_ASSIGN_OR_RETURN(role, KmsStore::RoleOf(s, deleted->resource_uri, caller.user));
    }
    if (!deleted || !role) {
      return Error(ErrorCode::kPermissionDenied, "not authorized for this authorization");
    }
    SR_RETURN_IF_ERROR(KmsStore::DeleteAuthorization(s, uri));
    AuditRecord record{0,
                       now_ms,
                       caller.org,
                       caller.user,
                       "authorization.delete",
                       deleted->resource_uri,
                       "",
                       "ok",
                       "authId " + deleted->auth_id};
    return AuditLog::Append(s, record);
  });
  if (!done.ok()) {
    Audit(caller, "authorization.delete", "", "", "refused: " + done.error().message());
    return Answer(StatusFor(done.error().code()), caller.request_id, done.error().message());
  }
  Object answer = Answer(200, caller.request_id);
  answer.set("authorization", AuthorizationJson(*deleted));
  return answer;
}

}  // namespace strongroom::kms
