// Throughput of the HSM layer's Token::Wrap and Token::Unwrap against a raw PKCS#11 loop doing the
// same cryptographic work on the same SoftHSM2 token, in the same run, at 1, 2 and 8 threads; and
// of Token::SignPs256, the KMS's answer signature (RSA-3072, kmsctl's default identity key), for
// comparing the layer with itself across changes (BM_LayerSignPs256, no raw loop).
//
// Per operation the raw loop makes exactly the PKCS#11 calls Token::Wrap / Token::Unwrap make
// (hsm/src/token_root_keys.cc) and nothing else:
//   wrap:   C_GenerateRandom (12-byte IV), C_EncryptInit (CKM_AES_GCM, 96-bit IV, the layer's AAD
//           from WrappedKeyAad, 128-bit tag), C_Encrypt of a 32-byte key into 48 bytes;
//   unwrap: C_DecryptInit + C_Decrypt of a blob the layer wrapped.
// Each raw thread has its own session. What the raw loop leaves out is the layer's own cost:
// validating the binding, the login check, leasing a pooled session, the handle cache, the
// wrap-usage ledger, building the AAD and encoding or parsing the blob. Raw is the ceiling.
//
// The raw loop uses its own session copy of the root key (C_CopyObject with CKA_TOKEN=false),
// because that is the object the layer encrypts with when session_copies is on (the default): on
// SoftHSM2 a token object pays file-store access on every use (token.h), so a raw loop on the
// token object would be a slower, unfair baseline. BM_RawWrapTokenKey uses the token object
// itself, for information only (it shows what the session copy buys).
//
// Hermetic: the token lives in a temporary SoftHSM2 directory of its own, removed at the end.
// SR_BENCH_POOL_SIZE sets the layer token's session-pool size (default: TokenConfig's).
// bench/run-hsm-bench.sh builds and runs it.
#include <benchmark/benchmark.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "softhsm_token_dir.h"
#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/hsm/ck_result.h"
#include "strongroom/hsm/module.h"
#include "strongroom/hsm/pkcs11.h"
#include "strongroom/hsm/root_key.h"
#include "strongroom/hsm/token.h"
#include "strongroom/hsm/token_uri.h"
#include "strongroom/hsm/wrapped_key.h"

