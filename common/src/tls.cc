#include "strongroom/common/tls.h"

#include <Poco/Exception.h>
#include <Poco/Net/SSLManager.h>

namespace strongroom {
namespace {

constexpr const char* kCiphers = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL";

}  // namespace

Result<Poco::Net::Context::Ptr> MakeTlsServerContext(const std::string& what,
                                                     const std::string& cert_file,
                                                     const std::string& key_file) {
  Poco::Net::initializeSSL();
  try {
    Poco::Net::Context::Params params;
    params.certificateFile = cert_file;
    params.privateKeyFile = key_file;
    params.verificationMode = Poco::Net::Context::VERIFY_NONE;  // callers present bearer tokens
    params.loadDefaultCAs = false;
    params.cipherList = kCiphers;
    Poco::Net::Context::Ptr context =
        new Poco::Net::Context(Poco::Net::Context::TLS_SERVER_USE, params);
    context->requireMinimumProtocol(Poco::Net::Context::PROTO_TLSV1_2);
    context->preferServerCiphers();
    return context;
  } catch (const Poco::Exception& e) {
    Poco::Net::uninitializeSSL();
    return Error(ErrorCode::kInvalidArgument, "cannot use the TLS certificate " + cert_file +
                                                  " and key " + key_file + " for " + what + ": " +
                                                  e.displayText());
  }
}

Result<Poco::Net::Context::Ptr> MakeTlsClientContext(const std::string& what,
                                                     const std::string& ca_file) {
  Poco::Net::initializeSSL();
  try {
    Poco::Net::Context::Params params;
    params.caLocation = ca_file;
    params.verificationMode = Poco::Net::Context::VERIFY_STRICT;
    params.loadDefaultCAs = false;
    params.cipherList = kCiphers;
    Poco::Net::Context::Ptr context =
        new Poco::Net::Context(Poco::Net::Context::TLS_CLIENT_USE, params);
    context->requireMinimumProtocol(Poco::Net::Context::PROTO_TLSV1_2);
    return context;
  } catch (const Poco::Exception& e) {
    Poco::Net::uninitializeSSL();
    return Error(ErrorCode::kInvalidArgument, "cannot use the CA certificates " + ca_file +
                                                  " for " + what + ": " + e.displayText());
  }
}

}  // namespace strongroom
