#include "strongroom/kms/kmsd_settings.h"

#include <Poco/AutoPtr.h>
#include <Poco/Util/MapConfiguration.h>
#include <gtest/gtest.h>

#include <fstream>

#include "../support/test_dir.h"

namespace strongroom::kms {
namespace {

class KmsdSettingsTest : public ::testing::Test {
 protected:
  KmsdSettingsTest() : config_(new Poco::Util::MapConfiguration) {
    config_->setString("kms.host", "kms.acme.test");
    config_->setString("kms.database", "/var/lib/strongroom/kms.db");
    config_->setString("kms.tls_cert", "/etc/strongroom/tls/kms.crt");
    config_->setString("kms.tls_key", "/etc/strongroom/tls/kms.key");
    config_->setString("kms.identity_chain", "/etc/strongroom/identity.pem");
    config_->setString("jwt.issuers", "acme, globex");
    config_->setString("jwt.acme.issuer", "https://idp.acme.test");
    config_->setString("jwt.acme.org", "acme");
    config_->setString("jwt.acme.jwks", "/etc/strongroom/acme.jwks");
    config_->setString("jwt.acme.subject_domains", "acme.test, ACME.example");
    config_->setString("jwt.globex.issuer", "https://idp.globex.test");
    config_->setString("jwt.globex.org", "globex");
    config_->setString("jwt.globex.jwks", "/etc/strongroom/globex.jwks");
    config_->setString("jwt.globex.subject_domains", "globex.test");
  }

  // The error message of a configuration that must be refused.
  std::string Refusal() {
    auto settings = ReadKmsdSettings(*config_);
    EXPECT_FALSE(settings.ok());
    if (settings.ok()) return "";
    EXPECT_EQ(settings.error().code(), ErrorCode::kInvalidArgument);
    return settings.error().message();
  }

