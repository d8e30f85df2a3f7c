// What Strongroom's HTTPS listeners (kmsd's protocol listener, cored) share on top of Poco's
// HTTPServer: JSON answers and errors, bounded reading of request bodies, and starting a server on
// a TLS socket.
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

namespace Poco {
class ThreadPool;
namespace Net {
class HTTPServer;
}
}  // namespace Poco

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
std::optional<std::string> FramingProblem(const Poco::Net::HTTPServerRequest& request);

// How long a connection closed after a refusal still reads what its client sends (at most
// kMaxDrainBytes), so that the close does not reset the connection before the answer is read.
inline constexpr int kLingerMs = 500;

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

struct HttpsServerOptions {
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 0;  // 0: any free port
  std::size_t max_threads = 64;   // connections served at once (one thread each)
  std::chrono::seconds keep_alive_timeout{15};
  std::chrono::seconds io_timeout{30};
  std::string server_name;
};

// An HTTPServer on a TLS socket with its own thread pool.
class HttpsServer {
 public:
  // Binds and starts serving; UNAVAILABLE naming the address when it cannot listen.
  static Result<std::unique_ptr<HttpsServer>> Start(
      const HttpsServerOptions& options, Poco::Net::Context::Ptr context,
      Poco::Net::HTTPRequestHandlerFactory::Ptr factory);
  ~HttpsServer();  // Stop()s

  std::uint16_t port() const { return port_; }
  // Stops accepting new connections; connections already open are served on.
  void StopAccepting();
  // Stops accepting, waits for every connection's request in flight, joins the threads.
  // Idempotent.
  void Stop();

 private:
  HttpsServer(std::unique_ptr<Poco::ThreadPool> pool, std::unique_ptr<Poco::Net::HTTPServer> server,
              std::uint16_t port);
  std::unique_ptr<Poco::ThreadPool> pool_;
  std::unique_ptr<Poco::Net::HTTPServer> server_;
  std::uint16_t port_;
  bool stopped_ = false;
};

}  // namespace strongroom::http

#endif  // STRONGROOM_COMMON_HTTP_SUPPORT_H_
