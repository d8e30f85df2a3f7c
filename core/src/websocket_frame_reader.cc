#include "websocket_frame_reader.h"

#include <Poco/Net/WebSocketImpl.h>

#include <limits>

namespace strongroom::core {
namespace {

using Poco::Net::WebSocket;

constexpr int kFin = 0x80;
constexpr int kReservedBits = 0x70;  // RSV1-3
constexpr int kMaskBit = 0x80;
constexpr std::uint16_t kProtocolError = WebSocket::WS_PROTOCOL_ERROR;
constexpr std::uint16_t kTooBig = WebSocket::WS_PAYLOAD_TOO_BIG;

// WebSocketImpl reads the connection's bytes (its buffer, then the socket) in receiveNBytes, a
// protected member for derived classes. A pointer to it, formed through a derived class as the
// language allows, calls it on the impl of any Poco WebSocket; no object of this class exists.
struct ImplBytes : Poco::Net::WebSocketImpl {
  static int Read(Poco::Net::WebSocketImpl& impl, char* buffer, int length) {
    return (impl.*(&ImplBytes::receiveNBytes))(buffer, length);
  }
};

Error Violation(const std::string& what) {
  return Error(ErrorCode::kInvalidArgument, "WebSocket protocol error: " + what);
}

Error Ended() { return Error(ErrorCode::kUnavailable, "the WebSocket connection ended"); }

bool IsControl(int opcode) { return (opcode & 0x08) != 0; }

bool IsKnown(int opcode) {
  switch (opcode) {
    case WebSocket::FRAME_OP_CONT:
    case WebSocket::FRAME_OP_TEXT:
    case WebSocket::FRAME_OP_BINARY:
    case WebSocket::FRAME_OP_CLOSE:
    case WebSocket::FRAME_OP_PING:
    case WebSocket::FRAME_OP_PONG:
      return true;
    default:
      return false;
  }
}

}  // namespace

WebSocketFrameReader::WebSocketFrameReader(Poco::Net::WebSocket& socket, std::size_t max_payload)
    : WebSocketFrameReader(
          [impl = static_cast<Poco::Net::WebSocketImpl*>(socket.impl())](char* buffer, int length) {
            return ImplBytes::Read(*impl, buffer, length);
          },
          max_payload) {}

WebSocketFrameReader::WebSocketFrameReader(ReadExactly read, std::size_t max_payload)
    : read_(std::move(read)), max_payload_(max_payload) {}

Result<ClientFrame> WebSocketFrameReader::Next() {
  auto read = [&](char* buffer, int length) { return read_(buffer, length) == length; };
  unsigned char header[2];
  if (!read(reinterpret_cast<char*>(header), 2)) return Ended();
  const int opcode = header[0] & WebSocket::FRAME_OP_BITMASK;
  if ((header[0] & kReservedBits) != 0) {
    return Violation("a reserved bit (RSV1-3) is set, and no extension was negotiated");
  }
  if (!IsKnown(opcode)) return Violation("opcode " + std::to_string(opcode) + " is reserved");
  if ((header[1] & kMaskBit) == 0) return Violation("a client frame is not masked");
  const bool fin = (header[0] & kFin) != 0;
  std::uint64_t length = header[1] & 0x7f;
  if (IsControl(opcode)) {
    if (!fin) return Violation("a control frame is fragmented");
    if (length > kMaxControlFramePayload) {
      return Violation("a control frame carries more than 125 bytes");
    }
    if (opcode == WebSocket::FRAME_OP_CLOSE && length == 1) {
      return Violation("a close frame's body is one byte");
    }
  } else if (opcode == WebSocket::FRAME_OP_CONT) {
    if (!in_message_) return Violation("a continuation frame outside a fragmented message");
  } else if (in_message_) {
    return Violation("a new message inside a fragmented one");
  }
  if (length == 126) {
    unsigned char extended[2];
    if (!read(reinterpret_cast<char*>(extended), 2)) return Ended();
    length = (std::uint64_t{extended[0]} << 8) | extended[1];
    if (length < 126) return Violation("a length is not in its shortest form");
  } else if (length == 127) {
    unsigned char extended[8];
    if (!read(reinterpret_cast<char*>(extended), 8)) return Ended();
    length = 0;
    for (unsigned char byte : extended) length = (length << 8) | byte;
    if ((length >> 63) != 0) return Violation("a 64-bit length has its top bit set");
    if (length <= 0xffff) return Violation("a length is not in its shortest form");
  }
  if (length > max_payload_ ||
      length > static_cast<std::uint64_t>(std::numeric_limits<int>::max())) {
    return Error(ErrorCode::kResourceExhausted, "a WebSocket frame of " + std::to_string(length) +
                                                    " bytes; at most " +
                                                    std::to_string(max_payload_) + " are accepted");
  }
  unsigned char mask[4];
  if (!read(reinterpret_cast<char*>(mask), 4)) return Ended();
  ClientFrame frame;
  frame.flags = header[0];
  frame.payload.resize(static_cast<std::size_t>(length));
  if (length > 0 && !read(frame.payload.data(), static_cast<int>(length))) return Ended();
  for (std::size_t i = 0; i < frame.payload.size(); ++i) {
    frame.payload[i] = static_cast<char>(frame.payload[i] ^ static_cast<char>(mask[i % 4]));
  }
  if (!IsControl(opcode)) in_message_ = !fin;
  return frame;
}

std::uint16_t WebSocketFrameReader::CloseStatusFor(const Error& error) {
  switch (error.code()) {
    case ErrorCode::kInvalidArgument:
      return kProtocolError;
    case ErrorCode::kResourceExhausted:
      return kTooBig;
    default:
      return 0;
  }
}

void CloseWebSocket(Poco::Net::WebSocket& socket, std::uint16_t status, const std::string& reason) {
  try {
    socket.setSendTimeout(Poco::Timespan(1, 0));
    // A close frame is a control frame: 2 bytes of status and at most 123 of reason.
    socket.shutdown(status, reason.substr(0, kMaxControlFramePayload - 2));
  } catch (...) {
    // The peer is gone already; closing is all that is left.
  }
  try {
    socket.close();
  } catch (...) {
  }
}

}  // namespace strongroom::core
