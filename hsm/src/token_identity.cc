// Token: the KMS's RSA identity key, generated in the token (private half sensitive, never
// extractable): its mechanisms, creating it, its public half, RSA-OAEP decryption and PS256
// signatures.
#include <algorithm>
#include <array>
#include <utility>

#include "attribute_template.h"
#include "cryptoki.h"
#include "object_ops.h"
#include "strongroom/hsm/ck_result.h"
#include "strongroom/hsm/token.h"
#include "token_internal.h"

namespace strongroom::hsm {
namespace {

using internal::AttributeTemplate;
using internal::Cryptoki;
using internal::FindObjects;
using internal::GetBytes;
using internal::IdentityLabel;
using internal::IdentityObjectId;

}  // namespace

Status Token::CheckIdentityMechanisms() {
  const MechanismNeed needs[] = {
      {CKM_RSA_PKCS_KEY_PAIR_GEN, CKF_GENERATE_KEY_PAIR, "generate key pair",
       "generating the KMS's RSA identity key"},
      {CKM_RSA_PKCS_OAEP, CKF_DECRYPT, "decrypt", "opening RSA-OAEP messages to the KMS"},
      {CKM_SHA256_RSA_PKCS_PSS, CKF_SIGN, "sign", "signing PS256 answers of the KMS"},
  };
  return RequireMechanisms(needs);
}

Result<CK_OBJECT_HANDLE> Token::IdentityHandle(SessionLease& lease, const std::string& key_name,
                                               CK_OBJECT_CLASS half) {
  std::lock_guard lock(handles_mutex_);
  if (handles_generation_ != lease.generation()) {
    handles_.clear();
    identity_handles_.clear();
    keeper_ = CK_INVALID_HANDLE;
    handles_generation_ = lease.generation();
  }
  const auto cache_key = std::make_pair(key_name, half);
  if (auto it = identity_handles_.find(cache_key); it != identity_handles_.end()) {
    return it->second;
  }
  AttributeTemplate match;
  match.Ulong(CKA_CLASS, half).Bool(CKA_TOKEN, true).String(CKA_ID, IdentityObjectId(key_name));
  SR_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> found, SearchingObjects([&] {
                        return FindObjects(Cryptoki(lease.fn()), lease.handle(), match, 2);
                      }));
  if (found.empty())
    SR_RETURN_IF_ERROR(CheckIntactOn(lease, CheckDepth::kPresence));  // as for root keys
  if (found.size() != 1) {
    return Error(found.empty() ? ErrorCode::kNotFound : ErrorCode::kInternal,
                 "token '" + name() + "' holds " + std::to_string(found.size()) +
                     " objects for identity key " + key_name +
                     (found.empty() ? " (kmsctl creates it)" : ""));
  }
  identity_handles_[cache_key] = found.front();
  RememberIdentity(key_name);
  return found.front();
}

Result<RsaPublicKey> Token::CreateIdentityKey(const std::string& key_name, unsigned modulus_bits) {
  SR_RETURN_IF_ERROR(ValidateOrgName(key_name));
  if (modulus_bits < 2048 || modulus_bits > 8192 || modulus_bits % 1024 != 0) {
    return Error(ErrorCode::kInvalidArgument,
                 "RSA identity keys are 2048 to 8192 bits, "
                 "in steps of 1024");
  }
  SR_RETURN_IF_ERROR(CheckIdentityMechanisms());
  Result<CK_OBJECT_HANDLE> created =
      Run<CK_OBJECT_HANDLE>([&](SessionLease& lease) -> Result<CK_OBJECT_HANDLE> {
        Result<CK_OBJECT_HANDLE> existing = IdentityHandle(lease, key_name, CKO_PRIVATE_KEY);
        if (existing.ok()) {
          return Error(ErrorCode::kAlreadyExists,
                       "token '" + name() + "' already holds identity key " + key_name);
        }
        if (existing.error().code() != ErrorCode::kNotFound) return existing.error();
        const std::string object_id = IdentityObjectId(key_name);
        const std::string label = IdentityLabel(key_name);
        const std::uint8_t exponent[] = {0x01, 0x00, 0x01};
        AttributeTemplate public_template;
        public_template.Bool(CKA_TOKEN, true)
            .Bool(CKA_PRIVATE, false)
            .Bool(CKA_ENCRYPT, true)
            .Bool(CKA_VERIFY, true)
            .Bool(CKA_WRAP, false)
            .Ulong(CKA_MODULUS_BITS, modulus_bits)
            .Bytes(CKA_PUBLIC_EXPONENT, exponent)
            .String(CKA_LABEL, label)
            .String(CKA_ID, object_id);
        AttributeTemplate private_template;
        private_template.Bool(CKA_TOKEN, true)
            .Bool(CKA_PRIVATE, true)
            .Bool(CKA_SENSITIVE, true)
            .Bool(CKA_EXTRACTABLE, false)
            .Bool(CKA_DECRYPT, true)
            .Bool(CKA_SIGN, true)
            .Bool(CKA_UNWRAP, false)
            .Bool(CKA_DERIVE, false)
            .String(CKA_LABEL, label)
            .String(CKA_ID, object_id);
        CK_MECHANISM mechanism{CKM_RSA_PKCS_KEY_PAIR_GEN, nullptr, 0};
        CK_OBJECT_HANDLE public_key = CK_INVALID_HANDLE, private_key = CK_INVALID_HANDLE;
        const CkResult generated = ChangingObjects([&] {
          return Cryptoki(lease.fn())
              .GenerateKeyPair(lease.handle(), mechanism, public_template, private_template,
                               public_key, private_key);
        });
        if (!generated.ok()) return generated.error("C_GenerateKeyPair (identity key)");
        return private_key;
      });
  if (!created.ok()) return created.error();
  return IdentityPublicKey(key_name);
}

