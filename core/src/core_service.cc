// CoreService: checks in the caller's thread what needs no stored state (shapes, sizes, the
// caller's membership from the cache), then hands every change to one writer thread. The writer
// takes up to kMaxBatch queued changes, checks each against the conversation's state as the
// batch has left it, writes them in ONE transaction with a full fsync, and only then updates the
// cache, calls the listener in seq order and wakes the callers (group commit). Being the only
// mutator, the writer keeps the cache of conversation states exact: it replaces a state after
// the commit that changed it. Reads run on pooled connections beside it (SQLite WAL).
#include "strongroom/core/core_service.h"

#include <Poco/Exception.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include "core_store.h"
#include "strongroom/common/rfc3339.h"
#include "validation.h"

namespace strongroom::core {
namespace {

using internal::ConversationState;
using internal::CoreStore;
using StatePtr = std::shared_ptr<const ConversationState>;
using Session = Poco::Data::Session;
using Poco::Data::Keywords::now;

constexpr std::size_t kMaxBatch = 256;        // changes committed together
constexpr std::size_t kMaxQueue = 65536;      // beyond this, changes are refused (UNAVAILABLE)
constexpr std::size_t kCacheWeight = 500000;  // participants + keys held by the state cache
constexpr std::chrono::seconds kCompactInterval{5};
constexpr std::int64_t kNoSeq = std::numeric_limits<std::int64_t>::max();

Error Invalid(std::string message) {
  return Error(ErrorCode::kInvalidArgument, std::move(message));
}

// The same answer for an unknown conversation and for one the caller is not in.
Error NoSuchConversation() { return Error(ErrorCode::kNotFound, "no such conversation"); }

Status CheckCaller(const Caller& caller) {
  return internal::CheckUserId(caller.user_id, "the caller's user id");
}

Status CheckPageSize(std::size_t limit) {
  if (limit == 0 || limit > kMaxPageSize) {
    return Invalid("the page size must be 1 to " + std::to_string(kMaxPageSize));
  }
  return OkStatus();
}

// Checks a list of users to add and returns it sorted without duplicates. With `organization_of`,
// each must be a user of an organization whose identity provider the core trusts.
Result<std::vector<std::string>> CheckUsers(
    const std::vector<std::string>& users, std::string_view what,
    const std::function<std::optional<std::string>(std::string_view)>& organization_of) {
  if (users.size() > kMaxUsersPerChange) {
    return Invalid("at most " + std::to_string(kMaxUsersPerChange) + " " + std::string(what) +
                   " per request");
  }
  for (const std::string& user : users) {
    SR_RETURN_IF_ERROR(internal::CheckUserId(user, "a participant's user id"));
    if (organization_of && !organization_of(user)) {
      return Invalid("'" + user +
                     "' is not a user of an organization this core trusts (its domain is in no "
                     "identity provider's subject_domains)");
    }
  }
  std::vector<std::string> sorted = users;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  return sorted;
}

// A title: a JWE under the conversation's current key, or empty (none).
Result<std::string> CheckTitle(const std::string& title) {
  if (title.empty()) return std::string();
  if (title.size() > kMaxTitleBytes) {
    return Invalid("the encrypted title is larger than " + std::to_string(kMaxTitleBytes) +
                   " bytes");
  }
  return CheckContentJwe(title);
}

// New content must be under the current key; a key the conversation declared before is refused
// with the error clients act on (fetch the conversation, use its current key).
Status CheckKid(const ConversationState& state, const std::string& kid) {
  if (kid == state.current_key_uri) return OkStatus();
  if (state.declared_keys->count(kid) != 0) {
    return Error(ErrorCode::kFailedPrecondition,
                 "key rotation required: the conversation's current key is " +
                     state.current_key_uri + "; new content under " + kid + " is refused");
  }
  return Invalid("the content's kid is not a key this conversation declared");
}

// One read snapshot over several statements (a deferred transaction on a pooled connection).
Status ReadTransaction(Database& db, const std::function<Status(Session&)>& work) {
  return db.WithSession([&](Session& s) -> Status {
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

// A single read statement (SQLite gives it a snapshot of its own).
Status Read(Database& db, const std::function<Status(Session&)>& work) {
  return db.WithSession([&](Session& s) -> Status {
    try {
      return work(s);
    } catch (const Poco::Exception&) {
      throw;  // Database reports it
    } catch (const std::exception& e) {
      return Error(ErrorCode::kInternal, std::string("reading failed: ") + e.what());
    }
  });
}

Status SyncDirectory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return Error(ErrorCode::kUnavailable, "cannot open " + dir.string() + ": " + strerror(errno));
  }
  const int rc = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  if (rc != 0) {
    return Error(ErrorCode::kUnavailable, "cannot sync " + dir.string() + ": " + strerror(saved));
  }
  return OkStatus();
}

constexpr char kUploadSuffix[] = ".upload";
// Where New() moves blobs that are in the files directory but not in the database.
constexpr char kUnrecordedDir[] = "unrecorded";

// Conversation states for the hot paths (is the caller a participant? which key is current?),
// so a post needs no database read before it is queued. Filled by readers on a miss, replaced by
// the writer after each commit that changes a state. A reader's fill is dropped when the writer
// published a change since the reader began loading (the epoch), so the cache never goes back
// to a state older than a commit the writer already published.
class StateCache {
 public:
  StatePtr Find(const std::string& id) const {
    std::lock_guard lock(mutex_);
    auto it = map_.find(id);
    return it == map_.end() ? nullptr : it->second;
  }
  std::uint64_t epoch() const {
    std::lock_guard lock(mutex_);
    return epoch_;
  }
  void FillIfUnchanged(const std::string& id, StatePtr state, std::uint64_t epoch) {
    std::lock_guard lock(mutex_);
    if (epoch != epoch_ || map_.count(id) != 0) return;
    InsertLocked(id, std::move(state));
  }
  // `changed`: the state differs from what readers may have loaded before this commit.
  void Publish(const std::string& id, StatePtr state, bool changed) {
    std::lock_guard lock(mutex_);
    if (changed) {
      ++epoch_;
    } else if (map_.count(id) != 0) {
      return;
    }
    InsertLocked(id, std::move(state));
  }

 private:
  static std::size_t Weight(const ConversationState& state) {
    return 1 + state.participants->size() + state.declared_keys->size();
  }
  void InsertLocked(const std::string& id, StatePtr state) {
    if (auto it = map_.find(id); it != map_.end()) {
      weight_ -= Weight(*it->second);
      map_.erase(it);
    }
    weight_ += Weight(*state);
    // Any entry may go: the database has them all. The new one stays.
    for (auto it = map_.begin(); weight_ > kCacheWeight && it != map_.end();) {
      weight_ -= Weight(*it->second);
      it = map_.erase(it);
    }
    map_.emplace(id, std::move(state));
  }

  mutable std::mutex mutex_;
  std::unordered_map<std::string, StatePtr> map_;
  std::size_t weight_ = 0;
  std::uint64_t epoch_ = 0;
};

// An activity committed in a batch and who may see it.
struct Produced {
  Activity activity;
  std::shared_ptr<const std::vector<std::string>> recipients;
};

// What a batch's changes see and leave behind, inside the batch's transaction.
struct Batch {
  Session* s = nullptr;
  std::int64_t next_seq = 0;
  std::int64_t now_ms = 0;
  std::unordered_map<std::string, StatePtr> changed;  // states this batch changed
  std::unordered_map<std::string, StatePtr> loaded;   // states read from the database
  std::map<std::string, std::int64_t> last_seq;       // conversations' newest activities
  std::vector<Produced> produced;                     // in seq order
};

// A change queued for the writer. `apply` checks it against the batch's view of the states and
// then writes it; it writes nothing when it returns an error. It returns the activity it
// produced (or found, for a retried post), or an empty one for changes without an activity.
struct Op {
  std::function<Result<Activity>(Batch&)> apply;
  std::optional<Result<Activity>> result;
  bool done = false;
};

class UploadImpl final : public CoreService::Upload {
 public:
  UploadImpl(const void* owner, std::string conversation_id, std::string uploader,
             std::string file_id, std::filesystem::path temp, int fd, std::uint64_t max_bytes)
      : owner_(owner),
        conversation_id_(std::move(conversation_id)),
        uploader_(std::move(uploader)),
        file_id_(std::move(file_id)),
        temp_(std::move(temp)),
        fd_(fd),
        max_bytes_(max_bytes),
        digest_(EVP_MD_CTX_new()) {
    if (digest_ == nullptr || EVP_DigestInit_ex(digest_, EVP_sha256(), nullptr) != 1) {
      (void)Fail(Error(ErrorCode::kInternal, "cannot start SHA-256"));
    }
  }
  ~UploadImpl() override {
    Discard();
    EVP_MD_CTX_free(digest_);
  }

  Status Write(const char* data, std::size_t size) override {
    if (!status_.ok()) return status_;
    if (size > max_bytes_ - size_) {
      return Fail(Error(ErrorCode::kResourceExhausted,
                        "the file is larger than " + std::to_string(max_bytes_) + " bytes"));
    }
    if (EVP_DigestUpdate(digest_, data, size) != 1) {
      return Fail(Error(ErrorCode::kInternal, "SHA-256 failed"));
    }
    std::size_t written = 0;
    while (written < size) {
      const ssize_t n = ::write(fd_, data + written, size - written);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        return Fail(Error(ErrorCode::kUnavailable,
                          std::string("cannot write the upload: ") + strerror(errno)));
      }
      written += static_cast<std::size_t>(n);
    }
    size_ += size;
    return OkStatus();
  }
  std::uint64_t size() const override { return size_; }

  // Makes the bytes durable, closes the file and returns the SHA-256 (hex).
  Result<std::string> Seal() {
    if (!status_.ok()) return status_.error();
    if (::fsync(fd_) != 0) {
      return Fail(Error(ErrorCode::kUnavailable,
                        std::string("cannot sync the upload: ") + strerror(errno)))
          .error();
    }
    ::close(fd_);
    fd_ = -1;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (EVP_DigestFinal_ex(digest_, md, &length) != 1) {
      return Fail(Error(ErrorCode::kInternal, "SHA-256 failed")).error();
    }
    return internal::Hex(md, length);
  }
  // The temporary file became the stored blob (renamed): nothing to remove any more.
  void Kept() { temp_.clear(); }

  const void* owner() const { return owner_; }
  const std::string& conversation_id() const { return conversation_id_; }
  const std::string& uploader() const { return uploader_; }
  const std::string& file_id() const { return file_id_; }
  const std::filesystem::path& temp() const { return temp_; }

 private:
  Status Fail(Error error) {
    Discard();
    status_ = error;
    return error;
  }
  void Discard() {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    if (!temp_.empty()) {
      std::error_code ignored;
      std::filesystem::remove(temp_, ignored);
      temp_.clear();
    }
  }

  const void* owner_;
  const std::string conversation_id_;
  const std::string uploader_;
  const std::string file_id_;
  std::filesystem::path temp_;
  int fd_;
  const std::uint64_t max_bytes_;
  EVP_MD_CTX* digest_;
  std::uint64_t size_ = 0;
  Status status_;
};

}  // namespace

class CoreService::Impl {
 public:
  Impl(CoreServiceConfig config, Database& db, Clock clock, std::int64_t last_seq)
      : config_(std::move(config)),
        files_dir_(config_.files_dir),
        db_(db),
        clock_(std::move(clock)),
        last_seq_(last_seq),
        next_seq_(last_seq + 1),
        writer_([this] { Run(); }) {}

