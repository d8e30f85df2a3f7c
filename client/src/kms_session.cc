#include "strongroom/client/kms_session.h"

#include <Poco/DateTimeParser.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Parser.h>
#include <Poco/UUIDGenerator.h>

#include <algorithm>
#include <sstream>

#include "strongroom/common/kms_uri.h"

namespace strongroom::client {
namespace {

using Poco::JSON::Object;

constexpr char kJose[] = "application/jose";

std::string Json(const Object& object) {
  std::ostringstream out;
  object.stringify(out);
  return out.str();
}

std::span<const std::uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

Result<Object::Ptr> ParseObject(std::string_view text, const char* what) {
  try {
    Poco::JSON::Parser parser;
    Object::Ptr object = parser.parse(std::string(text)).extract<Object::Ptr>();
    if (object) return object;
  } catch (const Poco::Exception&) {
  } catch (const std::exception&) {
  }
  return Error(ErrorCode::kInvalidArgument, std::string(what) + " is not a JSON object");
}

std::string Text(const Object::Ptr& object, const char* name) {
  if (!object || !object->has(name) || !object->get(name).isString()) return "";
  return object->getValue<std::string>(name);
}

// A plain (unsealed) reply from the KMS: its {"code","message"} as an error, with the reason its
// code names when that reason goes with the HTTP status ("identity_unavailable": 503).
Error PlainError(const KmsResponse& response) {
  Result<Object::Ptr> body = ParseObject(response.body, "the KMS's error");
  std::string message = body.ok() ? Text(*body, "message") : "";
  std::string code = body.ok() ? Text(*body, "code") : "";
  ErrorCode error_code = ErrorCode::kInternal;
  switch (response.http_status) {
    case 400:
    case 413:
      error_code = ErrorCode::kInvalidArgument;
      break;
    case 401:
      error_code = ErrorCode::kUnauthenticated;
      break;
    case 403:
      error_code = ErrorCode::kPermissionDenied;
      break;
    case 404:
      error_code = ErrorCode::kNotFound;
      break;
    case 429:
    case 503:
      error_code = ErrorCode::kUnavailable;
      break;
    default:
      break;
  }
  const std::string text = "KMS answered HTTP " + std::to_string(response.http_status) +
                           (code.empty() ? "" : " " + code) +
                           (message.empty() ? "" : ": " + message);
  if (const ErrorReason reason = ErrorReasonNamed(code);
      reason != ErrorReason::kNone && HttpStatusFor(ErrorCodeOf(reason)) == response.http_status) {
    return Error(reason, text);
  }
  return Error(error_code, text);
}

std::int64_t ParseDateMs(const std::string& text) {
  try {
    int tz = 0;
    Poco::DateTime date = Poco::DateTimeParser::parse(text, tz);
    return (date.timestamp().epochMicroseconds() - static_cast<std::int64_t>(tz) * 1'000'000) /
           1000;
  } catch (const Poco::Exception&) {
    return 0;
  }
}

// An answer that does not verify, open or match its request was altered or forged between the
// KMS and us (a relay, a proxy): DATA_LOSS, not the caller's bad input.
Error Unverified(const std::string& what, const Error& why) {
  return Error(ErrorCode::kDataLoss,
               what + " did not verify (altered or forged on the way): " + why.message());
}

Error RefusalError(const KmsRefusal& refusal, const std::string& what) {
  return Error(refusal.status == 401 ? ErrorCode::kUnauthenticated : ErrorCode::kFailedPrecondition,
               what + " refused by the KMS: " + std::to_string(refusal.status) +
                   (refusal.reason.empty() ? "" : " " + refusal.reason));
}

}  // namespace

Result<std::optional<KmsRefusal>> ReadKmsRefusal(const KmsResponse& response,
                                                 const jose::PublicJwk& kms_key) {
  // A compact JWS has three parts (two dots); every sealed answer is a JWE (five), and is passed
  // over without decoding anything.
  if (response.content_type.rfind(kJose, 0) != 0 ||
      std::count(response.body.begin(), response.body.end(), '.') != 2) {
    return std::optional<KmsRefusal>();
  }
  const std::string_view ps256[] = {"PS256"};
  Result<jose::VerifiedJws> verified = jose::VerifyJws(response.body, kms_key, ps256);
  if (!verified.ok()) return Unverified("the KMS's signed answer", verified.error());
  SR_ASSIGN_OR_RETURN(Object::Ptr payload, ParseObject(verified->payload(), "the KMS's refusal"));
  if (!payload->has("status") || !payload->get("status").isInteger() || payload->has("key")) {
    return Error(ErrorCode::kInvalidArgument, "the KMS's signed answer is not a refusal");
  }
  return std::optional<KmsRefusal>(
      KmsRefusal{payload->getValue<int>("status"), Text(payload, "reason")});
}

Result<KmsInfo> ParseKmsInfo(std::string_view json) {
  if (json.size() > 256 * 1024) return Error(ErrorCode::kInvalidArgument, "KMS info is too large");
  SR_ASSIGN_OR_RETURN(Object::Ptr info, ParseObject(json, "KMS info"));
  std::string cluster = Text(info, "kmsCluster");
  // Every URI the KMS answers with is compared with it as written: the form KmsUri writes.
  if (Result<KmsUri> named = KmsUri::ParseCluster(cluster);
      !named.ok() || named->ToString() != cluster) {
    return Error(ErrorCode::kInvalidArgument, "KMS info has no kms://<host> kmsCluster");
  }
  Object::Ptr rsa = info->getObject("rsaPublicKey");
  if (!rsa) return Error(ErrorCode::kInvalidArgument, "KMS info has no rsaPublicKey");
  SR_ASSIGN_OR_RETURN(jose::PublicJwk key, jose::PublicJwk::Parse(Json(*rsa)));
  if (key.type() != jose::PublicJwk::Type::kRsa) {
    return Error(ErrorCode::kInvalidArgument, "the KMS's static key is not RSA");
  }
  std::vector<std::string> x5c;
  if (Poco::JSON::Array::Ptr chain = rsa->getArray("x5c")) {
    for (unsigned i = 0; i < static_cast<unsigned>(chain->size()); ++i) {
      x5c.push_back(chain->getElement<std::string>(i));
    }
  }
  return KmsInfo{std::move(cluster), std::move(key), std::move(x5c)};
}

Result<std::unique_ptr<KmsSession>> KmsSession::Open(const KmsInfo& kms, std::string client_id,
                                                     std::string bearer, KmsTransport transport) {
  if (client_id.empty() || bearer.empty() || !transport) {
    return Error(ErrorCode::kInvalidArgument, "a KMS session needs a client id, bearer, transport");
  }
  SR_ASSIGN_OR_RETURN(jose::EcKeyPair mine, jose::EcKeyPair::Generate());
  SR_ASSIGN_OR_RETURN(std::string my_jwk, mine.PublicJwkJson());
  const std::string request_id =
      "ecdhe-" + Poco::UUIDGenerator::defaultGenerator().createRandom().toString();
  Object request;
  Object client, credential;
  credential.set("bearer", bearer);
  client.set("clientId", client_id);
  client.set("credential", credential);
  request.set("client", client);
  request.set("method", "create");
  request.set("uri", "/ecdhe");
  request.set("requestId", request_id);
  SR_ASSIGN_OR_RETURN(Object::Ptr jwk_object, ParseObject(my_jwk, "our JWK"));
  request.set("jwk", jwk_object);
  std::string plaintext = Json(request);
  Result<std::string> jwe =
      jose::EncryptRsaOaepJwe(kms.rsa_public_key, kms.cluster, Bytes(plaintext));
  ZeroizeString(plaintext);
  if (!jwe.ok()) return jwe.error();

  SR_ASSIGN_OR_RETURN(KmsResponse response, transport(*jwe));
  if (response.content_type.rfind(kJose, 0) != 0) return PlainError(response);
  const std::string_view ps256[] = {"PS256"};
  Result<jose::VerifiedJws> verified = jose::VerifyJws(response.body, kms.rsa_public_key, ps256);
  if (!verified.ok()) return Unverified("the ECDHE answer", verified.error());
  SR_ASSIGN_OR_RETURN(Object::Ptr answer, ParseObject(verified->payload(), "the ECDHE answer"));
  const int status = answer->has("status") ? answer->getValue<int>("status") : 0;
  if (status != 201) {
    // 409: the KMS saw this very message before (a resend on the way); a fresh one will do.
    const ErrorCode code = status == 401   ? ErrorCode::kUnauthenticated
                           : status == 409 ? ErrorCode::kUnavailable
                                           : ErrorCode::kFailedPrecondition;
    return Error(code, "create /ecdhe answered " + std::to_string(status) +
                           (Text(answer, "reason").empty() ? "" : ": " + Text(answer, "reason")));
  }
  if (Text(answer, "requestId") != request_id) {
    return Error(ErrorCode::kDataLoss, "the ECDHE answer is for another request");
  }
  Object::Ptr key = answer->getObject("key");
  const std::string uri = Text(key, "uri");
  // The channel's URI is the kid of every sealed message: it is kept as the KMS wrote it.
  if (Result<KmsUri> channel = KmsUri::Parse(uri);
      !channel.ok() || channel->cluster() != kms.cluster || !channel->IsItem("ecdhe") ||
      channel->ToString() != uri || !key->getObject("jwk")) {
    return Error(ErrorCode::kInvalidArgument, "the ECDHE answer has no key of this KMS");
  }
  SR_ASSIGN_OR_RETURN(jose::PublicJwk theirs, jose::PublicJwk::Parse(Json(*key->getObject("jwk"))));
  if (theirs.type() != jose::PublicJwk::Type::kEcP256) {
    return Error(ErrorCode::kInvalidArgument, "the KMS's ephemeral key is not EC P-256");
  }
  SR_ASSIGN_OR_RETURN(SecretBytes shared, jose::DeriveEphemeralKey(mine, theirs));
  return std::unique_ptr<KmsSession>(new KmsSession(
      kms.cluster, kms.rsa_public_key, std::move(client_id), std::move(bearer),
      std::move(transport), uri, std::move(shared), ParseDateMs(Text(key, "expirationDate"))));
}

KmsSession::KmsSession(std::string cluster, jose::PublicJwk kms_key, std::string client_id,
                       std::string bearer, KmsTransport transport, std::string ephemeral_uri,
                       SecretBytes key, std::int64_t expires_ms)
    : cluster_(std::move(cluster)),
      kms_key_(std::move(kms_key)),
      client_id_(std::move(client_id)),
      bearer_(std::move(bearer)),
      transport_(std::move(transport)),
      ephemeral_uri_(std::move(ephemeral_uri)),
      key_(std::move(key)),
      expires_ms_(expires_ms) {}

Object KmsSession::Request(const std::string& method, const std::string& uri, const Object& fields,
                           const std::string& on_behalf_of) {
  Object request(fields);
  Object client, credential;
  credential.set("bearer", bearer_);
  if (!on_behalf_of.empty()) {
    credential.set("userId", on_behalf_of);
    credential.set("onBehalfOf", on_behalf_of);
  }
  client.set("clientId", client_id_);
  client.set("credential", credential);
  request.set("client", client);
  request.set("method", method);
  request.set("uri", uri);
  last_request_id_ = client_id_ + "-" + std::to_string(next_request_++);
  request.set("requestId", last_request_id_);
  return request;
}

Result<std::string> KmsSession::Seal(const std::string& method, const std::string& uri,
                                     const Object& fields, const std::string& on_behalf_of) {
  if (key_.empty()) return Error(ErrorCode::kFailedPrecondition, "the KMS session is closed");
  std::string plaintext = Json(Request(method, uri, fields, on_behalf_of));
  Result<std::string> jwe = jose::EncryptDir(key_.view(), ephemeral_uri_, Bytes(plaintext));
  ZeroizeString(plaintext);
  return jwe;
}

Result<Object::Ptr> KmsSession::OpenAnswer(const KmsResponse& response,
                                           std::string_view expected_request_id) const {
  if (response.content_type.rfind(kJose, 0) != 0) return PlainError(response);
  SR_ASSIGN_OR_RETURN(std::optional<KmsRefusal> refusal, ReadKmsRefusal(response, kms_key_));
  if (refusal) return RefusalError(*refusal, "the request on channel " + ephemeral_uri_);
  Result<jose::DecryptedJwe> opened =
      jose::DecryptDir(response.body, [&](const jose::JoseHeader& header) -> Result<SecretBytes> {
        if (header.kid != ephemeral_uri_) {
          return Error(ErrorCode::kInvalidArgument, "the answer is sealed under another key");
        }
        return SecretBytes(key_.view());
      });
  if (!opened.ok()) return Unverified("the KMS's answer", opened.error());
  SR_ASSIGN_OR_RETURN(Object::Ptr answer,
                      ParseObject(opened->plaintext.as_string_view(), "the KMS's answer"));
  if (!expected_request_id.empty() && Text(answer, "requestId") != expected_request_id) {
    return Error(ErrorCode::kDataLoss, "the KMS's answer is for another request");
  }
  return answer;
}

Result<Object::Ptr> KmsSession::Call(const std::string& method, const std::string& uri,
                                     const Object& fields) {
  SR_ASSIGN_OR_RETURN(std::string message, Seal(method, uri, fields));
  const std::string request_id = last_request_id_;
  SR_ASSIGN_OR_RETURN(KmsResponse response, transport_(message));
  return OpenAnswer(response, request_id);
}

Status KmsSession::Close() {
  SR_ASSIGN_OR_RETURN(Object::Ptr answer, Call("delete", ephemeral_uri_));
  const int status = answer->has("status") ? answer->getValue<int>("status") : 0;
  if (status != 204 && status != 200) {
    return Error(ErrorCode::kFailedPrecondition,
                 "delete /ecdhe answered " + std::to_string(status));
  }
  key_ = SecretBytes();
  return OkStatus();
}

}  // namespace strongroom::client
