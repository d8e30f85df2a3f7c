// `kmsctl hsm ...` run as the operator runs it: a separate process against a real SoftHSM2 token.
#include <Poco/JSON/Parser.h>
#include <Poco/Pipe.h>
#include <Poco/PipeStream.h>
#include <Poco/Process.h>
#include <Poco/StreamCopier.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../support/softhsm_sandbox.h"
#include "../support/tool_steps.h"
#include "strongroom/common/rfc3339.h"
#include "strongroom/hsm/key_vault.h"
#include "strongroom/kms/audit_log.h"
#include "strongroom/kms/identity_certificate.h"
#include "strongroom/kms/kms_store.h"

namespace strongroom::kms {
namespace {

using strongroom::testing::kSoftHsmModule;
using strongroom::testing::kUserPin;
using strongroom::testing::SoftHsmSandbox;

struct Outcome {
  int exit_code;
  std::string out;
  std::string err;
};

int CountOccurrences(const std::string& text, const std::string& what) {
  int n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) {
    ++n;
  }
  return n;
}

int CountLines(const std::string& text) {
  int lines = 0;
  for (char c : text) lines += c == '\n';
  return lines;
}

class KmsctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    label_ = SoftHsmSandbox::Get().CreateToken(kSoftHsmModule);
    config_ = WriteConfig("pkcs11:token=" + label_ + "?module-path=" + kSoftHsmModule +
                          "&pin-source=file:" + SoftHsmSandbox::Get().pin_file());
  }

  std::string WriteConfig(const std::string& uri, const std::string& extra = "") {
    static int n = 0;
    return SoftHsmSandbox::Get().WriteFile("kms-" + std::to_string(++n) + ".ini",
                                           "[hsm]\ntokens = primary\nnode_id = test\n" + extra +
                                               "\n[hsm.primary]\nuri = " + uri + "\n");
  }

  Outcome Kmsctl(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
    Poco::Pipe out_pipe, err_pipe;
    Poco::Process::Env environment(env.begin(), env.end());
    environment["SOFTHSM2_CONF"] = SoftHsmSandbox::Get().dir() + "/softhsm2.conf";
    Poco::ProcessHandle handle =
        Poco::Process::launch(KMSCTL_PATH, args, ".", nullptr, &out_pipe, &err_pipe, environment);
    Poco::PipeInputStream out_stream(out_pipe), err_stream(err_pipe);
    Outcome run;
    std::thread err_reader([&] { Poco::StreamCopier::copyToString(err_stream, run.err); });
    Poco::StreamCopier::copyToString(out_stream, run.out);
    err_reader.join();
    run.exit_code = handle.wait();
    return run;
  }

  Outcome Hsm(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
    args.insert(args.begin(), {"--config", config_, "hsm"});
    return Kmsctl(args, env);
  }

  std::string label_;
  std::string config_;
};

TEST_F(KmsctlTest, SlotsListsTheTokenAndItsMechanisms) {
  Outcome run = Kmsctl({"hsm", "slots", "--module", kSoftHsmModule});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("token '" + label_ + "'"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("CKM_AES_GCM [encrypt decrypt]"), std::string::npos);
  EXPECT_NE(run.out.find("CKM_AES_KEY_GEN [generate]"), std::string::npos);
}

