#include "strongroom/kms/key_cache.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <thread>
#include <vector>

namespace strongroom::kms {
namespace {

using namespace std::chrono_literals;

// A key whose bytes say which URI it belongs to, so a mix-up is visible.
std::array<std::uint8_t, 32> KeyFor(std::size_t n) {
  std::array<std::uint8_t, 32> key{};
  for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<std::uint8_t>(n * 31 + i);
  return key;
}

std::string Uri(std::size_t n) { return "kms://kms.acme.test/keys/" + std::to_string(n); }

bool Holds(const std::optional<SecretBytes>& got, std::size_t n) {
  const auto want = KeyFor(n);
  return got && ConstantTimeEquals(got->view(), want);
}

TEST(KeyCacheTest, GetReturnsWhatWasPutAndCountsHitsAndMisses) {
  KeyCache cache(100, 60s);
  EXPECT_FALSE(cache.Get(Uri(1)));
  cache.Put(Uri(1), KeyFor(1));
  EXPECT_TRUE(Holds(cache.Get(Uri(1)), 1));
  EXPECT_TRUE(Holds(cache.Get(Uri(1)), 1));
  EXPECT_FALSE(cache.Get(Uri(2)));
  KeyCache::Stats stats = cache.stats();
  EXPECT_EQ(stats.hits, 2u);
  EXPECT_EQ(stats.misses, 2u);
  EXPECT_EQ(stats.entries, 1u);
  EXPECT_EQ(stats.capacity, 100u);
}

TEST(KeyCacheTest, PutReplacesTheValueOfAKnownUri) {
  KeyCache cache(100, 60s);
  cache.Put(Uri(1), KeyFor(1));
  cache.Put(Uri(1), KeyFor(7));
  EXPECT_TRUE(Holds(cache.Get(Uri(1)), 7));
  EXPECT_EQ(cache.stats().entries, 1u);
}

TEST(KeyCacheTest, NeverHoldsMoreThanMaxEntries) {
  for (std::size_t max : {1u, 5u, 16u, 40u, 100u}) {
    KeyCache cache(max, 60s);
    for (std::size_t i = 0; i < 1000; ++i) cache.Put(Uri(i), KeyFor(i));
    KeyCache::Stats stats = cache.stats();
    EXPECT_LE(stats.entries, max) << max;
    EXPECT_EQ(stats.entries + stats.evictions, 1000u) << max;
    std::size_t present = 0;
    for (std::size_t i = 0; i < 1000; ++i) present += cache.Get(Uri(i)) ? 1 : 0;
    EXPECT_EQ(present, stats.entries) << max;
  }
}

TEST(KeyCacheTest, AKeyInUseSurvivesWhileOthersChurnThrough) {
  // 32 entries in 16 shards of 2: with least-recently-used eviction the key read after every put
  // is never the one evicted; with first-in first-out it would go within a few puts.
  KeyCache cache(32, 60s);
  cache.Put(Uri(0), KeyFor(0));
  for (std::size_t i = 1; i < 2000; ++i) {
    cache.Put(Uri(i), KeyFor(i));
    ASSERT_TRUE(Holds(cache.Get(Uri(0)), 0)) << "evicted after " << i << " puts";
  }
}

TEST(KeyCacheTest, EntriesOlderThanMaxAgeAreNeverReturned) {
  auto now = std::chrono::steady_clock::time_point{} + 1h;
  KeyCache cache(100, 10s, [&] { return now; });
  cache.Put(Uri(1), KeyFor(1));
  now += 9s;
  EXPECT_TRUE(Holds(cache.Get(Uri(1)), 1));  // a hit does not renew the entry's age
  now += 1s;
  EXPECT_FALSE(cache.Get(Uri(1)));
  KeyCache::Stats stats = cache.stats();
  EXPECT_EQ(stats.expirations, 1u);
  EXPECT_EQ(stats.entries, 0u);
  cache.Put(Uri(1), KeyFor(1));  // put again: a fresh age
  now += 5s;
  EXPECT_TRUE(Holds(cache.Get(Uri(1)), 1));
}

TEST(KeyCacheTest, ClearAndEraseDropEntries) {
  KeyCache cache(100, 60s);
  for (std::size_t i = 0; i < 50; ++i) cache.Put(Uri(i), KeyFor(i));
  cache.Erase(Uri(3));
  EXPECT_FALSE(cache.Get(Uri(3)));
  EXPECT_TRUE(Holds(cache.Get(Uri(4)), 4));
  cache.Clear();
  EXPECT_EQ(cache.stats().entries, 0u);
  for (std::size_t i = 0; i < 50; ++i) EXPECT_FALSE(cache.Get(Uri(i)));
}

TEST(KeyCacheTest, ZeroEntriesDisablesTheCache) {
  KeyCache cache(0, 60s);
  EXPECT_FALSE(cache.enabled());
  cache.Put(Uri(1), KeyFor(1));
  EXPECT_FALSE(cache.Get(Uri(1)));
  KeyCache::Stats stats = cache.stats();
  EXPECT_EQ(stats.entries, 0u);
  EXPECT_EQ(stats.misses, 1u);
  cache.Clear();  // harmless
}

TEST(KeyCacheTest, KeysOfAnotherSizeAreNotCached) {
  KeyCache cache(100, 60s);
  const std::vector<std::uint8_t> short_key(16, 1);
  cache.Put(Uri(1), short_key);
  EXPECT_FALSE(cache.Get(Uri(1)));
  EXPECT_EQ(cache.stats().entries, 0u);
}

TEST(KeyCacheTest, SixteenThreadsNeverSeeAnotherUrisKey) {
  KeyCache cache(64, 60s);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      for (std::size_t i = 0; i < 5000; ++i) {
        const std::size_t n = (i * 7 + static_cast<std::size_t>(t)) % 200;
        std::optional<SecretBytes> got = cache.Get(Uri(n));
        if (got && !Holds(got, n)) ++wrong;
        if (!got) cache.Put(Uri(n), KeyFor(n));
        if (i % 1000 == 999 && t == 0) cache.Clear();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0);
  KeyCache::Stats stats = cache.stats();
  EXPECT_LE(stats.entries, 64u);
  EXPECT_EQ(stats.hits + stats.misses, 16u * 5000u);
}

}  // namespace
}  // namespace strongroom::kms
