// The X.509 chain of the KMS's identity key: the RSA key in the HSM that opens `create /ecdhe`
// and signs its answers. Clients find it at GET /kms/info as the x5c of rsaPublicKey, leaf first.
//
// `kmsctl hsm certify-identity` issues the leaf with CertifyIdentityKey; kmsd loads the chain with
// LoadIdentityChain and refuses to start when the leaf does not certify the token's identity key.
#ifndef STRONGROOM_KMS_IDENTITY_CERTIFICATE_H_
#define STRONGROOM_KMS_IDENTITY_CERTIFICATE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/common/jose.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/hsm/token.h"

namespace strongroom::kms {

inline constexpr int kMaxIdentityCertificateDays = 3650;
inline constexpr std::size_t kMaxPemFileBytes = 256 * 1024;

// What the CA certifies: the identity key for `host` (the KMS is kms://<host>).
struct IdentityCertificateRequest {
  std::string host;  // subject CN and subjectAltName (DNS, or IP for an address)
  int days = 365;    // 1 to kMaxIdentityCertificateDays
};

// Issues a certificate for `key` signed by the CA (PEM certificate and PEM private key, which
// must belong together) and returns the chain as PEM: the new leaf, then the certificates of the
// CA file (the CA first, then any certificates above it, as the file lists them).
// The leaf is an end-entity certificate (CA:FALSE) for digitalSignature and keyEncipherment.
Result<std::string> CertifyIdentityKey(const hsm::RsaPublicKey& key,
                                       const IdentityCertificateRequest& request,
                                       const std::string& ca_cert_pem,
                                       const SecretBytes& ca_key_pem);

// A chain in DER, leaf first, as x5c publishes it.
struct IdentityChain {
  std::vector<std::vector<std::uint8_t>> der;
};

// Parses a PEM chain (1 to jose::kMaxX5cCertificates certificates, leaf first) and checks that
// the leaf's public key is `key`, that each certificate is signed by the next one, and that the
// leaf is valid now. FAILED_PRECONDITION when the chain does not certify the key.
Result<IdentityChain> ParseIdentityChain(const std::string& pem, const hsm::RsaPublicKey& key);
Result<IdentityChain> LoadIdentityChain(const std::string& path, const hsm::RsaPublicKey& key);

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_IDENTITY_CERTIFICATE_H_
