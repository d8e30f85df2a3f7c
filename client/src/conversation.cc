#include "strongroom/client/conversation.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "strongroom/common/jose/base64url.h"

namespace strongroom::client {
namespace {

namespace fs = std::filesystem;

// A fresh clientActivityId: 128 random bits, base64url (22 characters of [A-Za-z0-9_-]).
std::string NewClientActivityId() {
  SecretBytes random = SecretBytes::Random(16);
  return jose::Base64UrlEncode(random.view());
}

bool IsRotationRequired(const Error& error) {
  return error.reason() == ErrorReason::kKeyRotationRequired;
}

// The core's 409 when the KMS did not take an embedded message ("nothing was changed").
bool KmsRefusedEmbedded(const Error& error) {
  return error.native_code() == 409 && CoreErrorCode(error) == "failed_precondition" &&
         error.message().find("embedded") != std::string::npos;
}

// What the KMS answered to a sealed create /resources: created, under the URI we chose.
Status CheckResource(const Result<Poco::JSON::Object::Ptr>& answer, const std::string& uri) {
  if (!answer.ok()) return answer.error();
  Poco::JSON::Object::Ptr resource = (*answer)->getObject("resource");
  Result<KmsResource> parsed =
      resource ? ParseKmsResource(*resource)
               : Result<KmsResource>(Error(ErrorCode::kInvalidArgument, "no resource"));
  if (!parsed.ok()) return parsed.error();
  if (parsed->uri != uri) {
    return Error(ErrorCode::kInvalidArgument, "the KMS created another resource than named");
  }
  return OkStatus();
}

Result<KmsKey> KeyFromAnswer(const Poco::JSON::Object& answer) {
  Poco::JSON::Object::Ptr key = answer.getObject("key");
  if (!key) return Error(ErrorCode::kInvalidArgument, "the KMS's answer has no \"key\"");
  return ParseKmsKey(*key);
}

}  // namespace

Result<std::unique_ptr<Conversations>> Conversations::New(CoreClient& core, KmsContext& kms,
                                                          ConversationsOptions options) {
  if (options.user_id.empty()) {
    return Error(ErrorCode::kInvalidArgument, "the SDK needs the caller's user id");
  }
  return std::unique_ptr<Conversations>(new Conversations(core, kms, std::move(options)));
}

Conversations::Conversations(CoreClient& core, KmsContext& kms, ConversationsOptions options)
    : core_(core), kms_(kms), options_(std::move(options)), cache_(options_.cache) {
  pool_ = std::make_unique<KeyPool>([&kms](std::size_t count) { return kms.CreateKeys(count); },
                                    options_.pool);
}

Conversations::~Conversations() {
  pool_.reset();  // stops its refill thread before anything it uses goes
}

void Conversations::Remember(const Conversation& conversation) {
  std::lock_guard<std::mutex> lock(mutex_);
  conversations_[conversation.id] = conversation;
}

Result<Conversation> Conversations::Get(const std::string& conversation_id, bool refresh) {
  if (!refresh) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = conversations_.find(conversation_id);
    if (found != conversations_.end()) return found->second;
  }
  SR_ASSIGN_OR_RETURN(Conversation conversation, core_.GetConversation(conversation_id));
  Remember(conversation);
  return conversation;
}

Result<std::pair<Change, SealedRequest>> Conversations::Embedded(
    const std::function<Result<SealedRequest>()>& seal,
    const std::function<Result<Change>(const std::string& kms_message)>& send) {
  for (int attempt = 0;; ++attempt) {
    SR_ASSIGN_OR_RETURN(SealedRequest sealed, seal());
    Result<Change> change = send(sealed.message);
    if (change.ok()) return std::make_pair(std::move(change).value(), std::move(sealed));
    if (attempt > 0 || !KmsRefusedEmbedded(change.error())) return change.error();
    kms_.Renegotiate();
  }
}

