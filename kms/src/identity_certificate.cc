#include "strongroom/kms/identity_certificate.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <memory>

#include "strongroom/common/config_file.h"

namespace strongroom::kms {
namespace {

template <auto Free>
struct Deleter {
  template <typename T>
  void operator()(T* p) const {
    Free(p);
  }
};
using BioPtr = std::unique_ptr<BIO, Deleter<BIO_free_all>>;
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BN_free>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, Deleter<EVP_PKEY_CTX_free>>;
using ParamBldPtr = std::unique_ptr<OSSL_PARAM_BLD, Deleter<OSSL_PARAM_BLD_free>>;
using ParamPtr = std::unique_ptr<OSSL_PARAM, Deleter<OSSL_PARAM_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509_free>>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION_free>>;

// The reason OpenSSL gave last, without key material (OpenSSL never puts any in its messages).
std::string OpenSslReason() {
  unsigned long code = ERR_peek_last_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  const char* reason = ERR_reason_error_string(code);
  return reason != nullptr ? reason : "OpenSSL error " + std::to_string(code);
}

// Never prompts for a passphrase on the terminal: encrypted keys are refused.
int NoPassphrase(char*, int, int, void*) { return -1; }

Result<PkeyPtr> RsaKey(const hsm::RsaPublicKey& key) {
  BnPtr n(BN_bin2bn(key.modulus.data(), static_cast<int>(key.modulus.size()), nullptr));
  BnPtr e(
      BN_bin2bn(key.public_exponent.data(), static_cast<int>(key.public_exponent.size()), nullptr));
  ParamBldPtr build(OSSL_PARAM_BLD_new());
  if (!n || !e || !build || !OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) ||
      !OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_E, e.get())) {
    return Error(ErrorCode::kInternal, "cannot build the RSA key: " + OpenSslReason());
  }
  ParamPtr params(OSSL_PARAM_BLD_to_param(build.get()));
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr));
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    return Error(ErrorCode::kInvalidArgument, "the identity key is not a usable RSA public key");
  }
  return PkeyPtr(raw);
}

// "IP:<address>" or "DNS:<name>"; refuses anything that is neither, so the host can never smuggle
// more names into the extension.
Result<std::string> SubjectAltName(const std::string& host) {
  unsigned char addr[16];
  if (inet_pton(AF_INET, host.c_str(), addr) == 1 || inet_pton(AF_INET6, host.c_str(), addr) == 1) {
    return "IP:" + host;
  }
  bool ok = !host.empty() && host.size() <= 253 && host.front() != '-' && host.front() != '.';
  for (char c : host) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '-' || c == '.');
  }
  if (!ok) {
    return Error(ErrorCode::kInvalidArgument,
                 "the host must be a DNS name or an IP address, got '" + host + "'");
  }
  return "DNS:" + host;
}

Status AddExtension(X509* cert, X509V3_CTX* ctx, int nid, const std::string& value) {
  ExtPtr ext(X509V3_EXT_conf_nid(nullptr, ctx, nid, value.c_str()));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
    return Error(ErrorCode::kInternal, "cannot add a certificate extension: " + OpenSslReason());
  }
  return OkStatus();
}

Result<std::string> ToPem(X509* cert) {
  BioPtr out(BIO_new(BIO_s_mem()));
  if (!out || PEM_write_bio_X509(out.get(), cert) != 1) {
    return Error(ErrorCode::kInternal, "cannot write PEM: " + OpenSslReason());
  }
  char* data = nullptr;
  long size = BIO_get_mem_data(out.get(), &data);
  return std::string(data, static_cast<std::size_t>(size));
}

