// indexerd's indexing pipeline (indexing_pipeline.h) over a real SQLite IndexerStore, real content
// encryption, the real term extractor and search tokens, and the in-memory KMS and core of
// indexer_fakes.h.
#include "strongroom/indexer/indexing_pipeline.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <mutex>
#include <set>
#include <thread>

#include "../support/test_dir.h"
#include "indexer_fakes.h"
#include "strongroom/client/content.h"
#include "strongroom/indexer/decoy_padding.h"
#include "strongroom/indexer/search_service.h"

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

TEST_F(IndexingPipelineTest, ABatchIsPutInRequestsOfAtMost256Sets) {
  std::vector<client::Activity> batch;
  for (int i = 0; i < 600; ++i) {
    batch.push_back(
        Make("post", i % 2 ? kRoomA : kRoomB, i % 2 ? key_a_ : key_b_, "word" + std::to_string(i)));
  }
  Result<BatchResult> done = pipeline_->Process(batch);
  ASSERT_TRUE(done.ok()) << done.error().ToString();
  EXPECT_EQ(done->indexed, 600u);
  EXPECT_EQ(core_.requests, 3);  // 256 + 256 + 88, not 600 requests
  for (const client::Activity& activity : batch) EXPECT_EQ(core_.puts_of.at(activity.id), 1);
  EXPECT_EQ(*store_->Cursor(), batch.back().seq);
  EXPECT_EQ((*store_->RoomOf(kRoomA))->activities_indexed, 300);
}

TEST_F(IndexingPipelineTest, ACoreFailureMidBatchCommitsTheRequestsPutAndResumesAfterThem) {
  std::vector<client::Activity> batch;
  for (int i = 0; i < 300; ++i) {
    batch.push_back(Make("post", kRoomA, key_a_, "word" + std::to_string(i)));
  }
  core_.FailPutOf(batch[280].id);  // in the second request
  Result<BatchResult> failed = pipeline_->Process(batch);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code(), ErrorCode::kUnavailable);
  EXPECT_EQ(*store_->Cursor(), batch[255].seq);  // the first request's 256 sets were put
  EXPECT_EQ(core_.puts_of.count(batch[256].id), 0u);
  ASSERT_TRUE(pipeline_->Process(batch).ok());  // the stream reopened from the cursor
  for (const client::Activity& activity : batch) EXPECT_EQ(core_.puts_of.at(activity.id), 1);
  EXPECT_EQ(*store_->Cursor(), batch.back().seq);
  EXPECT_EQ((*store_->RoomOf(kRoomA))->activities_indexed, 300);
}

TEST_F(IndexingPipelineTest, ASetTheCoreRefusesIsSkippedAndTheOthersOfItsRequestArePut) {
  const client::Activity one = Make("post", kRoomA, key_a_, "alpha");
  client::Activity unknown = Make("post", kRoomA, key_a_, "beta");
  unknown.id = "act-the-core-does-not-know";  // the core answers 404 for it
  const client::Activity three = Make("post", kRoomA, key_a_, "gamma");
  Result<BatchResult> done = pipeline_->Process({one, unknown, three});
  ASSERT_TRUE(done.ok()) << done.error().ToString();
  EXPECT_EQ(done->indexed, 2u);
  EXPECT_EQ(done->skipped, 1u);
  EXPECT_TRUE(Holds(one.id, TokenOf(kRoomA, "alpha")));
  EXPECT_TRUE(Holds(three.id, TokenOf(kRoomA, "gamma")));
  EXPECT_EQ(*store_->Cursor(), three.seq);
  ASSERT_EQ(log_.size(), 1u);
  EXPECT_NE(log_[0].find("the core refused its tokens (NOT_FOUND)"), std::string::npos) << log_[0];
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
  EXPECT_EQ(opened_at[1], 0);  // the failed batch's request put nothing: reopened from 0
  for (const client::Activity& activity : all) EXPECT_EQ(core_.puts_of.at(activity.id), 1);
}

