// Writes seed inputs for the indexer's text fuzz targets (format: indexer_text_input.h) into a
// directory: texts in many scripts (Latin with accents and compatibility forms, CJK, Thai, Hebrew
// and Arabic with direction marks, Devanagari, Cyrillic, Greek), combining marks, emoji
// sequences, numbers and mixed tokens, control characters, long words, many terms, queries, and
// ill-formed UTF-8 of every kind, each in a file named seed-<what>. The same seeds serve both
// targets:
//
//   indexer_text_seeds fuzz/corpus/term_extractor
//   indexer_text_seeds fuzz/corpus/query_parser
//
// scripts/fuzz-indexer's merge keeps every seed-* file (ICU and libstemmer are not instrumented,
// so coverage alone would drop most scripts) and adds what the run found under libFuzzer's names.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "indexer_text_input.h"
#include "strongroom/indexer/term_extractor.h"

namespace strongroom::fuzz {
namespace {

struct Seed {
  std::string name;
  std::string language;
  std::string text;
};

std::vector<Seed> Seeds() {
  std::string many_terms;
  for (int i = 0; i < 600; ++i) many_terms += "w" + std::to_string(i) + " ";
  std::string forty_terms;
  for (int i = 0; i < 40; ++i) forty_terms += "term" + std::to_string(i) + " ";
  std::string zalgo = "z";
  for (int i = 0; i < 40; ++i) zalgo += "\xcc\x81\xcc\xa7\xcd\x9b";
  return {
      {"english-sentence", "english",
       "Launched the launch checklist for Q3-2027: v1.2 ships on 3.14; don\xe2\x80\x99t forget "
       "John's notes (1,000 items, alice@acme.example, https://example.com/a_b)."},
      {"english-forms", "english", "launch launches Launched LAUNCHING checklists"},
      {"compatibility-forms", "english",
       "\xef\xbc\xac\xef\xbc\xa1\xef\xbc\xb5\xef\xbc\xae\xef\xbc\xa3\xef\xbc\xa8 \xef\xac\x81nal "
       "caf\xc3\xa9 CAFE\xcc\x81 Stra\xc3\x9f"
       "e x\xc2\xb2 \xe2\x85\xab \xc2\xbd"},
      {"combining-marks", "english",
       "e\xcc\x81\xcc\x82\xcc\x83 a\xcc\x8a o\xcc\x88 " + zalgo +
           " \xe0\xa4\xb9\xe0\xa4\xbf\xe0\xa4\xa8\xe0\xa5\x8d\xe0\xa4\xa6\xe0\xa5\x80"},
      {"chinese", "english",
       "\xe6\x88\x91\xe4\xbb\xac\xe5\x9c\xa8\xe5\x8c\x97\xe4\xba\xac\xe5\xbc\x80\xe4\xbc\x9a\xe3"
       "\x80\x82\xe5\x8f\x91\xe5\xb8\x83\xe6\xb8\x85\xe5\x8d\x95"},
      {"japanese", "english",
       "\xe6\x9d\xb1\xe4\xba\xac\xe3\x81\xab\xe4\xbd\x8f\xe3\x82\x93\xe3\x81\xa7\xe3\x81\x84\xe3"
       "\x81\xbe\xe3\x81\x99\xe3\x80\x82\xef\xbd\xb6\xef\xbe\x80\xef\xbd\xb6\xef\xbe\x85 "
       "\xe3\x82\xab\xe3\x82\xbf\xe3\x82\xab\xe3\x83\x8a"},
      {"korean", "english",
       "\xec\x95\x88\xeb\x85\x95\xed\x95\x98\xec\x84\xb8\xec\x9a\x94 "
       "\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab"},
      {"thai", "english",
       "\xe0\xb8\xaa\xe0\xb8\xa7\xe0\xb8\xb1\xe0\xb8\xaa\xe0\xb8\x94\xe0\xb8\xb5\xe0\xb8\x84\xe0"
       "\xb8\xa3\xe0\xb8\xb1\xe0\xb8\x9a"},
      {"hebrew-arabic-rtl", "english",
       "\xe2\x80\x8f\xd7\xa9\xd7\x81\xd6\xb8\xd7\x9c\xd7\x95\xd6\xb9\xd7\x9d \xd7\xa2\xd7\x95\xd7"
       "\x9c\xd7\x9d\xe2\x80\x8f \xe2\x80\xae\xd9\x85\xd9\x8e\xd8\xb1\xd9\x92\xd8\xad\xd9\x8e"
       "\xd8\xa8\xd9\x8b\xd8\xa7\xe2\x80\xac \xd9\xa3\xd9\xa4\xd9\xa5"},
      {"arabic-stemmer", "arabic",
       "\xd8\xa7\xd9\x84\xd9\x85\xd9\x83\xd8\xaa\xd8\xa8\xd8\xa9 \xd9\x83\xd8\xaa\xd8\xa8"},
      {"emoji", "english",
       "hi \xf0\x9f\x91\x8b\xf0\x9f\x8f\xbd \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80"
       "\x8d\xf0\x9f\x91\xa7 \xf0\x9f\x87\xab\xf0\x9f\x87\xb7 1\xef\xb8\x8f\xe2\x83\xa3 "
       "\xf0\x9f\x9a\x80launch\xf0\x9f\x9a\x80"},
      {"german", "german", "Die Katzen und H\xc3\xa4user der Donaudampfschifffahrtsgesellschaft"},
      {"russian", "russian",
       "\xd0\x97\xd0\xb0\xd0\xbf\xd1\x83\xd1\x81\xd0\xba \xd0\xb7\xd0\xb0"
       "\xd0\xbf\xd1\x83\xd1\x81\xd0\xba\xd0\xb8"},
      {"greek", "greek", "\xce\x9f\xce\x94\xce\x8c\xce\xa3 \xce\xbf\xce\xb4\xcf\x8c\xcf\x82"},
      {"turkish", "turkish", "\xc4\xb0stanbul ISTANBUL \xc4\xb1l\xc4\xb1k"},
      {"controls", "english", std::string("alpha\0beta\x01gamma\r\n\t\x7f", 21)},
      {"long-word", "english", "short " + std::string(70, 'x') + " tail"},
      {"many-terms", "english", many_terms},
      {"query-phrase", "english", "\"launch checklist\""},
      {"query-forty-terms", "english", forty_terms},
      {"query-punctuation", "english", "!!! ... ?"},
      {"empty", "english", ""},
      {"invalid-continuation", "english", "launch \x80 plan"},
      {"invalid-truncated", "english", "launch \xe2\x82"},
      {"invalid-overlong", "english", "launch \xc0\xaf \xe0\x80\xaf"},
      {"invalid-surrogate", "english", "launch \xed\xa0\x80\xed\xb0\x80"},
      {"invalid-too-large", "english", "launch \xf4\x90\x80\x80"},
      {"invalid-ff", "english", "launch \xff\xfe"},
  };
}

}  // namespace
}  // namespace strongroom::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir(argv[1]);
  std::filesystem::create_directories(dir);
  const std::vector<std::string> languages =
      strongroom::indexer::TermExtractor::SupportedLanguages();
  for (const strongroom::fuzz::Seed& seed : strongroom::fuzz::Seeds()) {
    const auto found = std::find(languages.begin(), languages.end(), seed.language);
    if (found == languages.end()) {
      std::fprintf(stderr, "no stemmer for %s\n", seed.language.c_str());
      return 1;
    }
    const std::filesystem::path path = dir / ("seed-" + seed.name);
    std::ofstream out(path, std::ios::binary);
    out << strongroom::fuzz::LanguageByte(found - languages.begin(), languages.size()) << seed.text;
    if (!out) {
      std::fprintf(stderr, "%s: write failed\n", path.c_str());
      return 1;
    }
  }
  return 0;
}
