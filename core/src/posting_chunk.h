// The search index store's entries and how a chunk of them is written (index_postings.h keeps
// the chunks in the database).
//
// The store keeps 24 bits of each token, not the token: IndexKey::Of takes the first 3 bytes of
// SHA-256(token); the first byte picks one of a room's 256 buckets and the other 2 (`kept`) are
// stored in the token's entry. A token is only ever compared with tokens of the same room, so a
// query term falsely matches an activity when another of the activity's tokens agrees on those 24
// bits: about (the activity's tokens) / 2^24, 1.4e-6 for 23 tokens. The client drops such a match
// when it decrypts the activity and finds the words missing (docs/api/core.md).
//
// A chunk holds the entries of one (room, bucket) for the activities whose seq lies in its range:
// from its `first_seq` (the chunk's key, at most its first entry's seq) up to the next chunk's.
// Entries are in (seq, kept) order, each written as
//
//   varint(seq - previous seq)   LEB128, 7 bits a byte; the first entry's previous is first_seq
//   kept                         2 bytes, big-endian
//
// so that an entry costs about 4 bytes. EncodeChunk and DecodeChunk are each other's inverse;
// DecodeChunk refuses (nullopt) a blob that is not a whole number of entries, a delta of more than
// 9 bytes or a seq beyond int64.
#ifndef STRONGROOM_CORE_SRC_POSTING_CHUNK_H_
#define STRONGROOM_CORE_SRC_POSTING_CHUNK_H_

#include <compare>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace strongroom::core::internal {

inline constexpr std::size_t kIndexBuckets = 256;

// What the store keeps of a token.
struct IndexKey {
  std::uint8_t bucket = 0;
  std::uint16_t kept = 0;

  static IndexKey Of(std::string_view token);
  auto operator<=>(const IndexKey&) const = default;
};

struct PostingEntry {
  std::int64_t seq = 0;
  std::uint16_t kept = 0;

  auto operator<=>(const PostingEntry&) const = default;
};

// `entries` sorted, none before first_seq.
std::string EncodeChunk(std::int64_t first_seq, std::span<const PostingEntry> entries);
// The bytes EncodeChunk would write for these entries.
std::size_t EncodedChunkSize(std::int64_t first_seq, std::span<const PostingEntry> entries);
std::optional<std::vector<PostingEntry>> DecodeChunk(std::int64_t first_seq,
                                                     std::span<const std::uint8_t> blob);

}  // namespace strongroom::core::internal

#endif  // STRONGROOM_CORE_SRC_POSTING_CHUNK_H_
