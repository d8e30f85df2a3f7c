#include "strongroom/client/https_transport.h"

#include <Poco/Exception.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/NumberParser.h>
#include <Poco/URI.h>
#include <unistd.h>

#include "strongroom/common/tls.h"

namespace strongroom::client {
namespace {

constexpr char kMessagesPath[] = "/kms/messages";
constexpr char kInfoPath[] = "/kms/info";

}  // namespace

Result<std::unique_ptr<HttpsTransport>> HttpsTransport::New(const HttpsTransportOptions& options) {
  Poco::URI uri;
  try {
    uri = Poco::URI(options.base_url);
  } catch (const Poco::Exception&) {
    return Error(ErrorCode::kInvalidArgument, "malformed KMS URL '" + options.base_url + "'");
  }
  if (uri.getScheme() != "https" || uri.getHost().empty() ||
      !(uri.getPath().empty() || uri.getPath() == "/") || !uri.getRawQuery().empty() ||
      !uri.getUserInfo().empty()) {
    return Error(ErrorCode::kInvalidArgument,
                 "the KMS URL must be https://host[:port], got '" + options.base_url + "'");
  }
  if (options.ca_file.empty() || access(options.ca_file.c_str(), R_OK) != 0) {
    return Error(ErrorCode::kInvalidArgument, "cannot read the CA file '" + options.ca_file + "'");
  }
  SR_ASSIGN_OR_RETURN(auto context,
                      MakeTlsClientContext("the KMS's HTTPS server", options.ca_file));
  auto session =
      std::make_unique<Poco::Net::HTTPSClientSession>(uri.getHost(), uri.getPort(), context);
  session->setKeepAlive(true);
  session->setTimeout(Poco::Timespan(options.timeout.count(), 0));
  return std::unique_ptr<HttpsTransport>(new HttpsTransport(std::move(session)));
}

HttpsTransport::HttpsTransport(std::unique_ptr<Poco::Net::HTTPSClientSession> session)
    : session_(std::move(session)) {}

HttpsTransport::~HttpsTransport() {
  try {
    session_->reset();
  } catch (...) {
  }
  session_.reset();
  Poco::Net::uninitializeSSL();
}

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
  for (int attempt = 0;; ++attempt) {
    const bool reused = session_->connected();
    bool answered = false;
    try {
      Poco::Net::HTTPRequest request(method, path, Poco::Net::HTTPMessage::HTTP_1_1);
      request.setKeepAlive(true);
      if (method == Poco::Net::HTTPRequest::HTTP_POST) {
        request.setContentType(content_type);
        request.setContentLength64(static_cast<Poco::Int64>(body.size()));
      }
      std::ostream& out = session_->sendRequest(request);
      out.write(body.data(), static_cast<std::streamsize>(body.size()));
      out.flush();
      Poco::Net::HTTPResponse response;
      std::istream& in = session_->receiveResponse(response);
      answered = true;
      KmsResponse result;
      result.http_status = static_cast<int>(response.getStatus());
      result.content_type = response.getContentType();
      last_retry_after_ = 0;
      if (response.has("Retry-After")) {
        int seconds = 0;
        if (Poco::NumberParser::tryParse(response.get("Retry-After"), seconds) && seconds > 0) {
          last_retry_after_ = seconds;
        }
      }
      result.body.resize(kMaxKmsResponseBytes + 1);
      std::size_t size = 0;
      while (in && size < result.body.size()) {
        in.read(result.body.data() + size, static_cast<std::streamsize>(result.body.size() - size));
        size += static_cast<std::size_t>(in.gcount());
      }
      if (size > kMaxKmsResponseBytes) {
        session_->reset();
        return Error(
            ErrorCode::kResourceExhausted,
            "the KMS answered with more than " + std::to_string(kMaxKmsResponseBytes) + " bytes");
      }
      result.body.resize(size);
      result.retry_after_s = last_retry_after_;
      return result;
    } catch (const Poco::Exception& e) {
      session_->reset();
      // The server may close an idle keep-alive connection at any time; only then is the
      // request sent again, because it cannot have been processed.
      if (attempt == 0 && reused && !answered) continue;
      return Error(ErrorCode::kUnavailable,
                   method + " " + path + " to the KMS failed: " + e.displayText());
    }
  }
}

KmsTransport MakeKmsTransport(HttpsTransport& transport) {
  return [&transport](const std::string& message) { return transport.Post(message); };
}

}  // namespace strongroom::client
