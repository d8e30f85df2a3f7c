#include "strongroom/kms/reconcile_job.h"

#include <algorithm>
#include <map>
#include <variant>

#include "strongroom/common/rfc3339.h"
#include "strongroom/kms/audit_log.h"
#include "strongroom/kms/kms_store.h"

namespace strongroom::kms {
namespace {

// kJobProgressColumns, then the job's own.
const std::string kJobColumns =
    std::string(kJobProgressColumns) + ", started_by, phase, cursor, waiting_for, blocked";
constexpr std::size_t kMaxActor = 256;

using Param = std::variant<std::string, std::int64_t>;

std::string Join(const std::set<std::string>& names) {
  std::string out;
  for (const std::string& name : names) out += (out.empty() ? "" : ",") + name;
  return out;
}

std::set<std::string> Split(const std::string& text) {
  std::set<std::string> out;
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t comma = text.find(',', at);
    if (comma == std::string::npos) comma = text.size();
    if (comma > at) out.insert(text.substr(at, comma - at));
    at = comma + 1;
  }
  return out;
}

std::string Quoted(const std::set<std::string>& names) {
  std::string out;
  for (const std::string& name : names) out += (out.empty() ? "'" : ", '") + name + "'";
  return out;
}

// The kinds of keys, in the order a round goes through them: content keys, search keys
// (search_keys.h), live channel keys.
constexpr const char* kKinds[] = {"key", "search", "ephemeral"};

// The table holding `kind`'s blobs, and its column naming the key.
const char* BlobTable(const std::string& kind) {
  return kind == "key" ? "key_blobs" : kind == "search" ? "search_key_blobs" : "ephemeral_blobs";
}
const char* BlobKeyColumn(const std::string& kind) {
  return kind == "ephemeral" ? "uri" : "key_uri";
}

// "(the key x lacks a blob for `token` [and its organization is one the token serves])".
void AppendLacks(const std::string& kind, const hsm::VaultToken& token, std::string& sql,
                 std::vector<Param>& params) {
  sql += std::string("(NOT EXISTS (SELECT 1 FROM ") + BlobTable(kind) + " b WHERE b." +
         BlobKeyColumn(kind) + " = x.uri AND b.token = ?)";
  params.emplace_back(token.name());
  if (!token.orgs().empty()) {
    sql += " AND x.org IN (";
    for (std::size_t i = 0; i < token.orgs().size(); ++i) {
      sql += i == 0 ? "?" : ", ?";
      params.emplace_back(token.orgs()[i]);
    }
    sql += ")";
  }
  sql += ")";
}

// The keys of `kind` (live channel keys only) as `x`, with `where` and its parameters.
std::string FromKeys(const std::string& kind, std::int64_t now_ms, std::vector<Param>& params) {
  if (kind == "key") return " FROM keys x WHERE 1 = 1";
  if (kind == "search") return " FROM search_keys x WHERE 1 = 1";
  params.emplace_back(now_ms);
  return " FROM ephemeral_keys x WHERE x.deleted = 0 AND x.expires_ms > ?";
}

void Bind(SqlStatement& statement, const std::vector<Param>& params) {
  for (const Param& p : params) {
    std::visit([&](const auto& value) { statement.Bind(value); }, p);
  }
}

std::int64_t CountQuery(Poco::Data::Session& s, const std::string& sql,
                        const std::vector<Param>& params) {
  SqlStatement select = Database::Prepare(s, sql);
  Bind(select, params);
  return select.Next() ? select.Int(0) : 0;
}

struct JobRow {
  ReconcileProgress progress;
  std::string phase;  // "key", then "search", then "ephemeral" (kKinds)
  std::string cursor;
  std::set<std::string> blocked;  // tokens that met an outage in this round
};

// A row of kJobColumns.
JobRow JobFromRow(const SqlStatement& select) {
  JobRow row;
  ReconcileProgress& p = row.progress;
  ReadJobProgress(select, p);
  constexpr int own = kJobProgressColumnCount;
  p.started_by = select.Text(own);
  row.phase = select.Text(own + 1);
  row.cursor = select.Text(own + 2);
  const std::set<std::string> waiting = Split(select.Text(own + 3));
  p.waiting_for.assign(waiting.begin(), waiting.end());
  row.blocked = Split(select.Text(own + 4));
  return row;
}

// The newest job `where` selects (a condition of the job's `id` when `id` is given: "id = ?").
Result<std::optional<JobRow>> ReadJob(Poco::Data::Session& s, const std::string& where,
                                      std::optional<std::int64_t> id = std::nullopt) {
  SqlStatement select = Database::Prepare(
      s, "SELECT " + kJobColumns + " FROM reconcile_jobs " + where + " ORDER BY id DESC LIMIT 1");
  if (id) select.Bind(*id);
  if (!select.Next()) return std::optional<JobRow>();
  return std::optional<JobRow>(JobFromRow(select));
}

constexpr char kActive[] = "WHERE state IN ('running', 'waiting')";

// The names of the tokens that are ready now.
std::set<std::string> ReadyTokens(const hsm::Vault& vault) {
  std::set<std::string> ready;
  for (const hsm::TokenHealth& h : vault.Health()) {
    if (h.state == hsm::TokenState::kReady) ready.insert(h.name);
  }
  return ready;
}

}  // namespace

