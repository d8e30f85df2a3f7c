// kms_load: a load generator for a running kmsd, over HTTPS on keep-alive connections, speaking
// the KMS protocol through strongroom::client::KmsSession (a client: it links no HSM or KMS code).
//
//   kms_load --url https://127.0.0.1:PORT --ca CA.pem --token-file JWT [--token-file JWT2 ...]
//            [--clients 16] [--threads 1] [--duration 30] [--warmup 5] [--scenario retrieve]
//            [--keys 100] [--batch 100] [--rate R] [--max-keys N] [--json-out FILE]
//            [--idle-connections N] [--trickling-connections N] [--server-pid PID]
//            [--pid NAME=PID[,PID...] ...]
//
// --server-pid: the server's CPU time (/proc/PID/stat) over the measured window is reported per
// answered request, beside the generator's own, so a cost per request excludes the generator.
// --pid: the same for a tier of processes and their descendants (several kmsd nodes, PostgreSQL's
// postmaster, HAProxy), under "cpu_s" and "cpu_us_per_request" by NAME.
//
// Each client is one keep-alive HTTPS connection and, except for `info`, one KmsSession (create
// /ecdhe), with one request in flight at a time. Client i uses token file i % n. The clients run
// on --threads event loops (epoll, non-blocking TLS; client i on loop i % threads), so the
// generator's CPU is what the protocol and TLS cost a client, not one thread per client's
// scheduling. The set-up (channels, keys, resources) runs before, blocking, on up to 16 threads,
// outside the timed window. Scenarios:
//   retrieve     setup: create --keys keys and a resource binding them; loop: sealed
//                retrieve /keys/<id> over them round-robin (expects 200 and the key)
//   create       loop: create /keys with count --batch (1-100) (expects 201 and --batch keys)
//   create-bind  loop: create /keys (--batch), then create /resources binding them (201, 201)
//   mixed        retrieve as above; every 20th request is a create /keys of 10 keys
//   info         loop: plain GET /kms/info, kmsd's static document (expects 200 and the same
//                document every time): the reference for what a request costs kmsd without
//                the KMS protocol
// Closed loop by default (a client sends when its answer arrived); --rate R is open loop: R
// requests/s spread evenly over the clients, latency counted from the intended send time.
//
// A 503 with Retry-After is overload, counted apart from errors (and its client retries at once
// unless --honor-retry-after); anything else unexpected (transport failure, plain error, protocol
// status other than the expected one, no answer within 30 s) is an error. --max-keys N ends the
// run once the clients created N keys together (create and create-bind; for preloading a store),
// and rates are then taken over the time the measured window really lasted. Latencies are exact:
// every request's is kept (per client) and sorted at the end. Keys, tokens and answers are never
// printed.
//
// The slow-client attack (issue 11): --idle-connections N opens N TCP connections that send
// nothing (50 from each of 127.0.0.2, 127.0.0.3, ...) and --trickling-connections N opens N TLS
// connections that trickle a request head a byte every 200 ms (from 127.0.0.200, .201, ...),
// before the clients start and for the whole run, so the latencies are those of real clients
// under the attack. Loopback only.
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/URI.h>
#include <signal.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <limits>
#include <memory>
#include <mutex>
#include <queue>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../tests/support/connection_flood.h"
#include "https_client_connection.h"
#include "load_support.h"
#include "strongroom/client/kms_session.h"
#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"

