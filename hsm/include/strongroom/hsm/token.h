// One configured PKCS#11 token: its slot, session pool, login, root keys and health.
//
// The token is logged in once per module generation (CKR_USER_ALREADY_LOGGED_IN counts as
// success), on the session of the call that finds it logged out, and never logged out per lease.
// Every operation runs on a leased session and is retried once after repairing what its failure
// says is broken (ck_result.h, ClassifyCkr, decides): a dead session is replaced, a lost login is
// redone, stale object handles are re-resolved by CKA_ID, and a device error, CKR_GENERAL_ERROR,
// CKR_CRYPTOKI_NOT_INITIALIZED or a failed check of the token (below) resets the module. A wrong
// or locked PIN is never retried: the token stays refused until it is reopened.
//
// Tokens of one module share its initialization, so a reset made to repair one of them ends the
// sessions and logins of all. For the others that is no fault: a call that meets it leases a
// session of the new generation, logs in on it and goes on, without a repair or a mark.
//
// Start-up. Open() fails when the token cannot be opened now. Start() (kmsd's) fails only on what
// no repair can cure (a malformed configuration or URI, a module that cannot be loaded, several
// tokens matching the URI, a missing mechanism): a token that is missing or failing is returned
// marked unavailable, and its first repair opens it (finds it, checks its mechanisms, logs in and
// learns what it holds); a token whose PIN is wrong, locked or unreadable is returned refused for
// good, after one C_Login at most. Calls to a refused token fail at once with UNAVAILABLE.
//
// Token faults. The token remembers the objects it holds: the newest root-key version of each
// organization and the identity keys, found when it is opened and whenever it is used. An object
// that is not found is believed missing only while the token proves itself intact (CheckIntact:
// C_GetTokenInfo answers and every remembered object is there and readable); otherwise the miss is
// a token fault, as is every failure ClassifyCkr puts in a class of its own. A token fault that one
// repair did not cure makes the call fail with UNAVAILABLE, never NOT_FOUND, and marks the token
// unavailable. From then on calls fail at once (UNAVAILABLE), without touching the token, until a
// repair is due: 250 ms after the failure, then twice as long after each failed repair, up to 8 s.
// A repair initializes the module again (C_Finalize, C_Initialize), finds the token's slot again by
// its URI, logs in and checks the token; it is made by the first call or Probe() that finds it
// due. KeyVault probes its tokens in the background, so a token comes back by itself.
//
// A decryption that fails on a live session is the message's fault (INVALID_ARGUMENT for RSA-OAEP,
// DATA_LOSS for a wrapped key), without a further check of the token, so that no answer and no
// timing tells a padding failure apart from anything else; so is its CKR_GENERAL_ERROR, which
// SoftHSM2 before 2.7 returns for a bad GCM tag or OAEP padding. A token that fails only that way
// is found by the probe, which has each key it remembers decrypt what it encrypted itself (below,
// CheckIntactOn).
//
// Searches of the token's objects and changes of them (creating or destroying a token object)
// take turns within the process; see objects_mutex_.
//
// Root keys are used through session copies (C_CopyObject with CKA_TOKEN=false, keeping
// CKA_SENSITIVE and non-extractable) when `session_copies` is on: on SoftHSM2 a token object pays
// file I/O on every use and a session copy is 2.2-2.6 times faster (docs/benchmarks.md). On a
// network HSM the copy stays inside the HSM.
//
// Thread-safe. Its code is in four files, opening and login, root keys and the wrap ledger, the
// identity key, and health and repair (hsm/src/token_internal.h names them).
#ifndef STRONGROOM_HSM_TOKEN_H_
#define STRONGROOM_HSM_TOKEN_H_

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/hsm/module.h"
#include "strongroom/hsm/root_key.h"
#include "strongroom/hsm/session_pool.h"
#include "strongroom/hsm/token_uri.h"
#include "strongroom/hsm/wrapped_key.h"