// A stream that gives the activities after its cursor one at a time, and after `give` of them
// nothing more (a job that is then stopped), or fails (`fail`: a job that then resumes).
class TrickleStream : public ActivityStream {
 public:
  TrickleStream(std::vector<client::Activity> activities, std::size_t give, bool fail)
      : activities_(std::move(activities)), give_(give), fail_(fail) {}
  Result<std::vector<client::Activity>> Next(std::chrono::milliseconds patience) override {
    if (next_ < activities_.size() && next_ < give_) return std::vector{activities_[next_++]};
    if (fail_ && next_ < activities_.size()) {
      return Error(ErrorCode::kUnavailable, "the stream broke");
    }
    std::this_thread::sleep_for(std::min(patience, std::chrono::milliseconds(10)));
    return std::vector<client::Activity>();
  }

 private:
  std::vector<client::Activity> activities_;
  std::size_t next_ = 0;
  const std::size_t give_;
  const bool fail_;
};

class ReindexTest : public IndexingPipelineTest {
 protected:
  // Opens the stream from a cursor over `all_`; the first opening gives `give` activities, then
  // stops (`fail` false) or breaks (`fail` true); later ones give everything.
  StreamOpener Opener(std::size_t give, bool fail) {
    return [this, give, fail](std::int64_t cursor) -> Result<std::unique_ptr<ActivityStream>> {
      std::lock_guard<std::mutex> lock(mutex_);
      opened_at_.push_back(cursor);
      std::vector<client::Activity> after;
      for (const client::Activity& a : all_) {
        if (a.seq > cursor) after.push_back(a);
      }
      const bool first = opened_at_.size() == 1;
      return std::unique_ptr<ActivityStream>(
          new TrickleStream(after, first ? give : after.size(), first && fail));
    };
  }
  template <typename Predicate>
  bool WaitFor(Predicate done) {
    for (int i = 0; i < 1000; ++i) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  // The activity ids bob's search for `query` finds (the query path, over the fakes).
  std::vector<std::string> Found(SearchService& search, const std::string& query) {
    SearchRequest request;
    request.user = "bob@acme.test";
    request.query = query;
    request.limit = 200;
    Result<IndexPage> page = search.Search(request);
    EXPECT_TRUE(page.ok()) << page.error().ToString();
    std::vector<std::string> ids;
    if (page.ok()) {
      for (const IndexMatch& match : page->items) ids.push_back(match.activity_id);
    }
    std::sort(ids.begin(), ids.end());
    return ids;
  }
  std::vector<std::string> Ids(const std::vector<client::Activity>& activities) {
    std::vector<std::string> ids;
    for (const client::Activity& a : activities) ids.push_back(a.id);
    std::sort(ids.begin(), ids.end());
    return ids;
  }
  // Whether any stored set holds a token of version `version` for `term` in either room.
  bool AnySetHolds(std::uint32_t version, const std::string& term) {
    const std::string a = RoomSearchKey::Derive(kms_.OrgKey(version), kRoomA, version)->Token(term);
    const std::string b = RoomSearchKey::Derive(kms_.OrgKey(version), kRoomB, version)->Token(term);
    for (const auto& [activity, tokens] : core_.sets()) {
      for (const std::string& token : tokens) {
        if (token == a || token == b) return true;
      }
    }
    return false;
  }

  std::mutex mutex_;
  std::vector<std::int64_t> opened_at_;
  std::vector<client::Activity> all_;
};

TEST_F(ReindexTest, ARotationReindexesEverythingResumablyAndSearchNeverMisses) {
  kms_.Authorize("bob@acme.test", kResourceA);
  kms_.Authorize("bob@acme.test", kResourceB);
  for (int i = 0; i < 12; ++i) {
    all_.push_back(Make("post", i % 2 ? kRoomA : kRoomB, i % 2 ? key_a_ : key_b_,
                        "launch plan " + std::to_string(i)));
  }
  ASSERT_TRUE(pipeline_->Process(all_).ok());
  SearchService search(kms_, core_, *store_, keys_, "english");
  const std::vector<std::string> everything = Ids(all_);
  ASSERT_EQ(Found(search, "launch"), everything);
  ASSERT_TRUE(AnySetHolds(1, "launch"));

  // The operator rotates: version 2. The job notices it at its first check, and stops after 5
  // activities (indexerd stopped part-way).
  kms_.current_version = 2;
  auto reindex_pipeline = MakePipeline(*store_, keys_);
  {
    ReindexJob job(
        *reindex_pipeline, *store_, keys_, Opener(5, /*fail=*/false),
        [this](const std::string& line) { log_.push_back(line); }, std::chrono::milliseconds(50));
    job.Start();
    ASSERT_TRUE(WaitFor([&] { return job.progress() && job.progress()->done == 5; }));
    job.Stop();
    EXPECT_EQ(job.current_version(), 2u);
  }
  std::optional<JobProgress> saved = *store_->Job(ReindexJob::kName);
  ASSERT_TRUE(saved);
  EXPECT_EQ(saved->state, "running");
  EXPECT_EQ(saved->target_version, 2u);
  EXPECT_EQ(saved->cursor, all_[4].seq);
  EXPECT_EQ(saved->end_seq, all_.back().seq);
  EXPECT_EQ(saved->total, 12);
  // Meanwhile: half the sets are of version 2, half of version 1, and a new post is indexed with
  // version 2 at once; search finds every one of them.
  EXPECT_TRUE(AnySetHolds(1, "launch"));
  EXPECT_TRUE(AnySetHolds(2, "launch"));
  all_.push_back(Make("post", kRoomA, key_a_, "launch day"));
  ASSERT_TRUE(pipeline_->Process({all_.back()}).ok());
  EXPECT_TRUE(
      Holds(all_.back().id, RoomSearchKey::Derive(kms_.OrgKey(2), kRoomA, 2)->Token("day")));
  EXPECT_EQ(Found(search, "launch"), Ids(all_));
  EXPECT_EQ(Found(search, "plan 7"), std::vector<std::string>{all_[7].id});
  EXPECT_EQ((*store_->RoomOf(kRoomA))->search_key_version, 1u);  // not done yet

  // indexerd restarted: a new job object resumes from the saved cursor; its stream breaks once
  // more after 2 activities, and it resumes again from where it was.
  {
    std::lock_guard<std::mutex> lock(mutex_);
    opened_at_.clear();
  }
  ReindexJob job(
      *reindex_pipeline, *store_, keys_, Opener(2, /*fail=*/true),
      [this](const std::string& line) { log_.push_back(line); }, std::chrono::milliseconds(50));
  job.Start();
  ASSERT_TRUE(WaitFor([&] { return job.progress() && job.progress()->state == "done"; }));
  job.Stop();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ASSERT_GE(opened_at_.size(), 2u);
    EXPECT_EQ(opened_at_[0], all_[4].seq);
    EXPECT_EQ(opened_at_[1], all_[6].seq);
  }
  // After: every set is of version 2, the old tokens are gone from the core, every room is of
  // version 2, and search finds everything (with one request to the core).
  EXPECT_FALSE(AnySetHolds(1, "launch"));
  EXPECT_FALSE(AnySetHolds(1, "plan"));
  EXPECT_TRUE(AnySetHolds(2, "launch"));
  EXPECT_EQ((*store_->RoomOf(kRoomA))->search_key_version, 2u);
  EXPECT_EQ((*store_->RoomOf(kRoomB))->search_key_version, 2u);
  EXPECT_EQ(job.progress()->done, 12);
  EXPECT_EQ(*store_->Cursor(), all_.back().seq);  // the stream's cursor is the loop's, untouched
  core_.searched.clear();
  EXPECT_EQ(Found(search, "launch"), Ids(all_));
  EXPECT_EQ(core_.searched.size(), 1u);
  // The progress was logged, with no word.
  bool started = false, done = false;
  for (const std::string& line : log_) {
    started = started || line.find("re-index to search key version 2 started") == 0;
    done = done || line.find("re-index to search key version 2 done: 12 activities") == 0;
    EXPECT_EQ(line.find("launch"), std::string::npos) << line;
  }
  EXPECT_TRUE(started);
  EXPECT_TRUE(done);
}

TEST_F(ReindexTest, NoJobWhileEveryRoomIsOfTheCurrentVersion) {
  all_.push_back(Make("post", kRoomA, key_a_, "alpha"));
  ASSERT_TRUE(pipeline_->Process(all_).ok());
  auto reindex_pipeline = MakePipeline(*store_, keys_);
  ReindexJob job(
      *reindex_pipeline, *store_, keys_, Opener(100, false), [](const std::string&) {},
      std::chrono::milliseconds(20));
  job.Start();
  ASSERT_TRUE(WaitFor([&] { return job.current_version() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // a few checks
  job.Stop();
  EXPECT_FALSE(job.progress());
  std::lock_guard<std::mutex> lock(mutex_);
  EXPECT_TRUE(opened_at_.empty());
}

}  // namespace
}  // namespace strongroom::indexer
