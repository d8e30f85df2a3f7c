// Connections that take a listener's resources without ever making a request, for attack tests:
// idle TCP connections (a TLS handshake never started), handshakes left half done, and TLS
// connections that trickle a request head a byte at a time and never finish it. All of them go to
// 127.0.0.1; `source` picks the loopback address they come from (127.0.0.2, ...), so a test can
// be several peers. Bounded: the caller says how many, and everything closes with the object.
//
//   ConnectionFlood flood(port);
//   ASSERT_TRUE(flood.OpenIdle(1000, {"127.0.0.2", "127.0.0.3"})) << flood.error();
//   ASSERT_TRUE(flood.OpenTricklers(100, {"127.0.0.4"})) << flood.error();
//   ... legitimate requests ...
//   EXPECT_EQ(flood.StillOpen(), 1100u);   // the listener kept them (or not)
#ifndef STRONGROOM_TESTS_SUPPORT_CONNECTION_FLOOD_H_
#define STRONGROOM_TESTS_SUPPORT_CONNECTION_FLOOD_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace strongroom::testing {

// `count` loopback addresses from 127.0.0.<first> on: attackers that are several peers.
inline std::vector<std::string> LoopbackSources(int first, int count) {
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) out.push_back("127.0.0." + std::to_string(first + i));
  return out;
}

// Raises this process's soft limit of open files to its hard limit (both ends of every test
// connection are ours when the server runs in-process).
inline void RaiseOpenFileLimit() {
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
}

// A TCP connection to 127.0.0.1:port from `source`; -1 when it cannot be made.
inline int ConnectFrom(std::uint16_t port, const std::string& source) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in from{};
  from.sin_family = AF_INET;
  inet_pton(AF_INET, source.c_str(), &from.sin_addr);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    ::close(fd);
    return -1;
  }
  timeval wait{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &wait, sizeof wait);
  return fd;
}

// Whether the peer closed `fd` (or reset it) within `wait`: a read returns 0 or fails other than
// by timing out.
inline bool ClosedByPeer(int fd, std::chrono::milliseconds wait) {
  pollfd p{fd, POLLIN, 0};
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    // Polled at least once, without waiting when the time is up.
    if (::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(0, left.count()))) <= 0) {
      return false;
    }
    char buffer[4096];
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
    if (n == 0) return true;
    if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK;
    // bytes (a TLS alert or an HTTP answer): read on until the close
  }
}

// A TLS client connection (no certificate check: the tests that use it look at the server's
// behaviour, not its identity). Blocking, with 5 s socket timeouts.
class TlsConnection {
 public:
  TlsConnection() = default;
  ~TlsConnection() { Close(); }
  TlsConnection(const TlsConnection&) = delete;
  TlsConnection& operator=(const TlsConnection&) = delete;

  bool Open(std::uint16_t port, const std::string& source = "127.0.0.1") {
    ctx_ = SSL_CTX_new(TLS_client_method());
    fd_ = ConnectFrom(port, source);
    if (ctx_ == nullptr || fd_ < 0) return false;
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    return SSL_connect(ssl_) == 1;
  }
  bool Write(const std::string& bytes) {
    return SSL_write(ssl_, bytes.data(), static_cast<int>(bytes.size())) ==
           static_cast<int>(bytes.size());
  }
  // Everything until the server closes (or 5 s of silence).
  std::string ReadAll() {
    std::string out;
    char buffer[16 * 1024];
    for (;;) {
      const int n = SSL_read(ssl_, buffer, sizeof buffer);
      if (n <= 0) break;
      out.append(buffer, static_cast<std::size_t>(n));
    }
    ERR_clear_error();
    return out;
  }
  // One HTTP/1.1 answer with a Content-Length body (as the edge and Poco send them).
  std::string ReadAnswer() {
    std::string out;
    char buffer[16 * 1024];
    for (;;) {
      const std::size_t head = out.find("\r\n\r\n");
      if (head != std::string::npos) {
        const std::size_t at = out.find("Content-Length: ");
        const std::size_t length =
            at == std::string::npos || at > head ? 0 : std::stoul(out.substr(at + 16));
        if (out.size() >= head + 4 + length) {
          pending_ = out.substr(head + 4 + length);
          return out.substr(0, head + 4 + length);
        }
      }
      if (!pending_.empty()) {
        out += pending_;
        pending_.clear();
        continue;
      }
      const int n = SSL_read(ssl_, buffer, sizeof buffer);
      if (n <= 0) return out;
      out.append(buffer, static_cast<std::size_t>(n));
    }
  }
  void Close() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (fd_ >= 0) ::close(fd_);
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
    ssl_ = nullptr;
    fd_ = -1;
    ctx_ = nullptr;
  }
  int fd() const { return fd_; }

 private:
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
  std::string pending_;
};

class ConnectionFlood {
 public:
  explicit ConnectionFlood(std::uint16_t port) : port_(port) {
    RaiseOpenFileLimit();
    std::signal(SIGPIPE, SIG_IGN);  // a trickler's write after the server closed it
  }
  ~ConnectionFlood() {
    stop_ = true;
    if (trickler_.joinable()) trickler_.join();
    for (int fd : idle_) ::close(fd);
  }
  ConnectionFlood(const ConnectionFlood&) = delete;
  ConnectionFlood& operator=(const ConnectionFlood&) = delete;

  // `count` TCP connections that send nothing, spread over `sources`.
  bool OpenIdle(std::size_t count, const std::vector<std::string>& sources) {
    for (std::size_t i = 0; i < count; ++i) {
      const int fd = ConnectFrom(port_, sources[i % sources.size()]);
      if (fd < 0) return Fail("could not open idle connection " + std::to_string(i));
      idle_.push_back(fd);
    }
    return true;
  }

  // `count` connections, spread over `sources`, that complete TLS and then send
  // "GET / HTTP/1.1\r\nX-Slow: " and one more byte of a header that never ends every `every`,
  // until the flood is destroyed.
  bool OpenTricklers(std::size_t count, const std::vector<std::string>& sources,
                     std::chrono::milliseconds every = std::chrono::milliseconds(200)) {
    for (std::size_t i = 0; i < count; ++i) {
      auto c = std::make_unique<TlsConnection>();
      if (!c->Open(port_, sources[i % sources.size()]) ||
          !c->Write("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")) {
        return Fail("could not open trickling connection " + std::to_string(i));
      }
      std::lock_guard<std::mutex> lock(mutex_);
      tricklers_.push_back(std::move(c));
    }
    if (!trickler_.joinable()) {
      trickler_ = std::thread([this, every] {
        while (!stop_) {
          {
            std::lock_guard<std::mutex> lock(mutex_);
            for (auto& c : tricklers_) c->Write("a");
          }
          std::this_thread::sleep_for(every);
        }
      });
    }
    return true;
  }

  // How many idle connections the server has not closed (each checked without waiting).
  std::size_t IdleStillOpen() const {
    std::size_t open = 0;
    for (int fd : idle_) {
      if (!ClosedByPeer(fd, std::chrono::milliseconds(1))) ++open;
    }
    return open;
  }

  const std::string& error() const { return error_; }

 private:
  bool Fail(std::string what) {
    error_ = std::move(what) + ": " + std::strerror(errno);
    return false;
  }

  const std::uint16_t port_;
  std::vector<int> idle_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<TlsConnection>> tricklers_;
  std::thread trickler_;
  std::atomic<bool> stop_{false};
  std::string error_;
};

}  // namespace strongroom::testing

#endif  // STRONGROOM_TESTS_SUPPORT_CONNECTION_FLOOD_H_
