// Reads the frames a WebSocket client sends to the core (GET /v1/events, and kmsd's relay
// connections), held to RFC 6455 section 5.
//
// Poco's WebSocket::receiveFrame accepts an unmasked client frame (it never reports the mask bit),
// and passes reserved bits and opcodes on as flags for the caller to notice. This reader parses
// the frame header itself and refuses, as a protocol error (close status 1002):
//   - any of RSV1-3 set (no extension is ever negotiated);
//   - a frame without the MASK bit (a client MUST mask every frame);
//   - an opcode other than continuation, text, binary, close, ping and pong;
//   - a control frame (close, ping, pong) that is fragmented (no FIN) or carries more than
//     125 bytes, and a close frame with a 1-byte body;
//   - a length not in its shortest form, or a 64-bit length with the top bit set;
//   - a continuation frame outside a fragmented message, or a new text or binary frame inside one.
// A payload longer than `max_payload` is refused as too big (1009), before any of it is read.
//
// It reads the very bytes Poco's receiveFrame would have read (the connection after the
// handshake, TLS decrypted, with whatever the handshake's HTTP session had buffered), so it takes
// Poco's place for receiving; sending, timeouts and closing stay Poco's. Peeking at the header
// beneath Poco is no option: over TLS the socket holds ciphertext, and bytes already buffered by
// Poco would be missed.
//
// Not thread-safe: one reader per connection, used by the thread that owns its receive side.
#ifndef STRONGROOM_CORE_WEBSOCKET_FRAME_READER_H_
#define STRONGROOM_CORE_WEBSOCKET_FRAME_READER_H_

#include <Poco/Net/WebSocket.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "strongroom/common/error.h"

namespace strongroom::core {

inline constexpr std::size_t kMaxControlFramePayload = 125;

struct ClientFrame {
  int flags = 0;        // FIN and the opcode, as Poco's flags (RSV bits are always clear)
  std::string payload;  // unmasked
  int opcode() const { return flags & Poco::Net::WebSocket::FRAME_OP_BITMASK; }
  bool fin() const { return (flags & Poco::Net::WebSocket::FRAME_FLAG_FIN) != 0; }
};

class WebSocketFrameReader {
 public:
  // Reads exactly `length` bytes into `buffer` and returns `length`, or fewer when the connection
  // ended; timeouts and socket failures throw, as the socket's own reads do.
  using ReadExactly = std::function<int(char* buffer, int length)>;

  WebSocketFrameReader(Poco::Net::WebSocket& socket, std::size_t max_payload);
  WebSocketFrameReader(ReadExactly read, std::size_t max_payload);

  // The next frame. Errors: kInvalidArgument, the peer broke the protocol (close with 1002; the
  // message says how); kResourceExhausted, the payload is longer than max_payload (close with
  // 1009); kUnavailable, the connection ended before or inside a frame.
  Result<ClientFrame> Next();

  // The close status that answers an error of Next() (1002 or 1009), 0 for a connection that
  // ended.
  static std::uint16_t CloseStatusFor(const Error& error);

 private:
  ReadExactly read_;
  const std::size_t max_payload_;
  bool in_message_ = false;  // a fragmented text or binary message is open
};

// Answers a frame Next() refused: a close frame with `status` and a short reason, then closes the
// connection. Never throws (the peer may be gone).
void CloseWebSocket(Poco::Net::WebSocket& socket, std::uint16_t status, const std::string& reason);

}  // namespace strongroom::core

#endif  // STRONGROOM_CORE_WEBSOCKET_FRAME_READER_H_
