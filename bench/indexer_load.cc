// indexer_load: the load generator of issue 14's indexer bars, against a running kmsd, cored and
// indexerd (bench/run-indexer-load.sh sets them up). A client: it links the client library only.
//
//   indexer_load --mode post|rooms|search --core-url URL --kms-url URL --indexer-url URL
//       --ca PEM --cluster kms://HOST --kms-roots PEM --token-command CMD [--org acme]
//       [--users 16] [--seed 14] [--json-out FILE]
//     post:   [--clients 16] [--rooms-per-user 4] [--pool 64] [--bytes 200] [--duration 30]
//             [--warmup 5] [--rate R] [--poll-ms 5] [--drain-timeout 120] [--pid NAME=PID ...]
//             [--window-file FILE]
//     rooms:  --rooms N --searched M --rooms-out FILE
//     search: [--clients 1] [--duration 20] [--warmup 3] [--limit 50] [--pid NAME=PID ...]
//             [--window-file FILE]
//
// Users are user-<i>@<org>.test; their bearer tokens come from --token-command, run by /bin/sh
// with {subject} and {audience} (core, kms, indexer) replaced (as indexerd's token_command).
//
//   post    Setup (not timed): each user makes a KmsContext (direct HTTPS) and Conversations and
//           creates --rooms-per-user rooms through the SDK with the next user as member (the KMS
//           makes the organization's indexer cloudAgent of each: its policy), sends one message
//           in each through the SDK (the room's key is then in the user's cache), and encrypts a
//           pool of --pool messages per room under that real key (EncryptText: the JWE the SDK
//           posts), each ~--bytes of Zipf words (zipf_words.h). Timed: --clients posting clients
//           (client c posts as user c % users, round robin over that user's rooms and the pool,
//           a fresh clientActivityId per post) for --warmup + --duration seconds; closed loop, or
//           --rate R posts/s over all clients. Pre-encrypting keeps the generator's CPU to the
//           HTTPS posts. Meanwhile a poller reads indexerd's GET /health every --poll-ms: its
//           cursor (the stream's seq whose tokens are put and committed), `indexed`, `skipped`
//           and lagP50Ms/lagP99Ms. Reported over the --duration window: posted/s (acknowledged
//           posts), indexed/s (indexerd's `indexed` counter), the lag of every post acknowledged
//           in the window from its acknowledgement to the first poll whose cursor reached its seq
//           (searchable: its tokens are in the core; at most one poll late), indexerd's own lag
//           figures, CPU seconds of every --pid and of this process (--window-file is created
//           when the window starts, for a profiler to begin). Then the drain (until the
//           cursor reaches the last acknowledged seq), and one search through indexerd for a word
//           sent once (a message posted after the run): it must find exactly that activity.
//   rooms   User 0 (the searcher) creates --searched rooms with user 1 as member; users 1.. create
//           the other --rooms minus --searched rooms (the searcher not a member). Every room
//           through the SDK, so the KMS authorizes indexerd on it and its "create" (the title)
//           makes indexerd record the room. Waits until indexerd's cursor reaches the last
//           creation; writes "<conversation id> searched|other" lines to --rooms-out.
//   search  --clients closed-loop clients as user 0 (an "indexer" token), POST /v1/search
//           {"query": two distinct Zipf words, "limit": --limit} for --warmup + --duration
//           seconds; latency of every answer in the window, p50/p90/p99/max, matches per query
//           (none at all fails: the queries' tokens would not be the index's).
//
// Exit status 1 when a check fails (a post refused, an activity skipped or not indexed after the
// drain, the sent word not found once, a search answered other than 200). Tokens, keys and texts
// are never printed.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/UUIDGenerator.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "https_client.h"
#include "load_support.h"
#include "strongroom/client/content.h"
#include "strongroom/client/conversation.h"
#include "strongroom/client/core_client.h"
#include "strongroom/client/kms_context.h"
#include "zipf_words.h"

