// The blob store in a directory, which several cored processes may share (on NFS v4.1+, see
// docs/operations/cored.md). The layout:
//
//   <dir>/<file id>                     a stored blob (mode 0600)
//   <dir>/uploads/<node>.lock           held (flock) by the process `node` while it runs
//   <dir>/uploads/<node>/<id>.upload    an upload of that process in progress (mode 0600)
//   <dir>/unrecorded/<file id>          a blob set aside: stored, but never recorded
//
// `node` is new for every process (host name, pid and random bits), so no two processes ever
// write in one upload directory; a process locks its lock before it makes its directory, so
// whoever finds the directory finds the lock taken. An upload is fsynced, renamed to `<dir>/<id>`
// and the directory fsynced before the service records the blob: the same open, writes, fsyncs and
// rename as with one node. A start's clean-up removes an upload only when it is certainly
// abandoned: its process is gone (its lock is free) or the file was not written for
// kUnfinishedUploadAge (an upload in progress is written at least every io_timeout, or the
// transport drops it). It sets a blob the database does not record aside only when the blob is
// older than kUnrecordedBlobAge, far beyond any honest gap between an upload's last write and its
// record's commit; a younger one may be another node's upload about to be recorded, and a later
// start sees it again.
#ifndef STRONGROOM_CORE_SRC_DIRECTORY_BLOB_STORE_H_
#define STRONGROOM_CORE_SRC_DIRECTORY_BLOB_STORE_H_

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "blob_store.h"

namespace strongroom::core::internal {

class DirectoryBlobStore final : public BlobStore {
 public:
  // Another process's upload not written for this long is abandoned, even if its lock is held (an
  // NFS server keeps a crashed client's lock until its lease expires, 90 s by default). An upload
  // in progress is written at least every io_timeout (30 s by default, the longest a read waits).
  static constexpr std::chrono::minutes kUnfinishedUploadAge{60};
  // A blob the database does not record is set aside only when it was last written this long
  // ago. Between an upload's last write and its record's commit come its fsync, the rename, the
  // writer's queue and the commit, which the database's lock timeout bounds; only a connection
  // to the database lost without a reset can stall longer, and TCP gives such a connection up
  // after about 15 minutes (tcp_retries2), failing the record (and the blob is removed).
  static constexpr std::chrono::minutes kUnrecordedBlobAge{60};

  // The store in `dir`, created (owner only) when absent together with its layout; several
  // processes may open it at once. Takes this process's upload directory and its lock.
  static Result<std::unique_ptr<DirectoryBlobStore>> Open(const std::string& dir,
                                                          std::uint64_t max_file_bytes);
  // Releases the lock and removes the upload directory when empty.
  ~DirectoryBlobStore() override;
  DirectoryBlobStore(const DirectoryBlobStore&) = delete;
  DirectoryBlobStore& operator=(const DirectoryBlobStore&) = delete;

  Result<std::unique_ptr<BlobUpload>> Begin() const override;
  void Remove(const std::string& file_id) const override;
  Result<std::string> PathOf(const std::string& file_id) const override;
  Result<Leftovers> FindLeftovers(const RecordedFilter& recorded) const override;
  Result<Cleaned> CleanUp(const Leftovers& leftovers) const override;

  // This process's upload directory (<dir>/uploads/<node>).
  const std::filesystem::path& upload_dir() const { return upload_dir_; }

 private:
  DirectoryBlobStore(std::filesystem::path dir, std::filesystem::path upload_dir, int lock_fd,
                     std::uint64_t max_file_bytes)
      : dir_(std::move(dir)),
        upload_dir_(std::move(upload_dir)),
        lock_fd_(lock_fd),
        max_file_bytes_(max_file_bytes) {}

  // Adds another process's uploads in `node_dir` that are abandoned to `found`.
  void FindAbandonedUploads(const std::filesystem::path& node_dir, Leftovers& found) const;

  const std::filesystem::path dir_;
  const std::filesystem::path upload_dir_;
  const int lock_fd_;
  const std::uint64_t max_file_bytes_;
};

}  // namespace strongroom::core::internal

#endif  // STRONGROOM_CORE_SRC_DIRECTORY_BLOB_STORE_H_
