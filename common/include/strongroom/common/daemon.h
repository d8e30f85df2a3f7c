// What Strongroom's daemons (kmsd, cored) share around their main(): exit statuses by error kind,
// the --port-file they write, and the signal set-up done before any thread starts.
#ifndef STRONGROOM_COMMON_DAEMON_H_
#define STRONGROOM_COMMON_DAEMON_H_

#include <cstdint>
#include <string>

#include "strongroom/common/error.h"

namespace strongroom {

// sysexits.h statuses: 78 configuration, 77 permission, 69 unavailable, 65 data, 70 software.
int ExitStatusFor(ErrorCode code);

// Writes "<port>\n" to `path` atomically (a temporary file renamed over it).
Status WritePortFile(const std::string& path, std::uint16_t port);

// Blocks SIGINT, SIGTERM and SIGQUIT in the calling thread (so in every thread started after it;
// Poco's waitForTerminationRequest() then receives them with sigwait), ignores SIGPIPE (a write to
// a closed connection must not kill the process), and limits glibc's malloc arenas to four (one
// per connection thread keeps freed memory in many places).
void PrepareDaemonProcess();

}  // namespace strongroom

#endif  // STRONGROOM_COMMON_DAEMON_H_
