// The core's data model: what the service stores and answers (conversations, activities, files,
// index matches), what callers ask for (new conversations, posts, history and search queries),
// and the limits on all of them. Plain values, no behaviour but the content's shape check; the
// rules over them are CoreService's (core_service.h).
#ifndef STRONGROOM_CORE_MODEL_H_
#define STRONGROOM_CORE_MODEL_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strongroom/common/error.h"

namespace strongroom::core {

// Limits, explicit. Exceeding one is INVALID_ARGUMENT (or RESOURCE_EXHAUSTED for the file size).
inline constexpr std::size_t kMaxUserIdBytes = 256;
inline constexpr std::size_t kMaxUriBytes = 512;        // KMS resource and key URLs
inline constexpr std::size_t kMaxParticipants = 1000;   // per conversation
inline constexpr std::size_t kMaxUsersPerChange = 100;  // per create / add request
inline constexpr std::size_t kMaxContentBytes = 64 * 1024 * 4 / 3 + 1024;  // 64 KiB plaintext
inline constexpr std::size_t kMaxTitleBytes = 4096;                        // encrypted title (JWE)
inline constexpr std::size_t kMaxClientActivityIdBytes = 64;
inline constexpr std::size_t kMaxFileIdsPerActivity = 16;
inline constexpr std::size_t kMaxPageSize = 200;  // history, conversations, search
inline constexpr std::size_t kDefaultPageSize = 50;
inline constexpr std::size_t kMaxEventsPage = 1000;  // EventsSince (the realtime replay)
inline constexpr std::size_t kMaxIndexTokensPerActivity = 512;
inline constexpr std::size_t kMaxIndexTokenBytes = 64;        // base64url of an HMAC, padded
inline constexpr std::size_t kMaxSearchTokens = 32;           // per conversation of a search
inline constexpr std::size_t kMaxSearchConversations = 1000;  // a search's queries
inline constexpr std::size_t kMaxIndexSetsPerBatch = 256;     // POST /v1/index/sets
inline constexpr std::size_t kDeclaredKeysPerConversation = 10000;

// The authenticated caller, from a verified core token: `user_id` is the token's subject and
// `org` its issuer's organization.
struct Caller {
  std::string user_id;
  std::string org;
};

struct Conversation {
  std::string id;                         // UUID
  std::string kms_resource_uri;           // kms://<host>/resources/<uuid>
  std::string current_key_uri;            // kms://<host>/keys/<uuid>: the key new content must use
  std::string encrypted_title;            // compact JWE under a declared key, or empty
  std::vector<std::string> participants;  // sorted
  std::string created_by;
  std::int64_t created_ms = 0;
  std::int64_t last_seq = 0;  // the newest activity's sequence number
};

// Verbs: "create" (object_users = initial participants, key_uri = first key, content = the
// encrypted title if one was given), "post" (content),
// "share" (content = the encrypted file reference, file_ids = the files it refers to), "add",
// "remove", "leave" (object_users), "rotate" (key_uri = the new current key), "title" (content =
// the new encrypted title), "edit" (target = the post edited, content = its new text until a later
// edit or a retraction replaces it), "retract" (target = the message retracted).
//
// A message (post or share) that was edited carries the newest edit's content and key and
// `edited_ms`; one that was retracted carries no content, key or files and `retracted_ms`.
struct Activity {
  std::int64_t seq = 0;  // global, strictly increasing
  std::string id;        // UUID
  std::string conversation_id;
  std::string actor;
  std::string verb;
  std::string content;  // compact JWE, or empty
  std::string key_uri;  // the JWE's kid, or the declared key of create/rotate
  std::vector<std::string> object_users;
  std::vector<std::string> file_ids;
  std::string client_activity_id;  // the sender's idempotency id, or empty
  std::int64_t published_ms = 0;
  std::string target_id;          // edit, retract: the message's id
  std::int64_t target_seq = 0;    // and its seq
  std::int64_t edited_ms = 0;     // post: when it was last edited, or 0
  std::int64_t retracted_ms = 0;  // post, share: when it was retracted, or 0
};

struct NewConversation {
  std::string kms_resource_uri;
  std::string key_uri;
  std::vector<std::string> participants;  // the creator is added if absent
  std::string encrypted_title;            // optional
};

struct NewPost {
  std::string content;                // compact JWE; its kid must be the current key
  std::vector<std::string> file_ids;  // makes it a "share"; each uploaded to this conversation
  std::string client_activity_id;     // optional, [A-Za-z0-9_-]{1,64}
};

// A page of history. `before` and `after` are sequence numbers (exclusive); with neither, the
// newest page. Items are in ascending sequence order either way.
struct HistoryQuery {
  std::optional<std::int64_t> before;
  std::optional<std::int64_t> after;
  std::size_t limit = kDefaultPageSize;  // 1..kMaxPageSize
};
struct HistoryPage {
  std::vector<Activity> items;
  bool more = false;  // more items exist beyond the page in the direction asked
};

struct FileInfo {
  std::string id;  // UUID
  std::string conversation_id;
  std::string uploader;
  std::uint64_t size = 0;
  std::string sha256_hex;  // of the encrypted blob, as stored
  std::int64_t created_ms = 0;
};

struct IndexMatch {
  std::string conversation_id;
  std::string activity_id;
  std::int64_t seq = 0;
};
// One conversation's part of a search: tokens differ per conversation (each has its own search
// key), so each names its own. An activity of the conversation matches when it has every token.
struct RoomQuery {
  std::string conversation_id;
  std::vector<std::string> tokens;  // 1..kMaxSearchTokens
};
struct SearchQuery {
  std::vector<RoomQuery> queries;      // 1..kMaxSearchConversations, each conversation once
  std::optional<std::int64_t> before;  // seq cursor (exclusive): newest matches first
  std::size_t limit = kDefaultPageSize;
};
// One activity's token set of a batch put (POST /v1/index/sets): replaces the activity's set.
struct IndexTokenSet {
  std::string conversation_id;
  std::string activity_id;
  std::vector<std::string> tokens;  // 0..kMaxIndexTokensPerActivity
};
struct SearchPage {
  std::vector<IndexMatch> items;  // newest first
  std::optional<std::int64_t> next_before;
};

// Checks that `jwe` is a compact JWE with protected header alg "dir", enc "A256GCM", a kid of at
// most kMaxUriBytes, an empty encrypted key, a 12-byte IV, a 16-byte tag and a ciphertext, every
// part canonical base64url; returns the kid. INVALID_ARGUMENT saying what is wrong otherwise.
Result<std::string> CheckContentJwe(std::string_view jwe);

}  // namespace strongroom::core

#endif  // STRONGROOM_CORE_MODEL_H_
