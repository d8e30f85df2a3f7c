// A typed client of the core's HTTPS API (docs/api/core.md): conversations, participants, key
// rotation, activities and history, encrypted files, the realtime event stream, and the KMS relay
// (see relay_transport.h). It moves ciphertext only; content.h and conversation.h encrypt.
//
// Errors: a JSON error of the core ({"code","message"}) becomes an Error whose ErrorCode follows
// the core's code, whose message is "<code>: <message>" and whose native_code() is the HTTP status;
// CoreErrorCode() gives the code back ("key_rotation_required", "rate_limited", ...). No answer is
// UNAVAILABLE. A 429 or 503 is retried (Retry-After honoured, `max_attempts` in all), and so is a
// request that got no answer when sending it twice cannot do harm (reads, posts that carry a
// clientActivityId, edits and retractions, which the core stores once).
//
// Thread-safe: requests take turns on one keep-alive connection; uploads and downloads use a
// connection of their own; each EventStream has its own.
#ifndef STRONGROOM_CLIENT_CORE_CLIENT_H_
#define STRONGROOM_CLIENT_CORE_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <istream>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "strongroom/client/kms_session.h"
#include "strongroom/client/token_source.h"
#include "strongroom/common/error.h"

namespace Poco::Net {
class HTTPSClientSession;
class WebSocket;
}  // namespace Poco::Net

namespace strongroom::client {

namespace internal {
class HttpsClient;
}

struct Conversation {
  std::string id;
  std::string kms_resource_uri;
  std::string current_key_uri;
  std::string encrypted_title;  // a content JWE, or empty
  std::vector<std::string> participants;
  std::string created_by;
  std::int64_t created_ms = 0;
  std::int64_t last_seq = 0;
};

// Verbs: create, post, share, add, remove, leave, rotate, title, edit, retract
// (docs/api/core.md). An edit or a retraction names the message it changed (target_id,
// target_seq); a message that was edited carries its newest text and edited_ms, one that was
// retracted no content and retracted_ms.
struct Activity {
  std::int64_t seq = 0;
  std::string id;
  std::string conversation_id;
  std::string actor;
  std::string verb;
  std::string content;  // a content JWE, or empty
  std::string key_uri;
  std::vector<std::string> object_users;
  std::vector<std::string> file_ids;
  std::string client_activity_id;
  std::int64_t published_ms = 0;
  std::string target_id;          // edit, retract: the message's id
  std::int64_t target_seq = 0;    // and its seq
  std::int64_t edited_ms = 0;     // a post edited: when its newest edit was made, or 0
  std::int64_t retracted_ms = 0;  // a message retracted: when, or 0
};

struct FileInfo {
  std::string id;
  std::string conversation_id;
  std::string uploader;
  std::uint64_t size = 0;
  std::string sha256;  // hex, of the encrypted blob
  std::int64_t created_ms = 0;
};

struct NewConversation {
  std::string kms_resource_uri;
  std::string key_uri;
  std::vector<std::string> participants;  // the creator is added by the core
  std::string encrypted_title;            // optional
  std::string kms_message;                // optional: relayed to the KMS first
};

// What a change that may embed a KMS message answers: the result, and the KMS's sealed answer to
// the embedded message (open it with KmsContext::OpenAnswer).
struct CreatedConversation {
  Conversation conversation;
  std::optional<KmsResponse> kms_answer;
};
struct Change {
  Activity activity;
  std::optional<KmsResponse> kms_answer;
};

struct ConversationPage {
  std::vector<Conversation> items;
  std::optional<std::int64_t> next;  // pass as `before` for the next page
};

struct HistoryQuery {
  std::optional<std::int64_t> before;  // exclusive; not with `after`
  std::optional<std::int64_t> after;   // exclusive
  std::size_t limit = 50;              // 1-200
};
struct HistoryPage {
  std::vector<Activity> items;  // ascending seq
  bool more = false;            // more beyond the page in the direction asked
};

// The search index store (the indexer's identity only; docs/api/core.md): one conversation of a
// search with its own tokens, and the matches, newest first.
struct IndexSearchQuery {
  std::string conversation_id;
  std::vector<std::string> tokens;
};
// One activity's token set of a batch put (POST /v1/index/sets).
struct IndexTokenSet {
  std::string conversation_id;
  std::string activity_id;
  std::vector<std::string> tokens;
};
struct IndexSearchMatch {
  std::string conversation_id;
  std::string activity_id;
  std::int64_t seq = 0;
};
struct IndexSearchPage {
  std::vector<IndexSearchMatch> items;
  std::optional<std::int64_t> next;  // pass as `before` for the next page
};

struct CoreClientOptions {
  std::string base_url;  // https://host[:port] of cored, no path
  std::string ca_file;   // PEM: the CA certificates cored's TLS certificate must chain to
  TokenSource token;     // the user's token for the core (audience "core")
  std::chrono::seconds timeout{30};
  int max_attempts = 3;
  std::function<void(std::chrono::milliseconds)> sleep = {};  // default: sleep_for
};

// The core's code of an error CoreClient returned ("not_found", "key_rotation_required"...), or
// empty when the error did not come from a core answer.
std::string CoreErrorCode(const Error& error);

class EventStream;

class CoreClient {
 public:
  static Result<std::unique_ptr<CoreClient>> New(CoreClientOptions options);
  ~CoreClient();
  CoreClient(const CoreClient&) = delete;
  CoreClient& operator=(const CoreClient&) = delete;

