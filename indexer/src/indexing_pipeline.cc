#include "strongroom/indexer/indexing_pipeline.h"

#include <chrono>

#include "strongroom/client/content.h"
#include "strongroom/indexer/decoy_padding.h"
#include "strongroom/indexer/term_set.h"

namespace strongroom::indexer {
namespace {

std::int64_t SystemNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Failures that may pass: the batch stops and is tried again from the cursor.
bool Transient(const Error& error) {
  switch (error.code()) {
    case ErrorCode::kUnavailable:
    case ErrorCode::kResourceExhausted:
    case ErrorCode::kInternal:
    case ErrorCode::kUnauthenticated:  // the indexer's own token: fixed by the operator
      return true;
    default:
      return false;
  }
}

// What of an activity has words, and in which form its content comes.
enum class Words { kNone, kText, kFileName };
Words WordsOf(const client::Activity& activity) {
  if (activity.content.empty()) return Words::kNone;  // a cleared title, a superseded edit
  if (activity.verb == "post" || activity.verb == "edit" || activity.verb == "create" ||
      activity.verb == "title") {
    return Words::kText;
  }
  if (activity.verb == "share") return Words::kFileName;
  return Words::kNone;
}

}  // namespace

Result<std::uint32_t> SearchKeys::CurrentVersion() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (current_) return *current_;
  SR_ASSIGN_OR_RETURN(client::KmsSearchKey key, kms_.CurrentSearchKey());
  current_ = key.version;
  org_keys_.try_emplace(key.version, std::move(key.key));
  return *current_;
}

Result<std::shared_ptr<const RoomSearchKey>> SearchKeys::RoomKey(const std::string& conversation_id,
                                                                 std::uint32_t version) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto room = rooms_.find({conversation_id, version});
  if (room != rooms_.end()) return room->second;
  auto org_key = org_keys_.find(version);
  if (org_key == org_keys_.end()) {
    SR_ASSIGN_OR_RETURN(client::KmsSearchKey key, kms_.SearchKey(version));
    if (key.version != version) {
      return Error(ErrorCode::kDataLoss, "the KMS answered another search key version");
    }
    org_key = org_keys_.try_emplace(version, std::move(key.key)).first;
  }
  SR_ASSIGN_OR_RETURN(RoomSearchKey derived,
                      RoomSearchKey::Derive(org_key->second, conversation_id, version));
  if (rooms_.size() >= max_room_keys_) rooms_.clear();  // simple bound; keys derive again cheaply
  auto made = std::make_shared<const RoomSearchKey>(std::move(derived));
  rooms_.emplace(std::make_pair(conversation_id, version), made);
  return made;
}

Result<std::unique_ptr<IndexingPipeline>> IndexingPipeline::New(IndexerKms& kms, IndexerCore& core,
                                                                IndexerStore& store,
                                                                SearchKeys& keys,
                                                                const std::string& language,
                                                                Logger log) {
  SR_ASSIGN_OR_RETURN(TermExtractor extractor, TermExtractor::New(language));
  return std::unique_ptr<IndexingPipeline>(
      new IndexingPipeline(kms, core, store, keys, std::move(extractor), std::move(log)));
}

IndexingPipeline::IndexingPipeline(IndexerKms& kms, IndexerCore& core, IndexerStore& store,
                                   SearchKeys& keys, TermExtractor extractor, Logger log)
    : kms_(kms),
      core_(core),
      store_(store),
      keys_(keys),
      extractor_(std::move(extractor)),
      log_(std::move(log)) {}

Result<Room> IndexingPipeline::RoomFor(const std::string& conversation_id,
                                       const std::string& resource_uri) {
  if (auto known = rooms_.find(conversation_id); known != rooms_.end()) return known->second;
  SR_ASSIGN_OR_RETURN(std::optional<Room> stored, store_.RoomOf(conversation_id));
  if (stored) return rooms_[conversation_id] = *stored;
  SR_ASSIGN_OR_RETURN(std::uint32_t version, keys_.CurrentVersion());
  return rooms_[conversation_id] = Room{conversation_id, resource_uri, version, 0};
}

