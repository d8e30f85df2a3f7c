// indexerd's indexing: activities of the core's indexer stream to the tokens the core stores
// (docs/architecture.md, "The indexer").
//
// Per activity, in seq order:
//   - what has words: a post's text, an edit's new text (put for the edit; the core keeps it for
//     the post it edited), a share's file name, a room's title (its create and title activities).
//     Anything else (membership, key rotation, retracts: the core removed the tokens already)
//     has nothing to put;
//   - its content key from the KMS (cached), which the KMS binds to the room's resource: a room's
//     resource is the one the first key that opened its content is bound to, and a later key bound
//     to another resource is refused (a core that moved one room's ciphertext into another's
//     stream cannot make the indexer index it there);
//   - decrypt, extract the terms (TermExtractor, the organization's language), make them tokens
//     with the room's key (RoomSearchKey, from the organization's current search key version),
//     pad with the activity's deterministic decoys;
//   - the batch's sets put with POST /v1/index/sets, at most kMaxSetsPerPut (and about 384 KiB)
//     per request, all or nothing per request;
//   - after the puts, the cursor and the rooms in one transaction (IndexerStore::Commit).
// A crash between a put and the commit replays the put after the restart: the same set, which the
// core's put replaces, so nothing is indexed twice. A request the core refuses for one of its sets
// (NOT_FOUND, INVALID_ARGUMENT) is put again set by set, and the refused sets are skipped.
//
// An activity the indexer cannot read (the KMS refuses its key: the indexer is not authorized on
// that room; content that does not open or is not text) is skipped and counted, with a log line
// that names the activity but never its content. A failure that may pass (the KMS or the core
// unavailable) stops the batch: what was put before it is committed and the error returned, and
// the caller resumes from the cursor.
#ifndef STRONGROOM_INDEXER_INDEXING_PIPELINE_H_
#define STRONGROOM_INDEXER_INDEXING_PIPELINE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "strongroom/client/key_cache.h"
#include "strongroom/common/error.h"
#include "strongroom/indexer/indexer_ports.h"
#include "strongroom/indexer/indexer_store.h"
#include "strongroom/indexer/room_search_key.h"
#include "strongroom/indexer/term_extractor.h"

namespace strongroom::indexer {

using Logger = std::function<void(const std::string& line)>;

// The organization's search keys by version, from the KMS on first use, and the rooms' keys
// derived from them (bounded). Thread-safe.
class SearchKeys {
 public:
  explicit SearchKeys(IndexerKms& kms, std::size_t max_room_keys = 4096)
      : kms_(kms), max_room_keys_(max_room_keys) {}
  // The current version (asked of the KMS once, then kept until Refresh).
  Result<std::uint32_t> CurrentVersion();
  // Asks the KMS for its current version and adopts it when it is newer; the current version.
  Result<std::uint32_t> Refresh();
  Result<std::shared_ptr<const RoomSearchKey>> RoomKey(const std::string& conversation_id,
                                                       std::uint32_t version);
  // Held by a batch from its first token to its commit: Refresh adopts a newer version only
  // when no batch holds it (and new holds wait while it adopts one, so it is not starved), so
  // every batch committed after Refresh used the newer version.
  class Hold {
   public:
    explicit Hold(SearchKeys& keys);
    ~Hold();
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;

   private:
    SearchKeys& keys_;
  };

 private:
  IndexerKms& kms_;
  const std::size_t max_room_keys_;
  std::mutex gate_mutex_;  // holds and adoptions (Hold, Refresh)
  std::condition_variable gate_;
  int holders_ = 0;
  bool adopting_ = false;
  std::mutex mutex_;
  std::optional<std::uint32_t> current_;
  std::map<std::uint32_t, SecretBytes> org_keys_;
  std::map<std::pair<std::string, std::uint32_t>, std::shared_ptr<const RoomSearchKey>> rooms_;
};

struct BatchResult {
  std::int64_t last_seq = 0;               // the cursor committed
  std::size_t indexed = 0;                 // activities whose tokens were put
  std::size_t skipped = 0;                 // activities with words the indexer could not read
  std::vector<std::int64_t> published_ms;  // of the activities put (the lag)
};

class IndexingPipeline {
 public:
  // All must outlive the pipeline; `language` is a TermExtractor language (checked by settings).
  static Result<std::unique_ptr<IndexingPipeline>> New(IndexerKms& kms, IndexerCore& core,
                                                       IndexerStore& store, SearchKeys& keys,
                                                       const std::string& language, Logger log);

  // Indexes `batch` (ascending seq, after the cursor) with the current search key version and
  // commits the cursor. Used by one thread.
  Result<BatchResult> Process(const std::vector<client::Activity>& batch);

  // The re-index: puts the sets of the activities of `batch` with seq in (after, up_to] again,
  // with search key `version`; commits nothing (the job keeps its own progress). last_seq is the
  // last activity done. Used by one thread (another than Process's: a pipeline each).
  Result<BatchResult> Reindex(const std::vector<client::Activity>& batch, std::int64_t after,
                              std::int64_t up_to, std::uint32_t version);

