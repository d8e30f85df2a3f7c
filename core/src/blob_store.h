// Where the core keeps the encrypted blobs of its files; a blob is never parsed. The service sees
// only this interface: the blob store shared by every cored node of a deployment is a directory
// today (DirectoryBlobStore, directory_blob_store.h) and can become an object store without the
// service changing.
//
// The protocol every implementation keeps: an upload is written under a new file id, made durable
// and stored (Keep) BEFORE the service records the file in the database; a stored blob whose
// record fails is removed. What a crash leaves in between, a start finds (FindLeftovers) and
// cleans up (CleanUp): unfinished uploads are removed, blobs stored but never recorded are set
// aside, never deleted (a database restored from an older backup, or the wrong database, must
// not cost them). No client was ever given an id for either. Several nodes share one store, so
// the clean-up at one node's start must leave alone what another node is still uploading or has
// stored but not yet recorded: each implementation says how.
//
// Thread safety: a store's methods may be called from any thread at once; an upload is used by
// one thread at a time.
#ifndef STRONGROOM_CORE_SRC_BLOB_STORE_H_
#define STRONGROOM_CORE_SRC_BLOB_STORE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "strongroom/common/error.h"

namespace strongroom::core::internal {

// An upload being written under a new file id, with its size and SHA-256 so far. Destroying an
// upload that was not kept discards what was written.
class BlobUpload {
 public:
  virtual ~BlobUpload() = default;

  // Appends bytes; RESOURCE_EXHAUSTED past the store's largest file (what was written is
  // discarded, and so is every later write).
  virtual Status Write(const char* data, std::size_t size) = 0;
  // Makes the bytes durable and stores them as the blob of id(); returns their SHA-256 (hex).
  // On failure nothing of the upload is left.
  virtual Result<std::string> Keep() = 0;

  virtual std::uint64_t size() const = 0;
  virtual const std::string& id() const = 0;
};

class BlobStore {
 public:
  // What earlier runs left, as the store names it (paths, for a directory).
  struct Leftovers {
    std::vector<std::string> unfinished;  // uploads no one will finish
    std::vector<std::string> unrecorded;  // blobs stored but never recorded
    std::vector<std::string> abandoned;   // the store's own bookkeeping of uploaders that are gone
  };
  struct Cleaned {
    std::size_t unfinished_uploads = 0;  // removed
    std::size_t unrecorded_blobs = 0;    // set aside
  };
  // Which of the blob ids given (up to 4,096 at a time) the database records.
  using RecordedFilter = std::function<std::set<std::string>(const std::vector<std::string>& ids)>;

  virtual ~BlobStore() = default;

  // A new upload, under a new file id.
  virtual Result<std::unique_ptr<BlobUpload>> Begin() const = 0;
  // Removes a stored blob (one whose record failed); nothing when there is none.
  virtual void Remove(const std::string& file_id) const = 0;
  // A local file holding the stored blob, which the transport sends as it is; DATA_LOSS when the
  // blob is missing.
  virtual Result<std::string> PathOf(const std::string& file_id) const = 0;

  // Finds what earlier runs left; changes nothing.
  virtual Result<Leftovers> FindLeftovers(const RecordedFilter& recorded) const = 0;
  // Removes the unfinished uploads and sets the unrecorded blobs aside.
  virtual Result<Cleaned> CleanUp(const Leftovers& leftovers) const = 0;
};

// The blob store at `location` (today a directory, created owner-only when absent); uploads are at
// most `max_file_bytes`.
Result<std::unique_ptr<BlobStore>> OpenBlobStore(const std::string& location,
                                                 std::uint64_t max_file_bytes);

}  // namespace strongroom::core::internal

#endif  // STRONGROOM_CORE_SRC_BLOB_STORE_H_
