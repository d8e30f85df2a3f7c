#include "strongroom/common/http_router.h"

#include <Poco/Exception.h>
#include <Poco/JSON/Object.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/String.h>
#include <Poco/URI.h>

#include <algorithm>
#include <cctype>
#include <iostream>
#include <sstream>
#include <string_view>
#include <vector>

#include "strongroom/common/http_support.h"

namespace strongroom::http {

// --- Request -----------------------------------------------------------------------------------

namespace {

// The path of a request target as sent (origin form "/a/b?q", or absolute form
// "https://host/a/b?q"), still percent-encoded.
std::string_view RawPath(std::string_view target) {
  if (!target.empty() && target.front() != '/') {
    const std::size_t scheme = target.find("://");
    if (scheme != std::string_view::npos) {
      const std::size_t path = target.find('/', scheme + 3);
      target = path == std::string_view::npos ? std::string_view() : target.substr(path);
    }
  }
  return target.substr(0, target.find_first_of("?#"));
}

// The path's segments, split where the target has a '/' and only then percent-decoded, so an
// encoded slash ("%2F") stays inside its segment instead of starting another (a target such as
// /v1/conversations/ID%2Fparticipants names one odd id, not the participants route). Empty
// segments are dropped, as before. Throws Poco::SyntaxException on a bad escape.
std::vector<std::string> DecodedSegments(std::string_view path) {
  std::vector<std::string> segments;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    if (end > start) {
      std::string segment;
      Poco::URI::decode(std::string(path.substr(start, end - start)), segment);
      segments.push_back(std::move(segment));
    }
    start = end + 1;
  }
  return segments;
}

}  // namespace

Request::Request(const Poco::Net::HTTPRequest& head, std::istream& body,
                 Poco::Net::SocketAddress peer)
    : head_(head), body_(body), peer_(std::move(peer)) {
  try {
    const Poco::URI uri(head.getURI());  // refuses a malformed target
    segments_ = DecodedSegments(RawPath(head.getURI()));
    query_ = uri.getRawQuery();
  } catch (const Poco::SyntaxException&) {
    valid_target_ = false;
    segments_.clear();
  }
  body_read_ = !has_body();
}

const std::string& Request::param(std::string_view name) const {
  static const std::string kNone;
  for (const auto& [key, value] : params_) {
    if (key == name) return *value;
  }
  return kNone;
}

std::string Request::media_type() const {
  const std::string& type = head_.getContentType();
  return Poco::toLower(Poco::trim(type.substr(0, type.find(';'))));
}

bool Request::has_body() const {
  return head_.getChunkedTransferEncoding() ||
         (head_.hasContentLength() && head_.getContentLength64() > 0);
}

std::optional<std::string> Request::ReadBody(std::size_t max) {
  if (!has_body()) return std::string();
  if (head_.hasContentLength() && head_.getContentLength64() > static_cast<Poco::Int64>(max)) {
    return std::nullopt;
  }
  std::string body;
  if (head_.hasContentLength()) body.reserve(static_cast<std::size_t>(head_.getContentLength64()));
  char chunk[16 * 1024];
  while (body.size() <= max) {
    const std::size_t n = Read(chunk, std::min(sizeof chunk, max + 1 - body.size()));
    if (n == 0) break;
    body.append(chunk, n);
  }
  if (body.size() > max) return std::nullopt;
  return body;
}

std::size_t Request::Read(char* buffer, std::size_t size) {
  if (body_read_ || size == 0 || !body_) return 0;
  body_.read(buffer, static_cast<std::streamsize>(size));
  const auto n = static_cast<std::size_t>(body_.gcount());
  if (body_.eof() && !body_.bad()) body_read_ = true;
  return n;
}

// --- Response ----------------------------------------------------------------------------------

Response::Response(Error failure)
    : status(HttpStatusFor(failure.code())), error(std::move(failure)) {
  if (status == 503) headers.emplace_back("Retry-After", "1");
}

Response Response::Json(int status, std::string json) {
  Response response;
  response.status = status;
  response.content_type = "application/json";
  response.body = std::move(json);
  return response;
}

