#include "kms_channels.h"

#include <Poco/JSON/Parser.h>
#include <openssl/sha.h>

#include <algorithm>

#include "kms_messages.h"
#include "strongroom/common/jose.h"
#include "strongroom/kms/audit_log.h"
#include "strongroom/kms/audit_writer.h"
#include "strongroom/kms/key_cache.h"
#include "strongroom/kms/org_policy.h"

namespace strongroom::kms::internal {
namespace {

using Poco::JSON::Object;

std::string Sha256(std::span<const std::uint8_t> bytes) {
  std::string digest(SHA256_DIGEST_LENGTH, '\0');
  SHA256(bytes.data(), bytes.size(), reinterpret_cast<unsigned char*>(digest.data()));
  return digest;
}

}  // namespace

KmsChannels::KmsChannels(Options options, hsm::Vault& vault, KmsIdentities& identities,
                         Database& db, const JwtVerifier& verifier, Clock clock, AuditWriter& audit,
                         KeyCache* channel_keys)
    : cluster_(std::move(options.cluster)),
      vault_(vault),
      identities_(identities),
      db_(db),
      verifier_(verifier),
      clock_(std::move(clock)),
      audit_(audit),
      channel_keys_(channel_keys),
      channels_(options.metadata_cache_entries, options.metadata_cache_age),
      replay_(db, options.max_requests_per_channel) {}

Result<std::string> KmsChannels::SignAnswer(const Object& answer,
                                            const KmsIdentities::Identity& identity) {
  Object header;
  header.set("alg", "PS256");
  header.set("kid", cluster_);
  std::string payload = ToJson(answer);
  return jose::SignJwsWith(
      ToJson(header), {reinterpret_cast<const std::uint8_t*>(payload.data()), payload.size()},
      [&](std::span<const std::uint8_t> input) { return identities_.Sign(identity, input); });
}

KmsReply KmsChannels::SignedRefusal(int status, const std::string& reason) {
  // Signed by the identity in service, which clients learn from /kms/info.
  const KmsIdentities::IdentityPtr identity = identities_.Current();
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

bool KmsChannels::FirstSightOfEcdhe(std::span<const std::uint8_t> encrypted_key) {
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

void KmsChannels::ForgetEcdhe(std::span<const std::uint8_t> encrypted_key) {
  std::lock_guard lock(ecdhe_mutex_);
  ecdhe_seen_.erase(Sha256(encrypted_key));  // its place in the order ages out harmlessly
}

void KmsChannels::SweepExecutedRequests(std::int64_t now_ms) {
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

KmsReply KmsChannels::Create(std::string_view message, std::string* operation) {
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
        KmsIdentities::Opened cek = identities_.Decrypt(encrypted_key);
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
  Object::Ptr jwk_json = r.Json().getObject("jwk");
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

Result<SecretBytes> KmsChannels::ChannelKey(const EphemeralKeyRecord& channel) {
  if (channel_keys_ != nullptr) {
    if (std::optional<SecretBytes> hit = channel_keys_->Get(channel.uri)) return std::move(*hit);
  }
  SR_ASSIGN_OR_RETURN(SecretBytes key, vault_.Unwrap({channel.org, channel.uri}, channel.blobs));
  if (channel_keys_ != nullptr) channel_keys_->Put(channel.uri, key.view());
  return key;
}

KmsReply KmsChannels::Open(std::string_view message, const std::string& kid, std::string* operation,
                           const Execute& execute) {
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
  Result<SecretBytes> channel_key = ChannelKey(ephemeral);
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
  auto seal = [&](const SealedAnswer& answer) -> KmsReply {
    std::string payload = answer.ToText();
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
    (void)audit_.Append(AuditRecord{
        0, clock_(), ephemeral.org, ephemeral.user_id, "request.replay", ephemeral.uri, "",
        "refused", "client " + ephemeral.client_id + ", message " + ReplayGuard::Hex(id)});
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
  SealedAnswer answer = execute(opened->plaintext, ephemeral, &unrecorded, operation);
  if (unrecorded) {
    // Not recorded with a write or an audit record: recorded now, before the answer leaves.
    if (!audit_.Append(std::move(*unrecorded)).ok()) {
      return seal(
          Answer(503, answer.RequestId(), "the KMS could not record the request; retry later"));
    }
  }
  return seal(answer);
}

Status KmsChannels::Delete(const std::string& uri) {
  SR_RETURN_IF_ERROR(db_.InTransaction(
      [&](Poco::Data::Session& s) { return KmsStore::DeleteEphemeralKey(s, uri); }));
  channels_.Invalidate();  // also any copy a concurrent request is about to cache
  if (channel_keys_ != nullptr) channel_keys_->Erase(uri);
  return OkStatus();
}

}  // namespace strongroom::kms::internal
