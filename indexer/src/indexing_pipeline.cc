#include "strongroom/indexer/indexing_pipeline.h"

#include <algorithm>
#include <chrono>
#include <limits>

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

Result<std::uint32_t> SearchKeys::Refresh() {
  SR_ASSIGN_OR_RETURN(client::KmsSearchKey key, kms_.CurrentSearchKey());
  {
    std::lock_guard<std::mutex> lock(mutex_);
    org_keys_.try_emplace(key.version, std::move(key.key));
    if (current_ && key.version <= *current_) return *current_;
  }
  // A newer version: once no batch indexed with the older one is still being put (Hold).
  std::unique_lock<std::mutex> gate(gate_mutex_);
  gate_.wait(gate, [this] { return !adopting_; });
  adopting_ = true;
  gate_.wait(gate, [this] { return holders_ == 0; });
  std::uint32_t adopted;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!current_ || key.version > *current_) current_ = key.version;
    adopted = *current_;
  }
  adopting_ = false;
  gate_.notify_all();
  return adopted;
}

SearchKeys::Hold::Hold(SearchKeys& keys) : keys_(keys) {
  std::unique_lock<std::mutex> gate(keys_.gate_mutex_);
  keys_.gate_.wait(gate, [this] { return !keys_.adopting_; });
  ++keys_.holders_;
}

SearchKeys::Hold::~Hold() {
  std::lock_guard<std::mutex> gate(keys_.gate_mutex_);
  --keys_.holders_;
  keys_.gate_.notify_all();
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

Result<IndexingPipeline::Outcome> IndexingPipeline::Prepare(const client::Activity& activity,
                                                            std::uint32_t version,
                                                            std::vector<Pending>& out) {
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
                      keys_.RoomKey(activity.conversation_id, version));
  Pending pending;
  pending.seq = activity.seq;
  pending.published_ms = activity.published_ms;
  pending.set.conversation_id = activity.conversation_id;
  pending.set.activity_id = activity.id;
  SR_ASSIGN_OR_RETURN(pending.set.tokens,
                      PadWithDecoys(room_key->Tokens(terms.terms()), [&](std::size_t count) {
                        return room_key->DecoyTokens(activity.id, count);
                      }));
  pending.room = *room;
  out.push_back(std::move(pending));
  return Outcome::kPrepared;
}

std::pair<std::size_t, std::optional<Error>> IndexingPipeline::PutAll(
    const std::vector<Pending>& pending, std::vector<bool>& put) {
  constexpr std::size_t kMaxBytesPerPut = 384 * 1024;  // the core takes 512 KiB of JSON
  put.assign(pending.size(), false);
  // A failure that stops the batch: the core or the indexer's identity.
  const auto stops = [](const Error& error) {
    return Transient(error) || error.code() == ErrorCode::kPermissionDenied;
  };
  std::size_t start = 0;
  while (start < pending.size()) {
    std::size_t end = start;
    std::size_t bytes = 0;
    std::vector<TokenSet> sets;
    while (end < pending.size() && sets.size() < kMaxSetsPerPut) {
      std::size_t size = 128;
      for (const std::string& token : pending[end].set.tokens) size += token.size() + 3;
      if (!sets.empty() && bytes + size > kMaxBytesPerPut) break;
      bytes += size;
      sets.push_back(pending[end].set);
      ++end;
    }
    Status status = core_.PutTokenSets(sets);
    if (status.ok()) {
      for (std::size_t i = start; i < end; ++i) put[i] = true;
    } else if (stops(status.error())) {
      return {start, status.error()};
    } else {
      // One set refused them all: each alone, and the refused ones skipped.
      for (std::size_t i = start; i < end; ++i) {
        Status one = core_.PutTokenSets({pending[i].set});
        if (one.ok()) {
          put[i] = true;
        } else if (stops(one.error())) {
          return {i, one.error()};
        } else {
          log_("skipped activity " + std::to_string(pending[i].seq) + " of conversation " +
               pending[i].set.conversation_id + ": the core refused its tokens (" +
               std::string(ErrorCodeName(one.error().code())) + ")");
        }
      }
    }
    start = end;
  }
  return {pending.size(), std::nullopt};
}