std::int64_t MissingWraps::total() const {
  std::int64_t sum = 0;
  for (const auto& [token, n] : by_token) sum += n;
  return sum;
}

std::int64_t MissingWraps::of(const std::string& token) const {
  for (const auto& [name, n] : by_token) {
    if (name == token) return n;
  }
  return 0;
}

struct ReconcileJobs::Candidate {
  std::string kind;  // one of kKinds
  std::string uri;
  std::string org;
  std::vector<hsm::TokenBlob> blobs;
};

namespace {

// Up to `limit` keys of `kind` after `cursor`, in URI order, that lack a wrap under one of `tokens`
// serving their organization and that job `job_id` has not given up on; without their blobs.
Status ReadPage(Poco::Data::Session& s, const std::string& kind, const std::string& cursor,
                std::size_t limit, const std::vector<hsm::VaultToken*>& tokens, std::int64_t job_id,
                std::int64_t now_ms, std::vector<std::pair<std::string, std::string>>& out) {
  if (tokens.empty() || limit == 0) return OkStatus();
  std::vector<Param> params;
  std::string sql = "SELECT x.uri, x.org" + FromKeys(kind, now_ms, params);
  sql += " AND x.uri > ? AND (";
  params.emplace_back(cursor);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (i > 0) sql += " OR ";
    AppendLacks(kind, *tokens[i], sql, params);
  }
  sql +=
      ") AND NOT EXISTS (SELECT 1 FROM reconcile_failures f WHERE f.job_id = ? AND f.kind = ? "
      "AND f.uri = x.uri) ORDER BY x.uri LIMIT ?";
  params.emplace_back(job_id);
  params.emplace_back(kind);
  params.emplace_back(static_cast<std::int64_t>(limit));
  SqlStatement select = Database::Prepare(s, sql);
  Bind(select, params);
  while (select.Next()) out.emplace_back(select.Text(0), select.Text(1));
  return OkStatus();
}

Result<std::vector<hsm::TokenBlob>> ReadBlobs(Poco::Data::Session& s, const std::string& kind,
                                              const std::string& uri) {
  SqlStatement select =
      Database::Prepare(s, std::string("SELECT token, blob FROM ") + BlobTable(kind) + " WHERE " +
                               BlobKeyColumn(kind) + " = ?");
  select.Bind(uri);
  std::vector<hsm::TokenBlob> out;
  while (select.Next()) {
    const std::span<const std::uint8_t> blob = select.Blob(1);
    out.push_back({select.Text(0), std::vector<std::uint8_t>(blob.begin(), blob.end())});
  }
  return out;
}

}  // namespace

ReconcileJobs::ReconcileJobs(hsm::Vault& vault, Database& db, Clock clock)
    : vault_(vault), db_(db), clock_(std::move(clock)) {}

std::int64_t ReconcileJobs::Now() const { return clock_ ? clock_() : UnixNowMs(); }

