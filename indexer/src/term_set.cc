#include "strongroom/indexer/term_set.h"

#include <utility>

namespace strongroom::indexer {

bool TermSet::Add(std::string term) {
  if (seen_.contains(term)) return true;
  if (terms_.size() >= kMaxTermsPerActivity) {
    truncated_ = true;
    return false;
  }
  seen_.insert(term);
  terms_.push_back(std::move(term));
  return true;
}

bool TermSet::Contains(std::string_view term) const { return seen_.contains(std::string(term)); }

}  // namespace strongroom::indexer