Result<Conversation> Conversations::Create(std::string_view title,
                                           const std::vector<std::string>& members) {
  std::vector<std::string> others;
  std::set<std::string> seen = {options_.user_id};
  for (const std::string& member : members) {
    if (member.empty()) return Error(ErrorCode::kInvalidArgument, "a member's user id is empty");
    if (seen.insert(member).second) others.push_back(member);
  }
  SR_ASSIGN_OR_RETURN(KmsKey key, pool_->Take());
  NewConversation request;
  request.kms_resource_uri = kms_.NewResourceUri();
  request.key_uri = key.uri;
  request.participants = others;
  if (!title.empty()) {
    SR_ASSIGN_OR_RETURN(request.encrypted_title, EncryptText(key.key, key.uri, title));
  }
  // The resource is created by the KMS from the sealed request the core relays first; its URI is
  // ours, so the core's conversation carries it (docs/api/core.md).
  std::optional<CreatedConversation> created;
  std::optional<SealedRequest> sealed;
  for (int attempt = 0; !created; ++attempt) {
    SR_ASSIGN_OR_RETURN(sealed,
                        kms_.SealCreateResource(others, {key.uri}, request.kms_resource_uri));
    request.kms_message = sealed->message;
    Result<CreatedConversation> made = core_.CreateConversation(request);
    if (made.ok()) {
      created = std::move(made).value();
    } else if (attempt > 0 || !KmsRefusedEmbedded(made.error())) {
      return made.error();
    } else {
      kms_.Renegotiate();
    }
  }
  Status resource_made = created->kms_answer
                             ? Status(CheckResource(kms_.OpenAnswer(*sealed, *created->kms_answer),
                                                    request.kms_resource_uri))
                             : Status(Error(ErrorCode::kInvalidArgument, "no KMS answer"));
  if (!resource_made.ok() && resource_made.error().code() == ErrorCode::kAlreadyExists) {
    // A create the relay lost the answer to and the core sent again: the resource may be ours.
    Result<KmsResource> existing = kms_.RetrieveResource(request.kms_resource_uri);
    if (existing.ok() && std::find(existing->key_uris.begin(), existing->key_uris.end(), key.uri) !=
                             existing->key_uris.end()) {
      resource_made = OkStatus();
    }
  }
  if (!resource_made.ok() && resource_made.error().code() == ErrorCode::kUnavailable) {
    // The KMS was busy (a sealed 503): nothing was created there, so once more directly.
    Result<KmsResource> direct = kms_.CreateResource(others, {key.uri}, request.kms_resource_uri);
    resource_made = direct.ok() ? OkStatus() : Status(direct.error());
  }
  if (!resource_made.ok()) {
    return Error(resource_made.error().code(),
                 "conversation " + created->conversation.id +
                     " was created at the core, but the KMS did not create its resource: " +
                     resource_made.error().message());
  }
  // The key is bound now; the KMS tells its stop-encrypting date on retrieval.
  Result<KmsKey> bound = kms_.RetrieveKey(key.uri);
  if (bound.ok()) {
    (void)cache_.Put(*bound);
  } else {
    key.resource_uri = request.kms_resource_uri;
    (void)cache_.Put(key);
  }
  Remember(created->conversation);
  return created->conversation;
}

Status Conversations::CheckBinding(const KmsKey& key, const std::string& resource_uri) {
  if (key.resource_uri != resource_uri) {
    return Error(ErrorCode::kPermissionDenied,
                 "key " + key.uri + " is not bound to the conversation's resource " + resource_uri);
  }
  return OkStatus();
}

Result<SecretBytes> Conversations::DecryptionKey(const std::string& key_uri,
                                                 const std::string& resource_uri) {
  std::optional<KmsKey> key = cache_.ForDecryption(key_uri);
  if (!key) {
    SR_ASSIGN_OR_RETURN(KmsKey retrieved, kms_.RetrieveKey(key_uri));
    if (retrieved.bound()) (void)cache_.Put(retrieved);
    key = std::move(retrieved);
  }
  SR_RETURN_IF_ERROR(CheckBinding(*key, resource_uri));
  return std::move(key->key);
}

Result<KmsKey> Conversations::EncryptionKey(Conversation& conversation) {
  Result<KmsKey> cached = cache_.ForEncryption(conversation.current_key_uri);
  if (cached.ok()) {
    SR_RETURN_IF_ERROR(CheckBinding(*cached, conversation.kms_resource_uri));
    return cached;
  }
  if (cached.error().code() == ErrorCode::kNotFound) {
    SR_ASSIGN_OR_RETURN(KmsKey key, kms_.RetrieveKey(conversation.current_key_uri));
    if (key.bound()) (void)cache_.Put(key);
    // Content goes only under a key of this conversation's resource, whatever the core says.
    SR_RETURN_IF_ERROR(CheckBinding(key, conversation.kms_resource_uri));
    if (cache_.MayEncrypt(key.stop_encrypting_ms)) return key;
  }
  // Past its stop-encrypting date: move the conversation to a new key first.
  SR_ASSIGN_OR_RETURN(Activity rotated, RotateOnce(conversation));
  (void)rotated;
  return cache_.ForEncryption(conversation.current_key_uri);
}

