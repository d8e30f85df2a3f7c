// The search index store's layout: the posting chunk codec (posting_chunk.h) and the store's
// chunks, bucket lists and search (index_postings.h) on a real cored database, checked against a
// brute-force scan of what was put.
#include "index_postings.h"

#include <Poco/Data/Session.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "../support/test_dir.h"
#include "../support/test_engines.h"
#include "posting_chunk.h"
#include "strongroom/common/database.h"
#include "strongroom/common/jose/base64url.h"
#include "strongroom/common/sql_statement.h"
#include "strongroom/core/core_service.h"
#include "validation.h"

namespace strongroom::core::internal {
namespace {

std::span<const std::uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// --- the codec --------------------------------------------------------------------------------

TEST(PostingChunkTest, EntriesRoundTripWhateverTheirGaps) {
  std::mt19937_64 rng(14);
  for (const std::int64_t first_seq : {std::int64_t{1}, std::int64_t{1} << 40}) {
    std::vector<PostingEntry> entries;
    std::int64_t seq = first_seq;
    // Gaps of every varint length (0, 1 byte, the 1/2-byte edge, ..., 6 bytes), several entries
    // of one activity, every value of a kept byte pair's ends.
    for (const std::int64_t gap : {0, 0, 1, 127, 128, 16383, 16384, 2097152, 5, 0, 1 << 30, 3}) {
      seq += gap;
      entries.push_back({seq, static_cast<std::uint16_t>(rng())});
    }
    seq += std::int64_t{1} << 41;
    entries.push_back({seq, 0});
    entries.push_back({seq, 0xffff});
    for (int i = 0; i < 300; ++i) {
      seq += static_cast<std::int64_t>(rng() % 3000);
      entries.push_back({seq, static_cast<std::uint16_t>(rng())});
    }
    std::sort(entries.begin(), entries.end());
    const std::string blob = EncodeChunk(first_seq, entries);
    EXPECT_EQ(blob.size(), EncodedChunkSize(first_seq, entries));
    const std::optional<std::vector<PostingEntry>> decoded = DecodeChunk(first_seq, Bytes(blob));
    ASSERT_TRUE(decoded.has_value());
    EXPECT_EQ(*decoded, entries);
  }
  EXPECT_EQ(EncodeChunk(5, {}), "");
  EXPECT_EQ(DecodeChunk(5, {}), std::vector<PostingEntry>{});
}

TEST(PostingChunkTest, AnEntryOfANearbyActivityCostsThreeBytes) {
  // Activities close in seq (a busy room): a 1-byte delta and the 2 kept bytes, big-endian.
  const std::vector<PostingEntry> entries = {{10, 0x0102}, {10, 0x0304}, {12, 0xa0b0}};
  EXPECT_EQ(EncodeChunk(9, entries), std::string("\x01\x01\x02\x00\x03\x04\x02\xa0\xb0", 9));
  EXPECT_EQ(EncodedChunkSize(9, entries), 9u);
}

TEST(PostingChunkTest, AChunkCutInTwoDecodesAsItsHalves) {
  // A split (index_postings.h) writes the left entries under the chunk's first_seq and the right
  // ones under their first entry's seq: each half decodes on its own, and together they are the
  // whole.
  std::vector<PostingEntry> entries;
  for (std::int64_t seq = 100; seq < 400; seq += 3) entries.push_back({seq, 7});
  const std::size_t cut = entries.size() / 2;
  const std::vector<PostingEntry> left(entries.begin(), entries.begin() + cut);
  const std::vector<PostingEntry> right(entries.begin() + cut, entries.end());
  const std::string left_blob = EncodeChunk(90, left);
  const std::string right_blob = EncodeChunk(right.front().seq, right);
  EXPECT_EQ(DecodeChunk(90, Bytes(left_blob)), left);
  EXPECT_EQ(DecodeChunk(right.front().seq, Bytes(right_blob)), right);
  // The cut costs nothing here: the right half's first delta (0) is as short as it was (3).
  EXPECT_EQ(left_blob.size() + right_blob.size(), EncodeChunk(90, entries).size());
}

TEST(PostingChunkTest, ACorruptChunkIsRefused) {
  const std::string good = EncodeChunk(1, std::vector<PostingEntry>{{1, 1}, {200, 2}, {201, 3}});
  ASSERT_TRUE(DecodeChunk(1, Bytes(good)).has_value());
  // Cut anywhere but between entries: refused.
  for (std::size_t n = 1; n < good.size(); ++n) {
    const bool whole = n == 3 || n == 7;  // {1,1} is 3 bytes, {200,2} 4 (a 2-byte delta)
    EXPECT_EQ(DecodeChunk(1, Bytes(good.substr(0, n))).has_value(), whole) << n;
  }
  // A delta whose varint never ends, or runs past 9 bytes.
  EXPECT_FALSE(DecodeChunk(1, Bytes(std::string("\x80\x80", 2))).has_value());
  EXPECT_FALSE(DecodeChunk(1, Bytes(std::string(9, '\x80') + "\x01\x00\x00")).has_value());
  // A seq past int64.
  std::string huge(8, '\xff');
  huge += "\x7f";
  huge += std::string(2, '\0');
  EXPECT_TRUE(DecodeChunk(0, Bytes(huge)).has_value());
  EXPECT_FALSE(DecodeChunk(1, Bytes(huge)).has_value());
  EXPECT_FALSE(DecodeChunk(std::numeric_limits<std::int64_t>::max(), Bytes(good)).has_value());
}

TEST(PostingChunkTest, AKeyIsTheFirst24BitsOfTheTokensSha256) {
  // SHA-256("abc") = ba7816bf...
  const IndexKey key = IndexKey::Of("abc");
  EXPECT_EQ(key.bucket, 0xba);
  EXPECT_EQ(key.kept, 0x7816);
}

// --- the store ----------------------------------------------------------------------------------

// A cored database with `rooms` conversations and activities in them, filled by SQL; on both
// engines.
class IndexPostingsTest : public ::testing::TestWithParam<Database::Engine> {
 protected:
  void SetUp() override {
    auto where = strongroom::testing::TestDatabase::New(GetParam(), dir_ / "core.db");
    ASSERT_TRUE(where.ok()) << where.error().ToString();
    auto db = where->Open(CoreService::Migrations(), CoreService::PostgresMigrations());
    ASSERT_TRUE(db.ok()) << db.error().ToString();
    db_ = std::move(*db);
  }

