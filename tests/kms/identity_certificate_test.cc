// The identity certificate: issued for an RSA public key by a CA from PEM files, and loaded back
// only when it certifies that key. Keys here are OpenSSL keys in memory; kmsd_test.cc runs the
// same code against the key in a SoftHSM2 token.
#include "strongroom/kms/identity_certificate.h"

#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

namespace strongroom::kms {
namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
struct BioFree {
  void operator()(BIO* p) const { BIO_free_all(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

Pkey NewKey(const char* type) {
  if (std::string(type) == "RSA") return Pkey(EVP_RSA_gen(2048));
  return Pkey(EVP_EC_gen("P-256"));
}

hsm::RsaPublicKey PublicHalf(EVP_PKEY* key) {
  BIGNUM* n = nullptr;
  BIGNUM* e = nullptr;
  EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &n);
  EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &e);
  hsm::RsaPublicKey out;
  out.modulus.resize(static_cast<std::size_t>(BN_num_bytes(n)));
  out.public_exponent.resize(static_cast<std::size_t>(BN_num_bytes(e)));
  BN_bn2bin(n, out.modulus.data());
  BN_bn2bin(e, out.public_exponent.data());
  BN_free(n);
  BN_free(e);
  return out;
}

std::string Pem(X509* cert) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), cert);
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(size));
}

SecretBytes PrivatePem(EVP_PKEY* key) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return SecretBytes({reinterpret_cast<const std::uint8_t*>(data), static_cast<std::size_t>(size)});
}

// A self-signed CA certificate, as `openssl req -x509` makes one.
std::string CaCertificate(EVP_PKEY* key, const char* name) {
  std::unique_ptr<X509, X509Free> cert(X509_new());
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400);
  X509_NAME* subject = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(name), -1, -1, 0);
  X509_set_issuer_name(cert.get(), subject);
  X509_set_pubkey(cert.get(), key);
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  X509_EXTENSION* ext =
      X509V3_EXT_conf_nid(nullptr, &ctx, NID_basic_constraints, "critical,CA:TRUE");
  X509_add_ext(cert.get(), ext, -1);
  X509_EXTENSION_free(ext);
  X509_sign(cert.get(), key, EVP_sha256());
  return Pem(cert.get());
}

std::string LeafOf(const std::string& chain) {
  const std::string end = "-----END CERTIFICATE-----\n";
  return chain.substr(0, chain.find(end) + end.size());
}

class IdentityCertificateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    identity_ = NewKey("RSA");
    ca_key_ = NewKey("EC");
    ASSERT_TRUE(identity_ && ca_key_);
    ca_pem_ = CaCertificate(ca_key_.get(), "Strongroom test CA");
  }

  Pkey identity_;
  Pkey ca_key_;
  std::string ca_pem_;
};

