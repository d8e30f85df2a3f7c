// A room's search key and the tokens it makes: what the core stores and searches in place of a
// term (docs/architecture.md, "The indexer"; docs/threat-model.md).
//
//   K_room = HKDF-SHA-256(IKM  = the organization's search key, 32 bytes,
//                         salt = none (HashLen zero bytes, RFC 5869),
//                         info = "strongroom/search/room/v1" 0x00 | u16 len | room id
//                                | u32 search key version,   integers big-endian)
//            32 bytes
//   token  = base64url(HMAC-SHA-256(K_room, term)[0..8)), without padding: 11 characters
//
// Only the security realm holds the organization's search key and K_room; room members never do,
// so a removed member cannot compute the tokens of the room's future messages. One term gives
// unrelated tokens in two rooms, or under two versions of the organization's key.
//
// 64 bits are enough: a token is only ever compared for equality with the tokens of the same room
// (the core's search is per conversation), and nobody without K_room can choose a term that hits
// a given token. A room with a million distinct terms gives a query term a chance of about
// 2^-44 of matching another term's token; such a false positive costs the client one decryption of
// an activity, which it then leaves out when it finds the words missing. Small tokens keep the
// core's index small (11 characters where the whole HMAC would be 43), and every activity stores
// a bucket of them (decoy_padding.h).
//
// Thread-safe: Token() only reads the key.
#ifndef STRONGROOM_INDEXER_ROOM_SEARCH_KEY_H_
#define STRONGROOM_INDEXER_ROOM_SEARCH_KEY_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"

namespace strongroom::indexer {

inline constexpr std::size_t kOrgSearchKeyBytes = 32;
inline constexpr std::size_t kRoomSearchKeyBytes = 32;
inline constexpr std::size_t kSearchTokenBytes = 8;
// base64url of kSearchTokenBytes without padding.
inline constexpr std::size_t kSearchTokenChars = 11;

// A conversation id as the core writes it: a UUID in lowercase hex. A room's key is derived from
// this spelling only.
bool IsLowercaseUuid(std::string_view id);

class RoomSearchKey {
 public:
  // K_room for the room `room_id` (the core's conversation id, a lowercase UUID) from the
  // organization's search key of version `search_key_version`. INVALID_ARGUMENT for a key that is
  // not kOrgSearchKeyBytes long or a room id that is not a lowercase UUID (another spelling of the
  // same id would give other tokens).
  static Result<RoomSearchKey> Derive(const SecretBytes& org_search_key, std::string_view room_id,
                                      std::uint32_t search_key_version);

  // The token of one term (kSearchTokenChars of base64url).
  std::string Token(std::string_view term) const;
  // The tokens of the terms, in their order.
  std::vector<std::string> Tokens(const std::vector<std::string>& terms) const;
  // The decoys of one activity: token number i (0, 1, ...) is the token of the byte string
  //   0x00 "decoy" 0x00 | activity id | u32 i (big-endian),
  // which no term can be (terms never hold a NUL). The same activity always gets the same decoys,
  // so indexing it again puts the same set (decoy_padding.h).
  std::vector<std::string> DecoyTokens(std::string_view activity_id, std::size_t count) const;

 private:
  explicit RoomSearchKey(SecretBytes key) : key_(std::move(key)) {}
  SecretBytes key_;
};

}  // namespace strongroom::indexer

#endif  // STRONGROOM_INDEXER_ROOM_SEARCH_KEY_H_
