// The client's key cache (bounds, LRU, stop-encrypting dates, zeroization) and the pool of
// unbound keys (taken without waiting, refilled below the low-water mark, keys near their bind
// deadline dropped). A fake creator stands in for the KMS; the clock is injected.
#include "strongroom/client/key_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include "strongroom/client/key_pool.h"

namespace strongroom::client {
namespace {

constexpr std::int64_t kHour = 3600 * 1000;

KmsKey BoundKey(int n, std::int64_t stop_encrypting_ms) {
  KmsKey key;
  key.uri = "kms://kms.acme.test/keys/k" + std::to_string(n);
  key.key = SecretBytes::Random(32);
  key.resource_uri = "kms://kms.acme.test/resources/r1";
  key.stop_encrypting_ms = stop_encrypting_ms;
  return key;
}

// Whether `needle` occurs anywhere in `haystack`.
bool Contains(std::span<const std::uint8_t> haystack, std::span<const std::uint8_t> needle) {
  return std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end()) !=
         haystack.end();
}

class KeyCacheTest : public ::testing::Test {
 protected:
  KeyCacheOptions Options(std::size_t capacity) {
    KeyCacheOptions options;
    options.capacity = capacity;
    options.encrypt_margin = std::chrono::minutes(1);
    options.now_ms = [this] { return now_ms_.load(); };
    return options;
  }
  std::atomic<std::int64_t> now_ms_{1'700'000'000'000};
};

TEST_F(KeyCacheTest, HoldsAtMostCapacityAndEvictsTheLeastRecentlyUsed) {
  KeyCache cache(Options(3));
  std::vector<KmsKey> keys;
  for (int i = 0; i < 4; ++i) keys.push_back(BoundKey(i, now_ms_ + kHour));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(cache.Put(keys[i]).ok());
  ASSERT_TRUE(cache.ForDecryption(keys[0].uri));  // key 0 is now the most recent
  ASSERT_TRUE(cache.Put(keys[3]).ok());           // evicts key 1
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_FALSE(cache.ForDecryption(keys[1].uri));
  for (int i : {0, 2, 3}) {
    auto found = cache.ForDecryption(keys[i].uri);
    ASSERT_TRUE(found) << i;
    EXPECT_TRUE(ConstantTimeEquals(found->key.view(), keys[i].key.view()));
    EXPECT_EQ(found->resource_uri, keys[i].resource_uri);
  }
  // Putting a key again refreshes it without growing the cache.
  ASSERT_TRUE(cache.Put(keys[3]).ok());
  EXPECT_EQ(cache.size(), 3u);
}

TEST_F(KeyCacheTest, APastStopEncryptingDateRefusesEncryptionButNotDecryption) {
  KeyCache cache(Options(8));
  KmsKey key = BoundKey(1, now_ms_ + kHour);
  ASSERT_TRUE(cache.Put(key).ok());
  EXPECT_TRUE(cache.ForEncryption(key.uri).ok());
  now_ms_ += kHour - 2 * 60 * 1000;  // two minutes before the date: still fine
  EXPECT_TRUE(cache.ForEncryption(key.uri).ok());
  now_ms_ += 90 * 1000;  // within the one-minute margin
  auto refused = cache.ForEncryption(key.uri);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kFailedPrecondition);
  now_ms_ += 365 * 24 * kHour;
  auto old = cache.ForDecryption(key.uri);
  ASSERT_TRUE(old);  // history stays readable
  EXPECT_TRUE(ConstantTimeEquals(old->key.view(), key.key.view()));

  auto missing = cache.ForEncryption("kms://kms.acme.test/keys/none");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
}

TEST_F(KeyCacheTest, UnboundOrMalformedKeysAreNotCached) {
  KeyCache cache(Options(8));
  KmsKey unbound = BoundKey(1, 0);
  unbound.resource_uri.clear();
  EXPECT_FALSE(cache.Put(unbound).ok());
  KmsKey short_key = BoundKey(2, 0);
  short_key.key = SecretBytes::Random(16);
  EXPECT_FALSE(cache.Put(short_key).ok());
  EXPECT_EQ(cache.size(), 0u);
}

