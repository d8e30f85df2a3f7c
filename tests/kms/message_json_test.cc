// The hot path's direct JSON (message_json.h) against Poco's: a request it reads plainly, the
// strict parser reads alike; what it does not read, the parser decides; the retrieval's answer
// says what the Poco object of it said.
#include "strongroom/kms/message_json.h"

#include <Poco/DateTimeFormat.h>
#include <Poco/DateTimeFormatter.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Timestamp.h>
#include <gtest/gtest.h>

#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "strongroom/common/jose.h"
#include "strongroom/common/strict_json.h"

namespace strongroom::kms {
namespace {

using Poco::JSON::Object;

// The fields as the service reads them from the strict parser's object.
std::optional<RequestFields> ReadWithPoco(std::string_view json) {
  Result<Object::Ptr> parsed = ParseStrictJsonObject(json);
  if (!parsed.ok()) return std::nullopt;
  auto text = [](Object::Ptr object, const char* name) -> std::string {
    if (!object || !object->has(name) || !object->get(name).isString()) return "";
    return object->getValue<std::string>(name);
  };
  RequestFields f;
  f.method = text(*parsed, "method");
  f.uri = text(*parsed, "uri");
  f.request_id = text(*parsed, "requestId");
  Object::Ptr client = (*parsed)->getObject("client");
  f.client_id = text(client, "clientId");
  Object::Ptr credential = client ? client->getObject("credential") : nullptr;
  f.bearer = text(credential, "bearer");
  f.on_behalf = credential && credential->has("onBehalfOf");
  return f;
}

void ExpectSame(const RequestFields& a, const RequestFields& b, const std::string& json) {
  EXPECT_EQ(a.method, b.method) << json;
  EXPECT_EQ(a.uri, b.uri) << json;
  EXPECT_EQ(a.request_id, b.request_id) << json;
  EXPECT_EQ(a.client_id, b.client_id) << json;
  EXPECT_EQ(a.bearer, b.bearer) << json;
  EXPECT_EQ(a.on_behalf, b.on_behalf) << json;
}

// Whatever the plain reader reads, the strict parser reads, to the same fields.
void ExpectNeverReadDifferently(const std::string& json) {
  std::optional<RequestFields> plain = ReadPlainRequest(json);
  if (!plain) return;
  std::optional<RequestFields> poco = ReadWithPoco(json);
  ASSERT_TRUE(poco.has_value()) << "read plainly but refused by the parser: " << json;
  ExpectSame(*plain, *poco, json);
}

// A request as the SDK writes it (KmsSession: Poco's stringify).
std::string SdkRequest(const std::string& method, const std::string& uri, bool on_behalf) {
  Object credential;
  credential.set("bearer", "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln");
  if (on_behalf) {
    credential.set("onBehalfOf", "bob");
    credential.set("userId", "bob");
  }
  Object client;
  client.set("clientId", "sdk-1");
  client.set("credential", credential);
  Object request;
  request.set("client", client);
  request.set("method", method);
  request.set("uri", uri);
  request.set("requestId", "req-7");
  std::ostringstream out;
  request.stringify(out);
  return out.str();
}

TEST(MessageJsonTest, TheSdksRequestsAreReadPlainlyAndAlike) {
  for (bool on_behalf : {false, true}) {
    const std::string json = SdkRequest("retrieve", "kms://kms.acme.test/keys/k-1", on_behalf);
    std::optional<RequestFields> plain = ReadPlainRequest(json);
    ASSERT_TRUE(plain.has_value()) << json;
    EXPECT_EQ(plain->method, "retrieve");
    EXPECT_EQ(plain->uri, "kms://kms.acme.test/keys/k-1");
    EXPECT_EQ(plain->request_id, "req-7");
    EXPECT_EQ(plain->client_id, "sdk-1");
    EXPECT_EQ(plain->bearer, "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln");
    EXPECT_EQ(plain->on_behalf, on_behalf);
    ExpectNeverReadDifferently(json);
  }
}

TEST(MessageJsonTest, PlainTextsAreReadAsTheParserReadsThem) {
  for (
      const std::string json : {
          R"({"method":"create","uri":"/keys","requestId":"r","count":100,"client":{"clientId":"c","credential":{"bearer":"t"}}})",
          R"({"method":1,"uri":["x"],"requestId":null,"client":"c"})",
          R"({"client":{"clientId":{"x":1},"credential":"t"}})",
          R"({"client":{"credential":{"onBehalfOf":null,"bearer":false}}})",
          R"({"client":{"nested":{"clientId":"not this","credential":{"bearer":"nor this"}}}})",
          R"({"method":"a\"b\\c\/d\b\f\n\r\tz\u0041\u007e"})",
          R"(  { "method" : "m" , "keyUris" : [ "a" , [ ] , { } , -0 , 12 , true , false , null ] }  )",
          R"({"":"", "a":{"":{}}})",
          R"({"n":123456789012345,"m":-0,"a":{"b":{"c":{"d":{"e":{"f":{"g":[]}}}}}}})",  // 8 deep
          R"({"client":{"credential":{"bearer":"t","onBehalfOf":{"x":[1]}},"clientId":"c"}})",
          "{\"method\":\"m\"}\r\n\t ",
          R"({})",
      }) {
    std::optional<RequestFields> plain = ReadPlainRequest(json);
    EXPECT_TRUE(plain.has_value()) << json;
    ExpectNeverReadDifferently(json);
  }
}

