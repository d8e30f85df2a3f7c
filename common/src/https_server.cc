#include "strongroom/common/https_server.h"

#include <Poco/Exception.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequestImpl.h>
#include <Poco/Net/HTTPServerResponseImpl.h>
#include <Poco/Net/HTTPServerSession.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/SocketAddress.h>
#include <Poco/Net/StreamSocket.h>
#include <Poco/Net/StreamSocketImpl.h>
#include <Poco/Timestamp.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace strongroom::http {
namespace {

using Clock = std::chrono::steady_clock;

// TLS on a connected socket whose handshake the edge completed: what Poco's HTTP session and
// WebSocket read and write through once a worker serves the connection. Bytes the edge read ahead
// (the request's head) are returned first.
//
// The descriptor is non-blocking for good: the edge's epoll needs it so, and switching it for each
// request (and setting SO_RCVTIMEO and SO_SNDTIMEO again) cost six system calls a request.
// "Blocking" is this object's mode instead, set while a worker has the connection: a read or write
// that would block then waits in poll(2) up to the receive or send timeout (none if zero, as with
// Poco's sockets) and throws Poco::TimeoutException after it. Setting the mode or a timeout makes
// no system call.
class TlsSocketImpl : public Poco::Net::StreamSocketImpl {
 public:
  TlsSocketImpl(poco_socket_t fd, SSL* ssl) : Poco::Net::StreamSocketImpl(fd), ssl_(ssl) {}

  void setBlocking(bool flag) override { blocking_ = flag; }
  bool getBlocking() const override { return blocking_; }
  void setReceiveTimeout(const Poco::Timespan& timeout) override { receive_timeout_ = timeout; }
  Poco::Timespan getReceiveTimeout() override { return receive_timeout_; }
  void setSendTimeout(const Poco::Timespan& timeout) override { send_timeout_ = timeout; }
  Poco::Timespan getSendTimeout() override { return send_timeout_; }

  using Poco::Net::StreamSocketImpl::receiveBytes;
  using Poco::Net::StreamSocketImpl::sendBytes;

  SSL* ssl() const { return ssl_; }
  void SetAhead(std::string bytes) {
    ahead_ = std::move(bytes);
    ahead_at_ = 0;
  }
  // Whether a read would return bytes without waiting for the network.
  bool HasPending() const {
    return ahead_at_ < ahead_.size() || (ssl_ != nullptr && SSL_pending(ssl_) > 0);
  }

