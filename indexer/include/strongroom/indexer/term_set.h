// The distinct terms of one activity (its text, file names and room name together), in the order
// they first appeared, at most kMaxTermsPerActivity of them.
#ifndef STRONGROOM_INDEXER_TERM_SET_H_
#define STRONGROOM_INDEXER_TERM_SET_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace strongroom::indexer {

// The core stores at most 512 tokens per activity (docs/api/core.md), so an activity keeps its
// first 512 distinct terms; the rest of a longer text is not searchable.
inline constexpr std::size_t kMaxTermsPerActivity = 512;

class TermSet {
 public:
  // Adds a term unless it is there already. False when the set is full: the term was dropped, and
  // truncated() is true from then on.
  bool Add(std::string term);
  bool Contains(std::string_view term) const;

  // Counts words that were not made terms because they are longer than kMaxWordBytes
  // (term_extractor.h).
  void CountLongWords(std::size_t count) { long_words_skipped_ += count; }

  const std::vector<std::string>& terms() const { return terms_; }
  std::size_t size() const { return terms_.size(); }
  bool empty() const { return terms_.empty(); }
  // Some term was dropped because the set held kMaxTermsPerActivity already.
  bool truncated() const { return truncated_; }
  // How many words were skipped for their length.
  std::size_t long_words_skipped() const { return long_words_skipped_; }

 private:
  std::vector<std::string> terms_;
  std::unordered_set<std::string> seen_;
  bool truncated_ = false;
  std::size_t long_words_skipped_ = 0;
};

}  // namespace strongroom::indexer

#endif  // STRONGROOM_INDEXER_TERM_SET_H_