TEST_F(KmsctlTest, InitRootRotateListAndCheck) {
  Outcome init = Hsm({"init-root", "--org", "acme"});
  ASSERT_EQ(init.exit_code, 0) << init.err;
  EXPECT_NE(init.out.find("acme v1 (current)"), std::string::npos) << init.out;
  EXPECT_NE(init.out.find("sensitive=yes  extractable=no  generated-in-token=yes"),
            std::string::npos);

  Outcome again = Hsm({"init-root", "--org", "acme"});
  EXPECT_EQ(again.exit_code, 78);
  EXPECT_EQ(CountLines(again.err), 1) << again.err;
  EXPECT_NE(again.err.find("already has root keys"), std::string::npos);

  Outcome rotate = Hsm({"rotate-root", "--org", "acme"});
  ASSERT_EQ(rotate.exit_code, 0) << rotate.err;
  EXPECT_NE(rotate.out.find("acme v2 (current)"), std::string::npos) << rotate.out;

  // Once the configuration names a KMS database, a bare token rotation is refused: it would
  // leave keys under the old version unaudited; `kmsctl ops rotate-root` does it properly.
  const std::string hsm_only = config_;
  config_ = WriteConfig("pkcs11:token=" + label_ + "?module-path=" + kSoftHsmModule +
                            "&pin-source=file:" + SoftHsmSandbox::Get().pin_file(),
                        "\n[kms]\ndatabase = /nonexistent/kms.db\n");
  Outcome refused = Hsm({"rotate-root", "--org", "acme"});
  config_ = hsm_only;
  EXPECT_EQ(refused.exit_code, 78) << refused.err;
  EXPECT_NE(refused.err.find("kmsctl ops rotate-root acme"), std::string::npos) << refused.err;

  Outcome roots = Hsm({"roots", "--org", "acme"});
  ASSERT_EQ(roots.exit_code, 0) << roots.err;
  EXPECT_NE(roots.out.find("acme v1  label"), std::string::npos) << roots.out;
  EXPECT_NE(roots.out.find("acme v2 (current)"), std::string::npos) << roots.out;

  Outcome check = Hsm({"check"});
  ASSERT_EQ(check.exit_code, 0) << check.err;
  EXPECT_NE(check.out.find("token primary: ok, acme wrap/unwrap round trip"), std::string::npos)
      << check.out;
}

