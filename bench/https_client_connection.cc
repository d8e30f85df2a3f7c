#include "https_client_connection.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace strongroom::bench {
namespace {

using Clock = std::chrono::steady_clock;

// The largest answer head read, and the read buffer's first size.
constexpr std::size_t kMaxHeadBytes = 64 * 1024;
constexpr std::size_t kFirstBufferBytes = 16 * 1024;
// A connection idle this long is opened again before its next request rather than risking a
// request that crosses the server's keep-alive close (Poco's client does the same, at 8 s).
constexpr auto kReconnectAfterIdle = std::chrono::seconds(8);

bool IsIpLiteral(const std::string& host) {
  in6_addr address{};
  return inet_pton(AF_INET, host.c_str(), &address) == 1 ||
         inet_pton(AF_INET6, host.c_str(), &address) == 1;
}

std::string HostField(const HttpsEndpoint& endpoint) {
  const bool v6 = endpoint.host.find(':') != std::string::npos;
  return (v6 ? "[" + endpoint.host + "]" : endpoint.host) + ":" + std::to_string(endpoint.port);
}

bool EqualsIgnoringCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return (x | 0x20) == (y | 0x20);  // enough for the ASCII letters and '-' of names
         });
}

std::string_view Trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// A decimal number of at most 15 digits (enough for any length here); -1 otherwise.
long long ParseDecimal(std::string_view text) {
  if (text.empty() || text.size() > 15) return -1;
  long long value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return -1;
    value = value * 10 + (c - '0');
  }
  return value;
}

// OpenSSL's queued errors for this thread, as text (and the queue emptied).
std::string OpenSslErrors() {
  std::string out;
  char buffer[256];
  for (unsigned long e = ERR_get_error(); e != 0; e = ERR_get_error()) {
    ERR_error_string_n(e, buffer, sizeof buffer);
    if (!out.empty()) out += "; ";
    out += buffer;
  }
  return out;
}

}  // namespace

Result<SslCtxPtr> NewTlsClientContext(const std::string& ca_file) {
  SslCtxPtr context(SSL_CTX_new(TLS_client_method()));
  if (!context) return Error(ErrorCode::kInternal, "SSL_CTX_new: " + OpenSslErrors());
  SSL_CTX_set_min_proto_version(context.get(), TLS1_2_VERSION);
  if (SSL_CTX_load_verify_locations(context.get(), ca_file.c_str(), nullptr) != 1) {
    return Error(ErrorCode::kInvalidArgument,
                 "cannot use " + ca_file + " as the CA file: " + OpenSslErrors());
  }
  SSL_CTX_set_verify(context.get(), SSL_VERIFY_PEER, nullptr);
  // The client keeps its own session per connection (HttpsClientConnection::Close).
  SSL_CTX_set_session_cache_mode(context.get(), SSL_SESS_CACHE_CLIENT);
  // A whole answer (head and body in one or a few records) in one read(2).
  SSL_CTX_set_read_ahead(context.get(), 1);
  SSL_CTX_set_mode(context.get(), SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  return context;
}

Result<HttpsEndpoint> HttpsEndpoint::Resolve(const std::string& host, std::uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int error = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (error != 0 || found == nullptr) {
    return Error(ErrorCode::kInvalidArgument,
                 "cannot resolve " + host + ": " + gai_strerror(error));
  }
  HttpsEndpoint endpoint;
  endpoint.host = host;
  endpoint.port = port;
  std::memcpy(&endpoint.address, found->ai_addr, found->ai_addrlen);
  endpoint.address_length = found->ai_addrlen;
  freeaddrinfo(found);
  return endpoint;
}

HttpsClientConnection::HttpsClientConnection(SSL_CTX* context, const HttpsEndpoint& endpoint)
    : context_(context), endpoint_(endpoint), host_field_(HostField(endpoint)) {}

HttpsClientConnection::~HttpsClientConnection() {
  Close();
  if (session_ != nullptr) SSL_SESSION_free(session_);
}

void HttpsClientConnection::Close() {
  if (ssl_ != nullptr) {
    SSL_SESSION* session = SSL_get1_session(ssl_);
    if (session != nullptr && SSL_SESSION_is_resumable(session) == 1) {
      if (session_ != nullptr) SSL_SESSION_free(session_);
      session_ = session;
    } else if (session != nullptr) {
      SSL_SESSION_free(session);
    }
    SSL_free(ssl_);
    ssl_ = nullptr;
  }
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  state_ = State::kClosed;
  wants_write_ = false;
}

bool HttpsClientConnection::Connect() {
  fd_ = ::socket(endpoint_.address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    error_ = std::string("HTTPS: socket: ") + std::strerror(errno);
    return false;
  }
  ++generation_;
  const int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  const int connected = ::connect(fd_, reinterpret_cast<const sockaddr*>(&endpoint_.address),
                                  endpoint_.address_length);
  if (connected != 0 && errno != EINPROGRESS) {
    error_ = "HTTPS: connect to " + host_field_ + ": " + std::strerror(errno);
    return false;
  }
  ssl_ = SSL_new(context_);
  if (ssl_ == nullptr || SSL_set_fd(ssl_, fd_) != 1) {
    error_ = "HTTPS: SSL_new: " + OpenSslErrors();
    return false;
  }
  SSL_set_connect_state(ssl_);
  if (IsIpLiteral(endpoint_.host)) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), endpoint_.host.c_str());
  } else {
    SSL_set_tlsext_host_name(ssl_, endpoint_.host.c_str());
    SSL_set1_host(ssl_, endpoint_.host.c_str());
  }
  if (session_ != nullptr) SSL_set_session(ssl_, session_);
  state_ = connected == 0 ? State::kHandshaking : State::kConnecting;
  wants_write_ = connected != 0;
  return true;
}

