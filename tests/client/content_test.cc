// Client-side content encryption with real crypto: text JWE, streamed AES-256-GCM files and their
// sealed references, and the same content opened by python3-jwcrypto and python3-cryptography.
#include "strongroom/client/content.h"

#include <Poco/Pipe.h>
#include <Poco/PipeStream.h>
#include <Poco/Process.h>
#include <Poco/StreamCopier.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <fstream>
#include <map>
#include <sstream>

#include "../support/test_dir.h"
#include "strongroom/common/jose/base64url.h"
#include "strongroom/common/jose/jose_header.h"

namespace strongroom::client {
namespace {

constexpr char kKeyUri[] = "kms://kms.acme.test/keys/6b1f4c1e-2a39-4a54-9d8e-0c1e0b7e1f00";

std::string RandomText(std::size_t size) {
  std::string text(size, '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(text.data()), static_cast<int>(size));
  return text;
}

std::string Sha256Hex(std::string_view data) {
  unsigned char digest[32];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), digest, &n, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned i = 0; i < n; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 15];
  }
  return hex;
}

ContentKeyLookup LookupOf(const SecretBytes& key, const std::string& uri = kKeyUri) {
  return [&key, uri](const std::string& kid) -> Result<SecretBytes> {
    if (kid != uri) return Error(ErrorCode::kNotFound, "no key " + kid);
    return SecretBytes(key.view());
  };
}

// Encrypts `plaintext` as a file; the reference and the blob.
std::pair<FileReference, std::string> Encrypt(const std::string& plaintext,
                                              const std::string& aad = "strongroom-file:c1") {
  std::istringstream in(plaintext);
  std::ostringstream out;
  auto ref = EncryptFile(in, out, aad, plaintext.size());
  EXPECT_TRUE(ref.ok()) << ref.error().ToString();
  return {std::move(ref).value(), out.str()};
}

Result<std::string> Decrypt(const FileReference& ref, const std::string& blob) {
  std::istringstream in(blob);
  std::ostringstream out;
  Status done = DecryptFile(ref, in, out);
  if (!done.ok()) return done.error();
  return out.str();
}

FileReference CopyOf(const FileReference& ref) {
  FileReference copy;
  copy.enc = ref.enc;
  copy.key = SecretBytes(ref.key.view());
  copy.iv = ref.iv;
  copy.aad = ref.aad;
  copy.loc = ref.loc;
  copy.tag = ref.tag;
  copy.name = ref.name;
  copy.size = ref.size;
  return copy;
}

TEST(TextContentTest, DecryptTextOpensWhatEncryptTextMade) {
  const SecretBytes key = SecretBytes::Random(32);
  for (const std::string& text :
       {std::string(), std::string("hello, Bob"), std::string("\xc3\xa9t\xc3\xa9 \xe2\x82\xac"),
        RandomText(4096), std::string(kMaxTextBytes, 'x')}) {
    auto jwe = EncryptText(key, kKeyUri, text);
    ASSERT_TRUE(jwe.ok()) << jwe.error().ToString();
    auto header = jose::PeekHeader(*jwe);
    ASSERT_TRUE(header.ok());
    EXPECT_EQ(header->alg, "dir");
    EXPECT_EQ(header->enc, "A256GCM");
    EXPECT_EQ(header->kid, kKeyUri);
    EXPECT_EQ(*ContentKeyUri(*jwe), kKeyUri);
    auto opened = DecryptText(*jwe, LookupOf(key));
    ASSERT_TRUE(opened.ok()) << opened.error().ToString();
    EXPECT_EQ(opened->key_uri, kKeyUri);
    EXPECT_EQ(opened->text.as_string_view(), text);
  }
}

TEST(TextContentTest, AnotherKeyATamperedJweOrARefusedLookupDoNotOpen) {
  const SecretBytes key = SecretBytes::Random(32), other = SecretBytes::Random(32);
  const std::string jwe = *EncryptText(key, kKeyUri, "for members only");
  auto wrong = DecryptText(jwe, LookupOf(other));
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code(), ErrorCode::kInvalidArgument);

  std::string tampered = jwe;
  const std::size_t ciphertext = tampered.find('.', tampered.find('.', tampered.find('.') + 1) + 1);
  tampered[ciphertext + 1] = tampered[ciphertext + 1] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(DecryptText(tampered, LookupOf(key)).ok());

  // The lookup's own error comes back as it is (the KMS refused the key).
  auto refused = DecryptText(jwe, [](const std::string&) -> Result<SecretBytes> {
    return Error(ErrorCode::kPermissionDenied, "not authorized");
  });
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kPermissionDenied);
}

