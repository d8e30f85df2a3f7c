// The input format of the indexer's text fuzz targets (term_extractor_fuzz.cc,
// query_parser_fuzz.cc), shared with their seed generator (indexer_text_seeds.cc), and the checks
// both targets make.
//
// The first byte picks the stemming language: byte modulo the number of languages libstemmer has
// (TermExtractor::SupportedLanguages(), 29 in libstemmer 2.2), in libstemmer's order; the rest of
// the input is the text (or the query). Seeds choose a printable first byte of the right residue
// (LanguageByte), so they stay text files when their text is.
#ifndef STRONGROOM_FUZZ_INDEXER_TEXT_INPUT_H_
#define STRONGROOM_FUZZ_INDEXER_TEXT_INPUT_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/indexer/term_extractor.h"

namespace strongroom::fuzz {

// The first printable byte (from '0') that picks language number `index` of `count`.
inline char LanguageByte(std::size_t index, std::size_t count) {
  std::size_t byte = '0';
  while (byte % count != index) ++byte;
  return static_cast<char>(byte);
}

[[noreturn]] inline void IndexerFail(const char* target, const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", target, what.c_str());
  std::fflush(stderr);
  std::abort();
}

// Well-formed UTF-8 as the Unicode standard's table 3-7 lists it: the harness's own oracle, apart
// from ICU's U8_NEXT that the extractor uses.
inline bool WellFormedUtf8(std::string_view text) {
  const auto* s = reinterpret_cast<const std::uint8_t*>(text.data());
  const std::size_t n = text.size();
  std::size_t i = 0;
  auto in = [&](std::size_t at, std::uint8_t lo, std::uint8_t hi) {
    return at < n && s[at] >= lo && s[at] <= hi;
  };
  while (i < n) {
    const std::uint8_t b = s[i];
    if (b <= 0x7f) {
      i += 1;
    } else if (b >= 0xc2 && b <= 0xdf) {
      if (!in(i + 1, 0x80, 0xbf)) return false;
      i += 2;
    } else if (b == 0xe0) {
      if (!in(i + 1, 0xa0, 0xbf) || !in(i + 2, 0x80, 0xbf)) return false;
      i += 3;
    } else if ((b >= 0xe1 && b <= 0xec) || b == 0xee || b == 0xef) {
      if (!in(i + 1, 0x80, 0xbf) || !in(i + 2, 0x80, 0xbf)) return false;
      i += 3;
    } else if (b == 0xed) {
      if (!in(i + 1, 0x80, 0x9f) || !in(i + 2, 0x80, 0xbf)) return false;
      i += 3;
    } else if (b == 0xf0) {
      if (!in(i + 1, 0x90, 0xbf) || !in(i + 2, 0x80, 0xbf) || !in(i + 3, 0x80, 0xbf)) return false;
      i += 4;
    } else if (b >= 0xf1 && b <= 0xf3) {
      if (!in(i + 1, 0x80, 0xbf) || !in(i + 2, 0x80, 0xbf) || !in(i + 3, 0x80, 0xbf)) return false;
      i += 4;
    } else if (b == 0xf4) {
      if (!in(i + 1, 0x80, 0x8f) || !in(i + 2, 0x80, 0xbf) || !in(i + 3, 0x80, 0xbf)) return false;
      i += 4;
    } else {
      return false;
    }
  }
  return true;
}

// A refusal is INVALID_ARGUMENT with a short message of printable ASCII: it never quotes the text
// (a plaintext word), so it cannot carry one into a log or break a JSON error body.
inline void CheckRefusal(const char* target, const Error& error) {
  if (error.code() != ErrorCode::kInvalidArgument) {
    IndexerFail(target, "a refusal that is not INVALID_ARGUMENT: " + error.ToString());
  }
  if (error.message().empty() || error.message().size() > 256) {
    IndexerFail(target, "a refusal's message is empty or over 256 bytes: " + error.ToString());
  }
  for (char c : error.message()) {
    if (c < 0x20 || c > 0x7e) IndexerFail(target, "a refusal's message is not printable ASCII");
  }
}

// One extractor per language, made on first use (making one costs ICU's iterator set-up).
class Extractors {
 public:
  explicit Extractors(const char* target)
      : target_(target), languages_(indexer::TermExtractor::SupportedLanguages()) {
    if (languages_.empty()) IndexerFail(target_, "libstemmer lists no language");
  }
  const std::vector<std::string>& languages() const { return languages_; }
  indexer::TermExtractor& For(std::uint8_t first_byte) {
    const std::string& language = languages_[first_byte % languages_.size()];
    auto found = extractors_.find(language);
    if (found == extractors_.end()) {
      Result<indexer::TermExtractor> made = indexer::TermExtractor::New(language);
      if (!made.ok()) IndexerFail(target_, language + ": " + made.error().ToString());
      found = extractors_.emplace(language, std::move(made).value()).first;
    }
    return found->second;
  }

 private:
  const char* target_;
  std::vector<std::string> languages_;
  std::map<std::string, indexer::TermExtractor> extractors_;
};

}  // namespace strongroom::fuzz

#endif  // STRONGROOM_FUZZ_INDEXER_TEXT_INPUT_H_
