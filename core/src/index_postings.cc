#include "index_postings.h"

#include <Poco/Data/DataException.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <utility>

#include "strongroom/common/database.h"
#include "strongroom/common/sql_statement.h"

namespace strongroom::core::internal {
namespace {

using Buckets = std::vector<std::uint8_t>;  // ascending, distinct

// (The CAST gives PostgreSQL the parameter's type, which a select list does not.)
const char* const kInsertRoomSql =
    "INSERT INTO index_rooms (room, conversation_id) "
    "SELECT COALESCE(MAX(room), 0) + 1, CAST(? AS TEXT) FROM index_rooms";
const char* const kInsertChunkSql =
    "INSERT INTO index_postings (room, bucket, first_seq, entries) VALUES (?, ?, ?, ?)";
const char* const kUpdateChunkSql =
    "UPDATE index_postings SET entries = ? WHERE room = ? AND bucket = ? AND first_seq = ?";
const char* const kDeleteChunkSql =
    "DELETE FROM index_postings WHERE room = ? AND bucket = ? AND first_seq = ?";
const char* const kInsertSetSql = "INSERT INTO index_sets (seq, buckets) VALUES (?, ?)";
const char* const kUpdateSetSql = "UPDATE index_sets SET buckets = ? WHERE seq = ?";
const char* const kDeleteSetSql = "DELETE FROM index_sets WHERE seq = ?";

std::vector<PostingEntry> Decode(std::int64_t first_seq, std::span<const std::uint8_t> blob) {
  std::optional<std::vector<PostingEntry>> entries = DecodeChunk(first_seq, blob);
  if (!entries) {
    throw Poco::Data::DataException("the search index store holds a chunk that does not decode");
  }
  return std::move(*entries);
}

std::optional<std::int64_t> RoomOf(Poco::Data::Session& s, const std::string& conversation_id) {
  SqlStatement find = Database::Prepare(s, IndexPostings::kRoomSql);
  find.Bind(conversation_id);
  if (!find.Next()) return std::nullopt;
  return find.Int(0);
}

std::int64_t CreateRoom(Poco::Data::Session& s, const std::string& conversation_id) {
  Database::Prepare(s, kInsertRoomSql).Bind(conversation_id).Run();
  return RoomOf(s, conversation_id).value();
}

// One (room, bucket) posting: its chunks read and written.
class Posting {
 public:
  Posting(Poco::Data::Session& s, std::int64_t room, std::uint8_t bucket)
      : s_(s), room_(room), bucket_(bucket) {}

  void Insert(std::int64_t first_seq, std::span<const PostingEntry> entries) {
    Database::Prepare(s_, kInsertChunkSql)
        .Bind(room_)
        .Bind(std::int64_t{bucket_})
        .Bind(first_seq)
        .BindBlob(EncodeChunk(first_seq, entries))
        .Run();
  }
  void Update(std::int64_t first_seq, std::span<const PostingEntry> entries) {
    Database::Prepare(s_, kUpdateChunkSql)
        .BindBlob(EncodeChunk(first_seq, entries))
        .Bind(room_)
        .Bind(std::int64_t{bucket_})
        .Bind(first_seq)
        .Run();
  }
  void Delete(std::int64_t first_seq) {
    Database::Prepare(s_, kDeleteChunkSql)
        .Bind(room_)
        .Bind(std::int64_t{bucket_})
        .Bind(first_seq)
        .Run();
  }

