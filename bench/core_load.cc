// core_load: a load generator for a running cored, over HTTPS on keep-alive connections and
// WebSockets (a client: it links common and Poco, never the core, the KMS or the HSM layer).
//
//   core_load --url https://127.0.0.1:PORT --ca CA.pem --token-file JWT [--token-file JWT ...]
//             [--scenario post|preload|history|relay] [--clients 16] [--participants 10]
//             [--conversations 1] [--conversation ID] [--duration 30] [--warmup 5] [--rate R]
//             [--content-bytes 200] [--max-posts N] [--drain-timeout 30]
//             [--kms-url URL --kms-token-file JWT] [--cluster kms://host]
//             [--conversation-out FILE] [--json-out FILE] [--pid NAME=PID[,PID...] ...]
//
// --pid: the CPU time of a tier of processes and their descendants (cored nodes, PostgreSQL's
// postmaster, HAProxy) over the measured window, under "cpu_s" and "cpu_us_per_request" (per
// accepted request) by NAME in the JSON.
// Tokens are "core" bearer tokens of distinct users; client i uses token i % n. Scenarios:
//   post      setup: a conversation (or --conversations of them) whose participants are every
//             token's user, created by the first; --participants WebSockets (GET /v1/events,
//             participant j as token j's user) connect with the creation's seq as cursor. Loop:
//             each posting client POSTs /v1/conversations/{id}/activities with a fresh compact
//             JWE (dir/A256GCM, kid = the conversation's key URL; --content-bytes of plaintext,
//             sealed per post with common/jose under a key the core never sees) and a
//             clientActivityId carrying the client, the post number and its send time. Expects
//             201 and the activity. After the run every WebSocket must have received every
//             accepted activity exactly once and in sequence order (checked, not sampled);
//             delivery latency is from a post's send time to its receipt on each WebSocket.
//   preload   post without WebSockets until --max-posts activities were accepted (for filling a
//             conversation); --conversation-out gets its id.
//   history   GET /v1/conversations/{id}/activities?before=<random seq in the conversation's
//             range>&limit=50 against --conversation (default: the first token's newest
//             conversation); each page is checked (ascending, below the cursor, 50 items unless
//             it reaches the first activity, `more` consistent).
//   relay     a sealed KMS `update /ping` (client/KmsSession, --kms-token-file's KMS token inside),
//             alternately straight to kmsd (--kms-url, POST /kms/messages) and through cored
//             (POST /kms/messages?cluster=..., with the core token), the order swapped every
//             round so drift hits both alike. Both latencies are reported, and the per-round
//             difference (relay minus direct).
// Closed loop by default (a client sends when its answer arrived); --rate R is open loop: R
// requests/s spread evenly over the clients, latency counted from the intended send time.
//
// A 503 with Retry-After is overload and a 429 is the rate limit, each counted apart from errors;
// anything else unexpected (transport failure, another status, a malformed answer, a delivery
// missing, duplicated or out of order) is an error. Latencies are exact: every request's is kept
// (per thread) and sorted at the end. Tokens, keys and contents are never printed.
#include <Poco/Buffer.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/NetSSL.h>
#include <Poco/Net/WebSocket.h>
#include <Poco/URI.h>
#include <Poco/UUIDGenerator.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "load_support.h"
#include "strongroom/client/kms_session.h"
#include "strongroom/common/error.h"
#include "strongroom/common/jose.h"
#include "strongroom/common/secret_bytes.h"

namespace strongroom::bench {
namespace {

using Clock = std::chrono::steady_clock;
using client::KmsInfo;
using client::KmsResponse;
using client::KmsSession;
using Poco::JSON::Object;

constexpr std::size_t kMaxClients = 1024;
constexpr std::size_t kMaxParticipants = 256;
constexpr std::size_t kMaxConversations = 64;
constexpr std::size_t kMaxAnswerBytes = 8 * 1024 * 1024;
constexpr int kMaxFrameBytes = 64 * 1024 * 1024;
constexpr std::size_t kMaxErrorSamples = 5;
constexpr std::size_t kHistoryPage = 50;
constexpr int kPongFrame = static_cast<int>(Poco::Net::WebSocket::FRAME_FLAG_FIN) |
                           static_cast<int>(Poco::Net::WebSocket::FRAME_OP_PONG);
constexpr char kKmsHost[] = "kms.load.test";  // the core never dials it: URLs are opaque there

const char kUsage[] =
    "usage: core_load --url https://HOST:PORT --ca CA.pem --token-file JWT [--token-file JWT ...]\n"
    "                 [--scenario post|preload|history|relay] [--clients N] [--participants N]\n"
    "                 [--conversations N] [--conversation ID] [--duration S] [--warmup S]\n"
    "                 [--rate R] [--content-bytes N] [--max-posts N] [--drain-timeout S]\n"
    "                 [--kms-url URL] [--kms-token-file JWT] [--cluster kms://HOST]\n"
    "                 [--honor-retry-after] [--conversation-out FILE] [--json-out FILE]\n"
    "                 [--pid NAME=PID[,PID...] ...]\n";

struct Options {
  std::string url;
  std::string ca;
  std::vector<std::string> token_files;
  std::string scenario = "post";
  std::size_t clients = 16;
  std::size_t participants = 10;
  std::size_t conversations = 1;
  std::string conversation;  // an existing one (post, preload, history)
  double duration_s = 30;
  double warmup_s = 5;
  double rate = 0;  // 0: closed loop
  std::size_t content_bytes = 200;
  std::uint64_t max_posts = 0;  // preload: stop after this many accepted posts
  double drain_timeout_s = 30;
  std::string kms_url;
  std::string kms_token_file;
  std::string cluster;
  bool honor_retry_after = false;
  std::string conversation_out;
  std::string json_out;
  CpuTiers tiers;  // --pid
};

Result<Options> ParseOptions(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--honor-retry-after") {
      o.honor_retry_after = true;
      continue;
    }
    if (arg == "--help" || arg == "-h") return Error(ErrorCode::kInvalidArgument, "");
    if (arg.rfind("--", 0) != 0 || i + 1 >= argc) {
      return Error(ErrorCode::kInvalidArgument, "unexpected argument '" + arg + "'");
    }
    const std::string name = arg.substr(2);
    const std::string value = argv[++i];
    if (name == "url") {
      o.url = value;
    } else if (name == "ca") {
      o.ca = value;
    } else if (name == "token-file") {
      o.token_files.push_back(value);
    } else if (name == "scenario") {
      o.scenario = value;
    } else if (name == "clients") {
      SR_ASSIGN_OR_RETURN(o.clients, ParseCount(name, value, 1, kMaxClients));
    } else if (name == "participants") {
      SR_ASSIGN_OR_RETURN(o.participants, ParseCount(name, value, 0, kMaxParticipants));
    } else if (name == "conversations") {
      SR_ASSIGN_OR_RETURN(o.conversations, ParseCount(name, value, 1, kMaxConversations));
    } else if (name == "conversation") {
      o.conversation = value;
    } else if (name == "duration") {
      SR_ASSIGN_OR_RETURN(o.duration_s, ParseSeconds(name, value, 86400));
    } else if (name == "warmup") {
      SR_ASSIGN_OR_RETURN(o.warmup_s, ParseSeconds(name, value, 3600));
    } else if (name == "rate") {
      SR_ASSIGN_OR_RETURN(o.rate, ParseSeconds(name, value, 1e7));
    } else if (name == "content-bytes") {
      SR_ASSIGN_OR_RETURN(o.content_bytes, ParseCount(name, value, 1, 48 * 1024));
    } else if (name == "max-posts") {
      SR_ASSIGN_OR_RETURN(std::size_t max_posts, ParseCount(name, value, 1, 1'000'000'000));
      o.max_posts = max_posts;
    } else if (name == "drain-timeout") {
      SR_ASSIGN_OR_RETURN(o.drain_timeout_s, ParseSeconds(name, value, 3600));
    } else if (name == "kms-url") {
      o.kms_url = value;
    } else if (name == "kms-token-file") {
      o.kms_token_file = value;
    } else if (name == "cluster") {
      o.cluster = value;
    } else if (name == "conversation-out") {
      o.conversation_out = value;
    } else if (name == "json-out") {
      o.json_out = value;
    } else if (name == "pid") {
      SR_RETURN_IF_ERROR(o.tiers.Add(value));
    } else {
      return Error(ErrorCode::kInvalidArgument, "unknown option --" + name);
    }
  }
  if (o.url.empty() || o.ca.empty() || o.token_files.empty()) {
    return Error(ErrorCode::kInvalidArgument, "--url, --ca and --token-file are required");
  }
  o.tiers.AddGeneratorAndMachine();
  if (o.scenario != "post" && o.scenario != "preload" && o.scenario != "history" &&
      o.scenario != "relay") {
    return Error(ErrorCode::kInvalidArgument, "unknown --scenario " + o.scenario);
  }
  if (o.scenario == "relay" && (o.kms_url.empty() || o.kms_token_file.empty())) {
    return Error(ErrorCode::kInvalidArgument,
                 "--scenario relay needs --kms-url and "
                 "--kms-token-file");
  }
  if (o.scenario != "post") o.participants = 0;  // WebSockets belong to the post scenario
  if (o.scenario == "preload") {
    if (o.max_posts == 0) return Error(ErrorCode::kInvalidArgument, "preload needs --max-posts");
    o.participants = 0;
    o.warmup_s = 0;
    o.duration_s = 86400;
  }
  if (o.duration_s <= 0) return Error(ErrorCode::kInvalidArgument, "--duration must be > 0");
  return o;
}

// The subject of a JWT (its payload is not secret; the signature is what the core checks).
Result<std::string> TokenSubject(const std::string& token, const std::string& path) {
  const std::size_t first = token.find('.');
  const std::size_t second = first == std::string::npos ? first : token.find('.', first + 1);
  if (second == std::string::npos) {
    return Error(ErrorCode::kInvalidArgument, "the token in " + path + " is not a JWT");
  }
  Result<std::vector<std::uint8_t>> payload =
      jose::Base64UrlDecode(std::string_view(token).substr(first + 1, second - first - 1));
  if (!payload.ok()) return Error(ErrorCode::kInvalidArgument, "the token in " + path + ": bad");
  try {
    Poco::JSON::Parser parser;
    Object::Ptr claims =
        parser.parse(std::string(payload->begin(), payload->end())).extract<Object::Ptr>();
    const std::string sub = claims->optValue<std::string>("sub", "");
    if (!sub.empty()) return sub;
  } catch (const Poco::Exception&) {
  }
  return Error(ErrorCode::kInvalidArgument, "the token in " + path + " has no subject");
}

std::string RandomHex(std::size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  RAND_bytes(raw.data(), static_cast<int>(raw.size()));
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : raw) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

std::string NewUuid() { return Poco::UUIDGenerator::defaultGenerator().createRandom().toString(); }

// --- a small JSON reader for the answers and frames on the hot path (Poco's parser would cost
// the generator, which shares the machine with cored, more than the fields it needs) -----------

class JsonReader {
 public:
  explicit JsonReader(std::string_view text) : text_(text) {}

