#include "strongroom/common/daemon.h"

#include <Poco/Exception.h>
#include <Poco/Util/HelpFormatter.h>
#include <Poco/Util/Option.h>
#include <Poco/Util/OptionSet.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>

namespace strongroom {

// A daemon's own usage error (Poco's EXIT_USAGE) exits as INVALID_ARGUMENT does (exit_status.h).
static_assert(Poco::Util::Application::EXIT_USAGE == EX_USAGE &&
              Poco::Util::Application::EXIT_OK == EX_OK);

Status WritePortFile(const std::string& path, std::uint16_t port) {
  const std::string temporary = path + ".tmp";
  const std::string text = std::to_string(port) + "\n";
  int fd = open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  bool ok = fd >= 0 && write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  if (fd >= 0) ok = close(fd) == 0 && ok;
  if (!ok || std::rename(temporary.c_str(), path.c_str()) != 0) {
    return Error(ErrorCode::kUnavailable,
                 "cannot write the port file " + path + ": " + std::strerror(errno));
  }
  return OkStatus();
}

void PrepareDaemonProcess() {
  mallopt(M_ARENA_MAX, 4);
  sigset_t termination;
  sigemptyset(&termination);
  sigaddset(&termination, SIGINT);
  sigaddset(&termination, SIGTERM);
  sigaddset(&termination, SIGQUIT);
  pthread_sigmask(SIG_BLOCK, &termination, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // Every open connection is a descriptor, idle ones included (the listeners keep thousands open
  // without a thread each): the soft limit is raised to the hard one.
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
}

void DaemonApplication::Log(const std::string& line) const {
  std::cerr << identity_.name << ": " << line << std::endl;
}

void DaemonApplication::defineOptions(Poco::Util::OptionSet& options) {
  Poco::Util::ServerApplication::defineOptions(options);
  using Poco::Util::Option;
  options.addOption(Option("help", "h", "show usage").required(false).repeatable(false));
  options.addOption(Option("config", "c", "configuration file (INI)")
                        .required(false)
                        .repeatable(false)
                        .argument("FILE"));
  options.addOption(Option("port-file", "", "write the bound port to this file")
                        .required(false)
                        .repeatable(false)
                        .argument("PATH"));
}

void DaemonApplication::handleOption(const std::string& name, const std::string& value) {
  Poco::Util::ServerApplication::handleOption(name, value);
  if (name == "help") {
    help_ = true;
    stopOptionsProcessing();
  }
  if (name == "config") config_path_ = value;
  if (name == "port-file") port_file_ = value;
}

int DaemonApplication::main(const std::vector<std::string>& args) {
  if (help_) {
    Poco::Util::HelpFormatter help(options());
    help.setCommand(commandName());
    help.setUsage("[--config FILE] [--port-file PATH]");
    help.setHeader(identity_.description + " FILE defaults to $" + identity_.config_env +
                   ", then " + identity_.default_config + ".");
    help.format(std::cout);
    return EXIT_OK;
  }
  if (!args.empty()) {
    Log("error: unexpected argument '" + args[0] + "' (" + identity_.name + " --help)");
    return EXIT_USAGE;
  }
  if (config_path_.empty()) {
    const char* env = std::getenv(identity_.config_env.c_str());
    config_path_ = env != nullptr && *env != '\0' ? env : identity_.default_config;
  }
  Status status = Serve(config_path_, port_file_);
  if (!status.ok()) {
    Log("error: " + status.error().message());
    return ExitStatusFor(status.error().code());
  }
  return EXIT_OK;
}

int RunDaemon(DaemonApplication& app, int argc, char** argv) {
  try {
    return app.run(argc, argv);
  } catch (const Poco::Exception& e) {
    std::cerr << app.commandName() << ": error: " << e.displayText() << "\n";
    return EX_SOFTWARE;
  }
}

}  // namespace strongroom
