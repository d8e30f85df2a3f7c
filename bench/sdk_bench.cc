// The SDK's client-side encryption of one 64 KiB message against raw OpenSSL EVP AES-256-GCM of
// the same 64 KiB, in the same run (issue 5, Performance; bar: the SDK at >= 80% of raw).
//
//   BM_RawGcm      EVP AES-256-GCM: fresh 12-byte IV, encrypt, 16-byte tag (the floor).
//   BM_SdkText     EncryptText: the compact JWE (dir/A256GCM) the CLI sends (header, base64url
//                  of IV, ciphertext and tag).
//   BM_SdkFile     EncryptFile from a stream into a stream (the file path, fresh key and IV),
//                  over memory streams that copy nothing themselves.
//   BM_PairedText  raw and EncryptText in alternating batches within each iteration, so that a
//   BM_PairedFile  drift of the machine hits both; counter sdk/raw = raw time / SDK time.
//
// Every benchmark reports bytes/s of plaintext. bench/run-sdk-latency.sh is the other half.
//
// SR_BENCH_BASE64URL=scalar|avx2|avx512vbmi picks a slower base64url encoder than the CPU's best;
// with OPENSSL_ia32cap masking AVX-512 and VAES as well, this machine stands in for an AVX2-only
// one (docs/benchmarks.md).
#include <benchmark/benchmark.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <istream>
#include <ostream>
#include <streambuf>
#include <string>
#include <vector>

#include "strongroom/client/content.h"
#include "strongroom/common/jose/dir_jwe.h"
#include "strongroom/common/secret_bytes.h"

namespace strongroom::client {
namespace {

constexpr std::size_t kMessageBytes = 64 * 1024;
constexpr char kKeyUri[] = "kms://kms.acme.test/keys/0f6c1a52-3b8e-4d57-9a0e-5c2b7d9e4f11";

struct Fixture {
  Fixture() : plaintext(kMessageBytes, '\0'), key(32) {
    // Printable text, as a message would be (the JWE path takes a string).
    for (std::size_t i = 0; i < plaintext.size(); ++i) {
      plaintext[i] = static_cast<char>('a' + (i * 7 + i / 13) % 26);
    }
    RAND_bytes(key.data(), 32);
  }
  std::string plaintext;
  SecretBytes key;
};

const Fixture& F() {
  static const Fixture fixture;
  return fixture;
}

// Raw EVP AES-256-GCM of the message: fresh IV, ciphertext into a buffer, tag. The context is made
// once per benchmark (as a tuned caller would) and re-keyed per message.
class RawGcm {
 public:
  RawGcm() : ctx_(EVP_CIPHER_CTX_new()), out_(kMessageBytes + 16) {}
  ~RawGcm() { EVP_CIPHER_CTX_free(ctx_); }
  RawGcm(const RawGcm&) = delete;
  RawGcm& operator=(const RawGcm&) = delete;

  std::string Once() {
    const Fixture& f = F();
    unsigned char iv[12];
    unsigned char tag[16];
    int len = 0, final_len = 0;
    if (RAND_bytes(iv, sizeof iv) != 1 ||
        EVP_EncryptInit_ex(ctx_, EVP_aes_256_gcm(), nullptr, f.key.data(), iv) != 1 ||
        EVP_EncryptUpdate(ctx_, out_.data(), &len,
                          reinterpret_cast<const unsigned char*>(f.plaintext.data()),
                          static_cast<int>(f.plaintext.size())) != 1 ||
        EVP_EncryptFinal_ex(ctx_, out_.data() + len, &final_len) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_GET_TAG, sizeof tag, tag) != 1) {
      return "EVP AES-256-GCM failed";
    }
    benchmark::DoNotOptimize(out_.data());
    benchmark::DoNotOptimize(tag);
    return static_cast<std::size_t>(len + final_len) == kMessageBytes ? "" : "short ciphertext";
  }

 private:
  EVP_CIPHER_CTX* ctx_;
  std::vector<unsigned char> out_;
};

std::string SdkTextOnce() {
  Result<std::string> jwe = EncryptText(F().key, kKeyUri, F().plaintext);
  if (!jwe.ok()) return jwe.error().ToString();
  benchmark::DoNotOptimize(jwe->data());
  // base64url expands by 4/3: the ciphertext alone is 87,382 characters.
  return jwe->size() > kMessageBytes * 4 / 3 ? "" : "JWE too short";
}

// Streams over fixed memory, so that the file path is measured rather than std::stringstream's
// copies and growth: the input reads the fixture in place, the output writes into a buffer made
// once.
class MemoryIn : public std::streambuf {
 public:
  explicit MemoryIn(const std::string& text) {
    char* begin = const_cast<char*>(text.data());
    setg(begin, begin, begin + text.size());
  }
};
class MemoryOut : public std::streambuf {
 public:
  MemoryOut() : bytes_(kMessageBytes + 64) {}
  void Rewind() { setp(bytes_.data(), bytes_.data() + bytes_.size()); }
  std::size_t written() const { return static_cast<std::size_t>(pptr() - pbase()); }
  const char* data() const { return bytes_.data(); }

