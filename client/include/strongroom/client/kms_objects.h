// The KMS protocol's objects as the client SDK holds them (docs/api/kms-protocol.md): keys with
// their dates, resources and authorizations, read from opened (already authenticated) answers.
//
// A key's `expirationDate` means two things: for an unbound key the bind deadline, for a bound
// one the stop-encrypting date (content may still be decrypted with it afterwards). KmsKey keeps
// them apart so nobody has to remember which.
#ifndef STRONGROOM_CLIENT_KMS_OBJECTS_H_
#define STRONGROOM_CLIENT_KMS_OBJECTS_H_

#include <Poco/JSON/Object.h>

#include <cstdint>
#include <string>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"

namespace strongroom::client {

inline constexpr std::size_t kContentKeyBytes = 32;

struct KmsKey {
  std::string uri;           // kms://<host>/keys/<id>
  SecretBytes key;           // the 32 bytes of the oct JWK
  std::string resource_uri;  // empty while unbound
  std::string creator;       // the key's userId
  std::int64_t created_ms = 0;
  std::int64_t bound_ms = 0;            // bound keys only
  std::int64_t bind_deadline_ms = 0;    // unbound keys only: bind before this or lose the key
  std::int64_t stop_encrypting_ms = 0;  // bound keys only: encrypt nothing new after this

  bool bound() const { return !resource_uri.empty(); }
  KmsKey Copy() const;
};

struct KmsAuthorization {
  std::string uri;
  std::string resource_uri;
  std::string auth_id;  // a user id, or a resource URI (inherited membership)
  std::string role;     // "participant", "cloudAgent", "orgAgent"
};

struct KmsResource {
  std::string uri;
  std::vector<std::string> key_uris;
  std::vector<std::string> authorization_uris;   // in a create answer
  std::vector<KmsAuthorization> authorizations;  // in a retrieve answer
};

// An organization's search key (retrieve /search-keys; its indexer's only).
struct KmsSearchKey {
  std::string uri;  // kms://<host>/search-keys/<org>/<version>
  std::uint32_t version = 0;
  SecretBytes key;  // the 32 bytes of the oct JWK
  std::int64_t created_ms = 0;
};

// A resource a user is authorized on (retrieve /authorizations?authId=<user>).
struct KmsUserAuthorization {
  std::string resource_uri;
  std::string role;  // the user's own role where its membership starts
};

// One page of them; `cursor` empty on the last page, else what asks for the next.
struct KmsAuthorizationPage {
  std::vector<KmsUserAuthorization> authorizations;
  std::string cursor;
};

// Members of opened answers. A missing or malformed member is INVALID_ARGUMENT naming it; keys
// must carry a 32-byte oct JWK whose kid is their URI.
Result<KmsKey> ParseKmsKey(const Poco::JSON::Object& key);
Result<std::vector<KmsKey>> ParseKmsKeys(const Poco::JSON::Object& answer);  // "keys"
Result<KmsResource> ParseKmsResource(const Poco::JSON::Object& resource);
Result<KmsAuthorization> ParseKmsAuthorization(const Poco::JSON::Object& authorization);
Result<std::vector<KmsAuthorization>> ParseKmsAuthorizations(const Poco::JSON::Object& answer);
// "searchKey": its uri's last segment must be its version, its JWK 32 bytes with kid = uri.
Result<KmsSearchKey> ParseKmsSearchKey(const Poco::JSON::Object& search_key);
Result<KmsAuthorizationPage> ParseKmsAuthorizationPage(const Poco::JSON::Object& answer);

// An opened answer whose protocol "status" is not `expected`, as an Error: 400 INVALID_ARGUMENT,
// 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 NOT_FOUND, 409 ALREADY_EXISTS, 429/503
// UNAVAILABLE, others INTERNAL; the message names the operation, the status and the KMS's reason.
Status CheckAnswerStatus(const Poco::JSON::Object& answer, int expected, const std::string& what);
int AnswerStatus(const Poco::JSON::Object& answer);  // 0 when absent

}  // namespace strongroom::client

#endif  // STRONGROOM_CLIENT_KMS_OBJECTS_H_
