#include "strongroom/common/jwt.h"

#include <gtest/gtest.h>

namespace strongroom {
namespace {

constexpr std::int64_t kNow = 1'800'000'000;
constexpr char kIssuer[] = "https://idp.acme.example";

class JwtTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto key = jose::EcKeyPair::Generate("acme-1");
    ASSERT_TRUE(key.ok());
    key_ = std::make_unique<jose::EcKeyPair>(std::move(key).value());
    auto other = jose::EcKeyPair::Generate("acme-1");  // same kid, another key
    ASSERT_TRUE(other.ok());
    impostor_ = std::make_unique<jose::EcKeyPair>(std::move(other).value());
  }

  JwtVerifier Verifier(std::string audience = "kms") {
    TrustedIssuer issuer{kIssuer, "acme", {}};
    issuer.keys.push_back(*key_->PublicKey());
    return *JwtVerifier::New({std::move(issuer)}, std::move(audience), std::chrono::seconds(60),
                             [] { return kNow; });
  }

  std::string Mint(JwtToMint m, const jose::EcKeyPair* key = nullptr) {
    auto token = MintJwt(key ? *key : *key_, m);
    EXPECT_TRUE(token.ok()) << token.error().ToString();
    return token.ok() ? *token : "";
  }

  JwtToMint ForKms(std::string subject = "alice@acme.example") {
    return {kIssuer, std::move(subject), "kms", kNow - 10, 3600};
  }

  std::unique_ptr<jose::EcKeyPair> key_, impostor_;
};

TEST_F(JwtTest, ValidTokenGivesSubjectIssuerAndOrganization) {
  auto verified = Verifier().Verify(Mint(ForKms()));
  ASSERT_TRUE(verified.ok()) << verified.error().ToString();
  EXPECT_EQ(verified->subject(), "alice@acme.example");
  EXPECT_EQ(verified->issuer(), kIssuer);
  EXPECT_EQ(verified->org(), "acme");
  EXPECT_EQ(verified->expires_at(), kNow - 10 + 3600);
}

TEST_F(JwtTest, TokenForAnotherAudienceIsRefused) {
  JwtToMint core = ForKms();
  core.audience = "core";
  std::string token = Mint(core);
  auto refused = Verifier("kms").Verify(token);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kUnauthenticated);
  EXPECT_NE(refused.error().message().find("audience kms"), std::string::npos);
  EXPECT_TRUE(Verifier("core").Verify(token).ok());
}

TEST_F(JwtTest, ExpiryAndNotBeforeHonourTheSkewAndNoMore) {
  JwtToMint just_expired = ForKms();
  just_expired.issued_at = kNow - 3600 - 59;  // expired 59 s ago: within 60 s skew
  EXPECT_TRUE(Verifier().Verify(Mint(just_expired)).ok());
  just_expired.issued_at = kNow - 3600 - 61;
  EXPECT_EQ(Verifier().Verify(Mint(just_expired)).error().code(), ErrorCode::kUnauthenticated);
  JwtToMint future = ForKms();
  future.issued_at = kNow + 59;  // nbf = iat
  EXPECT_TRUE(Verifier().Verify(Mint(future)).ok());
  future.issued_at = kNow + 61;
  auto early = Verifier().Verify(Mint(future));
  ASSERT_FALSE(early.ok());
  EXPECT_NE(early.error().message().find("not valid yet"), std::string::npos);
}

TEST_F(JwtTest, UnknownIssuerWrongKeyAndTamperingAreRefused) {
  JwtToMint stranger = ForKms();
  stranger.issuer = "https://idp.evil.example";
  EXPECT_EQ(Verifier().Verify(Mint(stranger)).error().code(), ErrorCode::kUnauthenticated);
  EXPECT_EQ(Verifier().Verify(Mint(ForKms(), impostor_.get())).error().code(),
            ErrorCode::kUnauthenticated);
  std::string token = Mint(ForKms());
  std::size_t dot = token.find('.');
  std::string tampered = token;
  tampered[dot + 5] = tampered[dot + 5] == 'A' ? 'B' : 'A';
  EXPECT_EQ(Verifier().Verify(tampered).error().code(), ErrorCode::kUnauthenticated);
  EXPECT_EQ(Verifier().Verify("").error().code(), ErrorCode::kUnauthenticated);
  EXPECT_EQ(Verifier().Verify("a.b").error().code(), ErrorCode::kUnauthenticated);
  EXPECT_EQ(Verifier().Verify(std::string(kMaxJwtBytes + 1, 'a')).error().code(),
            ErrorCode::kUnauthenticated);
}

