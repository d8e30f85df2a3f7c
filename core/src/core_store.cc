#include "core_store.h"

#include <Poco/Data/RecordSet.h>
#include <Poco/Data/Statement.h>
#include <Poco/Exception.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <map>
#include <set>

#include "index_postings.h"
#include "strongroom/common/kms_uri.h"

namespace strongroom::core::internal {
namespace {

using Poco::Data::Keywords::bind;
using Poco::Data::Keywords::into;
using Poco::Data::Keywords::now;
using Poco::Data::Keywords::use;
using Poco::Data::Keywords::useRef;

// What every activity has (and an insert writes), then what only edits, retractions and the
// messages they changed have (migration 3: edit_info, see EditInfo).
#define SR_INSERTED_COLUMNS(t)                                                                  \
  t "seq, " t "id, " t "conversation_id, " t "actor, " t "verb, " t "content, " t "key_uri, " t \
    "object_users, " t "file_ids, " t "client_activity_id, " t "published_ms"
#define SR_ACTIVITY_COLUMNS(t) SR_INSERTED_COLUMNS(t) ", " t "edit_info"

Poco::Int64 Int(std::int64_t v) { return static_cast<Poco::Int64>(v); }
Poco::Int64 Int(std::size_t v) { return static_cast<Poco::Int64>(v); }

std::string Text(Poco::Data::RecordSet& rows, std::size_t column) {
  Poco::Dynamic::Var v = rows[column];
  return v.isEmpty() ? std::string() : v.convert<std::string>();
}
std::int64_t Integer(Poco::Data::RecordSet& rows, std::size_t column) {
  return static_cast<std::int64_t>(rows[column].convert<Poco::Int64>());
}
// activities.edit_info: NULL for every activity but an edit, a retraction and the message one of
// them changed, which hold "<target_seq> <edited_ms> <retracted_ms> <target_id>" (0 and "" for
// what does not apply). One column, not four: every post's INSERT and every history page's
// SELECT is prepared anew, and four more columns made each noticeably dearer.
std::string EditInfo(const Activity& a) {
  return std::to_string(a.target_seq) + " " + std::to_string(a.edited_ms) + " " +
         std::to_string(a.retracted_ms) + " " + a.target_id;
}
void ReadEditInfo(const std::string& info, Activity& a) {
  if (info.empty()) return;
  std::int64_t* numbers[] = {&a.target_seq, &a.edited_ms, &a.retracted_ms};
  const char* at = info.data();
  const char* const end = info.data() + info.size();
  for (std::int64_t* number : numbers) {
    at = std::from_chars(at, end, *number).ptr;
    if (at != end) ++at;  // the space
  }
  a.target_id.assign(at, end);
}

Activity ActivityAt(Poco::Data::RecordSet& rows) {
  Activity a;
  a.seq = Integer(rows, 0);
  a.id = Text(rows, 1);
  a.conversation_id = Text(rows, 2);
  a.actor = Text(rows, 3);
  a.verb = Text(rows, 4);
  a.content = Text(rows, 5);
  a.key_uri = Text(rows, 6);
  a.object_users = DecodeStringArray(Text(rows, 7));
  a.file_ids = DecodeStringArray(Text(rows, 8));
  a.client_activity_id = Text(rows, 9);
  a.published_ms = Integer(rows, 10);
  ReadEditInfo(Text(rows, 11), a);
  return a;
}

std::vector<Activity> Activities(Poco::Data::Statement& select) {
  select.execute();
  Poco::Data::RecordSet rows(select);
  std::vector<Activity> out;
  out.reserve(rows.rowCount());
  for (bool row = rows.moveFirst(); row; row = rows.moveNext()) out.push_back(ActivityAt(rows));
  return out;
}

// Conversation columns in the order ConversationAt reads them.
constexpr char kConversationColumns[] =
    "c.id, c.kms_resource_uri, c.current_key_uri, c.encrypted_title, c.created_by, "
    "c.created_ms, c.last_seq";

Conversation ConversationAt(Poco::Data::RecordSet& rows) {
  Conversation c;
  c.id = Text(rows, 0);
  c.kms_resource_uri = Text(rows, 1);
  c.current_key_uri = Text(rows, 2);
  c.encrypted_title = Text(rows, 3);
  c.created_by = Text(rows, 4);
  c.created_ms = Integer(rows, 5);
  c.last_seq = Integer(rows, 6);
  return c;
}

std::vector<std::string> CurrentParticipants(Poco::Data::Session& s, const std::string& id) {
  std::vector<std::string> users;
  s << "SELECT user_id FROM memberships WHERE conversation_id = ? AND left_seq IS NULL "
       "ORDER BY user_id",
      useRef(id), into(users), now;
  return users;
}

std::string Placeholders(std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out += i == 0 ? "?" : ", ?";
  return out;
}

}  // namespace

Status ReadTransaction(Database& db, const std::function<Status(Poco::Data::Session&)>& work) {
  return db.WithSession([&](Poco::Data::Session& s) -> Status {
    s << "BEGIN", now;
    Status status;
    try {
      status = work(s);
    } catch (const Poco::Exception&) {
      try {
        s << "ROLLBACK", now;
      } catch (const Poco::Exception&) {
      }
      throw;  // Database reports it
    } catch (const std::exception& e) {
      try {
        s << "ROLLBACK", now;
      } catch (const Poco::Exception&) {
      }
      return Error(ErrorCode::kInternal, std::string("reading failed: ") + e.what());
    }
    s << "COMMIT", now;
    return status;
  });
}

Status Read(Database& db, const std::function<Status(Poco::Data::Session&)>& work) {
  return db.WithSession([&](Poco::Data::Session& s) -> Status {
    try {
      return work(s);
    } catch (const Poco::Exception&) {
      throw;  // Database reports it
    } catch (const std::exception& e) {
      return Error(ErrorCode::kInternal, std::string("reading failed: ") + e.what());
    }
  });
}

bool ConversationState::IsParticipant(const std::string& user) const {
  return std::binary_search(participants->begin(), participants->end(), user);
}

const char* const CoreStore::kHistoryNewestSql =
    "SELECT " SR_ACTIVITY_COLUMNS("") " FROM activities WHERE conversation_id = ? AND seq < ? "
    "ORDER BY seq DESC LIMIT ?";
static const char* const kHistoryForwardSql =
    "SELECT " SR_ACTIVITY_COLUMNS("") " FROM activities WHERE conversation_id = ? AND seq > ? "
    "AND seq < ? ORDER BY seq LIMIT ?";

// Per membership interval of the user that ends after the cursor, at most `limit` activities of
// the conversation inside the interval and after the cursor (an index range on
// activities_by_conversation whose both ends are known); the first `limit` of those by seq. So a
// page costs O(memberships × limit) however far back the cursor is.
const char* const CoreStore::kEventsSinceSql =
    "SELECT " SR_ACTIVITY_COLUMNS("a.") " FROM memberships m "
    "JOIN activities a ON a.conversation_id = m.conversation_id "
    "WHERE m.user_id = ? AND (m.left_seq IS NULL OR m.left_seq > ?) AND a.seq IN ("
    "SELECT s.seq FROM activities s WHERE s.conversation_id = m.conversation_id "
    "AND s.seq > CASE WHEN m.joined_seq > ? THEN m.joined_seq - 1 ELSE ? END "
    "AND s.seq <= COALESCE(m.left_seq, 9223372036854775807) ORDER BY s.seq LIMIT ?) "
    "ORDER BY a.seq LIMIT ?";

// Activities by seq from the cursor (the rowid), each one's conversation by its key: a page reads
// the activities after the cursor until it has `limit` of the organization's.
const char* const CoreStore::kOrganizationEventsSinceSql =
    "SELECT " SR_ACTIVITY_COLUMNS("a.") " FROM activities a CROSS JOIN conversations c "
    "ON c.id = a.conversation_id WHERE a.seq > ? AND c.created_by_org = ? "
    "ORDER BY a.seq LIMIT ?";

const char* const CoreStore::kListConversationsSql =
    "SELECT c.id, c.kms_resource_uri, c.current_key_uri, c.encrypted_title, c.created_by, "
    "c.created_ms, c.last_seq FROM memberships m JOIN conversations c ON c.id = m.conversation_id "
    "WHERE m.user_id = ? AND m.left_seq IS NULL AND c.last_seq < ? "
    "ORDER BY c.last_seq DESC LIMIT ?";

// An edit's or a retraction's lookups by target: the partial index activities_by_target.
const char* const CoreStore::kClearEditsSql =
    "UPDATE activities SET content = '', key_uri = '' "
    "WHERE target_seq = ? AND verb = 'edit' AND content <> ''";
const char* const CoreStore::kLatestOfTargetSql =
    "SELECT " SR_ACTIVITY_COLUMNS("") " FROM activities WHERE target_seq = ? AND verb = ? "
    "ORDER BY seq DESC LIMIT 1";

std::vector<Migration> CoreStore::Migrations() {
  return {
      {1,
       "conversations, memberships, declared keys, activities, files, search index tokens",
       {"CREATE TABLE conversations (id TEXT PRIMARY KEY, kms_resource_uri TEXT NOT NULL, "
        "current_key_uri TEXT NOT NULL, encrypted_title TEXT NOT NULL, created_by TEXT NOT NULL, "
        "created_ms INTEGER NOT NULL, last_seq INTEGER NOT NULL)",
        "CREATE TABLE memberships (conversation_id TEXT NOT NULL REFERENCES conversations (id), "
        "user_id TEXT NOT NULL, joined_seq INTEGER NOT NULL, left_seq INTEGER, "
        "PRIMARY KEY (conversation_id, user_id, joined_seq), "
        "CHECK (left_seq IS NULL OR left_seq > joined_seq))",
        "CREATE INDEX memberships_by_user ON memberships (user_id, left_seq)",
        "CREATE TABLE conversation_keys ("
        "conversation_id TEXT NOT NULL REFERENCES conversations (id), key_uri TEXT NOT NULL, "
        "declared_seq INTEGER NOT NULL, PRIMARY KEY (conversation_id, key_uri))",
        "CREATE TABLE activities (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
        "conversation_id TEXT NOT NULL REFERENCES conversations (id), actor TEXT NOT NULL, "
        "verb TEXT NOT NULL, content TEXT NOT NULL, key_uri TEXT NOT NULL, "
        "object_users TEXT NOT NULL, file_ids TEXT NOT NULL, client_activity_id TEXT NOT NULL, "
        "published_ms INTEGER NOT NULL)",
        "CREATE INDEX activities_by_conversation ON activities (conversation_id, seq)",
        // A retried post is found, and never stored twice.
        "CREATE UNIQUE INDEX activities_by_client_id "
        "ON activities (conversation_id, actor, client_activity_id) "
        "WHERE client_activity_id <> ''",
        "CREATE TABLE files (id TEXT PRIMARY KEY, "
        "conversation_id TEXT NOT NULL REFERENCES conversations (id), uploader TEXT NOT NULL, "
        "size INTEGER NOT NULL, sha256 TEXT NOT NULL, created_ms INTEGER NOT NULL)",
        // The key is the whole row: matching a token within conversations, newest first, reads
        // one index range per conversation. The activity's id is joined from activities.
        "CREATE TABLE index_tokens (token TEXT NOT NULL, conversation_id TEXT NOT NULL, "
        "seq INTEGER NOT NULL REFERENCES activities (seq), "
        "PRIMARY KEY (token, conversation_id, seq)) WITHOUT ROWID"}},
      {2,
       "the creator's organization of each conversation, for compliance reads (empty for older "
       "conversations: no compliance officer reads them)",
       {"ALTER TABLE conversations ADD COLUMN created_by_org TEXT NOT NULL DEFAULT ''"}},
      {3,
       "edits and retractions: an activity's target, when a message was edited or retracted; "
       "an index of each activity's search tokens, so they can be removed at once",
       // NULL unless set, and as few as will do: every post's INSERT is prepared anew, and
       // four columns with NOT NULL defaults made that twice as dear as these two.
       {"ALTER TABLE activities ADD COLUMN target_seq INTEGER",
        "ALTER TABLE activities ADD COLUMN edit_info TEXT",
        // Only edits and retractions have a target: posts add no entry.
        "CREATE INDEX activities_by_target ON activities (target_seq) "
        "WHERE target_seq IS NOT NULL",
        "CREATE INDEX index_tokens_by_seq ON index_tokens (seq)"}},
      {4,
       "the search index store compacted: 24 bits of each token, as entries of bucketed posting "
       "chunks per conversation, and each activity's buckets; index_tokens converted and dropped",
       IndexPostings::CreateTablesSql(), IndexPostings::ConvertTokenRows},
  };
}

std::int64_t CoreStore::MaxSeq(Session& s) {
  Poco::Int64 seq = 0;
  s << "SELECT COALESCE(MAX(seq), 0) FROM activities", into(seq), now;
  return static_cast<std::int64_t>(seq);
}

std::optional<ConversationState> CoreStore::LoadState(Session& s, const std::string& id) {
  Poco::Data::Statement select(s);
  select << "SELECT kms_resource_uri, current_key_uri, created_by_org FROM conversations "
            "WHERE id = ?",
      useRef(id);
  select.execute();
  Poco::Data::RecordSet rows(select);
  if (!rows.moveFirst()) return std::nullopt;
  ConversationState state;
  const std::string resource = Text(rows, 0);
  Result<KmsUri> resource_uri = KmsUri::Parse(resource);  // as CheckKmsUri accepted it
  state.kms_cluster = resource_uri.ok() ? resource_uri->cluster() : "";
  state.current_key_uri = Text(rows, 1);
  state.created_by_org = Text(rows, 2);
  state.participants = std::make_shared<const std::vector<std::string>>(CurrentParticipants(s, id));
  std::vector<std::string> keys;
  s << "SELECT key_uri FROM conversation_keys WHERE conversation_id = ?", useRef(id), into(keys),
      now;
  state.declared_keys =
      std::make_shared<const std::unordered_set<std::string>>(keys.begin(), keys.end());
  return state;
}

void CoreStore::InsertConversation(Session& s, const Conversation& c,
                                   const std::string& created_by_org) {
  s << "INSERT INTO conversations (id, kms_resource_uri, current_key_uri, encrypted_title, "
       "created_by, created_ms, last_seq, created_by_org) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
      useRef(c.id), useRef(c.kms_resource_uri), useRef(c.current_key_uri),
      useRef(c.encrypted_title), useRef(c.created_by), bind(Int(c.created_ms)),
      bind(Int(c.last_seq)), useRef(created_by_org), now;
}

void CoreStore::InsertActivity(Session& s, const Activity& a) {
  // Every post runs this on the writer thread: kept compiled per connection (Database::Prepare).
  static constexpr char kInsertSql[] = "INSERT INTO activities (" SR_INSERTED_COLUMNS(
      "") ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
  static constexpr char kInsertEditSql[] = "INSERT INTO activities (" SR_INSERTED_COLUMNS(
      "") ", target_seq, edit_info) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
  const bool edit = a.target_seq != 0;  // an edit or a retraction
  SqlStatement insert = Database::Prepare(s, edit ? kInsertEditSql : kInsertSql);
  insert.Bind(a.seq)
      .Bind(a.id)
      .Bind(a.conversation_id)
      .Bind(a.actor)
      .Bind(a.verb)
      .Bind(a.content)
      .Bind(a.key_uri)
      .Bind(EncodeStringArray(a.object_users))
      .Bind(EncodeStringArray(a.file_ids))
      .Bind(a.client_activity_id)
      .Bind(a.published_ms);
  if (edit) insert.Bind(a.target_seq).Bind(EditInfo(a));
  insert.Run();
}

void CoreStore::ReplaceContent(Session& s, std::int64_t seq, const std::string& content,
                               const std::string& key_uri, std::int64_t edited_ms) {
  Activity edited;
  edited.edited_ms = edited_ms;
  s << "UPDATE activities SET content = ?, key_uri = ?, edit_info = ? WHERE seq = ?",
      useRef(content), useRef(key_uri), bind(EditInfo(edited)), bind(Int(seq)), now;
}

void CoreStore::Retract(Session& s, std::int64_t seq, std::int64_t retracted_ms) {
  Activity retracted;
  retracted.retracted_ms = retracted_ms;
  s << "UPDATE activities SET content = '', key_uri = '', file_ids = '[]', edit_info = ? "
       "WHERE seq = ?",
      bind(EditInfo(retracted)), bind(Int(seq)), now;
}

void CoreStore::ClearEdits(Session& s, std::int64_t target_seq) {
  s << kClearEditsSql, bind(Int(target_seq)), now;
}

std::optional<Activity> CoreStore::LatestOfTarget(Session& s, std::int64_t target_seq,
                                                  const std::string& verb) {
  Poco::Data::Statement select(s);
  select << kLatestOfTargetSql, bind(Int(target_seq)), useRef(verb);
  std::vector<Activity> found = Activities(select);
  if (found.empty()) return std::nullopt;
  return std::move(found.front());
}

void CoreStore::InsertMembership(Session& s, const std::string& conversation_id,
                                 const std::string& user, std::int64_t joined_seq) {
  s << "INSERT INTO memberships (conversation_id, user_id, joined_seq) VALUES (?, ?, ?)",
      useRef(conversation_id), useRef(user), bind(Int(joined_seq)), now;
}

void CoreStore::EndMembership(Session& s, const std::string& conversation_id,
                              const std::string& user, std::int64_t left_seq) {
  s << "UPDATE memberships SET left_seq = ? "
       "WHERE conversation_id = ? AND user_id = ? AND left_seq IS NULL",
      bind(Int(left_seq)), useRef(conversation_id), useRef(user), now;
}

void CoreStore::DeclareKey(Session& s, const std::string& conversation_id,
                           const std::string& key_uri, std::int64_t seq) {
  s << "INSERT INTO conversation_keys (conversation_id, key_uri, declared_seq) VALUES (?, ?, ?)",
      useRef(conversation_id), useRef(key_uri), bind(Int(seq)), now;
}

void CoreStore::SetCurrentKey(Session& s, const std::string& conversation_id,
                              const std::string& key_uri) {
  s << "UPDATE conversations SET current_key_uri = ? WHERE id = ?", useRef(key_uri),
      useRef(conversation_id), now;
}

void CoreStore::SetTitle(Session& s, const std::string& conversation_id, const std::string& title) {
  s << "UPDATE conversations SET encrypted_title = ? WHERE id = ?", useRef(title),
      useRef(conversation_id), now;
}

void CoreStore::SetLastSeq(Session& s, const std::string& conversation_id, std::int64_t seq) {
  Database::Prepare(s, "UPDATE conversations SET last_seq = ? WHERE id = ?")
      .Bind(seq)
      .Bind(conversation_id)
      .Run();
}

void CoreStore::InsertFile(Session& s, const FileInfo& f) {
  s << "INSERT INTO files (id, conversation_id, uploader, size, sha256, created_ms) "
       "VALUES (?, ?, ?, ?, ?, ?)",
      useRef(f.id), useRef(f.conversation_id), useRef(f.uploader),
      bind(static_cast<Poco::Int64>(f.size)), useRef(f.sha256_hex), bind(Int(f.created_ms)), now;
}

std::int64_t CoreStore::CountMemberships(Session& s, const std::string& user) {
  Poco::Int64 count = 0;
  s << "SELECT COUNT(*) FROM memberships WHERE user_id = ? AND left_seq IS NULL", useRef(user),
      into(count), now;
  return static_cast<std::int64_t>(count);
}

std::size_t CoreStore::CountDeclaredKeys(Session& s, const std::string& conversation_id) {
  Poco::Int64 count = 0;
  s << "SELECT COUNT(*) FROM conversation_keys WHERE conversation_id = ?", useRef(conversation_id),
      into(count), now;
  return static_cast<std::size_t>(count);
}

bool CoreStore::ClientIdUsed(Session& s, const std::string& conversation_id,
                             const std::string& actor, const std::string& client_activity_id) {
  SqlStatement count =
      Database::Prepare(s,
                        "SELECT COUNT(*) FROM activities WHERE conversation_id = ? AND actor = ? "
                        "AND client_activity_id = ? AND client_activity_id <> ''");
  count.Bind(conversation_id).Bind(actor).Bind(client_activity_id);
  return count.Next() && count.Int(0) > 0;
}

std::optional<Activity> CoreStore::FindByClientId(Session& s, const std::string& conversation_id,
                                                  const std::string& actor,
                                                  const std::string& client_activity_id) {
  Poco::Data::Statement select(s);
  // The `<> ''` term lets SQLite use the partial index activities_by_client_id.
  select << "SELECT " SR_ACTIVITY_COLUMNS(
      "") " FROM activities WHERE conversation_id = ? "
          "AND actor = ? AND client_activity_id = ? AND client_activity_id <> ''",
      useRef(conversation_id), useRef(actor), useRef(client_activity_id);
  std::vector<Activity> found = Activities(select);
  if (found.empty()) return std::nullopt;
  return std::move(found.front());
}

std::optional<Activity> CoreStore::FindActivity(Session& s, const std::string& conversation_id,
                                                const std::string& activity_id) {
  Poco::Data::Statement select(s);
  select << "SELECT " SR_ACTIVITY_COLUMNS(
      "") " FROM activities WHERE id = ? "
          "AND conversation_id = ?",
      useRef(activity_id), useRef(conversation_id);
  std::vector<Activity> found = Activities(select);
  if (found.empty()) return std::nullopt;
  return std::move(found.front());
}

std::set<std::string> CoreStore::RecordedFiles(Session& s, const std::vector<std::string>& ids) {
  std::set<std::string> recorded;
  constexpr std::size_t kPerQuery = 256;  // well under SQLite's 32,766 parameters
  for (std::size_t at = 0; at < ids.size(); at += kPerQuery) {
    const std::size_t n = std::min(kPerQuery, ids.size() - at);
    std::string sql = "SELECT id FROM files WHERE id IN (?";
    for (std::size_t i = 1; i < n; ++i) sql += ",?";
    sql += ")";
    Poco::Data::Statement select(s);
    select << sql;
    for (std::size_t i = 0; i < n; ++i) select, useRef(ids[at + i]);
    std::vector<std::string> found;
    select, into(found);
    select.execute();
    recorded.insert(found.begin(), found.end());
  }
  return recorded;
}

std::optional<FileInfo> CoreStore::FindFile(Session& s, const std::string& conversation_id,
                                            const std::string& file_id) {
  Poco::Data::Statement select(s);
  select << "SELECT id, conversation_id, uploader, size, sha256, created_ms FROM files "
            "WHERE id = ? AND conversation_id = ?",
      useRef(file_id), useRef(conversation_id);
  select.execute();
  Poco::Data::RecordSet rows(select);
  if (!rows.moveFirst()) return std::nullopt;
  FileInfo f;
  f.id = Text(rows, 0);
  f.conversation_id = Text(rows, 1);
  f.uploader = Text(rows, 2);
  f.size = static_cast<std::uint64_t>(Integer(rows, 3));
  f.sha256_hex = Text(rows, 4);
  f.created_ms = Integer(rows, 5);
  return f;
}

std::optional<Conversation> CoreStore::FindConversation(Session& s, const std::string& id) {
  Poco::Data::Statement select(s);
  select << "SELECT " << kConversationColumns << " FROM conversations c WHERE c.id = ?", useRef(id);
  select.execute();
  Poco::Data::RecordSet rows(select);
  if (!rows.moveFirst()) return std::nullopt;
  Conversation c = ConversationAt(rows);
  c.participants = CurrentParticipants(s, id);
  return c;
}

std::vector<Conversation> CoreStore::ListConversations(Session& s, const std::string& user,
                                                       std::int64_t before, std::size_t limit) {
  Poco::Data::Statement select(s);
  select << kListConversationsSql, useRef(user), bind(Int(before)), bind(Int(limit));
  return WithParticipants(s, select);
}

std::vector<Conversation> CoreStore::ComplianceConversations(Session& s, const std::string& org,
                                                             const std::string& user,
                                                             std::int64_t before,
                                                             std::size_t limit) {
  Poco::Data::Statement select(s);
  select << "SELECT "
         << kConversationColumns
         // From the user's memberships (an index range), so the cost follows the user's
         // conversations, not every conversation of the organization.
         << " FROM conversations c WHERE c.id IN (SELECT m.conversation_id FROM memberships m "
            "WHERE m.user_id = ?) AND c.created_by_org = ? AND c.last_seq < ? "
            "ORDER BY c.last_seq DESC LIMIT ?",
      useRef(user), useRef(org), bind(Int(before)), bind(Int(limit));
  return WithParticipants(s, select);
}

bool CoreStore::IsComplianceVisible(Session& s, const std::string& conversation_id,
                                    const std::string& org, const std::string& user) {
  Poco::Int64 count = 0;
  s << "SELECT COUNT(*) FROM conversations c WHERE c.id = ? AND c.created_by_org = ? AND EXISTS "
       "(SELECT 1 FROM memberships m WHERE m.user_id = ? AND m.conversation_id = c.id)",
      useRef(conversation_id), useRef(org), useRef(user), into(count), now;
  return count > 0;
}

std::vector<Conversation> CoreStore::WithParticipants(Session& s, Poco::Data::Statement& select) {
  select.execute();
  Poco::Data::RecordSet rows(select);
  std::vector<Conversation> out;
  std::map<std::string, std::size_t> position;
  for (bool row = rows.moveFirst(); row; row = rows.moveNext()) {
    out.push_back(ConversationAt(rows));
    position[out.back().id] = out.size() - 1;
  }
  if (out.empty()) return out;
  Poco::Data::Statement members(s);
  members << "SELECT conversation_id, user_id FROM memberships WHERE left_seq IS NULL "
             "AND conversation_id IN ("
          << Placeholders(out.size()) << ") ORDER BY conversation_id, user_id";
  for (const Conversation& c : out) members, useRef(c.id);
  members.execute();
  Poco::Data::RecordSet users(members);
  for (bool row = users.moveFirst(); row; row = users.moveNext()) {
    out[position.at(Text(users, 0))].participants.push_back(Text(users, 1));
  }
  return out;
}

std::vector<Activity> CoreStore::History(Session& s, const std::string& conversation_id,
                                         const HistoryQuery& query) {
  const std::int64_t before = query.before.value_or(kNoSeq);
  const Poco::Int64 limit = Int(query.limit + 1);
  Poco::Data::Statement select(s);
  if (query.after.has_value()) {
    select << kHistoryForwardSql, useRef(conversation_id), bind(Int(*query.after)),
        bind(Int(before)), bind(limit);
    return Activities(select);
  }
  select << kHistoryNewestSql, useRef(conversation_id), bind(Int(before)), bind(limit);
  std::vector<Activity> out = Activities(select);
  std::reverse(out.begin(), out.end());
  return out;
}

std::vector<Activity> CoreStore::EventsSince(Session& s, const std::string& user,
                                             std::int64_t after, std::size_t limit) {
  Poco::Data::Statement select(s);
  select << kEventsSinceSql, useRef(user), bind(Int(after)), bind(Int(after)), bind(Int(after)),
      bind(Int(limit)), bind(Int(limit));
  return Activities(select);
}

std::vector<Activity> CoreStore::OrganizationEventsSince(Session& s, const std::string& org,
                                                         std::int64_t after, std::size_t limit) {
  Poco::Data::Statement select(s);
  select << kOrganizationEventsSinceSql, bind(Int(after)), useRef(org), bind(Int(limit));
  return Activities(select);
}

std::string EncodeStringArray(const std::vector<std::string>& values) {
  std::string out = "[";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    out += '"';
    for (char c : values[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  out += ']';
  return out;
}

std::vector<std::string> DecodeStringArray(const std::string& json) {
  // Only what EncodeStringArray writes (the values were checked to hold no control characters).
  std::vector<std::string> out;
  std::size_t i = json.find('[');
  if (i == std::string::npos) return out;
  for (++i; i < json.size(); ++i) {
    if (json[i] != '"') continue;
    std::string value;
    for (++i; i < json.size() && json[i] != '"'; ++i) {
      if (json[i] == '\\' && i + 1 < json.size()) ++i;
      value += json[i];
    }
    out.push_back(std::move(value));
  }
  return out;
}

#undef SR_ACTIVITY_COLUMNS
#undef SR_INSERTED_COLUMNS

}  // namespace strongroom::core::internal