// Text outside the plain subset, valid JSON or not, is left to the parser.
TEST(MessageJsonTest, EverythingElseIsLeftToTheParser) {
  for (const std::string& json : {
           std::string(R"({"method":"caf)") + "\xc3\xa9" + R"("})",  // not ASCII
           std::string(R"({"method":"a)") + "\x01" + R"("})",        // a control character
           std::string(R"({"method":"\u00e9"})"),                    // an escape beyond ASCII
           std::string(R"({"method":"\u0001"})"),
           std::string(R"({"method":"\ud83d\ude00"})"),
           std::string(R"({"count":1.5})"),
           std::string(R"({"count":1e3})"),
           std::string(R"({"count":0123})"),
           std::string(R"({"count":1234567890123456})"),
           std::string(R"({"method":"a","method":"b"})"),  // the parser refuses it
           std::string(R"({"client":{"clientId":"a","clientId":"b"}})"),
           std::string(R"({"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{}}}}}}}}})"),  // 9 deep
           std::string(R"({"a":[[[[[[[[]]]]]]]]})"),
           std::string(R"({"count":-})"),
           std::string(R"({"count":1.})"),
           std::string(R"({"method":"a\x"})"),
           std::string(R"({"method":"\u00G1"})"),
           std::string(R"({"method":"\u00)"),
           std::string("{\"method\":\"m\"}\f"),
           std::string(R"({"method":"m"} ,)"),
           std::string(R"({,})"),
           std::string(R"({"method"})"),
           std::string(R"({"method":})"),
           std::string(R"({"method" "m"})"),
           std::string(R"({"a":[1,]})"),
           std::string(R"({"a":[,]})"),
           std::string(R"({"a":nul})"),
           std::string(R"({"a":True})"),
           std::string("{\"method\":\"m\x7f\"}"),
           std::string(R"({"method":"m"} x)"),
           std::string(R"({"method":"m"}{})"),
           std::string(R"(["method"])"),
           std::string(R"("method")"),
           std::string(R"({"method":"m",})"),
           std::string(R"({"method":'m'})"),
           std::string(R"({"method":tru})"),
           std::string(R"({"method":"m")"),
           std::string(""),
       }) {
    EXPECT_FALSE(ReadPlainRequest(json).has_value()) << json;
  }
}

// An object of many members is the parser's (its check of repeated names grows as n log n, the
// plain reader's as n squared); 32 are read plainly.
TEST(MessageJsonTest, AnObjectOfManyMembersIsLeftToTheParser) {
  auto members = [](int n) {
    std::string json = R"({"method":"m")";
    for (int i = 1; i < n; ++i) json += ",\"m" + std::to_string(i) + "\":" + std::to_string(i);
    return json + "}";
  };
  EXPECT_TRUE(ReadPlainRequest(members(32)).has_value());
  ExpectNeverReadDifferently(members(32));
  EXPECT_FALSE(ReadPlainRequest(members(33)).has_value());
  EXPECT_FALSE(ReadPlainRequest(R"({"a":)" + members(33) + "}").has_value());
}

// Every text one edit away from a plain request (a character removed, doubled or replaced by a
// character that matters to JSON) is read plainly only as the parser reads it.
TEST(MessageJsonTest, NoTextNearARequestIsReadDifferently) {
  const std::string base = SdkRequest("retrieve", "kms://kms.acme.test/keys/k-1", true) + " ";
  const std::string specials = "{}[]\",:\\/ 0-1etnu";
  for (std::size_t at = 0; at < base.size(); ++at) {
    ExpectNeverReadDifferently(base.substr(0, at) + base.substr(at + 1));
    ExpectNeverReadDifferently(base.substr(0, at + 1) + base.substr(at));
    for (char c : specials) {
      std::string changed = base;
      changed[at] = c;
      ExpectNeverReadDifferently(changed);
    }
    if (::testing::Test::HasFailure()) return;
  }
}

