#include "strongroom/indexer/query_parser.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace strongroom::indexer {
namespace {

using Terms = std::vector<std::string>;

class QueryParserTest : public ::testing::Test {
 protected:
  Result<Terms> Parse(std::string_view query) { return ParseQuery(extractor_, query); }

  void ExpectRefused(std::string_view query, const std::string& words) {
    Result<Terms> terms = Parse(query);
    ASSERT_FALSE(terms.ok()) << query;
    EXPECT_EQ(terms.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(terms.error().message().find(words), std::string::npos) << terms.error().message();
  }

  TermExtractor extractor_ = std::move(TermExtractor::New()).value();
};

TEST_F(QueryParserTest, AQueryFindsTheTermsTheIndexHolds) {
  Result<Terms> query = Parse("Launched checklists");
  ASSERT_TRUE(query.ok()) << query.error().ToString();
  EXPECT_EQ(*query, (Terms{"launch", "checklist"}));
  Result<TermSet> indexed = extractor_.Extract("Here is the launch checklist for Q3-2027.");
  ASSERT_TRUE(indexed.ok());
  for (const std::string& term : *query) EXPECT_TRUE(indexed->Contains(term)) << term;

  Result<Terms> numbers = Parse("q3 2027");
  ASSERT_TRUE(numbers.ok());
  for (const std::string& term : *numbers) EXPECT_TRUE(indexed->Contains(term)) << term;
}

TEST_F(QueryParserTest, QuotesAndOrderDoNotCountAndTermsAreDistinct) {
  EXPECT_EQ(Parse("\"checklist launch\"").value(), (Terms{"checklist", "launch"}));
  EXPECT_EQ(Parse("launch LAUNCHES launched").value(), Terms{"launch"});
}

TEST_F(QueryParserTest, AQueryWithoutTermsIsRefused) {
  for (std::string_view query : {"", "   ", "!!! ?", "\xf0\x9f\x91\x8d \xf0\x9f\x9a\x80", "\t\n"}) {
    ExpectRefused(query, "no word to search for");
  }
}

TEST_F(QueryParserTest, ThirtyTwoTermsAreTheMost) {
  std::string query;
  for (int i = 0; i < 32; ++i) query += "w" + std::to_string(i) + " ";
  Result<Terms> at_limit = Parse(query + "w0 w31");
  ASSERT_TRUE(at_limit.ok()) << at_limit.error().ToString();
  EXPECT_EQ(at_limit->size(), 32u);
  ExpectRefused(query + "w32", "at most 32 distinct terms; this one has 33");
}

TEST_F(QueryParserTest, AQueryOverTheByteLimitIsRefused) {
  const std::string at_limit = "launch" + std::string(kMaxQueryBytes - 6, ' ');
  EXPECT_TRUE(Parse(at_limit).ok());
  ExpectRefused(at_limit + " ", "at most 2048 bytes; this one is 2049");
}

TEST_F(QueryParserTest, InvalidUtf8IsRefused) {
  for (std::string_view query : {"launch \xc3", "\xed\xa0\x80", "plan \xff"}) {
    ExpectRefused(query, "not valid UTF-8");
  }
}

TEST_F(QueryParserTest, AWordTooLongToBeIndexedIsRefused) {
  const std::string word(kMaxWordBytes + 1, 'x');
  ExpectRefused("launch " + word, "at most 64 bytes");
  EXPECT_TRUE(Parse("launch " + std::string(kMaxWordBytes, 'x')).ok());
}

TEST_F(QueryParserTest, ARefusalNeverQuotesTheQuery) {
  std::string many;
  for (int i = 0; i < 40; ++i) many += "secretword" + std::to_string(i) + " ";
  for (const std::string& query :
       {many, std::string("secretword \xc3"), "secretword " + std::string(100, 'y'),
        "secretword" + std::string(kMaxQueryBytes, ' ')}) {
    Result<Terms> terms = Parse(query);
    ASSERT_FALSE(terms.ok());
    EXPECT_EQ(terms.error().message().find("secretword"), std::string::npos)
        << terms.error().message();
  }
}

}  // namespace
}  // namespace strongroom::indexer
