#include "strongroom/common/daemon.h"

#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace strongroom {

int ExitStatusFor(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kNotFound:
    case ErrorCode::kFailedPrecondition:
    case ErrorCode::kAlreadyExists:
    case ErrorCode::kUnimplemented:
      return 78;  // EX_CONFIG
    case ErrorCode::kUnauthenticated:
    case ErrorCode::kPermissionDenied:
      return 77;  // EX_NOPERM
    case ErrorCode::kUnavailable:
    case ErrorCode::kResourceExhausted:
      return 69;  // EX_UNAVAILABLE
    case ErrorCode::kDataLoss:
      return 65;  // EX_DATAERR
    case ErrorCode::kInternal:
      return 70;  // EX_SOFTWARE
  }
  return 70;
}

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
}

}  // namespace strongroom
