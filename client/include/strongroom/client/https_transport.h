// HTTPS to a KMS: POST /kms/messages and GET /kms/info over one keep-alive connection, the
// server's certificate verified against a CA file (and its name against the URL's host).
//
//   auto https = HttpsTransport::New({"https://kms.example.com:8443", "/etc/strongroom/ca.pem"});
//   auto info = ParseKmsInfo(*(*https)->GetInfo());
//   auto session = KmsSession::Open(*info, "client-1", bearer, MakeKmsTransport(*https));
//
// When a request on a reused connection fails before any answer arrived (the server closed the
// idle connection), the transport reconnects and sends it once more; a request on a fresh
// connection is never sent twice. One transport per thread, like KmsSession: not thread-safe.
#ifndef STRONGROOM_CLIENT_HTTPS_TRANSPORT_H_
#define STRONGROOM_CLIENT_HTTPS_TRANSPORT_H_

#include <chrono>
#include <memory>
#include <string>

#include "strongroom/client/kms_session.h"
#include "strongroom/common/error.h"

namespace strongroom::client {
namespace internal {
class HttpsClient;
}

inline constexpr std::size_t kMaxKmsResponseBytes = 4 * 1024 * 1024;

struct HttpsTransportOptions {
  std::string base_url;  // https://host[:port], no path
  std::string ca_file;   // PEM: the CA certificates the server's certificate must chain to
  std::chrono::seconds timeout{30};
};

class HttpsTransport {
 public:
  static Result<std::unique_ptr<HttpsTransport>> New(const HttpsTransportOptions& options);
  ~HttpsTransport();
  HttpsTransport(const HttpsTransport&) = delete;
  HttpsTransport& operator=(const HttpsTransport&) = delete;

  // POST /kms/messages with Content-Type application/jose; any HTTP status is a response, a
  // network or TLS failure is UNAVAILABLE. A 2xx body may hold up to kMaxKmsResponseBytes, any
  // other up to 64 KiB (the KMS's errors are a few hundred bytes); more is RESOURCE_EXHAUSTED.
  Result<KmsResponse> Post(const std::string& message);
  // GET /kms/info; anything but 200 is an error.
  Result<std::string> GetInfo();

  // The Retry-After of the last answer in seconds (0 when absent): a 503 from an overloaded KMS.
  int last_retry_after() const { return last_retry_after_; }

 private:
  explicit HttpsTransport(std::unique_ptr<internal::HttpsClient> client);
  Result<KmsResponse> Exchange(const std::string& method, const std::string& path,
                               const std::string& content_type, const std::string& body);

  std::unique_ptr<internal::HttpsClient> client_;  // the connection CoreClient uses too
  int last_retry_after_ = 0;
};

// A KmsTransport for KmsSession that posts through `transport`, which must outlive it.
KmsTransport MakeKmsTransport(HttpsTransport& transport);

}  // namespace strongroom::client

#endif  // STRONGROOM_CLIENT_HTTPS_TRANSPORT_H_
