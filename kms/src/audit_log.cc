#include "strongroom/kms/audit_log.h"

#include <openssl/evp.h>

#include <algorithm>
#include <optional>

namespace strongroom::kms {
namespace {

constexpr std::int64_t kVerifyBatch = 1000;

void PutU64(EVP_MD_CTX* ctx, std::uint64_t v) {
  std::uint8_t b[8];
  for (int i = 7; i >= 0; --i, v >>= 8) b[i] = static_cast<std::uint8_t>(v);
  EVP_DigestUpdate(ctx, b, sizeof b);
}

void PutField(EVP_MD_CTX* ctx, const std::string& field) {
  const std::uint32_t n = static_cast<std::uint32_t>(field.size());
  const std::uint8_t b[4] = {static_cast<std::uint8_t>(n >> 24), static_cast<std::uint8_t>(n >> 16),
                             static_cast<std::uint8_t>(n >> 8), static_cast<std::uint8_t>(n)};
  EVP_DigestUpdate(ctx, b, sizeof b);
  EVP_DigestUpdate(ctx, field.data(), field.size());
}

Status CheckFields(const AuditRecord& r) {
  for (const std::string* field :
       {&r.org, &r.actor, &r.action, &r.resource, &r.key, &r.outcome, &r.detail, &r.channel}) {
    if (field->size() > kMaxAuditField) {
      return Error(ErrorCode::kInvalidArgument, "audit field longer than 2048 bytes");
    }
  }
  if (r.action.empty() || r.outcome.empty()) {
    return Error(ErrorCode::kInvalidArgument, "an audit record needs an action and an outcome");
  }
  if (r.message.size() > kMaxAuditField || r.channel.empty() != r.message.empty()) {
    return Error(ErrorCode::kInvalidArgument,
                 "an audit record names the request it executed by both channel and message");
  }
  return OkStatus();
}

AuditHash FromBlob(std::span<const std::uint8_t> blob) {
  AuditHash h{};
  if (blob.size() == h.size()) std::copy(blob.begin(), blob.end(), h.begin());
  return h;
}

// An audit record's columns, in the order FromRow reads them from a row.
constexpr char kRecordColumns[] =
    "seq, at_ms, org, actor, action, resource, key, outcome, detail, channel, message";

AuditRecord FromRow(SqlStatement& row) {
  AuditRecord r;
  r.seq = row.Int(0);
  r.at_ms = row.Int(1);
  r.org = row.Text(2);
  r.actor = row.Text(3);
  r.action = row.Text(4);
  r.resource = row.Text(5);
  r.key = row.Text(6);
  r.outcome = row.Text(7);
  r.detail = row.Text(8);
  // NULL in the rows written before the columns were (and in those that executed no request).
  if (!row.IsNull(9)) r.channel = row.Text(9);
  if (!row.IsNull(10)) {
    const std::span<const std::uint8_t> message = row.Blob(10);
    r.message.assign(message.begin(), message.end());
  }
  return r;
}

}  // namespace

Migration AuditLog::Schema(int version, Database::Engine engine) {
  // One table in each engine's types: SQLite's INTEGER PRIMARY KEY and BLOB, PostgreSQL's BIGINT
  // and BYTEA.
  const char* table = engine == Database::Engine::kPostgres
                          ? "CREATE TABLE audit ("
                            "seq BIGINT PRIMARY KEY, at_ms BIGINT NOT NULL, org TEXT NOT NULL, "
                            "actor TEXT NOT NULL, action TEXT NOT NULL, resource TEXT NOT NULL, "
                            "key TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL, "
                            "prev_hash BYTEA NOT NULL, hash BYTEA NOT NULL)"
                          : "CREATE TABLE audit ("
                            "seq INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, org TEXT NOT NULL, "
                            "actor TEXT NOT NULL, action TEXT NOT NULL, resource TEXT NOT NULL, "
                            "key TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL, "
                            "prev_hash BLOB NOT NULL, hash BLOB NOT NULL)";
  return {version,
          "hash-chained audit log",
          {table, "CREATE INDEX audit_by_actor ON audit (actor, at_ms)",
           "CREATE INDEX audit_by_resource ON audit (resource, at_ms)",
           "CREATE INDEX audit_by_time ON audit (at_ms)"}};
}

Migration AuditLog::RequestSchema(int version, Database::Engine engine) {
  // No index of their own: a channel's requests are found through audit_by_actor (its owner, from
  // its creation on; ReplayGuard), so carrying them adds nothing to a commit but the bytes.
  const std::string blob = engine == Database::Engine::kPostgres ? "BYTEA" : "BLOB";
  return {version,
          "the sealed request an audit record executed",
          {"ALTER TABLE audit ADD COLUMN channel TEXT",
           "ALTER TABLE audit ADD COLUMN message " + blob}};
}

AuditHash AuditLog::Hash(const AuditHash& previous, const AuditRecord& r) {
  AuditHash out{};
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  EVP_DigestUpdate(ctx, previous.data(), previous.size());
  PutU64(ctx, static_cast<std::uint64_t>(r.seq));
  PutU64(ctx, static_cast<std::uint64_t>(r.at_ms));
  for (const std::string* field :
       {&r.org, &r.actor, &r.action, &r.resource, &r.key, &r.outcome, &r.detail}) {
    PutField(ctx, *field);
  }
  if (!r.message.empty()) {
    PutField(ctx, r.channel);
    PutField(ctx, r.message);
  }
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, out.data(), &len);
  EVP_MD_CTX_free(ctx);
  return out;
}