TEST_F(KeyCacheTest, EvictedErasedAndClearedKeysAreZeroizedInPlace) {
  KeyCache cache(Options(4));
  std::vector<KmsKey> keys;
  for (int i = 0; i < 4; ++i) {
    keys.push_back(BoundKey(i, now_ms_ + kHour));
    ASSERT_TRUE(cache.Put(keys[i]).ok());
  }
  for (const KmsKey& key : keys) ASSERT_TRUE(Contains(cache.ArenaForTesting(), key.key.view()));

  cache.Erase(keys[1].uri);
  EXPECT_FALSE(Contains(cache.ArenaForTesting(), keys[1].key.view()));
  EXPECT_TRUE(Contains(cache.ArenaForTesting(), keys[0].key.view()));

  // Eviction of the least recently used (key 0) by a new key: its slot now holds the new key.
  KmsKey newer = BoundKey(9, now_ms_ + kHour);
  ASSERT_TRUE(cache.Put(newer).ok());
  ASSERT_TRUE(cache.Put(BoundKey(10, now_ms_ + kHour)).ok());
  EXPECT_FALSE(Contains(cache.ArenaForTesting(), keys[0].key.view()));

  cache.Clear();
  EXPECT_EQ(cache.size(), 0u);
  const auto arena = cache.ArenaForTesting();
  EXPECT_TRUE(std::all_of(arena.begin(), arena.end(), [](std::uint8_t b) { return b == 0; }));
}

// A creator of unbound keys with a bind deadline `lifetime` after the (fake) clock.
class FakeKms {
 public:
  explicit FakeKms(std::atomic<std::int64_t>& now) : now_(now) {}
  KeyPool::Creator Creator() {
    return [this](std::size_t count) -> Result<std::vector<KmsKey>> {
      std::unique_lock<std::mutex> lock(mutex_);
      ++calls_;
      called_.notify_all();
      if (fail_) return Error(ErrorCode::kUnavailable, "the KMS is down");
      std::vector<KmsKey> keys;
      for (std::size_t i = 0; i < count; ++i) {
        KmsKey key;
        key.uri = "kms://kms.acme.test/keys/u" + std::to_string(next_++);
        key.key = SecretBytes::Random(32);
        key.bind_deadline_ms = now_ + lifetime_ms_;
        keys.push_back(std::move(key));
      }
      return keys;
    };
  }
  int calls() {
    std::lock_guard<std::mutex> lock(mutex_);
    return calls_;
  }
  void set_fail(bool fail) {
    std::lock_guard<std::mutex> lock(mutex_);
    fail_ = fail;
  }
  std::int64_t lifetime_ms_ = 600 * 1000;

 private:
  std::atomic<std::int64_t>& now_;
  std::mutex mutex_;
  std::condition_variable called_;
  int calls_ = 0;
  int next_ = 0;
  bool fail_ = false;
};

class KeyPoolTest : public ::testing::Test {
 protected:
  KeyPoolOptions Options(bool background) {
    KeyPoolOptions options;
    options.target = 5;
    options.low_water = 2;
    options.background = background;
    options.min_bind_time = std::chrono::minutes(2);
    options.now_ms = [this] { return now_ms_.load(); };
    return options;
  }
  // Waits (bounded) until `done` holds; no timing is asserted.
  static bool Eventually(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  }
  std::atomic<std::int64_t> now_ms_{1'700'000'000'000};
  FakeKms kms_{now_ms_};
};

TEST_F(KeyPoolTest, AFilledPoolHandsOutKeysWithoutCallingTheKms) {
  KeyPool pool(kms_.Creator(), Options(/*background=*/false));
  ASSERT_TRUE(pool.Fill().ok());
  EXPECT_EQ(pool.size(), 5u);
  const int calls = kms_.calls();
  std::set<std::string> uris;
  for (int i = 0; i < 5; ++i) {
    auto key = pool.Take();
    ASSERT_TRUE(key.ok()) << key.error().ToString();
    EXPECT_FALSE(key->bound());
    EXPECT_EQ(key->key.size(), 32u);
    uris.insert(key->uri);
  }
  EXPECT_EQ(uris.size(), 5u);  // each key once
  EXPECT_EQ(kms_.calls(), calls);
  // Empty: the next Take creates a batch itself.
  ASSERT_TRUE(pool.Take().ok());
  EXPECT_EQ(kms_.calls(), calls + 1);
  EXPECT_EQ(pool.size(), 4u);
}

