// The messaging core's rules: conversations, their participants and declared keys, activities,
// files and the search index store. It holds ciphertext only: activity content is a compact JWE
// (`dir`/`A256GCM`, `kid` = a key URL the conversation declared) that the core checks the shape
// of and never opens; titles are JWE too; index entries are opaque tokens. It never sees a content
// key, a KMS token, a search key or a word.
//
// Callers are users (or the indexer's service identity) whose core token was verified by the
// transport (audience "core"); the service decides what each may do:
//   - only participants see a conversation, its history, its files, and change it;
//   - any participant may add users, remove one, leave (remove themselves), declare a new key;
//     a user no trusted identity provider signs for (organization_of) is not added;
//   - only a message's author (while a participant) edits or retracts it;
//   - only the configured indexer identity writes and matches index tokens;
//   - a configured compliance officer of organization O (token org == O) reads, ciphertext only,
//     the conversations created by a user of O (the creator's token org, recorded at creation)
//     that a given user is or was a member of: their description and whole history. The core
//     knows no other user's organization, so this is the rule; see docs/api/core.md.
//
// Every change of a conversation is an activity too (verbs below), so history and the realtime
// stream show who was added, removed or left and when the key changed. Activities carry a global,
// strictly increasing sequence number: it is the history cursor and the realtime resume cursor.
//
// Durability: an activity is committed (fsynced) before PostActivity returns; concurrent posts
// share one transaction and one fsync (group commit), so acknowledging never waits for a disk
// flush per post. A post with a client activity id the same sender used before in the same
// conversation returns the stored activity again (a retried post is not stored twice).
//
// Thread-safe.
#ifndef STRONGROOM_CORE_CORE_SERVICE_H_
#define STRONGROOM_CORE_CORE_SERVICE_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strongroom/common/database.h"
#include "strongroom/common/error.h"
#include "strongroom/core/model.h"

namespace strongroom::core {

// Cross-node delivery's poll interval (CoreServiceConfig::cluster_poll) when it is on.
inline constexpr std::chrono::milliseconds kMinClusterPoll{10};
inline constexpr std::chrono::milliseconds kMaxClusterPoll{10000};
// cored's poll interval when its database is PostgreSQL and the setting is absent.
inline constexpr std::chrono::milliseconds kPostgresClusterPoll{100};

struct CoreServiceConfig {
  std::string indexer_user_id;  // the indexer's service identity (token subject); empty: none
  std::string indexer_org;      // and its organization
  std::string files_dir;        // where encrypted blobs live (created if absent)
  std::uint64_t max_file_bytes = 100ull * 1024 * 1024;
  std::size_t max_conversations_per_user = 100000;
  // Compliance officers: organization -> the user ids (token subjects of that organization) who
  // may read its users' conversations.
  std::map<std::string, std::vector<std::string>> compliance_officers;
  // The organization a user id belongs to (JwtVerifier::subjects()): a user of none, whom no
  // trusted identity provider may sign for, is not added to a conversation (INVALID_ARGUMENT).
  // Unset: any user id may be added.
  std::function<std::optional<std::string>(std::string_view user_id)> organization_of;
  // Several cored nodes on one database (PostgreSQL): zero, the default, is one node, whose
  // listener hears of each commit from the committing thread. A poll interval (kMinClusterPoll to
  // kMaxClusterPoll) turns cross-node delivery on: the listener hears of every node's commits, in
  // seq order, read back from the database by a follower thread (this node's at once, the others'
  // within the interval), and each commit batch first forgets the cached conversation states the
  // other nodes' activities since the previous batch may have changed.
  std::chrono::milliseconds cluster_poll{0};
};

class CoreService {
 public:
  using Clock = std::function<std::int64_t()>;  // milliseconds since the epoch
  // A committed activity and the users who may see it (participants after it, plus the users it
  // removed).
  struct Committed {
    const Activity& activity;
    const std::vector<std::string>& recipients;
    // The organization of the user who created the conversation: the indexer of that
    // organization follows it (IndexerEventsSince).
    const std::string& conversation_org;
  };
  // Called once per commit with its activities in sequence order (a commit takes every change
  // queued when it starts), from the committing thread, before the callers are answered. With
  // cluster_poll, instead, once per page of activities the follower read (every node's, each
  // once, in sequence order across calls), from the follower's thread, at once after this node's
  // commits (possibly after their callers are answered) and within cluster_poll after other
  // nodes'. Must not block for long, nor call the service's changing methods (the committing
  // thread is the one that would run them), nor SetActivityListener.
  using ActivityListener = std::function<void(const std::vector<Committed>& committed)>;

