// Throwaway certificates for the client's tests, made in process with OpenSSL: a root CA (EC
// P-256), optionally an intermediate, and leaves for a given public key with chosen subject
// alternative names, so identity checks can be tried with a good chain, a wrong root, a wrong
// name and a chain that does not certify the key.
#ifndef STRONGROOM_TESTS_CLIENT_TEST_PKI_H_
#define STRONGROOM_TESTS_CLIENT_TEST_PKI_H_

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace strongroom::testing {

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;

inline void Check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string("test PKI: ") + what);
}

inline PkeyPtr MakeEcKey() {
  PkeyPtr key(EVP_EC_gen("P-256"));
  Check(key != nullptr, "EC key");
  return key;
}

inline PkeyPtr MakeRsaKey(unsigned bits = 2048) {
  PkeyPtr key(EVP_RSA_gen(bits));
  Check(key != nullptr, "RSA key");
  return key;
}

inline void AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  Check(extension != nullptr, "extension");
  X509_add_ext(cert, extension, -1);
  X509_EXTENSION_free(extension);
}

struct CertificateSpec {
  std::string cn;
  std::vector<std::string> dns;  // subjectAltName DNS entries (none: no SAN at all)
  bool ca = false;
  long not_before_s = -300;          // relative to now
  long not_after_s = 2 * 24 * 3600;  // relative to now
};

// A certificate for `subject_key` issued by (`issuer`, `issuer_key`), or self-signed when issuer
// is null.
inline X509Ptr Issue(EVP_PKEY* subject_key, const CertificateSpec& spec, X509* issuer,
                     EVP_PKEY* issuer_key) {
  X509Ptr cert(X509_new());
  Check(cert != nullptr, "X509_new");
  unsigned char serial[12];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_set_version(cert.get(), 2);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), spec.not_before_s);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), spec.not_after_s);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(spec.cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : name);
  X509_set_pubkey(cert.get(), subject_key);
  X509* signer_cert = issuer ? issuer : cert.get();
  if (spec.ca) {
    AddExtension(cert.get(), signer_cert, NID_basic_constraints, "critical,CA:TRUE");
    AddExtension(cert.get(), signer_cert, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    AddExtension(cert.get(), signer_cert, NID_basic_constraints, "critical,CA:FALSE");
    AddExtension(cert.get(), signer_cert, NID_key_usage,
                 "critical,digitalSignature,keyEncipherment");
  }
  AddExtension(cert.get(), signer_cert, NID_subject_key_identifier, "hash");
  if (!spec.dns.empty()) {
    std::string san;
    for (const std::string& dns : spec.dns) san += (san.empty() ? "DNS:" : ",DNS:") + dns;
    AddExtension(cert.get(), signer_cert, NID_subject_alt_name, san);
  }
  Check(X509_sign(cert.get(), issuer ? issuer_key : subject_key, EVP_sha256()) > 0, "sign");
  return cert;
}

inline std::vector<std::uint8_t> Der(X509* cert) {
  unsigned char* out = nullptr;
  const int n = i2d_X509(cert, &out);
  Check(n > 0, "i2d_X509");
  std::vector<std::uint8_t> der(out, out + n);
  OPENSSL_free(out);
  return der;
}

inline std::string Pem(X509* cert) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  PEM_write_bio_X509(bio.get(), cert);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

inline std::string PrivateKeyPem(EVP_PKEY* key) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

// The big-endian modulus and exponent of an RSA key.
inline std::pair<std::vector<std::uint8_t>, std::vector<std::uint8_t>> RsaNumbers(EVP_PKEY* key) {
  auto get = [&](const char* name) {
    BIGNUM* bn = nullptr;
    Check(EVP_PKEY_get_bn_param(key, name, &bn) == 1, "RSA parameter");
    std::vector<std::uint8_t> out(static_cast<std::size_t>(BN_num_bytes(bn)));
    BN_bn2bin(bn, out.data());
    BN_free(bn);
    return out;
  };
  return {get(OSSL_PKEY_PARAM_RSA_N), get(OSSL_PKEY_PARAM_RSA_E)};
}

struct TestCa {
  PkeyPtr key;
  X509Ptr cert;

  static TestCa Make(const std::string& cn) {
    TestCa ca;
    ca.key = MakeEcKey();
    CertificateSpec spec;
    spec.cn = cn;
    spec.ca = true;
    ca.cert = Issue(ca.key.get(), spec, nullptr, nullptr);
    return ca;
  }
  // An intermediate CA signed by this one.
  TestCa Intermediate(const std::string& cn) const {
    TestCa sub;
    sub.key = MakeEcKey();
    CertificateSpec spec;
    spec.cn = cn;
    spec.ca = true;
    sub.cert = Issue(sub.key.get(), spec, cert.get(), key.get());
    return sub;
  }
  X509Ptr Leaf(EVP_PKEY* subject, const CertificateSpec& spec) const {
    return Issue(subject, spec, cert.get(), key.get());
  }
};

}  // namespace strongroom::testing

#endif  // STRONGROOM_TESTS_CLIENT_TEST_PKI_H_
