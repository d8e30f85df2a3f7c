// The SDK's user-facing layer: end-to-end encrypted conversations over a CoreClient (ciphertext,
// membership) and a KmsContext (keys, authorizations), as in architecture §8.
//
//   Create    an unbound key from the pool; a resource URI of our choosing (KMS NewResourceUri);
//             the conversation at the core with that URI, the key's URI, the title encrypted
//             under the key and, embedded, the sealed `create /resources {authIds: members,
//             keyUris: [key], resourceUri}` that the core relays to the KMS first (which authorizes
//             the caller too and binds the key). The KMS's sealed answer must say 201 for that URI;
//             a busy KMS (sealed 503) gets the same create directly, and any other refusal is an
//             error naming the conversation the core already made.
//   Send      the text as a JWE under the conversation's current key (from the cache, else the
//             KMS); a key past its stop-encrypting date is rotated first. When the core answers
//             key_rotation_required (someone rotated), the conversation is re-read and the text
//             encrypted again under the new key, once. Posts carry a random clientActivityId, so
//             a retried post is stored once.
//   SendFile  the file encrypted (AES-256-GCM, fresh key) while it uploads, then a "share" whose
//             content is the file reference sealed under the conversation key.
//   Edit      the new text as a JWE under the current key, as Send (a rotation first, or again
//             after key_rotation_required); the core replaces the post's content and records an
//             "edit". Retract: the core keeps a tombstone and records a "retract". Only the author
//             may do either; the core overwrites the old ciphertext at once.
//   Read      a page of history, each activity decrypted (keys retrieved as needed and cached).
//             Every key used, to encrypt or decrypt, must be bound to the conversation's
//             kmsResourceUri (PERMISSION_DENIED otherwise), so a core cannot steer content under
//             another conversation's key.
//   AddMember embedded sealed `create /authorizations`: the core relays it before adding the user.
//             Should the KMS refuse, the core's addition is undone and the KMS's error returned.
//   RemoveMember embedded sealed `delete .../authorizations?authId=user`, then Rotate: the removed
//             user can retrieve no key bound afterwards, and the core refuses content under the
//             old key. Removing oneself is leaving (no rotation: a leaver cannot bind keys).
//   Rotate    a pool key bound to the resource by an embedded sealed `update /keys/<id>`, declared
//             current by PUT .../key. If the KMS refuses the bind after the core declared the key,
//             a second key is bound directly and declared, so the conversation is never left on a
//             key its members cannot retrieve.
//   Compliance ReadOnBehalfOf: an organization's compliance officer decrypts a user's activities
//             with keys retrieved `onBehalfOf` that user (the KMS checks the officer's role and
//             audits every retrieval); those keys are not cached, so every read is audited.
//
// Embedded requests whose relay the core reports as refused (409: the KMS did not take the sealed
// message, e.g. its channel had expired) are sealed again on a fresh channel and sent once more.
//
// Thread-safe. `core` and `kms` must outlive the object.
#ifndef STRONGROOM_CLIENT_CONVERSATION_H_
#define STRONGROOM_CLIENT_CONVERSATION_H_

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strongroom/client/content.h"
#include "strongroom/client/core_client.h"
#include "strongroom/client/key_cache.h"
#include "strongroom/client/key_pool.h"
#include "strongroom/client/kms_context.h"
#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"

namespace strongroom::client {

struct ConversationsOptions {
  std::string user_id;  // the caller (the tokens' subject)
  KeyCacheOptions cache;
  KeyPoolOptions pool;  // background refill by default; a one-shot command may turn it off
};

// An activity as its reader sees it. A post that was edited has its newest text (and
// activity.edited_ms); one that was retracted has none (activity.retracted_ms). An "edit" has the
// text it gave its target (activity.target_id, target_seq) while that is still the target's;
// a "retract" has none.
struct Message {
  Activity activity;                  // as the core holds it
  std::optional<std::string> text;    // post, edit: the message; create/title: the title
  std::optional<FileReference> file;  // share: the opened reference (it holds the file's key)
  std::optional<Error> error;         // why the content could not be decrypted
};

struct MessagePage {
  std::vector<Message> messages;  // ascending seq
  bool more = false;
};

struct Removal {
  Activity removed;
  std::optional<Activity> rotated;  // absent when the caller left
};

class Conversations {
 public:
  static Result<std::unique_ptr<Conversations>> New(CoreClient& core, KmsContext& kms,
                                                    ConversationsOptions options);
  ~Conversations();
  Conversations(const Conversations&) = delete;
  Conversations& operator=(const Conversations&) = delete;

