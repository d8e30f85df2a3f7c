#include "strongroom/common/http_support.h"

#include <Poco/Exception.h>
#include <Poco/JSON/Object.h>
#include <Poco/Net/HTTPServerRequestImpl.h>
#include <Poco/Net/StreamSocket.h>
#include <Poco/String.h>

#include <algorithm>
#include <chrono>
#include <sstream>

namespace strongroom::http {

using Poco::Net::HTTPResponse;
using Poco::Net::HTTPServerRequest;
using Poco::Net::HTTPServerResponse;

void SendJson(HTTPServerResponse& response, int status, const std::string& body) {
  response.setStatusAndReason(static_cast<HTTPResponse::HTTPStatus>(status));
  response.setContentType("application/json");
  response.set("Cache-Control", "no-store");
  response.sendBuffer(body.data(), body.size());
}

void SendError(HTTPServerResponse& response, int status, const std::string& code,
               const std::string& message) {
  Poco::JSON::Object error;
  error.set("code", code);
  error.set("message", message);
  std::ostringstream out;
  error.stringify(out);
  SendJson(response, status, out.str());
}

std::optional<std::string> FramingProblem(const Poco::Net::HTTPRequest& request) {
  int lengths = 0;
  bool transfer_encoding = false;
  for (const auto& [name, value] : request) {
    if (Poco::icompare(name, "Content-Length") == 0) ++lengths;
    if (Poco::icompare(name, "Transfer-Encoding") == 0) transfer_encoding = true;
  }
  if (lengths > 1) return "the request has more than one Content-Length header";
  if (lengths == 1 && transfer_encoding) {
    return "the request has both Content-Length and Transfer-Encoding";
  }
  return std::nullopt;
}

// Closing with unread input would make TCP reset the connection, and the client could lose the
// answer; so what arrives within a moment is read and dropped first.
void LingerBeforeClose(HTTPServerRequest& request) {
  try {
    auto& impl = dynamic_cast<Poco::Net::HTTPServerRequestImpl&>(request);
    Poco::Net::StreamSocket& socket = impl.socket();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kLingerMs);
    char buffer[16 * 1024];
    std::size_t total = 0;
    while (total < kMaxDrainBytes) {
      const auto left = std::chrono::duration_cast<std::chrono::microseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 ||
          !socket.poll(Poco::Timespan(left.count()), Poco::Net::Socket::SELECT_READ)) {
        break;
      }
      const int n = socket.receiveBytes(buffer, sizeof buffer);
      if (n <= 0) break;
      total += static_cast<std::size_t>(n);
    }
  } catch (const std::exception&) {
    // the connection is going anyway
  }
}

void RefuseFraming(HTTPServerRequest& request, HTTPServerResponse& response,
                   const std::string& problem) {
  response.setKeepAlive(false);
  SendError(response, 400, "bad_framing", problem);
  LingerBeforeClose(request);
}

void RefuseBody(HTTPServerRequest& request, HTTPServerResponse& response, int status,
                const std::string& code, const std::string& message) {
  response.setKeepAlive(false);
  SendError(response, status, code, message);
  LingerBeforeClose(request);
}

bool HasBody(HTTPServerRequest& request) {
  return request.getChunkedTransferEncoding() ||
         (request.hasContentLength() && request.getContentLength64() > 0);
}

void Discard(HTTPServerRequest& request, HTTPServerResponse& response) {
  if (!HasBody(request)) return;
  std::istream& in = request.stream();
  char buffer[16 * 1024];
  std::size_t total = 0;
  while (in && total <= kMaxDrainBytes) {
    in.read(buffer, sizeof buffer);
    total += static_cast<std::size_t>(in.gcount());
  }
  if (total > kMaxDrainBytes || !in.eof()) response.setKeepAlive(false);
}

std::string MediaType(const HTTPServerRequest& request) {
  const std::string& type = request.getContentType();
  return Poco::toLower(Poco::trim(type.substr(0, type.find(';'))));
}

std::optional<std::string> ReadBody(HTTPServerRequest& request, std::size_t max) {
  if (!HasBody(request)) return std::string();
  if (request.hasContentLength() && request.getContentLength64() > static_cast<Poco::Int64>(max)) {
    return std::nullopt;
  }
  std::string body;
  if (request.hasContentLength()) {
    body.reserve(static_cast<std::size_t>(request.getContentLength64()));
  }
  std::istream& in = request.stream();
  char chunk[16 * 1024];
  while (in && body.size() <= max) {
    const std::size_t want = std::min(sizeof chunk, max + 1 - body.size());
    in.read(chunk, static_cast<std::streamsize>(want));
    body.append(chunk, static_cast<std::size_t>(in.gcount()));
  }
  if (body.size() > max) return std::nullopt;
  return body;
}

}  // namespace strongroom::http
