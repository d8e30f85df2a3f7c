#include "strongroom/indexer/indexerd_settings.h"

#include <Poco/AutoPtr.h>
#include <Poco/Util/MapConfiguration.h>
#include <gtest/gtest.h>

namespace strongroom::indexer {
namespace {

using Config = Poco::AutoPtr<Poco::Util::MapConfiguration>;

Config Valid() {
  Config config(new Poco::Util::MapConfiguration);
  config->setString("indexer.org", "acme");
  config->setString("indexer.subject", "indexer@acme.test");
  config->setString("indexer.database", "/var/lib/strongroom/indexer.db");
  config->setString("indexer.tls_cert", "/etc/strongroom/tls/indexer.crt");
  config->setString("indexer.tls_key", "/etc/strongroom/tls/indexer.key");
  config->setString("indexer.token_command", "/usr/local/bin/token {audience}");
  config->setString("kms.url", "https://kms.acme.test:8443");
  config->setString("kms.cluster", "kms://kms.acme.test");
  config->setString("kms.ca_file", "/etc/strongroom/tls/ca.crt");
  config->setString("core.url", "https://core.acme.test:9443");
  config->setString("core.ca_file", "/etc/strongroom/tls/ca.crt");
  config->setString("jwt.issuers", "acme");
  config->setString("jwt.acme.issuer", "https://idp.acme.test");
  config->setString("jwt.acme.org", "acme");
  config->setString("jwt.acme.jwks", "/etc/strongroom/acme.jwks");
  config->setString("jwt.acme.subject_domains", "acme.test");
  return config;
}

std::string Refusal(const Poco::Util::AbstractConfiguration& config) {
  auto settings = ReadIndexerdSettings(config);
  EXPECT_FALSE(settings.ok());
  if (settings.ok()) return "";
  EXPECT_EQ(settings.error().code(), ErrorCode::kInvalidArgument);
  return settings.error().message();
}

TEST(IndexerdSettingsTest, ReadsSettingsWithDefaultsAndTheIndexerAudience) {
  auto settings = ReadIndexerdSettings(*Valid());
  ASSERT_TRUE(settings.ok()) << settings.error().ToString();
  EXPECT_EQ(settings->org, "acme");
  EXPECT_EQ(settings->subject, "indexer@acme.test");
  EXPECT_EQ(settings->listener.host, "127.0.0.1");
  EXPECT_EQ(settings->listener.port, 9444);
  EXPECT_EQ(settings->language, "english");
  EXPECT_EQ(settings->client_id, "indexerd");
  EXPECT_EQ(settings->listener.max_connections, 64u);
  EXPECT_EQ(settings->kms_cluster, "kms://kms.acme.test");
  EXPECT_EQ(settings->core_url, "https://core.acme.test:9443");
  EXPECT_EQ(settings->jwt.audience, "indexer");  // never kms or core tokens
  EXPECT_EQ(settings->search_rate_per_s, 10u);
  EXPECT_EQ(settings->search_rate_burst, 20u);
  EXPECT_EQ(settings->search_key_check, std::chrono::seconds(300));
}

TEST(IndexerdSettingsTest, TakesTheSearchRateAndTheSearchKeyCheckPeriod) {
  Config config = Valid();
  config->setString("indexer.search_rate_per_s", "3");
  config->setString("indexer.search_rate_burst", "7");
  config->setString("indexer.search_key_check_s", "1");
  auto settings = ReadIndexerdSettings(*config);
  ASSERT_TRUE(settings.ok()) << settings.error().ToString();
  EXPECT_EQ(settings->search_rate_per_s, 3u);
  EXPECT_EQ(settings->search_rate_burst, 7u);
  EXPECT_EQ(settings->search_key_check, std::chrono::seconds(1));
}

TEST(IndexerdSettingsTest, TakesAnotherLanguageAndListener) {
  Config config = Valid();
  config->setString("indexer.language", "german");
  config->setString("indexer.listen", "127.0.0.1:0");
  auto settings = ReadIndexerdSettings(*config);
  ASSERT_TRUE(settings.ok()) << settings.error().ToString();
  EXPECT_EQ(settings->language, "german");
  EXPECT_EQ(settings->listener.port, 0);
}

TEST(IndexerdSettingsTest, RefusesWhatIsMissingMisspeltOrWrong) {
  for (const char* key : {"indexer.org", "indexer.subject", "indexer.database", "indexer.tls_cert",
                          "indexer.tls_key", "indexer.token_command", "kms.url", "kms.cluster",
                          "kms.ca_file", "core.url", "core.ca_file"}) {
    Config config = Valid();
    config->remove(key);
    const std::string name = std::string(key).substr(std::string(key).find('.') + 1);
    EXPECT_NE(Refusal(*config).find(name), std::string::npos) << key;
  }
  struct Case {
    const char* key;
    const char* value;
    const char* says;
  };
  for (const Case& c : std::initializer_list<Case>{
           {"indexer.langauge", "english", "unknown setting indexer.langauge"},
           {"indexer.language", "klingon", "indexer.language"},
           {"indexer.token_command", "/usr/local/bin/token", "{audience}"},
           {"indexer.subject", "indexer@globex.test", "not a user of organization"},
           {"indexer.max_connections", "2", "indexer.max_connections"},
           {"indexer.search_rate_per_s", "0", "indexer.search_rate_per_s"},
           {"indexer.search_rate_per_s", "10001", "indexer.search_rate_per_s"},
           {"indexer.search_rate_burst", "0", "indexer.search_rate_burst"},
           {"indexer.search_key_check_s", "0", "indexer.search_key_check_s"},
           {"indexer.search_key_check_s", "86401", "indexer.search_key_check_s"},
           {"kms.url", "http://kms.acme.test", "kms.url"},
           {"kms.url", "https://kms.acme.test/path", "kms.url"},
           {"kms.cluster", "https://kms.acme.test", "kms.cluster"},
           {"core.url", "core.acme.test:9443", "core.url"},
           {"core.token_file", "/x", "unknown setting core.token_file"},
           {"jwt.audience_typo", "x", "jwt"}}) {
    Config config = Valid();
    config->setString(c.key, c.value);
    EXPECT_NE(Refusal(*config).find(c.says), std::string::npos) << c.key << " = " << c.value;
  }
}

}  // namespace
}  // namespace strongroom::indexer
