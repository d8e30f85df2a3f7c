// `kmsctl audit ...`: checking and reading the KMS's hash-chained audit log.
#ifndef STRONGROOM_KMS_TOOLS_AUDIT_COMMANDS_H_
#define STRONGROOM_KMS_TOOLS_AUDIT_COMMANDS_H_

#include <ostream>
#include <string>
#include <vector>

#include "hsm_commands.h"
#include "strongroom/common/error.h"

namespace strongroom::kms {

struct AuditOptions {
  std::string user;
  std::string resource;
  std::string from;  // RFC 3339
  std::string to;    // RFC 3339
  std::string limit;
  bool json = false;  // --json: one JSON object per record and line
};

Status RunAuditCommand(const std::vector<std::string>& args, const CtlOptions& options,
                       const AuditOptions& audit, std::ostream& out);

inline constexpr char kAuditUsage[] =
    "kmsctl [--config FILE] audit verify\n"
    "kmsctl [--config FILE] audit query [--user U] [--resource URI] [--from T] [--to T] "
    "[--limit N] [--json]\n"
    "T is RFC 3339 (2026-11-25T12:00:00Z); the database is [kms] database in FILE. Text output\n"
    "escapes control characters in every field (\\n, \\xHH); --json writes one object a line.\n";

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_TOOLS_AUDIT_COMMANDS_H_
