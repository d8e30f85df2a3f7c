#include "strongroom/kms/serving_health.h"

#include "strongroom/common/sql_statement.h"

namespace strongroom::kms {

const char* ServingHealth::status() const {
  if (!serving()) return "unavailable";
  return ready == tokens.size() ? "ok" : "degraded";
}

ServingHealth CheckServingHealth(hsm::Vault& vault, Database& db) {
  ServingHealth health;
  health.database = db.WithSession([](Poco::Data::Session& s) -> Status {
    SqlStatement one = Database::Prepare(s, "SELECT 1");
    if (!one.Next() || one.Int(0) != 1) return Error(ErrorCode::kInternal, "SELECT 1 failed");
    return OkStatus();
  });
  health.tokens = vault.Health();
  for (const hsm::TokenHealth& token : health.tokens) {
    if (token.state == hsm::TokenState::kReady) ++health.ready;
  }
  return health;
}

}  // namespace strongroom::kms
