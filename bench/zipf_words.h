// The words of the search benchmarks (core_index_bench, indexer_load, indexer_fill): a vocabulary
// drawn with Zipf's law, and messages of about 200 bytes made of it, so that the terms indexerd
// extracts and the terms of the queries follow the same distribution.
#ifndef STRONGROOM_BENCH_ZIPF_WORDS_H_
#define STRONGROOM_BENCH_ZIPF_WORDS_H_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <random>
#include <string>
#include <vector>

namespace strongroom::bench {

inline constexpr std::size_t kVocabulary = 50000;  // distinct words of the organization's rooms
inline constexpr double kZipfExponent = 1.0;

// Ranks in [0, n), drawn with probability ~ 1 / (rank + 1)^s.
class Zipf {
 public:
  Zipf(std::size_t n, double s) : cdf_(n) {
    double sum = 0;
    for (std::size_t i = 0; i < n; ++i) cdf_[i] = sum += 1.0 / std::pow(double(i + 1), s);
    for (double& c : cdf_) c /= sum;
  }
  std::size_t operator()(std::mt19937_64& rng) const {
    const double u = std::uniform_real_distribution<double>(0, 1)(rng);
    return std::min<std::size_t>(std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin(),
                                 cdf_.size() - 1);
  }

 private:
  std::vector<double> cdf_;
};

// The word of a rank: three or four consonant-vowel syllables ("bakodu"), distinct per rank,
// letters only, so that ICU takes it as one word and the stemmer leaves it mostly as it is.
inline std::string SyllableWord(std::size_t rank) {
  static constexpr char kConsonants[] = "bdfgklmnprstvz";
  static constexpr char kVowels[] = "aeiou";
  constexpr std::size_t kSyllables = (sizeof kConsonants - 1) * (sizeof kVowels - 1);  // 70
  std::string word;
  std::size_t n = rank;
  for (int i = 0; i < 3 || n > 0; ++i) {
    const std::size_t s = n % kSyllables;
    n /= kSyllables;
    word.push_back(kConsonants[s / (sizeof kVowels - 1)]);
    word.push_back(kVowels[s % (sizeof kVowels - 1)]);
  }
  return word;
}

// A message of about `bytes` bytes: Zipf words separated by spaces.
inline std::string ZipfMessage(const Zipf& zipf, std::mt19937_64& rng, std::size_t bytes) {
  std::string text;
  while (text.size() < bytes) {
    if (!text.empty()) text.push_back(' ');
    text += SyllableWord(zipf(rng));
  }
  return text;
}

}  // namespace strongroom::bench

#endif  // STRONGROOM_BENCH_ZIPF_WORDS_H_
