// The search index store's tables and every SQL statement on them (migration 4; the rules of who
// may put and search are index_store.h's). What is kept of a token and how a chunk of entries is
// written: posting_chunk.h.
//
// Tables (in each engine's types: BLOB and BYTEA; WITHOUT ROWID on SQLite alone):
//   index_rooms     (room, conversation_id): a small integer per conversation with
//                   entries, so that the chunks' keys are a few bytes instead of a UUID's text
//   index_postings  (room, bucket, first_seq, entries BLOB), WITHOUT ROWID: the entries of one
//                   bucket of a room, from first_seq up to the next chunk's, in seq order. A chunk
//                   grows to kChunkBytes; an activity past its end starts the next one, an entry
//                   put in its middle (an edit's tokens are stored under the message's seq) splits
//                   it in two. All the entries of one activity and bucket are in one chunk.
//   index_sets      (seq, buckets BLOB): the buckets (a byte each, ascending) an activity has
//                   entries in, so that a replace, an edit or a retraction rewrites only those
//                   chunks: the removed entries are gone at once, overwritten with zeros by
//                   secure_delete (database.h) on SQLite, no copy left in a second index.
//
// A search (Match) reads, per query token, its bucket's chunks newest first from `before`, keeps
// the entries with the token's 2 bytes, and intersects the tokens' seq lists by leapfrogging: each
// token's list is read only down to the oldest match wanted. The statements are kept compiled per
// connection (Database::Prepare).
//
// The functions run on a session inside a transaction (Match: one read snapshot); they throw
// Poco::Data exceptions on database failures and on a chunk that does not decode, which Database
// turns into UNAVAILABLE or INTERNAL.
#ifndef STRONGROOM_CORE_SRC_INDEX_POSTINGS_H_
#define STRONGROOM_CORE_SRC_INDEX_POSTINGS_H_

#include <Poco/Data/Session.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "posting_chunk.h"
#include "strongroom/common/database.h"

namespace strongroom::core::internal {

class IndexPostings {
 public:
  using Session = Poco::Data::Session;

  // A chunk that reaches this size is not added to past its last activity; one of more is split
  // when an entry is put in its middle. (A chunk of one activity may be larger: up to 512 tokens
  // in one bucket.)
  static constexpr std::size_t kChunkBytes = 512;

  // Migration 4: the tables above, in `engine`'s DDL.
  static std::vector<std::string> CreateTablesSql(Database::Engine engine);
  // Migration 4's conversion: every row of migration 1's index_tokens becomes an entry (the same
  // tokens find the same activities), then index_tokens is dropped (its pages overwritten with
  // zeros by secure_delete on SQLite).
  static void ConvertTokenRows(Session& s);

  // The activity's entries become those of `keys` (any order, duplicates count once): what it
  // held before is removed. No keys: the activity has no entries.
  static void Replace(Session& s, const std::string& conversation_id, std::int64_t seq,
                      std::vector<IndexKey> keys);
  static void Remove(Session& s, const std::string& conversation_id, std::int64_t seq) {
    Replace(s, conversation_id, seq, {});
  }

  // The seqs of the conversation's activities that have every one of `keys` and seq < before,
  // newest first, at most `limit`.
  static std::vector<std::int64_t> Match(Session& s, const std::string& conversation_id,
                                         const std::vector<IndexKey>& keys, std::int64_t before,
                                         std::size_t limit);
  // The id of the activity at `seq`.
  static std::optional<std::string> ActivityId(Session& s, std::int64_t seq);

  // What the store holds (tests, the benchmark).
  struct Totals {
    std::int64_t rooms = 0;
    std::int64_t chunks = 0;
    std::int64_t entries = 0;
    std::int64_t sets = 0;  // activities with entries
    std::int64_t chunk_bytes = 0;
  };
  static Totals Count(Session& s);
  // The entries of the activity at `seq`, sorted by (bucket, kept).
  static std::vector<IndexKey> EntriesOf(Session& s, const std::string& conversation_id,
                                         std::int64_t seq);

  // The statements whose plans matter, for tests that check them with EXPLAIN QUERY PLAN.
  static const char* const kChunkAtOrBelowSql;
  static const char* const kRoomSql;
  static const char* const kSetSql;
};

}  // namespace strongroom::core::internal

#endif  // STRONGROOM_CORE_SRC_INDEX_POSTINGS_H_
