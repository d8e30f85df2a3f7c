#include "strongroom/indexer/term_extractor.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace strongroom::indexer {
namespace {

using Terms = std::vector<std::string>;

TermExtractor English() {
  Result<TermExtractor> extractor = TermExtractor::New();
  EXPECT_TRUE(extractor.ok()) << extractor.error().ToString();
  return std::move(extractor).value();
}

Terms TermsOf(TermExtractor& extractor, std::string_view text) {
  Result<TermSet> terms = extractor.Extract(text);
  EXPECT_TRUE(terms.ok()) << terms.error().ToString();
  return terms.ok() ? terms->terms() : Terms{};
}

Terms TermsOf(std::string_view text) {
  TermExtractor extractor = English();
  return TermsOf(extractor, text);
}

TEST(TermExtractorTest, WordFormsGiveOneTerm) {
  TermExtractor extractor = English();
  for (const char* form : {"launch", "launches", "Launched", "LAUNCHING", "launch,"}) {
    EXPECT_EQ(TermsOf(extractor, form), Terms{"launch"}) << form;
  }
  EXPECT_EQ(TermsOf(extractor, "Launched checklists, launch checklist!"),
            (Terms{"launch", "checklist"}));
}

TEST(TermExtractorTest, CaseCompatibilityFormsAndAccentsFoldToOneTerm) {
  // Full-width letters, a ligature, composed and decomposed accents, the German sharp s.
  EXPECT_EQ(TermsOf("\xef\xbc\xac\xef\xbc\xa1\xef\xbc\xb5\xef\xbc\xae\xef\xbc\xa3\xef\xbc\xa8"),
            Terms{"launch"});                               // ＬＡＵＮＣＨ
  EXPECT_EQ(TermsOf("\xef\xac\x81nal"), TermsOf("FINAL"));  // ﬁnal
  EXPECT_EQ(TermsOf("caf\xc3\xa9"), TermsOf("CAFE\xcc\x81"));
  EXPECT_EQ(TermsOf("Stra\xc3\x9f"
                    "e"),
            TermsOf("STRASSE"));
  // A soft hyphen inside a word is dropped by the folding.
  EXPECT_EQ(TermsOf("launch\xc2\xad"
                    "es"),
            Terms{"launch"});
  // Accents are kept: these are two words.
  EXPECT_NE(TermsOf("caf\xc3\xa9"), TermsOf("cafe"));
}

TEST(TermExtractorTest, SpacesPunctuationSymbolsAndEmojiAreNoTerms) {
  // A waving hand with a skin tone, a family joined by ZWJs, a flag, a smiley, dashes, symbols.
  EXPECT_EQ(TermsOf("hi \xf0\x9f\x91\x8b\xf0\x9f\x8f\xbd "
                    "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7 "
                    "\xf0\x9f\x87\xab\xf0\x9f\x87\xb7 :) \xe2\x80\x94 ... $ % & \t\n"),
            Terms{"hi"});
  EXPECT_TRUE(TermsOf(" \xf0\x9f\x91\x8d !!! ").empty());
  EXPECT_TRUE(TermsOf("").empty());
  // NUL and other control characters separate words.
  EXPECT_EQ(TermsOf(std::string_view("alpha\0beta\x01gamma", 16)),
            (Terms{"alpha", "beta", "gamma"}));
}

TEST(TermExtractorTest, ChineseJapaneseAndThaiAreBrokenIntoDictionaryWords) {
  // 我们在北京开会: "we", "at", "Beijing", "meet" (not one term for the whole run).
  const Terms chinese = TermsOf(
      "\xe6\x88\x91\xe4\xbb\xac\xe5\x9c\xa8\xe5\x8c\x97\xe4\xba\xac"
      "\xe5\xbc\x80\xe4\xbc\x9a");
  EXPECT_EQ(chinese, (Terms{"\xe6\x88\x91\xe4\xbb\xac", "\xe5\x9c\xa8", "\xe5\x8c\x97\xe4\xba\xac",
                            "\xe5\xbc\x80\xe4\xbc\x9a"}));
  // 北京 alone is the same term, so a search for it finds the sentence.
  EXPECT_EQ(TermsOf("\xe5\x8c\x97\xe4\xba\xac"), Terms{"\xe5\x8c\x97\xe4\xba\xac"});
  // 東京に住んでいます: "Tokyo" is one of the words.
  const Terms japanese = TermsOf(
      "\xe6\x9d\xb1\xe4\xba\xac\xe3\x81\xab\xe4\xbd\x8f\xe3\x82\x93"
      "\xe3\x81\xa7\xe3\x81\x84\xe3\x81\xbe\xe3\x81\x99");
  ASSERT_GT(japanese.size(), 1u);
  EXPECT_EQ(japanese.front(), "\xe6\x9d\xb1\xe4\xba\xac");
  // สวัสดีครับ (Thai, no spaces): "hello" and the polite particle.
  EXPECT_EQ(TermsOf("\xe0\xb8\xaa\xe0\xb8\xa7\xe0\xb8\xb1\xe0\xb8\xaa\xe0\xb8\x94\xe0\xb8\xb5"
                    "\xe0\xb8\x84\xe0\xb8\xa3\xe0\xb8\xb1\xe0\xb8\x9a"),
            (Terms{"\xe0\xb8\xaa\xe0\xb8\xa7\xe0\xb8\xb1\xe0\xb8\xaa\xe0\xb8\x94\xe0\xb8\xb5",
                   "\xe0\xb8\x84\xe0\xb8\xa3\xe0\xb8\xb1\xe0\xb8\x9a"}));
}

TEST(TermExtractorTest, RightToLeftWordsAreTerms) {
  // Hebrew שלום עולם and Arabic مرحبا, with right-to-left marks around them.
  EXPECT_EQ(TermsOf("\xe2\x80\x8f\xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d \xd7\xa2\xd7\x95\xd7\x9c\xd7\x9d"
                    "\xe2\x80\x8f \xd9\x85\xd8\xb1\xd8\xad\xd8\xa8\xd8\xa7"),
            (Terms{"\xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d", "\xd7\xa2\xd7\x95\xd7\x9c\xd7\x9d",
                   "\xd9\x85\xd8\xb1\xd8\xad\xd8\xa8\xd8\xa7"}));
}

TEST(TermExtractorTest, NumbersAndMixedTokens) {
  EXPECT_EQ(TermsOf("Q3-2027"), (Terms{"q3", "2027"}));
  EXPECT_EQ(TermsOf("release v1.2 on 3.14"), (Terms{"releas", "v1.2", "on", "3.14"}));
  EXPECT_EQ(TermsOf("1,000 vs 1000"), (Terms{"1,000", "vs", "1000"}));
  // Full-width digits are digits.
  EXPECT_EQ(TermsOf("\xef\xbc\x92\xef\xbc\x90\xef\xbc\x92\xef\xbc\x97"), Terms{"2027"});
  // Identifiers with underscores stay whole.
  EXPECT_EQ(TermsOf("see __init__ and max_len"), (Terms{"see", "__init__", "and", "max_len"}));
}

TEST(TermExtractorTest, TypographicAndPlainApostrophesGiveOneTerm) {
  EXPECT_EQ(TermsOf("John\xe2\x80\x99s"), Terms{"john"});
  EXPECT_EQ(TermsOf("John's"), Terms{"john"});
  EXPECT_EQ(TermsOf("don\xe2\x80\x99t"), TermsOf("don't"));
}

TEST(TermExtractorTest, WordsOverTheLimitAreSkippedAndCounted) {
  TermExtractor extractor = English();
  const std::string at_limit(kMaxWordBytes, 'x');
  Result<TermSet> kept = extractor.Extract("a " + at_limit + " b");
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->terms(), (Terms{"a", at_limit, "b"}));
  EXPECT_EQ(kept->long_words_skipped(), 0u);

