// Whether this kmsd can serve now: its database answers and at least one HSM token is ready. One
// check for both health answers: GET /health on the protocol listener (public: what a load
// balancer asks, the status and counts only) and GET /ops/health on the operations listener
// (the operators': every token's state and pool, the wraps a token missed).
#ifndef STRONGROOM_KMS_SERVING_HEALTH_H_
#define STRONGROOM_KMS_SERVING_HEALTH_H_

#include <cstddef>
#include <vector>

#include "strongroom/common/database.h"
#include "strongroom/common/error.h"
#include "strongroom/hsm/vault.h"

namespace strongroom::kms {

struct ServingHealth {
  Status database;                       // the database answered a query
  std::vector<hsm::TokenHealth> tokens;  // as the vault's probe last found them
  std::size_t ready = 0;                 // tokens ready

  bool serving() const { return database.ok() && ready > 0; }
  // "ok" (everything ready), "degraded" (serving, some token is not) or "unavailable".
  const char* status() const;
};

// Asks the database one query and reads the vault's token health (no PKCS#11 call: the probe's
// last finding, vault.h).
ServingHealth CheckServingHealth(hsm::Vault& vault, Database& db);

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_SERVING_HEALTH_H_