  // The core's schema: open the core's database with these (Database::OpenSqlite), or with
  // PostgresMigrations() (Database::OpenPostgres): the same versions and tables in each engine's
  // DDL. The service runs the same on both.
  static std::vector<Migration> Migrations();
  static std::vector<Migration> PostgresMigrations();

  // Serves from `db`, which must have been opened with its engine's migrations
  // (FAILED_PRECONDITION otherwise) and must outlive the service.
  static Result<std::unique_ptr<CoreService>> New(CoreServiceConfig config, Database& db,
                                                  Clock clock = {});
  ~CoreService();

  // Replaces the listener; once this returns, the previous one is not called any more (a call in
  // progress has ended).
  void SetActivityListener(ActivityListener listener);

  // Conversations. NOT_FOUND for an unknown conversation and for one the caller is not a
  // participant of (so ids cannot be probed).
  Result<Conversation> CreateConversation(const Caller& caller, const NewConversation& request);
  Result<std::vector<Conversation>> ListConversations(const Caller& caller,
                                                      std::optional<std::int64_t> before_seq,
                                                      std::size_t limit);
  Result<Conversation> GetConversation(const Caller& caller, const std::string& id);
  Result<Activity> AddParticipants(const Caller& caller, const std::string& id,
                                   const std::vector<std::string>& users);
  // Removing oneself is leaving ("leave"); removing the last participant is refused.
  Result<Activity> RemoveParticipant(const Caller& caller, const std::string& id,
                                     const std::string& user);
  // Declares a new current key (a kms:// key URL on the conversation's KMS); older keys stay
  // declared for reading history, but new content under them is refused (FAILED_PRECONDITION with
  // ErrorReason::kKeyRotationRequired).
  Result<Activity> RotateKey(const Caller& caller, const std::string& id,
                             const std::string& key_uri);
  Result<Activity> SetTitle(const Caller& caller, const std::string& id,
                            const std::string& encrypted_title);

  // Activities.
  Result<Activity> PostActivity(const Caller& caller, const std::string& id, const NewPost& post);
  Result<HistoryPage> History(const Caller& caller, const std::string& id,
                              const HistoryQuery& query);
  Result<Activity> GetActivity(const Caller& caller, const std::string& id,
                               const std::string& activity_id);

  // Edits and retractions of a message (a post; a share may only be retracted), by its author
  // only (PERMISSION_DENIED for anyone else; INVALID_ARGUMENT for an activity that is not a
  // message). Each is an activity of its own ("edit", "retract", naming its target) with the next
  // seq, delivered like any other; the message keeps its seq and carries the new content (or none)
  // and when. The old content is overwritten at once: in the message's row, in earlier edits' rows
  // and in the search index (the message's tokens are removed), and the write-ahead log is emptied
  // before the answer (group_commit_writer.h).
  //
  // An edit's content is a JWE under the current key (as a post's; key_rotation_required
  // otherwise); editing a retracted message is FAILED_PRECONDITION; an edit with the content the
  // message already has changes nothing and returns the activity that gave it that content (the
  // newest edit, or the post). Retracting a retracted message changes nothing and returns the
  // retraction.
  Result<Activity> EditActivity(const Caller& caller, const std::string& id,
                                const std::string& activity_id, const std::string& content);
  Result<Activity> RetractActivity(const Caller& caller, const std::string& id,
                                   const std::string& activity_id);

  // What the realtime stream replays: activities the user may see with seq > `after`, oldest
  // first, at most `limit` (1..kMaxEventsPage). A user sees an activity of a conversation from the
  // one that added them (or created it) through the one that removed them.
  Result<std::vector<Activity>> EventsSince(const std::string& user_id, std::int64_t after,
                                            std::size_t limit);
  std::int64_t LastSeq() const;
  // Whether the database answers now (a `SELECT 1` on a pooled connection): UNAVAILABLE when it
  // does not, which is what every request that needs it meets meanwhile.
  Status CheckDatabase();