std::pair<BatchResult, std::optional<Error>> IndexingPipeline::Run(
    const std::vector<client::Activity>& batch, std::int64_t after, std::int64_t up_to,
    std::uint32_t version, std::vector<Pending>* put_sets) {
  BatchResult result;
  result.last_seq = after;
  std::optional<Error> stopped;
  std::vector<Pending> pending;
  // The activities handled in order (seq, whether skipped), to move the cursor only past those
  // before the first set that was not put.
  std::vector<std::pair<std::int64_t, bool>> handled;
  for (const client::Activity& activity : batch) {
    if (activity.seq <= after) continue;  // delivered again: done already
    if (activity.seq > up_to) break;
    Result<Outcome> outcome = Prepare(activity, version, pending);
    if (!outcome.ok()) {
      stopped = outcome.error();
      break;
    }
    handled.emplace_back(activity.seq, *outcome == Outcome::kSkipped);
  }
  std::vector<bool> put;
  auto [first_not_put, put_error] = PutAll(pending, put);
  if (put_error) stopped = put_error;
  const std::int64_t stop_seq = first_not_put < pending.size()
                                    ? pending[first_not_put].seq
                                    : std::numeric_limits<std::int64_t>::max();
  for (const auto& [seq, skipped] : handled) {
    if (seq >= stop_seq) break;
    result.last_seq = seq;
    if (skipped) ++result.skipped;
  }
  for (std::size_t i = 0; i < pending.size(); ++i) {
    if (!put[i]) {
      if (i < first_not_put) ++result.skipped;  // refused by the core
      continue;
    }
    ++result.indexed;
    result.published_ms.push_back(pending[i].published_ms);
    if (put_sets) put_sets->push_back(pending[i]);
  }
  return {std::move(result), stopped};
}

