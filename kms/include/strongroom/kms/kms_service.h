// The KMS protocol endpoint, independent of transport: one sealed message in, one reply out.
// HTTPS (POST /kms/messages) and the relay through the core are thin layers over Handle().
//
// Implemented so far (draft-abiggs-saag-key-management-service-02):
//   - create /ecdhe: JWE RSA-OAEP/A256GCM to the KMS's static key (whose private half is in the
//     HSM); answered with a PS256 JWS signed in the HSM carrying the KMS's ephemeral EC P-256 key.
//     Both sides derive HKDF-SHA256(ECDH secret, empty salt, empty info, 32 bytes).
//   - every later message: JWE dir/A256GCM with kid = the ephemeral key's URI; refused when that
//     key is unknown, expired or deleted, or was made for another user.
//   - delete /ecdhe/<id> (204) and update /ping (200).
//   - create /keys (count unbound keys), retrieve /keys/<id> (an unbound key by its creator, a
//     bound one by users authorized on its resource), create /resources (with authIds and
//     keyUris, all-or-nothing: the creator is authorized, the keys are bound).
//   - create /authorizations, retrieve /resources/<id>/authorizations[?authId=], delete
//     /authorizations/<id>: by any user authorized on the resource.
// The rest of the protocol follows (issue: kmsd). Every key operation is audited.
//
// Ephemeral keys are stored wrapped under every token's root key (the HSM layer's KeyVault), so
// any KMS node sharing the database can open a channel another node set up.
#ifndef STRONGROOM_KMS_KMS_SERVICE_H_
#define STRONGROOM_KMS_KMS_SERVICE_H_

#include <Poco/JSON/Object.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "strongroom/common/error.h"
#include "strongroom/common/jose.h"
#include "strongroom/common/jwt.h"
#include "strongroom/hsm/key_vault.h"
#include "strongroom/kms/database.h"

namespace strongroom::kms {

inline constexpr std::size_t kMaxKmsMessageBytes = 256 * 1024;

struct KmsServiceConfig {
  std::string host;                  // the KMS is kms://<host>
  std::string identity_key = "kms";  // name of the RSA identity key in the first token
  std::chrono::seconds ephemeral_lifetime{3600};
  std::chrono::seconds bind_deadline{600};       // an unbound key must be bound by then
  std::chrono::seconds encrypt_lifetime{86400};  // a bound key encrypts until then
};

inline constexpr std::size_t kMaxKeysPerRequest = 100;
inline constexpr std::size_t kMaxIdsPerRequest = 1000;  // authIds, keyUris

// What goes back to the transport: a sealed reply (application/jose), or, when the message could
// not be opened at all, a plain JSON error ({"code","message"}) with an HTTP status.
struct KmsReply {
  int http_status = 200;
  std::string content_type;
  std::string body;
};

class KmsService {
 public:
  using Clock = std::function<std::int64_t()>;  // milliseconds since the epoch

  static Result<std::unique_ptr<KmsService>> New(KmsServiceConfig config, hsm::KeyVault& vault,
                                                 Database& db, JwtVerifier verifier,
                                                 Clock clock = {});

  // Never throws; every failure becomes a protocol status or a JSON error.
  KmsReply Handle(std::string_view message);

  // The static key as published at GET /kms/info: {"kmsCluster", "rsaPublicKey"}.
  const std::string& InfoJson() const { return info_json_; }
  const jose::PublicJwk& PublicKey() const { return public_key_; }

 private:
  KmsService(KmsServiceConfig config, hsm::KeyVault& vault, hsm::Token& identity, Database& db,
             JwtVerifier verifier, Clock clock, jose::PublicJwk public_key);

  KmsReply HandleEcdheCreate(std::string_view message);
  KmsReply HandleSealed(std::string_view message, const std::string& kid);

  struct Caller;  // the verified user of a sealed request
  Poco::JSON::Object CreateKeys(const Caller& caller, const Poco::JSON::Object& request);
  Poco::JSON::Object RetrieveKey(const Caller& caller, const std::string& uri);
  Poco::JSON::Object CreateResource(const Caller& caller, const Poco::JSON::Object& request);
  Poco::JSON::Object CreateAuthorizations(const Caller& caller, const Poco::JSON::Object& request);
  Poco::JSON::Object ListAuthorizations(const Caller& caller, const std::string& uri);
  Poco::JSON::Object DeleteAuthorization(const Caller& caller, const std::string& uri);
  void Audit(const Caller& caller, std::string action, std::string resource, std::string key,
             std::string outcome);

  const KmsServiceConfig config_;
  const std::string cluster_;  // kms://<host>
  hsm::KeyVault& vault_;
  hsm::Token& identity_;
  Database& db_;
  const JwtVerifier verifier_;
  const Clock clock_;
  const jose::PublicJwk public_key_;
  std::string info_json_;
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_KMS_SERVICE_H_
