// Token: opening a token (its configuration, URI, module, slot and mechanisms) and logging in.
// The token's other rooms: token_internal.h lists them.
#include "strongroom/hsm/token.h"

#include <algorithm>
#include <utility>

#include "cryptoki.h"
#include "strongroom/hsm/ck_result.h"
#include "token_internal.h"

namespace strongroom::hsm {
namespace {

using internal::Classify;
using internal::Cryptoki;
using internal::Prefixed;

bool ValidNodeId(const std::string& node) {
  if (node.empty() || node.size() > 64) return false;
  return std::all_of(node.begin(), node.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

Status ValidateConfig(const TokenConfig& config) {
  if (config.name.empty()) return Error(ErrorCode::kInvalidArgument, "a token needs a name");
  if (config.pool_size == 0 || config.pool_size > 1024) {
    return Error(ErrorCode::kInvalidArgument,
                 "token '" + config.name + "': pool_size must be 1 to 1024");
  }
  if (config.acquire_timeout.count() <= 0) {
    return Error(ErrorCode::kInvalidArgument,
                 "token '" + config.name + "': acquire timeout must be positive");
  }
  if (!ValidNodeId(config.node_id)) {
    return Error(ErrorCode::kInvalidArgument,
                 "token '" + config.name + "': node id must be 1-64 of [A-Za-z0-9._-]");
  }
  if (config.wrap_limit == 0 || config.wrap_limit > (std::uint64_t{1} << 32)) {
    return Error(ErrorCode::kInvalidArgument,
                 "token '" + config.name + "': wrap limit must be 1 to 2^32");
  }
  for (const std::string& org : config.orgs) {
    if (Status s = ValidateOrgName(org); !s.ok()) {
      return Error(ErrorCode::kInvalidArgument,
                   "token '" + config.name + "': orgs: " + s.error().message());
    }
  }
  if (config.reserve_block == 0) {
    return Error(ErrorCode::kInvalidArgument,
                 "token '" + config.name + "': reserve block must be positive");
  }
  return OkStatus();
}

Result<CK_SLOT_ID> FindSlot(Module& module, const TokenUri& uri, const std::string& name) {
  Cryptoki ck(module.fn());
  Result<std::vector<CK_SLOT_ID>> slots = ck.SlotList(true);
  if (!slots.ok()) return Prefixed(name, slots.error());
  std::vector<CK_SLOT_ID> matches;
  for (CK_SLOT_ID slot : *slots) {
    CK_TOKEN_INFO info{};
    if (!ck.GetTokenInfo(slot, info).ok()) continue;  // a slot that cannot say is not the one
    if (!(info.flags & CKF_TOKEN_INITIALIZED)) continue;
    if (uri.Matches(slot, info)) matches.push_back(slot);
  }
  if (matches.empty()) {
    return Error(ErrorCode::kNotFound, "token '" + name + "': no initialized token matches " +
                                           uri.text() + " (kmsctl hsm slots lists the tokens " +
                                           "the module offers)");
  }
  if (matches.size() > 1) {
    return Error(ErrorCode::kInvalidArgument,
                 "token '" + name + "': " + std::to_string(matches.size()) + " tokens match " +
                     uri.text() + "; add serial= or slot-id= to the URI");
  }
  return matches.front();
}

}  // namespace

bool Token::Serves(const std::string& org) const {
  return config_.orgs.empty() ||
         std::find(config_.orgs.begin(), config_.orgs.end(), org) != config_.orgs.end();
}

Result<Token::Located> Token::Locate(const TokenConfig& config) {
  SR_RETURN_IF_ERROR(ValidateConfig(config));
  Result<TokenUri> uri = TokenUri::Parse(config.uri);
  if (!uri.ok()) return Prefixed(config.name, uri.error());
  Result<std::shared_ptr<Module>> module = Module::Load(uri->module_path());
  if (!module.ok()) return Prefixed(config.name, module.error());
  Result<CK_SLOT_ID> slot = FindSlot(**module, *uri, config.name);
  return Located{std::move(uri).value(), std::move(module).value(), std::move(slot)};
}

Status Token::FinishOpen() {
  SR_RETURN_IF_ERROR(CheckMechanisms());
  // The first call logs in (a wrong or locked PIN fails it as it is).
  Result<bool> remembered = RunUnchecked<bool>([&](SessionLease& lease) -> Result<bool> {
    SR_RETURN_IF_ERROR(RememberObjects(lease));
    return true;
  });
  if (!remembered.ok()) return remembered.error();
  return OkStatus();
}

Result<std::unique_ptr<Token>> Token::Open(const TokenConfig& config) {
  SR_ASSIGN_OR_RETURN(Located located, Locate(config));
  if (!located.slot.ok()) return located.slot.error();
  std::unique_ptr<Token> token(
      new Token(config, std::move(located.uri), std::move(located.module), *located.slot));
  SR_RETURN_IF_ERROR(token->FinishOpen());
  return token;
}

Result<std::unique_ptr<Token>> Token::Start(const TokenConfig& config) {
  SR_ASSIGN_OR_RETURN(Located located, Locate(config));
  const bool found = located.slot.ok();
  if (!found && located.slot.error().code() != ErrorCode::kNotFound &&
      !IsTokenFault(located.slot.error())) {
    return located.slot.error();  // several tokens match: the URI must change
  }
  std::unique_ptr<Token> token(new Token(config, std::move(located.uri), std::move(located.module),
                                         found ? *located.slot : CK_SLOT_ID{0}));
  Status opened = found ? token->FinishOpen() : Status(located.slot.error());
  if (opened.ok() || token->LoginRefused()) return token;
  const ErrorCode code = opened.error().code();
  if (code == ErrorCode::kUnimplemented || code == ErrorCode::kInvalidArgument) {
    return opened.error();  // a mechanism the token lacks; no repair brings it
  }
  // Missing or failing now: the first repair (due kFirstBackoff from now) opens it.
  token->opened_.store(false, std::memory_order_release);
  token->MarkTokenGone();
  if (!token->InBackoff()) {
    token->MarkUnavailable(Error(
        ErrorCode::kUnavailable,
        "token '" + config.name + "' could not be opened at start: " + opened.error().message(),
        opened.error().native_code()));
  }
  return token;
}

Token::Token(TokenConfig config, TokenUri uri, std::shared_ptr<Module> module, CK_SLOT_ID slot)
    : config_(std::move(config)),
      uri_(std::move(uri)),
      module_(std::move(module)),
      pool_(module_, slot, config_.pool_size, config_.name, [this](std::uint64_t generation) {
        // A session is about to open in a generation the slot was not found in.
        std::lock_guard lock(login_mutex_);
        return ResolveSlot(generation);
      }) {}

Token::~Token() {
  std::lock_guard lock(handles_mutex_);
  if (keeper_ != CK_INVALID_HANDLE && handles_generation_ == module_->generation()) {
    (void)Cryptoki(module_->fn()).CloseSession(keeper_);  // destroys the session copies with it
  }
}

Status Token::CheckMechanisms() {
  const MechanismNeed needs[] = {
      {CKM_AES_KEY_GEN, CKF_GENERATE, "generate, 256-bit", "generating AES-256 root keys"},
      {CKM_AES_GCM, CKF_ENCRYPT | CKF_DECRYPT, "encrypt and decrypt",
       "wrapping keys under root keys"},
  };
  return RequireMechanisms(needs);
}

Status Token::RequireMechanisms(std::span<const MechanismNeed> needs) {
  Cryptoki ck(module_->fn());
  Result<std::vector<CK_MECHANISM_TYPE>> list = ck.MechanismList(slot());
  if (!list.ok()) return Prefixed(name(), list.error());
  for (const MechanismNeed& need : needs) {
    CK_MECHANISM_INFO info{};
    bool offered = std::find(list->begin(), list->end(), need.mechanism) != list->end() &&
                   ck.GetMechanismInfo(slot(), need.mechanism, info).ok() &&
                   (info.flags & need.flags) == need.flags;
    // AES key sizes are in bytes per PKCS#11, but some modules report bits.
    if (offered && need.mechanism == CKM_AES_KEY_GEN) {
      offered = (info.ulMinKeySize <= 32 && info.ulMaxKeySize >= 32) ||
                (info.ulMinKeySize <= 256 && info.ulMaxKeySize >= 256);
    }
    if (!offered) {
      return Error(ErrorCode::kUnimplemented, "token '" + name() + "' does not offer " +
                                                  CkmName(need.mechanism) + " (" + need.what +
                                                  "), which " + need.purpose + " needs");
    }
  }
  return OkStatus();
}

Status Token::LogInOn(SessionLease& lease) {
  const std::uint64_t generation = lease.generation();
  if (logged_in_generation_.load(std::memory_order_acquire) == generation) return OkStatus();
  std::lock_guard lock(login_mutex_);
  if (login_refused_) return *login_refused_;
  if (logged_in_generation_.load(std::memory_order_acquire) == generation) return OkStatus();
  Status s = ResolveSlot(generation);
  if (s.ok()) s = Login(lease);
  if (s.ok()) {
    logged_in_generation_.store(generation, std::memory_order_release);
    return OkStatus();
  }
  if (login_refused_) return s;
  if (Classify(s.error()) == CkFailure::kTokenGone) token_gone_.store(true);
  // Anything but a refused PIN (a failed C_Login, a token that cannot be found or read) is the
  // token's fault.
  return Error(ErrorCode::kUnavailable, s.error().message(), s.error().native_code());
}

Status Token::FindAgain() {
  auto guard = module_->UseGuard();
  std::lock_guard lock(login_mutex_);
  return ResolveSlot(module_->generation());
}

Status Token::ResolveSlot(std::uint64_t generation) {
  const bool gone = token_gone_.load(std::memory_order_acquire);
  if (pool_.slot_generation() == generation && !gone) return OkStatus();
  // A re-initialized module may number its slots anew (SoftHSM2 does, and knows none of them
  // until asked for its slot list), and a token that was removed may come back in another slot.
  Result<CK_SLOT_ID> slot = FindSlot(*module_, uri_, name());
  if (!slot.ok()) {
    // The token was there when we opened it: its absence now is an outage, not a typo.
    const std::uint64_t native = slot.error().native_code();
    return Error(ErrorCode::kUnavailable,
                 "token '" + name() + "' is not present: " + slot.error().message(),
                 native != 0 ? native : CKR_TOKEN_NOT_PRESENT);
  }
  pool_.SetSlot(*slot, generation);
  token_gone_.store(false, std::memory_order_release);
  return OkStatus();
}

Error Token::Refuse(Error why) {
  login_refused_ = std::move(why);
  refused_.store(true, std::memory_order_release);
  return *login_refused_;
}

Status Token::Login(SessionLease& lease) {
  Cryptoki ck(lease.fn());
  CK_TOKEN_INFO info{};
  if (const CkResult got = ck.GetTokenInfo(slot(), info); !got.ok()) {
    return Prefixed(name(), got.error());
  }
  if (info.flags & CKF_USER_PIN_LOCKED) {
    return Refuse(Error(ErrorCode::kFailedPrecondition,
                        "token '" + name() +
                            "': the user PIN is locked; a security officer "
                            "must unlock it before the token can be used",
                        CKR_PIN_LOCKED));
  }
  Result<SecretBytes> pin = ReadPin(uri_.pin_source());
  if (!pin.ok()) return Refuse(Prefixed(name(), pin.error()));
  login_attempts_.fetch_add(1);
  const CkResult login = ck.Login(lease.handle(), CKU_USER, *pin);
  pin->Clear();
  const CK_RV rv = login.rv();
  if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) return OkStatus();
  if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_INVALID || rv == CKR_PIN_LEN_RANGE) {
    return Refuse(Error(ErrorCode::kUnauthenticated,
                        "token '" + name() + "': wrong PIN (C_Login returned " + CkrName(rv) +
                            "); not retried, fix the pin-source and restart",
                        rv));
  }
  if (rv == CKR_PIN_LOCKED || rv == CKR_PIN_EXPIRED) {
    return Refuse(Error(ErrorCode::kFailedPrecondition,
                        "token '" + name() + "': the user PIN is " +
                            (rv == CKR_PIN_LOCKED ? "locked" : "expired") +
                            "; a security officer must reset it",
                        rv));
  }
  if (ClassifyCkr(rv) == CkFailure::kSessionDead) lease.MarkBroken();
  return Prefixed(name(), login.error());
}

bool Token::LoginRefused() const { return refused_.load(std::memory_order_acquire); }

Error Token::Refused() const {
  std::lock_guard lock(login_mutex_);
  return Error(ErrorCode::kUnavailable,
               "token '" + name() + "' is refused: " + login_refused_->message(),
               login_refused_->native_code());
}

void Token::MarkTokenGone() {
  // The token left its slot (or the slot was renumbered): find it again and log in again before
  // the next call. Cached handles are checked by use (a stale one reports itself). Other tokens
  // of the same module are not disturbed.
  token_gone_.store(true, std::memory_order_release);
  logged_in_generation_.store(0, std::memory_order_release);
}

}  // namespace strongroom::hsm