Result<Activity> Conversations::RotateOnce(Conversation& conversation) {
  SR_ASSIGN_OR_RETURN(KmsKey key, pool_->Take());
  const std::string id = conversation.id;
  const std::string resource = conversation.kms_resource_uri;
  SR_ASSIGN_OR_RETURN(auto embedded, Embedded([&] { return kms_.SealBindKey(key.uri, resource); },
                                              [&](const std::string& message) {
                                                return core_.RotateKey(id, key.uri, message);
                                              }));
  auto& [change, sealed] = embedded;
  Result<KmsKey> bound =
      Error(ErrorCode::kInvalidArgument, "the core returned no KMS answer for the bind");
  if (change.kms_answer) {
    Result<Poco::JSON::Object::Ptr> answer = kms_.OpenAnswer(sealed, *change.kms_answer);
    bound = answer.ok() ? KeyFromAnswer(**answer) : Result<KmsKey>(answer.error());
  }
  if (!bound.ok()) {
    // The core declared a key the KMS did not bind: nobody else could retrieve it. Bind another
    // one directly, then declare that.
    SR_ASSIGN_OR_RETURN(KmsKey second, pool_->Take());
    Result<KmsKey> second_bound = kms_.BindKey(second.uri, resource);
    if (!second_bound.ok()) {
      return Error(second_bound.error().code(),
                   "the conversation was rotated to a key the KMS did not bind (" +
                       bound.error().message() + "), and binding another failed: " +
                       second_bound.error().message() + "; rotate again");
    }
    SR_ASSIGN_OR_RETURN(Change again, core_.RotateKey(id, second.uri));
    (void)cache_.Put(*second_bound);
    conversation.current_key_uri = second.uri;
    Remember(conversation);
    return again.activity;
  }
  (void)cache_.Put(*bound);
  conversation.current_key_uri = key.uri;
  Remember(conversation);
  return change.activity;
}

Result<Activity> Conversations::Rotate(const std::string& conversation_id) {
  SR_ASSIGN_OR_RETURN(Conversation conversation, Get(conversation_id, /*refresh=*/true));
  return RotateOnce(conversation);
}

Result<Activity> Conversations::Send(const std::string& conversation_id, std::string_view text) {
  return WriteText(conversation_id, text, [&](const std::string& content) {
    return core_.Post(conversation_id, content, {}, NewClientActivityId());
  });
}

Result<Activity> Conversations::Edit(const std::string& conversation_id,
                                     const std::string& activity_id, std::string_view text) {
  return WriteText(conversation_id, text, [&](const std::string& content) {
    return core_.EditActivity(conversation_id, activity_id, content);
  });
}

Result<Activity> Conversations::WriteText(
    const std::string& conversation_id, std::string_view text,
    const std::function<Result<Activity>(const std::string& content)>& write) {
  if (text.size() > kMaxTextBytes) {
    return Error(ErrorCode::kInvalidArgument,
                 "a message is at most " + std::to_string(kMaxTextBytes) + " bytes");
  }
  SR_ASSIGN_OR_RETURN(Conversation conversation, Get(conversation_id));
  for (int attempt = 0;; ++attempt) {
    SR_ASSIGN_OR_RETURN(KmsKey key, EncryptionKey(conversation));
    SR_ASSIGN_OR_RETURN(std::string content, EncryptText(key.key, key.uri, text));
    Result<Activity> written = write(content);
    if (written.ok() || attempt > 0 || !IsRotationRequired(written.error())) return written;
    SR_ASSIGN_OR_RETURN(conversation, Get(conversation_id, /*refresh=*/true));
  }
}

Result<Activity> Conversations::Retract(const std::string& conversation_id,
                                        const std::string& activity_id) {
  return core_.RetractActivity(conversation_id, activity_id);
}