Response Response::Refusal(int status, std::string code, std::string message) {
  Response response(Error(ErrorCode::kInvalidArgument, std::move(message)));
  response.headers.clear();
  response.status = status;
  response.code = std::move(code);
  return response;
}

Response Response::TakeOver(Takeover takeover) {
  Response response;
  response.status = 101;
  response.takeover = std::move(takeover);
  return response;
}

Response& Response::With(std::string name, std::string value) {
  headers.emplace_back(std::move(name), std::move(value));
  return *this;
}

Response& Response::Closing() {
  close = true;
  return *this;
}

std::string Response::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (Poco::icompare(key, std::string(name)) == 0) return value;
  }
  return "";
}

OrAnswer<std::string> ReadBodyAs(Request& request, std::string_view media_type, std::size_t max,
                                 std::string_view noun, std::string_view size_code) {
  if (request.media_type() != media_type) {
    return Response::Refusal(
        415, "media_type",
        std::string(noun) + " is sent as Content-Type: " + std::string(media_type));
  }
  std::optional<std::string> body = request.ReadBody(max);
  if (!body) {
    return Response::Refusal(413, std::string(size_code),
                             std::string(noun) + " is at most " + std::to_string(max) + " bytes")
        .Closing();
  }
  return std::move(*body);
}

std::string ErrorCodeText(const Error& error, CodeStyle style) {
  if (error.reason() != ErrorReason::kNone) return std::string(ErrorReasonName(error.reason()));
  std::string name(ErrorCodeName(error.code()));
  if (style == CodeStyle::kSnakeCase) {
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  }
  return name;
}

// --- RouteTable --------------------------------------------------------------------------------

std::size_t RouteTable::Add(std::string method, std::string_view pattern) {
  Route route;
  route.method = std::move(method);
  std::size_t at = 0;
  while (at <= pattern.size()) {
    std::size_t end = pattern.find('/', at);
    if (end == std::string_view::npos) end = pattern.size();
    const std::string_view part = pattern.substr(at, end - at);
    if (!part.empty()) {
      const bool capture = part.size() >= 2 && part.front() == '{' && part.back() == '}';
      route.pattern.push_back(
          {std::string(capture ? part.substr(1, part.size() - 2) : part), capture});
    }
    at = end + 1;
  }
  routes_.push_back(std::move(route));
  return routes_.size() - 1;
}

bool RouteTable::Matches(const Route& route, const std::vector<std::string>& segments) {
  if (route.pattern.size() != segments.size()) return false;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    if (!route.pattern[i].capture && route.pattern[i].text != segments[i]) return false;
  }
  return true;
}

RouteTable::Match RouteTable::Find(Request& request) const {
  Match match;
  for (std::size_t i = 0; i < routes_.size(); ++i) {
    const Route& route = routes_[i];
    if (!Matches(route, request.segments())) continue;
    if (route.method == request.method()) {
      request.params_.clear();
      for (std::size_t s = 0; s < route.pattern.size(); ++s) {
        if (route.pattern[s].capture) {
          request.params_.emplace_back(route.pattern[s].text, &request.segments_[s]);
        }
      }
      match.route = i;
      return match;
    }
    const std::string listed = ", " + match.allow + ",";
    if (listed.find(", " + route.method + ",") == std::string::npos) {
      match.allow += (match.allow.empty() ? "" : ", ") + route.method;
    }
  }
  return match;
}

bool RouteTable::HasPath(const Request& request) const {
  return std::any_of(routes_.begin(), routes_.end(),
                     [&](const Route& route) { return Matches(route, request.segments()); });
}

// --- the adapter -------------------------------------------------------------------------------

