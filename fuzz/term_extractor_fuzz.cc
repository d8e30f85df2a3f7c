// libFuzzer target for the indexer's term extractor (indexer/term_extractor.h), and the search
// tokens and decoy padding of what it extracts. The input format (a language byte, then the text)
// is in indexer_text_input.h; docs/testing.md says how to run it.
//
// After every input what must hold is checked, and a violation aborts:
//   - a text is refused exactly when it is over kMaxTextBytes or not well-formed UTF-8 (by the
//     harness's own reading of the Unicode standard's table), as INVALID_ARGUMENT with a short
//     printable ASCII message, and then the term set it was added to is as it was;
//   - an accepted text gives distinct terms of 1 to kMaxWordBytes bytes of well-formed UTF-8
//     without an ASCII control character or space, at most kMaxTermsPerActivity of them (exactly
//     that many when the set says it was truncated);
//   - extracting the same text again gives the same terms in the same order (no state carried
//     from one text to the next);
//   - the terms' tokens padded with decoys are exactly the terms' bucket in number, distinct,
//     kSearchTokenChars of base64url each, and hold every real token.
//
// Built twice: as the libFuzzer target (STRONGROOM_FUZZ) and, with replay_main.cc, as the CTest
// replay of the checked-in corpus.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "indexer_text_input.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/indexer/decoy_padding.h"
#include "strongroom/indexer/room_search_key.h"
#include "strongroom/indexer/term_extractor.h"

namespace strongroom::fuzz {
namespace {

constexpr char kTarget[] = "term_extractor_fuzz";
// A term cannot hold a control character, so this one is never a term.
constexpr std::string_view kSentinel = "\x01sentinel";

void Check(bool holds, const std::string& what) {
  if (!holds) IndexerFail(kTarget, "invariant: " + what);
}

const indexer::RoomSearchKey& RoomKey() {
  static const indexer::RoomSearchKey key = [] {
    Result<indexer::RoomSearchKey> derived =
        indexer::RoomSearchKey::Derive(SecretBytes::Random(indexer::kOrgSearchKeyBytes),
                                       "3d6f0a1b-2c4e-4f5a-8b9c-0d1e2f3a4b5c", 1);
    if (!derived.ok()) IndexerFail(kTarget, derived.error().ToString());
    return std::move(derived).value();
  }();
  return key;
}

bool IsBase64Url(std::string_view token) {
  for (char c : token) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

void CheckTerms(const std::vector<std::string>& terms) {
  std::set<std::string_view> distinct;
  for (const std::string& term : terms) {
    Check(!term.empty() && term.size() <= indexer::kMaxWordBytes, "a term of 1 to 64 bytes");
    Check(WellFormedUtf8(term), "a term is well-formed UTF-8");
    for (unsigned char c : term) Check(c > 0x20 && c != 0x7f, "a term without control or space");
    Check(distinct.insert(term).second, "terms are distinct");
  }
}

void CheckTokens(const std::vector<std::string>& terms) {
  const std::vector<std::string> real = RoomKey().Tokens(terms);
  Result<std::vector<std::string>> padded = indexer::PadWithDecoys(real);
  Check(padded.ok(), "padding the tokens of at most 512 terms");
  Check(padded->size() == indexer::TokenBucket(real.size()), "padded to the bucket");
  const std::set<std::string> all(padded->begin(), padded->end());
  Check(all.size() == padded->size(), "padded tokens are distinct");
  for (const std::string& token : *padded) {
    Check(token.size() == indexer::kSearchTokenChars && IsBase64Url(token), "a token's shape");
  }
  for (const std::string& token : real) Check(all.contains(token), "every real token is there");
}

void Run(const std::uint8_t* data, std::size_t size) {
  static Extractors extractors(kTarget);
  if (size == 0) return;
  indexer::TermExtractor& extractor = extractors.For(data[0]);
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);

  indexer::TermSet terms;
  terms.Add(std::string(kSentinel));
  const Status added = extractor.AddTerms(text, terms);
  const bool acceptable = text.size() <= indexer::kMaxTextBytes && WellFormedUtf8(text);
  Check(added.ok() == acceptable, acceptable ? "a well-formed text was refused: " +
                                                   (added.ok() ? "" : added.error().ToString())
                                             : "an ill-formed or oversized text was accepted");
  if (!added.ok()) {
    CheckRefusal(kTarget, added.error());
    Check(terms.size() == 1 && terms.terms()[0] == kSentinel && terms.long_words_skipped() == 0,
          "a refused text added nothing");
    return;
  }
  const std::vector<std::string> with_sentinel = terms.terms();
  Check(with_sentinel.size() <= indexer::kMaxTermsPerActivity, "at most 512 terms");
  Check(!terms.truncated() || with_sentinel.size() == indexer::kMaxTermsPerActivity,
        "a truncated set is full");
  const std::vector<std::string> added_terms(with_sentinel.begin() + 1, with_sentinel.end());
  CheckTerms(added_terms);

  Result<indexer::TermSet> again = extractor.Extract(text);
  Check(again.ok(), "the same text accepted twice");
  if (!terms.truncated()) {
    Check(again->terms() == added_terms, "the same text gives the same terms");
  } else {
    // The sentinel took one place: the first extraction is the second's prefix.
    Check(again->size() == indexer::kMaxTermsPerActivity &&
              std::equal(added_terms.begin(), added_terms.end(), again->terms().begin()),
          "the same text gives the same terms (truncated)");
  }
  CheckTokens(again->terms());
}

}  // namespace
}  // namespace strongroom::fuzz

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) { return 0; }

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    strongroom::fuzz::Run(data, size);
  } catch (const std::exception& e) {
    strongroom::fuzz::IndexerFail("term_extractor_fuzz",
                                  std::string("an exception escaped: ") + e.what());
  }
  return 0;
}
