#include "strongroom/common/kms_uri.h"

#include <gtest/gtest.h>

#include <tuple>
#include <vector>

namespace strongroom {
namespace {

constexpr char kCluster[] = "kms://kms.acme.test";
constexpr char kResource[] = "kms://kms.acme.test/resources/0f8c3a52-7d1e-4b6a-9c2f-3e5d7a9b1c4d";

KmsUri Parsed(std::string_view text, std::string_view base = {}) {
  Result<KmsUri> uri = KmsUri::Parse(text, base);
  EXPECT_TRUE(uri.ok()) << text << ": " << (uri.ok() ? "" : uri.error().ToString());
  return uri.ok() ? *uri : *KmsUri::ParseCluster("kms://parse.failed");
}

std::optional<std::string> AuthIdOf(std::string_view text) { return Parsed(text).auth_id(); }

ErrorCode RefusalOf(std::string_view text, std::string_view base = kCluster) {
  Result<KmsUri> uri = KmsUri::Parse(text, base);
  EXPECT_FALSE(uri.ok()) << text << " was accepted as " << (uri.ok() ? uri->ToString() : "");
  return uri.ok() ? ErrorCode::kInternal : uri.error().code();
}

TEST(KmsUriTest, SplitsAnAbsoluteUriIntoItsParts) {
  KmsUri uri = Parsed("kms://kms.acme.test/resources/r-1/authorizations?authId=carol@acme.test");
  EXPECT_EQ(uri.host(), "kms.acme.test");
  EXPECT_EQ(uri.port(), 0);
  EXPECT_EQ(uri.cluster(), kCluster);
  EXPECT_EQ(uri.collection(), "resources");
  EXPECT_EQ(uri.id(), "r-1");
  EXPECT_EQ(uri.sub(), "authorizations");
  EXPECT_EQ(uri.path(), "/resources/r-1/authorizations");
  EXPECT_EQ(uri.auth_id(), "carol@acme.test");
  EXPECT_EQ(uri.ToString(),
            "kms://kms.acme.test/resources/r-1/authorizations?authId=carol@acme.test");

  KmsUri cluster = Parsed("kms://kms.acme.test:8443");
  EXPECT_TRUE(cluster.IsCluster());
  EXPECT_EQ(cluster.path(), "");
  EXPECT_EQ(cluster.port(), 8443);
  EXPECT_EQ(cluster.cluster(), "kms://kms.acme.test:8443");
  EXPECT_TRUE(KmsUri::ParseCluster("kms://kms.acme.test:8443").ok());
  EXPECT_FALSE(KmsUri::ParseCluster("kms://kms.acme.test/keys").ok());
  EXPECT_FALSE(KmsUri::ParseCluster("kms://kms.acme.test?authId=x").ok());

  KmsUri key = Parsed("KMS://KMS.Acme.Test/keys/K_1");
  EXPECT_EQ(key.ToString(), "kms://kms.acme.test/keys/K_1");  // scheme and host in lower case
  EXPECT_FALSE(key.auth_id());
}

TEST(KmsUriTest, EncodedAndUnencodedQueryValuesAreTheSame) {
  const std::string by_authid = std::string(kResource) + "/authorizations?authId=";
  EXPECT_EQ(AuthIdOf(by_authid + "carol@acme.test"), "carol@acme.test");
  EXPECT_EQ(AuthIdOf(by_authid + "carol%40acme.test"), "carol@acme.test");
  EXPECT_EQ(AuthIdOf(by_authid + "%63arol%40ACME.test"), "carol@ACME.test");
  EXPECT_EQ(Parsed(by_authid + "carol%40acme.test"), Parsed(by_authid + "carol@acme.test"));
  // A resource URI as authId, as a standard encoder writes it, or as it is.
  EXPECT_EQ(AuthIdOf(by_authid + "kms%3A%2F%2Fkms.acme.test%2Fresources%2Fteam-1"),
            "kms://kms.acme.test/resources/team-1");
  EXPECT_EQ(AuthIdOf(by_authid + "kms://kms.acme.test/resources/team-1"),
            "kms://kms.acme.test/resources/team-1");
  // The parameter's name may be encoded too.
  EXPECT_EQ(AuthIdOf(by_authid.substr(0, by_authid.size() - 7) + "auth%49d=bob"), "bob");
}

TEST(KmsUriTest, PlusIsALiteralPlus) {
  const std::string by_authid = std::string(kResource) + "/authorizations?authId=";
  EXPECT_EQ(AuthIdOf(by_authid + "a+b@x.test"), "a+b@x.test");
  EXPECT_EQ(AuthIdOf(by_authid + "a%2Bb@x.test"), "a+b@x.test");
  EXPECT_EQ(AuthIdOf(by_authid + "a%2bb@x.test"), "a+b@x.test");
  EXPECT_EQ(AuthIdOf(by_authid + "a%20b@x.test"), "a b@x.test");  // a space is %20 only
}

TEST(KmsUriTest, ValuesAreDecodedOnce) {
  const std::string by_authid = std::string(kResource) + "/authorizations?authId=";
  EXPECT_EQ(AuthIdOf(by_authid + "carol%2540acme.test"), "carol%40acme.test");
  // Written again, the '%' is encoded again, so that it reads back the same.
  KmsUri uri = Parsed(by_authid + "carol%2540acme.test");
  EXPECT_EQ(uri.ToString(), by_authid + "carol%2540acme.test");
  EXPECT_EQ(Parsed(uri.ToString()), uri);
}

TEST(KmsUriTest, AnEncodedSlashIsRefusedNotSplit) {
  for (const char* text : {"/resources/r-1%2Fauthorizations", "/resources/r-1%2fkeys",
                           "/keys%2Fk-1", "kms://kms.acme.test/resources%2F..%2Fkeys/k"}) {
    EXPECT_EQ(RefusalOf(text), ErrorCode::kInvalidArgument) << text;
  }
  // Decoded to anything but [A-Za-z0-9_-], an id names nothing.
  EXPECT_EQ(RefusalOf("/keys/k%2E1"), ErrorCode::kNotFound);
  EXPECT_EQ(RefusalOf("/keys/k%40x"), ErrorCode::kNotFound);
  // Unreserved characters may be encoded: %6B is 'k'.
  EXPECT_EQ(Parsed("/keys/%6B-1", kCluster).ToString(), "kms://kms.acme.test/keys/k-1");
  // In the query a %2F is just a character of the value.
  EXPECT_EQ(AuthIdOf(std::string(kResource) + "/authorizations?authId=a%2Fb"), "a/b");
}

TEST(KmsUriTest, InvalidPercentEscapesAreClearErrors) {
  for (const char* text :
       {"/resources/r-1/authorizations?authId=carol%G1acme.test",
        "/resources/r-1/authorizations?authId=carol%", "/resources/r-1/authorizations?authId=%4",
        "/keys/k%G1", "/keys/k%", "/keys/k%4", "kms://kms.acme.test/keys/%zz"}) {
    Result<KmsUri> uri = KmsUri::Parse(text, kCluster);
    ASSERT_FALSE(uri.ok()) << text;
    EXPECT_EQ(uri.error().code(), ErrorCode::kInvalidArgument) << text;
    EXPECT_NE(uri.error().message().find("percent escape"), std::string::npos)
        << uri.error().message();
  }
}

TEST(KmsUriTest, RelativeUrisResolveAgainstTheKmsAlone) {
  KmsUri uri = Parsed("/resources/r-1/keys", kCluster);
  EXPECT_EQ(uri.ToString(), "kms://kms.acme.test/resources/r-1/keys");
  EXPECT_EQ(Parsed("/ping", "kms://kms.acme.test:8443").ToString(),
            "kms://kms.acme.test:8443/ping");
  Result<KmsUri> no_base = KmsUri::Parse("/keys/k-1");
  ASSERT_FALSE(no_base.ok());
  EXPECT_EQ(no_base.error().code(), ErrorCode::kInvalidArgument);
  for (const char* text : {"keys/k-1", "//evil.test/keys/k-1", "?authId=x", ""}) {
    EXPECT_EQ(RefusalOf(text), ErrorCode::kInvalidArgument) << text;
  }
  EXPECT_FALSE(KmsUri::Parse("/keys/k-1", "kms://kms.acme.test/keys").ok());  // not a cluster
  // Dot segments are not removed: they name nothing.
  EXPECT_EQ(RefusalOf("/keys/../../etc"), ErrorCode::kNotFound);
  EXPECT_EQ(RefusalOf("/resources/r-1/../keys"), ErrorCode::kNotFound);
}

TEST(KmsUriTest, WrongSchemeHostOrShapeIsRefused) {
  for (const std::string& text : std::vector<std::string>{
           "https://kms.acme.test/keys/k-1", "kmss://kms.acme.test/keys/k-1",
           "kms://kms.acme.test/", "kms://kms.acme.test//keys", "kms://kms.acme.test/keys/a/b/c",
           "kms://kms.acme.test/keys/a.b", "kms://kms.acme.test/keys/" + std::string(65, 'a')}) {
    EXPECT_EQ(RefusalOf(text), ErrorCode::kNotFound) << text;
  }
  for (const char* text :
       {"kms://", "kms:///keys/k-1", "kms:kms.acme.test/keys/k-1", "kms://kms_acme.test/keys/k",
        "kms://user@kms.acme.test/keys/k", "kms://[::1]/keys/k", "kms://kms.acme.test:0/keys/k",
        "kms://kms.acme.test:99999/keys/k", "kms://kms.acme.test:x/keys/k",
        "kms://kms.acme.test/keys/k#frag", "kms://kms acme.test/keys/k",
        "kms://kms.acme.test/keys/k\n", "kms://kms.acme.test/keys/k?"}) {
    EXPECT_EQ(RefusalOf(text), ErrorCode::kInvalidArgument) << text;
  }
  EXPECT_EQ(RefusalOf("kms://" + std::string(254, 'h')), ErrorCode::kInvalidArgument);
  // Another KMS's URI parses; whether it is one's own is the caller's question.
  EXPECT_EQ(Parsed("kms://kms.globex.test/keys/k-1").cluster(), "kms://kms.globex.test");
}

TEST(KmsUriTest, OnlyOneNonEmptyAuthIdIsAQuery) {
  const std::string uri = std::string(kResource) + "/authorizations?";
  for (const std::string& query : std::vector<std::string>{
           "authId=", "authId", "userId=bob", "authId=bob&authId=carol", "authId=bob&limit=3",
           "authId=bob&", "&authId=bob", "authId=a%00b", "authId=" + std::string(1025, 'a')}) {
    EXPECT_EQ(RefusalOf(uri + query), ErrorCode::kInvalidArgument) << query;
  }
  EXPECT_EQ(AuthIdOf(uri + "authId=" + std::string(900, 'a')), std::string(900, 'a'));
  EXPECT_EQ(AuthIdOf(uri + "authId=a=b?c"), "a=b?c");
}

TEST(KmsUriTest, OverlongInputIsRefused) {
  const std::string base = std::string(kResource) + "/authorizations?authId=";
  const std::string fits = base + std::string(KmsUri::kMaxBytes - base.size(), 'a');
  EXPECT_TRUE(KmsUri::Parse(fits).ok());
  Result<KmsUri> over = KmsUri::Parse(fits + "a");
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(over.error().message().find("longer than 1024 bytes"), std::string::npos);
  EXPECT_FALSE(KmsUri::Parse(std::string(100'000, '%')).ok());
}

TEST(KmsUriTest, MakeEncodesWhatParseDecodes) {
  for (const std::string auth_id :
       {"carol@acme.test", "a+b@x.test", "kms://kms.acme.test/resources/team-1", "x&authId=mallory",
        "what?#%20 zoë", "100%"}) {
    Result<KmsUri> made =
        KmsUri::Make(kCluster, "resources", "r-1", "authorizations", std::string_view(auth_id));
    ASSERT_TRUE(made.ok()) << auth_id << ": " << made.error().ToString();
    EXPECT_EQ(made->auth_id(), auth_id);
    EXPECT_EQ(Parsed(made->ToString()), *made) << made->ToString();
  }
  EXPECT_EQ(KmsUri::EncodeQueryValue("a+b@x.test"), "a%2Bb@x.test");
  EXPECT_EQ(KmsUri::EncodeQueryValue("kms://h/resources/r"), "kms://h/resources/r");
  EXPECT_EQ(KmsUri::EncodeQueryValue("a&b=c?d#e f%"), "a%26b%3Dc%3Fd%23e%20f%25");
  EXPECT_EQ(KmsUri::Make(kCluster, "keys", "k-1")->ToString(), "kms://kms.acme.test/keys/k-1");
  for (const auto& [collection, id, sub] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"", "", ""},
           {"keys", "a/b", ""},
           {"keys", "", "sub"},
           {"keys", "..", ""},
           {"keys", "k", "a?b"},
           {"keys", std::string(65, 'k'), ""}}) {
    EXPECT_FALSE(KmsUri::Make(kCluster, collection, id, sub).ok()) << collection << id << sub;
  }
  EXPECT_FALSE(KmsUri::Make("kms://kms.acme.test/keys", "keys").ok());
  EXPECT_FALSE(KmsUri::Make(kCluster, "keys", "k", "", "").ok());
  EXPECT_FALSE(KmsUri::Make(kCluster, "keys", "k", "", std::string(1000, '&')).ok());  // > 1024
}

TEST(KmsUriTest, PredicatesReplaceTheHandChecks) {
  KmsUri resource = Parsed(kResource);
  EXPECT_TRUE(resource.IsItem("resources"));
  EXPECT_FALSE(resource.IsItem("keys"));
  EXPECT_TRUE(resource.IsUuidItem("resources"));
  EXPECT_FALSE(resource.IsUuidItem("keys"));
  EXPECT_FALSE(Parsed("/resources/r-1", kCluster).IsUuidItem("resources"));
  EXPECT_FALSE(
      Parsed("/resources/0F8C3A52-7D1E-4B6A-9C2F-3E5D7A9B1C4D", kCluster).IsUuidItem("resources"));
  EXPECT_FALSE(Parsed(std::string(kResource) + "/keys").IsUuidItem("resources"));
  EXPECT_FALSE(Parsed(std::string(kResource) + "/keys").IsItem("resources"));
  EXPECT_FALSE(Parsed(std::string(kResource) + "/authorizations?authId=x").IsItem("resources"));
  EXPECT_FALSE(Parsed(kCluster).IsItem("resources"));
}

}  // namespace
}  // namespace strongroom
