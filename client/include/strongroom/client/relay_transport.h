// The KMS protocol through the core (cored's POST /kms/messages?cluster=kms://<host>): for
// clients that cannot reach the KMS, whose security realm has no inbound port. The request carries
// the user's core token; the sealed message inside carries the KMS token, which cored never sees.
// cored returns the KMS's answer as it came (status, Content-Type, body), or its own JSON error
// (503 when that KMS is not attached, 401 for a bad core token, 413, 415): both are answers here,
// for KmsContext to act on. A network failure is UNAVAILABLE.
//
//   auto relay = RelayTransport::New({"https://core.example.com", "/etc/strongroom/ca.pem",
//                                     "kms://kms.example.com", core_token});
//   auto kms = KmsContext::New(options, info, MakeKmsTransport(std::move(*relay)));
//
// Thread-safe (requests take turns on one keep-alive connection).
#ifndef STRONGROOM_CLIENT_RELAY_TRANSPORT_H_
#define STRONGROOM_CLIENT_RELAY_TRANSPORT_H_

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "strongroom/client/kms_session.h"
#include "strongroom/client/token_source.h"
#include "strongroom/common/error.h"

namespace strongroom::client {

namespace internal {
class HttpsClient;
}

struct RelayTransportOptions {
  std::string core_url;    // https://host[:port] of cored, no path
  std::string ca_file;     // PEM: the CA certificates cored's TLS certificate must chain to
  std::string cluster;     // kms://<host>: the KMS the messages are for
  TokenSource core_token;  // the user's token for the core (audience "core")
  std::chrono::seconds timeout{30};
};

class RelayTransport {
 public:
  static Result<std::unique_ptr<RelayTransport>> New(RelayTransportOptions options);
  ~RelayTransport();
  RelayTransport(const RelayTransport&) = delete;
  RelayTransport& operator=(const RelayTransport&) = delete;

  Result<KmsResponse> Post(const std::string& message);

  const std::string& cluster() const { return options_.cluster; }

 private:
  RelayTransport(RelayTransportOptions options, std::unique_ptr<internal::HttpsClient> https);

  const RelayTransportOptions options_;
  std::mutex mutex_;
  std::unique_ptr<internal::HttpsClient> https_;
};

// A KmsTransport that owns `relay`.
KmsTransport MakeKmsTransport(std::shared_ptr<RelayTransport> relay);

}  // namespace strongroom::client

#endif  // STRONGROOM_CLIENT_RELAY_TRANSPORT_H_
