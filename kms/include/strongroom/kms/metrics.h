// The KMS's metrics, rendered in the Prometheus text exposition format 0.0.4 for the operations
// listener (GET /ops/metrics).
//
// Recording is lock-free: every counter is a relaxed atomic in fixed arrays, indexed by a bounded
// label set, so the request path never takes a lock or allocates. Operations outside
// kMetricOperations count as "other"; statuses outside 100-599 as code "other". Latencies go to a
// histogram per operation with the fixed buckets kLatencyBuckets (seconds).
//
// The key cache's and the HSM tokens' figures are read when rendering, from the objects given; the
// keys missing a wrap are the reconciliation's last count (never a query per scrape).
//
// Thread-safe.
#ifndef STRONGROOM_KMS_METRICS_H_
#define STRONGROOM_KMS_METRICS_H_

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "strongroom/hsm/vault.h"
#include "strongroom/kms/key_cache.h"
#include "strongroom/kms/reconcile_job.h"

namespace strongroom::kms {

// The operation label values; RecordRequest folds anything else into "other" (the last).
// clang-format off
inline constexpr std::array<std::string_view, 20> kMetricOperations = {
    "create_ecdhe", "delete_ecdhe", "ping",
    "create_keys", "retrieve_key", "retrieve_keys", "update_key",
    "create_resource", "retrieve_resource",
    "create_authorizations", "retrieve_authorizations", "delete_authorization",
    "retrieve_search_key", "retrieve_user_authorizations",
    "info", "unsealed", "relay", "ops",
    "replayed",
    "other"};
// clang-format on

// Upper bounds of the latency histogram's buckets, in seconds; +Inf follows.
inline constexpr std::array<double, 14> kLatencyBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

// What RenderPrometheus reads besides the counters; each may be null.
struct MetricSources {
  const KeyCache* cache = nullptr;
  const hsm::Vault* vault = nullptr;
  // The reconciliation's last count of keys missing a wrap (ReconcileJobs::last_count).
  std::optional<MissingWraps> missing_wraps = std::nullopt;
};

class Metrics {
 public:
  Metrics() = default;
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // One answered request: its operation, HTTP-style status and how long it took.
  void RecordRequest(std::string_view operation, int status, std::chrono::nanoseconds latency);
  // One request refused because the server was at its limit (queue full, too many connections).
  void RecordOverload();

  // The index of `operation` in kMetricOperations ("other" when unknown).
  static std::size_t OperationIndex(std::string_view operation);

  std::string RenderPrometheus(const MetricSources& sources = {}) const;

 private:
  static constexpr std::size_t kOperations = kMetricOperations.size();
  static constexpr std::size_t kStatuses = 501;  // 100-599, and [500] for anything else
  static constexpr std::size_t kBuckets = kLatencyBuckets.size() + 1;

  struct Histogram {
    std::array<std::atomic<std::uint64_t>, kBuckets> buckets{};  // per bucket, not cumulative
    std::atomic<std::uint64_t> sum_nanos{0};
  };

  std::array<std::array<std::atomic<std::uint64_t>, kStatuses>, kOperations> requests_{};
  std::array<Histogram, kOperations> latency_{};
  std::atomic<std::uint64_t> overloads_{0};
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_METRICS_H_
