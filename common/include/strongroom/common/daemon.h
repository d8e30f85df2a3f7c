// What Strongroom's daemons (kmsd, cored) share around their main(): the exit status of a failed
// start (exit_status.h), the --port-file they write, and the signal set-up done before any thread
// starts.
#ifndef STRONGROOM_COMMON_DAEMON_H_
#define STRONGROOM_COMMON_DAEMON_H_

#include <Poco/Util/ServerApplication.h>

#include <cstdint>
#include <string>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/common/exit_status.h"  // IWYU pragma: export

namespace strongroom {

// Writes "<port>\n" to `path` atomically (a temporary file renamed over it).
Status WritePortFile(const std::string& path, std::uint16_t port);

// Blocks SIGINT, SIGTERM and SIGQUIT in the calling thread (so in every thread started after it;
// Poco's waitForTerminationRequest() then receives them with sigwait), ignores SIGPIPE (a write to
// a closed connection must not kill the process), raises the soft limit of open files to the hard
// one (idle connections are descriptors), and limits glibc's malloc arenas to four (one per
// connection thread keeps freed memory in many places).
void PrepareDaemonProcess();

// A Strongroom daemon's command line and exit: `<name> [--config FILE] [--port-file PATH]`,
// --help, FILE from $<config_env> and then `default_config` when not given, one "<name>: error:
// ..." line and ExitStatusFor() when Serve() fails. Serve() runs the daemon: it starts serving,
// writes the port file, calls waitForTerminationRequest() and stops.
class DaemonApplication : public Poco::Util::ServerApplication {
 public:
  struct Identity {
    std::string name;            // "kmsd"
    std::string description;     // for --help
    std::string config_env;      // "STRONGROOM_KMS_CONFIG"
    std::string default_config;  // "/etc/strongroom/kms.ini"
  };
  explicit DaemonApplication(Identity identity) : identity_(std::move(identity)) {}

 protected:
  virtual Status Serve(const std::string& config_path, const std::string& port_file) = 0;
  // One line on stderr, prefixed with the daemon's name; never a secret.
  void Log(const std::string& line) const;

  void defineOptions(Poco::Util::OptionSet& options) override;
  void handleOption(const std::string& name, const std::string& value) override;
  int main(const std::vector<std::string>& args) override;

 private:
  const Identity identity_;
  bool help_ = false;
  std::string config_path_;
  std::string port_file_;
};

// Runs `app` (app.run()); a Poco exception that escapes is one error line and EX_SOFTWARE.
int RunDaemon(DaemonApplication& app, int argc, char** argv);

// A daemon's main(): PrepareDaemonProcess() before anything can start a thread, then `App` (a
// DaemonApplication) is made and run with RunDaemon.
template <typename App>
int DaemonMain(int argc, char** argv) {
  PrepareDaemonProcess();
  App app;
  return RunDaemon(app, argc, argv);
}

}  // namespace strongroom

#endif  // STRONGROOM_COMMON_DAEMON_H_