  int receiveBytes(void* buffer, int length, int flags) override {
    if (length <= 0) return 0;
    if (ahead_at_ < ahead_.size()) {
      const std::size_t n = std::min(static_cast<std::size_t>(length), ahead_.size() - ahead_at_);
      std::memcpy(buffer, ahead_.data() + ahead_at_, n);
      if ((flags & MSG_PEEK) == 0) {
        ahead_at_ += n;
        if (ahead_at_ == ahead_.size()) {
          ahead_.clear();
          ahead_.shrink_to_fit();
          ahead_at_ = 0;
        }
      }
      return static_cast<int>(n);
    }
    if (ssl_ == nullptr) throw Poco::Net::NetException("the connection is closed");
    for (;;) {
      ERR_clear_error();
      errno = 0;
      const int rc =
          (flags & MSG_PEEK) != 0 ? SSL_peek(ssl_, buffer, length) : SSL_read(ssl_, buffer, length);
      if (rc > 0) return rc;
      const int error = SSL_get_error(ssl_, rc);
      if (error == SSL_ERROR_ZERO_RETURN) return 0;
      if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          if (!blocking_) return -1;
          if (!Wait(error, receive_timeout_)) {
            throw Poco::TimeoutException("reading from the connection");
          }
        }
        continue;
      }
      if (error == SSL_ERROR_SYSCALL && errno == 0) return 0;  // closed without close_notify
      if (error == SSL_ERROR_SYSCALL && errno == EINTR) continue;
      throw Poco::Net::ConnectionResetException("reading from the connection");
    }
  }

  int sendBytes(const void* buffer, int length, int flags) override {
    (void)flags;
    if (length <= 0) return 0;
    if (ssl_ == nullptr) throw Poco::Net::NetException("the connection is closed");
    for (;;) {
      ERR_clear_error();
      errno = 0;
      const int rc = SSL_write(ssl_, buffer, length);
      if (rc > 0) return rc;
      const int error = SSL_get_error(ssl_, rc);
      if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          if (!blocking_) return -1;
          if (!Wait(error, send_timeout_))
            throw Poco::TimeoutException("writing to the connection");
        }
        continue;
      }
      if (error == SSL_ERROR_SYSCALL && errno == EINTR) continue;
      throw Poco::Net::ConnectionResetException("writing to the connection");
    }
  }

  // Nothing may bypass TLS.
  int receiveBytes(Poco::Net::SocketBufVec&, int) override {
    throw Poco::NotImplementedException("scatter reads on a TLS connection");
  }
  int receiveBytes(Poco::Buffer<char>&, int, const Poco::Timespan&) override {
    throw Poco::NotImplementedException("buffer reads on a TLS connection");
  }
  int sendBytes(const Poco::Net::SocketBufVec&, int) override {
    throw Poco::NotImplementedException("gather writes on a TLS connection");
  }

  int available() override {
    return static_cast<int>(ahead_.size() - ahead_at_) + (ssl_ != nullptr ? SSL_pending(ssl_) : 0);
  }

  bool poll(const Poco::Timespan& timeout, int mode) override {
    if ((mode & Poco::Net::Socket::SELECT_READ) != 0 && HasPending()) return true;
    return Poco::Net::StreamSocketImpl::poll(timeout, mode);
  }

  void shutdown() override { SendCloseNotify(); }
  void shutdownSend() override { SendCloseNotify(); }

  void close() override {
    if (ssl_ != nullptr) {
      SendCloseNotify();
      SSL_free(ssl_);
      ssl_ = nullptr;
    }
    Poco::Net::StreamSocketImpl::close();
  }

  bool secure() const override { return true; }

 protected:
  ~TlsSocketImpl() override {
    try {
      close();
    } catch (...) {
    }
  }

 private:
  // Waits until TLS can go on (readable for SSL_ERROR_WANT_READ, writable for WANT_WRITE); false
  // once `timeout` (zero: none) has passed.
  bool Wait(int ssl_error, const Poco::Timespan& timeout) {
    pollfd p{sockfd(), static_cast<short>(ssl_error == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN), 0};
    const auto limit =
        timeout.totalMicroseconds() > 0
            ? std::optional(Clock::now() + std::chrono::microseconds(timeout.totalMicroseconds()))
            : std::nullopt;
    for (;;) {
      int wait_ms = -1;
      if (limit) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(*limit - Clock::now());
        if (left.count() <= 0) return false;
        wait_ms = static_cast<int>(std::min<std::int64_t>(left.count(), INT32_MAX));
      }
      const int rc = ::poll(&p, 1, wait_ms);
      if (rc > 0) return true;  // ready, or an error the next TLS call reports
      if (rc == 0) return false;
      if (errno != EINTR) throw Poco::Net::NetException("waiting on the connection");
    }
  }

  // Best effort, never a wait: the peer may be gone.
  void SendCloseNotify() {
    if (ssl_ == nullptr || sent_close_notify_) return;
    sent_close_notify_ = true;
    if (SSL_is_init_finished(ssl_) == 1) {
      ERR_clear_error();
      const bool blocking = blocking_;
      blocking_ = false;
      SSL_shutdown(ssl_);
      blocking_ = blocking;
      ERR_clear_error();
    }
  }

  SSL* ssl_;
  bool blocking_ = false;  // the mode; the descriptor itself never blocks
  Poco::Timespan receive_timeout_;
  Poco::Timespan send_timeout_;
  std::string ahead_;
  std::size_t ahead_at_ = 0;
  bool sent_close_notify_ = false;
};

// Poco's session, with what the worker needs to know before it gives the connection back: whether
// the session read bytes past the request it served (a pipelined request).
class Session : public Poco::Net::HTTPServerSession {
 public:
  Session(const Poco::Net::StreamSocket& socket, Poco::Net::HTTPServerParams::Ptr params)
      : Poco::Net::HTTPServerSession(socket, params) {}
  bool HasBuffered() const { return buffered() > 0; }
};