namespace strongroom::hsm {

struct TokenConfig {
  std::string name;  // how operators and logs refer to the token: "primary", "standby", ...
  std::string uri;   // RFC 7512 PKCS#11 URI with module-path and pin-source
  std::size_t pool_size = 16;
  std::chrono::milliseconds acquire_timeout{2000};
  bool session_copies = true;
  // Names this process's wrap-usage counter on the token; distinct per KMS node.
  std::string node_id = "node";
  // AES-GCM with random IVs allows 2^32 encryptions per key (NIST SP 800-38D §8.3); a root-key
  // version refuses to wrap past this many, leaving half that space as margin.
  std::uint64_t wrap_limit = std::uint64_t{1} << 31;
  // Wraps reserved on the token's counter at a time (one token write per block).
  std::uint64_t reserve_block = std::uint64_t{1} << 16;
  // Organizations this token serves; empty means all (e.g. one token per organization).
  std::vector<std::string> orgs;
};

struct RsaPublicKey {
  std::vector<std::uint8_t> modulus;          // big-endian, no leading zero
  std::vector<std::uint8_t> public_exponent;  // big-endian
};

enum class TokenState { kReady, kUnavailable, kLoginRefused };
std::string_view TokenStateName(TokenState state);

struct TokenHealth {
  std::string name;
  TokenState state = TokenState::kReady;
  std::string detail;  // the last error, for operators
  std::uint64_t module_resets = 0;
  std::uint64_t login_attempts = 0;
  std::uint64_t repairs = 0;  // repairs attempted after the token was marked unavailable
  SessionPoolStats pool;
};

class Token {
 public:
  // Loads the module, finds the one token the URI names, checks its mechanisms and logs in.
  static Result<std::unique_ptr<Token>> Open(const TokenConfig& config);
  // As Open, but a token that cannot be opened now comes back unavailable or refused (above).
  static Result<std::unique_ptr<Token>> Start(const TokenConfig& config);
  ~Token();
  Token(const Token&) = delete;
  Token& operator=(const Token&) = delete;

  const std::string& name() const { return config_.name; }
  bool Serves(const std::string& org) const;
  // The organizations it serves as configured; empty means all.
  const std::vector<std::string>& orgs() const { return config_.orgs; }
  const TokenUri& uri() const { return uri_; }
  CK_SLOT_ID slot() const { return pool_.slot(); }
  // Whether the token has been opened (at start, or by a repair since); until then slot() means
  // nothing.
  bool opened() const { return opened_.load(std::memory_order_acquire); }
  // Whether its login was refused for good (wrong, locked or unreadable PIN).
  bool LoginRefused() const;
  Module& module() { return *module_; }

  // Root keys.
  Result<RootKeyInfo> CreateRootKey(const std::string& org);  // the next version (1 if none)
  Result<std::vector<RootKeyInfo>> ListRootKeys(const std::string& org);  // ascending versions
  Result<std::vector<std::string>> ListOrgs();
  Result<std::uint32_t> CurrentVersion(const std::string& org);
  // Forgets cached current versions, e.g. after another node rotated.
  void RefreshVersions();

  // Wraps a 256-bit key under the org's current root key.
  Result<std::vector<std::uint8_t>> Wrap(const KeyBinding& binding,
                                         std::span<const std::uint8_t> key);
  // Unwraps a blob made by Wrap on this token for the same binding.
  Result<SecretBytes> Unwrap(const KeyBinding& binding, std::span<const std::uint8_t> blob);

