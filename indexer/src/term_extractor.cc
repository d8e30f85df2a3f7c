#include "strongroom/indexer/term_extractor.h"

#include <libstemmer.h>
#include <unicode/brkiter.h>
#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/ubrk.h>
#include <unicode/unistr.h>
#include <unicode/ustring.h>
#include <unicode/utf8.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <utility>

namespace strongroom::indexer {
namespace {

Error Invalid(std::string message) {
  return Error(ErrorCode::kInvalidArgument, std::move(message));
}

Error IcuFailure(const char* what, UErrorCode status) {
  return Error(ErrorCode::kInternal,
               std::string("ICU ") + what + " failed: " + u_errorName(status));
}

struct StemmerDeleter {
  void operator()(sb_stemmer* stemmer) const { sb_stemmer_delete(stemmer); }
};

// The offset of the first byte that does not start a well-formed UTF-8 sequence (ICU's U8_NEXT
// follows the Unicode standard's table of well-formed sequences), or none.
std::optional<std::size_t> FirstIllFormedByte(std::string_view text) {
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(text.data());
  const auto length = static_cast<std::int32_t>(text.size());
  std::int32_t i = 0;
  while (i < length) {
    const std::int32_t start = i;
    UChar32 c = 0;
    U8_NEXT(bytes, i, length, c);
    if (c < 0) return static_cast<std::size_t>(start);
  }
  return std::nullopt;
}

// A language name as an operator wrote it, for a message: at most 32 characters, printable ASCII.
std::string Printable(std::string_view name) {
  std::string out;
  for (char c : name.substr(0, 32)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (name.size() > 32) out += "...";
  return out;
}

}  // namespace

struct TermExtractor::Impl {
  std::string language;
  const icu::Normalizer2* folding = nullptr;  // ICU's own instance, shared and thread-safe
  std::unique_ptr<icu::BreakIterator> words;
  std::unique_ptr<sb_stemmer, StemmerDeleter> stemmer;
  const icu::UnicodeString typographic_apostrophe{static_cast<UChar32>(0x2019)};
  const icu::UnicodeString apostrophe{static_cast<UChar32>(0x27)};
};

std::vector<std::string> TermExtractor::SupportedLanguages() {
  std::vector<std::string> names;
  for (const char** name = sb_stemmer_list(); *name != nullptr; ++name) names.emplace_back(*name);
  return names;
}

Result<TermExtractor> TermExtractor::New(std::string_view language) {
  const std::vector<std::string> supported = SupportedLanguages();
  if (std::find(supported.begin(), supported.end(), language) == supported.end()) {
    std::string list;
    for (const std::string& name : supported) list += (list.empty() ? "" : ", ") + name;
    return Invalid("no stemmer for the language \"" + Printable(language) +
                   "\"; the supported languages are " + list);
  }
  auto impl = std::make_unique<Impl>();
  impl->language = std::string(language);
  impl->stemmer.reset(sb_stemmer_new(impl->language.c_str(), "UTF_8"));
  if (impl->stemmer == nullptr) {
    return Error(ErrorCode::kResourceExhausted, "libstemmer could not make a stemmer");
  }
  UErrorCode status = U_ZERO_ERROR;
  impl->folding = icu::Normalizer2::getNFKCCasefoldInstance(status);
  if (U_FAILURE(status)) return IcuFailure("NFKC_Casefold", status);
  impl->words.reset(icu::BreakIterator::createWordInstance(icu::Locale::getRoot(), status));
  if (U_FAILURE(status) || impl->words == nullptr) return IcuFailure("word break iterator", status);
  return TermExtractor(std::move(impl));
}

TermExtractor::TermExtractor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TermExtractor::TermExtractor(TermExtractor&& other) noexcept = default;
TermExtractor& TermExtractor::operator=(TermExtractor&& other) noexcept = default;
TermExtractor::~TermExtractor() = default;

const std::string& TermExtractor::language() const { return impl_->language; }

Status TermExtractor::AddTerms(std::string_view text, TermSet& terms) {
  if (text.size() > kMaxTextBytes) {
    return Invalid("a text to index is at most " + std::to_string(kMaxTextBytes) +
                   " bytes; this one is " + std::to_string(text.size()));
  }
  if (std::optional<std::size_t> bad = FirstIllFormedByte(text)) {
    return Invalid("the text is not valid UTF-8 (at byte " + std::to_string(*bad) + ")");
  }
  UErrorCode status = U_ZERO_ERROR;
  icu::UnicodeString utf16;
  {
    // UTF-16 never needs more code units than UTF-8 needs bytes.
    const auto capacity = static_cast<std::int32_t>(std::max<std::size_t>(text.size(), 1));
    std::int32_t length = 0;
    u_strFromUTF8(utf16.getBuffer(capacity), capacity, &length, text.data(),
                  static_cast<std::int32_t>(text.size()), &status);
    utf16.releaseBuffer(U_SUCCESS(status) ? length : 0);
    if (U_FAILURE(status)) return IcuFailure("UTF-8 conversion", status);
  }
  const icu::UnicodeString folded = impl_->folding->normalize(utf16, status);
  if (U_FAILURE(status)) return IcuFailure("NFKC_Casefold", status);

  // The text's words are collected first and added at the end, so a failure adds nothing.
  std::vector<std::string> found;
  std::size_t long_words = 0;
  sb_stemmer* stemmer = impl_->stemmer.get();
  icu::BreakIterator& words = *impl_->words;
  words.setText(folded);
  std::optional<Error> failure;
  for (std::int32_t start = words.first(), end = words.next(); end != icu::BreakIterator::DONE;
       start = end, end = words.next()) {
    if (words.getRuleStatus() < UBRK_WORD_NONE_LIMIT) continue;  // spaces, punctuation, emoji
    // A word of more UTF-16 code units than kMaxWordBytes has more UTF-8 bytes too.
    if (static_cast<std::size_t>(end - start) > kMaxWordBytes) {
      ++long_words;
      continue;
    }
    icu::UnicodeString word(folded, start, end - start);
    word.findAndReplace(impl_->typographic_apostrophe, impl_->apostrophe);
    std::string utf8;
    word.toUTF8String(utf8);
    if (utf8.size() > kMaxWordBytes) {
      ++long_words;
      continue;
    }
    const sb_symbol* stem = sb_stemmer_stem(
        stemmer, reinterpret_cast<const sb_symbol*>(utf8.data()), static_cast<int>(utf8.size()));
    if (stem == nullptr) {
      failure = Error(ErrorCode::kResourceExhausted, "the stemmer ran out of memory");
      break;
    }
    const int stem_length = sb_stemmer_length(stemmer);
    if (stem_length <= 0) continue;
    if (static_cast<std::size_t>(stem_length) > kMaxWordBytes) {
      ++long_words;
      continue;
    }
    found.emplace_back(reinterpret_cast<const char*>(stem), static_cast<std::size_t>(stem_length));
  }
  // The iterator keeps a reference to the text it was given; it must not outlive `folded`.
  words.setText(icu::UnicodeString());
  if (failure) return *failure;

  for (std::string& term : found) terms.Add(std::move(term));
  terms.CountLongWords(long_words);
  return OkStatus();
}

Result<TermSet> TermExtractor::Extract(std::string_view text) {
  TermSet terms;
  SR_RETURN_IF_ERROR(AddTerms(text, terms));
  return terms;
}

}  // namespace strongroom::indexer