Result<IndexingPipeline::Outcome> IndexingPipeline::IndexOne(
    const client::Activity& activity, std::map<std::string, IndexerStore::RoomUpdate>& updates) {
  const Words words = WordsOf(activity);
  if (words == Words::kNone) return Outcome::kNothing;

  // The content key, which names the room's resource; a key of another resource is refused.
  std::optional<Room> room;
  const client::ContentKeyLookup lookup = [&](const std::string& key_uri) -> Result<SecretBytes> {
    std::optional<client::KmsKey> key = content_keys_.ForDecryption(key_uri);
    if (!key) {
      SR_ASSIGN_OR_RETURN(client::KmsKey retrieved, kms_.RetrieveKey(key_uri));
      if (!retrieved.bound()) {
        return Error(ErrorCode::kPermissionDenied, "the content key is bound to no resource");
      }
      (void)content_keys_.Put(retrieved);
      key = std::move(retrieved);
    }
    SR_ASSIGN_OR_RETURN(room, RoomFor(activity.conversation_id, key->resource_uri));
    if (room->resource_uri != key->resource_uri) {
      return Error(ErrorCode::kPermissionDenied,
                   "the content key is bound to another resource than the room's");
    }
    return SecretBytes(key->key.view());
  };

  TermSet terms;
  Status extracted = OkStatus();
  if (words == Words::kText) {
    Result<client::DecryptedText> text = client::DecryptText(activity.content, lookup);
    if (!text.ok()) {
      extracted = text.error();
    } else {
      extracted = extractor_.AddTerms(text->text.as_string_view(), terms);
    }
  } else {
    Result<client::FileReference> reference = client::OpenFileReference(activity.content, lookup);
    if (!reference.ok()) {
      extracted = reference.error();
    } else if (!reference->name.empty()) {
      // As written ("forecast.xlsx" is one word to ICU) and with its dots and underscores as
      // spaces, so that "forecast" finds "Budget_Forecast.xlsx" too.
      std::string split = reference->name;
      for (char& c : split) {
        if (c == '.' || c == '_') c = ' ';
      }
      extracted = extractor_.AddTerms(reference->name, terms);
      if (extracted.ok()) extracted = extractor_.AddTerms(split, terms);
      ZeroizeString(split);
    }
  }
  if (!extracted.ok()) {
    if (Transient(extracted.error())) return extracted.error();
    log_("skipped activity " + std::to_string(activity.seq) + " of conversation " +
         activity.conversation_id + ": " + std::string(ErrorCodeName(extracted.error().code())));
    return Outcome::kSkipped;
  }

  SR_ASSIGN_OR_RETURN(std::shared_ptr<const RoomSearchKey> room_key,
                      keys_.RoomKey(activity.conversation_id, room->search_key_version));
  SR_ASSIGN_OR_RETURN(std::vector<std::string> tokens,
                      PadWithDecoys(room_key->Tokens(terms.terms()), [&](std::size_t count) {
                        return room_key->DecoyTokens(activity.id, count);
                      }));
  if (Status put = core_.PutTokens(activity.conversation_id, activity.id, tokens); !put.ok()) {
    if (Transient(put.error()) || put.error().code() == ErrorCode::kPermissionDenied) {
      return put.error();  // the core refuses the indexer's identity: nothing can go on
    }
    log_("skipped activity " + std::to_string(activity.seq) + " of conversation " +
         activity.conversation_id + ": the core refused its tokens (" +
         std::string(ErrorCodeName(put.error().code())) + ")");
    return Outcome::kSkipped;
  }
  IndexerStore::RoomUpdate& update = updates[activity.conversation_id];
  update.conversation_id = room->conversation_id;
  update.resource_uri = room->resource_uri;
  update.search_key_version = room->search_key_version;
  ++update.indexed;
  return Outcome::kPut;
}