namespace strongroom::bench {
namespace {

using Clock = std::chrono::steady_clock;
using client::KmsInfo;
using client::KmsResponse;
using client::KmsSession;
using Poco::JSON::Object;
using Progress = HttpsClientConnection::Progress;

constexpr std::size_t kMaxClients = 1024;
constexpr std::size_t kMaxThreads = 64;
constexpr std::size_t kMaxSetupThreads = 16;
constexpr std::size_t kMaxErrorSamples = 5;
constexpr auto kRequestTimeout = std::chrono::seconds(30);
constexpr char kMessagesPath[] = "/kms/messages";
constexpr char kInfoPath[] = "/kms/info";
constexpr char kJose[] = "application/jose";

const char kUsage[] =
    "usage: kms_load --url https://HOST:PORT --ca CA.pem --token-file JWT [--token-file JWT ...]\n"
    "                [--clients N] [--threads T] [--duration S] [--warmup S] [--keys N]\n"
    "                [--batch N] [--scenario retrieve|create|create-bind|mixed|info] [--rate R]\n"
    "                [--max-keys N] [--honor-retry-after] [--json-out FILE]\n"
    "                [--idle-connections N] [--trickling-connections N] [--server-pid PID]\n"
    "                [--pid NAME=PID[,PID...] ...]\n";

struct Options {
  std::string url;
  std::string ca;
  std::vector<std::string> token_files;
  std::size_t clients = 16;
  std::size_t threads = 1;  // event loops
  double duration_s = 30;
  double warmup_s = 5;
  std::string scenario = "retrieve";
  std::size_t keys = 100;
  std::size_t batch = 100;
  double rate = 0;             // 0: closed loop
  std::uint64_t max_keys = 0;  // 0: no limit
  bool honor_retry_after = false;
  std::string json_out;
  std::size_t idle_connections = 0;
  std::size_t trickling_connections = 0;
  std::string server_pid;  // kmsd's, to report its CPU per request over the measured window
  CpuTiers tiers;          // --pid: tiers whose CPU per request is reported the same way
};

Result<Options> ParseOptions(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--honor-retry-after") {
      o.honor_retry_after = true;
      continue;
    }
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
    } else if (name == "token-file" || name == "token-file2") {
      o.token_files.push_back(value);
    } else if (name == "clients") {
      SR_ASSIGN_OR_RETURN(o.clients, ParseCount(name, value, 1, kMaxClients));
    } else if (name == "threads") {
      SR_ASSIGN_OR_RETURN(o.threads, ParseCount(name, value, 1, kMaxThreads));
    } else if (name == "duration") {
      SR_ASSIGN_OR_RETURN(o.duration_s, ParseSeconds(name, value, 86400));
    } else if (name == "warmup") {
      SR_ASSIGN_OR_RETURN(o.warmup_s, ParseSeconds(name, value, 3600));
    } else if (name == "scenario") {
      o.scenario = value;
    } else if (name == "keys") {
      SR_ASSIGN_OR_RETURN(o.keys, ParseCount(name, value, 1, 1000));  // one resource's keyUris
    } else if (name == "batch") {
      SR_ASSIGN_OR_RETURN(o.batch, ParseCount(name, value, 1, 100));
    } else if (name == "rate") {
      SR_ASSIGN_OR_RETURN(o.rate, ParseSeconds(name, value, 1e7));
    } else if (name == "max-keys") {
      SR_ASSIGN_OR_RETURN(std::size_t max_keys, ParseCount(name, value, 1, 1'000'000'000));
      o.max_keys = max_keys;
    } else if (name == "idle-connections") {
      SR_ASSIGN_OR_RETURN(o.idle_connections, ParseCount(name, value, 0, 10000));
    } else if (name == "trickling-connections") {
      SR_ASSIGN_OR_RETURN(o.trickling_connections, ParseCount(name, value, 0, 1000));
    } else if (name == "json-out") {
      o.json_out = value;
    } else if (name == "server-pid") {
      SR_ASSIGN_OR_RETURN(std::size_t pid, ParseCount(name, value, 1, 1 << 22));
      o.server_pid = std::to_string(pid);
    } else if (name == "pid") {
      SR_RETURN_IF_ERROR(o.tiers.Add(value));
    } else {
      return Error(ErrorCode::kInvalidArgument, "unknown option --" + name);
    }
  }
  if (o.url.empty() || o.ca.empty() || o.token_files.empty()) {
    return Error(ErrorCode::kInvalidArgument, "--url, --ca and --token-file are required");
  }
  o.tiers.AddGeneratorAndMachine();
  if (o.scenario != "retrieve" && o.scenario != "create" && o.scenario != "create-bind" &&
      o.scenario != "mixed" && o.scenario != "info") {
    return Error(ErrorCode::kInvalidArgument, "unknown --scenario " + o.scenario);
  }
  if (o.duration_s <= 0) return Error(ErrorCode::kInvalidArgument, "--duration must be > 0");
  o.threads = std::min(o.threads, o.clients);
  return o;
}

// What one client measured.
struct ClientStats {
  std::vector<std::uint32_t> latency_us;   // answered requests, measured window only
  std::vector<std::uint32_t> overload_us;  // 503 + Retry-After answers, measured window only
  std::uint64_t requests = 0;              // answered as expected, measured window
  std::uint64_t keys = 0;                  // keys created or bound, measured window
  std::uint64_t overloaded = 0;            // 503 with Retry-After, measured window
  std::uint64_t errors = 0;                // measured window
  std::uint64_t setup_overloaded = 0;      // outside the measured window (setup, warm-up)
  std::uint64_t setup_errors = 0;
  std::vector<std::string> error_samples;
};

enum class Outcome { kOk, kOverloaded, kError };

// The request a client has in flight.
enum class Step { kRetrieve, kCreate, kMixedCreate, kBind, kInfo };

// One client: its connection, its KMS channel, its keys, and the iteration it is in. Set up by
// one thread, then driven by one event loop.
struct Client {
  std::size_t index = 0;
  ClientStats* stats = nullptr;
  std::unique_ptr<HttpsClientConnection> connection;
  std::unique_ptr<KmsSession> session;
  bool ready = false;             // set up: it takes part in the run
  std::vector<std::string> keys;  // retrieve, mixed: the keys it reads round-robin
  std::size_t round = 0;
  std::uint64_t iteration = 0;
  Clock::time_point next;  // open loop: when the next iteration is due

  // The iteration in flight.
  Step step = Step::kInfo;
  const std::string* uri = nullptr;  // the key retrieved
  bool measured = false;
  Clock::time_point request_at;  // latency is counted from here (the intended time, open loop)
  Clock::time_point deadline;    // no answer by then: an error
  bool in_flight = false;
  bool finished = false;

  // The connection's socket as registered with the event loop.
  std::uint64_t registered_generation = 0;
  bool registered_write = false;
};

// What one event loop keeps: its clients, those due to start an iteration now, and the open
// loop's (and back-off's) timers.
struct LoopState {
  using Timer = std::pair<Clock::time_point, Client*>;

  int epoll = -1;
  std::vector<Client*> clients;
  std::vector<Client*> due;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers;
  std::size_t active = 0;
  // Built once per loop, so a request's names and fields cost nothing of their own.
  const std::string retrieve = "retrieve";
  const std::string create = "create";
  const std::string keys = "/keys";
  const std::string resources = "/resources";
  Object retrieve_fields;
  Object create_fields;
  Object mixed_create_fields;
};

class LoadRun {
 public:
  LoadRun(Options options, KmsInfo info, std::string info_body, SSL_CTX* context,
          HttpsEndpoint endpoint, std::vector<std::string> tokens)
      : options_(std::move(options)),
        info_(std::move(info)),
        info_body_(std::move(info_body)),
        context_(context),
        endpoint_(std::move(endpoint)),
        tokens_(std::move(tokens)),
        stats_(options_.clients),
        clients_(options_.clients),
        interval_(options_.rate > 0 ? Seconds(static_cast<double>(options_.clients) / options_.rate)
                                    : Clock::duration::zero()) {}

