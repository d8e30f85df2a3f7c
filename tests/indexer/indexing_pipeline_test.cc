// indexerd's indexing pipeline (indexing_pipeline.h) over a real SQLite IndexerStore, real content
// encryption, the real term extractor and search tokens, and the in-memory KMS and core of
// indexer_fakes.h.
#include "strongroom/indexer/indexing_pipeline.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "../support/test_dir.h"
#include "indexer_fakes.h"
#include "strongroom/client/content.h"
#include "strongroom/indexer/decoy_padding.h"

namespace strongroom::indexer {
namespace {

using testing::FakeCore;
using testing::FakeKms;

constexpr char kRoomA[] = "3d6f0a1b-2c4e-4f5a-8b9c-0d1e2f3a4b5c";
constexpr char kRoomB[] = "81c2a0b1-2c4e-4f5a-8b9c-0d1e2f3a4b5c";
constexpr char kResourceA[] = "kms://kms.acme.test/resources/a";
constexpr char kResourceB[] = "kms://kms.acme.test/resources/b";

class IndexingPipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    key_a_ = kms_.AddKey(kResourceA);
    key_b_ = kms_.AddKey(kResourceB);
    Open(db_, store_, "indexer.db");
    pipeline_ = MakePipeline(*store_, keys_);
  }

  void Open(std::unique_ptr<Database>& db, std::optional<IndexerStore>& store,
            const std::string& name) {
    auto opened = Database::OpenSqlite((dir_ / name).string(), IndexerStore::Migrations());
    ASSERT_TRUE(opened.ok()) << opened.error().ToString();
    db = std::move(opened).value();
    auto made = IndexerStore::New(*db);
    ASSERT_TRUE(made.ok());
    store.emplace(std::move(made).value());
  }

  std::unique_ptr<IndexingPipeline> MakePipeline(IndexerStore& store, SearchKeys& keys) {
    auto pipeline =
        IndexingPipeline::New(kms_, core_, store, keys, "english",
                              [this](const std::string& line) { log_.push_back(line); });
    EXPECT_TRUE(pipeline.ok());
    return std::move(pipeline).value();
  }

  client::Activity Make(const std::string& verb, const std::string& room,
                        const std::string& key_uri, const std::string& text) {
    client::Activity activity;
    activity.seq = ++seq_;
    activity.id = "act-" + std::to_string(seq_);
    activity.conversation_id = room;
    activity.verb = verb;
    activity.key_uri = key_uri;
    activity.published_ms = 1000 * seq_;
    if (!text.empty()) {
      activity.content = *client::EncryptText(kms_.KeyBytes(key_uri), key_uri, text);
    }
    core_.Register(activity);
    return activity;
  }

  // The token of `term` in `room` (version 1), as a query would make it.
  std::string TokenOf(const std::string& room, const std::string& term) {
    return RoomSearchKey::Derive(kms_.OrgKey(1), room, 1)->Token(term);
  }
  bool Holds(const std::string& activity_id, const std::string& token) {
    const auto& sets = core_.sets();
    auto it = sets.find(activity_id);
    return it != sets.end() &&
           std::find(it->second.begin(), it->second.end(), token) != it->second.end();
  }

  ::strongroom::testing::TestDir dir_;
  FakeKms kms_;
  FakeCore core_;
  SearchKeys keys_{kms_};
  std::unique_ptr<Database> db_;
  std::optional<IndexerStore> store_;
  std::unique_ptr<IndexingPipeline> pipeline_;
  std::vector<std::string> log_;
  std::string key_a_, key_b_;
  std::int64_t seq_ = 0;
};

TEST_F(IndexingPipelineTest, APostIsPutAsStemmedTokensPaddedToABucketThenTheCursorMoves) {
  const client::Activity post = Make("post", kRoomA, key_a_, "Launches the checklist today");
  Result<BatchResult> done = pipeline_->Process({post});
  ASSERT_TRUE(done.ok()) << done.error().ToString();
  EXPECT_EQ(done->indexed, 1u);
  EXPECT_EQ(done->last_seq, post.seq);
  EXPECT_EQ(*store_->Cursor(), post.seq);
  ASSERT_EQ(core_.sets().at(post.id).size(), 8u);  // 4 terms, padded to the first bucket
  EXPECT_TRUE(Holds(post.id, TokenOf(kRoomA, "launch")));
  EXPECT_TRUE(Holds(post.id, TokenOf(kRoomA, "checklist")));
  // The token of a word is the room's own: the same word in room B is another token.
  EXPECT_FALSE(Holds(post.id, TokenOf(kRoomB, "launch")));
  // The room is recorded with the resource its key is bound to.
  std::optional<Room> room = *store_->RoomOf(kRoomA);
  ASSERT_TRUE(room);
  EXPECT_EQ(room->resource_uri, kResourceA);
  EXPECT_EQ(room->search_key_version, 1u);
  EXPECT_EQ(room->activities_indexed, 1);
  // No log line holds a word of the text.
  for (const std::string& line : log_) EXPECT_EQ(line.find("aunch"), std::string::npos) << line;
}