Result<MissingWraps> ReconcileJobs::CountMissing(Poco::Data::Session& s, const hsm::Vault& vault,
                                                 std::int64_t now_ms,
                                                 const std::optional<std::string>& org) {
  MissingWraps out;
  out.counted_ms = now_ms;
  for (hsm::VaultToken* token : vault.Tokens()) {
    std::int64_t missing = 0;
    if (!org && token->orgs().empty()) {
      // Every key is the token's to hold: the keys less the token's blobs (one per key at most, and
      // never one without its key), in one statement so both counts see the same snapshot. Two
      // index counts instead of a lookup per key: about 8 times as fast.
      missing += CountQuery(s,
                            "SELECT (SELECT COUNT(*) FROM keys) - "
                            "(SELECT COUNT(*) FROM key_blobs WHERE token = ?) + "
                            "(SELECT COUNT(*) FROM search_keys) - "
                            "(SELECT COUNT(*) FROM search_key_blobs WHERE token = ?)",
                            {token->name(), token->name()});
      std::vector<Param> params;
      std::string sql = "SELECT COUNT(*)" + FromKeys("ephemeral", now_ms, params) + " AND ";
      AppendLacks("ephemeral", *token, sql, params);
      missing += CountQuery(s, sql, params);
    } else if (!org || token->Serves(*org)) {
      for (const std::string kind : kKinds) {
        std::vector<Param> params;
        std::string sql = "SELECT COUNT(*)" + FromKeys(kind, now_ms, params) + " AND ";
        AppendLacks(kind, *token, sql, params);
        if (org) {
          sql += " AND x.org = ?";
          params.emplace_back(*org);
        }
        missing += CountQuery(s, sql, params);
      }
    }
    out.by_token.emplace_back(token->name(), std::max<std::int64_t>(missing, 0));
  }
  return out;
}

Result<MissingWraps> ReconcileJobs::Count() {
  const std::set<std::string> ready = ReadyTokens(vault_);
  const auto at = std::chrono::steady_clock::now();
  MissingWraps missing;
  const Status counted = db_.WithSession([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(missing, CountMissing(s, vault_, Now()));
    return OkStatus();
  });
  if (!counted.ok()) return counted.error();
  std::lock_guard lock(count_mutex_);
  last_count_ = missing;
  counted_ready_ = ready;
  counted_at_ = at;
  count_took_ =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - at);
  return missing;
}

std::optional<MissingWraps> ReconcileJobs::last_count() const {
  std::lock_guard lock(count_mutex_);
  return last_count_;
}

Result<ReconcileProgress> ReconcileJobs::Start(const std::string& actor, bool* started) {
  if (actor.empty() || actor.size() > kMaxActor) {
    return Error(ErrorCode::kInvalidArgument,
                 "the actor must be 1 to " + std::to_string(kMaxActor) + " bytes");
  }
  SR_ASSIGN_OR_RETURN(MissingWraps missing, Count());
  const std::int64_t at = Now();
  bool created = false;
  std::int64_t id = 0;
  const Status stored = db_.InTransaction([&](Poco::Data::Session& s) -> Status {
    created = false;
    SR_ASSIGN_OR_RETURN(std::optional<JobRow> active, ReadJob(s, kActive));
    if (active) {
      // An operator's start resumes a waiting job at once rather than a minute later.
      Database::Prepare(s,
                        "UPDATE reconcile_jobs SET state = 'running', waiting_for = '', "
                        "updated_ms = ? WHERE id = ? AND state = 'waiting'")
          .Bind(at)
          .Bind(active->progress.job_id)
          .Run();
      id = active->progress.job_id;
      return OkStatus();
    }
    // One writer at a time (InTransaction): no other job can take this id before the insert.
    std::int64_t next = 0;
    {
      SqlStatement select =
          Database::Prepare(s, "SELECT COALESCE(MAX(id), 0) + 1 FROM reconcile_jobs");
      if (select.Next()) next = select.Int(0);
    }
    const std::int64_t total = missing.total();
    Database::Prepare(s,
                      "INSERT INTO reconcile_jobs (id, state, started_by, phase, cursor, total, "
                      "done, failed, started_ms, updated_ms, waiting_for, blocked, last_error) "
                      "VALUES (?, 'running', ?, 'key', '', ?, 0, 0, ?, ?, '', '', '')")
        .Bind(next)
        .Bind(actor)
        .Bind(total)
        .Bind(at)
        .Bind(at)
        .Run();
    std::string per_token;
    for (const auto& [token, n] : missing.by_token) {
      per_token += (per_token.empty() ? "" : ", ") + token + " " + std::to_string(n);
    }
    AuditRecord record{.at_ms = at,
                       .actor = actor,
                       .action = "reconcile.start",
                       .outcome = "ok",
                       .detail = "reconcile job " + std::to_string(next) + ": " +
                                 std::to_string(total) + " wraps missing (" + per_token + ")"};
    SR_RETURN_IF_ERROR(AuditLog::Append(s, record));
    id = next;
    created = true;
    return OkStatus();
  });
  if (!stored.ok()) return stored.error();
  if (started != nullptr) *started = created;
  std::optional<JobRow> job;
  const Status reread = db_.WithSession([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(job, ReadJob(s, "WHERE id = ?", id));
    return OkStatus();
  });
  if (!reread.ok()) return reread.error();
  if (!job) return Error(ErrorCode::kInternal, "the reconciliation job vanished");
  return job->progress;
}

