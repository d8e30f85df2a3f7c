// The query parser: a search string to the terms an activity must all have, through the same
// pipeline as what is indexed (term_extractor.h), so "Launched checklists" finds "launch
// checklist". Every term must match (the core's search is an AND of tokens); the order of the
// words and quotes do not count: there are no phrases, no operators and no prefixes.
//
// Refused with INVALID_ARGUMENT, and a message that never quotes the query:
//   - a query of more than kMaxQueryBytes bytes, or not UTF-8;
//   - a query without a term (empty, or only spaces, punctuation, symbols and emoji);
//   - more than kMaxQueryTerms distinct terms (the core's limit on a search's tokens);
//   - a word longer than kMaxWordBytes, which no index holds (it would be skipped there).
#ifndef STRONGROOM_INDEXER_QUERY_PARSER_H_
#define STRONGROOM_INDEXER_QUERY_PARSER_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/indexer/term_extractor.h"

namespace strongroom::indexer {

inline constexpr std::size_t kMaxQueryBytes = 2048;
inline constexpr std::size_t kMaxQueryTerms = 32;

// The distinct terms of `query`, in the order they first appear; `extractor` stems in the
// organization's language, the one its activities were indexed in.
Result<std::vector<std::string>> ParseQuery(TermExtractor& extractor, std::string_view query);

}  // namespace strongroom::indexer

#endif  // STRONGROOM_INDEXER_QUERY_PARSER_H_
