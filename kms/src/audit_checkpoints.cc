#include "strongroom/kms/audit_checkpoints.h"

#include <Poco/JSON/Object.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <sstream>

#include "strongroom/common/strict_json.h"

namespace strongroom::kms {
namespace {

constexpr std::int64_t kVerifyBatch = 1000;

std::string ToJson(const Poco::JSON::Object& object) {
  std::ostringstream out;
  object.stringify(out);
  return out.str();
}

std::span<const std::uint8_t> AsBytes(const std::string& text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

// The chain's head: the last record's number and hash (0 for an empty log).
Status ReadHead(Poco::Data::Session& session, std::int64_t& seq, AuditHash& hash) {
  SqlStatement head =
      Database::Prepare(session, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1");
  seq = 0;
  if (!head.Next()) return OkStatus();
  const std::span<const std::uint8_t> bytes = head.Blob(1);
  if (bytes.size() != hash.size()) {
    return Error(ErrorCode::kDataLoss, "the audit log's last record has a malformed hash");
  }
  seq = head.Int(0);
  std::memcpy(hash.data(), bytes.data(), hash.size());
  return OkStatus();
}

Result<AuditCheckpoint> OpenWith(const std::string& jws, const jose::PublicJwk& jwk,
                                 const std::string& kid) {
  const std::string_view ps256[] = {"PS256"};
  Result<jose::VerifiedJws> verified = jose::VerifyJws(jws, jwk, ps256);
  if (!verified.ok()) {
    return Error(ErrorCode::kDataLoss,
                 "checkpoint signature does not verify with the identity "
                 "key (" +
                     verified.error().message() + ")");
  }
  const jose::JoseHeader& header = verified->header();
  if (header.typ != kAuditCheckpointType) {
    return Error(ErrorCode::kDataLoss, "a JWS signed by the identity key that is no checkpoint");
  }
  if (header.kid != kid) {
    return Error(ErrorCode::kDataLoss, "checkpoint names another key than the identity key");
  }
  Result<Poco::JSON::Object::Ptr> payload = ParseStrictJsonObject(verified->payload());
  if (!payload.ok()) return Error(ErrorCode::kDataLoss, "checkpoint payload is not JSON");
  const Poco::JSON::Object& p = **payload;
  const bool well_formed = p.size() == 4 && p.has("kms") && p.get("kms").isString() &&
                           p.has("seq") && p.get("seq").isInteger() && p.has("head") &&
                           p.get("head").isString() && p.has("signedAt") &&
                           p.get("signedAt").isInteger();
  if (!well_formed) return Error(ErrorCode::kDataLoss, "checkpoint payload is malformed");
  AuditCheckpoint checkpoint;
  checkpoint.kms = p.getValue<std::string>("kms");
  checkpoint.seq = p.getValue<std::int64_t>("seq");
  checkpoint.signed_ms = p.getValue<std::int64_t>("signedAt");
  Result<std::vector<std::uint8_t>> head = jose::Base64UrlDecode(p.getValue<std::string>("head"));
  if (!head.ok() || head->size() != checkpoint.head.size() || checkpoint.seq < 1) {
    return Error(ErrorCode::kDataLoss, "checkpoint payload is malformed");
  }
  std::memcpy(checkpoint.head.data(), head->data(), checkpoint.head.size());
  return checkpoint;
}

Result<jose::PublicJwk> Jwk(const hsm::RsaPublicKey& key) {
  return jose::PublicJwk::FromRsa(key.modulus, key.public_exponent);
}

}  // namespace

Migration AuditCheckpoints::Schema(int version, Database::Engine engine) {
  return {version,
          "signed checkpoints of the audit chain",
          {engine == Database::Engine::kPostgres
               ? "CREATE TABLE audit_checkpoints (seq BIGINT PRIMARY KEY, "
                 "signed_ms BIGINT NOT NULL, jws TEXT NOT NULL)"
               : "CREATE TABLE audit_checkpoints (seq INTEGER PRIMARY KEY, "
                 "signed_ms INTEGER NOT NULL, jws TEXT NOT NULL)"}};
}

std::string AuditCheckpoints::Thumbprint(const hsm::RsaPublicKey& key) {
  // RFC 7638: the required members in lexicographic order, no white space.
  const std::string members = "{\"e\":\"" + jose::Base64UrlEncode(key.public_exponent) +
                              "\",\"kty\":\"RSA\",\"n\":\"" + jose::Base64UrlEncode(key.modulus) +
                              "\"}";
  std::uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(members.data()), members.size(), digest);
  return jose::Base64UrlEncode(std::span<const std::uint8_t>(digest, sizeof digest));
}

Result<std::optional<AuditCheckpoint>> AuditCheckpoints::SignHead(Database& db,
                                                                  const std::string& kms,
                                                                  const std::string& kid,
                                                                  const jose::JwsSigner& sign,
                                                                  std::int64_t now_ms) {
  AuditCheckpoint checkpoint;
  std::int64_t last = 0;
  SR_RETURN_IF_ERROR(db.WithSession([&](Poco::Data::Session& s) -> Status {
    return ReadHead(s, checkpoint.seq, checkpoint.head);
  }));
  SR_ASSIGN_OR_RETURN(last, LastSeq(db));
  if (checkpoint.seq == 0 || checkpoint.seq <= last) return std::optional<AuditCheckpoint>();
  checkpoint.signed_ms = now_ms;
  checkpoint.kms = kms;

  Poco::JSON::Object header;
  header.set("alg", "PS256");
  header.set("typ", kAuditCheckpointType);
  header.set("kid", kid);
  Poco::JSON::Object payload;
  payload.set("kms", kms);
  payload.set("seq", checkpoint.seq);
  payload.set("head", jose::Base64UrlEncode(checkpoint.head));
  payload.set("signedAt", checkpoint.signed_ms);
  const std::string payload_json = ToJson(payload);
  SR_ASSIGN_OR_RETURN(std::string jws,
                      jose::SignJwsWith(ToJson(header), AsBytes(payload_json), sign));
  SR_RETURN_IF_ERROR(db.InTransaction(
      [&](Poco::Data::Session& s) -> Status {
        Database::Prepare(s,
                          "INSERT INTO audit_checkpoints (seq, signed_ms, jws) VALUES (?, ?, ?) "
                          "ON CONFLICT DO NOTHING")
            .Bind(checkpoint.seq)
            .Bind(checkpoint.signed_ms)
            .Bind(jws)
            .Run();
        return OkStatus();
      },
      Database::Durability::kDeferred));
  return std::optional<AuditCheckpoint>(checkpoint);
}

Result<std::int64_t> AuditCheckpoints::LastSeq(Database& db) {
  std::int64_t last = 0;
  SR_RETURN_IF_ERROR(db.WithSession([&](Poco::Data::Session& s) -> Status {
    SqlStatement select =
        Database::Prepare(s, "SELECT seq FROM audit_checkpoints ORDER BY seq DESC LIMIT 1");
    if (select.Next()) last = select.Int(0);
    return OkStatus();
  }));
  return last;
}

Result<std::int64_t> AuditCheckpoints::Unsigned(Database& db) {
  std::int64_t head = 0;
  AuditHash ignored;
  SR_RETURN_IF_ERROR(
      db.WithSession([&](Poco::Data::Session& s) -> Status { return ReadHead(s, head, ignored); }));
  SR_ASSIGN_OR_RETURN(std::int64_t last, LastSeq(db));
  return std::max<std::int64_t>(0, head - last);
}

Result<AuditCheckpoint> AuditCheckpoints::Open(const std::string& jws,
                                               const hsm::RsaPublicKey& key) {
  SR_ASSIGN_OR_RETURN(jose::PublicJwk jwk, Jwk(key));
  return OpenWith(jws, jwk, Thumbprint(key));
}

Result<CheckpointVerdict> AuditCheckpoints::Verify(Database& db, const hsm::RsaPublicKey* key,
                                                   const std::string& kms) {
  if (key == nullptr) return Verify(db, std::vector<hsm::RsaPublicKey>(), kms);
  return Verify(db, std::vector<hsm::RsaPublicKey>{*key}, kms);
}

Result<CheckpointVerdict> AuditCheckpoints::Verify(Database& db,
                                                   const std::vector<hsm::RsaPublicKey>& keys,
                                                   const std::string& kms, bool keys_incomplete) {
  CheckpointVerdict verdict;
  SR_ASSIGN_OR_RETURN(verdict.chain, AuditLog::Verify(db));
  if (!verdict.chain.ok()) return verdict;
  const std::int64_t records = verdict.chain.records;
  std::map<std::string, jose::PublicJwk> jwks;  // by thumbprint, the checkpoints' kid
  for (const hsm::RsaPublicKey& key : keys) {
    SR_ASSIGN_OR_RETURN(jose::PublicJwk jwk, Jwk(key));
    jwks.emplace(Thumbprint(key), std::move(jwk));
  }
  auto fail = [&](std::int64_t seq, std::string problem) {
    verdict.bad_checkpoint = seq;
    verdict.problem = "checkpoint at record " + std::to_string(seq) + ": " + std::move(problem);
  };

  // Checkpoints in order of their record, with the chain's hash of that record (walked above:
  // the stored hash is the recomputed one), in batches.
  std::int64_t after = INT64_MIN;
  for (bool more = true; more && verdict.problem.empty();) {
    struct Row {
      std::int64_t seq;
      std::string jws;
      std::optional<AuditHash> hash;
    };
    std::vector<Row> rows;
    SR_RETURN_IF_ERROR(db.WithSession([&](Poco::Data::Session& s) -> Status {
      SqlStatement select = Database::Prepare(
          s,
          "SELECT c.seq, c.jws, a.hash FROM audit_checkpoints c "
          "LEFT JOIN audit a ON a.seq = c.seq WHERE c.seq > ? ORDER BY c.seq LIMIT ?");
      select.Bind(after).Bind(kVerifyBatch);
      while (select.Next()) {
        Row r{select.Int(0), select.Text(1), {}};
        if (!select.IsNull(2)) {
          const std::span<const std::uint8_t> hash = select.Blob(2);
          if (hash.size() == AuditHash{}.size()) {
            r.hash.emplace();
            std::memcpy(r.hash->data(), hash.data(), r.hash->size());
          }
        }
        rows.push_back(std::move(r));
      }
      more = rows.size() == static_cast<std::size_t>(kVerifyBatch);
      return OkStatus();
    }));
    for (const Row& row : rows) {
      after = row.seq;
      if (row.seq > records) {
        // Signed after the walk above (kmsd is running): nothing to compare it with yet. A
        // checkpoint whose record is gone means the log was cut back.
        if (row.hash) continue;
        fail(row.seq, "the log ends at record " + std::to_string(records) +
                          ": records after it were removed");
        break;
      }
      if (jwks.empty()) {
        ++verdict.unverifiable;
        continue;
      }
      // The key named by the kid (untrusted until its signature verifies). A kid that names none
      // is checked against the first key, so that a foreign checkpoint fails as naming another.
      Result<jose::JoseHeader> header = jose::PeekHeader(row.jws);
      auto named = header.ok() && header->kid ? jwks.find(*header->kid) : jwks.end();
      if (named == jwks.end() && keys_incomplete) {
        ++verdict.unverifiable;
        continue;
      }
      if (named == jwks.end()) named = jwks.begin();
      Result<AuditCheckpoint> checkpoint = OpenWith(row.jws, named->second, named->first);
      if (!checkpoint.ok()) {
        fail(row.seq, checkpoint.error().message());
        break;
      }
      if (checkpoint->seq != row.seq) {
        fail(row.seq, "the row holds the checkpoint of record " + std::to_string(checkpoint->seq));
        break;
      }
      if (!kms.empty() && checkpoint->kms != kms) {
        fail(row.seq, "signed for " + checkpoint->kms + ", not " + kms);
        break;
      }
      if (!row.hash || *row.hash != checkpoint->head) {
        fail(row.seq, "the chain's hash differs from the signed head (the log was rewritten)");
        break;
      }
      ++verdict.checkpoints;
      verdict.last = *checkpoint;
    }
  }
  if (!verdict.problem.empty()) return verdict;
  verdict.unsigned_records = records - (verdict.last ? verdict.last->seq : 0);
  if (verdict.unverifiable == 0 && verdict.unsigned_records > kMaxUncheckpointedRecords) {
    verdict.problem = std::to_string(verdict.unsigned_records) + " records " +
                      (verdict.last ? "after the last signed checkpoint (record " +
                                          std::to_string(verdict.last->seq) + ")"
                                    : std::string("without any signed checkpoint")) +
                      ", more than the " + std::to_string(kMaxUncheckpointedRecords) +
                      " kmsd leaves unsigned: checkpoints were removed, or kmsd could not sign "
                      "them (its log says so)";
  }
  return verdict;
}

}  // namespace strongroom::kms
