// The core writes its API's objects (core/api_json.h) and the SDK reads them (client/core_json.h):
// two realms that share no code, held here to one wire vocabulary. Every member the core writes
// must read back unchanged, and the activity the SDK writes for an export must be the core's.
#include "strongroom/client/core_json.h"

#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "strongroom/core/api_json.h"

namespace strongroom {
namespace {

Poco::JSON::Object::Ptr Parse(const std::string& json) {
  Poco::JSON::Parser parser;
  return parser.parse(json).extract<Poco::JSON::Object::Ptr>();
}

std::string Stringify(const Poco::JSON::Object& object) {
  std::ostringstream out;
  object.stringify(out);
  return out.str();
}

// Quotes, backslashes, every control character, and multi-byte UTF-8.
std::string Tricky() {
  std::string text = "a \"quoted\" \\ back\\slash \xce\x9b \xf0\x9f\x94\x91 ";
  for (int c = 1; c < 0x20; ++c) text += static_cast<char>(c);
  return text;
}

core::Activity FullActivity() {
  core::Activity a;
  a.seq = 9007199254740993;  // beyond a double's integers: must stay exact
  a.id = "0b7e3f2a-1c4d-4e5f-8a9b-0c1d2e3f4a5b";
  a.conversation_id = "6f1c0a3e-9b2d-4c7e-8f10-2a3b4c5d6e7f";
  a.actor = Tricky();
  a.verb = "share";
  a.content = "eyJhbGciOiJkaXIifQ..aXY.Y2lwaGVy.dGFn";
  a.key_uri = "kms://kms.acme.test/keys/1";
  a.object_users = {"bob@acme.test", Tricky(), ""};
  a.file_ids = {"f1", "f2"};
  a.client_activity_id = "retry-1";
  a.published_ms = 1796133804576;
  // An edit's and an edited or retracted message's members, all at once for the wire's sake.
  a.target_id = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
  a.target_seq = 9007199254740991;
  a.edited_ms = 1796133804577;
  a.retracted_ms = 1796133804578;
  return a;
}

void ExpectSame(const client::Activity& read, const core::Activity& written) {
  EXPECT_EQ(read.seq, written.seq);
  EXPECT_EQ(read.id, written.id);
  EXPECT_EQ(read.conversation_id, written.conversation_id);
  EXPECT_EQ(read.actor, written.actor);
  EXPECT_EQ(read.verb, written.verb);
  EXPECT_EQ(read.content, written.content);
  EXPECT_EQ(read.key_uri, written.key_uri);
  EXPECT_EQ(read.object_users, written.object_users);
  EXPECT_EQ(read.file_ids, written.file_ids);
  EXPECT_EQ(read.client_activity_id, written.client_activity_id);
  EXPECT_EQ(read.published_ms, written.published_ms);
  EXPECT_EQ(read.target_id, written.target_id);
  EXPECT_EQ(read.target_seq, written.target_seq);
  EXPECT_EQ(read.edited_ms, written.edited_ms);
  EXPECT_EQ(read.retracted_ms, written.retracted_ms);
}

core::Conversation FullConversation() {
  core::Conversation c;
  c.id = "6f1c0a3e-9b2d-4c7e-8f10-2a3b4c5d6e7f";
  c.kms_resource_uri = "kms://kms.acme.test/resources/2";
  c.current_key_uri = "kms://kms.acme.test/keys/3";
  c.encrypted_title = "eyJhbGciOiJkaXIifQ..aXY.dGl0bGU.dGFn";
  c.participants = {"alice@acme.test", Tricky()};
  c.created_by = "alice@acme.test";
  c.created_ms = 1796133804001;
  c.last_seq = 9007199254740995;
  return c;
}

void ExpectSame(const client::Conversation& read, const core::Conversation& written) {
  EXPECT_EQ(read.id, written.id);
  EXPECT_EQ(read.kms_resource_uri, written.kms_resource_uri);
  EXPECT_EQ(read.current_key_uri, written.current_key_uri);
  EXPECT_EQ(read.encrypted_title, written.encrypted_title);
  EXPECT_EQ(read.participants, written.participants);
  EXPECT_EQ(read.created_by, written.created_by);
  EXPECT_EQ(read.created_ms, written.created_ms);
  EXPECT_EQ(read.last_seq, written.last_seq);
}

TEST(CoreJsonTest, TheSdkReadsBackEveryMemberOfAnActivityTheCoreWrites) {
  const core::Activity written = FullActivity();
  Result<client::Activity> read = client::ActivityFromJson(*Parse(core::ActivityJson(written)));
  ASSERT_TRUE(read.ok()) << read.error().ToString();
  ExpectSame(*read, written);
}

TEST(CoreJsonTest, AnActivityWithoutOptionalMembersReadsBackEmpty) {
  core::Activity written;
  written.seq = 1;
  written.id = "i";
  written.conversation_id = "c";
  written.actor = "alice@acme.test";
  written.verb = "leave";
  Result<client::Activity> read = client::ActivityFromJson(*Parse(core::ActivityJson(written)));
  ASSERT_TRUE(read.ok()) << read.error().ToString();
  ExpectSame(*read, written);
}

TEST(CoreJsonTest, TheSdkWritesAnActivityAsTheCoreDoes) {
  const core::Activity written = FullActivity();
  Result<client::Activity> read = client::ActivityFromJson(*Parse(core::ActivityJson(written)));
  ASSERT_TRUE(read.ok());
  // Both parsed into Poco objects (members in one order): the same document.
  EXPECT_EQ(Stringify(*client::ActivityToJson(*read)),
            Stringify(*Parse(core::ActivityJson(written))));
  // And an export reads back as it was.
  Result<client::Activity> again =
      client::ActivityFromJson(*Parse(Stringify(*client::ActivityToJson(*read))));
  ASSERT_TRUE(again.ok());
  ExpectSame(*again, written);
}

TEST(CoreJsonTest, AnActivityWithoutSeqIdConversationOrVerbIsMalformed) {
  for (const char* member : {"seq", "id", "conversationId", "verb"}) {
    Poco::JSON::Object::Ptr json = Parse(core::ActivityJson(FullActivity()));
    json->remove(member);
    Result<client::Activity> read = client::ActivityFromJson(*json);
    ASSERT_FALSE(read.ok()) << member;
    EXPECT_EQ(read.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(read.error().message().find(member), std::string::npos) << read.error().message();
  }
  Poco::JSON::Object::Ptr json = Parse(core::ActivityJson(FullActivity()));
  json->set("seq", "12");
  EXPECT_FALSE(client::ActivityFromJson(*json).ok()) << "a seq that is a string";
}

TEST(CoreJsonTest, AHistoryPageWithAMalformedActivityIsRefusedNotZeroed) {
  core::HistoryPage page;
  page.items = {FullActivity()};
  Poco::JSON::Object::Ptr json = Parse(core::HistoryPageJson(page));
  json->getArray("items")->getObject(0)->remove("seq");
  Result<client::HistoryPage> read = client::HistoryPageFromJson(*json);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.error().code(), ErrorCode::kInvalidArgument);
}

TEST(CoreJsonTest, TheSdkReadsBackEveryMemberOfAConversationTheCoreWrites) {
  const core::Conversation written = FullConversation();
  ExpectSame(client::ConversationFromJson(*Parse(core::ConversationJson(written))), written);
  core::Conversation untitled = written;
  untitled.encrypted_title.clear();
  Poco::JSON::Object::Ptr json = Parse(core::ConversationJson(untitled));
  EXPECT_FALSE(json->has("encryptedTitle"));
  ExpectSame(client::ConversationFromJson(*json), untitled);
}

TEST(CoreJsonTest, TheSdkReadsBackAFileTheCoreWrites) {
  core::FileInfo written;
  written.id = "0b7e3f2a-1c4d-4e5f-8a9b-0c1d2e3f4a5c";
  written.conversation_id = "6f1c0a3e-9b2d-4c7e-8f10-2a3b4c5d6e7f";
  written.uploader = "alice@acme.test";
  written.size = 104857600;
  written.sha256_hex = std::string(64, 'a');
  written.created_ms = 1796133804002;
  Result<client::FileInfo> read = client::FileInfoFromJson(*Parse(core::FileJson(written)));
  ASSERT_TRUE(read.ok()) << read.error().ToString();
  EXPECT_EQ(read->id, written.id);
  EXPECT_EQ(read->conversation_id, written.conversation_id);
  EXPECT_EQ(read->uploader, written.uploader);
  EXPECT_EQ(read->size, written.size);
  EXPECT_EQ(read->sha256, written.sha256_hex);
  EXPECT_EQ(read->created_ms, written.created_ms);
}

TEST(CoreJsonTest, TheSdkReadsBackThePagesTheCoreWrites) {
  core::HistoryPage history;
  history.items = {FullActivity(), FullActivity()};
  history.items[1].seq += 1;
  history.more = true;
  Result<client::HistoryPage> read = client::HistoryPageFromJson(*Parse(HistoryPageJson(history)));
  ASSERT_TRUE(read.ok()) << read.error().ToString();
  ASSERT_EQ(read->items.size(), 2u);
  ExpectSame(read->items[1], history.items[1]);
  EXPECT_TRUE(read->more);
  history.more = false;
  EXPECT_FALSE(client::HistoryPageFromJson(*Parse(HistoryPageJson(history)))->more);

  const std::vector<core::Conversation> conversations = {FullConversation(), FullConversation()};
  Result<client::ConversationPage> full =
      client::ConversationPageFromJson(*Parse(core::ConversationPageJson(conversations, 2)));
  ASSERT_TRUE(full.ok());
  ASSERT_EQ(full->items.size(), 2u);
  ExpectSame(full->items[0], conversations[0]);
  EXPECT_EQ(full->next, conversations.back().last_seq);
  Result<client::ConversationPage> last =
      client::ConversationPageFromJson(*Parse(core::ConversationPageJson(conversations, 3)));
  ASSERT_TRUE(last.ok());
  EXPECT_FALSE(last->next.has_value());
}

TEST(CoreJsonTest, TheSdkReadsAChangeAndTheKmsAnswerTheCoreRelayed) {
  const core::KmsRelayAnswer kms{200, "application/jose", "aGVhZGVy.cGF5bG9hZA.c2ln"};
  const core::Activity activity = FullActivity();
  Result<client::Change> change = client::ChangeFromJson(
      *Parse(core::WithKmsAnswer("activity", core::ActivityJson(activity), kms)));
  ASSERT_TRUE(change.ok()) << change.error().ToString();
  ExpectSame(change->activity, activity);
  ASSERT_TRUE(change->kms_answer.has_value());
  EXPECT_EQ(change->kms_answer->http_status, kms.http_status);
  EXPECT_EQ(change->kms_answer->content_type, kms.content_type);
  EXPECT_EQ(change->kms_answer->body, kms.body);
  Result<client::Change> plain = client::ChangeFromJson(
      *Parse(core::WithKmsAnswer("activity", core::ActivityJson(activity), std::nullopt)));
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->kms_answer.has_value());

  const core::Conversation conversation = FullConversation();
  Result<client::CreatedConversation> created = client::CreatedConversationFromJson(
      *Parse(core::WithKmsAnswer("conversation", core::ConversationJson(conversation), kms)));
  ASSERT_TRUE(created.ok()) << created.error().ToString();
  ExpectSame(created->conversation, conversation);
  ASSERT_TRUE(created->kms_answer.has_value());
  EXPECT_EQ(created->kms_answer->body, kms.body);
}

}  // namespace
}  // namespace strongroom
