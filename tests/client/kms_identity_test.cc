// The KMS identity check (kms_identity.h) with certificates made in process: a good chain, a
// wrong root, a wrong name, a chain for another key, a name only in the CN, an expired leaf.
#include "strongroom/client/kms_identity.h"

#include <gtest/gtest.h>

#include <fstream>

#include "../support/test_dir.h"
#include "strongroom/common/jose/jwk.h"
#include "test_pki.h"

namespace strongroom::client {
namespace {

using testing::CertificateSpec;
using testing::Der;
using testing::MakeRsaKey;
using testing::Pem;
using testing::PkeyPtr;
using testing::RsaNumbers;
using testing::TestCa;

constexpr char kHost[] = "kms.acme.test";
constexpr char kCluster[] = "kms://kms.acme.test";

CertificateSpec LeafSpec(std::vector<std::string> dns = {kHost}, std::string cn = kHost) {
  CertificateSpec spec;
  spec.cn = std::move(cn);
  spec.dns = std::move(dns);
  return spec;
}

class KmsIdentityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = TestCa::Make("Strongroom test root");
    other_root_ = TestCa::Make("Somebody else's root");
    kms_key_ = MakeRsaKey();
    roots_file_ = (dir_ / "roots.pem").string();
    std::ofstream(roots_file_) << Pem(root_.cert.get());
    other_roots_file_ = (dir_ / "other-roots.pem").string();
    std::ofstream(other_roots_file_) << Pem(other_root_.cert.get());
  }

  // The /kms/info a KMS with `key` and this x5c chain (DER, leaf first) would publish.
  static KmsInfo Info(EVP_PKEY* key, const std::vector<std::vector<std::uint8_t>>& chain,
                      const std::string& cluster = kCluster) {
    auto [n, e] = RsaNumbers(key);
    auto jwk = jose::PublicJwk::FromRsa(n, e, cluster, chain);
    EXPECT_TRUE(jwk.ok()) << jwk.error().ToString();
    KmsInfo info{cluster, std::move(jwk).value(), {}};
    auto parsed = ParseKmsInfo(R"({"kmsCluster":")" + cluster + R"(","rsaPublicKey":)" +
                               *info.rsa_public_key.ToJson() + "}");
    EXPECT_TRUE(parsed.ok()) << parsed.error().ToString();
    return std::move(parsed).value();
  }

  KmsTrust Trust(const std::string& roots) const { return {kCluster, roots}; }

  static void ExpectUntrusted(const Status& status, const std::string& why) {
    ASSERT_FALSE(status.ok()) << "expected a refusal: " << why;
    EXPECT_EQ(status.error().code(), ErrorCode::kUnauthenticated) << status.error().ToString();
    EXPECT_NE(status.error().message().find(why), std::string::npos) << status.error().ToString();
  }

  strongroom::testing::TestDir dir_;
  TestCa root_, other_root_;
  PkeyPtr kms_key_;
  std::string roots_file_, other_roots_file_;
};

TEST_F(KmsIdentityTest, AChainToAConfiguredRootNamingTheHostIsTrusted) {
  auto leaf = root_.Leaf(kms_key_.get(), LeafSpec());
  KmsInfo info = Info(kms_key_.get(), {Der(leaf.get()), Der(root_.cert.get())});
  ASSERT_EQ(info.x5c.size(), 2u);
  Status verified = VerifyKmsIdentity(info, Trust(roots_file_));
  EXPECT_TRUE(verified.ok()) << verified.error().ToString();
  // The root itself need not be in x5c: the configured roots supply it.
  Status leaf_only = VerifyKmsIdentity(Info(kms_key_.get(), {Der(leaf.get())}), Trust(roots_file_));
  EXPECT_TRUE(leaf_only.ok()) << leaf_only.error().ToString();
}

TEST_F(KmsIdentityTest, AnIntermediateInX5cIsUsedButNotTrustedByItself) {
  TestCa intermediate = root_.Intermediate("Strongroom test intermediate");
  auto leaf = intermediate.Leaf(kms_key_.get(), LeafSpec());
  Status verified = VerifyKmsIdentity(
      Info(kms_key_.get(), {Der(leaf.get()), Der(intermediate.cert.get())}), Trust(roots_file_));
  EXPECT_TRUE(verified.ok()) << verified.error().ToString();
  // Without the intermediate the chain cannot be built.
  ExpectUntrusted(VerifyKmsIdentity(Info(kms_key_.get(), {Der(leaf.get())}), Trust(roots_file_)),
                  "does not verify");
}