Status AuditLog::Validate(const AuditRecord& record) { return CheckFields(record); }

namespace {

constexpr char kHeadSql[] = "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1";
// A batch's records go in with as few statements as they fit (MultiRowInsert).
const MultiRowInsert& Insert() {
  static const MultiRowInsert kInsert(
      "INSERT INTO audit (seq, at_ms, org, actor, action, resource, key, outcome, detail, "
      "channel, message, prev_hash, hash) VALUES ",
      13);
  return kInsert;
}

// The chain's head inside the caller's transaction: the last seq (0 for an empty log) and its hash.
std::int64_t ReadHead(Poco::Data::Session& session, AuditHash& hash) {
  SqlStatement head = Database::Prepare(session, kHeadSql);
  if (!head.Next()) {
    hash = AuditHash{};
    return 0;
  }
  hash = FromBlob(head.Blob(1));
  return head.Int(0);
}

void BindRecord(SqlStatement& insert, const AuditRecord& r, const AuditHash& previous,
                const AuditHash& hash) {
  insert.Bind(r.seq).Bind(r.at_ms).Bind(r.org).Bind(r.actor).Bind(r.action).Bind(r.resource);
  insert.Bind(r.key).Bind(r.outcome).Bind(r.detail).Bind(r.channel);
  // NULL, as it always was, in a record that executed no request.
  if (r.message.empty()) {
    insert.BindNull();
  } else {
    insert.BindBlob(r.message);
  }
  insert.BindBlob(previous).BindBlob(hash);
}

}  // namespace

Status AuditLog::Append(Poco::Data::Session& session, AuditRecord& record) {
  return AppendAll(session, std::span<AuditRecord>(&record, 1));
}

Status AuditLog::AppendAll(Poco::Data::Session& session, std::span<AuditRecord> records) {
  if (records.empty()) return OkStatus();
  for (const AuditRecord& record : records) SR_RETURN_IF_ERROR(CheckFields(record));
  AuditHash previous;
  std::int64_t last_seq = ReadHead(session, previous);
  Insert().ForEachChunk(
      records.size(), [&](std::size_t first, std::size_t rows, const std::string& sql) {
        SqlStatement insert = Database::Prepare(session, sql);  // the connection's compiled one
        for (AuditRecord& record : records.subspan(first, rows)) {
          record.seq = ++last_seq;
          const AuditHash hash = Hash(previous, record);
          BindRecord(insert, record, previous, hash);
          previous = hash;
        }
        insert.Run();
      });
  return OkStatus();
}

