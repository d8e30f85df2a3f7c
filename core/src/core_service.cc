// CoreService: checks in the caller's thread what needs no stored state (shapes, sizes, the
// caller's membership from the state cache), then hands every change to the group-commit writer
// (group_commit_writer.h), whose batches check each change again against the conversation's state
// as the batch has left it. Reads run on pooled connections beside it (SQLite WAL). Encrypted
// blobs are the blob store's (blob_store.h), index tokens the index store's (index_store.h); the
// SQL is CoreStore's (core_store.h).
#include "strongroom/core/core_service.h"

#include <algorithm>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include "blob_store.h"
#include "commit_follower.h"
#include "core_store.h"
#include "group_commit_writer.h"
#include "index_postings.h"
#include "index_store.h"
#include "state_cache.h"
#include "strongroom/common/rfc3339.h"
#include "validation.h"

namespace strongroom::core {
namespace {

using internal::Batch;
using internal::BlobStore;
using internal::CheckPageSize;
using internal::CommitFollower;
using internal::ConversationState;
using internal::CoreStore;
using internal::GroupCommitWriter;
using internal::IndexPostings;
using internal::Invalid;
using internal::kNoSeq;
using internal::NoSuchActivity;
using internal::NoSuchConversation;
using internal::Read;
using internal::StatePtr;
using Session = Poco::Data::Session;

Status CheckCaller(const Caller& caller) {
  return internal::CheckUserId(caller.user_id, "the caller's user id");
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
    return Error(ErrorReason::kKeyRotationRequired,
                 "key rotation required: the conversation's current key is " +
                     state.current_key_uri + "; new content under " + kid + " is refused");
  }
  return Invalid("the content's kid is not a key this conversation declared");
}

// An upload of a participant to a conversation: the file store's pending blob, and where it goes.
class UploadImpl final : public CoreService::Upload {
 public:
  UploadImpl(const void* owner, std::string conversation_id, std::string uploader,
             std::unique_ptr<internal::BlobUpload> blob)
      : owner_(owner),
        conversation_id_(std::move(conversation_id)),
        uploader_(std::move(uploader)),
        blob_(std::move(blob)) {}

  Status Write(const char* data, std::size_t size) override { return blob_->Write(data, size); }
  std::uint64_t size() const override { return blob_->size(); }

  const void* owner() const { return owner_; }
  const std::string& conversation_id() const { return conversation_id_; }
  const std::string& uploader() const { return uploader_; }
  internal::BlobUpload& blob() { return *blob_; }

 private:
  const void* owner_;
  const std::string conversation_id_;
  const std::string uploader_;
  const std::unique_ptr<internal::BlobUpload> blob_;
};

}  // namespace

class CoreService::Impl {
 public:
  Impl(CoreServiceConfig config, Database& db, Clock clock, std::int64_t last_seq,
       std::unique_ptr<BlobStore> files)
      : config_(std::move(config)),
        db_(db),
        files_(std::move(files)),
        follower_(config_.cluster_poll.count() == 0
                      ? nullptr
                      : std::make_unique<CommitFollower>(
                            db, config_.cluster_poll, last_seq,
                            [this](const std::vector<internal::StoredCommit>& commits) {
                              Deliver(commits);
                            })),
        writer_(
            db, std::move(clock), cache_, last_seq,
            [this](const std::vector<internal::Produced>& produced) {
              // With cross-node delivery this node's commits reach the listener only through the
              // follower, in seq order with the other nodes' (never twice, never out of order).
              if (follower_) {
                follower_->Wake();
              } else {
                Report(produced);
              }
            },
            /*shared=*/follower_ != nullptr),
        index_(config_.indexer_user_id, config_.indexer_org, db, writer_) {}

  void SetActivityListener(ActivityListener listener) {
    std::lock_guard lock(listener_mutex_);
    listener_ = std::move(listener);
  }

  std::int64_t LastSeq() const { return writer_.LastSeq(); }

