// The route table and the adapter (http_router.h): matching, 404 and 405, the one mapping from an
// Error to a status and {"code", "message"}, exceptions, bodies; without a socket. Then the adapter
// under the HTTPS edge on 127.0.0.1: what it writes, draining, closing and taking a connection
// over.
#include "strongroom/common/http_router.h"

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/Net/WebSocket.h>
#include <gtest/gtest.h>

#include <atomic>
#include <sstream>
#include <stdexcept>
#include <string>

#include "../support/connection_flood.h"
#include "../support/test_dir.h"
#include "strongroom/common/https_server.h"
#include "strongroom/common/tls.h"

namespace strongroom::http {
namespace {

using Poco::Net::HTTPRequest;
using strongroom::testing::TestDir;
using strongroom::testing::TlsConnection;

Poco::JSON::Object::Ptr Parse(const std::string& text) {
  return Poco::JSON::Parser().parse(text).extract<Poco::JSON::Object::Ptr>();
}

std::string CodeOf(const Response& response) {
  return Parse(response.body)->getValue<std::string>("code");
}

std::string MessageOf(const Response& response) {
  return Parse(response.body)->getValue<std::string>("message");
}

// A request a test makes: a head, and a body stream that holds `body`.
struct TestRequest {
  explicit TestRequest(const std::string& method, const std::string& target,
                       const std::string& body = "")
      : head(method, target, Poco::Net::HTTPMessage::HTTP_1_1), stream(body) {
    if (!body.empty()) head.setContentLength64(static_cast<Poco::Int64>(body.size()));
  }
  Request& view() {
    if (!request) request.emplace(head, stream);
    return *request;
  }
  HTTPRequest head;
  std::istringstream stream;
  std::optional<Request> request;
};

// A small listener: the routes below, answered in `style`.
class TestEndpoint : public Endpoint {
 public:
  explicit TestEndpoint(CodeStyle style = CodeStyle::kSnakeCase)
      : Endpoint("router-test", "the test listener failed", style) {
    routes_.Add("GET", "/things", [](Request&) { return Response::Json(200, "[]"); })
        .Add("POST", "/things",
             [](Request& request) -> Response {
               SR_ASSIGN_OR_RETURN(std::string body, ReadBodyAs(request, "application/json", 16,
                                                                "a thing", "thing_size"));
               return Response::Json(201, "{\"bytes\":" + std::to_string(body.size()) + "}");
             })
        .Add("GET", "/things/{id}/parts/{part}",
             [](Request& request) {
               return Response::Json(200, "{\"id\":\"" + request.param("id") + "\",\"part\":\"" +
                                              request.param("part") + "\"}");
             })
        .Add("DELETE", "/things/{id}/parts/{part}", [](Request&) { return Response(); })
        .Add("GET", "/things/{id}/parts/{part}", [](Request&) { return Response(); })
        .Add("GET", "/fail",
             [](Request&) -> Response {
               throw std::runtime_error("the secret table t_keys is corrupt at row 42");
             })
        .Add("GET", "/error", [this](Request&) -> Response { return error_; })
        .Add("POST", "/ignore", [](Request&) { return Response::Json(200, "{}"); });
  }

  Response Serve(Request& request) override {
    ++served;
    return routes_.Dispatch(request);
  }

  Error error_{ErrorCode::kInternal, ""};
  std::atomic<int> served{0};