  bool Consume(char c) {
    SkipSpace();
    if (at_ < text_.size() && text_[at_] == c) {
      ++at_;
      return true;
    }
    return false;
  }
  bool Peek(char c) {
    SkipSpace();
    return at_ < text_.size() && text_[at_] == c;
  }
  bool AtEnd() {
    SkipSpace();
    return at_ == text_.size();
  }

  bool String(std::string* out) {
    if (!Consume('"')) return false;
    out->clear();
    while (at_ < text_.size()) {
      const char c = text_[at_++];
      if (c == '"') return true;
      if (c != '\\') {
        out->push_back(c);
        continue;
      }
      if (at_ >= text_.size()) return false;
      const char e = text_[at_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out->push_back(e);
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'u':
          if (at_ + 4 > text_.size()) return false;
          at_ += 4;
          out->push_back('?');  // not needed for the fields read here
          break;
        default:
          return false;
      }
    }
    return false;
  }

  bool Integer(std::int64_t* out) {
    SkipSpace();
    const std::size_t begin = at_;
    bool negative = false;
    if (at_ < text_.size() && text_[at_] == '-') {
      negative = true;
      ++at_;
    }
    std::int64_t value = 0;
    while (at_ < text_.size() && text_[at_] >= '0' && text_[at_] <= '9') {
      value = value * 10 + (text_[at_++] - '0');
    }
    if (at_ == begin + (negative ? 1 : 0)) return false;
    *out = negative ? -value : value;
    return true;
  }

  bool Bool(bool* out) {
    SkipSpace();
    if (text_.substr(at_, 4) == "true") {
      at_ += 4;
      *out = true;
      return true;
    }
    if (text_.substr(at_, 5) == "false") {
      at_ += 5;
      *out = false;
      return true;
    }
    return false;
  }

  bool SkipValue(int depth = 0) {
    if (depth > 32) return false;
    SkipSpace();
    if (at_ >= text_.size()) return false;
    const char c = text_[at_];
    std::string ignored;
    if (c == '"') return String(&ignored);
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++at_;
      if (Consume(close)) return true;
      for (;;) {
        if (c == '{' && (!String(&ignored) || !Consume(':'))) return false;
        if (!SkipValue(depth + 1)) return false;
        if (Consume(close)) return true;
        if (!Consume(',')) return false;
      }
    }
    const std::size_t begin = at_;
    while (at_ < text_.size() &&
           std::string_view(",]} \t\r\n").find(text_[at_]) == std::string_view::npos) {
      ++at_;
    }
    return at_ > begin;
  }

 private:
  void SkipSpace() {
    while (at_ < text_.size() &&
           (text_[at_] == ' ' || text_[at_] == '\n' || text_[at_] == '\r' || text_[at_] == '\t')) {
      ++at_;
    }
  }

  std::string_view text_;
  std::size_t at_ = 0;
};

// The fields of an activity this generator checks.
struct ActivityFields {
  std::int64_t seq = -1;
  std::string id;
  std::string conversation_id;
  std::string verb;
  std::string client_activity_id;
  std::size_t content_bytes = 0;
};

bool ReadActivity(JsonReader& in, ActivityFields* out) {
  *out = ActivityFields();
  if (!in.Consume('{')) return false;
  if (in.Consume('}')) return false;
  std::string key, content;
  for (;;) {
    if (!in.String(&key) || !in.Consume(':')) return false;
    bool read = true;
    if (key == "seq") {
      read = in.Integer(&out->seq);
    } else if (key == "id") {
      read = in.String(&out->id);
    } else if (key == "conversationId") {
      read = in.String(&out->conversation_id);
    } else if (key == "verb") {
      read = in.String(&out->verb);
    } else if (key == "clientActivityId") {
      read = in.String(&out->client_activity_id);
    } else if (key == "content") {
      read = in.String(&content);
      out->content_bytes = content.size();
    } else {
      read = in.SkipValue();
    }
    if (!read) return false;
    if (in.Consume('}')) break;
    if (!in.Consume(',')) return false;
  }
  return out->seq > 0 && !out->id.empty() && !out->conversation_id.empty() && !out->verb.empty();
}

// {"<list_key>": [activity, ...], other fields...}; `more` gets a boolean field "more" if any.
bool ReadActivityList(std::string_view text, const std::string& list_key,
                      std::vector<ActivityFields>* items, std::optional<bool>* more = nullptr) {
  JsonReader in(text);
  items->clear();
  if (!in.Consume('{')) return false;
  bool found = false;
  std::string key;
  if (in.Consume('}')) return false;
  for (;;) {
    if (!in.String(&key) || !in.Consume(':')) return false;
    if (key == list_key) {
      found = true;
      if (!in.Consume('[')) return false;
      if (!in.Consume(']')) {
        for (;;) {
          items->emplace_back();
          if (!ReadActivity(in, &items->back())) return false;
          if (in.Consume(']')) break;
          if (!in.Consume(',')) return false;
        }
      }
    } else if (key == "more" && more != nullptr) {
      bool value = false;
      if (!in.Bool(&value)) return false;
      *more = value;
    } else if (!in.SkipValue()) {
      return false;
    }
    if (in.Consume('}')) break;
    if (!in.Consume(',')) return false;
  }
  return found && in.AtEnd();
}

// The "code" of a JSON error body, for error messages (never the body itself).
std::string ErrorCodeOf(const std::string& body) {
  JsonReader in(body);
  std::string key, value;
  if (!in.Consume('{')) return "?";
  while (in.String(&key) && in.Consume(':')) {
    if (key == "code") return in.String(&value) ? value : "?";
    if (!in.SkipValue() || !in.Consume(',')) break;
  }
  return "?";
}

// --- transport ------------------------------------------------------------------------------

struct Answer {
  int status = 0;
  std::string content_type;
  std::string body;
  bool retry_after = false;
};

// One keep-alive HTTPS connection. Poco reconnects by itself after the server closed it.
class Connection {
 public:
  Connection(const std::string& host, std::uint16_t port, Poco::Net::Context::Ptr context)
      : session_(host, port, std::move(context)) {
    session_.setKeepAlive(true);
    session_.setTimeout(Poco::Timespan(30, 0));
  }

