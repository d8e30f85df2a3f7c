// The client side of the KMS protocol (draft-abiggs-saag-key-management-service): an ECDHE channel
// to a KMS and sealed requests over it, independent of how the messages travel (HTTPS to the KMS,
// or the relay through the core). The SDK, the load generator and the tests all speak to the KMS
// through this.
//
//   KmsSession::Open  create /ecdhe: a fresh EC P-256 key pair, the request sealed RSA-OAEP/A256GCM
//                     to the KMS's static key, the PS256-signed answer checked against that key;
//                     both sides derive HKDF-SHA256(ECDH secret, empty salt, empty info, 32 bytes).
//   Call / Seal       later requests as JWE dir/A256GCM with kid = the ephemeral key's URI; the
//                     answer must come back under the same kid and carry the same requestId.
//
// A session is used by one thread at a time (it numbers its requests); open one per thread.
#ifndef STRONGROOM_CLIENT_KMS_SESSION_H_
#define STRONGROOM_CLIENT_KMS_SESSION_H_

#include <Poco/JSON/Object.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/common/jose.h"
#include "strongroom/common/secret_bytes.h"

namespace strongroom::client {

struct KmsResponse {
  int http_status = 0;
  std::string content_type;
  std::string body;
  int retry_after_s = 0;  // the Retry-After of a 429/503 answer, when the transport saw one
};

// Sends one compact-JOSE KMS message and returns what came back.
using KmsTransport = std::function<Result<KmsResponse>(const std::string& message)>;

// GET /kms/info: {"kmsCluster": "kms://<host>", "rsaPublicKey": {JWK with x5c}}.
struct KmsInfo {
  std::string cluster;
  jose::PublicJwk rsa_public_key;
  std::vector<std::string> x5c;  // standard base64 DER, leaf first; empty if not published
};
Result<KmsInfo> ParseKmsInfo(std::string_view json);

// A refusal the KMS signed instead of sealing (draft-02, Error Messages): an unencrypted PS256 JWS
// with its static key over {status, reason}. 401: the KMS does not know the channel's key (unknown,
// expired, deleted, or past its limit of requests): negotiate a new channel. 409 to a create
// /ecdhe: the same message was delivered before.
struct KmsRefusal {
  int status = 0;
  std::string reason;
};
// nullopt when `response` is not a compact JWS; an error when it is one that `kms_key` does not
// verify or whose payload is not a refusal.
Result<std::optional<KmsRefusal>> ReadKmsRefusal(const KmsResponse& response,
                                                 const jose::PublicJwk& kms_key);
// What a sealed answer's reason says when the KMS refused a message it had executed before.
inline constexpr char kReplayedReason[] = "replayed request";

// The KMS's plain 503 to a create /ecdhe it could not open while a token holding one of its
// identity keys is down (the message may be sealed to that key) comes back from KmsSession::Open
// as an UNAVAILABLE error of reason ErrorReason::kIdentityUnavailable. The KMS serves meanwhile
// with another token's identity key, certified for the same host: fetch /kms/info again, check it,
// and open the channel anew (KmsContext does). The same key works again once its token is back.

class KmsSession {
 public:
  static Result<std::unique_ptr<KmsSession>> Open(const KmsInfo& kms, std::string client_id,
                                                  std::string bearer, KmsTransport transport);

  // Sends {client, method, uri, requestId, ...fields} and returns the opened answer (with
  // "status", "requestId", maybe "reason", and the operation's result). A transport failure, a
  // plain (unsealed) error from the KMS, or an answer that does not open is an error; a protocol
  // status of 4xx/5xx inside a sealed answer is not (look at "status").
  Result<Poco::JSON::Object::Ptr> Call(const std::string& method, const std::string& uri,
                                       const Poco::JSON::Object& fields = Poco::JSON::Object());

  // The sealed request, not sent; the next requestId is used up (last_request_id() names it).
  // With `on_behalf_of`, a compliance officer's retrieval for that user: the credential carries
  // {bearer, userId: on_behalf_of, onBehalfOf: on_behalf_of}.
  Result<std::string> Seal(const std::string& method, const std::string& uri,
                           const Poco::JSON::Object& fields = Poco::JSON::Object(),
                           const std::string& on_behalf_of = "");
  // Opens a sealed answer; checks its kid (and, when expected_request_id is set, requestId). A
  // signed refusal (ReadKmsRefusal) is an error: UNAUTHENTICATED for a 401. An answer that does
  // not open, or answers another request, is DATA_LOSS: it was altered or forged on the way.
  Result<Poco::JSON::Object::Ptr> OpenAnswer(const KmsResponse& response,
                                             std::string_view expected_request_id = {}) const;

  // delete /ecdhe/<id>: the KMS forgets the channel; the session is unusable afterwards.
  Status Close();

  // The requestId of the last request made (by Seal or Call): what its answer must carry.
  const std::string& last_request_id() const { return last_request_id_; }
  const std::string& ephemeral_uri() const { return ephemeral_uri_; }
  const std::string& cluster() const { return cluster_; }
  std::int64_t expires_ms() const { return expires_ms_; }  // the KMS's expirationDate
  void set_bearer(std::string bearer) { bearer_ = std::move(bearer); }

 private:
  KmsSession(std::string cluster, jose::PublicJwk kms_key, std::string client_id,
             std::string bearer, KmsTransport transport, std::string ephemeral_uri, SecretBytes key,
             std::int64_t expires_ms);
  Poco::JSON::Object Request(const std::string& method, const std::string& uri,
                             const Poco::JSON::Object& fields, const std::string& on_behalf_of);

  std::string cluster_;
  jose::PublicJwk kms_key_;  // the static key, which signs refusals
  std::string client_id_;
  std::string bearer_;
  KmsTransport transport_;
  std::string ephemeral_uri_;
  SecretBytes key_;
  std::int64_t expires_ms_ = 0;
  std::uint64_t next_request_ = 1;
  std::string last_request_id_;
};

}  // namespace strongroom::client

#endif  // STRONGROOM_CLIENT_KMS_SESSION_H_