// Texts a few random edits away from a request (bytes that matter to JSON, and any byte), with a
// fixed seed: whatever is read plainly is read alike by the strict parser.
TEST(MessageJsonTest, NoRandomlyEditedRequestIsReadDifferently) {
  const std::string base = SdkRequest("retrieve", "kms://kms.acme.test/keys/k-1", true);
  const std::string specials = "{}[]\",:\\/ \t0123456789.-+eEtrufalsn";
  std::mt19937 random(13);
  int plain = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string text = base;
    const int edits = 1 + static_cast<int>(random() % 3);
    for (int e = 0; e < edits && !text.empty(); ++e) {
      const std::size_t at = random() % text.size();
      const char c = random() % 4 == 0 ? static_cast<char>(random() % 256)
                                       : specials[random() % specials.size()];
      switch (random() % 3) {
        case 0:
          text[at] = c;
          break;
        case 1:
          text.insert(text.begin() + static_cast<std::ptrdiff_t>(at), c);
          break;
        default:
          text.erase(at, 1);
      }
    }
    if (ReadPlainRequest(text)) ++plain;
    ExpectNeverReadDifferently(text);
    if (::testing::Test::HasFailure()) return;
  }
  EXPECT_GT(plain, 1000);  // the edits reach texts read plainly, not only refused ones
}

TEST(MessageJsonTest, DatesAreWrittenAsPocosIso8601WithMicroseconds) {
  for (std::int64_t ms :
       {std::int64_t{0}, std::int64_t{1}, std::int64_t{999}, std::int64_t{1765044000123},
        std::int64_t{951782399999}, std::int64_t{4102444800000}, std::int64_t{1765044000000}}) {
    EXPECT_EQ(Iso8601Micro(ms),
              Poco::DateTimeFormatter::format(Poco::Timestamp(ms * 1000),
                                              Poco::DateTimeFormat::ISO8601_FRAC_FORMAT))
        << ms;
  }
}

// The retrieval's answer, read by a JSON parser, says what the service's Poco object said.
TEST(MessageJsonTest, TheRetrievalAnswerHoldsTheKeysMembers) {
  KeyRecord key;
  key.uri = "kms://kms.acme.test/keys/k-1";
  key.org = "acme";
  key.creator = "al\"ice\\ \x01 caf\xc3\xa9";
  key.client_id = "sdk-1";
  key.created_ms = 1765044000123;
  key.bind_deadline_ms = 1765044600123;
  const std::vector<std::uint8_t> material(32, 0xab);
  for (bool bound : {false, true}) {
    if (bound) {
      key.resource_uri = "kms://kms.acme.test/resources/r-1";
      key.bound_ms = 1765044100000;
      key.stop_encrypt_ms = 1765130500000;
    }
    const std::string json = RetrievedKeyAnswer("req \"7\"", key, material);
    Poco::JSON::Parser parser;
    Object::Ptr answer = parser.parse(json).extract<Object::Ptr>();
    ASSERT_TRUE(answer) << json;
    EXPECT_EQ(answer->getValue<int>("status"), 200);
    EXPECT_EQ(answer->getValue<std::string>("requestId"), "req \"7\"");
    Object::Ptr k = answer->getObject("key");
    ASSERT_TRUE(k);
    EXPECT_EQ(k->getValue<std::string>("uri"), key.uri);
    EXPECT_EQ(k->getValue<std::string>("userId"), key.creator);
    EXPECT_EQ(k->getValue<std::string>("clientId"), "sdk-1");
    EXPECT_EQ(k->getValue<std::string>("createDate"), Iso8601Micro(key.created_ms));
    Object::Ptr jwk = k->getObject("jwk");
    ASSERT_TRUE(jwk);
    EXPECT_EQ(jwk->getValue<std::string>("kty"), "oct");
    EXPECT_EQ(jwk->getValue<std::string>("kid"), key.uri);
    EXPECT_EQ(jwk->getValue<std::string>("k"), jose::Base64UrlEncode(material));
    EXPECT_EQ(jwk->size(), 3u);
    if (bound) {
      EXPECT_EQ(k->getValue<std::string>("resourceUri"), *key.resource_uri);
      EXPECT_EQ(k->getValue<std::string>("bindDate"), Iso8601Micro(*key.bound_ms));
      EXPECT_EQ(k->getValue<std::string>("expirationDate"), Iso8601Micro(*key.stop_encrypt_ms));
      EXPECT_EQ(k->size(), 8u);
    } else {
      EXPECT_FALSE(k->has("resourceUri"));
      EXPECT_FALSE(k->has("bindDate"));
      EXPECT_EQ(k->getValue<std::string>("expirationDate"), Iso8601Micro(key.bind_deadline_ms));
      EXPECT_EQ(k->size(), 6u);
    }
    EXPECT_EQ(answer->size(), 3u);
  }
}

}  // namespace
}  // namespace strongroom::kms