Result<BatchResult> IndexingPipeline::Process(const std::vector<client::Activity>& batch) {
  // The version stays the same until the batch is committed (SearchKeys::Refresh waits).
  const SearchKeys::Hold hold(keys_);
  SR_ASSIGN_OR_RETURN(std::int64_t cursor, store_.Cursor());
  SR_ASSIGN_OR_RETURN(std::uint32_t version, keys_.CurrentVersion());
  std::vector<Pending> put_sets;
  auto [result, stopped] =
      Run(batch, cursor, std::numeric_limits<std::int64_t>::max(), version, &put_sets);
  std::map<std::string, IndexerStore::RoomUpdate> updates;
  for (const Pending& pending : put_sets) {
    IndexerStore::RoomUpdate& update = updates[pending.set.conversation_id];
    update.conversation_id = pending.room.conversation_id;
    update.resource_uri = pending.room.resource_uri;
    update.search_key_version = pending.room.search_key_version;
    ++update.indexed;
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

Result<BatchResult> IndexingPipeline::Reindex(const std::vector<client::Activity>& batch,
                                              std::int64_t after, std::int64_t up_to,
                                              std::uint32_t version) {
  auto [result, stopped] = Run(batch, after, up_to, version, nullptr);
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
      // What else came meanwhile, for a bounded time and size: one batch, fewer puts.
      // (Each wait is a whole kGather, not what is left of it: a read that times out in the
      // middle of a frame costs a reconnection from the cursor.)
      const auto gather_end = std::chrono::steady_clock::now() + kGather;
      while (batch->size() < kMaxBatch && !stop_ && std::chrono::steady_clock::now() < gather_end) {
        Result<std::vector<client::Activity>> more = stream->Next(kGather);
        if (!more.ok()) {
          failed = more.error();
          break;
        }
        if (more->empty()) break;
        batch->insert(batch->end(), more->begin(), more->end());
      }
      Result<BatchResult> done = pipeline_.Process(*batch);
      const std::int64_t now = now_ms_();
      std::lock_guard<std::mutex> lock(mutex_);
      if (!done.ok()) {
        failed = done.error();
        break;
      }
      state_.cursor = done->last_seq;
      state_.indexed += static_cast<std::int64_t>(done->indexed);
      state_.skipped += static_cast<std::int64_t>(done->skipped);
      state_.lag_ms = std::max<std::int64_t>(0, now - batch->back().published_ms);
      if (!done->published_ms.empty()) {
        for (std::int64_t published : done->published_ms) {
          const std::int64_t lag = std::max<std::int64_t>(0, now - published);
          if (lags_.size() < kLagWindow) {
            lags_.push_back(lag);
          } else {
            lags_[lag_next_] = lag;
          }
          lag_next_ = (lag_next_ + 1) % kLagWindow;
        }
        std::vector<std::int64_t> sorted = lags_;
        std::sort(sorted.begin(), sorted.end());
        state_.lag_p50_ms = sorted[(sorted.size() - 1) / 2];
        state_.lag_p99_ms = sorted[(sorted.size() - 1) * 99 / 100];
      }
      if (!failed.ok()) break;
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

namespace strongroom::indexer {

ReindexJob::ReindexJob(IndexingPipeline& pipeline, IndexerStore& store, SearchKeys& keys,
                       StreamOpener open, Logger log, std::chrono::milliseconds check_period)
    : pipeline_(pipeline),
      store_(store),
      keys_(keys),
      open_(std::move(open)),
      log_(std::move(log)),
      check_period_(check_period) {
  if (Result<std::optional<JobProgress>> saved = store_.Job(kName); saved.ok()) {
    progress_ = *saved;
  }
}

ReindexJob::~ReindexJob() { Stop(); }

void ReindexJob::Start() {
  stop_ = false;
  thread_ = std::thread([this] { Run(); });
}

void ReindexJob::Stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::optional<JobProgress> ReindexJob::progress() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return progress_;
}

std::uint32_t ReindexJob::current_version() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return current_version_;
}

void ReindexJob::Publish(const JobProgress& job) {
  std::lock_guard<std::mutex> lock(mutex_);
  progress_ = job;
}

Result<std::optional<JobProgress>> ReindexJob::Due() {
  SR_ASSIGN_OR_RETURN(std::uint32_t current, keys_.Refresh());
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (current_version_ != 0 && current != current_version_) {
      log_("the organization's search key is now version " + std::to_string(current));
    }
    current_version_ = current;
  }
  SR_ASSIGN_OR_RETURN(std::optional<JobProgress> saved, store_.Job(kName));
  if (saved && saved->state == "running" && saved->target_version == current) return saved;
  SR_ASSIGN_OR_RETURN(std::optional<std::uint32_t> oldest, store_.OldestRoomVersion());
  if (!oldest || *oldest >= current) return std::optional<JobProgress>();
  JobProgress job;
  job.name = kName;
  job.state = "running";
  job.target_version = current;
  SR_ASSIGN_OR_RETURN(job.end_seq, store_.Cursor());
  SR_ASSIGN_OR_RETURN(job.total, store_.ActivitiesIndexed());
  SR_RETURN_IF_ERROR(store_.SaveJob(job));
  log_("re-index to search key version " + std::to_string(current) + " started: up to seq " +
       std::to_string(job.end_seq) + ", about " + std::to_string(job.total) + " activities");
  return std::optional<JobProgress>(job);
}

Status ReindexJob::RunJob(JobProgress& job) {
  auto last_log = std::chrono::steady_clock::now();
  const auto finish = [&]() -> Status {
    job.state = "done";
    job.cursor = job.end_seq;
    SR_RETURN_IF_ERROR(store_.FinishReindex(job));
    log_("re-index to search key version " + std::to_string(job.target_version) +
         " done: " + std::to_string(job.done) + " activities");
    Publish(job);  // after the line: /health says done once the log does
    return OkStatus();
  };
  if (job.cursor >= job.end_seq) return finish();
  SR_ASSIGN_OR_RETURN(std::unique_ptr<ActivityStream> stream, open_(job.cursor));
  log_("re-index to search key version " + std::to_string(job.target_version) +
       " resumed from seq " + std::to_string(job.cursor));
  auto last_check = std::chrono::steady_clock::now();
  while (!stop_) {
    if (std::chrono::steady_clock::now() - last_check >= check_period_) {
      last_check = std::chrono::steady_clock::now();
      (void)keys_.Refresh();  // a failure: asked again at the next period
    }
    // A newer rotation: this job is over, the next check starts the newer one.
    if (Result<std::uint32_t> current = keys_.CurrentVersion();
        current.ok() && *current != job.target_version) {
      log_("re-index to search key version " + std::to_string(job.target_version) +
           " overtaken by a newer version");
      return OkStatus();
    }
    SR_ASSIGN_OR_RETURN(std::vector<client::Activity> batch,
                        stream->Next(std::chrono::milliseconds(250)));
    if (batch.empty()) continue;
    SR_ASSIGN_OR_RETURN(BatchResult done,
                        pipeline_.Reindex(batch, job.cursor, job.end_seq, job.target_version));
    job.cursor = done.last_seq;
    job.done += static_cast<std::int64_t>(done.indexed);
    const bool reached = batch.back().seq >= job.end_seq;
    if (reached) return finish();
    SR_RETURN_IF_ERROR(store_.SaveJob(job));
    Publish(job);
    if (std::chrono::steady_clock::now() - last_log > std::chrono::seconds(5)) {
      last_log = std::chrono::steady_clock::now();
      log_("re-index to search key version " + std::to_string(job.target_version) + ": seq " +
           std::to_string(job.cursor) + " of " + std::to_string(job.end_seq) + ", " +
           std::to_string(job.done) + " of about " + std::to_string(job.total) + " activities");
    }
  }
  return OkStatus();
}

void ReindexJob::Run() {
  std::chrono::milliseconds backoff(100);
  while (!stop_) {
    Status failed = OkStatus();
    bool again = false;  // a job left unfinished without a failure: a newer version came
    Result<std::optional<JobProgress>> due = Due();
    if (!due.ok()) {
      failed = due.error();
    } else if (*due) {
      JobProgress job = **due;
      Publish(job);
      failed = RunJob(job);
      again = failed.ok() && job.state == "running";
    }
    std::unique_lock<std::mutex> lock(mutex_);
    if (stop_) break;
    std::chrono::milliseconds wait = check_period_;
    if (!failed.ok()) {
      log_("the re-index stopped: " + failed.error().message() + "; resuming in " +
           std::to_string(backoff.count()) + " ms");
      wait = backoff;
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
    } else if (again) {
      wait = std::chrono::milliseconds(0);  // start the newer version's job now
    } else {
      backoff = std::chrono::milliseconds(100);
    }
    wake_.wait_for(lock, wait, [this] { return stop_.load(); });
  }
}

}  // namespace strongroom::indexer
