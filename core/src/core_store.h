// The core's tables and every SQL statement on them, for the core service, its group-commit
// writer and index store. The functions run on a session the caller holds inside a transaction
// (or, for single reads, outside one); they throw Poco::Data exceptions on database failures, which
// Database turns into UNAVAILABLE or INTERNAL.
//
// Tables (one list of migrations per engine, Migrations(engine): the same tables in each engine's
// types; the statements below are written once, in the SQL both accept):
//   conversations      id, KMS resource, current key, title, creator, last_seq (newest activity),
//                      the creator's organization (compliance reads; '' before migration 2)
//   memberships        (conversation, user, joined_seq, left_seq): one interval per stay; left_seq
//                      NULL while a member. A user sees the activities whose seq is in one of
//                      their intervals (EventsSince).
//   conversation_keys  every key a conversation declared, with the seq of the declaring activity
//   activities         seq (global, strictly increasing) is the row id; client_activity_id is
//                      unique per (conversation, actor) when given; an edit or a retraction names
//                      its target (target_seq, indexed, and edit_info), and a message edited or
//                      retracted says when (edit_info), its old content overwritten
//   files              encrypted blobs' records (the bytes live under files_dir)
//   index_rooms, index_postings, index_sets: the search index store (migration 4, its tables and
//                      statements in index_postings.h; migrations 1-3 kept a row per token in
//                      index_tokens, which migration 4 converts and drops)
#ifndef STRONGROOM_CORE_SRC_CORE_STORE_H_
#define STRONGROOM_CORE_SRC_CORE_STORE_H_

#include <Poco/Data/Session.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include "strongroom/common/database.h"
#include "strongroom/common/error.h"
#include "strongroom/core/model.h"

namespace strongroom::core::internal {

// A seq above every stored one: no upper bound, for the reads below that take one.
inline constexpr std::int64_t kNoSeq = std::numeric_limits<std::int64_t>::max();

// A single read statement, which has a snapshot of its own on both engines. Reads of several
// statements that must agree run in Database::InReadTransaction.
Status Read(Database& db, const std::function<Status(Poco::Data::Session&)>& work);

// What the service checks requests against: a conversation's members and keys. Immutable once
// built; the writer replaces it when a change commits.
struct ConversationState {
  std::string kms_cluster;  // kms://<host> of the resource; every key is on it
  std::string current_key_uri;
  std::shared_ptr<const std::vector<std::string>> participants;  // sorted
  std::shared_ptr<const std::unordered_set<std::string>> declared_keys;
  std::string created_by_org;  // the creator's organization ('' before migration 2)

  bool IsParticipant(const std::string& user) const;
};

// A committed activity as CoreStore::CommittedAfter reads it back.
struct StoredCommit {
  Activity activity;
  std::vector<std::string> recipients;  // sorted
  std::string conversation_org;
};

class CoreStore {
 public:
  using Session = Poco::Data::Session;

  // The core's schema in `engine`'s DDL: the same versions, tables and indexes on both.
  static std::vector<Migration> Migrations(Database::Engine engine);

  static std::int64_t MaxSeq(Session& s);
  static std::optional<ConversationState> LoadState(Session& s, const std::string& id);

  // Writes. The caller has checked everything; these only fail on database errors.
  // `created_by_org`: the creator's organization (from their token), for compliance reads.
  static void InsertConversation(Session& s, const Conversation& c,
                                 const std::string& created_by_org);
  static void InsertActivity(Session& s, const Activity& a);
  // A post or share: inserted unless its actor already used its clientActivityId in the
  // conversation (one statement, ON CONFLICT on the partial unique index: a first attempt costs
  // one round trip to a database server, not two). False when it was used (nothing written).
  static bool InsertActivityOnce(Session& s, const Activity& a);
  // Posts and shares together, each unless its clientActivityId was used, in as few statements as
  // they fit (a power of two of rows each, at most 64). False when any was not written.
  static bool InsertActivitiesOnce(Session& s, std::span<const Activity> posts);
  static void InsertMembership(Session& s, const std::string& conversation_id,
                               const std::string& user, std::int64_t joined_seq);
  static void EndMembership(Session& s, const std::string& conversation_id, const std::string& user,
                            std::int64_t left_seq);
  static void DeclareKey(Session& s, const std::string& conversation_id, const std::string& key_uri,
                         std::int64_t seq);
  static void SetCurrentKey(Session& s, const std::string& conversation_id,
                            const std::string& key_uri);
  static void SetTitle(Session& s, const std::string& conversation_id, const std::string& title);
  static void SetLastSeq(Session& s, const std::string& conversation_id, std::int64_t seq);
  static void InsertFile(Session& s, const FileInfo& f);
  // Which of these file ids are recorded (in any conversation).
  static std::set<std::string> RecordedFiles(Session& s, const std::vector<std::string>& ids);
  // Edits and retractions. The Database runs them with secure_delete on, so the old bytes are
  // overwritten in the database's pages (group_commit_writer.h).
  // The message's content and key replaced by an edit's, and when.
  static void ReplaceContent(Session& s, std::int64_t seq, const std::string& content,
                             const std::string& key_uri, std::int64_t edited_ms);
  // The message's content, key and files removed, and when.
  static void Retract(Session& s, std::int64_t seq, std::int64_t retracted_ms);
  // The content and key of every edit of the message (a later edit or a retraction supersedes
  // them).
  static void ClearEdits(Session& s, std::int64_t target_seq);
  // The newest activity of `verb` ("edit", "retract") whose target is the message at target_seq.
  static std::optional<Activity> LatestOfTarget(Session& s, std::int64_t target_seq,
                                                const std::string& verb);

