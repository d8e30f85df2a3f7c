// One HTTP edge for every Strongroom listener (kmsd's protocol and operations listeners, cored):
// a request as a handler sees it (Request, no socket), the answer as a value (Response), a route
// table (Routes: method and path pattern -> handler), a listener's handlers behind one interface
// (Endpoint), and the one adapter that runs an Endpoint under Poco (Answer,
// EndpointHandlerFactory): the only place a request's exception is caught, and the one mapping from
// an Error to an HTTP status and a JSON {"code", "message"}.
//
// Around every request the adapter, in this order:
//   - refuses ambiguous body framing: 400 bad_framing, the connection closed (http_support.h);
//   - refuses a request target that is not a valid URI (400);
//   - runs the endpoint; an exception is logged as one line and answered 500 "internal" with the
//     endpoint's own message, never the exception's (it may name internals), the connection
//     closed;
//   - writes an error answer as {"code", "message"}: the code is the error's reason
//     ("key_rotation_required") or its ErrorCode's name in the endpoint's style ("not_found", or
//     "NOT_FOUND" for the operations API), the status HttpStatusFor(code) (error.h), with
//     Retry-After: 1 on a 503;
//   - reads and drops what the handler left of the request body (at most kMaxDrainBytes, beyond
//     which the connection closes), so the connection can serve the next request; but an answer
//     that closes the connection is sent at once, before the rest of the body, and the adapter
//     then lingers (http_support.h);
//   - sends every answer with Cache-Control: no-store;
//   - hands an answer that takes the connection over (a WebSocket upgrade) Poco's request and
//     response instead.
//
// So a handler is a small function of a Request, and a listener's handlers are tested without a
// socket: make a Request from a Poco::Net::HTTPRequest and a string stream and call Answer.
#ifndef STRONGROOM_COMMON_HTTP_ROUTER_H_
#define STRONGROOM_COMMON_HTTP_ROUTER_H_

#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/SocketAddress.h>

#include <cstdint>
#include <functional>
#include <istream>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "strongroom/common/error.h"

namespace strongroom::http {

class RouteTable;

// One request: its head (method, target, header fields) and a reader of its body.
class Request {
 public:
  // `head` holds the request line and header fields (Poco's server request, or an HTTPRequest a
  // test fills in); `body` the bytes after the head, read only as far as the head frames them.
  // Both must outlive the Request.
  Request(const Poco::Net::HTTPRequest& head, std::istream& body,
          Poco::Net::SocketAddress peer = {});
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;

  const std::string& method() const { return head_.getMethod(); }
  // The path's segments, percent-decoded, empty ones left out ("/v1//a/" is {"v1", "a"}), as
  // Poco::URI::getPathSegments gives them.
  const std::vector<std::string>& segments() const { return segments_; }
  // The query string as sent (not decoded), without the '?'.
  const std::string& query() const { return query_; }
  // False when the target is not a URI (a bad percent escape): the adapter answers 400.
  bool valid_target() const { return valid_target_; }
  // What the {name} of the matched route's pattern matched; empty when it has none.
  const std::string& param(std::string_view name) const;
  // A header field's value, or empty.
  std::string header(const std::string& name) const { return head_.get(name, std::string()); }
  // The Content-Type without parameters, lower case ("application/json").
  std::string media_type() const;
  const Poco::Net::HTTPRequest& head() const { return head_; }
  const Poco::Net::SocketAddress& peer() const { return peer_; }

  // Whether there is a body: chunked, or a Content-Length above 0. Without either there is none
  // (and the body stream is never read: it would wait for the client to close).
  bool has_body() const;
  // The body if it is at most `max` bytes (read at its size, never more than one byte past
  // `max`); nullopt when it is larger, or declared larger (then nothing is read).
  std::optional<std::string> ReadBody(std::size_t max);
  // Reads up to `size` bytes of the body; 0 at its end, or when it failed.
  std::size_t Read(char* buffer, std::size_t size);
  // Whether the body has been read to its end (true when there is none).
  bool body_read() const { return body_read_; }

 private:
  friend class RouteTable;

  const Poco::Net::HTTPRequest& head_;
  std::istream& body_;
  Poco::Net::SocketAddress peer_;
  std::vector<std::string> segments_;
  std::string query_;
  bool valid_target_ = true;
  bool body_read_ = false;
  std::vector<std::pair<std::string_view, const std::string*>> params_;
};

// Takes a connection over (a WebSocket upgrade): runs with Poco's request and response for as
// long as it keeps the connection. An error it returns before answering is answered as any.
using Takeover =
    std::function<Status(Poco::Net::HTTPServerRequest&, Poco::Net::HTTPServerResponse&)>;

// The answer to one request, as a value.
struct Response {
  Response() = default;
  // The error's answer: HttpStatusFor its code (Retry-After: 1 on 503); the adapter writes it as
  // {"code", "message"}.
  Response(Error failure);  // NOLINT(google-explicit-constructor): handlers return errors

  // `json` with `status`.
  static Response Json(int status, std::string json);
  // {"code": code, "message": message} with `status`, for a refusal the API names itself
  // ("media_type", "rate_limited"): the code is written as it is given.
  static Response Refusal(int status, std::string code, std::string message);
  // An answer that takes the connection over (see Takeover).
  static Response TakeOver(Takeover takeover);

