// The core's reader of client WebSocket frames (issue 11): every frame RFC 6455 says a server
// must fail the connection on is refused, and proper frames, fragmented or not, come through.
#include "websocket_frame_reader.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace strongroom::core {
namespace {

constexpr char kKey[4] = {0x11, 0x22, 0x33, 0x44};

// A frame with the given first byte, masked unless said otherwise; `length_form` forces the
// 16- or 64-bit length encoding (2 and 8) whatever the payload's size.
std::string Frame(std::uint8_t first, const std::string& payload, bool masked = true,
                  int length_form = 0) {
  std::string out(1, static_cast<char>(first));
  const std::uint8_t mask_bit = masked ? 0x80 : 0;
  const std::uint64_t n = payload.size();
  if (length_form == 8 || (length_form == 0 && n > 0xffff)) {
    out += static_cast<char>(mask_bit | 127);
    for (int shift = 56; shift >= 0; shift -= 8) out += static_cast<char>((n >> shift) & 0xff);
  } else if (length_form == 2 || (length_form == 0 && n >= 126)) {
    out += static_cast<char>(mask_bit | 126);
    out += static_cast<char>(n >> 8);
    out += static_cast<char>(n & 0xff);
  } else {
    out += static_cast<char>(mask_bit | n);
  }
  if (masked) out.append(kKey, 4);
  for (std::size_t i = 0; i < payload.size(); ++i) {
    out += masked ? static_cast<char>(payload[i] ^ kKey[i % 4]) : payload[i];
  }
  return out;
}

// A reader over `bytes`, as a connection that ends after them.
struct Wire {
  explicit Wire(std::string bytes, std::size_t max_payload = 1024)
      : data(std::move(bytes)),
        reader(
            [this](char* buffer, int length) {
              const int n = std::min<int>(length, static_cast<int>(data.size() - at));
              std::memcpy(buffer, data.data() + at, static_cast<std::size_t>(n));
              at += static_cast<std::size_t>(n);
              return n;
            },
            max_payload) {}
  std::string data;
  std::size_t at = 0;
  WebSocketFrameReader reader;
};

// The error of the first frame of `bytes`.
Error Refusal(const std::string& bytes, std::size_t max_payload = 1024) {
  Wire wire(bytes, max_payload);
  Result<ClientFrame> frame = wire.reader.Next();
  EXPECT_FALSE(frame.ok());
  return frame.ok() ? Error(ErrorCode::kInternal, "accepted") : frame.error();
}

void ExpectProtocolError(const std::string& bytes, const std::string& why) {
  const Error error = Refusal(bytes);
  EXPECT_EQ(error.code(), ErrorCode::kInvalidArgument) << error.ToString();
  EXPECT_EQ(WebSocketFrameReader::CloseStatusFor(error), 1002);
  EXPECT_NE(error.message().find(why), std::string::npos) << error.message();
}

TEST(WebSocketFrameReaderTest, MaskedFramesAreUnmaskedAndPassed) {
  Wire wire(Frame(0x81, "hello") + Frame(0x89, "ping!") + Frame(0x82, std::string(300, 'b')) +
            Frame(0x88, std::string("\x03\xe8", 2)));
  auto text = wire.reader.Next();
  ASSERT_TRUE(text.ok()) << text.error().ToString();
  EXPECT_EQ(text->opcode(), 0x1);
  EXPECT_TRUE(text->fin());
  EXPECT_EQ(text->payload, "hello");
  auto ping = wire.reader.Next();
  ASSERT_TRUE(ping.ok());
  EXPECT_EQ(ping->opcode(), 0x9);
  EXPECT_EQ(ping->payload, "ping!");
  auto binary = wire.reader.Next();
  ASSERT_TRUE(binary.ok());
  EXPECT_EQ(binary->payload, std::string(300, 'b'));
  auto close = wire.reader.Next();
  ASSERT_TRUE(close.ok());
  EXPECT_EQ(close->opcode(), 0x8);
  auto end = wire.reader.Next();
  ASSERT_FALSE(end.ok());
  EXPECT_EQ(end.error().code(), ErrorCode::kUnavailable);
  EXPECT_EQ(WebSocketFrameReader::CloseStatusFor(end.error()), 0);
}

TEST(WebSocketFrameReaderTest, AFragmentedMessageWithAPingBetweenItsFragmentsPasses) {
  Wire wire(Frame(0x01, "he") + Frame(0x89, "") + Frame(0x00, "ll") + Frame(0x80, "o") +
            Frame(0x81, "next"));
  for (const char* expected : {"he", "", "ll", "o", "next"}) {
    auto frame = wire.reader.Next();
    ASSERT_TRUE(frame.ok()) << expected << ": " << frame.error().ToString();
    EXPECT_EQ(frame->payload, expected);
  }
}

TEST(WebSocketFrameReaderTest, AnUnmaskedFrameIsAProtocolError) {
  ExpectProtocolError(Frame(0x81, "hello", /*masked=*/false), "not masked");
  ExpectProtocolError(Frame(0x89, "", /*masked=*/false), "not masked");
}

TEST(WebSocketFrameReaderTest, AReservedBitIsAProtocolError) {
  for (int rsv : {0x40, 0x20, 0x10}) {
    ExpectProtocolError(Frame(static_cast<std::uint8_t>(0x81 | rsv), "hello"), "reserved bit");
  }
}

TEST(WebSocketFrameReaderTest, AReservedOpcodeIsAProtocolError) {
  for (int opcode : {0x3, 0x4, 0x5, 0x6, 0x7, 0xb, 0xc, 0xd, 0xe, 0xf}) {
    ExpectProtocolError(Frame(static_cast<std::uint8_t>(0x80 | opcode), "x"), "is reserved");
  }
}

TEST(WebSocketFrameReaderTest, ABadControlFrameIsAProtocolError) {
  ExpectProtocolError(Frame(0x09, "ping"), "fragmented");  // ping without FIN
  ExpectProtocolError(Frame(0x08, ""), "fragmented");
  ExpectProtocolError(Frame(0x89, std::string(126, 'p')), "more than 125 bytes");
  ExpectProtocolError(Frame(0x8a, std::string(200, 'p')), "more than 125 bytes");
  ExpectProtocolError(Frame(0x88, "x"), "one byte");
  // 125 bytes is a control frame's most.
  Wire largest(Frame(0x89, std::string(125, 'p')));
  EXPECT_TRUE(largest.reader.Next().ok());
}

TEST(WebSocketFrameReaderTest, ALengthNotInItsShortestFormIsAProtocolError) {
  ExpectProtocolError(Frame(0x81, "short", true, /*length_form=*/2), "shortest form");
  ExpectProtocolError(Frame(0x81, std::string(300, 'a'), true, /*length_form=*/8), "shortest form");
  std::string top_bit = Frame(0x81, "", true, 8);
  top_bit[2] = static_cast<char>(0x80);
  ExpectProtocolError(top_bit, "top bit");
}

TEST(WebSocketFrameReaderTest, FragmentsOutOfOrderAreAProtocolError) {
  ExpectProtocolError(Frame(0x80, "orphan"), "continuation frame outside");
  Wire wire(Frame(0x01, "part") + Frame(0x81, "another"));
  ASSERT_TRUE(wire.reader.Next().ok());
  auto second = wire.reader.Next();
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(WebSocketFrameReader::CloseStatusFor(second.error()), 1002);
  EXPECT_NE(second.error().message().find("inside a fragmented one"), std::string::npos);
}

TEST(WebSocketFrameReaderTest, APayloadOverTheLimitIsTooBigAndNotRead) {
  const std::string frame = Frame(0x82, std::string(2000, 'z'));
  Wire wire(frame, 1024);
  auto refused = wire.reader.Next();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kResourceExhausted);
  EXPECT_EQ(WebSocketFrameReader::CloseStatusFor(refused.error()), 1009);
  EXPECT_EQ(wire.at, 4u);  // the header only: nothing of the 2000 bytes was read
  // A 64-bit length beyond int is refused the same way.
  std::string huge = Frame(0x82, "", true, 8);
  huge[3] = 0x01;  // 2^48 bytes
  EXPECT_EQ(Refusal(huge, 1024).code(), ErrorCode::kResourceExhausted);
}

TEST(WebSocketFrameReaderTest, AConnectionEndingInsideAFrameHasEnded) {
  const std::string frame = Frame(0x81, "hello");
  for (std::size_t cut : {std::size_t{1}, std::size_t{3}, frame.size() - 1}) {
    const Error error = Refusal(frame.substr(0, cut));
    EXPECT_EQ(error.code(), ErrorCode::kUnavailable) << cut;
  }
}

}  // namespace
}  // namespace strongroom::core
