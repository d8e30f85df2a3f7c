// The input format of the core request fuzz target (core_request_fuzz.cc), shared with its seed
// generator (core_request_seeds.cc).
//
// The first byte chooses what the rest is fed to: (byte - 'a') modulo kCoreRequestModes, so every
// byte selects something and seeds use the letters 'a' to 'p' and stay text:
//   a  ParseCreateConversation      h  ParseSearch
//   b  ParseAddParticipants         i  ParseHistoryQuery
//   c  ParseRemoveParticipant       j  ParseListQuery
//   d  ParseRotateKey               k  ParseEventsQuery
//   e  ParseSetTitle                l  ParseRelayQuery
//   f  ParsePost                    m  CheckContentJwe
//   g  ParseIndexTokens             n  a post body through ParsePost and CoreService::PostActivity
//                                   o  ParseEdit
//                                   p  ParseIndexTokenSets
// In mode n the placeholder kFileId is replaced by the id of a file the harness uploaded to its
// conversation, so that seeds can share it.
#ifndef STRONGROOM_FUZZ_CORE_REQUEST_INPUT_H_
#define STRONGROOM_FUZZ_CORE_REQUEST_INPUT_H_

#include <cstdint>

namespace strongroom::fuzz {

enum class CoreRequestMode : std::uint8_t {
  kCreateConversation = 0,
  kAddParticipants,
  kRemoveParticipant,
  kRotateKey,
  kSetTitle,
  kPost,
  kIndexTokens,
  kSearch,
  kHistoryQuery,
  kListQuery,
  kEventsQuery,
  kRelayQuery,
  kContentJwe,
  kServicePost,
  kEdit,
  kIndexTokenSets,
};
inline constexpr int kCoreRequestModes = 16;

inline constexpr char ModeLetter(CoreRequestMode mode) {
  return static_cast<char>('a' + static_cast<int>(mode));
}

// The harness's conversation in mode n: created by alice with kCoreOldKey, then rotated to
// kCoreCurrentKey, so content under the old key earns "key rotation required".
inline constexpr char kCoreFuzzHost[] = "kms.fuzz.test";
inline constexpr char kCoreAlice[] = "alice@fuzz.test";
inline constexpr char kCoreBob[] = "bob@fuzz.test";
inline constexpr char kCoreResource[] =
    "kms://kms.fuzz.test/resources/0c2f9f5e-7a41-4c57-9d1e-3f0a8b6c2d11";
inline constexpr char kCoreOldKey[] =
    "kms://kms.fuzz.test/keys/5b0e6d1c-2f3a-4e8b-9c7d-1a2b3c4d5e6f";
inline constexpr char kCoreCurrentKey[] =
    "kms://kms.fuzz.test/keys/9e8d7c6b-5a49-4382-b1c0-f0e1d2c3b4a5";
inline constexpr char kFileId[] = "$FILE";

}  // namespace strongroom::fuzz

#endif  // STRONGROOM_FUZZ_CORE_REQUEST_INPUT_H_
