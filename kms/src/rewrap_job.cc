#include "strongroom/kms/rewrap_job.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <map>

#include "strongroom/common/rfc3339.h"
#include "strongroom/kms/audit_log.h"
#include "strongroom/kms/kms_store.h"
#include "strongroom/kms/reconcile_job.h"

namespace strongroom::kms {
namespace {

// kJobProgressColumns, then the job's own.
const std::string kJobColumns = std::string(kJobProgressColumns) + ", org, root_version";

// The blob's root version as it sits in the blob (bytes 4-7, big-endian): blobs compare below a
// version bytewise, which is how the ephemeral blobs, stored without a version column, are found.
std::array<std::uint8_t, 4> VersionPrefix(std::uint32_t version) {
  return {static_cast<std::uint8_t>(version >> 24), static_cast<std::uint8_t>(version >> 16),
          static_cast<std::uint8_t>(version >> 8), static_cast<std::uint8_t>(version)};
}

// A row of kJobColumns.
RewrapProgress JobFromRow(const SqlStatement& row) {
  RewrapProgress p;
  ReadJobProgress(row, p);
  p.org = row.Text(kJobProgressColumnCount);
  p.root_version = static_cast<std::uint32_t>(row.Int(kJobProgressColumnCount + 1));
  return p;
}

// The blobs of `kind` ("key", "search", "ephemeral") a job has to re-wrap on one token: the
// token's name, the version they are below (for ephemeral blobs, which have no version column, as
// VersionPrefix: blobs compare bytewise), the organization, for ephemeral keys the time they must
// live past, the job, the kind, and how many; each row the key's URI and the blob.
const char* PendingSql(const std::string& kind) {
  if (kind == "key") {
    return "SELECT kb.key_uri, kb.blob FROM key_blobs kb JOIN keys k ON k.uri = kb.key_uri "
           "WHERE kb.token = ? AND kb.root_version < ? AND k.org = ? "
           "AND NOT EXISTS (SELECT 1 FROM rewrap_failures f WHERE f.job_id = ? "
           "AND f.kind = ? AND f.uri = kb.key_uri AND f.token = kb.token) LIMIT ?";
  }
  if (kind == "search") {
    return "SELECT sb.key_uri, sb.blob FROM search_key_blobs sb "
           "JOIN search_keys sk ON sk.uri = sb.key_uri "
           "WHERE sb.token = ? AND sb.root_version < ? AND sk.org = ? "
           "AND NOT EXISTS (SELECT 1 FROM rewrap_failures f WHERE f.job_id = ? "
           "AND f.kind = ? AND f.uri = sb.key_uri AND f.token = sb.token) LIMIT ?";
  }
  return "SELECT eb.uri, eb.blob FROM ephemeral_blobs eb JOIN ephemeral_keys ek ON ek.uri = eb.uri "
         "WHERE eb.token = ? AND substr(eb.blob, 5, 4) < ? AND ek.org = ? "
         "AND ek.deleted = 0 AND ek.expires_ms > ? "
         "AND NOT EXISTS (SELECT 1 FROM rewrap_failures f WHERE f.job_id = ? "
         "AND f.kind = ? AND f.uri = eb.uri AND f.token = eb.token) LIMIT ?";
}

// A failure that says something is wrong with this blob, as opposed to an outage.
bool IsBlobFailure(const Error& e) {
  return e.code() == ErrorCode::kDataLoss || e.code() == ErrorCode::kInvalidArgument ||
         e.code() == ErrorCode::kNotFound;
}

// The tokens serving `org` with their current root versions; tokens that cannot say are
// reported in `outage` and left out.
std::vector<std::pair<hsm::VaultToken*, std::uint32_t>> CurrentVersions(
    hsm::Vault& vault, const std::string& org, std::optional<Error>* outage) {
  std::vector<std::pair<hsm::VaultToken*, std::uint32_t>> out;
  for (hsm::VaultToken* token : vault.Tokens()) {
    if (!token->Serves(org)) continue;
    Result<std::uint32_t> version = token->CurrentVersion(org);  // read again, not remembered
    if (version.ok()) {
      out.emplace_back(token, *version);
    } else if (outage != nullptr) {
      *outage = Error(version.error().code(),
                      "token '" + token->name() + "': " + version.error().message());
    }
  }
  return out;
}

}  // namespace

struct RewrapJobs::Candidate {
  std::string kind;  // "key", "search" (a search key) or "ephemeral"
  std::string uri;
  hsm::VaultToken* token = nullptr;
  std::vector<std::uint8_t> blob;  // as read; written over only if still the same
};

RewrapJobs::RewrapJobs(hsm::Vault& vault, Database& db, Clock clock, RotationHook on_rotated,
                       std::chrono::milliseconds probe_interval)
    : vault_(vault),
      db_(db),
      clock_(std::move(clock)),
      on_rotated_(std::move(on_rotated)),
      probe_interval_(probe_interval) {}

std::int64_t RewrapJobs::Now() const { return clock_ ? clock_() : UnixNowMs(); }

Status RewrapJobs::NoteWaiting(std::int64_t job_id, const Error& waiting) {
  return db_.InTransaction([&](Poco::Data::Session& s) -> Status {
    Database::Prepare(s, "UPDATE rewrap_jobs SET last_error = ? WHERE id = ? AND last_error <> ?")
        .Bind(waiting.message())
        .Bind(job_id)
        .Bind(waiting.message())
        .Run();
    return OkStatus();
  });
}

Result<RewrapProgress> RewrapJobs::Rotate(const std::string& org, const std::string& actor) {
  SR_RETURN_IF_ERROR(hsm::ValidateOrgName(org));
  if (actor.empty() || actor.size() > kMaxActorBytes) {
    return Error(ErrorCode::kInvalidArgument,
                 "the actor must be 1 to " + std::to_string(kMaxActorBytes) + " bytes");
  }
  const std::int64_t at = Now();
  RewrapProgress job;
  std::string versions;
  Status status = db_.InTransaction([&](Poco::Data::Session& s) -> Status {
    // The rotation runs inside the transaction: the job and the audit record exist if and only
    // if the new version does (up to a failed commit, which the operator sees as an error).
    // Rotation is not creation: an org name with a typo must not get a root key.
    SR_ASSIGN_OR_RETURN(std::vector<hsm::RootKeySet> existing, vault_.ListRoots(org));
    if (std::all_of(existing.begin(), existing.end(),
                    [](const hsm::RootKeySet& set) { return set.keys.empty(); })) {
      return Error(ErrorCode::kFailedPrecondition,
                   "organization " + org + " has no root key to rotate (kmsctl hsm init-root)");
    }
    SR_ASSIGN_OR_RETURN(std::vector<hsm::RootKeyInfo> created, vault_.RotateRoot(org));
    std::uint32_t version = 0;
    versions.clear();
    for (const hsm::RootKeyInfo& info : created) {
      version = std::max(version, info.id.version);
      versions +=
          (versions.empty() ? "" : ", ") + info.token + " v" + std::to_string(info.id.version);
    }
    Database::Prepare(s,
                      "UPDATE rewrap_jobs SET state = 'superseded', updated_ms = ? "
                      "WHERE org = ? AND state = 'running'")
        .Bind(at)
        .Bind(org)
        .Run();
    std::int64_t total = 0;
    for (const hsm::RootKeyInfo& info : created) {
      const std::int64_t v = info.id.version;
      SqlStatement keys = Database::Prepare(
          s,
          "SELECT (SELECT COUNT(*) FROM key_blobs kb JOIN keys k ON k.uri = kb.key_uri "
          "WHERE kb.token = ? AND kb.root_version < ? AND k.org = ?) + "
          "(SELECT COUNT(*) FROM search_key_blobs sb JOIN search_keys sk ON sk.uri = sb.key_uri "
          "WHERE sb.token = ? AND sb.root_version < ? AND sk.org = ?)");
      keys.Bind(info.token).Bind(v).Bind(org).Bind(info.token).Bind(v).Bind(org);
      if (keys.Next()) total += keys.Int(0);
      SqlStatement ephemeral = Database::Prepare(
          s,
          "SELECT COUNT(*) FROM ephemeral_blobs eb JOIN ephemeral_keys ek ON ek.uri = eb.uri "
          "WHERE eb.token = ? AND substr(eb.blob, 5, 4) < ? AND ek.org = ? "
          "AND ek.deleted = 0 AND ek.expires_ms > ?");
      ephemeral.Bind(info.token).BindBlob(VersionPrefix(info.id.version)).Bind(org).Bind(at);
      if (ephemeral.Next()) total += ephemeral.Int(0);
    }
    // One writer at a time (InTransaction): no other job can take this id before the insert.
    std::int64_t id = 0;
    {
      SqlStatement next = Database::Prepare(s, "SELECT COALESCE(MAX(id), 0) + 1 FROM rewrap_jobs");
      if (next.Next()) id = next.Int(0);
    }
    const std::string state = "running";
    Database::Prepare(s,
                      "INSERT INTO rewrap_jobs (id, org, root_version, state, total, done, failed, "
                      "started_ms, updated_ms, last_error) VALUES (?, ?, ?, ?, ?, 0, 0, ?, ?, '')")
        .Bind(id)
        .Bind(org)
        .Bind(std::int64_t{version})
        .Bind(state)
        .Bind(total)
        .Bind(at)
        .Bind(at)
        .Run();
    AuditRecord record{.at_ms = at,
                       .org = org,
                       .actor = actor,
                       .action = "root.rotate",
                       .outcome = "ok",
                       .detail = "new root key " + versions + "; rewrap job " + std::to_string(id) +
                                 ", " + std::to_string(total) + " blobs to re-wrap"};
    SR_RETURN_IF_ERROR(AuditLog::Append(s, record));
    job.job_id = id;
    job.org = org;
    job.root_version = version;
    job.state = state;
    job.total = total;
    job.started_ms = job.updated_ms = at;
    return OkStatus();
  });
  if (!status.ok()) {
    // The refusal is audited too, in a transaction of its own.
    (void)db_.InTransaction([&](Poco::Data::Session& s) -> Status {
      AuditRecord record{.at_ms = at,
                         .org = org,
                         .actor = actor,
                         .action = "root.rotate",
                         .outcome = "failed",
                         .detail = BoundedJobError(status.error().ToString())};
      return AuditLog::Append(s, record);
    });
    return status.error();
  }
  if (on_rotated_) on_rotated_(org);
  return job;
}

Result<RewrapBatch> RewrapJobs::RunOnce(std::size_t batch) {
  SR_RETURN_IF_ERROR(CheckJobBatch("rewrap", batch, kMaxRewrapBatch));
  std::lock_guard run_lock(run_mutex_);
  RewrapBatch result;

  std::optional<RewrapProgress> job;
  SR_RETURN_IF_ERROR(db_.WithSession([&](Poco::Data::Session& s) -> Status {
    SqlStatement select =
        Database::Prepare(s, "SELECT " + kJobColumns +
                                 " FROM rewrap_jobs WHERE state = 'running' ORDER BY id LIMIT 1");
    if (select.Next()) job = JobFromRow(select);
    return OkStatus();
  }));
  if (!job) return result;
  result.job_id = job->job_id;

  std::optional<Error> outage;
  const auto tokens = CurrentVersions(vault_, job->org, &outage);
  const std::int64_t now_ms = Now();

  // Up to `batch` blobs below their token's current version that this job has not given up on.
  std::vector<Candidate> candidates;
  auto read_pending = [&](std::size_t limit, std::vector<Candidate>& out) -> Status {
    return db_.WithSession([&](Poco::Data::Session& s) -> Status {
      for (const auto& [token, version] : tokens) {
        for (const char* kind : {"key", "search", "ephemeral"}) {
          if (out.size() >= limit) return OkStatus();
          const std::string k = kind;
          const auto left = static_cast<std::int64_t>(limit - out.size());
          SqlStatement select = Database::Prepare(s, PendingSql(k));
          select.Bind(token->name());
          if (k == "ephemeral") {
            select.BindBlob(VersionPrefix(version)).Bind(job->org).Bind(now_ms);
          } else {
            select.Bind(std::int64_t{version}).Bind(job->org);
          }
          select.Bind(job->job_id).Bind(k).Bind(left);
          while (select.Next()) {
            const std::span<const std::uint8_t> blob = select.Blob(1);
            out.push_back({k, select.Text(0), token, {blob.begin(), blob.end()}});
          }
        }
      }
      return OkStatus();
    });
  };
  SR_RETURN_IF_ERROR(read_pending(batch, candidates));

  // The HSM work, outside any transaction. A token that has an outage is left for later.
  struct Rewrapped {
    const Candidate* from;
    hsm::TokenBlob blob;
  };
  std::vector<Rewrapped> rewrapped;
  std::vector<std::pair<const Candidate*, std::string>> failed;
  std::map<hsm::VaultToken*, bool> token_down;
  for (const Candidate& c : candidates) {
    if (token_down[c.token]) continue;
    const hsm::KeyBinding binding{job->org, c.uri};
    // The blob is opened by its own token (not by the vault's failover): its own root key must
    // still open it, and the token's own error says whether the blob or the token is at fault.
    Result<SecretBytes> key = c.token->Unwrap(binding, c.blob);
    std::optional<Error> error;
    bool blob_at_fault = false;
    if (!key.ok()) {
      error = key.error();
      blob_at_fault = IsBlobFailure(key.error());
    } else {
      Result<std::vector<std::uint8_t>> blob = c.token->Wrap(binding, key->view());
      if (blob.ok()) {
        rewrapped.push_back({&c, {c.token->name(), std::move(blob).value()}});
        continue;
      }
      error = blob.error();
      blob_at_fault = blob.error().code() == ErrorCode::kInvalidArgument;
    }
    std::string what = BoundedJobError(c.kind + " " + c.uri + " on token '" + c.token->name() +
                                       "': " + error->ToString());
    if (blob_at_fault) {
      failed.emplace_back(&c, std::move(what));
    } else {
      token_down[c.token] = true;  // an outage: the token's other blobs wait for the next batch
      outage = Error(error->code(), std::move(what));
    }
  }

  // One transaction for the batch: a blob is replaced only if it is still the one read.
  std::size_t written = 0;
  const Status write = db_.InTransaction([&](Poco::Data::Session& s) -> Status {
    written = 0;
    for (const Rewrapped& r : rewrapped) {
      const std::string& uri = r.from->uri;
      if (r.from->kind == "key" || r.from->kind == "search") {
        const bool key = r.from->kind == "key";
        SqlStatement same = Database::Prepare(
            s, key ? "SELECT 1 FROM key_blobs WHERE key_uri = ? AND token = ? AND blob = ?"
                   : "SELECT 1 FROM search_key_blobs WHERE key_uri = ? AND token = ? AND blob = ?");
        if (!same.Bind(uri).Bind(r.blob.token).BindBlob(r.from->blob).Next()) continue;
        SR_RETURN_IF_ERROR(key ? KmsStore::PutBlob(s, uri, r.blob)
                               : KmsStore::PutSearchKeyBlob(s, uri, r.blob));
        ++written;
      } else {
        written += Database::Prepare(s,
                                     "UPDATE ephemeral_blobs SET blob = ? "
                                     "WHERE uri = ? AND token = ? AND blob = ?")
                       .BindBlob(r.blob.blob)
                       .Bind(uri)
                       .Bind(r.blob.token)
                       .BindBlob(r.from->blob)
                       .Run();
      }
    }
    for (const auto& [c, error] : failed) {
      Database::Prepare(s,
                        "INSERT INTO rewrap_failures (job_id, kind, uri, token, error) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
          .Bind(job->job_id)
          .Bind(c->kind)
          .Bind(c->uri)
          .Bind(c->token->name())
          .Bind(error)
          .Run();
    }
    const auto done = static_cast<std::int64_t>(written);
    const auto fails = static_cast<std::int64_t>(failed.size());
    const std::string last_error = outage           ? outage->message()
                                   : failed.empty() ? job->last_error
                                                    : failed.back().second;
    // A worker on a node that wrapped at a stale version can add blobs; total follows. (SQLite's
    // two-argument MAX is PostgreSQL's GREATEST: a CASE is both engines'.)
    Database::Prepare(s,
                      "UPDATE rewrap_jobs SET done = done + ?, failed = failed + ?, "
                      "updated_ms = ?, last_error = ?, total = CASE WHEN total > done + ? + "
                      "failed + ? THEN total ELSE done + ? + failed + ? END WHERE id = ?")
        .Bind(done)
        .Bind(fails)
        .Bind(now_ms)
        .Bind(last_error)
        .Bind(done)
        .Bind(fails)
        .Bind(done)
        .Bind(fails)
        .Bind(job->job_id)
        .Run();
    return OkStatus();
  });
  if (!write.ok()) return write.error();
  result.rewrapped = written;
  result.failed = failed.size();
  result.outage = outage;
  if (outage || candidates.size() >= batch) return result;

  // Another node keeps wrapping new keys under the old version until its probe finds the new one;
  // until every node's probe has had its chance, the batches re-wrap those too, and the job waits.
  const std::int64_t settled_ms = job->started_ms + kProbeWaitFactor * probe_interval_.count();
  if (now_ms < settled_ms) {
    const Error waiting(ErrorCode::kFailedPrecondition,
                        "waiting until " + FormatRfc3339Ms(settled_ms) +
                            " for the other KMS nodes' token probes to find root v" +
                            std::to_string(job->root_version) + " (" +
                            std::to_string(kProbeWaitFactor) + " x probe_interval_ms " +
                            std::to_string(probe_interval_.count()) + ")");
    SR_RETURN_IF_ERROR(NoteWaiting(job->job_id, waiting));
    result.outage = waiting;
    return result;
  }

  // Nothing was left beyond this batch: the job ends if the query agrees.
  std::vector<Candidate> left;
  SR_RETURN_IF_ERROR(read_pending(1, left));
  if (!left.empty()) return result;
  // A key that lacks a wrap under a token (made while the token was down) is not under the new
  // version there either: "done" would claim more than the job did. The reconciliation job adds
  // the missing wraps, under the current version; until then the job stays running.
  std::optional<MissingWraps> missing;
  SR_RETURN_IF_ERROR(db_.WithSession([&](Poco::Data::Session& s) -> Status {
    SR_ASSIGN_OR_RETURN(missing, ReconcileJobs::CountMissing(s, vault_, now_ms, job->org));
    return OkStatus();
  }));
  if (missing->total() > 0) {
    std::string lacking;
    for (const auto& [token, n] : missing->by_token) {
      if (n > 0) lacking += (lacking.empty() ? "" : ", ") + token + " " + std::to_string(n);
    }
    const Error waiting(ErrorCode::kFailedPrecondition,
                        std::to_string(missing->total()) + " wraps of " + job->org +
                            "'s keys are missing (" + lacking +
                            "); the reconciliation job adds them (kmsctl ops reconcile)");
    SR_RETURN_IF_ERROR(NoteWaiting(job->job_id, waiting));
    result.outage = waiting;
    return result;
  }
  const Status finish = db_.InTransaction([&](Poco::Data::Session& s) -> Status {
    const std::int64_t id = job->job_id, updated = Now();
    std::int64_t done = 0, fails = 0;
    {
      SqlStatement counts =
          Database::Prepare(s, "SELECT done, failed FROM rewrap_jobs WHERE id = ?");
      if (counts.Bind(id).Next()) {
        done = counts.Int(0);
        fails = counts.Int(1);
      }
    }
    const std::string state = fails == 0 ? "done" : "failed";
    const std::int64_t ended =
        Database::Prepare(
            s,
            "UPDATE rewrap_jobs SET state = ?, updated_ms = ? WHERE id = ? AND state = 'running'")
            .Bind(state)
            .Bind(updated)
            .Bind(id)
            .Run();
    if (ended == 0) return OkStatus();  // superseded, or ended by another worker
    AuditRecord record{.at_ms = updated,
                       .org = job->org,
                       .actor = "kms",
                       .action = "root.rewrap",
                       .outcome = state == "done" ? "ok" : "failed",
                       .detail = "rewrap job " + std::to_string(id) + " to root v" +
                                 std::to_string(job->root_version) + ": " + std::to_string(done) +
                                 " re-wrapped, " + std::to_string(fails) + " failed"};
    SR_RETURN_IF_ERROR(AuditLog::Append(s, record));
    result.finished = true;
    return OkStatus();
  });
  if (!finish.ok()) return finish.error();
  return result;
}

Result<RewrapProgress> RewrapJobs::Progress(const std::string& org) {
  SR_RETURN_IF_ERROR(hsm::ValidateOrgName(org));
  std::optional<RewrapProgress> job;
  SR_RETURN_IF_ERROR(db_.WithSession([&](Poco::Data::Session& s) -> Status {
    SqlStatement select = Database::Prepare(
        s, "SELECT " + kJobColumns + " FROM rewrap_jobs WHERE org = ? ORDER BY id DESC LIMIT 1");
    if (select.Bind(org).Next()) job = JobFromRow(select);
    return OkStatus();
  }));
  if (!job) return Error(ErrorCode::kNotFound, "organization " + org + " has no rewrap job");
  return *job;
}

Result<std::vector<RewrapFailure>> RewrapJobs::Failures(std::int64_t job_id, std::size_t limit) {
  return ReadJobFailures(db_, "rewrap_failures", job_id, limit);
}

RewrapWorker::RewrapWorker(RewrapJobs& jobs, std::chrono::milliseconds idle_interval,
                           std::size_t batch)
    : jobs_(jobs),
      batch_(std::clamp<std::size_t>(batch, 1, kMaxRewrapBatch)),
      worker_(idle_interval, [this] { return RunRound(); }) {}

JobWorker::Round RewrapWorker::RunRound() {
  Result<RewrapBatch> batch = jobs_.RunOnce(batch_);
  if (!batch.ok()) return {.busy = false, .error = batch.error()};
  return {.busy = batch->job_id && !batch->outage, .error = std::nullopt};
}

}  // namespace strongroom::kms