  Result<TermSet> skipped = extractor.Extract("a " + at_limit + "x b");
  ASSERT_TRUE(skipped.ok());
  EXPECT_EQ(skipped->terms(), (Terms{"a", "b"}));
  EXPECT_EQ(skipped->long_words_skipped(), 1u);

  // The limit is in bytes: 32 two-byte letters fit, 33 do not.
  std::string accents;
  for (int i = 0; i < 32; ++i) accents += "\xc3\xa9";
  EXPECT_EQ(TermsOf(extractor, accents), Terms{accents});
  Result<TermSet> long_accents = extractor.Extract(accents + "\xc3\xa9");
  ASSERT_TRUE(long_accents.ok());
  EXPECT_TRUE(long_accents->empty());
  EXPECT_EQ(long_accents->long_words_skipped(), 1u);
}

TEST(TermExtractorTest, AnActivityKeepsItsFirstDistinctTermsUpToTheCap) {
  TermExtractor extractor = English();
  std::string text;
  for (int i = 0; i < 600; ++i) text += "n" + std::to_string(i) + " n" + std::to_string(i) + " ";
  Result<TermSet> terms = extractor.Extract(text);
  ASSERT_TRUE(terms.ok());
  ASSERT_EQ(terms->size(), kMaxTermsPerActivity);
  EXPECT_TRUE(terms->truncated());
  EXPECT_EQ(terms->terms().front(), "n0");
  EXPECT_EQ(terms->terms().back(), "n511");

  // Several texts of one activity share the set: the title's terms join the message's.
  TermSet activity;
  ASSERT_TRUE(extractor.AddTerms("Launch checklist", activity).ok());
  ASSERT_TRUE(extractor.AddTerms("launches: plan.pdf", activity).ok());
  EXPECT_EQ(activity.terms(), (Terms{"launch", "checklist", "plan.pdf"}));
  EXPECT_FALSE(activity.truncated());
}

