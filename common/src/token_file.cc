#include "strongroom/common/token_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

namespace strongroom {

Result<SecretBytes> ReadTokenFile(const std::string& path, const std::string& what, std::size_t min,
                                  std::size_t max) {
  const std::string named = "the " + what + " " + path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return Error(ErrorCode::kInvalidArgument, "cannot open " + named);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return Error(ErrorCode::kInvalidArgument, named + " is not a regular file");
  }
  if ((st.st_mode & 077) != 0) {
    ::close(fd);
    return Error(ErrorCode::kInvalidArgument,
                 named + " may be read by others; make it mode 0600 (chmod 600)");
  }
  SecretBytes content(max + 3);  // room for "\r\n" and one byte too many
  std::size_t size = 0;
  while (size < content.size()) {
    const ssize_t n = ::read(fd, content.data() + size, content.size() - size);
    if (n < 0) {
      ::close(fd);
      return Error(ErrorCode::kInvalidArgument, "cannot read " + named);
    }
    if (n == 0) break;
    size += static_cast<std::size_t>(n);
  }
  ::close(fd);
  if (size > 0 && content.data()[size - 1] == '\n') --size;
  if (size > 0 && content.data()[size - 1] == '\r') --size;
  content.Truncate(size);
  if (size == 0) return Error(ErrorCode::kInvalidArgument, named + " is empty");
  const bool printable = std::all_of(content.view().begin(), content.view().end(),
                                     [](std::uint8_t c) { return c > 0x20 && c < 0x7f; });
  if (size < min || size > max || !printable) {
    return Error(ErrorCode::kInvalidArgument,
                 named + " must hold one token of " + std::to_string(min) + " to " +
                     std::to_string(max) +
                     " printable characters without spaces (e.g. openssl rand -hex 32)");
  }
  return content;
}

}  // namespace strongroom