Result<Activity> Conversations::SendFile(const std::string& conversation_id,
                                         const std::string& path, const Progress& progress) {
  std::error_code error;
  const std::uint64_t size = fs::file_size(path, error);
  if (error) return Error(ErrorCode::kInvalidArgument, "cannot read '" + path + "'");
  if (size > kMaxFileBytes) return Error(ErrorCode::kInvalidArgument, "'" + path + "' is too big");
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error(ErrorCode::kInvalidArgument, "cannot open '" + path + "'");
  SR_ASSIGN_OR_RETURN(Conversation conversation, Get(conversation_id));
  // The key is fetched before the upload, so a refusal comes before any bytes move.
  SR_ASSIGN_OR_RETURN(KmsKey key, EncryptionKey(conversation));

  std::optional<FileReference> reference;
  SR_ASSIGN_OR_RETURN(
      FileInfo file, core_.UploadFile(conversation_id, size, [&](std::ostream& out) -> Status {
        SR_ASSIGN_OR_RETURN(
            FileReference made,
            EncryptFile(in, out, "strongroom-file:" + conversation_id, size, progress));
        if (made.size != size) {
          return Error(ErrorCode::kFailedPrecondition, "'" + path + "' changed while it was sent");
        }
        reference = std::move(made);
        return OkStatus();
      }));
  if (!reference) return Error(ErrorCode::kInternal, "the upload ended without a reference");
  reference->loc = file.id;
  reference->name = fs::path(path).filename().string();
  for (int attempt = 0;; ++attempt) {
    SR_ASSIGN_OR_RETURN(std::string content, SealFileReference(*reference, key.key, key.uri));
    Result<Activity> posted =
        core_.Post(conversation_id, content, {file.id}, NewClientActivityId());
    if (posted.ok() || attempt > 0 || !IsRotationRequired(posted.error())) return posted;
    SR_ASSIGN_OR_RETURN(conversation, Get(conversation_id, /*refresh=*/true));
    SR_ASSIGN_OR_RETURN(key, EncryptionKey(conversation));
  }
}

Message Conversations::DecryptWith(const Activity& activity, const ContentKeyLookup& lookup) {
  Message message;
  message.activity = activity;
  if (activity.content.empty()) return message;
  if (activity.verb == "share") {
    Result<FileReference> reference = OpenFileReference(activity.content, lookup);
    if (reference.ok()) {
      message.file = std::move(reference).value();
    } else {
      message.error = reference.error();
    }
    return message;
  }
  Result<DecryptedText> text = DecryptText(activity.content, lookup);
  if (text.ok()) {
    message.text = std::string(text->text.as_string_view());
  } else {
    message.error = text.error();
  }
  return message;
}

Message Conversations::Decrypt(const Activity& activity) {
  Result<Conversation> conversation = Get(activity.conversation_id);
  if (!conversation.ok()) {
    Message message;
    message.activity = activity;
    message.error = conversation.error();
    return message;
  }
  const std::string resource = conversation->kms_resource_uri;
  return DecryptWith(
      activity, [this, &resource](const std::string& uri) { return DecryptionKey(uri, resource); });
}

Result<MessagePage> Conversations::Read(const std::string& conversation_id,
                                        const HistoryQuery& query) {
  // The conversation (its resource) first: every key is checked against it.
  SR_ASSIGN_OR_RETURN(Conversation conversation, Get(conversation_id));
  (void)conversation;
  SR_ASSIGN_OR_RETURN(HistoryPage page, core_.History(conversation_id, query));
  MessagePage out;
  out.more = page.more;
  for (const Activity& activity : page.items) out.messages.push_back(Decrypt(activity));
  return out;
}

Result<std::string> Conversations::Title(const Conversation& conversation) {
  if (conversation.encrypted_title.empty()) return std::string();
  SR_ASSIGN_OR_RETURN(DecryptedText title,
                      DecryptText(conversation.encrypted_title, [&](const std::string& uri) {
                        return DecryptionKey(uri, conversation.kms_resource_uri);
                      }));
  return std::string(title.text.as_string_view());
}

Status Conversations::GetFile(const std::string& conversation_id, const FileReference& file,
                              const std::string& out_path, const Progress& progress) {
  const std::string partial = out_path + ".part-" + NewClientActivityId();
  const int fd = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return Error(ErrorCode::kInvalidArgument, "cannot write '" + out_path + "'");
  ::close(fd);
  Status done = [&]() -> Status {
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    if (!out) return Error(ErrorCode::kInvalidArgument, "cannot write '" + out_path + "'");
    SR_RETURN_IF_ERROR(
        core_.DownloadFile(conversation_id, file.loc, [&](std::istream& in, const std::string&) {
          return DecryptFile(file, in, out, progress);
        }));
    out.close();
    if (!out) return Error(ErrorCode::kUnavailable, "writing '" + out_path + "' failed");
    return OkStatus();
  }();
  std::error_code ignored;
  if (!done.ok()) {
    fs::remove(partial, ignored);
    return done;
  }
  fs::rename(partial, out_path, ignored);
  if (ignored) {
    fs::remove(partial, ignored);
    return Error(ErrorCode::kUnavailable, "cannot move the file to '" + out_path + "'");
  }
  return OkStatus();
}