  Poco::AutoPtr<Poco::Util::MapConfiguration> config_;
};

TEST_F(KmsdSettingsTest, ReadsSettingsWithDefaults) {
  auto settings = ReadKmsdSettings(*config_);
  ASSERT_TRUE(settings.ok()) << settings.error().ToString();
  EXPECT_EQ(settings->host, "kms.acme.test");
  EXPECT_EQ(settings->database.engine, Database::Engine::kSqlite);
  EXPECT_EQ(settings->database.path, "/var/lib/strongroom/kms.db");
  EXPECT_EQ(settings->listener.host, "127.0.0.1");
  EXPECT_EQ(settings->listener.port, 8443);
  EXPECT_EQ(settings->listener.tls_cert, "/etc/strongroom/tls/kms.crt");
  EXPECT_EQ(settings->listener.tls_key, "/etc/strongroom/tls/kms.key");
  EXPECT_EQ(settings->identity_key, "kms");
  EXPECT_EQ(settings->identity_chain, "/etc/strongroom/identity.pem");
  EXPECT_EQ(settings->listener.max_connections, 64u);
  EXPECT_EQ(settings->listener.max_open_connections, 4096u);
  EXPECT_EQ(settings->listener.max_connections_per_peer, 256u);
  EXPECT_EQ(settings->max_in_flight, 32u);
  EXPECT_EQ(settings->key_cache_entries, 50000u);
  EXPECT_EQ(settings->key_cache_age, std::chrono::seconds(300));
  EXPECT_EQ(settings->metadata_cache_entries, 16384u);
  EXPECT_EQ(settings->jwt_audience, "kms");
  EXPECT_EQ(settings->jwt_skew, std::chrono::seconds(60));
  ASSERT_EQ(settings->issuers.size(), 2u);
  EXPECT_EQ(settings->issuers[0].name, "acme");
  EXPECT_EQ(settings->issuers[0].issuer, "https://idp.acme.test");
  EXPECT_EQ(settings->issuers[0].org, "acme");
  EXPECT_EQ(settings->issuers[0].jwks_path, "/etc/strongroom/acme.jwks");
  EXPECT_EQ(settings->issuers[0].subject_domains,
            (std::vector<std::string>{"acme.test", "ACME.example"}));
  EXPECT_EQ(settings->issuers[1].name, "globex");
  EXPECT_EQ(settings->issuers[1].org, "globex");
  EXPECT_EQ(settings->issuers[1].subject_domains, std::vector<std::string>{"globex.test"});
}

TEST_F(KmsdSettingsTest, ReadsEverySetting) {
  config_->setString("kms.listen", "0.0.0.0:0");
  config_->setString("kms.identity_key", "kms-2026");
  config_->setString("kms.max_connections", "128");
  config_->setString("kms.max_open_connections", "20000");
  config_->setString("kms.max_connections_per_peer", "0");
  config_->setString("kms.max_in_flight", "1");
  config_->setString("kms.key_cache_entries", "0");
  config_->setString("kms.key_cache_age_s", "60");
  config_->setString("kms.metadata_cache_entries", "0");
  config_->setString("jwt.audience", "kms-eu");
  config_->setString("jwt.skew_s", "0");
  auto settings = ReadKmsdSettings(*config_);
  ASSERT_TRUE(settings.ok()) << settings.error().ToString();
  EXPECT_EQ(settings->listener.host, "0.0.0.0");
  EXPECT_EQ(settings->listener.port, 0);
  EXPECT_EQ(settings->identity_key, "kms-2026");
  EXPECT_EQ(settings->listener.max_connections, 128u);
  EXPECT_EQ(settings->listener.max_open_connections, 20000u);
  EXPECT_EQ(settings->listener.max_connections_per_peer, 0u);  // no limit
  EXPECT_EQ(settings->max_in_flight, 1u);
  EXPECT_EQ(settings->key_cache_entries, 0u);  // the cache off
  EXPECT_EQ(settings->key_cache_age, std::chrono::seconds(60));
  EXPECT_EQ(settings->metadata_cache_entries, 0u);
  EXPECT_EQ(settings->jwt_audience, "kms-eu");
  EXPECT_EQ(settings->jwt_skew, std::chrono::seconds(0));
}

TEST_F(KmsdSettingsTest, ReadsIpv6Listen) {
  config_->setString("kms.listen", "[::1]:9443");
  auto settings = ReadKmsdSettings(*config_);
  ASSERT_TRUE(settings.ok()) << settings.error().ToString();
  EXPECT_EQ(settings->listener.host, "::1");
  EXPECT_EQ(settings->listener.port, 9443);
}

TEST_F(KmsdSettingsTest, RefusesMalformedListen) {
  for (const char* listen : {"8443", "127.0.0.1", ":8443", "127.0.0.1:", "127.0.0.1:65536",
                             "127.0.0.1:84x3", "::1:8443", "[::1]8443", "[::1]:", "host:-1"}) {
    config_->setString("kms.listen", listen);
    EXPECT_NE(Refusal().find("kms.listen"), std::string::npos) << listen;
  }
}

TEST_F(KmsdSettingsTest, RefusesUnknownSettingsByName) {
  {
    config_->setString("kms.max_conections", "4");
    EXPECT_NE(Refusal().find("kms.max_conections"), std::string::npos);
    config_->remove("kms.max_conections");
  }
  {
    config_->setString("jwt.audiance", "kms");
    EXPECT_NE(Refusal().find("jwt.audiance"), std::string::npos);
    config_->remove("jwt.audiance");
  }
  {
    config_->setString("jwt.acme.organization", "acme");
    EXPECT_NE(Refusal().find("jwt.acme.organization"), std::string::npos);
    config_->remove("jwt.acme.organization");
  }
  {
    // A [jwt.<name>] section not listed in jwt.issuers is a typo too.
    config_->setString("jwt.initech.issuer", "https://idp.initech.test");
    EXPECT_NE(Refusal().find("jwt.initech"), std::string::npos);
    config_->remove("jwt.initech.issuer");
  }
  EXPECT_TRUE(ReadKmsdSettings(*config_).ok());
}

TEST_F(KmsdSettingsTest, RefusesMissingRequiredSettings) {
  for (const char* key :
       {"kms.host", "kms.database", "kms.tls_cert", "kms.tls_key", "kms.identity_chain",
        "jwt.issuers", "jwt.globex.issuer", "jwt.globex.org", "jwt.globex.jwks"}) {
    std::string value = config_->getString(key);
    config_->remove(key);
    std::string message = Refusal();
    const std::string name = std::string(key).substr(std::string(key).rfind('.') + 1);
    EXPECT_NE(message.find(name), std::string::npos) << key << ": " << message;
    config_->setString(key, value);
  }
  EXPECT_TRUE(ReadKmsdSettings(*config_).ok());
}

TEST_F(KmsdSettingsTest, RefusesOutOfRangeAndMalformedValues) {
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
           {"kms.max_connections", "0"},
           {"kms.max_connections", "4097"},
           {"kms.max_open_connections", "0"},
           {"kms.max_open_connections", "65537"},
           {"kms.max_connections_per_peer", "-1"},
           {"kms.max_connections_per_peer", "lots"},
           {"kms.max_in_flight", "0"},
           {"kms.max_in_flight", "many"},
           {"kms.key_cache_entries", "-1"},
           {"kms.key_cache_entries", "10000001"},
           {"kms.key_cache_age_s", "0"},
           {"kms.metadata_cache_entries", "lots"},
           {"jwt.skew_s", "301"},
           {"jwt.skew_s", "-1"},
           {"kms.host", "kms.acme.test/path"},
           {"kms.host", "user@kms.acme.test"},
           {"kms.host", "KMS.acme.test"},
           {"kms.host", "kms_acme.test"},
           {"jwt.issuers", " , "},
           {"jwt.issuers", "acme, acme"},
           {"jwt.issuers", "acme, audience"},
           {"jwt.globex.issuer", "https://idp.acme.test"}}) {
    const bool was_set = config_->hasProperty(key);
    std::string saved = config_->getString(key, "");
    config_->setString(key, value);
    std::string message = Refusal();
    EXPECT_FALSE(message.empty()) << key << " = " << value;
    if (was_set) {
      config_->setString(key, saved);
    } else {
      config_->remove(key);
    }
  }
  EXPECT_TRUE(ReadKmsdSettings(*config_).ok());
}