  ~LoadRun() {
    for (std::string& token : tokens_) ZeroizeString(token);
  }

  void Run() {
    // Set-up, outside any timed window: channels, keys, resources, one connection each.
    {
      std::atomic<std::size_t> next{0};
      std::vector<std::thread> setup;
      const std::size_t threads = std::min(options_.clients, kMaxSetupThreads);
      for (std::size_t t = 0; t < threads; ++t) {
        setup.emplace_back([&] {
          for (std::size_t i = next++; i < options_.clients; i = next++) SetUp(i);
        });
      }
      for (std::thread& t : setup) t.join();
    }
    // Everyone set up (or failed to): the clock starts for all at once.
    start_ = Clock::now();
    measure_from_ = start_ + Seconds(options_.warmup_s);
    measure_to_ = measure_from_ + Seconds(options_.duration_s);
    std::vector<std::thread> loops;
    for (std::size_t t = 0; t < options_.threads; ++t) {
      loops.emplace_back([this, t] { Loop(t); });
    }
    // The server's CPU and this generator's over the measured window (not set-up or warm-up).
    std::this_thread::sleep_until(measure_from_);
    const double server_from =
        options_.server_pid.empty() ? -1 : ProcessCpuSeconds(options_.server_pid);
    const double self_from = ProcessCpuSeconds("self");
    tiers_from_ = options_.tiers.Now();
    const Clock::time_point until = measure_to_;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      stopped_cv_.wait_until(lock, until, [&] { return stop_.load(); });
    }
    if (server_from >= 0) {
      const double server_to = ProcessCpuSeconds(options_.server_pid);
      if (server_to >= 0) server_cpu_s_ = server_to - server_from;
    }
    if (self_from >= 0) self_cpu_s_ = ProcessCpuSeconds("self") - self_from;
    tiers_to_ = options_.tiers.Now();
    for (std::thread& t : loops) t.join();
  }

  int Report() const;

 private:
  static Clock::duration Seconds(double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  }

  bool UsesSession() const { return options_.scenario != "info"; }
  bool Retrieves() const { return options_.scenario == "retrieve" || options_.scenario == "mixed"; }

  static void Note(ClientStats& stats, bool measured, Outcome outcome, const std::string& error) {
    if (outcome == Outcome::kOverloaded) {
      (measured ? stats.overloaded : stats.setup_overloaded)++;
    } else if (outcome == Outcome::kError) {
      (measured ? stats.errors : stats.setup_errors)++;
      if (stats.error_samples.size() < kMaxErrorSamples) stats.error_samples.push_back(error);
    }
  }

  static std::string UriKind(const std::string& uri) {
    const std::size_t keys = uri.find("/keys");
    if (keys != std::string::npos) return "/keys";
    const std::size_t resources = uri.find("/resources");
    return resources != std::string::npos ? "/resources" : uri;
  }

  // What an answer to a sealed request means: overload, an error, or the opened answer with the
  // expected protocol status. `failed`: the transport failed (the connection says why).
  static Outcome Judge(const Client& client, bool failed, const std::string& method,
                       const std::string& uri, int expected, Object::Ptr* answer,
                       std::string* error) {
    const HttpsClientConnection& connection = *client.connection;
    if (failed) {
      *error = connection.error();
      return Outcome::kError;
    }
    const KmsResponse& response = connection.answer();
    if (response.http_status == 503) {
      if (connection.retry_after()) return Outcome::kOverloaded;
      *error = "HTTP 503 without Retry-After";
      return Outcome::kError;
    }
    Result<Object::Ptr> opened =
        client.session->OpenAnswer(response, client.session->last_request_id());
    if (!opened.ok()) {
      *error = method + " " + UriKind(uri) + ": " + opened.error().ToString();
      return Outcome::kError;
    }
    const int status = (*opened)->optValue<int>("status", 0);
    if (status != expected) {
      *error = method + " " + UriKind(uri) + " answered " + std::to_string(status) + ": " +
               (*opened)->optValue<std::string>("reason", "");
      return Outcome::kError;
    }
    *answer = std::move(opened).value();
    return Outcome::kOk;
  }

  // A sealed request and its answer, blocking (set-up only).
  static Outcome CallBlocking(Client& client, const std::string& method, const std::string& uri,
                              const Object& fields, int expected, Object::Ptr* answer,
                              std::string* error) {
    Result<std::string> sealed = client.session->Seal(method, uri, fields);
    if (!sealed.ok()) {
      *error = "seal: " + sealed.error().ToString();
      return Outcome::kError;
    }
    const Progress progress =
        client.connection->Exchange("POST", kMessagesPath, kJose, *sealed, kRequestTimeout);
    return Judge(client, progress == Progress::kFailed, method, uri, expected, answer, error);
  }

