// hsm::UnwrapOrder (vault.h): the order KeyVault, the in-memory vault and the KMS's reconciliation
// try a key's blobs in.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "strongroom/hsm/vault.h"

namespace strongroom::hsm {
namespace {

// What UnwrapOrder asks of a token.
struct Named {
  std::string token_name;
  bool backoff = false;
  const std::string& name() const { return token_name; }
  bool InBackoff() const { return backoff; }
};

std::vector<std::string> Order(const std::vector<Named*>& tokens,
                               const std::vector<TokenBlob>& blobs) {
  std::vector<std::string> out;
  for (const auto& [token, blob] : UnwrapOrder(tokens, std::span<const TokenBlob>(blobs))) {
    EXPECT_EQ(blob->token, token->name());
    out.push_back(token->name() + ":" + std::to_string(blob->blob.front()));
  }
  return out;
}

TEST(UnwrapOrderTest, ReadyTokensFirstInConfigurationOrderThenThoseInBackoff) {
  Named a{"a"}, b{"b", true}, c{"c"}, d{"d", true};
  const std::vector<TokenBlob> blobs = {{"d", {4}}, {"c", {3}}, {"b", {2}}, {"a", {1}}};
  EXPECT_EQ(Order({&a, &b, &c, &d}, blobs), (std::vector<std::string>{"a:1", "c:3", "b:2", "d:4"}));
}

TEST(UnwrapOrderTest, OnlyTokensHoldingABlobAndOnlyBlobsOfTheTokensGiven) {
  Named a{"a"}, b{"b"};
  const std::vector<TokenBlob> blobs = {{"b", {2}}, {"gone", {9}}};
  EXPECT_EQ(Order({&a, &b}, blobs), (std::vector<std::string>{"b:2"}));
  EXPECT_TRUE(Order({&a}, blobs).empty());
  EXPECT_TRUE(Order({}, blobs).empty());
}

}  // namespace
}  // namespace strongroom::hsm
