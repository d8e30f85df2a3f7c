// indexer_fill: fills a stopped cored's database with indexed activities in rooms that exist
// (made through the SDK by `indexer_load --mode rooms`), as indexerd would have indexed them, for
// the search bar of issue 14 at 1,000,000 activities (bench/run-indexer-load.sh). Posting and
// indexing that many through the daemons would take hours on the project's machine.
//
//   indexer_fill --database core.db --rooms-file FILE --activities N --kms-url URL --ca PEM
//       --cluster kms://HOST --kms-roots PEM --token-command CMD --indexer SUBJECT
//       [--language english] [--bytes 200] [--seed 14]
//
// With the organization indexer's own KMS token (--token-command, {subject} = --indexer,
// {audience} = kms), as indexerd: the organization's current search key (retrieve /search-keys)
// and each room's current content key (the indexer is the rooms' cloudAgent). Then --activities
// posts spread at random over the rooms of --rooms-file, each by the room's creator, seqs after
// the newest activity: a message of about --bytes of Zipf words (zipf_words.h), encrypted under
// the room's real key (EncryptText, the SDK's JWE), and its tokens as indexerd makes them (the
// indexer's TermExtractor on the text, RoomSearchKey of the real search key, PadWithDecoys with
// the activity's decoys), written through CoreStore and IndexPostings (what IndexStore's put
// writes) in transactions of 10,000. Prints "last_seq N": indexerd's cursor is to be set there
// (the script does), since indexerd would put exactly these tokens again.
#include <Poco/Data/Session.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/UUIDGenerator.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core_store.h"
#include "index_postings.h"
#include "load_support.h"
#include "strongroom/client/content.h"
#include "strongroom/client/kms_context.h"
#include "strongroom/common/database.h"
#include "strongroom/core/core_service.h"
#include "strongroom/indexer/decoy_padding.h"
#include "strongroom/indexer/room_search_key.h"
#include "strongroom/indexer/term_extractor.h"
#include "zipf_words.h"

namespace strongroom::bench {
namespace {

using Clock = std::chrono::steady_clock;
using Poco::Data::Keywords::into;
using Poco::Data::Keywords::now;
using Poco::Data::Keywords::use;

constexpr std::size_t kPerTransaction = 10000;

[[noreturn]] void Die(const std::string& what) {
  std::cerr << "indexer_fill: " << what << "\n";
  std::exit(1);
}

template <typename T>
T Must(Result<T> result, const std::string& what) {
  if (!result.ok()) Die(what + ": " + result.error().ToString());
  return std::move(result).value();
}

void Must(const Status& status, const std::string& what) {
  if (!status.ok()) Die(what + ": " + status.error().ToString());
}

struct Options {
  std::string database, rooms_file, kms_url, ca, cluster, kms_roots, token_command, indexer;
  std::string language = "english";
  std::size_t activities = 0, bytes = 200, seed = 14;
};

Options Parse(int argc, char** argv) {
  Options o;
  std::map<std::string, std::string*> text = {{"database", &o.database},
                                              {"rooms-file", &o.rooms_file},
                                              {"kms-url", &o.kms_url},
                                              {"ca", &o.ca},
                                              {"cluster", &o.cluster},
                                              {"kms-roots", &o.kms_roots},
                                              {"token-command", &o.token_command},
                                              {"indexer", &o.indexer},
                                              {"language", &o.language}};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0 || i + 1 >= argc) Die("see the comment at the top for usage");
    const std::string name = arg.substr(2), value = argv[++i];
    if (auto t = text.find(name); t != text.end()) {
      *t->second = value;
    } else if (name == "activities") {
      o.activities = Must(ParseCount(name, value, 1, 100000000), "options");
    } else if (name == "bytes") {
      o.bytes = Must(ParseCount(name, value, 16, 60000), "options");
    } else if (name == "seed") {
      o.seed = Must(ParseCount(name, value, 0, 1u << 31), "options");
    } else {
      Die("unknown option --" + name);
    }
  }
  for (const auto& [name, value] : text) {
    if (value->empty()) Die("--" + name + " is required");
  }
  if (o.activities == 0) Die("--activities is required");
  return o;
}

struct Room {
  std::string id, creator;
  std::unique_ptr<indexer::RoomSearchKey> search_key;
  client::KmsKey content_key;
};