void HttpsClientConnection::Start(std::string_view method, std::string_view target,
                                  std::string_view content_type, std::string_view body) {
  if (state_ == State::kIdle && Clock::now() - idle_since_ > kReconnectAfterIdle) Close();
  if (state_ != State::kIdle && state_ != State::kClosed) Close();  // a request left unfinished
  error_.clear();
  out_.clear();
  out_.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: ").append(host_field_);
  if (!body.empty() || method == "POST") {
    out_.append("\r\nContent-Type: ").append(content_type);
    out_.append("\r\nContent-Length: ").append(std::to_string(body.size()));
  }
  out_.append("\r\n\r\n").append(body);
  if (state_ == State::kIdle) {
    state_ = State::kWriting;
  } else if (!Connect()) {
    state_ = State::kFailed;
  }
}

HttpsClientConnection::Progress HttpsClientConnection::Fail(std::string what) {
  error_ = std::move(what);
  Close();
  return Progress::kFailed;
}

HttpsClientConnection::Progress HttpsClientConnection::FailSsl(const char* what, int result) {
  const int error = SSL_get_error(ssl_, result);
  std::string text = std::string("HTTPS: ") + what + ": ";
  // OpenSSL 3 reports a close without close_notify as an SSL error of its own.
  const bool eof = error == SSL_ERROR_ZERO_RETURN || (error == SSL_ERROR_SYSCALL && errno == 0) ||
                   (error == SSL_ERROR_SSL &&
                    ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING);
  if (eof) {
    text += "the server closed the connection";
    if (state_ == State::kReading) {
      text += in_length_ == 0 ? " before answering" : " in the middle of its answer";
    }
  } else if (error == SSL_ERROR_SYSCALL) {
    text += std::strerror(errno);
  } else {
    const long verified = SSL_get_verify_result(ssl_);
    text += OpenSslErrors();
    if (verified != X509_V_OK) {
      text += std::string(" (certificate: ") + X509_verify_cert_error_string(verified) + ")";
    }
  }
  ERR_clear_error();
  return Fail(std::move(text));
}

HttpsClientConnection::Progress HttpsClientConnection::ReadIdle() {
  if (ssl_ == nullptr) return Progress::kDone;
  char buffer[512];
  const int n = SSL_read(ssl_, buffer, sizeof buffer);
  if (n <= 0 && SSL_get_error(ssl_, n) == SSL_ERROR_WANT_READ) return Progress::kDone;
  // A close (or bytes nobody asked for): the next request opens the connection again.
  ERR_clear_error();
  Close();
  return Progress::kDone;
}

bool HttpsClientConnection::ParseHead(std::size_t head_end) {
  const std::string_view head(in_.data(), head_end);
  std::size_t line_end = head.find("\r\n");
  const std::string_view status_line = head.substr(0, line_end);
  const long long status =
      status_line.size() >= 12 && status_line.substr(0, 7) == "HTTP/1." && status_line[8] == ' '
          ? ParseDecimal(status_line.substr(9, 3))
          : -1;
  if (status < 200 || status > 999) {
    error_ = "HTTPS: not an HTTP/1.x answer (or an interim one)";
    return false;
  }
  answer_.http_status = static_cast<int>(status);
  answer_.content_type.clear();
  answer_.retry_after_s = 0;
  retry_after_ = false;
  close_after_ = status_line[7] == '0';  // HTTP/1.0 closes unless it says keep-alive
  long long length = status == 204 || status == 304 ? 0 : -1;
  while (line_end != std::string_view::npos && line_end + 2 < head.size()) {
    const std::size_t from = line_end + 2;
    line_end = head.find("\r\n", from);
    const std::string_view line = head.substr(from, line_end - from);
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    const std::string_view name = line.substr(0, colon);
    const std::string_view value = Trim(line.substr(colon + 1));
    if (EqualsIgnoringCase(name, "content-length")) {
      length = ParseDecimal(value);
      if (length < 0) {
        error_ = "HTTPS: a bad Content-Length";
        return false;
      }
    } else if (EqualsIgnoringCase(name, "content-type")) {
      answer_.content_type.assign(value);
    } else if (EqualsIgnoringCase(name, "retry-after")) {
      retry_after_ = true;
      answer_.retry_after_s = static_cast<int>(std::max(0LL, ParseDecimal(value)));
    } else if (EqualsIgnoringCase(name, "connection")) {
      close_after_ = EqualsIgnoringCase(value, "close");
    } else if (EqualsIgnoringCase(name, "transfer-encoding")) {
      error_ = "HTTPS: a chunked (Transfer-Encoding) answer, which this client does not read";
      return false;
    }
  }
  if (length < 0) {
    error_ = "HTTPS: an answer without Content-Length";
    return false;
  }
  if (static_cast<unsigned long long>(length) > kMaxAnswerBytes) {
    error_ = "HTTPS: an answer is larger than 4 MiB";
    return false;
  }
  head_length_ = head_end + 4;
  body_length_ = static_cast<std::size_t>(length);
  return true;
}