  ~Impl() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    work_.notify_all();
    writer_.join();
  }

  void SetActivityListener(ActivityListener listener) {
    std::lock_guard lock(listener_mutex_);
    listener_ = std::move(listener);
  }

  std::int64_t LastSeq() const { return last_seq_.load(); }

  Result<Conversation> CreateConversation(const Caller& caller, const NewConversation& request) {
    SR_RETURN_IF_ERROR(CheckCaller(caller));
    SR_ASSIGN_OR_RETURN(
        const std::string cluster,
        internal::CheckKmsUri(request.kms_resource_uri, "resources", "the KMS resource URL"));
    SR_ASSIGN_OR_RETURN(const std::string key_cluster,
                        internal::CheckKmsUri(request.key_uri, "keys", "the key URL"));
    if (key_cluster != cluster) {
      return Invalid("the key must be on the conversation's KMS (" + cluster + ")");
    }
    SR_ASSIGN_OR_RETURN(std::vector<std::string> users,
                        CheckUsers(request.participants, "participants", config_.organization_of));
    if (!std::binary_search(users.begin(), users.end(), caller.user_id)) {
      users.insert(std::upper_bound(users.begin(), users.end(), caller.user_id), caller.user_id);
    }
    SR_ASSIGN_OR_RETURN(const std::string title_kid, CheckTitle(request.encrypted_title));
    if (!title_kid.empty() && title_kid != request.key_uri) {
      return Invalid("the title must be encrypted under the conversation's key");
    }
    auto participants = std::make_shared<const std::vector<std::string>>(std::move(users));
    Conversation c;
    c.id = internal::NewUuid();
    c.kms_resource_uri = request.kms_resource_uri;
    c.current_key_uri = request.key_uri;
    c.encrypted_title = request.encrypted_title;
    c.participants = *participants;
    c.created_by = caller.user_id;
    auto apply = [&](Batch& b) -> Result<Activity> {
      for (const std::string& user : *participants) {
        SR_RETURN_IF_ERROR(CheckRoomForOneMore(b, user));
      }
      Activity a = NewActivity(b, c.id, caller, "create");
      a.key_uri = request.key_uri;
      a.content = request.encrypted_title;
      a.object_users = *participants;
      c.created_ms = a.published_ms;
      c.last_seq = a.seq;
      CoreStore::InsertConversation(*b.s, c, caller.org);
      CoreStore::InsertActivity(*b.s, a);
      for (const std::string& user : *participants) {
        CoreStore::InsertMembership(*b.s, c.id, user, a.seq);
      }
      CoreStore::DeclareKey(*b.s, c.id, request.key_uri, a.seq);
      ConversationState state;
      state.kms_cluster = cluster;
      state.current_key_uri = request.key_uri;
      state.participants = participants;
      state.declared_keys = std::make_shared<const std::unordered_set<std::string>>(
          std::unordered_set<std::string>{request.key_uri});
      b.changed[c.id] = std::make_shared<const ConversationState>(std::move(state));
      return Produce(b, std::move(a), participants);
    };
    Result<Activity> created = Submit(apply);
    if (!created.ok()) return created.error();
    return c;
  }

