#include "strongroom/client/kms_identity.h"

#include <Poco/Exception.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <memory>
#include <vector>

#include "strongroom/common/jose/base64url.h"
#include "strongroom/common/jose/jwk.h"
#include "strongroom/common/kms_uri.h"

namespace strongroom::client {
namespace {

struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
struct StoreFree {
  void operator()(X509_STORE* p) const { X509_STORE_free(p); }
};
struct StoreCtxFree {
  void operator()(X509_STORE_CTX* p) const { X509_STORE_CTX_free(p); }
};
struct StackFree {
  void operator()(STACK_OF(X509) * p) const { sk_X509_pop_free(p, X509_free); }
};
struct BnFree {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
using BnPtr = std::unique_ptr<BIGNUM, BnFree>;

Error Untrusted(const std::string& why) {
  return Error(ErrorCode::kUnauthenticated, "the KMS's identity is not trusted: " + why);
}

// Standard, padded base64 (as x5c holds it) to bytes.
Result<std::vector<std::uint8_t>> DecodeBase64(const std::string& text) {
  if (text.empty() || text.size() % 4 != 0 || text.size() > 64 * 1024) {
    return Error(ErrorCode::kInvalidArgument, "not padded base64");
  }
  std::vector<std::uint8_t> out(text.size() / 4 * 3);
  const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  if (n < 0) return Error(ErrorCode::kInvalidArgument, "not padded base64");
  std::size_t size = static_cast<std::size_t>(n);
  if (text.back() == '=') --size;
  if (text[text.size() - 2] == '=') --size;
  out.resize(size);
  return out;
}

// Big-endian bytes without leading zeros.
std::vector<std::uint8_t> Trimmed(std::vector<std::uint8_t> bytes) {
  std::size_t zeros = 0;
  while (zeros + 1 < bytes.size() && bytes[zeros] == 0) ++zeros;
  bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(zeros));
  return bytes;
}

Result<std::vector<std::uint8_t>> JwkMember(const Poco::JSON::Object::Ptr& jwk, const char* name) {
  if (!jwk || !jwk->has(name)) return Error(ErrorCode::kInvalidArgument, "no member");
  SR_ASSIGN_OR_RETURN(std::vector<std::uint8_t> bytes,
                      jose::Base64UrlDecode(jwk->getValue<std::string>(name)));
  return Trimmed(std::move(bytes));
}

Result<std::vector<std::uint8_t>> LeafMember(EVP_PKEY* key, const char* name) {
  BIGNUM* raw = nullptr;
  if (EVP_PKEY_get_bn_param(key, name, &raw) != 1) {
    ERR_clear_error();
    return Error(ErrorCode::kInvalidArgument, "not an RSA key");
  }
  BnPtr bn(raw);
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(BN_num_bytes(bn.get())));
  BN_bn2bin(bn.get(), bytes.data());
  return Trimmed(std::move(bytes));
}

// Whether the leaf's public key is the document's RSA key.
Status SameRsaKey(X509* leaf, const jose::PublicJwk& jwk) {
  EVP_PKEY* leaf_key = X509_get0_pubkey(leaf);
  if (leaf_key == nullptr || EVP_PKEY_get_base_id(leaf_key) != EVP_PKEY_RSA) {
    ERR_clear_error();
    return Untrusted("the leaf certificate does not hold an RSA key");
  }
  SR_ASSIGN_OR_RETURN(std::string json, jwk.ToJson());
  Poco::JSON::Object::Ptr object;
  try {
    Poco::JSON::Parser parser;
    object = parser.parse(json).extract<Poco::JSON::Object::Ptr>();
  } catch (const Poco::Exception&) {
    return Untrusted("the RSA key cannot be read");
  }
  Result<std::vector<std::uint8_t>> n = JwkMember(object, "n"), e = JwkMember(object, "e");
  Result<std::vector<std::uint8_t>> leaf_n = LeafMember(leaf_key, OSSL_PKEY_PARAM_RSA_N);
  Result<std::vector<std::uint8_t>> leaf_e = LeafMember(leaf_key, OSSL_PKEY_PARAM_RSA_E);
  if (!n.ok() || !e.ok() || !leaf_n.ok() || !leaf_e.ok() || *n != *leaf_n || *e != *leaf_e) {
    return Untrusted("the leaf certificate certifies another key than the KMS's RSA key");
  }
  return OkStatus();
}

}  // namespace