namespace strongroom::bench {
namespace {

using Clock = std::chrono::steady_clock;
using client::internal::HttpsClient;

constexpr std::size_t kMaxAnswer = 4 * 1024 * 1024;

struct Options {
  std::string mode;
  std::string core_url, kms_url, indexer_url, ca, cluster, kms_roots, token_command;
  std::string org = "acme";
  std::size_t users = 16;
  std::size_t clients = 0;  // default: 16 for post, 1 for search
  std::size_t rooms_per_user = 4;
  std::size_t pool = 64;
  std::size_t bytes = 200;
  double duration_s = 0;  // default: 30 for post, 20 for search
  double warmup_s = -1;   // default: 5 for post, 3 for search
  double rate = 0;
  std::size_t poll_ms = 5;
  double drain_timeout_s = 120;
  std::size_t rooms = 0, searched = 0;
  std::string rooms_out;
  std::size_t limit = 50;
  std::uint64_t seed = 14;
  std::vector<std::pair<std::string, std::string>> pids;  // name, pid
  std::string json_out;
  std::string window_file;  // created when the measured window starts (for a profiler)
};

[[noreturn]] void Die(const std::string& what) {
  std::cerr << "indexer_load: " << what << "\n";
  std::exit(1);
}

template <typename T>
T Must(Result<T> result, const std::string& what) {
  if (!result.ok()) Die(what + ": " + result.error().ToString());
  return std::move(result).value();
}

Options Parse(int argc, char** argv) {
  Options o;
  std::map<std::string, std::string*> text = {{"mode", &o.mode},
                                              {"core-url", &o.core_url},
                                              {"kms-url", &o.kms_url},
                                              {"indexer-url", &o.indexer_url},
                                              {"ca", &o.ca},
                                              {"cluster", &o.cluster},
                                              {"kms-roots", &o.kms_roots},
                                              {"token-command", &o.token_command},
                                              {"org", &o.org},
                                              {"rooms-out", &o.rooms_out},
                                              {"json-out", &o.json_out},
                                              {"window-file", &o.window_file}};
  std::map<std::string, std::pair<std::size_t*, std::size_t>> counts = {
      {"users", {&o.users, 1024}},
      {"clients", {&o.clients, 1024}},
      {"rooms-per-user", {&o.rooms_per_user, 1000}},
      {"pool", {&o.pool, 100000}},
      {"bytes", {&o.bytes, 60000}},
      {"poll-ms", {&o.poll_ms, 1000}},
      {"rooms", {&o.rooms, 100000}},
      {"searched", {&o.searched, 100000}},
      {"limit", {&o.limit, 200}}};
  std::map<std::string, std::pair<double*, double>> seconds = {
      {"duration", {&o.duration_s, 86400}},
      {"warmup", {&o.warmup_s, 3600}},
      {"rate", {&o.rate, 1e6}},
      {"drain-timeout", {&o.drain_timeout_s, 86400}}};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0 || i + 1 >= argc) Die("see the comment at the top for usage");
    const std::string name = arg.substr(2), value = argv[++i];
    if (auto t = text.find(name); t != text.end()) {
      *t->second = value;
    } else if (auto c = counts.find(name); c != counts.end()) {
      *c->second.first = Must(ParseCount(name, value, 0, c->second.second), "options");
    } else if (auto s = seconds.find(name); s != seconds.end()) {
      *s->second.first = Must(ParseSeconds(name, value, s->second.second), "options");
    } else if (name == "seed") {
      o.seed = Must(ParseCount(name, value, 0, ~std::size_t{0} >> 1), "options");
    } else if (name == "pid") {
      const std::size_t eq = value.find('=');
      if (eq == std::string::npos) Die("--pid takes NAME=PID");
      o.pids.emplace_back(value.substr(0, eq), value.substr(eq + 1));
    } else {
      Die("unknown option --" + name);
    }
  }
  if (o.mode != "post" && o.mode != "rooms" && o.mode != "search") {
    Die("--mode is post, rooms or search");
  }
  if (o.core_url.empty() || o.kms_url.empty() || o.indexer_url.empty() || o.ca.empty() ||
      o.cluster.empty() || o.kms_roots.empty() || o.token_command.empty()) {
    Die("--core-url, --kms-url, --indexer-url, --ca, --cluster, --kms-roots and --token-command "
        "are required");
  }
  const bool post = o.mode == "post";
  if (o.clients == 0) o.clients = post ? 16 : 1;
  if (o.duration_s == 0) o.duration_s = post ? 30 : 20;
  if (o.warmup_s < 0) o.warmup_s = post ? 5 : 3;
  if (o.mode == "rooms" &&
      (o.rooms_out.empty() || o.searched == 0 || o.searched > o.rooms || o.users < 3)) {
    Die("rooms needs --rooms-out, 0 < --searched <= --rooms and at least 3 users");
  }
  if (post && (o.users < 2 || o.rooms_per_user == 0 || o.pool == 0 || o.bytes < 16)) {
    Die("post needs 2 users or more, --rooms-per-user, --pool above 0 and --bytes of 16 or more");
  }
  return o;
}

