// The HTTPS edge (https_server.h) over real TLS on 127.0.0.1, with a small handler: what idle,
// slow and oversized connections cost it, and that ordinary HTTP/1.1 (keep-alive, pipelining,
// bodies small and large, chunked) still works through it.
#include "strongroom/common/https_server.h"

#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/SSLManager.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "../support/connection_flood.h"
#include "../support/test_dir.h"
#include "strongroom/common/http_support.h"
#include "strongroom/common/tls.h"

namespace strongroom::http {
namespace {

using strongroom::testing::ClosedByPeer;
using strongroom::testing::ConnectFrom;
using strongroom::testing::ConnectionFlood;
using strongroom::testing::TestDir;
using strongroom::testing::TlsConnection;

// GET /hello answers {"hello":true}; POST /echo answers the size of the body it read.
class Handler : public Poco::Net::HTTPRequestHandler {
 public:
  void handleRequest(Poco::Net::HTTPServerRequest& request,
                     Poco::Net::HTTPServerResponse& response) override {
    if (request.getURI() == "/echo") {
      std::optional<std::string> body = ReadBody(request, 1024 * 1024);
      if (!body) return RefuseBody(request, response, 413, "too_big", "at most 1 MiB");
      return SendJson(response, 200, "{\"bytes\":" + std::to_string(body->size()) + "}");
    }
    Discard(request, response);
    SendJson(response, 200, "{\"hello\":true}");
  }
};

class Factory : public Poco::Net::HTTPRequestHandlerFactory {
 public:
  Poco::Net::HTTPRequestHandler* createRequestHandler(
      const Poco::Net::HTTPServerRequest&) override {
    return new Handler;
  }
};

const std::string kHello = "GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

bool IsHello(const std::string& answer) {
  return answer.rfind("HTTP/1.1 200", 0) == 0 &&
         answer.find("{\"hello\":true}") != std::string::npos;
}

class HttpsEdgeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string script =
        "cd '" + dir_.string() +
        "' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "
        "edge.key -out edge.crt -days 2 -subj '/CN=localhost' 2>/dev/null";
    ASSERT_EQ(std::system(script.c_str()), 0) << script;
    auto context = MakeTlsServerContext("the test listener", (dir_ / "edge.crt").string(),
                                        (dir_ / "edge.key").string());
    ASSERT_TRUE(context.ok()) << context.error().ToString();
    context_ = std::move(context).value();
  }
  void TearDown() override {
    server_.reset();
    Poco::Net::uninitializeSSL();
  }

  void Start(HttpsServerOptions options) {
    options.server_name = "edge-test";
    if (options.linger.count() == 0) options.linger = linger_;
    auto server = HttpsServer::Start(options, context_, new Factory);
    ASSERT_TRUE(server.ok()) << server.error().ToString();
    server_ = std::move(server).value();
  }

  // A fresh connection's answer to GET /hello.
  std::string Hello(const std::string& source = "127.0.0.1") {
    TlsConnection c;
    if (!c.Open(server_->port(), source) || !c.Write(kHello)) return "";
    return c.ReadAnswer();
  }

  TestDir dir_;
  Poco::Net::Context::Ptr context_;
  std::unique_ptr<HttpsServer> server_;
  std::chrono::microseconds linger_{0};  // the listener's, unless a test sets its own
};

// Every protection holds whether or not a worker waits for a connection's next request (linger).
class HttpsServerTest : public HttpsEdgeTest,
                        public ::testing::WithParamInterface<std::chrono::milliseconds> {
 protected:
  void SetUp() override {
    HttpsEdgeTest::SetUp();
    linger_ = GetParam();
  }
};

INSTANTIATE_TEST_SUITE_P(Linger, HttpsServerTest,
                         ::testing::Values(std::chrono::milliseconds(0),
                                           std::chrono::milliseconds(300)),
                         [](const ::testing::TestParamInfo<std::chrono::milliseconds>& param) {
                           return param.param.count() == 0
                                      ? std::string("None")
                                      : std::to_string(param.param.count()) + "ms";
                         });

