#include "strongroom/kms/metrics.h"

#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "../support/softhsm_sandbox.h"
#include "prometheus_text.h"
#include "strongroom/hsm/key_vault.h"

namespace strongroom::kms {
namespace {

using namespace std::chrono_literals;
using testing::kSoftHsmModule;
using testing::ParsePrometheus;
using testing::PrometheusSample;
using testing::SoftHsmSandbox;

double Value(const std::vector<PrometheusSample>& samples, const std::string& name,
             const std::map<std::string, std::string>& labels) {
  for (const PrometheusSample& s : samples) {
    if (s.name == name && s.labels == labels) return s.value;
  }
  ADD_FAILURE() << "no sample " << name;
  return -1;
}

TEST(MetricsTest, RequestsAreCountedByOperationAndStatus) {
  Metrics metrics;
  metrics.RecordRequest("retrieve_key", 200, 2ms);
  metrics.RecordRequest("retrieve_key", 200, 3ms);
  metrics.RecordRequest("retrieve_key", 403, 1ms);
  metrics.RecordRequest("create_keys", 201, 20ms);
  auto samples = ParsePrometheus(metrics.RenderPrometheus());
  ASSERT_TRUE(samples.ok()) << samples.error().ToString();
  EXPECT_EQ(Value(*samples, "strongroom_kms_requests_total",
                  {{"operation", "retrieve_key"}, {"code", "200"}}),
            2);
  EXPECT_EQ(Value(*samples, "strongroom_kms_requests_total",
                  {{"operation", "retrieve_key"}, {"code", "403"}}),
            1);
  EXPECT_EQ(Value(*samples, "strongroom_kms_requests_total",
                  {{"operation", "create_keys"}, {"code", "201"}}),
            1);
}

TEST(MetricsTest, UnknownOperationsAndStatusesFoldIntoOther) {
  Metrics metrics;
  metrics.RecordRequest("made-up\"operation", 200, 1ms);
  metrics.RecordRequest("another", 200, 1ms);
  metrics.RecordRequest("ping", 0, 1ms);
  metrics.RecordRequest("ping", 1000, 1ms);
  auto samples = ParsePrometheus(metrics.RenderPrometheus());
  ASSERT_TRUE(samples.ok()) << samples.error().ToString();
  EXPECT_EQ(
      Value(*samples, "strongroom_kms_requests_total", {{"operation", "other"}, {"code", "200"}}),
      2);
  EXPECT_EQ(
      Value(*samples, "strongroom_kms_requests_total", {{"operation", "ping"}, {"code", "other"}}),
      2);
  std::set<std::string> operations;
  for (const PrometheusSample& s : *samples) {
    if (s.labels.count("operation")) operations.insert(s.labels.at("operation"));
  }
  EXPECT_EQ(operations, (std::set<std::string>{"other", "ping"}));
}

TEST(MetricsTest, LatencyHistogramIsCumulativeAndCountsEveryRequest) {
  Metrics metrics;
  metrics.RecordRequest("retrieve_key", 200, 300us);  // <= 0.0005
  metrics.RecordRequest("retrieve_key", 200, 1ms);    // <= 0.001 (bounds are inclusive)
  metrics.RecordRequest("retrieve_key", 200, 40ms);   // <= 0.05
  metrics.RecordRequest("retrieve_key", 200, 60s);    // +Inf only
  auto samples = ParsePrometheus(metrics.RenderPrometheus());
  ASSERT_TRUE(samples.ok()) << samples.error().ToString();
  const std::string bucket = "strongroom_kms_request_duration_seconds_bucket";
  auto le = [&](const std::string& bound) {
    return Value(*samples, bucket, {{"operation", "retrieve_key"}, {"le", bound}});
  };
  EXPECT_EQ(le("0.0005"), 1);
  EXPECT_EQ(le("0.001"), 2);
  EXPECT_EQ(le("0.025"), 2);
  EXPECT_EQ(le("0.05"), 3);
  EXPECT_EQ(le("10"), 3);
  EXPECT_EQ(le("+Inf"), 4);
  EXPECT_EQ(Value(*samples, "strongroom_kms_request_duration_seconds_count",
                  {{"operation", "retrieve_key"}}),
            4);
  EXPECT_NEAR(Value(*samples, "strongroom_kms_request_duration_seconds_sum",
                    {{"operation", "retrieve_key"}}),
              60.0413, 1e-9);
}

TEST(MetricsTest, ConcurrentRecordingLosesNothing) {
  Metrics metrics;
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) metrics.RecordRequest("retrieve_key", 200, 1ms);
      metrics.RecordOverload();
    });
  }
  for (auto& thread : threads) thread.join();
  auto samples = ParsePrometheus(metrics.RenderPrometheus());
  ASSERT_TRUE(samples.ok()) << samples.error().ToString();
  EXPECT_EQ(Value(*samples, "strongroom_kms_requests_total",
                  {{"operation", "retrieve_key"}, {"code", "200"}}),
            32000);
  EXPECT_EQ(Value(*samples, "strongroom_kms_overload_total", {}), 16);
}

