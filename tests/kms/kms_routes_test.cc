// The KMS protocol listener's routes (KmsRoutes, kms_server.h) without a socket: what reaches the
// message handler, what the listener refuses itself, and overload. The handler here stands in
// for KmsService::Handle, whose answers the listener passes on as they are; kmsd_test.cc drives
// the real service through the real listener.
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/HTTPRequest.h>
#include <gtest/gtest.h>

#include <future>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "strongroom/kms/kms_server.h"

namespace strongroom::kms {
namespace {

using Poco::Net::HTTPRequest;

constexpr char kInfo[] = R"({"kmsCluster":"kms://kms.test"})";

std::string CodeOf(const http::Response& response) {
  return Poco::JSON::Parser()
      .parse(response.body)
      .extract<Poco::JSON::Object::Ptr>()
      ->getValue<std::string>("code");
}

// A request as a client sends it: a head, and a body stream.
struct Call {
  Call(const std::string& method, const std::string& target, const std::string& body = "",
       const std::string& type = "application/jose")
      : head(method, target, Poco::Net::HTTPMessage::HTTP_1_1), stream(body) {
    if (!body.empty()) {
      head.setContentLength64(static_cast<Poco::Int64>(body.size()));
      head.setContentType(type);
    }
  }
  http::Response AnswerFrom(KmsRoutes& routes) {
    http::Request request(head, stream);
    return http::Answer(routes, request);
  }
  HTTPRequest head;
  std::istringstream stream;
};

class KmsRoutesTest : public ::testing::Test {
 protected:
  void Make() {
    routes_ = std::make_unique<KmsRoutes>(
        [this](std::string_view message) {
          handled_.emplace_back(message);
          return reply_;
        },
        [this] { return info_; }, [this] { return health_; }, options_);
  }

  // One token of two ready: serving, degraded.
  static ServingHealth Degraded() {
    ServingHealth health;
    health.tokens.resize(2);
    health.tokens[0].state = hsm::TokenState::kReady;
    health.tokens[1].state = hsm::TokenState::kUnavailable;
    health.ready = 1;
    return health;
  }