TEST(TextContentTest, OversizedTextShortKeysAndMissingUrisAreRefused) {
  const SecretBytes key = SecretBytes::Random(32);
  EXPECT_FALSE(EncryptText(key, kKeyUri, std::string(kMaxTextBytes + 1, 'x')).ok());
  EXPECT_FALSE(EncryptText(SecretBytes::Random(16), kKeyUri, "x").ok());
  EXPECT_FALSE(EncryptText(key, "", "x").ok());
  EXPECT_FALSE(ContentKeyUri("not.a.jwe").ok());
}

TEST(FileContentTest, FilesOfEverySizeRoundTripWithAFreshKeyAndIv) {
  for (std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{65535}, std::size_t{65536},
                           std::size_t{65537}, std::size_t{(1 << 20) + 7}}) {
    const std::string plaintext = RandomText(size);
    std::uint64_t last_done = 0, last_total = 0;
    std::istringstream in(plaintext);
    std::ostringstream out;
    auto ref = EncryptFile(in, out, "strongroom-file:c1", size,
                           [&](std::uint64_t done, std::uint64_t total) {
                             EXPECT_GE(done, last_done);
                             last_done = done;
                             last_total = total;
                           });
    ASSERT_TRUE(ref.ok()) << ref.error().ToString();
    const std::string blob = out.str();
    EXPECT_EQ(blob.size(), size);  // GCM: as long as the file
    EXPECT_EQ(ref->size, size);
    EXPECT_EQ(last_done, size);
    if (size > 0) {
      EXPECT_EQ(last_total, size);
    }
    EXPECT_EQ(ref->enc, "A256GCM");
    EXPECT_EQ(ref->key.size(), 32u);
    EXPECT_EQ(ref->iv.size(), kFileIvBytes);
    EXPECT_EQ(ref->tag.size(), kFileTagBytes);
    if (size >= 16) {
      EXPECT_NE(blob, plaintext);
    }
    auto back = Decrypt(*ref, blob);
    ASSERT_TRUE(back.ok()) << back.error().ToString();
    EXPECT_TRUE(*back == plaintext) << "size " << size;
  }
  auto [first, first_blob] = Encrypt("the same file");
  auto [second, second_blob] = Encrypt("the same file");
  EXPECT_FALSE(ConstantTimeEquals(first.key.view(), second.key.view()));
  EXPECT_NE(first.iv, second.iv);
  EXPECT_NE(first_blob, second_blob);
}

TEST(FileContentTest, AlteredBlobsOrReferencesAreDataLoss) {
  const std::string plaintext = RandomText(200000);
  auto [ref, blob] = Encrypt(plaintext);
  auto expect_loss = [&](const FileReference& r, const std::string& b, const char* what) {
    auto result = Decrypt(r, b);
    ASSERT_FALSE(result.ok()) << what << " decrypted";
    EXPECT_EQ(result.error().code(), ErrorCode::kDataLoss)
        << what << ": " << result.error().ToString();
  };
  std::string flipped = blob;
  flipped[123456] ^= 1;
  expect_loss(ref, flipped, "a flipped bit");
  expect_loss(ref, blob.substr(0, blob.size() - 1), "a truncated blob");
  expect_loss(ref, blob + "x", "a longer blob");
  FileReference other_aad = CopyOf(ref);
  other_aad.aad = "strongroom-file:c2";
  expect_loss(other_aad, blob, "another aad");
  FileReference other_tag = CopyOf(ref);
  other_tag.tag[0] ^= 1;
  expect_loss(other_tag, blob, "another tag");
  FileReference other_key = CopyOf(ref);
  other_key.key = SecretBytes::Random(32);
  expect_loss(other_key, blob, "another key");
  FileReference unsized = CopyOf(ref);
  unsized.size = 0;  // a reference without a size still catches truncation through the tag
  expect_loss(unsized, blob.substr(0, blob.size() - 16), "a truncated blob (no size)");
}

