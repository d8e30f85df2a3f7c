// One keep-alive HTTPS connection to a Strongroom service (cored), private to the client library:
// what CoreClient and RelayTransport share. Requests carry `Authorization: Bearer <token>`; the
// server is verified against a CA file and the URL's host (common/tls.h).
//
// Not thread-safe: its owner serializes requests.
#ifndef STRONGROOM_CLIENT_SRC_HTTPS_CLIENT_H_
#define STRONGROOM_CLIENT_SRC_HTTPS_CLIENT_H_

#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPRequest.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <istream>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "strongroom/common/error.h"

namespace Poco::Net {
class HTTPSClientSession;
}

namespace strongroom::client::internal {

struct HttpAnswer {
  int status = 0;
  std::string content_type;
  std::string body;
  int retry_after_s = 0;
  std::string sha256;  // X-Content-SHA256, when sent
};

class HttpsClient {
 public:
  // More header fields of a request (the bearer token goes in `bearer`).
  using Headers = std::vector<std::pair<std::string, std::string>>;
  // `base_url` is https://host[:port] without a path; `what` names the server in errors.
  static Result<std::unique_ptr<HttpsClient>> New(const std::string& base_url,
                                                  const std::string& ca_file,
                                                  std::chrono::seconds timeout, std::string what);
  ~HttpsClient();
  HttpsClient(const HttpsClient&) = delete;
  HttpsClient& operator=(const HttpsClient&) = delete;

  // A request with a body held in memory; the answer's body is read up to `max_answer` bytes
  // (RESOURCE_EXHAUSTED beyond). Any HTTP status is an answer; no answer is UNAVAILABLE. On a
  // reused connection the server may have closed, a request that got no answer is sent once more.
  Result<HttpAnswer> Exchange(const std::string& method, const std::string& target,
                              const std::string& bearer, const std::string& content_type,
                              const std::string& body, std::size_t max_answer,
                              const Headers& headers = {});

  // A request whose body `write` streams (exactly `length` bytes) on a fresh connection; a 2xx
  // answer's body is handed to `read` (with its X-Content-SHA256, if any), other answers are read
  // into HttpAnswer::body (up to 64 KiB). Never sent twice.
  using BodyWriter = std::function<Status(std::ostream& out)>;
  using BodyReader = std::function<Status(std::istream& in, const HttpAnswer& head)>;
  Result<HttpAnswer> Stream(const std::string& method, const std::string& target,
                            const std::string& bearer, const std::string& content_type,
                            std::uint64_t length, const BodyWriter& write, const BodyReader& read);

  const std::string& host() const { return host_; }
  std::uint16_t port() const { return port_; }
  Poco::Net::Context::Ptr context() const { return context_; }
  std::chrono::seconds timeout() const { return timeout_; }
  const std::string& what() const { return what_; }

 private:
  HttpsClient(std::string host, std::uint16_t port, Poco::Net::Context::Ptr context,
              std::chrono::seconds timeout, std::string what);
  void Reset();
  // A new connection (session_), and a keep-alive request on it with the bearer token, if any.
  Poco::Net::HTTPRequest Connect(const std::string& method, const std::string& target,
                                 const std::string& bearer);

  std::string host_;
  std::uint16_t port_;
  Poco::Net::Context::Ptr context_;
  std::chrono::seconds timeout_;
  std::string what_;
  std::unique_ptr<Poco::Net::HTTPSClientSession> session_;
};

}  // namespace strongroom::client::internal

#endif  // STRONGROOM_CLIENT_SRC_HTTPS_CLIENT_H_
