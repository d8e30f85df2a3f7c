#include "directory_blob_store.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <vector>

#include "validation.h"

namespace strongroom::core::internal {
namespace {

namespace fs = std::filesystem;

constexpr char kUploadSuffix[] = ".upload";
constexpr char kLockSuffix[] = ".lock";
// Every process's upload directory and lock file.
constexpr char kUploadsDir[] = "uploads";
// Where FindLeftovers' unrecorded blobs are moved.
constexpr char kUnrecordedDir[] = "unrecorded";
constexpr std::size_t kBlobsPerLookup = 4096;

bool EndsWith(const std::string& name, std::string_view suffix) {
  return name.size() > suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Whether `path` was last written more than `age` ago. A file that is gone is not old: it is no
// one's leftover any more.
bool OlderThan(const fs::path& path, std::chrono::minutes age) {
  std::error_code ec;
  const fs::file_time_type written = fs::last_write_time(path, ec);
  return !ec && written < fs::file_time_type::clock::now() - age;
}

Error Unavailable(const std::string& what, int error) {
  return Error(ErrorCode::kUnavailable, what + ": " + strerror(error));
}

Status SyncDirectory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Unavailable("cannot open " + dir.string(), errno);
  const int rc = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  if (rc != 0) return Unavailable("cannot sync " + dir.string(), saved);
  return OkStatus();
}

// Creates `dir` (owner only) unless it is there: several nodes starting at once may each find it
// absent, and whichever creates it, every one of them goes on.
Status EnsureDirectory(const fs::path& dir) {
  if (::mkdir(dir.c_str(), 0700) == 0) return OkStatus();
  const int saved = errno;
  std::error_code ec;
  if (saved == EEXIST && fs::is_directory(dir, ec)) return OkStatus();
  return Unavailable("cannot create the directory " + dir.string(), saved);
}

// A name no other process ever has: the host's (readable in a listing), the pid and random bits
// (pids repeat across hosts and restarts).
std::string NewNodeName() {
  char host[HOST_NAME_MAX + 1] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  std::string name;
  for (const char* c = host; *c != '\0' && name.size() < 64; ++c) {
    const bool plain = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                       (*c >= '0' && *c <= '9') || *c == '-' || *c == '.';
    name += plain ? *c : '_';
  }
  if (name.empty()) name = "host";
  return name + "-" + std::to_string(::getpid()) + "-" + NewUuid().substr(0, 8);
}

// An upload streaming into <dir>/uploads/<node>/<id>.upload, with its size and SHA-256 so far.
// The temporary file is removed when this is destroyed, unless Keep made it the stored blob.
class DirectoryUpload final : public BlobUpload {
 public:
  DirectoryUpload(std::string id, fs::path temp, fs::path stored, int fd, std::uint64_t max_bytes)
      : id_(std::move(id)),
        temp_(std::move(temp)),
        stored_(std::move(stored)),
        fd_(fd),
        max_bytes_(max_bytes),
        digest_(EVP_MD_CTX_new()) {
    if (digest_ == nullptr || EVP_DigestInit_ex(digest_, EVP_sha256(), nullptr) != 1) {
      (void)Fail(Error(ErrorCode::kInternal, "cannot start SHA-256"));
    }
  }
  ~DirectoryUpload() override {
    Discard();
    EVP_MD_CTX_free(digest_);
  }
  DirectoryUpload(const DirectoryUpload&) = delete;
  DirectoryUpload& operator=(const DirectoryUpload&) = delete;

  Status Write(const char* data, std::size_t size) override {
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
      if (n < 0) return Fail(Unavailable("cannot write the upload", errno));
      written += static_cast<std::size_t>(n);
    }
    size_ += size;
    return OkStatus();
  }

  // Seals the bytes (fsync), renames them into place and fsyncs the directory, so the blob is
  // durable before the service records it.
  Result<std::string> Keep() override {
    SR_ASSIGN_OR_RETURN(std::string sha256_hex, Seal());
    if (::rename(temp_.c_str(), stored_.c_str()) != 0) {
      return Fail(Unavailable("cannot store the uploaded file", errno)).error();
    }
    temp_.clear();
    status_ = Error(ErrorCode::kFailedPrecondition, "the upload was stored");
    if (Status synced = SyncDirectory(stored_.parent_path()); !synced.ok()) {
      std::error_code ignored;
      fs::remove(stored_, ignored);
      return synced.error();
    }
    return sha256_hex;
  }

