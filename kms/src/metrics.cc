#include "strongroom/kms/metrics.h"

#include <algorithm>
#include <charconv>

namespace strongroom::kms {
namespace {

constexpr std::size_t kOtherStatus = 500;  // index of code="other"

// A label value with \, " and newline escaped, as the exposition format requires.
std::string Label(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// The shortest fixed-point text that reads back as the same double ("0.0005", never "5e-04").
std::string Number(double value) {
  char buffer[64];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::fixed);
  return ec == std::errc() ? std::string(buffer, end) : std::string("NaN");
}

class Writer {
 public:
  void Family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  // `labels` is the inside of {...}, already escaped, or empty.
  void Sample(std::string_view name, const std::string& labels, const std::string& value) {
    out_ += name;
    if (!labels.empty()) {
      out_ += '{';
      out_ += labels;
      out_ += '}';
    }
    out_ += ' ';
    out_ += value;
    out_ += '\n';
  }
  void Sample(std::string_view name, const std::string& labels, std::uint64_t value) {
    Sample(name, labels, std::to_string(value));
  }
  // A family of one sample, without labels: the name is written once.
  void Single(std::string_view name, std::string_view type, std::string_view help,
              std::uint64_t value) {
    Family(name, type, help);
    Sample(name, "", value);
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

void RenderCache(const KeyCache& cache, Writer& w) {
  const KeyCache::Stats s = cache.stats();
  w.Single("strongroom_kms_key_cache_hits_total", "counter",
           "Key retrievals answered from the unwrapped-key cache.", s.hits);
  w.Single("strongroom_kms_key_cache_misses_total", "counter",
           "Key retrievals the cache could not answer (absent or expired).", s.misses);
  w.Single("strongroom_kms_key_cache_evictions_total", "counter",
           "Cached keys dropped to make room.", s.evictions);
  w.Single("strongroom_kms_key_cache_expirations_total", "counter",
           "Cached keys dropped because they were older than the maximum age.", s.expirations);
  w.Single("strongroom_kms_key_cache_entries", "gauge", "Keys in the cache now.", s.entries);
  w.Single("strongroom_kms_key_cache_capacity", "gauge", "Most keys the cache holds (0: off).",
           s.capacity);
}

void RenderTokens(const hsm::Vault& vault, Writer& w) {
  const std::vector<hsm::TokenHealth> health = vault.Health();
  auto token_label = [](const hsm::TokenHealth& h) { return "token=\"" + Label(h.name) + "\""; };
  auto gauge = [&](std::string_view name, std::string_view type, std::string_view help,
                   auto value_of) {
    w.Family(name, type, help);
    for (const hsm::TokenHealth& h : health) w.Sample(name, token_label(h), value_of(h));
  };
  using H = const hsm::TokenHealth&;
  gauge("strongroom_hsm_token_up", "gauge", "1 if the token is ready, 0 otherwise.",
        [](H h) { return std::uint64_t{h.state == hsm::TokenState::kReady}; });
  w.Family("strongroom_hsm_token_state", "gauge", "The token's state (1 for the current one).");
  for (const hsm::TokenHealth& h : health) {
    for (hsm::TokenState state :
         {hsm::TokenState::kReady, hsm::TokenState::kUnavailable, hsm::TokenState::kLoginRefused}) {
      w.Sample("strongroom_hsm_token_state",
               token_label(h) + ",state=\"" + Label(hsm::TokenStateName(state)) + "\"",
               std::uint64_t{h.state == state});
    }
  }
  gauge("strongroom_hsm_session_pool_capacity", "gauge", "PKCS#11 sessions the pool may open.",
        [](H h) { return std::uint64_t{h.pool.capacity}; });
  gauge("strongroom_hsm_session_pool_open", "gauge", "PKCS#11 sessions open (idle and leased).",
        [](H h) { return std::uint64_t{h.pool.open}; });
  gauge("strongroom_hsm_session_pool_idle", "gauge", "PKCS#11 sessions open and not leased.",
        [](H h) { return std::uint64_t{h.pool.idle}; });
  gauge("strongroom_hsm_session_acquisitions_total", "counter", "Sessions leased from the pool.",
        [](H h) { return h.pool.acquired; });
  gauge("strongroom_hsm_session_waits_total", "counter",
        "Leases that had to wait for a session (including those that timed out).",
        [](H h) { return h.pool.waited; });
  w.Family("strongroom_hsm_session_wait_seconds_total", "counter",
           "Time callers spent waiting for a session.");
  for (const hsm::TokenHealth& h : health) {
    w.Sample("strongroom_hsm_session_wait_seconds_total", token_label(h),
             Number(static_cast<double>(h.pool.wait_micros) / 1e6));
  }
  gauge("strongroom_hsm_session_timeouts_total", "counter",
        "Leases that gave up at their deadline (the caller got UNAVAILABLE).",
        [](H h) { return h.pool.timed_out; });
  gauge("strongroom_hsm_sessions_replaced_total", "counter",
        "Sessions dropped as dead or from an older module generation.",
        [](H h) { return h.pool.replaced; });
  gauge("strongroom_hsm_module_resets_total", "counter",
        "PKCS#11 module resets (C_Finalize + C_Initialize) after token faults.",
        [](H h) { return h.module_resets; });
  gauge("strongroom_hsm_login_attempts_total", "counter", "C_Login calls on the token.",
        [](H h) { return h.login_attempts; });
  gauge("strongroom_hsm_token_repairs_total", "counter",
        "Repairs attempted after the token was marked unavailable.", [](H h) { return h.repairs; });
}

}  // namespace

std::size_t Metrics::OperationIndex(std::string_view operation) {
  for (std::size_t i = 0; i + 1 < kMetricOperations.size(); ++i) {
    if (kMetricOperations[i] == operation) return i;
  }
  return kMetricOperations.size() - 1;
}

void Metrics::RecordRequest(std::string_view operation, int status,
                            std::chrono::nanoseconds latency) {
  const std::size_t op = OperationIndex(operation);
  const std::size_t code =
      status >= 100 && status <= 599 ? static_cast<std::size_t>(status - 100) : kOtherStatus;
  requests_[op][code].fetch_add(1, std::memory_order_relaxed);

  const double seconds = std::chrono::duration<double>(latency).count();
  std::size_t bucket = 0;
  while (bucket < kLatencyBuckets.size() && seconds > kLatencyBuckets[bucket]) ++bucket;
  Histogram& h = latency_[op];
  h.buckets[bucket].fetch_add(1, std::memory_order_relaxed);
  h.sum_nanos.fetch_add(static_cast<std::uint64_t>(std::max<std::int64_t>(latency.count(), 0)),
                        std::memory_order_relaxed);
}

void Metrics::RecordOverload() { overloads_.fetch_add(1, std::memory_order_relaxed); }

std::string Metrics::RenderPrometheus(const MetricSources& sources) const {
  Writer w;
  w.Family("strongroom_kms_requests_total", "counter",
           "KMS requests answered, by operation and HTTP-style status.");
  for (std::size_t op = 0; op < kOperations; ++op) {
    for (std::size_t code = 0; code < kStatuses; ++code) {
      const std::uint64_t n = requests_[op][code].load(std::memory_order_relaxed);
      if (n == 0) continue;
      const std::string code_text = code == kOtherStatus ? "other" : std::to_string(code + 100);
      w.Sample(
          "strongroom_kms_requests_total",
          "operation=\"" + std::string(kMetricOperations[op]) + "\",code=\"" + code_text + "\"", n);
    }
  }

  constexpr std::string_view kLatency = "strongroom_kms_request_duration_seconds";
  w.Family(kLatency, "histogram", "Time to answer a KMS request, by operation.");
  for (std::size_t op = 0; op < kOperations; ++op) {
    const Histogram& h = latency_[op];
    std::array<std::uint64_t, kBuckets> counts{};
    std::uint64_t total = 0;
    for (std::size_t b = 0; b < kBuckets; ++b) {
      counts[b] = h.buckets[b].load(std::memory_order_relaxed);
      total += counts[b];
    }
    if (total == 0) continue;
    const std::string op_label = "operation=\"" + std::string(kMetricOperations[op]) + "\"";
    // Cumulative counts from one snapshot, so +Inf always equals _count.
    std::uint64_t cumulative = 0;
    for (std::size_t b = 0; b < kBuckets; ++b) {
      cumulative += counts[b];
      const std::string le = b < kLatencyBuckets.size() ? Number(kLatencyBuckets[b]) : "+Inf";
      w.Sample(std::string(kLatency) + "_bucket", op_label + ",le=\"" + le + "\"", cumulative);
    }
    w.Sample(std::string(kLatency) + "_sum", op_label,
             Number(static_cast<double>(h.sum_nanos.load(std::memory_order_relaxed)) / 1e9));
    w.Sample(std::string(kLatency) + "_count", op_label, total);
  }

  w.Single("strongroom_kms_overload_total", "counter",
           "Requests refused because the server was at its limit.",
           overloads_.load(std::memory_order_relaxed));

  if (sources.cache != nullptr) RenderCache(*sources.cache, w);
  if (sources.vault != nullptr) RenderTokens(*sources.vault, w);
  if (sources.missing_wraps) {
    constexpr std::string_view kMissing = "strongroom_keys_missing_wraps";
    w.Family(kMissing, "gauge",
             "Keys and live channel keys that lack a wrap under the token (the reconciliation "
             "job adds them).");
    for (const auto& [token, n] : sources.missing_wraps->by_token) {
      w.Sample(kMissing, "token=\"" + Label(token) + "\"",
               std::to_string(std::max<std::int64_t>(n, 0)));
    }
  }
  return w.Take();
}

}  // namespace strongroom::kms