  // The entries of the activity at `seq` become `kept` (sorted, distinct; empty: none).
  void Put(std::int64_t seq, const std::vector<std::uint16_t>& kept) {
    std::optional<std::int64_t> first_seq;
    std::vector<PostingEntry> entries;
    {
      SqlStatement find = Database::Prepare(s_, IndexPostings::kChunkAtOrBelowSql);
      find.Bind(room_).Bind(std::int64_t{bucket_}).Bind(seq);
      if (find.Next()) {
        first_seq = find.Int(0);
        entries = Decode(*first_seq, find.Blob(1));
      }
    }
    if (!first_seq) {
      // Older than the bucket's chunks (or the bucket's first entry): a chunk of its own.
      if (kept.empty()) return;
      std::vector<PostingEntry> own;
      for (std::uint16_t k : kept) own.push_back({seq, k});
      Insert(seq, own);
      return;
    }
    const std::int64_t first = *first_seq;
    const auto own_begin = std::lower_bound(entries.begin(), entries.end(), PostingEntry{seq, 0});
    const auto own_end =
        std::find_if(own_begin, entries.end(), [&](const PostingEntry& e) { return e.seq != seq; });
    std::vector<PostingEntry> changed;
    changed.reserve(entries.size() + kept.size());
    changed.insert(changed.end(), entries.begin(), own_begin);
    for (std::uint16_t k : kept) changed.push_back({seq, k});
    changed.insert(changed.end(), own_end, entries.end());
    if (changed == entries) return;  // a replay
    if (changed.empty()) {
      Delete(first);
      return;
    }
    if (EncodedChunkSize(first, changed) <= IndexPostings::kChunkBytes ||
        changed.front().seq == changed.back().seq) {
      Update(first, changed);
      return;
    }
    // Too large: cut at an activity's first entry. Past the chunk's last activity, the activity
    // starts the next chunk (so a chunk filled in seq order stays full); otherwise near the middle.
    const auto own = std::lower_bound(changed.begin(), changed.end(), PostingEntry{seq, 0});
    std::size_t cut = static_cast<std::size_t>(own - changed.begin());
    if (cut == 0 || changed.back().seq != seq) {
      cut = changed.size() / 2;
      while (cut < changed.size() && changed[cut].seq == changed[cut - 1].seq) ++cut;
      if (cut == changed.size()) {
        cut = changed.size() / 2;
        while (changed[cut].seq == changed[cut - 1].seq) --cut;  // stops at 1: not all one seq
      }
    }
    const std::span<const PostingEntry> left(changed.data(), cut);
    const std::span<const PostingEntry> right(changed.data() + cut, changed.size() - cut);
    if (!std::equal(left.begin(), left.end(), entries.begin(), entries.end())) {
      Update(first, left);
    }
    Insert(right.front().seq, right);
  }

 private:
  Poco::Data::Session& s_;
  const std::int64_t room_;
  const std::uint8_t bucket_;
};

// One query token's entries in a room, read newest first one chunk at a time. AtOrBelow must be
// asked for ever smaller seqs (the leapfrog in Match does): a loaded chunk is kept while it can
// still hold the answer.
class Cursor {
 public:
  Cursor(SqlStatement& chunks, std::int64_t room, IndexKey key)
      : chunks_(chunks), room_(room), key_(key) {}

  // The greatest seq <= at with the key's entry, if any.
  std::optional<std::int64_t> AtOrBelow(std::int64_t at) {
    while (at > 0) {
      if (!loaded_ || at < first_seq_) {
        if (!Load(at)) return std::nullopt;
      }
      auto after = std::upper_bound(seqs_.begin(), seqs_.end(), at);
      if (after != seqs_.begin()) return *std::prev(after);
      at = first_seq_ - 1;  // in the chunk before
    }
    return std::nullopt;
  }

 private:
  // The chunk that holds `at`: the one with the greatest first_seq <= at.
  bool Load(std::int64_t at) {
    chunks_.Reset();
    chunks_.Bind(room_).Bind(std::int64_t{key_.bucket}).Bind(at);
    if (!chunks_.Next()) return false;
    loaded_ = true;
    first_seq_ = chunks_.Int(0);
    seqs_.clear();
    for (const PostingEntry& e : Decode(first_seq_, chunks_.Blob(1))) {
      if (e.kept == key_.kept) seqs_.push_back(e.seq);
    }
    chunks_.Reset();
    return true;
  }

