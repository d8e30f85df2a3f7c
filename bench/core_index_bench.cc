// The core's search index store at scale: fills a real cored database (CoreService::Migrations(),
// the core's own SQL in core_store.cc) with `--activities` activities in `--rooms` conversations,
// indexes each one as indexerd would (15-25 distinct terms drawn from a Zipf vocabulary, tokens
// from the indexer library's RoomSearchKey, padded with its PadWithDecoys to a bucket), and
// reports:
//   - the index store's bytes per activity: the database's size (pages in use after a TRUNCATE
//     checkpoint) with the index, less its size before the index, over the activities;
//   - the search time of 2-term queries over `--searched` of the rooms through
//     CoreService::MatchTokens (the core's part of a search: the indexer's HTTP and KMS are not
//     in it), p50 and p99 over `--queries` queries on a warm cache, and the matches per query.
//
// The activities and tokens are written straight through CoreStore and IndexPostings (the
// entries as IndexStore::PutIndexTokens writes them) in transactions of 10,000
// (not through the group-commit writer: the layout on disk is the same, the fill far quicker).
// Hermetic: the database lives in a temporary directory, removed at the end (--keep keeps it).
//
//   build/bench/core_index_bench --activities 1000000 --rooms 1000 --searched 50 --queries 400
#include <Poco/Data/Session.h>
#include <Poco/UUIDGenerator.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core_store.h"
#include "index_postings.h"
#include "strongroom/common/database.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/core/core_service.h"
#include "strongroom/indexer/decoy_padding.h"
#include "strongroom/indexer/room_search_key.h"
#include "zipf_words.h"

namespace strongroom::bench {
namespace {

using core::Activity;
using core::Caller;
using core::CoreService;
using core::internal::CoreStore;
using core::internal::IndexPostings;
using Poco::Data::Keywords::into;
using Poco::Data::Keywords::now;

constexpr std::size_t kMinTerms = 15;  // distinct terms of a ~200-byte message
constexpr std::size_t kMaxTerms = 25;
constexpr std::size_t kPerTransaction = 10000;

void Die(const std::string& what) {
  std::fprintf(stderr, "core_index_bench: %s\n", what.c_str());
  std::exit(1);
}

template <typename T>
T Must(Result<T> result, const char* what) {
  if (!result.ok()) Die(std::string(what) + ": " + result.error().ToString());
  return std::move(result).value();
}

void Must(const Status& status, const char* what) {
  if (!status.ok()) Die(std::string(what) + ": " + status.error().ToString());
}

std::string Uuid() { return Poco::UUIDGenerator::defaultGenerator().createRandom().toString(); }

std::string Word(std::size_t rank) { return "w" + std::to_string(rank); }

// Bytes of the database's pages in use, after the log is folded in.
std::int64_t StoreBytes(Database& db) {
  Poco::Int64 pages = 0, free_pages = 0, page_size = 0;
  Must(db.WithSession([&](Poco::Data::Session& s) -> Status {
    s << "PRAGMA wal_checkpoint(TRUNCATE)", now;
    s << "PRAGMA page_count", into(pages), now;
    s << "PRAGMA freelist_count", into(free_pages), now;
    s << "PRAGMA page_size", into(page_size), now;
    return OkStatus();
  }),
       "measuring the database");
  return (pages - free_pages) * page_size;
}

// Runs `work` in transactions of kPerTransaction calls, for i in [0, n).
void InBatches(Database& db, std::size_t n,
               const std::function<void(Poco::Data::Session&, std::size_t)>& work) {
  for (std::size_t at = 0; at < n; at += kPerTransaction) {
    Must(db.WithSession([&](Poco::Data::Session& s) -> Status {
      s << "BEGIN", now;
      for (std::size_t i = at; i < std::min(n, at + kPerTransaction); ++i) work(s, i);
      s << "COMMIT", now;
      return OkStatus();
    }),
         "writing");
  }
}

double Percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, std::size_t(p * double(values.size())))];
}

struct Options {
  std::size_t activities = 100000;
  std::size_t rooms = 1000;
  std::size_t searched = 50;
  std::size_t queries = 400;
  bool keep = false;
};

