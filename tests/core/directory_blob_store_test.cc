// The directory blob store shared by several cored processes: each store here is a node, on real
// files in the test's directory. A node's start-up clean-up must leave alone what another node is
// uploading or has stored but not yet recorded, and still clean what is certainly abandoned.
#include "directory_blob_store.h"

#include <gtest/gtest.h>
#include <openssl/sha.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "../support/processes_together.h"
#include "../support/test_dir.h"
#include "validation.h"

namespace strongroom::core::internal {
namespace {

namespace fs = std::filesystem;

constexpr std::uint64_t kMaxBytes = 1 << 20;

// Nothing is recorded: every stored blob is a candidate for unrecorded/.
std::set<std::string> NoneRecorded(const std::vector<std::string>&) { return {}; }

std::string Contents(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string Sha256Hex(const std::string& data) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), md);
  return Hex(md, sizeof(md));
}

// Sets `path` as last written `age` ago (as a leftover of that age would be).
void MakeOld(const fs::path& path, std::chrono::minutes age) {
  fs::last_write_time(path, fs::file_time_type::clock::now() - age);
}

std::set<std::string> Names(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.insert(entry.path().filename());
  return names;
}

class DirectoryBlobStoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<DirectoryBlobStore> Node() {
    auto store = DirectoryBlobStore::Open(files_.string(), kMaxBytes);
    EXPECT_TRUE(store.ok()) << store.error().ToString();
    return store.ok() ? std::move(*store) : nullptr;
  }
  // What `node`'s start does with the leftovers (nothing recorded unless `recorded` says so).
  BlobStore::Cleaned Start(const DirectoryBlobStore& node,
                           const BlobStore::RecordedFilter& recorded = NoneRecorded) {
    auto found = node.FindLeftovers(recorded);
    EXPECT_TRUE(found.ok()) << found.error().ToString();
    auto cleaned = node.CleanUp(*found);
    EXPECT_TRUE(cleaned.ok()) << cleaned.error().ToString();
    return cleaned.ok() ? *cleaned : BlobStore::Cleaned{};
  }
  std::unique_ptr<BlobUpload> Upload(const DirectoryBlobStore& node, const std::string& data) {
    auto upload = node.Begin();
    EXPECT_TRUE(upload.ok()) << upload.error().ToString();
    EXPECT_TRUE((*upload)->Write(data.data(), data.size()).ok());
    return std::move(*upload);
  }
  // The upload file of `upload`, in `node`'s upload directory.
  static fs::path Temp(const DirectoryBlobStore& node, const BlobUpload& upload) {
    return node.upload_dir() / (upload.id() + ".upload");
  }

  testing::TestDir dir_;
  const fs::path files_ = dir_ / "files";
};

