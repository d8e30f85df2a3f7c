// The X.509 chains of the KMS's identity keys: the RSA keys in the HSM that open `create /ecdhe`
// and sign its answers, one per token (kms_identities.h). Clients find the one in service at GET
// /kms/info as the x5c of rsaPublicKey, leaf first.
//
// `kmsctl hsm certify-identity` issues the leaves with CertifyIdentityKey and writes every token's
// chain into one PEM file ([kms] identity_chain): chains one after the other, each its leaf first,
// then the certificates above it; a certificate that is not a CA starts the next chain. kmsd loads
// the file with LoadIdentityChains and refuses to start when a chain does not verify.
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

// A chain in DER, leaf first, as x5c publishes it, and the RSA key its leaf certifies.
struct IdentityChain {
  std::vector<std::vector<std::uint8_t>> der;
  hsm::RsaPublicKey key;  // big-endian, no leading zeros
};

// Most chains one identity file holds (one per token).
inline constexpr std::size_t kMaxIdentityChains = 16;

// Parses a PEM file of chains (above; each 1 to jose::kMaxX5cCertificates certificates, leaf
// first) and checks each: its leaf certifies an RSA key, each certificate is signed by the next
// one, and the leaf is valid now (FAILED_PRECONDITION otherwise, naming the chain).
Result<std::vector<IdentityChain>> ParseIdentityChains(const std::string& pem);
Result<std::vector<IdentityChain>> LoadIdentityChains(const std::string& path);
// The chain among `chains` whose leaf certifies `key`, or nullptr.
const IdentityChain* FindIdentityChain(const std::vector<IdentityChain>& chains,
                                       const hsm::RsaPublicKey& key);
// The chain in `pem` that certifies `key` (ParseIdentityChains, then FindIdentityChain);
// FAILED_PRECONDITION when none does.
Result<IdentityChain> ParseIdentityChain(const std::string& pem, const hsm::RsaPublicKey& key);
Result<IdentityChain> LoadIdentityChain(const std::string& path, const hsm::RsaPublicKey& key);
// The chains as a PEM file, in order.
Result<std::string> IdentityChainsPem(const std::vector<IdentityChain>& chains);

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_IDENTITY_CERTIFICATE_H_
