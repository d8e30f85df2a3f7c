// TLS for Strongroom's listeners and for the connections services open to one another.
//
// Every listener outside tests speaks TLS 1.2 or newer with ECDHE and AEAD ciphers only. Server
// contexts ask for no client certificate (callers authenticate with bearer tokens); client
// contexts verify the peer's chain against a named CA file only (never the system store, so a
// deployment trusts exactly its own roots) and its name.
#ifndef STRONGROOM_COMMON_TLS_H_
#define STRONGROOM_COMMON_TLS_H_

#include <Poco/Net/Context.h>

#include <string>

#include "strongroom/common/error.h"

namespace strongroom {

// A server context from a PEM certificate (then its chain) and an unencrypted PEM private key.
// INVALID_ARGUMENT naming `what` ("the core's HTTPS listener") and both files when they cannot
// be used. Calls Poco::Net::initializeSSL() (reference counted; pair it with
// Poco::Net::uninitializeSSL() when done).
Result<Poco::Net::Context::Ptr> MakeTlsServerContext(const std::string& what,
                                                     const std::string& cert_file,
                                                     const std::string& key_file);

// A client context that verifies servers against the PEM CA certificates in `ca_file`.
Result<Poco::Net::Context::Ptr> MakeTlsClientContext(const std::string& what,
                                                     const std::string& ca_file);

}  // namespace strongroom

#endif  // STRONGROOM_COMMON_TLS_H_
