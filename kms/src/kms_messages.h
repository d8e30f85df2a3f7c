// The words the KMS protocol's two rooms share: the request inside an opened message, the answers
// put into sealed and signed replies, and the plain JSON errors for a message that could not be
// opened. The channel (kms_channels.h) and the operations (kms_service.cc) both speak them.
#ifndef STRONGROOM_KMS_SRC_KMS_MESSAGES_H_
#define STRONGROOM_KMS_SRC_KMS_MESSAGES_H_

#include <Poco/JSON/Object.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

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

// The parts of a request every operation needs, from the decrypted JSON. A request written
// plainly (message_json.h: what the SDK writes) has them read without a tree; the whole request is
// parsed only for an operation that reads more (Json()), or when it is not plain (then it is
// parsed strictly up front, and refused as before when that parser refuses it).
struct Request {
  std::string method;
  std::string uri;  // made absolute: kms://<host>/...
  std::string request_id;
  std::string client_id;
  std::string bearer;
  bool on_behalf = false;  // client.credential has an onBehalfOf member
  std::string_view text;   // the plaintext, which outlives the Request

  // The whole request, parsed strictly at the first use.
  const Poco::JSON::Object& Json() const;
  mutable Poco::JSON::Object::Ptr json;
};
Result<Request> ParseRequest(const SecretBytes& plaintext, const std::string& cluster);
// The requestId of a request ParseRequest refused, when it is there to be read ("" otherwise), so
// that even a malformed request's refusal names it.
std::string RequestIdOf(const SecretBytes& plaintext);

// A sealed request's answer: an object, or (a retrieved key, the hot path) its JSON written
// directly (message_json.h). It may hold key material: `json` is wiped when it goes.
struct SealedAnswer {
  SealedAnswer(Poco::JSON::Object answer)  // NOLINT(google-explicit-constructor): most answers
      : object(std::move(answer)) {}
  SealedAnswer(std::string id, std::string text)
      : request_id(std::move(id)), json(std::move(text)) {}
  SealedAnswer(SealedAnswer&&) = default;
  SealedAnswer& operator=(SealedAnswer&&) = delete;
  ~SealedAnswer() { ZeroizeString(json); }

  // The answer's requestId ("" when it has none).
  std::string RequestId() const;
  // The answer as sent; the caller wipes it once sealed.
  std::string ToText() const;

  Poco::JSON::Object object;
  std::string request_id;  // of `json`
  std::string json;        // when set, the answer
};

// {status, requestId[, reason]}: what every answer starts from.
Poco::JSON::Object Answer(int status, const std::string& request_id,
                          const std::string& reason = {});

// <cluster>/<kind>/<a random UUID>.
std::string NewUri(const std::string& cluster, const char* kind);

}  // namespace strongroom::kms::internal

#endif  // STRONGROOM_KMS_SRC_KMS_MESSAGES_H_
