// What an attacker with write access to the KMS database does to its audit log (issue 11): edit a
// record, then recompute every hash of the chain, so that the bare chain verifies again.
#ifndef STRONGROOM_TESTS_SUPPORT_AUDIT_REWRITE_H_
#define STRONGROOM_TESTS_SUPPORT_AUDIT_REWRITE_H_

#include <Poco/Data/LOB.h>
#include <Poco/Data/RecordSet.h>

#include <string>
#include <vector>

#include "strongroom/common/database.h"
#include "strongroom/kms/audit_log.h"

namespace strongroom::testing {

// Sets record `seq`'s actor and rewrites the whole chain consistently, in one transaction.
inline Status RewriteAuditChain(Database& db, std::int64_t seq, const std::string& actor) {
  using Poco::Data::Keywords::now;
  using Poco::Data::Keywords::use;
  return db.InTransaction([&](Poco::Data::Session& s) -> Status {
    std::string a = actor;
    std::int64_t q = seq;
    s << "UPDATE audit SET actor = ? WHERE seq = ?", use(a), use(q), now;
    std::vector<kms::AuditRecord> all;
    Poco::Data::Statement select(s);
    select << "SELECT seq, at_ms, org, actor, action, resource, key, outcome, detail, channel, "
              "message FROM audit ORDER BY seq";
    select.execute();
    Poco::Data::RecordSet rows(select);
    for (bool row = rows.moveFirst(); row; row = rows.moveNext()) {
      all.push_back({rows["seq"].convert<std::int64_t>(), rows["at_ms"].convert<std::int64_t>(),
                     rows["org"].convert<std::string>(), rows["actor"].convert<std::string>(),
                     rows["action"].convert<std::string>(), rows["resource"].convert<std::string>(),
                     rows["key"].convert<std::string>(), rows["outcome"].convert<std::string>(),
                     rows["detail"].convert<std::string>()});
      // The request a record executed is hashed too, when it has one.
      if (!rows.isNull("message")) {
        const Poco::Data::BLOB message = rows["message"].extract<Poco::Data::BLOB>();
        all.back().channel = rows["channel"].convert<std::string>();
        all.back().message.assign(message.content().begin(), message.content().end());
      }
    }
    kms::AuditHash previous{};
    for (const kms::AuditRecord& r : all) {
      const kms::AuditHash hash = kms::AuditLog::Hash(previous, r);
      Poco::Data::BLOB prev_blob(previous.data(), previous.size());
      Poco::Data::BLOB hash_blob(hash.data(), hash.size());
      std::int64_t row_seq = r.seq;
      s << "UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", use(prev_blob), use(hash_blob),
          use(row_seq), now;
      previous = hash;
    }
    return OkStatus();
  });
}

}  // namespace strongroom::testing

#endif  // STRONGROOM_TESTS_SUPPORT_AUDIT_REWRITE_H_