bool StartsWithIgnoringCase(std::string_view line, std::string_view prefix) {
  if (line.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(line[i])) != prefix[i]) return false;
  }
  return true;
}

// Where the head ends (just past its blank line), or npos while it is incomplete.
std::size_t HeadEnd(std::string_view bytes) {
  const std::size_t crlf = bytes.find("\r\n\r\n");
  const std::size_t lf = bytes.find("\n\n");
  if (crlf == std::string_view::npos && lf == std::string_view::npos) return std::string_view::npos;
  if (lf == std::string_view::npos || (crlf != std::string_view::npos && crlf < lf)) {
    return crlf + 4;
  }
  return lf + 2;
}

// How many body bytes the edge reads with this head: the Content-Length when it is the only
// framing, at most kMaxBodyReadAhead, and the client does not wait for 100 Continue; else none (the
// worker reads the body, and the handler refuses what is malformed).
std::size_t BodyToReadAhead(std::string_view head) {
  std::optional<std::size_t> length;
  int lengths = 0;
  std::size_t at = head.find('\n');
  while (at != std::string_view::npos && at + 1 < head.size()) {
    const std::size_t next = head.find('\n', at + 1);
    std::string_view line =
        head.substr(at + 1, next == std::string_view::npos ? head.size() - at - 1 : next - at - 1);
    at = next;
    if (StartsWithIgnoringCase(line, "transfer-encoding:") ||
        StartsWithIgnoringCase(line, "expect:")) {
      return 0;
    }
    if (!StartsWithIgnoringCase(line, "content-length:")) continue;
    ++lengths;
    std::string_view value = line.substr(15);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    while (!value.empty() &&
           (value.back() == '\r' || value.back() == ' ' || value.back() == '\t')) {
      value.remove_suffix(1);
    }
    if (value.empty() || value.size() > 7) return 0;
    std::size_t n = 0;
    for (char c : value) {
      if (c < '0' || c > '9') return 0;
      n = n * 10 + static_cast<std::size_t>(c - '0');
    }
    length = n;
  }
  if (lengths != 1 || !length || *length > kMaxBodyReadAhead) return 0;
  return *length;
}

std::string PeerAddress(const sockaddr_storage& address) {
  char text[INET6_ADDRSTRLEN] = {};
  if (address.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(address).sin_addr, text, sizeof text);
  } else if (address.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(address).sin6_addr, text,
              sizeof text);
  }
  return text;
}

std::string ErrorAnswer(int status, const char* reason, const char* code, const char* message) {
  const std::string body =
      std::string("{\"code\":\"") + code + "\",\"message\":\"" + message + "\"}";
  return "HTTP/1.1 " + std::to_string(status) + " " + reason +
         "\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nConnection: "
         "close\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

}  // namespace

class HttpsServer::Edge {
 public:
  Edge(const HttpsServerOptions& options, Poco::Net::Context::Ptr context,
       Poco::Net::HTTPRequestHandlerFactory::Ptr factory)
      : options_(options), context_(std::move(context)), factory_(std::move(factory)) {
    params_ = new Poco::Net::HTTPServerParams;
    params_->setKeepAlive(true);
    params_->setMaxKeepAliveRequests(1 << 30);
    params_->setKeepAliveTimeout(Poco::Timespan(options.keep_alive_timeout.count(), 0));
    params_->setTimeout(Poco::Timespan(options.io_timeout.count(), 0));
    params_->setServerName(options.server_name);
  }

  ~Edge() {
    Stop();
    if (listener_ >= 0) ::close(listener_);
    if (epoll_ >= 0) ::close(epoll_);
    if (wake_ >= 0) ::close(wake_);
  }

