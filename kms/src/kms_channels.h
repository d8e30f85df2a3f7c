// The KMS protocol's secure channel (draft-abiggs-saag-key-management-service-02, 4.6 and 4.7.1-2):
// how a message is opened and its answer sealed, apart from what the request asks for, which is
// the operations' business (KmsService, kms_service.cc).
//
//   create /ecdhe   a JWE RSA-OAEP/A256GCM to the KMS's static key, opened by an identity key in
//                   the HSM (kms_identities.h); the bearer verified; a fresh EC P-256 key pair, the
//                   shared key HKDF-SHA256(ECDH secret, empty salt, empty info, 32 bytes) stored
//                   wrapped under every token's root key (so any node sharing the database can use
//                   the channel); the answer a PS256 JWS by the identity that opened the message.
//                   A repeat (the same RSA-OAEP encrypted key) is refused, signed, before any RSA
//                   work.
//   sealed message  a JWE dir/A256GCM whose kid names the channel: refused with a signed 401 when
//                   the channel is unknown, deleted, expired or has executed its requests; opened
//                   with the channel's key (unwrapped in the HSM, kept in the channel-key cache);
//                   refused, sealed, as a replay when the channel executed it before
//                   (replay_guard.h); otherwise executed and its answer sealed under the channel.
//
// Signed refusals carry no requestId, so one signature per reason and identity serves every
// message that earns it for kSignedRefusalReuseMs.
//
// Thread-safe.
#ifndef STRONGROOM_KMS_SRC_KMS_CHANNELS_H_
#define STRONGROOM_KMS_SRC_KMS_CHANNELS_H_

#include <Poco/JSON/Object.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_set>

#include "strongroom/common/database.h"
#include "strongroom/common/jwt.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/hsm/vault.h"
#include "strongroom/kms/hot_path_cache.h"
#include "strongroom/kms/kms_identities.h"
#include "strongroom/kms/kms_service.h"
#include "strongroom/kms/kms_store.h"
#include "strongroom/kms/replay_guard.h"

namespace strongroom::kms {

class AuditWriter;
class KeyCache;

namespace internal {

struct SealedAnswer;  // kms_messages.h

class KmsChannels {
 public:
  using Clock = std::function<std::int64_t()>;  // milliseconds since the epoch
  // Executes the request a sealed message held, for its channel's user; `unrecorded` holds the
  // record that it was executed until it is committed (with a write, or an audit record).
  using Execute = std::function<SealedAnswer(
      const SecretBytes& plaintext, const EphemeralKeyRecord& channel,
      std::optional<ExecutedRequest>* unrecorded, std::string* operation)>;

  struct Options {
    std::string cluster;  // kms://<host>
    std::size_t metadata_cache_entries = 0;
    std::chrono::milliseconds metadata_cache_age{0};
    std::size_t max_requests_per_channel = kMaxRequestsPerChannel;
  };

  // Everything given outlives the channels; `channel_keys` may be null (no cache).
  KmsChannels(Options options, hsm::Vault& vault, KmsIdentities& identities, Database& db,
              const JwtVerifier& verifier, Clock clock, AuditWriter& audit, KeyCache* channel_keys);

  // create /ecdhe. `operation` names it for the metrics.
  KmsReply Create(std::string_view message, std::string* operation);
  // A sealed message under the channel `kid`: opened, executed once by `execute`, its answer
  // sealed.
  KmsReply Open(std::string_view message, const std::string& kid, std::string* operation,
                const Execute& execute);
  // delete /ecdhe: the channel is never accepted again, and its key leaves memory.
  Status Delete(const std::string& uri);

 private:
  // A PS256 JWS with `identity`'s key (kid = the cluster) over the answer.
  Result<std::string> SignAnswer(const Poco::JSON::Object& answer,
                                 const KmsIdentities::Identity& identity);
  // An unsealed refusal signed with the identity in service: {status, reason}.
  KmsReply SignedRefusal(int status, const std::string& reason);
  // Whether this create /ecdhe's RSA-OAEP encrypted key is new (then it is remembered).
  bool FirstSightOfEcdhe(std::span<const std::uint8_t> encrypted_key);
  void ForgetEcdhe(std::span<const std::uint8_t> encrypted_key);
  void SweepExecutedRequests(std::int64_t now_ms);
  Result<SecretBytes> ChannelKey(const EphemeralKeyRecord& channel);

  const std::string cluster_;
  hsm::Vault& vault_;
  KmsIdentities& identities_;
  Database& db_;
  const JwtVerifier& verifier_;
  const Clock clock_;
  AuditWriter& audit_;
  KeyCache* const channel_keys_;
  HotPathCache<EphemeralKeyRecord> channels_;
  ReplayGuard replay_;
  std::atomic<std::int64_t> last_sweep_ms_{0};

  struct SignedAnswer {
    std::string jws;
    std::int64_t signed_ms = 0;
  };
  std::mutex refusals_mutex_;
  std::mutex refusal_signing_;  // one signature at a time, so a burst costs one
  // By status, reason and the signing identity's thumbprint.
  std::map<std::tuple<int, std::string, std::string>, SignedAnswer> refusals_;

  std::mutex ecdhe_mutex_;
  std::unordered_set<std::string> ecdhe_seen_;  // SHA-256 of recent RSA-OAEP encrypted keys
  std::deque<std::string> ecdhe_order_;         // the same, oldest first
};

}  // namespace internal
}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_SRC_KMS_CHANNELS_H_
