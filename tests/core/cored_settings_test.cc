#include "strongroom/core/cored_settings.h"

#include <Poco/AutoPtr.h>
#include <Poco/Util/MapConfiguration.h>
#include <gtest/gtest.h>

namespace strongroom::core {
namespace {

using Config = Poco::AutoPtr<Poco::Util::MapConfiguration>;

// The smallest valid configuration.
Config Valid() {
  Config config(new Poco::Util::MapConfiguration);
  config->setString("core.database", "/var/lib/strongroom/core.db");
  config->setString("core.files_dir", "/var/lib/strongroom/files");
  config->setString("core.tls_cert", "/etc/strongroom/tls/core.crt");
  config->setString("core.tls_key", "/etc/strongroom/tls/core.key");
  config->setString("jwt.issuers", "acme");
  config->setString("jwt.acme.issuer", "https://idp.acme.test");
  config->setString("jwt.acme.org", "acme");
  config->setString("jwt.acme.jwks", "/etc/strongroom/acme.jwks");
  return config;
}

// The error message of a configuration that must be refused.
std::string Refusal(const Poco::Util::AbstractConfiguration& config) {
  auto settings = ReadCoredSettings(config);
  EXPECT_FALSE(settings.ok());
  if (settings.ok()) return "";
  EXPECT_EQ(settings.error().code(), ErrorCode::kInvalidArgument);
  return settings.error().message();
}

class CoredSettingsTest : public ::testing::Test {
 protected:
  std::string Refusal() { return core::Refusal(*config_); }
  Config config_ = Valid();
};

TEST_F(CoredSettingsTest, ReadsSettingsWithDefaultsAndTheCoreAudience) {
  auto settings = ReadCoredSettings(*config_);
  ASSERT_TRUE(settings.ok()) << settings.error().ToString();
  EXPECT_EQ(settings->database.engine, Database::Engine::kSqlite);
  EXPECT_EQ(settings->database.path, "/var/lib/strongroom/core.db");
  EXPECT_EQ(settings->files_dir, "/var/lib/strongroom/files");
  EXPECT_EQ(settings->listener.host, "127.0.0.1");
  EXPECT_EQ(settings->listener.port, 9443);
  EXPECT_EQ(settings->listener.max_connections, 256u);
  EXPECT_EQ(settings->listener.max_open_connections, 4096u);
  EXPECT_EQ(settings->listener.max_connections_per_peer, 256u);
  EXPECT_EQ(settings->max_file_bytes, 100ull << 20);
  EXPECT_EQ(settings->rate_per_s, 200u);
  EXPECT_EQ(settings->rate_burst, 400u);
  EXPECT_TRUE(settings->indexer.empty());
  EXPECT_TRUE(settings->relays.empty());
  EXPECT_EQ(settings->cluster_poll.count(), 0);  // one node: no cross-node delivery
  EXPECT_EQ(settings->jwt.audience, "core");     // never "kms": KMS tokens are refused here
  ASSERT_EQ(settings->jwt.issuers.size(), 1u);
  EXPECT_EQ(settings->jwt.issuers[0].org, "acme");
}

// On PostgreSQL, the engine several nodes share, a node follows the others' commits unless the
// setting says otherwise; a [database] section replaces [core] database.
TEST_F(CoredSettingsTest, APostgresDatabaseTurnsCrossNodeDeliveryOnByDefault) {
  config_->remove("core.database");
  config_->setString("database.engine", "postgresql");
  config_->setString("database.conninfo", "host=db1 dbname=core user=cored");
  auto settings = ReadCoredSettings(*config_);
  ASSERT_TRUE(settings.ok()) << settings.error().ToString();
  EXPECT_EQ(settings->database.engine, Database::Engine::kPostgres);
  EXPECT_EQ(settings->cluster_poll, core::kPostgresClusterPoll);
  config_->setString("core.cluster_poll_ms", "0");
  settings = ReadCoredSettings(*config_);
  ASSERT_TRUE(settings.ok()) << settings.error().ToString();
  EXPECT_EQ(settings->cluster_poll.count(), 0);
}

TEST_F(CoredSettingsTest, ReadsEverySettingAndTheRelayClusters) {
  config_->setString("core.listen", "[::1]:0");
  config_->setString("core.indexer", "indexer@acme.test");
  config_->setString("core.indexer_org", "acme");
  config_->setString("core.max_connections", "1024");
  config_->setString("core.max_open_connections", "100");
  config_->setString("core.max_connections_per_peer", "10");
  config_->setString("core.max_file_mb", "8");
  config_->setString("core.rate_per_s", "50");
  config_->setString("core.cluster_poll_ms", "250");
  config_->setString("core.relays", "one, two");
  config_->setString("relay.one.cluster", "kms://kms.acme.test");
  config_->setString("relay.one.token_file", "/etc/strongroom/one.token");
  config_->setString("relay.two.cluster", "kms://kms.globex.test");
  config_->setString("relay.two.token_file", "/etc/strongroom/two.token");
  auto settings = ReadCoredSettings(*config_);
  ASSERT_TRUE(settings.ok()) << settings.error().ToString();
  EXPECT_EQ(settings->listener.host, "::1");
  EXPECT_EQ(settings->listener.port, 0);
  EXPECT_EQ(settings->indexer, "indexer@acme.test");
  EXPECT_EQ(settings->indexer_org, "acme");
  EXPECT_EQ(settings->listener.max_connections, 1024u);
  EXPECT_EQ(settings->listener.max_open_connections, 100u);
  EXPECT_EQ(settings->listener.max_connections_per_peer, 10u);
  EXPECT_EQ(settings->max_file_bytes, 8ull << 20);
  EXPECT_EQ(settings->rate_per_s, 50u);
  EXPECT_EQ(settings->rate_burst, 100u);  // twice the rate unless set
  EXPECT_EQ(settings->cluster_poll, std::chrono::milliseconds(250));
  ASSERT_EQ(settings->relays.size(), 2u);
  EXPECT_EQ(settings->relays[0].name, "one");
  EXPECT_EQ(settings->relays[0].cluster, "kms://kms.acme.test");
  EXPECT_EQ(settings->relays[1].token_file, "/etc/strongroom/two.token");
}

TEST_F(CoredSettingsTest, RefusesWhatIsMissingMalformedOrUnknown) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"core.listen", "nowhere"},
      {"core.max_connections", "2"},
      {"core.max_open_connections", "0"},
      {"core.max_connections_per_peer", "65537"},
      {"core.max_file_mb", "0"},
      {"core.rate_per_s", "fast"},
      {"core.cluster_poll_ms", "5"},      // polling the database every few ms
      {"core.cluster_poll_ms", "10001"},  // other nodes' posts ten seconds late
      {"core.cluster_poll_ms", "-1"},
      {"core.indexer", "indexer@acme.test"},  // without indexer_org
      {"core.databse", "/tmp/typo.db"},       // a typo is refused, not ignored
      {"core.relays", "one"},                 // no [relay.one]
      {"core.relays", "one, one"},
      {"jwt.audience", ""},
  };
  for (const auto& [key, value] : bad) {
    Config config = Valid();
    config->setString(key, value);
    const std::string message = core::Refusal(*config);
    EXPECT_FALSE(message.empty()) << key << " = " << value;
  }
  for (const char* required :
       {"core.database", "core.files_dir", "core.tls_cert", "core.tls_key"}) {
    Config config = Valid();
    config->remove(required);
    const std::string message = core::Refusal(*config);
    EXPECT_NE(message.find("names no"), std::string::npos) << required << ": " << message;
  }
}