  Status Listen() {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    const std::string port = std::to_string(options_.listen_port);
    const int rc = getaddrinfo(options_.listen_host.c_str(), port.c_str(), &hints, &found);
    if (rc != 0) return Error(ErrorCode::kUnavailable, gai_strerror(rc));
    std::string problem = "no address";
    for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
      const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) continue;
      const int on = 1;
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
      if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 1024) == 0) {
        sockaddr_storage bound{};
        socklen_t size = sizeof bound;
        getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &size);
        port_ = ntohs(bound.ss_family == AF_INET6
                          ? reinterpret_cast<const sockaddr_in6&>(bound).sin6_port
                          : reinterpret_cast<const sockaddr_in&>(bound).sin_port);
        listener_ = fd;
        break;
      }
      problem = std::strerror(errno);
      ::close(fd);
    }
    freeaddrinfo(found);
    if (listener_ < 0) return Error(ErrorCode::kUnavailable, problem);
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    wake_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epoll_ < 0 || wake_ < 0) return Error(ErrorCode::kUnavailable, std::strerror(errno));
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.ptr = &listener_;
    epoll_ctl(epoll_, EPOLL_CTL_ADD, listener_, &event);
    event.data.ptr = &wake_;
    epoll_ctl(epoll_, EPOLL_CTL_ADD, wake_, &event);
    return OkStatus();
  }

  void Run() {
    // A write to a connection its peer closed must be an error, not the end of the process.
    std::signal(SIGPIPE, SIG_IGN);
    for (std::size_t i = 0; i < options_.max_threads; ++i) {
      workers_.emplace_back([this] { Work(); });
    }
    edge_ = std::thread([this] { Loop(); });
  }

  std::uint16_t port() const { return port_; }

  HttpsServerCounters counters() const {
    HttpsServerCounters out;
    out.open = open_.load();
    out.accepted = accepted_.load();
    out.refused = refused_.load();
    out.timed_out = timed_out_.load();
    out.requests = requests_.load();
    out.lingered = lingered_.load();
    return out;
  }

  void StopAccepting() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!edge_.joinable() || listener_closed_) return;
    stop_accepting_ = true;
    Wake();
    done_.wait(lock, [&] { return listener_closed_; });
  }

  void Stop() {
    if (!edge_.joinable()) return;
    StopAccepting();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    work_ready_.notify_all();
    for (std::thread& worker : workers_) worker.join();
    workers_.clear();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      workers_done_ = true;
    }
    Wake();
    edge_.join();
  }

 private:
  enum class Phase { kHandshake, kHead, kServing };

  struct Connection {
    Poco::AutoPtr<TlsSocketImpl> socket;
    std::unique_ptr<Session> session;
    std::string peer;
    Phase phase = Phase::kHandshake;
    Clock::time_point deadline;
    std::string head;         // bytes of the next request read so far
    bool keep = true;         // set by the worker: serve on, or close
    bool detached = false;    // set by the worker: a handler took the socket (a WebSocket)
    bool want_write = false;  // the handshake waits to write
    bool registered = false;  // in the epoll set (never while a worker has it)
  };

  void Wake() {
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(wake_, &one, sizeof one);
  }

  // --- the edge thread -------------------------------------------------------------------------

  void Loop() {
    std::vector<epoll_event> events(256);
    auto next_sweep = Clock::now();
    for (;;) {
      const int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), 100);
      for (int i = 0; i < n; ++i) {
        void* tag = events[i].data.ptr;
        if (tag == &listener_) {
          Accept();
        } else if (tag == &wake_) {
          std::uint64_t count;
          [[maybe_unused]] const ssize_t r = ::read(wake_, &count, sizeof count);
        } else {
          Advance(static_cast<Connection*>(tag));
        }
      }
      if (!TakeReturned()) return;
      const auto now = Clock::now();
      if (now >= next_sweep) {
        Sweep(now);
        next_sweep = now + std::chrono::milliseconds(100);
      }
    }
  }

  void Accept() {
    for (;;) {
      sockaddr_storage address{};
      socklen_t size = sizeof address;
      const int fd = accept4(listener_, reinterpret_cast<sockaddr*>(&address), &size,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;  // EAGAIN, or an aborted connection, or out of descriptors
      std::string peer = PeerAddress(address);
      std::size_t& from_peer = per_peer_[peer];
      if (connections_.size() >= options_.max_connections ||
          (options_.max_connections_per_peer != 0 &&
           from_peer >= options_.max_connections_per_peer)) {
        if (from_peer == 0) per_peer_.erase(peer);
        refused_.fetch_add(1, std::memory_order_relaxed);
        ::close(fd);
        continue;
      }
      const int on = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
      SSL* ssl = SSL_new(context_->sslContext());
      if (ssl == nullptr) {
        ::close(fd);
        continue;
      }
      SSL_set_fd(ssl, fd);
      SSL_set_accept_state(ssl);
      SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
      auto connection = std::make_unique<Connection>();
      connection->socket = new TlsSocketImpl(fd, ssl);
      connection->socket->setBlocking(false);
      connection->peer = std::move(peer);
      connection->deadline = Clock::now() + options_.handshake_timeout;
      ++from_peer;
      Connection* raw = connection.get();
      connections_.emplace(raw, std::move(connection));
      accepted_.fetch_add(1, std::memory_order_relaxed);
      open_.store(connections_.size(), std::memory_order_relaxed);
      Rearm(raw);
    }
  }

  // Waits (once) for the connection to be readable, or writable while its handshake wants to
  // write.
  void Rearm(Connection* c) {
    epoll_event event{};
    event.events = (c->want_write ? EPOLLOUT : EPOLLIN) | EPOLLONESHOT;
    event.data.ptr = c;
    epoll_ctl(epoll_, c->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->socket->sockfd(), &event);
    c->registered = true;
  }

  void Destroy(Connection* c) {
    auto found = connections_.find(c);
    if (found == connections_.end()) return;
    if (c->registered) epoll_ctl(epoll_, EPOLL_CTL_DEL, c->socket->sockfd(), nullptr);
    auto peer = per_peer_.find(c->peer);
    if (peer != per_peer_.end() && --peer->second == 0) per_peer_.erase(peer);
    // Counted before the close, so whoever sees the close sees the count.
    open_.store(connections_.size() - 1, std::memory_order_relaxed);
    c->session.reset();
    // A detached socket belongs to its handler's WebSocket now, which closes it.
    if (!c->detached) {
      try {
        c->socket->close();
      } catch (...) {
      }
    }
    connections_.erase(found);
  }

  // Best effort: an answer the edge gives itself (408, 431) before it closes the connection.
  void Refuse(Connection* c, const std::string& answer) {
    ERR_clear_error();
    SSL_write(c->socket->ssl(), answer.data(), static_cast<int>(answer.size()));
    ERR_clear_error();
    Destroy(c);
  }

  enum class HeadRead { kComplete, kPartial, kTooLarge, kFailed };

  // Reads what has arrived of the connection's next request, without waiting: its head and a small
  // body, never more (the rest stays in the socket for the worker). Used by the edge, and by a
  // worker waiting for the next request on the connection it served (Linger).
  static HeadRead ReadHead(Connection& c) {
    SSL* ssl = c.socket->ssl();
    std::size_t want = kMaxRequestHeadBytes + 1;
    for (;;) {
      const std::size_t end = HeadEnd(c.head);
      if (end != std::string::npos)
        want = end + BodyToReadAhead(std::string_view(c.head).substr(0, end));
      if (c.head.size() >= want) break;
      char buffer[16 * 1024];
      const int room = static_cast<int>(std::min(sizeof buffer, want - c.head.size()));
      ERR_clear_error();
      const int n = SSL_read(ssl, buffer, room);
      if (n > 0) {
        c.head.append(buffer, static_cast<std::size_t>(n));
        continue;
      }
      const int error = SSL_get_error(ssl, n);
      if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) break;
      ERR_clear_error();
      return HeadRead::kFailed;
    }
    const std::size_t end = HeadEnd(c.head);
    if (end == std::string::npos) {
      return c.head.size() > kMaxRequestHeadBytes ? HeadRead::kTooLarge : HeadRead::kPartial;
    }
    return c.head.size() < want ? HeadRead::kPartial : HeadRead::kComplete;
  }

  static std::string HeadTooLarge() {
    return ErrorAnswer(431, "Request Header Fields Too Large", "head_too_large",
                       "a request head is at most 32768 bytes");
  }

  void Advance(Connection* c) {
    if (stopping_edge_) return Destroy(c);
    SSL* ssl = c->socket->ssl();
    if (c->phase == Phase::kHandshake) {
      ERR_clear_error();
      const int rc = SSL_do_handshake(ssl);
      if (rc != 1) {
        const int error = SSL_get_error(ssl, rc);
        if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
          c->want_write = error == SSL_ERROR_WANT_WRITE;
          return Rearm(c);
        }
        ERR_clear_error();
        return Destroy(c);  // not TLS, or a handshake that failed
      }
      c->want_write = false;
      c->phase = Phase::kHead;
      c->deadline = Clock::now() + options_.request_timeout;
    }
    const bool had_bytes = !c->head.empty();
    const HeadRead read = ReadHead(*c);
    if (read == HeadRead::kFailed) return Destroy(c);  // closed, reset, or not TLS
    if (!had_bytes && !c->head.empty()) {
      // The first byte of a request: from now on it has request_timeout to arrive whole.
      c->deadline = Clock::now() + options_.request_timeout;
    }
    if (read == HeadRead::kTooLarge) return Refuse(c, HeadTooLarge());
    if (read == HeadRead::kPartial) {
      c->want_write = false;
      return Rearm(c);  // the head, or the body read ahead, is still coming
    }
    Dispatch(c);
  }

  void Dispatch(Connection* c) {
    // Out of the epoll set while a worker has it: a handler may keep the socket (a WebSocket)
    // and close it from another thread, and its descriptor may then be reused.
    epoll_ctl(epoll_, EPOLL_CTL_DEL, c->socket->sockfd(), nullptr);
    c->registered = false;
    c->phase = Phase::kServing;
    c->socket->SetAhead(std::move(c->head));
    c->head.clear();
    requests_.fetch_add(1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      work_.push_back(c);
    }
    work_ready_.notify_one();
  }

  // Takes back the connections workers are done with; false when the edge is to end.
  bool TakeReturned() {
    std::deque<Connection*> returned;
    bool close_listener = false;
    bool end = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      returned.swap(returned_);
      close_listener = stop_accepting_ && !listener_closed_;
      end = workers_done_;
    }
    if (close_listener) {
      epoll_ctl(epoll_, EPOLL_CTL_DEL, listener_, nullptr);
      ::close(listener_);
      listener_ = -1;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        listener_closed_ = true;
      }
      done_.notify_all();
    }
    for (Connection* c : returned) {
      if (!c->keep || c->detached || stopping_edge_) {
        Destroy(c);
        continue;
      }
      c->phase = Phase::kHead;
      // A worker that waited for the next request may hand back part of its head: it then has
      // request_timeout (from now) to arrive whole, as any head.
      c->deadline =
          Clock::now() + (c->head.empty() ? options_.keep_alive_timeout : options_.request_timeout);
      c->want_write = false;
      c->socket->setBlocking(false);
      Rearm(c);
    }
    if (stopping_ && !stopping_edge_) {
      // Idle and half-read connections are closed; those with a worker come back and are closed.
      stopping_edge_ = true;
      std::vector<Connection*> idle;
      for (auto& [raw, owned] : connections_) {
        if (raw->phase != Phase::kServing) idle.push_back(raw);
      }
      for (Connection* c : idle) Destroy(c);
    }
    if (end) {
      std::vector<Connection*> all;
      for (auto& [raw, owned] : connections_) all.push_back(raw);
      for (Connection* c : all) Destroy(c);
      return false;
    }
    return true;
  }

  void Sweep(Clock::time_point now) {
    std::vector<Connection*> late;
    for (auto& [raw, owned] : connections_) {
      if (raw->phase != Phase::kServing && raw->deadline <= now) late.push_back(raw);
    }
    for (Connection* c : late) {
      timed_out_.fetch_add(1, std::memory_order_relaxed);
      if (c->phase == Phase::kHead && !c->head.empty()) {
        Refuse(c, ErrorAnswer(408, "Request Timeout", "request_timeout",
                              "the request did not arrive in time"));
      } else {
        Destroy(c);
      }
    }
  }

  // --- the workers ---------------------------------------------------------------------------

  void Work() {
    for (;;) {
      Connection* c = nullptr;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        work_ready_.wait(lock, [&] { return stopping_ || !work_.empty(); });
        if (work_.empty()) return;  // stopping
        c = work_.front();
        work_.pop_front();
      }
      Serve(*c);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        returned_.push_back(c);
      }
      Wake();
    }
  }

  void Serve(Connection& c) {
    c.keep = false;
    try {
      c.socket->setBlocking(true);
      if (!c.session) {
        c.socket->duplicate();  // the session's StreamSocket holds a reference of its own
        c.session = std::make_unique<Session>(Poco::Net::StreamSocket(c.socket.get()), params_);
      }
      c.socket->setReceiveTimeout(Poco::Timespan(options_.io_timeout.count(), 0));
      c.socket->setSendTimeout(Poco::Timespan(options_.io_timeout.count(), 0));
      for (;;) {
        const bool go_on = ServeOne(*c.session);
        if (!c.session->socket().impl()->initialized()) {
          c.detached = true;  // the handler took the socket
          return;
        }
        if (!go_on || !c.socket->initialized()) return;
        if (Stopping()) return;
        // A pipelined request already read is served here; otherwise the next request is waited
        // for here a little (Linger), then by the edge.
        if (c.session->HasBuffered() || c.socket->HasPending()) continue;
        const Next next = Linger(c);
        if (next == Next::kClose) return;
        if (next == Next::kEdge) break;
      }
      c.keep = true;
    } catch (const std::exception&) {
      // the connection is closed
    }
  }

  bool Stopping() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stopping_;
  }

  enum class Next { kServe, kEdge, kClose };

  // Waits up to options_.linger for the connection's next request and reads it as the edge would
  // (ReadHead): kServe when it has come whole (its bytes ahead of the socket, for Poco's session),
  // kEdge when the edge is to wait for it instead (nothing came in time, or only part of it, which
  // stays in c.head; or another connection's request waits for a worker), kClose when the
  // connection is to close (closed by the peer, or a head too large, answered 431). So a client
  // that sends its next request at once is served by this worker without a hand-off to the edge
  // and back, and one that is slow costs the worker at most the linger.
  Next Linger(Connection& c) {
    if (options_.linger.count() <= 0) return Next::kEdge;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_ || !work_.empty()) return Next::kEdge;
    }
    const Clock::time_point until = Clock::now() + options_.linger;
    for (;;) {
      switch (ReadHead(c)) {
        case HeadRead::kComplete:
          c.socket->SetAhead(std::move(c.head));
          c.head.clear();
          requests_.fetch_add(1, std::memory_order_relaxed);
          lingered_.fetch_add(1, std::memory_order_relaxed);
          return Next::kServe;
        case HeadRead::kFailed:
          return Next::kClose;
        case HeadRead::kTooLarge: {
          const std::string answer = HeadTooLarge();
          ERR_clear_error();
          SSL_write(c.socket->ssl(), answer.data(), static_cast<int>(answer.size()));
          ERR_clear_error();
          return Next::kClose;
        }
        case HeadRead::kPartial:
          break;
      }
      const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(until - Clock::now());
      if (left.count() <= 0) return Next::kEdge;
      pollfd p{c.socket->sockfd(), POLLIN, 0};
      const timespec wait{static_cast<time_t>(left.count() / 1000000000),
                          static_cast<long>(left.count() % 1000000000)};
      const int rc = ::ppoll(&p, 1, &wait, nullptr);
      if (rc == 0) return Next::kEdge;
      if (rc < 0 && errno != EINTR) return Next::kClose;
    }
  }

  // One request, as Poco's HTTPServerConnection serves each; whether the connection goes on.
  bool ServeOne(Session& session) {
    try {
      Poco::Net::HTTPServerResponseImpl response(session);
      Poco::Net::HTTPServerRequestImpl request(response, session, params_);
      response.setDate(Poco::Timestamp());
      response.setVersion(request.getVersion());
      response.setKeepAlive(request.getKeepAlive() && session.canKeepAlive());
      std::unique_ptr<Poco::Net::HTTPRequestHandler> handler(
          factory_->createRequestHandler(request));
      if (!handler) {
        SendBare(session, Poco::Net::HTTPResponse::HTTP_NOT_IMPLEMENTED);
        return false;
      }
      if (request.getExpectContinue() && response.getStatus() == Poco::Net::HTTPResponse::HTTP_OK) {
        response.sendContinue();
      }
      try {
        handler->handleRequest(request, response);
      } catch (const std::exception&) {
        if (!response.sent())
          SendBare(session, Poco::Net::HTTPResponse::HTTP_INTERNAL_SERVER_ERROR);
        return false;
      }
      session.setKeepAlive(response.getKeepAlive() && session.canKeepAlive());
      return session.getKeepAlive();
    } catch (const Poco::Net::NoMessageException&) {
      return false;
    } catch (const Poco::Net::MessageException&) {
      SendBare(session, Poco::Net::HTTPResponse::HTTP_BAD_REQUEST);
      return false;
    }
  }

  static void SendBare(Session& session, Poco::Net::HTTPResponse::HTTPStatus status) {
    try {
      Poco::Net::HTTPServerResponseImpl response(session);
      response.setVersion(Poco::Net::HTTPMessage::HTTP_1_1);
      response.setStatusAndReason(status);
      response.setKeepAlive(false);
      response.send();
      session.setKeepAlive(false);
    } catch (...) {
    }
  }

  const HttpsServerOptions options_;
  const Poco::Net::Context::Ptr context_;
  Poco::Net::HTTPRequestHandlerFactory::Ptr factory_;
  Poco::Net::HTTPServerParams::Ptr params_;

  int listener_ = -1;
  int epoll_ = -1;
  int wake_ = -1;
  std::uint16_t port_ = 0;
  std::thread edge_;
  std::vector<std::thread> workers_;

  // The edge thread's own.
  std::unordered_map<Connection*, std::unique_ptr<Connection>> connections_;
  std::unordered_map<std::string, std::size_t> per_peer_;
  bool stopping_edge_ = false;

  std::mutex mutex_;  // guards what follows
  std::condition_variable work_ready_;
  std::condition_variable done_;
  std::deque<Connection*> work_;
  std::deque<Connection*> returned_;
  bool stop_accepting_ = false;
  bool listener_closed_ = false;
  bool stopping_ = false;
  bool workers_done_ = false;

  std::atomic<std::uint64_t> open_{0}, accepted_{0}, refused_{0}, timed_out_{0}, requests_{0},
      lingered_{0};
};