Result<std::vector<X509Ptr>> ReadCertificates(const std::string& pem,
                                              std::size_t max = jose::kMaxX5cCertificates) {
  BioPtr in(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!in) return Error(ErrorCode::kInternal, "out of memory");
  std::vector<X509Ptr> certs;
  while (true) {
    X509Ptr cert(PEM_read_bio_X509(in.get(), nullptr, NoPassphrase, nullptr));
    if (!cert) break;
    if (certs.size() == max) {
      return Error(ErrorCode::kInvalidArgument,
                   "the file holds more than " + std::to_string(max) + " certificates");
    }
    certs.push_back(std::move(cert));
  }
  unsigned long last = ERR_peek_last_error();
  ERR_clear_error();
  if (last != 0 &&
      !(ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE)) {
    return Error(ErrorCode::kInvalidArgument, "a certificate in the PEM file is malformed");
  }
  if (certs.empty()) {
    return Error(ErrorCode::kInvalidArgument, "the PEM file holds no certificate");
  }
  return certs;
}

}  // namespace

Result<std::string> CertifyIdentityKey(const hsm::RsaPublicKey& key,
                                       const IdentityCertificateRequest& request,
                                       const std::string& ca_cert_pem,
                                       const SecretBytes& ca_key_pem) {
  if (request.days < 1 || request.days > kMaxIdentityCertificateDays) {
    return Error(
        ErrorCode::kInvalidArgument,
        "the validity must be 1 to " + std::to_string(kMaxIdentityCertificateDays) + " days");
  }
  SR_ASSIGN_OR_RETURN(std::string san, SubjectAltName(request.host));
  SR_ASSIGN_OR_RETURN(PkeyPtr subject_key, RsaKey(key));
  SR_ASSIGN_OR_RETURN(std::vector<X509Ptr> ca_certs, ReadCertificates(ca_cert_pem));
  X509* ca = ca_certs.front().get();

  BioPtr key_in(BIO_new_mem_buf(ca_key_pem.view().data(), static_cast<int>(ca_key_pem.size())));
  PkeyPtr ca_key(key_in ? PEM_read_bio_PrivateKey(key_in.get(), nullptr, NoPassphrase, nullptr)
                        : nullptr);
  if (!ca_key) {
    ERR_clear_error();
    return Error(ErrorCode::kInvalidArgument, "the CA key is not an unencrypted PEM private key");
  }
  if (X509_check_private_key(ca, ca_key.get()) != 1) {
    ERR_clear_error();
    return Error(ErrorCode::kInvalidArgument, "the CA key does not belong to the CA certificate");
  }

  X509Ptr cert(X509_new());
  unsigned char serial_bytes[16];
  if (!cert || RAND_bytes(serial_bytes, sizeof serial_bytes) != 1) {
    return Error(ErrorCode::kInternal, "cannot create a certificate: " + OpenSslReason());
  }
  serial_bytes[0] &= 0x7f;  // a positive serial number
  BnPtr serial(BN_bin2bn(serial_bytes, sizeof serial_bytes, nullptr));
  X509_NAME* subject = X509_get_subject_name(cert.get());
  if (!serial || X509_set_version(cert.get(), 2) != 1 ||
      !BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) ||
      !X509_gmtime_adj(X509_getm_notBefore(cert.get()), -300) ||
      !X509_time_adj_ex(X509_getm_notAfter(cert.get()), request.days, 0, nullptr) ||
      X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(request.host.c_str()), -1,
                                 -1, 0) != 1 ||
      X509_set_issuer_name(cert.get(), X509_get_subject_name(ca)) != 1 ||
      X509_set_pubkey(cert.get(), subject_key.get()) != 1) {
    return Error(ErrorCode::kInternal, "cannot fill in the certificate: " + OpenSslReason());
  }
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, ca, cert.get(), nullptr, nullptr, 0);
  SR_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE"));
  SR_RETURN_IF_ERROR(
      AddExtension(cert.get(), &ctx, NID_key_usage, "critical,digitalSignature,keyEncipherment"));
  SR_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_subject_key_identifier, "hash"));
  if (X509_get0_subject_key_id(ca) != nullptr) {  // a CA without one gets no AKI
    SR_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_authority_key_identifier, "keyid"));
  }
  SR_RETURN_IF_ERROR(AddExtension(cert.get(), &ctx, NID_subject_alt_name, san));
  const int type = EVP_PKEY_get_base_id(ca_key.get());
  const EVP_MD* digest =
      type == EVP_PKEY_ED25519 || type == EVP_PKEY_ED448 ? nullptr : EVP_sha256();
  if (X509_sign(cert.get(), ca_key.get(), digest) <= 0) {
    return Error(ErrorCode::kInternal, "cannot sign the certificate: " + OpenSslReason());
  }
  SR_ASSIGN_OR_RETURN(std::string chain, ToPem(cert.get()));
  for (const X509Ptr& ca_cert : ca_certs) {  // the CA file may hold its own chain
    SR_ASSIGN_OR_RETURN(std::string pem, ToPem(ca_cert.get()));
    chain += pem;
  }
  return chain;
}