// Issue 11: a subject names one organization, so the KMS keys users by organization safely.
TEST_F(KmsdSettingsTest, SubjectDomainsAreRequiredOfSeveralOrganizationsAndNeverShared) {
  config_->remove("jwt.globex.subject_domains");
  std::string missing = Refusal();
  EXPECT_NE(missing.find("subject_domains"), std::string::npos) << missing;
  EXPECT_NE(missing.find("https://idp.globex.test"), std::string::npos) << missing;

  config_->setString("jwt.globex.subject_domains", "globex.test, acme.EXAMPLE");
  std::string shared = Refusal();
  EXPECT_NE(shared.find("acme.example"), std::string::npos) << shared;
  EXPECT_NE(shared.find("two organizations"), std::string::npos) << shared;

  for (const char* bad : {" , ", "globex.test, globex.test", "globex_test", "globex.test.",
                          "*.globex.test", "user@globex.test"}) {
    config_->setString("jwt.globex.subject_domains", bad);
    EXPECT_NE(Refusal().find("subject_domains"), std::string::npos) << bad;
  }
  config_->setString("jwt.globex.subject_domains", "globex.test");
  EXPECT_TRUE(ReadKmsdSettings(*config_).ok());

  // Another issuer of the same organization may list the same domain.
  config_->setString("jwt.globex.org", "acme");
  config_->setString("jwt.globex.subject_domains", "acme.test");
  EXPECT_TRUE(ReadKmsdSettings(*config_).ok());
  // One organization: the domains are optional.
  config_->remove("jwt.acme.subject_domains");
  config_->remove("jwt.globex.subject_domains");
  EXPECT_TRUE(ReadKmsdSettings(*config_).ok());
}

