// Writes seed inputs for the KMS message fuzz target (format: kms_message_input.h) into a
// directory: a valid request of every kind the KMS answers, the usual refusals, malformed JSON,
// an unknown method, and raw messages of every shape Handle tells apart.
//
//   kms_message_seeds fuzz/corpus/kms_message
//
// Then run scripts/fuzz-kms, whose final merge keeps the seeds that add coverage.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "kms_message_input.h"
#include "strongroom/common/jose.h"
#include "strongroom/common/secret_bytes.h"

namespace strongroom::fuzz {
namespace {

std::string Mode(KmsMessageMode mode) {
  return std::string(1, static_cast<char>('0' + static_cast<int>(mode)));
}

// A request plaintext; `extra` is appended inside the object (",\"count\":2").
std::string Request(const std::string& method, const std::string& uri, const std::string& token,
                    const std::string& extra = "") {
  return R"({"client":{"clientId":"seed","credential":{"bearer":")" + token + R"("}},"method":")" +
         method + R"(","uri":")" + uri + R"(","requestId":"r1")" + extra + "}";
}

std::string B64(std::string_view text) { return jose::Base64UrlEncode(text); }

std::string B64Random(std::size_t n) {
  SecretBytes bytes = SecretBytes::Random(n);
  return jose::Base64UrlEncode(bytes.view());
}

