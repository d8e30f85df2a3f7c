// libFuzzer target for the indexer's query parser (indexer/query_parser.h). The input format (a
// language byte, then the query) is in indexer_text_input.h; docs/testing.md says how to run it.
//
// After every input what must hold is checked, and a violation aborts:
//   - a query is refused exactly when it is over kMaxQueryBytes, not well-formed UTF-8 (the
//     harness's own reading), has a word over kMaxWordBytes, or has no term or more than
//     kMaxQueryTerms distinct terms as the term extractor reads it, each as INVALID_ARGUMENT with
//     a short printable ASCII message;
//   - an accepted query's terms are exactly the term extractor's terms of the same text, in the
//     same order: 1 to kMaxQueryTerms distinct terms of 1 to kMaxWordBytes bytes, so a query finds
//     what the index holds for the same words.
//
// Built twice: as the libFuzzer target (STRONGROOM_FUZZ) and, with replay_main.cc, as the CTest
// replay of the checked-in corpus.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "indexer_text_input.h"
#include "strongroom/indexer/query_parser.h"
#include "strongroom/indexer/term_extractor.h"

namespace strongroom::fuzz {
namespace {

constexpr char kTarget[] = "query_parser_fuzz";

void Check(bool holds, const std::string& what) {
  if (!holds) IndexerFail(kTarget, "invariant: " + what);
}

void Run(const std::uint8_t* data, std::size_t size) {
  static Extractors extractors(kTarget);
  if (size == 0) return;
  indexer::TermExtractor& extractor = extractors.For(data[0]);
  const std::string_view query(reinterpret_cast<const char*>(data) + 1, size - 1);

  const Result<std::vector<std::string>> parsed = indexer::ParseQuery(extractor, query);
  if (!parsed.ok()) CheckRefusal(kTarget, parsed.error());

  if (query.size() > indexer::kMaxQueryBytes || !WellFormedUtf8(query)) {
    Check(!parsed.ok(), "an oversized or ill-formed query was accepted");
    return;
  }
  Result<indexer::TermSet> extracted = extractor.Extract(query);
  Check(extracted.ok(), "the extractor refused a well-formed query");
  const bool searchable = extracted->long_words_skipped() == 0 && !extracted->empty() &&
                          extracted->size() <= indexer::kMaxQueryTerms;
  Check(parsed.ok() == searchable,
        searchable ? "a searchable query was refused: " +
                         (parsed.ok() ? std::string() : parsed.error().ToString())
                   : "a query without terms, with too many or with a long word was accepted");
  if (!parsed.ok()) return;
  Check(*parsed == extracted->terms(), "the query's terms are the extractor's");
  const std::set<std::string> distinct(parsed->begin(), parsed->end());
  Check(distinct.size() == parsed->size(), "a query's terms are distinct");
  for (const std::string& term : *parsed) {
    Check(!term.empty() && term.size() <= indexer::kMaxWordBytes, "a term of 1 to 64 bytes");
  }
}

}  // namespace
}  // namespace strongroom::fuzz

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) { return 0; }

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    strongroom::fuzz::Run(data, size);
  } catch (const std::exception& e) {
    strongroom::fuzz::IndexerFail("query_parser_fuzz",
                                  std::string("an exception escaped: ") + e.what());
  }
  return 0;
}