namespace {

// Poco's request and response, when there is a connection.
struct Exchange {
  Poco::Net::HTTPServerRequest& request;
  Poco::Net::HTTPServerResponse& response;
};

// Writes an error answer's {"code", "message"}.
void Render(Response& response, CodeStyle style) {
  if (!response.error) return;
  Poco::JSON::Object json;
  json.set("code", response.code.empty() ? ErrorCodeText(*response.error, style) : response.code);
  json.set("message", response.error->message());
  std::ostringstream out;
  json.stringify(out);
  response.content_type = "application/json";
  response.body = out.str();
}

Response Route(Endpoint& endpoint, Request& request) {
  if (std::optional<std::string> problem = FramingProblem(request.head())) {
    return Response::Refusal(400, "bad_framing", *problem).Closing();
  }
  if (!request.valid_target()) {
    return Error(ErrorCode::kInvalidArgument, "the request target is not a valid URI");
  }
  return endpoint.Serve(request);
}

void Write(Exchange& exchange, Request& request, const Response& answer) {
  Poco::Net::HTTPServerResponse& out = exchange.response;
  if (answer.close) {
    out.setKeepAlive(false);
  } else if (!request.body_read()) {
    Discard(exchange.request, out);
  }
  out.setStatusAndReason(static_cast<Poco::Net::HTTPResponse::HTTPStatus>(answer.status));
  for (const auto& [name, value] : answer.headers) out.set(name, value);
  out.set("Cache-Control", "no-store");
  if (!answer.file.empty()) {
    out.sendFile(answer.file, answer.content_type);
  } else {
    if (!answer.content_type.empty()) out.setContentType(answer.content_type);
    out.sendBuffer(answer.body.data(), answer.body.size());
  }
  if (answer.close && !request.body_read()) LingerBeforeClose(exchange.request);
}

// Serves one request: the one place its exceptions are caught. With an exchange, the answer is
// written to it (or the connection taken over) and nullopt returned; without, it is returned.
std::optional<Response> Run(Endpoint& endpoint, Request& request, Exchange* exchange) {
  std::string failure;
  try {
    Response answer = Route(endpoint, request);
    if (exchange != nullptr && answer.takeover) {
      Status taken = answer.takeover(exchange->request, exchange->response);
      if (taken.ok() || exchange->response.sent()) return std::nullopt;
      answer = Response(taken.error());
    }
    Render(answer, endpoint.code_style());
    if (exchange == nullptr) return answer;
    Write(*exchange, request, answer);
    return std::nullopt;
  } catch (const Poco::Exception& e) {
    failure = e.displayText();
  } catch (const std::exception& e) {
    failure = e.what();
  }
  std::cerr << endpoint.name() << ": error: a request failed: " << failure << std::endl;
  Response failed = Response(Error(ErrorCode::kInternal, endpoint.internal_message())).Closing();
  Render(failed, endpoint.code_style());
  if (exchange == nullptr) return failed;
  // A failure while the answer was being sent leaves nothing to tell the client; a failure to
  // send this one ends the connection (HttpsServer).
  if (!exchange->response.sent()) Write(*exchange, request, failed);
  return std::nullopt;
}

class Adapter : public Poco::Net::HTTPRequestHandler {
 public:
  explicit Adapter(Endpoint& endpoint) : endpoint_(endpoint) {}

  void handleRequest(Poco::Net::HTTPServerRequest& request,
                     Poco::Net::HTTPServerResponse& response) override {
    Request view(request, request.stream(), request.clientAddress());
    Exchange exchange{request, response};
    Run(endpoint_, view, &exchange);
  }

 private:
  Endpoint& endpoint_;
};

class AdapterFactory : public Poco::Net::HTTPRequestHandlerFactory {
 public:
  explicit AdapterFactory(Endpoint& endpoint) : endpoint_(endpoint) {}
  Poco::Net::HTTPRequestHandler* createRequestHandler(
      const Poco::Net::HTTPServerRequest&) override {
    return new Adapter(endpoint_);
  }

 private:
  Endpoint& endpoint_;
};

}  // namespace

Response Answer(Endpoint& endpoint, Request& request) { return *Run(endpoint, request, nullptr); }

Poco::Net::HTTPRequestHandlerFactory::Ptr EndpointHandlerFactory(Endpoint& endpoint) {
  return new AdapterFactory(endpoint);
}

}  // namespace strongroom::http