  // Adds a header field.
  Response& With(std::string name, std::string value);
  // Closes the connection after this answer, which is sent before the rest of the body is read.
  Response& Closing();
  // A header field's value, or empty.
  std::string header(std::string_view name) const;

  int status = 200;
  std::string content_type;  // none when empty
  std::string body;
  std::string file;  // when set, this file's content is the body
  std::vector<std::pair<std::string, std::string>> headers;
  bool close = false;
  // An error answer: written by the adapter as {"code", "message"} in the endpoint's style, or
  // with `code` as it is when that is set.
  std::optional<Error> error;
  std::string code;
  Takeover takeover;
};

// A value, or the answer that refuses the request. ok()/value()/error() as Result's, so
// SR_ASSIGN_OR_RETURN in a handler returns the refusal.
template <typename T>
class OrAnswer {
 public:
  OrAnswer(T value) : v_(std::move(value)) {}                // NOLINT
  OrAnswer(Response refusal) : v_(std::move(refusal)) {}     // NOLINT
  OrAnswer(Error error) : v_(Response(std::move(error))) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  T& operator*() & { return value(); }
  // The refusal.
  const Response& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Response> v_;
};

// The body of `request`, which must be sent as Content-Type `media_type` (else 415 media_type:
// "<noun> is sent as Content-Type: <media_type>") and be at most `max` bytes (else 413
// `size_code`: "<noun> is at most <max> bytes", answered at once, the connection closed).
OrAnswer<std::string> ReadBodyAs(Request& request, std::string_view media_type, std::size_t max,
                                 std::string_view noun, std::string_view size_code);

// How an endpoint names an ErrorCode in its answers.
enum class CodeStyle {
  kSnakeCase,  // "not_found": the KMS protocol listener, cored
  kUpperCase,  // "NOT_FOUND": the operations API
};

// The code an error is answered with: its reason's name when it has one, else its code's name in
// `style`.
std::string ErrorCodeText(const Error& error, CodeStyle style);

// The paths and methods a listener serves, matched to the index of their handler; what Routes is
// built on. A pattern is segments, each literal or a {name} that matches any one segment
// ("/v1/conversations/{id}/files/{file}"). Not changed while it serves.
class RouteTable {
 public:
  std::size_t Add(std::string method, std::string_view pattern);

  struct Match {
    std::optional<std::size_t> route;  // the first route with the request's path and method
    std::string allow;                 // otherwise, the methods of those with its path
  };
  // Sets the request's params when a route matches.
  Match Find(Request& request) const;
  // Whether a route has the request's path, whatever its method.
  bool HasPath(const Request& request) const;

 private:
  struct Segment {
    std::string text;
    bool capture = false;
  };
  struct Route {
    std::string method;
    std::vector<Segment> pattern;
  };
  static bool Matches(const Route& route, const std::vector<std::string>& segments);
  std::vector<Route> routes_;
};

// A route table of handlers that take a request and `Context` (what the listener worked out
// before routing, such as the authenticated caller). The first route whose pattern and method
// match serves; a path that routes have with other methods only is 405 method_not_allowed with
// Allow listing theirs (in the order added), any other 404 with `not_found`'s message.
template <typename... Context>
class Routes {
 public:
  using Handler = std::function<Response(Request&, Context...)>;

  explicit Routes(std::string not_found) : not_found_(std::move(not_found)) {}

  Routes& Add(std::string method, std::string_view pattern, Handler handler) {
    table_.Add(std::move(method), pattern);
    handlers_.push_back(std::move(handler));
    return *this;
  }

  bool HasPath(const Request& request) const { return table_.HasPath(request); }

  Response Dispatch(Request& request, Context... context) const {
    RouteTable::Match match = table_.Find(request);
    if (match.route) return handlers_[*match.route](request, context...);
    if (match.allow.empty()) return Error(ErrorCode::kNotFound, not_found_);
    return Response::Refusal(405, "method_not_allowed", "use " + match.allow)
        .With("Allow", match.allow);
  }

 private:
  std::string not_found_;
  RouteTable table_;
  std::vector<Handler> handlers_;
};

// What answers one listener's requests, without a socket: its handlers, how it names its errors,
// what its log lines and its 500 say.
class Endpoint {
 public:
  virtual ~Endpoint() = default;

  // The answer to one request; called by many threads at once. May throw: Answer catches.
  virtual Response Serve(Request& request) = 0;

  const std::string& name() const { return name_; }
  const std::string& internal_message() const { return internal_message_; }
  CodeStyle code_style() const { return code_style_; }

 protected:
  // `name` begins its log lines ("cored"); `internal_message` is what a 500 says ("the core failed
  // to process the request").
  Endpoint(std::string name, std::string internal_message, CodeStyle code_style)
      : name_(std::move(name)),
        internal_message_(std::move(internal_message)),
        code_style_(code_style) {}

 private:
  const std::string name_;
  const std::string internal_message_;
  const CodeStyle code_style_;
};

// The endpoint's answer to `request` as the adapter makes it (see the top of this file), without a
// socket: an answer that would take the connection over is returned as it is. Never throws.
Response Answer(Endpoint& endpoint, Request& request);

// The adapter under Poco (HttpsServer::Start takes it): each request is answered by `endpoint`,
// which must outlive the server.
Poco::Net::HTTPRequestHandlerFactory::Ptr EndpointHandlerFactory(Endpoint& endpoint);

}  // namespace strongroom::http

#endif  // STRONGROOM_COMMON_HTTP_ROUTER_H_
