#include "strongroom/indexer/query_parser.h"

#include <utility>

#include "strongroom/indexer/term_set.h"

namespace strongroom::indexer {
namespace {

Error Invalid(std::string message) {
  return Error(ErrorCode::kInvalidArgument, std::move(message));
}

}  // namespace

Result<std::vector<std::string>> ParseQuery(TermExtractor& extractor, std::string_view query) {
  if (query.size() > kMaxQueryBytes) {
    return Invalid("a search query is at most " + std::to_string(kMaxQueryBytes) +
                   " bytes; this one is " + std::to_string(query.size()));
  }
  Result<TermSet> terms = extractor.Extract(query);
  if (!terms.ok()) {
    if (terms.error().code() != ErrorCode::kInvalidArgument) return terms.error();
    return Invalid("the search query is not valid UTF-8");
  }
  if (terms->long_words_skipped() > 0) {
    return Invalid("a search query's words are at most " + std::to_string(kMaxWordBytes) +
                   " bytes (longer words are not indexed)");
  }
  if (terms->empty()) {
    return Invalid(
        "the search query has no word to search for (spaces, punctuation, symbols and emoji are "
        "not indexed)");
  }
  if (terms->size() > kMaxQueryTerms) {
    return Invalid("a search query has at most " + std::to_string(kMaxQueryTerms) +
                   " distinct terms; this one has " + (terms->truncated() ? "more than " : "") +
                   std::to_string(terms->size()));
  }
  return terms->terms();
}

}  // namespace strongroom::indexer