Result<ReconcileProgress> ReconcileJobs::Progress() {
  std::optional<JobRow> job;
  const Status read = db_.WithSession([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(job, ReadJob(s, ""));
    return OkStatus();
  });
  if (!read.ok()) return read.error();
  if (!job) return Error(ErrorCode::kNotFound, "no reconciliation job has run");
  return job->progress;
}

Result<std::vector<ReconcileFailure>> ReconcileJobs::Failures(std::int64_t job_id,
                                                              std::size_t limit) {
  return ReadJobFailures(db_, "reconcile_failures", job_id, limit);
}

Result<SecretBytes> ReconcileJobs::Open(const hsm::KeyBinding& binding,
                                        const std::vector<hsm::TokenBlob>& blobs, bool* outage) {
  // As Vault::Unwrap (ready tokens first, in configuration order; an integrity failure is never
  // passed on to another token), but telling an outage (a token holding the key is down) from a
  // key that no token can open (its blobs are for tokens or root versions that are not there).
  std::vector<hsm::VaultToken*> tokens = vault_.Tokens();
  std::erase_if(tokens, [&](hsm::VaultToken* token) { return !token->Serves(binding.org); });
  const auto order = hsm::UnwrapOrder(tokens, std::span<const hsm::TokenBlob>(blobs));
  *outage = false;
  std::optional<Error> last;
  for (const auto& [token, blob] : order) {
    Result<SecretBytes> key = token->Unwrap(binding, blob->blob);
    if (key.ok()) return key;
    if (key.error().code() == ErrorCode::kUnavailable) {
      *outage = true;
    } else if (key.error().code() != ErrorCode::kNotFound) {
      *outage = false;  // an integrity failure is an alarm, whatever else is down
      return Error(key.error().code(), "token '" + token->name() + "': " + key.error().message());
    }
    last = Error(key.error().code(), "token '" + token->name() + "': " + key.error().message());
  }
  if (!last) return Error(ErrorCode::kNotFound, "the key has no blob for any configured token");
  return *last;
}

