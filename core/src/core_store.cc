#include "core_store.h"

#include <algorithm>
#include <charconv>
#include <limits>
#include <map>
#include <set>

#include "index_postings.h"
#include "strongroom/common/kms_uri.h"

namespace strongroom::core::internal {
namespace {

// What every activity has (and an insert writes), then what only edits, retractions and the
// messages they changed have (migration 3: edit_info, see EditInfo).
#define SR_INSERTED_COLUMNS(t)                                                                  \
  t "seq, " t "id, " t "conversation_id, " t "actor, " t "verb, " t "content, " t "key_uri, " t \
    "object_users, " t "file_ids, " t "client_activity_id, " t "published_ms"
#define SR_ACTIVITY_COLUMNS(t) SR_INSERTED_COLUMNS(t) ", " t "edit_info"

std::int64_t Int(std::size_t v) { return static_cast<std::int64_t>(v); }

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

// The row's SR_ACTIVITY_COLUMNS.
Activity ActivityAt(const SqlStatement& row) {
  Activity a;
  a.seq = row.Int(0);
  a.id = row.Text(1);
  a.conversation_id = row.Text(2);
  a.actor = row.Text(3);
  a.verb = row.Text(4);
  a.content = row.Text(5);
  a.key_uri = row.Text(6);
  a.object_users = DecodeStringArray(row.Text(7));
  a.file_ids = DecodeStringArray(row.Text(8));
  a.client_activity_id = row.Text(9);
  a.published_ms = row.Int(10);
  ReadEditInfo(row.Text(11), a);  // NULL reads as ""
  return a;
}

std::vector<Activity> Activities(SqlStatement& select) {
  std::vector<Activity> out;
  while (select.Next()) out.push_back(ActivityAt(select));
  return out;
}

std::optional<Activity> FirstActivity(SqlStatement& select) {
  if (!select.Next()) return std::nullopt;
  return ActivityAt(select);
}

// Conversation columns in the order ConversationAt reads them.
constexpr char kConversationColumns[] =
    "c.id, c.kms_resource_uri, c.current_key_uri, c.encrypted_title, c.created_by, "
    "c.created_ms, c.last_seq";

Conversation ConversationAt(const SqlStatement& row) {
  Conversation c;
  c.id = row.Text(0);
  c.kms_resource_uri = row.Text(1);
  c.current_key_uri = row.Text(2);
  c.encrypted_title = row.Text(3);
  c.created_by = row.Text(4);
  c.created_ms = row.Int(5);
  c.last_seq = row.Int(6);
  return c;
}

// Sorted by their bytes, as ConversationState::IsParticipant searches them: sorted here, not by
// ORDER BY, whose order on PostgreSQL is the database's collation's.
std::vector<std::string> CurrentParticipants(Poco::Data::Session& s, const std::string& id) {
  std::vector<std::string> users;
  SqlStatement select = Database::Prepare(
      s, "SELECT user_id FROM memberships WHERE conversation_id = ? AND left_seq IS NULL");
  select.Bind(id);
  while (select.Next()) users.push_back(select.Text(0));
  std::sort(users.begin(), users.end());
  return users;
}

std::string Placeholders(std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out += i == 0 ? "?" : ", ?";
  return out;
}

}  // namespace

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
// (CROSS JOIN keeps SQLite from reading conversations first; PostgreSQL takes no ON after it.)
const char* const CoreStore::kOrganizationEventsSinceSql =
    "SELECT " SR_ACTIVITY_COLUMNS("a.") " FROM activities a CROSS JOIN conversations c "
    "WHERE c.id = a.conversation_id AND a.seq > ? AND c.created_by_org = ? "
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

// Activities by seq from the cursor (the rowid), each one's conversation by its key (CROSS JOIN
// keeps SQLite from reading conversations first).
const char* const CoreStore::kCommittedAfterSql =
    "SELECT " SR_ACTIVITY_COLUMNS("a.") ", c.created_by_org FROM activities a "
    "CROSS JOIN conversations c WHERE c.id = a.conversation_id AND a.seq > ? "
    "ORDER BY a.seq LIMIT ?";
// The memberships of the page's conversations (a seq range of activities, then each conversation's
// memberships by their primary key) that began at or before its last seq and had not ended before
// its first: a user in one of them saw the activities of the page inside its interval.
const char* const CoreStore::kCommittedMembershipsSql =
    "SELECT conversation_id, user_id, joined_seq, left_seq FROM memberships "
    "WHERE conversation_id IN (SELECT conversation_id FROM activities WHERE seq > ? AND seq <= ?) "
    "AND joined_seq <= ? AND (left_seq IS NULL OR left_seq > ?)";

std::vector<Migration> CoreStore::Migrations(Database::Engine engine) {
  // One list for both engines, each table in the engine's types (SQLite's INTEGER is 64 bits,
  // PostgreSQL's is not; SQLite's INTEGER PRIMARY KEY is the row id, PostgreSQL's BIGINT one a
  // plain key), so that a version means the same schema on both. PostgreSQL has no WITHOUT ROWID
  // (its tables are heaps beside their indexes either way).
  const bool postgres = engine == Database::Engine::kPostgres;
  const std::string integer = postgres ? "BIGINT" : "INTEGER";
  const std::string without_rowid = postgres ? "" : " WITHOUT ROWID";
  return {
      {1,
       "conversations, memberships, declared keys, activities, files, search index tokens",
       {"CREATE TABLE conversations (id TEXT PRIMARY KEY, kms_resource_uri TEXT NOT NULL, "
        "current_key_uri TEXT NOT NULL, encrypted_title TEXT NOT NULL, created_by TEXT NOT NULL, "
        "created_ms " +
            integer + " NOT NULL, last_seq " + integer + " NOT NULL)",
        "CREATE TABLE memberships (conversation_id TEXT NOT NULL REFERENCES conversations (id), "
        "user_id TEXT NOT NULL, joined_seq " +
            integer + " NOT NULL, left_seq " + integer +
            ", "
            "PRIMARY KEY (conversation_id, user_id, joined_seq), "
            "CHECK (left_seq IS NULL OR left_seq > joined_seq))",
        "CREATE INDEX memberships_by_user ON memberships (user_id, left_seq)",
        "CREATE TABLE conversation_keys ("
        "conversation_id TEXT NOT NULL REFERENCES conversations (id), key_uri TEXT NOT NULL, "
        "declared_seq " +
            integer + " NOT NULL, PRIMARY KEY (conversation_id, key_uri))",
        "CREATE TABLE activities (seq " + integer +
            " PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
            "conversation_id TEXT NOT NULL REFERENCES conversations (id), actor TEXT NOT NULL, "
            "verb TEXT NOT NULL, content TEXT NOT NULL, key_uri TEXT NOT NULL, "
            "object_users TEXT NOT NULL, file_ids TEXT NOT NULL, client_activity_id TEXT NOT NULL, "
            "published_ms " +
            integer + " NOT NULL)",
        "CREATE INDEX activities_by_conversation ON activities (conversation_id, seq)",
        // A retried post is found, and never stored twice.
        "CREATE UNIQUE INDEX activities_by_client_id "
        "ON activities (conversation_id, actor, client_activity_id) "
        "WHERE client_activity_id <> ''",
        "CREATE TABLE files (id TEXT PRIMARY KEY, "
        "conversation_id TEXT NOT NULL REFERENCES conversations (id), uploader TEXT NOT NULL, "
        "size " +
            integer + " NOT NULL, sha256 TEXT NOT NULL, created_ms " + integer + " NOT NULL)",
        // The key is the whole row: matching a token within conversations, newest first, reads
        // one index range per conversation. The activity's id is joined from activities.
        "CREATE TABLE index_tokens (token TEXT NOT NULL, conversation_id TEXT NOT NULL, "
        "seq " +
            integer +
            " NOT NULL REFERENCES activities (seq), "
            "PRIMARY KEY (token, conversation_id, seq))" +
            without_rowid}},
      {2,
       "the creator's organization of each conversation, for compliance reads (empty for older "
       "conversations: no compliance officer reads them)",
       {"ALTER TABLE conversations ADD COLUMN created_by_org TEXT NOT NULL DEFAULT ''"}},
      {3,
       "edits and retractions: an activity's target, when a message was edited or retracted; "
       "an index of each activity's search tokens, so they can be removed at once",
       // NULL unless set, and as few as will do: every post's INSERT is prepared anew, and
       // four columns with NOT NULL defaults made that twice as dear as these two.
       {"ALTER TABLE activities ADD COLUMN target_seq " + integer,
        "ALTER TABLE activities ADD COLUMN edit_info TEXT",
        // Only edits and retractions have a target: posts add no entry.
        "CREATE INDEX activities_by_target ON activities (target_seq) "
        "WHERE target_seq IS NOT NULL",
        "CREATE INDEX index_tokens_by_seq ON index_tokens (seq)"}},
      {4,
       "the search index store compacted: 24 bits of each token, as entries of bucketed posting "
       "chunks per conversation, and each activity's buckets; index_tokens converted and dropped",
       IndexPostings::CreateTablesSql(engine), IndexPostings::ConvertTokenRows},
  };
}

std::int64_t CoreStore::MaxSeq(Session& s) {
  SqlStatement select = Database::Prepare(s, "SELECT COALESCE(MAX(seq), 0) FROM activities");
  return select.Next() ? select.Int(0) : 0;
}

std::optional<ConversationState> CoreStore::LoadState(Session& s, const std::string& id) {
  ConversationState state;
  {
    SqlStatement select = Database::Prepare(
        s,
        "SELECT kms_resource_uri, current_key_uri, created_by_org FROM conversations WHERE id = ?");
    select.Bind(id);
    if (!select.Next()) return std::nullopt;
    Result<KmsUri> resource_uri = KmsUri::Parse(select.Text(0));  // as CheckKmsUri accepted it
    state.kms_cluster = resource_uri.ok() ? resource_uri->cluster() : "";
    state.current_key_uri = select.Text(1);
    state.created_by_org = select.Text(2);
  }
  state.participants = std::make_shared<const std::vector<std::string>>(CurrentParticipants(s, id));
  std::unordered_set<std::string> keys;
  SqlStatement select =
      Database::Prepare(s, "SELECT key_uri FROM conversation_keys WHERE conversation_id = ?");
  select.Bind(id);
  while (select.Next()) keys.insert(select.Text(0));
  state.declared_keys = std::make_shared<const std::unordered_set<std::string>>(std::move(keys));
  return state;
}

void CoreStore::InsertConversation(Session& s, const Conversation& c,
                                   const std::string& created_by_org) {
  Database::Prepare(s,
                    "INSERT INTO conversations (id, kms_resource_uri, current_key_uri, "
                    "encrypted_title, created_by, created_ms, last_seq, created_by_org) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
      .Bind(c.id)
      .Bind(c.kms_resource_uri)
      .Bind(c.current_key_uri)
      .Bind(c.encrypted_title)
      .Bind(c.created_by)
      .Bind(c.created_ms)
      .Bind(c.last_seq)
      .Bind(created_by_org)
      .Run();
}

namespace {

// The SR_INSERTED_COLUMNS of `a`, in order.
void BindInserted(SqlStatement& insert, const Activity& a) {
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
}

}  // namespace

void CoreStore::InsertActivity(Session& s, const Activity& a) {
  // Every post runs this on the writer thread: kept compiled per connection (Database::Prepare).
  static constexpr char kInsertSql[] = "INSERT INTO activities (" SR_INSERTED_COLUMNS(
      "") ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
  static constexpr char kInsertEditSql[] = "INSERT INTO activities (" SR_INSERTED_COLUMNS(
      "") ", target_seq, edit_info) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
  const bool edit = a.target_seq != 0;  // an edit or a retraction
  SqlStatement insert = Database::Prepare(s, edit ? kInsertEditSql : kInsertSql);
  BindInserted(insert, a);
  if (edit) insert.Bind(a.target_seq).Bind(EditInfo(a));
  insert.Run();
}

namespace {

// INSERTs of activities (MultiRowInsert) that skip one whose actor used its clientActivityId in
// the conversation. The conflict target names activities_by_client_id (its columns and
// predicate), so any other conflict (a seq or id already used) still fails the batch rather than
// passing unseen.
const MultiRowInsert& InsertOnce() {
  static const MultiRowInsert kInsert(
      "INSERT INTO activities (" SR_INSERTED_COLUMNS("") ") VALUES ", 11,
      " ON CONFLICT (conversation_id, actor, client_activity_id) "
      "WHERE client_activity_id <> '' DO NOTHING");
  return kInsert;
}

}  // namespace

bool CoreStore::InsertActivityOnce(Session& s, const Activity& a) {
  if (a.target_seq != 0) {
    InsertActivity(s, a);
    return true;
  }
  return InsertActivitiesOnce(s, std::span<const Activity>(&a, 1));
}

bool CoreStore::InsertActivitiesOnce(Session& s, std::span<const Activity> posts) {
  std::size_t written = 0;
  InsertOnce().ForEachChunk(
      posts.size(), [&](std::size_t first, std::size_t rows, const std::string& sql) {
        SqlStatement insert = Database::Prepare(s, sql);  // the connection's compiled one
        for (const Activity& a : posts.subspan(first, rows)) BindInserted(insert, a);
        written += static_cast<std::size_t>(insert.Run());
      });
  return written == posts.size();
}

void CoreStore::ReplaceContent(Session& s, std::int64_t seq, const std::string& content,
                               const std::string& key_uri, std::int64_t edited_ms) {
  Activity edited;
  edited.edited_ms = edited_ms;
  Database::Prepare(s,
                    "UPDATE activities SET content = ?, key_uri = ?, edit_info = ? WHERE seq = ?")
      .Bind(content)
      .Bind(key_uri)
      .Bind(EditInfo(edited))
      .Bind(seq)
      .Run();
}

void CoreStore::Retract(Session& s, std::int64_t seq, std::int64_t retracted_ms) {
  Activity retracted;
  retracted.retracted_ms = retracted_ms;
  Database::Prepare(s,
                    "UPDATE activities SET content = '', key_uri = '', file_ids = '[]', "
                    "edit_info = ? WHERE seq = ?")
      .Bind(EditInfo(retracted))
      .Bind(seq)
      .Run();
}

void CoreStore::ClearEdits(Session& s, std::int64_t target_seq) {
  Database::Prepare(s, kClearEditsSql).Bind(target_seq).Run();
}

std::optional<Activity> CoreStore::LatestOfTarget(Session& s, std::int64_t target_seq,
                                                  const std::string& verb) {
  SqlStatement select = Database::Prepare(s, kLatestOfTargetSql);
  select.Bind(target_seq).Bind(verb);
  return FirstActivity(select);
}

void CoreStore::InsertMembership(Session& s, const std::string& conversation_id,
                                 const std::string& user, std::int64_t joined_seq) {
  Database::Prepare(s,
                    "INSERT INTO memberships (conversation_id, user_id, joined_seq) "
                    "VALUES (?, ?, ?)")
      .Bind(conversation_id)
      .Bind(user)
      .Bind(joined_seq)
      .Run();
}

void CoreStore::EndMembership(Session& s, const std::string& conversation_id,
                              const std::string& user, std::int64_t left_seq) {
  Database::Prepare(s,
                    "UPDATE memberships SET left_seq = ? "
                    "WHERE conversation_id = ? AND user_id = ? AND left_seq IS NULL")
      .Bind(left_seq)
      .Bind(conversation_id)
      .Bind(user)
      .Run();
}

void CoreStore::DeclareKey(Session& s, const std::string& conversation_id,
                           const std::string& key_uri, std::int64_t seq) {
  Database::Prepare(s,
                    "INSERT INTO conversation_keys (conversation_id, key_uri, declared_seq) "
                    "VALUES (?, ?, ?)")
      .Bind(conversation_id)
      .Bind(key_uri)
      .Bind(seq)
      .Run();
}

void CoreStore::SetCurrentKey(Session& s, const std::string& conversation_id,
                              const std::string& key_uri) {
  Database::Prepare(s, "UPDATE conversations SET current_key_uri = ? WHERE id = ?")
      .Bind(key_uri)
      .Bind(conversation_id)
      .Run();
}

void CoreStore::SetTitle(Session& s, const std::string& conversation_id, const std::string& title) {
  Database::Prepare(s, "UPDATE conversations SET encrypted_title = ? WHERE id = ?")
      .Bind(title)
      .Bind(conversation_id)
      .Run();
}

void CoreStore::SetLastSeq(Session& s, const std::string& conversation_id, std::int64_t seq) {
  Database::Prepare(s, "UPDATE conversations SET last_seq = ? WHERE id = ?")
      .Bind(seq)
      .Bind(conversation_id)
      .Run();
}

void CoreStore::InsertFile(Session& s, const FileInfo& f) {
  Database::Prepare(s,
                    "INSERT INTO files (id, conversation_id, uploader, size, sha256, created_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?)")
      .Bind(f.id)
      .Bind(f.conversation_id)
      .Bind(f.uploader)
      .Bind(static_cast<std::int64_t>(f.size))
      .Bind(f.sha256_hex)
      .Bind(f.created_ms)
      .Run();
}

std::int64_t CoreStore::CountMemberships(Session& s, const std::string& user) {
  SqlStatement count = Database::Prepare(
      s, "SELECT COUNT(*) FROM memberships WHERE user_id = ? AND left_seq IS NULL");
  count.Bind(user);
  return count.Next() ? count.Int(0) : 0;
}

std::size_t CoreStore::CountDeclaredKeys(Session& s, const std::string& conversation_id) {
  SqlStatement count =
      Database::Prepare(s, "SELECT COUNT(*) FROM conversation_keys WHERE conversation_id = ?");
  count.Bind(conversation_id);
  return count.Next() ? static_cast<std::size_t>(count.Int(0)) : 0;
}

std::optional<Activity> CoreStore::FindByClientId(Session& s, const std::string& conversation_id,
                                                  const std::string& actor,
                                                  const std::string& client_activity_id) {
  // The `<> ''` term lets the engine use the partial index activities_by_client_id.
  SqlStatement select = Database::Prepare(
      s, "SELECT " SR_ACTIVITY_COLUMNS("") " FROM activities WHERE conversation_id = ? "
                                           "AND actor = ? AND client_activity_id = ? "
                                           "AND client_activity_id <> ''");
  select.Bind(conversation_id).Bind(actor).Bind(client_activity_id);
  return FirstActivity(select);
}

std::optional<Activity> CoreStore::FindActivity(Session& s, const std::string& conversation_id,
                                                const std::string& activity_id) {
  SqlStatement select = Database::Prepare(
      s, "SELECT " SR_ACTIVITY_COLUMNS("") " FROM activities WHERE id = ? AND conversation_id = ?");
  select.Bind(activity_id).Bind(conversation_id);
  return FirstActivity(select);
}

std::set<std::string> CoreStore::RecordedFiles(Session& s, const std::vector<std::string>& ids) {
  std::set<std::string> recorded;
  constexpr std::size_t kPerQuery = 256;  // well under SQLite's 32,766 parameters
  for (std::size_t at = 0; at < ids.size(); at += kPerQuery) {
    const std::size_t n = std::min(kPerQuery, ids.size() - at);
    SqlStatement select =
        Database::Prepare(s, "SELECT id FROM files WHERE id IN (" + Placeholders(n) + ")");
    for (std::size_t i = 0; i < n; ++i) select.Bind(ids[at + i]);
    while (select.Next()) recorded.insert(select.Text(0));
  }
  return recorded;
}

std::optional<FileInfo> CoreStore::FindFile(Session& s, const std::string& conversation_id,
                                            const std::string& file_id) {
  SqlStatement select =
      Database::Prepare(s,
                        "SELECT id, conversation_id, uploader, size, sha256, created_ms FROM files "
                        "WHERE id = ? AND conversation_id = ?");
  select.Bind(file_id).Bind(conversation_id);
  if (!select.Next()) return std::nullopt;
  FileInfo f;
  f.id = select.Text(0);
  f.conversation_id = select.Text(1);
  f.uploader = select.Text(2);
  f.size = static_cast<std::uint64_t>(select.Int(3));
  f.sha256_hex = select.Text(4);
  f.created_ms = select.Int(5);
  return f;
}

std::optional<Conversation> CoreStore::FindConversation(Session& s, const std::string& id) {
  std::optional<Conversation> c;
  {
    SqlStatement select = Database::Prepare(
        s, std::string("SELECT ") + kConversationColumns + " FROM conversations c WHERE c.id = ?");
    select.Bind(id);
    if (!select.Next()) return std::nullopt;
    c = ConversationAt(select);
  }
  c->participants = CurrentParticipants(s, id);
  return c;
}

std::vector<Conversation> CoreStore::ListConversations(Session& s, const std::string& user,
                                                       std::int64_t before, std::size_t limit) {
  SqlStatement select = Database::Prepare(s, kListConversationsSql);
  select.Bind(user).Bind(before).Bind(Int(limit));
  return WithParticipants(s, select);
}

std::vector<Conversation> CoreStore::ComplianceConversations(Session& s, const std::string& org,
                                                             const std::string& user,
                                                             std::int64_t before,
                                                             std::size_t limit) {
  // From the user's memberships (an index range), so the cost follows the user's conversations,
  // not every conversation of the organization.
  SqlStatement select = Database::Prepare(
      s, std::string("SELECT ") + kConversationColumns +
             " FROM conversations c WHERE c.id IN (SELECT m.conversation_id FROM memberships m "
             "WHERE m.user_id = ?) AND c.created_by_org = ? AND c.last_seq < ? "
             "ORDER BY c.last_seq DESC LIMIT ?");
  select.Bind(user).Bind(org).Bind(before).Bind(Int(limit));
  return WithParticipants(s, select);
}

bool CoreStore::IsComplianceVisible(Session& s, const std::string& conversation_id,
                                    const std::string& org, const std::string& user) {
  SqlStatement count = Database::Prepare(
      s,
      "SELECT COUNT(*) FROM conversations c WHERE c.id = ? AND c.created_by_org = ? AND EXISTS "
      "(SELECT 1 FROM memberships m WHERE m.user_id = ? AND m.conversation_id = c.id)");
  count.Bind(conversation_id).Bind(org).Bind(user);
  return count.Next() && count.Int(0) > 0;
}

std::vector<Conversation> CoreStore::WithParticipants(Session& s, SqlStatement& select) {
  std::vector<Conversation> out;
  std::map<std::string, std::size_t> position;
  while (select.Next()) {
    out.push_back(ConversationAt(select));
    position[out.back().id] = out.size() - 1;
  }
  select.Reset();
  if (out.empty()) return out;
  SqlStatement members =
      Database::Prepare(s,
                        "SELECT conversation_id, user_id FROM memberships WHERE left_seq IS NULL "
                        "AND conversation_id IN (" +
                            Placeholders(out.size()) + ")");
  for (const Conversation& c : out) members.Bind(c.id);
  while (members.Next()) out[position.at(members.Text(0))].participants.push_back(members.Text(1));
  // By their bytes, as CurrentParticipants.
  for (Conversation& c : out) std::sort(c.participants.begin(), c.participants.end());
  return out;
}

std::vector<Activity> CoreStore::History(Session& s, const std::string& conversation_id,
                                         const HistoryQuery& query) {
  const std::int64_t before = query.before.value_or(kNoSeq);
  const std::int64_t limit = Int(query.limit + 1);
  if (query.after.has_value()) {
    SqlStatement select = Database::Prepare(s, kHistoryForwardSql);
    select.Bind(conversation_id).Bind(*query.after).Bind(before).Bind(limit);
    return Activities(select);
  }
  SqlStatement select = Database::Prepare(s, kHistoryNewestSql);
  select.Bind(conversation_id).Bind(before).Bind(limit);
  std::vector<Activity> out = Activities(select);
  std::reverse(out.begin(), out.end());
  return out;
}

std::vector<Activity> CoreStore::EventsSince(Session& s, const std::string& user,
                                             std::int64_t after, std::size_t limit) {
  SqlStatement select = Database::Prepare(s, kEventsSinceSql);
  select.Bind(user).Bind(after).Bind(after).Bind(after).Bind(Int(limit)).Bind(Int(limit));
  return Activities(select);
}

std::vector<Activity> CoreStore::OrganizationEventsSince(Session& s, const std::string& org,
                                                         std::int64_t after, std::size_t limit) {
  SqlStatement select = Database::Prepare(s, kOrganizationEventsSinceSql);
  select.Bind(after).Bind(org).Bind(Int(limit));
  return Activities(select);
}

std::vector<StoredCommit> CoreStore::CommittedAfter(Session& s, std::int64_t after,
                                                    std::size_t limit) {
  std::vector<StoredCommit> out;
  {
    SqlStatement select = Database::Prepare(s, kCommittedAfterSql);
    select.Bind(after).Bind(Int(limit));
    while (select.Next()) out.push_back({ActivityAt(select), {}, select.Text(12)});
  }
  if (out.empty()) return out;
  const std::int64_t through = out.back().activity.seq;
  struct Stay {
    std::string user;
    std::int64_t joined_seq;
    std::optional<std::int64_t> left_seq;
  };
  std::map<std::string, std::vector<Stay>> stays;  // by conversation
  SqlStatement select = Database::Prepare(s, kCommittedMembershipsSql);
  select.Bind(after).Bind(through).Bind(through).Bind(after);
  while (select.Next()) {
    stays[select.Text(0)].push_back({select.Text(1), select.Int(2), select.OptionalInt(3)});
  }
  // As the writer decided at commit: the participants after the activity, and the users it
  // removed (their stay ends at its seq).
  for (StoredCommit& commit : out) {
    const std::int64_t seq = commit.activity.seq;
    for (const Stay& stay : stays[commit.activity.conversation_id]) {
      if (stay.joined_seq <= seq && (!stay.left_seq || *stay.left_seq >= seq)) {
        commit.recipients.push_back(stay.user);
      }
    }
    std::sort(commit.recipients.begin(), commit.recipients.end());
    commit.recipients.erase(std::unique(commit.recipients.begin(), commit.recipients.end()),
                            commit.recipients.end());
  }
  return out;
}

CoreStore::NewestSeq CoreStore::NewestSeqAndChangesAfter(Session& s, std::int64_t after) {
  NewestSeq out;
  SqlStatement select = Database::Prepare(
      s,
      "SELECT newest.seq, changed.conversation_id FROM "
      "(SELECT COALESCE(MAX(seq), 0) AS seq FROM activities) AS newest LEFT JOIN "
      "(SELECT DISTINCT conversation_id FROM activities WHERE seq > ? AND seq <= ? "
      "AND verb NOT IN ('post', 'share', 'edit', 'retract')) AS changed ON 1 = 1");
  // The upper bound changes nothing but the plan: with a range rather than `seq > ?` alone,
  // PostgreSQL's generic plan for the kept statement reads the seq index instead of the table.
  select.Bind(after).Bind(std::numeric_limits<std::int64_t>::max());
  while (select.Next()) {
    out.seq = select.Int(0);
    if (!select.IsNull(1)) out.changed.push_back(select.Text(1));
  }
  return out;
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
