// Term extraction: UTF-8 text to the terms the index holds, the same for what is indexed and for
// queries (query_parser.h), so "Launched checklists" finds "launch checklist".
//
// The pipeline (docs/architecture.md, "The indexer"):
//   1. the text must be well-formed UTF-8 (RFC 3629: no overlong forms, surrogates or values past
//      U+10FFFF) of at most kMaxTextBytes, else INVALID_ARGUMENT and nothing is extracted;
//   2. NFKC case folding of the whole text (ICU's NFKC_Casefold): case, compatibility forms
//      (full-width letters and digits, ligatures, superscripts) and composed or decomposed accents
//      each give one form, and default-ignorable characters (soft hyphens, joiners) are dropped.
//      Accents stay: "café" and "cafe" are two terms. The folding is not locale-specific, so the
//      Turkish dotted capital I folds to "i" with a combining dot;
//   3. ICU word breaking (UAX #29, with ICU's dictionaries for Chinese, Japanese, Thai, Lao, Khmer
//      and Burmese): the segments whose rule status is UBRK_WORD_NONE (spaces, punctuation,
//      symbols, emoji) are no words. Numbers are words: "Q3-2027" gives "q3" and "2027", "v1.2",
//      "3.14" and "1,000" are one word each ("1,000" and "1000" are two terms);
//   4. U+2019 (the typographic apostrophe) becomes U+0027, the one Snowball's stemmers know, so
//      "John’s" and "John's" are one term;
//   5. a word of more than kMaxWordBytes (after folding) is skipped and counted
//      (TermSet::long_words_skipped): such words are identifiers, hashes and encoded data, which
//      nobody searches as words, and cutting them would give unrelated words one term;
//   6. Snowball stemming in the organization's language (libstemmer, UTF-8): "launch", "launches"
//      and "Launched" give the term "launch". A stem of more than kMaxWordBytes is skipped too.
//
// A TermExtractor is not thread-safe (the break iterator and the stemmer keep state): one per
// thread. Terms are plaintext words: they are never logged, and error messages never quote them.
#ifndef STRONGROOM_INDEXER_TERM_EXTRACTOR_H_
#define STRONGROOM_INDEXER_TERM_EXTRACTOR_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/indexer/term_set.h"

namespace strongroom::indexer {

// The core's limit on an activity's plaintext (64 KiB, docs/api/core.md).
inline constexpr std::size_t kMaxTextBytes = 65536;
inline constexpr std::size_t kMaxWordBytes = 64;
// The stemming language when the organization's policy names none.
inline constexpr std::string_view kDefaultLanguage = "english";

class TermExtractor {
 public:
  // An extractor stemming in `language`, one of SupportedLanguages() (libstemmer's names:
  // "english", "german", "french", ...). Any other name is INVALID_ARGUMENT with a message that
  // lists the supported ones.
  static Result<TermExtractor> New(std::string_view language = kDefaultLanguage);
  // The languages libstemmer stems, in its order.
  static std::vector<std::string> SupportedLanguages();

  TermExtractor(TermExtractor&& other) noexcept;
  TermExtractor& operator=(TermExtractor&& other) noexcept;
  ~TermExtractor();

  // Adds the terms of `text` to `terms`. A text over kMaxTextBytes or not UTF-8 is
  // INVALID_ARGUMENT, and `terms` is left as it was.
  Status AddTerms(std::string_view text, TermSet& terms);
  // The terms of one text.
  Result<TermSet> Extract(std::string_view text);

  const std::string& language() const;

 private:
  struct Impl;
  explicit TermExtractor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace strongroom::indexer

#endif  // STRONGROOM_INDEXER_TERM_EXTRACTOR_H_