  KmsServerOptions options_;
  ServingHealth health_ = Degraded();
  std::string info_ = kInfo;
  KmsReply reply_{200, "application/jose", "sealed.answer.of.the.kms"};
  std::vector<std::string> handled_;
  std::unique_ptr<KmsRoutes> routes_;
};

TEST_F(KmsRoutesTest, AMessageGoesToTheServiceAndItsReplyIsTheAnswerAsItIs) {
  Make();
  http::Response answer = Call("POST", "/kms/messages", "a.b.c.d.e").AnswerFrom(*routes_);
  EXPECT_EQ(answer.status, 200);
  EXPECT_EQ(answer.content_type, "application/jose");
  EXPECT_EQ(answer.body, "sealed.answer.of.the.kms");
  EXPECT_EQ(answer.header("Retry-After"), "");
  EXPECT_EQ(handled_, std::vector<std::string>{"a.b.c.d.e"});

  reply_ = {503, "application/json", R"({"code":"hsm_unavailable","message":"..."})"};
  answer = Call("POST", "/kms/messages", "a.b.c.d.e").AnswerFrom(*routes_);
  EXPECT_EQ(answer.status, 503);
  EXPECT_EQ(answer.body, reply_.body);
  EXPECT_EQ(answer.header("Retry-After"), "1");
}

TEST_F(KmsRoutesTest, AMessageNotSentAsJoseOrTooLargeIsRefusedAndNeverHandled) {
  Make();
  http::Response answer =
      Call("POST", "/kms/messages", "a.b.c.d.e", "application/json").AnswerFrom(*routes_);
  EXPECT_EQ(answer.status, 415);
  EXPECT_EQ(CodeOf(answer), "media_type");
  EXPECT_FALSE(answer.close);

  answer =
      Call("POST", "/kms/messages", std::string(kMaxKmsMessageBytes + 1, 'a')).AnswerFrom(*routes_);
  EXPECT_EQ(answer.status, 413);
  EXPECT_EQ(CodeOf(answer), "message_size");
  EXPECT_TRUE(answer.close);  // answered at once; the rest of the body is not waited for
  EXPECT_TRUE(handled_.empty());
}

TEST_F(KmsRoutesTest, InfoIsAGetAndEveryOtherPathOrMethodIsRefused) {
  Make();
  http::Response info = Call("GET", "/kms/info").AnswerFrom(*routes_);
  EXPECT_EQ(info.status, 200);
  EXPECT_EQ(info.body, kInfo);
  EXPECT_EQ(info.content_type, "application/json");
  // The document is asked for at each request: the identity in service changes when its token
  // fails (kms_identities.h).
  info_ = R"({"kmsCluster":"kms://kms.acme.test","rsaPublicKey":{"kid":"standby"}})";
  EXPECT_EQ(Call("GET", "/kms/info").AnswerFrom(*routes_).body, info_);

  http::Response post_info = Call("POST", "/kms/info", "x").AnswerFrom(*routes_);
  EXPECT_EQ(post_info.status, 405);
  EXPECT_EQ(post_info.header("Allow"), "GET");
  EXPECT_EQ(CodeOf(post_info), "method_not_allowed");
  http::Response get_messages = Call("GET", "/kms/messages").AnswerFrom(*routes_);
  EXPECT_EQ(get_messages.status, 405);
  EXPECT_EQ(get_messages.header("Allow"), "POST");
  http::Response elsewhere = Call("GET", "/kms/keys").AnswerFrom(*routes_);
  EXPECT_EQ(elsewhere.status, 404);
  EXPECT_EQ(CodeOf(elsewhere), "not_found");
  EXPECT_TRUE(handled_.empty());
  EXPECT_EQ(routes_->counters().requests, 5u);
}

TEST_F(KmsRoutesTest, HealthSaysWhetherTheNodeCanServeAndNamesNothing) {
  Make();
  http::Response degraded = Call("GET", "/health").AnswerFrom(*routes_);
  EXPECT_EQ(degraded.status, 200);
  EXPECT_EQ(degraded.body, R"({"database":true,"status":"degraded","tokens":2,"tokensReady":1})");
  EXPECT_TRUE(degraded.header("Retry-After").empty());

  health_.tokens[1].state = hsm::TokenState::kReady;
  health_.ready = 2;
  EXPECT_EQ(Call("GET", "/health").AnswerFrom(*routes_).body,
            R"({"database":true,"status":"ok","tokens":2,"tokensReady":2})");

  // No token ready, or the database gone: 503 with Retry-After, whatever else holds.
  health_.tokens[0].state = hsm::TokenState::kUnavailable;
  health_.tokens[1].state = hsm::TokenState::kUnavailable;
  health_.ready = 0;
  http::Response no_token = Call("GET", "/health").AnswerFrom(*routes_);
  EXPECT_EQ(no_token.status, 503);
  EXPECT_EQ(no_token.body,
            R"({"database":true,"status":"unavailable","tokens":2,"tokensReady":0})");
  EXPECT_EQ(no_token.header("Retry-After"), "1");
  health_ = Degraded();
  health_.database = Error(ErrorCode::kUnavailable, "the database is down");
  http::Response no_database = Call("GET", "/health").AnswerFrom(*routes_);
  EXPECT_EQ(no_database.status, 503);
  EXPECT_EQ(no_database.body,
            R"({"database":false,"status":"unavailable","tokens":2,"tokensReady":1})");
  EXPECT_EQ(Call("POST", "/health", "x").AnswerFrom(*routes_).status, 405);
  EXPECT_TRUE(handled_.empty());
}

TEST_F(KmsRoutesTest, WhenEverySlotIsBusyARequestIs503OverloadedWithRetryAfter) {
  options_.max_in_flight = 1;
  options_.max_queued = 0;
  std::promise<void> entered;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  routes_ = std::make_unique<KmsRoutes>(
      [&](std::string_view) {
        entered.set_value();
        released.wait();
        return reply_;
      },
      [] { return std::string(kInfo); }, [] { return Degraded(); }, options_);
  std::thread busy([&] {
    EXPECT_EQ(Call("POST", "/kms/messages", "a.b.c.d.e").AnswerFrom(*routes_).status, 200);
  });
  entered.get_future().wait();
  // Any request waits for a slot, /kms/info too; a health check does not: a busy node is not a
  // dead one.
  http::Response refused = Call("GET", "/kms/info").AnswerFrom(*routes_);
  http::Response health = Call("GET", "/health").AnswerFrom(*routes_);
  release.set_value();
  EXPECT_EQ(health.status, 200) << health.body;
  busy.join();
  EXPECT_EQ(refused.status, 503);
  EXPECT_EQ(CodeOf(refused), "overloaded");
  EXPECT_EQ(refused.header("Retry-After"), "1");
  EXPECT_EQ(routes_->counters().overloaded, 1u);
  EXPECT_EQ(Call("GET", "/kms/info").AnswerFrom(*routes_).status, 200);
}

}  // namespace
}  // namespace strongroom::kms
