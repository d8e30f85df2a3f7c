// Signed checkpoints of the audit log's hash chain (audit_log.h).
//
// The chain alone is unkeyed: whoever can write the database can rewrite every record and
// recompute every hash, and the result verifies. A checkpoint is the chain's head at one record,
// signed in the HSM by the KMS's identity key, so such a rewrite also needs the HSM:
//
//   compact JWS, PS256, protected header {"alg":"PS256","typ":kAuditCheckpointType,"kid":T}
//   payload {"kms":"kms://<host>","seq":N,"head":BASE64URL(hash(N)),"signedAt":ms}
//
// where T is the RFC 7638 thumbprint of the identity key (base64url of SHA-256 of
// {"e":..,"kty":"RSA","n":..}) and hash(N) is the chain's hash of record N. The "typ" keeps a
// checkpoint apart from every other JWS the identity key signs (the KMS protocol's answers carry
// no "typ"). Checkpoints are rows of audit_checkpoints (seq, signed_ms, jws); kmsd's
// AuditCheckpointer (audit_checkpointer.h) makes them.
//
// What Verify proves, given the identity key from the HSM: every checkpoint is signed by that key,
// and every record up to the newest checkpoint is exactly as it was when that checkpoint was
// signed (the chain ties each record to the signed head). What it cannot prove: anything about
// the records after the newest checkpoint (the unsigned tail), nor that no newer checkpoints and
// records were cut off together. The tail is reported, and more than kMaxUncheckpointedRecords
// in it fails verification: kmsd never leaves that many unsigned while it can reach the HSM, so
// such a tail means removed checkpoints (or a KMS that could not sign; its log says so).
//
// On both engines (database.h: SQLite, PostgreSQL): Schema names the table in each one's types.
#ifndef STRONGROOM_KMS_AUDIT_CHECKPOINTS_H_
#define STRONGROOM_KMS_AUDIT_CHECKPOINTS_H_

#include <Poco/Data/Session.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "strongroom/common/database.h"
#include "strongroom/common/error.h"
#include "strongroom/common/jose.h"
#include "strongroom/hsm/token.h"
#include "strongroom/kms/audit_log.h"

namespace strongroom::kms {

inline constexpr char kAuditCheckpointType[] = "strongroom-audit-checkpoint+jws";
// kmsd signs a checkpoint once this many records follow the last one, ...
inline constexpr std::int64_t kAuditCheckpointRecords = 1000;
// ... or this long after the last one when any record does, and at a clean shutdown.
inline constexpr std::chrono::milliseconds kAuditCheckpointInterval{60'000};
// Verification fails when more records than this follow the newest checkpoint (or, without
// checkpoints, when the log is longer): kAuditCheckpointRecords, plus a full group-commit batch
// and the records committed while one signature is made, with room to spare.
inline constexpr std::int64_t kMaxUncheckpointedRecords = 4096;

struct AuditCheckpoint {
  std::int64_t seq = 0;  // the record whose chain hash is signed
  AuditHash head{};
  std::int64_t signed_ms = 0;
  std::string kms;  // kms://<host> of the KMS that signed it
};

struct CheckpointVerdict {
  AuditVerdict chain;                          // the chain walk (AuditLog::Verify)
  std::int64_t checkpoints = 0;                // checkpoints checked: signature and head
  std::int64_t unverifiable = 0;               // checkpoints found but not checked (no key given)
  std::optional<AuditCheckpoint> last;         // the newest checked checkpoint
  std::int64_t unsigned_records = 0;           // records after `last` (all of them without one)
  std::optional<std::int64_t> bad_checkpoint;  // the first checkpoint that fails, if any
  std::string problem;                         // what is wrong (checkpoints or tail)
  bool ok() const { return chain.ok() && problem.empty(); }
};

class AuditCheckpoints {
 public:
  // The migration that creates the checkpoints table, in `engine`'s types; part of the KMS schema.
  static Migration Schema(int version, Database::Engine engine = Database::Engine::kSqlite);

  // RFC 7638 thumbprint of an RSA public key, base64url: the checkpoints' "kid".
  static std::string Thumbprint(const hsm::RsaPublicKey& key);

  // Signs the chain's current head with `sign` (PS256 over the JWS signing input) and stores the
  // checkpoint, unless the head is already checkpointed or the log is empty (nullopt then).
  // Another node signing the same head at the same time is harmless: the first row stays.
  static Result<std::optional<AuditCheckpoint>> SignHead(Database& db, const std::string& kms,
                                                         const std::string& kid,
                                                         const jose::JwsSigner& sign,
                                                         std::int64_t now_ms);

  // The newest stored checkpoint's record number (0 without one); its signature is not checked.
  static Result<std::int64_t> LastSeq(Database& db);
  // How many records follow the newest stored checkpoint (two reads by key; for the job's polls).
  static Result<std::int64_t> Unsigned(Database& db);

  // Walks the chain (AuditLog::Verify), then checks every checkpoint against `key`: signed by it
  // (typ, kid and PS256 signature), and its head equal to the chain's hash of its record. When
  // `kms` is not empty, a checkpoint must also name that KMS. Fails (problem set) on a bad or
  // foreign checkpoint, a checkpoint whose record is gone, or an unsigned tail longer than
  // kMaxUncheckpointedRecords. Without a key, checkpoints are only counted (`unverifiable`): the
  // verdict then proves nothing about them, and the caller must not call the log intact.
  static Result<CheckpointVerdict> Verify(Database& db, const hsm::RsaPublicKey* key,
                                          const std::string& kms = {});
  // The same with every token's identity key (the identity in service signs, and it changes when
  // a token fails; kms_identities.h): each checkpoint is checked against the key its kid names. A
  // checkpoint whose kid names none of them fails, unless `keys_incomplete` (a token's key could
  // not be read): then it is counted `unverifiable`, since that token's key may have signed it.
  static Result<CheckpointVerdict> Verify(Database& db, const std::vector<hsm::RsaPublicKey>& keys,
                                          const std::string& kms = {},
                                          bool keys_incomplete = false);

  // Checks one checkpoint JWS against `key` and returns what it signs.
  static Result<AuditCheckpoint> Open(const std::string& jws, const hsm::RsaPublicKey& key);
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_AUDIT_CHECKPOINTS_H_