std::string Subject(const Options& o, std::size_t i) {
  return "user-" + std::to_string(i) + "@" + o.org + ".test";
}

std::string Token(const Options& o, std::size_t user, const std::string& audience) {
  return Must(CommandToken(o.token_command, Subject(o, user), audience), "token");
}

struct User {
  std::string id;
  std::unique_ptr<client::CoreClient> core;
  std::unique_ptr<client::KmsContext> kms;
  std::unique_ptr<client::Conversations> sdk;
};

User MakeUser(const Options& o, std::size_t i) {
  User user;
  user.id = Subject(o, i);
  user.core =
      Must(client::CoreClient::New({o.core_url, o.ca, client::StaticToken(Token(o, i, "core"))}),
           "core client");
  client::KmsContextOptions kms;
  kms.client_id = "indexer-load-" + std::to_string(i);
  kms.kms_token = client::StaticToken(Token(o, i, "kms"));
  kms.trust = {o.cluster, o.kms_roots};
  user.kms = Must(client::KmsContext::OverHttps(kms, {o.kms_url, o.ca}), "KMS context");
  client::ConversationsOptions sdk;
  sdk.user_id = user.id;
  sdk.pool.target = 8;
  user.sdk = Must(client::Conversations::New(*user.core, *user.kms, sdk), "conversations");
  return user;
}

// Runs `work(i)` for i in [0, n) on n threads and waits.
void OnThreads(std::size_t n, const std::function<void(std::size_t)>& work) {
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < n; ++i) threads.emplace_back(work, i);
  for (std::thread& t : threads) t.join();
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// ---- indexerd's /health ------------------------------------------------------------------------

struct Health {
  Clock::time_point at;
  std::int64_t cursor = 0, indexed = 0, skipped = 0, lag_p50 = 0, lag_p99 = 0;
};

Result<Health> ReadHealth(HttpsClient& https) {
  SR_ASSIGN_OR_RETURN(client::internal::HttpAnswer answer,
                      https.Exchange("GET", "/health", "", "", "", kMaxAnswer));
  Health h;
  h.at = Clock::now();
  try {
    Poco::JSON::Object::Ptr json =
        Poco::JSON::Parser().parse(answer.body).extract<Poco::JSON::Object::Ptr>();
    Poco::JSON::Object::Ptr core = json->getObject("core");
    if (!core) return Error(ErrorCode::kDataLoss, "indexerd's /health has no core");
    h.cursor = core->optValue<std::int64_t>("cursor", 0);
    h.indexed = core->optValue<std::int64_t>("indexed", 0);
    h.skipped = core->optValue<std::int64_t>("skipped", 0);
    h.lag_p50 = core->optValue<std::int64_t>("lagP50Ms", 0);
    h.lag_p99 = core->optValue<std::int64_t>("lagP99Ms", 0);
  } catch (const Poco::Exception& e) {
    return Error(ErrorCode::kDataLoss, "indexerd's /health: " + e.displayText());
  }
  return h;
}

// Polls /health until its cursor reaches `seq` or `timeout` passes; the last answer.
Health WaitForCursor(HttpsClient& https, std::int64_t seq, double timeout_s) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  Health h = Must(ReadHealth(https), "indexerd /health");
  while (h.cursor < seq && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    h = Must(ReadHealth(https), "indexerd /health");
  }
  return h;
}

std::unique_ptr<HttpsClient> Indexer(const Options& o) {
  return Must(HttpsClient::New(o.indexer_url, o.ca, std::chrono::seconds(30), "indexerd"),
              "indexerd client");
}

// CPU seconds of every --pid, and of this process, now.
std::vector<double> CpuNow(const Options& o) {
  std::vector<double> cpu;
  for (const auto& [name, pid] : o.pids) cpu.push_back(ProcessCpuSeconds(pid));
  cpu.push_back(ProcessCpuSeconds("self"));
  return cpu;
}

std::string CpuLine(const Options& o, const std::vector<double>& from,
                    const std::vector<double>& to, Poco::JSON::Object& json) {
  std::ostringstream line;
  for (std::size_t i = 0; i <= o.pids.size(); ++i) {
    const std::string name = i < o.pids.size() ? o.pids[i].first : "indexer_load";
    const double s = to[i] - from[i];
    line << (i ? ", " : "") << name << " " << std::fixed << std::setprecision(1) << s << " s";
    json.set("cpu_s_" + name, s);
  }
  return line.str();
}

