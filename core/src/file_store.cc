#include "file_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "validation.h"

namespace strongroom::core::internal {
namespace {

constexpr char kUploadSuffix[] = ".upload";
// Where FindLeftovers' unrecorded blobs are moved.
constexpr char kUnrecordedDir[] = "unrecorded";
constexpr std::size_t kBlobsPerLookup = 4096;

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

}  // namespace

// --- PendingBlob ------------------------------------------------------------------------------

PendingBlob::PendingBlob(std::string id, std::filesystem::path temp, int fd,
                         std::uint64_t max_bytes)
    : id_(std::move(id)),
      temp_(std::move(temp)),
      fd_(fd),
      max_bytes_(max_bytes),
      digest_(EVP_MD_CTX_new()) {
  if (digest_ == nullptr || EVP_DigestInit_ex(digest_, EVP_sha256(), nullptr) != 1) {
    (void)Fail(Error(ErrorCode::kInternal, "cannot start SHA-256"));
  }
}

PendingBlob::~PendingBlob() {
  Discard();
  EVP_MD_CTX_free(digest_);
}

Status PendingBlob::Write(const char* data, std::size_t size) {
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

Result<std::string> PendingBlob::Seal() {
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
  return Hex(md, length);
}

Status PendingBlob::Fail(Error error) {
  Discard();
  status_ = error;
  return error;
}

void PendingBlob::Discard() {
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

// --- FileStore --------------------------------------------------------------------------------

Result<FileStore> FileStore::Open(const std::string& dir, std::uint64_t max_file_bytes) {
  std::error_code ec;
  const std::filesystem::path files_dir(dir);
  if (!std::filesystem::is_directory(files_dir, ec)) {
    if (!std::filesystem::create_directories(files_dir, ec) || ec) {
      return Error(ErrorCode::kUnavailable,
                   "cannot create the files directory " + dir + ": " + ec.message());
    }
    std::filesystem::permissions(files_dir, std::filesystem::perms::owner_all, ec);
  }
  return FileStore(files_dir, max_file_bytes);
}

Result<FileStore::Leftovers> FileStore::FindLeftovers(const RecordedFilter& recorded) const {
  Leftovers found;
  const std::size_t suffix = std::strlen(kUploadSuffix);
  std::vector<std::string> blobs;  // looked up in batches
  auto check = [&] {
    const std::set<std::string> known = recorded(blobs);
    for (const std::string& blob : blobs) {
      if (!known.count(blob)) found.unrecorded.push_back(dir_ / blob);
    }
    blobs.clear();
  };
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    std::error_code ignored;
    if (name.size() > suffix && name.compare(name.size() - suffix, suffix, kUploadSuffix) == 0) {
      found.unfinished.push_back(it->path());
    } else if (IsUuid(name) && it->is_regular_file(ignored)) {
      blobs.push_back(std::move(name));
      if (blobs.size() == kBlobsPerLookup) check();
    }
  }
  check();
  if (ec) {
    return Error(ErrorCode::kUnavailable,
                 "cannot read the files directory " + dir_.string() + ": " + ec.message());
  }
  return found;
}

Result<FileStore::Cleaned> FileStore::CleanUp(const Leftovers& leftovers) const {
  Cleaned cleaned;
  for (const std::filesystem::path& path : leftovers.unfinished) {
    std::error_code ignored;
    if (std::filesystem::remove(path, ignored)) ++cleaned.unfinished_uploads;
  }
  if (!leftovers.unrecorded.empty()) {
    std::error_code ec;
    const std::filesystem::path aside = dir_ / kUnrecordedDir;
    std::filesystem::create_directory(aside, ec);
    if (ec) {
      return Error(ErrorCode::kUnavailable,
                   "cannot create " + aside.string() + " for unrecorded blobs: " + ec.message());
    }
    for (const std::filesystem::path& path : leftovers.unrecorded) {
      std::filesystem::rename(path, aside / path.filename(), ec);
      if (ec) {
        return Error(ErrorCode::kUnavailable,
                     "cannot move an unrecorded blob into " + aside.string() + ": " + ec.message());
      }
      ++cleaned.unrecorded_blobs;
    }
    SR_RETURN_IF_ERROR(SyncDirectory(dir_));
  }
  return cleaned;
}

Result<std::unique_ptr<PendingBlob>> FileStore::Begin() const {
  std::string file_id = NewUuid();
  std::filesystem::path temp = dir_ / (file_id + kUploadSuffix);
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return Error(ErrorCode::kUnavailable,
                 "cannot create an upload in " + dir_.string() + ": " + strerror(errno));
  }
  return std::unique_ptr<PendingBlob>(
      new PendingBlob(std::move(file_id), std::move(temp), fd, max_file_bytes_));
}

Result<std::string> FileStore::Keep(PendingBlob& blob) const {
  SR_ASSIGN_OR_RETURN(std::string sha256_hex, blob.Seal());
  const std::filesystem::path stored = dir_ / blob.id();
  if (::rename(blob.temp_.c_str(), stored.c_str()) != 0) {
    return Error(ErrorCode::kUnavailable,
                 std::string("cannot store the uploaded file: ") + strerror(errno));
  }
  blob.Kept();
  if (Status synced = SyncDirectory(dir_); !synced.ok()) {
    Remove(blob.id());
    return synced.error();
  }
  return sha256_hex;
}

void FileStore::Remove(const std::string& file_id) const {
  std::error_code ignored;
  std::filesystem::remove(dir_ / file_id, ignored);
}

Result<std::string> FileStore::PathOf(const std::string& file_id) const {
  const std::filesystem::path blob = dir_ / file_id;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(blob, ec)) {
    return Error(ErrorCode::kDataLoss, "the stored blob of file " + file_id + " is missing");
  }
  return blob.string();
}

}  // namespace strongroom::core::internal
