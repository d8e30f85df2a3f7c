// Writes seed inputs for the core request fuzz target (format: core_request_input.h) into a
// directory: a valid body or query of every kind the core parses, with real compact JWEs
// (alg "dir", enc "A256GCM", made with jose::EncryptDir under a random key) as content and
// titles, the usual refusals, and JWEs of every shape CheckContentJwe tells apart.
//
//   core_request_seeds fuzz/corpus/core_request
//
// Then run scripts/fuzz-core, whose final merge keeps the seeds that add coverage.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "core_request_input.h"
#include "strongroom/common/jose.h"
#include "strongroom/common/secret_bytes.h"

namespace strongroom::fuzz {
namespace {

using M = CoreRequestMode;

std::string Mode(M mode) { return std::string(1, ModeLetter(mode)); }

std::string B64(std::string_view text) { return jose::Base64UrlEncode(text); }

std::string B64Random(std::size_t n) {
  SecretBytes bytes = SecretBytes::Random(n);
  return jose::Base64UrlEncode(bytes.view());
}

// A real content JWE under a random key (the core never opens it; its shape is what counts).
std::string Jwe(const std::string& kid, const std::string& plaintext) {
  SecretBytes key = SecretBytes::Random(32);
  Result<std::string> jwe = jose::EncryptDir(
      key.view(), kid,
      std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(plaintext.data()),
                                    plaintext.size()));
  if (!jwe.ok()) {
    std::fprintf(stderr, "core_request_seeds: %s\n", jwe.error().ToString().c_str());
    std::exit(1);
  }
  return *jwe;
}

// A JWE-shaped string with the given protected header and part sizes.
std::string Shaped(const std::string& header, const std::string& key, std::size_t iv,
                   std::size_t ciphertext, std::size_t tag) {
  return B64(header) + "." + key + "." + B64Random(iv) + "." + B64Random(ciphertext) + "." +
         B64Random(tag);
}

std::string Quoted(const std::string& text) { return "\"" + text + "\""; }

std::vector<std::pair<std::string, std::string>> Seeds() {
  const std::string current = kCoreCurrentKey, old = kCoreOldKey;
  const std::string resource = kCoreResource;
  const std::string content = Jwe(current, "hello, this is a message");
  const std::string old_content = Jwe(old, "under the key before the rotation");
  const std::string title = Jwe(current, "our project");
  const std::string file_ref = Jwe(current, R"({"uri":"...","key":"...","name":"plan.pdf"})");
  // A sealed KMS message as the relay sees it: compact JOSE (here a JWE to an ECDHE channel).
  const std::string kms_message =
      Jwe("kms://kms.fuzz.test/ecdhe/7f6e5d4c-3b2a-4190-8877-665544332211",
          R"({"method":"create","uri":"/resources"})");
  const std::string conversation = "\"3d6f0a1b-2c4e-4f5a-8b9c-0d1e2f3a4b5c\"";
  const std::string token = Quoted(B64Random(32));
  const std::string dir_header = R"({"alg":"dir","enc":"A256GCM","kid":")" + current + R"("})";

  std::vector<std::pair<std::string, std::string>> seeds = {
      // a: create a conversation
      {"create-minimal", Mode(M::kCreateConversation) + R"({"kmsResourceUri":")" + resource +
                             R"(","keyUri":")" + old + R"("})"},
      {"create-full",
       Mode(M::kCreateConversation) + R"({"kmsResourceUri":")" + resource + R"(","keyUri":")" +
           old + R"(","participants":["alice@fuzz.test","bob@fuzz.test"],)" +
           R"("encryptedTitle":")" + title + R"(","kmsMessage":")" + kms_message + R"("})"},
      {"create-null-title", Mode(M::kCreateConversation) + R"({"kmsResourceUri":")" + resource +
                                R"(","keyUri":")" + old + R"(","encryptedTitle":null})"},
      {"create-not-kms", Mode(M::kCreateConversation) +
                             R"({"kmsResourceUri":"https://kms.fuzz.test/r","keyUri":"k"})"},
      {"create-unknown-field", Mode(M::kCreateConversation) + R"({"kmsResourceUri":")" + resource +
                                   R"(","keyUri":")" + old + R"(","titel":"x"})"},
      {"create-participants-not-strings", Mode(M::kCreateConversation) + R"({"kmsResourceUri":")" +
                                              resource + R"(","keyUri":")" + old +
                                              R"(","participants":[1,{"a":[]},null]})"},
      {"create-missing-key",
       Mode(M::kCreateConversation) + R"({"kmsResourceUri":")" + resource + R"("})"},
      {"create-array", Mode(M::kCreateConversation) + R"([{"kmsResourceUri":"kms://x"}])"},
      {"create-deep", Mode(M::kCreateConversation) + std::string(200, '[') + std::string(200, ']')},
      {"create-duplicate-field", Mode(M::kCreateConversation) + R"({"keyUri":"a","keyUri":"b",)" +
                                     R"("kmsResourceUri":")" + resource + R"("})"},
      // b: add participants
      {"add", Mode(M::kAddParticipants) + R"({"userIds":["carol@fuzz.test"]})"},
      {"add-with-kms", Mode(M::kAddParticipants) + R"({"userIds":["carol@fuzz.test","dave"],)" +
                           R"("kmsMessage":")" + kms_message + R"("})"},
      {"add-empty", Mode(M::kAddParticipants) + R"({"userIds":[]})"},
      {"add-not-array", Mode(M::kAddParticipants) + R"({"userIds":"carol"})"},
      {"add-unicode", Mode(M::kAddParticipants) + R"({"userIds":["\u00e9ve@fuzz.test","\u0000"]})"},
      // c: remove a participant
      {"remove-empty", Mode(M::kRemoveParticipant)},
      {"remove-object", Mode(M::kRemoveParticipant) + "{}"},
      {"remove-kms", Mode(M::kRemoveParticipant) + R"({"kmsMessage":")" + kms_message + R"("})"},
      {"remove-kms-number", Mode(M::kRemoveParticipant) + R"({"kmsMessage":12})"},
      // d: rotate the key
      {"rotate", Mode(M::kRotateKey) + R"({"keyUri":")" + current + R"("})"},
      {"rotate-kms", Mode(M::kRotateKey) + R"({"keyUri":")" + current + R"(","kmsMessage":")" +
                         kms_message + R"("})"},
      {"rotate-null", Mode(M::kRotateKey) + R"({"keyUri":null})"},
      // e: set the title
      {"title", Mode(M::kSetTitle) + R"({"encryptedTitle":")" + title + R"("})"},
      {"title-empty", Mode(M::kSetTitle) + R"({"encryptedTitle":""})"},
      {"title-bool", Mode(M::kSetTitle) + R"({"encryptedTitle":true})"},
      // f: post
      {"post", Mode(M::kPost) + R"({"content":")" + content + R"("})"},
      {"post-share", Mode(M::kPost) + R"({"content":")" + file_ref + R"(","fileIds":[")" + kFileId +
                         R"("],"clientActivityId":"c-1"})"},
      {"post-escaped", Mode(M::kPost) + R"({"content":"a\/b\"c\\d\u00e9\ud83d\ude00\n"})"},
      {"post-file-ids-object", Mode(M::kPost) + R"({"content":"x","fileIds":{"a":"b"}})"},
      // g: index tokens
      {"index",
       Mode(M::kIndexTokens) + R"({"tokens":[)" + token + "," + Quoted(B64Random(32)) + "]}"},
      {"index-empty", Mode(M::kIndexTokens) + R"({"tokens":[]})"},
      {"index-missing", Mode(M::kIndexTokens) + "{}"},
      // p: a batch of index token sets
      {"index-sets", Mode(M::kIndexTokenSets) + R"({"sets":[{"conversationId":)" + conversation +
                         R"(,"activityId":"a-1","tokens":[)" + token + "," + Quoted(B64Random(32)) +
                         R"(]},{"conversationId":)" + conversation +
                         R"(,"activityId":"a-2","tokens":[]}]})"},
      {"index-sets-empty", Mode(M::kIndexTokenSets) + R"({"sets":[]})"},
      {"index-sets-not-object", Mode(M::kIndexTokenSets) + R"({"sets":["a"]})"},
      {"index-sets-extra", Mode(M::kIndexTokenSets) +
                               R"({"sets":[{"conversationId":"c","activityId":"a","tokens":[],)"
                               R"("seq":1}]})"},
      // h: search
      {"search", Mode(M::kSearch) + R"({"queries":[{"conversationId":)" + conversation +
                     R"(,"tokens":[)" + token + "]}]}"},
      {"search-rooms", Mode(M::kSearch) + R"({"queries":[{"conversationId":)" + conversation +
                           R"(,"tokens":[)" + token + R"(]},{"conversationId":)" + conversation +
                           R"(,"tokens":["a","b"]}],"before":1234,"limit":20})"},
      {"search-no-tokens",
       Mode(M::kSearch) + R"({"queries":[{"conversationId":"c","tokens":[]}]})"},
      {"search-limit-float",
       Mode(M::kSearch) + R"({"queries":[{"conversationId":"c","tokens":["a"]}],"limit":2.5})"},
      {"search-limit-big", Mode(M::kSearch) +
                               R"({"queries":[{"conversationId":"c","tokens":["a"]}],)" +
                               R"("before":18446744073709551615,"limit":201})"},
      {"search-negative",
       Mode(M::kSearch) + R"({"queries":[{"conversationId":"c","tokens":["a"]}],"before":-1})"},
      {"search-old-shape", Mode(M::kSearch) + R"({"conversationIds":[],"tokens":["a"]})"},
      // i, j, k: history, conversation list and events queries
      {"history-empty", Mode(M::kHistoryQuery)},
      {"history-before", Mode(M::kHistoryQuery) + "before=120&limit=50"},
      {"history-after", Mode(M::kHistoryQuery) + "after=0&limit=200"},
      {"history-both", Mode(M::kHistoryQuery) + "before=5&after=1"},
      {"history-encoded", Mode(M::kHistoryQuery) + "be%66ore=1%32&limit=%35"},
      {"history-twice", Mode(M::kHistoryQuery) + "limit=1&limit=2"},
      {"history-unknown", Mode(M::kHistoryQuery) + "cursor=3"},
      {"history-huge", Mode(M::kHistoryQuery) + "before=99999999999999999999"},
      {"history-bad-escape", Mode(M::kHistoryQuery) + "before=%zz"},
      {"list", Mode(M::kListQuery) + "before=77&limit=10"},
      {"list-zero", Mode(M::kListQuery) + "limit=0"},
      {"events", Mode(M::kEventsQuery) + "cursor=42"},
      {"events-none", Mode(M::kEventsQuery)},
      {"events-negative", Mode(M::kEventsQuery) + "cursor=-1"},
      // l: relay query
      {"relay", Mode(M::kRelayQuery) + "cluster=kms://kms.fuzz.test"},
      {"relay-encoded", Mode(M::kRelayQuery) + "cluster=kms%3A%2F%2Fkms.fuzz.test%3A8443"},
      {"relay-path", Mode(M::kRelayQuery) + "cluster=kms://kms.fuzz.test/resources"},
      {"relay-missing", Mode(M::kRelayQuery) + "host=kms.fuzz.test"},
      // m: content JWE
      {"jwe", Mode(M::kContentJwe) + content},
      {"jwe-old-key", Mode(M::kContentJwe) + old_content},
      {"jwe-four-parts", Mode(M::kContentJwe) + "a.b.c.d"},
      {"jwe-six-parts", Mode(M::kContentJwe) + content + ".x"},
      {"jwe-alg", Mode(M::kContentJwe) +
                      Shaped(R"({"alg":"A256KW","enc":"A256GCM","kid":"k"})", "", 12, 20, 16)},
      {"jwe-enc",
       Mode(M::kContentJwe) + Shaped(R"({"alg":"dir","enc":"A128GCM","kid":"k"})", "", 12, 20, 16)},
      {"jwe-no-kid",
       Mode(M::kContentJwe) + Shaped(R"({"alg":"dir","enc":"A256GCM"})", "", 12, 20, 16)},
      {"jwe-long-kid", Mode(M::kContentJwe) + Shaped(R"({"alg":"dir","enc":"A256GCM","kid":")" +
                                                         std::string(513, 'k') + R"("})",
                                                     "", 12, 20, 16)},
      {"jwe-zip",
       Mode(M::kContentJwe) +
           Shaped(R"({"alg":"dir","enc":"A256GCM","kid":"k","zip":"DEF"})", "", 12, 20, 16)},
      {"jwe-crit",
       Mode(M::kContentJwe) +
           Shaped(R"({"alg":"dir","enc":"A256GCM","kid":"k","crit":["b64"]})", "", 12, 20, 16)},
      {"jwe-key", Mode(M::kContentJwe) + Shaped(dir_header, B64Random(40), 12, 20, 16)},
      {"jwe-iv", Mode(M::kContentJwe) + Shaped(dir_header, "", 16, 20, 16)},
      {"jwe-tag", Mode(M::kContentJwe) + Shaped(dir_header, "", 12, 20, 15)},
      {"jwe-empty-ciphertext", Mode(M::kContentJwe) + Shaped(dir_header, "", 12, 0, 16)},
      {"jwe-duplicate-kid",
       Mode(M::kContentJwe) +
           Shaped(R"({"alg":"dir","enc":"A256GCM","kid":"a","kid":"b"})", "", 12, 20, 16)},
      {"jwe-padded", Mode(M::kContentJwe) + B64(dir_header) + ".." + B64Random(12) + "=." +
                         B64Random(20) + "." + B64Random(16)},
      // n: posts through the service
      {"service-post", Mode(M::kServicePost) + R"({"content":")" + content + R"("})"},
      {"service-post-old-key", Mode(M::kServicePost) + R"({"content":")" + old_content + R"("})"},
      {"service-share", Mode(M::kServicePost) + R"({"content":")" + file_ref + R"(","fileIds":[")" +
                            kFileId + R"("]})"},
      {"service-retry",
       Mode(M::kServicePost) + R"({"content":")" + content + R"(","clientActivityId":"retry-1"})"},
      {"service-unknown-file", Mode(M::kServicePost) + R"({"content":")" + content +
                                   R"(","fileIds":["3d6f0a1b-2c4e-4f5a-8b9c-0d1e2f3a4b5c"]})"},
      {"service-same-file-twice", Mode(M::kServicePost) + R"({"content":")" + file_ref +
                                      R"(","fileIds":[")" + kFileId + R"(",")" + kFileId +
                                      R"("]})"},
      {"service-bad-client-id", Mode(M::kServicePost) + R"({"content":")" + content +
                                    R"(","clientActivityId":"no spaces"})"},
      {"service-not-jwe", Mode(M::kServicePost) + R"({"content":"hello in plaintext"})"},
      // o: edit
      {"edit", Mode(M::kEdit) + R"({"content":")" + content + R"("})"},
      {"edit-extra", Mode(M::kEdit) + R"({"content":")" + content + R"(","fileIds":[]})"},
      {"edit-null", Mode(M::kEdit) + R"({"content":null})"},
  };
  return seeds;
}

}  // namespace
}  // namespace strongroom::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <output dir>\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir(argv[1]);
  std::filesystem::create_directories(dir);
  int written = 0;
  for (const auto& [name, input] : strongroom::fuzz::Seeds()) {
    std::ofstream out(dir / ("seed-" + name), std::ios::binary | std::ios::trunc);
    out.write(input.data(), static_cast<std::streamsize>(input.size()));
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", (dir / name).c_str());
      return 1;
    }
    ++written;
  }
  std::printf("wrote %d seeds to %s\n", written, dir.c_str());
  return 0;
}