// Issue 16: nothing said how many stored keys each root version still wraps (whether an old
// version may go). With [kms] database, `hsm roots` counts them per token and version: the org's
// key blobs and its live channels' blobs, and blobs under a version the token does not hold.
TEST_F(KmsctlTest, RootsCountTheKeysWrappedUnderEachVersion) {
  ASSERT_EQ(Hsm({"init-root", "--org", "acme"}).exit_code, 0);
  ASSERT_EQ(Hsm({"init-root", "--org", "globex"}).exit_code, 0);
  static int n = 0;
  const std::string db_path = SoftHsmSandbox::Get().dir() + "/roots-" + std::to_string(++n) + ".db";
  auto db = Database::OpenSqlite(db_path, KmsStore::Migrations());
  ASSERT_TRUE(db.ok()) << db.error().ToString();
  // Keys wrapped by the token the way kmsd wraps them, under whatever version is current, and a
  // channel key per letter of `channels`: l live, x expired, d deleted.
  auto store = [&](const std::string& org, int keys, const std::string& channels) {
    hsm::TokenConfig token;
    token.name = "primary";
    token.uri = SoftHsmSandbox::Get().Uri(kSoftHsmModule, label_);
    auto vault = hsm::KeyVault::Open({{token}});
    ASSERT_TRUE(vault.ok()) << vault.error().ToString();
    const std::vector<std::uint8_t> key(32, 7);
    const std::int64_t now = UnixNowMs();
    ASSERT_TRUE(
        (*db)
            ->InTransaction([&](Poco::Data::Session& s) -> Status {
              for (int i = 0; i < keys; ++i) {
                KeyRecord k;
                k.uri = "kms://kms.test/keys/" + org + std::to_string(++n);
                k.org = org;
                k.creator = "alice";
                k.client_id = "test";
                k.bind_deadline_ms = now;
                SR_ASSIGN_OR_RETURN(hsm::WrapResult wrapped, (*vault)->Wrap({org, k.uri}, key));
                k.blobs = wrapped.blobs;
                SR_RETURN_IF_ERROR(KmsStore::InsertKeys(s, {k}));
              }
              for (char state : channels) {
                EphemeralKeyRecord e;
                e.uri = "kms://kms.test/ecdhe/" + org + std::to_string(++n);
                e.org = org;
                e.user_id = "alice";
                e.client_id = "test";
                e.created_ms = now;
                e.expires_ms = state == 'x' ? now - 1 : now + 3'600'000;
                SR_ASSIGN_OR_RETURN(hsm::WrapResult wrapped, (*vault)->Wrap({org, e.uri}, key));
                e.blobs = wrapped.blobs;
                SR_RETURN_IF_ERROR(KmsStore::InsertEphemeralKey(s, e));
                if (state == 'd') SR_RETURN_IF_ERROR(KmsStore::DeleteEphemeralKey(s, e.uri));
              }
              return OkStatus();
            })
            .ok());
  };
  store("acme", 3, "lxxd");
  store("globex", 4, "");  // another organization's keys count for it alone
  ASSERT_EQ(Hsm({"rotate-root", "--org", "acme"}).exit_code, 0);
  store("acme", 2, "");
  // A blob under v9, which the token never held.
  ASSERT_TRUE((*db)
                  ->InTransaction([&](Poco::Data::Session& s) -> Status {
                    std::vector<std::uint8_t> blob(hsm::kWrappedKeySize, 0);
                    std::memcpy(blob.data(), "SRW1", 4);
                    blob[7] = 9;
                    KeyRecord k;
                    k.uri = "kms://kms.test/keys/orphan";
                    k.org = "acme";
                    k.creator = "alice";
                    k.client_id = "test";
                    k.blobs = {{"primary", blob}};
                    return KmsStore::InsertKeys(s, {k});
                  })
                  .ok());

  config_ = WriteConfig("pkcs11:token=" + label_ + "?module-path=" + kSoftHsmModule +
                            "&pin-source=file:" + SoftHsmSandbox::Get().pin_file(),
                        "\n[kms]\ndatabase = " + db_path + "\n");
  Outcome roots = Hsm({"roots", "--org", "acme"});
  ASSERT_EQ(roots.exit_code, 0) << roots.err;
  auto line = [&](const std::string& start) {
    const auto at = roots.out.find(start);
    return at == std::string::npos ? std::string()
                                   : roots.out.substr(at, roots.out.find('\n', at) - at);
  };
  EXPECT_NE(line("primary  acme v1  label").find("  keys=3  channel-keys=1"), std::string::npos)
      << roots.out;
  EXPECT_NE(line("primary  acme v2 (current)").find("  keys=2  channel-keys=0"), std::string::npos)
      << roots.out;
  EXPECT_EQ(line("primary  acme v9"), "primary  acme v9  NOT IN THE TOKEN  keys=1  channel-keys=0")
      << roots.out;
  Outcome globex = Hsm({"roots", "--org", "globex"});
  ASSERT_EQ(globex.exit_code, 0) << globex.err;
  EXPECT_NE(globex.out.find("globex v1 (current)"), std::string::npos) << globex.out;
  EXPECT_NE(globex.out.find("  keys=4  channel-keys=0\n"), std::string::npos) << globex.out;

  // A database that is not there yet holds no key, and is not made by looking.
  const std::string absent = SoftHsmSandbox::Get().dir() + "/absent-" + std::to_string(n) + ".db";
  config_ = WriteConfig("pkcs11:token=" + label_ + "?module-path=" + kSoftHsmModule +
                            "&pin-source=file:" + SoftHsmSandbox::Get().pin_file(),
                        "\n[kms]\ndatabase = " + absent + "\n");
  Outcome fresh = Hsm({"roots", "--org", "acme"});
  ASSERT_EQ(fresh.exit_code, 0) << fresh.err;
  EXPECT_NE(fresh.out.find("acme v2 (current)"), std::string::npos) << fresh.out;
  EXPECT_NE(fresh.out.find("keys=0  channel-keys=0"), std::string::npos) << fresh.out;
  EXPECT_FALSE(std::filesystem::exists(absent));
}

