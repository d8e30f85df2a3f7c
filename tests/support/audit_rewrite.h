// What an attacker with write access to the KMS database does to its audit log (issue 11): edit a
// record, then recompute every hash of the chain, so that the bare chain verifies again.
#ifndef STRONGROOM_TESTS_SUPPORT_AUDIT_REWRITE_H_
#define STRONGROOM_TESTS_SUPPORT_AUDIT_REWRITE_H_

#include <string>
#include <vector>

#include "strongroom/common/database.h"
#include "strongroom/kms/audit_log.h"

namespace strongroom::testing {

// Sets record `seq`'s actor and rewrites the whole chain consistently, in one transaction (on
// either engine).
inline Status RewriteAuditChain(Database& db, std::int64_t seq, const std::string& actor) {
  return db.InTransaction([&](Poco::Data::Session& s) -> Status {
    Database::Prepare(s, "UPDATE audit SET actor = ? WHERE seq = ?").Bind(actor).Bind(seq).Run();
    std::vector<kms::AuditRecord> all;
    {
      SqlStatement select = Database::Prepare(
          s,
          "SELECT seq, at_ms, org, actor, action, resource, key, outcome, detail, channel, "
          "message FROM audit ORDER BY seq");
      while (select.Next()) {
        all.push_back({select.Int(0), select.Int(1), select.Text(2), select.Text(3), select.Text(4),
                       select.Text(5), select.Text(6), select.Text(7), select.Text(8)});
        // The request a record executed is hashed too, when it has one.
        if (!select.IsNull(10)) {
          const std::span<const std::uint8_t> message = select.Blob(10);
          all.back().channel = select.Text(9);
          all.back().message.assign(message.begin(), message.end());
        }
      }
    }
    kms::AuditHash previous{};
    for (const kms::AuditRecord& r : all) {
      const kms::AuditHash hash = kms::AuditLog::Hash(previous, r);
      Database::Prepare(s, "UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?")
          .BindBlob(previous)
          .BindBlob(hash)
          .Bind(r.seq)
          .Run();
      previous = hash;
    }
    return OkStatus();
  });
}

}  // namespace strongroom::testing

#endif  // STRONGROOM_TESTS_SUPPORT_AUDIT_REWRITE_H_
