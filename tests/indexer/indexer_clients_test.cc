// indexerd's token command (indexer_clients.h): run for its audience, its token kept until a
// minute before its exp, its failures UNAUTHENTICATED without its output.
#include "strongroom/indexer/indexer_clients.h"

#include <gtest/gtest.h>

#include <fstream>

#include "../support/test_dir.h"
#include "strongroom/common/jose/base64url.h"

namespace strongroom::indexer {
namespace {

// A JWT-shaped token (unsigned: the command's output is not verified here) with `exp`.
std::string TokenWithExp(const std::string& audience, std::int64_t exp) {
  return jose::Base64UrlEncode(std::string_view("{\"alg\":\"none\"}")) + "." +
         jose::Base64UrlEncode("{\"aud\":\"" + audience + "\",\"exp\":" + std::to_string(exp) +
                               "}") +
         ".sig";
}

class TokenCommandTest : public ::testing::Test {
 protected:
  // A command that counts its runs in a file and prints the token file of its audience.
  std::string Command() {
    return "echo run >> " + (dir_ / "runs").string() + "; cat " + (dir_ / "token-").string() +
           "{audience}";
  }
  void WriteToken(const std::string& audience, const std::string& token) {
    std::ofstream(dir_ / ("token-" + audience)) << token << "\n";
  }
  int Runs() {
    std::ifstream in(dir_ / "runs");
    int runs = 0;
    for (std::string line; std::getline(in, line);) ++runs;
    return runs;
  }
  ::strongroom::testing::TestDir dir_;
  std::int64_t now_ = 1'700'000'000;
};

TEST_F(TokenCommandTest, RunsForItsAudienceAndKeepsTheTokenUntilAMinuteBeforeItsExp) {
  WriteToken("kms", TokenWithExp("kms", now_ + 600));
  WriteToken("core", TokenWithExp("core", now_ + 600));
  client::TokenSource kms = CommandTokenSource(Command(), "kms", [this] { return now_; });
  client::TokenSource core = CommandTokenSource(Command(), "core", [this] { return now_; });
  EXPECT_EQ(*kms(), TokenWithExp("kms", now_ + 600));  // trailing newline dropped
  EXPECT_EQ(*core(), TokenWithExp("core", now_ + 600));
  EXPECT_EQ(Runs(), 2);
  now_ += 500;
  EXPECT_TRUE(kms().ok());
  EXPECT_EQ(Runs(), 2);  // kept
  const std::int64_t first_exp = now_ + 100;
  WriteToken("kms", TokenWithExp("kms", first_exp + 3600));
  now_ += 45;  // 55 s before exp: renewed
  EXPECT_EQ(*kms(), TokenWithExp("kms", first_exp + 3600));
  EXPECT_EQ(Runs(), 3);
}

TEST_F(TokenCommandTest, ATokenWithoutExpIsKeptFiveMinutes) {
  WriteToken("kms", "opaque-token");
  client::TokenSource kms = CommandTokenSource(Command(), "kms", [this] { return now_; });
  EXPECT_EQ(*kms(), "opaque-token");
  now_ += 299;
  EXPECT_TRUE(kms().ok());
  EXPECT_EQ(Runs(), 1);
  now_ += 2;
  EXPECT_TRUE(kms().ok());
  EXPECT_EQ(Runs(), 2);
}

TEST_F(TokenCommandTest, AFailingOrSilentCommandIsUnauthenticatedWithoutItsOutput) {
  for (const std::string& command : {std::string("echo secret-output; exit 3"), std::string("true"),
                                     std::string("printf '  \\n'")}) {
    client::TokenSource source = CommandTokenSource(command, "kms", [this] { return now_; });
    Result<std::string> token = source();
    ASSERT_FALSE(token.ok()) << command;
    EXPECT_EQ(token.error().code(), ErrorCode::kUnauthenticated);
    EXPECT_EQ(token.error().message().find("secret"), std::string::npos);
  }
}

}  // namespace
}  // namespace strongroom::indexer