// A search through indexerd: its status, and the matches' (activity id) when 200.
struct SearchAnswer {
  int status = 0;
  std::vector<std::string> activity_ids;
};

Result<SearchAnswer> Search(HttpsClient& https, const std::string& token, const std::string& query,
                            std::size_t limit, const std::string& room = "") {
  Poco::JSON::Object body;
  body.set("query", query);
  body.set("limit", limit);
  if (!room.empty()) body.set("room", room);
  std::ostringstream text;
  body.stringify(text);
  SR_ASSIGN_OR_RETURN(
      client::internal::HttpAnswer answer,
      https.Exchange("POST", "/v1/search", token, "application/json", text.str(), kMaxAnswer));
  SearchAnswer out;
  out.status = answer.status;
  if (answer.status != 200) return out;
  try {
    Poco::JSON::Object::Ptr json =
        Poco::JSON::Parser().parse(answer.body).extract<Poco::JSON::Object::Ptr>();
    Poco::JSON::Array::Ptr items = json->getArray("items");
    for (unsigned i = 0; items && i < items->size(); ++i) {
      out.activity_ids.push_back(items->getObject(i)->getValue<std::string>("activityId"));
    }
  } catch (const Poco::Exception& e) {
    return Error(ErrorCode::kDataLoss, "indexerd's search answer: " + e.displayText());
  }
  return out;
}

void WriteJson(const Options& o, const Poco::JSON::Object& json) {
  if (o.json_out.empty()) return;
  std::ofstream out(o.json_out);
  json.stringify(out, 2);
  out << "\n";
  if (!out) Die("cannot write --json-out");
}

// ---- post --------------------------------------------------------------------------------------

struct Room {
  std::string id;
  std::vector<std::string> pool;  // JWEs under the room's current key
};

struct Ack {
  Clock::time_point at;
  std::int64_t seq;
};

