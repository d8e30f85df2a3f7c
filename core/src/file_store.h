// The encrypted blobs of the core's files, one file per file id under the files directory; a blob
// is never parsed. An upload streams into `<id>.upload` (mode 0600), which is fsynced, renamed to
// `<id>` and the directory fsynced before the service records the blob in the database. What a
// crash leaves in between, a start finds (FindLeftovers) and cleans up (CleanUp): unfinished
// uploads are removed, blobs stored but never recorded are moved into `unrecorded/` (never
// deleted: a database restored from an older backup, or the wrong database, must not cost them).
// No client was ever given an id for either.
#ifndef STRONGROOM_CORE_SRC_FILE_STORE_H_
#define STRONGROOM_CORE_SRC_FILE_STORE_H_

#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "strongroom/common/error.h"

namespace strongroom::core::internal {

// An upload being written: a temporary file, its size and SHA-256 so far. The temporary file is
// removed when this is destroyed, unless FileStore::Keep made it the stored blob.
class PendingBlob {
 public:
  ~PendingBlob();
  PendingBlob(const PendingBlob&) = delete;
  PendingBlob& operator=(const PendingBlob&) = delete;

  // Appends bytes; RESOURCE_EXHAUSTED past the store's largest file (the temporary file is
  // removed).
  Status Write(const char* data, std::size_t size);
  std::uint64_t size() const { return size_; }
  const std::string& id() const { return id_; }

 private:
  friend class FileStore;
  PendingBlob(std::string id, std::filesystem::path temp, int fd, std::uint64_t max_bytes);
  // Makes the bytes durable, closes the file and returns the SHA-256 (hex).
  Result<std::string> Seal();
  // The temporary file became the stored blob (renamed): nothing to remove any more.
  void Kept() { temp_.clear(); }
  Status Fail(Error error);
  void Discard();

  const std::string id_;
  std::filesystem::path temp_;
  int fd_;
  const std::uint64_t max_bytes_;
  EVP_MD_CTX* digest_;
  std::uint64_t size_ = 0;
  Status status_;
};

class FileStore {
 public:
  // What a previous run left in the directory.
  struct Leftovers {
    std::vector<std::filesystem::path> unfinished;  // uploads it did not finish
    std::vector<std::filesystem::path> unrecorded;  // blobs it stored but did not record
  };
  struct Cleaned {
    std::size_t unfinished_uploads = 0;  // removed
    std::size_t unrecorded_blobs = 0;    // moved into unrecorded/
  };
  // Which of the blob ids given (up to 4,096 at a time) the database records.
  using RecordedFilter = std::function<std::set<std::string>(const std::vector<std::string>& ids)>;

  // The store in `dir`, created (owner only) when absent; uploads are at most `max_file_bytes`.
  static Result<FileStore> Open(const std::string& dir, std::uint64_t max_file_bytes);

  Result<Leftovers> FindLeftovers(const RecordedFilter& recorded) const;
  // Removes the unfinished uploads and moves the unrecorded blobs aside.
  Result<Cleaned> CleanUp(const Leftovers& leftovers) const;

  // A new upload, under a new file id.
  Result<std::unique_ptr<PendingBlob>> Begin() const;
  // Stores the upload as the blob of its id: fsynced, renamed into place and the directory
  // fsynced. Returns its SHA-256 (hex). On failure nothing of it is left.
  Result<std::string> Keep(PendingBlob& blob) const;
  // Removes a stored blob (one whose record failed).
  void Remove(const std::string& file_id) const;
  // The path of a stored blob; DATA_LOSS when it is missing.
  Result<std::string> PathOf(const std::string& file_id) const;

 private:
  FileStore(std::filesystem::path dir, std::uint64_t max_file_bytes)
      : dir_(std::move(dir)), max_file_bytes_(max_file_bytes) {}

  std::filesystem::path dir_;
  std::uint64_t max_file_bytes_;
};

}  // namespace strongroom::core::internal

#endif  // STRONGROOM_CORE_SRC_FILE_STORE_H_