  SqlStatement& chunks_;
  const std::int64_t room_;
  const IndexKey key_;
  bool loaded_ = false;
  std::int64_t first_seq_ = 0;
  std::vector<std::int64_t> seqs_;  // ascending
};

Buckets BucketsOf(const std::vector<IndexKey>& sorted_keys) {
  Buckets buckets;
  for (const IndexKey& k : sorted_keys) {
    if (buckets.empty() || buckets.back() != k.bucket) buckets.push_back(k.bucket);
  }
  return buckets;
}

std::optional<Buckets> SetOf(Poco::Data::Session& s, std::int64_t seq) {
  SqlStatement find = Database::Prepare(s, IndexPostings::kSetSql);
  find.Bind(seq);
  if (!find.Next()) return std::nullopt;
  const std::span<const std::uint8_t> blob = find.Blob(0);
  return Buckets(blob.begin(), blob.end());
}

}  // namespace

// The chunk that holds `seq` in a bucket: a range of the primary key, its last row.
const char* const IndexPostings::kChunkAtOrBelowSql =
    "SELECT first_seq, entries FROM index_postings WHERE room = ? AND bucket = ? "
    "AND first_seq <= ? ORDER BY first_seq DESC LIMIT 1";
const char* const IndexPostings::kRoomSql =
    "SELECT room FROM index_rooms WHERE conversation_id = ?";
const char* const IndexPostings::kSetSql = "SELECT buckets FROM index_sets WHERE seq = ?";

std::vector<std::string> IndexPostings::CreateTablesSql(Database::Engine engine) {
  const bool postgres = engine == Database::Engine::kPostgres;
  const std::string integer = postgres ? "BIGINT" : "INTEGER";
  const std::string blob = postgres ? "BYTEA" : "BLOB";
  return {
      "CREATE TABLE index_rooms (room " + integer +
          " PRIMARY KEY, "
          "conversation_id TEXT NOT NULL UNIQUE REFERENCES conversations (id))",
      "CREATE TABLE index_postings (room " + integer +
          " NOT NULL REFERENCES index_rooms (room), "
          "bucket " +
          integer + " NOT NULL, first_seq " + integer + " NOT NULL, entries " + blob +
          " NOT NULL, PRIMARY KEY (room, bucket, first_seq))" + (postgres ? "" : " WITHOUT ROWID"),
      "CREATE TABLE index_sets (seq " + integer +
          " PRIMARY KEY REFERENCES activities (seq), "
          "buckets " +
          blob + " NOT NULL)",
  };
}

void IndexPostings::ConvertTokenRows(Session& s) {
  // By conversation, each one's activities in seq order (activities_by_conversation), each one's
  // tokens by index_tokens_by_seq: one conversation's entries at a time, no sort.
  SqlStatement rows =
      Database::Prepare(s,
                        "SELECT a.conversation_id, a.seq, t.token FROM activities a "
                        "JOIN index_tokens t ON t.seq = a.seq ORDER BY a.conversation_id, a.seq");
  std::string conversation;
  std::map<std::uint8_t, std::vector<PostingEntry>> postings;
  std::vector<std::pair<std::int64_t, Buckets>> sets;
  auto flush = [&] {
    if (sets.empty()) return;
    const std::int64_t room = CreateRoom(s, conversation);
    for (auto& [bucket, entries] : postings) {
      std::sort(entries.begin(), entries.end());
      entries.erase(std::unique(entries.begin(), entries.end()), entries.end());
      Posting posting(s, room, bucket);
      // Full chunks, each cut before an activity that would take it past kChunkBytes.
      std::size_t begin = 0;
      while (begin < entries.size()) {
        std::size_t end = begin;
        std::size_t bytes = 0;
        while (end < entries.size()) {
          std::size_t next = end;
          while (next < entries.size() && entries[next].seq == entries[end].seq) ++next;
          const std::int64_t previous = end == begin ? entries[begin].seq : entries[end - 1].seq;
          const std::size_t more = EncodedChunkSize(
              previous, std::span<const PostingEntry>(entries.data() + end, next - end));
          if (end > begin && bytes + more > kChunkBytes) break;
          bytes += more;
          end = next;
        }
        posting.Insert(entries[begin].seq,
                       std::span<const PostingEntry>(entries.data() + begin, end - begin));
        begin = end;
      }
    }
    for (auto& [seq, buckets] : sets) {
      std::sort(buckets.begin(), buckets.end());
      buckets.erase(std::unique(buckets.begin(), buckets.end()), buckets.end());
      Database::Prepare(s, kInsertSetSql).Bind(seq).BindBlob(buckets).Run();
    }
    postings.clear();
    sets.clear();
  };
  while (rows.Next()) {
    std::string id = rows.Text(0);
    const std::int64_t seq = rows.Int(1);
    const IndexKey key = IndexKey::Of(rows.Text(2));
    if (id != conversation) {
      flush();
      conversation = std::move(id);
    }
    postings[key.bucket].push_back({seq, key.kept});
    if (sets.empty() || sets.back().first != seq) sets.push_back({seq, {}});
    sets.back().second.push_back(key.bucket);
  }
  flush();
  rows.Reset();
  Database::Prepare(s, "DROP TABLE index_tokens").Run();
}

void IndexPostings::Replace(Session& s, const std::string& conversation_id, std::int64_t seq,
                            std::vector<IndexKey> keys) {
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  std::optional<std::int64_t> room = RoomOf(s, conversation_id);
  if (!room) {
    if (keys.empty()) return;  // no room, no entries
    room = CreateRoom(s, conversation_id);
  }
  const std::optional<Buckets> old_buckets = SetOf(s, seq);
  const Buckets new_buckets = BucketsOf(keys);
  Buckets touched;
  std::set_union(new_buckets.begin(), new_buckets.end(),
                 old_buckets ? old_buckets->begin() : new_buckets.end(),
                 old_buckets ? old_buckets->end() : new_buckets.end(), std::back_inserter(touched));
  auto key = keys.begin();
  for (std::uint8_t bucket : touched) {
    std::vector<std::uint16_t> kept;
    for (; key != keys.end() && key->bucket == bucket; ++key) kept.push_back(key->kept);
    Posting(s, *room, bucket).Put(seq, kept);
  }
  if (new_buckets.empty()) {
    if (old_buckets) Database::Prepare(s, kDeleteSetSql).Bind(seq).Run();
  } else if (!old_buckets) {
    Database::Prepare(s, kInsertSetSql).Bind(seq).BindBlob(new_buckets).Run();
  } else if (*old_buckets != new_buckets) {
    Database::Prepare(s, kUpdateSetSql).BindBlob(new_buckets).Bind(seq).Run();
  }
}

std::vector<std::int64_t> IndexPostings::Match(Session& s, const std::string& conversation_id,
                                               const std::vector<IndexKey>& keys,
                                               std::int64_t before, std::size_t limit) {
  std::vector<std::int64_t> out;
  if (keys.empty() || limit == 0) return out;
  const std::optional<std::int64_t> room = RoomOf(s, conversation_id);
  if (!room) return out;
  SqlStatement chunks = Database::Prepare(s, kChunkAtOrBelowSql);
  std::vector<Cursor> cursors;
  cursors.reserve(keys.size());
  for (const IndexKey& key : keys) cursors.emplace_back(chunks, *room, key);
  // Leapfrog: x is the newest seq every token may still have; a token's entry at or below it
  // either agrees or lowers it, and when all agree x is a match.
  std::int64_t x = before - 1;
  std::size_t agree = 0;
  for (std::size_t i = 0; out.size() < limit; i = (i + 1) % cursors.size()) {
    const std::optional<std::int64_t> y = cursors[i].AtOrBelow(x);
    if (!y) break;
    if (*y != x) {
      x = *y;
      agree = 0;
    }
    if (++agree == cursors.size()) {
      out.push_back(x);
      --x;
      agree = 0;
    }
  }
  return out;
}

std::optional<std::string> IndexPostings::ActivityId(Session& s, std::int64_t seq) {
  SqlStatement find = Database::Prepare(s, "SELECT id FROM activities WHERE seq = ?");
  find.Bind(seq);
  if (!find.Next()) return std::nullopt;
  return find.Text(0);
}

IndexPostings::Totals IndexPostings::Count(Session& s) {
  Totals totals;
  SqlStatement rooms = Database::Prepare(s, "SELECT COUNT(*) FROM index_rooms");
  if (rooms.Next()) totals.rooms = rooms.Int(0);
  SqlStatement sets = Database::Prepare(s, "SELECT COUNT(*) FROM index_sets");
  if (sets.Next()) totals.sets = sets.Int(0);
  SqlStatement chunks = Database::Prepare(s, "SELECT first_seq, entries FROM index_postings");
  while (chunks.Next()) {
    ++totals.chunks;
    totals.chunk_bytes += static_cast<std::int64_t>(chunks.Blob(1).size());
    totals.entries += static_cast<std::int64_t>(Decode(chunks.Int(0), chunks.Blob(1)).size());
  }
  return totals;
}

std::vector<IndexKey> IndexPostings::EntriesOf(Session& s, const std::string& conversation_id,
                                               std::int64_t seq) {
  std::vector<IndexKey> keys;
  const std::optional<std::int64_t> room = RoomOf(s, conversation_id);
  const std::optional<Buckets> buckets = SetOf(s, seq);
  if (!room || !buckets) return keys;
  for (std::uint8_t bucket : *buckets) {
    SqlStatement find = Database::Prepare(s, kChunkAtOrBelowSql);
    find.Bind(*room).Bind(std::int64_t{bucket}).Bind(seq);
    if (!find.Next()) continue;
    for (const PostingEntry& e : Decode(find.Int(0), find.Blob(1))) {
      if (e.seq == seq) keys.push_back({bucket, e.kept});
    }
  }
  return keys;
}

}  // namespace strongroom::core::internal
