// The input format of the KMS message fuzz target (kms_message_fuzz.cc), shared with its seed
// generator (kms_message_seeds.cc).
//
// The first byte, modulo 4, chooses the mode; seeds use the digits '0' to '3' so they stay text:
//   0  raw: the rest is handed to KmsService::Handle as it is (a compact JWE, or garbage).
//   1  sealed: the rest is a request plaintext, sealed alg "dir"/A256GCM under alice's open ECDHE
//      channel, as her client would; the reply must open under the same channel.
//   2  sealed as in 1, under bob's channel.
//   3  create /ecdhe: the rest is sealed RSA-OAEP/A256GCM to the KMS's RSA key (slow: RSA in the
//      HSM); the reply must be a PS256 JWS by that key.
// In modes 1 to 3 the placeholders below are replaced before sealing, so seeds can name the
// harness's users and objects, which are created anew (with new random URIs) in every run.
#ifndef STRONGROOM_FUZZ_KMS_MESSAGE_INPUT_H_
#define STRONGROOM_FUZZ_KMS_MESSAGE_INPUT_H_

#include <cstdint>

namespace strongroom::fuzz {

enum class KmsMessageMode : std::uint8_t { kRaw = 0, kSealedAlice = 1, kSealedBob = 2, kRsa = 3 };
inline constexpr int kKmsMessageModes = 4;

inline constexpr char kFuzzKmsHost[] = "kms.fuzz.test";  // the cluster is kms://kms.fuzz.test
inline constexpr char kFuzzAlice[] = "alice@fuzz.test";
inline constexpr char kFuzzBob[] = "bob@fuzz.test";
inline constexpr char kFuzzCarol[] = "carol@fuzz.test";  // has a token, no channel, no rights

// Placeholders, longest first where one is a prefix of another.
inline constexpr char kTokenAlice[] = "$TOKEN";     // alice's bearer JWT (audience kms)
inline constexpr char kTokenBob[] = "$TOKEN2";      // bob's bearer JWT
inline constexpr char kTokenCarol[] = "$TOKEN3";    // carol's bearer JWT
inline constexpr char kTokenCore[] = "$CORETOKEN";  // alice's JWT for audience core: refused
inline constexpr char kKey[] = "$KEY";              // an unbound key alice created
inline constexpr char kBoundKey[] = "$BOUNDKEY";    // alice's key bound to $RESOURCE
inline constexpr char kResource[] = "$RESOURCE";    // alice's resource; bob is authorized on it
inline constexpr char kAuthorization[] = "$AUTH";   // bob's authorization on $RESOURCE
inline constexpr char kChannel[] = "$ECDHE";        // the URI of the channel the input is sealed in
inline constexpr char kClientJwk[] = "$JWK";        // a fresh client EC P-256 public JWK (mode 3)

}  // namespace strongroom::fuzz

#endif  // STRONGROOM_FUZZ_KMS_MESSAGE_INPUT_H_