TEST_F(KeyPoolTest, BelowLowWaterTheBackgroundRefillTopsThePoolUp) {
  KeyPool pool(kms_.Creator(), Options(/*background=*/true));
  ASSERT_TRUE(pool.Fill().ok());
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(pool.Take().ok());  // 1 left: below low water
  ASSERT_TRUE(Eventually([&] { return pool.size() == 5u; }))
      << "the pool was not refilled; size " << pool.size();
  EXPECT_EQ(pool.stats().taken, 4u);
  EXPECT_FALSE(pool.last_error());
}

TEST_F(KeyPoolTest, KeysNearTheirBindDeadlineAreDropped) {
  KeyPool pool(kms_.Creator(), Options(/*background=*/false));
  ASSERT_TRUE(pool.Fill().ok());
  now_ms_ += 9 * 60 * 1000;  // 1 minute left of 10: less than min_bind_time
  EXPECT_EQ(pool.size(), 5u);
  auto key = pool.Take();  // drops the five, makes a fresh batch
  ASSERT_TRUE(key.ok());
  EXPECT_GE(key->bind_deadline_ms, now_ms_ + 2 * 60 * 1000);
  EXPECT_EQ(pool.stats().expired, 5u);
  // A KMS whose keys could never be bound in time is an error, not a loop.
  kms_.lifetime_ms_ = 60 * 1000;
  KeyPool short_lived(kms_.Creator(), Options(false));
  auto refused = short_lived.Take();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kFailedPrecondition);
}

TEST_F(KeyPoolTest, AFailingKmsIsReportedAndTheNextTakeTriesAgain) {
  KeyPool pool(kms_.Creator(), Options(/*background=*/false));
  kms_.set_fail(true);
  auto failed = pool.Take();
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code(), ErrorCode::kUnavailable);
  EXPECT_TRUE(pool.last_error());
  kms_.set_fail(false);
  EXPECT_TRUE(pool.Take().ok());
  EXPECT_FALSE(pool.last_error());
}

// `threads` threads each Take() `each` keys: the distinct URIs they got, and how many Take()s
// failed.
struct Taken {
  std::set<std::string> uris;
  int failures = 0;
};
Taken TakeConcurrently(KeyPool& pool, int threads, int each) {
  std::mutex mutex;
  Taken taken;
  std::vector<std::thread> takers;
  for (int t = 0; t < threads; ++t) {
    takers.emplace_back([&] {
      for (int i = 0; i < each; ++i) {
        auto key = pool.Take();
        std::lock_guard<std::mutex> lock(mutex);
        if (key.ok()) {
          taken.uris.insert(key->uri);
        } else {
          ++taken.failures;
        }
      }
    });
  }
  for (std::thread& taker : takers) taker.join();
  return taken;
}

TEST_F(KeyPoolTest, ConcurrentTakersEachGetADistinctKey) {
  KeyPool pool(kms_.Creator(), Options(/*background=*/true));
  const Taken taken = TakeConcurrently(pool, 4, 25);
  EXPECT_EQ(taken.failures, 0);
  EXPECT_EQ(taken.uris.size(), 100u);
}

// With batches of one key, every Take() on the empty pool creates the key it needs; another taker
// that finds the pool non-empty in between must not take that key from under it.
TEST_F(KeyPoolTest, ATakerThatCreatesABatchKeepsAKeyFromIt) {
  for (bool background : {false, true}) {
    KeyPoolOptions options = Options(background);
    options.target = 1;
    options.low_water = 1;
    KeyPool pool(kms_.Creator(), options);
    const Taken taken = TakeConcurrently(pool, 8, 200);
    EXPECT_EQ(taken.failures, 0) << "background " << background;
    EXPECT_EQ(taken.uris.size(), 1600u) << "background " << background;
  }
}

}  // namespace
}  // namespace strongroom::client