 private:
  Routes<> routes_{"no such thing here"};
};

TEST(RouterTest, AnUnknownPathIs404WithTheTablesMessage) {
  TestEndpoint endpoint;
  for (const char* target :
       {"/", "/nothing", "/things/1", "/things/1/parts", "/things/1/parts/2/x", "/Things"}) {
    TestRequest request("GET", target);
    Response answer = Answer(endpoint, request.view());
    EXPECT_EQ(answer.status, 404) << target;
    EXPECT_EQ(CodeOf(answer), "not_found");
    EXPECT_EQ(MessageOf(answer), "no such thing here");
    EXPECT_EQ(answer.content_type, "application/json");
    EXPECT_EQ(answer.header("Allow"), "");
  }
}

TEST(RouterTest, AKnownPathWithAnotherMethodIs405WithAllowListingItsMethods) {
  TestEndpoint endpoint;
  TestRequest put("PUT", "/things");
  Response answer = Answer(endpoint, put.view());
  EXPECT_EQ(answer.status, 405);
  EXPECT_EQ(answer.header("Allow"), "GET, POST");
  EXPECT_EQ(CodeOf(answer), "method_not_allowed");
  // Two routes of one path with the same method: listed once, in the order added.
  TestRequest post("POST", "/things/a/parts/b");
  answer = Answer(endpoint, post.view());
  EXPECT_EQ(answer.status, 405);
  EXPECT_EQ(answer.header("Allow"), "GET, DELETE");
  // The method is compared as sent: HTTP methods are case-sensitive.
  TestRequest lower("get", "/things");
  EXPECT_EQ(Answer(endpoint, lower.view()).status, 405);
}

TEST(RouterTest, ParamsAreTheDecodedSegmentsTheirPatternMatched) {
  TestEndpoint endpoint;
  TestRequest request("GET", "/things/a%20b//parts/c?x=1");
  Response answer = Answer(endpoint, request.view());
  ASSERT_EQ(answer.status, 200) << answer.body;
  EXPECT_EQ(Parse(answer.body)->getValue<std::string>("id"), "a b");
  EXPECT_EQ(Parse(answer.body)->getValue<std::string>("part"), "c");
  EXPECT_EQ(request.view().query(), "x=1");
  EXPECT_EQ(request.view().param("none"), "");
}

// An encoded slash is part of its segment: it neither starts another segment (which would let a
// target reach a route its raw path does not name) nor disappears.
TEST(RouterTest, AnEncodedSlashStaysInItsSegment) {
  TestEndpoint endpoint;
  TestRequest split("GET", "/things/a%2Fparts%2Fc");
  Response answer = Answer(endpoint, split.view());
  EXPECT_EQ(answer.status, 404) << answer.body;  // one segment after /things, not three
  ASSERT_EQ(split.view().segments().size(), 2u);
  EXPECT_EQ(split.view().segments()[1], "a/parts/c");

  TestRequest inside("GET", "/things/a%2fb/parts/c%2F");
  answer = Answer(endpoint, inside.view());
  ASSERT_EQ(answer.status, 200) << answer.body;
  EXPECT_EQ(Parse(answer.body)->getValue<std::string>("id"), "a/b");
  EXPECT_EQ(Parse(answer.body)->getValue<std::string>("part"), "c/");

  TestRequest absolute("GET", "https://127.0.0.1:1/things/x%2Fy/parts/z?q=1");
  answer = Answer(endpoint, absolute.view());
  ASSERT_EQ(answer.status, 200) << answer.body;
  EXPECT_EQ(Parse(answer.body)->getValue<std::string>("id"), "x/y");
  EXPECT_EQ(absolute.view().query(), "q=1");
}

TEST(RouterTest, AnExceptionIs500JsonThatDoesNotLeakItsMessage) {
  TestEndpoint endpoint;
  TestRequest request("GET", "/fail");
  ::testing::internal::CaptureStderr();
  Response answer = Answer(endpoint, request.view());
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(answer.status, 500);
  EXPECT_EQ(CodeOf(answer), "internal");
  EXPECT_EQ(MessageOf(answer), "the test listener failed");
  EXPECT_EQ(answer.body.find("t_keys"), std::string::npos) << answer.body;
  EXPECT_TRUE(answer.close);
  // The operator sees what happened, in one line naming the listener.
  EXPECT_NE(log.find("router-test: error: a request failed: the secret table"), std::string::npos)
      << log;

  TestEndpoint upper(CodeStyle::kUpperCase);
  ::testing::internal::CaptureStderr();
  Response upper_answer = Answer(upper, request.view());
  ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(CodeOf(upper_answer), "INTERNAL");
}

TEST(RouterTest, AnErrorIsAnsweredWithTheStatusAndNameOfItsCode) {
  const struct {
    ErrorCode code;
    int status;
    const char* snake;
    const char* upper;
  } cases[] = {
      {ErrorCode::kInvalidArgument, 400, "invalid_argument", "INVALID_ARGUMENT"},
      {ErrorCode::kUnauthenticated, 401, "unauthenticated", "UNAUTHENTICATED"},
      {ErrorCode::kPermissionDenied, 403, "permission_denied", "PERMISSION_DENIED"},
      {ErrorCode::kNotFound, 404, "not_found", "NOT_FOUND"},
      {ErrorCode::kAlreadyExists, 409, "already_exists", "ALREADY_EXISTS"},
      {ErrorCode::kFailedPrecondition, 409, "failed_precondition", "FAILED_PRECONDITION"},
      {ErrorCode::kResourceExhausted, 429, "resource_exhausted", "RESOURCE_EXHAUSTED"},
      {ErrorCode::kUnimplemented, 501, "unimplemented", "UNIMPLEMENTED"},
      {ErrorCode::kDataLoss, 500, "data_loss", "DATA_LOSS"},
      {ErrorCode::kInternal, 500, "internal", "INTERNAL"},
      {ErrorCode::kUnavailable, 503, "unavailable", "UNAVAILABLE"},
  };
  for (const auto& c : cases) {
    for (CodeStyle style : {CodeStyle::kSnakeCase, CodeStyle::kUpperCase}) {
      TestEndpoint endpoint(style);
      endpoint.error_ = Error(c.code, "what happened");
      TestRequest request("GET", "/error");
      Response answer = Answer(endpoint, request.view());
      EXPECT_EQ(answer.status, c.status) << c.snake;
      EXPECT_EQ(CodeOf(answer), style == CodeStyle::kSnakeCase ? c.snake : c.upper);
      EXPECT_EQ(MessageOf(answer), "what happened");
      EXPECT_EQ(answer.header("Retry-After"), c.status == 503 ? "1" : "") << c.snake;
      EXPECT_FALSE(answer.close);
    }
  }
  // A reason is answered by its own name, in either style.
  for (CodeStyle style : {CodeStyle::kSnakeCase, CodeStyle::kUpperCase}) {
    TestEndpoint endpoint(style);
    endpoint.error_ = Error(ErrorReason::kKeyRotationRequired, "use the current key");
    TestRequest request("GET", "/error");
    Response answer = Answer(endpoint, request.view());
    EXPECT_EQ(answer.status, 409);
    EXPECT_EQ(CodeOf(answer), "key_rotation_required");
  }
}

TEST(RouterTest, AmbiguousFramingAndABadTargetAreRefusedBeforeTheEndpointRuns) {
  TestEndpoint endpoint;
  TestRequest twice("POST", "/things", "{}");
  twice.head.add("Content-Length", "2");
  Response answer = Answer(endpoint, twice.view());
  EXPECT_EQ(answer.status, 400);
  EXPECT_EQ(CodeOf(answer), "bad_framing");
  EXPECT_TRUE(answer.close);

  TestRequest bad("GET", "/things/%zz/parts/x");
  answer = Answer(endpoint, bad.view());
  EXPECT_EQ(answer.status, 400);
  EXPECT_EQ(CodeOf(answer), "invalid_argument");
  EXPECT_EQ(endpoint.served.load(), 0);
}

TEST(RouterTest, ABodyIsReadAsItsMediaTypeAndWithinItsLimit) {
  TestEndpoint endpoint;
  TestRequest ok("POST", "/things", "{\"a\":1}");
  ok.head.setContentType("application/json; charset=utf-8");
  Response answer = Answer(endpoint, ok.view());
  EXPECT_EQ(answer.status, 201) << answer.body;
  EXPECT_EQ(answer.body, "{\"bytes\":7}");
  EXPECT_TRUE(ok.view().body_read());

  TestRequest text("POST", "/things", "{}");
  text.head.setContentType("text/plain");
  answer = Answer(endpoint, text.view());
  EXPECT_EQ(answer.status, 415);
  EXPECT_EQ(CodeOf(answer), "media_type");
  EXPECT_FALSE(answer.close);  // the adapter drains the body and serves on
  EXPECT_FALSE(text.view().body_read());

  // Larger than the limit: refused at once, the connection to close, not a byte past the limit
  // read. Declared larger: nothing read at all.
  TestRequest big("POST", "/things", std::string(40, 'x'));
  big.head.setContentType("application/json");
  big.head.setChunkedTransferEncoding(true);
  big.head.erase("Content-Length");
  answer = Answer(endpoint, big.view());
  EXPECT_EQ(answer.status, 413);
  EXPECT_EQ(CodeOf(answer), "thing_size");
  EXPECT_TRUE(answer.close);
  EXPECT_EQ(big.stream.tellg(), 17);
  TestRequest declared("POST", "/things", std::string(40, 'x'));
  declared.head.setContentType("application/json");
  EXPECT_EQ(Answer(endpoint, declared.view()).status, 413);
  EXPECT_EQ(declared.stream.tellg(), 0);

  // Without Content-Length or chunked encoding there is no body, and the stream is not touched.
  TestRequest none("POST", "/things", "");
  none.head.setContentType("application/json");
  std::istringstream unread("{\"not\":\"framed\"}");
  Request view(none.head, unread);
  EXPECT_FALSE(view.has_body());
  EXPECT_TRUE(view.body_read());
  answer = Answer(endpoint, view);
  EXPECT_EQ(answer.body, "{\"bytes\":0}");
  EXPECT_EQ(unread.tellg(), 0);
}

// --- the adapter under the HTTPS edge ----------------------------------------------------------

// A route takes the connection over with Poco's request and response: a WebSocket that echoes.
class EchoEndpoint : public Endpoint {
 public:
  EchoEndpoint() : Endpoint("echo-test", "failed", CodeStyle::kSnakeCase) {
    routes_.Add("GET", "/echo", [](Request&) {
      return Response::TakeOver([](Poco::Net::HTTPServerRequest& request,
                                   Poco::Net::HTTPServerResponse& response) -> Status {
        std::unique_ptr<Poco::Net::WebSocket> socket;
        try {
          socket = std::make_unique<Poco::Net::WebSocket>(request, response);
        } catch (const Poco::Net::WebSocketException& e) {
          return Error(ErrorCode::kInvalidArgument, "not a WebSocket handshake: " + e.message());
        }
        char buffer[256];
        int flags = 0;
        const int n = socket->receiveFrame(buffer, sizeof buffer, flags);
        socket->sendFrame(buffer, n);
        socket->shutdown();
        return OkStatus();
      });
    });
  }
  Response Serve(Request& request) override { return routes_.Dispatch(request); }

