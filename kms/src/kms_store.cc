#include "strongroom/kms/kms_store.h"

#include <algorithm>
#include <map>

#include "strongroom/kms/audit_checkpoints.h"
#include "strongroom/kms/audit_log.h"
#include "strongroom/kms/org_policy.h"

namespace strongroom::kms {
namespace {

constexpr char kKeyColumns[] =
    "uri, org, creator, client_id, created_ms, bind_deadline_ms, resource_uri, bound_ms, "
    "stop_encrypt_ms";
constexpr char kAuthorizationColumns[] = "uri, resource_uri, auth_id, role, creator, created_ms";

// A row of kKeyColumns, in their order.
KeyRecord KeyFromStatement(const SqlStatement& row) {
  KeyRecord k;
  k.uri = row.Text(0);
  k.org = row.Text(1);
  k.creator = row.Text(2);
  k.client_id = row.Text(3);
  k.created_ms = row.Int(4);
  k.bind_deadline_ms = row.Int(5);
  k.resource_uri = row.OptionalText(6);
  k.bound_ms = row.OptionalInt(7);
  k.stop_encrypt_ms = row.OptionalInt(8);
  return k;
}

Status LoadBlobs(Poco::Data::Session& s, KeyRecord& key) {
  SqlStatement select =
      Database::Prepare(s, "SELECT token, blob FROM key_blobs WHERE key_uri = ? ORDER BY token");
  select.Bind(key.uri);
  while (select.Next()) {
    const std::span<const std::uint8_t> blob = select.Blob(1);
    key.blobs.push_back({select.Text(0), std::vector<std::uint8_t>(blob.begin(), blob.end())});
  }
  return OkStatus();
}

// Writes `blob`, `uri`'s wrap under its token, with `sql` (an insert into key_blobs or
// search_key_blobs of key_uri, token, root_version and blob, that replaces or keeps a wrap already
// there); whether a row was written.
Result<bool> WriteWrap(Poco::Data::Session& s, const char* sql, const std::string& uri,
                       const hsm::TokenBlob& blob) {
  SR_ASSIGN_OR_RETURN(hsm::WrappedKeyView view, hsm::ParseWrappedKey(blob.blob));
  return Database::Prepare(s, sql)
             .Bind(uri)
             .Bind(blob.token)
             .Bind(std::int64_t{view.root_version})
             .BindBlob(blob.blob)
             .Run() > 0;
}

// A row of kAuthorizationColumns, in their order.
AuthorizationRecord AuthorizationFromStatement(const SqlStatement& row) {
  return {row.Text(0), row.Text(1), row.Text(2), row.Text(3), row.Text(4), row.Int(5)};
}

}  // namespace

std::vector<Migration> KmsStore::Migrations() {
  return {
      AuditLog::Schema(1),
      {2,
       "resources, keys, wrapped key blobs, authorizations",
       {"CREATE TABLE resources (uri TEXT PRIMARY KEY, org TEXT NOT NULL, creator TEXT NOT NULL, "
        "created_ms INTEGER NOT NULL, expires_ms INTEGER)",
        "CREATE TABLE keys (uri TEXT PRIMARY KEY, org TEXT NOT NULL, creator TEXT NOT NULL, "
        "client_id TEXT NOT NULL, created_ms INTEGER NOT NULL, bind_deadline_ms INTEGER NOT NULL, "
        "resource_uri TEXT REFERENCES resources (uri), bound_ms INTEGER, "
        "stop_encrypt_ms INTEGER, "
        "CHECK ((resource_uri IS NULL) = (bound_ms IS NULL)))",
        "CREATE INDEX keys_by_resource ON keys (resource_uri, bound_ms)",
        "CREATE TABLE key_blobs (key_uri TEXT NOT NULL REFERENCES keys (uri) ON DELETE CASCADE, "
        "token TEXT NOT NULL, root_version INTEGER NOT NULL, blob BLOB NOT NULL, "
        "PRIMARY KEY (key_uri, token))",
        "CREATE INDEX key_blobs_by_root ON key_blobs (token, root_version)",
        "CREATE TABLE authorizations (uri TEXT PRIMARY KEY, "
        "resource_uri TEXT NOT NULL REFERENCES resources (uri) ON DELETE CASCADE, "
        "auth_id TEXT NOT NULL, role TEXT NOT NULL, creator TEXT NOT NULL, "
        "created_ms INTEGER NOT NULL, UNIQUE (resource_uri, auth_id))",
        "CREATE INDEX authorizations_by_auth_id ON authorizations (auth_id)"}},
      {3,
       "ephemeral (ECDHE) channel keys",
       {"CREATE TABLE ephemeral_keys (uri TEXT PRIMARY KEY, org TEXT NOT NULL, "
        "user_id TEXT NOT NULL, client_id TEXT NOT NULL, created_ms INTEGER NOT NULL, "
        "expires_ms INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0)",
        "CREATE INDEX ephemeral_keys_by_expiry ON ephemeral_keys (expires_ms)",
        "CREATE TABLE ephemeral_blobs (uri TEXT NOT NULL REFERENCES ephemeral_keys (uri) "
        "ON DELETE CASCADE, token TEXT NOT NULL, blob BLOB NOT NULL, PRIMARY KEY (uri, token))"}},
      PolicyStore::Schema(4),
      {5,
       "root-key rewrap jobs and the blobs they could not re-wrap",
       {"CREATE TABLE rewrap_jobs (id INTEGER PRIMARY KEY, org TEXT NOT NULL, "
        "root_version INTEGER NOT NULL, state TEXT NOT NULL, total INTEGER NOT NULL, "
        "done INTEGER NOT NULL, failed INTEGER NOT NULL, started_ms INTEGER NOT NULL, "
        "updated_ms INTEGER NOT NULL, last_error TEXT NOT NULL)",
        "CREATE INDEX rewrap_jobs_by_org ON rewrap_jobs (org, id)",
        "CREATE INDEX rewrap_jobs_by_state ON rewrap_jobs (state, id)",
        "CREATE TABLE rewrap_failures (job_id INTEGER NOT NULL REFERENCES rewrap_jobs (id), "
        "kind TEXT NOT NULL, uri TEXT NOT NULL, token TEXT NOT NULL, error TEXT NOT NULL, "
        "PRIMARY KEY (job_id, kind, uri, token))"}},
      {6,
       "the sealed requests each channel has executed (at most once)",
       // A row holds the messages one channel executed in one group commit, end to end; rows are
       // appended (rowid order) and indexed by channel only, so a commit dirties a few pages at the
       // ends of the table and index. A row per message under a key on the random message cost
       // each retrieval an insert on the one writer thread and a page of its own.
       {"CREATE TABLE executed_requests (channel TEXT NOT NULL, messages BLOB NOT NULL, "
        "executed_ms INTEGER NOT NULL)",
        "CREATE INDEX executed_requests_by_channel ON executed_requests (channel)"}},
      AuditCheckpoints::Schema(7),
      AuditLog::RequestSchema(8),
      {9,
       "reconciliation jobs: wraps added for the tokens that missed keys",
       // One row per job; `phase` and `cursor` say where its round is, so a restart resumes there.
       {"CREATE TABLE reconcile_jobs (id INTEGER PRIMARY KEY, state TEXT NOT NULL, "
        "started_by TEXT NOT NULL, phase TEXT NOT NULL, cursor TEXT NOT NULL, "
        "total INTEGER NOT NULL, done INTEGER NOT NULL, failed INTEGER NOT NULL, "
        "started_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, waiting_for TEXT NOT NULL, "
        "blocked TEXT NOT NULL, last_error TEXT NOT NULL)",
        "CREATE INDEX reconcile_jobs_by_state ON reconcile_jobs (state, id)",
        "CREATE TABLE reconcile_failures (job_id INTEGER NOT NULL REFERENCES reconcile_jobs (id), "
        "kind TEXT NOT NULL, uri TEXT NOT NULL, token TEXT NOT NULL, error TEXT NOT NULL, "
        "PRIMARY KEY (job_id, kind, uri, token))"}},
      {10,
       "organization search keys (the indexer's) and their wrapped blobs",
       // Apart from `keys`: a search key is never bound to a resource nor reachable by a content
       // key's URI; its blobs are re-wrapped and reconciled as key_blobs are.
       {"CREATE TABLE search_keys (uri TEXT PRIMARY KEY, org TEXT NOT NULL, "
        "version INTEGER NOT NULL, creator TEXT NOT NULL, created_ms INTEGER NOT NULL, "
        "UNIQUE (org, version))",
        "CREATE TABLE search_key_blobs (key_uri TEXT NOT NULL REFERENCES search_keys (uri) "
        "ON DELETE CASCADE, token TEXT NOT NULL, root_version INTEGER NOT NULL, "
        "blob BLOB NOT NULL, PRIMARY KEY (key_uri, token))",
        "CREATE INDEX search_key_blobs_by_root ON search_key_blobs (token, root_version)"}},
  };
}

std::vector<Migration> KmsStore::PostgresMigrations() {
  // Migrations()'s tables on PostgreSQL, a fresh database's schema at each version (the ones
  // SQLite reached by ALTER TABLE included), so that a version means the same on both engines.
  return {
      AuditLog::Schema(1, Database::Engine::kPostgres),
      {2,
       "resources, keys, wrapped key blobs, authorizations",
       {"CREATE TABLE resources (uri TEXT PRIMARY KEY, org TEXT NOT NULL, creator TEXT NOT NULL, "
        "created_ms BIGINT NOT NULL, expires_ms BIGINT)",
        "CREATE TABLE keys (uri TEXT PRIMARY KEY, org TEXT NOT NULL, creator TEXT NOT NULL, "
        "client_id TEXT NOT NULL, created_ms BIGINT NOT NULL, bind_deadline_ms BIGINT NOT NULL, "
        "resource_uri TEXT REFERENCES resources (uri), bound_ms BIGINT, "
        "stop_encrypt_ms BIGINT, "
        "CHECK ((resource_uri IS NULL) = (bound_ms IS NULL)))",
        "CREATE INDEX keys_by_resource ON keys (resource_uri, bound_ms)",
        "CREATE TABLE key_blobs (key_uri TEXT NOT NULL REFERENCES keys (uri) ON DELETE CASCADE, "
        "token TEXT NOT NULL, root_version BIGINT NOT NULL, blob BYTEA NOT NULL, "
        "PRIMARY KEY (key_uri, token))",
        "CREATE INDEX key_blobs_by_root ON key_blobs (token, root_version)",
        "CREATE TABLE authorizations (uri TEXT PRIMARY KEY, "
        "resource_uri TEXT NOT NULL REFERENCES resources (uri) ON DELETE CASCADE, "
        "auth_id TEXT NOT NULL, role TEXT NOT NULL, creator TEXT NOT NULL, "
        "created_ms BIGINT NOT NULL, UNIQUE (resource_uri, auth_id))",
        "CREATE INDEX authorizations_by_auth_id ON authorizations (auth_id)"}},
      {3,
       "ephemeral (ECDHE) channel keys",
       {"CREATE TABLE ephemeral_keys (uri TEXT PRIMARY KEY, org TEXT NOT NULL, "
        "user_id TEXT NOT NULL, client_id TEXT NOT NULL, created_ms BIGINT NOT NULL, "
        "expires_ms BIGINT NOT NULL, deleted BIGINT NOT NULL DEFAULT 0)",
        "CREATE INDEX ephemeral_keys_by_expiry ON ephemeral_keys (expires_ms)",
        "CREATE TABLE ephemeral_blobs (uri TEXT NOT NULL REFERENCES ephemeral_keys (uri) "
        "ON DELETE CASCADE, token TEXT NOT NULL, blob BYTEA NOT NULL, PRIMARY KEY (uri, token))"}},
      {4,
       "organization policies (compliance officers, indexer, key lifetimes)",
       {"CREATE TABLE org_policies (org TEXT PRIMARY KEY, policy TEXT NOT NULL, "
        "updated_ms BIGINT NOT NULL)"}},
      {5,
       "root-key rewrap jobs and the blobs they could not re-wrap",
       {"CREATE TABLE rewrap_jobs (id BIGINT PRIMARY KEY, org TEXT NOT NULL, "
        "root_version BIGINT NOT NULL, state TEXT NOT NULL, total BIGINT NOT NULL, "
        "done BIGINT NOT NULL, failed BIGINT NOT NULL, started_ms BIGINT NOT NULL, "
        "updated_ms BIGINT NOT NULL, last_error TEXT NOT NULL)",
        "CREATE INDEX rewrap_jobs_by_org ON rewrap_jobs (org, id)",
        "CREATE INDEX rewrap_jobs_by_state ON rewrap_jobs (state, id)",
        "CREATE TABLE rewrap_failures (job_id BIGINT NOT NULL REFERENCES rewrap_jobs (id), "
        "kind TEXT NOT NULL, uri TEXT NOT NULL, token TEXT NOT NULL, error TEXT NOT NULL, "
        "PRIMARY KEY (job_id, kind, uri, token))"}},
      {6,
       "the sealed requests each channel has executed (at most once)",
       {"CREATE TABLE executed_requests (channel TEXT NOT NULL, messages BYTEA NOT NULL, "
        "executed_ms BIGINT NOT NULL)",
        "CREATE INDEX executed_requests_by_channel ON executed_requests (channel)"}},
      AuditCheckpoints::Schema(7, Database::Engine::kPostgres),
      AuditLog::RequestSchema(8, Database::Engine::kPostgres),
      {9,
       "reconciliation jobs: wraps added for the tokens that missed keys",
       {"CREATE TABLE reconcile_jobs (id BIGINT PRIMARY KEY, state TEXT NOT NULL, "
        "started_by TEXT NOT NULL, phase TEXT NOT NULL, cursor TEXT NOT NULL, "
        "total BIGINT NOT NULL, done BIGINT NOT NULL, failed BIGINT NOT NULL, "
        "started_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL, waiting_for TEXT NOT NULL, "
        "blocked TEXT NOT NULL, last_error TEXT NOT NULL)",
        "CREATE INDEX reconcile_jobs_by_state ON reconcile_jobs (state, id)",
        "CREATE TABLE reconcile_failures (job_id BIGINT NOT NULL REFERENCES reconcile_jobs (id), "
        "kind TEXT NOT NULL, uri TEXT NOT NULL, token TEXT NOT NULL, error TEXT NOT NULL, "
        "PRIMARY KEY (job_id, kind, uri, token))"}},
      {10,
       "organization search keys (the indexer's) and their wrapped blobs",
       {"CREATE TABLE search_keys (uri TEXT PRIMARY KEY, org TEXT NOT NULL, "
        "version BIGINT NOT NULL, creator TEXT NOT NULL, created_ms BIGINT NOT NULL, "
        "UNIQUE (org, version))",
        "CREATE TABLE search_key_blobs (key_uri TEXT NOT NULL REFERENCES search_keys (uri) "
        "ON DELETE CASCADE, token TEXT NOT NULL, root_version BIGINT NOT NULL, "
        "blob BYTEA NOT NULL, PRIMARY KEY (key_uri, token))",
        "CREATE INDEX search_key_blobs_by_root ON search_key_blobs (token, root_version)"}},
  };
}

Status KmsStore::InsertResource(Poco::Data::Session& s, const ResourceRecord& r) {
  {
    SqlStatement exists = Database::Prepare(s, "SELECT 1 FROM resources WHERE uri = ?");
    if (exists.Bind(r.uri).Next()) {
      return Error(ErrorCode::kAlreadyExists, "resource " + r.uri + " exists");
    }
  }
  Database::Prepare(s,
                    "INSERT INTO resources (uri, org, creator, created_ms, expires_ms) "
                    "VALUES (?, ?, ?, ?, ?)")
      .Bind(r.uri)
      .Bind(r.org)
      .Bind(r.creator)
      .Bind(r.created_ms)
      .Bind(r.expires_ms)
      .Run();
  return OkStatus();
}

Result<std::optional<ResourceRecord>> KmsStore::FindResource(Poco::Data::Session& s,
                                                             const std::string& uri) {
  SqlStatement select = Database::Prepare(
      s, "SELECT uri, org, creator, created_ms, expires_ms FROM resources WHERE uri = ?");
  if (!select.Bind(uri).Next()) return std::optional<ResourceRecord>();
  return std::optional<ResourceRecord>(ResourceRecord{
      select.Text(0), select.Text(1), select.Text(2), select.Int(3), select.OptionalInt(4)});
}

Status KmsStore::InsertKeys(Poco::Data::Session& s, const std::vector<KeyRecord>& keys) {
  SqlStatement insert = Database::Prepare(
      s,
      "INSERT INTO keys (uri, org, creator, client_id, created_ms, bind_deadline_ms, "
      "resource_uri, bound_ms, stop_encrypt_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
  for (const KeyRecord& k : keys) {
    if (k.blobs.empty()) {
      return Error(ErrorCode::kInternal,
                   "a key is stored only wrapped, and " + k.uri + " has no wrapped blob");
    }
    insert.Bind(k.uri).Bind(k.org).Bind(k.creator).Bind(k.client_id).Bind(k.created_ms);
    insert.Bind(k.bind_deadline_ms).Bind(k.resource_uri).Bind(k.bound_ms).Bind(k.stop_encrypt_ms);
    insert.Run();
    insert.Reset();
    for (const hsm::TokenBlob& blob : k.blobs) SR_RETURN_IF_ERROR(PutBlob(s, k.uri, blob));
  }
  return OkStatus();
}

Status KmsStore::PutBlob(Poco::Data::Session& s, const std::string& key_uri,
                         const hsm::TokenBlob& blob) {
  const Result<bool> written =
      WriteWrap(s,
                "INSERT INTO key_blobs (key_uri, token, root_version, blob) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key_uri, token) DO UPDATE SET root_version = "
                "excluded.root_version, blob = excluded.blob",
                key_uri, blob);
  if (!written.ok()) return written.error();
  return OkStatus();
}

Result<bool> KmsStore::AddMissingBlob(Poco::Data::Session& s, const std::string& key_uri,
                                      const hsm::TokenBlob& blob) {
  return WriteWrap(s,
                   "INSERT INTO key_blobs (key_uri, token, root_version, blob) "
                   "VALUES (?, ?, ?, ?) ON CONFLICT (key_uri, token) DO NOTHING",
                   key_uri, blob);
}

Result<bool> KmsStore::AddMissingEphemeralBlob(Poco::Data::Session& s, const std::string& uri,
                                               const hsm::TokenBlob& blob) {
  SR_ASSIGN_OR_RETURN(hsm::WrappedKeyView view, hsm::ParseWrappedKey(blob.blob));
  (void)view;  // well-formed; the version is in the blob itself
  return Database::Prepare(s,
                           "INSERT INTO ephemeral_blobs (uri, token, blob) VALUES (?, ?, ?) "
                           "ON CONFLICT (uri, token) DO NOTHING")
             .Bind(uri)
             .Bind(blob.token)
             .BindBlob(blob.blob)
             .Run() > 0;
}

Result<std::optional<KeyRecord>> KmsStore::FindKey(Poco::Data::Session& s, const std::string& uri) {
  std::optional<KeyRecord> key;
  {
    SqlStatement select =
        Database::Prepare(s, std::string("SELECT ") + kKeyColumns + " FROM keys WHERE uri = ?");
    if (!select.Bind(uri).Next()) return key;
    key = KeyFromStatement(select);
  }
  SR_RETURN_IF_ERROR(LoadBlobs(s, *key));
  return key;
}

Status KmsStore::BindKey(Poco::Data::Session& s, const std::string& key_uri,
                         const std::string& resource_uri, std::int64_t bound_ms,
                         std::int64_t stop_encrypt_ms) {
  const std::int64_t changed =
      Database::Prepare(s,
                        "UPDATE keys SET resource_uri = ?, bound_ms = ?, stop_encrypt_ms = ? "
                        "WHERE uri = ? AND resource_uri IS NULL")
          .Bind(resource_uri)
          .Bind(bound_ms)
          .Bind(stop_encrypt_ms)
          .Bind(key_uri)
          .Run();
  if (changed == 1) return OkStatus();
  SR_ASSIGN_OR_RETURN(std::optional<KeyRecord> existing, FindKey(s, key_uri));
  if (!existing) return Error(ErrorCode::kNotFound, "no key " + key_uri);
  return Error(ErrorCode::kFailedPrecondition, "key " + key_uri + " is bound already");
}

Result<std::vector<KeyRecord>> KmsStore::KeysOfResource(Poco::Data::Session& s,
                                                        const std::string& resource_uri,
                                                        const KeyQuery& q) {
  if (q.count == 0 || q.count > 1000) {
    return Error(ErrorCode::kInvalidArgument, "count must be 1 to 1000");
  }
  std::vector<KeyRecord> out;
  {
    SqlStatement select = Database::Prepare(
        s, std::string("SELECT ") + kKeyColumns +
               " FROM keys WHERE resource_uri = ? AND bound_ms > ? AND bound_ms < ? "
               "ORDER BY bound_ms DESC, uri LIMIT ?");
    select.Bind(resource_uri)
        .Bind(q.bound_after_ms.value_or(INT64_MIN))
        .Bind(q.bound_before_ms.value_or(INT64_MAX))
        .Bind(static_cast<std::int64_t>(q.count));
    while (select.Next()) out.push_back(KeyFromStatement(select));
  }
  for (KeyRecord& key : out) SR_RETURN_IF_ERROR(LoadBlobs(s, key));
  return out;
}

Status KmsStore::InsertEphemeralKey(Poco::Data::Session& s, const EphemeralKeyRecord& k) {
  if (k.blobs.empty()) return Error(ErrorCode::kInternal, "an ephemeral key without a blob");
  Database::Prepare(s,
                    "INSERT INTO ephemeral_keys (uri, org, user_id, client_id, created_ms, "
                    "expires_ms) VALUES (?, ?, ?, ?, ?, ?)")
      .Bind(k.uri)
      .Bind(k.org)
      .Bind(k.user_id)
      .Bind(k.client_id)
      .Bind(k.created_ms)
      .Bind(k.expires_ms)
      .Run();
  SqlStatement insert =
      Database::Prepare(s, "INSERT INTO ephemeral_blobs (uri, token, blob) VALUES (?, ?, ?)");
  for (const hsm::TokenBlob& blob : k.blobs) {
    SR_RETURN_IF_ERROR(hsm::ParseWrappedKey(blob.blob).ok()
                           ? OkStatus()
                           : Status(Error(ErrorCode::kInternal, "malformed ephemeral blob")));
    insert.Bind(k.uri).Bind(blob.token).BindBlob(blob.blob).Run();
    insert.Reset();
  }
  return OkStatus();
}

Status KmsStore::InsertExecutedRequests(Poco::Data::Session& s,
                                        std::span<const ExecutedRequest> requests) {
  // One row per channel and batch, its messages end to end: a group commit of a thousand
  // retrievals by sixteen clients writes sixteen rows, not a thousand.
  std::map<std::string, std::string> by_channel;
  std::int64_t executed_ms = 0;
  for (const ExecutedRequest& r : requests) {
    by_channel[r.channel] += r.message;
    executed_ms = std::max(executed_ms, r.executed_ms);
  }
  if (by_channel.empty()) return OkStatus();
  // The connection's compiled insert, stepped per row: this runs for every sealed request on the
  // group commit's one writer thread, where Poco's binding per row cost a fifth of kmsd's
  // retrieval rate, and compiling the insert at every commit a few per cent more
  // (docs/benchmarks.md).
  SqlStatement insert = Database::Prepare(
      s, "INSERT INTO executed_requests (channel, messages, executed_ms) VALUES (?, ?, ?)");
  for (const auto& [uri, joined] : by_channel) {
    insert.Bind(uri).BindBlob(joined).Bind(executed_ms).Run();
    insert.Reset();
  }
  return OkStatus();
}

Result<std::vector<std::string>> KmsStore::ExecutedRequestsOf(Poco::Data::Session& s,
                                                              const EphemeralKeyRecord& channel,
                                                              std::size_t message_bytes) {
  std::vector<std::string> rows;
  {
    SqlStatement select =
        Database::Prepare(s, "SELECT messages FROM executed_requests WHERE channel = ?");
    select.Bind(channel.uri);
    while (select.Next()) {
      const std::span<const std::uint8_t> blob = select.Blob(0);
      rows.emplace_back(blob.begin(), blob.end());
    }
  }
  {
    // Through audit_by_actor (actor, at_ms): the owner's records since the channel was made.
    SqlStatement select = Database::Prepare(
        s, "SELECT message FROM audit WHERE actor = ? AND at_ms >= ? AND org = ? AND channel = ?");
    select.Bind(channel.user_id).Bind(channel.created_ms).Bind(channel.org).Bind(channel.uri);
    while (select.Next()) {
      const std::span<const std::uint8_t> blob = select.Blob(0);
      rows.emplace_back(blob.begin(), blob.end());
    }
  }
  std::vector<std::string> messages;
  for (const std::string& row : rows) {
    const char* bytes = row.data();
    if (row.size() % message_bytes != 0) {
      return Error(ErrorCode::kDataLoss, "an executed-request record is not whole");
    }
    for (std::size_t at = 0; at < row.size(); at += message_bytes) {
      messages.emplace_back(bytes + at, message_bytes);
    }
  }
  return messages;
}

Result<std::int64_t> KmsStore::DeleteSpentExecutedRequests(Poco::Data::Session& s,
                                                           std::int64_t now_ms) {
  return Database::Prepare(s,
                           "DELETE FROM executed_requests WHERE channel IN "
                           "(SELECT uri FROM ephemeral_keys WHERE expires_ms <= ? OR deleted <> 0)")
      .Bind(now_ms)
      .Run();
}

Result<std::optional<EphemeralKeyRecord>> KmsStore::FindEphemeralKey(Poco::Data::Session& s,
                                                                     const std::string& uri) {
  EphemeralKeyRecord k;
  {
    SqlStatement select =
        Database::Prepare(s,
                          "SELECT uri, org, user_id, client_id, created_ms, expires_ms, deleted "
                          "FROM ephemeral_keys WHERE uri = ?");
    if (!select.Bind(uri).Next()) return std::optional<EphemeralKeyRecord>();
    k.uri = select.Text(0);
    k.org = select.Text(1);
    k.user_id = select.Text(2);
    k.client_id = select.Text(3);
    k.created_ms = select.Int(4);
    k.expires_ms = select.Int(5);
    k.deleted = select.Int(6) != 0;
  }
  SqlStatement blobs =
      Database::Prepare(s, "SELECT token, blob FROM ephemeral_blobs WHERE uri = ? ORDER BY token");
  blobs.Bind(uri);
  while (blobs.Next()) {
    const std::span<const std::uint8_t> blob = blobs.Blob(1);
    k.blobs.push_back({blobs.Text(0), std::vector<std::uint8_t>(blob.begin(), blob.end())});
  }
  return std::optional<EphemeralKeyRecord>(std::move(k));
}

Status KmsStore::DeleteEphemeralKey(Poco::Data::Session& s, const std::string& uri) {
  const std::int64_t changed =
      Database::Prepare(s, "UPDATE ephemeral_keys SET deleted = 1 WHERE uri = ? AND deleted = 0")
          .Bind(uri)
          .Run();
  if (changed == 0) return Error(ErrorCode::kNotFound, "no ephemeral key " + uri);
  return OkStatus();
}

Status KmsStore::InsertAuthorizations(Poco::Data::Session& s,
                                      const std::vector<AuthorizationRecord>& authorizations) {
  SqlStatement exists =
      Database::Prepare(s, "SELECT 1 FROM authorizations WHERE resource_uri = ? AND auth_id = ?");
  SqlStatement insert =
      Database::Prepare(s, std::string("INSERT INTO authorizations (") + kAuthorizationColumns +
                               ") VALUES (?, ?, ?, ?, ?, ?)");
  for (const AuthorizationRecord& a : authorizations) {
    if (a.role != "participant" && a.role != "cloudAgent" && a.role != "orgAgent") {
      return Error(ErrorCode::kInvalidArgument, "unknown role " + a.role);
    }
    const bool found = exists.Bind(a.resource_uri).Bind(a.auth_id).Next();
    exists.Reset();
    if (found) {
      return Error(ErrorCode::kAlreadyExists,
                   a.auth_id + " is authorized on " + a.resource_uri + " already");
    }
    insert.Bind(a.uri).Bind(a.resource_uri).Bind(a.auth_id).Bind(a.role).Bind(a.creator);
    insert.Bind(a.created_ms).Run();
    insert.Reset();
  }
  return OkStatus();
}

Result<std::vector<AuthorizationRecord>> KmsStore::Authorizations(
    Poco::Data::Session& s, const std::string& resource_uri,
    const std::optional<std::string>& auth_id) {
  SqlStatement select = Database::Prepare(
      s, std::string("SELECT ") + kAuthorizationColumns +
             " FROM authorizations WHERE resource_uri = ? AND (? = 1 OR auth_id = ?) "
             "ORDER BY created_ms, uri");
  select.Bind(resource_uri).Bind(std::int64_t{auth_id ? 0 : 1}).Bind(auth_id.value_or(""));
  std::vector<AuthorizationRecord> out;
  while (select.Next()) out.push_back(AuthorizationFromStatement(select));
  return out;
}

Result<std::optional<AuthorizationRecord>> KmsStore::FindAuthorization(Poco::Data::Session& s,
                                                                       const std::string& uri) {
  SqlStatement select = Database::Prepare(
      s, std::string("SELECT ") + kAuthorizationColumns + " FROM authorizations WHERE uri = ?");
  if (!select.Bind(uri).Next()) return std::optional<AuthorizationRecord>();
  return std::optional<AuthorizationRecord>(AuthorizationFromStatement(select));
}

Status KmsStore::DeleteAuthorization(Poco::Data::Session& s, const std::string& uri) {
  if (Database::Prepare(s, "DELETE FROM authorizations WHERE uri = ?").Bind(uri).Run() == 0) {
    return Error(ErrorCode::kNotFound, "no authorization " + uri);
  }
  return OkStatus();
}

Result<std::optional<std::string>> KmsStore::RoleOf(Poco::Data::Session& s,
                                                    const std::string& resource_uri,
                                                    const std::string& user) {
  // The resources whose members count as members of `resource_uri`: itself, and every resource
  // named as an authId on a resource already reached. UNION drops repeats, so cycles end.
  SqlStatement select = Database::Prepare(
      s,
      "WITH RECURSIVE reach (uri, depth) AS ("
      "  SELECT ?, 0"
      "  UNION"
      "  SELECT a.auth_id, r.depth + 1 FROM authorizations a JOIN reach r"
      "    ON a.resource_uri = r.uri"
      "  WHERE r.depth < ? AND a.auth_id IN (SELECT uri FROM resources))"
      " SELECT a.role FROM authorizations a JOIN reach r ON a.resource_uri = r.uri"
      " WHERE a.auth_id = ? ORDER BY r.depth LIMIT 1");
  select.Bind(resource_uri).Bind(std::int64_t{kMaxInheritanceDepth}).Bind(user);
  if (!select.Next()) return std::optional<std::string>();
  return std::optional<std::string>(select.Text(0));
}

Status KmsStore::InsertSearchKey(Poco::Data::Session& s, const SearchKeyRecord& k) {
  if (k.blobs.empty()) {
    return Error(ErrorCode::kInternal,
                 "a search key is stored only wrapped, and " + k.uri + " has no wrapped blob");
  }
  {
    SqlStatement exists = Database::Prepare(
        s, "SELECT 1 FROM search_keys WHERE uri = ? OR (org = ? AND version = ?)");
    if (exists.Bind(k.uri).Bind(k.org).Bind(std::int64_t{k.version}).Next()) {
      return Error(ErrorCode::kAlreadyExists,
                   "search key version " + std::to_string(k.version) + " of " + k.org + " exists");
    }
  }
  Database::Prepare(s,
                    "INSERT INTO search_keys (uri, org, version, creator, created_ms) "
                    "VALUES (?, ?, ?, ?, ?)")
      .Bind(k.uri)
      .Bind(k.org)
      .Bind(std::int64_t{k.version})
      .Bind(k.creator)
      .Bind(k.created_ms)
      .Run();
  for (const hsm::TokenBlob& blob : k.blobs) SR_RETURN_IF_ERROR(PutSearchKeyBlob(s, k.uri, blob));
  return OkStatus();
}

Result<std::optional<SearchKeyRecord>> KmsStore::FindSearchKey(
    Poco::Data::Session& s, const std::string& org, std::optional<std::uint32_t> version) {
  SearchKeyRecord k;
  {
    SqlStatement select =
        Database::Prepare(s,
                          "SELECT uri, org, version, creator, created_ms FROM search_keys "
                          "WHERE org = ? AND (? = 1 OR version = ?) ORDER BY version DESC LIMIT 1");
    select.Bind(org).Bind(std::int64_t{version ? 0 : 1}).Bind(std::int64_t{version.value_or(0)});
    if (!select.Next()) return std::optional<SearchKeyRecord>();
    k.uri = select.Text(0);
    k.org = select.Text(1);
    k.version = static_cast<std::uint32_t>(select.Int(2));
    k.creator = select.Text(3);
    k.created_ms = select.Int(4);
  }
  SqlStatement blobs = Database::Prepare(
      s, "SELECT token, blob FROM search_key_blobs WHERE key_uri = ? ORDER BY token");
  blobs.Bind(k.uri);
  while (blobs.Next()) {
    const std::span<const std::uint8_t> blob = blobs.Blob(1);
    k.blobs.push_back({blobs.Text(0), std::vector<std::uint8_t>(blob.begin(), blob.end())});
  }
  return std::optional<SearchKeyRecord>(std::move(k));
}

Status KmsStore::PutSearchKeyBlob(Poco::Data::Session& s, const std::string& uri,
                                  const hsm::TokenBlob& blob) {
  const Result<bool> written =
      WriteWrap(s,
                "INSERT INTO search_key_blobs (key_uri, token, root_version, blob) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (key_uri, token) DO UPDATE SET "
                "root_version = excluded.root_version, blob = excluded.blob",
                uri, blob);
  if (!written.ok()) return written.error();
  return OkStatus();
}

Result<bool> KmsStore::AddMissingSearchKeyBlob(Poco::Data::Session& s, const std::string& uri,
                                               const hsm::TokenBlob& blob) {
  return WriteWrap(s,
                   "INSERT INTO search_key_blobs (key_uri, token, root_version, blob) "
                   "VALUES (?, ?, ?, ?) ON CONFLICT (key_uri, token) DO NOTHING",
                   uri, blob);
}

Result<std::vector<UserAuthorization>> KmsStore::ResourcesOf(Poco::Data::Session& s,
                                                             const std::string& org,
                                                             const std::string& user,
                                                             const std::string& after,
                                                             std::size_t limit, bool* more) {
  if (limit == 0 || limit > 1000) {
    return Error(ErrorCode::kInvalidArgument, "limit must be 1 to 1000");
  }
  // RoleOf the other way round: from the user's own authorizations to the resources that name
  // those resources as authIds, up to kMaxInheritanceDepth; the nearest membership's role (of
  // several at one depth, the first by name).
  SqlStatement select = Database::Prepare(
      s,
      "WITH RECURSIVE reach (uri, role, depth) AS ("
      "  SELECT resource_uri, role, 0 FROM authorizations WHERE auth_id = ?"
      "  UNION"
      "  SELECT a.resource_uri, r.role, r.depth + 1 FROM authorizations a JOIN reach r"
      "    ON a.auth_id = r.uri WHERE r.depth < ?)"
      " SELECT uri, role FROM ("
      "  SELECT r.uri AS uri, r.role AS role,"
      "   ROW_NUMBER() OVER (PARTITION BY r.uri ORDER BY r.depth, r.role) AS nearest"
      "  FROM reach r JOIN resources x ON x.uri = r.uri WHERE x.org = ? AND r.uri > ?) ranked"
      " WHERE nearest = 1 ORDER BY uri LIMIT ?");
  select.Bind(user)
      .Bind(std::int64_t{kMaxInheritanceDepth})
      .Bind(org)
      .Bind(after)
      .Bind(static_cast<std::int64_t>(limit) + 1);  // one more says whether more follow
  std::vector<UserAuthorization> out;
  while (select.Next()) out.push_back({select.Text(0), select.Text(1)});
  *more = out.size() > limit;
  if (*more) out.resize(limit);
  return out;
}

Result<std::vector<RootVersionUse>> KmsStore::RootVersionUses(Poco::Data::Session& s,
                                                              const std::string& org,
                                                              std::int64_t now_ms) {
  std::map<std::pair<std::string, std::uint32_t>, RootVersionUse> uses;
  auto use_of = [&](const std::string& token, std::uint32_t version) -> RootVersionUse& {
    RootVersionUse& u = uses[{token, version}];
    u.token = token;
    u.version = version;
    return u;
  };
  {
    SqlStatement keys = Database::Prepare(
        s,
        "SELECT kb.token, kb.root_version, COUNT(*) FROM key_blobs kb "
        "JOIN keys k ON k.uri = kb.key_uri WHERE k.org = ? GROUP BY kb.token, kb.root_version");
    keys.Bind(org);
    while (keys.Next()) {
      use_of(keys.Text(0), static_cast<std::uint32_t>(keys.Int(1))).keys = keys.Int(2);
    }
  }
  {
    SqlStatement search_keys =
        Database::Prepare(s,
                          "SELECT sb.token, sb.root_version, COUNT(*) FROM search_key_blobs sb "
                          "JOIN search_keys sk ON sk.uri = sb.key_uri WHERE sk.org = ? "
                          "GROUP BY sb.token, sb.root_version");
    search_keys.Bind(org);
    while (search_keys.Next()) {
      use_of(search_keys.Text(0), static_cast<std::uint32_t>(search_keys.Int(1))).keys +=
          search_keys.Int(2);
    }
  }
  // A channel key's version is in its blob (bytes 4-7, big-endian: hsm/wrapped_key.h).
  SqlStatement channels =
      Database::Prepare(s,
                        "SELECT eb.token, substr(eb.blob, 5, 4), COUNT(*) "
                        "FROM ephemeral_blobs eb JOIN ephemeral_keys ek ON ek.uri = eb.uri "
                        "WHERE ek.org = ? AND ek.deleted = 0 AND ek.expires_ms > ? "
                        "GROUP BY eb.token, substr(eb.blob, 5, 4)");
  channels.Bind(org).Bind(now_ms);
  while (channels.Next()) {
    const std::span<const std::uint8_t> bytes = channels.Blob(1);
    if (bytes.size() != 4) {
      return Error(ErrorCode::kDataLoss, "a channel key blob of " + org + " is truncated");
    }
    const std::uint32_t version = (std::uint32_t{bytes[0]} << 24) |
                                  (std::uint32_t{bytes[1]} << 16) | (std::uint32_t{bytes[2]} << 8) |
                                  std::uint32_t{bytes[3]};
    use_of(channels.Text(0), version).channel_keys = channels.Int(2);
  }
  std::vector<RootVersionUse> out;
  for (auto& [key, u] : uses) out.push_back(std::move(u));
  return out;
}

}  // namespace strongroom::kms