// The attack the issue reproduced: more idle connections than worker threads (here 1,000 against
// 4), slow handshakes and heads trickled a byte at a time. Every real request is still answered
// (each with a 5 s socket timeout; a thread-per-connection server never answers them), and the
// listener keeps the idle connections open rather than dropping them.
TEST_P(HttpsServerTest, IdleAndTricklingConnectionsDoNotStarveRealRequests) {
  HttpsServerOptions options;
  options.max_threads = 4;
  options.max_connections = 2000;
  options.max_connections_per_peer = 0;
  Start(options);
  ConnectionFlood flood(server_->port());
  ASSERT_TRUE(flood.OpenIdle(1000, {"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}))
      << flood.error();
  ASSERT_TRUE(flood.OpenTricklers(100, {"127.0.0.6"})) << flood.error();
  for (int i = 0; i < 20; ++i) EXPECT_TRUE(IsHello(Hello())) << "request " << i;
  EXPECT_EQ(flood.IdleStillOpen(), 1000u);
  const HttpsServerCounters counters = server_->counters();
  EXPECT_GE(counters.open, 1100u);
  EXPECT_EQ(counters.refused, 0u);
}

// One address gets max_connections_per_peer; the next is closed at once, and other peers are
// served.
TEST_P(HttpsServerTest, ConnectionsBeyondThePerPeerLimitAreClosed) {
  HttpsServerOptions options;
  options.max_connections_per_peer = 8;
  Start(options);
  ConnectionFlood flood(server_->port());
  ASSERT_TRUE(flood.OpenIdle(8, {"127.0.0.2"})) << flood.error();
  const int ninth = ConnectFrom(server_->port(), "127.0.0.2");
  ASSERT_GE(ninth, 0);
  EXPECT_TRUE(ClosedByPeer(ninth, std::chrono::seconds(5)));
  ::close(ninth);
  EXPECT_TRUE(IsHello(Hello("127.0.0.1")));
  EXPECT_EQ(flood.IdleStillOpen(), 8u);
  EXPECT_EQ(server_->counters().refused, 1u);
}

// The whole listener's limit bounds what connections can hold (descriptors and memory).
TEST_P(HttpsServerTest, ConnectionsBeyondTheListenersLimitAreClosed) {
  HttpsServerOptions options;
  options.max_connections = 50;
  options.max_connections_per_peer = 0;
  Start(options);
  ConnectionFlood flood(server_->port());
  ASSERT_TRUE(flood.OpenIdle(50, {"127.0.0.2", "127.0.0.3"})) << flood.error();
  const int over = ConnectFrom(server_->port(), "127.0.0.4");
  ASSERT_GE(over, 0);
  EXPECT_TRUE(ClosedByPeer(over, std::chrono::seconds(5)));
  ::close(over);
  EXPECT_EQ(server_->counters().refused, 1u);
  EXPECT_EQ(server_->counters().open, 50u);
}

// A connection that never starts its handshake is closed at the handshake deadline.
TEST_P(HttpsServerTest, ASilentConnectionIsClosedAtTheHandshakeDeadline) {
  HttpsServerOptions options;
  options.handshake_timeout = std::chrono::seconds(1);
  Start(options);
  const int fd = ConnectFrom(server_->port(), "127.0.0.1");
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(ClosedByPeer(fd, std::chrono::seconds(5)));
  ::close(fd);
  EXPECT_EQ(server_->counters().timed_out, 1u);
}

// A head that does not arrive whole within request_timeout of its first byte is answered 408.
TEST_P(HttpsServerTest, AHeadTrickledPastItsDeadlineIsAnswered408) {
  HttpsServerOptions options;
  options.request_timeout = std::chrono::seconds(1);
  Start(options);
  TlsConnection c;
  ASSERT_TRUE(c.Open(server_->port()));
  ASSERT_TRUE(c.Write("GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a"));
  const std::string answer = c.ReadAll();
  EXPECT_EQ(answer.rfind("HTTP/1.1 408", 0), 0u) << answer;
  EXPECT_NE(answer.find("\"request_timeout\""), std::string::npos) << answer;
}

TEST_P(HttpsServerTest, AnOversizeHeadIsAnswered431) {
  Start({});
  TlsConnection c;
  ASSERT_TRUE(c.Open(server_->port()));
  ASSERT_TRUE(c.Write("GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " +
                      std::string(kMaxRequestHeadBytes, 'a')));
  const std::string answer = c.ReadAll();
  EXPECT_EQ(answer.rfind("HTTP/1.1 431", 0), 0u) << answer.substr(0, 200);
}

// Keep-alive: one connection serves requests one after another, and two requests sent in one
// write (pipelined) get two answers in order.
TEST_P(HttpsServerTest, KeepAliveAndPipelinedRequestsAreServedOnOneConnection) {
  Start({});
  TlsConnection c;
  ASSERT_TRUE(c.Open(server_->port()));
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c.Write(kHello));
    EXPECT_TRUE(IsHello(c.ReadAnswer())) << i;
  }
  ASSERT_TRUE(c.Write(
      kHello + "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\nabc" + kHello));
  EXPECT_TRUE(IsHello(c.ReadAnswer()));
  EXPECT_NE(c.ReadAnswer().find("{\"bytes\":3}"), std::string::npos);
  EXPECT_TRUE(IsHello(c.ReadAnswer()));
  EXPECT_EQ(server_->counters().accepted, 1u);
}

// An idle keep-alive connection is closed after keep_alive_timeout.
TEST_P(HttpsServerTest, AnIdleKeepAliveConnectionIsClosedAtItsTimeout) {
  HttpsServerOptions options;
  options.keep_alive_timeout = std::chrono::seconds(1);
  Start(options);
  TlsConnection c;
  ASSERT_TRUE(c.Open(server_->port()));
  ASSERT_TRUE(c.Write(kHello));
  ASSERT_TRUE(IsHello(c.ReadAnswer()));
  EXPECT_EQ(c.ReadAll(), "");  // the close, not another answer
  EXPECT_EQ(server_->counters().timed_out, 1u);
  EXPECT_EQ(server_->counters().open, 0u);
}

// Bodies the edge reads ahead (small) and those the worker reads (large, chunked) arrive whole.
TEST_P(HttpsServerTest, BodiesSmallLargeAndChunkedArriveWhole) {
  Start({});
  for (std::size_t size :
       {std::size_t{1}, kMaxBodyReadAhead, kMaxBodyReadAhead + 1, std::size_t{700 * 1024}}) {
    TlsConnection c;
    ASSERT_TRUE(c.Open(server_->port()));
    ASSERT_TRUE(c.Write("POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " +
                        std::to_string(size) + "\r\n\r\n" + std::string(size, 'x')));
    EXPECT_NE(c.ReadAnswer().find("{\"bytes\":" + std::to_string(size) + "}"), std::string::npos)
        << size;
  }
  TlsConnection c;
  ASSERT_TRUE(c.Open(server_->port()));
  ASSERT_TRUE(
      c.Write("POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
              "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"));
  EXPECT_NE(c.ReadAnswer().find("{\"bytes\":11}"), std::string::npos);
}

// A head Poco cannot read (a field name over its 256 bytes) gets its 400, and what is not TLS is
// closed; neither stops the listener.
TEST_P(HttpsServerTest, GarbageIsRefusedAndTheListenerServesOn) {
  Start({});
  {
    TlsConnection c;
    ASSERT_TRUE(c.Open(server_->port()));
    ASSERT_TRUE(c.Write("GET / HTTP/1.1\r\n" + std::string(300, 'a') + ": b\r\n\r\n"));
    const std::string answer = c.ReadAll();
    EXPECT_EQ(answer.rfind("HTTP/1.1 400", 0), 0u) << answer;
  }
  {
    const int fd = ConnectFrom(server_->port(), "127.0.0.1");
    ASSERT_GE(fd, 0);
    const std::string plain = kHello;
    ASSERT_EQ(::send(fd, plain.data(), plain.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(plain.size()));
    EXPECT_TRUE(ClosedByPeer(fd, std::chrono::seconds(5)));
    ::close(fd);
  }
  EXPECT_TRUE(IsHello(Hello()));
}

// Stop closes idle connections and returns; StopAccepting refuses new ones at once.
TEST_P(HttpsServerTest, StopClosesIdleConnections) {
  Start({});
  ConnectionFlood flood(server_->port());
  ASSERT_TRUE(flood.OpenIdle(20, {"127.0.0.2"})) << flood.error();
  const std::uint16_t port = server_->port();
  server_->StopAccepting();
  EXPECT_LT(ConnectFrom(port, "127.0.0.1"), 0);
  server_->Stop();
  EXPECT_EQ(flood.IdleStillOpen(), 0u);
}

// A request that arrives while the connection's worker waits for it (linger) is read and served
// by that worker, not handed from the edge; the edge counts it like any.
TEST_F(HttpsEdgeTest, TheWorkerThatAnsweredServesTheConnectionsNextRequest) {
  HttpsServerOptions options;
  options.linger = std::chrono::seconds(2);
  Start(options);
  TlsConnection c;
  ASSERT_TRUE(c.Open(server_->port()));
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(c.Write(kHello));
    EXPECT_TRUE(IsHello(c.ReadAnswer())) << i;
  }
  ASSERT_TRUE(c.Write("POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\nabc"));
  EXPECT_NE(c.ReadAnswer().find("{\"bytes\":3}"), std::string::npos);
  const HttpsServerCounters counters = server_->counters();
  EXPECT_EQ(counters.requests, 6u);
  EXPECT_EQ(counters.lingered, 5u);  // all but the first
}

// Part of a head sent while the worker waits goes back to the edge with the worker: the worker
// serves another client, and the head is answered 408 at request_timeout like any other.
TEST_F(HttpsEdgeTest, AHeadTrickledWhileTheWorkerWaitsGoesBackToTheEdge) {
  HttpsServerOptions options;
  options.max_threads = 1;
  options.linger = std::chrono::milliseconds(300);
  options.request_timeout = std::chrono::seconds(2);
  Start(options);
  TlsConnection slow;
  ASSERT_TRUE(slow.Open(server_->port()));
  ASSERT_TRUE(slow.Write(kHello));
  ASSERT_TRUE(IsHello(slow.ReadAnswer()));
  ASSERT_TRUE(slow.Write("GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a"));
  EXPECT_TRUE(IsHello(Hello()));  // the one worker is free again
  const std::string answer = slow.ReadAll();
  EXPECT_EQ(answer.rfind("HTTP/1.1 408", 0), 0u) << answer;
  EXPECT_EQ(server_->counters().timed_out, 1u);
  EXPECT_EQ(server_->counters().lingered, 0u);
}

// An idle keep-alive connection holds its worker for the linger only: with one worker, another
// client is served while it idles.
TEST_F(HttpsEdgeTest, AnIdleConnectionHoldsItsWorkerForTheLingerOnly) {
  HttpsServerOptions options;
  options.max_threads = 1;
  options.linger = std::chrono::milliseconds(300);
  Start(options);
  TlsConnection idle;
  ASSERT_TRUE(idle.Open(server_->port()));
  ASSERT_TRUE(idle.Write(kHello));
  ASSERT_TRUE(IsHello(idle.ReadAnswer()));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(IsHello(Hello())) << i;
  ASSERT_TRUE(idle.Write(kHello));  // and the idle one is served again, by the edge's hand-off
  EXPECT_TRUE(IsHello(idle.ReadAnswer()));
}

// A head over the limit sent while the worker waits is answered 431 and closed, as by the edge.
TEST_F(HttpsEdgeTest, AnOversizeHeadWhileTheWorkerWaitsIsAnswered431) {
  HttpsServerOptions options;
  options.linger = std::chrono::seconds(2);
  Start(options);
  TlsConnection c;
  ASSERT_TRUE(c.Open(server_->port()));
  ASSERT_TRUE(c.Write(kHello));
  ASSERT_TRUE(IsHello(c.ReadAnswer()));
  ASSERT_TRUE(c.Write("GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " +
                      std::string(kMaxRequestHeadBytes, 'a')));
  const std::string answer = c.ReadAll();
  EXPECT_EQ(answer.rfind("HTTP/1.1 431", 0), 0u) << answer.substr(0, 200);
  EXPECT_TRUE(IsHello(Hello()));
}

// Stop does not wait out a long linger's worth of waiting workers beyond the linger, and closes
// the connection a worker was waiting on.
TEST_F(HttpsEdgeTest, StopEndsAWorkersWait) {
  HttpsServerOptions options;
  options.linger = std::chrono::milliseconds(500);
  Start(options);
  TlsConnection c;
  ASSERT_TRUE(c.Open(server_->port()));
  ASSERT_TRUE(c.Write(kHello));
  ASSERT_TRUE(IsHello(c.ReadAnswer()));
  server_->Stop();
  EXPECT_EQ(c.ReadAll(), "");
  EXPECT_EQ(server_->counters().open, 0u);
}

// A linger longer than the request timeout, or negative, is refused.
TEST_F(HttpsEdgeTest, ALingerBeyondTheRequestTimeoutIsRefused) {
  HttpsServerOptions options;
  options.request_timeout = std::chrono::seconds(1);
  options.linger = std::chrono::seconds(2);
  options.server_name = "edge-test";
  auto server = HttpsServer::Start(options, context_, new Factory);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.error().code(), ErrorCode::kInvalidArgument);
  options.linger = std::chrono::microseconds(-1);
  server = HttpsServer::Start(options, context_, new Factory);
  ASSERT_FALSE(server.ok());
}

}  // namespace
}  // namespace strongroom::http