TEST_F(KmsctlTest, InitIdentityCreatesTheKmsKeyOnce) {
  Outcome created = Hsm({"init-identity"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  EXPECT_NE(created.out.find("created the KMS identity key (RSA-3072)"), std::string::npos)
      << created.out;
  Outcome again = Hsm({"init-identity"});
  EXPECT_EQ(again.exit_code, 78);
  EXPECT_NE(again.err.find("already holds identity key kms"), std::string::npos) << again.err;
}

// Each token holds an identity key of its own, each certified for the host, the chains in one file
// (issue 16). With --token, one token alone: the other chains in the file are kept.
TEST_F(KmsctlTest, IdentityKeysAreMadeAndCertifiedInEveryToken) {
  const std::string standby = SoftHsmSandbox::Get().CreateToken(kSoftHsmModule);
  auto uri = [](const std::string& label) {
    return "pkcs11:token=" + label + "?module-path=" + kSoftHsmModule +
           "&pin-source=file:" + SoftHsmSandbox::Get().pin_file();
  };
  config_ = SoftHsmSandbox::Get().WriteFile(
      "kms-identities.ini",
      "[hsm]\ntokens = primary, standby\nnode_id = test\n[hsm.primary]\n"
      "uri = " +
          uri(label_) + "\n[hsm.standby]\nuri = " + uri(standby) + "\n");
  Outcome primary = Hsm({"init-identity", "--token", "primary"});
  ASSERT_EQ(primary.exit_code, 0) << primary.err;
  EXPECT_NE(primary.out.find("identity key (RSA-3072) in token 'primary'"), std::string::npos)
      << primary.out;
  EXPECT_EQ(primary.out.find("standby"), std::string::npos) << primary.out;

  const std::string dir = SoftHsmSandbox::Get().dir() + "/identity-ca";
  std::filesystem::create_directories(dir);
  testing::ToolSteps steps;
  testing::MakeTestTls(steps, dir, "Strongroom kmsctl identity CA");
  ASSERT_TRUE(steps.error().empty()) << steps.error();
  const std::string out = dir + "/identity.pem";
  auto certify = [&](std::vector<std::string> more) {
    std::vector<std::string> args = {"certify-identity", "--ca-cert",     dir + "/ca.pem",
                                     "--ca-key",         dir + "/ca.key", "--host",
                                     "kms.acme.test",    "--out",         out};
    args.insert(args.end(), more.begin(), more.end());
    return Hsm(args);
  };
  auto read = [&] {
    std::ifstream in(out);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
  };
  // A token without an identity key stops certify-identity, naming it, and writes nothing.
  Outcome unmade = certify({});
  EXPECT_EQ(unmade.exit_code, 66) << unmade.err;
  EXPECT_NE(unmade.err.find("token 'standby'"), std::string::npos) << unmade.err;
  EXPECT_NE(unmade.err.find("certify the others with --token NAME"), std::string::npos)
      << unmade.err;
  EXPECT_FALSE(std::filesystem::exists(out));

  // init-identity makes one in every token that lacks one, and leaves the others.
  Outcome created = Hsm({"init-identity"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  EXPECT_NE(created.out.find("token 'primary' already holds identity key kms"), std::string::npos)
      << created.out;
  EXPECT_NE(created.out.find("identity key (RSA-3072) in token 'standby'"), std::string::npos)
      << created.out;
  Outcome again = Hsm({"init-identity", "--token", "standby"});
  EXPECT_EQ(again.exit_code, 78) << again.err;
  EXPECT_NE(again.err.find("already holds identity key kms"), std::string::npos) << again.err;
  EXPECT_EQ(Hsm({"init-identity", "--token", "nosuch"}).exit_code, 64);

  Outcome both = certify({});
  ASSERT_EQ(both.exit_code, 0) << both.err;
  EXPECT_NE(both.out.find("certified the KMS identity key of token 'primary'"), std::string::npos);
  EXPECT_NE(both.out.find("certified the KMS identity key of token 'standby'"), std::string::npos);
  EXPECT_NE(both.out.find("2 chain(s)"), std::string::npos) << both.out;
  auto chains = ParseIdentityChains(read());
  ASSERT_TRUE(chains.ok()) << chains.error().ToString();
  ASSERT_EQ(chains->size(), 2u);
  const std::vector<std::uint8_t> primary_leaf = (*chains)[0].der[0];
  const std::vector<std::uint8_t> standby_leaf = (*chains)[1].der[0];
  const std::vector<std::uint8_t> standby_key = (*chains)[1].key.modulus;

  Outcome renewed = certify({"--token", "standby", "--days", "3"});
  ASSERT_EQ(renewed.exit_code, 0) << renewed.err;
  EXPECT_EQ(renewed.out.find("token 'primary'"), std::string::npos) << renewed.out;
  EXPECT_NE(renewed.out.find("2 chain(s)"), std::string::npos) << renewed.out;
  chains = ParseIdentityChains(read());
  ASSERT_TRUE(chains.ok()) << chains.error().ToString();
  ASSERT_EQ(chains->size(), 2u);
  EXPECT_NE((*chains)[0].der[0], standby_leaf);  // the standby's, issued anew
  EXPECT_EQ((*chains)[0].key.modulus, standby_key);
  EXPECT_EQ((*chains)[1].der[0], primary_leaf);  // the primary's, kept as it was

  // Check reports the identity key of every token.
  Outcome check = Hsm({"check"});
  ASSERT_EQ(check.exit_code, 0) << check.err;
  EXPECT_EQ(CountOccurrences(check.out, "identity key kms (RSA-3072)"), 2) << check.out;
}

TEST_F(KmsctlTest, CheckWithoutRootKeysSaysSo) {
  Outcome check = Hsm({"check"});
  ASSERT_EQ(check.exit_code, 0) << check.err;
  EXPECT_NE(check.out.find("no root keys yet"), std::string::npos) << check.out;
}

// Every configured token gets one line, whether or not the others open; one bad token makes the
// whole check fail.
TEST_F(KmsctlTest, CheckReportsEveryTokenOnALineOfItsOwnAndFailsIfAnyIsBad) {
  const std::string standby = SoftHsmSandbox::Get().CreateToken(kSoftHsmModule);
  auto uri = [](const std::string& label) {
    return "pkcs11:token=" + label + "?module-path=" + kSoftHsmModule +
           "&pin-source=file:" + SoftHsmSandbox::Get().pin_file();
  };
  static int n = 0;
  auto config = [&](const std::string& second) {
    return SoftHsmSandbox::Get().WriteFile(
        "kms-two-" + std::to_string(++n) + ".ini",
        "[hsm]\ntokens = primary, standby\nnode_id = test\n[hsm.primary]\nuri = " + uri(label_) +
            "\n[hsm.standby]\nuri = " + uri(second) + "\n");
  };
  config_ = config(standby);
  ASSERT_EQ(Hsm({"init-root", "--org", "acme"}).exit_code, 0);
  ASSERT_EQ(Hsm({"init-identity"}).exit_code, 0);
  Outcome good = Hsm({"check"});
  ASSERT_EQ(good.exit_code, 0) << good.err;
  EXPECT_EQ(CountLines(good.out), 2) << good.out;
  EXPECT_NE(good.out.find("token primary: ok, acme wrap/unwrap round trip"), std::string::npos)
      << good.out;
  EXPECT_NE(good.out.find("identity key kms"), std::string::npos) << good.out;
  EXPECT_NE(good.out.find("token standby: ok, acme wrap/unwrap round trip"), std::string::npos)
      << good.out;

  config_ = config("nowhere");
  Outcome bad = Hsm({"check"});
  EXPECT_EQ(bad.exit_code, 66);  // NOT_FOUND: EX_NOINPUT
  EXPECT_EQ(CountLines(bad.out), 2) << bad.out;
  EXPECT_NE(bad.out.find("token primary: ok"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("token standby: FAILED"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("no initialized token matches"), std::string::npos) << bad.out;
  EXPECT_EQ(CountLines(bad.err), 1) << bad.err;
  EXPECT_NE(bad.err.find("standby"), std::string::npos) << bad.err;
}

TEST_F(KmsctlTest, WrongPinIsOneLineAndNeverShowsThePin) {
  std::string wrong = SoftHsmSandbox::Get().WriteFile("kmsctl-wrong.pin", "31337\n");
  config_ = WriteConfig("pkcs11:token=" + label_ + "?module-path=" + kSoftHsmModule +
                        "&pin-source=file:" + wrong);
  Outcome run = Hsm({"check"});
  EXPECT_EQ(run.exit_code, 77);
  EXPECT_EQ(CountLines(run.err), 1) << run.err;
  EXPECT_NE(run.err.find("wrong PIN"), std::string::npos) << run.err;
  EXPECT_EQ(run.err.find("31337"), std::string::npos);
  EXPECT_EQ(run.out.find("31337"), std::string::npos);
}

TEST_F(KmsctlTest, PinFromEnvironmentWorks) {
  config_ = WriteConfig("pkcs11:token=" + label_ + "?module-path=" + kSoftHsmModule +
                        "&pin-source=env:SR_TEST_TOKEN_PIN");
  Outcome run = Hsm({"init-root", "--org", "acme"}, {{"SR_TEST_TOKEN_PIN", kUserPin}});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  Outcome unset = Hsm({"check"});
  EXPECT_EQ(unset.exit_code, 66);
  EXPECT_NE(unset.err.find("SR_TEST_TOKEN_PIN is not set"), std::string::npos) << unset.err;
}

TEST_F(KmsctlTest, MissingModuleIsOneLine) {
  config_ = WriteConfig(
      "pkcs11:token=" + label_ +
      "?module-path=/opt/vendor/libmissing.so&pin-source=file:" + SoftHsmSandbox::Get().pin_file());
  Outcome run = Hsm({"check"});
  EXPECT_EQ(run.exit_code, 66);
  EXPECT_EQ(CountLines(run.err), 1) << run.err;
  EXPECT_NE(run.err.find("/opt/vendor/libmissing.so"), std::string::npos) << run.err;
}

TEST_F(KmsctlTest, MissingTokenIsOneLine) {
  config_ = WriteConfig(std::string("pkcs11:token=nowhere?module-path=") + kSoftHsmModule +
                        "&pin-source=file:" + SoftHsmSandbox::Get().pin_file());
  Outcome run = Hsm({"roots", "--org", "acme"});
  EXPECT_EQ(run.exit_code, 66);
  EXPECT_EQ(CountLines(run.err), 1) << run.err;
  EXPECT_NE(run.err.find("no initialized token matches"), std::string::npos) << run.err;
}

TEST_F(KmsctlTest, UnsupportedMechanismIsNamed) {
  config_ = WriteConfig("pkcs11:token=" + label_ + "?module-path=" + SR_FAULT_MODULE_PATH +
                        "&pin-source=file:" + SoftHsmSandbox::Get().pin_file());
  Outcome run = Hsm({"check"}, {{"SR_FAULT_HIDE_MECHANISM", "0x1087"}});  // CKM_AES_GCM
  EXPECT_EQ(run.exit_code, 78);
  EXPECT_EQ(CountLines(run.err), 1) << run.err;
  EXPECT_NE(run.err.find("does not offer CKM_AES_GCM"), std::string::npos) << run.err;
}

TEST_F(KmsctlTest, LockedPinIsOneLine) {
  config_ = WriteConfig("pkcs11:token=" + label_ + "?module-path=" + SR_FAULT_MODULE_PATH +
                        "&pin-source=file:" + SoftHsmSandbox::Get().pin_file());
  Outcome run = Hsm({"check"}, {{"SR_FAULT_PIN_LOCKED", "1"}});
  EXPECT_EQ(run.exit_code, 78);
  EXPECT_EQ(CountLines(run.err), 1) << run.err;
  EXPECT_NE(run.err.find("PIN is locked"), std::string::npos) << run.err;
}

TEST_F(KmsctlTest, BadConfigurationIsRefusedClearly) {
  config_ = WriteConfig("pkcs11:token=" + label_ + "?module-path=" + kSoftHsmModule +
                            "&pin-source=file:" + SoftHsmSandbox::Get().pin_file(),
                        "pool_sise = 4");
  Outcome typo = Hsm({"check"});
  EXPECT_EQ(typo.exit_code, 64);
  EXPECT_NE(typo.err.find("unknown setting hsm.pool_sise"), std::string::npos) << typo.err;

  config_ = WriteConfig("pkcs11:token=" + label_ + "?module-path=" + kSoftHsmModule +
                        "&pin-value=" + kUserPin);
  Outcome pin_in_uri = Hsm({"check"});
  EXPECT_EQ(pin_in_uri.exit_code, 64);
  EXPECT_NE(pin_in_uri.err.find("pin-value"), std::string::npos);
  EXPECT_EQ(pin_in_uri.err.find(kUserPin), std::string::npos);

  config_ = SoftHsmSandbox::Get().dir() + "/absent.ini";
  Outcome absent = Hsm({"check"});
  EXPECT_EQ(absent.exit_code, 64);
  EXPECT_NE(absent.err.find("cannot read configuration"), std::string::npos) << absent.err;
}

TEST_F(KmsctlTest, UsageErrorsAreOneLine) {
  Outcome no_org = Hsm({"init-root"});
  EXPECT_EQ(no_org.exit_code, 64);
  EXPECT_NE(no_org.err.find("needs --org"), std::string::npos);
  Outcome bad_org = Hsm({"init-root", "--org", "ACME Corp"});
  EXPECT_EQ(bad_org.exit_code, 64);
  Outcome unknown = Hsm({"explode"});
  EXPECT_EQ(unknown.exit_code, 64);
  EXPECT_NE(unknown.err.find("unknown hsm subcommand"), std::string::npos);
  // There is no way to give a PIN as an argument.
  Outcome pin_flag = Kmsctl({"--pin", kUserPin, "hsm", "check"});
  EXPECT_EQ(pin_flag.exit_code, 64);
  EXPECT_EQ(CountLines(pin_flag.err), 1) << pin_flag.err;
  EXPECT_EQ(pin_flag.err.find(kUserPin), std::string::npos);
}

class KmsctlAuditTest : public KmsctlTest {
 protected:
  void SetUp() override {
    KmsctlTest::SetUp();
    static int n = 0;
    db_path_ = SoftHsmSandbox::Get().dir() + "/audit-" + std::to_string(++n) + ".db";
    auto db = Database::OpenSqlite(db_path_, KmsStore::Migrations());
    ASSERT_TRUE(db.ok()) << db.error().ToString();
    ASSERT_TRUE((*db)
                    ->InTransaction([](Poco::Data::Session& s) -> Status {
                      for (const char* actor : {"alice", "bob", "alice"}) {
                        AuditRecord r{0,
                                      1'800'000'000'000,
                                      "acme",
                                      actor,
                                      "key.retrieve",
                                      "kms://kms.acme.test/resources/r1",
                                      "",
                                      "ok",
                                      ""};
                        SR_RETURN_IF_ERROR(AuditLog::Append(s, r));
                      }
                      return OkStatus();
                    })
                    .ok());
    config_ = SoftHsmSandbox::Get().WriteFile("audit-" + std::to_string(n) + ".ini",
                                              "[kms]\ndatabase = " + db_path_ + "\n");
  }
  void Tamper() {
    auto db = Database::OpenSqlite(db_path_, KmsStore::Migrations());
    ASSERT_TRUE((*db)
                    ->WithSession([](Poco::Data::Session& s) -> Status {
                      s << "UPDATE audit SET actor = 'mallory' WHERE seq = 2",
                          Poco::Data::Keywords::now;
                      return OkStatus();
                    })
                    .ok());
  }
  Outcome Audit(std::vector<std::string> args) {
    args.insert(args.begin(), {"--config", config_, "audit"});
    return Kmsctl(args);
  }
  std::string db_path_;
};

TEST_F(KmsctlAuditTest, VerifyReportsAnIntactLogAndFindsTampering) {
  Outcome ok = Audit({"verify"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("audit log intact: 3 records, head "), std::string::npos) << ok.out;
  Tamper();
  Outcome broken = Audit({"verify"});
  EXPECT_EQ(broken.exit_code, 65);
  EXPECT_EQ(CountLines(broken.err), 1) << broken.err;
  EXPECT_NE(broken.err.find("broken at record 2: record was altered"), std::string::npos);
}

// Without the HSM, kmsctl cannot check signed checkpoints; it says so rather than calling the log
// intact.
TEST_F(KmsctlAuditTest, VerifyRefusesCheckpointsItHasNoKeyFor) {
  Outcome ok = Audit({"verify"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("signed: no checkpoint (no [hsm] section"), std::string::npos) << ok.out;
  EXPECT_NE(ok.out.find("unsigned: 3 records"), std::string::npos) << ok.out;
  {
    auto db = Database::OpenSqlite(db_path_, KmsStore::Migrations());
    ASSERT_TRUE((*db)
                    ->WithSession([](Poco::Data::Session& s) -> Status {
                      s << "INSERT INTO audit_checkpoints VALUES (3, 0, 'e30.e30.AAAA')",
                          Poco::Data::Keywords::now;
                      return OkStatus();
                    })
                    .ok());
  }
  Outcome unchecked = Audit({"verify"});
  EXPECT_EQ(unchecked.exit_code, 78) << unchecked.out << unchecked.err;
  EXPECT_EQ(CountLines(unchecked.err), 1) << unchecked.err;
  EXPECT_NE(unchecked.err.find("no identity key to check them"), std::string::npos)
      << unchecked.err;
  EXPECT_EQ(unchecked.out, "");
}

TEST_F(KmsctlAuditTest, QueryFiltersAndRefusesBadFilters) {
  Outcome bob = Audit({"query", "--user", "bob"});
  ASSERT_EQ(bob.exit_code, 0) << bob.err;
  EXPECT_EQ(CountLines(bob.out), 1) << bob.out;
  EXPECT_NE(bob.out.find("  bob  key.retrieve  ok"), std::string::npos) << bob.out;
  Outcome window = Audit({"query", "--from", "2027-01-15T08:00:00Z", "--limit", "2"});
  ASSERT_EQ(window.exit_code, 0) << window.err;
  EXPECT_EQ(CountLines(window.out), 2) << window.out;  // 1.8e12 ms is 2027-01-15T08:00Z
  EXPECT_EQ(Audit({"query", "--from", "yesterday"}).exit_code, 64);
  EXPECT_EQ(Audit({"query", "--limit", "0"}).exit_code, 64);
  EXPECT_EQ(Audit({"explode"}).exit_code, 64);
  config_ = SoftHsmSandbox::Get().WriteFile("no-db.ini", "[kms]\n");
  Outcome no_db = Audit({"verify"});
  EXPECT_EQ(no_db.exit_code, 64);
  EXPECT_NE(no_db.err.find("names no database"), std::string::npos);
}

// Issue 11: a clientId with a newline (it goes into a record's detail) put a forged line into
// `audit query`'s output. Text escapes control characters; --json writes one object a line.
TEST_F(KmsctlAuditTest, NoFieldCanStartALineOfItsOwn) {
  const std::string forged = "client x\n0  2027-01-15T08:00:00.000Z  acme  carol  key.retrieve  ok";
  {
    auto db = Database::OpenSqlite(db_path_, KmsStore::Migrations());
    ASSERT_TRUE((*db)
                    ->InTransaction([&](Poco::Data::Session& s) -> Status {
                      AuditRecord r{0,  1'800'000'000'000, "acme", "mallory", "key.retrieve", "",
                                    "", "denied",          forged};
                      return AuditLog::Append(s, r);
                    })
                    .ok());
  }
  Outcome text = Audit({"query"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(CountLines(text.out), 4) << text.out;
  EXPECT_NE(text.out.find("(client x\\n0  2027"), std::string::npos) << text.out;
  EXPECT_EQ(text.out.find("\n0  2027"), std::string::npos) << text.out;

  Outcome json = Audit({"query", "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_EQ(CountLines(json.out), 4) << json.out;
  std::istringstream lines(json.out);
  std::string line, last_detail;
  while (std::getline(lines, line)) {
    Poco::JSON::Parser parser;
    auto record = parser.parse(line).extract<Poco::JSON::Object::Ptr>();
    last_detail = record->getValue<std::string>("detail");
  }
  EXPECT_EQ(last_detail, forged);
}

}  // namespace
}  // namespace strongroom::kms
