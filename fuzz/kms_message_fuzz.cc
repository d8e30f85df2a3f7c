// libFuzzer target for the KMS protocol's entry point, KmsService::Handle: one service on a real
// SoftHSM2 token, two users with open ECDHE channels, and keys, a resource and authorizations
// created through the service so that requests can hit real rows. The input format (a mode byte,
// placeholders) is in kms_message_input.h; docs/testing.md says how to run it.
//
// After every input the reply is checked against what must hold for any message, and a
// violation aborts: an HTTP status in 200..599; application/jose or application/json; a JSON
// reply is {"code","message"} and never the catch-all "internal" (an exception escaped an
// operation; SR_FUZZ_ALLOW_INTERNAL=1 tolerates it); a sealed reply opens under the channel the
// request was sealed in (or verifies as the KMS's PS256 JWS in mode 3) and holds a JSON answer
// with a status and a requestId.
//
// Built twice: as the libFuzzer target (STRONGROOM_FUZZ) and, with replay_main.cc, as the CTest
// replay of the checked-in corpus.
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../tests/support/softhsm_sandbox.h"
#include "kms_message_input.h"
#include "strongroom/common/database.h"
#include "strongroom/common/jose.h"
#include "strongroom/common/jwt.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/hsm/key_vault.h"
#include "strongroom/kms/kms_service.h"
#include "strongroom/kms/kms_store.h"
#include "strongroom/kms/org_policy.h"

namespace strongroom::fuzz {
namespace {

using Poco::JSON::Object;

constexpr char kIssuer[] = "https://idp.fuzz.test";
constexpr char kOrg[] = "fuzzorg";
// The service's and the verifier's clock stand still, so channels, tokens and bind deadlines
// never expire during a run.
constexpr std::int64_t kNowMs = 1'800'000'000'000;
constexpr char kJose[] = "application/jose";
constexpr char kJson[] = "application/json";

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "kms_message_fuzz: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

template <typename T>
T Must(Result<T> result, const char* what) {
  if (!result.ok()) Fail(std::string(what) + ": " + result.error().ToString());
  return std::move(result).value();
}

std::span<const std::uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

std::string ToJson(const Object& object) {
  std::ostringstream out;
  object.stringify(out);
  return out.str();
}

// nullptr unless `text` is a JSON object.
Object::Ptr ParseObject(std::string_view text) {
  try {
    Poco::JSON::Parser parser;
    Poco::Dynamic::Var parsed = parser.parse(std::string(text));
    if (parsed.type() != typeid(Object::Ptr)) return nullptr;
    return parsed.extract<Object::Ptr>();
  } catch (const std::exception&) {
    return nullptr;
  }
}

bool IsString(const Object& o, const char* name) { return o.has(name) && o.get(name).isString(); }

struct Party {
  std::string user;
  std::string token;
  std::string channel_uri;
  SecretBytes channel_key;
};

class Harness {
 public:
  Harness();
  void Run(const std::uint8_t* data, std::size_t size);

 private:
  void OpenChannel(Party& party);
  Object::Ptr Call(Party& party, const std::string& plaintext);  // init only: aborts on failure
  Object BaseRequest(const std::string& method, const std::string& uri,
                     const std::string& token) const;
  std::string Substitute(std::string_view input, const Party* party) const;

  void RunRaw(std::string_view message);
  void RunSealed(Party& party, std::string_view plaintext);
  void RunRsa(std::string_view plaintext);

  // Checks what holds for every reply; returns true when it is sealed (application/jose).
  bool CheckReply(const kms::KmsReply& reply) const;
  // Checks a sealed answer; returns its status.
  long long CheckAnswer(const std::string& payload) const;
  void Trace(const char* mode, const kms::KmsReply& reply, long long answer_status) const;

