// The words the KMS protocol's two rooms share: the request inside an opened message, the answers
// put into sealed and signed replies, and the plain JSON errors for a message that could not be
// opened. The channel (kms_channels.h) and the operations (kms_service.cc) both speak them.
#ifndef STRONGROOM_KMS_SRC_KMS_MESSAGES_H_
#define STRONGROOM_KMS_SRC_KMS_MESSAGES_H_

#include <Poco/JSON/Object.h>

#include <cstdint>
#include <string>

#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/kms/kms_service.h"

namespace strongroom::kms::internal {

inline constexpr char kJose[] = "application/jose";

std::string Rfc3339(std::int64_t ms);
std::string ToJson(const Poco::JSON::Object& object);

// A reply for a message that could not be opened: plain JSON {"code","message"}.
KmsReply PlainError(int status, const std::string& code, const std::string& message);
// The one answer to a message the HSM could not serve (the static key or a channel's key could not
// be used): plain 503, which the listeners send with Retry-After.
KmsReply HsmUnavailable();
// A create /ecdhe no identity key opened while a token that holds one is down (kms_identities.h):
// plain 503 identity_unavailable, the code the SDK reads back as ErrorReason::kIdentityUnavailable.
KmsReply IdentityUnavailable();

// The parts of a request every operation needs, from the decrypted JSON.
struct Request {
  Poco::JSON::Object::Ptr json;
  std::string method;
  std::string uri;  // made absolute: kms://<host>/...
  std::string request_id;
  std::string client_id;
  std::string bearer;
};
Result<Request> ParseRequest(const SecretBytes& plaintext, const std::string& cluster);
// The requestId of a request ParseRequest refused, when it is there to be read ("" otherwise), so
// that even a malformed request's refusal names it.
std::string RequestIdOf(const SecretBytes& plaintext);

// {status, requestId[, reason]}: what every answer starts from.
Poco::JSON::Object Answer(int status, const std::string& request_id,
                          const std::string& reason = {});

// <cluster>/<kind>/<a random UUID>.
std::string NewUri(const std::string& cluster, const char* kind);

}  // namespace strongroom::kms::internal

#endif  // STRONGROOM_KMS_SRC_KMS_MESSAGES_H_