 private:
  Routes<> routes_{"no"};
};

class RouterOverHttpsTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(endpoint_); }
  void TearDown() override {
    server_.reset();
    Poco::Net::uninitializeSSL();
  }

  // Serves `endpoint` instead.
  void Start(Endpoint& endpoint) {
    server_.reset();
    const std::string script =
        "cd '" + dir_.string() +
        "' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "
        "edge.key -out edge.crt -days 2 -subj '/CN=localhost' 2>/dev/null";
    ASSERT_EQ(std::system(script.c_str()), 0) << script;
    auto context = MakeTlsServerContext("the test listener", (dir_ / "edge.crt").string(),
                                        (dir_ / "edge.key").string());
    ASSERT_TRUE(context.ok()) << context.error().ToString();
    HttpsServerOptions options;
    options.max_threads = 4;
    options.server_name = "router-test";
    auto server = HttpsServer::Start(options, *context, EndpointHandlerFactory(endpoint));
    ASSERT_TRUE(server.ok()) << server.error().ToString();
    server_ = std::move(server).value();
  }

  TestDir dir_;
  TestEndpoint endpoint_;
  EchoEndpoint echo_;
  std::unique_ptr<HttpsServer> server_;  // stopped before the endpoints go
};

TEST_F(RouterOverHttpsTest, AnswersCarryTheirStatusHeadersAndNoStore) {
  TlsConnection c;
  ASSERT_TRUE(c.Open(server_->port()));
  // A body the handler never reads is drained, and the connection serves the next request.
  ASSERT_TRUE(c.Write("POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"));
  std::string answer = c.ReadAnswer();
  EXPECT_EQ(answer.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << answer;
  EXPECT_NE(answer.find("Cache-Control: no-store\r\n"), std::string::npos) << answer;
  ASSERT_TRUE(c.Write("DELETE /things HTTP/1.1\r\nHost: x\r\n\r\n"));
  answer = c.ReadAnswer();
  EXPECT_EQ(answer.rfind("HTTP/1.1 405 Method Not Allowed\r\n", 0), 0u) << answer;
  EXPECT_NE(answer.find("Allow: GET, POST\r\n"), std::string::npos) << answer;
  EXPECT_NE(answer.find("Content-Type: application/json\r\n"), std::string::npos) << answer;
  EXPECT_NE(answer.find("{\"code\":\"method_not_allowed\",\"message\":\"use GET, POST\"}"),
            std::string::npos)
      << answer;
  // A refusal that closes is answered before the rest of the body, and the connection closes.
  ASSERT_TRUE(
      c.Write("POST /things HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              "Transfer-Encoding: chunked\r\n\r\n40\r\n" +
              std::string(64, 'x') + "\r\n"));
  answer = c.ReadAnswer();
  EXPECT_EQ(answer.rfind("HTTP/1.1 413 Request Entity Too Large\r\n", 0), 0u) << answer;
  EXPECT_NE(answer.find("Connection: Close\r\n"), std::string::npos) << answer;
  EXPECT_EQ(c.ReadAll(), "");
}

TEST_F(RouterOverHttpsTest, AnExceptionIsAnswered500AndTheConnectionClosed) {
  TlsConnection c;
  ASSERT_TRUE(c.Open(server_->port()));
  ::testing::internal::CaptureStderr();
  ASSERT_TRUE(c.Write("GET /fail HTTP/1.1\r\nHost: x\r\n\r\n"));
  const std::string answer = c.ReadAnswer();
  ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(answer.rfind("HTTP/1.1 500 Internal Server Error\r\n", 0), 0u) << answer;
  EXPECT_NE(answer.find("\"the test listener failed\""), std::string::npos) << answer;
  EXPECT_EQ(answer.find("t_keys"), std::string::npos) << answer;
  EXPECT_EQ(c.ReadAll(), "");
}

TEST_F(RouterOverHttpsTest, ARouteTakesTheConnectionOverOrItsErrorIsAnswered) {
  Start(echo_);

  // Without a socket the answer is returned as it is.
  TestRequest request("GET", "/echo");
  Response answer = Answer(echo_, request.view());
  EXPECT_EQ(answer.status, 101);
  EXPECT_TRUE(answer.takeover);

  Poco::Net::Context::Ptr client = new Poco::Net::Context(Poco::Net::Context::TLS_CLIENT_USE, "",
                                                          "", "", Poco::Net::Context::VERIFY_NONE);
  {
    Poco::Net::HTTPSClientSession session("127.0.0.1", server_->port(), client);
    HTTPRequest upgrade(HTTPRequest::HTTP_GET, "/echo", Poco::Net::HTTPMessage::HTTP_1_1);
    Poco::Net::HTTPResponse response;
    Poco::Net::WebSocket socket(session, upgrade, response);
    socket.sendFrame("ping", 4);
    char buffer[16];
    int flags = 0;
    const int n = socket.receiveFrame(buffer, sizeof buffer, flags);
    EXPECT_EQ(std::string(buffer, static_cast<std::size_t>(std::max(n, 0))), "ping");
  }
  // A plain GET is no handshake: the takeover's error is answered as an error.
  TlsConnection c;
  ASSERT_TRUE(c.Open(server_->port()));
  ASSERT_TRUE(c.Write("GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"));
  const std::string refused = c.ReadAnswer();
  EXPECT_EQ(refused.rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u) << refused;
  EXPECT_NE(refused.find("\"code\":\"invalid_argument\""), std::string::npos) << refused;
}

}  // namespace
}  // namespace strongroom::http