  Result<std::vector<Conversation>> ListConversations(const Caller& caller,
                                                      std::optional<std::int64_t> before_seq,
                                                      std::size_t limit) {
    SR_RETURN_IF_ERROR(CheckCaller(caller));
    SR_RETURN_IF_ERROR(CheckPageSize(limit));
    std::vector<Conversation> out;
    SR_RETURN_IF_ERROR(ReadTransaction(db_, [&](Session& s) -> Status {
      out = CoreStore::ListConversations(s, caller.user_id, before_seq.value_or(kNoSeq), limit);
      return OkStatus();
    }));
    return out;
  }

  Result<Conversation> GetConversation(const Caller& caller, const std::string& id) {
    SR_RETURN_IF_ERROR(CheckCaller(caller));
    if (!internal::IsUuid(id)) return NoSuchConversation();
    std::optional<Conversation> found;
    SR_RETURN_IF_ERROR(ReadTransaction(db_, [&](Session& s) -> Status {
      found = CoreStore::FindConversation(s, id);
      return OkStatus();
    }));
    if (!found || !std::binary_search(found->participants.begin(), found->participants.end(),
                                      caller.user_id)) {
      return NoSuchConversation();
    }
    return std::move(*found);
  }

  Result<Activity> AddParticipants(const Caller& caller, const std::string& id,
                                   const std::vector<std::string>& users) {
    SR_RETURN_IF_ERROR(CheckCaller(caller));
    if (users.empty()) return Invalid("no users to add");
    SR_ASSIGN_OR_RETURN(const std::vector<std::string> sorted,
                        CheckUsers(users, "users", config_.organization_of));
    SR_RETURN_IF_ERROR(CheckParticipant(caller, id));
    return Submit([&](Batch& b) -> Result<Activity> {
      SR_ASSIGN_OR_RETURN(StatePtr state, ParticipantState(b, caller, id));
      std::vector<std::string> added;
      for (const std::string& user : sorted) {
        if (!state->IsParticipant(user)) added.push_back(user);
      }
      if (added.empty()) {
        return Error(ErrorCode::kAlreadyExists, "every user named is a participant already");
      }
      if (state->participants->size() + added.size() > kMaxParticipants) {
        return Invalid("a conversation has at most " + std::to_string(kMaxParticipants) +
                       " participants");
      }
      for (const std::string& user : added) SR_RETURN_IF_ERROR(CheckRoomForOneMore(b, user));
      Activity a = NewActivity(b, id, caller, "add");
      a.object_users = added;
      CoreStore::InsertActivity(*b.s, a);
      for (const std::string& user : added) CoreStore::InsertMembership(*b.s, id, user, a.seq);
      std::vector<std::string> after = *state->participants;
      after.insert(after.end(), added.begin(), added.end());
      std::sort(after.begin(), after.end());
      auto participants = std::make_shared<const std::vector<std::string>>(std::move(after));
      ConversationState next = *state;
      next.participants = participants;
      b.changed[id] = std::make_shared<const ConversationState>(std::move(next));
      return Produce(b, std::move(a), participants);
    });
  }

  Result<Activity> RemoveParticipant(const Caller& caller, const std::string& id,
                                     const std::string& user) {
    SR_RETURN_IF_ERROR(CheckCaller(caller));
    SR_RETURN_IF_ERROR(internal::CheckUserId(user, "the user to remove"));
    SR_RETURN_IF_ERROR(CheckParticipant(caller, id));
    return Submit([&](Batch& b) -> Result<Activity> {
      SR_ASSIGN_OR_RETURN(StatePtr state, ParticipantState(b, caller, id));
      if (!state->IsParticipant(user)) {
        return Error(ErrorCode::kNotFound, "that user is not a participant");
      }
      if (state->participants->size() == 1) {
        return Error(ErrorCode::kFailedPrecondition,
                     "the last participant cannot leave the conversation");
      }
      Activity a = NewActivity(b, id, caller, user == caller.user_id ? "leave" : "remove");
      a.object_users = {user};
      CoreStore::InsertActivity(*b.s, a);
      CoreStore::EndMembership(*b.s, id, user, a.seq);
      std::vector<std::string> after;
      after.reserve(state->participants->size() - 1);
      for (const std::string& p : *state->participants) {
        if (p != user) after.push_back(p);
      }
      ConversationState next = *state;
      next.participants = std::make_shared<const std::vector<std::string>>(after);
      b.changed[id] = std::make_shared<const ConversationState>(std::move(next));
      // The removed user sees their removal too.
      after.insert(std::upper_bound(after.begin(), after.end(), user), user);
      return Produce(b, std::move(a),
                     std::make_shared<const std::vector<std::string>>(std::move(after)));
    });
  }

