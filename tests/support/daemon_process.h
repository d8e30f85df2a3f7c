// A daemon under test: a real binary started as a child process with its configuration and
// --port-file, its stdout and stderr appended to a log file, waited for until it has written the
// port it bound (listen = 127.0.0.1:0) and a readiness probe of the caller's says it serves, and
// stopped with the signal the test chooses (SIGTERM for a graceful stop, SIGKILL for a crash).
//
//   DaemonProcess cored;
//   ASSERT_TRUE(cored.Start({CORED_PATH, {"--config", ini}, {}, log, port_file},
//                           [](std::uint16_t port) { return HealthAnswers(port); }))
//       << cored.error();
//   ...
//   EXPECT_EQ(cored.Stop(SIGTERM), 0);
//
// Waits are bounded (Options::start_timeout) and fail with a message naming the binary and the
// tail of its log; nothing is timed. The destructor SIGKILLs a daemon still running.
#ifndef STRONGROOM_TESTS_SUPPORT_DAEMON_PROCESS_H_
#define STRONGROOM_TESTS_SUPPORT_DAEMON_PROCESS_H_

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

extern char** environ;

namespace strongroom::testing {

class DaemonProcess {
 public:
  struct Options {
    std::string binary;
    std::vector<std::string> args;                         // without --port-file, which Start adds
    std::vector<std::pair<std::string, std::string>> env;  // added to (or replacing) ours
    std::string log_path;                                  // stdout and stderr, appended
    std::string port_file;  // passed as --port-file; removed before the start
    std::chrono::seconds start_timeout{60};
  };
  // Given the bound port: true once the daemon serves.
  using Ready = std::function<bool(std::uint16_t port)>;

  DaemonProcess() = default;
  ~DaemonProcess() { Stop(SIGKILL); }
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  // Starts the daemon and waits until its port file holds "<port>\n" and `ready` (if any) is true.
  // False when it exits first or the wait runs out (see error(); the process is killed then).
  bool Start(const Options& options, const Ready& ready = {}) {
    Stop(SIGKILL);
    error_.clear();
    options_ = options;
    std::error_code ignored;
    std::filesystem::remove(options.port_file, ignored);
    if (!Spawn()) return false;
    const auto deadline = std::chrono::steady_clock::now() + options.start_timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        error_ =
            options.binary + " exited during start-up (" + Describe(status) + "): " + LogTail();
        return false;
      }
      const std::string bound = ReadAll(options.port_file);
      if (!bound.empty() && bound.back() == '\n') {
        port_ = static_cast<std::uint16_t>(std::stoul(bound));
        if (!ready || ready(port_)) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    error_ = options.binary + " did not serve within " +
             std::to_string(options.start_timeout.count()) + " s: " + LogTail();
    Stop(SIGKILL);
    return false;
  }

  // Sends `signal_number` and waits (at most `patience`) for the exit; returns the exit status,
  // -signal when a signal ended it, or 0 when nothing runs. A daemon still running after
  // `patience` is killed with SIGKILL, and kStopTimedOut is returned (see error()).
  static constexpr int kStopTimedOut = -1000;
  int Stop(int signal_number = SIGTERM, std::chrono::seconds patience = std::chrono::seconds(60)) {
    if (pid_ <= 0) return 0;
    kill(pid_, signal_number);
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + patience;
    for (;;) {
      const pid_t done = waitpid(pid_, &status, WNOHANG);
      if (done == pid_ || (done < 0 && errno != EINTR)) break;
      if (std::chrono::steady_clock::now() >= deadline) {
        error_ = options_.binary + " did not exit within " + std::to_string(patience.count()) +
                 " s of signal " + std::to_string(signal_number) + ": " + LogTail();
        kill(pid_, SIGKILL);
        while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        pid_ = -1;
        return kStopTimedOut;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  }

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  std::uint16_t port() const { return port_; }
  const std::string& error() const { return error_; }
  std::string log() const { return ReadAll(options_.log_path); }

  // The last `bytes` of the log, for failure messages.
  std::string LogTail(std::size_t bytes = 2000) const {
    const std::string text = log();
    return text.size() <= bytes ? text : "..." + text.substr(text.size() - bytes);
  }

 private:
  static std::string ReadAll(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
  }

  static std::string Describe(int status) {
    if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
    return "status " + std::to_string(status);
  }

  bool Spawn() {
    std::vector<std::string> argv_text = {options_.binary};
    argv_text.insert(argv_text.end(), options_.args.begin(), options_.args.end());
    argv_text.push_back("--port-file");
    argv_text.push_back(options_.port_file);
    std::vector<char*> argv;
    for (std::string& arg : argv_text) argv.push_back(arg.data());
    argv.push_back(nullptr);

    std::vector<std::string> env_text;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string entry = *e;
      bool replaced = false;
      for (const auto& [name, value] : options_.env) {
        replaced = replaced || entry.rfind(name + "=", 0) == 0;
      }
      if (!replaced) env_text.push_back(entry);
    }
    for (const auto& [name, value] : options_.env) env_text.push_back(name + "=" + value);
    std::vector<char*> envp;
    for (std::string& entry : env_text) envp.push_back(entry.data());
    envp.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, options_.log_path.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    // The child starts with default signal dispositions and nothing blocked, whatever the test
    // did to its own (SIGPIPE ignored, for one).
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    for (int number : {SIGPIPE, SIGINT, SIGTERM, SIGQUIT, SIGHUP}) sigaddset(&defaults, number);
    posix_spawnattr_setsigmask(&attributes, &none);
    posix_spawnattr_setsigdefault(&attributes, &defaults);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    const int failed = posix_spawn(&pid_, options_.binary.c_str(), &actions, &attributes,
                                   argv.data(), envp.data());
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    if (failed != 0) {
      pid_ = -1;
      error_ = "cannot start " + options_.binary + ": " + std::strerror(failed);
      return false;
    }
    return true;
  }

  Options options_;
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  std::string error_;
};

}  // namespace strongroom::testing

#endif  // STRONGROOM_TESTS_SUPPORT_DAEMON_PROCESS_H_
