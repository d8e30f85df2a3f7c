// HAProxy in front of daemons under test, run with the deployment's own configuration
// (deploy/haproxy/strongroom.cfg) with only its addresses made local; and what that needs: a free
// port on 127.0.0.1 for a listener that cannot report the one it bound, and a foreign process
// (haproxy) kept for the test's length.
#ifndef STRONGROOM_TESTS_SUPPORT_HAPROXY_FRONT_H_
#define STRONGROOM_TESTS_SUPPORT_HAPROXY_FRONT_H_

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace strongroom::testing {

// A free TCP port on 127.0.0.1 (bound, read, closed); 0 when none could be had.
inline std::uint16_t FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    if (fd >= 0) ::close(fd);
    return 0;
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

// The example configuration with its addresses made local: each frontend binds 127.0.0.1:<port>
// of `binds`, each backend's servers go to `servers` (in order, named <backend><n>; the first
// server line's options stand for each), the CA file is the tests' and the public names are that
// of the tests' certificate (localhost).
inline std::string LocalHaproxyConfig(
    const std::string& example, const std::map<std::string, std::uint16_t>& binds,
    const std::map<std::string, std::vector<std::uint16_t>>& servers, const std::string& ca_file) {
  const std::vector<std::pair<std::string, std::string>> renames = {
      {"/etc/strongroom/tls/ca.pem", ca_file},
      {"kms.example.com", "localhost"},
      {"core.example.com", "localhost"}};
  std::istringstream in(example);
  std::ostringstream out;
  std::string line, section;
  std::set<std::string> written;
  while (std::getline(in, line)) {
    const std::string trimmed = line.substr(std::min(line.find_first_not_of(' '), line.size()));
    if (trimmed.rfind("frontend ", 0) == 0 || trimmed.rfind("backend ", 0) == 0) {
      section = trimmed.substr(trimmed.find(' ') + 1);
    }
    if (trimmed.rfind("bind ", 0) == 0) {
      out << "    bind 127.0.0.1:" << binds.at(section) << "\n";
    } else if (trimmed.rfind("server ", 0) == 0) {
      if (!written.insert(section).second) continue;
      std::istringstream words(trimmed);
      std::string keyword, name, address, options;
      words >> keyword >> name >> address;
      std::getline(words, options);
      for (const auto& [from, to] : renames) {
        for (std::size_t at; (at = options.find(from)) != std::string::npos;) {
          options.replace(at, from.size(), to);
        }
      }
      const std::vector<std::uint16_t>& ports = servers.at(section);
      for (std::size_t i = 0; i < ports.size(); ++i) {
        out << "    server " << section << i + 1 << " 127.0.0.1:" << ports[i] << options << "\n";
      }
    } else {
      out << line << "\n";
    }
  }
  return out.str();
}

// A process that is not ours (haproxy), its output appended to a log; killed at the end.
class ForeignProcess {
 public:
  ForeignProcess(const std::vector<std::string>& argv, const std::string& log_path) {
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setsid();
      const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      ::dup2(log, 1);
      ::dup2(log, 2);
      std::vector<char*> args;
      for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
  }
  ~ForeignProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  ForeignProcess(const ForeignProcess&) = delete;
  ForeignProcess& operator=(const ForeignProcess&) = delete;
  bool running() const { return pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0; }

 private:
  pid_t pid_ = -1;
};

}  // namespace strongroom::testing

#endif  // STRONGROOM_TESTS_SUPPORT_HAPROXY_FRONT_H_