  // `bearer` empty: no Authorization header.
  Result<Answer> Send(const std::string& method, const std::string& path, const std::string& body,
                      const std::string& content_type, const std::string& bearer) {
    try {
      Poco::Net::HTTPRequest request(method, path, Poco::Net::HTTPMessage::HTTP_1_1);
      request.setKeepAlive(true);
      if (!bearer.empty()) request.set("Authorization", "Bearer " + bearer);
      if (method == Poco::Net::HTTPRequest::HTTP_POST || !body.empty()) {
        request.setContentType(content_type);
        request.setContentLength64(static_cast<Poco::Int64>(body.size()));
      }
      std::ostream& out = session_.sendRequest(request);
      out.write(body.data(), static_cast<std::streamsize>(body.size()));
      Poco::Net::HTTPResponse response;
      std::istream& in = session_.receiveResponse(response);
      Answer answer;
      answer.status = static_cast<int>(response.getStatus());
      answer.content_type = response.getContentType();
      answer.retry_after = response.has("Retry-After");
      if (response.hasContentLength() && response.getContentLength64() > 0 &&
          response.getContentLength64() <= static_cast<Poco::Int64>(kMaxAnswerBytes)) {
        answer.body.reserve(static_cast<std::size_t>(response.getContentLength64()));
      }
      char buffer[16 * 1024];
      while (in) {
        in.read(buffer, sizeof buffer);
        answer.body.append(buffer, static_cast<std::size_t>(in.gcount()));
        if (answer.body.size() > kMaxAnswerBytes) {
          session_.reset();
          return Error(ErrorCode::kInvalidArgument, "an answer is larger than 8 MiB");
        }
      }
      return answer;
    } catch (const Poco::Exception& e) {
      session_.reset();
      return Error(ErrorCode::kUnavailable, "HTTPS: " + e.displayText());
    } catch (const std::exception& e) {
      session_.reset();
      return Error(ErrorCode::kUnavailable, std::string("HTTPS: ") + e.what());
    }
  }

 private:
  Poco::Net::HTTPSClientSession session_;
};

struct Endpoint {
  std::string host;
  std::uint16_t port = 0;
};

Result<Endpoint> ParseHttpsUrl(const std::string& text, const std::string& option) {
  try {
    Poco::URI url(text);
    if (url.getScheme() != "https" || url.getHost().empty()) {
      return Error(ErrorCode::kInvalidArgument, "--" + option + " must be https://HOST:PORT");
    }
    return Endpoint{url.getHost(), url.getPort()};
  } catch (const Poco::Exception& e) {
    return Error(ErrorCode::kInvalidArgument, "bad --" + option + ": " + e.displayText());
  }
}

Object LatencyObject(const std::vector<std::uint32_t>& sorted) {
  Object ms;
  ms.set("count", sorted.size());
  ms.set("p50", Percentile(sorted, 0.50));
  ms.set("p90", Percentile(sorted, 0.90));
  ms.set("p99", Percentile(sorted, 0.99));
  ms.set("p999", Percentile(sorted, 0.999));
  ms.set("max", Percentile(sorted, 1.0));
  return ms;
}

std::string LatencyLine(const std::vector<std::uint32_t>& sorted) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(2) << "p50 " << Percentile(sorted, 0.50) << "  p90 "
      << Percentile(sorted, 0.90) << "  p99 " << Percentile(sorted, 0.99) << "  p99.9 "
      << Percentile(sorted, 0.999) << "  max " << Percentile(sorted, 1.0);
  return out.str();
}

std::uint32_t MicrosSince(Clock::time_point from, Clock::time_point to) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(to - from).count();
  return static_cast<std::uint32_t>(
      std::clamp<std::int64_t>(us, 0, std::numeric_limits<std::uint32_t>::max()));
}

enum class Outcome { kOk, kOverloaded, kRateLimited, kError };

// What one requesting client measured.
struct ClientStats {
  std::vector<std::uint32_t> latency_us;  // answered as expected, measured window only
  std::uint64_t requests = 0;             // answered as expected, measured window
  Clock::time_point last_answer{};        // when the last of those was answered
  std::uint64_t overloaded = 0;           // 503 with Retry-After, measured window
  std::uint64_t rate_limited = 0;         // 429, measured window
  std::uint64_t errors = 0;               // measured window
  std::uint64_t setup_overloaded = 0;     // outside the measured window (setup, warm-up)
  std::uint64_t setup_rate_limited = 0;
  std::uint64_t setup_errors = 0;
  std::vector<std::string> error_samples;
  // post/preload: every accepted activity's seq, warm-up included (for the delivery check)
  std::vector<std::int64_t> accepted_seqs;
  std::uint64_t accepted_total = 0;
  // relay
  std::vector<std::uint32_t> relay_us;
  std::vector<std::int32_t> difference_us;  // per round: relay minus direct
  // seal time of the post contents (fresh JWE per post)
  std::uint64_t seal_ns = 0;
  std::uint64_t sealed = 0;
};

// What one WebSocket participant received.
struct ReceiverStats {
  std::vector<std::vector<std::int64_t>> seqs;  // per conversation, in the order received
  std::vector<std::uint32_t> delivery_us;       // posts sent in the measured window
  std::uint64_t events = 0;                     // of the run's conversations
  std::uint64_t other_events = 0;               // of other conversations the user is in
  std::uint64_t frames = 0;
  std::uint64_t out_of_order = 0;  // a seq not above the last one received
  std::uint64_t foreign = 0;       // in a run conversation, not posted by this run
  std::uint64_t reconnects = 0;
  std::uint64_t disconnects = 0;  // closed by the core or failed; each followed by a reconnect
  std::uint64_t errors = 0;       // malformed frames, connections that could not be made
  std::vector<std::string> error_samples;
  std::atomic<std::int64_t> last_seq{0};
  std::atomic<bool> connected{false};
  Clock::time_point last_receipt;
};

struct RunConversation {
  std::string id;
  std::string key_uri;
  std::int64_t created_seq = 0;  // the creation's seq (or lastSeq of an existing one)
  std::array<std::uint8_t, 32> key{};
};

class LoadRun {
 public:
  LoadRun(Options options, Endpoint core, Poco::Net::Context::Ptr context,
          std::vector<std::string> tokens, std::vector<std::string> subjects)
      : options_(std::move(options)),
        core_(std::move(core)),
        context_(std::move(context)),
        tokens_(std::move(tokens)),
        subjects_(std::move(subjects)),
        run_tag_(RandomHex(3)),
        stats_(options_.clients),
        receivers_(options_.participants) {}