  std::uint64_t size() const override { return size_; }
  const std::string& id() const override { return id_; }

 private:
  // Makes the bytes durable, closes the file and returns the SHA-256 (hex).
  Result<std::string> Seal() {
    if (!status_.ok()) return status_.error();
    if (::fsync(fd_) != 0) return Fail(Unavailable("cannot sync the upload", errno)).error();
    ::close(fd_);
    fd_ = -1;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (EVP_DigestFinal_ex(digest_, md, &length) != 1) {
      return Fail(Error(ErrorCode::kInternal, "SHA-256 failed")).error();
    }
    return Hex(md, length);
  }

  Status Fail(Error error) {
    Discard();
    status_ = error;
    return error;
  }

  void Discard() {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    if (!temp_.empty()) {
      std::error_code ignored;
      fs::remove(temp_, ignored);
      temp_.clear();
    }
  }

  const std::string id_;
  fs::path temp_;
  const fs::path stored_;
  int fd_;
  const std::uint64_t max_bytes_;
  EVP_MD_CTX* digest_;
  std::uint64_t size_ = 0;
  Status status_;
};

}  // namespace

Result<std::unique_ptr<DirectoryBlobStore>> DirectoryBlobStore::Open(const std::string& dir,
                                                                     std::uint64_t max_file_bytes) {
  fs::path files_dir = fs::path(dir).lexically_normal();
  if (!files_dir.has_filename()) files_dir = files_dir.parent_path();  // "files/"
  std::error_code ec;
  if (!fs::is_directory(files_dir, ec)) {
    // The parents as any program would make them; the files directory itself owner only.
    if (files_dir.has_parent_path()) fs::create_directories(files_dir.parent_path(), ec);
    if (Status made = EnsureDirectory(files_dir); !made.ok()) {
      return Error(ErrorCode::kUnavailable, "cannot create the files directory " + dir + ": " +
                                                (ec ? ec.message() : made.error().message()));
    }
  }
  const fs::path uploads = files_dir / kUploadsDir;
  SR_RETURN_IF_ERROR(EnsureDirectory(uploads));
  // The lock first, then the directory it guards: whoever finds the directory finds it locked.
  const std::string node = NewNodeName();
  const fs::path lock = uploads / (node + kLockSuffix);
  const int lock_fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (lock_fd < 0) return Unavailable("cannot create " + lock.string(), errno);
  const fs::path upload_dir = uploads / node;
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0 || ::mkdir(upload_dir.c_str(), 0700) != 0) {
    const int saved = errno;
    ::unlink(lock.c_str());
    ::close(lock_fd);
    return Unavailable("cannot take the upload directory " + upload_dir.string(), saved);
  }
  return std::unique_ptr<DirectoryBlobStore>(
      new DirectoryBlobStore(files_dir, upload_dir, lock_fd, max_file_bytes));
}

DirectoryBlobStore::~DirectoryBlobStore() {
  // Empty unless an upload outlives the store: then its lock stays, free, and the next start
  // finds a process that is gone. The lock is closed before it is unlinked, which on NFS would
  // otherwise leave a `.nfs*` file behind while it is open.
  const bool emptied = ::rmdir(upload_dir_.c_str()) == 0;
  ::close(lock_fd_);
  if (emptied) ::unlink((upload_dir_.string() + kLockSuffix).c_str());
}

Result<std::unique_ptr<BlobUpload>> DirectoryBlobStore::Begin() const {
  std::string file_id = NewUuid();
  fs::path temp = upload_dir_ / (file_id + kUploadSuffix);
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return Unavailable("cannot create an upload in " + upload_dir_.string(), errno);
  fs::path stored = dir_ / file_id;
  return std::unique_ptr<BlobUpload>(std::make_unique<DirectoryUpload>(
      std::move(file_id), std::move(temp), std::move(stored), fd, max_file_bytes_));
}

void DirectoryBlobStore::Remove(const std::string& file_id) const {
  std::error_code ignored;
  fs::remove(dir_ / file_id, ignored);
}

Result<std::string> DirectoryBlobStore::PathOf(const std::string& file_id) const {
  const fs::path blob = dir_ / file_id;
  std::error_code ec;
  if (!fs::is_regular_file(blob, ec)) {
    return Error(ErrorCode::kDataLoss, "the stored blob of file " + file_id + " is missing");
  }
  return blob.string();
}

