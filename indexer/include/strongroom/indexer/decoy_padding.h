// Decoys: an activity's tokens padded with random ones to a bucket size and shuffled, so the core
// learns the number of an activity's distinct terms only up to its bucket, and not which of a new
// activity's tokens are real (docs/threat-model.md says what it can still learn).
//
// The buckets: 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512 (kTokenBuckets): the powers
// of two from 8 up to the core's cap of 512 tokens per activity, and the points half-way between
// them (times 1.5). Against powers of two alone this stores fewer decoys (a list is padded by at
// most half its size instead of doubled: about 1.17 stored tokens per real one instead of about
// 1.33 when the counts spread evenly within buckets) for at most one more bit of what the
// count reveals (13 buckets instead of 7), and it matters where the counts are: short messages
// have from a few to a dozen or so distinct terms, and 9 to 12 of them pay for 12 instead of 16.
// At the core's bar of 200 bytes per activity that difference counts (docs/architecture.md, "The
// indexer").
// Even an activity without a term gets 8 decoys, so the core cannot tell it apart.
//
// Decoys are fresh random tokens (OpenSSL's CSPRNG), kSearchTokenChars of base64url like real
// ones, and never equal to one another or to a real token of the list.
#ifndef STRONGROOM_INDEXER_DECOY_PADDING_H_
#define STRONGROOM_INDEXER_DECOY_PADDING_H_

#include <array>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "strongroom/common/error.h"

namespace strongroom::indexer {

inline constexpr std::array<std::size_t, 13> kTokenBuckets = {8,  12,  16,  24,  32,  48, 64,
                                                              96, 128, 192, 256, 384, 512};
// The core's cap (kMaxIndexTokensPerActivity, docs/api/core.md).
inline constexpr std::size_t kMaxTokensPerActivity = kTokenBuckets.back();

// The smallest bucket that holds `real_tokens` tokens (8 for none); 0 when they are more than
// kMaxTokensPerActivity.
std::size_t TokenBucket(std::size_t real_tokens);

// The distinct tokens of `tokens` with random decoys added up to their bucket, in a random order.
// More than kMaxTokensPerActivity distinct tokens is INVALID_ARGUMENT. Throws only when OpenSSL's
// CSPRNG fails (as SecretBytes::Random does).
Result<std::vector<std::string>> PadWithDecoys(const std::vector<std::string>& tokens);

// The same, deterministic, as indexerd puts an activity's set (docs/architecture.md, "The
// indexer"): the decoys are `decoys(n)`'s first tokens that are not in the list (n grows until
// enough are found; RoomSearchKey::DecoyTokens for the activity), and the list is sorted, which
// tells nothing since every token is a pseudorandom function's output. Indexing an activity again
// gives the same set, so the core's PUT (which replaces the set) makes a replay change nothing.
using DecoySource = std::function<std::vector<std::string>(std::size_t count)>;
Result<std::vector<std::string>> PadWithDecoys(const std::vector<std::string>& tokens,
                                               const DecoySource& decoys);

}  // namespace strongroom::indexer

#endif  // STRONGROOM_INDEXER_DECOY_PADDING_H_
