// `kmsctl ops ...`: the front end of a running kmsd's operations listener (ops_server.h).
#ifndef STRONGROOM_KMS_TOOLS_OPS_COMMANDS_H_
#define STRONGROOM_KMS_TOOLS_OPS_COMMANDS_H_

#include <chrono>
#include <ostream>
#include <string>
#include <vector>

#include "hsm_commands.h"
#include "strongroom/common/error.h"

namespace strongroom::kms {

struct OpsOptions {
  std::string url;         // https://HOST:PORT; default from [ops] listen
  std::string ca;          // PEM trust anchors; default [ops] tls_cert (pinning the server's own)
  std::string token_file;  // default [ops] token_file
  std::string file;        // policy set: the policy JSON
  std::string operator_name;  // sent as X-Strongroom-Operator, for the audit log
  bool wait = false;          // rewrap, reconcile: print progress until the job ends
  std::chrono::milliseconds interval{1000};
};

Status RunOpsCommand(const std::vector<std::string>& args, const CtlOptions& options,
                     const OpsOptions& ops, std::ostream& out);

inline constexpr char kOpsUsage[] =
    "kmsctl [--config FILE] ops health\n"
    "kmsctl [--config FILE] ops metrics\n"
    "kmsctl [--config FILE] ops policy get ORG\n"
    "kmsctl [--config FILE] ops policy set ORG --file POLICY.json\n"
    "kmsctl [--config FILE] ops rotate-root ORG\n"
    "kmsctl [--config FILE] ops rewrap ORG [--wait]\n"
    "kmsctl [--config FILE] ops rotate-search-key --org ORG\n"
    "kmsctl [--config FILE] ops reconcile [start] [--wait]\n"
    "  options: --url https://HOST:PORT --ca CA.pem --token-file F [--operator NAME]\n"
    "  (defaults from [ops] listen, tls_cert and token_file in FILE)\n";

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_TOOLS_OPS_COMMANDS_H_