  Result<Conversation> Create(std::string_view title, const std::vector<std::string>& members);
  Result<Activity> Send(const std::string& conversation_id, std::string_view text);
  // The caller's own post `activity_id` gets `text` instead (at most kMaxTextBytes): the "edit".
  Result<Activity> Edit(const std::string& conversation_id, const std::string& activity_id,
                        std::string_view text);
  // The caller's own message (post or share) is taken back: the "retract" (the same one again
  // when it was retracted before).
  Result<Activity> Retract(const std::string& conversation_id, const std::string& activity_id);
  Result<Activity> SendFile(const std::string& conversation_id, const std::string& path,
                            const Progress& progress = {});
  Result<MessagePage> Read(const std::string& conversation_id, const HistoryQuery& query = {});
  // One activity (e.g. from an EventStream), decrypted.
  Message Decrypt(const Activity& activity);
  // The conversation's title, decrypted ("" when it has none).
  Result<std::string> Title(const Conversation& conversation);
  // Downloads the file a share refers to and decrypts it to `out_path` (mode 0600, written under
  // a temporary name and renamed only once the tag verified).
  Status GetFile(const std::string& conversation_id, const FileReference& file,
                 const std::string& out_path, const Progress& progress = {});

  Result<Activity> AddMember(const std::string& conversation_id, const std::string& user);
  Result<Removal> RemoveMember(const std::string& conversation_id, const std::string& user);
  Result<Activity> Rotate(const std::string& conversation_id);

  Result<std::vector<Message>> ReadOnBehalfOf(const std::string& user,
                                              const std::vector<Activity>& activities);

  // The conversation as last read from the core (read now when not yet known).
  Result<Conversation> Get(const std::string& conversation_id, bool refresh = false);

  KeyCache& cache() { return cache_; }
  KeyPool& pool() { return *pool_; }

 private:
  Conversations(CoreClient& core, KmsContext& kms, ConversationsOptions options);

  // A key new content of `conversation` may be encrypted under: its current key if usable, else
  // after a rotation (which updates `conversation`).
  Result<KmsKey> EncryptionKey(Conversation& conversation);
  // The key for `key_uri`, which must be bound to `resource_uri` (the conversation's).
  Result<SecretBytes> DecryptionKey(const std::string& key_uri, const std::string& resource_uri);
  static Status CheckBinding(const KmsKey& key, const std::string& resource_uri);
  Result<Activity> RotateOnce(Conversation& conversation);
  // Encrypts `text` under the conversation's current key and hands it to `write` (a post or an
  // edit); once more after a rotation if the core says the key must rotate first.
  Result<Activity> WriteText(
      const std::string& conversation_id, std::string_view text,
      const std::function<Result<Activity>(const std::string& content)>& write);
  Message DecryptWith(const Activity& activity, const ContentKeyLookup& lookup);
  void Remember(const Conversation& conversation);
  // A core change that embeds a sealed request, sealed again on a new channel and sent once more
  // when the core reports that the KMS did not take it.
  Result<std::pair<Change, SealedRequest>> Embedded(
      const std::function<Result<SealedRequest>()>& seal,
      const std::function<Result<Change>(const std::string& kms_message)>& send);

  CoreClient& core_;
  KmsContext& kms_;
  const ConversationsOptions options_;
  KeyCache cache_;
  std::unique_ptr<KeyPool> pool_;
  std::mutex mutex_;
  std::map<std::string, Conversation> conversations_;
};

}  // namespace strongroom::client

#endif  // STRONGROOM_CLIENT_CONVERSATION_H_