namespace strongroom::bench {
namespace {

constexpr char kTokenLabel[] = "srbench";
constexpr char kOrg[] = "acme";
constexpr char kContext[] = "kms://kms.acme.example/keys/bench";
constexpr char kIdentity[] = "bench";
// About the size of a JWS signing input the KMS signs (a protected header and a sealed answer).
constexpr std::size_t kSignedMessageSize = 512;
constexpr double kMinTimeSeconds = 1.0;
constexpr int kThreadCounts[] = {1, 2, 8};
constexpr std::size_t kSealedSize = hsm::kWrappedKeyPlainSize + hsm::kGcmTagSize;  // 48

using Iv = std::span<std::uint8_t, hsm::kGcmIvSize>;
using Sealed = std::span<std::uint8_t, kSealedSize>;

// What every benchmark shares; set up in main before any benchmark runs and read-only afterwards.
struct Fixture {
  hsm::Token* token = nullptr;
  hsm::KeyBinding binding;
  std::uint32_t version = 0;
  std::vector<std::uint8_t> key;   // the 256-bit key that is wrapped
  std::vector<std::uint8_t> aad;   // WrappedKeyAad(binding, version): the bytes the layer uses
  std::vector<std::uint8_t> blob;  // `key` wrapped by the layer, unwrapped by both
  std::optional<hsm::WrappedKeyView> view;              // `blob` parsed, for the raw unwrap
  std::vector<std::uint8_t> message;                    // what BM_LayerSignPs256 signs
  CK_SESSION_HANDLE setup_session = CK_INVALID_HANDLE;  // open for the run; owns raw_copy_key
  CK_OBJECT_HANDLE token_key = CK_INVALID_HANDLE;       // the root key's token object
  CK_OBJECT_HANDLE raw_copy_key = CK_INVALID_HANDLE;    // the raw loop's session copy of it
};

// A PKCS#11 call that failed, or none.
struct CkStep {
  CK_RV rv = CKR_OK;
  const char* call = "";
  bool ok() const { return rv == CKR_OK; }
  std::string ToString() const { return std::string(call) + " failed: " + hsm::CkrName(rv); }
};

// AES-GCM parameters as Token::Wrap and Token::Unwrap pass them: 96-bit IV, the layer's AAD,
// 128-bit tag. The IV and the AAD are never empty (SoftHSM 2.6.1 crashes on a NULL IV or empty
// AAD).
CK_GCM_PARAMS GcmParams(std::span<const std::uint8_t> iv, const Fixture& f) {
  return {const_cast<std::uint8_t*>(iv.data()),    iv.size(),    iv.size() * 8,
          const_cast<std::uint8_t*>(f.aad.data()), f.aad.size(), hsm::kGcmTagSize * 8};
}

// Token::Wrap's PKCS#11 work without the layer.
CkStep RawWrapOnce(CK_FUNCTION_LIST_PTR fn, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key,
                   const Fixture& f, Iv iv, Sealed out) {
  CK_RV rv = fn->C_GenerateRandom(session, iv.data(), iv.size());
  if (rv != CKR_OK) return {rv, "C_GenerateRandom"};
  CK_GCM_PARAMS params = GcmParams(iv, f);
  CK_MECHANISM mechanism{CKM_AES_GCM, &params, sizeof params};
  rv = fn->C_EncryptInit(session, &mechanism, key);
  if (rv != CKR_OK) return {rv, "C_EncryptInit"};
  CK_ULONG out_len = out.size();
  rv = fn->C_Encrypt(session, const_cast<std::uint8_t*>(f.key.data()), f.key.size(), out.data(),
                     &out_len);
  if (rv != CKR_OK) return {rv, "C_Encrypt"};
  if (out_len != out.size()) return {CKR_GENERAL_ERROR, "C_Encrypt (output length)"};
  return {};
}

// Token::Unwrap's PKCS#11 work without the layer; checks that `out` holds the fixture's key.
CkStep RawUnwrapOnce(CK_FUNCTION_LIST_PTR fn, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key,
                     const Fixture& f, std::span<const std::uint8_t> iv,
                     std::span<const std::uint8_t> sealed, Sealed out) {
  CK_GCM_PARAMS params = GcmParams(iv, f);
  CK_MECHANISM mechanism{CKM_AES_GCM, &params, sizeof params};
  CK_RV rv = fn->C_DecryptInit(session, &mechanism, key);
  if (rv != CKR_OK) return {rv, "C_DecryptInit"};
  CK_ULONG out_len = out.size();
  rv = fn->C_Decrypt(session, const_cast<std::uint8_t*>(sealed.data()), sealed.size(), out.data(),
                     &out_len);
  if (rv != CKR_OK) return {rv, "C_Decrypt"};
  if (out_len != f.key.size() || std::memcmp(out.data(), f.key.data(), f.key.size()) != 0) {
    return {CKR_GENERAL_ERROR, "C_Decrypt (result differs from the wrapped key)"};
  }
  return {};
}

// The session of one raw benchmark thread, opened like the layer's pooled sessions. The token is
// already logged in application-wide by the layer.
class RawSession {
 public:
  explicit RawSession(const Fixture& f) : fn_(f.token->module().fn()) {
    rv_ = fn_->C_OpenSession(f.token->slot(), CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr,
                             &handle_);
  }
  ~RawSession() {
    if (rv_ == CKR_OK) fn_->C_CloseSession(handle_);
  }
  RawSession(const RawSession&) = delete;
  RawSession& operator=(const RawSession&) = delete;

  CkStep open() const { return {rv_, "C_OpenSession"}; }
  CK_FUNCTION_LIST_PTR fn() const { return fn_; }
  CK_SESSION_HANDLE handle() const { return handle_; }

 private:
  CK_FUNCTION_LIST_PTR fn_;
  CK_SESSION_HANDLE handle_ = CK_INVALID_HANDLE;
  CK_RV rv_ = CKR_OK;
};

// Reports how often the layer's callers waited for a pooled session and how long a wait took on
// average (thread 0 reports for all threads). Long waits mean some threads were starved of a
// session while others kept re-acquiring it.
class PoolWaitCounter {
 public:
  PoolWaitCounter(benchmark::State& state, const hsm::Token& token) : state_(state), token_(token) {
    if (state_.thread_index() == 0) before_ = token_.Health().pool;
  }
  ~PoolWaitCounter() {
    if (state_.thread_index() != 0 || state_.iterations() == 0) return;
    const hsm::SessionPoolStats after = token_.Health().pool;
    const double ops = static_cast<double>(state_.iterations()) * state_.threads();
    const double waits = static_cast<double>(after.waited - before_.waited);
    state_.counters["pool_waits/op"] = waits / ops;
    state_.counters["pool_ms/wait"] =
        waits == 0 ? 0 : static_cast<double>(after.wait_micros - before_.wait_micros) / 1e3 / waits;
  }
  PoolWaitCounter(const PoolWaitCounter&) = delete;
  PoolWaitCounter& operator=(const PoolWaitCounter&) = delete;

