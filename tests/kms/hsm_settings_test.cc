#include "strongroom/kms/hsm_settings.h"

#include <Poco/AutoPtr.h>
#include <Poco/Util/MapConfiguration.h>
#include <gtest/gtest.h>

namespace strongroom::kms {
namespace {

class HsmSettingsTest : public ::testing::Test {
 protected:
  HsmSettingsTest() : config_(new Poco::Util::MapConfiguration) {
    config_->setString("hsm.tokens", "primary, standby");
    config_->setString("hsm.node_id", "kms-1");
    config_->setString("hsm.primary.uri", "pkcs11:token=a?module-path=/m.so&pin-source=env:P");
    config_->setString("hsm.standby.uri", "pkcs11:token=b?module-path=/m.so&pin-source=env:Q");
  }
  Poco::AutoPtr<Poco::Util::MapConfiguration> config_;
};

TEST_F(HsmSettingsTest, ReadsTokensInOrderWithDefaults) {
  config_->setString("hsm.standby.pool_size", "16");
  config_->setString("hsm.standby.session_copies", "no");
  config_->setString("hsm.standby.orgs", "acme , globex");
  auto settings = ReadHsmSettings(*config_);
  ASSERT_TRUE(settings.ok()) << settings.error().ToString();
  ASSERT_EQ(settings->tokens.size(), 2u);
  const hsm::TokenConfig& primary = settings->tokens[0];
  const hsm::TokenConfig& standby = settings->tokens[1];
  EXPECT_EQ(primary.name, "primary");
  EXPECT_EQ(primary.node_id, "kms-1");
  EXPECT_EQ(primary.pool_size, hsm::TokenConfig{}.pool_size);
  EXPECT_TRUE(primary.session_copies);
  EXPECT_TRUE(primary.orgs.empty());
  EXPECT_EQ(standby.pool_size, 16u);
  EXPECT_FALSE(standby.session_copies);
  EXPECT_EQ(standby.orgs, (std::vector<std::string>{"acme", "globex"}));
  EXPECT_EQ(settings->probe_interval, std::chrono::milliseconds(1000));  // the probe is on
}

TEST_F(HsmSettingsTest, TheProbeIntervalIsSetOrTurnedOff) {
  config_->setString("hsm.probe_interval_ms", "250");
  EXPECT_EQ(ReadHsmSettings(*config_)->probe_interval, std::chrono::milliseconds(250));
  config_->setString("hsm.probe_interval_ms", "0");
  EXPECT_EQ(ReadHsmSettings(*config_)->probe_interval, std::chrono::milliseconds(0));
  for (const char* bad : {"10", "60001", "often"}) {
    config_->setString("hsm.probe_interval_ms", bad);
    auto settings = ReadHsmSettings(*config_);
    ASSERT_FALSE(settings.ok()) << bad;
    EXPECT_NE(settings.error().message().find("hsm.probe_interval_ms"), std::string::npos);
  }
}

TEST_F(HsmSettingsTest, RefusesUnknownSettingsByName) {
  config_->setString("hsm.primary.pool_sise", "4");
  auto settings = ReadHsmSettings(*config_);
  ASSERT_FALSE(settings.ok());
  EXPECT_NE(settings.error().message().find("hsm.primary.pool_sise"), std::string::npos);
}

TEST_F(HsmSettingsTest, RefusesOutOfRangeAndMalformedValues) {
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, std::string>>{{"hsm.primary.pool_size", "0"},
                                                        {"hsm.primary.pool_size", "many"},
                                                        {"hsm.primary.pool_size", "-2"},
                                                        {"hsm.primary.acquire_timeout_ms", "0"},
                                                        {"hsm.primary.wrap_limit", "4294967297"},
                                                        {"hsm.primary.session_copies", "maybe"}}) {
    Poco::AutoPtr<Poco::Util::MapConfiguration> config(new Poco::Util::MapConfiguration);
    config->setString("hsm.tokens", "primary");
    config->setString("hsm.primary.uri", config_->getString("hsm.primary.uri"));
    config->setString(key, value);
    auto settings = ReadHsmSettings(*config);
    ASSERT_FALSE(settings.ok()) << key << "=" << value;
    EXPECT_EQ(settings.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(settings.error().message().find(key), std::string::npos)
        << settings.error().message();
  }
}

TEST_F(HsmSettingsTest, RefusesMissingTokensAndUris) {
  Poco::AutoPtr<Poco::Util::MapConfiguration> empty(new Poco::Util::MapConfiguration);
  EXPECT_EQ(ReadHsmSettings(*empty).error().code(), ErrorCode::kInvalidArgument);
  config_->setString("hsm.tokens", "primary, third");
  auto orphan = ReadHsmSettings(*config_);  // [hsm.standby] is no longer listed
  ASSERT_FALSE(orphan.ok());
  EXPECT_NE(orphan.error().message().find("unknown setting hsm.standby"), std::string::npos);
  config_->remove("hsm.standby");
  auto settings = ReadHsmSettings(*config_);
  ASSERT_FALSE(settings.ok());
  EXPECT_NE(settings.error().message().find("token third has no uri"), std::string::npos);
}

}  // namespace
}  // namespace strongroom::kms
