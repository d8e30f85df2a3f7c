#include "strongroom/common/strict_json.h"

#include <gtest/gtest.h>

namespace strongroom {
namespace {

TEST(StrictJsonTest, AnObjectWithEachNameOnceIsRead) {
  auto object = ParseStrictJsonObject(R"({"a":1,"b":{"a":2,"c":[{"a":3},{"a":4}]}})");
  ASSERT_TRUE(object.ok()) << object.error().ToString();
  EXPECT_EQ((*object)->getValue<int>("a"), 1);
  EXPECT_EQ((*object)->getObject("b")->getValue<int>("a"), 2);  // the same name in another object
}

TEST(StrictJsonTest, ANameGivenTwiceInOneObjectIsRefusedAtAnyDepth) {
  for (const char* text :
       {R"({"count":1,"count":100})", R"({"client":{"credential":{"bearer":"a","bearer":"b"}}})",
        R"({"list":[{"x":1},{"y":1,"y":2}]})"}) {
    auto object = ParseStrictJsonObject(text);
    ASSERT_FALSE(object.ok()) << text;
    EXPECT_EQ(object.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(object.error().message().find("bearer"), std::string::npos);  // names nothing
  }
}

TEST(StrictJsonTest, AnythingButOneObjectIsRefused) {
  for (const char* text : {"", "[]", "1", "\"x\"", "{", R"({"a":1} {"b":2})", "null"}) {
    EXPECT_FALSE(ParseStrictJsonObject(text).ok()) << text;
  }
}

}  // namespace
}  // namespace strongroom