  ~LoadRun() {
    for (std::string& token : tokens_) ZeroizeString(token);
    ZeroizeString(kms_token_);
    for (RunConversation& c : conversations_) OPENSSL_cleanse(c.key.data(), c.key.size());
  }

  void set_kms(Endpoint kms, std::string kms_token) {
    kms_ = std::move(kms);
    kms_token_ = std::move(kms_token);
  }

  // Creates (or looks up) the run's conversations.
  Status SetupConversations() {
    Connection connection(core_.host, core_.port, context_);
    if (!options_.conversation.empty()) {
      RunConversation c;
      c.id = options_.conversation;
      SR_ASSIGN_OR_RETURN(Object::Ptr json, GetJson(connection, "/v1/conversations/" + c.id));
      c.key_uri = json->optValue<std::string>("currentKeyUri", "");
      c.created_seq = json->optValue<std::int64_t>("lastSeq", 0);
      RAND_bytes(c.key.data(), static_cast<int>(c.key.size()));
      conversations_.push_back(std::move(c));
    } else {
      for (std::size_t i = 0; i < options_.conversations; ++i) {
        RunConversation c;
        c.key_uri = std::string("kms://") + kKmsHost + "/keys/" + NewUuid();
        RAND_bytes(c.key.data(), static_cast<int>(c.key.size()));
        Object body;
        body.set("kmsResourceUri", std::string("kms://") + kKmsHost + "/resources/" + NewUuid());
        body.set("keyUri", c.key_uri);
        Poco::JSON::Array participants;
        for (const std::string& subject : subjects_) participants.add(subject);
        body.set("participants", participants);
        std::ostringstream text;
        body.stringify(text);
        SR_ASSIGN_OR_RETURN(Answer answer, connection.Send("POST", "/v1/conversations", text.str(),
                                                           "application/json", tokens_[0]));
        if (answer.status != 201) {
          return Error(ErrorCode::kUnavailable, "POST /v1/conversations answered " +
                                                    std::to_string(answer.status) + " " +
                                                    ErrorCodeOf(answer.body));
        }
        try {
          Poco::JSON::Parser parser;
          Object::Ptr json = parser.parse(answer.body).extract<Object::Ptr>();
          Object::Ptr conversation = json->getObject("conversation");
          c.id = conversation->getValue<std::string>("id");
          c.created_seq = conversation->getValue<std::int64_t>("lastSeq");
        } catch (const Poco::Exception& e) {
          return Error(ErrorCode::kInvalidArgument,
                       "POST /v1/conversations answered an unexpected body: " + e.displayText());
        }
        conversations_.push_back(std::move(c));
      }
    }
    for (std::size_t i = 0; i < conversations_.size(); ++i) {
      conversation_index_[conversations_[i].id] = i;
      start_cursor_ = std::max(start_cursor_, conversations_[i].created_seq);
    }
    if (!options_.conversation_out.empty()) {
      std::ofstream out(options_.conversation_out);
      out << conversations_[0].id << "\n";
      if (!out) return Error(ErrorCode::kUnavailable, "cannot write --conversation-out");
    }
    return OkStatus();
  }

  Result<Object::Ptr> GetJson(Connection& connection, const std::string& path) {
    SR_ASSIGN_OR_RETURN(Answer answer, connection.Send("GET", path, "", "", tokens_[0]));
    if (answer.status != 200) {
      return Error(ErrorCode::kUnavailable, "GET " + path + " answered " +
                                                std::to_string(answer.status) + " " +
                                                ErrorCodeOf(answer.body));
    }
    try {
      Poco::JSON::Parser parser;
      return parser.parse(answer.body).extract<Object::Ptr>();
    } catch (const Poco::Exception& e) {
      return Error(ErrorCode::kInvalidArgument, "GET " + path + ": " + e.displayText());
    }
  }

  // history: the conversation to read and its seq range.
  Status SetupHistory() {
    Connection connection(core_.host, core_.port, context_);
    std::string id = options_.conversation;
    if (id.empty()) {
      SR_ASSIGN_OR_RETURN(Object::Ptr list, GetJson(connection, "/v1/conversations?limit=1"));
      Poco::JSON::Array::Ptr items = list->getArray("items");
      if (!items || items->size() == 0) {
        return Error(ErrorCode::kNotFound, "the first token's user has no conversation");
      }
      id = items->getObject(0)->getValue<std::string>("id");
    }
    SR_ASSIGN_OR_RETURN(Object::Ptr conversation, GetJson(connection, "/v1/conversations/" + id));
    history_last_ = conversation->optValue<std::int64_t>("lastSeq", 0);
    SR_ASSIGN_OR_RETURN(
        Answer first,
        connection.Send("GET", "/v1/conversations/" + id + "/activities?after=0&limit=1", "", "",
                        tokens_[0]));
    std::vector<ActivityFields> items;
    if (first.status != 200 || !ReadActivityList(first.body, "items", &items) || items.empty()) {
      return Error(ErrorCode::kUnavailable, "cannot read the first activity of " + id);
    }
    history_first_ = items[0].seq;
    history_id_ = id;
    return OkStatus();
  }

  // relay: the KMS's description, straight from kmsd.
  Status SetupRelay() {
    Connection connection(kms_.host, kms_.port, context_);
    SR_ASSIGN_OR_RETURN(Answer answer, connection.Send("GET", "/kms/info", "", "", ""));
    if (answer.status != 200) {
      return Error(ErrorCode::kUnavailable,
                   "GET /kms/info answered " + std::to_string(answer.status));
    }
    SR_ASSIGN_OR_RETURN(KmsInfo info, client::ParseKmsInfo(answer.body));
    if (options_.cluster.empty()) options_.cluster = info.cluster;
    kms_info_.emplace(std::move(info));
    return OkStatus();
  }