  Result<CreatedConversation> CreateConversation(const NewConversation& request);
  Result<ConversationPage> ListConversations(std::optional<std::int64_t> before = std::nullopt,
                                             std::size_t limit = 50);
  Result<Conversation> GetConversation(const std::string& id);
  Result<Change> AddParticipants(const std::string& id, const std::vector<std::string>& users,
                                 const std::string& kms_message = "");
  // Removing oneself is leaving.
  Result<Change> RemoveParticipant(const std::string& id, const std::string& user,
                                   const std::string& kms_message = "");
  Result<Change> RotateKey(const std::string& id, const std::string& key_uri,
                           const std::string& kms_message = "");
  Result<Activity> SetTitle(const std::string& id, const std::string& encrypted_title);

  // `content` is a JWE under the conversation's current key; file ids make it a share. With a
  // clientActivityId a retried post is stored once.
  Result<Activity> Post(const std::string& id, const std::string& content,
                        const std::vector<std::string>& file_ids = {},
                        const std::string& client_activity_id = "");
  Result<HistoryPage> History(const std::string& id, const HistoryQuery& query = {});
  Result<Activity> GetActivity(const std::string& id, const std::string& activity_id);
  // The author's edit of a post (`content`: a JWE under the current key) and retraction of a
  // message; each answers its "edit" or "retract" activity. Both are retried when no answer came:
  // the core stores an edit with the content the post already has, or a second retraction, once.
  Result<Activity> EditActivity(const std::string& id, const std::string& activity_id,
                                const std::string& content);
  Result<Activity> RetractActivity(const std::string& id, const std::string& activity_id);

  // Compliance reads (the caller a compliance officer of their organization, configured in
  // cored): `user`'s conversations created in the officer's organization, and their history,
  // ciphertext as participants read it (docs/api/core.md).
  Result<ConversationPage> ComplianceConversations(
      const std::string& user, std::optional<std::int64_t> before = std::nullopt,
      std::size_t limit = 50);
  Result<HistoryPage> ComplianceHistory(const std::string& user, const std::string& id,
                                        const HistoryQuery& query = {});

  // Streams `size` bytes that `write` produces (an encrypted file) as the upload body.
  using BodyWriter = std::function<Status(std::ostream& out)>;
  Result<FileInfo> UploadFile(const std::string& id, std::uint64_t size, const BodyWriter& write);
  // Hands the blob's body to `read`; `expected_sha256` is its X-Content-SHA256 (hex).
  using BodyReader = std::function<Status(std::istream& in, const std::string& expected_sha256)>;
  Status DownloadFile(const std::string& id, const std::string& file_id, const BodyReader& read);