  // Creates `rooms` conversations and `activities` activities, each in a room picked at random;
  // seqs 1, 2, ...
  void Fill(std::size_t rooms, std::size_t activities, std::mt19937& rng) {
    for (std::size_t r = 0; r < rooms; ++r) rooms_.push_back(NewUuid());
    Work([&](Poco::Data::Session& s) {
      for (const std::string& id : rooms_) {
        Database::Prepare(s,
                          "INSERT INTO conversations (id, kms_resource_uri, current_key_uri, "
                          "encrypted_title, created_by, created_ms, last_seq, created_by_org) "
                          "VALUES (?, 'r', 'k', '', 'alice@acme.test', 1, 0, 'acme')")
            .Bind(id)
            .Run();
      }
      for (std::size_t i = 0; i < activities; ++i) {
        const std::size_t room = rng() % rooms_.size();
        room_of_.push_back(room);
        Database::Prepare(s,
                          "INSERT INTO activities (seq, id, conversation_id, actor, verb, content, "
                          "key_uri, object_users, file_ids, client_activity_id, published_ms) "
                          "VALUES (?, ?, ?, 'alice@acme.test', 'post', 'x', 'k', '[]', '[]', '', "
                          "1)")
            .Bind(static_cast<std::int64_t>(i + 1))
            .Bind(NewUuid())
            .Bind(rooms_[room])
            .Run();
      }
    });
  }

  template <typename F>
  void Work(F f) {
    Status done = db_->InTransaction([&](Poco::Data::Session& s) -> Status {
      f(s);
      return OkStatus();
    });
    ASSERT_TRUE(done.ok()) << done.error().ToString();
  }

  // Runs `puts` in one transaction (the Put calls in it use it).
  template <typename F>
  void Batch(F puts) {
    Work([&](Poco::Data::Session& s) {
      batch_ = &s;
      puts();
      batch_ = nullptr;
    });
  }

  void Put(std::int64_t seq, const std::set<IndexKey>& keys) {
    auto put = [&](Poco::Data::Session& s) {
      IndexPostings::Replace(s, rooms_[room_of_[seq - 1]], seq, {keys.begin(), keys.end()});
    };
    if (batch_ != nullptr) {
      put(*batch_);
    } else {
      Work(put);
    }
    if (keys.empty()) {
      put_.erase(seq);
    } else {
      put_[seq] = keys;
    }
  }