TEST_F(JwtTest, UnsignedAndHmacTokensAreRefused) {
  std::string claims = jose::Base64UrlEncode(
      std::string(R"({"iss":"https://idp.acme.example","sub":"x","aud":"kms","exp":1900000000})"));
  for (const char* header : {R"({"alg":"none"})", R"({"alg":"HS256","kid":"acme-1"})"}) {
    std::string token = jose::Base64UrlEncode(std::string(header)) + "." + claims + ".c2ln";
    auto refused = Verifier().Verify(token);
    ASSERT_FALSE(refused.ok()) << header;
    EXPECT_EQ(refused.error().code(), ErrorCode::kUnauthenticated);
  }
  std::string unsigned_token =
      jose::Base64UrlEncode(std::string(R"({"alg":"none"})")) + "." + claims + ".";
  EXPECT_FALSE(Verifier().Verify(unsigned_token).ok());
}

TEST_F(JwtTest, ConfigurationIsChecked) {
  TrustedIssuer issuer{kIssuer, "acme", {}};
  EXPECT_FALSE(JwtVerifier::New({issuer}, "kms", std::chrono::seconds(60)).ok());  // no keys
  issuer.keys.push_back(*key_->PublicKey());
  EXPECT_FALSE(JwtVerifier::New({issuer}, "", std::chrono::seconds(60)).ok());
  EXPECT_FALSE(JwtVerifier::New({issuer}, "kms", std::chrono::seconds(301)).ok());
  EXPECT_FALSE(JwtVerifier::New({issuer, issuer}, "kms", std::chrono::seconds(60)).ok());
  EXPECT_FALSE(MintJwt(*key_, {kIssuer, "", "kms", kNow, 60}).ok());
}

TEST_F(JwtTest, JwksParsesAndRefusesPrivateOrMalformedKeys) {
  std::string jwks = "{\"keys\":[" + *key_->PublicJwkJson() + "]}";
  auto keys = ParseJwks(jwks);
  ASSERT_TRUE(keys.ok()) << keys.error().ToString();
  ASSERT_EQ(keys->size(), 1u);
  EXPECT_EQ((*keys)[0].kid(), std::optional<std::string>("acme-1"));
  EXPECT_FALSE(ParseJwks("{}").ok());
  EXPECT_FALSE(ParseJwks(R"({"keys":[]})").ok());
  EXPECT_FALSE(ParseJwks(R"({"keys":[{"kty":"oct","k":"AAAA"}]})").ok());
  EXPECT_FALSE(ParseJwks("not json").ok());
}

TEST_F(JwtTest, RememberedTokensStillExpireAndNeverStandForOthers) {
  std::int64_t now = kNow;
  TrustedIssuer issuer{kIssuer, "acme", {*key_->PublicKey()}};
  auto verifier = JwtVerifier::New({issuer}, "kms", std::chrono::seconds(60), [&] { return now; });
  ASSERT_TRUE(verifier.ok());
  const std::string alice = Mint(ForKms("alice@acme.example"));
  const std::string bob = Mint(ForKms("bob@acme.example"));
  ASSERT_TRUE(verifier->Verify(alice).ok());
  auto again = verifier->Verify(alice);  // from the cache
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->subject(), "alice@acme.example");
  EXPECT_EQ(verifier->Verify(bob)->subject(), "bob@acme.example");
  // A tampered copy of a remembered token is a different token: checked, and refused.
  std::string tampered = alice;
  tampered[tampered.size() - 2] = tampered[tampered.size() - 2] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(verifier->Verify(tampered).ok());
  // Time passes: the remembered token expires like any other.
  now = kNow - 10 + 3600 + 61;
  auto expired = verifier->Verify(alice);
  ASSERT_FALSE(expired.ok());
  EXPECT_NE(expired.error().message().find("expired"), std::string::npos);
}

TEST_F(JwtTest, TheCacheCanBeTurnedOffAndCopiesShareIt) {
  TrustedIssuer issuer{kIssuer, "acme", {*key_->PublicKey()}};
  auto uncached = JwtVerifier::New(
      {issuer}, "kms", std::chrono::seconds(60), [] { return kNow; }, 0);
  ASSERT_TRUE(uncached.ok());
  const std::string token = Mint(ForKms());
  EXPECT_TRUE(uncached->Verify(token).ok());
  EXPECT_TRUE(uncached->Verify(token).ok());
  JwtVerifier copy = Verifier();
  EXPECT_TRUE(copy.Verify(token).ok());
  EXPECT_TRUE(JwtVerifier(copy).Verify(token).ok());
}

}  // namespace
}  // namespace strongroom
