// The HTTPS edge under every Strongroom listener (kmsd's protocol and operations listeners, cored):
// one event-driven thread accepts connections, completes their TLS handshakes and reads each
// request's head (and a small body) without blocking; only a complete request is handed to a
// worker thread, where Poco's HTTP request and response classes and the service's handlers run.
//
// So a connection that sends nothing, or trickles its handshake or its head a byte at a time,
// costs a file descriptor and a few KiB, never a worker: the workers serve real requests while
// thousands of such connections are open. What bounds the rest:
//   - max_connections open at once, max_connections_per_peer from one address (0: no limit);
//     a connection over either is closed at once, before its handshake;
//   - handshake_timeout for the TLS handshake; request_timeout from a request's first byte to its
//     complete head (then 408); keep_alive_timeout for an idle connection between requests;
//     io_timeout for each read and write of a worker (the rest of a large body, the answer);
//   - a request head of at most kMaxRequestHeadBytes (then 431).
// A WebSocket upgrade keeps its worker for the life of the WebSocket, as its handler serves it.
//
// With a linger, a worker that answered a request on a keep-alive connection waits that long for
// the connection's next request, reading it as the edge would (without blocking, never more than
// the head and a small body), and serves it itself when it comes whole: a busy client's requests
// then cost no hand-off from the edge to a worker and back. What the worker has not got whole by
// then (nothing, or part of a head, which the edge reads on under request_timeout) goes back to
// the edge, so a slow or idle client holds a worker for at most the linger. A worker does not wait
// while another connection's request is queued for one; a request that arrives while every worker
// waits is served within the linger.
#ifndef STRONGROOM_COMMON_HTTPS_SERVER_H_
#define STRONGROOM_COMMON_HTTPS_SERVER_H_

#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "strongroom/common/error.h"

namespace strongroom::http {

// The largest request head (request line and header fields) the edge reads.
inline constexpr std::size_t kMaxRequestHeadBytes = 32 * 1024;
// A body of at most this many bytes (with Content-Length, without Expect: 100-continue) is read
// by the edge with its head, so a slow sender of a small body holds no worker either.
inline constexpr std::size_t kMaxBodyReadAhead = 64 * 1024;

struct HttpsServerOptions {
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 0;               // 0: any free port
  std::size_t max_threads = 64;                // requests (and WebSockets) served at once
  std::size_t max_connections = 4096;          // connections open at once
  std::size_t max_connections_per_peer = 256;  // from one IP address; 0: no limit
  std::chrono::seconds keep_alive_timeout{15};
  std::chrono::seconds io_timeout{30};
  std::chrono::seconds handshake_timeout{10};
  std::chrono::seconds request_timeout{10};
  // How long a worker waits for a connection's next request before the edge does; 0: not at all.
  std::chrono::microseconds linger{0};
  std::string server_name;  // names the threads
};

// Since start; `open` is now.
struct HttpsServerCounters {
  std::uint64_t open = 0;
  std::uint64_t accepted = 0;
  std::uint64_t refused = 0;    // over max_connections or max_connections_per_peer
  std::uint64_t timed_out = 0;  // handshake, request head or keep-alive deadline passed
  std::uint64_t requests = 0;   // handed to a worker, or read by one that waited for it
  std::uint64_t lingered = 0;   // of those, read by the worker that served the one before
};

class HttpsServer {
 public:
  // Binds and starts serving; UNAVAILABLE naming the address when it cannot listen,
  // INVALID_ARGUMENT for options out of range.
  static Result<std::unique_ptr<HttpsServer>> Start(
      const HttpsServerOptions& options, Poco::Net::Context::Ptr context,
      Poco::Net::HTTPRequestHandlerFactory::Ptr factory);
  ~HttpsServer();  // Stop()s

  HttpsServer(const HttpsServer&) = delete;
  HttpsServer& operator=(const HttpsServer&) = delete;

  std::uint16_t port() const;
  HttpsServerCounters counters() const;
  // Stops accepting new connections (the listening socket is closed when this returns);
  // connections already open are served on.
  void StopAccepting();
  // Stops accepting, closes idle connections, waits for the requests in flight (and WebSockets,
  // which their handlers end), joins the threads. Idempotent.
  void Stop();

 private:
  class Edge;
  explicit HttpsServer(std::unique_ptr<Edge> edge);
  std::unique_ptr<Edge> edge_;
};

}  // namespace strongroom::http

#endif  // STRONGROOM_COMMON_HTTPS_SERVER_H_