Result<BatchResult> IndexingPipeline::Process(const std::vector<client::Activity>& batch) {
  BatchResult result;
  SR_ASSIGN_OR_RETURN(result.last_seq, store_.Cursor());
  std::map<std::string, IndexerStore::RoomUpdate> updates;
  std::optional<Error> stopped;
  for (const client::Activity& activity : batch) {
    if (activity.seq <= result.last_seq) continue;  // delivered again: done already
    Result<Outcome> outcome = IndexOne(activity, updates);
    if (!outcome.ok()) {
      stopped = outcome.error();
      break;
    }
    if (*outcome == Outcome::kPut) ++result.indexed;
    if (*outcome == Outcome::kSkipped) ++result.skipped;
    result.last_seq = activity.seq;
  }
  std::vector<IndexerStore::RoomUpdate> rooms;
  for (auto& [id, update] : updates) rooms.push_back(std::move(update));
  SR_RETURN_IF_ERROR(store_.Commit(result.last_seq, rooms));
  for (const IndexerStore::RoomUpdate& update : rooms) {
    rooms_[update.conversation_id].activities_indexed += update.indexed;
  }
  if (stopped) return *stopped;
  return result;
}

IndexerLoop::IndexerLoop(IndexingPipeline& pipeline, IndexerStore& store, StreamOpener open,
                         Logger log, std::function<std::int64_t()> now_ms)
    : pipeline_(pipeline),
      store_(store),
      open_(std::move(open)),
      log_(std::move(log)),
      now_ms_(now_ms ? std::move(now_ms) : SystemNowMs) {}

IndexerLoop::~IndexerLoop() { Stop(); }

void IndexerLoop::Start() {
  stop_ = false;
  thread_ = std::thread([this] { Run(); });
}

void IndexerLoop::Stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

IndexerLoop::State IndexerLoop::state() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return state_;
}

void IndexerLoop::Run() {
  std::chrono::milliseconds backoff(100);
  while (!stop_) {
    std::unique_ptr<ActivityStream> stream;
    Status failed = OkStatus();
    Result<std::int64_t> cursor = store_.Cursor();
    if (!cursor.ok()) {
      failed = cursor.error();
    } else {
      Result<std::unique_ptr<ActivityStream>> opened = open_(*cursor);
      if (!opened.ok()) {
        failed = opened.error();
      } else {
        stream = std::move(opened).value();
        std::lock_guard<std::mutex> lock(mutex_);
        state_.stream_connected = true;
        state_.cursor = *cursor;
        state_.last_error.clear();
        log_("following the core's indexer stream from seq " + std::to_string(*cursor));
      }
    }
    while (stream && !stop_) {
      Result<std::vector<client::Activity>> batch = stream->Next(std::chrono::milliseconds(250));
      if (!batch.ok()) {
        failed = batch.error();
        break;
      }
      if (batch->empty()) {
        std::lock_guard<std::mutex> lock(mutex_);
        state_.lag_ms = 0;
        continue;
      }
      Result<BatchResult> done = pipeline_.Process(*batch);
      std::lock_guard<std::mutex> lock(mutex_);
      if (!done.ok()) {
        failed = done.error();
        break;
      }
      state_.cursor = done->last_seq;
      state_.indexed += static_cast<std::int64_t>(done->indexed);
      state_.skipped += static_cast<std::int64_t>(done->skipped);
      state_.lag_ms = std::max<std::int64_t>(0, now_ms_() - batch->back().published_ms);
      backoff = std::chrono::milliseconds(100);
    }
    stream.reset();
    if (stop_) break;
    std::unique_lock<std::mutex> lock(mutex_);
    state_.stream_connected = false;
    if (!failed.ok()) {
      state_.last_error = failed.error().message();
      log_("the indexer stream stopped: " + failed.error().message() + "; resuming in " +
           std::to_string(backoff.count()) + " ms");
    }
    if (Result<std::int64_t> at = store_.Cursor(); at.ok()) state_.cursor = *at;
    wake_.wait_for(lock, backoff, [this] { return stop_.load(); });
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  state_.stream_connected = false;
}

}  // namespace strongroom::indexer