 private:
  IndexingPipeline(IndexerKms& kms, IndexerCore& core, IndexerStore& store, SearchKeys& keys,
                   TermExtractor extractor, Logger log);
  // The room of an activity's conversation (the store's, or learnt from `resource_uri`).
  Result<Room> RoomFor(const std::string& conversation_id, const std::string& resource_uri);
  // An activity's set, ready to put.
  struct Pending {
    std::int64_t seq = 0;
    std::int64_t published_ms = 0;
    TokenSet set;
    Room room;
  };
  enum class Outcome { kNothing, kPrepared, kSkipped };
  // An error of the kind the header says stops the batch.
  Result<Outcome> Prepare(const client::Activity& activity, std::uint32_t version,
                          std::vector<Pending>& out);
  // Puts `pending` in requests of at most kMaxSetsPerPut; `put` says which were. Returns the
  // index of the first set not put because of an error that stops the batch (with the error), or
  // pending.size().
  std::pair<std::size_t, std::optional<Error>> PutAll(const std::vector<Pending>& pending,
                                                      std::vector<bool>& put);
  // Prepares and puts `batch`'s activities in (after, up_to]; the result and the error that
  // stopped it, if any.
  std::pair<BatchResult, std::optional<Error>> Run(const std::vector<client::Activity>& batch,
                                                   std::int64_t after, std::int64_t up_to,
                                                   std::uint32_t version,
                                                   std::vector<Pending>* put_sets);

  IndexerKms& kms_;
  IndexerCore& core_;
  IndexerStore& store_;
  SearchKeys& keys_;
  TermExtractor extractor_;
  Logger log_;
  client::KeyCache content_keys_;
  std::map<std::string, Room> rooms_;  // conversation -> room, as committed or being committed
};

// The stream followed for as long as the daemon runs: opened from the stored cursor, batches
// processed, and on any failure closed and opened again from the cursor after a backoff. Its
// state is what /health reports.
class IndexerLoop {
 public:
  struct State {
    bool stream_connected = false;
    std::int64_t cursor = 0;
    std::int64_t indexed = 0;  // since start
    std::int64_t skipped = 0;
    // How far behind the stream it is: now minus the publication time of the newest activity of
    // the last batch, 0 when the stream had nothing more to give.
    std::int64_t lag_ms = 0;
    // Per activity put, its put's end minus its publication, over the last kLagWindow: the
    // median and the 99th percentile (0 before any).
    std::int64_t lag_p50_ms = 0;
    std::int64_t lag_p99_ms = 0;
    std::string last_error;  // empty when the last attempt worked; never content or a token
  };

  // Activities gathered from the stream into one batch: at most kMaxBatch, asking for more for
  // kGather after the first came (a last wait may add up to one more kGather).
  static constexpr std::size_t kMaxBatch = 1024;
  static constexpr std::chrono::milliseconds kGather{20};
  static constexpr std::size_t kLagWindow = 10000;

  IndexerLoop(IndexingPipeline& pipeline, IndexerStore& store, StreamOpener open, Logger log,
              std::function<std::int64_t()> now_ms = {});
  ~IndexerLoop();  // Stop()s
  void Start();
  void Stop();
  State state() const;

 private:
  void Run();
  IndexingPipeline& pipeline_;
  IndexerStore& store_;
  StreamOpener open_;
  Logger log_;
  std::function<std::int64_t()> now_ms_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  State state_;
  std::vector<std::int64_t> lags_;  // a ring of kLagWindow
  std::size_t lag_next_ = 0;
};

// The re-index after a search-key rotation: every `check_period` (and at Start) it asks the KMS
// for the current search key version (SearchKeys::Refresh); when a room is of an older version
// and no job for the current one is running, it starts one: target = the current version, from
// seq 0 up to the stream cursor of that moment (end_seq), progress in the store's `jobs` table
// ("reindex"), saved after every batch. It opens its own stream from the job's cursor and puts
// each activity's set again with the target version (IndexingPipeline::Reindex, its own
// pipeline); a failure reopens it from the saved cursor with a backoff, and a restart of indexerd
// resumes it. Done when the stream reached end_seq: the job and every room's version (to the
// target) in one transaction; the old tokens were replaced activity by activity. A newer rotation
// during a job starts the job again for the newer version.
class ReindexJob {
 public:
  static constexpr char kName[] = "reindex";
  ReindexJob(IndexingPipeline& pipeline, IndexerStore& store, SearchKeys& keys, StreamOpener open,
             Logger log, std::chrono::milliseconds check_period);
  ~ReindexJob();  // Stop()s
  void Start();
  void Stop();
  // The job's progress as saved (nullopt when there never was one), and the current version.
  std::optional<JobProgress> progress() const;
  std::uint32_t current_version() const;

 private:
  void Run();
  // Refreshes the version and starts or resumes a job when one is due; the job to run, if any.
  Result<std::optional<JobProgress>> Due();
  // Runs `job` until it is done, stopped or fails.
  Status RunJob(JobProgress& job);
  void Publish(const JobProgress& job);

  IndexingPipeline& pipeline_;
  IndexerStore& store_;
  SearchKeys& keys_;
  StreamOpener open_;
  Logger log_;
  const std::chrono::milliseconds check_period_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::optional<JobProgress> progress_;
  std::uint32_t current_version_ = 0;
};

}  // namespace strongroom::indexer

#endif  // STRONGROOM_INDEXER_INDEXING_PIPELINE_H_
