#include "strongroom/client/relay_transport.h"

#include "https_client.h"
#include "strongroom/client/https_transport.h"
#include "strongroom/common/kms_uri.h"

namespace strongroom::client {

Result<std::unique_ptr<RelayTransport>> RelayTransport::New(RelayTransportOptions options) {
  if (Result<KmsUri> cluster = KmsUri::ParseCluster(options.cluster);
      !cluster.ok() || cluster->ToString() != options.cluster) {
    return Error(ErrorCode::kInvalidArgument,
                 "the relay's KMS cluster must be kms://<host>, got '" + options.cluster + "'");
  }
  if (!options.core_token) {
    return Error(ErrorCode::kInvalidArgument, "the relay needs the user's core token");
  }
  SR_ASSIGN_OR_RETURN(auto https, internal::HttpsClient::New(options.core_url, options.ca_file,
                                                             options.timeout, "the core (relay)"));
  return std::unique_ptr<RelayTransport>(new RelayTransport(std::move(options), std::move(https)));
}

RelayTransport::RelayTransport(RelayTransportOptions options,
                               std::unique_ptr<internal::HttpsClient> https)
    : options_(std::move(options)), https_(std::move(https)) {}

RelayTransport::~RelayTransport() = default;

Result<KmsResponse> RelayTransport::Post(const std::string& message) {
  SR_ASSIGN_OR_RETURN(std::string token, options_.core_token());
  std::lock_guard<std::mutex> lock(mutex_);
  Result<internal::HttpAnswer> answer =
      https_->Exchange("POST", "/kms/messages?cluster=" + options_.cluster, token,
                       "application/jose", message, kMaxKmsResponseBytes);
  ZeroizeString(token);
  if (!answer.ok()) return answer.error();
  return KmsResponse{answer->status, std::move(answer->content_type), std::move(answer->body),
                     answer->retry_after_s};
}

KmsTransport MakeKmsTransport(std::shared_ptr<RelayTransport> relay) {
  return [relay = std::move(relay)](const std::string& message) { return relay->Post(message); };
}

}  // namespace strongroom::client
