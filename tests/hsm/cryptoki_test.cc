// The PKCS#11 call layer and its attribute templates, against a real SoftHSM2 token.
#include "../../hsm/src/cryptoki.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../../hsm/src/attribute_template.h"
#include "../../hsm/src/object_ops.h"
#include "../support/softhsm_sandbox.h"
#include "strongroom/hsm/token.h"

namespace strongroom::hsm::internal {
namespace {

using testing::kSoftHsmModule;
using testing::SoftHsmSandbox;

std::string Value(const CK_ATTRIBUTE& attribute) {
  return std::string(static_cast<const char*>(attribute.pValue), attribute.ulValueLen);
}

TEST(AttributeTemplateTest, ValuesOutliveWhatTheyWereBuiltFrom) {
  AttributeTemplate attributes;
  {
    std::string label = "strongroom/root/acme/v1";
    const std::vector<std::uint8_t> value = {0, 0, 0, 0, 0, 0, 4, 0};
    attributes.Ulong(CKA_CLASS, CKO_DATA).Bool(CKA_TOKEN, true).String(CKA_LABEL, label);
    attributes.Bytes(CKA_VALUE, value).Ulong(CKA_MODULUS_BITS, 3072).Bool(CKA_PRIVATE, false);
    label.assign(label.size(), 'x');  // the template holds its own copy
  }
  ASSERT_EQ(attributes.size(), 6u);
  const CK_ATTRIBUTE* a = attributes.data();
  EXPECT_EQ(a[0].type, CKA_CLASS);
  ASSERT_EQ(a[0].ulValueLen, sizeof(CK_ULONG));
  EXPECT_EQ(*static_cast<const CK_ULONG*>(a[0].pValue), CKO_DATA);
  ASSERT_EQ(a[1].ulValueLen, sizeof(CK_BBOOL));
  EXPECT_EQ(*static_cast<const CK_BBOOL*>(a[1].pValue), CK_TRUE);
  EXPECT_EQ(Value(a[2]), "strongroom/root/acme/v1");
  EXPECT_EQ(Value(a[3]), std::string("\0\0\0\0\0\0\x04\0", 8));
  // A CK_ULONG after values of odd lengths is still aligned for the module to read in place.
  ASSERT_EQ(a[4].ulValueLen, sizeof(CK_ULONG));
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a[4].pValue) % alignof(CK_ULONG), 0u);
  EXPECT_EQ(*static_cast<const CK_ULONG*>(a[4].pValue), 3072u);
  EXPECT_EQ(*static_cast<const CK_BBOOL*>(a[5].pValue), CK_FALSE);
}

TEST(AttributeTemplateTest, PointersFollowTheStorageAsTheTemplateGrows) {
  AttributeTemplate attributes;
  attributes.String(CKA_LABEL, "first");
  (void)attributes.data();  // handed to a call once, then the template grows and reallocates
  for (int i = 0; i < 64; ++i) attributes.String(CKA_ID, std::string(100, 'i'));
  EXPECT_EQ(Value(attributes.data()[0]), "first");
  EXPECT_EQ(Value(attributes.data()[64]), std::string(100, 'i'));
}

class CryptokiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string label = SoftHsmSandbox::Get().CreateToken(kSoftHsmModule);
    TokenConfig config;
    config.name = "cryptoki-test";
    config.uri = SoftHsmSandbox::Get().Uri(kSoftHsmModule, label);
    auto token = Token::Open(config);  // finds the slot and logs in for the whole module
    ASSERT_TRUE(token.ok()) << token.error().ToString();
    token_ = std::move(token).value();
  }

  std::unique_ptr<Token> token_;
};

