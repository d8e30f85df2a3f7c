// strongroom-idp run as a developer runs it; its tokens checked by the verifier the KMS uses.
#include <Poco/Pipe.h>
#include <Poco/PipeStream.h>
#include <Poco/Process.h>
#include <Poco/StreamCopier.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "../support/test_dir.h"
#include "../support/tool_steps.h"
#include "strongroom/common/jwt.h"

namespace strongroom::kms {
namespace {

struct Outcome {
  int exit_code;
  std::string out, err;
};

Outcome Idp(const std::vector<std::string>& args) {
  Poco::Pipe out_pipe, err_pipe;
  Poco::ProcessHandle handle = Poco::Process::launch(IDP_PATH, args, nullptr, &out_pipe, &err_pipe);
  Poco::PipeInputStream out(out_pipe), err(err_pipe);
  Outcome o;
  Poco::StreamCopier::copyToString(out, o.out);
  Poco::StreamCopier::copyToString(err, o.err);
  o.exit_code = handle.wait();
  return o;
}

std::string Slurp(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

class IdpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Outcome init = Idp({"init", "--dir", dir_.string(), "--issuer", "https://idp.acme.test"});
    ASSERT_EQ(init.exit_code, 0) << init.err;
  }

  JwtVerifier Verifier(const std::string& audience) {
    auto keys = ParseJwks(Slurp(dir_ / "jwks.json"));
    EXPECT_TRUE(keys.ok()) << keys.error().ToString();
    return *JwtVerifier::New({{"https://idp.acme.test", "acme", *keys}}, audience,
                             std::chrono::seconds(30));
  }
  testing::TestDir dir_;
};

TEST_F(IdpTest, MintedTokenVerifiesForItsAudienceOnly) {
  Outcome token = Idp({"token", "--dir", dir_.string(), "--subject", "alice@acme.test",
                       "--audience", "kms", "--ttl", "120"});
  ASSERT_EQ(token.exit_code, 0) << token.err;
  std::string jwt = token.out.substr(0, token.out.find('\n'));
  auto verified = Verifier("kms").Verify(jwt);
  ASSERT_TRUE(verified.ok()) << verified.error().ToString();
  EXPECT_EQ(verified->subject(), "alice@acme.test");
  EXPECT_EQ(verified->org(), "acme");
  EXPECT_FALSE(Verifier("core").Verify(jwt).ok());
}

TEST_F(IdpTest, PrivateKeyIsOwnerOnlyAndNotInTheJwks) {
  struct stat st {};
  ASSERT_EQ(stat((dir_ / "signing-key.jwk").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_NE(Slurp(dir_ / "signing-key.jwk").find("\"d\""), std::string::npos);
  EXPECT_EQ(Slurp(dir_ / "jwks.json").find("\"d\""), std::string::npos);
}

TEST_F(IdpTest, BadInvocationsAreOneLineErrors) {
  Outcome again = Idp({"init", "--dir", dir_.string(), "--issuer", "x"});
  EXPECT_EQ(again.exit_code, 78);
  Outcome no_audience = Idp({"token", "--dir", dir_.string(), "--subject", "a"});
  EXPECT_EQ(no_audience.exit_code, 64);
  EXPECT_NE(no_audience.err.find("missing --audience"), std::string::npos);
  Outcome bad_ttl =
      Idp({"token", "--dir", dir_.string(), "--subject", "a", "--audience", "kms", "--ttl", "0"});
  EXPECT_EQ(bad_ttl.exit_code, 64);
  Outcome no_dir =
      Idp({"token", "--dir", (dir_ / "absent").string(), "--subject", "a", "--audience", "kms"});
  EXPECT_EQ(no_dir.exit_code, 66);  // NOT_FOUND: EX_NOINPUT
  Outcome unknown = Idp({"explode"});
  EXPECT_EQ(unknown.exit_code, 64);
}

// A development tool links what it uses: the common base (JOSE, JWTs) and Poco Util, not the KMS
// with the HSM layer, the database and the HTTPS stack under it.
TEST(IdpLinkTest, IdpLinksNeitherTheKmsNorTheHsmLayer) {
  using strongroom::testing::Tool;
  using strongroom::testing::ToolRun;
  ToolRun needed = Tool("/usr/bin/readelf", {"-d", IDP_PATH});
  ASSERT_EQ(needed.exit_code, 0) << needed.err;
  ASSERT_NE(needed.out.find("libcjose"), std::string::npos) << needed.out;  // read right
  for (const std::string forbidden :
       {"libp11-kit", "libPocoNet", "libPocoData", "libsqlite3", "libssl"}) {
    EXPECT_EQ(needed.out.find(forbidden), std::string::npos)
        << "strongroom-idp needs " << forbidden << ":\n"
        << needed.out;
  }
  ToolRun symbols = Tool("/usr/bin/nm", {"-C", IDP_PATH});
  ASSERT_EQ(symbols.exit_code, 0) << symbols.err;
  for (const std::string layer : {"strongroom::hsm::", "strongroom::kms::KmsService",
                                  "strongroom::kms::KmsStore", "strongroom::Database"}) {
    EXPECT_EQ(symbols.out.find(layer), std::string::npos) << "strongroom-idp contains " << layer;
  }
}

}  // namespace
}  // namespace strongroom::kms