std::string KmsHostOf(const std::string& cluster) {
  Result<KmsUri> uri = KmsUri::Parse(cluster);
  return uri.ok() ? uri->host() : "";
}

Status VerifyKmsIdentity(const KmsInfo& info, const KmsTrust& trust,
                         std::optional<std::int64_t> at_time_s) {
  Result<KmsUri> expected = KmsUri::ParseCluster(trust.cluster);
  if (!expected.ok()) {
    return Error(ErrorCode::kInvalidArgument,
                 "the expected KMS cluster must be kms://<host>, got '" + trust.cluster + "'");
  }
  const std::string& host = expected->host();
  if (info.cluster != trust.cluster) {
    return Untrusted("it names the cluster " + info.cluster + ", not " + trust.cluster);
  }
  if (info.x5c.empty()) return Untrusted("it publishes no certificate chain (x5c)");
  if (info.x5c.size() > jose::kMaxX5cCertificates) return Untrusted("its x5c chain is too long");

  std::vector<X509Ptr> chain;
  for (const std::string& text : info.x5c) {
    Result<std::vector<std::uint8_t>> der = DecodeBase64(text);
    const unsigned char* p = der.ok() ? der->data() : nullptr;
    X509Ptr cert(der.ok() ? d2i_X509(nullptr, &p, static_cast<long>(der->size())) : nullptr);
    if (!cert || p != der->data() + der->size()) {
      ERR_clear_error();
      return Untrusted("certificate " + std::to_string(chain.size() + 1) +
                       " of its x5c chain is not DER");
    }
    chain.push_back(std::move(cert));
  }
  SR_RETURN_IF_ERROR(SameRsaKey(chain.front().get(), info.rsa_public_key));

  std::unique_ptr<X509_STORE, StoreFree> store(X509_STORE_new());
  if (!store) return Error(ErrorCode::kInternal, "cannot allocate an X509_STORE");
  if (trust.roots_file.empty() ||
      X509_STORE_load_file(store.get(), trust.roots_file.c_str()) != 1) {
    ERR_clear_error();
    return Error(ErrorCode::kInvalidArgument,
                 "cannot read the KMS root CA file '" + trust.roots_file + "'");
  }
  std::unique_ptr<STACK_OF(X509), StackFree> untrusted(sk_X509_new_null());
  for (std::size_t i = 1; i < chain.size(); ++i) {
    if (!untrusted || sk_X509_push(untrusted.get(), chain[i].get()) <= 0) {
      return Error(ErrorCode::kInternal, "cannot build the certificate chain");
    }
    chain[i].release();  // owned by the stack now
  }
  std::unique_ptr<X509_STORE_CTX, StoreCtxFree> ctx(X509_STORE_CTX_new());
  if (!ctx ||
      X509_STORE_CTX_init(ctx.get(), store.get(), chain.front().get(), untrusted.get()) != 1) {
    ERR_clear_error();
    return Error(ErrorCode::kInternal, "cannot set up certificate verification");
  }
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
  X509_VERIFY_PARAM_set_hostflags(
      param, X509_CHECK_FLAG_NO_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
  if (X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size()) != 1) {
    ERR_clear_error();
    return Error(ErrorCode::kInvalidArgument, "'" + host + "' is not a host name");
  }
  if (at_time_s) X509_VERIFY_PARAM_set_time(param, static_cast<time_t>(*at_time_s));
  if (X509_verify_cert(ctx.get()) != 1) {
    const int error = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    if (error == X509_V_ERR_HOSTNAME_MISMATCH) {
      return Untrusted("its certificate does not name " + host + " (subjectAltName dNSName)");
    }
    return Untrusted(std::string("its certificate chain does not verify against the configured "
                                 "roots: ") +
                     X509_verify_cert_error_string(error));
  }
  return OkStatus();
}

}  // namespace strongroom::client
