// Whether a KMS's published identity (GET /kms/info, or the same document from the client's
// configuration) is the KMS the client was configured to trust, before anything is sealed to it.
//
// The checks, in order (each failure is UNAUTHENTICATED saying which one failed):
//   1. the document names the expected cluster (kms://<host>);
//   2. it carries an x5c chain (leaf first, at most jose::kMaxX5cCertificates DER certificates);
//   3. the leaf certifies the very RSA key of the document (modulus and exponent equal);
//   4. the chain verifies (OpenSSL X509_verify_cert) up to one of the configured root CAs, at the
//      current time (or `at_time_s`), the x5c certificates after the leaf serving as untrusted
//      intermediates; a self-signed leaf that is not itself a configured root is refused;
//   5. the leaf names the host: a subjectAltName dNSName equal to the cluster's host, wildcards
//      refused. The subject CN is never consulted (a certificate naming the host only in its CN is
//      refused): `kmsctl hsm certify-identity` always writes the SAN, and RFC 6125 prefers it.
#ifndef STRONGROOM_CLIENT_KMS_IDENTITY_H_
#define STRONGROOM_CLIENT_KMS_IDENTITY_H_

#include <cstdint>
#include <optional>
#include <string>

#include "strongroom/client/kms_session.h"
#include "strongroom/common/error.h"

namespace strongroom::client {

struct KmsTrust {
  std::string cluster;     // kms://<host>: the KMS the client expects
  std::string roots_file;  // PEM: the root CA certificates a KMS identity must chain to
};

Status VerifyKmsIdentity(const KmsInfo& info, const KmsTrust& trust,
                         std::optional<std::int64_t> at_time_s = std::nullopt);

// "kms://host" -> "host" (in lower case, a ":port" suffix, if any, dropped); empty when not a
// KMS URI.
std::string KmsHostOf(const std::string& cluster);

}  // namespace strongroom::client

#endif  // STRONGROOM_CLIENT_KMS_IDENTITY_H_