  std::unique_ptr<hsm::KeyVault> vault_;
  std::unique_ptr<Database> db_;
  std::unique_ptr<jose::EcKeyPair> issuer_key_;
  std::unique_ptr<kms::KmsService> service_;
  std::string cluster_;
  Party alice_, bob_;
  std::vector<std::pair<std::string, std::string>> placeholders_;  // longest name first
  std::string client_jwk_;
  bool allow_internal_ = false;
  bool trace_ = false;  // SR_FUZZ_TRACE=1: one line per input, the statuses only
};

Harness::Harness() {
  testing::SoftHsmSandbox& sandbox = testing::SoftHsmSandbox::Get();  // sets SOFTHSM2_CONF
  const std::string label = sandbox.CreateToken(testing::kSoftHsmModule, "fuzz");
  hsm::TokenConfig token;
  token.name = "primary";
  token.uri = sandbox.Uri(testing::kSoftHsmModule, label);
  vault_ = Must(hsm::KeyVault::Open({{token}}), "open the token");
  Must(vault_->InitRoot(kOrg), "create the org's root key");
  Must(vault_->tokens()[0]->CreateIdentityKey("kms", 2048), "create the identity key");
  db_ = Must(Database::OpenSqlite(sandbox.dir() + "/kms.db", kms::KmsStore::Migrations()),
             "open the database");
  // The organization's policy: bob is its compliance officer (onBehalfOf, orgAgent), carol its
  // indexer with cloudAgent on new resources.
  kms::OrgPolicy policy;
  policy.org = kOrg;
  policy.compliance_officers = {kFuzzBob};
  policy.indexer = kFuzzCarol;
  policy.indexer_cloud_agent = true;
  if (!db_->InTransaction(
              [&](Poco::Data::Session& s) { return kms::PolicyStore::Put(s, policy, kNowMs); })
           .ok()) {
    Fail("set the organization's policy");
  }
  issuer_key_ = std::make_unique<jose::EcKeyPair>(
      Must(jose::EcKeyPair::Generate("idp-1"), "generate the issuer key"));
  TrustedIssuer issuer{kIssuer, kOrg, {Must(issuer_key_->PublicKey(), "issuer public key")}};
  JwtVerifier verifier = Must(
      JwtVerifier::New({issuer}, "kms", std::chrono::seconds(30), [] { return kNowMs / 1000; }),
      "make the verifier");
  kms::KmsServiceConfig config;
  config.host = kFuzzKmsHost;
  service_ =
      Must(kms::KmsService::New(config, *vault_, *db_, std::move(verifier), [] { return kNowMs; }),
           "start the service");
  cluster_ = std::string("kms://") + kFuzzKmsHost;
  auto flag = [](const char* name) {
    const char* value = std::getenv(name);
    return value != nullptr && std::string_view(value) == "1";
  };
  allow_internal_ = flag("SR_FUZZ_ALLOW_INTERNAL");
  trace_ = flag("SR_FUZZ_TRACE");

  auto mint = [&](const std::string& user, const std::string& audience) {
    return Must(MintJwt(*issuer_key_, {kIssuer, user, audience, kNowMs / 1000 - 5, 86400}),
                "mint a token");
  };
  alice_.user = kFuzzAlice;
  alice_.token = mint(kFuzzAlice, "kms");
  bob_.user = kFuzzBob;
  bob_.token = mint(kFuzzBob, "kms");
  OpenChannel(alice_);
  OpenChannel(bob_);
  client_jwk_ = Must(Must(jose::EcKeyPair::Generate(), "client key").PublicJwkJson(), "client jwk");

  // Rows for requests to hit: two unbound keys of alice's, one of which she binds to a resource
  // on which bob is authorized.
  Object create_keys = BaseRequest("create", "/keys", alice_.token);
  create_keys.set("count", 2);
  Object::Ptr keys = Call(alice_, ToJson(create_keys));
  Poco::JSON::Array::Ptr key_list = keys->getArray("keys");
  if (!key_list || key_list->size() != 2) Fail("create /keys: " + ToJson(*keys));
  const std::string key = key_list->getObject(0)->getValue<std::string>("uri");
  const std::string bound_key = key_list->getObject(1)->getValue<std::string>("uri");
  Object create_resource = BaseRequest("create", "/resources", alice_.token);
  Poco::JSON::Array auth_ids, key_uris;
  auth_ids.add(kFuzzBob);
  key_uris.add(bound_key);
  create_resource.set("authIds", auth_ids);
  create_resource.set("keyUris", key_uris);
  Object::Ptr created = Call(alice_, ToJson(create_resource));
  Object::Ptr resource = created->getObject("resource");
  if (!resource) Fail("create /resources: status " + created->get("status").toString());
  Poco::JSON::Array::Ptr authorizations = resource->getArray("authorizationUris");
  if (!authorizations || authorizations->size() != 3) Fail("create /resources: authorizations");

  placeholders_ = {
      {kTokenAlice, alice_.token},
      {kTokenBob, bob_.token},
      {kTokenCarol, mint(kFuzzCarol, "kms")},
      {kTokenCore, mint(kFuzzAlice, "core")},
      {kKey, key},
      {kBoundKey, bound_key},
      {kResource, resource->getValue<std::string>("uri")},
      {kAuthorization, authorizations->getElement<std::string>(1)},
      {kClientJwk, client_jwk_},
      {kChannel, ""},  // the channel of the party the input is sealed for
  };
  std::stable_sort(placeholders_.begin(), placeholders_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
}

Object Harness::BaseRequest(const std::string& method, const std::string& uri,
                            const std::string& token) const {
  Object credential, client, request;
  credential.set("bearer", token);
  client.set("clientId", "fuzz-client");
  client.set("credential", credential);
  request.set("client", client);
  request.set("method", method);
  request.set("uri", uri);
  request.set("requestId", "fuzz-init");
  return request;
}

void Harness::OpenChannel(Party& party) {
  jose::EcKeyPair mine = Must(jose::EcKeyPair::Generate(), "generate a client key");
  Object request = BaseRequest("create", "/ecdhe", party.token);
  request.set("jwk", ParseObject(Must(mine.PublicJwkJson(), "client jwk")));
  std::string plaintext = ToJson(request);
  std::string jwe = Must(jose::EncryptRsaOaepJwe(service_->PublicKey(), cluster_, Bytes(plaintext)),
                         "seal create /ecdhe");
  ZeroizeString(plaintext);
  kms::KmsReply reply = service_->Handle(jwe);
  if (reply.content_type != kJose) Fail("create /ecdhe: HTTP " + std::to_string(reply.http_status));
  const std::string_view ps256[] = {"PS256"};
  jose::VerifiedJws verified =
      Must(jose::VerifyJws(reply.body, service_->PublicKey(), ps256), "verify create /ecdhe");
  Object::Ptr answer = ParseObject(verified.payload());
  Object::Ptr key = answer ? answer->getObject("key") : nullptr;
  if (!key || !key->getObject("jwk")) Fail("create /ecdhe: no key in the answer");
  jose::PublicJwk theirs = Must(jose::PublicJwk::Parse(ToJson(*key->getObject("jwk"))), "kms jwk");
  party.channel_key = Must(jose::DeriveEphemeralKey(mine, theirs), "derive the channel key");
  party.channel_uri = key->getValue<std::string>("uri");
}

Object::Ptr Harness::Call(Party& party, const std::string& plaintext) {
  std::string jwe =
      Must(jose::EncryptDir(party.channel_key.view(), party.channel_uri, Bytes(plaintext)),
           "seal a request");
  kms::KmsReply reply = service_->Handle(jwe);
  if (reply.content_type != kJose) Fail("setup request: HTTP " + std::to_string(reply.http_status));
  jose::DecryptedJwe opened =
      Must(jose::DecryptDir(reply.body,
                            [&](const jose::JoseHeader&) -> Result<SecretBytes> {
                              return SecretBytes(party.channel_key.view());
                            }),
           "open a reply");
  Object::Ptr answer = ParseObject(opened.plaintext.as_string_view());
  if (!answer || !answer->has("status")) Fail("setup request: no answer");
  const int status = answer->getValue<int>("status");
  if (status != 200 && status != 201) Fail("setup request: status " + std::to_string(status));
  return answer;
}

std::string Harness::Substitute(std::string_view input, const Party* party) const {
  std::string out;
  out.reserve(input.size());
  for (std::size_t i = 0; i < input.size();) {
    bool replaced = false;
    if (input[i] == '$') {
      for (const auto& [name, value] : placeholders_) {
        if (input.substr(i, name.size()) != name) continue;
        if (name == kChannel) {
          out += party ? party->channel_uri : std::string(kChannel);
        } else {
          out += value;
        }
        i += name.size();
        replaced = true;
        break;
      }
    }
    if (!replaced) out += input[i++];
  }
  return out;
}

bool Harness::CheckReply(const kms::KmsReply& reply) const {
  if (reply.http_status < 200 || reply.http_status > 599) {
    Fail("invariant: HTTP status " + std::to_string(reply.http_status) + " outside 200..599");
  }
  if (reply.content_type == kJose) return true;
  if (reply.content_type != kJson) Fail("invariant: content type '" + reply.content_type + "'");
  Object::Ptr error = ParseObject(reply.body);
  if (!error || !IsString(*error, "code") || !IsString(*error, "message")) {
    Fail("invariant: a JSON reply is not {\"code\",\"message\"}");
  }
  if (reply.http_status == 500 && error->getValue<std::string>("code") == "internal" &&
      !allow_internal_) {
    Fail("invariant: an exception escaped to Handle's catch-all (HTTP 500 internal)");
  }
  return false;
}

long long Harness::CheckAnswer(const std::string& payload) const {
  Object::Ptr answer = ParseObject(payload);
  if (!answer) Fail("invariant: a sealed answer is not a JSON object");
  if (!answer->has("status") || !answer->get("status").isInteger()) {
    Fail("invariant: a sealed answer has no integer status");
  }
  const long long status = answer->getValue<long long>("status");
  if (status < 100 || status > 599) Fail("invariant: answer status " + std::to_string(status));
  if (!IsString(*answer, "requestId")) Fail("invariant: a sealed answer has no requestId");
  return status;
}

void Harness::Trace(const char* mode, const kms::KmsReply& reply, long long answer_status) const {
  if (!trace_) return;
  std::string code;
  if (reply.content_type == kJson) code = ParseObject(reply.body)->getValue<std::string>("code");
  std::fprintf(stderr, "kms_message_fuzz: %s HTTP %d %s%s\n", mode, reply.http_status,
               code.empty() ? "answer " : code.c_str(),
               code.empty() ? std::to_string(answer_status).c_str() : "");
}

void Harness::RunRaw(std::string_view message) {
  kms::KmsReply reply = service_->Handle(message);
  const bool sealed = CheckReply(reply);  // before Trace, which reads the checked JSON
  Trace("raw", reply, 0);
  if (!sealed) return;
  // Only a message sealed to the KMS could earn a sealed reply; at least its header must parse.
  if (!jose::PeekHeader(reply.body).ok()) Fail("invariant: a sealed reply is not JOSE");
}

void Harness::RunSealed(Party& party, std::string_view input) {
  std::string plaintext = Substitute(input, &party);
  Result<std::string> jwe =
      jose::EncryptDir(party.channel_key.view(), party.channel_uri, Bytes(plaintext));
  ZeroizeString(plaintext);
  if (!jwe.ok()) return;  // over the JOSE size limit: not a message a client could send
  kms::KmsReply reply = service_->Handle(*jwe);
  if (!CheckReply(reply)) {
    Trace("sealed", reply, 0);
    // The channel itself was refused (deleted some other way, or lost): open a new one so later
    // inputs still reach the operations.
    if (reply.http_status == 401) OpenChannel(party);
    return;
  }
  Result<jose::DecryptedJwe> opened =
      jose::DecryptDir(reply.body, [&](const jose::JoseHeader& header) -> Result<SecretBytes> {
        if (header.kid != party.channel_uri) {
          return Error(ErrorCode::kInvalidArgument, "the reply names another channel");
        }
        return SecretBytes(party.channel_key.view());
      });
  if (!opened.ok()) Fail("invariant: a sealed reply does not open under the request's channel");
  std::string payload(opened->plaintext.as_string_view());
  const long long status = CheckAnswer(payload);
  ZeroizeString(payload);
  Trace("sealed", reply, status);
  // 204 is the answer to delete /ecdhe/<this channel>: the channel is gone, open another.
  if (status == 204) OpenChannel(party);
}

void Harness::RunRsa(std::string_view input) {
  std::string plaintext = Substitute(input, nullptr);
  Result<std::string> jwe =
      jose::EncryptRsaOaepJwe(service_->PublicKey(), cluster_, Bytes(plaintext));
  ZeroizeString(plaintext);
  if (!jwe.ok()) return;
  kms::KmsReply reply = service_->Handle(*jwe);
  if (!CheckReply(reply)) return Trace("rsa", reply, 0);
  const std::string_view ps256[] = {"PS256"};
  Result<jose::VerifiedJws> verified = jose::VerifyJws(reply.body, service_->PublicKey(), ps256);
  if (!verified.ok()) Fail("invariant: an answer to RSA-OAEP is not the KMS's PS256 JWS");
  Trace("rsa", reply, CheckAnswer(verified->payload()));
}

void Harness::Run(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return;
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (static_cast<KmsMessageMode>(data[0] % kKmsMessageModes)) {
    case KmsMessageMode::kRaw:
      return RunRaw(rest);
    case KmsMessageMode::kSealedAlice:
      return RunSealed(alice_, rest);
    case KmsMessageMode::kSealedBob:
      return RunSealed(bob_, rest);
    case KmsMessageMode::kRsa:
      return RunRsa(rest);
  }
}

// Never destroyed: the token's module must not be finalized from a static destructor (see
// softhsm_sandbox.h), and the sandbox's own destructor removes the token and database files.
Harness* harness = nullptr;

}  // namespace
}  // namespace strongroom::fuzz

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  strongroom::fuzz::harness = new strongroom::fuzz::Harness();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    strongroom::fuzz::harness->Run(data, size);
  } catch (const std::exception& e) {
    strongroom::fuzz::Fail(std::string("an exception escaped: ") + e.what());
  }
  return 0;
}
