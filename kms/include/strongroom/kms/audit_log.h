// The KMS's audit log: one row per key retrieval, denial, authorization change, policy change
// and root rotation, hash-chained so that an edited, removed or reordered record is detected.
//
//   hash(n) = SHA-256(hash(n-1) | u64 seq | i64 at_ms | lp org | lp actor | lp action |
//                     lp resource | lp key | lp outcome | lp detail)
//
// where lp is a 4-byte big-endian length followed by the bytes, and hash(0) is 32 zero bytes.
// Records are appended inside the transaction of the operation they describe, so the log and the
// state never disagree; sequence numbers are dense (1, 2, 3, ...), so a removed record breaks the
// count as well as the chain. The chain alone does not stop someone who can rewrite every later
// row: kmsd signs checkpoints of it in the HSM (audit_checkpoints.h), and the head kmsctl prints
// is worth keeping somewhere the database's writers cannot reach.
//
// Fields are bounded (kMaxAuditField bytes) and must not hold secrets: key URIs, user ids and
// outcomes only, never key material, tokens or plaintext.
#ifndef STRONGROOM_KMS_AUDIT_LOG_H_
#define STRONGROOM_KMS_AUDIT_LOG_H_

#include <Poco/Data/Session.h>

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "strongroom/common/database.h"
#include "strongroom/common/error.h"

namespace strongroom::kms {

inline constexpr std::size_t kMaxAuditField = 2048;
inline constexpr std::size_t kMaxAuditQuery = 1000;

struct AuditRecord {
  std::int64_t seq = 0;    // assigned on append
  std::int64_t at_ms = 0;  // milliseconds since the epoch
  // Every field has an initializer, so a record can be written with designated initializers
  // naming only the fields it sets.
  std::string org = {};
  std::string actor = {};     // the user or service that asked
  std::string action = {};    // e.g. "key.retrieve", "authorization.create", "root.rotate"
  std::string resource = {};  // a resource URI, or empty
  std::string key = {};       // a key URI, or empty
  std::string outcome = {};   // "ok", or the refusal
  std::string detail = {};    // free text for operators; never secrets
  // The sealed request the record's action executed, when the audit row is also its record of
  // execution (replay_guard.h): the channel's URI and the message's IV and tag. Empty otherwise.
  // Hashed into the chain when present, so a record written without them hashes as before.
  std::string channel = {};
  std::string message = {};
};

using AuditHash = std::array<std::uint8_t, 32>;

struct AuditVerdict {
  std::int64_t records = 0;             // records checked
  std::optional<std::int64_t> bad_seq;  // the first record that fails, if any
  std::string problem;                  // what is wrong with it
  AuditHash head{};                     // hash of the last record checked
  bool ok() const { return !bad_seq.has_value(); }
};

struct AuditFilter {
  std::optional<std::string> actor;  // records whose actor is this
  // Records whose actor is this user, or whose detail says an officer acted on the user's behalf
  // (it starts with AuditLog::OnBehalfOf(user)).
  std::optional<std::string> user;
  std::optional<std::string> resource;
  std::optional<std::int64_t> from_ms;  // inclusive
  std::optional<std::int64_t> to_ms;    // exclusive
  std::size_t limit = 100;              // 1 to kMaxAuditQuery
};

class AuditLog {
 public:
  // The migration that creates the audit table, in `engine`'s DDL; part of the KMS schema.
  static Migration Schema(int version, Database::Engine engine = Database::Engine::kSqlite);
  // The migration that lets an audit row carry the sealed request it executed (channel and
  // message), so that a retrieval's one row is both its audit and its record of execution.
  static Migration RequestSchema(int version, Database::Engine engine = Database::Engine::kSqlite);

  // INVALID_ARGUMENT if a field is too long or not text Append would store.
  static Status Validate(const AuditRecord& record);

  // Appends inside the caller's transaction; fills in seq. One chain on both engines: the head is
  // read and the record inserted inside a write transaction, which runs alone (database.h: BEGIN
  // IMMEDIATE on SQLite, the writers' advisory lock on PostgreSQL), so the writers of several
  // processes (several kmsd nodes on one PostgreSQL database) extend one chain in turn.
  static Status Append(Poco::Data::Session& session, AuditRecord& record);
  // Appends several records in order with one read of the chain's head and the connection's
  // compiled insert, re-bound per record (the group commit's path); all or none, as the caller's
  // transaction decides.
  static Status AppendAll(Poco::Data::Session& session, std::span<AuditRecord> records);

  // Walks the whole log in order, in batches, recomputing the chain.
  static Result<AuditVerdict> Verify(Database& db);

  static Result<std::vector<AuditRecord>> Query(Database& db, const AuditFilter& filter);

  static AuditHash Hash(const AuditHash& previous, const AuditRecord& record);

  // How the detail of a record of something done on behalf of `user` (by a compliance officer,
  // the record's actor) starts: `on behalf of "<user>"`, with `\` and `"` escaped by a `\`, so
  // that no other text of the detail (a clientId, say) can pass for it.
  static std::string OnBehalfOf(const std::string& user);
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_AUDIT_LOG_H_
