#include "posting_chunk.h"

#include <openssl/sha.h>

#include <limits>

namespace strongroom::core::internal {
namespace {

std::size_t VarintSize(std::uint64_t value) {
  std::size_t n = 1;
  while (value >= 0x80) {
    value >>= 7;
    ++n;
  }
  return n;
}

}  // namespace

IndexKey IndexKey::Of(std::string_view token) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), digest);
  return {digest[0], static_cast<std::uint16_t>(digest[1] << 8 | digest[2])};
}

std::size_t EncodedChunkSize(std::int64_t first_seq, std::span<const PostingEntry> entries) {
  std::size_t size = 0;
  std::int64_t previous = first_seq;
  for (const PostingEntry& e : entries) {
    size += VarintSize(static_cast<std::uint64_t>(e.seq - previous)) + 2;
    previous = e.seq;
  }
  return size;
}

std::string EncodeChunk(std::int64_t first_seq, std::span<const PostingEntry> entries) {
  std::string out;
  out.reserve(EncodedChunkSize(first_seq, entries));
  std::int64_t previous = first_seq;
  for (const PostingEntry& e : entries) {
    auto delta = static_cast<std::uint64_t>(e.seq - previous);
    while (delta >= 0x80) {
      out += static_cast<char>((delta & 0x7f) | 0x80);
      delta >>= 7;
    }
    out += static_cast<char>(delta);
    out += static_cast<char>(e.kept >> 8);
    out += static_cast<char>(e.kept & 0xff);
    previous = e.seq;
  }
  return out;
}

std::optional<std::vector<PostingEntry>> DecodeChunk(std::int64_t first_seq,
                                                     std::span<const std::uint8_t> blob) {
  std::vector<PostingEntry> entries;
  entries.reserve(blob.size() / 4 + 1);
  std::int64_t seq = first_seq;
  std::size_t at = 0;
  while (at < blob.size()) {
    std::uint64_t delta = 0;
    for (int shift = 0;; shift += 7) {
      if (at == blob.size() || shift > 56) return std::nullopt;
      const std::uint8_t byte = blob[at++];
      delta |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) break;
    }
    if (delta > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max() - seq)) {
      return std::nullopt;
    }
    if (blob.size() - at < 2) return std::nullopt;
    seq += static_cast<std::int64_t>(delta);
    entries.push_back({seq, static_cast<std::uint16_t>(blob[at] << 8 | blob[at + 1])});
    at += 2;
  }
  return entries;
}

}  // namespace strongroom::core::internal