TEST_F(KmsdSettingsTest, LoadsAnIniFileAndBuildsTheVerifier) {
  testing::TestDir dir;
  auto key = jose::EcKeyPair::Generate("idp-1");
  ASSERT_TRUE(key.ok());
  const std::string jwks = (dir / "acme.jwks").string();
  std::ofstream(jwks) << "{\"keys\":[" << *key->PublicJwkJson() << "]}";
  const std::string ini = (dir / "kms.ini").string();
  std::ofstream(ini) << "[kms]\nhost = kms.acme.test\ndatabase = kms.db\nlisten = 127.0.0.1:0\n"
                        "tls_cert = c.pem\ntls_key = k.pem\nidentity_chain = id.pem\n"
                        "[jwt]\nissuers = acme\nskew_s = 5\n"
                        "[jwt.acme]\nissuer = https://idp.acme.test\norg = acme\njwks = "
                     << jwks << "\n[hsm]\ntokens = primary\n";
  auto settings = LoadKmsdSettings(ini);
  ASSERT_TRUE(settings.ok()) << settings.error().ToString();
  EXPECT_EQ(settings->listener.port, 0);
  auto verifier = MakeJwtVerifier(*settings);
  ASSERT_TRUE(verifier.ok()) << verifier.error().ToString();

  const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  auto kms_token = MintJwt(*key, {"https://idp.acme.test", "alice", "kms", now, 600});
  auto verified = verifier->Verify(*kms_token);
  ASSERT_TRUE(verified.ok()) << verified.error().ToString();
  EXPECT_EQ(verified->subject(), "alice");
  EXPECT_EQ(verified->org(), "acme");
  auto core_token = MintJwt(*key, {"https://idp.acme.test", "alice", "core", now, 600});
  EXPECT_FALSE(verifier->Verify(*core_token).ok());

  // With subject_domains, the issuer signs for those domains only.
  std::ofstream(ini, std::ios::app) << "[jwt.acme]\nsubject_domains = acme.test\n";
  settings = LoadKmsdSettings(ini);
  ASSERT_TRUE(settings.ok()) << settings.error().ToString();
  verifier = MakeJwtVerifier(*settings);
  ASSERT_TRUE(verifier.ok()) << verifier.error().ToString();
  EXPECT_TRUE(
      verifier
          ->Verify(*MintJwt(*key, {"https://idp.acme.test", "alice@acme.test", "kms", now, 600}))
          .ok());
  for (const char* subject : {"alice", "alice@globex.test"}) {
    auto refused =
        verifier->Verify(*MintJwt(*key, {"https://idp.acme.test", subject, "kms", now, 600}));
    EXPECT_FALSE(refused.ok()) << subject;
  }
}

TEST_F(KmsdSettingsTest, VerifierRefusesAMissingOrMalformedJwks) {
  testing::TestDir dir;
  auto settings = ReadKmsdSettings(*config_);
  ASSERT_TRUE(settings.ok());
  settings->issuers.resize(1);
  settings->issuers[0].jwks_path = (dir / "missing.jwks").string();
  auto missing = MakeJwtVerifier(*settings);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("missing.jwks"), std::string::npos);

  settings->issuers[0].jwks_path = (dir / "bad.jwks").string();
  std::ofstream(settings->issuers[0].jwks_path) << "{\"keys\": 42}";
  auto malformed = MakeJwtVerifier(*settings);
  ASSERT_FALSE(malformed.ok());
  EXPECT_NE(malformed.error().message().find("issuer acme"), std::string::npos);
}

TEST_F(KmsdSettingsTest, MissingFileIsAClearError) {
  auto settings = LoadKmsdSettings("/nonexistent/kms.ini");
  ASSERT_FALSE(settings.ok());
  EXPECT_NE(settings.error().message().find("/nonexistent/kms.ini"), std::string::npos);
}

}  // namespace
}  // namespace strongroom::kms