TEST_F(IdentityCertificateTest, IssuedChainCertifiesTheKeyAndLoads) {
  auto chain = CertifyIdentityKey(PublicHalf(identity_.get()), {"kms.acme.test", 30}, ca_pem_,
                                  PrivatePem(ca_key_.get()));
  ASSERT_TRUE(chain.ok()) << chain.error().ToString();
  EXPECT_EQ(chain->substr(chain->size() - ca_pem_.size()), ca_pem_);

  auto loaded = ParseIdentityChain(*chain, PublicHalf(identity_.get()));
  ASSERT_TRUE(loaded.ok()) << loaded.error().ToString();
  ASSERT_EQ(loaded->der.size(), 2u);

  const unsigned char* p = loaded->der[0].data();
  std::unique_ptr<X509, X509Free> leaf(
      d2i_X509(nullptr, &p, static_cast<long>(loaded->der[0].size())));
  ASSERT_TRUE(leaf);
  EXPECT_EQ(EVP_PKEY_eq(X509_get0_pubkey(leaf.get()), identity_.get()), 1);
  EXPECT_EQ(X509_check_host(leaf.get(), "kms.acme.test", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(leaf.get(), "other.acme.test", 0, 0, nullptr), 0);
  EXPECT_EQ(X509_check_ca(leaf.get()), 0);
  EXPECT_EQ(X509_verify(leaf.get(), ca_key_.get()), 1);
  // Valid for the days asked for (and five minutes before now, for clock skew).
  int days = 0, seconds = 0;
  ASSERT_EQ(ASN1_TIME_diff(&days, &seconds, X509_get0_notBefore(leaf.get()),
                           X509_get0_notAfter(leaf.get())),
            1);
  EXPECT_EQ(days, 30);
  EXPECT_EQ(seconds, 300);
}

TEST_F(IdentityCertificateTest, AnIpAddressHostGetsAnIpSubjectAltName) {
  auto chain = CertifyIdentityKey(PublicHalf(identity_.get()), {"127.0.0.1", 1}, ca_pem_,
                                  PrivatePem(ca_key_.get()));
  ASSERT_TRUE(chain.ok()) << chain.error().ToString();
  auto loaded = ParseIdentityChain(*chain, PublicHalf(identity_.get()));
  ASSERT_TRUE(loaded.ok());
  const unsigned char* p = loaded->der[0].data();
  std::unique_ptr<X509, X509Free> leaf(
      d2i_X509(nullptr, &p, static_cast<long>(loaded->der[0].size())));
  EXPECT_EQ(X509_check_ip_asc(leaf.get(), "127.0.0.1", 0), 1);
}

TEST_F(IdentityCertificateTest, ChainForAnotherKeyIsRefused) {
  auto chain = CertifyIdentityKey(PublicHalf(identity_.get()), {"kms.acme.test", 30}, ca_pem_,
                                  PrivatePem(ca_key_.get()));
  ASSERT_TRUE(chain.ok());
  Pkey other = NewKey("RSA");
  auto loaded = ParseIdentityChain(*chain, PublicHalf(other.get()));
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(loaded.error().message().find("does not certify"), std::string::npos);
}

TEST_F(IdentityCertificateTest, ChainWhoseIssuerDidNotSignIsRefused) {
  auto chain = CertifyIdentityKey(PublicHalf(identity_.get()), {"kms.acme.test", 30}, ca_pem_,
                                  PrivatePem(ca_key_.get()));
  ASSERT_TRUE(chain.ok());
  Pkey other_ca = NewKey("EC");
  std::string forged = LeafOf(*chain) + CaCertificate(other_ca.get(), "Strongroom test CA");
  auto loaded = ParseIdentityChain(forged, PublicHalf(identity_.get()));
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(loaded.error().message().find("not signed by the next"), std::string::npos);

  // The leaf alone is accepted (the CA is the client's business), the CA first is not.
  EXPECT_TRUE(ParseIdentityChain(LeafOf(*chain), PublicHalf(identity_.get())).ok());
  EXPECT_FALSE(ParseIdentityChain(ca_pem_ + LeafOf(*chain), PublicHalf(identity_.get())).ok());
}

// One file holds the chain of every token's identity key, one after the other: each is found by
// the key its leaf certifies, and a chain that does not verify refuses the whole file.
TEST_F(IdentityCertificateTest, AFileOfChainsHoldsOneChainPerIdentityKey) {
  Pkey standby = NewKey("RSA");
  auto first = CertifyIdentityKey(PublicHalf(identity_.get()), {"kms.acme.test", 30}, ca_pem_,
                                  PrivatePem(ca_key_.get()));
  auto second = CertifyIdentityKey(PublicHalf(standby.get()), {"kms.acme.test", 30}, ca_pem_,
                                   PrivatePem(ca_key_.get()));
  ASSERT_TRUE(first.ok() && second.ok());
  auto chains = ParseIdentityChains(*first + *second);
  ASSERT_TRUE(chains.ok()) << chains.error().ToString();
  ASSERT_EQ(chains->size(), 2u);
  EXPECT_EQ((*chains)[0].der.size(), 2u);
  EXPECT_EQ((*chains)[1].der.size(), 2u);
  const IdentityChain* found = FindIdentityChain(*chains, PublicHalf(standby.get()));
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found, &(*chains)[1]);
  EXPECT_EQ(FindIdentityChain(*chains, PublicHalf(identity_.get())), &(*chains)[0]);
  EXPECT_EQ(FindIdentityChain(*chains, PublicHalf(NewKey("RSA").get())), nullptr);
  auto one = ParseIdentityChain(*first + *second, PublicHalf(standby.get()));
  ASSERT_TRUE(one.ok()) << one.error().ToString();
  EXPECT_EQ(one->der, (*chains)[1].der);

  // Written back, the file reads the same.
  auto pem = IdentityChainsPem(*chains);
  ASSERT_TRUE(pem.ok());
  EXPECT_EQ(*pem, *first + *second);

  Pkey other_ca = NewKey("EC");
  std::string forged = LeafOf(*second) + CaCertificate(other_ca.get(), "Strongroom test CA");
  auto refused = ParseIdentityChains(*first + forged);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(refused.error().message().find("identity chain 2 of 2"), std::string::npos)
      << refused.error().message();
}

TEST_F(IdentityCertificateTest, RefusesBadRequestsAndAForeignCaKey) {
  const hsm::RsaPublicKey key = PublicHalf(identity_.get());
  for (const char* host : {"", "a,DNS:evil.test", "kms acme", "-kms", "kms/x", "kms\nx"}) {
    auto chain = CertifyIdentityKey(key, {host, 30}, ca_pem_, PrivatePem(ca_key_.get()));
    ASSERT_FALSE(chain.ok()) << host;
    EXPECT_EQ(chain.error().code(), ErrorCode::kInvalidArgument);
  }
  for (int days : {0, -1, kMaxIdentityCertificateDays + 1}) {
    auto chain = CertifyIdentityKey(key, {"kms", days}, ca_pem_, PrivatePem(ca_key_.get()));
    EXPECT_FALSE(chain.ok()) << days;
  }
  Pkey foreign = NewKey("EC");
  auto chain = CertifyIdentityKey(key, {"kms", 30}, ca_pem_, PrivatePem(foreign.get()));
  ASSERT_FALSE(chain.ok());
  EXPECT_NE(chain.error().message().find("does not belong"), std::string::npos);

  const std::string not_pem = "not a key";
  SecretBytes garbage({reinterpret_cast<const std::uint8_t*>(not_pem.data()), not_pem.size()});
  EXPECT_FALSE(CertifyIdentityKey(key, {"kms", 30}, ca_pem_, garbage).ok());
  EXPECT_FALSE(CertifyIdentityKey(key, {"kms", 30}, "", PrivatePem(ca_key_.get())).ok());
}

TEST_F(IdentityCertificateTest, MalformedPemIsRefused) {
  const hsm::RsaPublicKey key = PublicHalf(identity_.get());
  EXPECT_FALSE(ParseIdentityChain("", key).ok());
  EXPECT_FALSE(
      ParseIdentityChain("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", key)
          .ok());
  auto missing = LoadIdentityChain("/nonexistent/identity.pem", key);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("/nonexistent/identity.pem"), std::string::npos);
}

}  // namespace
}  // namespace strongroom::kms