TEST_F(CoredSettingsTest, RelayClustersMustBeKmsUrlsNamedOnce) {
  config_->setString("core.relays", "one");
  config_->setString("relay.one.token_file", "/etc/strongroom/one.token");
  for (const char* cluster :
       {"https://kms.acme.test", "kms://", "kms://kms.acme.test/keys", "kms://kms_acme.test",
        "kms://kms.acme.test?x", "kms://KMS.acme.test"}) {
    config_->setString("relay.one.cluster", cluster);
    EXPECT_NE(Refusal().find("kms://<host>"), std::string::npos) << cluster;
  }
  config_->setString("core.relays", "one, two");
  config_->setString("relay.one.cluster", "kms://kms.acme.test");
  config_->setString("relay.two.cluster", "kms://kms.acme.test");
  config_->setString("relay.two.token_file", "/etc/strongroom/two.token");
  EXPECT_NE(Refusal().find("configured twice"), std::string::npos);
  config_->setString("relay.two.cluster", "kms://kms.globex.test");
  config_->setString("relay.two.colour", "blue");
  EXPECT_NE(Refusal().find("unknown setting relay.two.colour"), std::string::npos);
}

TEST_F(CoredSettingsTest, ReadsComplianceOfficersOfConfiguredOrganizations) {
  auto none = ReadCoredSettings(*config_);
  ASSERT_TRUE(none.ok()) << none.error().ToString();
  EXPECT_TRUE(none->compliance_officers.empty());

  config_->setString("compliance.acme", " officer@acme.test, audit@acme.test ,officer@acme.test");
  auto settings = ReadCoredSettings(*config_);
  ASSERT_TRUE(settings.ok()) << settings.error().ToString();
  ASSERT_EQ(settings->compliance_officers.size(), 1u);
  EXPECT_EQ(settings->compliance_officers.at("acme"),
            (std::vector<std::string>{"officer@acme.test", "audit@acme.test"}));

  for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
           {"compliance.globex", "officer@globex.test"},  // no issuer of org globex
           {"compliance.acme", " , "},                    // nobody
       }) {
    Config config = Valid();
    config->setString(key, value);
    const std::string message = core::Refusal(*config);
    EXPECT_NE(message.find(key), std::string::npos) << key << " = " << value << ": " << message;
  }
}