Result<AuditVerdict> AuditLog::Verify(Database& db) {
  AuditVerdict verdict;
  // The chain starts at 1; a row numbered below (a forged record slipped in at 0 or -7) is read
  // by `audit query` like any other, so it must fail verification, not be passed over.
  std::optional<std::int64_t> outside;
  SR_RETURN_IF_ERROR(db.WithSession([&](Poco::Data::Session& session) -> Status {
    SqlStatement select =
        Database::Prepare(session, "SELECT seq FROM audit WHERE seq < 1 ORDER BY seq LIMIT 1");
    if (select.Next()) outside = select.Int(0);
    return OkStatus();
  }));
  if (outside) {
    verdict.bad_seq = *outside;
    verdict.problem = "record " + std::to_string(*outside) +
                      " is outside the chain (its records are numbered from 1)";
    return verdict;
  }
  AuditHash previous{};
  std::int64_t expected_seq = 1;
  for (bool more = true; more && verdict.ok();) {
    Status s = db.WithSession([&](Poco::Data::Session& session) -> Status {
      SqlStatement select = Database::Prepare(
          session, std::string("SELECT ") + kRecordColumns +
                       ", prev_hash, hash FROM audit WHERE seq >= ? ORDER BY seq LIMIT ?");
      select.Bind(expected_seq).Bind(kVerifyBatch);
      std::int64_t rows = 0;
      while (select.Next()) {
        ++rows;
        AuditRecord r = FromRow(select);
        const AuditHash stored_prev = FromBlob(select.Blob(11));
        const AuditHash stored = FromBlob(select.Blob(12));
        if (r.seq != expected_seq) {
          verdict.bad_seq = expected_seq;
          verdict.problem = "record " + std::to_string(expected_seq) + " is missing";
          return OkStatus();
        }
        if (stored_prev != previous) {
          verdict.bad_seq = r.seq;
          verdict.problem = "record does not follow its predecessor (removed or reordered)";
          return OkStatus();
        }
        if (Hash(previous, r) != stored) {
          verdict.bad_seq = r.seq;
          verdict.problem = "record was altered";
          return OkStatus();
        }
        previous = stored;
        verdict.head = stored;
        ++verdict.records;
        ++expected_seq;
      }
      more = rows == kVerifyBatch;
      return OkStatus();
    });
    SR_RETURN_IF_ERROR(s);
  }
  return verdict;
}

std::string AuditLog::OnBehalfOf(const std::string& user) {
  std::string out = "on behalf of \"";
  for (char c : user) {
    if (c == '\\' || c == '"') out += '\\';
    out += c;
  }
  return out + '"';
}

Result<std::vector<AuditRecord>> AuditLog::Query(Database& db, const AuditFilter& filter) {
  if (filter.limit == 0 || filter.limit > kMaxAuditQuery) {
    return Error(ErrorCode::kInvalidArgument, "an audit query returns 1 to 1000 records");
  }
  std::vector<AuditRecord> out;
  SR_RETURN_IF_ERROR(db.WithSession([&](Poco::Data::Session& session) -> Status {
    std::string actor = filter.actor.value_or("");
    std::string user = filter.user.value_or("");
    std::string on_behalf = filter.user ? OnBehalfOf(*filter.user) : "";
    std::string resource = filter.resource.value_or("");
    std::int64_t from = filter.from_ms.value_or(INT64_MIN);
    std::int64_t to = filter.to_ms.value_or(INT64_MAX);
    const std::int64_t has_actor = filter.actor.has_value(),
                       has_resource = filter.resource.has_value(),
                       has_user = filter.user.has_value();
    std::int64_t limit = static_cast<std::int64_t>(filter.limit);
    // A user's records: theirs, and those whose detail starts with OnBehalfOf(user) (substr and
    // length rather than SQLite's instr, which PostgreSQL lacks).
    SqlStatement select = Database::Prepare(
        session, std::string("SELECT ") + kRecordColumns +
                     " FROM audit WHERE (? = 0 OR actor = ?) AND (? = 0 OR actor = ? OR "
                     "substr(detail, 1, length(CAST(? AS TEXT))) = ?) "
                     "AND (? = 0 OR resource = ?) AND at_ms >= ? AND at_ms < ? ORDER BY seq "
                     "LIMIT ?");
    select.Bind(has_actor).Bind(actor).Bind(has_user).Bind(user).Bind(on_behalf).Bind(on_behalf);
    select.Bind(has_resource).Bind(resource).Bind(from).Bind(to).Bind(limit);
    while (select.Next()) out.push_back(FromRow(select));
    return OkStatus();
  }));
  return out;
}

}  // namespace strongroom::kms