std::vector<std::pair<std::string, std::string>> Seeds() {
  const std::string alice = Mode(KmsMessageMode::kSealedAlice);
  const std::string bob = Mode(KmsMessageMode::kSealedBob);
  const std::string rsa = Mode(KmsMessageMode::kRsa);
  const std::string raw = Mode(KmsMessageMode::kRaw);
  const std::string t1 = kTokenAlice, t2 = kTokenBob, t3 = kTokenCarol;
  const std::string jwk = std::string(",\"jwk\":") + kClientJwk;
  const std::string cluster = std::string("kms://") + kFuzzKmsHost;
  const std::string resource = kResource;

  // Compliance: bob is the organization's compliance officer in the harness's policy.
  auto on_behalf = [&](const std::string& method, const std::string& uri, const char* user) {
    return R"({"client":{"clientId":"seed","credential":{"bearer":")" + t2 + R"(","userId":")" +
           user + R"(","onBehalfOf":")" + user + R"("}},"method":")" + method + R"(","uri":")" +
           uri + R"(","requestId":"r1"})";
  };
  std::vector<std::pair<std::string, std::string>> seeds = {
      {"bob-on-behalf-retrieve-key", bob + on_behalf("retrieve", kBoundKey, kFuzzAlice)},
      {"bob-on-behalf-resource-keys", bob + on_behalf("retrieve", resource + "/keys", kFuzzAlice)},
      {"bob-on-behalf-delete-refused",
       bob + on_behalf("delete", resource + "/authorizations?authId=x", kFuzzAlice)},
      {"alice-on-behalf-not-officer", alice + on_behalf("retrieve", kBoundKey, kFuzzBob)},
      {"alice-bind-key",
       alice + Request("update", kKey, t1, std::string(",\"resourceUri\":\"") + resource + "\"")},
      {"alice-grant-org-agent",
       alice + Request("create", "/authorizations", t1,
                       std::string(",\"resourceUri\":\"") + resource +
                           R"(","authIds":["bob@fuzz.test"],"roleUri":"orgAgent")")},
      // create /ecdhe (RSA-OAEP), and its refusals.
      {"rsa-create-ecdhe", rsa + Request("create", "/ecdhe", t1, jwk)},
      {"rsa-create-ecdhe-absolute", rsa + Request("create", cluster + "/ecdhe", t2, jwk)},
      {"rsa-create-ecdhe-core-token", rsa + Request("create", "/ecdhe", kTokenCore, jwk)},
      {"rsa-create-ecdhe-no-jwk", rsa + Request("create", "/ecdhe", t1)},
      {"rsa-create-ecdhe-bad-jwk",
       rsa + Request("create", "/ecdhe", t1,
                     R"(,"jwk":{"kty":"EC","crv":"P-256","x":"AA","y":"AA"})")},
      {"rsa-create-ecdhe-oct-jwk",
       rsa + Request("create", "/ecdhe", t1, R"(,"jwk":{"kty":"oct","k":"AAAA"})")},
      {"rsa-ping", rsa + Request("update", "/ping", t1)},
      {"rsa-not-json", rsa + "{\"client\":"},
      // Channel operations.
      {"ping", alice + Request("update", "/ping", t1)},
      {"ping-bob", bob + Request("update", "/ping", t2)},
      {"ping-absolute", alice + Request("update", cluster + "/ping", t1)},
      {"ping-other-users-token", alice + Request("update", "/ping", t2)},
      {"ping-core-token", alice + Request("update", "/ping", kTokenCore)},
      {"ping-bad-token", alice + Request("update", "/ping", "eyJhbGciOiJub25lIn0.e30.")},
      {"delete-ecdhe", bob + Request("delete", kChannel, t2)},
      {"delete-ecdhe-other", alice + Request("delete", "/ecdhe/not-mine", t1)},
      // Keys.
      {"create-keys", alice + Request("create", "/keys", t1, R"(,"count":2)")},
      {"create-keys-bob", bob + Request("create", "/keys", t2, R"(,"count":1)")},
      {"create-keys-zero", alice + Request("create", "/keys", t1, R"(,"count":0)")},
      {"create-keys-too-many", alice + Request("create", "/keys", t1, R"(,"count":101)")},
      {"create-keys-huge", alice + Request("create", "/keys", t1, R"(,"count":1e300)")},
      {"create-keys-text", alice + Request("create", "/keys", t1, R"(,"count":"3")")},
      {"retrieve-key", alice + Request("retrieve", kKey, t1)},
      {"retrieve-bound-key-bob", bob + Request("retrieve", kBoundKey, t2)},
      {"retrieve-key-bob", bob + Request("retrieve", kKey, t2)},
      {"retrieve-key-unknown", alice + Request("retrieve", "/keys/no-such-key", t1)},
      // Resources and authorizations.
      {"create-resource", alice + Request("create", "/resources", t1,
                                          R"(,"authIds":["bob@fuzz.test","carol@fuzz.test"])")},
      {"create-resource-bind",
       alice + Request("create", "/resources", t1,
                       std::string(R"(,"authIds":["bob@fuzz.test"],"keyUris":[")") + kKey + "\"]")},
      {"create-resource-bound-key",
       alice + Request("create", "/resources", t1,
                       std::string(R"(,"keyUris":[")") + kBoundKey + "\"]")},
      {"create-resource-bad-ids",
       alice + Request("create", "/resources", t1, R"(,"authIds":["bob@fuzz.test",7,""])")},
      {"create-authorizations",
       alice + Request("create", "/authorizations", t1,
                       R"(,"resourceUri":")" + resource + R"(","authIds":["carol@fuzz.test"])")},
      {"create-authorizations-relative",
       bob + Request("create", "/authorizations", t2,
                     R"(,"resourceUri":"/resources/x","authIds":["dave@fuzz.test"])")},
      {"create-authorizations-empty-uri",
       alice + Request("create", "/authorizations", t1,
                       R"(,"resourceUri":"","authIds":["carol@fuzz.test"])")},
      {"list-authorizations", bob + Request("retrieve", resource + "/authorizations", t2)},
      {"list-authorizations-one",
       alice + Request("retrieve", resource + "/authorizations?authId=bob@fuzz.test", t1)},
      {"list-authorizations-bad-query",
       alice + Request("retrieve", resource + "/authorizations/extra", t1)},
      {"list-authorizations-carol", alice + Request("retrieve", resource + "/authorizations", t3)},
      {"delete-authorization", alice + Request("delete", kAuthorization, t1)},
      {"delete-authorization-unknown", bob + Request("delete", "/authorizations/nope", t2)},
      // Operations of the protocol's working copy (binding, resource reads, roles, compliance
      // officers acting on behalf of a user): answered 404 until the KMS implements them.
      {"bind-key", alice + Request("update", kKey, t1, R"(,"resourceUri":")" + resource + "\"")},
      {"retrieve-resource", bob + Request("retrieve", resource, t2)},
      {"retrieve-resource-keys",
       alice + Request("retrieve", resource + "/keys", t1, R"(,"count":10,"boundAfter":0)")},
      {"create-authorizations-role",
       alice + Request("create", "/authorizations", t1,
                       R"(,"resourceUri":")" + resource +
                           R"(","authIds":["carol@fuzz.test"],"roleUri":"cloudAgent")")},
      {"delete-authorization-by-auth-id",
       alice + Request("delete", resource + "/authorizations?authId=carol@fuzz.test", t1)},
      {"retrieve-on-behalf-of",
       alice + R"({"client":{"clientId":"seed","credential":{"bearer":")" + t1 +
           R"(","onBehalfOf":"bob@fuzz.test"}},"method":"retrieve","uri":")" + kBoundKey +
           R"(","requestId":"r1"})"},
      // Malformed requests and unknown operations.
      {"json-truncated", alice + R"({"client":{"clientId":"seed","credential":)"},
      {"json-array", alice + "[1,2,3]"},
      {"json-string", alice + "\"update\""},
      {"json-empty-object", alice + "{}"},
      {"json-deep", alice + std::string(200, '[') + std::string(200, ']')},
      {"json-wrong-types",
       alice +
           R"({"client":{"clientId":1,"credential":{"bearer":[]}},"method":{},"uri":null,"requestId":2})"},
      {"json-missing-bearer",
       alice +
           R"({"client":{"clientId":"seed"},"method":"update","uri":"/ping","requestId":"r1"})"},
      {"json-long-request-id", alice + R"({"client":{"clientId":"seed","credential":{"bearer":")" +
                                   t1 + R"("}},"method":"update","uri":"/ping","requestId":")" +
                                   std::string(300, 'r') + "\"}"},
      {"unknown-method", alice + Request("explode", "/keys", t1)},
      {"unknown-uri", alice + Request("retrieve", "/nothing/here", t1)},
      {"foreign-cluster", alice + Request("retrieve", "kms://other.test/keys/x", t1)},
  };

  // Raw messages: every shape Handle tells apart before any key is involved.
  const std::string dir_header = B64(R"({"alg":"dir","enc":"A256GCM","kid":")" + cluster +
                                     R"(/ecdhe/00000000-0000-0000-0000-000000000000"})");
  const std::string rsa_header = B64(R"({"alg":"RSA-OAEP","enc":"A256GCM"})");
  seeds.insert(
      seeds.end(),
      {
          {"raw-not-jwe", raw + "not.a.jwe"},
          {"raw-alg-none", raw + B64(R"({"alg":"none"})") + "...."},
          {"raw-jws", raw + B64(R"({"alg":"ES256"})") + "." + B64("{}") + "." + B64Random(64)},
          {"raw-header-not-json", raw + B64("{alg") + "...."},
          {"raw-dir-no-kid", raw + B64(R"({"alg":"dir","enc":"A256GCM"})") + ".." + B64Random(12) +
                                 "." + B64Random(16) + "." + B64Random(16)},
          {"raw-dir-unknown-kid",
           raw + dir_header + ".." + B64Random(12) + "." + B64Random(32) + "." + B64Random(16)},
          {"raw-dir-wrong-enc", raw + B64(R"({"alg":"dir","enc":"A128GCM","kid":"x"})") + ".." +
                                    B64Random(12) + "." + B64Random(8) + "." + B64Random(16)},
          {"raw-rsa-oaep", raw + rsa_header + "." + B64Random(256) + "." + B64Random(12) + "." +
                               B64Random(48) + "." + B64Random(16)},
          {"raw-rsa-oaep-short-key", raw + rsa_header + "." + B64Random(8) + "." + B64Random(12) +
                                         "." + B64Random(48) + "." + B64Random(16)},
          {"raw-empty", raw},
      });
  return seeds;
}

}  // namespace
}  // namespace strongroom::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir(argv[1]);
  std::filesystem::create_directories(dir);
  int written = 0;
  for (const auto& [name, content] : strongroom::fuzz::Seeds()) {
    std::ofstream out(dir / ("seed-" + name), std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    if (!out) {
      std::fprintf(stderr, "%s: write failed\n", (dir / name).c_str());
      return 1;
    }
    ++written;
  }
  std::printf("wrote %d seeds to %s\n", written, dir.c_str());
  return 0;
}
