#include "strongroom/kms/kms_service.h"

#include <Poco/DateTimeFormat.h>
#include <Poco/DateTimeFormatter.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Timestamp.h>
#include <Poco/UUIDGenerator.h>
#include <openssl/sha.h>

#include <algorithm>
#include <set>
#include <sstream>
#include <utility>

#include "strongroom/common/kms_uri.h"
#include "strongroom/common/rfc3339.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/common/strict_json.h"
#include "strongroom/kms/audit_checkpointer.h"
#include "strongroom/kms/audit_log.h"
#include "strongroom/kms/audit_writer.h"
#include "strongroom/kms/key_cache.h"
#include "strongroom/kms/kms_store.h"
#include "strongroom/kms/metrics.h"
#include "strongroom/kms/org_policy.h"

namespace strongroom::kms {
namespace {

using Poco::JSON::Object;

constexpr char kJose[] = "application/jose";

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

// The one answer to a message the HSM could not serve (the static key or a channel's key could not
// be used): plain 503, which the listeners send with Retry-After.
KmsReply HsmUnavailable() {
  return PlainError(503, "hsm_unavailable", "the KMS's HSM is unavailable; retry later");
}

// A create /ecdhe no identity key opened while a token that holds one is down (kms_identities.h):
// plain 503 identity_unavailable, the code the SDK reads back as ErrorReason::kIdentityUnavailable.
KmsReply IdentityUnavailable() {
  constexpr ErrorReason kReason = ErrorReason::kIdentityUnavailable;
  return PlainError(HttpStatusFor(ErrorCodeOf(kReason)), std::string(ErrorReasonName(kReason)),
                    "the message may be sealed to an identity key of the KMS whose token is "
                    "unavailable; fetch /kms/info again and seal to the key it publishes");
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
  // A member given twice ({"count":1,"count":100}) is refused, not read as the last one.
  Result<Object::Ptr> parsed = ParseStrictJsonObject(plaintext.as_string_view());
  if (!parsed.ok()) {
    return Error(ErrorCode::kInvalidArgument,
                 "the request is not a JSON object with each "
                 "member once");
  }
  r.json = *parsed;
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

// Poco counts true and false as integers; a count is a JSON number without a fraction.
bool IsWholeNumber(const Object& object, const char* name) {
  if (!object.has(name)) return false;
  const Poco::Dynamic::Var& value = object.get(name);
  return value.isInteger() && !value.isBoolean();
}

// The requestId of a request ParseRequest refused, when it is there to be read ("" otherwise), so
// that even a malformed request's refusal names it.
std::string RequestIdOf(const SecretBytes& plaintext) {
  try {
    Poco::JSON::Parser parser;
    Object::Ptr json = parser.parse(std::string(plaintext.as_string_view())).extract<Object::Ptr>();
    if (json && json->has("requestId") && json->get("requestId").isString()) {
      std::string id = json->getValue<std::string>("requestId");
      if (id.size() <= 256) return id;
    }
  } catch (const Poco::Exception&) {
  } catch (const std::exception&) {
  }
  return "";
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
    kUnknown,
  };
  Op op = Op::kUnknown;
  std::string target;                  // the key, resource, authorization or ecdhe URI
  std::optional<std::string> auth_id;  // ?authId=<x>
  const char* metric = "other";
  bool read_only() const {
    return op == Op::kRetrieveKey || op == Op::kRetrieveResource ||
           op == Op::kRetrieveResourceKeys || op == Op::kListAuthorizations;
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
      channels_(config_.metadata_cache_entries, config_.metadata_cache_age),
      bound_keys_(config_.metadata_cache_entries, config_.metadata_cache_age),
      roles_(config_.metadata_cache_entries, config_.metadata_cache_age),
      replay_(db, config_.max_requests_per_channel) {}

std::string KmsService::InfoJson() const { return identities_->Current()->info_json; }

jose::PublicJwk KmsService::PublicKey() const { return identities_->Current()->jwk; }

KmsService::~KmsService() = default;

KmsReply KmsService::Handle(std::string_view message) {
  const auto started = std::chrono::steady_clock::now();
  std::string operation = "unsealed";
  KmsReply reply;
  try {
    if (message.empty() || message.size() > kMaxKmsMessageBytes) {
      reply = PlainError(413, "message_size", "a KMS message is 1 byte to 256 KiB");
    } else if (Result<jose::JoseHeader> header = jose::PeekHeader(message);
               !header.ok() || header->part_count != 5) {
      reply = PlainError(400, "not_jwe", "a KMS message is a compact JWE");
    } else if (header->alg == "RSA-OAEP") {
      operation = "create_ecdhe";
      reply = HandleEcdheCreate(message, &operation);
    } else if (header->alg == "dir" && header->kid) {
      reply = HandleSealed(message, *header->kid, &operation);
    } else {
      reply = PlainError(400, "algorithm", "a KMS message is RSA-OAEP (create /ecdhe) or dir");
    }
  } catch (const std::exception&) {
    reply = PlainError(500, "internal", "the KMS failed to process the message");
  }
  if (hooks_.metrics) {
    hooks_.metrics->RecordRequest(operation, reply.http_status,
                                  std::chrono::steady_clock::now() - started);
  }
  return reply;
}

Result<std::string> KmsService::SignAnswer(const Object& answer,
                                           const KmsIdentities::Identity& identity) {
  Object header;
  header.set("alg", "PS256");
  header.set("kid", cluster_);
  std::string payload = ToJson(answer);
  return jose::SignJwsWith(
      ToJson(header), {reinterpret_cast<const std::uint8_t*>(payload.data()), payload.size()},
      [&](std::span<const std::uint8_t> input) { return identities_->Sign(identity, input); });
}

KmsReply KmsService::SignedRefusal(int status, const std::string& reason) {
  // Signed by the identity in service, which clients learn from /kms/info.
  const KmsIdentities::IdentityPtr identity = identities_->Current();
  const std::tuple<int, std::string, std::string> which{status, reason, identity->thumbprint};
  auto reuse = [&]() -> std::optional<KmsReply> {
    std::lock_guard lock(refusals_mutex_);
    auto found = refusals_.find(which);
    if (found == refusals_.end() || clock_() - found->second.signed_ms >= kSignedRefusalReuseMs) {
      return std::nullopt;
    }
    return KmsReply{status, kJose, found->second.jws};
  };
  if (std::optional<KmsReply> reply = reuse()) return *reply;
  // Concurrent refusals wait for one signature instead of each making their own.
  std::lock_guard signing(refusal_signing_);
  if (std::optional<KmsReply> reply = reuse()) return *reply;
  Object answer;
  answer.set("status", status);
  answer.set("reason", reason);
  Result<std::string> jws = SignAnswer(answer, *identity);
  if (!jws.ok()) return HsmUnavailable();
  std::lock_guard lock(refusals_mutex_);
  refusals_[which] = {*jws, clock_()};
  return {status, kJose, *jws};
}

namespace {

std::string Sha256(std::span<const std::uint8_t> bytes) {
  std::string digest(SHA256_DIGEST_LENGTH, '\0');
  SHA256(bytes.data(), bytes.size(), reinterpret_cast<unsigned char*>(digest.data()));
  return digest;
}

}  // namespace

bool KmsService::FirstSightOfEcdhe(std::span<const std::uint8_t> encrypted_key) {
  std::string digest = Sha256(encrypted_key);
  std::lock_guard lock(ecdhe_mutex_);
  if (!ecdhe_seen_.insert(digest).second) return false;
  ecdhe_order_.push_back(std::move(digest));
  if (ecdhe_order_.size() > kEcdheReplayMemory) {
    ecdhe_seen_.erase(ecdhe_order_.front());
    ecdhe_order_.pop_front();
  }
  return true;
}

void KmsService::ForgetEcdhe(std::span<const std::uint8_t> encrypted_key) {
  std::lock_guard lock(ecdhe_mutex_);
  ecdhe_seen_.erase(Sha256(encrypted_key));  // its place in the order ages out harmlessly
}

void KmsService::SweepExecutedRequests(std::int64_t now_ms) {
  std::int64_t last = last_sweep_ms_.load();
  if (now_ms - last < kExecutedSweepIntervalMs ||
      !last_sweep_ms_.compare_exchange_strong(last, now_ms)) {
    return;
  }
  (void)db_.InTransaction([&](Poco::Data::Session& s) -> Status {
    Result<std::int64_t> removed = KmsStore::DeleteSpentExecutedRequests(s, now_ms);
    return removed.ok() ? OkStatus() : removed.error();
  });
}

KmsReply KmsService::HandleEcdheCreate(std::string_view message, std::string* operation) {
  // A repeat of a create /ecdhe (the core may keep and resend one) is known by its RSA-OAEP
  // encrypted key and refused before the HSM does any RSA work for it.
  bool replayed = false;
  KmsIdentities::Opened::Outcome failure = KmsIdentities::Opened::Outcome::kOpened;
  KmsIdentities::IdentityPtr identity;  // the one that opened it, which signs the answer
  Result<jose::DecryptedJwe> opened =
      jose::DecryptRsaOaepJwe(message, [&](std::span<const std::uint8_t> encrypted_key) {
        if (!FirstSightOfEcdhe(encrypted_key)) {
          replayed = true;
          return Result<SecretBytes>(Error(ErrorCode::kAlreadyExists, "replayed request"));
        }
        KmsIdentities::Opened cek = identities_->Decrypt(encrypted_key);
        if (cek.outcome == KmsIdentities::Opened::Outcome::kOpened) {
          identity = cek.by;
          return Result<SecretBytes>(std::move(cek.cek));
        }
        failure = cek.outcome;
        // A message no token could be asked about may be sent again once the token is back.
        if (failure != KmsIdentities::Opened::Outcome::kUndecryptable) ForgetEcdhe(encrypted_key);
        return Result<SecretBytes>(
            Error(ErrorCode::kInvalidArgument, "the message could not be decrypted"));
      });
  if (replayed) {
    *operation = "replayed";
    return SignedRefusal(409, "replayed request");
  }
  if (failure == KmsIdentities::Opened::Outcome::kHsmUnavailable) return HsmUnavailable();
  if (failure == KmsIdentities::Opened::Outcome::kIdentityUnavailable) {
    return IdentityUnavailable();
  }
  if (!opened.ok() || !identity) {
    *operation = "unsealed";
    return PlainError(400, "undecryptable", "the message could not be decrypted");
  }
  // From here on the answer is signed, by the key the client sealed to, so the client can trust
  // even a refusal. The HTTP status stays 200: the protocol status is inside.
  auto sign = [&](const Object& answer) -> KmsReply {
    Result<std::string> jws = SignAnswer(answer, *identity);
    if (!jws.ok()) return HsmUnavailable();
    return {200, kJose, *jws};
  };
  Result<Request> request = ParseRequest(opened->plaintext, cluster_);
  if (!request.ok()) {
    return sign(Answer(400, RequestIdOf(opened->plaintext), request.error().message()));
  }
  const Request& r = *request;
  if (r.method != "create" || r.uri != cluster_ + "/ecdhe") {
    return sign(Answer(400, r.request_id, "an RSA-OAEP message must be create /ecdhe"));
  }
  Result<VerifiedJwt> user = verifier_.Verify(r.bearer);
  if (!user.ok()) return sign(Answer(401, r.request_id, "user authentication failed"));
  Object::Ptr jwk_json = r.json->getObject("jwk");
  if (!jwk_json) return sign(Answer(400, r.request_id, "missing jwk"));
  Result<jose::PublicJwk> theirs = jose::PublicJwk::Parse(ToJson(*jwk_json));
  if (!theirs.ok() || theirs->type() != jose::PublicJwk::Type::kEcP256) {
    return sign(Answer(400, r.request_id, "jwk must be an EC P-256 public key"));
  }
  Result<jose::EcKeyPair> mine = jose::EcKeyPair::Generate();
  if (!mine.ok()) return sign(Answer(500, r.request_id, "internal error"));
  Result<SecretBytes> shared = jose::DeriveEphemeralKey(*mine, *theirs);
  if (!shared.ok()) return sign(Answer(400, r.request_id, "ECDH with the jwk failed"));

  EphemeralKeyRecord record;
  record.uri = NewUri(cluster_, "ecdhe");
  record.org = user->org();
  record.user_id = user->subject();
  record.client_id = r.client_id;
  record.created_ms = clock_();
  Result<hsm::WrapResult> wrapped = vault_.Wrap({record.org, record.uri}, shared->view());
  if (!wrapped.ok()) {
    return sign(Answer(HttpStatusFor(wrapped.error().code()), r.request_id,
                       "the KMS could not protect the ephemeral key"));
  }
  record.blobs = wrapped->blobs;
  Status stored = db_.InTransaction([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(OrgPolicy policy, PolicyStore::Get(s, record.org));
    record.expires_ms = record.created_ms + policy.ephemeral_lifetime_s * 1000;
    return KmsStore::InsertEphemeralKey(s, record);
  });
  if (!stored.ok()) return sign(Answer(503, r.request_id, "the KMS database is unavailable"));
  SweepExecutedRequests(record.created_ms);

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
  return sign(answer);
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

KmsReply KmsService::HandleSealed(std::string_view message, const std::string& kid,
                                  std::string* operation) {
  Result<std::optional<EphemeralKeyRecord>> found = channels_.Get(kid);
  if (!found->has_value()) {
    const std::uint64_t generation = channels_.generation();
    Status read = db_.WithSession([&](Poco::Data::Session& s) -> Status {
      found = KmsStore::FindEphemeralKey(s, kid);
      return found.ok() ? OkStatus() : found.error();
    });
    if (!read.ok()) return PlainError(503, "database_unavailable", "retry later");
    if (found->has_value() && !(*found)->deleted) channels_.Put(kid, **found, generation);
  }
  // draft-02, Error Messages: a message under a key the KMS does not recognize or that has expired
  // is answered with an unencrypted JWS signed with the static key.
  *operation = "unsealed";
  if (!found->has_value()) return SignedRefusal(401, "unknown ephemeral key");
  const EphemeralKeyRecord& ephemeral = **found;
  if (ephemeral.deleted) return SignedRefusal(401, "the ephemeral key was deleted");
  if (clock_() >= ephemeral.expires_ms) {
    replay_.Forget(ephemeral.uri);
    return SignedRefusal(401, "the ephemeral key has expired");
  }
  Result<SecretBytes> channel_key =
      UnwrapCached(ephemeral.org, ephemeral.uri, ephemeral.blobs, channel_key_cache());
  if (!channel_key.ok()) {
    if (channel_key.error().code() == ErrorCode::kUnavailable) return HsmUnavailable();
    // A blob that fails its integrity check, or that no configured token can open: not
    // something a retry cures.
    return PlainError(500, "internal", "the KMS could not open the ephemeral key");
  }
  Result<jose::DecryptedJwe> opened = jose::DecryptDir(
      message, [&](const jose::JoseHeader&) { return SecretBytes(channel_key->view()); });
  if (!opened.ok()) return PlainError(400, "undecryptable", "the message could not be decrypted");

  // Sealed answers travel with HTTP 200; the protocol status is inside.
  auto seal = [&](const Object& answer) -> KmsReply {
    std::string payload = ToJson(answer);
    Result<std::string> jwe =
        jose::EncryptDir(channel_key->view(), ephemeral.uri,
                         {reinterpret_cast<const std::uint8_t*>(payload.data()), payload.size()});
    ZeroizeString(payload);
    if (!jwe.ok()) return PlainError(500, "internal", "the KMS could not seal its answer");
    return {200, kJose, *jwe};
  };
  *operation = "other";
  // At most once (replay_guard.h): a message this channel executed before executes nothing.
  ReplayGuard::MessageId id;
  std::copy(opened->iv.begin(), opened->iv.end(), id.begin());
  std::copy(opened->tag.begin(), opened->tag.end(), id.begin() + opened->iv.size());
  Result<ReplayGuard::Verdict> verdict = replay_.Claim(ephemeral, id);
  auto request_id = [&] { return RequestIdOf(opened->plaintext); };
  if (!verdict.ok()) return seal(Answer(503, request_id(), "the KMS database is unavailable"));
  if (*verdict == ReplayGuard::Verdict::kExhausted) {
    return SignedRefusal(401, "the ephemeral key has executed its " +
                                  std::to_string(replay_.max_per_channel()) +
                                  " requests; negotiate a new one");
  }
  if (*verdict == ReplayGuard::Verdict::kReplayed) {
    *operation = "replayed";
    Caller owner{ephemeral.user_id, ephemeral.user_id, ephemeral.org, ephemeral.client_id, ""};
    (void)Audit(owner, "request.replay", ephemeral.uri, "", "refused",
                "message " + ReplayGuard::Hex(id));
    return seal(Answer(409, request_id(), "replayed request"));
  }
  struct Hold {
    ReplayGuard& guard;
    const std::string& channel;
    ~Hold() { guard.Release(channel); }
  } hold{replay_, ephemeral.uri};
  std::optional<ExecutedRequest> unrecorded =
      ExecutedRequest{ephemeral.uri, ReplayGuard::Bytes(id), clock_(),
                      ephemeral.org, ephemeral.user_id,      ephemeral.created_ms};
  Object answer = Execute(opened->plaintext, ephemeral, &unrecorded, operation);
  if (unrecorded) {
    // Not recorded with a write or an audit record: recorded now, before the answer leaves.
    if (!audit_->Append(std::move(*unrecorded)).ok()) {
      const std::string rid =
          answer.has("requestId") ? answer.getValue<std::string>("requestId") : "";
      answer = Answer(503, rid, "the KMS could not record the request; retry later");
    }
  }
  return seal(answer);
}

Object KmsService::Execute(const SecretBytes& plaintext, const EphemeralKeyRecord& ephemeral,
                           std::optional<ExecutedRequest>* unrecorded, std::string* operation) {
  Result<Request> request = ParseRequest(plaintext, cluster_);
  if (!request.ok()) return Answer(400, RequestIdOf(plaintext), request.error().message());
  const Request& r = *request;
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
  Object::Ptr credential = r.json->getObject("client")->getObject("credential");
  if (credential && credential->has("onBehalfOf")) {
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
    Status deleted = db_.InTransaction(
        [&](Poco::Data::Session& s) { return KmsStore::DeleteEphemeralKey(s, ephemeral.uri); });
    if (!deleted.ok()) return Answer(HttpStatusFor(deleted.error().code()), r.request_id);
    channels_.Invalidate();  // also any copy a concurrent request is about to cache
    if (KeyCache* cache = channel_key_cache()) cache->Erase(ephemeral.uri);
    return Answer(204, r.request_id);
  }
  return Dispatch(caller, route, *r.json);
}

Object KmsService::Dispatch(const Caller& caller, const Route& route, const Object& request) {
  using Op = Route::Op;
  switch (route.op) {
    case Op::kCreateKeys:
      return CreateKeys(caller, request);
    case Op::kRetrieveKey:
      return RetrieveKey(caller, route.target);
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
    case Op::kDeleteAuthorizationByAuthId:
      if (!route.auth_id) {
        return Answer(400, caller.request_id, "delete by resource needs ?authId=<id>");
      }
      return DeleteAuthorization(caller, route.target, route.auth_id);
    default:
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
  Status stored = db_.InTransaction([&](Poco::Data::Session& s) -> Status {
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

Object KmsService::RetrieveKey(const Caller& caller, const std::string& uri) {
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
  Object answer = Answer(200, caller.request_id);
  answer.set("key", KeyJson(*key, *material));
  return answer;
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
  Status done = db_.InTransaction([&](Poco::Data::Session& s) -> Status {
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
  Status created = db_.InTransaction([&](Poco::Data::Session& s) -> Status {
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
  Status done = db_.InTransaction([&](Poco::Data::Session& s) -> Status {
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
  Status done = db_.InTransaction([&](Poco::Data::Session& s) -> Status {
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

}  // namespace strongroom::kms