// Issue 11: a service identity or officer named for an organization must be one of its users.
TEST_F(CoredSettingsTest, TheIndexerAndOfficersMustBeUsersOfTheirOrganization) {
  config_->setString("core.indexer", "indexer@acme.test");
  config_->setString("core.indexer_org", "acme");
  config_->setString("compliance.acme", "officer@acme.test");
  EXPECT_TRUE(ReadCoredSettings(*config_).ok());  // one organization without domains: any subject
  config_->setString("core.indexer_org", "globex");  // no issuer of globex signs for it
  EXPECT_NE(Refusal().find("core.indexer"), std::string::npos);

  config_->setString("jwt.issuers", "acme, globex");
  config_->setString("jwt.acme.subject_domains", "acme.test");
  config_->setString("jwt.globex.issuer", "https://idp.globex.test");
  config_->setString("jwt.globex.org", "globex");
  config_->setString("jwt.globex.jwks", "/etc/strongroom/globex.jwks");
  config_->setString("jwt.globex.subject_domains", "globex.test");
  config_->setString("core.indexer_org", "acme");
  config_->setString("compliance.globex", "officer@globex.test");
  auto settings = ReadCoredSettings(*config_);
  ASSERT_TRUE(settings.ok()) << settings.error().ToString();

  for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
           {"core.indexer", "indexer@globex.test"},
           {"core.indexer", "indexer"},
           {"compliance.acme", "officer@acme.test, officer@globex.test"},
           {"compliance.globex", "officer@acme.test"},
       }) {
    const std::string saved = config_->getString(key);
    config_->setString(key, value);
    const std::string message = Refusal();
    EXPECT_NE(message.find(key), std::string::npos) << key << " = " << value << ": " << message;
    EXPECT_NE(message.find("subject_domains"), std::string::npos) << message;
    config_->setString(key, saved);
  }
}

}  // namespace
}  // namespace strongroom::core