  // POST /kms/messages?cluster=<cluster> (RelayTransport does the same on its own connection).
  Result<KmsResponse> RelayKmsMessage(const std::string& cluster, const std::string& message);

  // GET /v1/events as a WebSocket; with a cursor, everything after that seq first.
  Result<std::unique_ptr<EventStream>> OpenEvents(std::optional<std::int64_t> cursor);

  // The indexer's identity only (403 PERMISSION_DENIED for anyone else): PUT
  // /v1/index/{id}/{activity} replaces the activity's tokens (sent again when no answer came:
  // the same set twice changes nothing); POST /v1/index/search; GET /v1/index/events, the stream
  // of every activity of the conversations its organization's users created, from the cursor.
  Status PutIndexTokens(const std::string& id, const std::string& activity_id,
                        const std::vector<std::string>& tokens);
  Result<IndexSearchPage> SearchIndex(const std::vector<IndexSearchQuery>& queries,
                                      std::optional<std::int64_t> before, std::size_t limit);
  // POST /v1/index/sets: 1-256 activities' sets, all or nothing (sent again when no answer came:
  // each set replaces its activity's, so a replay changes nothing).
  Status PutIndexTokenSets(const std::vector<IndexTokenSet>& sets);
  Result<std::unique_ptr<EventStream>> OpenIndexEvents(std::int64_t cursor);

 private:
  CoreClient(CoreClientOptions options, std::unique_ptr<internal::HttpsClient> https);
  // One JSON request with the retry rules above; a non-2xx answer is its Error.
  Result<std::string> Call(const std::string& method, const std::string& target,
                           const std::string& body, bool idempotent, int* status = nullptr);
  // One streamed request (an upload or a download) on the streams' connection, opened on first
  // use; an answer other than `expected_status` is its Error. Returns the answer's body (what
  // `read` did not take).
  Result<std::string> StreamExchange(const std::string& method, const std::string& target,
                                     const std::string& content_type, std::uint64_t size,
                                     const BodyWriter& write, const BodyReader& read,
                                     int expected_status);

  // A WebSocket of `path` (GET /v1/events or /v1/index/events) from the cursor.
  Result<std::unique_ptr<EventStream>> OpenStream(const std::string& path,
                                                  std::optional<std::int64_t> cursor);

  const CoreClientOptions options_;
  std::mutex mutex_;
  std::unique_ptr<internal::HttpsClient> https_;
  std::unique_ptr<internal::HttpsClient> streams_;  // uploads and downloads
  std::mutex streams_mutex_;
};

// The realtime stream of one user: activities of every conversation they are in, in seq order,
// each once. A connection that drops is reopened with the last seq seen as the cursor, so nothing
// is lost or repeated across reconnects. Used by one thread.
class EventStream {
 public:
  ~EventStream();
  EventStream(const EventStream&) = delete;
  EventStream& operator=(const EventStream&) = delete;

  // The next activities, waiting at most `patience`; empty when none came in time. UNAVAILABLE
  // when the connection dropped and could not be reopened (max_attempts tries, with backoff).
  Result<std::vector<Activity>> Next(std::chrono::milliseconds patience);
  // The seq of the last activity returned (or the cursor it was opened with).
  std::optional<std::int64_t> cursor() const { return cursor_; }
  void Close();

 private:
  friend class CoreClient;
  using Connector = std::function<Result<std::pair<std::unique_ptr<Poco::Net::HTTPSClientSession>,
                                                   std::unique_ptr<Poco::Net::WebSocket>>>(
      std::optional<std::int64_t> cursor)>;
  EventStream(Connector connect, std::optional<std::int64_t> cursor, int max_attempts,
              std::function<void(std::chrono::milliseconds)> sleep);
  Status Reconnect();

  Connector connect_;
  std::optional<std::int64_t> cursor_;
  int max_attempts_;
  std::function<void(std::chrono::milliseconds)> sleep_;
  std::unique_ptr<Poco::Net::HTTPSClientSession> session_;
  std::unique_ptr<Poco::Net::WebSocket> socket_;
  bool closed_ = false;
};

}  // namespace strongroom::client

#endif  // STRONGROOM_CLIENT_CORE_CLIENT_H_
