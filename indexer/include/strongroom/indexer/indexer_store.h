// indexerd's own database (common/database.h: SQLite, or PostgreSQL with PostgresMigrations()):
// what it must remember across a restart, and nothing of any message.
//
//   stream_cursor  the seq of the last activity of the core's indexer stream whose tokens were put
//                  (committed after the PUT: at-least-once delivery, and the core's PUT replaces
//                  an activity's set, so a replay after a crash indexes nothing twice);
//   rooms          conversation -> its KMS resource (from the keys that opened its content, bound
//                  to that resource by the KMS) and the organization search key version its
//                  tokens are made with; queries map the KMS's authorizations to rooms with it;
//   jobs           a resumable job's progress (the re-index after a search-key rotation).
//
// It holds no plaintext, term, token or key: ids, KMS URIs, versions and counters only.
#ifndef STRONGROOM_INDEXER_INDEXER_STORE_H_
#define STRONGROOM_INDEXER_INDEXER_STORE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "strongroom/common/database.h"
#include "strongroom/common/error.h"

namespace strongroom::indexer {

struct Room {
  std::string conversation_id;
  std::string resource_uri;
  std::uint32_t search_key_version = 0;
  std::int64_t activities_indexed = 0;
};

struct JobProgress {
  std::string name;   // "reindex"
  std::string state;  // "running", "done"
  std::uint32_t target_version = 0;
  std::int64_t cursor = 0;   // the last seq done
  std::int64_t done = 0;     // activities re-indexed
  std::int64_t total = 0;    // activities indexed when it started (what it will about redo)
  std::int64_t end_seq = 0;  // the stream cursor when it started: it is done past this seq
};

class IndexerStore {
 public:
  // The indexer's schema, on SQLite and on PostgreSQL: the same versions and tables in each
  // engine's DDL.
  static std::vector<Migration> Migrations();
  static std::vector<Migration> PostgresMigrations();

  // `db` opened with its engine's migrations; FAILED_PRECONDITION otherwise. `db` must outlive the
  // store.
  static Result<IndexerStore> New(Database& db);

  // The stream cursor: 0 before anything was indexed.
  Result<std::int64_t> Cursor();

  // One batch done: its rooms recorded (new ones inserted, `indexed` added to their counts) and
  // the cursor moved to `seq`, in one transaction. A cursor that would move backwards is
  // FAILED_PRECONDITION and nothing changes.
  struct RoomUpdate {
    std::string conversation_id;
    std::string resource_uri;          // kept from the first time the room is seen
    std::uint32_t search_key_version;  // likewise
    std::int64_t indexed = 0;
  };
  Status Commit(std::int64_t seq, const std::vector<RoomUpdate>& rooms);

  Result<std::optional<Room>> RoomOf(const std::string& conversation_id);
  // The rooms of these KMS resources that the indexer has seen, in conversation id order.
  Result<std::vector<Room>> RoomsOfResources(const std::vector<std::string>& resource_uris);
  Result<std::int64_t> RoomCount();

  // The lowest search key version of any room (nullopt when there is no room).
  Result<std::optional<std::uint32_t>> OldestRoomVersion();
  // The activities indexed in all rooms (the sum of their counts).
  Result<std::int64_t> ActivitiesIndexed();
  // A re-index finished: the job saved as `job` (state "done") and every room of an older
  // version set to `job.target_version`, in one transaction.
  Status FinishReindex(const JobProgress& job);

  Status SaveJob(const JobProgress& job);
  Result<std::optional<JobProgress>> Job(const std::string& name);

 private:
  explicit IndexerStore(Database& db) : db_(&db) {}
  Database* db_;
};

}  // namespace strongroom::indexer

#endif  // STRONGROOM_INDEXER_INDEXER_STORE_H_
