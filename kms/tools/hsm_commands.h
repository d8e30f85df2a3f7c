// `kmsctl hsm ...`: the operator commands for tokens and root keys.
#ifndef STRONGROOM_KMS_TOOLS_HSM_COMMANDS_H_
#define STRONGROOM_KMS_TOOLS_HSM_COMMANDS_H_

#include <ostream>
#include <string>
#include <vector>

#include "strongroom/common/error.h"

namespace strongroom::kms {

struct CtlOptions {
  std::string config_path;
  std::string org;
  std::string module;
  std::string label;
  std::string pin_source;
  std::string so_pin_source;
  // certify-identity
  std::string ca_cert;
  std::string ca_key;
  std::string host;
  std::string out;
  std::string days;
  std::string token;  // init-identity, certify-identity: only this token
};

// Runs `hsm <args...>`; writes results to `out`. Returns the error for the caller to print as one
// line.
Status RunHsmCommand(const std::vector<std::string>& args, const CtlOptions& options,
                     std::ostream& out);

inline constexpr char kHsmUsage[] =
    "kmsctl [--config FILE] hsm slots [--module PATH]\n"
    "kmsctl [--config FILE] hsm init-token --module PATH --label LABEL --so-pin-source SRC "
    "--pin-source SRC\n"
    "kmsctl [--config FILE] hsm init-root --org ORG\n"
    "kmsctl [--config FILE] hsm roots --org ORG   (with [kms] database: the keys under each "
    "version)\n"
    "kmsctl [--config FILE] hsm rotate-root --org ORG\n"
    "kmsctl [--config FILE] hsm check\n"
    "kmsctl [--config FILE] hsm init-identity [--token NAME]   (the KMS's RSA key, in every "
    "token that lacks one)\n"
    "kmsctl [--config FILE] hsm certify-identity --ca-cert CA.pem --ca-key CA.key --host HOST "
    "--out CHAIN.pem [--days N] [--token NAME]\n"
    "\n"
    "PIN sources are file:<absolute path> or env:<VARIABLE>; PINs are never taken as arguments.\n"
    "FILE defaults to $STRONGROOM_KMS_CONFIG, then /etc/strongroom/kms.ini.\n";

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_TOOLS_HSM_COMMANDS_H_
