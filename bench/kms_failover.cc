// kms_failover: what a kmsd node's death costs the clients of a front (issue 15; bar: from the
// kill -9 of a node to the first success through HAProxy <= 3 s). bench/run-kms-failover.sh sets
// up two kmsd nodes on one PostgreSQL database behind deploy/haproxy/strongroom.cfg and runs it.
//
//   kms_failover --url https://FRONT:PORT --ca CA.pem --cluster kms://HOST --token-file JWT
//                --victim-pid PID [--clients 8] [--warmup 3] [--after 1] [--recovery-timeout 30]
//                [--signal KILL|STOP] [--json-out FILE]
//
// Each client is a KmsContext of the client SDK over HTTPS to --url, with the SDK's own retry
// rules and defaults (kms_context.h: a request that got no answer on a reused connection is sent
// again on a fresh one; no answer, 429 or 503 is retried with a jittered backoff, at most 5
// times), so what is measured is the way a real client fails over. Each has its own keep-alive
// connection, so the front's leastconn spreads the clients over the nodes. A client creates a key,
// binds it to a resource of its own, then retrieves it in a closed loop, checking the bytes.
//
// After --warmup seconds the victim (a kmsd node behind the front) is sent the signal (SIGKILL
// by default; STOP freezes it instead, a node that hangs rather than dies). From the moment the
// signal was sent, each client's failover time is until the first success of a retrieval begun
// after it: the retrieval in flight at the kill, however long the SDK retried it, ends before it.
// The run goes on until every client has its figure (at most --recovery-timeout s), then --after
// s more on the surviving node, and stops.
//
// An error is an operation that failed to its caller after the SDK's retries, or a key whose
// bytes differ; there must be none. The JSON on stdout (and in --json-out) has each client's
// failover time, their maximum and median, the errors, and per client the SDK's retries after the
// signal. Exit status: 0; 1 when any operation failed or a client did not recover in time; 64 for
// bad options; 69 when the set-up failed. Keys and tokens are never printed.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Stringifier.h>
#include <signal.h>
#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "load_support.h"
#include "strongroom/client/kms_context.h"
#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"

namespace strongroom::bench {
namespace {

using Clock = std::chrono::steady_clock;
using Poco::JSON::Array;
using Poco::JSON::Object;

constexpr std::size_t kMaxClients = 256;
constexpr std::size_t kMaxErrorSamples = 5;

const char kUsage[] =
    "usage: kms_failover --url https://HOST:PORT --ca CA.pem --cluster kms://HOST\n"
    "                    --token-file JWT --victim-pid PID [--clients N] [--warmup S]\n"
    "                    [--after S] [--recovery-timeout S] [--signal KILL|STOP]\n"
    "                    [--json-out FILE]\n";

struct Options {
  std::string url;
  std::string ca;
  std::string cluster;
  std::string token_file;
  pid_t victim = 0;
  std::size_t clients = 8;
  double warmup_s = 3;
  double after_s = 1;
  double recovery_timeout_s = 30;
  int signal = SIGKILL;
  std::string json_out;
};

Result<Options> ParseOptions(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") return Error(ErrorCode::kInvalidArgument, "");
    if (arg.rfind("--", 0) != 0 || i + 1 >= argc) {
      return Error(ErrorCode::kInvalidArgument, "unexpected argument '" + arg + "'");
    }
    const std::string name = arg.substr(2);
    const std::string value = argv[++i];
    if (name == "url") {
      o.url = value;
    } else if (name == "ca") {
      o.ca = value;
    } else if (name == "cluster") {
      o.cluster = value;
    } else if (name == "token-file") {
      o.token_file = value;
    } else if (name == "victim-pid") {
      SR_ASSIGN_OR_RETURN(std::size_t pid, ParseCount(name, value, 2, 1 << 22));
      o.victim = static_cast<pid_t>(pid);
    } else if (name == "clients") {
      SR_ASSIGN_OR_RETURN(o.clients, ParseCount(name, value, 1, kMaxClients));
    } else if (name == "warmup") {
      SR_ASSIGN_OR_RETURN(o.warmup_s, ParseSeconds(name, value, 3600));
    } else if (name == "after") {
      SR_ASSIGN_OR_RETURN(o.after_s, ParseSeconds(name, value, 3600));
    } else if (name == "recovery-timeout") {
      SR_ASSIGN_OR_RETURN(o.recovery_timeout_s, ParseSeconds(name, value, 3600));
    } else if (name == "signal") {
      if (value != "KILL" && value != "STOP") {
        return Error(ErrorCode::kInvalidArgument, "--signal is KILL or STOP");
      }
      o.signal = value == "KILL" ? SIGKILL : SIGSTOP;
    } else if (name == "json-out") {
      o.json_out = value;
    } else {
      return Error(ErrorCode::kInvalidArgument, "unknown option --" + name);
    }
  }
  if (o.url.empty() || o.ca.empty() || o.cluster.empty() || o.token_file.empty() || o.victim == 0) {
    return Error(ErrorCode::kInvalidArgument,
                 "--url, --ca, --cluster, --token-file and --victim-pid are required");
  }
  if (o.recovery_timeout_s <= 0) {
    return Error(ErrorCode::kInvalidArgument, "--recovery-timeout must be > 0");
  }
  return o;
}

double Milliseconds(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// What one client measured; written by its thread, read once it ended.
struct ClientStats {
  bool ready = false;                 // set up: it takes part in the run
  std::uint64_t before = 0;           // retrievals begun before the signal that succeeded
  std::uint64_t after = 0;            // retrievals begun after the signal that succeeded
  std::uint64_t errors = 0;           // operations failed to the caller (set-up included)
  std::optional<double> failover_ms;  // signal -> first success of a retrieval begun after it
  double spanning_ms = 0;             // the retrieval in flight at the signal, begin to end
  int retries_after = 0;              // the SDK's retries from the signal on (KmsContext::Stats)
  int channels_after = 0;             // channels the SDK opened from the signal on
  std::vector<std::string> error_samples;

  void Note(const std::string& error) {
    ++errors;
    if (error_samples.size() < kMaxErrorSamples) error_samples.push_back(error);
  }
};

class FailoverRun {
 public:
  FailoverRun(Options options, std::string token)
      : options_(std::move(options)), token_(std::move(token)), stats_(options_.clients) {}
  ~FailoverRun() { ZeroizeString(token_); }
  FailoverRun(const FailoverRun&) = delete;
  FailoverRun& operator=(const FailoverRun&) = delete;

  // The whole run; the exit status.
  int Run() {
    std::vector<std::thread> clients;
    for (std::size_t i = 0; i < options_.clients; ++i) {
      clients.emplace_back([this, i] { Client(i); });
    }
    bool all_ready = false;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [&] { return set_up_ == options_.clients; });
      all_ready = ready_ == options_.clients;
    }
    std::optional<std::string> signal_error;
    if (all_ready) {
      std::this_thread::sleep_for(Seconds(options_.warmup_s));
      // The clock starts when the signal has been sent: a SIGKILLed process runs no more code of
      // its own after that, whatever its threads were doing.
      if (::kill(options_.victim, options_.signal) != 0) {
        signal_error = std::string("cannot signal pid ") + std::to_string(options_.victim) + ": " +
                       std::strerror(errno);
      } else {
        signalled_at_unix_ms_ = std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count();
        signalled_at_.store(Clock::now().time_since_epoch().count());
        std::unique_lock<std::mutex> lock(mutex_);
        changed_.wait_for(lock, Seconds(options_.recovery_timeout_s),
                          [&] { return recovered_ == options_.clients; });
        changed_.wait_for(lock, Seconds(options_.after_s), [] { return false; });
      }
    }
    stop_ = true;
    for (std::thread& t : clients) t.join();
    return Report(all_ready, signal_error);
  }