Result<RsaPublicKey> Token::IdentityPublicKey(const std::string& key_name) {
  SR_RETURN_IF_ERROR(ValidateOrgName(key_name));
  return Run<RsaPublicKey>([&](SessionLease& lease) -> Result<RsaPublicKey> {
    SR_ASSIGN_OR_RETURN(CK_OBJECT_HANDLE handle, IdentityHandle(lease, key_name, CKO_PUBLIC_KEY));
    const Cryptoki ck(lease.fn());
    RsaPublicKey key;
    SR_ASSIGN_OR_RETURN(key.modulus, GetBytes(ck, lease.handle(), handle, CKA_MODULUS));
    SR_ASSIGN_OR_RETURN(key.public_exponent,
                        GetBytes(ck, lease.handle(), handle, CKA_PUBLIC_EXPONENT));
    while (key.modulus.size() > 1 && key.modulus.front() == 0)
      key.modulus.erase(key.modulus.begin());
    return key;
  });
}

Result<SecretBytes> Token::DecryptRsaOaep(const std::string& key_name,
                                          std::span<const std::uint8_t> ciphertext) {
  SR_RETURN_IF_ERROR(ValidateOrgName(key_name));
  if (ciphertext.empty() || ciphertext.size() > 1024) {
    return Error(ErrorCode::kInvalidArgument, "RSA-OAEP ciphertext has an impossible length");
  }
  return Run<SecretBytes>([&](SessionLease& lease) -> Result<SecretBytes> {
    SR_ASSIGN_OR_RETURN(CK_OBJECT_HANDLE handle, IdentityHandle(lease, key_name, CKO_PRIVATE_KEY));
    // An OAEP ciphertext is exactly as long as the modulus. Check before the token sees it:
    // SoftHSM2 2.6.1 loses the private key object, for the rest of the process, after a decrypt
    // of the wrong length.
    Cryptoki ck(lease.fn());
    SR_ASSIGN_OR_RETURN(std::vector<std::uint8_t> modulus,
                        GetBytes(ck, lease.handle(), handle, CKA_MODULUS));
    if (ciphertext.size() != modulus.size()) {
      return Error(ErrorCode::kInvalidArgument, "the message could not be decrypted");
    }
    CK_RSA_PKCS_OAEP_PARAMS params{CKM_SHA_1, CKG_MGF1_SHA1, CKZ_DATA_SPECIFIED, nullptr, 0};
    CK_MECHANISM mechanism{CKM_RSA_PKCS_OAEP, &params, sizeof params};
    if (const CkResult init = ck.DecryptInit(lease.handle(), mechanism, handle); !init.ok()) {
      return init.error("C_DecryptInit (RSA-OAEP)");
    }
    SecretBytes plain(ciphertext.size());
    CK_ULONG plain_len = 0;
    const CkResult decrypted =
        ck.Decrypt(lease.handle(), ciphertext, plain.mutable_view(), plain_len);
    if (!decrypted.ok()) {
      // A dead session or token is the layer's to repair; anything else is the message's fault,
      // reported without saying why (no padding oracle). SoftHSM2 before 2.7 reports a bad OAEP
      // padding as CKR_GENERAL_ERROR (its issue #690), a token fault elsewhere: here it is the
      // message's too, if the session is alive, so that no reset and no timing tells it apart.
      const CK_RV rv = decrypted.rv();
      if (rv != CKR_GENERAL_ERROR && ClassifyCkr(rv) != CkFailure::kOperation) {
        return decrypted.error("C_Decrypt (RSA-OAEP)");
      }
      CK_SESSION_INFO info;
      if (const CkResult session = ck.GetSessionInfo(lease.handle(), info); !session.ok()) {
        return session.error("C_GetSessionInfo after C_Decrypt");
      }
      return Error(ErrorCode::kInvalidArgument, "the message could not be decrypted");
    }
    plain.Truncate(plain_len);
    return plain;
  });
}