void DirectoryBlobStore::FindAbandonedUploads(const fs::path& node_dir, Leftovers& found) const {
  const fs::path lock = node_dir.string() + kLockSuffix;
  // A process holds its lock while it runs (the kernel, or the NFS server once the client's lease
  // expires, drops it when the process is gone); a free lock is a process that is gone.
  bool gone = false;
  bool lock_missing = false;
  if (const int fd = ::open(lock.c_str(), O_RDWR | O_CLOEXEC); fd >= 0) {
    gone = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
    ::close(fd);
  } else {
    lock_missing = errno == ENOENT;
  }
  std::error_code ec;
  for (fs::directory_iterator it(node_dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (EndsWith(it->path().filename().string(), kUploadSuffix) &&
        (gone || OlderThan(it->path(), kUnfinishedUploadAge))) {
      found.unfinished.push_back(it->path().string());
    }
  }
  // Its directory goes once empty, then its lock; a directory whose lock is missing (a clean-up
  // that stopped half-way) only once it is old.
  if (gone || (lock_missing && OlderThan(node_dir, kUnfinishedUploadAge))) {
    found.abandoned.push_back(node_dir.string());
    if (gone) found.abandoned.push_back(lock.string());
  }
}

Result<BlobStore::Leftovers> DirectoryBlobStore::FindLeftovers(
    const RecordedFilter& recorded) const {
  Leftovers found;
  std::vector<std::string> blobs;  // looked up in batches
  auto check = [&] {
    const std::set<std::string> known = recorded(blobs);
    // The age is read after the lookup: a blob last written kUnrecordedBlobAge before a lookup
    // that did not find it cannot be an upload whose record is about to commit.
    for (const std::string& blob : blobs) {
      if (!known.count(blob) && OlderThan(dir_ / blob, kUnrecordedBlobAge)) {
        found.unrecorded.push_back((dir_ / blob).string());
      }
    }
    blobs.clear();
  };
  std::error_code ec;
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    std::error_code ignored;
    if (EndsWith(name, kUploadSuffix)) {
      // An upload of a version that wrote them here, with no process to ask: by its age only.
      if (OlderThan(it->path(), kUnfinishedUploadAge))
        found.unfinished.push_back(it->path().string());
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
  const fs::path uploads = upload_dir_.parent_path();
  for (fs::directory_iterator it(uploads, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& path = it->path();
    std::error_code ignored;
    if (path == upload_dir_ || path.string() == upload_dir_.string() + kLockSuffix) continue;
    if (it->is_directory(ignored)) {
      FindAbandonedUploads(path, found);
    } else if (const std::string name = path.filename().string();
               EndsWith(name, kLockSuffix) &&
               !fs::exists(uploads / name.substr(0, name.size() - std::strlen(kLockSuffix)),
                           ignored) &&
               OlderThan(path, kUnfinishedUploadAge)) {
      // A lock whose directory a clean-up removed before it stopped (young, it may be a starting
      // process's, which makes its directory next).
      found.abandoned.push_back(path.string());
    }
  }
  if (ec) {
    return Error(ErrorCode::kUnavailable,
                 "cannot read the uploads directory " + uploads.string() + ": " + ec.message());
  }
  return found;
}

Result<BlobStore::Cleaned> DirectoryBlobStore::CleanUp(const Leftovers& leftovers) const {
  Cleaned cleaned;
  for (const std::string& path : leftovers.unfinished) {
    std::error_code ignored;
    if (fs::remove(path, ignored)) ++cleaned.unfinished_uploads;
  }
  for (const std::string& path : leftovers.abandoned) {
    std::error_code ignored;
    fs::remove(path, ignored);  // a directory only when empty
  }
  if (!leftovers.unrecorded.empty()) {
    const fs::path aside = dir_ / kUnrecordedDir;
    SR_RETURN_IF_ERROR(EnsureDirectory(aside));
    for (const std::string& path : leftovers.unrecorded) {
      const fs::path blob(path);
      std::error_code ec;
      fs::rename(blob, aside / blob.filename(), ec);
      // Another node starting at the same moment may have set it aside first.
      if (ec == std::errc::no_such_file_or_directory) continue;
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

}  // namespace strongroom::core::internal