TEST_F(CryptokiTest, AFailedCallNamesItsFunctionAndKeepsTheCkr) {
  Cryptoki ck(token_->module().fn());
  CK_TOKEN_INFO info{};
  const CkResult result = ck.GetTokenInfo(CK_SLOT_ID{0x5eed0000}, info);
  EXPECT_FALSE(result.ok());
  EXPECT_EQ(result.rv(), CKR_SLOT_ID_INVALID);
  EXPECT_STREQ(result.function(), "C_GetTokenInfo");
  const Status status = result;
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().code(), ErrorCode::kUnavailable);
  EXPECT_EQ(status.error().message(), "C_GetTokenInfo failed: CKR_SLOT_ID_INVALID");
  EXPECT_EQ(status.error().native_code(), CKR_SLOT_ID_INVALID);
  EXPECT_EQ(result.error("C_GetTokenInfo (probe)").message(),
            "C_GetTokenInfo (probe) failed: CKR_SLOT_ID_INVALID");
  EXPECT_TRUE(ck.GetTokenInfo(token_->slot(), info).status().ok());
}

TEST_F(CryptokiTest, AnEntryTheModuleLeftEmptyIsNotSupportedRatherThanCalled) {
  CK_FUNCTION_LIST functions = *token_->module().fn();  // the real module, one entry missing
  functions.C_GetTokenInfo = nullptr;
  Cryptoki ck(&functions);
  CK_TOKEN_INFO info{};
  const CkResult result = ck.GetTokenInfo(token_->slot(), info);
  EXPECT_EQ(result.rv(), CKR_FUNCTION_NOT_SUPPORTED);
  EXPECT_EQ(result.status().error().message(), "C_GetTokenInfo failed: CKR_FUNCTION_NOT_SUPPORTED");
  CK_SLOT_INFO slot{};
  EXPECT_TRUE(ck.GetSlotInfo(token_->slot(), slot).ok());  // the others still reach the module
}

TEST_F(CryptokiTest, TemplatesCreateAndFindObjectsOnTheToken) {
  Cryptoki ck(token_->module().fn());
  CK_SESSION_HANDLE session = CK_INVALID_HANDLE;
  ASSERT_TRUE(ck.OpenSession(token_->slot(), session).ok());
  CK_OBJECT_HANDLE created = CK_INVALID_HANDLE;
  {
    AttributeTemplate object;
    object.Ulong(CKA_CLASS, CKO_DATA)
        .Bool(CKA_TOKEN, false)
        .String(CKA_APPLICATION, std::string("cryptoki-test"))
        .String(CKA_LABEL, std::string("a label built from a temporary"))
        .Bytes(CKA_VALUE, std::vector<std::uint8_t>{1, 2, 3});
    Status made = ck.CreateObject(session, object, created);
    ASSERT_TRUE(made.ok()) << made.error().ToString();
  }
  AttributeTemplate match;
  match.Ulong(CKA_CLASS, CKO_DATA).String(CKA_APPLICATION, "cryptoki-test");
  Result<std::vector<CK_OBJECT_HANDLE>> found = FindObjects(ck, session, match);
  ASSERT_TRUE(found.ok()) << found.error().ToString();
  ASSERT_EQ(found->size(), 1u);
  EXPECT_EQ(found->front(), created);
  Result<std::string> label = GetString(ck, session, created, CKA_LABEL);
  ASSERT_TRUE(label.ok()) << label.error().ToString();
  EXPECT_EQ(*label, "a label built from a temporary");
  Result<std::vector<std::uint8_t>> value = GetBytes(ck, session, created, CKA_VALUE);
  ASSERT_TRUE(value.ok()) << value.error().ToString();
  EXPECT_EQ(*value, (std::vector<std::uint8_t>{1, 2, 3}));
  Result<CK_ULONG> cls = GetUlong(ck, session, created, CKA_CLASS);
  ASSERT_TRUE(cls.ok()) << cls.error().ToString();
  EXPECT_EQ(*cls, CKO_DATA);
  EXPECT_TRUE(ck.DestroyObject(session, created).ok());
  EXPECT_TRUE(ck.CloseSession(session).ok());
}

}  // namespace
}  // namespace strongroom::hsm::internal