  Result<Activity> RotateKey(const Caller& caller, const std::string& id,
                             const std::string& key_uri) {
    SR_RETURN_IF_ERROR(CheckCaller(caller));
    SR_ASSIGN_OR_RETURN(const std::string cluster,
                        internal::CheckKmsUri(key_uri, "keys", "the key URL"));
    SR_RETURN_IF_ERROR(CheckParticipant(caller, id));
    return Submit([&](Batch& b) -> Result<Activity> {
      SR_ASSIGN_OR_RETURN(StatePtr state, ParticipantState(b, caller, id));
      if (cluster != state->kms_cluster) {
        return Invalid("the key must be on the conversation's KMS (" + state->kms_cluster + ")");
      }
      if (state->declared_keys->count(key_uri) != 0) {
        return Error(ErrorCode::kAlreadyExists,
                     "the conversation declared that key already; rotate to a new key");
      }
      if (state->declared_keys->size() >= kDeclaredKeysPerConversation) {
        return Invalid("a conversation declares at most " +
                       std::to_string(kDeclaredKeysPerConversation) + " keys");
      }
      Activity a = NewActivity(b, id, caller, "rotate");
      a.key_uri = key_uri;
      CoreStore::InsertActivity(*b.s, a);
      CoreStore::DeclareKey(*b.s, id, key_uri, a.seq);
      CoreStore::SetCurrentKey(*b.s, id, key_uri);
      ConversationState next = *state;
      next.current_key_uri = key_uri;
      auto keys = std::make_shared<std::unordered_set<std::string>>(*state->declared_keys);
      keys->insert(key_uri);
      next.declared_keys = std::move(keys);
      b.changed[id] = std::make_shared<const ConversationState>(std::move(next));
      return Produce(b, std::move(a), state->participants);
    });
  }

  Result<Activity> SetTitle(const Caller& caller, const std::string& id,
                            const std::string& encrypted_title) {
    SR_RETURN_IF_ERROR(CheckCaller(caller));
    SR_ASSIGN_OR_RETURN(const std::string kid, CheckTitle(encrypted_title));
    SR_RETURN_IF_ERROR(CheckParticipant(caller, id));
    return Submit([&](Batch& b) -> Result<Activity> {
      SR_ASSIGN_OR_RETURN(StatePtr state, ParticipantState(b, caller, id));
      if (!kid.empty()) SR_RETURN_IF_ERROR(CheckKid(*state, kid));
      Activity a = NewActivity(b, id, caller, "title");
      a.content = encrypted_title;
      a.key_uri = kid;
      CoreStore::InsertActivity(*b.s, a);
      CoreStore::SetTitle(*b.s, id, encrypted_title);
      return Produce(b, std::move(a), state->participants);
    });
  }

  Result<Activity> PostActivity(const Caller& caller, const std::string& id, const NewPost& post) {
    SR_RETURN_IF_ERROR(CheckCaller(caller));
    if (post.content.size() > kMaxContentBytes) {
      return Invalid("the content is larger than " + std::to_string(kMaxContentBytes) + " bytes");
    }
    SR_ASSIGN_OR_RETURN(const std::string kid, CheckContentJwe(post.content));
    if (post.file_ids.size() > kMaxFileIdsPerActivity) {
      return Invalid("an activity refers to at most " + std::to_string(kMaxFileIdsPerActivity) +
                     " files");
    }
    for (std::size_t i = 0; i < post.file_ids.size(); ++i) {
      if (!internal::IsUuid(post.file_ids[i])) return Invalid("a file id is not a file id");
      for (std::size_t j = 0; j < i; ++j) {
        if (post.file_ids[i] == post.file_ids[j]) return Invalid("a file is named twice");
      }
    }
    if (!post.client_activity_id.empty()) {
      SR_RETURN_IF_ERROR(internal::CheckClientActivityId(post.client_activity_id));
    }
    SR_RETURN_IF_ERROR(CheckParticipant(caller, id));
    return Submit([&](Batch& b) -> Result<Activity> {
      SR_ASSIGN_OR_RETURN(StatePtr state, ParticipantState(b, caller, id));
      if (!post.client_activity_id.empty() &&
          CoreStore::ClientIdUsed(*b.s, id, caller.user_id, post.client_activity_id)) {
        // A retry returns what the first attempt stored, even after a key rotation.
        // The batch's own earlier inserts are visible: it is one transaction.
        std::optional<Activity> stored =
            CoreStore::FindByClientId(*b.s, id, caller.user_id, post.client_activity_id);
        if (stored) {
          if (stored->content != post.content || stored->file_ids != post.file_ids) {
            return Error(ErrorCode::kAlreadyExists,
                         "the clientActivityId was used for a different activity");
          }
          return std::move(*stored);
        }
      }
      SR_RETURN_IF_ERROR(CheckKid(*state, kid));
      for (const std::string& file_id : post.file_ids) {
        if (!CoreStore::FindFile(*b.s, id, file_id)) {
          return Invalid("file " + file_id + " was not uploaded to this conversation");
        }
      }
      Activity a = NewActivity(b, id, caller, post.file_ids.empty() ? "post" : "share");
      a.content = post.content;
      a.key_uri = kid;
      a.file_ids = post.file_ids;
      a.client_activity_id = post.client_activity_id;
      CoreStore::InsertActivity(*b.s, a);
      return Produce(b, std::move(a), state->participants);
    });
  }

  Result<HistoryPage> History(const Caller& caller, const std::string& id,
                              const HistoryQuery& query) {
    SR_RETURN_IF_ERROR(CheckCaller(caller));
    SR_RETURN_IF_ERROR(CheckPageSize(query.limit));
    SR_RETURN_IF_ERROR(CheckParticipant(caller, id));
    return ReadHistory(id, query);
  }

  Result<std::vector<Conversation>> ComplianceConversations(const Caller& officer,
                                                            const std::string& user,
                                                            std::optional<std::int64_t> before_seq,
                                                            std::size_t limit) {
    SR_RETURN_IF_ERROR(CheckOfficer(officer, user));
    SR_RETURN_IF_ERROR(CheckPageSize(limit));
    std::vector<Conversation> out;
    SR_RETURN_IF_ERROR(ReadTransaction(db_, [&](Session& s) -> Status {
      out = CoreStore::ComplianceConversations(s, officer.org, user, before_seq.value_or(kNoSeq),
                                               limit);
      return OkStatus();
    }));
    return out;
  }

