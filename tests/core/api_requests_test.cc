#include "strongroom/core/api_requests.h"

#include <gtest/gtest.h>

#include <string>

#include "strongroom/core/kms_relay.h"

namespace strongroom::core {
namespace {

template <typename T>
std::string RefusalOf(const Result<T>& result) {
  EXPECT_FALSE(result.ok());
  if (result.ok()) return "";
  EXPECT_EQ(result.error().code(), ErrorCode::kInvalidArgument);
  return result.error().message();
}

TEST(ApiRequestsTest, CreateConversationReadsEveryField) {
  auto create = ParseCreateConversation(
      R"({"kmsResourceUri":"kms://k/resources/1","keyUri":"kms://k/keys/2",)"
      R"("participants":["bob","carol"],"encryptedTitle":"a.b.c.d.e","kmsMessage":"x.y.z"})");
  ASSERT_TRUE(create.ok()) << create.error().ToString();
  EXPECT_EQ(create->conversation.kms_resource_uri, "kms://k/resources/1");
  EXPECT_EQ(create->conversation.key_uri, "kms://k/keys/2");
  EXPECT_EQ(create->conversation.participants, (std::vector<std::string>{"bob", "carol"}));
  EXPECT_EQ(create->conversation.encrypted_title, "a.b.c.d.e");
  EXPECT_EQ(create->kms_message, "x.y.z");
  auto minimal =
      ParseCreateConversation(R"({"kmsResourceUri":"kms://k/resources/1","keyUri":"k"})");
  ASSERT_TRUE(minimal.ok());
  EXPECT_TRUE(minimal->conversation.participants.empty());
  EXPECT_TRUE(minimal->kms_message.empty());
}

TEST(ApiRequestsTest, BodiesThatAreNotTheRightObjectAreRefusedNamingTheProblem) {
  EXPECT_NE(RefusalOf(ParsePost("")).find("JSON object"), std::string::npos);
  EXPECT_NE(RefusalOf(ParsePost("[1,2]")).find("JSON object"), std::string::npos);
  EXPECT_NE(RefusalOf(ParsePost("{\"content\":")).find("JSON object"), std::string::npos);
  EXPECT_NE(RefusalOf(ParsePost(R"({"content":"a","colour":1})")).find("unknown field \"colour\""),
            std::string::npos);
  EXPECT_NE(RefusalOf(ParsePost(R"({"content":7})")).find("\"content\" must be a string"),
            std::string::npos);
  EXPECT_NE(RefusalOf(ParsePost(R"({})")).find("\"content\" is required"), std::string::npos);
  EXPECT_NE(RefusalOf(ParsePost(R"({"content":"a","fileIds":"f"})")).find("array of strings"),
            std::string::npos);
  EXPECT_NE(RefusalOf(ParseCreateConversation(R"({"kmsResourceUri":"https://x","keyUri":"k"})"))
                .find("kms://"),
            std::string::npos);
  EXPECT_NE(RefusalOf(ParseAddParticipants(R"({"userIds":[]})")).find("non-empty"),
            std::string::npos);
  // A member given twice is refused, not read as the last one.
  EXPECT_NE(RefusalOf(ParsePost(R"({"content":"a","content":"b"})")).find("each member once"),
            std::string::npos);
}

TEST(ApiRequestsTest, CountsAndSizesAreBounded) {
  std::string many = R"({"content":"a","fileIds":[)";
  for (std::size_t i = 0; i <= kMaxFileIdsPerActivity; ++i) many += (i ? ",\"f\"" : "\"f\"");
  many += "]}";
  EXPECT_NE(RefusalOf(ParsePost(many)).find("at most"), std::string::npos);
  std::string users = R"({"userIds":[)";
  for (std::size_t i = 0; i <= kMaxUsersPerChange; ++i) users += (i ? ",\"u\"" : "\"u\"");
  users += "]}";
  EXPECT_FALSE(ParseAddParticipants(users).ok());
  const std::string huge(kMaxJsonRequestBytes + 1, ' ');
  EXPECT_NE(RefusalOf(ParsePost(huge)).find("at most"), std::string::npos);
  const std::string big_message =
      R"({"keyUri":"k","kmsMessage":")" + std::string(kMaxRelayMessageBytes + 1, 'a') + "\"}";
  EXPECT_NE(RefusalOf(ParseRotateKey(big_message)).find("kmsMessage"), std::string::npos);
}

TEST(ApiRequestsTest, RemovalTakesAnEmptyBodyOrAnEmbeddedMessage) {
  auto none = ParseRemoveParticipant("");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  auto some = ParseRemoveParticipant(R"({"kmsMessage":"a.b.c.d.e"})");
  ASSERT_TRUE(some.ok());
  EXPECT_EQ(*some, "a.b.c.d.e");
  EXPECT_FALSE(ParseRemoveParticipant(R"({"userIds":["x"]})").ok());
}

TEST(ApiRequestsTest, SearchHasTokensPerConversationAndBoundsItsPage) {
  auto search = ParseSearch(R"({"queries":[{"conversationId":"c","tokens":["t1","t2"]},)"
                            R"({"tokens":["u"],"conversationId":"d"}],"before":9,"limit":5})");
  ASSERT_TRUE(search.ok()) << search.error().ToString();
  ASSERT_EQ(search->queries.size(), 2u);
  EXPECT_EQ(search->queries[0].conversation_id, "c");
  EXPECT_EQ(search->queries[0].tokens, (std::vector<std::string>{"t1", "t2"}));
  EXPECT_EQ(search->queries[1].conversation_id, "d");
  EXPECT_EQ(search->queries[1].tokens, (std::vector<std::string>{"u"}));
  EXPECT_EQ(search->before, 9);
  EXPECT_EQ(search->limit, 5u);
  const std::string room = R"({"conversationId":"c","tokens":["t"]})";
  for (const std::string& bad : std::vector<std::string>{
           R"({"queries":[{"conversationId":"c","tokens":[]}]})",
           R"({"queries":[{"conversationId":"c"}]})",
           R"({"queries":[{"tokens":["t"]}]})",
           R"({"queries":[{"conversationId":"c","tokens":["t"],"x":1}]})",
           R"({"queries":[{"conversationId":7,"tokens":["t"]}]})",
           R"({"queries":["c"]})",
           R"({"queries":[]})",
           R"({"queries":{}})",
           R"({})",
           R"({"conversationIds":["c"],"tokens":["t"]})",  // the old shape
           R"({"queries":[)" + room + R"(],"limit":0})",
           R"({"queries":[)" + room + R"(],"limit":1.5})",
           R"({"queries":[)" + room + R"(],"before":-1})",
           R"({"queries":[)" + room + R"(],"limit":"9"})",
       }) {
    EXPECT_FALSE(ParseSearch(bad).ok()) << bad;
  }
  std::string tokens = R"({"queries":[{"conversationId":"c","tokens":[)";
  for (std::size_t i = 0; i <= kMaxSearchTokens; ++i) tokens += (i ? ",\"t\"" : "\"t\"");
  EXPECT_FALSE(ParseSearch(tokens + "]}]}").ok());
  std::string rooms = R"({"queries":[)";
  for (std::size_t i = 0; i < kMaxSearchConversations; ++i) rooms += (i ? "," : "") + room;
  EXPECT_TRUE(ParseSearch(rooms + "]}").ok());
  EXPECT_FALSE(ParseSearch(rooms + "," + room + "]}").ok());
}

TEST(ApiRequestsTest, QueryStringsAreStrict) {
  auto history = ParseHistoryQuery("before=42&limit=10");
  ASSERT_TRUE(history.ok());
  EXPECT_EQ(history->before, 42);
  EXPECT_FALSE(history->after.has_value());
  EXPECT_EQ(history->limit, 10u);
  auto defaults = ParseHistoryQuery("");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->limit, kDefaultPageSize);
  EXPECT_NE(RefusalOf(ParseHistoryQuery("before=1&after=2")).find("not both"), std::string::npos);
  EXPECT_FALSE(ParseHistoryQuery("limit=0").ok());
  EXPECT_FALSE(ParseHistoryQuery("limit=201").ok());
  EXPECT_FALSE(ParseHistoryQuery("before=-3").ok());
  EXPECT_FALSE(ParseHistoryQuery("before=99999999999999999999").ok());
  EXPECT_FALSE(ParseHistoryQuery("before=1&before=2").ok());
  EXPECT_NE(RefusalOf(ParseHistoryQuery("sort=asc")).find("unknown query parameter"),
            std::string::npos);
  auto cursor = ParseEventsQuery("cursor=7");
  ASSERT_TRUE(cursor.ok());
  EXPECT_EQ(*cursor, 7);
  auto no_cursor = ParseEventsQuery("");
  ASSERT_TRUE(no_cursor.ok());
  EXPECT_FALSE(no_cursor->has_value());
  auto cluster = ParseRelayQuery("cluster=kms%3A%2F%2Fkms.acme.test");
  ASSERT_TRUE(cluster.ok());
  EXPECT_EQ(*cluster, "kms://kms.acme.test");
  EXPECT_EQ(*ParseRelayQuery("cluster=kms://KMS.Acme.test"), "kms://kms.acme.test");
  EXPECT_FALSE(ParseRelayQuery("cluster=kms://kms.acme.test?authId=x").ok());
  EXPECT_FALSE(ParseRelayQuery("cluster=https://kms.acme.test").ok());
  EXPECT_FALSE(ParseRelayQuery("cluster=kms://kms.acme.test/keys/1").ok());
  EXPECT_FALSE(ParseRelayQuery("").ok());
}

TEST(ApiRequestsTest, ComplianceQueriesNameTheUser) {
  auto list = ParseComplianceListQuery("user=alice%40acme.test&before=9&limit=3");
  ASSERT_TRUE(list.ok()) << list.error().ToString();
  EXPECT_EQ(list->user, "alice@acme.test");
  EXPECT_EQ(list->list.before, 9);
  EXPECT_EQ(list->list.limit, 3u);
  auto history = ParseComplianceHistoryQuery("user=bob&after=4");
  ASSERT_TRUE(history.ok()) << history.error().ToString();
  EXPECT_EQ(history->user, "bob");
  EXPECT_EQ(history->history.after, 4);
  EXPECT_EQ(history->history.limit, kDefaultPageSize);
  EXPECT_NE(RefusalOf(ParseComplianceListQuery("limit=3")).find("user"), std::string::npos);
  EXPECT_FALSE(ParseComplianceListQuery("user=").ok());
  EXPECT_FALSE(ParseComplianceListQuery("user=a&user=b").ok());
  EXPECT_FALSE(ParseComplianceListQuery("user=a&after=1").ok());  // lists have no after
  EXPECT_FALSE(ParseComplianceHistoryQuery("user=a&before=1&after=2").ok());
  EXPECT_FALSE(ParseComplianceHistoryQuery("user=a&cursor=1").ok());
  // The participants' queries take no user.
  EXPECT_FALSE(ParseListQuery("user=a").ok());
  EXPECT_FALSE(ParseHistoryQuery("user=a").ok());
}

}  // namespace
}  // namespace strongroom::core
