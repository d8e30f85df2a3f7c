// The core's half of the KMS relay: the security realm needs no inbound port.
//
// Each kmsd dials out to cored (GET /relay/kms, upgraded to a WebSocket over TLS) and presents
// the relay credential configured for its cluster (`Authorization: Bearer <relay token>`; cored
// keeps only its SHA-256 and compares in constant time) and its cluster name (`kms://<host>`,
// header `X-Strongroom-Kms-Cluster`). A kmsd keeps several such connections open (one per
// concurrent request it should take); cored leases one per relayed message, writes the sealed
// message as one text frame, reads the sealed answer as one text frame, and returns the
// connection to the idle set. The core never reads either: they are compact JOSE, opaque here.
//
// Frames (text, JSON): request {"id": n, "body": "<compact JOSE>"}; answer {"id": n, "status":
// <HTTP status of KmsService::Handle>, "contentType": "...", "body": "..."}; the id must match.
// A request's body is at most kMaxRelayMessageBytes of compact JOSE (base64url and dots, so it
// needs no escaping); an answer's body at most kMaxRelayAnswerBytes (a bulk key retrieval is
// larger than any request). A frame over its bound is refused and the connection dropped. Pings
// go from the core to the KMS only; either side answers a ping with a pong.
//
// When no connection of the named cluster is attached, Forward fails at once with UNAVAILABLE
// ("the KMS kms://x is not connected"); when all are leased it waits at most `lease_timeout` and
// then fails UNAVAILABLE too (the transport answers 503 with Retry-After). A connection that
// fails mid-exchange is dropped (the request fails UNAVAILABLE; it is not re-sent, since the
// KMS may have acted on it). Idle connections are pinged every `ping_interval`; one that does
// not answer is dropped.
//
// Thread-safe.
#ifndef STRONGROOM_CORE_KMS_RELAY_H_
#define STRONGROOM_CORE_KMS_RELAY_H_

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "strongroom/common/error.h"

namespace Poco::Net {
class HTTPServerRequest;
class HTTPServerResponse;
class WebSocket;
}  // namespace Poco::Net

namespace strongroom::core {

inline constexpr char kRelayPath[] = "/relay/kms";
inline constexpr char kRelayClusterHeader[] = "X-Strongroom-Kms-Cluster";

inline constexpr std::size_t kMaxRelayMessageBytes = 256 * 1024;      // a request's body
inline constexpr std::size_t kMaxRelayAnswerBytes = 4 * 1024 * 1024;  // an answer's body
inline constexpr std::size_t kRelayFrameEnvelopeBytes = 1024;         // {"id",...} around a body
inline constexpr std::size_t kMaxRelayRequestFrameBytes =
    kMaxRelayMessageBytes + kRelayFrameEnvelopeBytes;
inline constexpr std::size_t kMaxRelayAnswerFrameBytes =
    kMaxRelayAnswerBytes + kRelayFrameEnvelopeBytes;
inline constexpr std::size_t kMaxRelayConnectionsPerCluster = 64;
inline constexpr std::size_t kMinRelayTokenBytes = 32;  // `openssl rand -hex 32` makes 64
inline constexpr std::size_t kMaxRelayTokenBytes = 4096;

struct KmsRelayOptions {
  // cluster ("kms://host") -> SHA-256 of its relay token
  std::map<std::string, std::array<std::uint8_t, 32>> clusters;
  std::chrono::milliseconds lease_timeout{2000};
  std::chrono::milliseconds answer_timeout{10000};
  std::chrono::seconds ping_interval{20};
  // One line per connection attached or dropped (never a body or a token); empty: stderr.
  std::function<void(const std::string&)> log;
};

struct KmsRelayAnswer {
  int http_status = 200;
  std::string content_type;  // application/jose, or application/json for a plain error
  std::string body;
};

class KmsRelay {
 public:
  static Result<std::unique_ptr<KmsRelay>> New(KmsRelayOptions options);
  ~KmsRelay();  // closes every connection

  // UNAUTHENTICATED unless `token` is the relay token of `cluster`.
  Status CheckCredential(std::string_view cluster, std::string_view token) const;
  // One line to the relay's log (options.log, or standard error).
  void Log(const std::string& line) const;

  // Takes over an upgraded, authenticated WebSocket of `cluster`; returns at once (the relay
  // owns the socket from now on, until it fails or the relay stops). A socket of a cluster that
  // is not configured, or beyond kMaxRelayConnectionsPerCluster, is closed.
  void Attach(const std::string& cluster, std::unique_ptr<Poco::Net::WebSocket> socket);

  // Relays one sealed message to the cluster and returns its sealed answer. INVALID_ARGUMENT for
  // an empty or oversize message or one that is not compact JOSE (nothing is sent); UNAVAILABLE
  // when the cluster is unknown or not connected, all its connections stay busy, or the exchange
  // fails or takes longer than answer_timeout.
  Result<KmsRelayAnswer> Forward(const std::string& cluster, std::string_view message);

  std::size_t Connected(const std::string& cluster) const;  // attached connections
  // Every configured cluster with its attached connections (for GET /health).
  std::map<std::string, std::size_t> ConnectedClusters() const;

 private:
  class Impl;
  explicit KmsRelay(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The core server's handler of GET /relay/kms: checks the request (GET, the cluster header, a
// Bearer token that CheckCredential accepts, a WebSocket handshake), then upgrades it and
// Attach()es the socket. Anything else is answered here with a JSON error {"code", "message"}
// and no upgrade: 401 (with WWW-Authenticate) for a missing or wrong credential, 400 for a
// request that is not a WebSocket handshake, 405 for another method, 503 (Retry-After) when the
// cluster has kMaxRelayConnectionsPerCluster attached. A refused credential is logged with the
// peer's address and the cluster it named (never the token). Returns what happened, for the
// caller's log;
// the response has always been sent. Never throws.
Status HandleRelayUpgrade(KmsRelay& relay, Poco::Net::HTTPServerRequest& request,
                          Poco::Net::HTTPServerResponse& response);

// Reads a relay token file (the same file on cored's and on the kmsd's side; make one with
// `openssl rand -hex 32 > relay.token; chmod 600 relay.token`): a regular file of mode 0600 or
// stricter holding one token of kMinRelayTokenBytes to kMaxRelayTokenBytes printable characters
// without spaces (a final newline is ignored). Returns its SHA-256; the token itself is zeroized.
// INVALID_ARGUMENT naming the file otherwise (readable by group or others, empty, too short).
Result<std::array<std::uint8_t, 32>> ReadRelayTokenDigest(const std::string& path);

}  // namespace strongroom::core

#endif  // STRONGROOM_CORE_KMS_RELAY_H_