Result<ReconcileBatch> ReconcileJobs::RunOnce(std::size_t batch) {
  SR_RETURN_IF_ERROR(CheckJobBatch("reconcile", batch, kMaxReconcileBatch));
  std::lock_guard run_lock(run_mutex_);
  ReconcileBatch result;
  std::optional<JobRow> job;
  const Status active = db_.WithSession([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(job, ReadJob(s, kActive));
    return OkStatus();
  });
  if (!active.ok()) return active.error();
  if (!job) return result;
  result.job_id = job->progress.job_id;
  const std::int64_t now_ms = Now();

  const std::set<std::string> ready = ReadyTokens(vault_);
  std::vector<hsm::VaultToken*> ready_tokens;
  for (hsm::VaultToken* token : vault_.Tokens()) {
    if (ready.count(token->name())) ready_tokens.push_back(token);
  }
  if (job->progress.state == "waiting") {
    bool retry = now_ms - job->progress.updated_ms >= kReconcileWaitingRecheckMs;
    for (const std::string& name : job->progress.waiting_for) retry = retry || ready.count(name);
    if (!retry) {
      result.outage = Error(ErrorCode::kUnavailable, job->progress.last_error);
      return result;
    }
  }

  // The page: keys after the cursor that a ready token lacks, with their blobs.
  std::vector<Candidate> candidates;
  const Status paged = db_.WithSession([&](Poco::Data::Session& s) -> Status {
    std::vector<std::pair<std::string, std::string>> page;
    SR_RETURN_IF_ERROR(ReadPage(s, job->phase, job->cursor, batch, ready_tokens,
                                job->progress.job_id, now_ms, page));
    for (auto& [uri, org] : page) {
      SR_ASSIGN_OR_RETURN(std::vector<hsm::TokenBlob> blobs, ReadBlobs(s, job->phase, uri));
      candidates.push_back({job->phase, std::move(uri), std::move(org), std::move(blobs)});
    }
    return OkStatus();
  });
  if (!paged.ok()) return paged.error();
  const bool page_full = candidates.size() >= batch;

  // The HSM work, outside any transaction.
  struct Added {
    const Candidate* to;
    hsm::TokenBlob blob;
  };
  struct Failed {
    const Candidate* of;
    std::string token;
    std::string error;
  };
  std::vector<Added> added;
  std::vector<Failed> failed;
  std::set<std::string> blocked = job->blocked;  // tokens that met an outage this round
  std::set<hsm::VaultToken*> down;               // tokens that met one in this batch
  std::string last_outage;
  for (const Candidate& c : candidates) {
    std::vector<hsm::VaultToken*> lacking;
    for (hsm::VaultToken* token : ready_tokens) {
      const bool has = std::any_of(c.blobs.begin(), c.blobs.end(), [&](const hsm::TokenBlob& b) {
        return b.token == token->name();
      });
      if (!has && token->Serves(c.org) && !down.count(token)) lacking.push_back(token);
    }
    if (lacking.empty()) continue;
    const hsm::KeyBinding binding{c.org, c.uri};
    bool outage = false;
    Result<SecretBytes> key = Open(binding, c.blobs, &outage);
    if (!key.ok()) {
      const std::string what =
          BoundedJobError(c.kind + " " + c.uri + ": " + key.error().ToString());
      if (outage) {
        // The tokens holding it are down: it waits for one of them.
        for (const hsm::TokenBlob& b : c.blobs) blocked.insert(b.token);
        last_outage = what;
      } else {
        for (hsm::VaultToken* token : lacking) failed.push_back({&c, token->name(), what});
      }
      continue;
    }
    for (hsm::VaultToken* token : lacking) {
      Result<std::vector<std::uint8_t>> blob = token->Wrap(binding, key->view());
      if (blob.ok()) {
        added.push_back({&c, {token->name(), std::move(blob).value()}});
      } else if (blob.error().code() == ErrorCode::kInvalidArgument) {
        failed.push_back({&c, token->name(),
                          BoundedJobError(c.kind + " " + c.uri + " for token '" + token->name() +
                                          "': " + blob.error().ToString())});
      } else {
        // Down, out of wrap budget, or without a root key for the organization: the token's
        // other keys wait too.
        down.insert(token);
        blocked.insert(token->name());
        last_outage = BoundedJobError("token '" + token->name() + "': " + blob.error().ToString());
      }
    }
  }

  // Where the round goes on: after this page, or with the channel keys, or it has ended.
  std::string phase = job->phase, cursor = job->cursor;
  bool round_ended = false;
  if (page_full) {
    cursor = candidates.back().uri;
  } else if (phase != "ephemeral" && !ready_tokens.empty()) {
    phase = phase == "key" ? "search" : "ephemeral";
    cursor.clear();
  } else {
    round_ended = true;
  }

  // A job that resumes from waiting forgets why it waited; what this round meets is news.
  const std::string last_error = !last_outage.empty()               ? last_outage
                                 : !failed.empty()                  ? failed.back().error
                                 : job->progress.state == "waiting" ? std::string()
                                                                    : job->progress.last_error;
  std::size_t written = 0;
  const Status write = db_.InTransaction([&](Poco::Data::Session& s) -> Status {
    written = 0;
    for (const Added& a : added) {
      SR_ASSIGN_OR_RETURN(bool inserted,
                          a.to->kind == "key" ? KmsStore::AddMissingBlob(s, a.to->uri, a.blob)
                          : a.to->kind == "search"
                              ? KmsStore::AddMissingSearchKeyBlob(s, a.to->uri, a.blob)
                              : KmsStore::AddMissingEphemeralBlob(s, a.to->uri, a.blob));
      written += inserted;
    }
    for (const Failed& f : failed) {
      Database::Prepare(s,
                        "INSERT INTO reconcile_failures (job_id, kind, uri, token, error) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
          .Bind(job->progress.job_id)
          .Bind(f.of->kind)
          .Bind(f.of->uri)
          .Bind(f.token)
          .Bind(f.error)
          .Run();
    }
    const auto done = static_cast<std::int64_t>(written);
    const auto fails = static_cast<std::int64_t>(failed.size());
    // SQLite's two-argument MAX is PostgreSQL's GREATEST: a CASE is both engines'.
    Database::Prepare(s,
                      "UPDATE reconcile_jobs SET state = 'running', waiting_for = '', phase = ?, "
                      "cursor = ?, done = done + ?, failed = failed + ?, updated_ms = ?, "
                      "blocked = ?, last_error = ?, total = CASE WHEN total > done + ? + failed "
                      "+ ? THEN total ELSE done + ? + failed + ? END "
                      "WHERE id = ? AND state IN ('running', 'waiting')")
        .Bind(phase)
        .Bind(cursor)
        .Bind(done)
        .Bind(fails)
        .Bind(now_ms)
        .Bind(Join(blocked))
        .Bind(last_error)
        .Bind(done)
        .Bind(fails)
        .Bind(done)
        .Bind(fails)
        .Bind(job->progress.job_id)
        .Run();
    return OkStatus();
  });
  if (!write.ok()) return write.error();
  result.wrapped = written;
  result.failed = failed.size();
  if (!round_ended) return result;
  job->progress.done += static_cast<std::int64_t>(written);
  job->progress.failed += static_cast<std::int64_t>(failed.size());
  job->progress.last_error = last_error;
  return EndRound(std::move(job->progress), ready, std::move(blocked), std::move(result));
}

Result<ReconcileBatch> ReconcileJobs::EndRound(ReconcileProgress job,
                                               const std::set<std::string>& ready,
                                               std::set<std::string> blocked,
                                               ReconcileBatch result) {
  SR_ASSIGN_OR_RETURN(MissingWraps missing, Count());
  const std::int64_t now_ms = Now();
  std::vector<hsm::VaultToken*> ready_tokens;
  std::set<std::string> not_ready_missing;
  std::int64_t ready_missing = 0;
  for (hsm::VaultToken* token : vault_.Tokens()) {
    if (ready.count(token->name())) {
      ready_tokens.push_back(token);
      ready_missing += missing.of(token->name());
    } else if (missing.of(token->name()) > 0) {
      not_ready_missing.insert(token->name());
    }
  }
  // Anything a ready token lacks that this job has not given up on (it arrived behind the cursor).
  bool candidate = false;
  if (missing.total() > 0) {
    const Status checked = db_.WithSession([&](Poco::Data::Session& s) -> Status {
      for (const std::string kind : kKinds) {
        std::vector<std::pair<std::string, std::string>> page;
        SR_RETURN_IF_ERROR(ReadPage(s, kind, "", 1, ready_tokens, job.job_id, now_ms, page));
        candidate = candidate || !page.empty();
      }
      return OkStatus();
    });
    if (!checked.ok()) return checked.error();
  }

  std::string state;
  std::set<std::string> waiting_for;
  std::string last_error = job.last_error;
  if (missing.total() == 0) {
    state = "done";
  } else if (!blocked.empty() || (!candidate && !not_ready_missing.empty())) {
    state = "waiting";
    // The tokens whose return may let it go on: those that are down now. Tokens that refused while
    // ready (wrap budget, no root key) are looked at again a minute later.
    for (const std::string& name : blocked) {
      if (!ready.count(name)) waiting_for.insert(name);
    }
    waiting_for.insert(not_ready_missing.begin(), not_ready_missing.end());
    last_error = BoundedJobError(std::to_string(missing.total()) + " wraps missing; waiting for " +
                                 (waiting_for.empty() ? std::string("the tokens to accept wraps")
                                                      : "token(s) " + Quoted(waiting_for)) +
                                 (job.last_error.empty() ? "" : " (last: " + job.last_error + ")"));
    result.outage = Error(ErrorCode::kUnavailable, last_error);
  } else if (candidate) {
    state = "running";  // another round
  } else {
    state = "failed";
  }

  const bool finished = state == "done" || state == "failed";
  const Status ended = db_.InTransaction([&](Poco::Data::Session& s) -> Status {
    const std::int64_t left = missing.total();
    // A new round, or a wait, begins at the first key again; total follows what is missing now.
    const std::int64_t updated =
        Database::Prepare(s,
                          "UPDATE reconcile_jobs SET state = ?, phase = 'key', cursor = '', "
                          "blocked = '', waiting_for = ?, updated_ms = ?, last_error = ?, "
                          "total = CASE WHEN ? = 0 THEN done + failed "
                          "WHEN total > done + ? THEN total ELSE done + ? END "
                          "WHERE id = ? AND state IN ('running', 'waiting')")
            .Bind(state)
            .Bind(Join(waiting_for))
            .Bind(now_ms)
            .Bind(last_error)
            .Bind(left)
            .Bind(left)
            .Bind(left)
            .Bind(job.job_id)
            .Run();
    if (updated == 0 || !finished) return OkStatus();
    AuditRecord record{.at_ms = now_ms,
                       .actor = "kms",
                       .action = "reconcile.end",
                       .outcome = state == "done" ? "ok" : "failed",
                       .detail = "reconcile job " + std::to_string(job.job_id) + ": " +
                                 std::to_string(job.done) + " wraps added, " +
                                 std::to_string(job.failed) + " failed, " +
                                 std::to_string(missing.total()) + " still missing"};
    SR_RETURN_IF_ERROR(AuditLog::Append(s, record));
    result.finished = true;
    return OkStatus();
  });
  if (!ended.ok()) return ended.error();
  if (state == "failed") {
    std::lock_guard lock(count_mutex_);
    failed_leftover_ = ready_missing;
  }
  return result;
}

Status ReconcileJobs::Check(std::chrono::milliseconds busy_recount,
                            std::chrono::milliseconds idle_recount, int count_spacing) {
  const std::set<std::string> ready = ReadyTokens(vault_);
  bool due = false;
  {
    std::lock_guard lock(count_mutex_);
    const auto elapsed = std::chrono::steady_clock::now() - counted_at_;
    const auto floor = count_took_ * count_spacing;
    due = !last_count_ || ready != counted_ready_ || elapsed >= std::max(idle_recount, floor) ||
          (elapsed >= std::max(busy_recount, floor) &&
           (ready.size() < vault_.Tokens().size() || last_count_->total() > 0));
  }
  std::optional<MissingWraps> missing;
  if (due) {
    SR_ASSIGN_OR_RETURN(missing, Count());
  } else {
    missing = last_count();
  }
  std::int64_t ready_missing = 0;
  for (const auto& [token, n] : missing->by_token) {
    if (ready.count(token)) ready_missing += n;
  }
  if (ready_missing == 0) return OkStatus();
  Result<ReconcileProgress> latest = Progress();
  if (!latest.ok() && latest.error().code() != ErrorCode::kNotFound) return latest.error();
  if (latest.ok()) {
    if (latest->state == "running" || latest->state == "waiting") return OkStatus();
    std::lock_guard lock(count_mutex_);
    // What the last job could not do is not tried again until something changes.
    if (latest->state == "failed" && failed_leftover_ == ready_missing) return OkStatus();
  }
  SR_ASSIGN_OR_RETURN(ReconcileProgress started, Start("kms"));
  (void)started;
  return OkStatus();
}

ReconcileWorker::ReconcileWorker(ReconcileJobs& jobs, Options options)
    : jobs_(jobs),
      options_([&] {
        options.batch = std::clamp<std::size_t>(options.batch, 1, kMaxReconcileBatch);
        return options;
      }()),
      worker_(options_.interval, [this] { return RunRound(); }) {}

JobWorker::Round ReconcileWorker::RunRound() {
  const Status checked = jobs_.Check(options_.busy_recount, options_.idle_recount);
  Result<ReconcileBatch> batch = jobs_.RunOnce(options_.batch);
  return {.busy = batch.ok() && batch->job_id && !batch->outage && !batch->finished,
          .error = !checked.ok() ? std::optional<Error>(checked.error())
                   : !batch.ok() ? std::optional<Error>(batch.error())
                                 : std::nullopt};
}

}  // namespace strongroom::kms
