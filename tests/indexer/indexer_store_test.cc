#include "strongroom/indexer/indexer_store.h"

#include <gtest/gtest.h>

#include "../support/test_dir.h"
#include "../support/test_engines.h"

namespace strongroom::indexer {
namespace {

// On both engines.
class IndexerStoreTest : public ::testing::TestWithParam<Database::Engine> {
 protected:
  void SetUp() override {
    auto where = testing::TestDatabase::New(GetParam(), dir_ / "indexer.db");
    ASSERT_TRUE(where.ok()) << where.error().ToString();
    where_ = std::move(where).value();
    Reopen();
  }
  void Reopen() {
    store_.reset();
    db_.reset();
    auto db = where_.Open(IndexerStore::Migrations(), IndexerStore::PostgresMigrations());
    ASSERT_TRUE(db.ok()) << db.error().ToString();
    db_ = std::move(db).value();
    auto store = IndexerStore::New(*db_);
    ASSERT_TRUE(store.ok());
    store_.emplace(std::move(store).value());
  }
  ::strongroom::testing::TestDir dir_;
  testing::TestDatabase where_;
  std::unique_ptr<Database> db_;
  std::optional<IndexerStore> store_;
};

INSTANTIATE_TEST_SUITE_P(Engines, IndexerStoreTest, testing::kBothEngines, testing::EngineName);

TEST_P(IndexerStoreTest, TheCursorAndRoomsSurviveAReopen) {
  EXPECT_EQ(*store_->Cursor(), 0);
  ASSERT_TRUE(store_
                  ->Commit(7, {{"room-a", "kms://k/resources/a", 1, 2},
                               {"room-b", "kms://k/resources/b", 1, 1}})
                  .ok());
  ASSERT_TRUE(store_->Commit(9, {{"room-a", "kms://k/resources/other", 2, 3}}).ok());
  Reopen();
  EXPECT_EQ(*store_->Cursor(), 9);
  std::optional<Room> a = *store_->RoomOf("room-a");
  ASSERT_TRUE(a);
  // A room keeps the resource and version it was first recorded with; its count adds up.
  EXPECT_EQ(a->resource_uri, "kms://k/resources/a");
  EXPECT_EQ(a->search_key_version, 1u);
  EXPECT_EQ(a->activities_indexed, 5);
  EXPECT_FALSE(*store_->RoomOf("room-c"));
  EXPECT_EQ(*store_->RoomCount(), 2);
}

TEST_P(IndexerStoreTest, TheCursorNeverMovesBackAndAFailedCommitChangesNothing) {
  ASSERT_TRUE(store_->Commit(9, {}).ok());
  Status back = store_->Commit(8, {{"room-a", "kms://k/resources/a", 1, 1}});
  ASSERT_FALSE(back.ok());
  EXPECT_EQ(back.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(*store_->Cursor(), 9);
  EXPECT_FALSE(*store_->RoomOf("room-a"));
}

TEST_P(IndexerStoreTest, RoomsOfResourcesFindsTheSeenOnesAcrossManyResources) {
  std::vector<IndexerStore::RoomUpdate> rooms;
  std::vector<std::string> resources;
  for (int i = 0; i < 1200; ++i) {
    const std::string n = std::to_string(i);
    if (i % 2 == 0) rooms.push_back({"room-" + n, "kms://k/resources/" + n, 1, 1});
    resources.push_back("kms://k/resources/" + n);
  }
  ASSERT_TRUE(store_->Commit(1, rooms).ok());
  std::vector<Room> found = *store_->RoomsOfResources(resources);
  EXPECT_EQ(found.size(), 600u);
  EXPECT_TRUE(store_->RoomsOfResources({})->empty());
}

TEST_P(IndexerStoreTest, JobProgressIsKept) {
  EXPECT_FALSE(*store_->Job("reindex"));
  ASSERT_TRUE(store_->SaveJob({"reindex", "running", 2, 100, 10, 50}).ok());
  ASSERT_TRUE(store_->SaveJob({"reindex", "running", 2, 200, 20, 50, 900}).ok());
  Reopen();
  std::optional<JobProgress> job = *store_->Job("reindex");
  ASSERT_TRUE(job);
  EXPECT_EQ(job->state, "running");
  EXPECT_EQ(job->target_version, 2u);
  EXPECT_EQ(job->cursor, 200);
  EXPECT_EQ(job->done, 20);
  EXPECT_EQ(job->total, 50);
  EXPECT_EQ(job->end_seq, 900);
}

TEST_P(IndexerStoreTest, AFinishedReindexRaisesEveryOlderRoomToItsVersionAtOnce) {
  EXPECT_FALSE(*store_->OldestRoomVersion());
  ASSERT_TRUE(store_
                  ->Commit(5, {{"room-a", "kms://k/resources/a", 1, 3},
                               {"room-b", "kms://k/resources/b", 2, 4}})
                  .ok());
  EXPECT_EQ(*store_->OldestRoomVersion(), 1u);
  EXPECT_EQ(*store_->ActivitiesIndexed(), 7);
  ASSERT_TRUE(store_->FinishReindex({"reindex", "done", 2, 5, 7, 7, 5}).ok());
  Reopen();
  EXPECT_EQ(*store_->OldestRoomVersion(), 2u);
  EXPECT_EQ((*store_->RoomOf("room-a"))->search_key_version, 2u);
  EXPECT_EQ((*store_->Job("reindex"))->state, "done");
}

}  // namespace
}  // namespace strongroom::indexer
