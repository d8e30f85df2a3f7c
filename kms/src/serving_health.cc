#include "strongroom/kms/serving_health.h"

namespace strongroom::kms {

const char* ServingHealth::status() const {
  if (!serving()) return "unavailable";
  return ready == tokens.size() ? "ok" : "degraded";
}

ServingHealth CheckServingHealth(hsm::Vault& vault, Database& db) {
  ServingHealth health;
  health.database = db.Ping();
  health.tokens = vault.Health();
  for (const hsm::TokenHealth& token : health.tokens) {
    if (token.state == hsm::TokenState::kReady) ++health.ready;
  }
  return health;
}

}  // namespace strongroom::kms