  // Reads.
  static std::int64_t CountMemberships(Session& s, const std::string& user);
  static std::size_t CountDeclaredKeys(Session& s, const std::string& conversation_id);
  // The activity `actor` posted with this clientActivityId, for a retry.
  static std::optional<Activity> FindByClientId(Session& s, const std::string& conversation_id,
                                                const std::string& actor,
                                                const std::string& client_activity_id);
  static std::optional<Activity> FindActivity(Session& s, const std::string& conversation_id,
                                              const std::string& activity_id);
  static std::optional<FileInfo> FindFile(Session& s, const std::string& conversation_id,
                                          const std::string& file_id);
  static std::optional<Conversation> FindConversation(Session& s, const std::string& id);
  // The caller's conversations by newest activity first, last_seq < before.
  // Compliance: the conversations created by a user of `org` that `user` is or was a member of,
  // newest first (by last_seq < before), with their current participants.
  static std::vector<Conversation> ComplianceConversations(Session& s, const std::string& org,
                                                           const std::string& user,
                                                           std::int64_t before, std::size_t limit);
  // Whether the conversation was created by a user of `org` and `user` is or was its member.
  static bool IsComplianceVisible(Session& s, const std::string& conversation_id,
                                  const std::string& org, const std::string& user);
  static std::vector<Conversation> ListConversations(Session& s, const std::string& user,
                                                     std::int64_t before, std::size_t limit);
  // Up to `limit` + 1 items, so the caller can tell whether there are more.
  static std::vector<Activity> History(Session& s, const std::string& conversation_id,
                                       const HistoryQuery& query);
  static std::vector<Activity> EventsSince(Session& s, const std::string& user, std::int64_t after,
                                           std::size_t limit);
  // The indexer's stream: the activities after `after` of every conversation created by a user
  // of `org`, oldest first, at most `limit`.
  static std::vector<Activity> OrganizationEventsSince(Session& s, const std::string& org,
                                                       std::int64_t after, std::size_t limit);

  // Cross-node delivery (commit_follower.h): the activities with seq > `after`, oldest first, at
  // most `limit`, each with what the writer computed when it committed it: the users who may see
  // it (the participants after it and the users it removed, from the memberships' joined_seq and
  // left_seq) and its conversation's creator organization. Two statements whatever the page: the
  // activities with their conversations, and the memberships of those conversations that were
  // open at some seq of the page.
  static std::vector<StoredCommit> CommittedAfter(Session& s, std::int64_t after,
                                                  std::size_t limit);
  // The newest seq stored, and the conversations whose state (ConversationState: members, keys)
  // an activity after `after` may have changed: those of every activity that is not a message.
  // One statement, so one round trip to a database server and one snapshot for both.
  struct NewestSeq {
    std::int64_t seq = 0;
    std::vector<std::string> changed;
  };
  static NewestSeq NewestSeqAndChangesAfter(Session& s, std::int64_t after);

  // The statements whose plans matter, for tests that check them with EXPLAIN QUERY PLAN.
  static const char* const kHistoryNewestSql;
  static const char* const kEventsSinceSql;
  static const char* const kOrganizationEventsSinceSql;
  static const char* const kListConversationsSql;
  static const char* const kClearEditsSql;
  static const char* const kLatestOfTargetSql;
  static const char* const kCommittedAfterSql;
  static const char* const kCommittedMembershipsSql;

 private:
  // Runs `select` (conversation columns) and fills in each conversation's current participants.
  static std::vector<Conversation> WithParticipants(Session& s, SqlStatement& select);
};

// JSON arrays of strings as stored in activities.object_users and activities.file_ids.
std::string EncodeStringArray(const std::vector<std::string>& values);
std::vector<std::string> DecodeStringArray(const std::string& json);

}  // namespace strongroom::core::internal

#endif  // STRONGROOM_CORE_SRC_CORE_STORE_H_