  std::vector<std::int64_t> Match(std::size_t room, const std::vector<IndexKey>& keys,
                                  std::int64_t before, std::size_t limit) {
    std::vector<std::int64_t> seqs;
    Work([&](Poco::Data::Session& s) {
      seqs = IndexPostings::Match(s, rooms_[room], keys, before, limit);
    });
    return seqs;
  }

  // What a scan of everything put finds.
  std::vector<std::int64_t> Scan(std::size_t room, const std::vector<IndexKey>& keys,
                                 std::int64_t before, std::size_t limit) const {
    std::vector<std::int64_t> seqs;
    for (auto it = put_.rbegin(); it != put_.rend() && seqs.size() < limit; ++it) {
      const auto& [seq, set] = *it;
      if (seq >= before || room_of_[seq - 1] != room) continue;
      if (std::all_of(keys.begin(), keys.end(), [&](const IndexKey& k) { return set.count(k); })) {
        seqs.push_back(seq);
      }
    }
    return seqs;
  }

  // Every chunk decodes, lies in its range and is no larger than kChunkBytes unless it holds one
  // activity; every activity's entries and bucket list are what was put. The number of chunks.
  std::int64_t CheckLayout() {
    std::int64_t chunks = 0;
    Work([&](Poco::Data::Session& s) {
      std::map<std::pair<std::int64_t, int>, std::vector<std::int64_t>> firsts;
      std::map<std::int64_t, std::set<IndexKey>> stored;  // seq -> keys, from the chunks
      SqlStatement all = Database::Prepare(
          s,
          "SELECT p.room, p.bucket, p.first_seq, p.entries, r.conversation_id "
          "FROM index_postings p JOIN index_rooms r USING (room) ORDER BY 1, 2, 3");
      std::int64_t last_room = -1, last_bucket = -1, last_seq = 0;
      while (all.Next()) {
        ++chunks;
        const std::int64_t room = all.Int(0), bucket = all.Int(1), first = all.Int(2);
        const std::optional<std::vector<PostingEntry>> entries = DecodeChunk(first, all.Blob(3));
        ASSERT_TRUE(entries.has_value());
        ASSERT_FALSE(entries->empty()) << "an empty chunk is kept";
        if (room == last_room && bucket == last_bucket) {
          EXPECT_GT(first, last_seq) << "chunks overlap";
        }
        EXPECT_GE(entries->front().seq, first);
        if (entries->front().seq != entries->back().seq) {
          EXPECT_LE(all.Blob(3).size(), IndexPostings::kChunkBytes);
        }
        for (const PostingEntry& e : *entries) {
          EXPECT_EQ(rooms_[room_of_[e.seq - 1]], all.Text(4)) << "an entry in another room";
          EXPECT_TRUE(stored[e.seq].insert({static_cast<std::uint8_t>(bucket), e.kept}).second);
        }
        last_room = room;
        last_bucket = bucket;
        last_seq = entries->back().seq;
      }
      EXPECT_EQ(stored, put_);
      SqlStatement sets = Database::Prepare(s, "SELECT seq, buckets FROM index_sets ORDER BY seq");
      std::map<std::int64_t, std::set<std::uint8_t>> buckets, expected;
      while (sets.Next()) {
        const std::span<const std::uint8_t> blob = sets.Blob(1);
        EXPECT_TRUE(std::is_sorted(blob.begin(), blob.end()));
        buckets[sets.Int(0)] = {blob.begin(), blob.end()};
        EXPECT_EQ(buckets[sets.Int(0)].size(), blob.size());
      }
      for (const auto& [seq, keys] : put_) {
        for (const IndexKey& k : keys) expected[seq].insert(k.bucket);
      }
      EXPECT_EQ(buckets, expected);
    });
    return chunks;
  }