namespace {

// Big-endian bytes of one of the RSA key's numbers, without leading zeros.
Result<std::vector<std::uint8_t>> RsaNumber(EVP_PKEY* key, const char* name) {
  BIGNUM* raw = nullptr;
  if (EVP_PKEY_get_bn_param(key, name, &raw) != 1) {
    ERR_clear_error();
    return Error(ErrorCode::kFailedPrecondition, "the leaf certificate does not hold an RSA key");
  }
  BnPtr number(raw);
  // Zero is one zero byte. Sized once: growing an empty vector here trips GCC 12's
  // -Wfree-nonheap-object at -O3, which failed the Release build.
  const int size = BN_num_bytes(number.get());
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(std::max(size, 1)), 0);
  if (size > 0) BN_bn2bin(number.get(), bytes.data());
  return bytes;
}

// Checks one chain (leaf first) and returns it in DER with the leaf's key.
Result<IdentityChain> CheckChain(const std::vector<X509Ptr>& certs) {
  if (certs.size() > jose::kMaxX5cCertificates) {
    return Error(
        ErrorCode::kInvalidArgument,
        "a chain holds more than " + std::to_string(jose::kMaxX5cCertificates) + " certificates");
  }
  IdentityChain chain;
  EVP_PKEY* leaf_key = X509_get0_pubkey(certs.front().get());
  if (leaf_key == nullptr || EVP_PKEY_get_base_id(leaf_key) != EVP_PKEY_RSA) {
    ERR_clear_error();
    return Error(ErrorCode::kFailedPrecondition, "the leaf certificate does not hold an RSA key");
  }
  SR_ASSIGN_OR_RETURN(chain.key.modulus, RsaNumber(leaf_key, OSSL_PKEY_PARAM_RSA_N));
  SR_ASSIGN_OR_RETURN(chain.key.public_exponent, RsaNumber(leaf_key, OSSL_PKEY_PARAM_RSA_E));
  for (std::size_t i = 0; i + 1 < certs.size(); ++i) {
    EVP_PKEY* issuer_key = X509_get0_pubkey(certs[i + 1].get());
    if (issuer_key == nullptr || X509_verify(certs[i].get(), issuer_key) != 1) {
      ERR_clear_error();
      return Error(ErrorCode::kFailedPrecondition,
                   "certificate " + std::to_string(i + 1) + " is not signed by the next one");
    }
  }
  X509* leaf = certs.front().get();
  if (X509_cmp_current_time(X509_get0_notBefore(leaf)) >= 0 ||
      X509_cmp_current_time(X509_get0_notAfter(leaf)) <= 0) {
    return Error(ErrorCode::kFailedPrecondition,
                 "the identity certificate is not valid now (renew it with kmsctl hsm "
                 "certify-identity)");
  }
  for (const X509Ptr& cert : certs) {
    unsigned char* der = nullptr;
    int size = i2d_X509(cert.get(), &der);
    if (size <= 0) return Error(ErrorCode::kInternal, "cannot encode a certificate as DER");
    chain.der.emplace_back(der, der + size);
    OPENSSL_free(der);
  }
  return chain;
}

}  // namespace