  // The KMS's static RSA key pair, named `name` (same rules as organization names): generated in
  // the token, the private half CKA_SENSITIVE and never extractable. Label
  // "strongroom/identity/<name>", CKA_ID "sridentity:<name>".
  Result<RsaPublicKey> CreateIdentityKey(const std::string& name, unsigned modulus_bits = 3072);
  Result<RsaPublicKey> IdentityPublicKey(const std::string& name);
  // JOSE "RSA-OAEP": OAEP with SHA-1 and MGF1-SHA-1, done by the token. Any failure to decrypt
  // is one INVALID_ARGUMENT error, whatever the cause, so the answer is no padding oracle.
  Result<SecretBytes> DecryptRsaOaep(const std::string& name,
                                     std::span<const std::uint8_t> ciphertext);
  // JOSE "PS256": RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt, done by the token.
  Result<std::vector<std::uint8_t>> SignPs256(const std::string& name,
                                              std::span<const std::uint8_t> message);
  // Refuses, naming the mechanism, a token that cannot do the identity operations above.
  Status CheckIdentityMechanisms();

  TokenHealth Health() const;
  // The session pool's counters alone (acquisitions, waits, wait time, timeouts): cheaper than
  // Health(), which also takes the token's health and login locks.
  SessionPoolStats pool_stats() const { return pool_.stats(); }
  // Whether the token is marked unavailable or refused: calls to it fail at once (until a repair
  // succeeds), and callers with another token prefer that one meanwhile.
  bool InBackoff() const;

  // Checks that the token answers and still holds every object it held (see above), and marks it
  // unavailable if not; repairs it instead when it is marked unavailable and a repair is due. A
  // repair resets the module only if its generation is still `module_generation` (the caller read
  // it before probing the tokens of the module, so that one round resets a module once).
  void Probe(std::uint64_t module_generation);
  // The check of Probe() as an ordinary call (repaired and marked as any call is), for `kmsctl hsm
  // check`.
  Status CheckIntact();
  // When the next repair is due, if the token is marked unavailable (never for a refused token).
  std::optional<std::chrono::steady_clock::time_point> NextRepair() const;

 private:
  struct Ledger {
    std::atomic<std::uint64_t> remaining{0};  // wraps left in this node's reserved block
    unsigned blocks = 0;  // blocks reserved so far by this process; guarded by ledger_mutex_
  };
  struct RootHandles {
    CK_OBJECT_HANDLE token_key = CK_INVALID_HANDLE;
    CK_OBJECT_HANDLE use_key = CK_INVALID_HANDLE;  // the session copy, or token_key
    Ledger* ledger = nullptr;                      // wrap budget of this version, never null
  };

  Token(TokenConfig config, TokenUri uri, std::shared_ptr<Module> module, CK_SLOT_ID slot);
  // What Open and Start find first: the parsed URI, the loaded module, and the token's slot or
  // why it was not found.
  struct Located {
    TokenUri uri;
    std::shared_ptr<Module> module;
    Result<CK_SLOT_ID> slot;
  };
  static Result<Located> Locate(const TokenConfig& config);
  // The rest of opening, once the slot is known: mechanisms, login, what the token holds.
  Status FinishOpen();
  // The error calls to a refused token fail with: UNAVAILABLE, naming why it was refused.
  Error Refused() const;

  Status CheckMechanisms();
  struct MechanismNeed {
    CK_MECHANISM_TYPE mechanism;
    CK_FLAGS flags;
    const char* what;
    const char* purpose;
  };
  Status RequireMechanisms(std::span<const MechanismNeed> needs);
  // Logs the token in on the lease's session unless it is logged in for the lease's module
  // generation already (finding its slot again first if needed). Under the lease's use guard, so
  // that no reset comes between the login and the call it is for.
  Status LogInOn(SessionLease& lease);
  // Finds the token's slot again, under a use guard, for a call that could not open a session.
  Status FindAgain();
  // Requires login_mutex_ and a use guard of the module.
  Status ResolveSlot(std::uint64_t generation);
  Status Login(SessionLease& lease);
  // Refuses the login for good; requires login_mutex_.
  Error Refuse(Error why);

