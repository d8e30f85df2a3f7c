#include "kms_messages.h"

#include <Poco/Exception.h>
#include <Poco/JSON/Parser.h>
#include <Poco/UUIDGenerator.h>

#include <optional>
#include <sstream>
#include <stdexcept>

#include "strongroom/common/strict_json.h"
#include "strongroom/kms/message_json.h"

namespace strongroom::kms::internal {

using Poco::JSON::Object;

std::string Rfc3339(std::int64_t ms) { return Iso8601Micro(ms); }

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

const Object& Request::Json() const {
  if (!json) {
    Result<Object::Ptr> parsed = ParseStrictJsonObject(text);
    // ParseRequest read the text plainly, and a text read plainly is read alike by this parser
    // (message_json_test.cc); Handle answers 500 should that ever fail.
    if (!parsed.ok()) throw std::logic_error("a request read plainly does not parse");
    json = *parsed;
  }
  return *json;
}

Result<Request> ParseRequest(const SecretBytes& plaintext, const std::string& cluster) {
  Request r;
  r.text = plaintext.as_string_view();
  if (std::optional<RequestFields> plain = ReadPlainRequest(r.text)) {
    r.method = std::move(plain->method);
    r.uri = std::move(plain->uri);
    r.request_id = std::move(plain->request_id);
    r.client_id = std::move(plain->client_id);
    r.bearer = std::move(plain->bearer);
    r.on_behalf = plain->on_behalf;
  } else {
    // A member given twice ({"count":1,"count":100}) is refused, not read as the last one.
    Result<Object::Ptr> parsed = ParseStrictJsonObject(r.text);
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
    r.on_behalf = credential && credential->has("onBehalfOf");
  }
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

std::string SealedAnswer::RequestId() const {
  if (!json.empty()) return request_id;
  return object.has("requestId") && object.get("requestId").isString()
             ? object.getValue<std::string>("requestId")
             : "";
}

std::string SealedAnswer::ToText() const { return json.empty() ? ToJson(object) : json; }

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
