#include "strongroom/indexer/indexer_store.h"

#include <Poco/Data/Session.h>

#include <algorithm>

#include "strongroom/common/sql_statement.h"

namespace strongroom::indexer {

using Poco::Data::Session;

namespace {
constexpr std::size_t kResourcesPerStatement = 500;

std::vector<Migration> MigrationsFor(Database::Engine engine) {
  // The same tables in each engine's types (PostgreSQL's INTEGER is 32 bits), so that a version
  // means the same schema on both.
  const std::string integer = engine == Database::Engine::kPostgres ? "BIGINT" : "INTEGER";
  return {
      {1,
       "the stream cursor, rooms (conversation -> KMS resource, search key version) and jobs",
       {"CREATE TABLE stream_cursor (id " + integer + " PRIMARY KEY CHECK (id = 1), seq " +
            integer + " NOT NULL)",
        "INSERT INTO stream_cursor (id, seq) VALUES (1, 0)",
        "CREATE TABLE rooms (conversation_id TEXT PRIMARY KEY, resource_uri TEXT NOT NULL, "
        "search_key_version " +
            integer + " NOT NULL, activities_indexed " + integer + " NOT NULL DEFAULT 0)",
        "CREATE INDEX rooms_by_resource ON rooms (resource_uri)",
        "CREATE TABLE jobs (name TEXT PRIMARY KEY, state TEXT NOT NULL, target_version " + integer +
            " NOT NULL, cursor " + integer + " NOT NULL, done " + integer + " NOT NULL, total " +
            integer + " NOT NULL)"}},
      {2,
       "a job's end: the stream cursor when the re-index started",
       {"ALTER TABLE jobs ADD COLUMN end_seq " + integer + " NOT NULL DEFAULT 0"}},
  };
}

std::int64_t StreamCursor(Session& s) {
  SqlStatement select = Database::Prepare(s, "SELECT seq FROM stream_cursor WHERE id = 1");
  return select.Next() ? select.Int(0) : 0;
}

Room RoomAt(const SqlStatement& row) {
  return Room{row.Text(0), row.Text(1), static_cast<std::uint32_t>(row.Int(2)), row.Int(3)};
}

}  // namespace

std::vector<Migration> IndexerStore::Migrations() {
  return MigrationsFor(Database::Engine::kSqlite);
}

std::vector<Migration> IndexerStore::PostgresMigrations() {
  return MigrationsFor(Database::Engine::kPostgres);
}

Result<IndexerStore> IndexerStore::New(Database& db) {
  if (db.schema_version() != static_cast<int>(Migrations().size())) {
    return Error(ErrorCode::kFailedPrecondition, "the indexer's database is at schema version " +
                                                     std::to_string(db.schema_version()) +
                                                     ", not " +
                                                     std::to_string(Migrations().size()));
  }
  return IndexerStore(db);
}

Result<std::int64_t> IndexerStore::Cursor() {
  std::int64_t seq = 0;
  SR_RETURN_IF_ERROR(db_->WithSession([&](Session& s) -> Status {
    seq = StreamCursor(s);
    return OkStatus();
  }));
  return seq;
}

Status IndexerStore::Commit(std::int64_t seq, const std::vector<RoomUpdate>& rooms) {
  return db_->InTransaction([&](Session& s) -> Status {
    const std::int64_t current = StreamCursor(s);
    if (seq < current) {
      return Error(ErrorCode::kFailedPrecondition, "the stream cursor would move back from " +
                                                       std::to_string(current) + " to " +
                                                       std::to_string(seq));
    }
    for (const RoomUpdate& room : rooms) {
      // The stored row's count named by its table: PostgreSQL finds a bare name ambiguous beside
      // `excluded`.
      Database::Prepare(s,
                        "INSERT INTO rooms (conversation_id, resource_uri, search_key_version, "
                        "activities_indexed) VALUES (?, ?, ?, ?) ON CONFLICT (conversation_id) "
                        "DO UPDATE SET activities_indexed = "
                        "rooms.activities_indexed + excluded.activities_indexed")
          .Bind(room.conversation_id)
          .Bind(room.resource_uri)
          .Bind(std::int64_t{room.search_key_version})
          .Bind(room.indexed)
          .Run();
    }
    Database::Prepare(s, "UPDATE stream_cursor SET seq = ? WHERE id = 1").Bind(seq).Run();
    return OkStatus();
  });
}

Result<std::optional<Room>> IndexerStore::RoomOf(const std::string& conversation_id) {
  std::optional<Room> room;
  SR_RETURN_IF_ERROR(db_->WithSession([&](Session& s) -> Status {
    SqlStatement select = Database::Prepare(
        s,
        "SELECT conversation_id, resource_uri, search_key_version, activities_indexed FROM rooms "
        "WHERE conversation_id = ?");
    select.Bind(conversation_id);
    if (select.Next()) room = RoomAt(select);
    return OkStatus();
  }));
  return room;
}

Result<std::vector<Room>> IndexerStore::RoomsOfResources(
    const std::vector<std::string>& resource_uris) {
  std::vector<Room> rooms;
  SR_RETURN_IF_ERROR(db_->WithSession([&](Session& s) -> Status {
    for (std::size_t start = 0; start < resource_uris.size(); start += kResourcesPerStatement) {
      const std::size_t end = std::min(resource_uris.size(), start + kResourcesPerStatement);
      std::string sql =
          "SELECT conversation_id, resource_uri, search_key_version, activities_indexed FROM "
          "rooms WHERE resource_uri IN (";
      for (std::size_t i = start; i < end; ++i) sql += i == start ? "?" : ", ?";
      sql += ")";
      SqlStatement select = Database::Prepare(s, sql);
      for (std::size_t i = start; i < end; ++i) select.Bind(resource_uris[i]);
      while (select.Next()) rooms.push_back(RoomAt(select));
    }
    return OkStatus();
  }));
  std::sort(rooms.begin(), rooms.end(),
            [](const Room& a, const Room& b) { return a.conversation_id < b.conversation_id; });
  return rooms;
}

Result<std::int64_t> IndexerStore::RoomCount() {
  std::int64_t count = 0;
  SR_RETURN_IF_ERROR(db_->WithSession([&](Session& s) -> Status {
    SqlStatement select = Database::Prepare(s, "SELECT COUNT(*) FROM rooms");
    if (select.Next()) count = select.Int(0);
    return OkStatus();
  }));
  return count;
}

namespace {
void WriteJob(Session& s, const JobProgress& job) {
  Database::Prepare(s,
                    "INSERT INTO jobs (name, state, target_version, cursor, done, total, end_seq) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                    "state = excluded.state, target_version = excluded.target_version, "
                    "cursor = excluded.cursor, done = excluded.done, total = excluded.total, "
                    "end_seq = excluded.end_seq")
      .Bind(job.name)
      .Bind(job.state)
      .Bind(std::int64_t{job.target_version})
      .Bind(job.cursor)
      .Bind(job.done)
      .Bind(job.total)
      .Bind(job.end_seq)
      .Run();
}
}  // namespace

Status IndexerStore::SaveJob(const JobProgress& job) {
  return db_->InTransaction([&](Session& s) -> Status {
    WriteJob(s, job);
    return OkStatus();
  });
}

Status IndexerStore::FinishReindex(const JobProgress& job) {
  return db_->InTransaction([&](Session& s) -> Status {
    WriteJob(s, job);
    const std::int64_t version = job.target_version;
    Database::Prepare(s, "UPDATE rooms SET search_key_version = ? WHERE search_key_version < ?")
        .Bind(version)
        .Bind(version)
        .Run();
    return OkStatus();
  });
}

Result<std::optional<std::uint32_t>> IndexerStore::OldestRoomVersion() {
  std::optional<std::uint32_t> oldest;
  SR_RETURN_IF_ERROR(db_->WithSession([&](Session& s) -> Status {
    SqlStatement select = Database::Prepare(
        s, "SELECT search_key_version FROM rooms ORDER BY search_key_version LIMIT 1");
    if (select.Next()) oldest = static_cast<std::uint32_t>(select.Int(0));
    return OkStatus();
  }));
  return oldest;
}

Result<std::int64_t> IndexerStore::ActivitiesIndexed() {
  std::int64_t sum = 0;
  SR_RETURN_IF_ERROR(db_->WithSession([&](Session& s) -> Status {
    SqlStatement select =
        Database::Prepare(s, "SELECT COALESCE(SUM(activities_indexed), 0) FROM rooms");
    if (select.Next()) sum = select.Int(0);
    return OkStatus();
  }));
  return sum;
}

Result<std::optional<JobProgress>> IndexerStore::Job(const std::string& name) {
  std::optional<JobProgress> job;
  SR_RETURN_IF_ERROR(db_->WithSession([&](Session& s) -> Status {
    SqlStatement select = Database::Prepare(
        s, "SELECT state, target_version, cursor, done, total, end_seq FROM jobs WHERE name = ?");
    select.Bind(name);
    if (select.Next()) {
      job = JobProgress{name,          select.Text(0), static_cast<std::uint32_t>(select.Int(1)),
                        select.Int(2), select.Int(3),  select.Int(4),
                        select.Int(5)};
    }
    return OkStatus();
  }));
  return job;
}

}  // namespace strongroom::indexer