  // The indexer's stream (GET /v1/index/events): every activity, of any verb, of the
  // conversations created by a user of the indexer's organization (as compliance reads decide),
  // with seq > `after`, oldest first, at most `limit` (1..kMaxEventsPage). The indexer only
  // (PERMISSION_DENIED otherwise); it is not a participant and gets nothing else (IsIndexer).
  Result<std::vector<Activity>> IndexerEventsSince(const Caller& caller, std::int64_t after,
                                                   std::size_t limit);
  // Whether `caller` is the configured indexer (user id and organization): the transport lets it
  // use the index routes and its stream, nothing else.
  bool IsIndexer(const Caller& caller) const;

  // Files: the blob is streamed by the transport into the blob store at files_dir (at most
  // max_file_bytes), stored and then recorded; downloads open it for participants only.
  Status CheckCanUpload(const Caller& caller, const std::string& id);
  class Upload;  // an in-progress upload: the blob store's, with its size and SHA-256 so far
  Result<std::unique_ptr<Upload>> BeginUpload(const Caller& caller, const std::string& id);
  Result<FileInfo> FinishUpload(std::unique_ptr<Upload> upload);
  // The path of the stored blob and its description.
  Result<std::pair<FileInfo, std::string>> OpenFile(const Caller& caller, const std::string& id,
                                                    const std::string& file_id);

  // Compliance reads (ciphertext only). PERMISSION_DENIED unless the caller is a configured
  // compliance officer of their token's organization; NOT_FOUND for a conversation that was not
  // created by a user of that organization or that `user` never was a member of.
  Result<std::vector<Conversation>> ComplianceConversations(const Caller& officer,
                                                            const std::string& user,
                                                            std::optional<std::int64_t> before_seq,
                                                            std::size_t limit);
  Result<HistoryPage> ComplianceHistory(const Caller& officer, const std::string& user,
                                        const std::string& id, const HistoryQuery& query);

  // The search index store: the indexer's service identity only (PERMISSION_DENIED otherwise).
  // A put REPLACES the activity's token set (idempotent: a replay stores the same set; a shorter
  // set removes the rest). Tokens for an edit are the set of the message it edited (search finds
  // the message); tokens for text that is no longer a message's (an edited or retracted
  // message's own, a superseded edit's, a retraction's) are not stored (index_store.h).
  // MatchTokens: per conversation its own tokens (SearchQuery), newest first across them.
  Status PutIndexTokens(const Caller& caller, const std::string& id, const std::string& activity_id,
                        const std::vector<std::string>& tokens);
  Result<SearchPage> MatchTokens(const Caller& caller, const SearchQuery& query);
  // A batch of puts (1..kMaxIndexSetsPerBatch sets, each as PutIndexTokens), all or nothing: every
  // set is checked (ids, tokens, its conversation and activity exist, each activity once) before
  // any is written, and all are written in one transaction. The first bad set's error names its
  // index ("set 3: ...") and nothing is written.
  Status PutIndexTokenSets(const Caller& caller, const std::vector<IndexTokenSet>& sets);

  // What New() found in the files directory: uploads of processes that are gone, or not written
  // for an hour (removed), and blobs stored an hour ago or more but never recorded (moved into
  // `<files_dir>/unrecorded/`, never deleted); see blob_store.h. No client was ever given an id
  // for either.
  struct StartupCleanup {
    std::size_t unfinished_uploads = 0;
    std::size_t unrecorded_blobs = 0;
  };
  const StartupCleanup& startup_cleanup() const { return startup_cleanup_; }

 private:
  class Impl;
  explicit CoreService(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  StartupCleanup startup_cleanup_;
};

class CoreService::Upload {
 public:
  virtual ~Upload() = default;
  // Appends bytes; RESOURCE_EXHAUSTED past max_file_bytes (the temporary file is removed).
  virtual Status Write(const char* data, std::size_t size) = 0;
  virtual std::uint64_t size() const = 0;
};

}  // namespace strongroom::core

#endif  // STRONGROOM_CORE_CORE_SERVICE_H_