  // Runs `call` while holding objects_mutex_ (below): shared to search the token's objects
  // (C_FindObjectsInit to C_FindObjectsFinal, and reading what was found where another thread may
  // destroy it), exclusive to add or remove token objects (C_CreateObject, C_GenerateKey,
  // C_GenerateKeyPair, C_DestroyObject). Called under a lease's use guard; `call` makes PKCS#11
  // calls only and never takes another turn (one inside another deadlocks with a waiting change).
  template <typename Call>
  std::invoke_result_t<Call> SearchingObjects(Call&& call);
  template <typename Call>
  std::invoke_result_t<Call> ChangingObjects(Call&& call);

  // Runs `op` on a leased session, repairing and retrying once as described above; fails at once
  // while the token is unavailable and no repair is due.
  template <typename T, typename Op>
  Result<T> Run(Op&& op);
  // Run without the check for an unavailable token (for the repair itself).
  template <typename T, typename Op>
  Result<T> RunUnchecked(Op&& op);
  // OK when calls may go to the token: it is not marked unavailable, or a due repair succeeded.
  Status Admit();
  Status Repair(std::uint64_t module_generation);
  Error Unavailable() const;

  // C_GetTokenInfo answers and every remembered object is found and readable, and with kDecrypts
  // (the probe, a repair, `kmsctl hsm check`) each remembered key also decrypts what it encrypted;
  // an error whose native code ClassifyCkr counts as a token fault otherwise. kPresence is for
  // callers that hold handles_mutex_ (a key not found: is the token intact?).
  enum class CheckDepth { kPresence, kDecrypts };
  Status CheckIntactOn(SessionLease& lease, CheckDepth depth = CheckDepth::kDecrypts);
  // A decryption that fails on a live session is the message's fault (above), unless the key
  // fails on what it encrypted itself. A root-key version encrypts a random value once per
  // process (AES-GCM, counted in the wrap ledger as a wrap; none once the version has reached its
  // limit) and decrypts it at every check; an identity key encrypts one under its public half and
  // decrypts it (RSA-OAEP) at every check. An error with the failure's native code, or
  // kCkrTokenFault when the key answered but not with the value.
  Status CheckRootDecryptsOn(SessionLease& lease, const RootKeyId& id);
  struct RootProbe;
  // Encrypts the random value CheckRootDecryptsOn decrypts; none for a version at its limit.
  Result<std::optional<RootProbe>> MakeRootProbeOn(SessionLease& lease, const RootKeyId& id,
                                                   const RootHandles& handles);
  Status CheckIdentityDecryptsOn(SessionLease& lease, const std::string& key_name);
  // Remembers what the token holds (from a listing of its objects, or a use of one).
  Status RememberObjects(SessionLease& lease);
  // Another process on the same token (a second KMS node, kmsctl) may have rotated an
  // organization's root key: looks for the versions after the newest remembered one and makes
  // the newest found current here, so that this process wraps under it within a probe interval.
  Status NoticeNewerRootsOn(SessionLease& lease);
  void RememberRoot(const RootKeyId& id);
  void RememberIdentity(const std::string& key_name);

  Result<RootHandles> Handles(SessionLease& lease, const RootKeyId& id);
  // The private (CKO_PRIVATE_KEY) or public half of an identity key.
  Result<CK_OBJECT_HANDLE> IdentityHandle(SessionLease& lease, const std::string& name,
                                          CK_OBJECT_CLASS half);
  void InvalidateHandles();
  Status ReserveWraps(SessionLease& lease, const RootKeyId& id, Ledger& ledger);
  // Wraps counted against `id` by all nodes; `own` receives this node's counter objects.
  Result<std::uint64_t> UsageTotal(SessionLease& lease, const RootKeyId& id,
                                   std::vector<CK_OBJECT_HANDLE>* own, std::uint64_t* own_value);
  Result<std::vector<RootKeyInfo>> ListRootKeysOn(SessionLease& lease, const std::string& org);

