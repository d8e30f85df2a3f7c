#include "strongroom/indexer/indexer_store.h"

#include <Poco/Data/Session.h>
#include <Poco/Data/Statement.h>

#include <algorithm>

namespace strongroom::indexer {

using Poco::Data::Session;
using Poco::Data::Keywords::bind;
using Poco::Data::Keywords::into;
using Poco::Data::Keywords::now;

namespace {
using Int = Poco::Int64;
constexpr std::size_t kResourcesPerStatement = 500;
}  // namespace

std::vector<Migration> IndexerStore::Migrations() {
  return {
      {1,
       "the stream cursor, rooms (conversation -> KMS resource, search key version) and jobs",
       {"CREATE TABLE stream_cursor (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "seq INTEGER NOT NULL)",
        "INSERT INTO stream_cursor (id, seq) VALUES (1, 0)",
        "CREATE TABLE rooms (conversation_id TEXT PRIMARY KEY, resource_uri TEXT NOT NULL, "
        "search_key_version INTEGER NOT NULL, activities_indexed INTEGER NOT NULL DEFAULT 0)",
        "CREATE INDEX rooms_by_resource ON rooms (resource_uri)",
        "CREATE TABLE jobs (name TEXT PRIMARY KEY, state TEXT NOT NULL, "
        "target_version INTEGER NOT NULL, cursor INTEGER NOT NULL, done INTEGER NOT NULL, "
        "total INTEGER NOT NULL)"}},
      {2,
       "a job's end: the stream cursor when the re-index started",
       {"ALTER TABLE jobs ADD COLUMN end_seq INTEGER NOT NULL DEFAULT 0"}},
  };
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
  Int seq = 0;
  SR_RETURN_IF_ERROR(db_->WithSession([&](Session& s) -> Status {
    s << "SELECT seq FROM stream_cursor WHERE id = 1", into(seq), now;
    return OkStatus();
  }));
  return static_cast<std::int64_t>(seq);
}

Status IndexerStore::Commit(std::int64_t seq, const std::vector<RoomUpdate>& rooms) {
  return db_->InTransaction([&](Session& s) -> Status {
    Int current = 0;
    s << "SELECT seq FROM stream_cursor WHERE id = 1", into(current), now;
    if (seq < current) {
      return Error(ErrorCode::kFailedPrecondition, "the stream cursor would move back from " +
                                                       std::to_string(current) + " to " +
                                                       std::to_string(seq));
    }
    for (const RoomUpdate& room : rooms) {
      s << "INSERT INTO rooms (conversation_id, resource_uri, search_key_version, "
           "activities_indexed) VALUES (?, ?, ?, ?) ON CONFLICT (conversation_id) DO UPDATE "
           "SET activities_indexed = activities_indexed + excluded.activities_indexed",
          bind(room.conversation_id), bind(room.resource_uri),
          bind(static_cast<Int>(room.search_key_version)), bind(static_cast<Int>(room.indexed)),
          now;
    }
    s << "UPDATE stream_cursor SET seq = ? WHERE id = 1", bind(static_cast<Int>(seq)), now;
    return OkStatus();
  });
}

Result<std::optional<Room>> IndexerStore::RoomOf(const std::string& conversation_id) {
  std::optional<Room> room;
  SR_RETURN_IF_ERROR(db_->WithSession([&](Session& s) -> Status {
    std::vector<std::string> resource;
    std::vector<Int> version, count;
    s << "SELECT resource_uri, search_key_version, activities_indexed FROM rooms "
         "WHERE conversation_id = ?",
        bind(conversation_id), into(resource), into(version), into(count), now;
    if (!resource.empty()) {
      room = Room{conversation_id, resource[0], static_cast<std::uint32_t>(version[0]), count[0]};
    }
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
      Poco::Data::Statement statement(s);
      statement << sql;
      for (std::size_t i = start; i < end; ++i) statement, bind(resource_uris[i]);
      std::vector<std::string> ids, resources;
      std::vector<Int> versions, counts;
      statement, into(ids), into(resources), into(versions), into(counts);
      statement.execute();
      for (std::size_t i = 0; i < ids.size(); ++i) {
        rooms.push_back(
            Room{ids[i], resources[i], static_cast<std::uint32_t>(versions[i]), counts[i]});
      }
    }
    return OkStatus();
  }));
  std::sort(rooms.begin(), rooms.end(),
            [](const Room& a, const Room& b) { return a.conversation_id < b.conversation_id; });
  return rooms;
}

Result<std::int64_t> IndexerStore::RoomCount() {
  Int count = 0;
  SR_RETURN_IF_ERROR(db_->WithSession([&](Session& s) -> Status {
    s << "SELECT COUNT(*) FROM rooms", into(count), now;
    return OkStatus();
  }));
  return static_cast<std::int64_t>(count);
}

namespace {
void WriteJob(Session& s, const JobProgress& job) {
  s << "INSERT INTO jobs (name, state, target_version, cursor, done, total, end_seq) "
       "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET state = excluded.state, "
       "target_version = excluded.target_version, cursor = excluded.cursor, "
       "done = excluded.done, total = excluded.total, end_seq = excluded.end_seq",
      bind(job.name), bind(job.state), bind(static_cast<Int>(job.target_version)),
      bind(static_cast<Int>(job.cursor)), bind(static_cast<Int>(job.done)),
      bind(static_cast<Int>(job.total)), bind(static_cast<Int>(job.end_seq)), now;
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
    const Int version = static_cast<Int>(job.target_version);
    s << "UPDATE rooms SET search_key_version = ? WHERE search_key_version < ?", bind(version),
        bind(version), now;
    return OkStatus();
  });
}

Result<std::optional<std::uint32_t>> IndexerStore::OldestRoomVersion() {
  std::optional<std::uint32_t> oldest;
  SR_RETURN_IF_ERROR(db_->WithSession([&](Session& s) -> Status {
    std::vector<Int> version;
    s << "SELECT search_key_version FROM rooms ORDER BY search_key_version LIMIT 1", into(version),
        now;
    if (!version.empty()) oldest = static_cast<std::uint32_t>(version[0]);
    return OkStatus();
  }));
  return oldest;
}

Result<std::int64_t> IndexerStore::ActivitiesIndexed() {
  Int sum = 0;
  SR_RETURN_IF_ERROR(db_->WithSession([&](Session& s) -> Status {
    s << "SELECT COALESCE(SUM(activities_indexed), 0) FROM rooms", into(sum), now;
    return OkStatus();
  }));
  return static_cast<std::int64_t>(sum);
}

Result<std::optional<JobProgress>> IndexerStore::Job(const std::string& name) {
  std::optional<JobProgress> job;
  SR_RETURN_IF_ERROR(db_->WithSession([&](Session& s) -> Status {
    std::vector<std::string> state;
    std::vector<Int> version, cursor, done, total, end_seq;
    s << "SELECT state, target_version, cursor, done, total, end_seq FROM jobs WHERE name = ?",
        bind(name), into(state), into(version), into(cursor), into(done), into(total),
        into(end_seq), now;
    if (!state.empty()) {
      job = JobProgress{name,      state[0], static_cast<std::uint32_t>(version[0]),
                        cursor[0], done[0],  total[0],
                        end_seq[0]};
    }
    return OkStatus();
  }));
  return job;
}

}  // namespace strongroom::indexer