 private:
  static Clock::duration Seconds(double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  }

  // The signal's time, if it was sent.
  std::optional<Clock::time_point> SignalledAt() const {
    const Clock::rep at = signalled_at_.load();
    if (at == 0) return std::nullopt;
    return Clock::time_point(Clock::duration(at));
  }

  void Client(std::size_t index) {
    ClientStats& stats = stats_[index];
    client::KmsContextOptions options;
    options.client_id = "failover-" + std::to_string(index);
    options.kms_token = client::StaticToken(token_);
    options.trust = {options_.cluster, options_.ca};
    std::string uri;
    std::string bytes;
    std::unique_ptr<client::KmsContext> kms;
    {
      Result<std::unique_ptr<client::KmsContext>> created =
          client::KmsContext::OverHttps(options, {options_.url, options_.ca});
      Result<std::vector<client::KmsKey>> keys =
          created.ok() ? (*created)->CreateKeys(1)
                       : Result<std::vector<client::KmsKey>>(created.error());
      Result<client::KmsResource> resource =
          keys.ok() ? (*created)->CreateResource({}, {keys->front().uri})
                    : Result<client::KmsResource>(keys.error());
      if (resource.ok()) {
        kms = std::move(created).value();
        uri = keys->front().uri;
        bytes = std::string(keys->front().key.as_string_view());
      } else {
        stats.Note("set-up: " + resource.error().ToString());
      }
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stats.ready = kms != nullptr;
      ++set_up_;
      if (stats.ready) ++ready_;
    }
    changed_.notify_all();
    if (!kms) return;

    std::optional<client::KmsContext::Stats> at_signal;
    bool recovered = false;
    while (!stop_.load()) {
      // The SDK's counters before the retrieval: those of the first one the signal reached (in
      // flight at it, or begun after it) are the base for what the failover cost in retries.
      const client::KmsContext::Stats counters = kms->stats();
      const Clock::time_point begun = Clock::now();
      const std::optional<Clock::time_point> signalled = SignalledAt();
      Result<client::KmsKey> key = kms->RetrieveKey(uri);
      const Clock::time_point ended = Clock::now();
      if (!at_signal && SignalledAt()) at_signal = counters;
      if (!key.ok()) {
        stats.Note("retrieve: " + key.error().ToString());
      } else if (key->key.as_string_view() != bytes) {
        stats.Note("retrieve: the key's bytes differ from those created");
      } else if (!signalled) {
        ++stats.before;
        // Begun before the signal: the one in flight when it came is measured whole.
        const std::optional<Clock::time_point> now_signalled = SignalledAt();
        if (now_signalled) stats.spanning_ms = Milliseconds(ended - begun);
      } else {
        ++stats.after;
        if (!recovered) {
          recovered = true;
          stats.failover_ms = Milliseconds(ended - *signalled);
          {
            std::lock_guard<std::mutex> lock(mutex_);
            ++recovered_;
          }
          changed_.notify_all();
        }
      }
    }
    ZeroizeString(bytes);
    if (at_signal) {
      const client::KmsContext::Stats end = kms->stats();
      stats.retries_after = end.retries - at_signal->retries;
      stats.channels_after = end.channels_opened - at_signal->channels_opened;
    }
  }

