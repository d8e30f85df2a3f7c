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
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "strongroom/common/error.h"

namespace Poco::Net {
class WebSocket;
}

namespace strongroom::core {

inline constexpr std::size_t kMaxRelayMessageBytes = 256 * 1024;
inline constexpr std::size_t kMaxRelayConnectionsPerCluster = 64;

struct KmsRelayOptions {
  // cluster ("kms://host") -> SHA-256 of its relay token
  std::map<std::string, std::array<std::uint8_t, 32>> clusters;
  std::chrono::milliseconds lease_timeout{2000};
  std::chrono::milliseconds answer_timeout{10000};
  std::chrono::seconds ping_interval{20};
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

  // Takes over an upgraded, authenticated WebSocket of `cluster`; returns at once (the relay
  // owns the socket from now on, until it fails or the relay stops).
  void Attach(const std::string& cluster, std::unique_ptr<Poco::Net::WebSocket> socket);

  // Relays one sealed message to the cluster and returns its sealed answer.
  Result<KmsRelayAnswer> Forward(const std::string& cluster, std::string_view message);

  std::size_t Connected(const std::string& cluster) const;  // attached connections

 private:
  class Impl;
  explicit KmsRelay(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace strongroom::core

#endif  // STRONGROOM_CORE_KMS_RELAY_H_