int Run(const Options& o) {
  // The keys, as indexerd gets them.
  client::KmsContextOptions kms_options;
  kms_options.client_id = "indexer-fill";
  kms_options.kms_token = client::StaticToken(
      Must(CommandToken(o.token_command, o.indexer, "kms"), "the indexer's KMS token"));
  kms_options.trust = {o.cluster, o.kms_roots};
  std::unique_ptr<client::KmsContext> kms =
      Must(client::KmsContext::OverHttps(kms_options, {o.kms_url, o.ca}), "the KMS");
  const client::KmsSearchKey org_key = Must(kms->RetrieveSearchKey(), "the search key");

  std::unique_ptr<Database> db =
      Must(Database::OpenSqlite(o.database, core::CoreService::Migrations()), "the database");
  std::vector<Room> rooms;
  {
    std::ifstream in(o.rooms_file);
    std::string id, kind;
    while (in >> id >> kind) rooms.push_back(Room{id, "", nullptr, {}});
  }
  if (rooms.empty()) Die("no room in --rooms-file");
  Poco::Int64 max_seq = 0;
  Must(db->WithSession([&](Poco::Data::Session& s) -> Status {
    s << "SELECT COALESCE(MAX(seq), 0) FROM activities", into(max_seq), now;
    for (Room& room : rooms) {
      std::string key_uri;
      s << "SELECT created_by, current_key_uri FROM conversations WHERE id = ?", use(room.id),
          into(room.creator), into(key_uri), now;
      if (room.creator.empty()) return Error(ErrorCode::kNotFound, "no room " + room.id);
      room.content_key = Must(kms->RetrieveKey(key_uri), "a room's content key");
      room.search_key = std::make_unique<indexer::RoomSearchKey>(
          Must(indexer::RoomSearchKey::Derive(org_key.key, room.id, org_key.version),
               "a room's search key"));
    }
    return OkStatus();
  }),
       "reading the rooms");
  (void)kms->Close();

  indexer::TermExtractor extractor =
      Must(indexer::TermExtractor::New(o.language), "the term extractor");
  const Zipf zipf(kVocabulary, kZipfExponent);
  std::mt19937_64 rng(o.seed);
  const auto started = Clock::now();
  std::size_t tokens = 0;
  const std::int64_t base_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count() -
                               static_cast<std::int64_t>(o.activities);
  for (std::size_t at = 0; at < o.activities; at += kPerTransaction) {
    Must(db->WithSession([&](Poco::Data::Session& s) -> Status {
      s << "BEGIN", now;
      for (std::size_t i = at; i < std::min(o.activities, at + kPerTransaction); ++i) {
        Room& room = rooms[rng() % rooms.size()];
        const std::string text = ZipfMessage(zipf, rng, o.bytes);
        core::Activity a;
        a.seq = max_seq + static_cast<std::int64_t>(i) + 1;
        a.id = Poco::UUIDGenerator::defaultGenerator().createRandom().toString();
        a.conversation_id = room.id;
        a.actor = room.creator;
        a.verb = "post";
        a.content = Must(client::EncryptText(room.content_key.key, room.content_key.uri, text),
                         "encrypting");
        a.key_uri = room.content_key.uri;
        a.published_ms = base_ms + static_cast<std::int64_t>(i);
        core::internal::CoreStore::InsertActivity(s, a);
        const indexer::TermSet terms = Must(extractor.Extract(text), "extracting terms");
        const std::vector<std::string> padded =
            Must(indexer::PadWithDecoys(
                     room.search_key->Tokens(terms.terms()),
                     [&](std::size_t count) { return room.search_key->DecoyTokens(a.id, count); }),
                 "padding");
        std::vector<core::internal::IndexKey> keys;
        for (const std::string& token : padded) keys.push_back(core::internal::IndexKey::Of(token));
        tokens += keys.size();
        core::internal::IndexPostings::Replace(s, room.id, a.seq, keys);
      }
      s << "COMMIT", now;
      return OkStatus();
    }),
         "writing");
    const std::size_t done = std::min(o.activities, at + kPerTransaction);
    if (done % 100000 == 0 || done == o.activities) {
      std::fprintf(stderr, "indexer_fill: %zu of %zu activities, %.0f s\n", done, o.activities,
                   std::chrono::duration<double>(Clock::now() - started).count());
    }
  }
  Must(db->WithSession([&](Poco::Data::Session& s) -> Status {
    s << "UPDATE conversations SET last_seq = (SELECT MAX(seq) FROM activities a "
         "WHERE a.conversation_id = conversations.id)",
        now;
    s << "PRAGMA wal_checkpoint(TRUNCATE)", now;
    return OkStatus();
  }),
       "finishing");
  const double s = std::chrono::duration<double>(Clock::now() - started).count();
  std::printf(
      "filled %zu activities in %zu rooms in %.0f s (%.0f a second), %.1f tokens each; "
      "search key version %u\n",
      o.activities, rooms.size(), s, double(o.activities) / s,
      double(tokens) / double(o.activities), org_key.version);
  std::printf("last_seq %lld\n", static_cast<long long>(max_seq + Poco::Int64(o.activities)));
  return 0;
}

}  // namespace
}  // namespace strongroom::bench

int main(int argc, char** argv) {
  const strongroom::bench::Options options = strongroom::bench::Parse(argc, argv);
  Poco::Net::initializeSSL();
  const int status = strongroom::bench::Run(options);
  Poco::Net::uninitializeSSL();
  return status;
}
