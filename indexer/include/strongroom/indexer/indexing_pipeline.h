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
//     with the room's key (RoomSearchKey, from the organization's search key of the room's
//     version), pad with the activity's deterministic decoys, and PUT the set;
//   - after the batch's PUTs, the cursor and the rooms in one transaction (IndexerStore::Commit).
// A crash between a PUT and the commit replays the PUT after the restart: the same set, which the
// core's PUT replaces, so nothing is indexed twice.
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
  // The current version (asked of the KMS once, then kept).
  Result<std::uint32_t> CurrentVersion();
  Result<std::shared_ptr<const RoomSearchKey>> RoomKey(const std::string& conversation_id,
                                                       std::uint32_t version);

 private:
  IndexerKms& kms_;
  const std::size_t max_room_keys_;
  std::mutex mutex_;
  std::optional<std::uint32_t> current_;
  std::map<std::uint32_t, SecretBytes> org_keys_;
  std::map<std::pair<std::string, std::uint32_t>, std::shared_ptr<const RoomSearchKey>> rooms_;
};

struct BatchResult {
  std::int64_t last_seq = 0;  // the cursor committed
  std::size_t indexed = 0;    // activities whose tokens were put
  std::size_t skipped = 0;    // activities with words the indexer could not read
};

class IndexingPipeline {
 public:
  // All must outlive the pipeline; `language` is a TermExtractor language (checked by settings).
  static Result<std::unique_ptr<IndexingPipeline>> New(IndexerKms& kms, IndexerCore& core,
                                                       IndexerStore& store, SearchKeys& keys,
                                                       const std::string& language, Logger log);

  // Indexes `batch` (ascending seq, after the cursor) and commits the cursor. Used by one thread.
  Result<BatchResult> Process(const std::vector<client::Activity>& batch);

 private:
  IndexingPipeline(IndexerKms& kms, IndexerCore& core, IndexerStore& store, SearchKeys& keys,
                   TermExtractor extractor, Logger log);
  // The room of an activity's conversation (the store's, or learnt from `resource_uri`).
  Result<Room> RoomFor(const std::string& conversation_id, const std::string& resource_uri);
  // nullopt: nothing to put; an error of the kind the header says stops the batch.
  enum class Outcome { kNothing, kPut, kSkipped };
  Result<Outcome> IndexOne(const client::Activity& activity,
                           std::map<std::string, IndexerStore::RoomUpdate>& updates);

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
    std::string last_error;  // empty when the last attempt worked; never content or a token
  };

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
};

}  // namespace strongroom::indexer

#endif  // STRONGROOM_INDEXER_INDEXING_PIPELINE_H_