TEST_F(DirectoryBlobStoreTest, AKeptUploadIsItsBlobOwnerOnlyWithItsSha256) {
  auto node = Node();
  auto upload = Upload(*node, "ciphertext");
  const fs::path temp = Temp(*node, *upload);
  ASSERT_TRUE(fs::exists(temp));
  auto sha256 = upload->Keep();
  ASSERT_TRUE(sha256.ok()) << sha256.error().ToString();
  EXPECT_EQ(*sha256, Sha256Hex("ciphertext"));
  EXPECT_FALSE(fs::exists(temp));
  auto path = node->PathOf(upload->id());
  ASSERT_TRUE(path.ok());
  EXPECT_EQ(fs::path(*path), files_ / upload->id());
  EXPECT_EQ(Contents(*path), "ciphertext");
  struct stat st {};
  ASSERT_EQ(::stat(path->c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(files_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_FALSE(upload->Keep().ok()) << "kept twice";

  node->Remove(upload->id());
  EXPECT_EQ(node->PathOf(upload->id()).error().code(), ErrorCode::kDataLoss);
}

TEST_F(DirectoryBlobStoreTest, AnUploadNotKeptOrTooLargeLeavesNothing) {
  auto node = Node();
  fs::path temp;
  {
    auto dropped = Upload(*node, "half");
    temp = Temp(*node, *dropped);
    EXPECT_TRUE(fs::exists(temp));
  }
  EXPECT_FALSE(fs::exists(temp));
  auto large = Upload(*node, std::string(kMaxBytes, 'x'));
  EXPECT_EQ(large->Write("y", 1).error().code(), ErrorCode::kResourceExhausted);
  EXPECT_FALSE(fs::exists(Temp(*node, *large)));
  EXPECT_FALSE(large->Keep().ok());
  EXPECT_FALSE(fs::exists(files_ / large->id()));
  EXPECT_TRUE(fs::is_empty(node->upload_dir()));
}

// Two nodes on one directory: the second one's start must not remove the first one's upload in
// progress, nor set aside the blob it just stored and is about to record.
TEST_F(DirectoryBlobStoreTest, AnotherNodesUploadAndUnrecordedBlobSurviveItsStart) {
  auto a = Node();
  auto in_progress = Upload(*a, "being written");
  auto stored = Upload(*a, "stored, not yet recorded");
  ASSERT_TRUE(stored->Keep().ok());

  auto b = Node();
  ASSERT_NE(a->upload_dir(), b->upload_dir());
  const BlobStore::Cleaned cleaned = Start(*b);
  EXPECT_EQ(cleaned.unfinished_uploads, 0u);
  EXPECT_EQ(cleaned.unrecorded_blobs, 0u);
  EXPECT_TRUE(fs::exists(Temp(*a, *in_progress)));
  EXPECT_TRUE(a->PathOf(stored->id()).ok());
  EXPECT_FALSE(fs::exists(files_ / "unrecorded" / stored->id()));

  ASSERT_TRUE(in_progress->Write(", then finished", 15).ok());
  ASSERT_TRUE(in_progress->Keep().ok());
  EXPECT_EQ(Contents(files_ / in_progress->id()), "being written, then finished");
}

// A node that died (its process gone, its lock released by the kernel) left an upload and a
// stored but unrecorded blob: the next start removes the upload and its directory at once, and
// sets the blob aside only once it is older than kUnrecordedBlobAge.
TEST_F(DirectoryBlobStoreTest, AGoneNodesUploadIsRemovedAndItsOldUnrecordedBlobSetAside) {
  fs::create_directories(files_);
  const fs::path ids_file = dir_ / "ids";
  // A node that stores a blob, leaves an upload half-written and dies without cleaning up.
  auto crash = [&](int) {
    auto node = Node();
    BlobUpload* upload = Upload(*node, "half").release();
    BlobUpload* stored = Upload(*node, "whole").release();
    if (!stored->Keep().ok()) return false;
    std::ofstream(ids_file) << upload->id() << " " << stored->id();
    return node.release() != nullptr;  // never destroyed, as a crash leaves it
  };
  ASSERT_EQ(testing::RunProcessesTogether(1, crash), 1);
  std::string upload_id, stored_id;
  std::ifstream(ids_file) >> upload_id >> stored_id;
  ASSERT_TRUE(IsUuid(upload_id) && IsUuid(stored_id));
  ASSERT_EQ(Names(files_ / "uploads").size(), 2u);  // its lock and its directory
  fs::path left_upload;
  for (const auto& entry : fs::directory_iterator(files_ / "uploads")) {
    if (entry.is_directory()) left_upload = entry.path() / (upload_id + ".upload");
  }
  ASSERT_EQ(Contents(left_upload), "half");

  auto b = Node();
  const std::string recorded_id = NewUuid();
  std::ofstream(files_ / recorded_id) << "recorded long ago";
  MakeOld(files_ / recorded_id, DirectoryBlobStore::kUnrecordedBlobAge * 2);
  auto only_recorded = [&](const std::vector<std::string>& ids) {
    std::set<std::string> known;
    for (const std::string& id : ids) {
      if (id == recorded_id) known.insert(id);
    }
    return known;
  };
  BlobStore::Cleaned cleaned = Start(*b, only_recorded);
  EXPECT_EQ(cleaned.unfinished_uploads, 1u);
  EXPECT_EQ(cleaned.unrecorded_blobs, 0u);
  EXPECT_FALSE(fs::exists(left_upload));
  const std::string b_node = b->upload_dir().filename();
  EXPECT_EQ(Names(files_ / "uploads"), (std::set<std::string>{b_node, b_node + ".lock"}));
  EXPECT_TRUE(fs::exists(files_ / stored_id));

  MakeOld(files_ / stored_id, DirectoryBlobStore::kUnrecordedBlobAge + std::chrono::minutes(1));
  cleaned = Start(*Node(), only_recorded);
  EXPECT_EQ(cleaned.unrecorded_blobs, 1u);
  EXPECT_FALSE(fs::exists(files_ / stored_id));
  EXPECT_EQ(Contents(files_ / "unrecorded" / stored_id), "whole");
  EXPECT_TRUE(fs::exists(files_ / recorded_id));
}

// A live node's upload not written for kUnfinishedUploadAge is abandoned (its lock says nothing
// of it): removed, and keeping it later fails without leaving a blob.
TEST_F(DirectoryBlobStoreTest, ALiveNodesUploadNotWrittenForTheBoundIsRemoved) {
  auto a = Node();
  auto stale = Upload(*a, "stalled");
  auto fresh = Upload(*a, "flowing");
  MakeOld(Temp(*a, *stale), DirectoryBlobStore::kUnfinishedUploadAge + std::chrono::minutes(1));
  MakeOld(Temp(*a, *fresh), DirectoryBlobStore::kUnfinishedUploadAge - std::chrono::minutes(5));

  EXPECT_EQ(Start(*Node()).unfinished_uploads, 1u);
  EXPECT_FALSE(fs::exists(Temp(*a, *stale)));
  EXPECT_TRUE(fs::exists(Temp(*a, *fresh)));
  EXPECT_EQ(stale->Keep().error().code(), ErrorCode::kUnavailable);
  EXPECT_FALSE(fs::exists(files_ / stale->id()));
  EXPECT_TRUE(fresh->Keep().ok());
}

// Uploads an earlier version wrote beside the blobs have no process to ask: removed when old.
TEST_F(DirectoryBlobStoreTest, AnEarlierVersionsUploadIsRemovedOnlyWhenOld) {
  auto node = Node();
  const fs::path old_upload = files_ / (NewUuid() + ".upload");
  const fs::path young_upload = files_ / (NewUuid() + ".upload");
  std::ofstream(old_upload) << "old";
  std::ofstream(young_upload) << "young";
  MakeOld(old_upload, DirectoryBlobStore::kUnfinishedUploadAge + std::chrono::minutes(1));
  EXPECT_EQ(Start(*node).unfinished_uploads, 1u);
  EXPECT_FALSE(fs::exists(old_upload));
  EXPECT_TRUE(fs::exists(young_upload));
}

// What a clean-up or a start stopped half-way leaves (a directory without its lock, a lock without
// its directory) may be a node starting right now: removed only when old.
TEST_F(DirectoryBlobStoreTest, HalfMadeUploadPlacesAreRemovedOnlyWhenOld) {
  auto node = Node();
  const fs::path uploads = files_ / "uploads";
  fs::create_directory(uploads / "lockless");
  std::ofstream(uploads / "dirless.lock");
  Start(*node);
  EXPECT_TRUE(fs::exists(uploads / "lockless"));
  EXPECT_TRUE(fs::exists(uploads / "dirless.lock"));

  MakeOld(uploads / "lockless", DirectoryBlobStore::kUnfinishedUploadAge * 2);
  MakeOld(uploads / "dirless.lock", DirectoryBlobStore::kUnfinishedUploadAge * 2);
  Start(*node);
  EXPECT_FALSE(fs::exists(uploads / "lockless"));
  EXPECT_FALSE(fs::exists(uploads / "dirless.lock"));
}

TEST_F(DirectoryBlobStoreTest, ANodeStoppingRemovesItsUploadPlace) {
  Node().reset();
  auto kept = Node();
  EXPECT_EQ(Names(files_ / "uploads").size(), 2u);
  kept.reset();
  EXPECT_TRUE(fs::is_empty(files_ / "uploads"));
}

// Nodes starting at the same moment on a directory that does not exist yet: every one creates or
// finds the layout, takes its own upload place and stores a blob.
TEST_F(DirectoryBlobStoreTest, NodesStartingTogetherAllOpenTheStore) {
  const fs::path nested = dir_ / "new" / "files";
  constexpr int kNodes = 6;
  auto start = [&](int) {
    auto node = DirectoryBlobStore::Open(nested.string(), kMaxBytes);
    if (!node.ok()) return false;
    auto upload = (*node)->Begin();
    return upload.ok() && (*upload)->Write("x", 1).ok() && (*upload)->Keep().ok();
  };
  EXPECT_EQ(testing::RunProcessesTogether(kNodes, start), kNodes);
  std::size_t blobs = 0;
  for (const auto& entry : fs::directory_iterator(nested)) {
    if (IsUuid(entry.path().filename().string())) ++blobs;
  }
  EXPECT_EQ(blobs, static_cast<std::size_t>(kNodes));
}

}  // namespace
}  // namespace strongroom::core::internal