  // Setup calls retry overload answers (HTTP 503, or a sealed status 503) for a while, counting
  // them as set-up errors: the run must start with its keys.
  static Result<Object::Ptr> SetupCall(Client& client, const std::string& method,
                                       const std::string& uri, const Object& fields, int expected) {
    for (int attempt = 0; attempt < 100; ++attempt) {
      Object::Ptr answer;
      std::string error;
      const Outcome outcome = CallBlocking(client, method, uri, fields, expected, &answer, &error);
      if (outcome == Outcome::kOk) return answer;
      Note(*client.stats, false, outcome, error);
      // A sealed 503 (the KMS's database or HSM busy) says "later" too; anything else is final.
      if (outcome == Outcome::kError && error.find(" answered 503") == std::string::npos) {
        return Error(ErrorCode::kUnavailable, error);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return Error(ErrorCode::kUnavailable, "setup: the KMS stayed overloaded");
  }

  static Result<std::vector<std::string>> KeyUris(const Object::Ptr& answer, std::size_t count) {
    Poco::JSON::Array::Ptr keys = answer->getArray("keys");
    if (!keys || keys->size() != count) {
      return Error(ErrorCode::kInvalidArgument, "create /keys answered the wrong number of keys");
    }
    std::vector<std::string> uris;
    uris.reserve(count);
    for (unsigned i = 0; i < static_cast<unsigned>(keys->size()); ++i) {
      Object::Ptr key = keys->getObject(i);
      if (!key || !key->has("uri")) {
        return Error(ErrorCode::kInvalidArgument, "create /keys answered a key without uri");
      }
      uris.push_back(key->getValue<std::string>("uri"));
    }
    return uris;
  }

  // Creates `count` keys (in requests of at most 100).
  static Result<std::vector<std::string>> CreateKeys(Client& client, std::size_t count) {
    std::vector<std::string> uris;
    while (uris.size() < count) {
      const std::size_t n = std::min<std::size_t>(100, count - uris.size());
      Object fields;
      fields.set("count", n);
      SR_ASSIGN_OR_RETURN(Object::Ptr answer, SetupCall(client, "create", "/keys", fields, 201));
      SR_ASSIGN_OR_RETURN(std::vector<std::string> more, KeyUris(answer, n));
      uris.insert(uris.end(), more.begin(), more.end());
    }
    return uris;
  }

  static Object BindFields(const std::vector<std::string>& uris) {
    Object fields;
    Poco::JSON::Array auth_ids, key_uris;
    for (const std::string& uri : uris) key_uris.add(uri);
    fields.set("authIds", auth_ids);
    fields.set("keyUris", key_uris);
    return fields;
  }

  // Client i's connection, channel and (retrieve, mixed) keys and resource, blocking.
  void SetUp(std::size_t index) {
    Client& client = clients_[index];
    client.index = index;
    client.stats = &stats_[index];
    client.connection = std::make_unique<HttpsClientConnection>(context_, endpoint_);
    HttpsClientConnection& connection = *client.connection;
    if (!UsesSession()) {
      // The connection opened by one request, so the handshake is not in the run.
      const Progress progress = connection.Exchange("GET", kInfoPath, "", "", kRequestTimeout);
      if (progress == Progress::kFailed || connection.answer().http_status != 200) {
        Note(*client.stats, false, Outcome::kError,
             "GET /kms/info: " + (progress == Progress::kFailed
                                      ? connection.error()
                                      : "HTTP " + std::to_string(connection.answer().http_status)));
        return;
      }
      client.ready = true;
      return;
    }
    client::KmsTransport transport =
        [&connection](const std::string& message) -> Result<KmsResponse> {
      if (connection.Exchange("POST", kMessagesPath, kJose, message, kRequestTimeout) ==
          Progress::kFailed) {
        return Error(ErrorCode::kUnavailable, connection.error());
      }
      return connection.answer();
    };
    Result<std::unique_ptr<KmsSession>> opened = Error(ErrorCode::kUnavailable, "not tried");
    for (int attempt = 0; attempt < 100; ++attempt) {
      opened = KmsSession::Open(info_, "load-" + std::to_string(index),
                                tokens_[index % tokens_.size()], transport);
      if (opened.ok() || (opened.error().code() != ErrorCode::kUnavailable &&
                          opened.error().message().find(" answered 503") == std::string::npos)) {
        break;
      }
      ++client.stats->setup_overloaded;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!opened.ok()) {
      Note(*client.stats, false, Outcome::kError, "create /ecdhe: " + opened.error().ToString());
      return;
    }
    client.session = std::move(opened).value();
    if (Retrieves()) {
      Result<std::vector<std::string>> created = CreateKeys(client, options_.keys);
      Result<Object::Ptr> bound =
          created.ok() ? SetupCall(client, "create", "/resources", BindFields(*created), 201)
                       : Result<Object::Ptr>(created.error());
      if (!bound.ok()) {
        Note(*client.stats, false, Outcome::kError, "setup: " + bound.error().ToString());
        return;
      }
      client.keys = std::move(created).value();
    }
    client.ready = true;
  }

  // One event loop: the clients i with i % threads == t, until the measured window ends (or
  // --max-keys is reached) and their last requests are answered.
  void Loop(std::size_t t);
  // The event loop's steps for one client: start an iteration (its first request), seal and send
  // a request, make progress on it, judge its answer, count the iteration and schedule the next.
  void Iterate(LoopState& s, Client& c);
  void SendSealed(LoopState& s, Client& c, Step step, const std::string& method,
                  const std::string& uri, const Object& fields);
  void Drive(LoopState& s, Client& c);
  void Answered(LoopState& s, Client& c, bool failed);
  void Conclude(LoopState& s, Client& c, Outcome outcome, const std::string& error,
                std::uint64_t keys);
  void Finish(LoopState& s, Client& c);
  // Keeps the loop's epoll set in step with the client's socket (it changes on a reconnect).
  static void Register(LoopState& s, Client& c);

  void Record(ClientStats& stats, bool measured, Clock::time_point sent_at, Outcome outcome) {
    if (!measured || outcome == Outcome::kError) return;
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - sent_at);
    const auto clamped = static_cast<std::uint32_t>(
        std::min<std::int64_t>(us.count(), std::numeric_limits<std::uint32_t>::max()));
    if (outcome == Outcome::kOk) {
      stats.latency_us.push_back(clamped);
      ++stats.requests;
    } else {
      stats.overload_us.push_back(clamped);
    }
  }

  // Counts keys created (or bound); with --max-keys, the run ends once the clients made enough.
  void AddKeys(ClientStats& stats, bool measured, std::uint64_t keys) {
    if (keys == 0) return;
    if (measured) stats.keys += keys;
    const std::uint64_t total = keys_total_.fetch_add(keys) + keys;
    if (options_.max_keys != 0 && total >= options_.max_keys && !stop_.exchange(true)) {
      std::lock_guard<std::mutex> lock(mutex_);
      stopped_at_ = Clock::now();
      stopped_cv_.notify_all();
    }
  }

  // The measured window as it really was (shorter when --max-keys ended the run early).
  double MeasuredSeconds() const {
    const Clock::time_point end =
        stop_.load() ? std::max(measure_from_, std::min(stopped_at_, measure_to_)) : measure_to_;
    const double s = std::chrono::duration<double>(end - measure_from_).count();
    return s > 0 ? s : options_.duration_s;
  }

  const Options options_;
  const KmsInfo info_;
  const std::string info_body_;
  SSL_CTX* const context_;
  const HttpsEndpoint endpoint_;
  std::vector<std::string> tokens_;
  std::vector<ClientStats> stats_;
  std::vector<Client> clients_;
  const Clock::duration interval_;  // open loop: between one client's requests; 0: closed loop

  std::mutex mutex_;
  std::condition_variable stopped_cv_;
  double server_cpu_s_ = -1;                   // over the measured window; -1: not measured
  std::vector<double> tiers_from_, tiers_to_;  // --pid tiers at the window's start and end
  double self_cpu_s_ = -1;
  Clock::time_point start_;
  Clock::time_point measure_from_;
  Clock::time_point measure_to_;
  std::atomic<std::uint64_t> keys_total_{0};
  std::atomic<bool> stop_{false};
  Clock::time_point stopped_at_;
};

void LoadRun::Loop(std::size_t t) {
  LoopState s;
  s.create_fields.set("count", options_.batch);
  s.mixed_create_fields.set("count", 10);
  s.epoll = epoll_create1(EPOLL_CLOEXEC);
  if (s.epoll < 0) {
    std::cerr << "kms_load: epoll_create1: " << std::strerror(errno) << "\n";
    std::abort();
  }
  for (std::size_t i = t; i < clients_.size(); i += options_.threads) {
    Client& c = clients_[i];
    if (!c.ready) continue;
    s.clients.push_back(&c);
    Register(s, c);
    if (interval_ != Clock::duration::zero()) {
      // Open loop: clients are staggered across one interval.
      c.next = start_ + interval_ * static_cast<long>(i) / static_cast<long>(options_.clients);
      s.timers.emplace(c.next, &c);
    } else {
      s.due.push_back(&c);
    }
  }
  s.active = s.clients.size();
  std::vector<epoll_event> events(std::max<std::size_t>(16, s.clients.size()));
  std::vector<Client*> due;
  Clock::time_point next_sweep = Clock::now() + std::chrono::seconds(1);
  while (s.active > 0) {
    Clock::duration wait = Clock::duration::zero();
    if (s.due.empty()) {
      const Clock::time_point wake =
          s.timers.empty() ? next_sweep : std::min(next_sweep, s.timers.top().first);
      wait = std::max(Clock::duration::zero(), wake - Clock::now());
    }
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(wait).count();
    const timespec timeout{static_cast<time_t>(ns / 1'000'000'000),
                           static_cast<long>(ns % 1'000'000'000)};
    int n =
        epoll_pwait2(s.epoll, events.data(), static_cast<int>(events.size()), &timeout, nullptr);
    if (n < 0) {
      if (errno != EINTR) {
        std::cerr << "kms_load: epoll_pwait2: " << std::strerror(errno) << "\n";
        std::abort();
      }
      n = 0;
    }
    for (int e = 0; e < n; ++e) {
      Client& c = *static_cast<Client*>(events[static_cast<std::size_t>(e)].data.ptr);
      if (c.in_flight) {
        Drive(s, c);
      } else {
        c.connection->Drive();  // between requests: a session ticket, or the server's close
        Register(s, c);
      }
    }
    const Clock::time_point now = Clock::now();
    while (!s.timers.empty() && s.timers.top().first <= now) {
      s.due.push_back(s.timers.top().second);
      s.timers.pop();
    }
    if (now >= next_sweep) {
      next_sweep = now + std::chrono::seconds(1);
      for (Client* c : s.clients) {
        if (!c->in_flight || now < c->deadline) continue;
        c->connection->Close();
        c->in_flight = false;
        Conclude(s, *c, Outcome::kError,
                 "HTTPS: no answer within " + std::to_string(kRequestTimeout.count()) + " s", 0);
      }
    }
    due.swap(s.due);
    for (Client* c : due) Iterate(s, *c);
    due.clear();
  }
  ::close(s.epoll);
}

void LoadRun::Register(LoopState& s, Client& c) {
  const HttpsClientConnection& connection = *c.connection;
  if (connection.fd() < 0) return;  // closed: the kernel took it out of the set
  const bool write = connection.wants_write();
  if (c.registered_generation == connection.generation() && c.registered_write == write) return;
  epoll_event event{};
  event.events = EPOLLIN | (write ? EPOLLOUT : 0u);
  event.data.ptr = &c;
  const bool added = c.registered_generation != connection.generation();
  if (epoll_ctl(s.epoll, added ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, connection.fd(), &event) != 0) {
    std::cerr << "kms_load: epoll_ctl: " << std::strerror(errno) << "\n";
    std::abort();
  }
  c.registered_generation = connection.generation();
  c.registered_write = write;
}

void LoadRun::Iterate(LoopState& s, Client& c) {
  const bool open_loop = interval_ != Clock::duration::zero();
  const Clock::time_point sent_at = open_loop ? c.next : Clock::now();
  if (sent_at >= measure_to_ || stop_.load(std::memory_order_relaxed)) return Finish(s, c);
  c.next += interval_;
  c.measured = sent_at >= measure_from_;
  c.request_at = sent_at;
  const std::uint64_t n = c.iteration++;
  if (options_.scenario == "info") {
    c.step = Step::kInfo;
    c.connection->Start("GET", kInfoPath, "", "");
    c.in_flight = true;
    c.deadline = c.request_at + kRequestTimeout;
    return Drive(s, c);
  }
  if (options_.scenario == "retrieve" || (options_.scenario == "mixed" && n % 20 != 0)) {
    c.uri = &c.keys[c.round++ % c.keys.size()];
    SendSealed(s, c, Step::kRetrieve, s.retrieve, *c.uri, s.retrieve_fields);
  } else if (options_.scenario == "mixed") {
    SendSealed(s, c, Step::kMixedCreate, s.create, s.keys, s.mixed_create_fields);
  } else {
    SendSealed(s, c, Step::kCreate, s.create, s.keys, s.create_fields);
  }
}

void LoadRun::SendSealed(LoopState& s, Client& c, Step step, const std::string& method,
                         const std::string& uri, const Object& fields) {
  c.step = step;
  Result<std::string> sealed = c.session->Seal(method, uri, fields);
  if (!sealed.ok()) return Conclude(s, c, Outcome::kError, "seal: " + sealed.error().ToString(), 0);
  c.connection->Start("POST", kMessagesPath, kJose, *sealed);
  c.in_flight = true;
  c.deadline = c.request_at + kRequestTimeout;
  Drive(s, c);
}

void LoadRun::Drive(LoopState& s, Client& c) {
  const Progress progress = c.connection->Drive();
  Register(s, c);
  if (progress == Progress::kPending) return;
  c.in_flight = false;
  Answered(s, c, progress == Progress::kFailed);
}

void LoadRun::Answered(LoopState& s, Client& c, bool failed) {
  Object::Ptr answer;
  std::string error;
  Outcome outcome = Outcome::kOk;
  std::uint64_t keys_done = 0;
  switch (c.step) {
    case Step::kInfo: {
      const KmsResponse& response = c.connection->answer();
      if (failed) {
        outcome = Outcome::kError;
        error = c.connection->error();
      } else if (response.http_status == 503 && c.connection->retry_after()) {
        outcome = Outcome::kOverloaded;
      } else if (response.http_status != 200) {
        outcome = Outcome::kError;
        error = "GET /kms/info answered HTTP " + std::to_string(response.http_status);
      } else if (response.body != info_body_) {
        outcome = Outcome::kError;
        error = "GET /kms/info answered another document";
      }
      break;
    }
    case Step::kRetrieve:
      outcome = Judge(c, failed, s.retrieve, *c.uri, 200, &answer, &error);
      if (outcome == Outcome::kOk) {
        Object::Ptr key = answer->getObject("key");
        const Poco::Dynamic::Var uri = key ? key->get("uri") : Poco::Dynamic::Var();
        if (!key || !uri.isString() || uri.extract<std::string>() != *c.uri ||
            !key->getObject("jwk")) {
          outcome = Outcome::kError;
          error = "retrieve /keys answered without the key";
        }
      }
      break;
    case Step::kMixedCreate:
      outcome = Judge(c, failed, s.create, s.keys, 201, &answer, &error);
      if (outcome == Outcome::kOk) keys_done = 10;
      break;
    case Step::kCreate: {
      outcome = Judge(c, failed, s.create, s.keys, 201, &answer, &error);
      if (outcome != Outcome::kOk) break;
      Result<std::vector<std::string>> uris = KeyUris(answer, options_.batch);
      if (!uris.ok()) {
        outcome = Outcome::kError;
        error = uris.error().message();
      } else if (options_.scenario == "create-bind") {
        // The create is one request of its own; the bind is the next, timed from its sending.
        Record(*c.stats, c.measured, c.request_at, outcome);
        c.request_at = Clock::now();
        return SendSealed(s, c, Step::kBind, s.create, s.resources, BindFields(*uris));
      } else {
        keys_done = options_.batch;
      }
      break;
    }
    case Step::kBind:
      outcome = Judge(c, failed, s.create, s.resources, 201, &answer, &error);
      if (outcome == Outcome::kOk) keys_done = options_.batch;
      break;
  }
  Conclude(s, c, outcome, error, keys_done);
}

void LoadRun::Conclude(LoopState& s, Client& c, Outcome outcome, const std::string& error,
                       std::uint64_t keys) {
  Note(*c.stats, c.measured, outcome, error);
  Record(*c.stats, c.measured, c.request_at, outcome);
  AddKeys(*c.stats, c.measured, keys);
  const bool open_loop = interval_ != Clock::duration::zero();
  const bool back_off = outcome == Outcome::kOverloaded && options_.honor_retry_after;
  if (open_loop && c.next >= measure_to_) return Finish(s, c);
  if (!open_loop && !back_off) {
    s.due.push_back(&c);
    return;
  }
  Clock::time_point at = open_loop ? c.next : Clock::time_point::min();
  if (back_off) at = std::max(at, Clock::now() + std::chrono::seconds(1));
  s.timers.emplace(at, &c);
}

void LoadRun::Finish(LoopState& s, Client& c) {
  if (c.finished) return;
  c.finished = true;
  --s.active;
}

int LoadRun::Report() const {
  const double seconds = MeasuredSeconds();
  std::vector<std::uint32_t> latency, overload;
  std::uint64_t requests = 0, keys = 0, overloaded = 0, errors = 0, setup_overloaded = 0,
                setup_errors = 0;
  std::vector<double> per_client;
  std::vector<std::string> samples;
  for (const ClientStats& s : stats_) {
    latency.insert(latency.end(), s.latency_us.begin(), s.latency_us.end());
    overload.insert(overload.end(), s.overload_us.begin(), s.overload_us.end());
    requests += s.requests;
    keys += s.keys;
    overloaded += s.overloaded;
    errors += s.errors;
    setup_overloaded += s.setup_overloaded;
    setup_errors += s.setup_errors;
    per_client.push_back(static_cast<double>(s.requests) / seconds);
    for (const std::string& e : s.error_samples) {
      if (samples.size() < kMaxErrorSamples) samples.push_back(e);
    }
  }
  std::sort(latency.begin(), latency.end());
  std::sort(overload.begin(), overload.end());
  const auto [min_client, max_client] = std::minmax_element(per_client.begin(), per_client.end());
  const double rate = static_cast<double>(requests) / seconds;
  const double keys_rate = static_cast<double>(keys) / seconds;

  std::cout << std::fixed << std::setprecision(2);
  std::cout << "scenario " << options_.scenario << ", " << options_.clients << " clients, "
            << (options_.rate > 0 ? "open loop at " + std::to_string(options_.rate) + " req/s"
                                  : std::string("closed loop"))
            << ", warm-up " << options_.warmup_s << " s, measured " << seconds << " s\n";
  std::cout << "  answered      " << requests << " requests, " << rate << " req/s";
  if (keys > 0) std::cout << ", " << keys << " keys, " << keys_rate << " keys/s";
  std::cout << "\n  latency ms    p50 " << Percentile(latency, 0.50) << "  p90 "
            << Percentile(latency, 0.90) << "  p99 " << Percentile(latency, 0.99) << "  p99.9 "
            << Percentile(latency, 0.999) << "  max " << Percentile(latency, 1.0) << "\n";
  std::cout << "  503+Retry-After " << overloaded << " (" << std::setprecision(1)
            << (requests + overloaded > 0 ? 100.0 * static_cast<double>(overloaded) /
                                                static_cast<double>(requests + overloaded)
                                          : 0.0)
            << std::setprecision(2) << "% of answers), 503 latency ms p50 "
            << Percentile(overload, 0.50) << " p99 " << Percentile(overload, 0.99) << " max "
            << Percentile(overload, 1.0) << "\n";
  std::cout << "  errors        " << errors << " (setup/warm-up: " << setup_errors << " errors, "
            << setup_overloaded << " overloaded)\n";
  std::cout << "  per client    min " << *min_client << " req/s, max " << *max_client << " req/s\n";
  for (const std::string& sample : samples) std::cout << "  error: " << sample << "\n";
  // CPU per answered request, in microseconds, over the measured window.
  const auto per_request_us = [&](double cpu_s) {
    return requests > 0 && cpu_s >= 0 ? 1e6 * cpu_s / static_cast<double>(requests) : -1.0;
  };
  if (server_cpu_s_ >= 0) {
    std::cout << "  server CPU    " << server_cpu_s_ << " s, " << per_request_us(server_cpu_s_)
              << " us per request (" << 100.0 * server_cpu_s_ / seconds << "% of one core)\n";
  }
  if (self_cpu_s_ >= 0) {
    std::cout << "  generator CPU " << self_cpu_s_ << " s, " << per_request_us(self_cpu_s_)
              << " us per request (" << 100.0 * self_cpu_s_ / seconds << "% of one core)\n";
  }

  if (!options_.json_out.empty()) {
    Object out;
    out.set("scenario", options_.scenario);
    out.set("clients", options_.clients);
    out.set("threads", options_.threads);
    out.set("duration_s", seconds);
    out.set("keys_created_total", keys_total_.load());
    out.set("warmup_s", options_.warmup_s);
    out.set("rate_target", options_.rate);
    out.set("keys_per_client", options_.keys);
    out.set("batch", options_.batch);
    out.set("requests", requests);
    out.set("requests_per_s", rate);
    out.set("keys", keys);
    out.set("keys_per_s", keys_rate);
    Object ms;
    ms.set("p50", Percentile(latency, 0.50));
    ms.set("p90", Percentile(latency, 0.90));
    ms.set("p99", Percentile(latency, 0.99));
    ms.set("p999", Percentile(latency, 0.999));
    ms.set("max", Percentile(latency, 1.0));
    out.set("latency_ms", ms);
    Object overload_ms;
    overload_ms.set("p50", Percentile(overload, 0.50));
    overload_ms.set("p99", Percentile(overload, 0.99));
    overload_ms.set("max", Percentile(overload, 1.0));
    out.set("overloaded_503", overloaded);
    out.set("overload_latency_ms", overload_ms);
    out.set("errors", errors);
    if (server_cpu_s_ >= 0) {
      out.set("server_cpu_s", server_cpu_s_);
      out.set("server_cpu_us_per_request", per_request_us(server_cpu_s_));
    }
    if (self_cpu_s_ >= 0) {
      out.set("generator_cpu_s", self_cpu_s_);
      out.set("generator_cpu_us_per_request", per_request_us(self_cpu_s_));
    }
    options_.tiers.Report(tiers_from_, tiers_to_, requests, out);
    out.set("setup_errors", setup_errors);
    out.set("setup_overloaded", setup_overloaded);
    Poco::JSON::Array clients;
    for (double c : per_client) clients.add(c);
    out.set("per_client_requests_per_s", clients);
    out.set("per_client_min", *min_client);
    out.set("per_client_max", *max_client);
    Poco::JSON::Array error_samples;
    for (const std::string& sample : samples) error_samples.add(sample);
    out.set("error_samples", error_samples);
    out.set("idle_connections", options_.idle_connections);
    out.set("trickling_connections", options_.trickling_connections);
    std::ofstream file(options_.json_out);
    out.stringify(file, 2);
    file << "\n";
    if (!file) {
      std::cerr << "kms_load: cannot write " << options_.json_out << "\n";
      return 1;
    }
  }
  return errors == 0 && setup_errors == 0 ? 0 : 3;
}

int Main(int argc, char** argv) {
  Result<Options> options = ParseOptions(argc, argv);
  if (!options.ok()) {
    if (!options.error().message().empty()) {
      std::cerr << "kms_load: " << options.error().message() << "\n";
    }
    std::cerr << kUsage;
    return 64;
  }
  Poco::URI url;
  try {
    url = Poco::URI(options->url);
  } catch (const Poco::Exception& e) {
    std::cerr << "kms_load: bad --url: " << e.displayText() << "\n";
    return 64;
  }
  if (url.getScheme() != "https" || url.getHost().empty()) {
    std::cerr << "kms_load: --url must be https://HOST:PORT\n";
    return 64;
  }
  std::vector<std::string> tokens;
  for (const std::string& path : options->token_files) {
    Result<std::string> token = ReadToken(path);
    if (!token.ok()) {
      std::cerr << "kms_load: " << token.error().message() << "\n";
      for (std::string& t : tokens) ZeroizeString(t);
      return 64;
    }
    tokens.push_back(std::move(token).value());
  }
  // A write to a connection the server closed is an error of that request, not the end of us.
  ::signal(SIGPIPE, SIG_IGN);

  Result<SslCtxPtr> context = NewTlsClientContext(options->ca);
  if (!context.ok()) {
    std::cerr << "kms_load: " << context.error().message() << "\n";
    return 64;
  }
  Result<HttpsEndpoint> endpoint = HttpsEndpoint::Resolve(url.getHost(), url.getPort());
  if (!endpoint.ok()) {
    std::cerr << "kms_load: " << endpoint.error().message() << "\n";
    return 64;
  }

  Result<KmsInfo> info = Error(ErrorCode::kUnavailable, "");
  std::string info_body;
  {
    HttpsClientConnection connection(context->get(), *endpoint);
    const Progress progress =
        connection.Exchange("GET", kInfoPath, "", "", std::chrono::seconds(30));
    if (progress == Progress::kFailed || connection.answer().http_status != 200) {
      std::cerr << "kms_load: GET /kms/info failed: "
                << (progress == Progress::kFailed
                        ? connection.error()
                        : "HTTP " + std::to_string(connection.answer().http_status))
                << "\n";
      return 69;
    }
    info_body = connection.answer().body;
    info = client::ParseKmsInfo(info_body);
    if (!info.ok()) {
      std::cerr << "kms_load: " << info.error().ToString() << "\n";
      return 69;
    }
  }

  // The attack, held open for the whole run.
  std::unique_ptr<testing::ConnectionFlood> flood;
  if (options->idle_connections > 0 || options->trickling_connections > 0) {
    flood = std::make_unique<testing::ConnectionFlood>(url.getPort());
    const int idle_sources = static_cast<int>((options->idle_connections + 49) / 50);
    const int trickling_sources = static_cast<int>((options->trickling_connections + 49) / 50);
    if ((options->idle_connections > 0 &&
         !flood->OpenIdle(options->idle_connections,
                          testing::LoopbackSources(2, std::max(idle_sources, 1)))) ||
        (options->trickling_connections > 0 &&
         !flood->OpenTricklers(options->trickling_connections,
                               testing::LoopbackSources(200, std::max(trickling_sources, 1))))) {
      std::cerr << "kms_load: " << flood->error() << "\n";
      return 69;
    }
    std::cout << "holding " << options->idle_connections << " idle and "
              << options->trickling_connections << " trickling connections open\n";
  }

  LoadRun run(*options, std::move(info).value(), std::move(info_body), context->get(), *endpoint,
              std::move(tokens));
  run.Run();
  return run.Report();
}

}  // namespace
}  // namespace strongroom::bench

int main(int argc, char** argv) { return strongroom::bench::Main(argc, argv); }
