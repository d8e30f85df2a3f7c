// The KMS's half of the relay through the core: kmsd dials out to cored, so the security realm
// needs no inbound port (cored's half and the frames: core/include/strongroom/core/kms_relay.h).
//
// Each of `connections` threads keeps one connection up: TLS to cored (its certificate verified
// against ca_file and the URL's host), GET /relay/kms upgraded to a WebSocket with
// `Authorization: Bearer <relay token>` and `X-Strongroom-Kms-Cluster: kms://<host>`, then one
// request at a time: a text frame {"id", "body"} in, KmsService::Handle(body), a text frame
// {"id", "status", "contentType", "body"} out. Pings are answered with pongs. A connection that
// hears nothing for idle_timeout (cored pings idle connections every 20 s by default) is taken
// for dead. On any failure the connection is closed and dialled again after a backoff that
// doubles from backoff_initial to backoff_max, with jitter; a refused token is retried the same
// way (the operator may be fixing cored's side).
//
// Logs one line per state change of a connection (up, lost, cannot connect), never a body or the
// token. Thread-safe.
#ifndef STRONGROOM_KMS_RELAY_CONNECTOR_H_
#define STRONGROOM_KMS_RELAY_CONNECTOR_H_

#include <Poco/Net/Context.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/kms/kms_service.h"

namespace Poco::Net {
class WebSocket;
}

namespace strongroom::kms {

// The wire's names and bounds; they match core/include/strongroom/core/kms_relay.h (the KMS does
// not link the core; tests/core/kms_relay_test.cc checks that both say the same).
inline constexpr char kRelayUpgradePath[] = "/relay/kms";
inline constexpr char kRelayClusterHeaderName[] = "X-Strongroom-Kms-Cluster";
inline constexpr std::size_t kMaxRelayRequestBodyBytes = kMaxKmsMessageBytes;
inline constexpr std::size_t kMaxRelayAnswerBodyBytes = 4 * 1024 * 1024;
inline constexpr std::size_t kRelayEnvelopeBytes = 1024;
inline constexpr std::size_t kMaxRelayConnectorConnections = 64;
inline constexpr std::size_t kMinRelayTokenLength = 32;
inline constexpr std::size_t kMaxRelayTokenLength = 4096;

struct RelayConnectorOptions {
  std::string url;              // https://host[:port] of cored, no path
  std::string ca_file;          // PEM: the CA certificates cored's certificate must chain to
  std::string token_file;       // the relay token, mode 0600 (ReadRelayToken)
  std::string cluster;          // kms://<host>, as cored's [relay.<n>] cluster names it
  std::size_t connections = 4;  // 1 to kMaxRelayConnectorConnections
  std::chrono::milliseconds idle_timeout{45000};    // more than twice cored's ping interval
  std::chrono::milliseconds connect_timeout{5000};  // TCP, TLS and the upgrade, each step
  std::chrono::milliseconds backoff_initial{100};
  std::chrono::milliseconds backoff_max{10000};
  // One line per state change; empty: stderr with the prefix "kmsd: ".
  std::function<void(const std::string&)> log;
};

// Reads the relay token: a regular file of mode 0600 or stricter holding one token of
// kMinRelayTokenLength to kMaxRelayTokenLength printable characters without spaces (a final
// newline is ignored). INVALID_ARGUMENT naming the file otherwise.
Result<SecretBytes> ReadRelayToken(const std::string& path);

class RelayConnector {
 public:
  // Answers one relayed message; called from several threads at once.
  using Handler = std::function<KmsReply(std::string_view message)>;

  // Checks the options, reads the token and the CA file; does not dial yet. `service` must
  // outlive the connector.
  static Result<std::unique_ptr<RelayConnector>> New(RelayConnectorOptions options,
                                                     KmsService& service);
  static Result<std::unique_ptr<RelayConnector>> New(RelayConnectorOptions options,
                                                     Handler handler);
  ~RelayConnector();  // Stop()s
  RelayConnector(const RelayConnector&) = delete;
  RelayConnector& operator=(const RelayConnector&) = delete;

  // Starts the connection threads; returns at once. No effect while started.
  void Start();
  // Closes every connection (a request being handled finishes first; its answer is lost) and
  // joins the threads. A connection attempt under way ends within connect_timeout. Start() may
  // be called again afterwards. Idempotent.
  void Stop();

  std::size_t connected() const;              // connections up now
  std::uint64_t connection_attempts() const;  // dials since New, for tests and logs
  const RelayConnectorOptions& options() const { return options_; }

 private:
  RelayConnector(RelayConnectorOptions options, std::string host, std::uint16_t port,
                 Poco::Net::Context::Ptr context, SecretBytes token, Handler handler);

  void Run(std::size_t index);
  // One connection from dial to close; `up` is set once the upgrade succeeded.
  Status Connect(std::size_t index, bool& up, bool& served);
  Status Serve(Poco::Net::WebSocket& socket, bool& served);
  std::string Answer(std::string_view frame, bool& malformed);
  void Log(const std::string& line) const;

  const RelayConnectorOptions options_;
  const std::string host_;
  const std::uint16_t port_;
  const Poco::Net::Context::Ptr context_;
  const SecretBytes token_;
  const Handler handler_;

  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
  std::vector<int> sockets_;  // per thread: the descriptor of its connection, -1 when none
  std::size_t connected_ = 0;
  std::uint64_t attempts_ = 0;
};

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_RELAY_CONNECTOR_H_
