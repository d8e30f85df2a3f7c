#include "kms_messages.h"

#include <Poco/DateTimeFormat.h>
#include <Poco/DateTimeFormatter.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Timestamp.h>
#include <Poco/UUIDGenerator.h>

#include <sstream>

#include "strongroom/common/strict_json.h"

namespace strongroom::kms::internal {

using Poco::JSON::Object;

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

KmsReply HsmUnavailable() {
  return PlainError(503, "hsm_unavailable", "the KMS's HSM is unavailable; retry later");
}

KmsReply IdentityUnavailable() {
  constexpr ErrorReason kReason = ErrorReason::kIdentityUnavailable;
  return PlainError(HttpStatusFor(ErrorCodeOf(kReason)), std::string(ErrorReasonName(kReason)),
                    "the message may be sealed to an identity key of the KMS whose token is "
                    "unavailable; fetch /kms/info again and seal to the key it publishes");
}

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

Object Answer(int status, const std::string& request_id, const std::string& reason) {
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

}  // namespace strongroom::kms::internal
