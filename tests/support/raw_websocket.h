// A WebSocket client over TLS to 127.0.0.1 that sends whatever bytes a test gives it: frames no
// well-behaved client (Poco's masks every frame and sets no reserved bit) would send. It does the
// opening handshake itself and reads the server's frames (unmasked) raw.
#ifndef STRONGROOM_TESTS_SUPPORT_RAW_WEBSOCKET_H_
#define STRONGROOM_TESTS_SUPPORT_RAW_WEBSOCKET_H_

#include <Poco/Exception.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/SecureStreamSocket.h>
#include <Poco/Net/SocketAddress.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace strongroom::testing {

class RawWebSocket {
 public:
  struct Frame {
    int flags = 0;  // the first header byte: FIN, RSV, opcode
    std::string payload;
    int opcode() const { return flags & 0x0f; }
    // A close frame's status (0 when its body has none).
    int close_status() const {
      return payload.size() >= 2 ? (static_cast<unsigned char>(payload[0]) << 8) |
                                       static_cast<unsigned char>(payload[1])
                                 : 0;
    }
  };

  // Connects to 127.0.0.1:port and upgrades GET `path` with `headers`; null with `error` set when
  // the server does not answer 101.
  static std::unique_ptr<RawWebSocket> Open(std::uint16_t port, Poco::Net::Context::Ptr context,
                                            const std::string& path,
                                            const std::map<std::string, std::string>& headers,
                                            std::string* error) {
    auto raw = std::unique_ptr<RawWebSocket>(new RawWebSocket);
    try {
      raw->socket_ = Poco::Net::SecureStreamSocket(Poco::Net::SocketAddress("127.0.0.1", port),
                                                   "127.0.0.1", context);
      std::string request = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                            "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                            "Sec-WebSocket-Version: 13\r\n";
      for (const auto& [name, value] : headers) request += name + ": " + value + "\r\n";
      raw->Send(request + "\r\n");
      raw->socket_.setReceiveTimeout(Poco::Timespan(60, 0));
      std::size_t end;
      while ((end = raw->buffer_.find("\r\n\r\n")) == std::string::npos) {
        if (!raw->Fill()) {
          *error = "the server closed the connection during the handshake";
          return nullptr;
        }
      }
      const std::string head = raw->buffer_.substr(0, end);
      raw->buffer_.erase(0, end + 4);
      if (head.rfind("HTTP/1.1 101", 0) != 0) {
        *error = "no upgrade: " + head.substr(0, head.find("\r\n"));
        return nullptr;
      }
    } catch (const Poco::Exception& e) {
      *error = e.displayText();
      return nullptr;
    }
    return raw;
  }

  // One frame as a client would send it, with `first_byte` as given (FIN, RSV bits, opcode),
  // masked with a fixed key or not masked at all.
  static std::string MakeFrame(std::uint8_t first_byte, const std::string& payload, bool masked) {
    std::string frame(1, static_cast<char>(first_byte));
    const std::uint8_t mask_bit = masked ? 0x80 : 0x00;
    if (payload.size() < 126) {
      frame += static_cast<char>(mask_bit | payload.size());
    } else {
      frame += static_cast<char>(mask_bit | 126);
      frame += static_cast<char>(payload.size() >> 8);
      frame += static_cast<char>(payload.size() & 0xff);
    }
    const char key[4] = {0x37, static_cast<char>(0xfa), 0x21, 0x3d};
    if (masked) frame.append(key, 4);
    for (std::size_t i = 0; i < payload.size(); ++i) {
      frame += masked ? static_cast<char>(payload[i] ^ key[i % 4]) : payload[i];
    }
    return frame;
  }

  void Send(const std::string& bytes) {
    std::size_t sent = 0;
    while (sent < bytes.size()) {
      const int n = socket_.sendBytes(bytes.data() + sent, static_cast<int>(bytes.size() - sent));
      if (n <= 0) throw Poco::IOException("the connection closed while sending");
      sent += static_cast<std::size_t>(n);
    }
  }

  // The server's next frame; nullopt when the connection ended or none came within `patience`
  // (ended() tells which).
  std::optional<Frame> Read(std::chrono::seconds patience) {
    try {
      socket_.setReceiveTimeout(Poco::Timespan(patience.count(), 0));
      std::string header;
      if (!Take(2, header)) return std::nullopt;
      Frame frame;
      frame.flags = static_cast<unsigned char>(header[0]);
      std::uint64_t length = static_cast<unsigned char>(header[1]) & 0x7f;
      const int extended = length == 126 ? 2 : length == 127 ? 8 : 0;
      if (extended > 0) {
        std::string bytes;
        if (!Take(extended, bytes)) return std::nullopt;
        length = 0;
        for (char c : bytes) length = (length << 8) | static_cast<unsigned char>(c);
      }
      if (!Take(static_cast<std::size_t>(length), frame.payload)) return std::nullopt;
      return frame;
    } catch (const Poco::TimeoutException&) {
      return std::nullopt;
    } catch (const Poco::Exception&) {
      ended_ = true;  // reset by the peer: ended all the same
      return std::nullopt;
    }
  }

  // The first close frame within `patience`, skipping whatever comes before it (pings, events).
  std::optional<Frame> ReadClose(std::chrono::seconds patience) {
    const auto deadline = std::chrono::steady_clock::now() + patience;
    while (std::chrono::steady_clock::now() < deadline) {
      const auto left = std::chrono::duration_cast<std::chrono::seconds>(
          deadline - std::chrono::steady_clock::now());
      std::optional<Frame> frame = Read(std::max(left, std::chrono::seconds(1)));
      if (!frame) return std::nullopt;
      if (frame->opcode() == 0x8) return frame;
    }
    return std::nullopt;
  }

  // Whether the server closed the connection within `patience` (reading, and dropping, anything
  // it still sends).
  bool EndsWithin(std::chrono::seconds patience) {
    const auto deadline = std::chrono::steady_clock::now() + patience;
    while (!ended_ && std::chrono::steady_clock::now() < deadline) {
      try {
        socket_.setReceiveTimeout(Poco::Timespan(1, 0));
        buffer_.clear();
        if (!Fill()) return true;
      } catch (const Poco::TimeoutException&) {
      } catch (const Poco::Exception&) {
        ended_ = true;
      }
    }
    return ended_;
  }

  bool ended() const { return ended_; }

 private:
  RawWebSocket() = default;

  // Reads more bytes into buffer_; false at the end of the stream.
  bool Fill() {
    char chunk[4096];
    const int n = socket_.receiveBytes(chunk, sizeof chunk);
    if (n <= 0) {
      ended_ = true;
      return false;
    }
    buffer_.append(chunk, static_cast<std::size_t>(n));
    return true;
  }

  bool Take(std::size_t n, std::string& out) {
    while (buffer_.size() < n) {
      if (!Fill()) return false;
    }
    out = buffer_.substr(0, n);
    buffer_.erase(0, n);
    return true;
  }

  Poco::Net::SecureStreamSocket socket_;
  std::string buffer_;
  bool ended_ = false;
};

}  // namespace strongroom::testing

#endif  // STRONGROOM_TESTS_SUPPORT_RAW_WEBSOCKET_H_
