// A keep-alive HTTP/1.1 client connection over TLS that never blocks, for load generators that
// drive many connections from one event loop (bench/kms_load.cc): the caller starts a request,
// then calls Drive() whenever the descriptor is ready (fd(), wants_write()) until the answer is
// complete. One request at a time (no pipelining). A connection the server closed is opened
// again by the next request, resuming the TLS session. Exchange() does the same blocking, with
// poll(), for set-up work outside the measured window.
//
// Buffers are the connection's own and keep their capacity across requests: a request costs one
// TLS record written and, for answers of up to 16 KiB, one read. Answers must carry
// Content-Length (the Strongroom edge always sends it); a chunked answer is an error.
//
// The server is verified against the CA file only, and its certificate must name the host (an
// IP address or a DNS name), as Poco's HTTPSClientSession checks it.
#ifndef STRONGROOM_BENCH_HTTPS_CLIENT_CONNECTION_H_
#define STRONGROOM_BENCH_HTTPS_CLIENT_CONNECTION_H_

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "strongroom/client/kms_session.h"
#include "strongroom/common/error.h"

namespace strongroom::bench {

struct SslCtxFree {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;

// A TLS 1.2+ client context that trusts the PEM certificates in `ca_file` only. Shared by every
// connection (and thread) of a run.
Result<SslCtxPtr> NewTlsClientContext(const std::string& ca_file);

// Where to connect: `host` (an IPv4 or IPv6 literal, or a name resolved once) and `port`.
struct HttpsEndpoint {
  std::string host;
  std::uint16_t port = 0;
  sockaddr_storage address{};
  socklen_t address_length = 0;

  static Result<HttpsEndpoint> Resolve(const std::string& host, std::uint16_t port);
};

class HttpsClientConnection {
 public:
  enum class Progress { kPending, kDone, kFailed };

  // Answers larger than this fail the request.
  static constexpr std::size_t kMaxAnswerBytes = 4 * 1024 * 1024;

  HttpsClientConnection(SSL_CTX* context, const HttpsEndpoint& endpoint);
  ~HttpsClientConnection();
  HttpsClientConnection(const HttpsClientConnection&) = delete;
  HttpsClientConnection& operator=(const HttpsClientConnection&) = delete;

  // Begins a request (the previous one must be done or failed), connecting first when the
  // connection is closed. A body, when there is one, is sent with `content_type`. Call Drive()
  // next: it writes as much as the socket takes.
  void Start(std::string_view method, std::string_view target, std::string_view content_type,
             std::string_view body);

  // Makes what progress the socket allows without blocking. kDone: answer() holds the answer;
  // kFailed: error() says why and the connection is closed. Between requests, Drive() reads what
  // the server sent unasked (TLS session tickets, a close) and returns kDone, or kFailed after
  // closing the connection.
  Progress Drive();

  // Start() and Drive() until the answer, waiting with poll(); kFailed after `timeout`.
  Progress Exchange(std::string_view method, std::string_view target, std::string_view content_type,
                    std::string_view body, std::chrono::milliseconds timeout);

  // The socket, -1 when closed. It changes when the connection is opened again: generation()
  // counts the sockets opened, so an event loop knows when to register the new one.
  int fd() const { return fd_; }
  std::uint64_t generation() const { return generation_; }
  // Whether Drive() waits for the socket to become writable (else readable).
  bool wants_write() const { return wants_write_; }
  bool busy() const { return state_ != State::kIdle && state_ != State::kClosed; }

  // The last complete answer. retry_after(): it had a Retry-After field.
  const client::KmsResponse& answer() const { return answer_; }
  bool retry_after() const { return retry_after_; }
  const std::string& error() const { return error_; }

  // Closes the socket (keeping the TLS session to resume).
  void Close();

 private:
  enum class State { kClosed, kConnecting, kHandshaking, kWriting, kReading, kIdle, kFailed };

  bool Connect();
  Progress Fail(std::string what);
  Progress FailSsl(const char* what, int result);
  Progress ReadIdle();
  // Parses the head in in_[0, in_length_) once complete; false with error_ set when malformed.
  bool ParseHead(std::size_t head_end);

  SSL_CTX* const context_;
  const HttpsEndpoint endpoint_;
  const std::string host_field_;  // Host: the host (bracketed when IPv6) and port
  State state_ = State::kClosed;
  int fd_ = -1;
  SSL* ssl_ = nullptr;
  SSL_SESSION* session_ = nullptr;  // to resume after the server closed the connection
  std::uint64_t generation_ = 0;
  bool wants_write_ = false;
  std::chrono::steady_clock::time_point idle_since_;

  std::string out_;  // the request being written, whole
  std::string in_;   // the answer being read; its size is the buffer's, in_length_ is used
  std::size_t in_length_ = 0;
  std::size_t head_length_ = 0;  // 0 until the head is complete
  std::size_t body_length_ = 0;
  bool close_after_ = false;  // the answer said Connection: close

  client::KmsResponse answer_;
  bool retry_after_ = false;
  std::string error_;
};

}  // namespace strongroom::bench

#endif  // STRONGROOM_BENCH_HTTPS_CLIENT_CONNECTION_H_