TEST(TermExtractorTest, InvalidUtf8IsRefusedAndAddsNothing) {
  TermExtractor extractor = English();
  TermSet terms;
  ASSERT_TRUE(extractor.AddTerms("kept", terms).ok());
  const std::vector<std::string> invalid = {
      "launch \x80",                  // a lone continuation byte
      "launch \xc3",                  // a sequence cut short at the end
      "launch \xe2\x82 plan",         // cut short before an ASCII byte
      "launch \xc0\xaf",              // an overlong '/'
      "launch \xe0\x80\xaf",          // an overlong three-byte form
      "launch \xed\xa0\x80",          // a surrogate (U+D800)
      "launch \xf4\x90\x80\x80",      // past U+10FFFF
      "launch \xff plan",             // a byte that never occurs in UTF-8
      "launch \xf8\x88\x80\x80\x80",  // a five-byte form
  };
  for (const std::string& text : invalid) {
    Status status = extractor.AddTerms(text, terms);
    ASSERT_FALSE(status.ok()) << text;
    EXPECT_EQ(status.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(status.error().message().find("not valid UTF-8 (at byte 7)"), std::string::npos)
        << status.error().message();
    EXPECT_EQ(status.error().message().find("launch"), std::string::npos);
    EXPECT_EQ(terms.terms(), Terms{"kept"});
  }
  // The extractor works on after a refusal.
  EXPECT_EQ(TermsOf(extractor, "launch plan"), (Terms{"launch", "plan"}));
}

TEST(TermExtractorTest, TextsOverTheLimitAreRefused) {
  TermExtractor extractor = English();
  std::string text;
  while (text.size() + 5 <= kMaxTextBytes) text += "word ";
  text.resize(kMaxTextBytes, ' ');
  Result<TermSet> at_limit = extractor.Extract(text);
  ASSERT_TRUE(at_limit.ok()) << at_limit.error().ToString();
  EXPECT_EQ(at_limit->terms(), Terms{"word"});

  Result<TermSet> over = extractor.Extract(text + "s");
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(over.error().message().find("at most 65536 bytes"), std::string::npos);
}

TEST(TermExtractorTest, TheLanguageComesFromThePolicy) {
  Result<TermExtractor> german = TermExtractor::New("german");
  ASSERT_TRUE(german.ok()) << german.error().ToString();
  EXPECT_EQ(german->language(), "german");
  EXPECT_EQ(TermsOf(*german, "Katzen Katze"), Terms{"katz"});
  EXPECT_EQ(TermsOf("Katzen Katze"), (Terms{"katzen", "katz"}));
  EXPECT_EQ(English().language(), "english");

  const std::vector<std::string> supported = TermExtractor::SupportedLanguages();
  for (const char* name : {"english", "german", "french", "spanish", "russian", "arabic"}) {
    EXPECT_NE(std::find(supported.begin(), supported.end(), name), supported.end()) << name;
    EXPECT_TRUE(TermExtractor::New(name).ok()) << name;
  }
}

TEST(TermExtractorTest, AnUnknownLanguageIsRefusedWithTheSupportedOnes) {
  for (const char* name : {"klingon", "English", "en", "", "english "}) {
    Result<TermExtractor> extractor = TermExtractor::New(name);
    ASSERT_FALSE(extractor.ok()) << name;
    EXPECT_EQ(extractor.error().code(), ErrorCode::kInvalidArgument);
    const std::string& message = extractor.error().message();
    EXPECT_NE(message.find("\"" + std::string(name) + "\""), std::string::npos) << message;
    for (const std::string& language : TermExtractor::SupportedLanguages()) {
      EXPECT_NE(message.find(language), std::string::npos) << message;
    }
  }
}

}  // namespace
}  // namespace strongroom::indexer