int RunPost(const Options& o) {
  std::printf("setup: %zu users, %zu rooms each, a pool of %zu pre-encrypted messages per room\n",
              o.users, o.rooms_per_user, o.pool);
  std::fflush(stdout);
  std::vector<User> users(o.users);
  std::vector<std::vector<Room>> rooms(o.users);
  std::atomic<std::size_t> setup_posts{0};
  const auto setup_start = Clock::now();
  OnThreads(o.users, [&](std::size_t u) {
    users[u] = MakeUser(o, u);
    const Zipf zipf(kVocabulary, kZipfExponent);
    std::mt19937_64 rng(o.seed * 1000003 + u);
    for (std::size_t r = 0; r < o.rooms_per_user; ++r) {
      const client::Conversation c =
          Must(users[u].sdk->Create("load room " + std::to_string(u) + "." + std::to_string(r),
                                    {Subject(o, (u + 1) % o.users)}),
               "creating a room");
      Must(users[u].sdk->Send(c.id, ZipfMessage(zipf, rng, o.bytes)), "the first message");
      ++setup_posts;
      const client::Conversation now = Must(users[u].sdk->Get(c.id), "reading the room");
      const client::KmsKey key =
          Must(users[u].sdk->cache().ForEncryption(now.current_key_uri), "the room's key");
      Room room{c.id, {}};
      for (std::size_t m = 0; m < o.pool; ++m) {
        room.pool.push_back(Must(
            client::EncryptText(key.key, key.uri, ZipfMessage(zipf, rng, o.bytes)), "encrypting"));
      }
      rooms[u].push_back(std::move(room));
    }
  });
  std::printf("setup done in %.1f s: %zu rooms\n",
              std::chrono::duration<double>(Clock::now() - setup_start).count(),
              o.users * o.rooms_per_user);

  std::unique_ptr<HttpsClient> health = Indexer(o);
  std::int64_t setup_seq = 0;
  for (std::size_t u = 0; u < o.users; ++u) {
    for (const Room& r : rooms[u]) {
      setup_seq = std::max(setup_seq, Must(users[u].sdk->Get(r.id, true), "a room").last_seq);
    }
  }
  const Health before = WaitForCursor(*health, setup_seq, o.drain_timeout_s);
  if (before.cursor < setup_seq) Die("indexerd did not index the setup's activities in time");

  // Posting clients.
  std::vector<std::unique_ptr<client::CoreClient>> posters(o.clients);
  for (std::size_t c = 0; c < o.clients; ++c) {
    posters[c] = Must(client::CoreClient::New(
                          {o.core_url, o.ca, client::StaticToken(Token(o, c % o.users, "core"))}),
                      "core client");
  }
  std::vector<std::vector<Ack>> acks(o.clients);
  std::vector<std::vector<float>> post_ms(o.clients);
  std::atomic<bool> stop{false};
  std::atomic<std::size_t> failures{0};
  std::mutex failure_mutex;
  std::string first_failure;
  const auto start = Clock::now() + std::chrono::milliseconds(100);
  const auto window_start = start + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(o.warmup_s));
  const auto window_end = window_start + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(o.duration_s));
  std::vector<Health> samples;  // the poller's until it is joined
  std::atomic<std::int64_t> polled_cursor{0};
  std::thread poller([&] {
    while (!stop.load()) {
      Result<Health> h = ReadHealth(*health);
      if (h.ok()) {
        samples.push_back(*h);
        polled_cursor = h->cursor;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(o.poll_ms));
    }
  });
  std::vector<std::thread> threads;
  for (std::size_t c = 0; c < o.clients; ++c) {
    threads.emplace_back([&, c] {
      const std::vector<Room>& mine = rooms[c % o.users];
      const double interval_s = o.rate > 0 ? double(o.clients) / o.rate : 0;
      std::this_thread::sleep_until(
          start + std::chrono::duration_cast<Clock::duration>(
                      std::chrono::duration<double>(interval_s * double(c) / double(o.clients))));
      const auto first = Clock::now();
      for (std::size_t n = 0; Clock::now() < window_end && !stop.load(); ++n) {
        if (interval_s > 0) {
          std::this_thread::sleep_until(first +
                                        std::chrono::duration_cast<Clock::duration>(
                                            std::chrono::duration<double>(interval_s * double(n))));
        }
        const Room& room = mine[n % mine.size()];
        const std::string& content = room.pool[(n / mine.size() + c) % room.pool.size()];
        const auto sent = Clock::now();
        Result<client::Activity> posted =
            posters[c]->Post(room.id, content, {},
                             Poco::UUIDGenerator::defaultGenerator().createRandom().toString());
        const auto acked = Clock::now();
        if (!posted.ok()) {
          ++failures;
          std::lock_guard<std::mutex> lock(failure_mutex);
          if (first_failure.empty()) first_failure = posted.error().ToString();
          continue;
        }
        acks[c].push_back({acked, posted->seq});
        post_ms[c].push_back(static_cast<float>(Ms(acked - sent)));
      }
    });
  }
  std::this_thread::sleep_until(window_start);
  const std::vector<double> cpu_start = CpuNow(o);
  if (!o.window_file.empty()) std::ofstream(o.window_file) << "window\n";
  std::this_thread::sleep_until(window_end);
  const std::vector<double> cpu_end = CpuNow(o);
  for (std::thread& t : threads) t.join();
  const auto posting_done = Clock::now();
  std::int64_t last_seq = 0;
  std::size_t total_posts = setup_posts;
  for (const auto& a : acks) {
    total_posts += a.size();
    for (const Ack& ack : a) last_seq = std::max(last_seq, ack.seq);
  }
  // The drain: until the cursor reaches the last acknowledged post (the poller still samples).
  while (Clock::now() < posting_done + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(o.drain_timeout_s))) {
    if (polled_cursor.load() >= last_seq) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  stop = true;
  poller.join();
  const Health drained = Must(ReadHealth(*health), "indexerd /health");
  const double drain_s = std::chrono::duration<double>(drained.at - posting_done).count();

  // The figures of the window.
  if (samples.empty()) Die("indexerd's /health never answered during the run");
  for (std::size_t i = 1; i < samples.size(); ++i) {
    samples[i].cursor = std::max(samples[i].cursor, samples[i - 1].cursor);
  }
  const auto at = [&](Clock::time_point t) -> const Health& {  // the last sample at or before t
    auto it = std::upper_bound(samples.begin(), samples.end(), t,
                               [](Clock::time_point v, const Health& h) { return v < h.at; });
    return it == samples.begin() ? samples.front() : *std::prev(it);
  };
  std::vector<std::uint32_t> lag_us, latency_us;
  std::size_t posted = 0, never = 0;
  for (std::size_t c = 0; c < o.clients; ++c) {
    for (std::size_t i = 0; i < acks[c].size(); ++i) {
      const Ack& ack = acks[c][i];
      if (ack.at < window_start || ack.at > window_end) continue;
      ++posted;
      latency_us.push_back(static_cast<std::uint32_t>(post_ms[c][i] * 1000));
      auto reached = std::lower_bound(
          samples.begin(), samples.end(), ack,
          [](const Health& h, const Ack& a) { return h.at < a.at || h.cursor < a.seq; });
      // lower_bound needs a partition: samples are sorted by time and (made) monotonic in cursor.
      if (reached == samples.end()) {
        ++never;
        continue;
      }
      lag_us.push_back(static_cast<std::uint32_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(reached->at - ack.at).count()));
    }
  }
  std::sort(lag_us.begin(), lag_us.end());
  std::sort(latency_us.begin(), latency_us.end());
  const Health& h0 = at(window_start);
  const Health& h1 = at(window_end);
  const double window_s = std::chrono::duration<double>(h1.at - h0.at).count();
  const double indexed_per_s = window_s > 0 ? double(h1.indexed - h0.indexed) / window_s : 0;
  double poll_gap_ms = 0;
  for (std::size_t i = 1; i < samples.size(); ++i) {
    poll_gap_ms = std::max(poll_gap_ms, Ms(samples[i].at - samples[i - 1].at));
  }

  // The word sent once: posted after the run by user 0, found through indexerd.
  std::mt19937_64 rng(std::random_device{}());
  std::string once = "zq";
  for (int i = 0; i < 10; ++i) once.push_back(static_cast<char>('a' + rng() % 26));
  const client::Activity sent =
      Must(users[0].sdk->Send(rooms[0][0].id, "the word sent once: " + once), "the word sent once");
  ++total_posts;
  const Health found_at = WaitForCursor(*health, sent.seq, o.drain_timeout_s);
  std::unique_ptr<HttpsClient> searcher = Indexer(o);
  const SearchAnswer answer =
      Must(Search(*searcher, Token(o, 0, "indexer"), once, 10), "searching the word sent once");
  const bool once_found = answer.status == 200 && answer.activity_ids.size() == 1 &&
                          answer.activity_ids[0] == sent.id && found_at.cursor >= sent.seq;

  Poco::JSON::Object json;
  std::printf("window %.1f s (after %.1f s of warm-up), %zu posting clients%s\n", o.duration_s,
              o.warmup_s, o.clients,
              o.rate > 0 ? (", open loop at " + std::to_string(long(o.rate)) + "/s").c_str()
                         : ", closed loop");
  std::printf(
      "posted %zu in the window: %.0f posts/s (post latency p50 %.2f ms, p99 %.2f ms); "
      "%zu refused or failed (all the run)\n",
      posted, double(posted) / o.duration_s, Percentile(latency_us, 0.5),
      Percentile(latency_us, 0.99), failures.load());
  std::printf("indexed (indexerd's counter) %lld in %.1f s: %.0f activities/s\n",
              static_cast<long long>(h1.indexed - h0.indexed), window_s, indexed_per_s);
  std::printf(
      "lag acknowledged -> searchable (cursor past it; %zu ms polls, largest gap %.1f ms): "
      "p50 %.1f ms, p99 %.1f ms, max %.1f ms (%zu posts; %zu never reached)\n",
      o.poll_ms, poll_gap_ms, Percentile(lag_us, 0.5), Percentile(lag_us, 0.99),
      Percentile(lag_us, 1.0), lag_us.size(), never);
  std::printf(
      "indexerd's lag (publication -> tokens put, its last 10,000) at the window's end: "
      "p50 %lld ms, p99 %lld ms; after the drain p50 %lld ms, p99 %lld ms\n",
      static_cast<long long>(h1.lag_p50), static_cast<long long>(h1.lag_p99),
      static_cast<long long>(drained.lag_p50), static_cast<long long>(drained.lag_p99));
  std::printf("CPU in the window: %s\n", CpuLine(o, cpu_start, cpu_end, json).c_str());
  std::printf(
      "drain: cursor at the last post (seq %lld) %.2f s after posting stopped; indexerd "
      "indexed %lld, skipped %lld in all\n",
      static_cast<long long>(last_seq), drain_s, static_cast<long long>(drained.indexed),
      static_cast<long long>(drained.skipped));
  std::printf("the word sent once: %s\n",
              once_found ? "found through indexerd, exactly its activity"
                         : ("NOT found as expected (status " + std::to_string(answer.status) +
                            ", " + std::to_string(answer.activity_ids.size()) + " matches)")
                               .c_str());
  std::printf("total_posts %zu rooms %zu\n", total_posts, o.users * o.rooms_per_user);

  json.set("posted", posted);
  json.set("posted_per_s", double(posted) / o.duration_s);
  json.set("indexed_per_s", indexed_per_s);
  json.set("lag_p50_ms", Percentile(lag_us, 0.5));
  json.set("lag_p99_ms", Percentile(lag_us, 0.99));
  json.set("lag_max_ms", Percentile(lag_us, 1.0));
  json.set("indexerd_lag_p50_ms", h1.lag_p50);
  json.set("indexerd_lag_p99_ms", h1.lag_p99);
  json.set("post_p50_ms", Percentile(latency_us, 0.5));
  json.set("post_p99_ms", Percentile(latency_us, 0.99));
  json.set("drain_s", drain_s);
  json.set("failures", failures.load());
  json.set("skipped", found_at.skipped);
  json.set("indexed_total", found_at.indexed);  // the word sent once included
  json.set("total_posts", total_posts);
  json.set("rooms", o.users * o.rooms_per_user);
  json.set("once_found", once_found);
  WriteJson(o, json);

  int status = 0;
  if (failures.load() != 0) {
    std::cerr << "FAILED: " << failures.load() << " posts failed; the first: " << first_failure
              << "\n";
    status = 1;
  }
  if (drained.cursor < last_seq || never != 0) {
    std::cerr << "FAILED: indexerd's cursor did not reach the last post in the drain time\n";
    status = 1;
  }
  if (found_at.skipped != 0) {
    std::cerr << "FAILED: indexerd skipped " << found_at.skipped << " activities\n";
    status = 1;
  }
  if (!once_found) status = 1;
  for (User& u : users) (void)u.kms->Close();
  return status;
}

