#include "strongroom/kms/rewrap_job.h"

#include <Poco/Data/LOB.h>
#include <Poco/Data/RecordSet.h>
#include <Poco/Data/Statement.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "strongroom/common/rfc3339.h"
#include "strongroom/kms/audit_log.h"
#include "strongroom/kms/kms_store.h"
#include "strongroom/kms/reconcile_job.h"

namespace strongroom::kms {
namespace {

using Poco::Data::Keywords::into;
using Poco::Data::Keywords::now;
using Poco::Data::Keywords::use;

constexpr char kJobColumns[] =
    "id, org, root_version, state, total, done, failed, started_ms, updated_ms, last_error";

// The blob's root version as it sits in the blob (bytes 4-7, big-endian): blobs compare below a
// version bytewise, which is how the ephemeral blobs, stored without a version column, are found.
Poco::Data::BLOB VersionPrefix(std::uint32_t version) {
  const unsigned char bytes[4] = {
      static_cast<unsigned char>(version >> 24), static_cast<unsigned char>(version >> 16),
      static_cast<unsigned char>(version >> 8), static_cast<unsigned char>(version)};
  return Poco::Data::BLOB(bytes, sizeof bytes);
}

std::vector<std::uint8_t> BlobBytes(Poco::Data::RecordSet& rows, const char* column) {
  const Poco::Data::BLOB blob = rows[column].extract<Poco::Data::BLOB>();  // a copy
  return std::vector<std::uint8_t>(blob.content().begin(), blob.content().end());
}

RewrapProgress JobFromRow(Poco::Data::RecordSet& rows) {
  RewrapProgress p;
  ReadJobProgress(rows, p);
  p.org = rows["org"].convert<std::string>();
  p.root_version = rows["root_version"].convert<std::uint32_t>();
  return p;
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

RewrapJobs::RewrapJobs(hsm::Vault& vault, Database& db, Clock clock, RotationHook on_rotated)
    : vault_(vault), db_(db), clock_(std::move(clock)), on_rotated_(std::move(on_rotated)) {}

std::int64_t RewrapJobs::Now() const { return clock_ ? clock_() : UnixNowMs(); }

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
    std::string o = org;
    Poco::Int64 updated = at;
    s << "UPDATE rewrap_jobs SET state = 'superseded', updated_ms = ? "
         "WHERE org = ? AND state = 'running'",
        use(updated), use(o), now;
    std::int64_t total = 0;
    for (const hsm::RootKeyInfo& info : created) {
      std::string token = info.token;
      Poco::Int64 v = info.id.version, keys = 0, ephemeral = 0;
      s << "SELECT (SELECT COUNT(*) FROM key_blobs kb JOIN keys k ON k.uri = kb.key_uri "
           "WHERE kb.token = ? AND kb.root_version < ? AND k.org = ?) + "
           "(SELECT COUNT(*) FROM search_key_blobs sb JOIN search_keys sk ON sk.uri = sb.key_uri "
           "WHERE sb.token = ? AND sb.root_version < ? AND sk.org = ?)",
          use(token), use(v), use(o), use(token), use(v), use(o), into(keys), now;
      Poco::Data::BLOB prefix = VersionPrefix(info.id.version);
      s << "SELECT COUNT(*) FROM ephemeral_blobs eb JOIN ephemeral_keys ek ON ek.uri = eb.uri "
           "WHERE eb.token = ? AND substr(eb.blob, 5, 4) < ? AND ek.org = ? "
           "AND ek.deleted = 0 AND ek.expires_ms > ?",
          use(token), use(prefix), use(o), use(updated), into(ephemeral), now;
      total += keys + ephemeral;
    }
    Poco::Int64 id = 0;
    s << "SELECT COALESCE(MAX(id), 0) + 1 FROM rewrap_jobs", into(id), now;
    Poco::Int64 root_version = version, count = total;
    std::string state = "running";
    s << "INSERT INTO rewrap_jobs (id, org, root_version, state, total, done, failed, "
         "started_ms, updated_ms, last_error) VALUES (?, ?, ?, ?, ?, 0, 0, ?, ?, '')",
        use(id), use(o), use(root_version), use(state), use(count), use(updated), use(updated), now;
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
    Poco::Data::Statement select(s);
    select << "SELECT " << kJobColumns
           << " FROM rewrap_jobs WHERE state = 'running' ORDER BY id LIMIT 1";
    select.execute();
    Poco::Data::RecordSet rows(select);
    if (rows.moveFirst()) job = JobFromRow(rows);
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
          std::string name = token->name(), org = job->org, k = kind;
          Poco::Int64 id = job->job_id, v = version, now_value = now_ms;
          Poco::Int64 left = static_cast<Poco::Int64>(limit - out.size());
          Poco::Data::BLOB prefix = VersionPrefix(version);
          Poco::Data::Statement select(s);
          if (k == "key") {
            select << "SELECT kb.key_uri AS uri, kb.blob AS blob FROM key_blobs kb "
                      "JOIN keys k ON k.uri = kb.key_uri "
                      "WHERE kb.token = ? AND kb.root_version < ? AND k.org = ? "
                      "AND NOT EXISTS (SELECT 1 FROM rewrap_failures f WHERE f.job_id = ? "
                      "AND f.kind = ? AND f.uri = kb.key_uri AND f.token = kb.token) LIMIT ?",
                use(name), use(v), use(org), use(id), use(k), use(left);
          } else if (k == "search") {
            select << "SELECT sb.key_uri AS uri, sb.blob AS blob FROM search_key_blobs sb "
                      "JOIN search_keys sk ON sk.uri = sb.key_uri "
                      "WHERE sb.token = ? AND sb.root_version < ? AND sk.org = ? "
                      "AND NOT EXISTS (SELECT 1 FROM rewrap_failures f WHERE f.job_id = ? "
                      "AND f.kind = ? AND f.uri = sb.key_uri AND f.token = sb.token) LIMIT ?",
                use(name), use(v), use(org), use(id), use(k), use(left);
          } else {
            select << "SELECT eb.uri AS uri, eb.blob AS blob FROM ephemeral_blobs eb "
                      "JOIN ephemeral_keys ek ON ek.uri = eb.uri "
                      "WHERE eb.token = ? AND substr(eb.blob, 5, 4) < ? AND ek.org = ? "
                      "AND ek.deleted = 0 AND ek.expires_ms > ? "
                      "AND NOT EXISTS (SELECT 1 FROM rewrap_failures f WHERE f.job_id = ? "
                      "AND f.kind = ? AND f.uri = eb.uri AND f.token = eb.token) LIMIT ?",
                use(name), use(prefix), use(org), use(now_value), use(id), use(k), use(left);
          }
          select.execute();
          Poco::Data::RecordSet rows(select);
          for (bool row = rows.moveFirst(); row; row = rows.moveNext()) {
            out.push_back({k, rows["uri"].convert<std::string>(), token, BlobBytes(rows, "blob")});
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
      std::string uri = r.from->uri, token = r.blob.token;
      Poco::Data::BLOB old_bytes(r.from->blob.data(), r.from->blob.size());
      if (r.from->kind == "key") {
        Poco::Int64 same = 0;
        s << "SELECT COUNT(*) FROM key_blobs WHERE key_uri = ? AND token = ? AND blob = ?",
            use(uri), use(token), use(old_bytes), into(same), now;
        if (same == 0) continue;
        SR_RETURN_IF_ERROR(KmsStore::PutBlob(s, r.from->uri, r.blob));
        ++written;
      } else if (r.from->kind == "search") {
        Poco::Int64 same = 0;
        s << "SELECT COUNT(*) FROM search_key_blobs WHERE key_uri = ? AND token = ? AND blob = ?",
            use(uri), use(token), use(old_bytes), into(same), now;
        if (same == 0) continue;
        SR_RETURN_IF_ERROR(KmsStore::PutSearchKeyBlob(s, r.from->uri, r.blob));
        ++written;
      } else {
        Poco::Data::BLOB new_bytes(r.blob.blob.data(), r.blob.blob.size());
        Poco::Data::Statement update(s);
        update << "UPDATE ephemeral_blobs SET blob = ? WHERE uri = ? AND token = ? AND blob = ?",
            use(new_bytes), use(uri), use(token), use(old_bytes);
        written += update.execute();
      }
    }
    for (const auto& [c, error] : failed) {
      Poco::Int64 id = job->job_id;
      std::string kind = c->kind, uri = c->uri, token = c->token->name(), text = error;
      s << "INSERT INTO rewrap_failures (job_id, kind, uri, token, error) VALUES (?, ?, ?, ?, ?) "
           "ON CONFLICT DO NOTHING",
          use(id), use(kind), use(uri), use(token), use(text), now;
    }
    Poco::Int64 id = job->job_id, done = static_cast<Poco::Int64>(written),
                fails = static_cast<Poco::Int64>(failed.size()), updated = now_ms;
    std::string last_error = outage           ? outage->message()
                             : failed.empty() ? job->last_error
                                              : failed.back().second;
    // A worker on a node that wrapped at a stale version can add blobs; total follows.
    s << "UPDATE rewrap_jobs SET done = done + ?, failed = failed + ?, updated_ms = ?, "
         "last_error = ?, total = MAX(total, done + ? + failed + ?) WHERE id = ?",
        use(done), use(fails), use(updated), use(last_error), use(done), use(fails), use(id), now;
    return OkStatus();
  });
  if (!write.ok()) return write.error();
  result.rewrapped = written;
  result.failed = failed.size();
  result.outage = outage;
  if (outage || candidates.size() >= batch) return result;

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
    SR_RETURN_IF_ERROR(db_.InTransaction([&](Poco::Data::Session& s) -> Status {
      Poco::Int64 id = job->job_id;
      std::string text = waiting.message();
      s << "UPDATE rewrap_jobs SET last_error = ? WHERE id = ? AND last_error <> ?", use(text),
          use(id), use(text), now;
      return OkStatus();
    }));
    result.outage = waiting;
    return result;
  }
  const Status finish = db_.InTransaction([&](Poco::Data::Session& s) -> Status {
    Poco::Int64 id = job->job_id, updated = Now(), done = 0, fails = 0;
    s << "SELECT done, failed FROM rewrap_jobs WHERE id = ?", use(id), into(done), into(fails), now;
    std::string state = fails == 0 ? "done" : "failed";
    Poco::Data::Statement update(s);
    update << "UPDATE rewrap_jobs SET state = ?, updated_ms = ? WHERE id = ? AND state = 'running'",
        use(state), use(updated), use(id);
    if (update.execute() == 0) return OkStatus();  // superseded, or ended by another worker
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
    std::string o = org;
    Poco::Data::Statement select(s);
    select << "SELECT " << kJobColumns
           << " FROM rewrap_jobs WHERE org = ? ORDER BY id DESC LIMIT 1",
        use(o);
    select.execute();
    Poco::Data::RecordSet rows(select);
    if (rows.moveFirst()) job = JobFromRow(rows);
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