Options Parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::size_t {
      if (i + 1 >= argc) Die(flag + " needs a value");
      return std::strtoull(argv[++i], nullptr, 10);
    };
    if (flag == "--activities") {
      o.activities = value();
    } else if (flag == "--rooms") {
      o.rooms = value();
    } else if (flag == "--searched") {
      o.searched = value();
    } else if (flag == "--queries") {
      o.queries = value();
    } else if (flag == "--keep") {
      o.keep = true;
    } else {
      Die("unknown flag " + flag + " (--activities N --rooms N --searched N --queries N --keep)");
    }
  }
  if (o.activities == 0 || o.rooms == 0 || o.searched == 0 || o.searched > o.rooms ||
      o.queries == 0) {
    Die("need activities, rooms, queries > 0 and 0 < searched <= rooms");
  }
  return o;
}

int Run(const Options& o) {
  using Clock = std::chrono::steady_clock;
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("core_index_bench." + Uuid());
  std::filesystem::create_directories(dir / "files");
  std::unique_ptr<Database> db =
      Must(Database::OpenSqlite((dir / "core.db").string(), CoreService::Migrations()), "opening");
  std::mt19937_64 rng(14);
  const Caller alice{"alice@acme.test", "acme"};
  const Caller indexer{"indexer@acme.test", "acme"};

  // Rooms and activities: a post of ~200 bytes of ciphertext each, in a random room.
  std::vector<std::string> rooms(o.rooms);
  for (std::string& id : rooms) id = Uuid();
  InBatches(*db, o.rooms, [&](Poco::Data::Session& s, std::size_t i) {
    core::Conversation c;
    c.id = rooms[i];
    c.kms_resource_uri = "kms://kms.acme.test/resources/" + Uuid();
    c.current_key_uri = "kms://kms.acme.test/keys/" + Uuid();
    c.created_by = alice.user_id;
    CoreStore::InsertConversation(s, c, alice.org);
  });
  std::vector<std::uint32_t> room_of(o.activities);
  std::vector<std::string> activity_ids(o.activities);
  const std::string content(200, 'c');
  const auto filled = Clock::now();
  InBatches(*db, o.activities, [&](Poco::Data::Session& s, std::size_t i) {
    Activity a;
    a.seq = static_cast<std::int64_t>(i + 1);
    a.id = activity_ids[i] = Uuid();
    room_of[i] = static_cast<std::uint32_t>(rng() % o.rooms);
    a.conversation_id = rooms[room_of[i]];
    a.actor = alice.user_id;
    a.verb = "post";
    a.content = content;
    a.published_ms = 1700000000000 + a.seq;
    CoreStore::InsertActivity(s, a);
  });
  const std::int64_t before_index = StoreBytes(*db);

  // The index, as indexerd would write it.
  const SecretBytes org_key = SecretBytes::Random(32);
  std::vector<indexer::RoomSearchKey> keys;
  keys.reserve(o.rooms);
  for (const std::string& id : rooms) {
    keys.push_back(Must(indexer::RoomSearchKey::Derive(org_key, id, 1), "deriving a room key"));
  }
  const Zipf zipf(kVocabulary, kZipfExponent);
  std::size_t tokens_stored = 0;
  std::map<std::size_t, std::size_t> buckets;
  const auto indexing = Clock::now();
  InBatches(*db, o.activities, [&](Poco::Data::Session& s, std::size_t i) {
    const std::size_t n = kMinTerms + rng() % (kMaxTerms - kMinTerms + 1);
    std::vector<std::string> terms;
    while (terms.size() < n) {
      std::string word = Word(zipf(rng));
      if (std::find(terms.begin(), terms.end(), word) == terms.end()) terms.push_back(word);
    }
    std::vector<std::string> tokens =
        Must(indexer::PadWithDecoys(keys[room_of[i]].Tokens(terms)), "padding");
    tokens_stored += tokens.size();
    ++buckets[tokens.size()];
    std::vector<core::internal::IndexKey> stored;
    for (const std::string& token : tokens) stored.push_back(core::internal::IndexKey::Of(token));
    IndexPostings::Replace(s, rooms[room_of[i]], static_cast<std::int64_t>(i + 1), stored);
  });
  const double fill_s = std::chrono::duration<double>(Clock::now() - filled).count();
  const double index_s = std::chrono::duration<double>(Clock::now() - indexing).count();
  const std::int64_t with_index = StoreBytes(*db);
  IndexPostings::Totals totals;
  Must(db->WithSession([&](Poco::Data::Session& s) -> Status {
    totals = IndexPostings::Count(s);
    return OkStatus();
  }),
       "counting the index");

  // Searches: 2 terms (drawn as words are used) in `searched` rooms, through the service.
  core::CoreServiceConfig config;
  config.files_dir = (dir / "files").string();
  config.indexer_user_id = indexer.user_id;
  config.indexer_org = indexer.org;
  std::unique_ptr<CoreService> service =
      Must(CoreService::New(std::move(config), *db), "starting the service");
  std::vector<std::size_t> searched(o.rooms);
  for (std::size_t i = 0; i < o.rooms; ++i) searched[i] = i;
  std::shuffle(searched.begin(), searched.end(), rng);
  searched.resize(o.searched);
  std::vector<double> ms;
  std::size_t matches = 0;
  const std::size_t warm_up = std::max<std::size_t>(10, o.queries / 10);
  for (std::size_t q = 0; q < warm_up + o.queries; ++q) {
    const std::string first = Word(zipf(rng));
    std::string second = Word(zipf(rng));
    while (second == first) second = Word(zipf(rng));
    core::SearchQuery query;
    for (std::size_t room : searched) {
      query.queries.push_back({rooms[room], keys[room].Tokens({first, second})});
    }
    const auto start = Clock::now();
    core::SearchPage page = Must(service->MatchTokens(indexer, query), "searching");
    const double elapsed = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    if (q < warm_up) continue;
    ms.push_back(elapsed);
    matches += page.items.size();
  }
  service.reset();
  db.reset();

  const double n = static_cast<double>(o.activities);
  std::printf(
      "activities %zu in %zu rooms; fill (activities + index) %.0f s, of which the index %.0f s "
      "(%.0f activities indexed a second)\n",
      o.activities, o.rooms, fill_s, index_s, n / index_s);
  std::printf("tokens per activity %.1f (buckets:", double(tokens_stored) / n);
  for (const auto& [size, count] : buckets)
    std::printf(" %zu:%.0f%%", size, 100.0 * double(count) / n);
  std::printf(")\n");
  std::printf("database without index %.1f MB, with index %.1f MB\n", double(before_index) / 1e6,
              double(with_index) / 1e6);
  std::printf("index store: %.1f bytes per activity, %.1f bytes per token\n",
              double(with_index - before_index) / n,
              double(with_index - before_index) / double(tokens_stored));
  std::printf(
      "store: %lld entries in %lld chunks (%.1f entries, %.0f bytes each: %.2f bytes an entry), "
      "%lld activities' bucket lists, %lld rooms\n",
      static_cast<long long>(totals.entries), static_cast<long long>(totals.chunks),
      double(totals.entries) / double(std::max<std::int64_t>(1, totals.chunks)),
      double(totals.chunk_bytes) / double(std::max<std::int64_t>(1, totals.chunks)),
      double(totals.chunk_bytes) / double(std::max<std::int64_t>(1, totals.entries)),
      static_cast<long long>(totals.sets), static_cast<long long>(totals.rooms));
  std::printf(
      "search, 2 terms over %zu rooms, limit 50: p50 %.2f ms, p99 %.2f ms, max %.2f ms; "
      "%.1f matches per query (%zu queries)\n",
      o.searched, Percentile(ms, 0.50), Percentile(ms, 0.99), Percentile(ms, 1.0),
      double(matches) / double(ms.size()), ms.size());
  if (o.keep) {
    std::printf("kept %s\n", dir.c_str());
  } else {
    std::filesystem::remove_all(dir);
  }
  return 0;
}

}  // namespace
}  // namespace strongroom::bench

int main(int argc, char** argv) {
  return strongroom::bench::Run(strongroom::bench::Parse(argc, argv));
}