 private:
  benchmark::State& state_;
  const hsm::Token& token_;
  hsm::SessionPoolStats before_;
};

void RawWrap(benchmark::State& state, const Fixture& f, CK_OBJECT_HANDLE key) {
  RawSession session(f);
  if (!session.open().ok()) state.SkipWithError(session.open().ToString().c_str());
  std::uint8_t iv[hsm::kGcmIvSize];
  std::uint8_t out[kSealedSize];
  for (auto _ : state) {
    CkStep step = RawWrapOnce(session.fn(), session.handle(), key, f, iv, out);
    if (!step.ok()) {
      state.SkipWithError(step.ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_RawWrap(benchmark::State& state, const Fixture* f) { RawWrap(state, *f, f->raw_copy_key); }

void BM_RawWrapTokenKey(benchmark::State& state, const Fixture* f) {
  RawWrap(state, *f, f->token_key);
}

void BM_RawUnwrap(benchmark::State& state, const Fixture* f) {
  RawSession session(*f);
  if (!session.open().ok()) state.SkipWithError(session.open().ToString().c_str());
  std::uint8_t out[kSealedSize];
  for (auto _ : state) {
    CkStep step = RawUnwrapOnce(session.fn(), session.handle(), f->raw_copy_key, *f, f->view->iv,
                                f->view->ciphertext_and_tag, out);
    if (!step.ok()) {
      state.SkipWithError(step.ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_LayerWrap(benchmark::State& state, const Fixture* f) {
  PoolWaitCounter waits(state, *f->token);
  for (auto _ : state) {
    Result<std::vector<std::uint8_t>> blob = f->token->Wrap(f->binding, f->key);
    if (!blob.ok()) {
      state.SkipWithError(blob.error().ToString().c_str());
      break;
    }
    if (blob->size() != hsm::kWrappedKeySize) {
      state.SkipWithError("Token::Wrap returned a blob of the wrong size");
      break;
    }
    benchmark::DoNotOptimize(blob->data());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_LayerUnwrap(benchmark::State& state, const Fixture* f) {
  PoolWaitCounter waits(state, *f->token);
  for (auto _ : state) {
    Result<SecretBytes> key = f->token->Unwrap(f->binding, f->blob);
    if (!key.ok()) {
      state.SkipWithError(key.error().ToString().c_str());
      break;
    }
    if (key->size() != f->key.size() ||
        std::memcmp(key->data(), f->key.data(), f->key.size()) != 0) {
      state.SkipWithError("Token::Unwrap returned a different key");
      break;
    }
    benchmark::DoNotOptimize(key->data());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_LayerSignPs256(benchmark::State& state, const Fixture* f) {
  PoolWaitCounter waits(state, *f->token);
  for (auto _ : state) {
    Result<std::vector<std::uint8_t>> signature = f->token->SignPs256(kIdentity, f->message);
    if (!signature.ok()) {
      state.SkipWithError(signature.error().ToString().c_str());
      break;
    }
    if (signature->size() != 384) {
      state.SkipWithError("Token::SignPs256 returned a signature of the wrong size");
      break;
    }
    benchmark::DoNotOptimize(signature->data());
  }
  state.SetItemsProcessed(state.iterations());
}

// Raw and layer paired: every iteration runs a batch of raw operations and a batch of layer
// operations (alternating which goes first) and times each, so drift of the machine's speed, which
// on this 2-vCPU VM moves single runs by 10-30%, hits both sides alike. Reports each side's rate
// (summed over threads) and layer/raw, the layer's rate as a fraction of the raw loop's.
template <typename RawOnce, typename LayerOnce>
void Paired(benchmark::State& state, RawOnce raw_once, LayerOnce layer_once) {
  constexpr int kBatch = 64;
  using Clock = std::chrono::steady_clock;
  Clock::duration raw_time{}, layer_time{};
  std::int64_t batches = 0;
  for (auto _ : state) {
    for (int side = 0; side < 2; ++side) {
      const bool raw_side = (side == 0) == (batches % 2 == 0);
      const auto start = Clock::now();
      for (int i = 0; i < kBatch; ++i) {
        if (std::string failure = raw_side ? raw_once() : layer_once(); !failure.empty()) {
          state.SkipWithError(failure.c_str());
          return;
        }
      }
      (raw_side ? raw_time : layer_time) += Clock::now() - start;
    }
    ++batches;
  }
  const double ops = static_cast<double>(batches) * kBatch;
  const double raw_s = std::chrono::duration<double>(raw_time).count();
  const double layer_s = std::chrono::duration<double>(layer_time).count();
  state.counters["raw_ops/s"] = ops / raw_s;
  state.counters["layer_ops/s"] = ops / layer_s;
  state.counters["layer/raw"] =
      benchmark::Counter(raw_s / layer_s, benchmark::Counter::kAvgThreads);
  state.SetItemsProcessed(static_cast<std::int64_t>(ops) * 2);
}

void BM_PairedWrap(benchmark::State& state, const Fixture* f) {
  RawSession session(*f);
  if (!session.open().ok()) state.SkipWithError(session.open().ToString().c_str());
  std::uint8_t iv[hsm::kGcmIvSize];
  std::uint8_t out[kSealedSize];
  Paired(
      state,
      [&]() -> std::string {
        CkStep step = RawWrapOnce(session.fn(), session.handle(), f->raw_copy_key, *f, iv, out);
        benchmark::DoNotOptimize(out);
        return step.ok() ? "" : step.ToString();
      },
      [&]() -> std::string {
        Result<std::vector<std::uint8_t>> blob = f->token->Wrap(f->binding, f->key);
        if (!blob.ok()) return blob.error().ToString();
        benchmark::DoNotOptimize(blob->data());
        return blob->size() == hsm::kWrappedKeySize ? "" : "Token::Wrap: wrong blob size";
      });
}

void BM_PairedUnwrap(benchmark::State& state, const Fixture* f) {
  RawSession session(*f);
  if (!session.open().ok()) state.SkipWithError(session.open().ToString().c_str());
  std::uint8_t out[kSealedSize];
  Paired(
      state,
      [&]() -> std::string {
        CkStep step = RawUnwrapOnce(session.fn(), session.handle(), f->raw_copy_key, *f,
                                    f->view->iv, f->view->ciphertext_and_tag, out);
        return step.ok() ? "" : step.ToString();
      },
      [&]() -> std::string {
        Result<SecretBytes> key = f->token->Unwrap(f->binding, f->blob);
        if (!key.ok()) return key.error().ToString();
        return ConstantTimeEquals(key->view(), f->key) ? "" : "Token::Unwrap: another key";
      });
}

// Raw and layer for the same operation and thread count are registered next to each other, so
// they run back to back under the same machine conditions. Each runs for kMinTimeSeconds unless
// the command line sets --benchmark_min_time.
void RegisterBenchmarks(const Fixture* f, bool min_time_from_flag) {
  using Function = void (*)(benchmark::State&, const Fixture*);
  struct Named {
    const char* name;
    Function function;
  };
  const std::vector<std::vector<Named>> groups = {
      {{"BM_RawWrap", BM_RawWrap},
       {"BM_LayerWrap", BM_LayerWrap},
       {"BM_RawWrapTokenKey", BM_RawWrapTokenKey}},
      {{"BM_RawUnwrap", BM_RawUnwrap}, {"BM_LayerUnwrap", BM_LayerUnwrap}},
      {{"BM_PairedWrap", BM_PairedWrap}, {"BM_PairedUnwrap", BM_PairedUnwrap}},
      {{"BM_LayerSignPs256", BM_LayerSignPs256}},
  };
  for (const std::vector<Named>& group : groups) {
    for (int threads : kThreadCounts) {
      for (const Named& bm : group) {
        benchmark::internal::Benchmark* b =
            benchmark::RegisterBenchmark(bm.name, bm.function, f)->Threads(threads)->UseRealTime();
        if (!min_time_from_flag) b->MinTime(kMinTimeSeconds);
      }
    }
  }
}

Result<std::vector<CK_OBJECT_HANDLE>> FindRootKeyObjects(CK_FUNCTION_LIST_PTR fn,
                                                         CK_SESSION_HANDLE session,
                                                         const hsm::RootKeyId& id) {
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_BBOOL on_token = CK_TRUE;
  std::string object_id = hsm::RootKeyObjectId(id);
  CK_ATTRIBUTE match[] = {
      {CKA_CLASS, &cls, sizeof cls},
      {CKA_TOKEN, &on_token, sizeof on_token},
      {CKA_ID, object_id.data(), object_id.size()},
  };
  CK_RV rv = fn->C_FindObjectsInit(session, match, std::size(match));
  if (rv != CKR_OK) return hsm::CkError(rv, "C_FindObjectsInit");
  std::vector<CK_OBJECT_HANDLE> found(4);
  CK_ULONG count = 0;
  rv = fn->C_FindObjects(session, found.data(), found.size(), &count);
  fn->C_FindObjectsFinal(session);
  if (rv != CKR_OK) return hsm::CkError(rv, "C_FindObjects");
  found.resize(count);
  return found;
}

Status Check(const CkStep& step) {
  if (step.ok()) return OkStatus();
  return Error(ErrorCode::kInternal, step.ToString(), step.rv);
}

// Opens the raw loop's setup session, makes its session copy of the root key and checks that raw
// and layer are interchangeable: raw decrypts the layer's blob and the layer unwraps raw's.
Status PrepareRaw(Fixture& f) {
  CK_FUNCTION_LIST_PTR fn = f.token->module().fn();
  CK_RV rv = fn->C_OpenSession(f.token->slot(), CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr,
                               nullptr, &f.setup_session);
  if (rv != CKR_OK) {
    f.setup_session = CK_INVALID_HANDLE;
    return hsm::CkError(rv, "C_OpenSession (raw setup)");
  }
  SR_ASSIGN_OR_RETURN(std::vector<CK_OBJECT_HANDLE> found,
                      FindRootKeyObjects(fn, f.setup_session, {f.binding.org, f.version}));
  if (found.size() != 1) {
    return Error(ErrorCode::kInternal,
                 "expected one root key token object, found " + std::to_string(found.size()));
  }
  f.token_key = found.front();
  CK_BBOOL on_token = CK_FALSE;
  CK_ATTRIBUTE copy_template[] = {{CKA_TOKEN, &on_token, sizeof on_token}};
  rv = fn->C_CopyObject(f.setup_session, f.token_key, copy_template, std::size(copy_template),
                        &f.raw_copy_key);
  if (rv != CKR_OK) return hsm::CkError(rv, "C_CopyObject (raw session copy of the root key)");

  std::uint8_t out[kSealedSize];
  SR_RETURN_IF_ERROR(Check(RawUnwrapOnce(fn, f.setup_session, f.raw_copy_key, f, f.view->iv,
                                         f.view->ciphertext_and_tag, out)));
  std::uint8_t iv[hsm::kGcmIvSize];
  SR_RETURN_IF_ERROR(Check(RawWrapOnce(fn, f.setup_session, f.raw_copy_key, f, iv, out)));
  SR_ASSIGN_OR_RETURN(SecretBytes unwrapped,
                      f.token->Unwrap(f.binding, hsm::EncodeWrappedKey(f.version, iv, out)));
  if (!ConstantTimeEquals(unwrapped.view(), f.key)) {
    return Error(ErrorCode::kInternal, "the layer unwrapped raw's blob to a different key");
  }
  SR_RETURN_IF_ERROR(Check(RawWrapOnce(fn, f.setup_session, f.token_key, f, iv, out)));
  return OkStatus();
}

Result<std::optional<std::size_t>> PoolSizeFromEnvironment() {
  const char* text = std::getenv("SR_BENCH_POOL_SIZE");
  if (text == nullptr || *text == '\0') return std::optional<std::size_t>();
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(text, &end, 10);
  if (errno != 0 || *end != '\0' || value == 0 || value > 1024) {
    return Error(ErrorCode::kInvalidArgument,
                 std::string("SR_BENCH_POOL_SIZE must be 1 to 1024, got '") + text + "'");
  }
  return std::optional<std::size_t>(static_cast<std::size_t>(value));
}

std::string ModuleDescription(hsm::Module& module) {
  CK_INFO info{};
  if (module.fn()->C_GetInfo(&info) != CKR_OK) return module.path();
  return hsm::TrimmedField(info.libraryDescription, sizeof info.libraryDescription) + " " +
         std::to_string(info.libraryVersion.major) + "." +
         std::to_string(info.libraryVersion.minor) + " (" + module.path() + ")";
}

// Everything the run holds, released in main's scope: finalizing SoftHSM2 from a static
// destructor hangs.
struct Environment {
  std::unique_ptr<SoftHsmTokenDir> dir;
  std::shared_ptr<hsm::Module> module;
  std::unique_ptr<hsm::Token> token;
  Fixture fixture;

  ~Environment() {
    if (module != nullptr && fixture.setup_session != CK_INVALID_HANDLE) {
      module->fn()->C_CloseSession(fixture.setup_session);  // destroys raw_copy_key
    }
    token.reset();
    module.reset();  // the last holder: C_Finalize
    dir.reset();     // removes the token directory
  }
};

Status SetUp(Environment& env) {
  SR_ASSIGN_OR_RETURN(std::optional<std::size_t> pool_size, PoolSizeFromEnvironment());
  SR_ASSIGN_OR_RETURN(env.dir, SoftHsmTokenDir::Create());  // sets SOFTHSM2_CONF
  SR_ASSIGN_OR_RETURN(env.module, hsm::Module::Load(kSoftHsmModule));
  SR_RETURN_IF_ERROR(env.dir->InitializeToken(*env.module, kTokenLabel));

  hsm::TokenConfig config;
  config.name = "bench";
  config.uri = env.dir->Uri(kTokenLabel);
  if (pool_size) config.pool_size = *pool_size;
  SR_ASSIGN_OR_RETURN(env.token, hsm::Token::Open(config));
  SR_ASSIGN_OR_RETURN(hsm::RootKeyInfo root, env.token->CreateRootKey(kOrg));

  Fixture& f = env.fixture;
  f.token = env.token.get();
  f.binding = {kOrg, kContext};
  f.version = root.id.version;
  const SecretBytes key = SecretBytes::Random(hsm::kWrappedKeyPlainSize);
  f.key.assign(key.data(), key.data() + key.size());
  f.aad = hsm::WrappedKeyAad(f.binding, f.version);
  if (f.aad.empty()) return Error(ErrorCode::kInternal, "WrappedKeyAad returned no bytes");
  SR_ASSIGN_OR_RETURN(f.blob, env.token->Wrap(f.binding, f.key));
  SR_ASSIGN_OR_RETURN(f.view, hsm::ParseWrappedKey(f.blob));
  if (f.view->root_version != f.version) {
    return Error(ErrorCode::kInternal, "the layer wrapped under an unexpected root-key version");
  }
  SR_RETURN_IF_ERROR(PrepareRaw(f));
  Result<hsm::RsaPublicKey> identity = env.token->CreateIdentityKey(kIdentity, 3072);
  if (!identity.ok()) return identity.error();
  f.message.assign(kSignedMessageSize, 0x5a);

  benchmark::AddCustomContext(
      "hsm_pool_size",
      std::to_string(config.pool_size) + (pool_size ? " (SR_BENCH_POOL_SIZE)" : " (default)"));
  benchmark::AddCustomContext("hsm_session_copies", config.session_copies ? "on" : "off");
  benchmark::AddCustomContext("pkcs11_module", ModuleDescription(*env.module));
  return OkStatus();
}

}  // namespace
}  // namespace strongroom::bench

int main(int argc, char** argv) {
  bool min_time_from_flag = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--benchmark_min_time", 20) == 0) min_time_from_flag = true;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  int rc = 0;
  {
    strongroom::bench::Environment env;
    if (strongroom::Status s = strongroom::bench::SetUp(env); !s.ok()) {
      std::fprintf(stderr, "hsm_bench: setup failed: %s\n", s.error().ToString().c_str());
      rc = 1;
    } else {
      strongroom::bench::RegisterBenchmarks(&env.fixture, min_time_from_flag);
      benchmark::RunSpecifiedBenchmarks();
    }
  }  // closes sessions, releases the token and module, removes the token directory
  benchmark::Shutdown();
  return rc;
}
