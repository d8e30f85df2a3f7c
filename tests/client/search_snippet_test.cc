// The SDK's search snippets (client/search.h): the words whose terms the query has are marked,
// by the indexer's own pipeline, around the first of them.
#include <gtest/gtest.h>

#include "strongroom/client/search.h"

namespace strongroom::client {
namespace {

std::string Snippet(std::string_view text, const std::vector<std::string>& terms) {
  Result<std::string> snippet = MakeSnippet(text, terms, "english");
  EXPECT_TRUE(snippet.ok()) << snippet.error().ToString();
  return snippet.ok() ? *snippet : "";
}

TEST(SearchSnippetTest, MarksEveryWordOfAQueryTermInItsForms) {
  EXPECT_EQ(Snippet("The Launched checklists, finally.", {"launch", "checklist"}),
            "The \u00abLaunched\u00bb \u00abchecklists,\u00bb finally.");
  EXPECT_EQ(Snippet("nothing here", {"launch"}), "");
  // A file name's parts are words too.
  EXPECT_EQ(Snippet("Budget_Forecast.xlsx", {"forecast"}), "\u00abBudget_Forecast.xlsx\u00bb");
}

TEST(SearchSnippetTest, ALongTextIsCutAroundTheFirstMatch) {
  std::string text;
  for (int i = 0; i < 40; ++i) text += "filler" + std::to_string(i) + " ";
  text += "launch";
  for (int i = 0; i < 80; ++i) text += " tail" + std::to_string(i);
  const std::string snippet = Snippet(text, {"launch"});
  EXPECT_EQ(snippet.rfind("\u2026 filler36 filler37 filler38 filler39 \u00ablaunch\u00bb", 0), 0u)
      << snippet;
  EXPECT_LE(snippet.size(), 200u);
  EXPECT_EQ(snippet.substr(snippet.size() - 3), "\u2026");
}

TEST(SearchSnippetTest, AnUnknownLanguageIsAnError) {
  EXPECT_FALSE(MakeSnippet("text", {"text"}, "klingon").ok());
}

}  // namespace
}  // namespace strongroom::client