  void Run() {
    std::vector<std::thread> receivers;
    for (std::size_t i = 0; i < receivers_.size(); ++i) {
      receivers.emplace_back([this, i] { Receive(i); });
    }
    // Every participant connected (or given up) before the first post.
    {
      std::unique_lock<std::mutex> lock(mutex_);
      ready_cv_.wait(lock, [&] { return receivers_ready_ == receivers_.size(); });
    }
    std::vector<std::thread> threads;
    threads.reserve(options_.clients);
    for (std::size_t i = 0; i < options_.clients; ++i) {
      threads.emplace_back([this, i] { Client(i); });
    }
    {
      std::unique_lock<std::mutex> lock(mutex_);
      ready_cv_.wait(lock, [&] { return ready_ == options_.clients; });
      start_ = Clock::now();
      measure_from_ = start_ + Seconds(options_.warmup_s);
      measure_to_ = measure_from_ + Seconds(options_.duration_s);
      started_ = true;
    }
    start_cv_.notify_all();
    // The tiers' CPU over the measured window (an early end by --max-posts is not waited for).
    if (!options_.tiers.tiers.empty()) {
      std::this_thread::sleep_until(measure_from_);
      tiers_from_ = options_.tiers.Now();
      std::this_thread::sleep_until(measure_to_);
      tiers_to_ = options_.tiers.Now();
    }
    for (std::thread& t : threads) t.join();
    posting_ended_ = Clock::now();

    // Delivery: wait until every participant saw the newest accepted activity (or give up).
    std::int64_t newest = 0;
    for (const ClientStats& s : stats_) {
      for (std::int64_t seq : s.accepted_seqs) newest = std::max(newest, seq);
    }
    const Clock::time_point give_up = Clock::now() + Seconds(options_.drain_timeout_s);
    while (Clock::now() < give_up) {
      bool all = true;
      for (const ReceiverStats& r : receivers_) all = all && r.last_seq.load() >= newest;
      if (all) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    drained_ = Clock::now();
    stop_receivers_ = true;
    for (std::thread& t : receivers) t.join();
  }

  int Report() const;

 private:
  static Clock::duration Seconds(double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  }

  static void Note(ClientStats& stats, bool measured, Outcome outcome, const std::string& error) {
    switch (outcome) {
      case Outcome::kOk:
        return;
      case Outcome::kOverloaded:
        (measured ? stats.overloaded : stats.setup_overloaded)++;
        return;
      case Outcome::kRateLimited:
        (measured ? stats.rate_limited : stats.setup_rate_limited)++;
        return;
      case Outcome::kError:
        (measured ? stats.errors : stats.setup_errors)++;
        if (stats.error_samples.size() < kMaxErrorSamples) stats.error_samples.push_back(error);
        return;
    }
  }

  static Outcome Classify(const Answer& answer, int expected, const std::string& what,
                          std::string* error) {
    if (answer.status == expected) return Outcome::kOk;
    if (answer.status == 503 && answer.retry_after) return Outcome::kOverloaded;
    if (answer.status == 429) return Outcome::kRateLimited;
    *error = what + " answered " + std::to_string(answer.status) + " " + ErrorCodeOf(answer.body);
    return Outcome::kError;
  }

  void Backoff() const {
    if (options_.honor_retry_after) std::this_thread::sleep_for(std::chrono::seconds(1));
  }

  // --- posting clients, history readers and relay pingers ---------------------------------

  void Client(std::size_t index) {
    ClientStats& stats = stats_[index];
    Connection connection(core_.host, core_.port, context_);
    std::unique_ptr<Connection> kms_connection;
    std::unique_ptr<KmsSession> session;
    if (options_.scenario == "relay") {
      kms_connection = std::make_unique<Connection>(kms_.host, kms_.port, context_);
      client::KmsTransport transport = [&](const std::string& message) -> Result<KmsResponse> {
        SR_ASSIGN_OR_RETURN(Answer answer, kms_connection->Send("POST", "/kms/messages", message,
                                                                "application/jose", ""));
        return KmsResponse{answer.status, answer.content_type, std::move(answer.body)};
      };
      Result<std::unique_ptr<KmsSession>> opened =
          KmsSession::Open(*kms_info_, "core-load-" + std::to_string(index), kms_token_, transport);
      if (opened.ok()) {
        session = std::move(opened).value();
      } else {
        Note(stats, false, Outcome::kError, "create /ecdhe: " + opened.error().ToString());
      }
    }
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (++ready_ == options_.clients) ready_cv_.notify_all();
      start_cv_.wait(lock, [&] { return started_; });
    }
    if (options_.scenario == "relay" && !session) return;

    const Clock::duration interval =
        options_.rate > 0 ? Seconds(static_cast<double>(options_.clients) / options_.rate)
                          : Clock::duration::zero();
    Clock::time_point next =
        start_ + interval * static_cast<long>(index) / static_cast<long>(options_.clients);
    const std::string& token = tokens_[index % tokens_.size()];
    static const RunConversation kNone;
    const RunConversation& conversation =
        conversations_.empty() ? kNone : conversations_[index % conversations_.size()];
    const std::string activities_path =
        conversation.id.empty() ? "" : "/v1/conversations/" + conversation.id + "/activities";
    std::mt19937_64 random(std::random_device{}() + index);
    // The plaintext: random bytes, with the post number written over its start per post.
    std::vector<std::uint8_t> plaintext(options_.content_bytes);
    RAND_bytes(plaintext.data(), static_cast<int>(plaintext.size()));

    for (std::uint64_t n = 0;; ++n) {
      if (interval != Clock::duration::zero()) std::this_thread::sleep_until(next);
      const Clock::time_point sent_at = interval != Clock::duration::zero() ? next : Clock::now();
      if (sent_at >= measure_to_ || stop_.load(std::memory_order_relaxed)) break;
      next += interval;
      const bool measured = sent_at >= measure_from_;
      std::string error;
      Outcome outcome = Outcome::kOk;

      if (options_.scenario == "post" || options_.scenario == "preload") {
        for (std::size_t b = 0; b < 8 && b < plaintext.size(); ++b) {
          plaintext[b] = static_cast<std::uint8_t>(n >> (8 * b));
        }
        const Clock::time_point seal_from = Clock::now();
        Result<std::string> jwe =
            jose::EncryptDir(conversation.key, conversation.key_uri, plaintext);
        stats.seal_ns += static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - seal_from).count());
        ++stats.sealed;
        if (!jwe.ok()) {
          Note(stats, measured, Outcome::kError, "seal: " + jwe.error().ToString());
          continue;
        }
        const std::string client_id = run_tag_ + "-" + std::to_string(index) + "-" +
                                      std::to_string(n) + "-" +
                                      std::to_string(MicrosSince(start_, sent_at));
        const std::string body =
            "{\"content\":\"" + *jwe + "\",\"clientActivityId\":\"" + client_id + "\"}";
        Result<Answer> answer =
            connection.Send("POST", activities_path, body, "application/json", token);
        if (!answer.ok()) {
          outcome = Outcome::kError;
          error = answer.error().ToString();
        } else {
          outcome = Classify(*answer, 201, "POST activities", &error);
          if (outcome == Outcome::kOk) {
            JsonReader in(answer->body);
            ActivityFields activity;
            if (!ReadActivity(in, &activity) || !in.AtEnd()) {
              outcome = Outcome::kError;
              error = "POST activities answered an unexpected body";
            } else if (activity.conversation_id != conversation.id ||
                       activity.client_activity_id != client_id || activity.verb != "post" ||
                       activity.content_bytes != jwe->size()) {
              outcome = Outcome::kError;
              error = "POST activities answered another activity than the one posted";
            } else {
              stats.accepted_seqs.push_back(activity.seq);
              ++stats.accepted_total;
              if (options_.max_posts != 0 &&
                  accepted_total_.fetch_add(1) + 1 >= options_.max_posts && !stop_.exchange(true)) {
                std::lock_guard<std::mutex> lock(mutex_);
                stopped_at_ = Clock::now();
              }
            }
          }
        }
      } else if (options_.scenario == "history") {
        std::uniform_int_distribution<std::int64_t> pick(history_first_ + 1, history_last_ + 1);
        const std::int64_t before = pick(random);
        Result<Answer> answer = connection.Send("GET",
                                                "/v1/conversations/" + history_id_ +
                                                    "/activities?before=" + std::to_string(before) +
                                                    "&limit=" + std::to_string(kHistoryPage),
                                                "", "", token);
        if (!answer.ok()) {
          outcome = Outcome::kError;
          error = answer.error().ToString();
        } else {
          outcome = Classify(*answer, 200, "GET activities", &error);
          if (outcome == Outcome::kOk) error = CheckPage(answer->body, before);
          if (!error.empty()) outcome = Outcome::kError;
        }
      } else {  // relay
        const bool relay_first = n % 2 == 1;
        std::uint32_t took[2] = {0, 0};  // direct, relay
        for (int leg = 0; leg < 2 && outcome == Outcome::kOk; ++leg) {
          const bool relay = (leg == 0) == relay_first;
          const Clock::time_point leg_at = leg == 0 ? sent_at : Clock::now();
          outcome = Ping(relay ? connection : *kms_connection, *session, relay, token, &error);
          took[relay ? 1 : 0] = MicrosSince(leg_at, Clock::now());
        }
        if (outcome == Outcome::kOk && measured) {
          stats.relay_us.push_back(took[1]);
          stats.difference_us.push_back(static_cast<std::int32_t>(
              static_cast<std::int64_t>(took[1]) - static_cast<std::int64_t>(took[0])));
          stats.latency_us.push_back(took[0]);
          ++stats.requests;
          stats.last_answer = Clock::now();
        }
        Note(stats, measured, outcome, error);
        if (outcome == Outcome::kOverloaded || outcome == Outcome::kRateLimited) Backoff();
        continue;
      }
      Note(stats, measured, outcome, error);
      if (outcome == Outcome::kOk && measured) {
        stats.last_answer = Clock::now();
        stats.latency_us.push_back(MicrosSince(sent_at, stats.last_answer));
        ++stats.requests;
      }
      if (outcome == Outcome::kOverloaded || outcome == Outcome::kRateLimited) Backoff();
    }
  }

  // A history page's shape; empty when it is right.
  std::string CheckPage(const std::string& body, std::int64_t before) const {
    std::vector<ActivityFields> items;
    std::optional<bool> more;
    if (!ReadActivityList(body, "items", &items, &more) || !more) {
      return "GET activities answered an unexpected body";
    }
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (items[i].seq >= before || (i > 0 && items[i].seq <= items[i - 1].seq) ||
          items[i].conversation_id != history_id_) {
        return "GET activities answered items out of order or outside the cursor";
      }
    }
    const bool reaches_first = !items.empty() && items[0].seq == history_first_;
    if (items.size() > kHistoryPage || (items.size() < kHistoryPage && !reaches_first) ||
        *more == reaches_first) {
      return "GET activities answered " + std::to_string(items.size()) + " items, more " +
             (*more ? "true" : "false") + ", before " + std::to_string(before);
    }
    return "";
  }

  Outcome Ping(Connection& connection, KmsSession& session, bool relay, const std::string& token,
               std::string* error) {
    Result<std::string> sealed = session.Seal("update", "/ping");
    if (!sealed.ok()) {
      *error = "seal: " + sealed.error().ToString();
      return Outcome::kError;
    }
    Result<Answer> sent =
        relay ? connection.Send("POST", "/kms/messages?cluster=" + options_.cluster, *sealed,
                                "application/jose", token)
              : connection.Send("POST", "/kms/messages", *sealed, "application/jose", "");
    const std::string what = relay ? "relayed ping" : "direct ping";
    if (!sent.ok()) {
      *error = what + ": " + sent.error().ToString();
      return Outcome::kError;
    }
    const Outcome outcome = Classify(*sent, 200, what, error);
    if (outcome != Outcome::kOk) return outcome;
    Result<Object::Ptr> opened =
        session.OpenAnswer(KmsResponse{sent->status, sent->content_type, sent->body});
    if (!opened.ok()) {
      *error = what + ": " + opened.error().ToString();
      return Outcome::kError;
    }
    const int status = (*opened)->optValue<int>("status", 0);
    if (status != 200) {
      *error = what + " answered sealed status " + std::to_string(status);
      return Outcome::kError;
    }
    return Outcome::kOk;
  }

  // --- WebSocket participants -------------------------------------------------------------

  void ReceiverError(ReceiverStats& r, const std::string& error) {
    ++r.errors;
    if (r.error_samples.size() < kMaxErrorSamples) r.error_samples.push_back(error);
  }

  void Disconnected(ReceiverStats& r, const std::string& why) {
    ++r.disconnects;
    if (r.error_samples.size() < kMaxErrorSamples) r.error_samples.push_back(why);
  }

  void Receive(std::size_t index) {
    ReceiverStats& r = receivers_[index];
    r.seqs.resize(conversations_.size());
    const std::string& token = tokens_[index % tokens_.size()];
    std::int64_t last = start_cursor_;
    bool signalled = false;
    auto signal_ready = [&] {
      if (signalled) return;
      signalled = true;
      std::lock_guard<std::mutex> lock(mutex_);
      if (++receivers_ready_ == receivers_.size()) ready_cv_.notify_all();
    };
    Poco::Buffer<char> buffer(0);
    std::vector<ActivityFields> events;
    int failures = 0;
    while (!stop_receivers_) {
      try {
        Poco::Net::HTTPSClientSession session(core_.host, core_.port, context_);
        session.setTimeout(Poco::Timespan(30, 0));
        Poco::Net::HTTPRequest request(Poco::Net::HTTPRequest::HTTP_GET,
                                       "/v1/events?cursor=" + std::to_string(last),
                                       Poco::Net::HTTPMessage::HTTP_1_1);
        request.set("Authorization", "Bearer " + token);
        Poco::Net::HTTPResponse response;
        Poco::Net::WebSocket socket(session, request, response);
        socket.setMaxPayloadSize(kMaxFrameBytes);
        socket.setReceiveTimeout(Poco::Timespan(30, 0));
        if (r.connected.exchange(true)) ++r.reconnects;
        failures = 0;
        if (!signalled) {
          signal_ready();
          std::unique_lock<std::mutex> lock(mutex_);
          start_cv_.wait(lock, [&] { return started_ || stop_receivers_.load(); });
        }
        while (!stop_receivers_) {
          if (socket.available() <= 0 &&
              !socket.poll(Poco::Timespan(0, 100000), Poco::Net::Socket::SELECT_READ)) {
            continue;
          }
          buffer.resize(0);
          int flags = 0;
          const int n = socket.receiveFrame(buffer, flags);
          const Clock::time_point at = Clock::now();
          const int opcode = flags & Poco::Net::WebSocket::FRAME_OP_BITMASK;
          if ((n == 0 && flags == 0) || opcode == Poco::Net::WebSocket::FRAME_OP_CLOSE) {
            Disconnected(r, "the core closed a realtime connection");
            break;  // reconnect with the cursor
          }
          if (opcode == Poco::Net::WebSocket::FRAME_OP_PING) {
            socket.sendFrame(buffer.begin(), n, kPongFrame);
            continue;
          }
          if (opcode != Poco::Net::WebSocket::FRAME_OP_TEXT) continue;
          ++r.frames;
          if (!ReadActivityList(std::string_view(buffer.begin(), static_cast<std::size_t>(n)),
                                "events", &events)) {
            ReceiverError(r, "a realtime frame is not {\"events\": [activity...]}");
            continue;
          }
          for (const ActivityFields& event : events) {
            if (event.seq <= last) ++r.out_of_order;
            last = std::max(last, event.seq);
            auto found = conversation_index_.find(event.conversation_id);
            if (found == conversation_index_.end()) {
              ++r.other_events;
              continue;
            }
            ++r.events;
            r.seqs[found->second].push_back(event.seq);
            // <tag>-<client>-<n>-<send µs since start>
            const std::string& id = event.client_activity_id;
            if (id.size() <= run_tag_.size() || id.compare(0, run_tag_.size(), run_tag_) != 0 ||
                id[run_tag_.size()] != '-') {
              ++r.foreign;
              continue;
            }
            const std::size_t dash = id.rfind('-');
            const auto sent_us = std::strtoull(id.c_str() + dash + 1, nullptr, 10);
            const Clock::time_point sent_at = start_ + std::chrono::microseconds(sent_us);
            if (sent_at >= measure_from_ && sent_at < measure_to_) {
              r.delivery_us.push_back(MicrosSince(sent_at, at));
            }
          }
          r.last_receipt = at;
          r.last_seq.store(last);
        }
        if (stop_receivers_) {
          try {
            socket.shutdown();
          } catch (const Poco::Exception&) {
          }
        }
      } catch (const Poco::Exception& e) {
        if (r.connected.load()) {
          Disconnected(r, "realtime: " + e.displayText());
        } else {
          ReceiverError(r, "realtime: " + e.displayText());
        }
        if (++failures > 50) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
    signal_ready();
  }

  // The measured window as it really was (shorter when --max-posts ended the run early).
  double MeasuredSeconds() const {
    const Clock::time_point end =
        stop_.load() ? std::max(measure_from_, std::min(stopped_at_, measure_to_)) : measure_to_;
    const double s = std::chrono::duration<double>(end - measure_from_).count();
    return s > 0 ? s : options_.duration_s;
  }

  Options options_;
  const Endpoint core_;
  Poco::Net::Context::Ptr context_;
  std::vector<std::string> tokens_;
  const std::vector<std::string> subjects_;
  const std::string run_tag_;
  Endpoint kms_;
  std::string kms_token_;
  std::optional<KmsInfo> kms_info_;

  std::vector<RunConversation> conversations_;
  std::map<std::string, std::size_t> conversation_index_;
  std::int64_t start_cursor_ = 0;
  std::string history_id_;
  std::int64_t history_first_ = 0;
  std::int64_t history_last_ = 0;

  std::vector<ClientStats> stats_;
  std::vector<ReceiverStats> receivers_;

  std::mutex mutex_;
  std::condition_variable ready_cv_;
  std::condition_variable start_cv_;
  std::size_t ready_ = 0;
  std::size_t receivers_ready_ = 0;
  bool started_ = false;
  Clock::time_point start_;
  Clock::time_point measure_from_;
  Clock::time_point measure_to_;
  Clock::time_point posting_ended_;
  Clock::time_point drained_;
  std::atomic<std::uint64_t> accepted_total_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> stop_receivers_{false};
  Clock::time_point stopped_at_;
  std::vector<double> tiers_from_, tiers_to_;  // --pid tiers at the window's start and end
};

int LoadRun::Report() const {
  const double seconds = MeasuredSeconds();
  std::vector<std::uint32_t> latency, relay, delivery;
  std::vector<std::int32_t> difference;
  std::uint64_t requests = 0, overloaded = 0, rate_limited = 0, errors = 0, setup_overloaded = 0,
                setup_rate_limited = 0, setup_errors = 0, accepted_total = 0, seal_ns = 0,
                sealed = 0;
  std::vector<double> per_client;
  std::vector<std::string> samples;
  std::vector<std::vector<std::int64_t>> accepted(conversations_.size());
  Clock::time_point last_answer = measure_from_;
  for (std::size_t i = 0; i < stats_.size(); ++i) {
    const ClientStats& s = stats_[i];
    latency.insert(latency.end(), s.latency_us.begin(), s.latency_us.end());
    relay.insert(relay.end(), s.relay_us.begin(), s.relay_us.end());
    difference.insert(difference.end(), s.difference_us.begin(), s.difference_us.end());
    requests += s.requests;
    overloaded += s.overloaded;
    rate_limited += s.rate_limited;
    errors += s.errors;
    setup_overloaded += s.setup_overloaded;
    setup_rate_limited += s.setup_rate_limited;
    setup_errors += s.setup_errors;
    accepted_total += s.accepted_total;
    seal_ns += s.seal_ns;
    sealed += s.sealed;
    last_answer = std::max(last_answer, s.last_answer);
    per_client.push_back(static_cast<double>(s.requests) / seconds);
    if (!conversations_.empty()) {
      std::vector<std::int64_t>& into = accepted[i % conversations_.size()];
      into.insert(into.end(), s.accepted_seqs.begin(), s.accepted_seqs.end());
    }
    for (const std::string& e : s.error_samples) {
      if (samples.size() < kMaxErrorSamples) samples.push_back(e);
    }
  }
  std::sort(latency.begin(), latency.end());
  std::sort(relay.begin(), relay.end());
  std::sort(difference.begin(), difference.end());
  const auto [min_client, max_client] = std::minmax_element(per_client.begin(), per_client.end());
  const double rate = static_cast<double>(requests) / seconds;
  // Open loop: what the server really kept up with (requests of the window over the time until
  // the last of them was answered), when it fell behind the offered rate.
  const double answered_s = std::chrono::duration<double>(last_answer - measure_from_).count();
  const double achieved =
      answered_s > 0 ? static_cast<double>(requests) / std::max(answered_s, seconds) : 0.0;

  // Delivery: every accepted activity exactly once at every participant, in seq order.
  std::uint64_t duplicate_accepted = 0, missing = 0, duplicated = 0, unexpected = 0,
                out_of_order = 0, foreign = 0, other_events = 0, reconnects = 0, disconnects = 0,
                receiver_errors = 0, delivered = 0, frames = 0;
  std::vector<std::string> receiver_samples;
  for (std::vector<std::int64_t>& seqs : accepted) {
    std::sort(seqs.begin(), seqs.end());
    for (std::size_t i = 1; i < seqs.size(); ++i) duplicate_accepted += seqs[i] == seqs[i - 1];
  }
  for (const ReceiverStats& r : receivers_) {
    delivery.insert(delivery.end(), r.delivery_us.begin(), r.delivery_us.end());
    out_of_order += r.out_of_order;
    foreign += r.foreign;
    other_events += r.other_events;
    reconnects += r.reconnects;
    disconnects += r.disconnects;
    receiver_errors += r.errors;
    frames += r.frames;
    for (const std::string& e : r.error_samples) {
      if (receiver_samples.size() < kMaxErrorSamples) receiver_samples.push_back(e);
    }
    for (std::size_t c = 0; c < accepted.size(); ++c) {
      std::vector<std::int64_t> got = c < r.seqs.size() ? r.seqs[c] : std::vector<std::int64_t>();
      std::sort(got.begin(), got.end());
      const std::vector<std::int64_t>& want = accepted[c];
      std::size_t i = 0, j = 0;
      while (i < want.size() || j < got.size()) {
        if (j < got.size() && j > 0 && got[j] == got[j - 1]) {
          ++duplicated;
          ++j;
        } else if (j >= got.size() || (i < want.size() && want[i] < got[j])) {
          ++missing;
          ++i;
        } else if (i >= want.size() || got[j] < want[i]) {
          ++unexpected;
          ++j;
        } else {
          ++delivered;
          ++i;
          ++j;
        }
      }
    }
  }
  std::sort(delivery.begin(), delivery.end());
  const bool posting = options_.scenario == "post" || options_.scenario == "preload";
  const bool delivery_ok = missing == 0 && duplicated == 0 && unexpected == 0 &&
                           out_of_order == 0 && duplicate_accepted == 0 && receiver_errors == 0;
  const double drain_s = std::chrono::duration<double>(drained_ - posting_ended_).count();

  std::cout << std::fixed << std::setprecision(2);
  std::cout << "scenario " << options_.scenario << ", " << options_.clients << " clients, "
            << (options_.rate > 0 ? "open loop at " + std::to_string(options_.rate) + " req/s"
                                  : std::string("closed loop"))
            << ", warm-up " << options_.warmup_s << " s, measured " << seconds << " s\n";
  if (posting) {
    std::cout << "  conversations " << conversations_.size() << ", participants (WebSockets) "
              << receivers_.size() << ", users " << tokens_.size() << ", content "
              << options_.content_bytes << " bytes sealed fresh per post (mean "
              << (sealed > 0 ? static_cast<double>(seal_ns) / static_cast<double>(sealed) / 1000.0
                             : 0.0)
              << " µs per seal)\n";
    std::cout << "  accepted      " << requests << " posts, " << rate << " posts/s ("
              << accepted_total << " in all, warm-up included)\n";
    if (options_.rate > 0) {
      std::cout << "  achieved      " << achieved << " posts/s (the window's posts over "
                << std::max(answered_s, seconds) << " s until the last was answered)\n";
    }
    std::cout << "  post latency ms    " << LatencyLine(latency) << "\n";
  } else if (options_.scenario == "history") {
    std::cout << "  conversation seqs " << history_first_ << ".." << history_last_ << ", pages of "
              << kHistoryPage << "\n";
    std::cout << "  answered      " << requests << " pages, " << rate << " pages/s\n";
    std::cout << "  latency ms    " << LatencyLine(latency) << "\n";
  } else {
    std::cout << "  cluster " << options_.cluster << ", " << requests
              << " rounds (one direct and one relayed ping each), " << rate << " rounds/s\n";
    std::cout << "  direct ms     " << LatencyLine(latency) << "\n";
    std::cout << "  relayed ms    " << LatencyLine(relay) << "\n";
    std::cout << "  relay - direct: p50 " << Percentile(relay, 0.5) - Percentile(latency, 0.5)
              << " ms, p99 " << Percentile(relay, 0.99) - Percentile(latency, 0.99)
              << " ms; per round median "
              << (difference.empty()
                      ? 0.0
                      : static_cast<double>(difference[difference.size() / 2]) / 1000.0)
              << " ms\n";
  }
  std::cout << "  503+Retry-After " << overloaded << ", 429 " << rate_limited
            << " (setup/warm-up: " << setup_overloaded << ", " << setup_rate_limited << ")\n";
  std::cout << "  errors        " << errors << " (setup/warm-up: " << setup_errors << ")\n";
  std::cout << "  per client    min " << *min_client << " req/s, max " << *max_client << " req/s\n";
  for (const std::string& sample : samples) std::cout << "  error: " << sample << "\n";
  if (options_.scenario == "post") {
    std::cout << "  delivery      " << delivered << " of " << accepted_total * receivers_.size()
              << " (accepted x participants) delivered exactly once; missing " << missing
              << ", duplicated " << duplicated << ", out of order " << out_of_order
              << ", unexpected " << unexpected << ", not this run's " << foreign
              << ", other conversations " << other_events << "; " << frames << " frames, "
              << disconnects << " disconnects, " << reconnects << " reconnects, " << receiver_errors
              << " realtime errors; last "
              << "delivery " << drain_s << " s after the last post's answer\n";
    std::cout << "  delivery ms   " << LatencyLine(delivery) << "\n";
    for (const std::string& sample : receiver_samples)
      std::cout << "  realtime: " << sample << "\n";
    std::cout << "  delivery check " << (delivery_ok ? "passed" : "FAILED") << "\n";
  }

  if (!options_.json_out.empty()) {
    Object out;
    out.set("scenario", options_.scenario);
    out.set("clients", options_.clients);
    out.set("participants", receivers_.size());
    out.set("conversations", conversations_.size());
    out.set("users", tokens_.size());
    out.set("duration_s", seconds);
    out.set("warmup_s", options_.warmup_s);
    out.set("rate_target", options_.rate);
    out.set("content_bytes", options_.content_bytes);
    out.set("requests", requests);
    out.set("requests_per_s", rate);
    out.set("achieved_per_s", achieved);
    out.set("latency_ms", LatencyObject(latency));
    out.set("overloaded_503", overloaded);
    out.set("rate_limited_429", rate_limited);
    out.set("errors", errors);
    options_.tiers.Report(tiers_from_, tiers_to_, requests, out);
    out.set("setup_errors", setup_errors);
    out.set("setup_overloaded", setup_overloaded);
    out.set("setup_rate_limited", setup_rate_limited);
    Poco::JSON::Array clients;
    for (double c : per_client) clients.add(c);
    out.set("per_client_requests_per_s", clients);
    out.set("per_client_min", *min_client);
    out.set("per_client_max", *max_client);
    Poco::JSON::Array error_samples;
    for (const std::string& sample : samples) error_samples.add(sample);
    out.set("error_samples", error_samples);
    if (posting) {
      out.set("accepted_total", accepted_total);
      out.set(
          "seal_us_mean",
          sealed > 0 ? static_cast<double>(seal_ns) / static_cast<double>(sealed) / 1000.0 : 0.0);
      if (!conversations_.empty()) out.set("conversation", conversations_[0].id);
    }
    if (options_.scenario == "post") {
      Object d;
      d.set("delivered", delivered);
      d.set("expected", accepted_total * receivers_.size());
      d.set("missing", missing);
      d.set("duplicated", duplicated);
      d.set("out_of_order", out_of_order);
      d.set("unexpected", unexpected);
      d.set("duplicate_accepted_seqs", duplicate_accepted);
      d.set("not_this_run", foreign);
      d.set("other_conversations", other_events);
      d.set("frames", frames);
      d.set("disconnects", disconnects);
      d.set("reconnects", reconnects);
      d.set("realtime_errors", receiver_errors);
      d.set("drain_s", drain_s);
      d.set("latency_ms", LatencyObject(delivery));
      d.set("passed", delivery_ok);
      out.set("delivery", d);
    }
    if (options_.scenario == "history") {
      out.set("conversation", history_id_);
      out.set("first_seq", history_first_);
      out.set("last_seq", history_last_);
    }
    if (options_.scenario == "relay") {
      out.set("cluster", options_.cluster);
      out.set("direct_ms", LatencyObject(latency));
      out.set("relay_ms", LatencyObject(relay));
      out.set("p50_difference_ms", Percentile(relay, 0.5) - Percentile(latency, 0.5));
      out.set("p99_difference_ms", Percentile(relay, 0.99) - Percentile(latency, 0.99));
      out.set("per_round_median_difference_ms",
              difference.empty() ? 0.0
                                 : static_cast<double>(difference[difference.size() / 2]) / 1000.0);
    }
    std::ofstream file(options_.json_out);
    out.stringify(file, 2);
    file << "\n";
    if (!file) {
      std::cerr << "core_load: cannot write " << options_.json_out << "\n";
      return 1;
    }
  }
  const bool ok = errors == 0 && setup_errors == 0 && (options_.scenario != "post" || delivery_ok);
  return ok ? 0 : 3;
}

int Main(int argc, char** argv) {
  Result<Options> options = ParseOptions(argc, argv);
  if (!options.ok()) {
    if (!options.error().message().empty()) {
      std::cerr << "core_load: " << options.error().message() << "\n";
    }
    std::cerr << kUsage;
    return 64;
  }
  Result<Endpoint> core = ParseHttpsUrl(options->url, "url");
  if (!core.ok()) {
    std::cerr << "core_load: " << core.error().message() << "\n";
    return 64;
  }
  std::vector<std::string> tokens, subjects;
  auto forget = [&] {
    for (std::string& t : tokens) ZeroizeString(t);
  };
  for (const std::string& path : options->token_files) {
    Result<std::string> token = ReadToken(path);
    Result<std::string> subject =
        token.ok() ? TokenSubject(*token, path) : Result<std::string>(token.error());
    if (!subject.ok()) {
      std::cerr << "core_load: " << subject.error().message() << "\n";
      forget();
      return 64;
    }
    tokens.push_back(std::move(token).value());
    subjects.push_back(std::move(subject).value());
  }
  std::string kms_token;
  Endpoint kms;
  if (options->scenario == "relay") {
    Result<Endpoint> parsed = ParseHttpsUrl(options->kms_url, "kms-url");
    Result<std::string> token = ReadToken(options->kms_token_file);
    if (!parsed.ok() || !token.ok()) {
      std::cerr << "core_load: "
                << (parsed.ok() ? token.error().message() : parsed.error().message()) << "\n";
      forget();
      return 64;
    }
    kms = *parsed;
    kms_token = std::move(token).value();
  }

  Poco::Net::initializeSSL();
  Poco::Net::Context::Ptr context;
  try {
    Poco::Net::Context::Params params;
    params.caLocation = options->ca;
    params.verificationMode = Poco::Net::Context::VERIFY_RELAXED;
    params.loadDefaultCAs = false;
    context = new Poco::Net::Context(Poco::Net::Context::TLS_CLIENT_USE, params);
    context->requireMinimumProtocol(Poco::Net::Context::PROTO_TLSV1_2);
    context->enableSessionCache(true);
  } catch (const Poco::Exception& e) {
    std::cerr << "core_load: cannot use " << options->ca << ": " << e.displayText() << "\n";
    forget();
    return 64;
  }

  int exit_code = 0;
  {
    LoadRun run(*options, *core, context, std::move(tokens), std::move(subjects));
    Status setup = OkStatus();
    if (options->scenario == "history") {
      setup = run.SetupHistory();
    } else if (options->scenario == "relay") {
      run.set_kms(kms, std::move(kms_token));
      setup = run.SetupRelay();
    } else {
      setup = run.SetupConversations();
    }
    if (!setup.ok()) {
      std::cerr << "core_load: setup: " << setup.error().ToString() << "\n";
      exit_code = 69;
    } else {
      run.Run();
      exit_code = run.Report();
    }
  }
  Poco::Net::uninitializeSSL();
  return exit_code;
}

}  // namespace
}  // namespace strongroom::bench

int main(int argc, char** argv) { return strongroom::bench::Main(argc, argv); }
