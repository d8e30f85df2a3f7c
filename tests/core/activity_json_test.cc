#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>

#include "strongroom/core/api_json.h"

namespace strongroom::core {
namespace {

Poco::JSON::Object::Ptr Parse(const std::string& json) {
  Poco::JSON::Parser parser;
  return parser.parse(json).extract<Poco::JSON::Object::Ptr>();
}

TEST(ActivityJsonTest, EveryFieldRoundTripsThroughAJsonParser) {
  Activity activity;
  activity.seq = 9007199254740993;  // beyond a double's integers: must stay exact
  activity.id = "0b7e3f2a-1c4d-4e5f-8a9b-0c1d2e3f4a5b";
  activity.conversation_id = "c";
  // Quotes, backslashes, every control character, and multi-byte UTF-8 left as it is.
  std::string tricky = "a \"quoted\" \\ back\\slash \xce\x9b \xf0\x9f\x94\x91 ";
  for (int c = 0; c < 0x20; ++c) tricky += static_cast<char>(c);
  activity.actor = tricky;
  activity.verb = "add";
  activity.content = "eyJhbGciOiJkaXIifQ..aXY.Y2lwaGVy.dGFn";
  activity.key_uri = "kms://kms.acme.test/keys/1";
  activity.object_users = {"bob@acme.test", tricky, ""};
  activity.file_ids = {"f1", "f2"};
  activity.client_activity_id = "retry-1";
  activity.published_ms = 1796133804576;

  Poco::JSON::Object::Ptr json = Parse(ActivityJson(activity));
  EXPECT_EQ(json->getValue<Poco::Int64>("seq"), activity.seq);
  EXPECT_EQ(json->getValue<std::string>("id"), activity.id);
  EXPECT_EQ(json->getValue<std::string>("conversationId"), "c");
  EXPECT_EQ(json->getValue<std::string>("actor"), tricky);
  EXPECT_EQ(json->getValue<std::string>("verb"), "add");
  EXPECT_EQ(json->getValue<std::string>("content"), activity.content);
  EXPECT_EQ(json->getValue<std::string>("keyUri"), activity.key_uri);
  Poco::JSON::Array::Ptr users = json->getArray("objectUsers");
  ASSERT_TRUE(users);
  ASSERT_EQ(users->size(), 3u);
  EXPECT_EQ(users->getElement<std::string>(1), tricky);
  EXPECT_EQ(users->getElement<std::string>(2), "");
  EXPECT_EQ(json->getArray("fileIds")->size(), 2u);
  EXPECT_EQ(json->getValue<std::string>("clientActivityId"), "retry-1");
  EXPECT_EQ(json->getValue<std::string>("published"), "2026-12-01T14:03:24.576Z");
}

TEST(ActivityJsonTest, EmptyOptionalFieldsAreLeftOut) {
  Activity activity;
  activity.seq = 1;
  activity.id = "i";
  activity.conversation_id = "c";
  activity.actor = "alice@acme.test";
  activity.verb = "leave";
  Poco::JSON::Object::Ptr json = Parse(ActivityJson(activity));
  for (const char* absent : {"content", "keyUri", "objectUsers", "fileIds", "clientActivityId"}) {
    EXPECT_FALSE(json->has(absent)) << absent;
  }
  EXPECT_EQ(json->getValue<std::string>("published"), "1970-01-01T00:00:00.000Z");
}

}  // namespace
}  // namespace strongroom::core