  Result<HistoryPage> ComplianceHistory(const Caller& officer, const std::string& user,
                                        const std::string& id, const HistoryQuery& query) {
    SR_RETURN_IF_ERROR(CheckOfficer(officer, user));
    SR_RETURN_IF_ERROR(CheckPageSize(query.limit));
    if (!internal::IsUuid(id)) return NoSuchConversation();
    bool visible = false;
    SR_RETURN_IF_ERROR(Read(db_, [&](Session& s) -> Status {
      visible = CoreStore::IsComplianceVisible(s, id, officer.org, user);
      return OkStatus();
    }));
    if (!visible) return NoSuchConversation();
    return ReadHistory(id, query);
  }

  // A compliance officer is listed for their token's organization; the user read is named.
  Status CheckOfficer(const Caller& officer, const std::string& user) const {
    SR_RETURN_IF_ERROR(CheckCaller(officer));
    SR_RETURN_IF_ERROR(internal::CheckUserId(user, "the user's id"));
    auto listed = config_.compliance_officers.find(officer.org);
    if (officer.org.empty() || listed == config_.compliance_officers.end() ||
        std::find(listed->second.begin(), listed->second.end(), officer.user_id) ==
            listed->second.end()) {
      return Error(ErrorCode::kPermissionDenied,
                   "the caller is not a compliance officer of their organization");
    }
    return OkStatus();
  }

  Result<HistoryPage> ReadHistory(const std::string& id, const HistoryQuery& query) {
    HistoryPage page;
    SR_RETURN_IF_ERROR(Read(db_, [&](Session& s) -> Status {
      page.items = CoreStore::History(s, id, query);
      return OkStatus();
    }));
    if (page.items.size() > query.limit) {
      page.more = true;
      if (query.after.has_value()) {
        page.items.pop_back();  // ascending from `after`: the extra one is the newest
      } else {
        page.items.erase(page.items.begin());  // descending from `before`: the oldest
      }
    }
    return page;
  }

  Result<Activity> GetActivity(const Caller& caller, const std::string& id,
                               const std::string& activity_id) {
    SR_RETURN_IF_ERROR(CheckCaller(caller));
    SR_RETURN_IF_ERROR(CheckParticipant(caller, id));
    const Error not_found(ErrorCode::kNotFound, "no such activity in this conversation");
    if (!internal::IsUuid(activity_id)) return not_found;
    std::optional<Activity> found;
    SR_RETURN_IF_ERROR(Read(db_, [&](Session& s) -> Status {
      found = CoreStore::FindActivity(s, id, activity_id);
      return OkStatus();
    }));
    if (!found) return not_found;
    return std::move(*found);
  }

  Result<std::vector<Activity>> EventsSince(const std::string& user_id, std::int64_t after,
                                            std::size_t limit) {
    SR_RETURN_IF_ERROR(internal::CheckUserId(user_id, "the user id"));
    if (limit == 0 || limit > kMaxEventsPage) {
      return Invalid("the page size must be 1 to " + std::to_string(kMaxEventsPage));
    }
    std::vector<Activity> out;
    SR_RETURN_IF_ERROR(Read(db_, [&](Session& s) -> Status {
      out = CoreStore::EventsSince(s, user_id, std::max<std::int64_t>(after, 0), limit);
      return OkStatus();
    }));
    return out;
  }

  Status CheckCanUpload(const Caller& caller, const std::string& id) {
    SR_RETURN_IF_ERROR(CheckCaller(caller));
    return CheckParticipant(caller, id);
  }