  strongroom::testing::TestDir dir_;
  std::unique_ptr<Database> db_;
  std::vector<std::string> rooms_;
  std::vector<std::size_t> room_of_;                // by seq - 1
  std::map<std::int64_t, std::set<IndexKey>> put_;  // seq -> its keys, as put
  Poco::Data::Session* batch_ = nullptr;
};

INSTANTIATE_TEST_SUITE_P(Engines, IndexPostingsTest, strongroom::testing::kBothEngines,
                         strongroom::testing::EngineName);

TEST_P(IndexPostingsTest, SearchesFindWhatAScanFindsThroughPutsReplacesAndRemovals) {
  std::mt19937 rng(1414);
  Fill(3, 1500, rng);
  // A vocabulary of 60 keys in 6 buckets (so that buckets fill many chunks, split and share), a
  // few common; and decoys anywhere.
  std::vector<IndexKey> words;
  for (int i = 0; i < 60; ++i) {
    words.push_back({static_cast<std::uint8_t>(i % 6), static_cast<std::uint16_t>(rng())});
  }
  auto draw = [&] {
    std::set<IndexKey> set;
    const std::size_t terms = 1 + rng() % 12;
    for (std::size_t t = 0; t < terms; ++t) {
      const std::size_t w = std::min<std::size_t>(rng() % 60, rng() % 60);  // low ones common
      set.insert(words[w]);
    }
    for (std::size_t d = 0; d < 1 + rng() % 8; ++d) {
      set.insert({static_cast<std::uint8_t>(rng()), static_cast<std::uint16_t>(rng())});
    }
    return set;
  };
  // Mostly in seq order, as indexerd puts them, with late and early ones mixed in.
  std::vector<std::int64_t> order;
  for (std::int64_t seq = 1; seq <= 1500; ++seq) order.push_back(seq);
  for (std::size_t i = 0; i + 1 < order.size(); ++i) {
    if (rng() % 10 == 0) std::swap(order[i], order[std::min(order.size() - 1, i + rng() % 200)]);
  }
  Batch([&] {
    for (std::int64_t seq : order) Put(seq, draw());
  });
  CheckLayout();
  std::int64_t word_chunks = 0;
  Work([&](Poco::Data::Session& s) {
    SqlStatement count =
        Database::Prepare(s, "SELECT COUNT(*) FROM index_postings WHERE bucket < 6");
    if (count.Next()) word_chunks = count.Int(0);
  });
  EXPECT_GT(word_chunks, 3 * 6 * 2);  // several chunks in each word bucket of each room

  // Replaced (a put again), emptied (edits, retractions, `[]`), and put the same again (a replay).
  Batch([&] {
    for (int i = 0; i < 400; ++i) {
      const std::int64_t seq = 1 + static_cast<std::int64_t>(rng() % 1500);
      switch (rng() % 3) {
        case 0:
          Put(seq, draw());
          break;
        case 1:
          Put(seq, {});
          break;
        default:
          if (put_.count(seq)) Put(seq, std::set<IndexKey>(put_.at(seq)));
      }
    }
  });
  CheckLayout();

  std::size_t nonempty = 0;
  for (int q = 0; q < 300; ++q) {
    const std::size_t room = rng() % rooms_.size();
    std::vector<IndexKey> keys;
    for (std::size_t t = 0; t < 1 + rng() % 3; ++t) {
      keys.push_back(words[std::min<std::size_t>(rng() % 60, rng() % 60)]);
    }
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    const std::int64_t before = q % 2 ? 1501 : 1 + static_cast<std::int64_t>(rng() % 1500);
    const std::size_t limit = 1 + rng() % 60;
    const std::vector<std::int64_t> expected = Scan(room, keys, before, limit);
    EXPECT_EQ(Match(room, keys, before, limit), expected) << "query " << q;
    nonempty += !expected.empty();
  }
  EXPECT_GT(nonempty, 200u);  // the comparison is about something
  // A key nobody put, and a room without entries, find nothing.
  EXPECT_EQ(Match(0, {{200, 1}, words[0]}, 1501, 50), Scan(0, {{200, 1}, words[0]}, 1501, 50));
}

TEST_P(IndexPostingsTest, AFullChunkSplitsAndAnEmptiedOneGoes) {
  std::mt19937 rng(7);
  Fill(1, 400, rng);
  const IndexKey word{9, 0x1234};
  // Every other activity, in seq order: chunks of the bucket fill to kChunkBytes and the next
  // activity starts a new one.
  Batch([&] {
    for (std::int64_t seq = 2; seq <= 400; seq += 2) Put(seq, {word, {9, 0x0001}});
  });
  const std::int64_t in_order = CheckLayout();
  // 200 activities x 2 entries x 3 bytes = 1,200 bytes: three chunks, the first two full.
  EXPECT_EQ(in_order, 3);
  // The odd ones, late, in the chunks' middles: full chunks split, nothing is lost.
  Batch([&] {
    for (std::int64_t seq = 399; seq >= 1; seq -= 2) Put(seq, {word});
  });
  EXPECT_GT(CheckLayout(), in_order + 1);
  EXPECT_EQ(Match(0, {word}, 401, 1000).size(), 400u);
  // Every activity's entries removed: no chunk, no bucket list left.
  Batch([&] {
    for (std::int64_t seq = 1; seq <= 400; ++seq) Put(seq, {});
  });
  EXPECT_EQ(CheckLayout(), 0);
  Work([&](Poco::Data::Session& s) {
    const IndexPostings::Totals totals = IndexPostings::Count(s);
    EXPECT_EQ(totals.entries, 0);
    EXPECT_EQ(totals.sets, 0);
  });
  EXPECT_EQ(Match(0, {word}, 401, 1000), std::vector<std::int64_t>{});
}

TEST_P(IndexPostingsTest, ACorruptChunkFailsTheSearchInsteadOfAnsweringWrong) {
  std::mt19937 rng(3);
  Fill(1, 10, rng);
  const IndexKey word{1, 1};
  for (std::int64_t seq = 1; seq <= 10; ++seq) Put(seq, {word});
  Work([&](Poco::Data::Session& s) {
    const std::uint8_t corrupt[] = {0x01, 0x80};
    Database::Prepare(s, "UPDATE index_postings SET entries = ?").BindBlob(corrupt).Run();
  });
  Status searched = db_->InTransaction([&](Poco::Data::Session& s) -> Status {
    IndexPostings::Match(s, rooms_[0], {word}, 11, 10);
    return OkStatus();
  });
  ASSERT_FALSE(searched.ok());
  EXPECT_NE(searched.error().message().find("does not decode"), std::string::npos)
      << searched.error().ToString();
}

// False positives: the store keeps 24 bits of a token, so a search for a token finds exactly the
// activities that hold a token agreeing with it on those bits: every activity that holds the
// token itself (no false negative), and, about (the activity's tokens) / 2^24 of the time, one
// that does not (the client drops it when it decrypts the activity and finds no such word).
TEST_P(IndexPostingsTest, ATokenFindsEveryActivityWithItAndOnlyThoseAgreeingOn24Bits) {
  std::mt19937 rng(24);
  Fill(2, 2000, rng);
  // Tokens as indexerd makes them: 8 random bytes in base64url, 11 characters; 32 an activity.
  auto token = [&] {
    std::string bytes(8, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    return jose::Base64UrlEncode(bytes);
  };
  std::vector<std::string> common;
  for (int i = 0; i < 20; ++i) common.push_back(token());
  std::map<std::int64_t, std::set<std::string>> tokens_of;
  std::map<std::int64_t, std::set<IndexKey>> keys_of;
  for (std::int64_t seq = 1; seq <= 2000; ++seq) {
    std::set<std::string>& set = tokens_of[seq];
    for (int i = 0; i < 4; ++i) set.insert(common[rng() % common.size()]);
    while (set.size() < 32) set.insert(token());
    std::set<IndexKey>& keys = keys_of[seq];
    for (const std::string& t : set) keys.insert(IndexKey::Of(t));
  }
  Batch([&] {
    for (const auto& [seq, keys] : keys_of) Put(seq, keys);
  });
  // Queries: the common tokens, some put once, and tokens never put.
  std::vector<std::string> queries = common;
  for (int i = 0; i < 50; ++i) {
    queries.push_back(*std::next(tokens_of[1 + i * 37].begin(), 5));
    queries.push_back(token());
  }
  std::size_t false_positives = 0;
  for (const std::string& q : queries) {
    for (std::size_t room = 0; room < rooms_.size(); ++room) {
      const std::vector<std::int64_t> found = Match(room, {IndexKey::Of(q)}, 2001, 5000);
      std::vector<std::int64_t> holding, agreeing;
      for (auto it = tokens_of.rbegin(); it != tokens_of.rend(); ++it) {
        if (room_of_[it->first - 1] != room) continue;
        if (it->second.count(q)) holding.push_back(it->first);
        if (keys_of[it->first].count(IndexKey::Of(q))) agreeing.push_back(it->first);
      }
      EXPECT_EQ(found, agreeing) << q;
      EXPECT_TRUE(std::includes(found.rbegin(), found.rend(), holding.rbegin(), holding.rend()));
      false_positives += found.size() - holding.size();
    }
  }
  // 120 queries x 1,000 activities a room x 32 tokens / 2^24: 0.23 expected.
  EXPECT_LE(false_positives, 3u);
}

}  // namespace
}  // namespace strongroom::core::internal
