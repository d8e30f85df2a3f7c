#include "strongroom/indexer/decoy_padding.h"

#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <unordered_set>

#include "strongroom/common/jose/base64url.h"
#include "strongroom/indexer/room_search_key.h"

namespace strongroom::indexer {
namespace {

void RandomBytes(std::uint8_t* out, std::size_t size) {
  if (RAND_bytes(out, static_cast<int>(size)) != 1) throw std::runtime_error("RAND_bytes failed");
}

// A uniform random bit generator over OpenSSL's CSPRNG, for std::shuffle.
class CsprngBits {
 public:
  using result_type = std::uint64_t;
  static constexpr result_type min() { return 0; }
  static constexpr result_type max() { return std::numeric_limits<result_type>::max(); }
  result_type operator()() {
    if (next_ == buffer_.size()) {
      RandomBytes(reinterpret_cast<std::uint8_t*>(buffer_.data()), sizeof(buffer_));
      next_ = 0;
    }
    return buffer_[next_++];
  }

 private:
  std::array<result_type, 32> buffer_{};
  std::size_t next_ = buffer_.size();
};

}  // namespace

std::size_t TokenBucket(std::size_t real_tokens) {
  for (std::size_t bucket : kTokenBuckets) {
    if (real_tokens <= bucket) return bucket;
  }
  return 0;
}

namespace {

// The distinct tokens, in their order, into `padded` (and `present`); the bucket they are padded
// to, or INVALID_ARGUMENT for more than kMaxTokensPerActivity.
Result<std::size_t> DistinctTokens(const std::vector<std::string>& tokens,
                                   std::unordered_set<std::string>& present,
                                   std::vector<std::string>& padded) {
  for (const std::string& token : tokens) {
    if (present.insert(token).second) padded.push_back(token);
  }
  const std::size_t bucket = TokenBucket(padded.size());
  if (bucket == 0) {
    return Error(ErrorCode::kInvalidArgument,
                 "an activity has at most " + std::to_string(kMaxTokensPerActivity) +
                     " index tokens; this one has " + std::to_string(padded.size()));
  }
  return bucket;
}

}  // namespace

Result<std::vector<std::string>> PadWithDecoys(const std::vector<std::string>& tokens) {
  std::unordered_set<std::string> present;
  std::vector<std::string> padded;
  SR_ASSIGN_OR_RETURN(const std::size_t bucket, DistinctTokens(tokens, present, padded));
  padded.reserve(bucket);
  std::array<std::uint8_t, kSearchTokenBytes> bytes{};
  while (padded.size() < bucket) {
    RandomBytes(bytes.data(), bytes.size());
    std::string decoy = jose::Base64UrlEncode(std::span<const std::uint8_t>(bytes));
    if (present.insert(decoy).second) padded.push_back(std::move(decoy));
  }
  CsprngBits bits;
  std::shuffle(padded.begin(), padded.end(), bits);
  return padded;
}

Result<std::vector<std::string>> PadWithDecoys(const std::vector<std::string>& tokens,
                                               const DecoySource& decoys) {
  std::unordered_set<std::string> present;
  std::vector<std::string> padded;
  SR_ASSIGN_OR_RETURN(const std::size_t bucket, DistinctTokens(tokens, present, padded));
  const std::size_t wanted = bucket - padded.size();
  // A decoy equal to a real token (a 2^-64 chance each) is skipped and one more asked for.
  for (std::size_t count = wanted; padded.size() < bucket; count += 8) {
    const std::vector<std::string> made = decoys(count);
    if (made.size() < count) return Error(ErrorCode::kInternal, "the decoy source made too few");
    padded.resize(bucket - wanted);
    std::unordered_set<std::string> taken = present;
    for (const std::string& decoy : made) {
      if (padded.size() == bucket) break;
      if (taken.insert(decoy).second) padded.push_back(decoy);
    }
  }
  std::sort(padded.begin(), padded.end());
  return padded;
}

}  // namespace strongroom::indexer