TEST_F(KmsIdentityTest, AChainToAnotherRootIsRefused) {
  auto leaf = other_root_.Leaf(kms_key_.get(), LeafSpec());
  KmsInfo info = Info(kms_key_.get(), {Der(leaf.get()), Der(other_root_.cert.get())});
  ExpectUntrusted(VerifyKmsIdentity(info, Trust(roots_file_)), "does not verify");
  EXPECT_TRUE(VerifyKmsIdentity(info, Trust(other_roots_file_)).ok());
}

TEST_F(KmsIdentityTest, ASelfSignedLeafIsRefused) {
  CertificateSpec spec = LeafSpec();
  auto self_signed = testing::Issue(kms_key_.get(), spec, nullptr, nullptr);
  ExpectUntrusted(
      VerifyKmsIdentity(Info(kms_key_.get(), {Der(self_signed.get())}), Trust(roots_file_)),
      "does not verify");
}

TEST_F(KmsIdentityTest, ALeafForAnotherHostIsRefused) {
  auto leaf = root_.Leaf(kms_key_.get(), LeafSpec({"kms.globex.test"}, "kms.globex.test"));
  ExpectUntrusted(VerifyKmsIdentity(Info(kms_key_.get(), {Der(leaf.get())}), Trust(roots_file_)),
                  "does not name kms.acme.test");
  // A wildcard does not stand for the host either.
  auto wildcard = root_.Leaf(kms_key_.get(), LeafSpec({"*.acme.test"}, "*.acme.test"));
  ExpectUntrusted(
      VerifyKmsIdentity(Info(kms_key_.get(), {Der(wildcard.get())}), Trust(roots_file_)),
      "does not name");
}

TEST_F(KmsIdentityTest, AHostNamedOnlyInTheCommonNameIsRefused) {
  auto leaf = root_.Leaf(kms_key_.get(), LeafSpec({}, kHost));
  ExpectUntrusted(VerifyKmsIdentity(Info(kms_key_.get(), {Der(leaf.get())}), Trust(roots_file_)),
                  "does not name");
}

TEST_F(KmsIdentityTest, AChainThatCertifiesAnotherKeyIsRefused) {
  PkeyPtr impostor = MakeRsaKey();
  auto leaf = root_.Leaf(kms_key_.get(), LeafSpec());
  // The document's key is the impostor's; the certificate is for the real KMS key.
  ExpectUntrusted(VerifyKmsIdentity(Info(impostor.get(), {Der(leaf.get())}), Trust(roots_file_)),
                  "another key");
}

TEST_F(KmsIdentityTest, AnExpiredLeafOrAnotherClusterOrNoChainIsRefused) {
  CertificateSpec expired = LeafSpec();
  expired.not_before_s = -3 * 24 * 3600;
  expired.not_after_s = -24 * 3600;
  auto old_leaf = root_.Leaf(kms_key_.get(), expired);
  ExpectUntrusted(
      VerifyKmsIdentity(Info(kms_key_.get(), {Der(old_leaf.get())}), Trust(roots_file_)),
      "expired");

  auto leaf = root_.Leaf(kms_key_.get(), LeafSpec());
  KmsInfo info = Info(kms_key_.get(), {Der(leaf.get())});
  // Valid now, not in three days.
  const std::int64_t in_three_days = std::time(nullptr) + 3 * 24 * 3600;
  EXPECT_FALSE(VerifyKmsIdentity(info, Trust(roots_file_), in_three_days).ok());

  ExpectUntrusted(VerifyKmsIdentity(info, {"kms://kms.globex.test", roots_file_}),
                  "names the cluster");
  ExpectUntrusted(VerifyKmsIdentity(Info(kms_key_.get(), {}), Trust(roots_file_)),
                  "no certificate");
  Status no_roots = VerifyKmsIdentity(info, Trust((dir_ / "missing.pem").string()));
  ASSERT_FALSE(no_roots.ok());
  EXPECT_EQ(no_roots.error().code(), ErrorCode::kInvalidArgument);
}

TEST(KmsHostOfTest, TakesTheHostOfAKmsUri) {
  EXPECT_EQ(KmsHostOf("kms://kms.acme.test"), "kms.acme.test");
  EXPECT_EQ(KmsHostOf("kms://kms.acme.test:8443/keys/1"), "kms.acme.test");
  EXPECT_EQ(KmsHostOf("https://kms.acme.test"), "");
}

}  // namespace
}  // namespace strongroom::client
