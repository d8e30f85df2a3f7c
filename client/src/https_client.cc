#include "https_client.h"

#include <Poco/Exception.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/NumberParser.h>
#include <Poco/URI.h>
#include <unistd.h>

#include "strongroom/common/tls.h"

namespace strongroom::client::internal {
namespace {

constexpr std::size_t kMaxErrorBodyBytes = 64 * 1024;

// Reads at most `max` bytes; false when the body is longer.
bool ReadUpTo(std::istream& in, std::size_t max, std::string* out) {
  out->clear();
  char chunk[16 * 1024];
  while (in && out->size() <= max) {
    in.read(chunk, static_cast<std::streamsize>(
                       std::min(sizeof chunk, max + 1 - std::min(max + 1, out->size()))));
    const auto n = static_cast<std::size_t>(in.gcount());
    if (n == 0) break;
    out->append(chunk, n);
  }
  return out->size() <= max;
}

HttpAnswer Head(const Poco::Net::HTTPResponse& response) {
  HttpAnswer answer;
  answer.status = static_cast<int>(response.getStatus());
  answer.content_type = response.getContentType();
  if (response.has("Retry-After")) {
    int seconds = 0;
    if (Poco::NumberParser::tryParse(response.get("Retry-After"), seconds) && seconds > 0) {
      answer.retry_after_s = seconds;
    }
  }
  answer.sha256 = response.get("X-Content-SHA256", "");
  return answer;
}

}  // namespace

Result<std::unique_ptr<HttpsClient>> HttpsClient::New(const std::string& base_url,
                                                      const std::string& ca_file,
                                                      std::chrono::seconds timeout,
                                                      std::string what) {
  Poco::URI uri;
  try {
    uri = Poco::URI(base_url);
  } catch (const Poco::Exception&) {
    return Error(ErrorCode::kInvalidArgument, "malformed URL '" + base_url + "' for " + what);
  }
  if (uri.getScheme() != "https" || uri.getHost().empty() ||
      !(uri.getPath().empty() || uri.getPath() == "/") || !uri.getRawQuery().empty() ||
      !uri.getUserInfo().empty()) {
    return Error(ErrorCode::kInvalidArgument,
                 "the URL of " + what + " must be https://host[:port], got '" + base_url + "'");
  }
  if (ca_file.empty() || access(ca_file.c_str(), R_OK) != 0) {
    return Error(ErrorCode::kInvalidArgument, "cannot read the CA file '" + ca_file + "'");
  }
  SR_ASSIGN_OR_RETURN(Poco::Net::Context::Ptr context, MakeTlsClientContext(what, ca_file));
  return std::unique_ptr<HttpsClient>(
      new HttpsClient(uri.getHost(), uri.getPort(), std::move(context), timeout, std::move(what)));
}

HttpsClient::HttpsClient(std::string host, std::uint16_t port, Poco::Net::Context::Ptr context,
                         std::chrono::seconds timeout, std::string what)
    : host_(std::move(host)),
      port_(port),
      context_(std::move(context)),
      timeout_(timeout),
      what_(std::move(what)) {}

HttpsClient::~HttpsClient() {
  Reset();
  context_ = nullptr;
  Poco::Net::uninitializeSSL();
}

void HttpsClient::Reset() {
  if (!session_) return;
  try {
    session_->reset();
  } catch (...) {
  }
  session_.reset();
}

Poco::Net::HTTPRequest HttpsClient::Connect(const std::string& method, const std::string& target,
                                            const std::string& bearer) {
  if (!session_) {
    session_ = std::make_unique<Poco::Net::HTTPSClientSession>(host_, port_, context_);
    session_->setKeepAlive(true);
    session_->setTimeout(Poco::Timespan(timeout_.count(), 0));
  }
  Poco::Net::HTTPRequest request(method, target, Poco::Net::HTTPMessage::HTTP_1_1);
  request.setKeepAlive(true);
  if (!bearer.empty()) request.set("Authorization", "Bearer " + bearer);
  return request;
}

Result<HttpAnswer> HttpsClient::Exchange(const std::string& method, const std::string& target,
                                         const std::string& bearer, const std::string& content_type,
                                         const std::string& body, std::size_t max_answer,
                                         const Headers& headers) {
  for (int attempt = 0;; ++attempt) {
    const bool reused = session_ && session_->connected();
    bool answered = false;
    try {
      Poco::Net::HTTPRequest request = Connect(method, target, bearer);
      for (const auto& [name, value] : headers) request.set(name, value);
      const bool has_body = !body.empty() || method == Poco::Net::HTTPRequest::HTTP_POST ||
                            method == Poco::Net::HTTPRequest::HTTP_PUT;
      if (has_body) {
        if (!content_type.empty()) request.setContentType(content_type);
        request.setContentLength64(static_cast<Poco::Int64>(body.size()));
      }
      std::ostream& out = session_->sendRequest(request);
      out.write(body.data(), static_cast<std::streamsize>(body.size()));
      out.flush();
      Poco::Net::HTTPResponse response;
      std::istream& in = session_->receiveResponse(response);
      answered = true;
      HttpAnswer answer = Head(response);
      const std::size_t limit =
          answer.status >= 200 && answer.status < 300 ? max_answer : kMaxErrorBodyBytes;
      if (!ReadUpTo(in, limit, &answer.body)) {
        Reset();
        return Error(ErrorCode::kResourceExhausted,
                     what_ + " answered " + method + " " + target.substr(0, target.find('?')) +
                         " with more than " + std::to_string(limit) + " bytes");
      }
      if (!response.getKeepAlive()) Reset();
      return answer;
    } catch (const Poco::Exception& e) {
      Reset();
      // A keep-alive connection the server closed while idle: the request cannot have been
      // processed, so it goes once more on a fresh connection.
      if (attempt == 0 && reused && !answered) continue;
      return Error(ErrorCode::kUnavailable, method + " " + target.substr(0, target.find('?')) +
                                                " to " + what_ + " failed: " + e.displayText());
    }
  }
}

Result<HttpAnswer> HttpsClient::Stream(const std::string& method, const std::string& target,
                                       const std::string& bearer, const std::string& content_type,
                                       std::uint64_t length, const BodyWriter& write,
                                       const BodyReader& read) {
  Reset();  // a fresh connection: a streamed body cannot be sent again
  const std::string path = target.substr(0, target.find('?'));
  try {
    Poco::Net::HTTPRequest request = Connect(method, target, bearer);
    if (write) {
      if (!content_type.empty()) request.setContentType(content_type);
      request.setContentLength64(static_cast<Poco::Int64>(length));
    }
    std::ostream& out = session_->sendRequest(request);
    if (write) {
      Status written = OkStatus();
      try {
        written = write(out);
        if (written.ok()) out.flush();
      } catch (const Poco::Exception& e) {
        written = Error(ErrorCode::kUnavailable, e.displayText());
      }
      if (!written.ok() || !out) {
        // The server may have refused the body early (413) and closed: its answer says why.
        Error failure = !written.ok()
                            ? written.error()
                            : Error(ErrorCode::kUnavailable, method + " " + path + " to " + what_ +
                                                                 " failed while sending the body");
        try {
          Poco::Net::HTTPResponse early;
          std::istream& in = session_->receiveResponse(early);
          HttpAnswer answer = Head(early);
          if (answer.status >= 400) {
            if (!ReadUpTo(in, kMaxErrorBodyBytes, &answer.body)) answer.body.clear();
            Reset();
            return answer;
          }
        } catch (const Poco::Exception&) {
        }
        Reset();
        return failure;
      }
    }
    Poco::Net::HTTPResponse response;
    std::istream& in = session_->receiveResponse(response);
    HttpAnswer answer = Head(response);
    if (answer.status >= 200 && answer.status < 300 && read) {
      Status consumed = read(in, answer);
      Reset();
      if (!consumed.ok()) return consumed.error();
      return answer;
    }
    if (!ReadUpTo(in, kMaxErrorBodyBytes, &answer.body)) answer.body.clear();
    Reset();
    return answer;
  } catch (const Poco::Exception& e) {
    Reset();
    return Error(ErrorCode::kUnavailable,
                 method + " " + path + " to " + what_ + " failed: " + e.displayText());
  }
}

}  // namespace strongroom::client::internal
