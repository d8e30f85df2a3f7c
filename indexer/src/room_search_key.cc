#include "strongroom/indexer/room_search_key.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <array>
#include <memory>
#include <stdexcept>
#include <utility>

#include "strongroom/common/jose/base64url.h"

namespace strongroom::indexer {
namespace {

constexpr std::string_view kInfoLabel = "strongroom/search/room/v1";

struct KdfCtxFree {
  void operator()(EVP_KDF_CTX* ctx) const { EVP_KDF_CTX_free(ctx); }
};
struct MacCtxFree {
  void operator()(EVP_MAC_CTX* ctx) const { EVP_MAC_CTX_free(ctx); }
};

// "strongroom/search/room/v1" 0x00 | u16 len | room id | u32 version, big-endian.
std::string Info(std::string_view room_id, std::uint32_t version) {
  std::string info(kInfoLabel);
  info += '\0';
  info += static_cast<char>((room_id.size() >> 8) & 0xff);
  info += static_cast<char>(room_id.size() & 0xff);
  info += room_id;
  for (int shift = 24; shift >= 0; shift -= 8) info += static_cast<char>((version >> shift) & 0xff);
  return info;
}

// HMAC-SHA-256 is fetched once; an EVP_MAC may be shared by threads.
EVP_MAC* Hmac() {
  static EVP_MAC* const mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  return mac;
}

}  // namespace

bool IsLowercaseUuid(std::string_view id) {
  if (id.size() != 36) return false;
  for (std::size_t i = 0; i < id.size(); ++i) {
    const char c = id[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

Result<RoomSearchKey> RoomSearchKey::Derive(const SecretBytes& org_search_key,
                                            std::string_view room_id,
                                            std::uint32_t search_key_version) {
  if (org_search_key.size() != kOrgSearchKeyBytes) {
    return Error(ErrorCode::kInvalidArgument,
                 "an organization search key is " + std::to_string(kOrgSearchKeyBytes) +
                     " bytes, not " + std::to_string(org_search_key.size()));
  }
  if (!IsLowercaseUuid(room_id)) {
    return Error(ErrorCode::kInvalidArgument, "a room id is a lowercase UUID");
  }
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  if (kdf == nullptr) return Error(ErrorCode::kInternal, "OpenSSL has no HKDF");
  std::unique_ptr<EVP_KDF_CTX, KdfCtxFree> ctx(EVP_KDF_CTX_new(kdf));
  EVP_KDF_free(kdf);
  if (ctx == nullptr) return Error(ErrorCode::kResourceExhausted, "no memory for HKDF");

  std::string info = Info(room_id, search_key_version);
  char digest[] = "SHA256";
  const std::array<OSSL_PARAM, 4> params = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                        const_cast<std::uint8_t*>(org_search_key.data()),
                                        org_search_key.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()),
      OSSL_PARAM_construct_end(),
  };
  SecretBytes key(kRoomSearchKeyBytes);
  if (EVP_KDF_derive(ctx.get(), key.data(), key.size(), params.data()) != 1) {
    return Error(ErrorCode::kInternal, "HKDF-SHA-256 failed");
  }
  return RoomSearchKey(std::move(key));
}

std::string RoomSearchKey::Token(std::string_view term) const {
  return Tokens({std::string(term)}).front();
}

std::vector<std::string> RoomSearchKey::DecoyTokens(std::string_view activity_id,
                                                    std::size_t count) const {
  std::vector<std::string> inputs;
  inputs.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    std::string input("\0decoy\0", 7);
    input.append(activity_id);
    for (int shift = 24; shift >= 0; shift -= 8) {
      input.push_back(static_cast<char>((static_cast<std::uint32_t>(i) >> shift) & 0xff));
    }
    inputs.push_back(std::move(input));
  }
  return Tokens(inputs);
}

std::vector<std::string> RoomSearchKey::Tokens(const std::vector<std::string>& terms) const {
  // One HMAC context for the list: keyed once, then re-initialized with the same key per term.
  std::unique_ptr<EVP_MAC_CTX, MacCtxFree> ctx(Hmac() ? EVP_MAC_CTX_new(Hmac()) : nullptr);
  char digest[] = "SHA256";
  const std::array<OSSL_PARAM, 2> params = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end(),
  };
  bool ok = ctx != nullptr && EVP_MAC_init(ctx.get(), key_.data(), key_.size(), params.data()) == 1;
  std::vector<std::string> tokens;
  tokens.reserve(terms.size());
  std::array<std::uint8_t, 32> mac{};
  for (std::size_t i = 0; ok && i < terms.size(); ++i) {
    std::size_t mac_length = 0;
    ok = (i == 0 || EVP_MAC_init(ctx.get(), nullptr, 0, nullptr) == 1) &&
         EVP_MAC_update(ctx.get(), reinterpret_cast<const unsigned char*>(terms[i].data()),
                        terms[i].size()) == 1 &&
         EVP_MAC_final(ctx.get(), mac.data(), &mac_length, mac.size()) == 1 &&
         mac_length == mac.size();
    if (ok) {
      tokens.push_back(
          jose::Base64UrlEncode(std::span<const std::uint8_t>(mac.data(), kSearchTokenBytes)));
    }
  }
  OPENSSL_cleanse(mac.data(), mac.size());
  if (!ok) {
    // HMAC-SHA-256 of the default provider fails only without memory, like SecretBytes::Random's
    // CSPRNG not a condition a caller can handle.
    throw std::runtime_error("HMAC-SHA-256 failed");
  }
  return tokens;
}

}  // namespace strongroom::indexer
