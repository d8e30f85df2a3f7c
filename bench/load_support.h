// What the load generators (kms_load, core_load) share: reading their numeric options, the
// bearer tokens they send, and percentiles of the latencies they record (microseconds).
#ifndef STRONGROOM_BENCH_LOAD_SUPPORT_H_
#define STRONGROOM_BENCH_LOAD_SUPPORT_H_

#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"

namespace strongroom::bench {

inline constexpr std::size_t kMaxTokenBytes = 16 * 1024;

// --name's value as a whole number in [min, max].
inline Result<std::size_t> ParseCount(const std::string& name, const std::string& text,
                                      std::size_t min, std::size_t max) {
  char* end = nullptr;
  const unsigned long long value = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || value < min || value > max) {
    return Error(ErrorCode::kInvalidArgument, "--" + name + " must be a whole number from " +
                                                  std::to_string(min) + " to " +
                                                  std::to_string(max));
  }
  return static_cast<std::size_t>(value);
}

// --name's value as seconds in [0, max].
inline Result<double> ParseSeconds(const std::string& name, const std::string& text, double max) {
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !(value >= 0) || value > max) {
    return Error(ErrorCode::kInvalidArgument,
                 "--" + name + " must be a number from 0 to " + std::to_string(max));
  }
  return value;
}

// The bearer token in `path` (one line); never echoed in an error.
inline Result<std::string> ReadToken(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error(ErrorCode::kInvalidArgument, "cannot read the token file " + path);
  std::string token(kMaxTokenBytes + 1, '\0');
  in.read(token.data(), static_cast<std::streamsize>(token.size()));
  token.resize(static_cast<std::size_t>(in.gcount()));
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) token.pop_back();
  if (token.empty() || token.size() > kMaxTokenBytes) {
    ZeroizeString(token);
    return Error(ErrorCode::kInvalidArgument, "the token file " + path + " holds no usable token");
  }
  return token;
}

// A bearer token from a token command (as indexerd's token_command, docs/operations/indexerd.md):
// `command` with {subject} and {audience} replaced, run by /bin/sh, its first line. Never echoed.
inline Result<std::string> CommandToken(std::string command, const std::string& subject,
                                        const std::string& audience) {
  for (const auto& [name, value] : {std::pair<std::string, std::string>{"{subject}", subject},
                                    std::pair<std::string, std::string>{"{audience}", audience}}) {
    for (std::size_t at = command.find(name); at != std::string::npos; at = command.find(name)) {
      command.replace(at, name.size(), value);
    }
  }
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return Error(ErrorCode::kUnavailable, "cannot run the token command");
  std::string token;
  char buffer[4096];
  while (token.size() <= kMaxTokenBytes && fgets(buffer, sizeof buffer, pipe) != nullptr) {
    token += buffer;
  }
  const int status = pclose(pipe);
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) token.pop_back();
  if (status != 0 || token.empty() || token.size() > kMaxTokenBytes) {
    ZeroizeString(token);
    return Error(ErrorCode::kUnauthenticated,
                 "the token command gave no token for " + subject + " (" + audience + ")");
  }
  return token;
}

// The p-th quantile (nearest rank) of latencies in microseconds, sorted, in milliseconds.
inline double Percentile(const std::vector<std::uint32_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return static_cast<double>(sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)]) /
         1000.0;
}

// CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat; "self" for this
// process. -1 when it cannot be read. The generators sample the server's and their own over the
// measured window, so a cost per request is the server's alone and the generator's share shows.
inline double ProcessCpuSeconds(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return -1;
  // The command name (field 2) is in parentheses and may hold spaces: fields are counted from
  // the last ')'. utime and stime are fields 14 and 15, in clock ticks.
  const std::size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(stat.substr(close + 1));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
    if (i == 15) stime = std::strtoull(field.c_str(), nullptr, 10);
  }
  if (!fields) return -1;
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

}  // namespace strongroom::bench

#endif  // STRONGROOM_BENCH_LOAD_SUPPORT_H_