  int Report(bool all_ready, const std::optional<std::string>& signal_error) const {
    std::vector<double> failover;
    std::uint64_t errors = 0, before = 0, after = 0;
    std::size_t not_recovered = 0;
    Array::Ptr per_client = new Array;
    Array::Ptr samples = new Array;
    for (std::size_t i = 0; i < stats_.size(); ++i) {
      const ClientStats& s = stats_[i];
      errors += s.errors;
      before += s.before;
      after += s.after;
      for (const std::string& e : s.error_samples) {
        if (samples->size() < kMaxErrorSamples)
          samples->add("client " + std::to_string(i) + ": " + e);
      }
      Object::Ptr c = new Object;
      c->set("client", i);
      if (s.failover_ms) {
        failover.push_back(*s.failover_ms);
        c->set("failover_ms", *s.failover_ms);
      } else {
        if (s.ready && !signal_error && all_ready) ++not_recovered;
        c->set("failover_ms", Poco::Dynamic::Var());
      }
      c->set("in_flight_at_signal_ms", s.spanning_ms);
      c->set("sdk_retries_after_signal", s.retries_after);
      c->set("channels_opened_after_signal", s.channels_after);
      c->set("retrievals_before", s.before);
      c->set("retrievals_after", s.after);
      c->set("errors", s.errors);
      per_client->add(c);
    }
    std::vector<double> sorted = failover;
    std::sort(sorted.begin(), sorted.end());
    const auto median = [&]() -> Poco::Dynamic::Var {
      if (sorted.empty()) return Poco::Dynamic::Var();
      const std::size_t n = sorted.size();
      return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    };

    Object out;
    out.set("clients", options_.clients);
    out.set("signal", options_.signal == SIGKILL ? "KILL" : "STOP");
    out.set("victim_pid", static_cast<int>(options_.victim));
    out.set("warmup_s", options_.warmup_s);
    out.set("signalled_at_unix_ms", signalled_at_unix_ms_);
    Array::Ptr list = new Array;
    for (double ms : failover) list->add(ms);
    out.set("failover_ms", list);
    out.set("max_ms", sorted.empty() ? Poco::Dynamic::Var() : Poco::Dynamic::Var(sorted.back()));
    out.set("median_ms", median());
    out.set("not_recovered", not_recovered);
    out.set("errors", errors);
    out.set("retrievals_before", before);
    out.set("retrievals_after", after);
    out.set("per_client", per_client);
    out.set("error_samples", samples);
    if (signal_error) out.set("signal_error", *signal_error);
    std::ostringstream json;
    Poco::JSON::Stringifier::stringify(out, json, 2);
    std::cout << json.str() << "\n";
    if (!options_.json_out.empty()) std::ofstream(options_.json_out) << json.str() << "\n";

    if (!all_ready || signal_error) return 69;
    return errors == 0 && not_recovered == 0 ? 0 : 1;
  }

  const Options options_;
  std::string token_;
  std::vector<ClientStats> stats_;
  std::atomic<Clock::rep> signalled_at_{0};  // steady clock ticks; 0 until the signal is sent
  std::int64_t signalled_at_unix_ms_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable changed_;
  std::size_t set_up_ = 0;     // clients whose set-up ended, well or not
  std::size_t ready_ = 0;      // clients set up
  std::size_t recovered_ = 0;  // clients with a failover time
};

int Main(int argc, char** argv) {
  Result<Options> options = ParseOptions(argc, argv);
  if (!options.ok()) {
    if (!options.error().message().empty()) {
      std::cerr << "kms_failover: " << options.error().message() << "\n";
    }
    std::cerr << kUsage;
    return 64;
  }
  Result<std::string> token = ReadToken(options->token_file);
  if (!token.ok()) {
    std::cerr << "kms_failover: " << token.error().message() << "\n";
    return 64;
  }
  // A write to a connection the front closed is an error of that request, not the end of us.
  ::signal(SIGPIPE, SIG_IGN);
  FailoverRun run(std::move(options).value(), std::move(token).value());
  return run.Run();
}

}  // namespace
}  // namespace strongroom::bench

int main(int argc, char** argv) { return strongroom::bench::Main(argc, argv); }