TEST(FileContentTest, ReferencesRoundTripSealedUnderTheConversationKey) {
  auto [ref, blob] = Encrypt("quarterly figures");
  ref.loc = "c0ffee00-1111-4222-8333-444455556666";
  ref.name = "q3.xlsx";
  const SecretBytes key = SecretBytes::Random(32);
  auto sealed = SealFileReference(ref, key, kKeyUri);
  ASSERT_TRUE(sealed.ok()) << sealed.error().ToString();
  EXPECT_EQ(sealed->find("quarterly"), std::string::npos);
  auto opened = OpenFileReference(*sealed, LookupOf(key));
  ASSERT_TRUE(opened.ok()) << opened.error().ToString();
  EXPECT_EQ(opened->loc, ref.loc);
  EXPECT_EQ(opened->name, "q3.xlsx");
  EXPECT_EQ(opened->aad, ref.aad);
  EXPECT_EQ(opened->size, ref.size);
  EXPECT_TRUE(ConstantTimeEquals(opened->key.view(), ref.key.view()));
  EXPECT_EQ(*Decrypt(*opened, blob), "quarterly figures");

  FileReference no_loc = CopyOf(ref);
  no_loc.loc.clear();
  EXPECT_FALSE(SealFileReference(no_loc, key, kKeyUri).ok());
  EXPECT_FALSE(
      ParseFileReference(R"({"enc":"A128GCM","key":"AA","iv":"AA","tag":"AA","loc":"x"})").ok());
  EXPECT_FALSE(ParseFileReference("[]").ok());
}

std::map<std::string, std::string> RunInterop(const std::string& request) {
  Poco::Pipe in_pipe, out_pipe, err_pipe;
  Poco::ProcessHandle handle = Poco::Process::launch("/usr/bin/python3", {SR_SDK_INTEROP_SCRIPT},
                                                     &in_pipe, &out_pipe, &err_pipe);
  {
    Poco::PipeOutputStream to_child(in_pipe);
    to_child << request;
    to_child.close();
  }
  Poco::PipeInputStream from_child(out_pipe), errors(err_pipe);
  std::string output, error_text;
  Poco::StreamCopier::copyToString(from_child, output);
  Poco::StreamCopier::copyToString(errors, error_text);
  const int exit_code = handle.wait();
  EXPECT_EQ(exit_code, 0) << "sdk_interop.py failed (python3-jwcrypto and python3-cryptography "
                             "are installed by scripts/setup-debian): "
                          << error_text;
  std::map<std::string, std::string> results;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    const std::size_t eq = line.find('=');
    if (eq != std::string::npos) results[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return results;
}

TEST(ContentInteropTest, JwcryptoAndAesGcmOpenWhatTheSdkMade) {
  strongroom::testing::TestDir dir;
  const SecretBytes key = SecretBytes::Random(32);
  const std::string message = "Bob, the vault code changes on Monday.";
  const std::string file = RandomText(300001);
  auto [ref, blob] = Encrypt(file, "strongroom-file:3d6f");
  ref.loc = "c0ffee00-1111-4222-8333-444455556666";
  const std::string blob_path = (dir / "blob").string();
  std::ofstream(blob_path, std::ios::binary) << blob;

  const std::string request =
      R"({"key":")" + jose::Base64UrlEncode(key.view()) + R"(","wrong_key":")" +
      jose::Base64UrlEncode(SecretBytes::Random(32).view()) + R"(","text_jwe":")" +
      *EncryptText(key, kKeyUri, message) + R"(","text_expected":")" +
      jose::Base64UrlEncode(message) + R"(","ref_jwe":")" + *SealFileReference(ref, key, kKeyUri) +
      R"(","blob_path":")" + blob_path + R"(","file_sha256":")" + Sha256Hex(file) + R"("})";
  auto results = RunInterop(request);
  EXPECT_EQ(results["text_ok"], "true");
  EXPECT_EQ(results["text_alg"], "dir");
  EXPECT_EQ(results["text_enc"], "A256GCM");
  EXPECT_EQ(results["text_kid"], kKeyUri);
  EXPECT_EQ(results["wrong_key_rejected"], "true");
  EXPECT_EQ(results["ref_enc"], "A256GCM");
  EXPECT_EQ(results["ref_loc"], ref.loc);
  EXPECT_EQ(results["file_ok"], "true");
}

}  // namespace
}  // namespace strongroom::client
