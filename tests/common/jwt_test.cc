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

// Issue 11: with two organizations' identity providers trusted, each signs only for its own users.
class JwtSubjectDomainTest : public JwtTest {
 protected:
  static constexpr char kGlobex[] = "https://idp.globex.example";

  void SetUp() override {
    JwtTest::SetUp();
    auto globex = jose::EcKeyPair::Generate("globex-1");
    ASSERT_TRUE(globex.ok());
    globex_ = std::make_unique<jose::EcKeyPair>(std::move(globex).value());
  }

  std::vector<TrustedIssuer> Issuers(std::vector<std::string> acme_domains = {"acme.example"},
                                     std::vector<std::string> globex_domains = {"globex.example"}) {
    return {{kIssuer, "acme", {*key_->PublicKey()}, std::move(acme_domains)},
            {kGlobex, "globex", {*globex_->PublicKey()}, std::move(globex_domains)}};
  }

  JwtVerifier TwoOrganizations() {
    auto verifier =
        JwtVerifier::New(Issuers(), "kms", std::chrono::seconds(60), [] { return kNow; });
    EXPECT_TRUE(verifier.ok()) << verifier.error().ToString();
    return std::move(verifier).value();
  }

  std::string ByGlobex(const std::string& subject) {
    return Mint({kGlobex, subject, "kms", kNow - 10, 3600}, globex_.get());
  }

  std::unique_ptr<jose::EcKeyPair> globex_;
};

TEST_F(JwtSubjectDomainTest, AnIssuerCannotSignForAnotherOrganizationsUser) {
  JwtVerifier verifier = TwoOrganizations();
  const std::string forged = ByGlobex("alice@acme.example");
  auto refused = verifier.Verify(forged);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kUnauthenticated);
  EXPECT_NE(refused.error().message().find("not in a domain of its issuer"), std::string::npos)
      << refused.error().message();
  EXPECT_EQ(refused.error().message().find("alice"), std::string::npos);  // never the token's
  EXPECT_FALSE(verifier.Verify(forged).ok());  // and not remembered as good either

  auto alice = verifier.Verify(Mint(ForKms("alice@acme.example")));
  ASSERT_TRUE(alice.ok()) << alice.error().ToString();
  EXPECT_EQ(alice->org(), "acme");
  auto gina = verifier.Verify(ByGlobex("gina@globex.example"));
  ASSERT_TRUE(gina.ok()) << gina.error().ToString();
  EXPECT_EQ(gina->org(), "globex");
}

TEST_F(JwtSubjectDomainTest, TheDomainIsComparedCaseInsensitivelyAndExactly) {
  JwtVerifier verifier = TwoOrganizations();
  auto upper = verifier.Verify(Mint(ForKms("Alice@ACME.Example")));
  ASSERT_TRUE(upper.ok()) << upper.error().ToString();
  EXPECT_EQ(upper->subject(), "Alice@ACME.Example");  // the subject itself is kept as signed
  for (const std::string subject :
       {"alice@eu.acme.example", "alice@acme.example.", "alice@acme.examplex", "alice",
        "@acme.example", "alice@", "alice@bob@acme.example", "acme.example"}) {
    auto refused = verifier.Verify(Mint(ForKms(subject)));
    ASSERT_FALSE(refused.ok()) << subject;
    EXPECT_EQ(refused.error().code(), ErrorCode::kUnauthenticated) << subject;
  }
  auto no_domain = verifier.Verify(Mint(ForKms("alice")));
  ASSERT_FALSE(no_domain.ok());
  EXPECT_NE(no_domain.error().message().find("user@domain"), std::string::npos);
}

TEST_F(JwtSubjectDomainTest, OneOrganizationMayLeaveSubjectsOpen) {
  // One organization without domains: any subject, as before.
  auto open = JwtVerifier::New({{kIssuer, "acme", {*key_->PublicKey()}}}, "kms",
                               std::chrono::seconds(60), [] { return kNow; });
  ASSERT_TRUE(open.ok()) << open.error().ToString();
  EXPECT_TRUE(open->Verify(Mint(ForKms("svc-robot"))).ok());
  EXPECT_EQ(open->subjects().OrganizationOf("anyone@anywhere.example"), "acme");
  // With domains, even one organization's issuer signs only for them.
  auto closed = JwtVerifier::New({{kIssuer, "acme", {*key_->PublicKey()}, {"acme.example"}}}, "kms",
                                 std::chrono::seconds(60), [] { return kNow; });
  ASSERT_TRUE(closed.ok()) << closed.error().ToString();
  EXPECT_FALSE(closed->Verify(Mint(ForKms("svc-robot"))).ok());
  EXPECT_TRUE(closed->Verify(Mint(ForKms("svc-robot@acme.example"))).ok());
  EXPECT_EQ(closed->subjects().OrganizationOf("anyone@anywhere.example"), std::nullopt);
}

TEST_F(JwtSubjectDomainTest, OverlappingOrMissingDomainsOfSeveralOrganizationsAreRefused) {
  const auto refusal = [](Result<JwtVerifier> verifier) {
    return verifier.ok() ? std::string("accepted") : verifier.error().message();
  };
  // A domain claimed by two organizations, in any case.
  EXPECT_NE(refusal(JwtVerifier::New(Issuers({"acme.example"}, {"globex.example", "ACME.example"}),
                                     "kms", std::chrono::seconds(60)))
                .find("two organizations"),
            std::string::npos);
  // Several organizations and an issuer without domains.
  for (auto issuers : {Issuers({}, {"globex.example"}), Issuers({"acme.example"}, {})}) {
    EXPECT_NE(
        refusal(JwtVerifier::New(issuers, "kms", std::chrono::seconds(60))).find("subject_domains"),
        std::string::npos);
  }
  // Not DNS names, or too many.
  for (const std::string& bad :
       std::vector<std::string>{"", "acme..example", ".acme.example", "-acme.example",
                                "acme_example", "acme.example/x", std::string(254, 'a')}) {
    EXPECT_FALSE(JwtVerifier::New(Issuers({bad}), "kms", std::chrono::seconds(60)).ok()) << bad;
  }
  EXPECT_FALSE(
      JwtVerifier::New(Issuers(std::vector<std::string>(kMaxSubjectDomains + 1, "acme.example")),
                       "kms", std::chrono::seconds(60))
          .ok());
  // Two issuers of one organization may share a domain.
  std::vector<TrustedIssuer> same_org = Issuers({"acme.example"}, {"acme.example"});
  same_org[1].org = "acme";
  EXPECT_TRUE(JwtVerifier::New(same_org, "kms", std::chrono::seconds(60)).ok());
}

TEST_F(JwtSubjectDomainTest, TheOrganizationOfASubjectIsItsDomains) {
  JwtVerifier verifier = TwoOrganizations();
  EXPECT_EQ(verifier.subjects().OrganizationOf("bob@Globex.Example"), "globex");
  EXPECT_EQ(verifier.subjects().OrganizationOf("bob@acme.example"), "acme");
  EXPECT_EQ(verifier.subjects().OrganizationOf("bob@initech.example"), std::nullopt);
  EXPECT_EQ(verifier.subjects().OrganizationOf("bob"), std::nullopt);
}

}  // namespace
}  // namespace strongroom