// ---- rooms -------------------------------------------------------------------------------------

int RunRooms(const Options& o) {
  std::vector<User> users(o.users);
  // User 0 creates the searched rooms; users 1.. the others, spread evenly.
  std::vector<std::vector<std::string>> made(o.users);
  const std::size_t others = o.rooms - o.searched;
  const auto started = Clock::now();
  std::atomic<std::int64_t> last_seq{0};
  OnThreads(o.users, [&](std::size_t u) {
    users[u] = MakeUser(o, u);
    const std::size_t count =
        u == 0 ? o.searched : others / (o.users - 1) + (u - 1 < others % (o.users - 1) ? 1 : 0);
    // The searcher's rooms have user 1; user u's have u + 1 (user 1 after the last).
    const std::string member = Subject(o, u == 0 || u + 1 == o.users ? 1 : u + 1);
    for (std::size_t r = 0; r < count; ++r) {
      const client::Conversation c =
          Must(users[u].sdk->Create("bench room " + std::to_string(u) + "." + std::to_string(r),
                                    {member}),
               "creating a room");
      made[u].push_back(c.id);
      std::int64_t seen = last_seq.load();
      while (c.last_seq > seen && !last_seq.compare_exchange_weak(seen, c.last_seq)) {
      }
    }
  });
  std::ofstream out(o.rooms_out);
  for (std::size_t u = 0; u < o.users; ++u) {
    for (const std::string& id : made[u]) out << id << (u == 0 ? " searched\n" : " other\n");
  }
  if (!out) Die("cannot write --rooms-out");
  out.close();
  std::unique_ptr<HttpsClient> health = Indexer(o);
  const Health h = WaitForCursor(*health, last_seq.load(), o.drain_timeout_s);
  std::printf(
      "rooms: %zu created through the SDK in %.1f s (%zu searched by %s); indexerd's "
      "cursor %lld of %lld, indexed %lld, skipped %lld\n",
      o.rooms, std::chrono::duration<double>(Clock::now() - started).count(), o.searched,
      Subject(o, 0).c_str(), static_cast<long long>(h.cursor),
      static_cast<long long>(last_seq.load()), static_cast<long long>(h.indexed),
      static_cast<long long>(h.skipped));
  for (User& u : users) (void)u.kms->Close();
  if (h.cursor < last_seq.load() || h.skipped != 0) {
    std::cerr << "FAILED: indexerd did not index every room's creation\n";
    return 1;
  }
  return 0;
}

