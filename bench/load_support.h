// What the load generators (kms_load, core_load) share: reading their numeric options, the
// bearer tokens they send, and percentiles of the latencies they record (microseconds).
#ifndef STRONGROOM_BENCH_LOAD_SUPPORT_H_
#define STRONGROOM_BENCH_LOAD_SUPPORT_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
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

// The p-th quantile (nearest rank) of latencies in microseconds, sorted, in milliseconds.
inline double Percentile(const std::vector<std::uint32_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return static_cast<double>(sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)]) /
         1000.0;
}

}  // namespace strongroom::bench

#endif  // STRONGROOM_BENCH_LOAD_SUPPORT_H_