  Result<std::unique_ptr<Upload>> BeginUpload(const Caller& caller, const std::string& id) {
    SR_RETURN_IF_ERROR(CheckCanUpload(caller, id));
    const std::string file_id = internal::NewUuid();
    std::filesystem::path temp = files_dir_ / (file_id + kUploadSuffix);
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      return Error(ErrorCode::kUnavailable,
                   "cannot create an upload in " + files_dir_.string() + ": " + strerror(errno));
    }
    return std::unique_ptr<Upload>(std::make_unique<UploadImpl>(
        this, id, caller.user_id, file_id, std::move(temp), fd, config_.max_file_bytes));
  }

  Result<FileInfo> FinishUpload(std::unique_ptr<Upload> upload) {
    auto* u = dynamic_cast<UploadImpl*>(upload.get());
    if (u == nullptr || u->owner() != this) return Invalid("not an upload of this service");
    FileInfo info;
    info.id = u->file_id();
    info.conversation_id = u->conversation_id();
    info.uploader = u->uploader();
    info.size = u->size();
    SR_ASSIGN_OR_RETURN(info.sha256_hex, u->Seal());
    const std::filesystem::path blob = files_dir_ / info.id;
    if (::rename(u->temp().c_str(), blob.c_str()) != 0) {
      return Error(ErrorCode::kUnavailable,
                   std::string("cannot store the uploaded file: ") + strerror(errno));
    }
    u->Kept();
    auto remove_blob = [&] {
      std::error_code ignored;
      std::filesystem::remove(blob, ignored);
    };
    if (Status synced = SyncDirectory(files_dir_); !synced.ok()) {
      remove_blob();
      return synced.error();
    }
    Caller uploader{info.uploader, ""};
    Result<Activity> recorded = Submit([&](Batch& b) -> Result<Activity> {
      Result<StatePtr> state = ParticipantState(b, uploader, info.conversation_id);
      if (!state.ok()) return state.error();
      info.created_ms = b.now_ms;
      CoreStore::InsertFile(*b.s, info);
      return Activity{};
    });
    if (!recorded.ok()) {
      remove_blob();
      return recorded.error();
    }
    return info;
  }

  Result<std::pair<FileInfo, std::string>> OpenFile(const Caller& caller, const std::string& id,
                                                    const std::string& file_id) {
    SR_RETURN_IF_ERROR(CheckCaller(caller));
    SR_RETURN_IF_ERROR(CheckParticipant(caller, id));
    const Error not_found(ErrorCode::kNotFound, "no such file in this conversation");
    if (!internal::IsUuid(file_id)) return not_found;
    std::optional<FileInfo> found;
    SR_RETURN_IF_ERROR(Read(db_, [&](Session& s) -> Status {
      found = CoreStore::FindFile(s, id, file_id);
      return OkStatus();
    }));
    if (!found) return not_found;
    const std::filesystem::path blob = files_dir_ / file_id;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(blob, ec)) {
      return Error(ErrorCode::kDataLoss, "the stored blob of file " + file_id + " is missing");
    }
    return std::make_pair(std::move(*found), blob.string());
  }

  Status PutIndexTokens(const Caller& caller, const std::string& id, const std::string& activity_id,
                        const std::vector<std::string>& tokens) {
    SR_RETURN_IF_ERROR(CheckIndexer(caller));
    if (!internal::IsUuid(id)) return NoSuchConversation();
    const Error no_activity(ErrorCode::kNotFound, "no such activity in this conversation");
    if (!internal::IsUuid(activity_id)) return no_activity;
    if (tokens.size() > kMaxIndexTokensPerActivity) {
      return Invalid("at most " + std::to_string(kMaxIndexTokensPerActivity) +
                     " index tokens per activity");
    }
    for (const std::string& token : tokens) SR_RETURN_IF_ERROR(internal::CheckIndexToken(token));
    const std::set<std::string> unique(tokens.begin(), tokens.end());
    const std::vector<std::string> distinct(unique.begin(), unique.end());
    Result<Activity> put = Submit([&](Batch& b) -> Result<Activity> {
      if (!State(b, id)) return NoSuchConversation();
      std::optional<Activity> activity = CoreStore::FindActivity(*b.s, id, activity_id);
      if (!activity) return no_activity;
      CoreStore::InsertIndexTokens(*b.s, id, activity->seq, distinct);
      return Activity{};
    });
    if (!put.ok()) return put.error();
    return OkStatus();
  }

  Result<SearchPage> MatchTokens(const Caller& caller, const SearchQuery& query) {
    SR_RETURN_IF_ERROR(CheckIndexer(caller));
    if (query.conversation_ids.empty() || query.conversation_ids.size() > kMaxSearchConversations) {
      return Invalid("a search names 1 to " + std::to_string(kMaxSearchConversations) +
                     " conversations");
    }
    if (query.tokens.empty() || query.tokens.size() > kMaxSearchTokens) {
      return Invalid("a search has 1 to " + std::to_string(kMaxSearchTokens) + " tokens");
    }
    SR_RETURN_IF_ERROR(CheckPageSize(query.limit));
    for (const std::string& id : query.conversation_ids) {
      if (!internal::IsUuid(id)) return Invalid("a conversation id is not a conversation id");
    }
    for (const std::string& token : query.tokens) {
      SR_RETURN_IF_ERROR(internal::CheckIndexToken(token));
    }
    const std::set<std::string> ids(query.conversation_ids.begin(), query.conversation_ids.end());
    const std::set<std::string> tokens(query.tokens.begin(), query.tokens.end());
    SearchPage page;
    SR_RETURN_IF_ERROR(Read(db_, [&](Session& s) -> Status {
      page.items =
          CoreStore::MatchTokens(s, {ids.begin(), ids.end()}, {tokens.begin(), tokens.end()},
                                 query.before.value_or(kNoSeq), query.limit);
      return OkStatus();
    }));
    if (page.items.size() > query.limit) {
      page.items.pop_back();
      page.next_before = page.items.back().seq;
    }
    return page;
  }

 private:
  // --- checks -------------------------------------------------------------------------------

  Status CheckIndexer(const Caller& caller) const {
    if (config_.indexer_user_id.empty() || caller.user_id != config_.indexer_user_id ||
        caller.org != config_.indexer_org) {
      return Error(ErrorCode::kPermissionDenied, "only the indexer may use the search index");
    }
    return OkStatus();
  }

  // The committed state of a conversation (from the cache, or loaded into it), or null when
  // there is no such conversation.
  Result<StatePtr> ReadState(const std::string& id) {
    if (StatePtr state = cache_.Find(id)) return state;
    const std::uint64_t epoch = cache_.epoch();
    std::optional<ConversationState> loaded;
    SR_RETURN_IF_ERROR(ReadTransaction(db_, [&](Session& s) -> Status {
      loaded = CoreStore::LoadState(s, id);
      return OkStatus();
    }));
    if (!loaded) return StatePtr();
    auto state = std::make_shared<const ConversationState>(std::move(*loaded));
    cache_.FillIfUnchanged(id, state, epoch);
    return StatePtr(std::move(state));
  }

  // NOT_FOUND unless the caller is a participant now (as far as committed changes go; the writer
  // checks again against the batch).
  Status CheckParticipant(const Caller& caller, const std::string& id) {
    if (!internal::IsUuid(id)) return NoSuchConversation();
    SR_ASSIGN_OR_RETURN(StatePtr state, ReadState(id));
    if (!state || !state->IsParticipant(caller.user_id)) return NoSuchConversation();
    return OkStatus();
  }

  // --- the writer's side --------------------------------------------------------------------

  // The state as the batch sees it: changed by an earlier change of the batch, cached, or read
  // in the batch's transaction.
  StatePtr State(Batch& b, const std::string& id) {
    if (auto it = b.changed.find(id); it != b.changed.end()) return it->second;
    if (auto it = b.loaded.find(id); it != b.loaded.end()) return it->second;
    if (StatePtr cached = cache_.Find(id)) return cached;
    std::optional<ConversationState> loaded = CoreStore::LoadState(*b.s, id);
    if (!loaded) return nullptr;
    auto state = std::make_shared<const ConversationState>(std::move(*loaded));
    b.loaded.emplace(id, state);
    return state;
  }

  Result<StatePtr> ParticipantState(Batch& b, const Caller& caller, const std::string& id) {
    StatePtr state = State(b, id);
    if (!state || !state->IsParticipant(caller.user_id)) return NoSuchConversation();
    return state;
  }

  Status CheckRoomForOneMore(Batch& b, const std::string& user) {
    if (static_cast<std::uint64_t>(CoreStore::CountMemberships(*b.s, user)) >=
        config_.max_conversations_per_user) {
      return Error(ErrorCode::kResourceExhausted,
                   "a user is in the most conversations allowed (" +
                       std::to_string(config_.max_conversations_per_user) + ")");
    }
    return OkStatus();
  }

  // An activity of this batch: the next seq, a new id, the batch's time.
  static Activity NewActivity(Batch& b, const std::string& conversation_id, const Caller& caller,
                              std::string verb) {
    Activity a;
    a.seq = b.next_seq++;
    a.id = internal::NewUuid();
    a.conversation_id = conversation_id;
    a.actor = caller.user_id;
    a.verb = std::move(verb);
    a.published_ms = b.now_ms;
    return a;
  }

  static Activity Produce(Batch& b, Activity a,
                          std::shared_ptr<const std::vector<std::string>> recipients) {
    b.last_seq[a.conversation_id] = a.seq;
    b.produced.push_back({a, std::move(recipients)});
    return a;
  }

  Result<Activity> Submit(std::function<Result<Activity>(Batch&)> apply) {
    Op op;
    op.apply = std::move(apply);
    std::unique_lock lock(mutex_);
    if (stopping_) return Error(ErrorCode::kUnavailable, "the core is shutting down");
    if (queue_.size() >= kMaxQueue) {
      return Error(ErrorCode::kUnavailable, "the core is falling behind; retry later");
    }
    queue_.push_back(&op);
    work_.notify_one();
    done_.wait(lock, [&] { return op.done; });
    return std::move(*op.result);
  }

  void Run() {
    std::unique_lock lock(mutex_);
    auto last_compact = std::chrono::steady_clock::now();
    for (;;) {
      work_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, nothing left
      std::vector<Op*> ops;
      const std::size_t n = std::min(queue_.size(), kMaxBatch);
      ops.reserve(n);
      for (std::size_t i = 0; i < n; ++i) {
        ops.push_back(queue_.front());
        queue_.pop_front();
      }
      lock.unlock();
      CommitBatch(ops);
      lock.lock();
      for (Op* op : ops) op->done = true;  // the callers own the ops from here
      done_.notify_all();
      // Under constant load the write-ahead log never empties on its own.
      const auto now_time = std::chrono::steady_clock::now();
      if (now_time - last_compact >= kCompactInterval) {
        lock.unlock();
        (void)db_.CompactLog();  // if busy, the next turn tries again
        lock.lock();
        last_compact = now_time;
      }
    }
  }

  void CommitBatch(const std::vector<Op*>& ops) {
    Batch b;
    std::vector<std::optional<Result<Activity>>> results(ops.size());
    const Status committed = db_.InTransaction(
        [&](Session& s) -> Status {
          b = Batch();
          b.s = &s;
          b.next_seq = next_seq_;
          b.now_ms = clock_();
          for (std::size_t i = 0; i < ops.size(); ++i) results[i] = ops[i]->apply(b);
          for (const auto& [conversation_id, seq] : b.last_seq) {
            CoreStore::SetLastSeq(s, conversation_id, seq);
          }
          return OkStatus();
        },
        Database::Durability::kFull);
    if (!committed.ok()) {
      for (Op* op : ops) op->result = committed.error();
      return;
    }
    next_seq_ = b.next_seq;
    for (auto& [id, state] : b.changed) cache_.Publish(id, state, /*changed=*/true);
    for (auto& [id, state] : b.loaded) {
      if (b.changed.count(id) == 0) cache_.Publish(id, state, /*changed=*/false);
    }
    if (!b.produced.empty()) last_seq_.store(b.produced.back().activity.seq);
    ActivityListener listener;
    {
      std::lock_guard lock(listener_mutex_);
      listener = listener_;
    }
    if (listener && !b.produced.empty()) {
      std::vector<Committed> activities;
      activities.reserve(b.produced.size());
      for (const Produced& p : b.produced) activities.push_back({p.activity, *p.recipients});
      try {
        listener(activities);
      } catch (const std::exception&) {
        // A listener's failure must not stop the writer; the activities are committed and the
        // realtime stream replays them from the database (EventsSince).
      }
    }
    for (std::size_t i = 0; i < ops.size(); ++i) ops[i]->result = std::move(results[i]);
  }

  const CoreServiceConfig config_;
  const std::filesystem::path files_dir_;
  Database& db_;
  const Clock clock_;
  StateCache cache_;
  std::atomic<std::int64_t> last_seq_;

  std::mutex listener_mutex_;
  ActivityListener listener_;

  std::int64_t next_seq_;  // the writer's alone
  std::mutex mutex_;
  std::condition_variable work_;
  std::condition_variable done_;
  std::deque<Op*> queue_;
  bool stopping_ = false;
  std::thread writer_;  // last: starts once everything above is built
};

