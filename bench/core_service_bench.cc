// The core service alone, in process (no HTTP, TLS or WebSockets; bench/run-core-load.sh adds
// those): posting activities through CoreService::PostActivity with its group commit (one
// transaction and one full fsync per batch) at 1, 4 and 16 threads, and reading a history page
// of 50 at random cursors from a conversation of 1,000,000 activities; and starting the service
// over a files directory of 200,000 recorded blobs (New() looks each one up, to move aside blobs a
// crash left unrecorded).
//
// Hermetic: the SQLite database lives in a temporary directory of its own. Post contents are
// compact JWEs made before the timed loop (sealing is the client's work). The history fixture is
// filled once per process through CoreService (64 posting threads; about 2-3 minutes on the
// 2-vCPU machine of docs/benchmarks.md); SR_BENCH_HISTORY_ACTIVITIES changes its size.
//
//   build-core-load/bench/core_service_bench --benchmark_min_time=2
#include <Poco/Data/Session.h>
#include <Poco/UUIDGenerator.h>
#include <benchmark/benchmark.h>
#include <openssl/rand.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "strongroom/common/database.h"
#include "strongroom/common/jose.h"
#include "strongroom/core/core_service.h"

namespace strongroom::bench {
namespace {

using core::Caller;
using core::CoreService;

constexpr std::size_t kParticipants = 10;
constexpr std::size_t kContentBytes = 200;
constexpr std::size_t kContentsPerThread = 256;

void Die(const std::string& what) {
  std::fprintf(stderr, "core_service_bench: %s\n", what.c_str());
  std::exit(1);
}

template <typename T>
T Must(Result<T> result, const char* what) {
  if (!result.ok()) Die(std::string(what) + ": " + result.error().ToString());
  return std::move(result).value();
}

std::string Uuid() { return Poco::UUIDGenerator::defaultGenerator().createRandom().toString(); }

// A database, a service and one conversation of kParticipants users.
struct Store {
  std::filesystem::path dir;
  std::unique_ptr<Database> db;
  std::unique_ptr<CoreService> service;
  Caller caller{"user-0@acme.test", "acme"};
  std::string conversation;
  std::string key_uri;
  std::array<std::uint8_t, 32> key{};

  explicit Store(const char* name) {
    char pattern[] = "/tmp/sr-core-bench.XXXXXX";
    if (mkdtemp(pattern) == nullptr) Die("mkdtemp failed");
    dir = std::filesystem::path(pattern) / name;
    std::filesystem::create_directories(dir / "files");
    db = Must(Database::OpenSqlite((dir / "core.db").string(), CoreService::Migrations()), "db");
    core::CoreServiceConfig config;
    config.files_dir = (dir / "files").string();
    service = Must(CoreService::New(config, *db), "service");
    core::NewConversation create;
    create.kms_resource_uri = "kms://kms.bench.test/resources/" + Uuid();
    create.key_uri = "kms://kms.bench.test/keys/" + Uuid();
    for (std::size_t i = 0; i < kParticipants; ++i) {
      create.participants.push_back("user-" + std::to_string(i) + "@acme.test");
    }
    conversation = Must(service->CreateConversation(caller, create), "create").id;
    key_uri = create.key_uri;
    RAND_bytes(key.data(), static_cast<int>(key.size()));
  }

  ~Store() {
    service.reset();
    db.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir.parent_path(), ignored);
  }