Result<Activity> Conversations::AddMember(const std::string& conversation_id,
                                          const std::string& user) {
  SR_ASSIGN_OR_RETURN(Conversation conversation, Get(conversation_id));
  const std::string resource = conversation.kms_resource_uri;
  SR_ASSIGN_OR_RETURN(auto embedded, Embedded([&] { return kms_.SealAuthorize(resource, {user}); },
                                              [&](const std::string& message) {
                                                return core_.AddParticipants(conversation_id,
                                                                             {user}, message);
                                              }));
  auto& [change, sealed] = embedded;
  Status authorized = OkStatus();
  if (!change.kms_answer) {
    authorized = Error(ErrorCode::kInvalidArgument, "the core returned no KMS answer");
  } else if (auto opened = kms_.OpenAnswer(sealed, *change.kms_answer); !opened.ok()) {
    authorized = opened.error();
  }
  if (!authorized.ok() && authorized.error().code() != ErrorCode::kAlreadyExists) {
    // The core added them but the KMS would give them no key: undo the core's half.
    (void)core_.RemoveParticipant(conversation_id, user);
    return Error(authorized.error().code(), "the KMS did not authorize " + user + " (" +
                                                authorized.error().message() +
                                                "); they were not added");
  }
  (void)Get(conversation_id, /*refresh=*/true);
  return change.activity;
}

Result<Removal> Conversations::RemoveMember(const std::string& conversation_id,
                                            const std::string& user) {
  SR_ASSIGN_OR_RETURN(Conversation conversation, Get(conversation_id, /*refresh=*/true));
  const std::string resource = conversation.kms_resource_uri;
  SR_ASSIGN_OR_RETURN(auto embedded,
                      Embedded([&] { return kms_.SealDeleteAuthorization(resource, user); },
                               [&](const std::string& message) {
                                 return core_.RemoveParticipant(conversation_id, user, message);
                               }));
  auto& [change, sealed] = embedded;
  Removal removal{change.activity, std::nullopt};
  // Whether the KMS dropped the authorization; if not, once more directly.
  std::optional<Error> still_authorized;
  Result<Poco::JSON::Object::Ptr> opened =
      change.kms_answer ? kms_.OpenAnswer(sealed, *change.kms_answer)
                        : Result<Poco::JSON::Object::Ptr>(
                              Error(ErrorCode::kInvalidArgument, "the core returned no answer"));
  if (!opened.ok() && opened.error().code() != ErrorCode::kNotFound) {
    Result<KmsAuthorization> direct = kms_.DeleteAuthorization(resource, user);
    if (!direct.ok() && direct.error().code() != ErrorCode::kNotFound) {
      still_authorized = direct.error();
    }
  }
  if (user == options_.user_id) {  // leaving: a leaver binds no keys
    {
      std::lock_guard<std::mutex> lock(mutex_);
      conversations_.erase(conversation_id);
    }
    if (still_authorized) return *still_authorized;
    return removal;
  }
  conversation.participants.erase(
      std::remove(conversation.participants.begin(), conversation.participants.end(), user),
      conversation.participants.end());
  Result<Activity> rotated = RotateOnce(conversation);
  if (still_authorized) {
    return Error(still_authorized->code(),
                 user + " was removed at the core" +
                     std::string(rotated.ok() ? " and the conversation rotated" : "") +
                     ", but the KMS still authorizes them: " + still_authorized->message() +
                     "; remove them again");
  }
  if (!rotated.ok()) {
    return Error(rotated.error().code(), user +
                                             " was removed, but the rotation to a new key "
                                             "failed: " +
                                             rotated.error().message() +
                                             "; rotate the conversation");
  }
  removal.rotated = std::move(rotated).value();
  return removal;
}

Result<std::vector<Message>> Conversations::ReadOnBehalfOf(
    const std::string& user, const std::vector<Activity>& activities) {
  if (user.empty()) return Error(ErrorCode::kInvalidArgument, "on behalf of whom?");
  std::map<std::string, SecretBytes> keys;  // this call's only: every read is audited
  ContentKeyLookup lookup = [&](const std::string& uri) -> Result<SecretBytes> {
    auto found = keys.find(uri);
    if (found == keys.end()) {
      SR_ASSIGN_OR_RETURN(KmsKey key, kms_.RetrieveKey(uri, user));
      found = keys.emplace(uri, std::move(key.key)).first;
    }
    return SecretBytes(found->second.view());
  };
  std::vector<Message> out;
  for (const Activity& activity : activities) out.push_back(DecryptWith(activity, lookup));
  return out;
}

}  // namespace strongroom::client