 private:
  std::vector<char> bytes_;
};

std::string SdkFileOnce() {
  static MemoryOut out_buffer;
  MemoryIn in_buffer(F().plaintext);
  out_buffer.Rewind();
  std::istream in(&in_buffer);
  std::ostream out(&out_buffer);
  Result<FileReference> ref = EncryptFile(in, out, "strongroom-file:bench", kMessageBytes);
  if (!ref.ok()) return ref.error().ToString();
  benchmark::DoNotOptimize(out_buffer.data());
  return ref->size == kMessageBytes && out_buffer.written() == kMessageBytes
             ? ""
             : "EncryptFile: wrong size";
}

void Single(benchmark::State& state, const std::function<std::string()>& once) {
  for (auto _ : state) {
    if (std::string failure = once(); !failure.empty()) {
      state.SkipWithError(failure.c_str());
      return;
    }
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(kMessageBytes));
}

void BM_RawGcm(benchmark::State& state) {
  RawGcm raw;
  Single(state, [&] { return raw.Once(); });
}
void BM_SdkText(benchmark::State& state) { Single(state, SdkTextOnce); }
void BM_SdkFile(benchmark::State& state) { Single(state, SdkFileOnce); }

// Raw and SDK in alternating batches (the side that goes first alternates too), timed apart.
void Paired(benchmark::State& state, const std::function<std::string()>& sdk_once) {
  constexpr int kBatch = 16;
  using Clock = std::chrono::steady_clock;
  RawGcm raw;
  Clock::duration raw_time{}, sdk_time{};
  std::int64_t batches = 0;
  for (auto _ : state) {
    for (int side = 0; side < 2; ++side) {
      const bool raw_side = (side == 0) == (batches % 2 == 0);
      const auto start = Clock::now();
      for (int i = 0; i < kBatch; ++i) {
        if (std::string failure = raw_side ? raw.Once() : sdk_once(); !failure.empty()) {
          state.SkipWithError(failure.c_str());
          return;
        }
      }
      (raw_side ? raw_time : sdk_time) += Clock::now() - start;
    }
    ++batches;
  }
  const double messages = static_cast<double>(batches) * kBatch;
  const double raw_s = std::chrono::duration<double>(raw_time).count();
  const double sdk_s = std::chrono::duration<double>(sdk_time).count();
  const double bytes = messages * static_cast<double>(kMessageBytes);
  state.counters["raw_B/s"] =
      benchmark::Counter(bytes / raw_s, benchmark::Counter::kDefaults, benchmark::Counter::kIs1024);
  state.counters["sdk_B/s"] =
      benchmark::Counter(bytes / sdk_s, benchmark::Counter::kDefaults, benchmark::Counter::kIs1024);
  state.counters["sdk/raw"] = raw_s / sdk_s;
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes) * 2);
}

void BM_PairedText(benchmark::State& state) { Paired(state, SdkTextOnce); }
void BM_PairedFile(benchmark::State& state) { Paired(state, SdkFileOnce); }

BENCHMARK(BM_RawGcm);
BENCHMARK(BM_SdkText);
BENCHMARK(BM_SdkFile);
BENCHMARK(BM_PairedText);
BENCHMARK(BM_PairedFile);

}  // namespace
}  // namespace strongroom::client

int main(int argc, char** argv) {
  using strongroom::jose::internal::Base64UrlEncoder;
  if (const char* wanted = std::getenv("SR_BENCH_BASE64URL"); wanted != nullptr && *wanted) {
    const std::string name = wanted;
    const Base64UrlEncoder encoder = name == "scalar" ? Base64UrlEncoder::kScalar
                                     : name == "avx2" ? Base64UrlEncoder::kAvx2
                                                      : Base64UrlEncoder::kAvx512Vbmi;
    strongroom::jose::internal::UseBase64UrlEncoder(encoder);
  }
  static const char* const kNames[] = {"scalar", "avx2", "avx512vbmi"};
  benchmark::AddCustomContext(
      "base64url", kNames[static_cast<int>(strongroom::jose::internal::CurrentBase64UrlEncoder())]);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