Result<std::vector<IdentityChain>> ParseIdentityChains(const std::string& pem) {
  SR_ASSIGN_OR_RETURN(std::vector<X509Ptr> certs,
                      ReadCertificates(pem, jose::kMaxX5cCertificates * kMaxIdentityChains));
  // A certificate that is not a CA (an identity leaf) starts a chain.
  if (X509_check_ca(certs.front().get()) != 0) {
    return Error(ErrorCode::kFailedPrecondition,
                 "the identity chain starts with a CA certificate, not the identity's leaf");
  }
  std::vector<std::vector<X509Ptr>> groups;
  for (X509Ptr& cert : certs) {
    if (groups.empty() || X509_check_ca(cert.get()) == 0) groups.emplace_back();
    groups.back().push_back(std::move(cert));
  }
  if (groups.size() > kMaxIdentityChains) {
    return Error(ErrorCode::kInvalidArgument,
                 "the file holds more than " + std::to_string(kMaxIdentityChains) + " chains");
  }
  std::vector<IdentityChain> chains;
  for (std::size_t i = 0; i < groups.size(); ++i) {
    Result<IdentityChain> chain = CheckChain(groups[i]);
    if (!chain.ok()) {
      return Error(chain.error().code(), "identity chain " + std::to_string(i + 1) + " of " +
                                             std::to_string(groups.size()) + ": " +
                                             chain.error().message());
    }
    chains.push_back(std::move(chain).value());
  }
  return chains;
}

const IdentityChain* FindIdentityChain(const std::vector<IdentityChain>& chains,
                                       const hsm::RsaPublicKey& key) {
  auto trimmed = [](const std::vector<std::uint8_t>& bytes) {
    std::size_t zeros = 0;
    while (zeros + 1 < bytes.size() && bytes[zeros] == 0) ++zeros;
    return std::vector<std::uint8_t>(bytes.begin() + static_cast<std::ptrdiff_t>(zeros),
                                     bytes.end());
  };
  const std::vector<std::uint8_t> n = trimmed(key.modulus), e = trimmed(key.public_exponent);
  for (const IdentityChain& chain : chains) {
    if (chain.key.modulus == n && chain.key.public_exponent == e) return &chain;
  }
  return nullptr;
}

Result<IdentityChain> ParseIdentityChain(const std::string& pem, const hsm::RsaPublicKey& key) {
  SR_ASSIGN_OR_RETURN(std::vector<IdentityChain> chains, ParseIdentityChains(pem));
  const IdentityChain* chain = FindIdentityChain(chains, key);
  if (chain == nullptr) {
    return Error(ErrorCode::kFailedPrecondition,
                 "the identity chain does not certify the token's identity key (no leaf "
                 "certifies it; run kmsctl hsm certify-identity)");
  }
  return *chain;
}

Result<std::string> IdentityChainsPem(const std::vector<IdentityChain>& chains) {
  std::string pem;
  for (const IdentityChain& chain : chains) {
    for (const std::vector<std::uint8_t>& der : chain.der) {
      const unsigned char* p = der.data();
      X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
      if (!cert) {
        ERR_clear_error();
        return Error(ErrorCode::kInternal, "a certificate of the chain is not DER");
      }
      SR_ASSIGN_OR_RETURN(std::string one, ToPem(cert.get()));
      pem += one;
    }
  }
  return pem;
}

namespace {

Result<std::string> ReadIdentityFile(const std::string& path) {
  Result<std::string> pem = ReadSmallFile(path, kMaxPemFileBytes);
  if (!pem.ok() && pem.error().code() == ErrorCode::kNotFound) {
    return Error(ErrorCode::kNotFound, "cannot read the identity chain " + path);
  }
  return pem;
}

}  // namespace

Result<std::vector<IdentityChain>> LoadIdentityChains(const std::string& path) {
  SR_ASSIGN_OR_RETURN(std::string pem, ReadIdentityFile(path));
  Result<std::vector<IdentityChain>> chains = ParseIdentityChains(pem);
  if (!chains.ok()) {
    return Error(chains.error().code(), path + ": " + chains.error().message());
  }
  return chains;
}

Result<IdentityChain> LoadIdentityChain(const std::string& path, const hsm::RsaPublicKey& key) {
  SR_ASSIGN_OR_RETURN(std::string pem, ReadIdentityFile(path));
  Result<IdentityChain> chain = ParseIdentityChain(pem, key);
  if (!chain.ok()) {
    return Error(chain.error().code(), path + ": " + chain.error().message());
  }
  return chain;
}

}  // namespace strongroom::kms