// --- CoreService ------------------------------------------------------------------------------

std::vector<Migration> CoreService::Migrations() { return CoreStore::Migrations(); }

Result<std::unique_ptr<CoreService>> CoreService::New(CoreServiceConfig config, Database& db,
                                                      Clock clock) {
  const std::size_t expected = Migrations().size();
  if (db.schema_version() != static_cast<int>(expected)) {
    return Error(ErrorCode::kFailedPrecondition, "the core's database is at schema version " +
                                                     std::to_string(db.schema_version()) +
                                                     ", not " + std::to_string(expected) +
                                                     ": open it with CoreService::Migrations()");
  }
  if (config.files_dir.empty()) return Invalid("the core needs a files directory");
  if (config.max_file_bytes == 0) return Invalid("the largest file size must be above zero");
  if (config.max_conversations_per_user == 0) {
    return Invalid("the conversations per user must be above zero");
  }
  if (config.indexer_user_id.empty() != config.indexer_org.empty()) {
    return Invalid("the indexer is named by a user id and an organization, both or neither");
  }
  if (!config.indexer_user_id.empty()) {
    SR_RETURN_IF_ERROR(internal::CheckUserId(config.indexer_user_id, "the indexer's user id"));
  }
  std::error_code ec;
  const std::filesystem::path files_dir(config.files_dir);
  if (!std::filesystem::is_directory(files_dir, ec)) {
    if (!std::filesystem::create_directories(files_dir, ec) || ec) {
      return Error(ErrorCode::kUnavailable,
                   "cannot create the files directory " + config.files_dir + ": " + ec.message());
    }
    std::filesystem::permissions(files_dir, std::filesystem::perms::owner_all, ec);
  }
  // What a previous run left in the files directory: uploads it did not finish (removed), and
  // blobs it renamed into place but did not record, a crash between the two (moved aside into
  // kUnrecordedDir, never deleted: a database restored from an older backup, or the wrong
  // database, must not cost the blobs). No client was answered 201 for either.
  std::int64_t last_seq = 0;
  CoreService::StartupCleanup cleanup;
  std::vector<std::filesystem::path> unfinished, unrecorded;
  SR_RETURN_IF_ERROR(db.WithSession([&](Session& s) -> Status {
    last_seq = CoreStore::MaxSeq(s);
    const std::size_t suffix = std::strlen(kUploadSuffix);
    std::vector<std::string> blobs;  // looked up in batches
    auto check = [&] {
      const std::set<std::string> recorded = CoreStore::RecordedFiles(s, blobs);
      for (const std::string& blob : blobs) {
        if (!recorded.count(blob)) unrecorded.push_back(files_dir / blob);
      }
      blobs.clear();
    };
    for (std::filesystem::directory_iterator it(files_dir, ec), end; !ec && it != end;
         it.increment(ec)) {
      std::string name = it->path().filename().string();
      std::error_code ignored;
      if (name.size() > suffix && name.compare(name.size() - suffix, suffix, kUploadSuffix) == 0) {
        unfinished.push_back(it->path());
      } else if (internal::IsUuid(name) && it->is_regular_file(ignored)) {
        blobs.push_back(std::move(name));
        if (blobs.size() == 4096) check();
      }
    }
    check();
    return OkStatus();
  }));
  if (ec) {
    return Error(ErrorCode::kUnavailable,
                 "cannot read the files directory " + config.files_dir + ": " + ec.message());
  }
  for (const std::filesystem::path& path : unfinished) {
    std::error_code ignored;
    if (std::filesystem::remove(path, ignored)) ++cleanup.unfinished_uploads;
  }
  if (!unrecorded.empty()) {
    const std::filesystem::path aside = files_dir / kUnrecordedDir;
    std::filesystem::create_directory(aside, ec);
    if (ec) {
      return Error(ErrorCode::kUnavailable,
                   "cannot create " + aside.string() + " for unrecorded blobs: " + ec.message());
    }
    for (const std::filesystem::path& path : unrecorded) {
      std::filesystem::rename(path, aside / path.filename(), ec);
      if (ec) {
        return Error(ErrorCode::kUnavailable,
                     "cannot move an unrecorded blob into " + aside.string() + ": " + ec.message());
      }
      ++cleanup.unrecorded_blobs;
    }
    SR_RETURN_IF_ERROR(SyncDirectory(files_dir));
  }
  if (!clock) clock = UnixNowMs;
  auto service = std::unique_ptr<CoreService>(
      new CoreService(std::make_unique<Impl>(std::move(config), db, std::move(clock), last_seq)));
  service->startup_cleanup_ = cleanup;
  return service;
}