TEST_F(IndexingPipelineTest, TheSameActivityIndexedAgainPutsTheSameSet) {
  const client::Activity post = Make("post", kRoomA, key_a_, "quarterly numbers are final");
  ASSERT_TRUE(pipeline_->Process({post}).ok());
  const std::vector<std::string> first = core_.sets().at(post.id);
  // Another indexer database (as after a crash before the cursor was saved): the replay puts the
  // very same set, which the core's PUT replaces: nothing is indexed twice.
  std::unique_ptr<Database> db2;
  std::optional<IndexerStore> store2;
  Open(db2, store2, "replay.db");
  SearchKeys keys2(kms_);
  std::unique_ptr<IndexingPipeline> replay = MakePipeline(*store2, keys2);
  ASSERT_TRUE(replay->Process({post}).ok());
  EXPECT_EQ(core_.puts_of.at(post.id), 2);
  EXPECT_EQ(core_.sets().at(post.id), first);
}

TEST_F(IndexingPipelineTest, AnActivityAtOrBeforeTheCursorIsNotPutAgain) {
  const client::Activity one = Make("post", kRoomA, key_a_, "alpha");
  const client::Activity two = Make("post", kRoomA, key_a_, "beta");
  ASSERT_TRUE(pipeline_->Process({one}).ok());
  ASSERT_TRUE(pipeline_->Process({one, two}).ok());  // a stream that delivered `one` again
  EXPECT_EQ(core_.puts_of.at(one.id), 1);
  EXPECT_EQ(core_.puts_of.at(two.id), 1);
  EXPECT_EQ(*store_->Cursor(), two.seq);
}

TEST_F(IndexingPipelineTest, ACoreFailureMidBatchCommitsWhatWasPutAndResumesAfterIt) {
  std::vector<client::Activity> batch;
  for (int i = 0; i < 5; ++i)
    batch.push_back(Make("post", kRoomA, key_a_, "word" + std::to_string(i)));
  core_.FailPutOf(batch[2].id);
  Result<BatchResult> failed = pipeline_->Process(batch);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code(), ErrorCode::kUnavailable);
  EXPECT_EQ(*store_->Cursor(), batch[1].seq);
  ASSERT_TRUE(pipeline_->Process(batch).ok());  // the stream reopened from the cursor
  for (const client::Activity& activity : batch) EXPECT_EQ(core_.puts_of.at(activity.id), 1);
  EXPECT_EQ(*store_->Cursor(), batch[4].seq);
  EXPECT_EQ((*store_->RoomOf(kRoomA))->activities_indexed, 5);
}

TEST_F(IndexingPipelineTest, AKmsOutageStopsTheBatchWithoutMovingTheCursor) {
  const client::Activity post = Make("post", kRoomA, key_a_, "alpha");
  kms_.SetAvailable(false);
  Result<BatchResult> failed = pipeline_->Process({post});
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(*store_->Cursor(), 0);
  EXPECT_EQ(core_.puts, 0);
  kms_.SetAvailable(true);
  ASSERT_TRUE(pipeline_->Process({post}).ok());
  EXPECT_TRUE(Holds(post.id, TokenOf(kRoomA, "alpha")));
}

TEST_F(IndexingPipelineTest, EditsTitlesAndSharesHaveWordsMembershipAndRetractsHaveNone) {
  const client::Activity create = Make("create", kRoomA, key_a_, "Launch planning");
  client::Activity add = Make("add", kRoomA, "", "");
  add.object_users = {"carol@acme.test"};
  const client::Activity post = Make("post", kRoomA, key_a_, "first draft");
  client::Activity edit = Make("edit", kRoomA, key_a_, "second version");
  edit.target_id = post.id;
  edit.target_seq = post.seq;
  client::Activity retract = Make("retract", kRoomA, "", "");
  retract.target_id = post.id;
  client::Activity share = Make("share", kRoomA, key_a_, "");
  client::FileReference reference;
  reference.key = SecretBytes::Random(32);
  reference.iv.assign(12, 1);
  reference.tag.assign(16, 2);
  reference.loc = "c0ffee00-1111-4222-8333-444455556666";
  reference.name = "Budget_Forecast.xlsx";
  share.content = *client::SealFileReference(reference, kms_.KeyBytes(key_a_), key_a_);

  ASSERT_TRUE(pipeline_->Process({create, add, post, edit, retract, share}).ok());
  EXPECT_TRUE(Holds(create.id, TokenOf(kRoomA, "plan")));
  EXPECT_EQ(core_.puts_of.count(add.id), 0u);
  EXPECT_TRUE(Holds(post.id, TokenOf(kRoomA, "draft")));
  // The edit's text is put for the edit (the core keeps it for the post it edited).
  EXPECT_TRUE(Holds(edit.id, TokenOf(kRoomA, "version")));
  EXPECT_FALSE(Holds(edit.id, TokenOf(kRoomA, "draft")));
  EXPECT_EQ(core_.puts_of.count(retract.id), 0u);
  EXPECT_TRUE(Holds(share.id, TokenOf(kRoomA, "budget")));
  EXPECT_TRUE(Holds(share.id, TokenOf(kRoomA, "forecast")));
  EXPECT_TRUE(Holds(share.id, TokenOf(kRoomA, "xlsx")));
  EXPECT_TRUE(Holds(share.id, TokenOf(kRoomA, "budget_forecast.xlsx")));  // the name as written
  EXPECT_EQ(*store_->Cursor(), share.seq);
}