TEST(MetricsTest, CacheFiguresComeFromTheCache) {
  Metrics metrics;
  KeyCache cache(8, 60s);
  const std::vector<std::uint8_t> key(32, 7);
  cache.Put("kms://k/keys/1", key);
  (void)cache.Get("kms://k/keys/1");
  (void)cache.Get("kms://k/keys/2");
  (void)cache.Get("kms://k/keys/3");
  auto samples = ParsePrometheus(metrics.RenderPrometheus({&cache, nullptr}));
  ASSERT_TRUE(samples.ok()) << samples.error().ToString();
  EXPECT_EQ(Value(*samples, "strongroom_kms_key_cache_hits_total", {}), 1);
  EXPECT_EQ(Value(*samples, "strongroom_kms_key_cache_misses_total", {}), 2);
  EXPECT_EQ(Value(*samples, "strongroom_kms_key_cache_entries", {}), 1);
  EXPECT_EQ(Value(*samples, "strongroom_kms_key_cache_capacity", {}), 8);
}

TEST(MetricsTest, TokenHealthAndPoolWaitsComeFromTheVault) {
  std::vector<hsm::TokenConfig> tokens;
  for (const char* name : {"primary", "standby"}) {
    hsm::TokenConfig token;
    token.name = name;
    token.uri = SoftHsmSandbox::Get().Uri(kSoftHsmModule,
                                          SoftHsmSandbox::Get().CreateToken(kSoftHsmModule));
    token.pool_size = 1;
    tokens.push_back(token);
  }
  auto vault = hsm::KeyVault::Open({tokens});
  ASSERT_TRUE(vault.ok()) << vault.error().ToString();
  ASSERT_TRUE((*vault)->InitRoot("acme").ok());
  // Four threads on a one-session pool, started together, wrap until one of them has waited (on a
  // loaded machine the first may finish ten wraps before the others run): a wait must happen and
  // be counted, within a bound.
  std::latch start(4);
  std::atomic<bool> waited{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      const std::vector<std::uint8_t> key(32, 1);
      start.arrive_and_wait();
      for (int i = 0; i < 2000 && !waited.load(); ++i) {
        ASSERT_TRUE((*vault)->Wrap({"acme", "kms://k/keys/" + std::to_string(i % 10)}, key).ok());
        if (i >= 9 && (*vault)->tokens()[0]->pool_stats().waited > 0) waited = true;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  const hsm::SessionPoolStats pool = (*vault)->tokens()[0]->pool_stats();
  EXPECT_GT(pool.waited, 0u);

  Metrics metrics;
  auto samples = ParsePrometheus(metrics.RenderPrometheus({nullptr, vault->get()}));
  ASSERT_TRUE(samples.ok()) << samples.error().ToString();
  for (const char* name : {"primary", "standby"}) {
    EXPECT_EQ(Value(*samples, "strongroom_hsm_token_up", {{"token", name}}), 1);
    EXPECT_EQ(Value(*samples, "strongroom_hsm_token_state", {{"token", name}, {"state", "ready"}}),
              1);
    EXPECT_EQ(
        Value(*samples, "strongroom_hsm_token_state", {{"token", name}, {"state", "unavailable"}}),
        0);
    EXPECT_EQ(Value(*samples, "strongroom_hsm_session_pool_capacity", {{"token", name}}), 1);
  }
  EXPECT_GE(Value(*samples, "strongroom_hsm_session_waits_total", {{"token", "primary"}}),
            static_cast<double>(pool.waited));
  EXPECT_GT(Value(*samples, "strongroom_hsm_session_wait_seconds_total", {{"token", "primary"}}),
            0);
  EXPECT_EQ(Value(*samples, "strongroom_hsm_session_timeouts_total", {{"token", "primary"}}), 0);
}

TEST(MetricsTest, LabelValuesAreEscaped) {
  hsm::TokenConfig token;
  token.name = "odd\"name\\";
  token.uri =
      SoftHsmSandbox::Get().Uri(kSoftHsmModule, SoftHsmSandbox::Get().CreateToken(kSoftHsmModule));
  auto vault = hsm::KeyVault::Open({{token}});
  ASSERT_TRUE(vault.ok()) << vault.error().ToString();
  Metrics metrics;
  const std::string text = metrics.RenderPrometheus({nullptr, vault->get()});
  EXPECT_NE(text.find("token=\"odd\\\"name\\\\\""), std::string::npos) << text;
  auto samples = ParsePrometheus(text);
  ASSERT_TRUE(samples.ok()) << samples.error().ToString();
  EXPECT_EQ(Value(*samples, "strongroom_hsm_token_up", {{"token", "odd\"name\\"}}), 1);
}

}  // namespace
}  // namespace strongroom::kms