CoreService::CoreService(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CoreService::~CoreService() = default;

void CoreService::SetActivityListener(ActivityListener listener) {
  impl_->SetActivityListener(std::move(listener));
}
Result<Conversation> CoreService::CreateConversation(const Caller& caller,
                                                     const NewConversation& request) {
  return impl_->CreateConversation(caller, request);
}
Result<std::vector<Conversation>> CoreService::ListConversations(
    const Caller& caller, std::optional<std::int64_t> before_seq, std::size_t limit) {
  return impl_->ListConversations(caller, before_seq, limit);
}
Result<Conversation> CoreService::GetConversation(const Caller& caller, const std::string& id) {
  return impl_->GetConversation(caller, id);
}
Result<Activity> CoreService::AddParticipants(const Caller& caller, const std::string& id,
                                              const std::vector<std::string>& users) {
  return impl_->AddParticipants(caller, id, users);
}
Result<Activity> CoreService::RemoveParticipant(const Caller& caller, const std::string& id,
                                                const std::string& user) {
  return impl_->RemoveParticipant(caller, id, user);
}
Result<Activity> CoreService::RotateKey(const Caller& caller, const std::string& id,
                                        const std::string& key_uri) {
  return impl_->RotateKey(caller, id, key_uri);
}
Result<Activity> CoreService::SetTitle(const Caller& caller, const std::string& id,
                                       const std::string& encrypted_title) {
  return impl_->SetTitle(caller, id, encrypted_title);
}
Result<Activity> CoreService::PostActivity(const Caller& caller, const std::string& id,
                                           const NewPost& post) {
  return impl_->PostActivity(caller, id, post);
}
Result<HistoryPage> CoreService::History(const Caller& caller, const std::string& id,
                                         const HistoryQuery& query) {
  return impl_->History(caller, id, query);
}
Result<Activity> CoreService::GetActivity(const Caller& caller, const std::string& id,
                                          const std::string& activity_id) {
  return impl_->GetActivity(caller, id, activity_id);
}
Result<std::vector<Conversation>> CoreService::ComplianceConversations(
    const Caller& officer, const std::string& user, std::optional<std::int64_t> before_seq,
    std::size_t limit) {
  return impl_->ComplianceConversations(officer, user, before_seq, limit);
}
Result<HistoryPage> CoreService::ComplianceHistory(const Caller& officer, const std::string& user,
                                                   const std::string& id,
                                                   const HistoryQuery& query) {
  return impl_->ComplianceHistory(officer, user, id, query);
}
Result<std::vector<Activity>> CoreService::EventsSince(const std::string& user_id,
                                                       std::int64_t after, std::size_t limit) {
  return impl_->EventsSince(user_id, after, limit);
}
std::int64_t CoreService::LastSeq() const { return impl_->LastSeq(); }
Status CoreService::CheckCanUpload(const Caller& caller, const std::string& id) {
  return impl_->CheckCanUpload(caller, id);
}
Result<std::unique_ptr<CoreService::Upload>> CoreService::BeginUpload(const Caller& caller,
                                                                      const std::string& id) {
  return impl_->BeginUpload(caller, id);
}
Result<FileInfo> CoreService::FinishUpload(std::unique_ptr<Upload> upload) {
  return impl_->FinishUpload(std::move(upload));
}
Result<std::pair<FileInfo, std::string>> CoreService::OpenFile(const Caller& caller,
                                                               const std::string& id,
                                                               const std::string& file_id) {
  return impl_->OpenFile(caller, id, file_id);
}
Status CoreService::PutIndexTokens(const Caller& caller, const std::string& id,
                                   const std::string& activity_id,
                                   const std::vector<std::string>& tokens) {
  return impl_->PutIndexTokens(caller, id, activity_id, tokens);
}
Result<SearchPage> CoreService::MatchTokens(const Caller& caller, const SearchQuery& query) {
  return impl_->MatchTokens(caller, query);
}

}  // namespace strongroom::core
