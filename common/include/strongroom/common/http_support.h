// What Strongroom's HTTPS listeners (kmsd's protocol and operations listeners, cored) share on top
// of Poco's request and response classes: JSON answers and errors, bounded reading of request
// bodies. The listener itself (the edge that accepts, handshakes and reads request heads) is
// https_server.h.
//
// Errors are JSON {"code", "message"} and never carry a body, a token or content. Bodies are read
// at their size and never past a limit; a request without Content-Length or chunked encoding has
// no body (Poco's stream would otherwise wait for the client to close the connection).
#ifndef STRONGROOM_COMMON_HTTP_SUPPORT_H_
#define STRONGROOM_COMMON_HTTP_SUPPORT_H_

#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "strongroom/common/error.h"
#include "strongroom/common/https_server.h"

namespace strongroom::http {

// A body larger than its limit but at most this is read and dropped so that the client sees the
// error on a connection that stays usable; a larger one closes the connection.
inline constexpr std::size_t kMaxDrainBytes = 4 * 1024 * 1024;

// Sends `body` (JSON) with `status` and Cache-Control: no-store.
void SendJson(Poco::Net::HTTPServerResponse& response, int status, const std::string& body);

// Sends {"code": code, "message": message} with `status`.
void SendError(Poco::Net::HTTPServerResponse& response, int status, const std::string& code,
               const std::string& message);

// What is wrong with how the request frames its body, or nullopt: two Content-Length headers, or
// one beside Transfer-Encoding. Proxies and servers that disagree on which one counts are where
// request smuggling starts (RFC 9112, section 6.3), so such a request is refused whole.
std::optional<std::string> FramingProblem(const Poco::Net::HTTPRequest& request);

// How long a connection closed after a refusal still reads what its client sends (at most
// kMaxDrainBytes), so that the close does not reset the connection before the answer is read.
inline constexpr int kLingerMs = 500;

// After an answer sent with keep-alive off, before the connection closes: what the client still
// sends within kLingerMs is read and dropped (at most kMaxDrainBytes), so that the close does not
// make TCP reset the connection before the client reads the answer.
void LingerBeforeClose(Poco::Net::HTTPServerRequest& request);

// Answers a request FramingProblem refused: 400 {"code": "bad_framing"}, then lingers (kLingerMs)
// and closes the connection: its body's length is not known, so nothing after it can be read as
// the next request.
void RefuseFraming(Poco::Net::HTTPServerRequest& request, Poco::Net::HTTPServerResponse& response,
                   const std::string& problem);

// Answers a body over its limit at once (`status`, {"code", "message"}), then lingers and closes:
// never a wait for the rest of a large or slow body before the answer.
void RefuseBody(Poco::Net::HTTPServerRequest& request, Poco::Net::HTTPServerResponse& response,
                int status, const std::string& code, const std::string& message);

// Whether the request has a body: chunked, or a Content-Length above 0.
bool HasBody(Poco::Net::HTTPServerRequest& request);

// Reads the rest of the body, up to kMaxDrainBytes, and drops it; when the body is longer the
// response will close the connection instead of serving another request on it.
void Discard(Poco::Net::HTTPServerRequest& request, Poco::Net::HTTPServerResponse& response);

// The Content-Type without parameters, lower case ("application/json").
std::string MediaType(const Poco::Net::HTTPServerRequest& request);

// The body if it is at most `max` bytes (read at its size, never more than one byte past `max`);
// nullopt when it is larger.
std::optional<std::string> ReadBody(Poco::Net::HTTPServerRequest& request, std::size_t max);

}  // namespace strongroom::http

#endif  // STRONGROOM_COMMON_HTTP_SUPPORT_H_