HttpsClientConnection::Progress HttpsClientConnection::Drive() {
  switch (state_) {
    case State::kClosed:
      return Progress::kDone;
    case State::kIdle:
      return ReadIdle();
    case State::kFailed:
      Close();
      return Progress::kFailed;
    case State::kConnecting: {
      int error = 0;
      socklen_t length = sizeof error;
      if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
      if (error != 0) {
        return Fail("HTTPS: connect to " + host_field_ + ": " + std::strerror(error));
      }
      sockaddr_storage peer{};
      socklen_t peer_length = sizeof peer;
      if (getpeername(fd_, reinterpret_cast<sockaddr*>(&peer), &peer_length) != 0) {
        if (errno != ENOTCONN) return Fail(std::string("HTTPS: connect: ") + std::strerror(errno));
        wants_write_ = true;
        return Progress::kPending;
      }
      state_ = State::kHandshaking;
      [[fallthrough]];
    }
    case State::kHandshaking: {
      const int done = SSL_connect(ssl_);
      if (done != 1) {
        const int error = SSL_get_error(ssl_, done);
        if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
          wants_write_ = error == SSL_ERROR_WANT_WRITE;
          return Progress::kPending;
        }
        return FailSsl("TLS handshake", done);
      }
      state_ = State::kWriting;
      [[fallthrough]];
    }
    case State::kWriting: {
      const int written = SSL_write(ssl_, out_.data(), static_cast<int>(out_.size()));
      if (written <= 0) {
        const int error = SSL_get_error(ssl_, written);
        if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
          wants_write_ = error == SSL_ERROR_WANT_WRITE;
          return Progress::kPending;
        }
        return FailSsl("write", written);
      }
      state_ = State::kReading;
      wants_write_ = false;
      in_length_ = 0;
      head_length_ = 0;
      body_length_ = 0;
      [[fallthrough]];
    }
    case State::kReading:
      break;
  }
  for (;;) {
    if (in_.size() - in_length_ < 4096) {
      const std::size_t limit = kMaxHeadBytes + kMaxAnswerBytes;
      if (in_.size() >= limit) return Fail("HTTPS: an answer is larger than 4 MiB");
      in_.resize(std::min(limit, std::max(kFirstBufferBytes, 2 * in_.size())));
    }
    const int n =
        SSL_read(ssl_, in_.data() + in_length_, static_cast<int>(in_.size() - in_length_));
    if (n <= 0) {
      const int error = SSL_get_error(ssl_, n);
      if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
        wants_write_ = error == SSL_ERROR_WANT_WRITE;
        return Progress::kPending;
      }
      return FailSsl("read", n);
    }
    const std::size_t searched_to = in_length_;
    in_length_ += static_cast<std::size_t>(n);
    if (head_length_ == 0) {
      const std::string_view read(in_.data(), in_length_);
      const std::size_t end = read.find("\r\n\r\n", searched_to >= 3 ? searched_to - 3 : 0);
      if (end == std::string_view::npos) {
        if (in_length_ > kMaxHeadBytes) return Fail("HTTPS: an answer head over 64 KiB");
        continue;
      }
      if (!ParseHead(end)) return Fail(error_);
    }
    if (in_length_ < head_length_ + body_length_) continue;
    if (in_length_ > head_length_ + body_length_) {
      return Fail("HTTPS: the server sent more than its answer's Content-Length");
    }
    answer_.body.assign(in_.data() + head_length_, body_length_);
    if (close_after_) {
      Close();
    } else {
      state_ = State::kIdle;
      idle_since_ = Clock::now();
    }
    return Progress::kDone;
  }
}

HttpsClientConnection::Progress HttpsClientConnection::Exchange(std::string_view method,
                                                                std::string_view target,
                                                                std::string_view content_type,
                                                                std::string_view body,
                                                                std::chrono::milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  Start(method, target, content_type, body);
  for (;;) {
    const Progress progress = Drive();
    if (progress != Progress::kPending) return progress;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    pollfd ready{fd_, static_cast<short>(wants_write_ ? POLLOUT : POLLIN), 0};
    if (left <= 0 || ::poll(&ready, 1, static_cast<int>(left)) == 0) {
      return Fail("HTTPS: no answer within " + std::to_string(timeout.count() / 1000) + " s");
    }
  }
}

}  // namespace strongroom::bench