  void MarkTokenGone();
  // A call that began when failures_ was `failures_at_start` succeeded: the token is ready again,
  // unless a failure was seen after the call began (its success is older news than that failure).
  void MarkHealthy(std::uint64_t failures_at_start);
  // Marks the token unavailable; the first repair is due kFirstBackoff later.
  void MarkUnavailable(const Error& error);
  // A repair failed: the next one is due twice as long after as the last (at most kMaxBackoff).
  void MarkRepairFailed(const Error& error);

  const TokenConfig config_;
  const TokenUri uri_;
  const std::shared_ptr<Module> module_;
  SessionPool pool_;
  std::atomic<bool> token_gone_{false};  // the slot must be found again before the next call

  mutable std::mutex login_mutex_;
  std::atomic<std::uint64_t> logged_in_generation_{0};
  std::optional<Error> login_refused_;
  std::atomic<bool> refused_{false};  // login_refused_ is set
  std::atomic<std::uint64_t> login_attempts_{0};
  std::atomic<bool> opened_{true};  // false from Start until a repair opened the token

  std::shared_mutex handles_mutex_;  // shared on the hot path, exclusive to change
  std::uint64_t handles_generation_ = 0;
  CK_SESSION_HANDLE keeper_ = CK_INVALID_HANDLE;  // owns the session copies
  std::map<RootKeyId, RootHandles> handles_;
  std::map<std::string, std::uint32_t> current_;
  std::map<std::pair<std::string, CK_OBJECT_CLASS>, CK_OBJECT_HANDLE> identity_handles_;

  // Searches of the token's objects run together, a change of them alone, and a change that
  // waits holds later searches back (objects_turnstile_), so that steady searching cannot hold it
  // off. SoftHSM2 before 2.7.0 (2.6.1 here) lets a search and a creation on one token race: its
  // C_FindObjectsInit brings the token's objects up to date from their files (OSToken::index,
  // which took the token's mutex only after listing the directory; ObjectFile::refresh), and the
  // files' locks are POSIX record locks, which do not keep threads of one process apart. A
  // creation that a search meets fails with CKR_GENERAL_ERROR or CKR_TEMPLATE_INCONSISTENT, and
  // may leave its object on disk, unseen by searches until the module is initialized again
  // (SoftHSM2 issue #573, fixed by pull request #576 in 2.7.0; reproduced here: two threads
  // creating 300 objects each beside two searching fail 5-13 creations, none under this lock).
  // The lock is this process's: another process on the same token (kmsctl beside kmsd) is not
  // held back by it.
  std::mutex objects_turnstile_;
  std::shared_mutex objects_mutex_;

  std::mutex ledger_mutex_;
  std::map<RootKeyId, std::unique_ptr<Ledger>> ledgers_;  // entries live as long as the token

  struct RootProbe {
    std::array<std::uint8_t, 32> plain{};
    std::array<std::uint8_t, 12> iv{};
    std::array<std::uint8_t, 48> ciphertext{};  // and the GCM tag
  };
  std::mutex probes_mutex_;
  std::map<RootKeyId, RootProbe> root_probes_;  // what CheckRootDecryptsOn decrypts

  mutable std::mutex remembered_mutex_;
  std::map<std::string, std::uint32_t> remembered_roots_;  // org -> newest version seen
  std::set<std::string> remembered_identities_;

  std::atomic<bool> degraded_{false};
  std::atomic<std::uint64_t> failures_{0};  // MarkUnavailable calls so far
  mutable std::mutex health_mutex_;
  TokenState state_ = TokenState::kReady;
  std::string detail_;
  std::chrono::steady_clock::time_point next_repair_{};
  std::chrono::milliseconds repair_backoff_{0};
  std::atomic<std::uint64_t> repairs_{0};
  std::mutex repair_mutex_;  // one repair at a time
};

}  // namespace strongroom::hsm

#endif  // STRONGROOM_HSM_TOKEN_H_