TEST_F(IndexingPipelineTest, AKeyOfAnotherResourceIsRefusedForARoomAndTheActivitySkipped) {
  const client::Activity mine = Make("post", kRoomA, key_a_, "alpha");
  // A core that moved room B's ciphertext into room A's stream: its key is bound to B's resource.
  const client::Activity moved = Make("post", kRoomA, key_b_, "secret of room b");
  ASSERT_TRUE(pipeline_->Process({mine, moved}).ok());
  EXPECT_EQ(core_.puts_of.count(moved.id), 0u);
  EXPECT_EQ(*store_->Cursor(), moved.seq);
  ASSERT_EQ(log_.size(), 1u);
  EXPECT_NE(log_[0].find("skipped activity"), std::string::npos);
  EXPECT_EQ(log_[0].find("secret"), std::string::npos);
}

TEST_F(IndexingPipelineTest, AKeyTheKmsRefusesSkipsTheActivityAndTheCursorMovesOn) {
  const std::string refused = kms_.AddKey(kResourceB);
  kms_.Refuse(refused);
  const client::Activity unreadable = Make("post", kRoomB, refused, "hidden");
  const client::Activity readable = Make("post", kRoomA, key_a_, "visible");
  Result<BatchResult> done = pipeline_->Process({unreadable, readable});
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->skipped, 1u);
  EXPECT_EQ(done->indexed, 1u);
  EXPECT_EQ(*store_->Cursor(), readable.seq);
  EXPECT_FALSE(*store_->RoomOf(kRoomB));
}

TEST_F(IndexingPipelineTest, ContentKeysAreRetrievedOncePerKey) {
  std::vector<client::Activity> batch;
  for (int i = 0; i < 20; ++i) batch.push_back(Make("post", kRoomA, key_a_, "same key"));
  ASSERT_TRUE(pipeline_->Process(batch).ok());
  EXPECT_EQ(kms_.key_retrievals, 1);
}

// The loop: opened from the stored cursor, and after a failure reopened from it.
class ScriptedStream : public ActivityStream {
 public:
  explicit ScriptedStream(std::vector<client::Activity> activities)
      : activities_(std::move(activities)) {}
  Result<std::vector<client::Activity>> Next(std::chrono::milliseconds) override {
    if (given_) return std::vector<client::Activity>();
    given_ = true;
    return activities_;
  }

 private:
  std::vector<client::Activity> activities_;
  bool given_ = false;
};

TEST_F(IndexingPipelineTest, TheLoopFollowsTheStreamFromTheCursorAndReopensAfterAFailure) {
  std::vector<client::Activity> all;
  for (int i = 0; i < 4; ++i) all.push_back(Make("post", kRoomA, key_a_, "w" + std::to_string(i)));
  core_.FailPutOf(all[2].id);
  std::vector<std::int64_t> opened_at;
  std::mutex mutex;
  StreamOpener open = [&](std::int64_t cursor) -> Result<std::unique_ptr<ActivityStream>> {
    std::lock_guard<std::mutex> lock(mutex);
    opened_at.push_back(cursor);
    std::vector<client::Activity> after;
    for (const client::Activity& a : all) {
      if (a.seq > cursor) after.push_back(a);
    }
    return std::unique_ptr<ActivityStream>(new ScriptedStream(after));
  };
  IndexerLoop loop(*pipeline_, *store_, open, [](const std::string&) {});
  loop.Start();
  for (int i = 0; i < 200 && loop.state().cursor != all.back().seq; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  loop.Stop();
  EXPECT_EQ(loop.state().cursor, all.back().seq);
  std::lock_guard<std::mutex> lock(mutex);
  ASSERT_GE(opened_at.size(), 2u);
  EXPECT_EQ(opened_at[0], 0);
  EXPECT_EQ(opened_at[1], all[1].seq);  // reopened from the cursor committed before the failure
  for (const client::Activity& activity : all) EXPECT_EQ(core_.puts_of.at(activity.id), 1);
}

}  // namespace
}  // namespace strongroom::indexer