  Status CheckDatabase() { return db_.Ping(); }

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
      Activity a = b.NewActivity(c.id, caller, "create");
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
      state.created_by_org = caller.org;
      state.participants = participants;
      state.declared_keys = std::make_shared<const std::unordered_set<std::string>>(
          std::unordered_set<std::string>{request.key_uri});
      b.changed[c.id] = std::make_shared<const ConversationState>(std::move(state));
      return b.Produce(std::move(a), participants);
    };
    Result<Activity> created = writer_.Submit(apply);
    if (!created.ok()) return created.error();
    return c;
  }

  Result<std::vector<Conversation>> ListConversations(const Caller& caller,
                                                      std::optional<std::int64_t> before_seq,
                                                      std::size_t limit) {
    SR_RETURN_IF_ERROR(CheckCaller(caller));
    SR_RETURN_IF_ERROR(CheckPageSize(limit));
    std::vector<Conversation> out;
    SR_RETURN_IF_ERROR(db_.InReadTransaction([&](Session& s) -> Status {
      out = CoreStore::ListConversations(s, caller.user_id, before_seq.value_or(kNoSeq), limit);
      return OkStatus();
    }));
    return out;
  }

  Result<Conversation> GetConversation(const Caller& caller, const std::string& id) {
    SR_RETURN_IF_ERROR(CheckCaller(caller));
    if (!internal::IsUuid(id)) return NoSuchConversation();
    std::optional<Conversation> found;
    SR_RETURN_IF_ERROR(db_.InReadTransaction([&](Session& s) -> Status {
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
    return writer_.Submit([&](Batch& b) -> Result<Activity> {
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
      Activity a = b.NewActivity(id, caller, "add");
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
      return b.Produce(std::move(a), participants);
    });
  }

  Result<Activity> RemoveParticipant(const Caller& caller, const std::string& id,
                                     const std::string& user) {
    SR_RETURN_IF_ERROR(CheckCaller(caller));
    SR_RETURN_IF_ERROR(internal::CheckUserId(user, "the user to remove"));
    SR_RETURN_IF_ERROR(CheckParticipant(caller, id));
    return writer_.Submit([&](Batch& b) -> Result<Activity> {
      SR_ASSIGN_OR_RETURN(StatePtr state, ParticipantState(b, caller, id));
      if (!state->IsParticipant(user)) {
        return Error(ErrorCode::kNotFound, "that user is not a participant");
      }
      if (state->participants->size() == 1) {
        return Error(ErrorCode::kFailedPrecondition,
                     "the last participant cannot leave the conversation");
      }
      Activity a = b.NewActivity(id, caller, user == caller.user_id ? "leave" : "remove");
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
      return b.Produce(std::move(a),
                       std::make_shared<const std::vector<std::string>>(std::move(after)));
    });
  }

  Result<Activity> RotateKey(const Caller& caller, const std::string& id,
                             const std::string& key_uri) {
    SR_RETURN_IF_ERROR(CheckCaller(caller));
    SR_ASSIGN_OR_RETURN(const std::string cluster,
                        internal::CheckKmsUri(key_uri, "keys", "the key URL"));
    SR_RETURN_IF_ERROR(CheckParticipant(caller, id));
    return writer_.Submit([&](Batch& b) -> Result<Activity> {
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
      Activity a = b.NewActivity(id, caller, "rotate");
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
      return b.Produce(std::move(a), state->participants);
    });
  }

  Result<Activity> SetTitle(const Caller& caller, const std::string& id,
                            const std::string& encrypted_title) {
    SR_RETURN_IF_ERROR(CheckCaller(caller));
    SR_ASSIGN_OR_RETURN(const std::string kid, CheckTitle(encrypted_title));
    SR_RETURN_IF_ERROR(CheckParticipant(caller, id));
    return writer_.Submit([&](Batch& b) -> Result<Activity> {
      SR_ASSIGN_OR_RETURN(StatePtr state, ParticipantState(b, caller, id));
      if (!kid.empty()) SR_RETURN_IF_ERROR(CheckKid(*state, kid));
      Activity a = b.NewActivity(id, caller, "title");
      a.content = encrypted_title;
      a.key_uri = kid;
      CoreStore::InsertActivity(*b.s, a);
      CoreStore::SetTitle(*b.s, id, encrypted_title);
      return b.Produce(std::move(a), state->participants);
    });
  }

  Result<Activity> PostActivity(const Caller& caller, const std::string& id, const NewPost& post) {
    SR_RETURN_IF_ERROR(CheckCaller(caller));
    SR_ASSIGN_OR_RETURN(const std::string kid, CheckContent(post.content));
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
    return writer_.Submit(
        [&](Batch& b) -> Result<Activity> {
          SR_ASSIGN_OR_RETURN(StatePtr state, ParticipantState(b, caller, id));
          // A retry returns what the first attempt stored, even after a key rotation; the batch's
          // own earlier posts count (it is one transaction). A first attempt is told apart by its
          // insert alone, and a retry that would now fail the checks by a lookup.
          auto answer_retry = [&](const Activity& stored) -> Result<Activity> {
            // An edited or retracted message no longer holds what was posted: a retry gets it as
            // it is now.
            const bool changed_since = stored.edited_ms != 0 || stored.retracted_ms != 0;
            if (!changed_since &&
                (stored.content != post.content || stored.file_ids != post.file_ids)) {
              return Error(ErrorCode::kAlreadyExists,
                           "the clientActivityId was used for a different activity");
            }
            return stored;
          };
          // A retry of a post this batch holds back (Batch::Defer); one of an earlier batch is
          // found when the batch's posts are written, and the batch then runs again with each
          // post on its own.
          if (const Activity* earlier =
                  b.DeferredPost(id, caller.user_id, post.client_activity_id)) {
            return answer_retry(*earlier);
          }
          auto retried = [&]() -> std::optional<Result<Activity>> {
            if (post.client_activity_id.empty()) return std::nullopt;
            std::optional<Activity> stored =
                CoreStore::FindByClientId(*b.s, id, caller.user_id, post.client_activity_id);
            if (!stored) return std::nullopt;
            return answer_retry(*stored);
          };
          Status valid = CheckKid(*state, kid);
          for (std::size_t i = 0; valid.ok() && i < post.file_ids.size(); ++i) {
            if (!CoreStore::FindFile(*b.s, id, post.file_ids[i])) {
              valid =
                  Invalid("file " + post.file_ids[i] + " was not uploaded to this conversation");
            }
          }
          if (!valid.ok()) {
            if (std::optional<Result<Activity>> retry = retried()) return std::move(*retry);
            return valid.error();
          }
          Activity a = b.NewActivity(id, caller, post.file_ids.empty() ? "post" : "share");
          a.content = post.content;
          a.key_uri = kid;
          a.file_ids = post.file_ids;
          a.client_activity_id = post.client_activity_id;
          if (b.defer_posts) {
            b.Defer(a);
          } else if (!CoreStore::InsertActivityOnce(*b.s, a)) {
            b.Unnumber(a);
            if (std::optional<Result<Activity>> retry = retried()) return std::move(*retry);
            return Error(ErrorCode::kInternal, "a post's clientActivityId was used, yet not found");
          }
          return b.Produce(std::move(a), state->participants);
        },
        /*post=*/true);
  }

  Result<Activity> EditActivity(const Caller& caller, const std::string& id,
                                const std::string& activity_id, const std::string& content) {
    SR_RETURN_IF_ERROR(CheckCaller(caller));
    SR_ASSIGN_OR_RETURN(const std::string kid, CheckContent(content));
    SR_RETURN_IF_ERROR(CheckParticipant(caller, id));
    if (!internal::IsUuid(activity_id)) return NoSuchActivity();
    return writer_.Submit([&](Batch& b) -> Result<Activity> {
      SR_ASSIGN_OR_RETURN(StatePtr state, ParticipantState(b, caller, id));
      SR_ASSIGN_OR_RETURN(Activity target, AuthorsMessage(b, caller, id, activity_id, "edit"));
      if (target.verb != "post") {
        return Invalid("a share cannot be edited: retract it and share the file again");
      }
      if (target.retracted_ms != 0) {
        return Error(ErrorCode::kFailedPrecondition, "the message was retracted");
      }
      if (target.content == content) {
        // A retried edit: the message has this content already (a JWE's IV is never reused).
        std::optional<Activity> latest = CoreStore::LatestOfTarget(*b.s, target.seq, "edit");
        return latest ? std::move(*latest) : target;
      }
      SR_RETURN_IF_ERROR(CheckKid(*state, kid));
      Activity a = b.NewActivity(id, caller, "edit");
      a.content = content;
      a.key_uri = kid;
      a.target_id = target.id;
      a.target_seq = target.seq;
      // The old text goes from every row that held it and from the index, in this transaction.
      CoreStore::ClearEdits(*b.s, target.seq);
      CoreStore::ReplaceContent(*b.s, target.seq, content, kid, a.published_ms);
      IndexPostings::Remove(*b.s, id, target.seq);
      CoreStore::InsertActivity(*b.s, a);
      b.scrub = true;
      return b.Produce(std::move(a), state->participants);
    });
  }

  Result<Activity> RetractActivity(const Caller& caller, const std::string& id,
                                   const std::string& activity_id) {
    SR_RETURN_IF_ERROR(CheckCaller(caller));
    SR_RETURN_IF_ERROR(CheckParticipant(caller, id));
    if (!internal::IsUuid(activity_id)) return NoSuchActivity();
    return writer_.Submit([&](Batch& b) -> Result<Activity> {
      SR_ASSIGN_OR_RETURN(StatePtr state, ParticipantState(b, caller, id));
      SR_ASSIGN_OR_RETURN(Activity target, AuthorsMessage(b, caller, id, activity_id, "retract"));
      if (target.retracted_ms != 0) {
        // Retracting again changes nothing: the retraction that did it.
        std::optional<Activity> done = CoreStore::LatestOfTarget(*b.s, target.seq, "retract");
        if (done) return std::move(*done);
        return Error(ErrorCode::kInternal, "a retracted message without its retraction");
      }
      Activity a = b.NewActivity(id, caller, "retract");
      a.target_id = target.id;
      a.target_seq = target.seq;
      CoreStore::ClearEdits(*b.s, target.seq);
      CoreStore::Retract(*b.s, target.seq, a.published_ms);
      IndexPostings::Remove(*b.s, id, target.seq);
      CoreStore::InsertActivity(*b.s, a);
      b.scrub = true;
      return b.Produce(std::move(a), state->participants);
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
    SR_RETURN_IF_ERROR(db_.InReadTransaction([&](Session& s) -> Status {
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
    const Error not_found = NoSuchActivity();
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

  bool IsIndexer(const Caller& caller) const { return index_.CheckIndexer(caller).ok(); }

  Result<std::vector<Activity>> IndexerEventsSince(const Caller& caller, std::int64_t after,
                                                   std::size_t limit) {
    SR_RETURN_IF_ERROR(index_.CheckIndexer(caller));
    if (limit == 0 || limit > kMaxEventsPage) {
      return Invalid("the page size must be 1 to " + std::to_string(kMaxEventsPage));
    }
    std::vector<Activity> out;
    SR_RETURN_IF_ERROR(Read(db_, [&](Session& s) -> Status {
      out = CoreStore::OrganizationEventsSince(s, index_.indexer_org(),
                                               std::max<std::int64_t>(after, 0), limit);
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
    SR_ASSIGN_OR_RETURN(std::unique_ptr<internal::BlobUpload> blob, files_->Begin());
    return std::unique_ptr<Upload>(
        std::make_unique<UploadImpl>(this, id, caller.user_id, std::move(blob)));
  }

  Result<FileInfo> FinishUpload(std::unique_ptr<Upload> upload) {
    auto* u = dynamic_cast<UploadImpl*>(upload.get());
    if (u == nullptr || u->owner() != this) return Invalid("not an upload of this service");
    FileInfo info;
    info.id = u->blob().id();
    info.conversation_id = u->conversation_id();
    info.uploader = u->uploader();
    info.size = u->size();
    SR_ASSIGN_OR_RETURN(info.sha256_hex, u->blob().Keep());
    Caller uploader{info.uploader, ""};
    Result<Activity> recorded = writer_.Submit([&](Batch& b) -> Result<Activity> {
      Result<StatePtr> state = ParticipantState(b, uploader, info.conversation_id);
      if (!state.ok()) return state.error();
      info.created_ms = b.now_ms;
      CoreStore::InsertFile(*b.s, info);
      return Activity{};
    });
    if (!recorded.ok()) {
      files_->Remove(info.id);
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
    SR_ASSIGN_OR_RETURN(std::string path, files_->PathOf(file_id));
    return std::make_pair(std::move(*found), std::move(path));
  }

  Status PutIndexTokens(const Caller& caller, const std::string& id, const std::string& activity_id,
                        const std::vector<std::string>& tokens) {
    return index_.PutIndexTokens(caller, id, activity_id, tokens);
  }

  Result<SearchPage> MatchTokens(const Caller& caller, const SearchQuery& query) {
    return index_.MatchTokens(caller, query);
  }

  Status PutIndexTokenSets(const Caller& caller, const std::vector<IndexTokenSet>& sets) {
    return index_.PutIndexTokenSets(caller, sets);
  }

 private:
  // --- checks -------------------------------------------------------------------------------

  // The committed state of a conversation (from the cache, or loaded into it), or null when
  // there is no such conversation.
  Result<StatePtr> ReadState(const std::string& id) {
    if (StatePtr state = cache_.Find(id)) return state;
    const std::uint64_t epoch = cache_.epoch();
    SR_ASSIGN_OR_RETURN(StatePtr state, LoadState(id));
    if (state) cache_.FillIfUnchanged(id, state, epoch);
    return state;
  }

  // The conversation's state as the database holds it now (null when there is no such
  // conversation), bypassing the cache.
  Result<StatePtr> LoadState(const std::string& id) {
    std::optional<ConversationState> loaded;
    SR_RETURN_IF_ERROR(db_.InReadTransaction([&](Session& s) -> Status {
      loaded = CoreStore::LoadState(s, id);
      return OkStatus();
    }));
    if (!loaded) return StatePtr();
    return StatePtr(std::make_shared<const ConversationState>(std::move(*loaded)));
  }

  // A message's content (a post's, an edit's): at most kMaxContentBytes, a JWE; returns its kid.
  static Result<std::string> CheckContent(const std::string& content) {
    if (content.size() > kMaxContentBytes) {
      return Invalid("the content is larger than " + std::to_string(kMaxContentBytes) + " bytes");
    }
    return CheckContentJwe(content);
  }

  // The message (post or share) `activity_id` of the conversation, which `caller` wrote and may
  // therefore `change` ("edit", "retract").
  static Result<Activity> AuthorsMessage(Batch& b, const Caller& caller, const std::string& id,
                                         const std::string& activity_id,
                                         const std::string& change) {
    std::optional<Activity> target = CoreStore::FindActivity(*b.s, id, activity_id);
    if (!target) return NoSuchActivity();
    if (target->verb != "post" && target->verb != "share") {
      return Invalid("only a message (a post or a share) can be " +
                     std::string(change == "edit" ? "edited" : "retracted") + ", not a \"" +
                     target->verb + "\" activity");
    }
    if (target->actor != caller.user_id) {
      return Error(ErrorCode::kPermissionDenied,
                   "only the author of a message may " + change + " it");
    }
    return std::move(*target);
  }

  // NOT_FOUND unless the caller is a participant now (as far as committed changes go; the writer
  // checks again against the batch). With other nodes on the database the cached state may miss
  // their latest changes: a refusal is checked again against the database, so a user another node
  // just added is not refused here (one the other node removed is refused by the writer, whose
  // batch forgets what the other nodes changed).
  Status CheckParticipant(const Caller& caller, const std::string& id) {
    if (!internal::IsUuid(id)) return NoSuchConversation();
    SR_ASSIGN_OR_RETURN(StatePtr state, ReadState(id));
    if (state && !state->IsParticipant(caller.user_id) && follower_) {
      SR_ASSIGN_OR_RETURN(state, LoadState(id));
    }
    if (!state || !state->IsParticipant(caller.user_id)) return NoSuchConversation();
    return OkStatus();
  }

  // --- inside the writer's batches ----------------------------------------------------------

  Result<StatePtr> ParticipantState(Batch& b, const Caller& caller, const std::string& id) {
    StatePtr state = b.State(id);
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

  // The writer's report of a commit: the listener gets its activities and their recipients.
  void Report(const std::vector<internal::Produced>& produced) {
    std::vector<Committed> activities;
    activities.reserve(produced.size());
    for (const internal::Produced& p : produced) {
      activities.push_back({p.activity, *p.recipients, p.conversation_org});
    }
    CallListener(activities);
  }

  // The follower's page of every node's commits, read back from the database.
  void Deliver(const std::vector<internal::StoredCommit>& commits) {
    std::vector<Committed> activities;
    activities.reserve(commits.size());
    for (const internal::StoredCommit& c : commits) {
      activities.push_back({c.activity, c.recipients, c.conversation_org});
    }
    CallListener(activities);
  }

  // Under the listener's mutex, so that SetActivityListener returns only once a call of the
  // previous listener has ended (its hub may be destroyed next).
  void CallListener(const std::vector<Committed>& activities) {
    std::lock_guard lock(listener_mutex_);
    if (!listener_) return;
    try {
      listener_(activities);
    } catch (const std::exception&) {
      // A listener's failure must not stop the writer or the follower; the activities are
      // committed and the realtime stream replays them from the database (EventsSince).
    }
  }

  const CoreServiceConfig config_;
  Database& db_;
  const std::unique_ptr<const BlobStore> files_;
  internal::StateCache cache_;
  std::mutex listener_mutex_;
  ActivityListener listener_;
  // With cluster_poll: publishes every node's commits. Before the writer, which wakes it, so that
  // it outlives the writer's last commit.
  const std::unique_ptr<CommitFollower> follower_;
  GroupCommitWriter writer_;  // after what its batches and reports use
  internal::IndexStore index_;
};

// --- CoreService ------------------------------------------------------------------------------

std::vector<Migration> CoreService::Migrations() {
  return CoreStore::Migrations(Database::Engine::kSqlite);
}
std::vector<Migration> CoreService::PostgresMigrations() {
  return CoreStore::Migrations(Database::Engine::kPostgres);
}

Result<std::unique_ptr<CoreService>> CoreService::New(CoreServiceConfig config, Database& db,
                                                      Clock clock) {
  const std::size_t expected = Migrations().size();
  if (db.schema_version() != static_cast<int>(expected)) {
    return Error(ErrorCode::kFailedPrecondition, "the core's database is at schema version " +
                                                     std::to_string(db.schema_version()) +
                                                     ", not " + std::to_string(expected) +
                                                     ": open it with CoreService::Migrations() "
                                                     "(PostgresMigrations() on PostgreSQL)");
  }
  if (config.files_dir.empty()) return Invalid("the core needs a files directory");
  if (config.max_file_bytes == 0) return Invalid("the largest file size must be above zero");
  if (config.max_conversations_per_user == 0) {
    return Invalid("the conversations per user must be above zero");
  }
  if (config.cluster_poll.count() != 0 &&
      (config.cluster_poll < kMinClusterPoll || config.cluster_poll > kMaxClusterPoll)) {
    return Invalid("the cluster poll interval must be 0 (one node) or " +
                   std::to_string(kMinClusterPoll.count()) + " to " +
                   std::to_string(kMaxClusterPoll.count()) + " ms");
  }
  if (config.indexer_user_id.empty() != config.indexer_org.empty()) {
    return Invalid("the indexer is named by a user id and an organization, both or neither");
  }
  if (!config.indexer_user_id.empty()) {
    SR_RETURN_IF_ERROR(internal::CheckUserId(config.indexer_user_id, "the indexer's user id"));
  }
  SR_ASSIGN_OR_RETURN(std::unique_ptr<BlobStore> files,
                      internal::OpenBlobStore(config.files_dir, config.max_file_bytes));
  // What earlier runs left in the blob store (see blob_store.h). No client was answered
  // 201 for any of it.
  std::int64_t last_seq = 0;
  BlobStore::Leftovers leftovers;
  SR_RETURN_IF_ERROR(db.WithSession([&](Session& s) -> Status {
    last_seq = CoreStore::MaxSeq(s);
    Result<BlobStore::Leftovers> found = files->FindLeftovers(
        [&](const std::vector<std::string>& ids) { return CoreStore::RecordedFiles(s, ids); });
    if (!found.ok()) return found.error();
    leftovers = std::move(*found);
    return OkStatus();
  }));
  SR_ASSIGN_OR_RETURN(const BlobStore::Cleaned cleaned, files->CleanUp(leftovers));
  if (!clock) clock = UnixNowMs;
  auto service = std::unique_ptr<CoreService>(new CoreService(
      std::make_unique<Impl>(std::move(config), db, std::move(clock), last_seq, std::move(files))));
  service->startup_cleanup_ = {cleaned.unfinished_uploads, cleaned.unrecorded_blobs};
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
Result<Activity> CoreService::EditActivity(const Caller& caller, const std::string& id,
                                           const std::string& activity_id,
                                           const std::string& content) {
  return impl_->EditActivity(caller, id, activity_id, content);
}
Result<Activity> CoreService::RetractActivity(const Caller& caller, const std::string& id,
                                              const std::string& activity_id) {
  return impl_->RetractActivity(caller, id, activity_id);
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
Status CoreService::CheckDatabase() { return impl_->CheckDatabase(); }
bool CoreService::IsIndexer(const Caller& caller) const { return impl_->IsIndexer(caller); }
Result<std::vector<Activity>> CoreService::IndexerEventsSince(const Caller& caller,
                                                              std::int64_t after,
                                                              std::size_t limit) {
  return impl_->IndexerEventsSince(caller, after, limit);
}
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
Status CoreService::PutIndexTokenSets(const Caller& caller,
                                      const std::vector<IndexTokenSet>& sets) {
  return impl_->PutIndexTokenSets(caller, sets);
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
