#include "strongroom/client/https_transport.h"

#include <Poco/Net/HTTPRequest.h>

#include "https_client.h"

namespace strongroom::client {
namespace {

constexpr char kMessagesPath[] = "/kms/messages";
constexpr char kInfoPath[] = "/kms/info";

}  // namespace

Result<std::unique_ptr<HttpsTransport>> HttpsTransport::New(const HttpsTransportOptions& options) {
  SR_ASSIGN_OR_RETURN(
      std::unique_ptr<internal::HttpsClient> client,
      internal::HttpsClient::New(options.base_url, options.ca_file, options.timeout, "the KMS"));
  return std::unique_ptr<HttpsTransport>(new HttpsTransport(std::move(client)));
}

HttpsTransport::HttpsTransport(std::unique_ptr<internal::HttpsClient> client)
    : client_(std::move(client)) {}

HttpsTransport::~HttpsTransport() = default;

Result<KmsResponse> HttpsTransport::Post(const std::string& message) {
  return Exchange(Poco::Net::HTTPRequest::HTTP_POST, kMessagesPath, "application/jose", message);
}

Result<std::string> HttpsTransport::GetInfo() {
  SR_ASSIGN_OR_RETURN(KmsResponse response,
                      Exchange(Poco::Net::HTTPRequest::HTTP_GET, kInfoPath, "", ""));
  if (response.http_status != 200) {
    return Error(ErrorCode::kUnavailable,
                 "GET /kms/info answered HTTP " + std::to_string(response.http_status));
  }
  return std::move(response.body);
}

Result<KmsResponse> HttpsTransport::Exchange(const std::string& method, const std::string& path,
                                             const std::string& content_type,
                                             const std::string& body) {
  SR_ASSIGN_OR_RETURN(
      internal::HttpAnswer answer,
      client_->Exchange(method, path, /*bearer=*/"", content_type, body, kMaxKmsResponseBytes));
  last_retry_after_ = answer.retry_after_s;
  KmsResponse response;
  response.http_status = answer.status;
  response.content_type = std::move(answer.content_type);
  response.body = std::move(answer.body);
  response.retry_after_s = answer.retry_after_s;
  return response;
}

KmsTransport MakeKmsTransport(HttpsTransport& transport) {
  return [&transport](const std::string& message) { return transport.Post(message); };
}

}  // namespace strongroom::client