  std::vector<std::string> Contents(std::size_t count) const {
    std::vector<std::string> out;
    std::vector<std::uint8_t> plaintext(kContentBytes);
    for (std::size_t i = 0; i < count; ++i) {
      RAND_bytes(plaintext.data(), static_cast<int>(plaintext.size()));
      out.push_back(Must(jose::EncryptDir(key, key_uri, plaintext), "seal"));
    }
    return out;
  }
};

Store* PostStore() {
  static Store* store = new Store("post");
  return store;
}

std::size_t HistoryActivities() {
  const char* env = std::getenv("SR_BENCH_HISTORY_ACTIVITIES");
  return env != nullptr && *env != '\0' ? std::strtoull(env, nullptr, 10) : 1000000;
}

// The conversation of HistoryActivities() posts, filled on first use.
Store* HistoryStore() {
  static Store* store = [] {
    auto* s = new Store("history");
    const std::size_t total = HistoryActivities();
    std::atomic<std::size_t> next{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 64; ++t) {
      threads.emplace_back([&] {
        const std::vector<std::string> contents = s->Contents(16);
        for (std::size_t n = next.fetch_add(1); n < total; n = next.fetch_add(1)) {
          core::NewPost post;
          post.content = contents[n % contents.size()];
          Must(s->service->PostActivity(s->caller, s->conversation, post), "preload post");
        }
      });
    }
    for (std::thread& t : threads) t.join();
    return s;
  }();
  return store;
}

// One post per iteration, with a clientActivityId of its own; every thread posts as the same
// participant into one conversation, so the writer batches whatever is queued when it starts a
// transaction.
void BM_Post(benchmark::State& state) {
  Store* store = PostStore();
  const std::vector<std::string> contents = store->Contents(kContentsPerThread);
  std::size_t n = 0;
  // Every SDK post carries a clientActivityId (retries are idempotent by it).
  const std::string client = "bench-" + std::to_string(state.thread_index()) + "-" + Uuid();
  for (auto _ : state) {
    core::NewPost post;
    post.client_activity_id = client + "-" + std::to_string(n);
    post.content = contents[n++ % contents.size()];
    Result<core::Activity> posted =
        store->service->PostActivity(store->caller, store->conversation, post);
    if (!posted.ok()) {
      state.SkipWithError(posted.error().ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(posted->seq);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Post)->Threads(1)->Threads(4)->Threads(16)->UseRealTime();

// A page of 50 before a random cursor in the conversation's range (as a client scrolling back).
void BM_HistoryPage(benchmark::State& state) {
  Store* store = HistoryStore();
  static const std::int64_t last = [&] {
    return Must(store->service->GetConversation(store->caller, store->conversation), "get")
        .last_seq;
  }();
  std::mt19937_64 random(static_cast<std::uint64_t>(state.thread_index()) + 1);
  std::uniform_int_distribution<std::int64_t> pick(2, last + 1);
  for (auto _ : state) {
    core::HistoryQuery query;
    query.before = pick(random);
    query.limit = 50;
    Result<core::HistoryPage> page =
        store->service->History(store->caller, store->conversation, query);
    if (!page.ok() || page->items.empty()) {
      state.SkipWithError(page.ok() ? "an empty page" : page.error().ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(page->items.back().seq);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["activities"] =
      benchmark::Counter(static_cast<double>(last), benchmark::Counter::kAvgThreads);
}
BENCHMARK(BM_HistoryPage)->Threads(1)->Threads(4)->UseRealTime();

// CoreService::New over a files directory of state.range(0) blobs, all recorded (the rows are
// written directly, in one transaction, before the timed loop; the blobs are empty files).
void BM_StartWithFiles(benchmark::State& state) {
  Store store("start");
  const auto count = static_cast<std::size_t>(state.range(0));
  std::vector<std::string> ids;
  for (std::size_t i = 0; i < count; ++i) ids.push_back(Uuid());
  Status filled = store.db->InTransaction([&](Poco::Data::Session& s) -> Status {
    using Poco::Data::Keywords::now;
    using Poco::Data::Keywords::use;
    std::vector<std::string> conversations(ids.size(), store.conversation);
    std::vector<std::string> uploaders(ids.size(), store.caller.user_id);
    std::vector<std::string> hashes(ids.size(), std::string(64, '0'));
    s << "INSERT INTO files (id, conversation_id, uploader, size, sha256, created_ms) "
         "VALUES (?, ?, ?, 0, ?, 1)",
        use(ids), use(conversations), use(uploaders), use(hashes), now;
    return OkStatus();
  });
  if (!filled.ok()) Die(filled.error().ToString());
  for (const std::string& id : ids) std::ofstream(store.dir / "files" / id);
  core::CoreServiceConfig config;
  config.files_dir = (store.dir / "files").string();
  for (auto _ : state) {
    store.service.reset();
    store.service = Must(CoreService::New(config, *store.db), "restart");
    if (store.service->startup_cleanup().unrecorded_blobs != 0) {
      state.SkipWithError("a recorded blob was moved aside");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_StartWithFiles)->Arg(200000)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace strongroom::bench

BENCHMARK_MAIN();