// ---- search ------------------------------------------------------------------------------------

int RunSearch(const Options& o) {
  const std::string token = Token(o, 0, "indexer");
  const Zipf zipf(kVocabulary, kZipfExponent);
  std::vector<std::unique_ptr<HttpsClient>> clients;
  for (std::size_t c = 0; c < o.clients; ++c) clients.push_back(Indexer(o));
  std::vector<std::vector<std::uint32_t>> latency(o.clients);
  std::vector<std::size_t> matches(o.clients, 0), refused(o.clients, 0);
  std::vector<std::map<int, std::size_t>> statuses(o.clients);
  const auto start = Clock::now();
  const auto window_start = start + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(o.warmup_s));
  const auto window_end = window_start + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(o.duration_s));
  std::vector<double> cpu_start, cpu_end;
  std::thread sampler([&] {
    std::this_thread::sleep_until(window_start);
    cpu_start = CpuNow(o);
    if (!o.window_file.empty()) std::ofstream(o.window_file) << "window\n";
    std::this_thread::sleep_until(window_end);
    cpu_end = CpuNow(o);
  });
  OnThreads(o.clients, [&](std::size_t c) {
    std::mt19937_64 rng(o.seed * 7919 + c);
    while (Clock::now() < window_end) {
      const std::string first = SyllableWord(zipf(rng));
      std::string second = SyllableWord(zipf(rng));
      while (second == first) second = SyllableWord(zipf(rng));
      const auto sent = Clock::now();
      Result<SearchAnswer> answer = Search(*clients[c], token, first + " " + second, o.limit);
      const auto done = Clock::now();
      if (sent < window_start) continue;
      if (!answer.ok()) {
        ++statuses[c][0];
        continue;
      }
      ++statuses[c][answer->status];
      if (answer->status != 200) continue;
      latency[c].push_back(static_cast<std::uint32_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(done - sent).count()));
      matches[c] += answer->activity_ids.size();
    }
  });
  sampler.join();
  std::vector<std::uint32_t> all;
  std::size_t total_matches = 0;
  std::map<int, std::size_t> by_status;
  for (std::size_t c = 0; c < o.clients; ++c) {
    all.insert(all.end(), latency[c].begin(), latency[c].end());
    total_matches += matches[c];
    for (const auto& [status, n] : statuses[c]) by_status[status] += n;
  }
  std::sort(all.begin(), all.end());
  Poco::JSON::Object json;
  std::printf(
      "search through indexerd as %s, %zu client(s), 2 Zipf words, limit %zu, %.0f s: "
      "%zu answered 200 (%.0f/s); p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms; "
      "%.1f matches per query\n",
      Subject(o, 0).c_str(), o.clients, o.limit, o.duration_s, all.size(),
      double(all.size()) / o.duration_s, Percentile(all, 0.5), Percentile(all, 0.9),
      Percentile(all, 0.99), Percentile(all, 1.0),
      all.empty() ? 0.0 : double(total_matches) / double(all.size()));
  std::printf("CPU in the window: %s\n", CpuLine(o, cpu_start, cpu_end, json).c_str());
  json.set("clients", o.clients);
  json.set("answered", all.size());
  json.set("p50_ms", Percentile(all, 0.5));
  json.set("p90_ms", Percentile(all, 0.9));
  json.set("p99_ms", Percentile(all, 0.99));
  json.set("max_ms", Percentile(all, 1.0));
  json.set("matches_per_query", all.empty() ? 0.0 : double(total_matches) / double(all.size()));
  WriteJson(o, json);
  int status = 0;
  if (all.empty() || total_matches == 0) {
    // Every query's words are common in the rooms: no match at all is tokens that differ.
    std::cerr << "FAILED: no search answered, or none found anything\n";
    status = 1;
  }
  for (const auto& [code, n] : by_status) {
    if (code == 200) continue;
    std::cerr << "FAILED: " << n << " searches answered "
              << (code == 0 ? std::string("nothing (transport)") : std::to_string(code)) << "\n";
    status = 1;
  }
  return status;
}

}  // namespace
}  // namespace strongroom::bench

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  const strongroom::bench::Options options = strongroom::bench::Parse(argc, argv);
  Poco::Net::initializeSSL();
  int status = 0;
  if (options.mode == "post") {
    status = strongroom::bench::RunPost(options);
  } else if (options.mode == "rooms") {
    status = strongroom::bench::RunRooms(options);
  } else {
    status = strongroom::bench::RunSearch(options);
  }
  Poco::Net::uninitializeSSL();
  return status;
}
