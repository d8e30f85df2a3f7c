// What the load generators (kms_load, core_load) share: reading their numeric options, the
// bearer tokens they send, percentiles of the latencies they record (microseconds), and the CPU
// time of the processes they load.
#ifndef STRONGROOM_BENCH_LOAD_SUPPORT_H_
#define STRONGROOM_BENCH_LOAD_SUPPORT_H_

#include <Poco/JSON/Object.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
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

// A process's CPU seconds from /proc/<pid>/stat fields 14-17: its own (utime + stime) and its
// reaped children's (cutime + cstime). Fields are counted from the last ')', since the command
// name (field 2) may hold spaces.
struct ProcessTimes {
  int ppid = 0;
  double own_s = 0;
  double children_s = 0;
};
inline bool ReadProcessTimes(const std::string& pid, ProcessTimes* times) {
  std::ifstream in("/proc/" + pid + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return false;
  const std::size_t close = stat.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream fields(stat.substr(close + 1));
  std::string field;
  unsigned long long value[18] = {};
  for (int i = 3; i <= 17 && fields >> field; ++i) {
    value[i] = std::strtoull(field.c_str(), nullptr, 10);
  }
  if (!fields) return false;
  const auto tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  times->ppid = static_cast<int>(value[4]);
  times->own_s = static_cast<double>(value[14] + value[15]) / tick;
  times->children_s = static_cast<double>(value[16] + value[17]) / tick;
  return true;
}

// CPU seconds used so far by the processes PIDS, by every process descended from them that is
// alive now, and by the children they have reaped: a PostgreSQL postmaster's sum covers its
// backends, those of closed connections included. -1 when one of PIDS cannot be read.
inline double TreeCpuSeconds(const std::vector<int>& pids) {
  std::map<int, ProcessTimes> all;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    ProcessTimes times;
    if (ReadProcessTimes(name, &times)) all[std::atoi(name.c_str())] = times;
  }
  double sum = 0;
  std::vector<int> frontier;
  for (int pid : pids) {
    const auto root = all.find(pid);
    if (root == all.end()) return -1;
    sum += root->second.own_s + root->second.children_s;
    frontier.push_back(pid);
  }
  // Descendants, generation by generation (a process list has no cycles).
  while (!frontier.empty()) {
    std::vector<int> next;
    for (const auto& [pid, times] : all) {
      if (std::find(frontier.begin(), frontier.end(), times.ppid) == frontier.end()) continue;
      sum += times.own_s;
      next.push_back(pid);
    }
    frontier = std::move(next);
  }
  return sum;
}

// --pid NAME=PID[,PID...]: the tiers whose CPU time a generator reports over its measured window,
// each the sum of its processes' trees (TreeCpuSeconds), so that a cost per request is known for
// each tier (kmsd nodes, cored nodes, PostgreSQL, HAProxy) apart from the generator's own.
struct CpuTiers {
  std::vector<std::pair<std::string, std::vector<int>>> tiers;

  Status Add(const std::string& spec) {
    const std::size_t eq = spec.find('=');
    if (eq == 0 || eq == std::string::npos || eq + 1 == spec.size()) {
      return Error(ErrorCode::kInvalidArgument, "--pid takes NAME=PID[,PID...], got " + spec);
    }
    std::vector<int> pids;
    std::istringstream list(spec.substr(eq + 1));
    for (std::string pid; std::getline(list, pid, ',');) {
      SR_ASSIGN_OR_RETURN(std::size_t n, ParseCount("pid", pid, 1, 1 << 22));
      pids.push_back(static_cast<int>(n));
    }
    tiers.emplace_back(spec.substr(0, eq), std::move(pids));
    return OkStatus();
  }
  // When any tier was named: adds this process as the tier "generator", and the whole machine's
  // busy time (/proc/stat) as "machine", so that a cost per request can be told apart from the
  // generator's and from what else ran meanwhile (machine less the tiers).
  void AddGeneratorAndMachine() {
    if (tiers.empty()) return;
    tiers.emplace_back("generator", std::vector<int>{getpid()});
    tiers.emplace_back("machine", std::vector<int>{});
  }
  // Each tier's CPU seconds now (-1 for a tier that cannot be read).
  std::vector<double> Now() const {
    std::vector<double> now;
    for (const auto& [name, pids] : tiers) {
      now.push_back(pids.empty() ? MachineBusySeconds() : TreeCpuSeconds(pids));
    }
    return now;
  }
  // Every CPU's busy time so far (user, nice, system, irq, softirq, steal), in seconds.
  static double MachineBusySeconds() {
    std::ifstream in("/proc/stat");
    std::string cpu;
    unsigned long long v[8] = {};
    if (!(in >> cpu >> v[0] >> v[1] >> v[2] >> v[3] >> v[4] >> v[5] >> v[6] >> v[7])) return -1;
    return static_cast<double>(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) /
           static_cast<double>(sysconf(_SC_CLK_TCK));
  }
  // "cpu_s" and "cpu_us_per_request" objects, a member per tier, over a window from FROM to TO
  // (samples of Now()) in which REQUESTS were answered; a tier that could not be read is left out.
  void Report(const std::vector<double>& from, const std::vector<double>& to,
              std::uint64_t requests, Poco::JSON::Object& out) const {
    if (tiers.empty() || from.size() != tiers.size() || to.size() != tiers.size()) return;
    Poco::JSON::Object seconds, per_request;
    for (std::size_t i = 0; i < tiers.size(); ++i) {
      if (from[i] < 0 || to[i] < 0) continue;
      seconds.set(tiers[i].first, to[i] - from[i]);
      if (requests > 0) {
        per_request.set(tiers[i].first, (to[i] - from[i]) * 1e6 / static_cast<double>(requests));
      }
    }
    out.set("cpu_s", seconds);
    out.set("cpu_us_per_request", per_request);
  }
};

}  // namespace strongroom::bench

#endif  // STRONGROOM_BENCH_LOAD_SUPPORT_H_