Result<std::vector<std::uint8_t>> Token::SignPs256(const std::string& key_name,
                                                   std::span<const std::uint8_t> message) {
  SR_RETURN_IF_ERROR(ValidateOrgName(key_name));
  return Run<std::vector<std::uint8_t>>(
      [&](SessionLease& lease) -> Result<std::vector<std::uint8_t>> {
        SR_ASSIGN_OR_RETURN(CK_OBJECT_HANDLE handle,
                            IdentityHandle(lease, key_name, CKO_PRIVATE_KEY));
        CK_RSA_PKCS_PSS_PARAMS params{CKM_SHA256, CKG_MGF1_SHA256, 32};
        CK_MECHANISM mechanism{CKM_SHA256_RSA_PKCS_PSS, &params, sizeof params};
        Cryptoki ck(lease.fn());
        if (const CkResult init = ck.SignInit(lease.handle(), mechanism, handle); !init.ok()) {
          return init.error("C_SignInit (PS256)");
        }
        std::vector<std::uint8_t> signature(1024);
        CK_ULONG len = 0;
        if (const CkResult sign = ck.Sign(lease.handle(), message, signature, len); !sign.ok()) {
          return sign.error("C_Sign (PS256)");
        }
        signature.resize(len);
        return signature;
      });
}

Status Token::CheckIdentityDecryptsOn(SessionLease& lease, const std::string& key_name) {
  SR_ASSIGN_OR_RETURN(CK_OBJECT_HANDLE public_key, IdentityHandle(lease, key_name, CKO_PUBLIC_KEY));
  SR_ASSIGN_OR_RETURN(CK_OBJECT_HANDLE private_key,
                      IdentityHandle(lease, key_name, CKO_PRIVATE_KEY));
  Cryptoki ck(lease.fn());
  SR_ASSIGN_OR_RETURN(std::vector<std::uint8_t> modulus,
                      GetBytes(ck, lease.handle(), public_key, CKA_MODULUS));
  std::array<std::uint8_t, 32> plain{};
  SR_RETURN_IF_ERROR(ck.GenerateRandom(lease.handle(), plain));
  CK_RSA_PKCS_OAEP_PARAMS params{CKM_SHA_1, CKG_MGF1_SHA1, CKZ_DATA_SPECIFIED, nullptr, 0};
  CK_MECHANISM mechanism{CKM_RSA_PKCS_OAEP, &params, sizeof params};
  SR_RETURN_IF_ERROR(ck.EncryptInit(lease.handle(), mechanism, public_key));
  std::vector<std::uint8_t> ciphertext(modulus.size());
  CK_ULONG written = 0;
  SR_RETURN_IF_ERROR(ck.Encrypt(lease.handle(), plain, ciphertext, written));
  // Exactly the modulus long: SoftHSM2 2.6.1 loses the private key after a shorter decrypt.
  if (written != ciphertext.size()) {
    return Error(ErrorCode::kUnavailable, "identity key " + key_name + " encrypts to " +
                                              std::to_string(written) + " bytes, not the " +
                                              std::to_string(modulus.size()) + " of its modulus");
  }
  SR_RETURN_IF_ERROR(ck.DecryptInit(lease.handle(), mechanism, private_key));
  SecretBytes out(ciphertext.size());
  const CkResult decrypted = ck.Decrypt(lease.handle(), ciphertext, out.mutable_view(), written);
  const CK_RV rv = decrypted.rv();
  if (!decrypted.ok() && rv != CKR_GENERAL_ERROR && ClassifyCkr(rv) != CkFailure::kOperation) {
    return decrypted.error("C_Decrypt (probe of identity key " + key_name + ")");
  }
  if (!decrypted.ok() || written != plain.size() ||
      !std::equal(plain.begin(), plain.end(), out.view().begin())) {
    return Error(ErrorCode::kUnavailable,
                 "identity key " + key_name + " does not decrypt what its public half encrypted (" +
                     (decrypted.ok() ? std::string("another value") : CkrName(rv)) + ")",
                 kCkrTokenFault);
  }
  return OkStatus();
}

}  // namespace strongroom::hsm
