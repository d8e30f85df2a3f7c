#include "strongroom/client/kms_objects.h"

#include <Poco/JSON/Array.h>

#include "strongroom/common/jose/base64url.h"
#include "strongroom/common/rfc3339.h"

namespace strongroom::client {
namespace {

using Poco::JSON::Array;
using Poco::JSON::Object;

std::string Text(const Object& object, const char* name) {
  if (!object.has(name) || !object.get(name).isString()) return "";
  return object.getValue<std::string>(name);
}

Result<std::string> RequiredText(const Object& object, const char* name, const char* what) {
  std::string text = Text(object, name);
  if (text.empty()) {
    return Error(ErrorCode::kInvalidArgument,
                 std::string(what) + " in the KMS's answer has no \"" + name + "\"");
  }
  return text;
}

// 0 when absent; an error when present and not RFC 3339.
Result<std::int64_t> Date(const Object& object, const char* name, const char* what) {
  if (!object.has(name)) return std::int64_t{0};
  std::optional<std::int64_t> ms = ParseRfc3339Ms(Text(object, name));
  if (!ms) {
    return Error(ErrorCode::kInvalidArgument,
                 std::string(what) + " in the KMS's answer has a malformed \"" + name + "\"");
  }
  return *ms;
}

std::vector<std::string> Strings(const Array::Ptr& array) {
  std::vector<std::string> out;
  for (unsigned i = 0; array && i < static_cast<unsigned>(array->size()); ++i) {
    if (array->get(i).isString()) out.push_back(array->getElement<std::string>(i));
  }
  return out;
}

}  // namespace

KmsKey KmsKey::Copy() const {
  KmsKey copy;
  copy.uri = uri;
  copy.key = SecretBytes(key.view());
  copy.resource_uri = resource_uri;
  copy.creator = creator;
  copy.created_ms = created_ms;
  copy.bound_ms = bound_ms;
  copy.bind_deadline_ms = bind_deadline_ms;
  copy.stop_encrypting_ms = stop_encrypting_ms;
  return copy;
}

Result<KmsKey> ParseKmsKey(const Object& key) {
  KmsKey out;
  SR_ASSIGN_OR_RETURN(out.uri, RequiredText(key, "uri", "a key"));
  Object::Ptr jwk = key.getObject("jwk");
  if (!jwk || Text(*jwk, "kty") != "oct") {
    return Error(ErrorCode::kInvalidArgument, "key " + out.uri + " has no oct JWK");
  }
  if (jwk->has("kid") && Text(*jwk, "kid") != out.uri) {
    return Error(ErrorCode::kInvalidArgument, "key " + out.uri + " has a JWK of another kid");
  }
  std::string k = Text(*jwk, "k");
  Result<std::vector<std::uint8_t>> bytes = jose::Base64UrlDecode(k);
  ZeroizeString(k);
  if (!bytes.ok() || bytes->size() != kContentKeyBytes) {
    if (bytes.ok()) std::fill(bytes->begin(), bytes->end(), 0);
    return Error(ErrorCode::kInvalidArgument, "key " + out.uri + " is not 32 bytes");
  }
  out.key = SecretBytes(std::span<const std::uint8_t>(*bytes));
  std::fill(bytes->begin(), bytes->end(), 0);
  out.resource_uri = Text(key, "resourceUri");
  out.creator = Text(key, "userId");
  SR_ASSIGN_OR_RETURN(out.created_ms, Date(key, "createDate", "a key"));
  SR_ASSIGN_OR_RETURN(std::int64_t expiration, Date(key, "expirationDate", "a key"));
  if (out.bound()) {
    SR_ASSIGN_OR_RETURN(out.bound_ms, Date(key, "bindDate", "a key"));
    out.stop_encrypting_ms = expiration;
  } else {
    out.bind_deadline_ms = expiration;
  }
  return out;
}

Result<std::vector<KmsKey>> ParseKmsKeys(const Object& answer) {
  Array::Ptr keys = answer.getArray("keys");
  if (!keys) return Error(ErrorCode::kInvalidArgument, "the KMS's answer has no \"keys\"");
  std::vector<KmsKey> out;
  for (unsigned i = 0; i < static_cast<unsigned>(keys->size()); ++i) {
    Object::Ptr key = keys->getObject(i);
    if (!key) return Error(ErrorCode::kInvalidArgument, "a key in the KMS's answer is no object");
    SR_ASSIGN_OR_RETURN(KmsKey parsed, ParseKmsKey(*key));
    out.push_back(std::move(parsed));
  }
  return out;
}

Result<KmsAuthorization> ParseKmsAuthorization(const Object& authorization) {
  KmsAuthorization out;
  SR_ASSIGN_OR_RETURN(out.uri, RequiredText(authorization, "uri", "an authorization"));
  out.resource_uri = Text(authorization, "resourceUri");
  SR_ASSIGN_OR_RETURN(out.auth_id, RequiredText(authorization, "authId", "an authorization"));
  out.role = Text(authorization, "roleUri");
  if (out.role.empty()) out.role = Text(authorization, "role");
  return out;
}

Result<std::vector<KmsAuthorization>> ParseKmsAuthorizations(const Object& answer) {
  Array::Ptr list = answer.getArray("authorizations");
  if (!list) {
    return Error(ErrorCode::kInvalidArgument, "the KMS's answer has no \"authorizations\"");
  }
  std::vector<KmsAuthorization> out;
  for (unsigned i = 0; i < static_cast<unsigned>(list->size()); ++i) {
    Object::Ptr item = list->getObject(i);
    if (!item) {
      return Error(ErrorCode::kInvalidArgument,
                   "an authorization in the KMS's answer is no object");
    }
    SR_ASSIGN_OR_RETURN(KmsAuthorization parsed, ParseKmsAuthorization(*item));
    out.push_back(std::move(parsed));
  }
  return out;
}

Result<KmsSearchKey> ParseKmsSearchKey(const Object& search_key) {
  KmsSearchKey out;
  SR_ASSIGN_OR_RETURN(out.uri, RequiredText(search_key, "uri", "a search key"));
  if (!search_key.has("version") || !search_key.get("version").isInteger() ||
      search_key.get("version").isBoolean()) {
    return Error(ErrorCode::kInvalidArgument, "search key " + out.uri + " has no version");
  }
  const long long version = search_key.getValue<long long>("version");
  // Appended, not "/" + ...: GCC 12's -O3 warns falsely (-Wrestrict) about the operator+.
  std::string suffix = "/";
  suffix += std::to_string(version);
  if (version < 1 || version > 0xffffffffLL || out.uri.find("/search-keys/") == std::string::npos ||
      !out.uri.ends_with(suffix)) {
    return Error(ErrorCode::kInvalidArgument,
                 "search key " + out.uri + " does not carry its own version");
  }
  out.version = static_cast<std::uint32_t>(version);
  // A search key's JWK is read as a content key's is (oct, kid = uri, 32 bytes).
  Object as_key;
  as_key.set("uri", out.uri);
  if (search_key.has("jwk")) as_key.set("jwk", search_key.get("jwk"));
  SR_ASSIGN_OR_RETURN(KmsKey key, ParseKmsKey(as_key));
  out.key = std::move(key.key);
  SR_ASSIGN_OR_RETURN(out.created_ms, Date(search_key, "createDate", "a search key"));
  return out;
}

Result<KmsAuthorizationPage> ParseKmsAuthorizationPage(const Object& answer) {
  Array::Ptr list = answer.getArray("authorizations");
  if (!list) {
    return Error(ErrorCode::kInvalidArgument, "the KMS's answer has no \"authorizations\"");
  }
  KmsAuthorizationPage out;
  for (unsigned i = 0; i < static_cast<unsigned>(list->size()); ++i) {
    Object::Ptr item = list->getObject(i);
    if (!item) {
      return Error(ErrorCode::kInvalidArgument,
                   "an authorization in the KMS's answer is no object");
    }
    KmsUserAuthorization a;
    SR_ASSIGN_OR_RETURN(a.resource_uri, RequiredText(*item, "resourceUri", "an authorization"));
    SR_ASSIGN_OR_RETURN(a.role, RequiredText(*item, "roleUri", "an authorization"));
    out.authorizations.push_back(std::move(a));
  }
  out.cursor = Text(answer, "cursor");
  return out;
}

Result<KmsResource> ParseKmsResource(const Object& resource) {
  KmsResource out;
  SR_ASSIGN_OR_RETURN(out.uri, RequiredText(resource, "uri", "a resource"));
  out.key_uris = Strings(resource.getArray("keyUris"));
  out.authorization_uris = Strings(resource.getArray("authorizationUris"));
  if (resource.getArray("authorizations")) {
    SR_ASSIGN_OR_RETURN(out.authorizations, ParseKmsAuthorizations(resource));
  }
  return out;
}

int AnswerStatus(const Object& answer) {
  if (!answer.has("status")) return 0;
  try {
    return answer.getValue<int>("status");
  } catch (const Poco::Exception&) {
    return 0;
  }
}

Status CheckAnswerStatus(const Object& answer, int expected, const std::string& what) {
  const int status = AnswerStatus(answer);
  if (status == expected) return OkStatus();
  ErrorCode code = ErrorCode::kInternal;
  switch (status) {
    case 400:
    case 413:
      code = ErrorCode::kInvalidArgument;
      break;
    case 401:
      code = ErrorCode::kUnauthenticated;
      break;
    case 403:
      code = ErrorCode::kPermissionDenied;
      break;
    case 404:
      code = ErrorCode::kNotFound;
      break;
    case 409:
      code = ErrorCode::kAlreadyExists;
      break;
    case 429:
    case 503:
      code = ErrorCode::kUnavailable;
      break;
    default:
      break;
  }
  const std::string reason = Text(answer, "reason");
  return Error(code, "the KMS answered " + what + " with " + std::to_string(status) +
                         (reason.empty() ? "" : ": " + reason));
}

}  // namespace strongroom::client
