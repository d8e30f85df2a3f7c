// Compact JWS: verification and ES256 signing on cjose, and assembly around an external signer.
#include "strongroom/common/jose/jws.h"

#include <algorithm>
#include <utility>

#include "cjose_support.h"
#include "strongroom/common/jose/base64url.h"

namespace strongroom::jose {

using internal::CjoseError;
using internal::Invalid;

namespace {

// Refusals that hold whatever the caller allows.
Status CheckAlgIsAsymmetric(std::string_view alg) {
  if (alg == "none") return Invalid("unsecured JWS (alg \"none\") is refused");
  if (alg.starts_with("HS"))
    return Invalid("symmetric JWS alg \"" + std::string(alg) + "\" is refused");
  return OkStatus();
}

std::span<const std::uint8_t> AsBytes(std::string_view text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

}  // namespace

Result<VerifiedJws> VerifyJws(std::string_view compact, const PublicJwk& key,
                              std::span<const std::string_view> allowed_algs,
                              const JoseLimits& limits) {
  SR_ASSIGN_OR_RETURN(internal::CompactParts parts, internal::ParseCompact(compact, 3, limits));
  const std::string& alg = parts.header.alg;
  SR_RETURN_IF_ERROR(CheckAlgIsAsymmetric(alg));
  if (std::find(allowed_algs.begin(), allowed_algs.end(), alg) == allowed_algs.end()) {
    return Invalid("JWS alg \"" + alg + "\" is not allowed here");
  }
  const bool is_ec = alg == "ES256";
  if (!is_ec && alg != "RS256" && alg != "PS256") {
    return Invalid("JWS alg \"" + alg + "\" is not supported");
  }
  if (parts.header.has_crit) return Invalid("JWS \"crit\" is refused");
  // b64 (RFC 7797) only means something with crit, but readers that honour it alone exist.
  if (parts.has_b64) return Invalid("JWS \"b64\" is refused");
  if (is_ec != (key.type() == PublicJwk::Type::kEcP256)) {
    return Invalid("JWS alg \"" + alg + "\" does not fit the key's type");
  }
  const std::size_t signature_size = parts.decoded[2].size();
  if (is_ec ? signature_size != 64 : signature_size != (key.key_bits() + 7) / 8) {
    return Invalid("JWS signature has the wrong length for alg \"" + alg + "\"");
  }

  cjose_err err{};
  internal::JwsPtr jws(cjose_jws_import(compact.data(), compact.size(), &err));
  if (jws == nullptr) return CjoseError(ErrorCode::kInvalidArgument, "JWS was refused", err);
  if (!cjose_jws_verify(jws.get(), internal::JwkAccess::Get(key), &err)) {
    return Invalid("JWS signature verification failed");
  }
  std::uint8_t* payload = nullptr;
  std::size_t payload_size = 0;
  if (!cjose_jws_get_plaintext(jws.get(), &payload, &payload_size, &err)) {
    return CjoseError(ErrorCode::kInternal, "reading the JWS payload failed", err);
  }
  return VerifiedJws(std::move(parts.header),
                     std::string(reinterpret_cast<const char*>(payload), payload_size));
}

Result<std::string> SignJws(const EcKeyPair& key, std::string_view alg,
                            std::span<const std::uint8_t> payload,
                            const std::map<std::string, std::string>& extra_header) {
  if (alg != "ES256") return Invalid("SignJws signs ES256 only");
  if (payload.size() > JoseLimits{}.max_compact_bytes) return Invalid("JWS payload is too large");
  SR_ASSIGN_OR_RETURN(internal::HeaderPtr header, internal::NewHeader({{CJOSE_HDR_ALG, alg}}));
  cjose_err err{};
  for (const auto& [name, value] : extra_header) {
    if (name == "alg" || name == "crit" || name == "b64") {
      return Invalid("header member \"" + name + "\" cannot be set here");
    }
    if (name.find('\0') != std::string::npos || value.find('\0') != std::string::npos) {
      return Invalid("header member contains a NUL character");
    }
    if (!cjose_header_set(header.get(), name.c_str(), value.c_str(), &err)) {
      return CjoseError(ErrorCode::kInternal, "setting a header member failed", err);
    }
  }
  internal::JwsPtr jws(cjose_jws_sign(internal::JwkAccess::Get(key), header.get(),
                                      internal::NonNull(payload), payload.size(), &err));
  if (jws == nullptr) return CjoseError(ErrorCode::kInternal, "JWS signing failed", err);
  const char* compact = nullptr;  // owned by jws
  if (!cjose_jws_export(jws.get(), &compact, &err)) {
    return CjoseError(ErrorCode::kInternal, "JWS export failed", err);
  }
  std::string out(compact);
  if (out.size() > JoseLimits{}.max_compact_bytes) return Invalid("JWS would be too large");
  return out;
}

Result<std::string> SignJwsWith(std::string_view protected_header_json,
                                std::span<const std::uint8_t> payload, const JwsSigner& signer,
                                const JoseLimits& limits) {
  if (protected_header_json.size() > limits.max_header_bytes) {
    return Invalid("protected header is too large");
  }
  SR_ASSIGN_OR_RETURN(internal::JsonPtr object,
                      internal::ParseJsonObject(protected_header_json, "protected header"));
  SR_ASSIGN_OR_RETURN(JoseHeader header, internal::HeaderFromJson(object.get(), 3));
  SR_RETURN_IF_ERROR(CheckAlgIsAsymmetric(header.alg));
  if (header.has_crit) return Invalid("JWS \"crit\" is refused");
  if (json_object_get(object.get(), "b64") != nullptr) return Invalid("JWS \"b64\" is refused");

  const std::string signing_input =
      Base64UrlEncode(protected_header_json) + "." + Base64UrlEncode(payload);
  if (signing_input.size() + 2 + (kMaxJwsSignatureBytes * 4 + 2) / 3 > limits.max_compact_bytes) {
    return Invalid("JWS would be too large");
  }
  SR_ASSIGN_OR_RETURN(std::vector<std::uint8_t> signature, signer(AsBytes(signing_input)));
  if (signature.empty() || signature.size() > kMaxJwsSignatureBytes) {
    return Error(ErrorCode::kInternal,
                 "the signer returned " + std::to_string(signature.size()) + " bytes of signature");
  }
  return signing_input + "." + Base64UrlEncode(signature);
}

}  // namespace strongroom::jose