Result<std::unique_ptr<HttpsServer>> HttpsServer::Start(
    const HttpsServerOptions& options, Poco::Net::Context::Ptr context,
    Poco::Net::HTTPRequestHandlerFactory::Ptr factory) {
  if (options.max_threads < 1 || options.max_connections < 1 ||
      options.keep_alive_timeout.count() < 1 || options.io_timeout.count() < 1 ||
      options.handshake_timeout.count() < 1 || options.request_timeout.count() < 1 ||
      options.linger.count() < 0 || options.linger > options.request_timeout) {
    return Error(ErrorCode::kInvalidArgument,
                 "an HTTPS listener needs at least one thread and connection, timeouts of at least "
                 "a second, and a linger from 0 to the request timeout");
  }
  auto edge = std::make_unique<Edge>(options, std::move(context), std::move(factory));
  if (Status listening = edge->Listen(); !listening.ok()) {
    return Error(ErrorCode::kUnavailable, "cannot listen on " + options.listen_host + ":" +
                                              std::to_string(options.listen_port) + ": " +
                                              listening.error().message());
  }
  edge->Run();
  return std::unique_ptr<HttpsServer>(new HttpsServer(std::move(edge)));
}

HttpsServer::HttpsServer(std::unique_ptr<Edge> edge) : edge_(std::move(edge)) {}

HttpsServer::~HttpsServer() { Stop(); }

std::uint16_t HttpsServer::port() const { return edge_->port(); }

HttpsServerCounters HttpsServer::counters() const { return edge_->counters(); }

void HttpsServer::StopAccepting() { edge_->StopAccepting(); }

void HttpsServer::Stop() { edge_->Stop(); }

}  // namespace strongroom::http
