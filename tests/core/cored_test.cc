// cored as it runs in production, driven from outside: the `cored` binary as a child process on
// 127.0.0.1 (listen port 0, --port-file), its own SQLite files and files directory in a temporary
// directory, HTTPS with a throwaway CA made by the openssl tool, core tokens minted with keys made
// by `strongroom-idp`, WebSocket clients for the realtime stream, content encrypted as a client
// does (dir/A256GCM JWE under keys the test made), and for the relay a real `kmsd` on a SoftHSM2
// token that dials out to cored.
//
// Suites: CoredApiTest (every endpoint and its refusals), CoredRealtimeTest (delivery and resume),
// CoredRelayTest (the KMS relay with kmsd, labelled softhsm), CoredCrashTest (SIGKILL during a
// burst), CoredFaultTest (two nodes on PostgreSQL behind HAProxy, one killed while clients post
// and listen), CoredInvariantTest (no plaintext word or content key in anything cored writes),
// CoredLinkTest (cored links no PKCS#11). No assertion depends on timing: waits are bounded by
// kPatience and fail with a message.
#include <Poco/Buffer.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/Net/WebSocket.h>
#include <Poco/Pipe.h>
#include <Poco/PipeStream.h>
#include <Poco/Process.h>
#include <Poco/StreamCopier.h>
#include <Poco/UUIDGenerator.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../support/connection_flood.h"
#include "../support/daemon_process.h"
#include "../support/haproxy_front.h"
#include "../support/postgres_cluster.h"
#include "../support/raw_websocket.h"
#include "../support/softhsm_sandbox.h"
#include "../support/test_dir.h"
#include "../support/tool_steps.h"
#include "../support/wait_until.h"
#include "index_postings.h"
#include "strongroom/client/https_transport.h"
#include "strongroom/client/kms_session.h"
#include "strongroom/common/database.h"
#include "strongroom/common/jose.h"
#include "strongroom/common/jose/base64url.h"
#include "strongroom/common/jose/dir_jwe.h"
#include "strongroom/common/jwt.h"
#include "strongroom/common/sql_statement.h"
#include "strongroom/core/api_requests.h"
#include "strongroom/core/core_service.h"
#include "strongroom/core/kms_relay.h"

namespace strongroom::core {
namespace {

using testing::WaitUntil;

using Poco::JSON::Array;
using Poco::JSON::Object;
using strongroom::testing::ConnectionFlood;
using strongroom::testing::DaemonProcess;
using strongroom::testing::ForeignProcess;
using strongroom::testing::FreePort;
using strongroom::testing::InitTestIdps;
using strongroom::testing::kSoftHsmModule;
using strongroom::testing::LocalHaproxyConfig;
using strongroom::testing::MakeTestTls;
using strongroom::testing::RawWebSocket;
using strongroom::testing::SoftHsmSandbox;
using strongroom::testing::TestDir;
using strongroom::testing::Tool;
using strongroom::testing::ToolRun;
using strongroom::testing::ToolSteps;
namespace fs = std::filesystem;

constexpr char kKmsHost[] = "kms.acme.test";
constexpr char kCluster[] = "kms://kms.acme.test";
constexpr char kAlice[] = "alice@acme.test";
constexpr char kBob[] = "bob@acme.test";
constexpr char kCarol[] = "carol@acme.test";
constexpr char kDave[] = "dave@acme.test";
constexpr char kErin[] = "erin@acme.test";
constexpr char kIndexer[] = "indexer@acme.test";
constexpr std::uint64_t kMaxFileBytes = 1 << 20;      // max_file_mb = 1
constexpr auto kPatience = std::chrono::seconds(60);  // for what must happen, not how fast

// ---------------------------------------------------------------------------------------------
// Small helpers.

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::int64_t Now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::vector<std::uint8_t> RandomBytes(std::size_t size) {
  std::vector<std::uint8_t> bytes(size);
  RAND_bytes(bytes.data(), static_cast<int>(bytes.size()));
  return bytes;
}

std::string Hex(std::span<const std::uint8_t> bytes, bool upper = false) {
  const char* digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  std::string out;
  for (std::uint8_t b : bytes) {
    out += digits[b >> 4];
    out += digits[b & 0x0f];
  }
  return out;
}

std::string NewUuid() { return Poco::UUIDGenerator::defaultGenerator().createRandom().toString(); }

std::string ResourceUri(const std::string& host = kKmsHost) {
  return "kms://" + host + "/resources/" + NewUuid();
}

std::string Sha256Hex(std::string_view data) {
  std::uint8_t digest[32];
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr);
  return Hex({digest, length});
}

std::string Base64(std::span<const std::uint8_t> bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes.data(),
                                static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::string Stringify(const Object& object) {
  std::ostringstream out;
  object.stringify(out);
  return out.str();
}

Object::Ptr ParseJson(const std::string& text) {
  try {
    Poco::JSON::Parser parser;
    Poco::Dynamic::Var parsed = parser.parse(text);
    if (parsed.type() == typeid(Object::Ptr)) return parsed.extract<Object::Ptr>();
  } catch (const std::exception&) {
  }
  return nullptr;
}

Array Strings(const std::vector<std::string>& items) {
  Array array;
  for (const std::string& item : items) array.add(item);
  return array;
}

// POST /v1/index/search's "queries": each conversation with the same tokens.
Array Queries(const std::vector<std::string>& conversations,
              const std::vector<std::string>& tokens) {
  Array out;
  for (const std::string& id : conversations) {
    Object room;
    room.set("conversationId", id);
    room.set("tokens", Strings(tokens));
    out.add(room);
  }
  return out;
}

std::vector<std::string> Strings(const Array::Ptr& array) {
  std::vector<std::string> out;
  for (unsigned i = 0; array && i < array->size(); ++i) {
    out.push_back(array->getElement<std::string>(i));
  }
  return out;
}

std::string Text(const Object::Ptr& object, const std::string& name) {
  return object && object->has(name) && !object->isNull(name) ? object->getValue<std::string>(name)
                                                              : "";
}

std::int64_t Seq(const Object::Ptr& activity) {
  return activity && activity->has("seq") ? activity->getValue<std::int64_t>("seq") : -1;
}

std::vector<std::string> Ids(const std::vector<Object::Ptr>& activities) {
  std::vector<std::string> ids;
  for (const Object::Ptr& activity : activities) ids.push_back(Text(activity, "id"));
  return ids;
}

std::vector<std::string> Verbs(const std::vector<Object::Ptr>& activities) {
  std::vector<std::string> verbs;
  for (const Object::Ptr& activity : activities) verbs.push_back(Text(activity, "verb"));
  return verbs;
}

// A content key as a client holds it: a key URL on the KMS and its 32 bytes.
struct ContentKey {
  std::string uri;
  std::vector<std::uint8_t> bytes;

  static ContentKey Make(const std::string& host = kKmsHost) {
    return {"kms://" + host + "/keys/" + NewUuid(), RandomBytes(32)};
  }
};

// Content as a client makes it: JWE dir/A256GCM, kid = the key's URL.
std::string Seal(const ContentKey& key, std::string_view plaintext) {
  auto jwe =
      jose::EncryptDir(key.bytes, key.uri,
                       {reinterpret_cast<const std::uint8_t*>(plaintext.data()), plaintext.size()});
  EXPECT_TRUE(jwe.ok()) << jwe.error().ToString();
  return jwe.ok() ? *jwe : std::string();
}

// The plaintext of content sealed under `key`, or nullopt when it does not open.
std::optional<std::string> Unseal(const ContentKey& key, const std::string& jwe) {
  auto opened = jose::DecryptDir(jwe, [&](const jose::JoseHeader& header) -> Result<SecretBytes> {
    if (header.kid != key.uri) return Error(ErrorCode::kNotFound, "another key");
    return SecretBytes(std::span<const std::uint8_t>(key.bytes));
  });
  if (!opened.ok()) return std::nullopt;
  return std::string(opened->plaintext.as_string_view());
}

// ---------------------------------------------------------------------------------------------
// What every test shares: the CA and cored's TLS certificate, identity providers, and (made on
// first use, for the relay) a SoftHSM2 token with the KMS's root and identity keys.

class Environment {
 public:
  static Environment& Get() {
    static Environment environment;
    return environment;
  }
  ~Environment() {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  const fs::path& dir() const { return dir_; }
  std::string ca() const { return (dir_ / "ca.pem").string(); }
  std::string tls_cert() const { return (dir_ / "tls.pem").string(); }
  std::string tls_key() const { return (dir_ / "tls.key").string(); }
  std::string jwks(const std::string& org) const {
    return (dir_ / ("idp-" + org) / "jwks.json").string();
  }
  const std::string& error() const { return steps_.error(); }
  Poco::Net::Context::Ptr client_context() const { return context_; }

  // A bearer token of `org`'s identity provider (https://idp.<org>.test).
  std::string Token(const std::string& user, const std::string& audience = "core",
                    std::int64_t issued_at = 0, std::int64_t lifetime = 3600,
                    const std::string& org = "acme") const {
    const std::string key_text = ReadFile(dir_ / ("idp-" + org) / "signing-key.jwk");
    SecretBytes jwk({reinterpret_cast<const std::uint8_t*>(key_text.data()), key_text.size()});
    auto key = jose::EcKeyPair::FromPrivateJwk(jwk);
    if (!key.ok()) {
      ADD_FAILURE() << "cannot read the " << org << " signing key: " << key.error().ToString();
      return "";
    }
    auto token = MintJwt(*key, {"https://idp." + org + ".test", user, audience,
                                issued_at != 0 ? issued_at : Now() - 5, lifetime});
    EXPECT_TRUE(token.ok());
    return token.ok() ? *token : "";
  }

  // The KMS's side (slow: a token, RSA keys); false with `error` set when it cannot be made.
  bool PrepareKms(std::string* error) {
    std::lock_guard<std::mutex> lock(kms_mutex_);
    if (!kms_ready_ && kms_error_.empty()) {
      const std::string label = SoftHsmSandbox::Get().CreateToken(kSoftHsmModule, "cored");
      hsm_section_ = "[hsm]\ntokens = primary\nnode_id = test\n[hsm.primary]\nuri = " +
                     SoftHsmSandbox::Get().Uri(kSoftHsmModule, label) + "\n";
      const std::string hsm_ini = (dir_ / "hsm.ini").string();
      std::ofstream(hsm_ini) << hsm_section_;
      const std::string d = dir_.string();
      const Poco::Process::Env env{
          {"SOFTHSM2_CONF", SoftHsmSandbox::Get().dir() + "/softhsm2.conf"}};
      for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
               {"--config", hsm_ini, "hsm", "init-root", "--org", "acme"},
               {"--config", hsm_ini, "hsm", "init-identity"},
               {"--config", hsm_ini, "hsm", "certify-identity", "--ca-cert", d + "/ca.pem",
                "--ca-key", d + "/ca.key", "--host", kKmsHost, "--out", d + "/identity.pem",
                "--days", "2"}}) {
        ToolRun run = Tool(KMSCTL_PATH, args, env);
        if (run.exit_code != 0) {
          kms_error_ = "kmsctl " + args[2] + " " + args[3] + " failed: " + run.err;
          break;
        }
      }
      kms_ready_ = kms_error_.empty();
    }
    *error = kms_error_;
    return kms_ready_;
  }
  const std::string& hsm_section() const { return hsm_section_; }

 private:
  Environment() {
    Poco::Net::initializeSSL();
    dir_ = fs::temp_directory_path() / ("sr-cored-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const std::string d = dir_.string();
    MakeTestTls(steps_, d, "Strongroom cored test CA");
    // acme and globex are trusted by cored; initech is not.
    InitTestIdps(steps_, d, IDP_PATH, {"acme", "globex", "initech"});
    if (steps_.error().empty()) {
      Poco::Net::Context::Params params;
      params.caLocation = ca();
      params.verificationMode = Poco::Net::Context::VERIFY_STRICT;
      context_ = new Poco::Net::Context(Poco::Net::Context::TLS_CLIENT_USE, params);
    }
  }

  fs::path dir_;
  ToolSteps steps_;
  Poco::Net::Context::Ptr context_;
  std::mutex kms_mutex_;
  bool kms_ready_ = false;
  std::string kms_error_;
  std::string hsm_section_;
};

Environment& env() { return Environment::Get(); }

// ---------------------------------------------------------------------------------------------
// An HTTPS client of cored: one keep-alive connection, a bearer token.

struct Reply {
  int status = 0;     // 0: no answer (see error)
  std::string error;  // why no answer came
  std::string content_type;
  std::map<std::string, std::string> headers;
  std::string body;

  Object::Ptr json() const { return ParseJson(body); }
  std::string code() const { return Text(json(), "code"); }
  std::string header(const std::string& name) const {
    auto found = headers.find(name);
    return found == headers.end() ? "" : found->second;
  }
};

std::ostream& operator<<(std::ostream& out, const Reply& reply) {
  if (reply.status == 0) return out << "no answer: " << reply.error;
  return out << "HTTP " << reply.status << " " << reply.body.substr(0, 600);
}

struct Request {
  Request(std::string method_, std::string path_, std::string body_ = "",
          std::string content_type_ = "")
      : method(std::move(method_)),
        path(std::move(path_)),
        body(std::move(body_)),
        content_type(std::move(content_type_)) {}
  // Sends the body in chunks, without a Content-Length.
  Request& Chunked() {
    chunked = true;
    return *this;
  }
  // Announces the body's Content-Length but sends none of it.
  Request& WithoutBody() {
    send_body = false;
    return *this;
  }
  // Sends neither Content-Length nor chunks: per HTTP/1.1 the body is empty.
  Request& NoLength() {
    no_length = true;
    return *this;
  }
  Request& Header(const std::string& name, const std::string& value) {
    headers.emplace_back(name, value);
    return *this;
  }

  std::string method;
  std::string path;
  std::string body;
  std::string content_type;
  bool chunked = false;
  bool send_body = true;
  bool no_length = false;
  std::vector<std::pair<std::string, std::string>> headers;
};

class Client {
 public:
  Client(std::uint16_t port, std::string token) : port_(port), token_(std::move(token)) {}

  Reply Send(const Request& r) {
    Reply reply;
    try {
      if (!session_) {
        session_ = std::make_unique<Poco::Net::HTTPSClientSession>("127.0.0.1", port_,
                                                                   env().client_context());
        session_->setTimeout(Poco::Timespan(timeout_.count(), 0));
        session_->setKeepAlive(true);
      }
      Poco::Net::HTTPRequest request(r.method, r.path, Poco::Net::HTTPMessage::HTTP_1_1);
      request.setKeepAlive(true);
      if (!token_.empty()) request.set("Authorization", "Bearer " + token_);
      if (!r.content_type.empty()) request.setContentType(r.content_type);
      for (const auto& [name, value] : r.headers) request.set(name, value);
      const bool has_body = !r.body.empty() || r.method == Poco::Net::HTTPRequest::HTTP_POST ||
                            r.method == Poco::Net::HTTPRequest::HTTP_PUT;
      if (r.chunked) {
        request.setChunkedTransferEncoding(true);
      } else if (has_body && !r.no_length) {
        request.setContentLength64(static_cast<Poco::Int64>(r.body.size()));
      }
      std::ostream& out = session_->sendRequest(request);
      if (r.send_body) {
        // In pieces, so a chunked body is several chunks.
        for (std::size_t at = 0; at < r.body.size(); at += 64 * 1024) {
          out.write(r.body.data() + at, static_cast<std::streamsize>(
                                            std::min<std::size_t>(64 * 1024, r.body.size() - at)));
        }
      }
      Poco::Net::HTTPResponse response;
      std::istream& in = session_->receiveResponse(response);
      Poco::StreamCopier::copyToString(in, reply.body);
      reply.status = static_cast<int>(response.getStatus());
      reply.content_type = response.getContentType();
      for (const auto& [name, value] : response) reply.headers[name] = value;
      if (!response.getKeepAlive() || !r.send_body) session_.reset();
    } catch (const Poco::Exception& e) {
      reply.status = 0;
      reply.error = e.displayText();
      session_.reset();
    } catch (const std::exception& e) {
      reply.status = 0;
      reply.error = e.what();
      session_.reset();
    }
    return reply;
  }

  Reply Get(const std::string& path) { return Send(Request("GET", path)); }
  Reply Post(const std::string& path, const Object& body) {
    return Send(Request("POST", path, Stringify(body), "application/json"));
  }
  Reply Put(const std::string& path, const Object& body) {
    return Send(Request("PUT", path, Stringify(body), "application/json"));
  }
  Reply Delete(const std::string& path) { return Send(Request("DELETE", path)); }

  const std::string& token() const { return token_; }
  // How long to wait for an answer (kPatience unless set).
  void set_timeout(std::chrono::seconds timeout) {
    timeout_ = timeout;
    session_.reset();
  }

 private:
  std::uint16_t port_;
  std::string token_;
  std::chrono::seconds timeout_ = kPatience;
  std::unique_ptr<Poco::Net::HTTPSClientSession> session_;
};

// ---------------------------------------------------------------------------------------------
// A realtime client: GET /v1/events?cursor=N (or the indexer's /v1/index/events) upgraded to a
// WebSocket over TLS.

class EventStream {
 public:
  // Connects; null with `error` set when the upgrade fails.
  static std::unique_ptr<EventStream> Open(std::uint16_t port, const std::string& token,
                                           std::optional<std::int64_t> cursor, std::string* error,
                                           const std::string& path = "/v1/events") {
    auto stream = std::unique_ptr<EventStream>(new EventStream);
    try {
      stream->session_ = std::make_unique<Poco::Net::HTTPSClientSession>("127.0.0.1", port,
                                                                         env().client_context());
      stream->session_->setTimeout(Poco::Timespan(kPatience.count(), 0));
      Poco::Net::HTTPRequest request(
          Poco::Net::HTTPRequest::HTTP_GET,
          path + (cursor ? "?cursor=" + std::to_string(*cursor) : std::string()),
          Poco::Net::HTTPMessage::HTTP_1_1);
      request.set("Authorization", "Bearer " + token);
      Poco::Net::HTTPResponse response;
      stream->socket_ =
          std::make_unique<Poco::Net::WebSocket>(*stream->session_, request, response);
      stream->socket_->setMaxPayloadSize(64 * 1024 * 1024);
    } catch (const Poco::Exception& e) {
      *error = e.displayText();
      return nullptr;
    }
    return stream;
  }

  ~EventStream() { Close(); }

  // The next event, or null when none came within `patience` or the connection ended (closed()).
  Object::Ptr Next(std::chrono::milliseconds patience = kPatience) {
    const auto deadline = std::chrono::steady_clock::now() + patience;
    while (pending_.empty() && !closed_) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return nullptr;
      try {
        socket_->setReceiveTimeout(Poco::Timespan(left.count() * 1000));
        Poco::Buffer<char> buffer(0);
        int flags = 0;
        const int n = socket_->receiveFrame(buffer, flags);
        const int opcode = flags & Poco::Net::WebSocket::FRAME_OP_BITMASK;
        if (n <= 0 && opcode != Poco::Net::WebSocket::FRAME_OP_PING) {
          closed_ = true;
          break;
        }
        if (opcode == Poco::Net::WebSocket::FRAME_OP_CLOSE) {
          closed_ = true;
          break;
        }
        if (opcode == Poco::Net::WebSocket::FRAME_OP_PING) {
          socket_->sendFrame(buffer.begin(), n,
                             static_cast<int>(Poco::Net::WebSocket::FRAME_FLAG_FIN) |
                                 static_cast<int>(Poco::Net::WebSocket::FRAME_OP_PONG));
          continue;
        }
        if (opcode != Poco::Net::WebSocket::FRAME_OP_TEXT) continue;
        const std::string text(buffer.begin(), static_cast<std::size_t>(n));
        ++frames_;
        Object::Ptr frame = ParseJson(text);
        Array::Ptr events = frame ? frame->getArray("events") : nullptr;
        if (!events) {
          ADD_FAILURE() << "a realtime frame is not {\"events\": [...]}: " << text.substr(0, 300);
          closed_ = true;
          break;
        }
        for (unsigned i = 0; i < events->size(); ++i) pending_.push_back(events->getObject(i));
      } catch (const Poco::TimeoutException&) {
        return nullptr;
      } catch (const Poco::Exception& e) {
        closed_ = true;
        close_reason_ = e.displayText();
      }
    }
    if (pending_.empty()) return nullptr;
    Object::Ptr event = pending_.front();
    pending_.pop_front();
    return event;
  }

  // Exactly `count` events (fewer, with a failure, when they do not come within kPatience).
  std::vector<Object::Ptr> Take(std::size_t count, const std::string& who) {
    std::vector<Object::Ptr> events;
    while (events.size() < count) {
      Object::Ptr event = Next();
      if (!event) {
        ADD_FAILURE() << who << " received " << events.size() << " of " << count << " events ("
                      << (closed_ ? "the connection ended " + close_reason_ : "none came") << ")";
        break;
      }
      events.push_back(event);
    }
    return events;
  }

  // Events until (and with) the one whose id is `id`; fails when it does not come.
  std::vector<Object::Ptr> Until(const std::string& id, const std::string& who) {
    std::vector<Object::Ptr> events;
    for (;;) {
      Object::Ptr event = Next();
      if (!event) {
        ADD_FAILURE() << who << " never received activity " << id << " (got " << events.size()
                      << " other events; "
                      << (closed_ ? "the connection ended " + close_reason_ : "none came") << ")";
        return events;
      }
      events.push_back(event);
      if (Text(event, "id") == id) return events;
    }
  }

  bool closed() const { return closed_; }

  void Close() {
    if (!socket_ || closed_) return;
    try {
      socket_->shutdown();
      socket_->close();
    } catch (const Poco::Exception&) {
    }
    closed_ = true;
  }

 private:
  EventStream() = default;
  std::unique_ptr<Poco::Net::HTTPSClientSession> session_;
  std::unique_ptr<Poco::Net::WebSocket> socket_;
  std::deque<Object::Ptr> pending_;
  bool closed_ = false;
  std::string close_reason_;
  std::size_t frames_ = 0;
};

// ---------------------------------------------------------------------------------------------
// The fixture: a temporary directory, cored (and kmsd for the relay) as child processes.

class CoredTest : public ::testing::Test {
 protected:
  void SetUp() override {
    signal(SIGPIPE, SIG_IGN);  // a write to a connection cored closed must not end the test
    ASSERT_TRUE(env().error().empty()) << env().error();
    dir_ = std::make_unique<TestDir>();
    fs::create_directories(files_dir());
  }

  void TearDown() override {
    kmsd_.Stop(SIGKILL);
    cored_.Stop(SIGKILL);
    // No request ended in an exception cored did not expect (a 500).
    const std::string log = ReadFile(path("cored.log"));
    EXPECT_EQ(log.find("a request failed"), std::string::npos) << log;
    if (HasFailure()) {
      std::cerr << "--- cored's log ---\n" << cored_.LogTail(4000) << "\n";
      if (fs::exists(*dir_ / "kmsd.log")) {
        std::cerr << "--- kmsd's log ---\n" << kmsd_.LogTail(4000) << "\n";
      }
    }
    dir_.reset();
  }

  fs::path path(const std::string& name) const { return *dir_ / name; }
  fs::path db_path() const { return path("core.db"); }
  fs::path files_dir() const { return path("files"); }
  std::uint16_t port() const { return cored_.port(); }

  // Writes core.ini: the defaults below with `overrides` applied; `relay_token` non-empty adds
  // the KMS cluster kms://kms.acme.test with that token file; `extra` is appended as is.
  void WriteCoredConfig(const std::map<std::string, std::string>& overrides = {},
                        const std::string& relay_token_file = "", const std::string& extra = "") {
    std::map<std::string, std::string> core = {
        {"database", db_path().string()},
        {"files_dir", files_dir().string()},
        {"listen", "127.0.0.1:0"},
        {"tls_cert", env().tls_cert()},
        {"tls_key", env().tls_key()},
        {"indexer", kIndexer},
        {"indexer_org", "acme"},
        {"max_connections", "64"},
        {"max_file_mb", std::to_string(kMaxFileBytes >> 20)},
        {"rate_per_s", "100000"},
        {"rate_burst", "100000"},
    };
    for (const auto& [name, value] : overrides) core[name] = value;
    if (!relay_token_file.empty()) core["relays"] = "kms1";
    std::ofstream ini(path("core.ini"));
    ini << "[core]\n";
    for (const auto& [name, value] : core) {
      if (name == "database" && value.empty()) continue;  // the store is a [database] in `extra`
      ini << name << " = " << value << "\n";
    }
    if (!relay_token_file.empty()) {
      ini << "[relay.kms1]\ncluster = " << kCluster << "\ntoken_file = " << relay_token_file
          << "\n";
    }
    ini << "[jwt]\nissuers = acme, globex\nskew_s = 0\n"
        << "[jwt.acme]\nissuer = https://idp.acme.test\norg = acme\nsubject_domains = acme.test\n"
        << "jwks = " << env().jwks("acme")
        << "\n[jwt.globex]\nissuer = https://idp.globex.test\norg = globex\n"
        << "subject_domains = globex.test\njwks = " << env().jwks("globex") << "\n"
        << extra;
  }

  // Starts cored with core.ini (the defaults when none was written) and waits until GET /health
  // answers 200.
  bool StartCored() {
    if (!fs::exists(path("core.ini"))) WriteCoredConfig();
    return StartNode(cored_, "");
  }

  // Starts `node`: another cored with core.ini's settings but a files directory of its own
  // (files-b) and, unless `share_database`, a database of its own (b.db).
  bool StartAnotherNode(DaemonProcess& node, bool share_database = false) {
    std::string config = ReadFile(path("core.ini"));
    std::vector<std::pair<fs::path, fs::path>> own = {{files_dir(), path("files-b")}};
    if (!share_database) own.emplace_back(db_path(), path("b.db"));
    for (const auto& [from, to] : own) {
      const std::size_t at = config.find(from.string());
      EXPECT_NE(at, std::string::npos) << from;
      if (at == std::string::npos) return false;
      config.replace(at, from.string().size(), to.string());
    }
    fs::create_directories(path("files-b"));
    std::ofstream(path("core-b.ini")) << config;
    return StartNode(node, "-b");
  }

  // Starts `node` with core<suffix>.ini, its log and port file named alike, and waits until GET
  // /health answers 200.
  bool StartNode(DaemonProcess& node, const std::string& suffix) {
    const bool started = node.Start(
        {CORED_PATH,
         {"--config", path("core" + suffix + ".ini").string()},
         {},
         path("cored" + suffix + ".log").string(),
         path("cored" + suffix + ".port").string()},
        [](std::uint16_t port) { return Client(port, "").Get("/health").status == 200; });
    EXPECT_TRUE(started) << node.error();
    return started;
  }

  // HAProxy with the example configuration (deploy/haproxy/strongroom.cfg) made local: its fronts
  // on `binds`, its backends' servers on `servers` (LocalHaproxyConfig); true once each of
  // `serving` (fronts) answers GET /health.
  bool StartHaproxy(const std::map<std::string, std::uint16_t>& binds,
                    const std::map<std::string, std::vector<std::uint16_t>>& servers,
                    const std::vector<std::uint16_t>& serving) {
    EXPECT_TRUE(fs::exists(HAPROXY_PATH)) << HAPROXY_PATH << " is missing: scripts/setup-debian";
    if (!fs::exists(HAPROXY_PATH)) return false;
    const std::string config =
        LocalHaproxyConfig(ReadFile(HAPROXY_EXAMPLE), binds, servers, env().ca());
    std::ofstream(path("haproxy.cfg")) << config;
    ToolRun check = Tool(HAPROXY_PATH, {"-c", "-f", path("haproxy.cfg").string()});
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err << config;
    if (check.exit_code != 0) return false;
    haproxy_ = std::make_unique<ForeignProcess>(
        std::vector<std::string>{HAPROXY_PATH, "-db", "-f", path("haproxy.cfg").string()},
        path("haproxy.log").string());
    const bool up = WaitUntil([&] {
      return std::all_of(serving.begin(), serving.end(), [](std::uint16_t front) {
        return Client(front, "").Get("/health").status == 200;
      });
    });
    EXPECT_TRUE(up) << FrontLog();
    return up;
  }
  std::string FrontLog() const { return ReadFile(path("haproxy.log")); }
  bool FrontLogged(const std::string& text) const {
    return FrontLog().find(text) != std::string::npos;
  }

  int StopCored(int signal_number) {
    const int status = cored_.Stop(signal_number);
    EXPECT_NE(status, DaemonProcess::kStopTimedOut) << cored_.error();
    return status;
  }

  Client As(const std::string& user) { return Client(port(), env().Token(user)); }

  // cored on a database of its own in the tests' throwaway PostgreSQL cluster ([database]).
  bool StartCoredOnPostgres() {
    Result<std::string> conninfo = testing::PostgresCluster::NewDatabase();
    EXPECT_TRUE(conninfo.ok()) << conninfo.error().ToString();
    if (!conninfo.ok()) return false;
    WriteCoredConfig({{"database", ""}}, "",
                     "[database]\nengine = postgresql\nconninfo = " + *conninfo + "\n");
    return StartCored();
  }

  std::unique_ptr<EventStream> Connect(const std::string& user,
                                       std::optional<std::int64_t> cursor = std::nullopt) {
    std::string error;
    auto stream = EventStream::Open(port(), env().Token(user), cursor, &error);
    EXPECT_TRUE(stream) << user << " cannot open the realtime stream: " << error;
    return stream;
  }

  // POST /v1/conversations; the conversation, or null with a failure.
  static Object::Ptr Create(Client& client, const ContentKey& key,
                            const std::vector<std::string>& participants) {
    Object body;
    body.set("kmsResourceUri", ResourceUri());
    body.set("keyUri", key.uri);
    if (!participants.empty()) body.set("participants", Strings(participants));
    Reply reply = client.Post("/v1/conversations", body);
    EXPECT_EQ(reply.status, 201) << reply;
    if (reply.status != 201) return nullptr;
    Object::Ptr conversation = reply.json()->getObject("conversation");
    EXPECT_TRUE(conversation) << reply;
    return conversation;
  }

  static Reply PostContent(Client& client, const std::string& conversation,
                           const std::string& content, const std::string& client_id = "") {
    Object body;
    body.set("content", content);
    if (!client_id.empty()) body.set("clientActivityId", client_id);
    return client.Post("/v1/conversations/" + conversation + "/activities", body);
  }

  // Posts `text` sealed under `key`; the activity, or null with a failure.
  static Object::Ptr Post(Client& client, const std::string& conversation, const ContentKey& key,
                          const std::string& text) {
    Reply reply = PostContent(client, conversation, Seal(key, text));
    EXPECT_EQ(reply.status, 201) << reply;
    return reply.status == 201 ? reply.json() : nullptr;
  }

  // The activity of a membership or key change ({activity, kmsAnswer?}), or null.
  static Object::Ptr ChangeActivity(const Reply& reply) {
    EXPECT_EQ(reply.status, 200) << reply;
    Object::Ptr json = reply.json();
    return reply.status == 200 && json ? json->getObject("activity") : nullptr;
  }

  // The whole history of a conversation, oldest first, read forward in pages.
  static std::vector<Object::Ptr> History(Client& client, const std::string& conversation,
                                          std::size_t page = 200) {
    std::vector<Object::Ptr> all;
    std::int64_t after = 0;
    for (int pages = 0; pages < 10000; ++pages) {
      Reply reply = client.Get("/v1/conversations/" + conversation + "/activities?after=" +
                               std::to_string(after) + "&limit=" + std::to_string(page));
      EXPECT_EQ(reply.status, 200) << reply;
      if (reply.status != 200) break;
      Object::Ptr json = reply.json();
      Array::Ptr items = json->getArray("items");
      for (unsigned i = 0; items && i < items->size(); ++i) all.push_back(items->getObject(i));
      if (!json->getValue<bool>("more") || !items || items->size() == 0) break;
      after = Seq(all.back());
    }
    return all;
  }

  std::int64_t LastSeq(Client& client, const std::string& conversation) {
    Reply reply = client.Get("/v1/conversations/" + conversation);
    EXPECT_EQ(reply.status, 200) << reply;
    return reply.status == 200 ? reply.json()->getValue<std::int64_t>("lastSeq") : -1;
  }

  // The blobs and uploads under `dir`, not the nodes' locks (see directory_blob_store.h).
  std::size_t CountFiles(const fs::path& dir) {
    std::size_t count = 0;
    for (const auto& entry : fs::recursive_directory_iterator(dir)) {
      if (entry.is_regular_file() && entry.path().extension() != ".lock") ++count;
    }
    return count;
  }

  std::unique_ptr<TestDir> dir_;
  DaemonProcess cored_;
  DaemonProcess kmsd_;
  std::unique_ptr<ForeignProcess> haproxy_;  // StartHaproxy
};

// ---------------------------------------------------------------------------------------------
// 1. Every endpoint and its refusals.

class CoredApiTest : public CoredTest {};

TEST_F(CoredApiTest, ConversationsAreCreatedAndShownToTheirParticipantsOnly) {
  ASSERT_TRUE(StartCored());
  Client alice = As(kAlice), bob = As(kBob), carol = As(kCarol);
  const ContentKey key = ContentKey::Make();

  Object::Ptr with = Create(alice, key, {kBob});
  ASSERT_TRUE(with);
  const std::string id = Text(with, "id");
  EXPECT_EQ(id.size(), 36u);
  EXPECT_EQ(Strings(with->getArray("participants")), (std::vector<std::string>{kAlice, kBob}));
  EXPECT_EQ(Text(with, "createdBy"), kAlice);
  EXPECT_EQ(Text(with, "currentKeyUri"), key.uri);
  EXPECT_EQ(Text(with, "kmsResourceUri").rfind(std::string(kCluster) + "/resources/", 0), 0u);
  EXPECT_GT(with->getValue<std::int64_t>("lastSeq"), 0);
  EXPECT_FALSE(Text(with, "created").empty());

  Object::Ptr alone = Create(alice, ContentKey::Make(), {});
  ASSERT_TRUE(alone);
  EXPECT_EQ(Strings(alone->getArray("participants")), (std::vector<std::string>{kAlice}));

  // A participant sees it; anyone else gets the answer an unknown id gets.
  Reply for_bob = bob.Get("/v1/conversations/" + id);
  ASSERT_EQ(for_bob.status, 200) << for_bob;
  EXPECT_EQ(Text(for_bob.json(), "id"), id);
  Reply for_carol = carol.Get("/v1/conversations/" + id);
  EXPECT_EQ(for_carol.status, 404) << for_carol;
  EXPECT_EQ(for_carol.code(), "not_found");
  EXPECT_EQ(carol.Get("/v1/conversations/" + Text(alone, "id")).status, 404);
  Reply unknown = alice.Get("/v1/conversations/" + NewUuid());
  EXPECT_EQ(unknown.status, 404) << unknown;
  EXPECT_EQ(unknown.code(), "not_found");
  EXPECT_EQ(alice.Get("/v1/conversations/not-an-id").status, 404);

  // The creation is the first activity: who, which key, whom.
  std::vector<Object::Ptr> history = History(bob, id);
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(Text(history[0], "verb"), "create");
  EXPECT_EQ(Text(history[0], "actor"), kAlice);
  EXPECT_EQ(Text(history[0], "keyUri"), key.uri);
  EXPECT_EQ(Seq(history[0]), with->getValue<std::int64_t>("lastSeq"));

  // Refused creations store nothing.
  auto refused = [&](Object body, const std::string& why) {
    Reply reply = alice.Post("/v1/conversations", body);
    EXPECT_EQ(reply.status, 400) << why << ": " << reply;
    EXPECT_EQ(reply.code(), "invalid_argument") << why;
  };
  Object no_resource;
  no_resource.set("keyUri", key.uri);
  refused(no_resource, "no kmsResourceUri");
  Object bad_key;
  bad_key.set("kmsResourceUri", ResourceUri());
  bad_key.set("keyUri", "https://example.test/key");
  refused(bad_key, "a keyUri that is not a kms:// key URL");
  Object other_kms;
  other_kms.set("kmsResourceUri", ResourceUri());
  other_kms.set("keyUri", ContentKey::Make("kms.globex.test").uri);
  refused(other_kms, "a key on another KMS than the resource");
  Object bad_participants;
  bad_participants.set("kmsResourceUri", ResourceUri());
  bad_participants.set("keyUri", key.uri);
  bad_participants.set("participants", "bob");
  refused(bad_participants, "participants not an array");
  Object control_char;
  control_char.set("kmsResourceUri", ResourceUri());
  control_char.set("keyUri", key.uri);
  control_char.set("participants", Strings({"bad\nuser"}));
  refused(control_char, "a user id with a control character");
  Reply mine = alice.Get("/v1/conversations?limit=200");
  ASSERT_EQ(mine.status, 200) << mine;
  EXPECT_EQ(mine.json()->getArray("items")->size(), 2u) << mine;
}

// Issue 11: two Content-Length headers (or one beside Transfer-Encoding) were accepted, the first
// winning: where request smuggling behind a proxy starts. Refused whole, the connection closed.
TEST_F(CoredApiTest, AmbiguousBodyFramingIsRefused) {
  ASSERT_TRUE(StartCored());
  for (const bool transfer_encoding : {false, true}) {
    Poco::Net::HTTPSClientSession session("127.0.0.1", port(), env().client_context());
    Poco::Net::HTTPRequest request("POST", "/v1/conversations", Poco::Net::HTTPMessage::HTTP_1_1);
    request.set("Authorization", "Bearer " + env().Token(kAlice));
    request.setContentType("application/json");
    request.add("Content-Length", "2");
    request.add(transfer_encoding ? "Transfer-Encoding" : "Content-Length",
                transfer_encoding ? "chunked" : "200");
    session.sendRequest(request) << "{}";
    Poco::Net::HTTPResponse response;
    std::string body;
    Poco::StreamCopier::copyToString(session.receiveResponse(response), body);
    EXPECT_EQ(response.getStatus(), 400) << body;
    EXPECT_NE(body.find("bad_framing"), std::string::npos) << body;
    EXPECT_FALSE(response.getKeepAlive());
  }
}

TEST_F(CoredApiTest, ListingMineIsPagedWithNext) {
  ASSERT_TRUE(StartCored());
  Client alice = As(kAlice), bob = As(kBob), carol = As(kCarol);
  std::set<std::string> created, with_bob;
  for (int i = 0; i < 5; ++i) {
    Object::Ptr conversation =
        Create(alice, ContentKey::Make(),
               i % 2 == 0 ? std::vector<std::string>{kBob} : std::vector<std::string>{});
    ASSERT_TRUE(conversation);
    created.insert(Text(conversation, "id"));
    if (i % 2 == 0) with_bob.insert(Text(conversation, "id"));
  }

  auto list_all = [&](Client& client, int limit, int* pages) {
    std::vector<std::string> ids;
    std::vector<std::int64_t> last_seqs;
    std::string query = "?limit=" + std::to_string(limit);
    for (*pages = 0; *pages < 20; ++*pages) {
      Reply reply = client.Get("/v1/conversations" + query);
      EXPECT_EQ(reply.status, 200) << reply;
      if (reply.status != 200) break;
      Object::Ptr json = reply.json();
      Array::Ptr items = json->getArray("items");
      EXPECT_LE(items->size(), static_cast<std::size_t>(limit));
      for (unsigned i = 0; i < items->size(); ++i) {
        ids.push_back(Text(items->getObject(i), "id"));
        last_seqs.push_back(items->getObject(i)->getValue<std::int64_t>("lastSeq"));
      }
      if (!json->has("next")) break;
      query = "?limit=" + std::to_string(limit) +
              "&before=" + std::to_string(json->getValue<std::int64_t>("next"));
    }
    // Newest first: the most recently active conversation leads.
    EXPECT_TRUE(std::is_sorted(last_seqs.rbegin(), last_seqs.rend()));
    return ids;
  };
  int pages = 0;
  std::vector<std::string> alices = list_all(alice, 2, &pages);
  EXPECT_GE(pages, 2);
  EXPECT_EQ(alices.size(), 5u);
  EXPECT_EQ(std::set<std::string>(alices.begin(), alices.end()), created);
  std::vector<std::string> bobs = list_all(bob, 2, &pages);
  EXPECT_EQ(std::set<std::string>(bobs.begin(), bobs.end()), with_bob);
  EXPECT_EQ(bobs.size(), with_bob.size());
  std::vector<std::string> carols = list_all(carol, 2, &pages);
  EXPECT_TRUE(carols.empty());

  for (const std::string query :
       {"?limit=0", "?limit=201", "?limit=x", "?before=-1", "?colour=1", "?limit=2&limit=3"}) {
    Reply reply = alice.Get("/v1/conversations" + query);
    EXPECT_EQ(reply.status, 400) << query << ": " << reply;
  }
}

TEST_F(CoredApiTest, AddingRemovingAndLeavingAreActivities) {
  ASSERT_TRUE(StartCored());
  Client alice = As(kAlice), bob = As(kBob), carol = As(kCarol), dave = As(kDave), erin = As(kErin);
  const ContentKey key = ContentKey::Make();
  Object::Ptr conversation = Create(alice, key, {kBob});
  ASSERT_TRUE(conversation);
  const std::string id = Text(conversation, "id");
  const std::string base = "/v1/conversations/" + id + "/participants";

  Object add;
  add.set("userIds", Strings({kCarol, kDave}));
  Object::Ptr added = ChangeActivity(alice.Post(base, add));
  ASSERT_TRUE(added);
  EXPECT_EQ(Text(added, "verb"), "add");
  EXPECT_EQ(Text(added, "actor"), kAlice);
  EXPECT_EQ(Strings(added->getArray("objectUsers")), (std::vector<std::string>{kCarol, kDave}));
  Reply for_carol = carol.Get("/v1/conversations/" + id);
  ASSERT_EQ(for_carol.status, 200) << for_carol;
  EXPECT_EQ(Strings(for_carol.json()->getArray("participants")),
            (std::vector<std::string>{kAlice, kBob, kCarol, kDave}));

  // Refusals.
  Object again;
  again.set("userIds", Strings({kCarol}));
  Reply twice = alice.Post(base, again);
  EXPECT_EQ(twice.status, 409) << twice;
  EXPECT_EQ(twice.code(), "already_exists");
  Object none;
  none.set("userIds", Array());
  EXPECT_EQ(alice.Post(base, none).status, 400);
  Object by_outsider;
  by_outsider.set("userIds", Strings({kErin}));
  EXPECT_EQ(erin.Post(base, by_outsider).status, 404);
  EXPECT_EQ(erin.Delete(base + "/" + kBob).status, 404);

  // alice removes bob: bob loses access at once.
  Object::Ptr removed = ChangeActivity(alice.Delete(base + "/" + kBob));
  ASSERT_TRUE(removed);
  EXPECT_EQ(Text(removed, "verb"), "remove");
  EXPECT_EQ(Strings(removed->getArray("objectUsers")), (std::vector<std::string>{kBob}));
  EXPECT_EQ(bob.Get("/v1/conversations/" + id).status, 404);
  EXPECT_EQ(bob.Get("/v1/conversations/" + id + "/activities").status, 404);
  EXPECT_EQ(PostContent(bob, id, Seal(key, "after removal")).status, 404);
  Reply removed_again = alice.Delete(base + "/" + kBob);
  EXPECT_EQ(removed_again.status, 404) << removed_again;

  // carol leaves (removes herself); an empty JSON body with no kmsMessage is fine too.
  Reply leave = carol.Send(Request("DELETE", base + "/" + kCarol, "{}", "application/json"));
  Object::Ptr left = ChangeActivity(leave);
  ASSERT_TRUE(left);
  EXPECT_EQ(Text(left, "verb"), "leave");
  EXPECT_EQ(Strings(left->getArray("objectUsers")), (std::vector<std::string>{kCarol}));
  EXPECT_EQ(carol.Get("/v1/conversations/" + id).status, 404);

  std::vector<Object::Ptr> history = History(dave, id);
  EXPECT_EQ(Verbs(history), (std::vector<std::string>{"create", "add", "remove", "leave"}));
  EXPECT_EQ(Ids(history), Ids(History(alice, id)));
  ASSERT_EQ(history.size(), 4u);
  EXPECT_EQ(Text(history[1], "id"), Text(added, "id"));
  EXPECT_EQ(Text(history[2], "id"), Text(removed, "id"));
  EXPECT_EQ(Text(history[3], "id"), Text(left, "id"));

  // The last participant cannot leave.
  Object::Ptr solo = Create(alice, ContentKey::Make(), {});
  ASSERT_TRUE(solo);
  Reply last = alice.Delete("/v1/conversations/" + Text(solo, "id") + "/participants/" + kAlice);
  EXPECT_EQ(last.status, 409) << last;
  EXPECT_EQ(History(alice, Text(solo, "id")).size(), 1u);
}

TEST_F(CoredApiTest, PostingUnderARotatedKeyIsRefusedWithKeyRotationRequired) {
  ASSERT_TRUE(StartCored());
  Client alice = As(kAlice), bob = As(kBob);
  const ContentKey first = ContentKey::Make(), second = ContentKey::Make(),
                   undeclared = ContentKey::Make();
  Object::Ptr conversation = Create(alice, first, {kBob});
  ASSERT_TRUE(conversation);
  const std::string id = Text(conversation, "id");

  const std::string content = Seal(first, "under the first key");
  Reply posted = PostContent(bob, id, content);
  ASSERT_EQ(posted.status, 201) << posted;
  EXPECT_EQ(Text(posted.json(), "verb"), "post");
  EXPECT_EQ(Text(posted.json(), "keyUri"), first.uri);
  EXPECT_EQ(Text(posted.json(), "content"), content);
  EXPECT_EQ(Text(posted.json(), "actor"), kBob);

  Object rotate;
  rotate.set("keyUri", second.uri);
  Object::Ptr rotated = ChangeActivity(alice.Put("/v1/conversations/" + id + "/key", rotate));
  ASSERT_TRUE(rotated);
  EXPECT_EQ(Text(rotated, "verb"), "rotate");
  EXPECT_EQ(Text(rotated, "keyUri"), second.uri);
  Reply now = bob.Get("/v1/conversations/" + id);
  EXPECT_EQ(Text(now.json(), "currentKeyUri"), second.uri);
  const std::int64_t last_seq = LastSeq(alice, id);

  Reply old_key = PostContent(bob, id, Seal(first, "still under the first key"));
  EXPECT_EQ(old_key.status, 409) << old_key;
  EXPECT_EQ(old_key.code(), "key_rotation_required") << old_key;
  Reply unknown_key = PostContent(bob, id, Seal(undeclared, "under a key never declared"));
  EXPECT_EQ(unknown_key.status, 400) << unknown_key;
  EXPECT_EQ(unknown_key.code(), "invalid_argument");
  Object title_old;
  title_old.set("encryptedTitle", Seal(first, "old title"));
  Reply old_title = alice.Put("/v1/conversations/" + id + "/title", title_old);
  EXPECT_EQ(old_title.status, 409) << old_title;
  EXPECT_EQ(old_title.code(), "key_rotation_required");

  // Rotation refusals: a key on another KMS, a key declared before, not a key URL.
  for (const std::string& uri : {ContentKey::Make("kms.globex.test").uri, first.uri, second.uri,
                                 ResourceUri(), std::string("kms://kms.acme.test/keys/1")}) {
    Object bad;
    bad.set("keyUri", uri);
    Reply reply = alice.Put("/v1/conversations/" + id + "/key", bad);
    EXPECT_TRUE(reply.status == 400 || reply.status == 409) << uri << ": " << reply;
  }
  EXPECT_EQ(LastSeq(alice, id), last_seq) << "a refused request stored something";

  Reply fine = PostContent(bob, id, Seal(second, "under the second key"));
  EXPECT_EQ(fine.status, 201) << fine;
  Object title;
  title.set("encryptedTitle", Seal(second, "a title"));
  Reply titled = alice.Put("/v1/conversations/" + id + "/title", title);
  ASSERT_EQ(titled.status, 200) << titled;
  EXPECT_EQ(Text(titled.json(), "verb"), "title");
  EXPECT_EQ(Text(bob.Get("/v1/conversations/" + id).json(), "encryptedTitle"),
            Text(titled.json(), "content"));
  EXPECT_EQ(Verbs(History(alice, id)),
            (std::vector<std::string>{"create", "post", "rotate", "post", "title"}));
}

TEST_F(CoredApiTest, MalformedContentIsRefusedAndNothingIsStored) {
  ASSERT_TRUE(StartCored());
  Client alice = As(kAlice);
  const ContentKey key = ContentKey::Make();
  Object::Ptr conversation = Create(alice, key, {});
  ASSERT_TRUE(conversation);
  const std::string id = Text(conversation, "id");
  const std::int64_t last_seq = LastSeq(alice, id);

  const std::string good = Seal(key, "hello");
  std::vector<std::string> parts;
  for (std::size_t start = 0;;) {
    const std::size_t dot = good.find('.', start);
    parts.push_back(good.substr(start, dot == std::string::npos ? dot : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  ASSERT_EQ(parts.size(), 5u);
  auto with_header = [&](const std::string& header_json) {
    return jose::Base64UrlEncode(header_json) + "." + parts[1] + "." + parts[2] + "." + parts[3] +
           "." + parts[4];
  };
  auto join = [](const std::vector<std::string>& p) {
    std::string out;
    for (std::size_t i = 0; i < p.size(); ++i) out += (i ? "." : "") + p[i];
    return out;
  };
  std::vector<std::pair<std::string, std::string>> cases = {
      {"not a JWE", "hello there"},
      {"empty", ""},
      {"four parts", parts[0] + "." + parts[1] + "." + parts[2] + "." + parts[3]},
      {"six parts", good + ".AAAA"},
      {"alg RSA-OAEP",
       with_header("{\"alg\":\"RSA-OAEP\",\"enc\":\"A256GCM\",\"kid\":\"" + key.uri + "\"}")},
      {"enc A128GCM",
       with_header("{\"alg\":\"dir\",\"enc\":\"A128GCM\",\"kid\":\"" + key.uri + "\"}")},
      {"no kid", with_header("{\"alg\":\"dir\",\"enc\":\"A256GCM\"}")},
      {"zip", with_header("{\"alg\":\"dir\",\"enc\":\"A256GCM\",\"zip\":\"DEF\",\"kid\":\"" +
                          key.uri + "\"}")},
      {"header not JSON", jose::Base64UrlEncode(std::string("{alg")) + ".." + parts[2] + "." +
                              parts[3] + "." + parts[4]},
      {"an encrypted key", join({parts[0], "AAAA", parts[2], parts[3], parts[4]})},
      {"8-byte IV",
       join({parts[0], "", jose::Base64UrlEncode(RandomBytes(8)), parts[3], parts[4]})},
      {"15-byte tag",
       join({parts[0], "", parts[2], parts[3], jose::Base64UrlEncode(RandomBytes(15))})},
      {"empty ciphertext", join({parts[0], "", parts[2], "", parts[4]})},
      {"not base64url", join({parts[0], "", parts[2], "ab+/", parts[4]})},
      {"oversize", join({parts[0], "", parts[2],
                         jose::Base64UrlEncode(RandomBytes(kMaxContentBytes)), parts[4]})},
  };
  for (const auto& [what, content] : cases) {
    Reply reply = PostContent(alice, id, content);
    EXPECT_EQ(reply.status, 400) << what << ": " << reply;
    EXPECT_EQ(reply.code(), "invalid_argument") << what;
  }
  // Not a string, or absent.
  for (const std::string body :
       {"{\"content\": 42}", "{\"content\": null}", "{}", "{\"content\": [\"a\"]}"}) {
    Reply reply = alice.Send(
        Request("POST", "/v1/conversations/" + id + "/activities", body, "application/json"));
    EXPECT_EQ(reply.status, 400) << body << ": " << reply;
  }
  Reply bad_client_id = PostContent(alice, id, good, "not allowed!");
  EXPECT_EQ(bad_client_id.status, 400) << bad_client_id;
  EXPECT_EQ(LastSeq(alice, id), last_seq) << "a refused post stored something";
  EXPECT_EQ(History(alice, id).size(), 1u);
  EXPECT_EQ(PostContent(alice, id, good).status, 201);
}

// Issue 15: cored keeps its store in PostgreSQL when a [database] section says so: conversations,
// history and the realtime stream's resume work there, and outlive a restart.
TEST_F(CoredApiTest, PostgresKeepsConversationsAcrossARestart) {
  ASSERT_TRUE(StartCoredOnPostgres());
  Client alice = As(kAlice), bob = As(kBob);
  const ContentKey key = ContentKey::Make();
  Object::Ptr conversation = Create(alice, key, {kBob});
  ASSERT_TRUE(conversation);
  const std::string id = Text(conversation, "id");
  auto bob_events = Connect(kBob);
  ASSERT_TRUE(bob_events);
  std::vector<std::string> sent;
  for (int i = 0; i < 3; ++i) {
    Object::Ptr posted = Post(alice, id, key, "message " + std::to_string(i));
    ASSERT_TRUE(posted);
    sent.push_back(Text(posted, "id"));
  }
  std::vector<Object::Ptr> heard = bob_events->Until(sent.back(), kBob);
  ASSERT_FALSE(heard.empty());
  const std::int64_t cursor = Seq(heard.back());
  EXPECT_NE(ReadFile(path("cored.log")).find("cored: database: PostgreSQL"), std::string::npos);

  EXPECT_EQ(StopCored(SIGTERM), 0);
  ASSERT_TRUE(StartCored());  // on another port: the clients are made again
  alice = As(kAlice);
  bob = As(kBob);
  std::vector<std::string> history = Ids(History(bob, id));
  ASSERT_GE(history.size(), sent.size());
  EXPECT_EQ(std::vector<std::string>(history.end() - 3, history.end()), sent);
  Object::Ptr later = Post(alice, id, key, "after the restart");
  ASSERT_TRUE(later);
  auto resumed = Connect(kBob, cursor);
  ASSERT_TRUE(resumed);
  std::vector<Object::Ptr> missed = resumed->Until(Text(later, "id"), kBob);
  ASSERT_EQ(missed.size(), 1u);  // nothing twice: only what came after the cursor
  EXPECT_FALSE(fs::exists(db_path()));
}

// Issue 15: PostgreSQL stopped for ten seconds under a cored node. Meanwhile /health and the
// requests that need the database are answered 503 with Retry-After (never left hanging); once it
// is back cored serves again without a restart, its realtime stream included.
TEST_F(CoredApiTest, PostgresStoppedForTenSecondsIsAnswered503AndCoredRecovers) {
  ASSERT_TRUE(StartCoredOnPostgres());
  Client alice = As(kAlice), bob = As(kBob);
  Client anyone(port(), "");
  const ContentKey key = ContentKey::Make();
  Object::Ptr conversation = Create(alice, key, {kBob});
  ASSERT_TRUE(conversation);
  const std::string id = Text(conversation, "id");
  Object::Ptr before = Post(alice, id, key, "before the outage");
  ASSERT_TRUE(before);
  Reply health = anyone.Get("/health");
  ASSERT_EQ(health.status, 200) << health;
  EXPECT_TRUE(health.json()->getValue<bool>("database")) << health;
  auto bob_events = Connect(kBob, Seq(before));
  ASSERT_TRUE(bob_events);

  ASSERT_TRUE(testing::PostgresCluster::Pause().ok());
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  int answered = 0;
  while (std::chrono::steady_clock::now() < until) {
    health = anyone.Get("/health");
    EXPECT_EQ(health.status, 503) << health;
    EXPECT_EQ(health.header("Retry-After"), "1") << health;
    EXPECT_EQ(Text(health.json(), "status"), "unavailable") << health;
    Reply posted = PostContent(alice, id, Seal(key, "during the outage"));
    EXPECT_EQ(posted.status, 503) << posted;
    EXPECT_EQ(posted.header("Retry-After"), "1") << posted;
    Reply history = bob.Get("/v1/conversations/" + id + "/activities");
    EXPECT_EQ(history.status, 503) << history;
    ++answered;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  // Answered, not hung: a request that hung would have held the loop in one turn.
  EXPECT_GE(answered, 5);

  ASSERT_TRUE(testing::PostgresCluster::Resume().ok());
  ASSERT_TRUE(WaitUntil([&] { return anyone.Get("/health").status == 200; }));
  Object::Ptr after = Post(alice, id, key, "after the outage");
  ASSERT_TRUE(after);
  // Nothing of the outage was stored, and the stream goes on from where it was.
  std::vector<std::string> history = Ids(History(bob, id));
  ASSERT_GE(history.size(), 2u);
  EXPECT_EQ(history[history.size() - 2], Text(before, "id"));
  EXPECT_EQ(history.back(), Text(after, "id"));
  std::vector<Object::Ptr> heard = bob_events->Until(Text(after, "id"), kBob);
  ASSERT_EQ(heard.size(), 1u);
  EXPECT_EQ(Text(heard[0], "id"), Text(after, "id"));
  EXPECT_EQ(StopCored(SIGTERM), 0);
}

TEST_F(CoredApiTest, HistoryIsPagedBothWaysWithCursors) {
  ASSERT_TRUE(StartCored());
  Client alice = As(kAlice), carol = As(kCarol);
  const ContentKey key = ContentKey::Make(), other_key = ContentKey::Make();
  Object::Ptr conversation = Create(alice, key, {});
  Object::Ptr other = Create(alice, other_key, {});
  ASSERT_TRUE(conversation && other);
  const std::string id = Text(conversation, "id");
  const std::string base = "/v1/conversations/" + id + "/activities";
  std::vector<std::string> expected = Ids(History(alice, id));
  // Interleaved with another conversation's posts, so the sequence has gaps here.
  for (int i = 0; i < 10; ++i) {
    Object::Ptr posted = Post(alice, id, key, "message " + std::to_string(i));
    ASSERT_TRUE(posted);
    expected.push_back(Text(posted, "id"));
    ASSERT_TRUE(Post(alice, Text(other, "id"), other_key, "elsewhere"));
  }
  ASSERT_EQ(expected.size(), 11u);

  auto page = [&](const std::string& query, bool* more) {
    Reply reply = alice.Get(base + query);
    EXPECT_EQ(reply.status, 200) << query << ": " << reply;
    std::vector<Object::Ptr> items;
    if (reply.status != 200) return items;
    Array::Ptr array = reply.json()->getArray("items");
    for (unsigned i = 0; i < array->size(); ++i) items.push_back(array->getObject(i));
    *more = reply.json()->getValue<bool>("more");
    for (std::size_t i = 1; i < items.size(); ++i) EXPECT_LT(Seq(items[i - 1]), Seq(items[i]));
    return items;
  };

  bool more = true;
  EXPECT_EQ(Ids(page("", &more)), expected);
  EXPECT_FALSE(more);

  // Backwards from the newest: 4, 4, 3.
  std::vector<std::string> backwards;
  std::string query = "?limit=4";
  std::vector<std::size_t> sizes;
  for (int pages = 0; pages < 10; ++pages) {
    std::vector<Object::Ptr> items = page(query, &more);
    sizes.push_back(items.size());
    std::vector<std::string> ids = Ids(items);
    backwards.insert(backwards.begin(), ids.begin(), ids.end());
    if (!more || items.empty()) break;
    query = "?limit=4&before=" + std::to_string(Seq(items.front()));
  }
  EXPECT_EQ(backwards, expected);
  EXPECT_EQ(sizes, (std::vector<std::size_t>{4, 4, 3}));

  // Forwards from the start: 4, 4, 3.
  std::vector<std::string> forwards;
  sizes.clear();
  query = "?limit=4&after=0";
  for (int pages = 0; pages < 10; ++pages) {
    std::vector<Object::Ptr> items = page(query, &more);
    sizes.push_back(items.size());
    std::vector<std::string> ids = Ids(items);
    forwards.insert(forwards.end(), ids.begin(), ids.end());
    if (!more || items.empty()) break;
    query = "?limit=4&after=" + std::to_string(Seq(items.back()));
  }
  EXPECT_EQ(forwards, expected);
  EXPECT_EQ(sizes, (std::vector<std::size_t>{4, 4, 3}));

  // After the newest: nothing, and no more.
  std::vector<Object::Ptr> newest = page("?limit=1", &more);
  ASSERT_EQ(newest.size(), 1u);
  EXPECT_TRUE(more);
  EXPECT_TRUE(page("?after=" + std::to_string(Seq(newest[0])), &more).empty());
  EXPECT_FALSE(more);

  for (const std::string bad : {"?before=5&after=1", "?limit=0", "?limit=201", "?limit=-1",
                                "?after=x", "?before=", "?since=3"}) {
    Reply reply = alice.Get(base + bad);
    EXPECT_EQ(reply.status, 400) << bad << ": " << reply;
  }
  EXPECT_EQ(carol.Get(base).status, 404);
  EXPECT_EQ(carol.Get(base + "?after=0").status, 404);
}

TEST_F(CoredApiTest, OneActivityIsShownToParticipantsOnlyAndRetriesAreNotStoredTwice) {
  ASSERT_TRUE(StartCored());
  Client alice = As(kAlice), bob = As(kBob), carol = As(kCarol);
  const ContentKey key = ContentKey::Make();
  Object::Ptr a = Create(alice, key, {kBob});
  Object::Ptr b = Create(alice, ContentKey::Make(), {});
  ASSERT_TRUE(a && b);
  const std::string id = Text(a, "id");

  const std::string content = Seal(key, "one activity");
  Reply posted = PostContent(bob, id, content, "client-1");
  ASSERT_EQ(posted.status, 201) << posted;
  const std::string activity_id = Text(posted.json(), "id");
  EXPECT_EQ(Text(posted.json(), "clientActivityId"), "client-1");

  Reply one = alice.Get("/v1/conversations/" + id + "/activities/" + activity_id);
  ASSERT_EQ(one.status, 200) << one;
  for (const std::string field : {"id", "conversationId", "actor", "verb", "content", "keyUri",
                                  "clientActivityId", "published"}) {
    EXPECT_EQ(Text(one.json(), field), Text(posted.json(), field)) << field;
  }
  EXPECT_EQ(Seq(one.json()), Seq(posted.json()));

  EXPECT_EQ(alice.Get("/v1/conversations/" + id + "/activities/" + NewUuid()).status, 404);
  EXPECT_EQ(alice.Get("/v1/conversations/" + id + "/activities/nope").status, 404);
  // Another conversation's activity is not found through this one.
  EXPECT_EQ(alice.Get("/v1/conversations/" + Text(b, "id") + "/activities/" + activity_id).status,
            404);
  Reply outsider = carol.Get("/v1/conversations/" + id + "/activities/" + activity_id);
  EXPECT_EQ(outsider.status, 404) << outsider;

  // A retry with the same client id gets the stored activity back; a different content under it
  // is refused.
  Reply retried = PostContent(bob, id, content, "client-1");
  ASSERT_EQ(retried.status, 201) << retried;
  EXPECT_EQ(Text(retried.json(), "id"), activity_id);
  EXPECT_EQ(Seq(retried.json()), Seq(posted.json()));
  Reply clash = PostContent(bob, id, Seal(key, "something else"), "client-1");
  EXPECT_EQ(clash.status, 409) << clash;
  EXPECT_EQ(History(alice, id).size(), 2u);
}

TEST_F(CoredApiTest, FilesAreUploadedAndDownloadedByParticipantsOnly) {
  ASSERT_TRUE(StartCored());
  Client alice = As(kAlice), bob = As(kBob), carol = As(kCarol);
  const ContentKey key = ContentKey::Make();
  Object::Ptr a = Create(alice, key, {kBob});
  Object::Ptr b = Create(alice, ContentKey::Make(), {});
  ASSERT_TRUE(a && b);
  const std::string id = Text(a, "id");
  const std::string base = "/v1/conversations/" + id + "/files";

  std::vector<std::uint8_t> random = RandomBytes(300 * 1024);
  const std::string blob(random.begin(), random.end());
  auto upload = [&](Client& client, const std::string& path, const std::string& body,
                    bool chunked = false, const std::string& type = "application/octet-stream") {
    Request request("POST", path, body, type);
    if (chunked) request.Chunked();
    return client.Send(request);
  };
  Reply uploaded = upload(bob, base, blob);
  ASSERT_EQ(uploaded.status, 201) << uploaded;
  Object::Ptr file = uploaded.json();
  const std::string file_id = Text(file, "id");
  EXPECT_EQ(file->getValue<std::uint64_t>("size"), blob.size());
  EXPECT_EQ(Text(file, "sha256"), Sha256Hex(blob));
  EXPECT_EQ(Text(file, "uploader"), kBob);
  EXPECT_EQ(Text(file, "conversationId"), id);

  Reply downloaded = alice.Get(base + "/" + file_id);
  ASSERT_EQ(downloaded.status, 200) << downloaded.status;
  EXPECT_TRUE(downloaded.body == blob) << "the downloaded blob differs";
  EXPECT_EQ(downloaded.header("X-Content-SHA256"), Sha256Hex(blob));
  EXPECT_EQ(downloaded.content_type, "application/octet-stream");

  // Streamed without a length.
  const std::string small = Seal(key, "a small encrypted file");
  Reply chunked = upload(alice, base, small, true);
  ASSERT_EQ(chunked.status, 201) << chunked;
  Reply small_back = bob.Get(base + "/" + Text(chunked.json(), "id"));
  EXPECT_EQ(small_back.body, small);

  // A share refers to uploaded files of this conversation only.
  Object share;
  share.set("content", Seal(key, "the file's key and name"));
  share.set("fileIds", Strings({file_id}));
  Reply shared = bob.Post("/v1/conversations/" + id + "/activities", share);
  ASSERT_EQ(shared.status, 201) << shared;
  EXPECT_EQ(Text(shared.json(), "verb"), "share");
  EXPECT_EQ(Strings(shared.json()->getArray("fileIds")), (std::vector<std::string>{file_id}));
  Object share_unknown;
  share_unknown.set("content", Seal(key, "nothing"));
  share_unknown.set("fileIds", Strings({NewUuid()}));
  EXPECT_EQ(bob.Post("/v1/conversations/" + id + "/activities", share_unknown).status, 400);

  // Refusals, none of which leaves a file behind.
  const std::size_t files_before = CountFiles(files_dir());
  Reply by_outsider = upload(carol, base, blob);
  EXPECT_EQ(by_outsider.status, 404) << by_outsider;
  EXPECT_EQ(carol.Get(base + "/" + file_id).status, 404);
  EXPECT_EQ(alice.Get(base + "/" + NewUuid()).status, 404);
  EXPECT_EQ(alice.Get("/v1/conversations/" + Text(b, "id") + "/files/" + file_id).status, 404);
  Reply wrong_type = upload(bob, base, blob, false, "application/json");
  EXPECT_EQ(wrong_type.status, 415) << wrong_type;
  EXPECT_EQ(wrong_type.code(), "media_type");
  // Announced too large: refused before the body is read.
  Reply announced = bob.Send(
      Request("POST", base, std::string(kMaxFileBytes + 1, 'x'), "application/octet-stream")
          .WithoutBody());
  EXPECT_EQ(announced.status, 413) << announced;
  EXPECT_EQ(announced.code(), "file_size");
  // Streamed past the limit.
  Reply streamed = upload(bob, base, std::string(kMaxFileBytes + 1, 'x'), true);
  EXPECT_EQ(streamed.status, 413) << streamed;
  EXPECT_EQ(streamed.code(), "file_size");
  EXPECT_EQ(CountFiles(files_dir()), files_before) << "a refused upload left a file";
  // Exactly the limit is fine.
  Reply limit = upload(bob, base, std::string(kMaxFileBytes, 'y'));
  EXPECT_EQ(limit.status, 201) << limit;
}

TEST_F(CoredApiTest, OnlyTheIndexerWritesAndSearchesTheIndex) {
  ASSERT_TRUE(StartCored());
  Client alice = As(kAlice);
  Client indexer = As(kIndexer);
  // The indexer's name signed by another organization's IdP is not the indexer: not even a user.
  Client impostor(port(), env().Token(kIndexer, "core", 0, 3600, "globex"));
  const ContentKey key = ContentKey::Make();
  Object::Ptr conversation = Create(alice, key, {kBob});
  Object::Ptr other = Create(alice, ContentKey::Make(), {});
  ASSERT_TRUE(conversation && other);
  const std::string id = Text(conversation, "id");
  std::vector<std::string> posts;
  for (int i = 0; i < 3; ++i) {
    Object::Ptr posted = Post(alice, id, key, "searchable " + std::to_string(i));
    ASSERT_TRUE(posted);
    posts.push_back(Text(posted, "id"));
  }
  const std::string ta = jose::Base64UrlEncode(RandomBytes(32));
  const std::string tb = jose::Base64UrlEncode(RandomBytes(32));
  auto put = [&](Client& client, const std::string& activity,
                 const std::vector<std::string>& tokens) {
    Object body;
    body.set("tokens", Strings(tokens));
    return client.Put("/v1/index/" + id + "/" + activity, body);
  };
  for (Client* who : {&alice, &impostor}) {
    Reply refused = put(*who, posts[0], {ta});
    EXPECT_EQ(refused.status, who == &alice ? 403 : 401) << refused;
    EXPECT_EQ(refused.code(), who == &alice ? "permission_denied" : "unauthenticated");
  }
  Reply put0 = put(indexer, posts[0], {ta, tb});
  EXPECT_EQ(put0.status, 204) << put0;
  EXPECT_EQ(put(indexer, posts[1], {ta}).status, 204);
  EXPECT_EQ(put(indexer, posts[2], {ta, tb}).status, 204);
  EXPECT_EQ(put(indexer, posts[2], {ta, tb}).status, 204);  // again: no change

  auto search = [&](Client& client, const std::vector<std::string>& conversations,
                    const std::vector<std::string>& tokens, std::optional<std::int64_t> before,
                    int limit) {
    Object body;
    body.set("queries", Queries(conversations, tokens));
    if (before) body.set("before", *before);
    body.set("limit", limit);
    return client.Post("/v1/index/search", body);
  };
  auto match_ids = [&](const Reply& reply) {
    std::vector<std::string> ids;
    Array::Ptr items = reply.json() ? reply.json()->getArray("items") : nullptr;
    for (unsigned i = 0; items && i < items->size(); ++i) {
      ids.push_back(Text(items->getObject(i), "activityId"));
      EXPECT_EQ(Text(items->getObject(i), "conversationId"), id);
      EXPECT_GT(Seq(items->getObject(i)), 0);
    }
    return ids;
  };
  Reply both = search(indexer, {id}, {ta, tb}, std::nullopt, 50);
  ASSERT_EQ(both.status, 200) << both;
  EXPECT_EQ(match_ids(both), (std::vector<std::string>{posts[2], posts[0]}));  // newest first

  Reply first_page = search(indexer, {id, Text(other, "id")}, {ta}, std::nullopt, 2);
  ASSERT_EQ(first_page.status, 200) << first_page;
  EXPECT_EQ(match_ids(first_page), (std::vector<std::string>{posts[2], posts[1]}));
  ASSERT_TRUE(first_page.json()->has("next")) << first_page;
  Reply second_page =
      search(indexer, {id}, {ta}, first_page.json()->getValue<std::int64_t>("next"), 2);
  ASSERT_EQ(second_page.status, 200) << second_page;
  EXPECT_EQ(match_ids(second_page), (std::vector<std::string>{posts[0]}));

  Reply elsewhere = search(indexer, {Text(other, "id")}, {ta}, std::nullopt, 50);
  EXPECT_TRUE(match_ids(elsewhere).empty()) << elsewhere;
  for (Client* who : {&alice, &impostor}) {
    Reply refused = search(*who, {id}, {ta}, std::nullopt, 50);
    EXPECT_EQ(refused.status, who == &alice ? 403 : 401) << refused;
  }

  Reply bad_token = put(indexer, posts[1], {"not a token"});
  EXPECT_EQ(bad_token.status, 400) << bad_token;
  Reply unknown_activity = put(indexer, NewUuid(), {ta});
  EXPECT_EQ(unknown_activity.status, 404) << unknown_activity;
  std::vector<std::string> too_many(kMaxIndexTokensPerActivity + 1, ta);
  EXPECT_EQ(put(indexer, posts[1], too_many).status, 400);
  EXPECT_EQ(search(indexer, {id}, {}, std::nullopt, 50).status, 400);
}

TEST_F(CoredApiTest, BadRequestsGetClearJsonErrors) {
  ASSERT_TRUE(StartCored());
  Client alice = As(kAlice);
  const ContentKey key = ContentKey::Make();
  auto post_raw = [&](const std::string& body, const std::string& type) {
    return alice.Send(Request("POST", "/v1/conversations", body, type));
  };
  auto expect_error = [](const Reply& reply, int status, const std::string& code,
                         const std::string& what) {
    EXPECT_EQ(reply.status, status) << what << ": " << reply;
    EXPECT_EQ(reply.code(), code) << what << ": " << reply;
    EXPECT_EQ(reply.content_type, "application/json") << what;
    EXPECT_FALSE(Text(reply.json(), "message").empty()) << what;
  };
  expect_error(post_raw("{", "application/json"), 400, "invalid_argument", "bad JSON");
  expect_error(post_raw("[]", "application/json"), 400, "invalid_argument", "a JSON array");
  expect_error(post_raw("", "application/json"), 400, "invalid_argument", "an empty body");
  Reply unknown_field = post_raw("{\"kmsResourceUri\":\"" + ResourceUri() + "\",\"keyUri\":\"" +
                                     key.uri + "\",\"colour\":\"red\"}",
                                 "application/json");
  expect_error(unknown_field, 400, "invalid_argument", "an unknown field");
  EXPECT_NE(Text(unknown_field.json(), "message").find("colour"), std::string::npos)
      << unknown_field;
  expect_error(post_raw("{}", "text/plain"), 415, "media_type", "text/plain");
  expect_error(post_raw("{}", ""), 415, "media_type", "no Content-Type");
  expect_error(post_raw(std::string(core::kMaxJsonRequestBytes + 1, ' '), "application/json"), 413,
               "body_size", "an oversize body");
  expect_error(alice.Get("/v1/nothing"), 404, "not_found", "an unknown path");
  expect_error(alice.Get("/nothing"), 404, "not_found", "an unknown path");
  expect_error(alice.Get("/v1/conversations/" + NewUuid() + "/whatever"), 404, "not_found",
               "an unknown path under a conversation");

  Reply wrong_method = alice.Delete("/v1/conversations");
  expect_error(wrong_method, 405, "method_not_allowed", "DELETE /v1/conversations");
  EXPECT_EQ(wrong_method.header("Allow"), "GET, POST");
  Reply patch =
      alice.Send(Request("PATCH", "/v1/conversations/" + NewUuid()).Header("Content-Length", "0"));
  expect_error(patch, 405, "method_not_allowed", "PATCH a conversation");
  EXPECT_EQ(patch.header("Allow"), "GET");
  Reply get_relay = alice.Get("/kms/messages?cluster=kms://kms.acme.test");
  expect_error(get_relay, 405, "method_not_allowed", "GET /kms/messages");
  EXPECT_EQ(get_relay.header("Allow"), "POST");
  Reply post_health = alice.Send(Request("POST", "/health", "{}", "application/json"));
  expect_error(post_health, 405, "method_not_allowed", "POST /health");
  Reply get_search = alice.Get("/v1/index/search");
  EXPECT_EQ(get_search.status, 405) << get_search;
  expect_error(alice.Get("/v1/events"), 400, "invalid_argument", "GET /v1/events not upgraded");
  expect_error(alice.Get("/v1/events?cursor=x"), 400, "invalid_argument", "a bad cursor");
  Reply relay_without_credential = alice.Get("/relay/kms");
  EXPECT_EQ(relay_without_credential.status, 401) << relay_without_credential;

  // The connection that carried the refusals still works, and nothing was stored.
  Reply mine = alice.Get("/v1/conversations");
  ASSERT_EQ(mine.status, 200) << mine;
  EXPECT_EQ(mine.json()->getArray("items")->size(), 0u);
  Reply health = alice.Get("/health");
  ASSERT_EQ(health.status, 200) << health;
  EXPECT_EQ(Text(health.json(), "status"), "ok");
}

// HTTP/1.1 (RFC 9112 section 6.3): a request with neither Content-Length nor Transfer-Encoding
// has an empty body, so cored must answer it at once, not wait for the client to close.
TEST_F(CoredApiTest, ARequestWithoutContentLengthIsAnsweredAtOnce) {
  ASSERT_TRUE(StartCored());
  Client alice = As(kAlice);
  alice.set_timeout(std::chrono::seconds(10));  // cored's own I/O timeout is 30 s
  Reply patch = alice.Send(Request("PATCH", "/v1/conversations/" + NewUuid()).NoLength());
  EXPECT_EQ(patch.status, 405)
      << "FAIL (core_server.cc): PATCH without Content-Length waits for a body until the "
         "connection closes: "
      << patch;
  Reply post = alice.Send(Request("POST", "/v1/conversations", "", "application/json").NoLength());
  EXPECT_EQ(post.status, 400)
      << "FAIL (core_server.cc): POST without Content-Length waits for a body until the "
         "connection closes: "
      << post;
  Reply upload = alice.Send(
      Request("POST", "/v1/conversations/" + NewUuid() + "/files", "", "application/octet-stream")
          .NoLength());
  EXPECT_EQ(upload.status, 404)
      << "FAIL (core_server.cc): an upload without Content-Length waits for a body until the "
         "connection closes: "
      << upload;
}

TEST_F(CoredApiTest, RequestsWithoutAValidCoreTokenAreRefusedWith401) {
  ASSERT_TRUE(StartCored());
  Object body;
  body.set("kmsResourceUri", ResourceUri());
  body.set("keyUri", ContentKey::Make().uri);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"no token", ""},
      {"garbage", "not-a-jwt"},
      {"a KMS token", env().Token(kAlice, "kms")},
      {"an expired token", env().Token(kAlice, "core", Now() - 7200, 60)},
      {"an untrusted issuer's token", env().Token(kAlice, "core", 0, 3600, "initech")},
  };
  for (const auto& [what, token] : cases) {
    Client client(port(), token);
    Reply reply = client.Post("/v1/conversations", body);
    EXPECT_EQ(reply.status, 401) << what << ": " << reply;
    EXPECT_EQ(reply.code(), "unauthenticated") << what;
    EXPECT_EQ(reply.header("WWW-Authenticate"), "Bearer") << what;
    EXPECT_EQ(client.Get("/v1/conversations").status, 401) << what;
    EXPECT_EQ(client.Get("/v1/events").status, 401) << what;
    // The token is never echoed.
    if (token.size() > 20) {
      EXPECT_EQ(reply.body.find(token), std::string::npos) << what;
    }
  }
  Reply basic = Client(port(), "")
                    .Send(Request("GET", "/v1/conversations")
                              .Header("Authorization", "Basic YWxpY2U6cGFzcw=="));
  EXPECT_EQ(basic.status, 401) << basic;
  // The scheme is case-insensitive (RFC 9110 11.1).
  Reply lower = Client(port(), "")
                    .Send(Request("GET", "/v1/conversations")
                              .Header("Authorization", "bearer " + env().Token(kAlice)));
  EXPECT_EQ(lower.status, 200) << lower;
  Reply health = Client(port(), "").Get("/health");
  EXPECT_EQ(health.status, 200) << health;

  Client alice = As(kAlice);
  Reply mine = alice.Get("/v1/conversations");
  ASSERT_EQ(mine.status, 200) << mine;
  EXPECT_EQ(mine.json()->getArray("items")->size(), 0u) << "a refused request stored something";
}

// Issue 11: cored trusts acme's and globex's identity providers, and a subject belongs to its
// issuer's organization. A token globex's IdP signs for alice@acme.test (a domain of acme's) is
// refused with 401 on every route of core_server.cc that takes a user's token, and the relay
// attach refuses it too; nothing changes, and the real alice's token does each thing it may.
TEST_F(CoredApiTest, AnotherOrganizationsIdpCannotActAsOurUserOnAnyEndpoint) {
  WriteCoredConfig({}, "", std::string("[compliance]\nacme = ") + kAlice + "\n");
  ASSERT_TRUE(StartCored());
  Client alice = As(kAlice), indexer = As(kIndexer);
  const std::string forged = env().Token(kAlice, "core", 0, 3600, "globex");
  ASSERT_FALSE(forged.empty());
  Client impostor(port(), forged);

  const ContentKey key = ContentKey::Make();
  Object::Ptr room = Create(alice, key, {kBob});
  ASSERT_TRUE(room);
  const std::string id = Text(room, "id");
  const std::string base = "/v1/conversations/" + id;
  Object::Ptr posted = Post(alice, id, key, "for acme only");
  ASSERT_TRUE(posted);
  const std::string activity = Text(posted, "id");
  Reply uploaded =
      alice.Send(Request("POST", base + "/files", "encrypted blob", "application/octet-stream"));
  ASSERT_EQ(uploaded.status, 201) << uploaded;
  const std::string file = Text(uploaded.json(), "id");
  const std::int64_t last_seq = LastSeq(alice, id);

  auto json = [](std::initializer_list<std::pair<const char*, Poco::Dynamic::Var>> members) {
    Object body;
    for (const auto& [name, value] : members) body.set(name, value);
    return Stringify(body);
  };
  const std::string user = std::string("?user=") + kBob;
  struct Route {
    Request request;
    int status_for_alice;  // what the real alice's token gets
  };
  // Every route Handler::Route serves (core_server.cc), in an order the real alice can follow.
  std::vector<Route> routes = {
      {Request("GET", "/v1/conversations"), 200},
      {Request("POST", "/v1/conversations",
               json({{"kmsResourceUri", ResourceUri()}, {"keyUri", ContentKey::Make().uri}}),
               "application/json"),
       201},
      {Request("GET", base), 200},
      {Request("PUT", base + "/title", json({{"encryptedTitle", Seal(key, "title")}}),
               "application/json"),
       200},
      {Request("POST", base + "/activities", json({{"content", Seal(key, "posted")}}),
               "application/json"),
       201},
      {Request("GET", base + "/activities?after=0"), 200},
      {Request("GET", base + "/activities/" + activity), 200},
      {Request("POST", base + "/files", "another blob", "application/octet-stream"), 201},
      {Request("GET", base + "/files/" + file), 200},
      {Request("POST", base + "/participants", json({{"userIds", Strings({kCarol})}}),
               "application/json"),
       200},
      {Request("PUT", base + "/key", json({{"keyUri", ContentKey::Make().uri}}),
               "application/json"),
       200},
      {Request("GET", std::string("/v1/compliance/conversations") + user), 200},
      {Request("GET", "/v1/compliance/conversations/" + id + "/activities" + user), 200},
      {Request("PUT", "/v1/index/" + id + "/" + activity,
               json({{"tokens", Strings({jose::Base64UrlEncode(RandomBytes(32))})}}),
               "application/json"),
       403},  // the indexer's only
      {Request("POST", "/v1/index/search",
               json({{"queries", Queries({id}, {jose::Base64UrlEncode(RandomBytes(32))})}}),
               "application/json"),
       403},
      {Request("POST", std::string("/kms/messages?cluster=") + kCluster, "e30.e30.e30",
               "application/jose"),
       503},                                         // no KMS attached: past authentication
      {Request("GET", "/v1/events?cursor=0"), 400},  // not upgraded: past authentication
      {Request("GET", kRelayPath)
           .Header(kRelayClusterHeader, kCluster)
           .Header("Connection", "Upgrade")
           .Header("Upgrade", "websocket")
           .Header("Sec-WebSocket-Version", "13")
           .Header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
       401},  // a relay token's, never a user's
      {Request("DELETE", base + "/participants/" + kBob), 200},
  };
  for (const Route& route : routes) {
    const std::string what = route.request.method + " " + route.request.path;
    Reply refused = impostor.Send(route.request);
    EXPECT_EQ(refused.status, 401)
        << "FAIL: globex's token for " << kAlice << " on " << what << ": " << refused;
    EXPECT_EQ(refused.code(), "unauthenticated") << what;
    EXPECT_NE(refused.header("WWW-Authenticate"), "") << what;
    EXPECT_EQ(refused.body.find(forged), std::string::npos) << what;
  }
  // The realtime stream: the upgrade itself is refused.
  {
    Poco::Net::HTTPSClientSession session("127.0.0.1", port(), env().client_context());
    session.setTimeout(Poco::Timespan(kPatience.count(), 0));
    Poco::Net::HTTPRequest request(Poco::Net::HTTPRequest::HTTP_GET, "/v1/events?cursor=0",
                                   Poco::Net::HTTPMessage::HTTP_1_1);
    request.set("Authorization", "Bearer " + forged);
    Poco::Net::HTTPResponse response;
    try {
      Poco::Net::WebSocket socket(session, request, response);
      ADD_FAILURE() << "FAIL: globex's token for " << kAlice << " opened her realtime stream";
    } catch (const Poco::Net::WebSocketException& e) {
      EXPECT_EQ(e.code(), Poco::Net::WebSocket::WS_ERR_UNAUTHORIZED) << e.displayText();
    }
  }

  // Nothing changed: her room, its members and its history are as they were.
  Reply mine = alice.Get("/v1/conversations");
  ASSERT_EQ(mine.status, 200) << mine;
  ASSERT_EQ(mine.json()->getArray("items")->size(), 1u) << mine;
  Reply same = alice.Get(base);
  ASSERT_EQ(same.status, 200) << same;
  EXPECT_EQ(Strings(same.json()->getArray("participants")),
            (std::vector<std::string>{kAlice, kBob}));
  EXPECT_EQ(same.json()->getValue<std::int64_t>("lastSeq"), last_seq);
  EXPECT_EQ(CountFiles(files_dir()), 1u);

  // The real alice's token does what she may, route by route.
  for (const Route& route : routes) {
    Reply reply = alice.Send(route.request);
    EXPECT_EQ(reply.status, route.status_for_alice)
        << "alice: " << route.request.method << " " << route.request.path << ": " << reply;
  }
  auto stream = Connect(kAlice, 0);
  ASSERT_TRUE(stream);
  EXPECT_TRUE(stream->Next());
  // The indexer too.
  Object search;
  search.set("queries", Queries({id}, {jose::Base64UrlEncode(RandomBytes(32))}));
  EXPECT_EQ(indexer.Post("/v1/index/search", search).status, 200);
}

// A room may cross organizations: a user of a trusted partner is added and reads it with their own
// IdP's token. A user whom no trusted IdP signs for is refused with 400, and nothing changes.
TEST_F(CoredApiTest, ParticipantsAreUsersOfTrustedOrganizations) {
  constexpr char kGina[] = "gina@globex.test";
  ASSERT_TRUE(StartCored());
  Client alice = As(kAlice);
  Client gina(port(), env().Token(kGina, "core", 0, 3600, "globex"));
  const ContentKey key = ContentKey::Make();
  Object::Ptr room = Create(alice, key, {kGina});
  ASSERT_TRUE(room);
  const std::string id = Text(room, "id");
  ASSERT_TRUE(Post(alice, id, key, "hello globex"));
  Reply seen = gina.Get("/v1/conversations/" + id);
  ASSERT_EQ(seen.status, 200) << seen;
  EXPECT_EQ(Strings(seen.json()->getArray("participants")),
            (std::vector<std::string>{kAlice, kGina}));

  const std::int64_t last_seq = LastSeq(alice, id);
  for (const std::string stranger : {"eve@initech.test", "eve"}) {
    Object add;
    add.set("userIds", Strings({kBob, stranger}));
    Reply refused = alice.Post("/v1/conversations/" + id + "/participants", add);
    EXPECT_EQ(refused.status, 400) << stranger << ": " << refused;
    EXPECT_EQ(refused.code(), "invalid_argument") << stranger;
    EXPECT_NE(Text(refused.json(), "message").find("subject_domains"), std::string::npos)
        << refused;
    Object create;
    create.set("kmsResourceUri", ResourceUri());
    create.set("keyUri", ContentKey::Make().uri);
    create.set("participants", Strings({stranger}));
    Reply not_created = alice.Post("/v1/conversations", create);
    EXPECT_EQ(not_created.status, 400) << stranger << ": " << not_created;
  }
  EXPECT_EQ(LastSeq(alice, id), last_seq);
  Reply mine = alice.Get("/v1/conversations");
  ASSERT_EQ(mine.status, 200) << mine;
  EXPECT_EQ(mine.json()->getArray("items")->size(), 1u) << mine;
}

TEST_F(CoredApiTest, AFloodFromOneUserIsRateLimitedWith429AndRetryAfter) {
  WriteCoredConfig({{"rate_per_s", "1"}, {"rate_burst", "3"}});
  ASSERT_TRUE(StartCored());
  Client alice = As(kAlice), bob = As(kBob);
  std::optional<Reply> limited;
  int served = 0;
  for (int i = 0; i < 50 && !limited; ++i) {
    Reply reply = alice.Get("/v1/conversations");
    if (reply.status == 429) {
      limited = reply;
    } else {
      ASSERT_EQ(reply.status, 200) << reply;
      ++served;
    }
  }
  ASSERT_TRUE(limited) << "50 requests in a row were never limited at 1/s with bursts of 3";
  EXPECT_GE(served, 3);
  EXPECT_EQ(limited->code(), "rate_limited");
  const std::string retry_after = limited->header("Retry-After");
  ASSERT_FALSE(retry_after.empty()) << *limited;
  EXPECT_GE(std::stoi(retry_after), 1);
  // Another user is not held back by alice's flood.
  Reply for_bob = bob.Get("/v1/conversations");
  EXPECT_EQ(for_bob.status, 200) << for_bob;
}

// ---------------------------------------------------------------------------------------------
// 2. Realtime delivery and resume.

class CoredRealtimeTest : public CoredTest {};

TEST_F(CoredRealtimeTest, ParticipantsReceiveTheirConversationsInOrderAndOthersNothing) {
  ASSERT_TRUE(StartCored());
  Client alice = As(kAlice), bob = As(kBob), carol = As(kCarol);
  auto alice_events = Connect(kAlice);
  auto bob_events = Connect(kBob);
  auto carol_events = Connect(kCarol);
  auto dave_events = Connect(kDave);
  ASSERT_TRUE(alice_events && bob_events && carol_events && dave_events);

  // Everything the test does, in the order cored acknowledged it, and who may see it.
  std::vector<std::pair<std::string, std::set<std::string>>> done;
  const ContentKey key_a = ContentKey::Make(), key_a2 = ContentKey::Make(),
                   key_b = ContentKey::Make();
  Object::Ptr a = Create(alice, key_a, {kBob, kCarol});
  ASSERT_TRUE(a);
  const std::string id_a = Text(a, "id");
  done.push_back({Ids(History(alice, id_a))[0], {kAlice, kBob, kCarol}});
  Object::Ptr b = Create(alice, key_b, {kBob});
  ASSERT_TRUE(b);
  const std::string id_b = Text(b, "id");
  done.push_back({Ids(History(alice, id_b))[0], {kAlice, kBob}});
  for (int round = 0; round < 3; ++round) {
    Object::Ptr p1 = Post(bob, id_a, key_a, "a from bob " + std::to_string(round));
    Object::Ptr p2 = Post(carol, id_a, key_a, "a from carol " + std::to_string(round));
    Object::Ptr p3 = Post(alice, id_b, key_b, "b from alice " + std::to_string(round));
    ASSERT_TRUE(p1 && p2 && p3);
    done.push_back({Text(p1, "id"), {kAlice, kBob, kCarol}});
    done.push_back({Text(p2, "id"), {kAlice, kBob, kCarol}});
    done.push_back({Text(p3, "id"), {kAlice, kBob}});
  }
  Object add;
  add.set("userIds", Strings({kErin}));
  Object::Ptr added =
      ChangeActivity(alice.Post("/v1/conversations/" + id_b + "/participants", add));
  ASSERT_TRUE(added);
  done.push_back({Text(added, "id"), {kAlice, kBob}});
  Object::Ptr removed =
      ChangeActivity(bob.Delete("/v1/conversations/" + id_b + "/participants/" + kErin));
  ASSERT_TRUE(removed);
  done.push_back({Text(removed, "id"), {kAlice, kBob}});
  Object rotate;
  rotate.set("keyUri", key_a2.uri);
  Object::Ptr rotated = ChangeActivity(carol.Put("/v1/conversations/" + id_a + "/key", rotate));
  ASSERT_TRUE(rotated);
  done.push_back({Text(rotated, "id"), {kAlice, kBob, kCarol}});
  // Last, a conversation with everyone: once a user has its creation, everything before it that
  // they were to receive has arrived (delivery is in sequence order).
  Object::Ptr sentinel = Create(alice, ContentKey::Make(), {kBob, kCarol, kDave});
  ASSERT_TRUE(sentinel);
  const std::string sentinel_id = Ids(History(alice, Text(sentinel, "id")))[0];
  done.push_back({sentinel_id, {kAlice, kBob, kCarol, kDave}});

  for (auto& [user, stream] :
       std::vector<std::pair<std::string, EventStream*>>{{kAlice, alice_events.get()},
                                                         {kBob, bob_events.get()},
                                                         {kCarol, carol_events.get()},
                                                         {kDave, dave_events.get()}}) {
    std::vector<std::string> expected;
    for (const auto& [id, recipients] : done) {
      if (recipients.count(user) != 0) expected.push_back(id);
    }
    std::vector<Object::Ptr> received = stream->Until(sentinel_id, user);
    EXPECT_EQ(Ids(received), expected) << user;
    for (std::size_t i = 1; i < received.size(); ++i) {
      EXPECT_LT(Seq(received[i - 1]), Seq(received[i])) << user;
    }
  }
  // dave's only event is the one conversation he is in.
  auto dave_replay = Connect(kDave, 0);
  ASSERT_TRUE(dave_replay);
  EXPECT_EQ(Ids(dave_replay->Until(sentinel_id, kDave)), (std::vector<std::string>{sentinel_id}));
}

TEST_F(CoredRealtimeTest, TheIndexerFollowsItsOrganizationsRoomsFromItsCursorThenLive) {
  constexpr char kGina[] = "gina@globex.test";
  ASSERT_TRUE(StartCored());
  Client alice = As(kAlice), bob = As(kBob);
  Client gina(port(), env().Token(kGina, "core", 0, 3600, "globex"));
  const ContentKey key = ContentKey::Make(), theirs_key = ContentKey::Make();
  Object::Ptr ours = Create(alice, key, {kBob});
  Object::Ptr theirs = Create(gina, theirs_key, {kAlice});  // created by another organization
  ASSERT_TRUE(ours && theirs);
  const std::string id = Text(ours, "id");
  const std::string created = Ids(History(alice, id))[0];
  Object::Ptr p1 = Post(alice, id, key, "first");
  ASSERT_TRUE(Post(gina, Text(theirs, "id"), theirs_key, "not for acme's indexer"));
  Object::Ptr p2 = Post(bob, id, key, "second");
  ASSERT_TRUE(p1 && p2);

  auto open = [&](const std::string& user, std::optional<std::int64_t> cursor, std::string* error) {
    return EventStream::Open(port(), env().Token(user), cursor, error, "/v1/index/events");
  };
  std::string error;
  // The backlog from the database, from the beginning without a cursor.
  auto indexer = open(kIndexer, std::nullopt, &error);
  ASSERT_TRUE(indexer) << error;
  EXPECT_EQ(Ids(indexer->Until(Text(p2, "id"), "the indexer")),
            (std::vector<std::string>{created, Text(p1, "id"), Text(p2, "id")}));
  // Then live: a post, an edit (with its target) and a title change; nothing of the other room.
  Object::Ptr p3 = Post(alice, id, key, "third");
  ASSERT_TRUE(p3);
  ASSERT_TRUE(Post(gina, Text(theirs, "id"), theirs_key, "still not"));
  Object edit;
  edit.set("content", Seal(key, "first, edited"));
  Reply edited = alice.Put("/v1/conversations/" + id + "/activities/" + Text(p1, "id"), edit);
  ASSERT_EQ(edited.status, 200) << edited;
  Object title;
  title.set("encryptedTitle", Seal(key, "a title"));
  Reply titled = bob.Put("/v1/conversations/" + id + "/title", title);
  ASSERT_EQ(titled.status, 200) << titled;
  std::vector<Object::Ptr> live = indexer->Until(Text(titled.json(), "id"), "the indexer");
  ASSERT_EQ(Ids(live), (std::vector<std::string>{Text(p3, "id"), Text(edited.json(), "id"),
                                                 Text(titled.json(), "id")}));
  EXPECT_EQ(Text(live[1], "verb"), "edit");
  EXPECT_EQ(Text(live[1], "targetId"), Text(p1, "id"));
  EXPECT_EQ(Unseal(key, Text(live[1], "content")), "first, edited");
  EXPECT_EQ(Text(live[1], "conversationId"), id);
  EXPECT_EQ(Text(live[2], "verb"), "title");
  EXPECT_FALSE(indexer->Next(std::chrono::milliseconds(300)));
  indexer->Close();

  // Resumed from a cursor: exactly what follows it, once.
  auto resumed = open(kIndexer, Seq(p2), &error);
  ASSERT_TRUE(resumed) << error;
  EXPECT_EQ(Ids(resumed->Until(Text(titled.json(), "id"), "the resumed indexer")), Ids(live));
  EXPECT_FALSE(resumed->Next(std::chrono::milliseconds(300)));

  // Nobody else may follow it.
  EXPECT_FALSE(open(kAlice, 0, &error));
  Reply refused = alice.Get("/v1/index/events?cursor=0");
  EXPECT_EQ(refused.status, 403) << refused;
  EXPECT_EQ(refused.code(), "permission_denied");
}

TEST_F(CoredRealtimeTest, AReconnectWithTheLastSeqGetsExactlyWhatItMissedOnceAndInOrder) {
  ASSERT_TRUE(StartCored());
  Client alice = As(kAlice);
  const ContentKey key = ContentKey::Make(), elsewhere_key = ContentKey::Make();
  auto bob_events = Connect(kBob);
  ASSERT_TRUE(bob_events);
  Object::Ptr conversation = Create(alice, key, {kBob});
  Object::Ptr elsewhere = Create(alice, elsewhere_key, {kCarol});
  ASSERT_TRUE(conversation && elsewhere);
  const std::string id = Text(conversation, "id");
  std::vector<Object::Ptr> first = bob_events->Take(1, "bob");
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(Text(first[0], "verb"), "create");
  const std::int64_t last_seen = Seq(first[0]);
  bob_events->Close();

  std::vector<std::string> missed;
  for (int i = 0; i < 20; ++i) {
    Object::Ptr posted = Post(alice, id, key, "while bob was away " + std::to_string(i));
    ASSERT_TRUE(posted);
    missed.push_back(Text(posted, "id"));
    ASSERT_TRUE(Post(alice, Text(elsewhere, "id"), elsewhere_key, "not for bob"));
  }

  auto resumed = Connect(kBob, last_seen);
  ASSERT_TRUE(resumed);
  std::vector<Object::Ptr> replayed = resumed->Take(20, "bob after reconnecting");
  EXPECT_EQ(Ids(replayed), missed);
  Object::Ptr live = Post(alice, id, key, "live again");
  ASSERT_TRUE(live);
  // The next event is the live one: nothing was sent twice, nothing else slipped in.
  Object::Ptr next = resumed->Next();
  ASSERT_TRUE(next) << "bob did not receive the live post";
  EXPECT_EQ(Text(next, "id"), Text(live, "id"));

  // From the very beginning: everything bob may see, once.
  std::vector<std::string> everything = {Text(first[0], "id")};
  everything.insert(everything.end(), missed.begin(), missed.end());
  everything.push_back(Text(live, "id"));
  auto from_start = Connect(kBob, 0);
  ASSERT_TRUE(from_start);
  EXPECT_EQ(Ids(from_start->Take(everything.size(), "bob from the start")), everything);
}

// Two cored processes on one database with cluster_poll_ms (docs/operations/cored.md): what is
// posted on either reaches the realtime clients of both, once and in order, and a client resumes
// on the other node with its cursor.
TEST_F(CoredRealtimeTest, TwoNodesOnOneDatabaseDeliverEachOthersActivitiesOnceAndInOrder) {
  WriteCoredConfig({{"cluster_poll_ms", "50"}});
  ASSERT_TRUE(StartCored());
  DaemonProcess node_b;
  ASSERT_TRUE(StartAnotherNode(node_b, /*share_database=*/true));
  Client alice = As(kAlice), bob_on_b(node_b.port(), env().Token(kBob));
  std::string error;
  auto bob_events_b = EventStream::Open(node_b.port(), env().Token(kBob), 0, &error);
  ASSERT_TRUE(bob_events_b) << error;
  auto alice_events_a = Connect(kAlice, 0);
  ASSERT_TRUE(alice_events_a);

  const ContentKey key = ContentKey::Make();
  Object::Ptr conversation = Create(alice, key, {kBob});
  ASSERT_TRUE(conversation);
  const std::string id = Text(conversation, "id");
  std::vector<std::string> done = {Ids(History(alice, id))[0]};
  for (int i = 0; i < 5; ++i) {
    Object::Ptr on_a = Post(alice, id, key, "on node a " + std::to_string(i));
    Object::Ptr on_b = Post(bob_on_b, id, key, "on node b " + std::to_string(i));
    ASSERT_TRUE(on_a && on_b);
    done.push_back(Text(on_a, "id"));
    done.push_back(Text(on_b, "id"));
  }
  EXPECT_EQ(Ids(bob_events_b->Take(done.size(), "bob on node b")), done);
  std::vector<Object::Ptr> alices = alice_events_a->Take(done.size(), "alice on node a");
  EXPECT_EQ(Ids(alices), done);
  ASSERT_EQ(alices.size(), done.size());

  // alice resumes on node B from the middle: the rest, once, then what comes live.
  alice_events_a->Close();
  auto alice_events_b =
      EventStream::Open(node_b.port(), env().Token(kAlice), Seq(alices[4]), &error);
  ASSERT_TRUE(alice_events_b) << error;
  Object::Ptr live = Post(alice, id, key, "live on node a");
  ASSERT_TRUE(live);
  std::vector<std::string> rest(done.begin() + 5, done.end());
  rest.push_back(Text(live, "id"));
  EXPECT_EQ(Ids(alice_events_b->Take(rest.size(), "alice resumed on node b")), rest);
  // bob's next event is the live one: nothing came twice.
  Object::Ptr next = bob_events_b->Next();
  ASSERT_TRUE(next) << "bob did not receive the live post";
  EXPECT_EQ(Text(next, "id"), Text(live, "id"));
  EXPECT_EQ(node_b.Stop(SIGTERM), 0) << node_b.LogTail();
}

TEST_F(CoredRealtimeTest, AResumeLongerThanAReplayPageAndOverlappingLivePostsIsExactlyOnce) {
  ASSERT_TRUE(StartCored());
  const ContentKey key = ContentKey::Make();
  Client alice = As(kAlice);
  Object::Ptr conversation = Create(alice, key, {kBob});
  ASSERT_TRUE(conversation);
  const std::string id = Text(conversation, "id");
  const std::int64_t cursor = conversation->getValue<std::int64_t>("lastSeq");

  std::mutex mutex;
  std::map<std::int64_t, std::string> posted;  // seq -> id: the order cored gave them
  auto burst = [&](int threads, int each, const std::string& tag) {
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      // `each` and `tag` by value: the threads outlive this call.
      workers.emplace_back([&, t, each, tag] {
        Client client(port(), env().Token(kAlice));
        for (int n = 0; n < each; ++n) {
          Reply reply =
              PostContent(client, id, Seal(key, tag + std::to_string(t) + "-" + std::to_string(n)));
          if (reply.status != 201) {
            ADD_FAILURE() << reply;
            return;
          }
          std::lock_guard<std::mutex> lock(mutex);
          posted[Seq(reply.json())] = Text(reply.json(), "id");
        }
      });
    }
    return workers;
  };
  // While bob is away: more than two of the hub's replay pages (500), from four posters at once.
  for (std::thread& worker : burst(4, 300, "away ")) worker.join();
  // bob comes back while 200 more are being posted: some are replayed from the store, some
  // queued live, and the hand-over between the two must neither drop nor repeat one.
  std::vector<std::thread> live = burst(2, 100, "live ");
  auto bob = Connect(kBob, cursor);
  std::vector<Object::Ptr> received;
  if (bob) received = bob->Take(1400, "bob");
  for (std::thread& worker : live) worker.join();
  ASSERT_TRUE(bob);
  ASSERT_EQ(posted.size(), 1400u);
  std::vector<std::string> expected;
  for (const auto& [seq, activity_id] : posted) expected.push_back(activity_id);
  EXPECT_EQ(Ids(received), expected);
  std::set<std::string> distinct;
  for (const Object::Ptr& event : received) distinct.insert(Text(event, "id"));
  EXPECT_EQ(distinct.size(), received.size()) << "an event was delivered twice";
  Object::Ptr sentinel = Post(alice, id, key, "the end");
  ASSERT_TRUE(sentinel);
  Object::Ptr next = bob->Next();
  ASSERT_TRUE(next);
  EXPECT_EQ(Text(next, "id"), Text(sentinel, "id"));
}

TEST_F(CoredRealtimeTest, AGracefulStopClosesRealtimeConnectionsAndExitsCleanly) {
  ASSERT_TRUE(StartCored());
  auto alice = Connect(kAlice);
  auto bob = Connect(kBob);
  ASSERT_TRUE(alice && bob);
  // The server registers a connection just after the upgrade: wait (bounded) to see both.
  Client anonymous(port(), "");
  Reply health;
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  do {
    health = anonymous.Get("/health");
    ASSERT_EQ(health.status, 200) << health;
  } while (health.json()->getValue<int>("realtimeConnections") != 2 &&
           std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(health.json()->getValue<int>("realtimeConnections"), 2) << health;
  EXPECT_EQ(StopCored(SIGTERM), 0);
  // Both see their connection end (a close frame or the socket closing), nothing else.
  EXPECT_FALSE(alice->Next());
  EXPECT_TRUE(alice->closed());
  EXPECT_FALSE(bob->Next());
  EXPECT_TRUE(bob->closed());
}

// Issue 11: Poco accepted an unmasked client frame and one with a reserved bit set; RFC 6455
// says the server fails such a connection, with a close frame of status 1002.
TEST_F(CoredRealtimeTest, AnUnmaskedOrReservedBitFrameIsClosedWithAProtocolError) {
  ASSERT_TRUE(StartCored());
  const std::map<std::string, std::string> headers = {
      {"Authorization", "Bearer " + env().Token(kAlice)}};
  const struct {
    const char* what;
    std::string frame;
  } violations[] = {
      {"an unmasked text frame", RawWebSocket::MakeFrame(0x81, "hello", /*masked=*/false)},
      {"a text frame with RSV1 set", RawWebSocket::MakeFrame(0xc1, "hello", /*masked=*/true)},
      {"a ping of 126 bytes", RawWebSocket::MakeFrame(0x89, std::string(126, 'p'), true)},
  };
  for (const auto& violation : violations) {
    std::string error;
    auto raw = RawWebSocket::Open(port(), env().client_context(), "/v1/events", headers, &error);
    ASSERT_TRUE(raw) << error;
    raw->Send(violation.frame);
    std::optional<RawWebSocket::Frame> close = raw->ReadClose(kPatience);
    ASSERT_TRUE(close) << violation.what << ": no close frame";
    EXPECT_EQ(close->close_status(), 1002) << violation.what;
    EXPECT_TRUE(raw->EndsWithin(kPatience)) << violation.what << ": the connection stayed open";
  }
  // A proper client's frames keep the connection: a masked text frame is ignored, a masked ping
  // answered.
  std::string error;
  auto raw = RawWebSocket::Open(port(), env().client_context(), "/v1/events", headers, &error);
  ASSERT_TRUE(raw) << error;
  raw->Send(RawWebSocket::MakeFrame(0x81, "hello", true) +
            RawWebSocket::MakeFrame(0x89, "still there?", true));
  std::optional<RawWebSocket::Frame> pong;
  while ((pong = raw->Read(kPatience)) && pong->opcode() != 0xa) {
  }
  ASSERT_TRUE(pong) << "no pong";
  EXPECT_EQ(pong->payload, "still there?");
}

TEST_F(CoredRealtimeTest, ARemovedUserReceivesItsRemovalAndNothingAfter) {
  ASSERT_TRUE(StartCored());
  Client alice = As(kAlice), carol = As(kCarol);
  const ContentKey key = ContentKey::Make(), next_key = ContentKey::Make();
  auto carol_events = Connect(kCarol);
  ASSERT_TRUE(carol_events);
  Object::Ptr conversation = Create(alice, key, {kBob, kCarol});
  ASSERT_TRUE(conversation);
  const std::string id = Text(conversation, "id");
  Object::Ptr before = Post(alice, id, key, "carol still reads this");
  ASSERT_TRUE(before);
  Object::Ptr removal =
      ChangeActivity(alice.Delete("/v1/conversations/" + id + "/participants/" + kCarol));
  ASSERT_TRUE(removal);
  ASSERT_TRUE(Post(alice, id, key, "carol must not get this"));
  Object rotate;
  rotate.set("keyUri", next_key.uri);
  ASSERT_TRUE(ChangeActivity(alice.Put("/v1/conversations/" + id + "/key", rotate)));
  ASSERT_TRUE(Post(alice, id, next_key, "nor this"));
  Object::Ptr sentinel = Create(alice, ContentKey::Make(), {kCarol});
  ASSERT_TRUE(sentinel);
  const std::string sentinel_id = Ids(History(alice, Text(sentinel, "id")))[0];

  const std::vector<std::string> expected = {Ids(History(alice, id))[0], Text(before, "id"),
                                             Text(removal, "id"), sentinel_id};
  std::vector<Object::Ptr> received = carol_events->Until(sentinel_id, "carol");
  EXPECT_EQ(Ids(received), expected);
  ASSERT_GE(received.size(), 3u);
  EXPECT_EQ(Text(received[2], "verb"), "remove");
  EXPECT_EQ(Strings(received[2]->getArray("objectUsers")), (std::vector<std::string>{kCarol}));
  // The replay from the start agrees: her removal is the last she sees of that conversation.
  auto replay = Connect(kCarol, 0);
  ASSERT_TRUE(replay);
  EXPECT_EQ(Ids(replay->Until(sentinel_id, "carol replaying")), expected);
  EXPECT_EQ(carol.Get("/v1/conversations/" + id + "/activities").status, 404);
}

// ---------------------------------------------------------------------------------------------
// 3. The KMS relay with a real kmsd.

class CoredRelayTest : public CoredTest {
 protected:
  void SetUp() override {
    CoredTest::SetUp();
    if (HasFatalFailure()) return;
    std::string error;
    ASSERT_TRUE(env().PrepareKms(&error)) << error;
    const std::string token = RandomHexToken();
    token_file_ = path("relay.token").string();
    std::ofstream(token_file_) << token << "\n";
    ::chmod(token_file_.c_str(), 0600);
    WriteCoredConfig({}, token_file_);
  }

  static std::string RandomHexToken() { return Hex(RandomBytes(32)); }

  // `also_dial`: further cored nodes (their ports) that kmsd's [relay] url lists after this one.
  std::string WriteKmsdConfig(const std::vector<std::uint16_t>& also_dial = {}) {
    std::string urls = "https://127.0.0.1:" + std::to_string(port());
    for (std::uint16_t node : also_dial) urls += ", https://127.0.0.1:" + std::to_string(node);
    const fs::path ini = path("kms.ini");
    const std::string d = env().dir().string();
    std::ofstream(ini) << env().hsm_section() << "[kms]\nhost = " << kKmsHost
                       << "\ndatabase = " << path("kms.db").string()
                       << "\nlisten = 127.0.0.1:0\ntls_cert = " << d << "/tls.pem"
                       << "\ntls_key = " << d << "/tls.key\nidentity_chain = " << d
                       << "/identity.pem\n"
                       << "[relay]\nurl = " << urls << "\nca_file = " << d
                       << "/ca.pem\ntoken_file = " << token_file_ << "\nconnections = 2\n"
                       << "[jwt]\nissuers = acme\nskew_s = 0\n"
                       << "[jwt.acme]\nissuer = https://idp.acme.test\norg = acme\njwks = "
                       << env().jwks("acme") << "\n";
    return ini.string();
  }

  // Starts kmsd (cored must run) and waits until it answers GET /kms/info on its own listener.
  bool StartKmsd(const std::vector<std::uint16_t>& also_dial = {}) {
    const std::string ini = WriteKmsdConfig(also_dial);
    const bool started =
        kmsd_.Start({KMSD_PATH,
                     {"--config", ini},
                     {{"SOFTHSM2_CONF", SoftHsmSandbox::Get().dir() + "/softhsm2.conf"}},
                     path("kmsd.log").string(),
                     path("kmsd.port").string()},
                    [this](std::uint16_t kms_port) {
                      auto https = KmsHttps(kms_port);
                      return https && https->GetInfo().ok();
                    });
    EXPECT_TRUE(started) << kmsd_.error();
    return started;
  }

  std::unique_ptr<client::HttpsTransport> KmsHttps(std::uint16_t kms_port) {
    auto https =
        client::HttpsTransport::New({"https://127.0.0.1:" + std::to_string(kms_port), env().ca()});
    return https.ok() ? std::move(https).value() : nullptr;
  }

  // POST /kms/messages?cluster=... through cored.
  static Reply Relay(Client& client, const std::string& message,
                     const std::string& cluster = kCluster) {
    return client.Send(
        Request("POST", "/kms/messages?cluster=" + cluster, message, "application/jose"));
  }

  // A KmsTransport that goes through cored with `client`'s core token.
  static client::KmsTransport Through(Client* client) {
    return [client](const std::string& message) -> Result<client::KmsResponse> {
      Reply reply = Relay(*client, message);
      if (reply.status == 0) return Error(ErrorCode::kUnavailable, reply.error);
      return client::KmsResponse{reply.status, reply.content_type, reply.body};
    };
  }

  // Waits (bounded) until a message relayed through cored reaches the KMS: the KMS answers
  // something else than cored's 503 "not connected".
  bool WaitForRelay(Client& client) {
    const auto deadline = std::chrono::steady_clock::now() + kPatience;
    Reply reply;
    while (std::chrono::steady_clock::now() < deadline) {
      reply = Relay(client, "e30.e30.e30");  // {}.{}.{}: compact JOSE the KMS refuses
      if (reply.status != 503 && reply.status != 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ADD_FAILURE() << "kmsd did not attach to cored's relay within " << kPatience.count()
                  << " s; last answer: " << reply;
    return false;
  }

  std::unique_ptr<client::KmsSession> Session(Client* through, const std::string& user) {
    auto https = KmsHttps(kmsd_.port());
    if (!https) return nullptr;
    auto info_text = https->GetInfo();
    EXPECT_TRUE(info_text.ok()) << info_text.error().ToString();
    if (!info_text.ok()) return nullptr;
    auto info = client::ParseKmsInfo(*info_text);
    EXPECT_TRUE(info.ok());
    if (!info.ok()) return nullptr;
    auto session =
        client::KmsSession::Open(*info, "cored-test", env().Token(user, "kms"), Through(through));
    EXPECT_TRUE(session.ok()) << session.error().ToString();
    return session.ok() ? std::move(session).value() : nullptr;
  }

  static std::vector<std::string> CreateKeys(client::KmsSession& session, int count) {
    Object fields;
    fields.set("count", count);
    auto answer = session.Call("create", "/keys", fields);
    std::vector<std::string> uris;
    EXPECT_TRUE(answer.ok()) << answer.error().ToString();
    if (!answer.ok()) return uris;
    EXPECT_EQ((*answer)->getValue<int>("status"), 201) << Stringify(**answer);
    Array::Ptr keys = (*answer)->getArray("keys");
    for (unsigned i = 0; keys && i < keys->size(); ++i) {
      uris.push_back(keys->getObject(i)->getValue<std::string>("uri"));
    }
    return uris;
  }

  static Object CreateResourceFields(const std::string& key_uri,
                                     const std::vector<std::string>& auth_ids) {
    Object fields;
    fields.set("keyUris", Strings({key_uri}));
    fields.set("authIds", Strings(auth_ids));
    return fields;
  }

  std::string token_file_;
};

TEST_F(CoredRelayTest, ASealedKmsExchangeGoesThroughTheCore) {
  ASSERT_TRUE(StartCored());
  ASSERT_TRUE(StartKmsd());
  Client alice = As(kAlice), bob = As(kBob);
  ASSERT_TRUE(WaitForRelay(alice));

  auto session = Session(&alice, kAlice);  // ECDHE through cored
  ASSERT_TRUE(session);
  std::vector<std::string> keys = CreateKeys(*session, 2);
  ASSERT_EQ(keys.size(), 2u);
  auto created = session->Call("create", "/resources", CreateResourceFields(keys[0], {kBob}));
  ASSERT_TRUE(created.ok()) << created.error().ToString();
  ASSERT_EQ((*created)->getValue<int>("status"), 201) << Stringify(**created);
  const std::string resource = (*created)->getObject("resource")->getValue<std::string>("uri");
  auto retrieved = session->Call("retrieve", keys[0]);
  ASSERT_TRUE(retrieved.ok()) << retrieved.error().ToString();
  ASSERT_EQ((*retrieved)->getValue<int>("status"), 200) << Stringify(**retrieved);
  const std::string k =
      (*retrieved)->getObject("key")->getObject("jwk")->getValue<std::string>("k");
  EXPECT_EQ(jose::Base64UrlDecode(k)->size(), 32u);
  EXPECT_EQ((*retrieved)->getObject("key")->getValue<std::string>("resourceUri"), resource);

  // bob, authorized on the resource, over his own channel through the core.
  auto bobs = Session(&bob, kBob);
  ASSERT_TRUE(bobs);
  auto for_bob = bobs->Call("retrieve", keys[0]);
  ASSERT_TRUE(for_bob.ok()) << for_bob.error().ToString();
  ASSERT_EQ((*for_bob)->getValue<int>("status"), 200) << Stringify(**for_bob);
  EXPECT_EQ((*for_bob)->getObject("key")->getObject("jwk")->getValue<std::string>("k"), k);

  // The relay endpoint itself: a core token is needed (the KMS token travels sealed inside),
  // the body must be application/jose, and an unknown cluster is 503 at once.
  auto sealed = session->Seal("update", "/ping");
  ASSERT_TRUE(sealed.ok());
  Client with_kms_token(port(), env().Token(kAlice, "kms"));
  EXPECT_EQ(Relay(with_kms_token, *sealed).status, 401);
  Reply wrong_type = alice.Send(Request("POST", std::string("/kms/messages?cluster=") + kCluster,
                                        *sealed, "application/json"));
  EXPECT_EQ(wrong_type.status, 415) << wrong_type;
  Reply no_cluster = alice.Send(Request("POST", "/kms/messages", *sealed, "application/jose"));
  EXPECT_EQ(no_cluster.status, 400) << no_cluster;
  Reply unknown = Relay(alice, *sealed, "kms://kms.globex.test");
  EXPECT_EQ(unknown.status, 503) << unknown;
  EXPECT_EQ(unknown.code(), "unavailable");
  EXPECT_FALSE(unknown.header("Retry-After").empty());
  Reply oversize = Relay(alice, std::string(core::kMaxRelayMessageBytes + 1, 'a'));
  EXPECT_EQ(oversize.status, 413) << oversize;
  EXPECT_EQ(oversize.code(), "message_size");
  // The unsent ping still works after those refusals.
  auto ping = session->Call("update", "/ping");
  ASSERT_TRUE(ping.ok()) << ping.error().ToString();
  EXPECT_EQ((*ping)->getValue<int>("status"), 200);
}

// Two cored nodes of one core (each its own database here: the relay is per node) and one kmsd
// that dials both: a client reaches the KMS through either, one sealed channel goes on through
// the other node, and a node's death costs the other nothing (docs/operations/relay.md).
TEST_F(CoredRelayTest, KmsdServesEveryCoredNodeItNames) {
  ASSERT_TRUE(StartCored());
  DaemonProcess node_b;
  ASSERT_TRUE(StartAnotherNode(node_b));
  ASSERT_TRUE(StartKmsd({node_b.port()}));
  Client alice_a = As(kAlice), alice_b(node_b.port(), env().Token(kAlice));
  ASSERT_TRUE(WaitForRelay(alice_a));
  ASSERT_TRUE(WaitForRelay(alice_b));

  // One channel, opened through node A; its requests then take turns between the nodes.
  std::atomic<int> sent{0};
  client::KmsTransport alternating = [&](const std::string& message) {
    return Through(sent++ % 2 == 0 ? &alice_a : &alice_b)(message);
  };
  auto https = KmsHttps(kmsd_.port());
  ASSERT_TRUE(https);
  auto info_text = https->GetInfo();
  ASSERT_TRUE(info_text.ok()) << info_text.error().ToString();
  auto info = client::ParseKmsInfo(*info_text);
  ASSERT_TRUE(info.ok());
  auto session =
      client::KmsSession::Open(*info, "cored-test", env().Token(kAlice, "kms"), alternating);
  ASSERT_TRUE(session.ok()) << session.error().ToString();
  std::vector<std::string> keys;
  for (int round = 0; round < 3; ++round) {
    std::vector<std::string> made = CreateKeys(**session, 1);
    ASSERT_EQ(made.size(), 1u);
    keys.push_back(made[0]);
    auto retrieved = (*session)->Call("retrieve", made[0]);
    ASSERT_TRUE(retrieved.ok()) << retrieved.error().ToString();
    EXPECT_EQ((*retrieved)->getValue<int>("status"), 200) << Stringify(**retrieved);
  }
  EXPECT_GE(sent.load(), 6);  // the ECDHE exchange and six calls, both nodes carried some

  // kmsd names the node each connection is up to.
  const std::string log = ReadFile(path("kmsd.log"));
  for (std::uint16_t node : {port(), node_b.port()}) {
    EXPECT_NE(log.find("up to https://127.0.0.1:" + std::to_string(node)), std::string::npos)
        << log;
  }

  // Node A dies: through node B, a new channel reaches every key made before.
  EXPECT_EQ(StopCored(SIGKILL), -SIGKILL);
  auto through_b = Session(&alice_b, kAlice);
  ASSERT_TRUE(through_b);
  for (const std::string& key : keys) {
    auto retrieved = through_b->Call("retrieve", key);
    ASSERT_TRUE(retrieved.ok()) << retrieved.error().ToString();
    EXPECT_EQ((*retrieved)->getValue<int>("status"), 200) << Stringify(**retrieved);
  }
  EXPECT_EQ(node_b.Stop(SIGTERM), 0) << node_b.LogTail();
}

TEST_F(CoredRelayTest, ACreateWithAnEmbeddedKmsMessageMakesTheConversationAndTheResource) {
  ASSERT_TRUE(StartCored());
  ASSERT_TRUE(StartKmsd());
  Client alice = As(kAlice), bob = As(kBob);
  ASSERT_TRUE(WaitForRelay(alice));
  auto session = Session(&alice, kAlice);
  ASSERT_TRUE(session);
  std::vector<std::string> keys = CreateKeys(*session, 1);
  ASSERT_EQ(keys.size(), 1u);

  auto sealed = session->Seal("create", "/resources", CreateResourceFields(keys[0], {kBob}));
  ASSERT_TRUE(sealed.ok());
  Object body;
  body.set("kmsResourceUri", ResourceUri());
  body.set("keyUri", keys[0]);
  body.set("participants", Strings({kBob}));
  body.set("kmsMessage", *sealed);
  Reply created = alice.Post("/v1/conversations", body);
  ASSERT_EQ(created.status, 201) << created;
  Object::Ptr conversation = created.json()->getObject("conversation");
  ASSERT_TRUE(conversation);
  Object::Ptr kms_answer = created.json()->getObject("kmsAnswer");
  ASSERT_TRUE(kms_answer) << created;
  EXPECT_EQ(kms_answer->getValue<int>("status"), 200);
  auto opened = session->OpenAnswer({kms_answer->getValue<int>("status"),
                                     Text(kms_answer, "contentType"), Text(kms_answer, "body")});
  ASSERT_TRUE(opened.ok()) << opened.error().ToString();
  ASSERT_EQ((*opened)->getValue<int>("status"), 201) << Stringify(**opened);
  const std::string resource = (*opened)->getObject("resource")->getValue<std::string>("uri");

  // Both exist: the conversation for bob, the resource (with the key bound) at the KMS.
  EXPECT_EQ(bob.Get("/v1/conversations/" + Text(conversation, "id")).status, 200);
  auto resource_read = session->Call("retrieve", resource);
  ASSERT_TRUE(resource_read.ok()) << resource_read.error().ToString();
  EXPECT_EQ((*resource_read)->getValue<int>("status"), 200) << Stringify(**resource_read);
  auto bobs = Session(&bob, kBob);
  ASSERT_TRUE(bobs);
  auto key_for_bob = bobs->Call("retrieve", keys[0]);
  ASSERT_TRUE(key_for_bob.ok());
  EXPECT_EQ((*key_for_bob)->getValue<int>("status"), 200) << Stringify(**key_for_bob);

  // When the KMS cannot be reached, or refuses the message outright, nothing is created.
  auto count_mine = [&] {
    Reply mine = alice.Get("/v1/conversations?limit=200");
    EXPECT_EQ(mine.status, 200) << mine;
    return mine.status == 200 ? mine.json()->getArray("items")->size() : 0;
  };
  const std::size_t before = count_mine();
  Object unreachable;
  unreachable.set("kmsResourceUri", ResourceUri("kms.globex.test"));
  unreachable.set("keyUri", ContentKey::Make("kms.globex.test").uri);
  unreachable.set("kmsMessage", *sealed);
  Reply not_connected = alice.Post("/v1/conversations", unreachable);
  EXPECT_EQ(not_connected.status, 503) << not_connected;
  Object refused;
  refused.set("kmsResourceUri", ResourceUri());
  refused.set("keyUri", ContentKey::Make().uri);
  refused.set("kmsMessage", "e30.e30.e30");
  Reply kms_refused = alice.Post("/v1/conversations", refused);
  EXPECT_EQ(kms_refused.status, 409) << kms_refused;
  EXPECT_EQ(count_mine(), before);
}

TEST_F(CoredRelayTest, WhenTheKmsGoesAwayTheCoreAnswers503AtOnceAndRecoversWhenItReturns) {
  ASSERT_TRUE(StartCored());
  ASSERT_TRUE(StartKmsd());
  Client alice = As(kAlice);
  ASSERT_TRUE(WaitForRelay(alice));
  auto session = Session(&alice, kAlice);
  ASSERT_TRUE(session);
  auto ping = session->Call("update", "/ping");
  ASSERT_TRUE(ping.ok()) << ping.error().ToString();
  ASSERT_EQ((*ping)->getValue<int>("status"), 200);

  EXPECT_EQ(kmsd_.Stop(SIGKILL), -SIGKILL);
  // Not a hang: each answer comes well within the relay's lease timeout (2 s), the first one
  // included (its connection may still look attached until the write fails).
  for (int i = 0; i < 5; ++i) {
    auto sealed = session->Seal("update", "/ping");
    ASSERT_TRUE(sealed.ok());
    const auto start = std::chrono::steady_clock::now();
    Reply reply = Relay(alice, *sealed);
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(reply.status, 503) << "attempt " << i << ": " << reply;
    EXPECT_EQ(reply.code(), "unavailable") << reply;
    EXPECT_FALSE(reply.header("Retry-After").empty());
    EXPECT_LT(took, std::chrono::seconds(2))
        << "attempt " << i << " took "
        << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
  }

  // kmsd comes back (same database, a new process) and dials in again.
  ASSERT_TRUE(StartKmsd());
  ASSERT_TRUE(WaitForRelay(alice));
  auto again = Session(&alice, kAlice);
  ASSERT_TRUE(again);
  std::vector<std::string> keys = CreateKeys(*again, 1);
  EXPECT_EQ(keys.size(), 1u);
}

// The attack of issue 11: 1,000 idle connections from 20 addresses and 100 more trickling a
// request head, all held open while real clients come. cored (a worker per request, 64 here)
// still answers a REST request, upgrades a WebSocket and lets kmsd attach to the relay and relay
// a KMS exchange, each in the clients' usual time (a 5 s timeout for REST; a thread-per-connection
// listener never answered them).
TEST_F(CoredRelayTest, IdleAndTricklingConnectionsDoNotStarveClientsWebSocketsOrTheRelay) {
  ASSERT_TRUE(StartCored());
  ConnectionFlood flood(port());
  ASSERT_TRUE(flood.OpenIdle(1000, strongroom::testing::LoopbackSources(2, 20))) << flood.error();
  ASSERT_TRUE(flood.OpenTricklers(100, strongroom::testing::LoopbackSources(30, 2)))
      << flood.error();

  Client alice = As(kAlice);
  alice.set_timeout(std::chrono::seconds(5));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(alice.Get("/v1/conversations").status, 200) << i;
  auto stream = Connect(kAlice);
  EXPECT_TRUE(stream);
  ASSERT_TRUE(StartKmsd());  // attaches to the relay through the same listener
  ASSERT_TRUE(WaitForRelay(alice));
  auto session = Session(&alice, kAlice);
  ASSERT_TRUE(session);
  EXPECT_EQ(CreateKeys(*session, 1).size(), 1u);
  EXPECT_EQ(flood.IdleStillOpen(), 1000u);
}

// ---------------------------------------------------------------------------------------------
// 3b. HAProxy in front (deploy/haproxy/strongroom.cfg, run as it is but for its addresses).

class CoredFrontTest : public CoredRelayTest {
 protected:
  // HAProxy with the example configuration: the core tier's servers are cored and a port nothing
  // listens on, the KMS tier's kmsd and another such port.
  bool StartFront() {
    core_front_ = FreePort();
    kms_front_ = FreePort();
    return StartHaproxy({{"core", core_front_}, {"kms", kms_front_}},
                        {{"cored", {port(), FreePort()}}, {"kmsd", {kmsd_.port(), FreePort()}}},
                        {core_front_, kms_front_});
  }

  std::uint16_t core_front_ = 0, kms_front_ = 0;
};

TEST_F(CoredFrontTest, HealthChecksTakeADeadNodeOutAndStreamsPassThrough) {
  ASSERT_TRUE(StartCored());
  ASSERT_TRUE(StartKmsd());
  ASSERT_TRUE(StartFront());

  // Every new connection through a front is served, at once: before the checks have taken the dead
  // nodes out, a connection refused by one is sent to the live one (redispatch).
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(Client(core_front_, env().Token(kAlice)).Get("/v1/conversations").status, 200) << i;
    EXPECT_EQ(Client(kms_front_, "").Get("/kms/info").status, 200) << i;
  }

  // The checks (GET /health over TLS, checked against the CA) find the nodes that are not there,
  // and only them.
  ASSERT_TRUE(WaitUntil([&] {
    return FrontLogged("cored/cored2 is DOWN") && FrontLogged("kmsd/kmsd2 is DOWN");
  })) << FrontLog();
  EXPECT_FALSE(FrontLogged("cored/cored1 is DOWN")) << FrontLog();
  EXPECT_FALSE(FrontLogged("kmsd/kmsd1 is DOWN")) << FrontLog();

  // A sealed KMS channel through the KMS front.
  auto https = KmsHttps(kms_front_);
  ASSERT_TRUE(https);
  auto info_text = https->GetInfo();
  ASSERT_TRUE(info_text.ok()) << info_text.error().ToString();
  auto info = client::ParseKmsInfo(*info_text);
  ASSERT_TRUE(info.ok());
  auto session = client::KmsSession::Open(*info, "front-test", env().Token(kAlice, "kms"),
                                          client::MakeKmsTransport(*https));
  ASSERT_TRUE(session.ok()) << session.error().ToString();
  ASSERT_EQ(CreateKeys(**session, 1).size(), 1u);

  // A realtime stream through the core front gets what is posted through it.
  Client alice(core_front_, env().Token(kAlice));
  const ContentKey key = ContentKey::Make();
  Object::Ptr conversation = Create(alice, key, {kBob});
  ASSERT_TRUE(conversation);
  std::string error;
  auto bobs = EventStream::Open(core_front_, env().Token(kBob), std::nullopt, &error);
  ASSERT_TRUE(bobs) << error;
  Object::Ptr posted = Post(alice, Text(conversation, "id"), key, "through the front");
  ASSERT_TRUE(posted);
  std::vector<Object::Ptr> seen = bobs->Until(Text(posted, "id"), "bob");
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(Text(seen.back(), "id"), Text(posted, "id"));

  // The node dies: its check fails, the stream through the front is closed rather than left
  // hanging, and once the node is back the front serves again without being told.
  const std::uint16_t node_port = port();
  EXPECT_EQ(StopCored(SIGKILL), -SIGKILL);
  ASSERT_TRUE(WaitUntil([&] { return FrontLogged("cored/cored1 is DOWN"); })) << FrontLog();
  EXPECT_EQ(bobs->Next(std::chrono::seconds(10)), nullptr);
  EXPECT_TRUE(bobs->closed());
  EXPECT_NE(Client(core_front_, env().Token(kAlice)).Get("/v1/conversations").status, 200);
  WriteCoredConfig({{"listen", "127.0.0.1:" + std::to_string(node_port)}}, token_file_);
  ASSERT_TRUE(StartCored());
  ASSERT_TRUE(WaitUntil([&] {
    return Client(core_front_, env().Token(kAlice)).Get("/v1/conversations").status == 200;
  })) << FrontLog();
  EXPECT_TRUE(haproxy_->running());
}

// ---------------------------------------------------------------------------------------------
// 4. Crash durability.

class CoredCrashTest : public CoredTest {};

TEST_F(CoredCrashTest, SigkillDuringABurstKeepsEveryAcknowledgedActivityInOrder) {
  ASSERT_TRUE(StartCored());
  constexpr int kThreads = 8;
  constexpr int kPostsPerThread = 200;
  std::vector<std::string> users;
  for (int t = 0; t < kThreads; ++t) users.push_back("poster" + std::to_string(t) + "@acme.test");
  Client owner = As(users[0]);
  const ContentKey key = ContentKey::Make();
  Object::Ptr conversation =
      Create(owner, key, std::vector<std::string>(users.begin() + 1, users.end()));
  ASSERT_TRUE(conversation);
  const std::string id = Text(conversation, "id");

  struct Acked {
    std::string id;
    std::int64_t seq;
  };
  std::mutex mutex;
  std::map<std::string, Acked> acknowledged;  // by clientActivityId
  std::vector<std::string> unexpected;
  std::atomic<int> acked_count{0};
  std::atomic<bool> went_wrong{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Client client(port(), env().Token(users[static_cast<std::size_t>(t)]));
      for (int n = 0; n < kPostsPerThread; ++n) {
        const std::string client_id = "t" + std::to_string(t) + "-n" + std::to_string(n);
        Reply reply = PostContent(client, id, Seal(key, "burst " + client_id), client_id);
        if (reply.status == 0) return;  // cored is gone; this post is in doubt
        std::lock_guard<std::mutex> lock(mutex);
        if (reply.status != 201) {
          unexpected.push_back(client_id + ": HTTP " + std::to_string(reply.status) + " " +
                               reply.body.substr(0, 200));
          went_wrong = true;
          return;
        }
        acknowledged[client_id] = {Text(reply.json(), "id"), Seq(reply.json())};
        ++acked_count;
      }
    });
  }
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  while (acked_count.load() < 400 && std::chrono::steady_clock::now() < deadline &&
         !went_wrong.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(StopCored(SIGKILL), -SIGKILL);
  for (std::thread& thread : threads) thread.join();
  ASSERT_TRUE(unexpected.empty()) << unexpected.front();
  ASSERT_GE(acknowledged.size(), 400u);
  EXPECT_LT(acknowledged.size(), static_cast<std::size_t>(kThreads * kPostsPerThread))
      << "every post was acknowledged before the kill; the test did not crash cored mid-burst";

  // The database is whole, as SQLite sees it.
  {
    auto db = Database::OpenSqlite(db_path().string(), CoreService::Migrations());
    ASSERT_TRUE(db.ok()) << db.error().ToString();
    std::string integrity;
    Status checked = (*db)->WithSession([&](Poco::Data::Session& s) {
      s << "PRAGMA integrity_check", Poco::Data::Keywords::into(integrity),
          Poco::Data::Keywords::now;
      return OkStatus();
    });
    ASSERT_TRUE(checked.ok()) << checked.error().ToString();
    EXPECT_EQ(integrity, "ok");
  }

  ASSERT_TRUE(StartCored());
  Client reader = As(users[0]);
  std::vector<Object::Ptr> history = History(reader, id);
  std::map<std::string, Object::Ptr> stored;  // posts by clientActivityId
  std::int64_t previous = 0;
  std::vector<int> stored_per_thread(kThreads, 0);
  for (const Object::Ptr& activity : history) {
    EXPECT_GT(Seq(activity), previous) << "history is not strictly increasing";
    previous = Seq(activity);
    if (Text(activity, "verb") != "post") continue;
    const std::string client_id = Text(activity, "clientActivityId");
    // Whole: it opens with the key and says what its client id says.
    std::optional<std::string> plaintext = Unseal(key, Text(activity, "content"));
    EXPECT_TRUE(plaintext && *plaintext == "burst " + client_id)
        << "stored activity " << Text(activity, "id") << " (" << client_id << ") is damaged";
    EXPECT_TRUE(stored.emplace(client_id, activity).second) << client_id << " stored twice";
    const int t = std::stoi(client_id.substr(1, client_id.find('-') - 1));
    if (t >= 0 && t < kThreads) ++stored_per_thread[static_cast<std::size_t>(t)];
  }
  std::size_t missing = 0;
  for (const auto& [client_id, acked] : acknowledged) {
    auto found = stored.find(client_id);
    if (found == stored.end()) {
      ++missing;
      ADD_FAILURE() << "acknowledged activity " << acked.id << " (" << client_id << ", seq "
                    << acked.seq << ") is gone";
      continue;
    }
    EXPECT_EQ(Text(found->second, "id"), acked.id) << client_id;
    EXPECT_EQ(Seq(found->second), acked.seq) << client_id;
  }
  EXPECT_EQ(missing, 0u);
  EXPECT_GE(stored.size(), acknowledged.size());
  // Each thread posted one at a time: it has its acknowledged posts, plus at most the one that
  // was in flight at the kill.
  for (int t = 0; t < kThreads; ++t) {
    int acked = 0;
    for (const auto& [client_id, unused] : acknowledged) {
      if (client_id.rfind("t" + std::to_string(t) + "-", 0) == 0) ++acked;
    }
    const int kept = stored_per_thread[static_cast<std::size_t>(t)];
    EXPECT_TRUE(kept == acked || kept == acked + 1)
        << "thread " << t << ": " << acked << " acknowledged, " << kept << " stored";
  }
  // And cored goes on from there.
  Object::Ptr after = Post(reader, id, key, "after the crash");
  ASSERT_TRUE(after);
  EXPECT_GT(Seq(after), previous);
}

// A cored node killed behind the front, on PostgreSQL.

// Two cored nodes on one PostgreSQL database and one files directory behind HAProxy with the
// deployment's configuration (deploy/haproxy/strongroom.cfg; the KMS tier's servers are ports
// nothing listens on), every client going through the front.
class CoredFaultTest : public CoredTest {
 protected:
  // Node A (cored_) and node B (node_b_) with the same core.ini, then the front over both.
  bool StartNodesAndFront() {
    Result<std::string> conninfo = testing::PostgresCluster::NewDatabase();
    EXPECT_TRUE(conninfo.ok()) << conninfo.error().ToString();
    if (!conninfo.ok()) return false;
    WriteCoredConfig({{"database", ""}, {"cluster_poll_ms", "50"}}, "",
                     "[database]\nengine = postgresql\nconninfo = " + *conninfo + "\n");
    fs::copy_file(path("core.ini"), path("core-b.ini"));
    if (!StartCored() || !StartNode(node_b_, "-b")) return false;
    front_ = FreePort();
    return StartHaproxy({{"core", front_}, {"kms", FreePort()}},
                        {{"cored", {port(), node_b_.port()}}, {"kmsd", {FreePort(), FreePort()}}},
                        {front_});
  }

  void TearDown() override {
    node_b_.Stop(SIGKILL);
    const std::string log = ReadFile(path("cored-b.log"));
    EXPECT_EQ(log.find("a request failed"), std::string::npos) << log;
    if (HasFailure()) {
      std::cerr << "--- node B's log ---\n"
                << node_b_.LogTail(4000) << "\n--- HAProxy's log ---\n"
                << FrontLog().substr(0, 8000) << "\n";
    }
    haproxy_.reset();
    CoredTest::TearDown();
  }

  // GET /health's realtimeConnections of the node on `node_port` (-1 when it does not answer).
  static int RealtimeConnections(std::uint16_t node_port) {
    Reply health = Client(node_port, "").Get("/health");
    return health.status == 200 ? health.json()->getValue<int>("realtimeConnections") : -1;
  }

  DaemonProcess node_b_;
  std::uint16_t front_ = 0;
};

// A listener through the front: it reconnects (through the front) with the seq of the last event
// it saw whenever its stream ends, until it has seen `through`.
class ResumingListener {
 public:
  ResumingListener(std::uint16_t front, std::string token)
      : front_(front), token_(std::move(token)) {}

  // Connects once; false (with a failure) when the stream cannot be opened.
  bool Connect() {
    std::string error;
    stream_ = EventStream::Open(front_, token_, last_seq_.load(), &error);
    EXPECT_TRUE(stream_) << error;
    return stream_ != nullptr;
  }

  // Reads on a thread of its own until it has seen seq `through` (SetThrough) or Stop.
  void Start() {
    thread_ = std::thread([this] {
      while (!stopping_.load() && last_seq_.load() < through_.load()) {
        if (!stream_) {
          std::string error;
          stream_ = EventStream::Open(front_, token_, last_seq_.load(), &error);
          if (!stream_) {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            continue;
          }
          ++reconnects_;
        }
        // Long enough that a receive never times out inside a frame (a replay page is large).
        Object::Ptr event = stream_->Next(std::chrono::seconds(5));
        if (event) {
          std::lock_guard<std::mutex> lock(mutex_);
          events_.push_back(event);
          last_seq_ = Seq(event);
        } else if (stream_->closed()) {
          stream_.reset();
        }
      }
    });
  }
  void SetThrough(std::int64_t seq) { through_ = seq; }
  void Stop() {
    stopping_ = true;
    if (thread_.joinable()) thread_.join();
    stream_.reset();
  }
  ~ResumingListener() { Stop(); }

  std::int64_t last_seq() const { return last_seq_.load(); }
  int reconnects() const { return reconnects_.load(); }
  std::vector<Object::Ptr> events() {
    std::lock_guard<std::mutex> lock(mutex_);
    return events_;
  }

 private:
  const std::uint16_t front_;
  const std::string token_;
  std::unique_ptr<EventStream> stream_;
  std::atomic<std::int64_t> last_seq_{0};
  std::atomic<std::int64_t> through_{std::numeric_limits<std::int64_t>::max()};
  std::atomic<int> reconnects_{0};
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::vector<Object::Ptr> events_;
  std::thread thread_;
};

// Posters and listeners on both nodes through the front; one node is killed with SIGKILL while
// they post. A post that got no answer is in doubt and is posted again, with the same
// clientActivityId and content, until it is acknowledged; a listener whose stream ended resumes
// through the front with the last seq it saw. In the end each post is stored once, the seqs are
// gap-free, and every listener has seen every stored activity of its conversations once, in order.
TEST_F(CoredFaultTest, PostgresNodeKilledWhilePostingThroughTheFrontLosesAndRepeatsNothing) {
  ASSERT_TRUE(StartNodesAndFront());
  constexpr int kPosters = 4, kPostsEach = 100, kListeners = 6;
  std::vector<std::string> posters, listeners;
  for (int i = 0; i < kPosters; ++i) posters.push_back("poster" + std::to_string(i) + "@acme.test");
  for (int i = 0; i < kListeners; ++i) {
    listeners.push_back("listener" + std::to_string(i) + "@acme.test");
  }
  std::vector<std::string> everyone = posters;
  everyone.insert(everyone.end(), listeners.begin() + 1, listeners.end());
  Client creator(front_, env().Token(listeners[0]));
  const ContentKey key = ContentKey::Make();
  std::vector<std::string> conversations;
  for (int c = 0; c < 2; ++c) {
    Object::Ptr conversation = Create(creator, key, everyone);
    ASSERT_TRUE(conversation);
    conversations.push_back(Text(conversation, "id"));
  }

  // The listeners, from the beginning, spread over both nodes by the front.
  std::vector<std::unique_ptr<ResumingListener>> streams;
  for (const std::string& user : listeners) {
    streams.push_back(std::make_unique<ResumingListener>(front_, env().Token(user)));
    ASSERT_TRUE(streams.back()->Connect()) << user;
  }
  int on_a = 0, on_b = 0;
  ASSERT_TRUE(WaitUntil([&] {
    on_a = RealtimeConnections(port());
    on_b = RealtimeConnections(node_b_.port());
    return on_a + on_b == kListeners;
  })) << on_a
      << " + " << on_b << " realtime connections, not " << kListeners;
  ASSERT_GT(on_a, 0) << "the front put no listener on node A";
  ASSERT_GT(on_b, 0) << "the front put no listener on node B";
  for (auto& stream : streams) stream->Start();

  struct Acked {
    std::string id;
    std::int64_t seq;
    std::string conversation;
    std::string content;
  };
  std::mutex mutex;
  std::map<std::string, Acked> acknowledged;  // by clientActivityId
  std::set<std::string> in_doubt;             // posts that got no answer at first
  std::vector<std::string> unexpected;
  std::atomic<int> acked_count{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kPosters; ++t) {
    threads.emplace_back([&, t] {
      Client client(front_, env().Token(posters[static_cast<std::size_t>(t)]));
      for (int n = 0; n < kPostsEach; ++n) {
        const std::string client_id = "p" + std::to_string(t) + "-" + std::to_string(n);
        const std::string& conversation = conversations[static_cast<std::size_t>(n % 2)];
        const std::string content = Seal(key, "fault " + client_id);
        Reply reply = PostContent(client, conversation, content, client_id);
        for (int attempt = 0; reply.status == 0 && attempt < 600; ++attempt) {
          {
            std::lock_guard<std::mutex> lock(mutex);
            in_doubt.insert(client_id);
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
          reply = PostContent(client, conversation, content, client_id);
        }
        std::lock_guard<std::mutex> lock(mutex);
        if (reply.status != 201) {
          unexpected.push_back(client_id + ": " + (reply.status == 0 ? reply.error : reply.body));
          return;
        }
        acknowledged[client_id] = {Text(reply.json(), "id"), Seq(reply.json()), conversation,
                                   content};
        ++acked_count;
      }
    });
  }
  // A quarter posted: node A dies (the posters join before any assertion can end the test).
  EXPECT_TRUE(WaitUntil([&] { return acked_count.load() >= kPosters * kPostsEach / 4; },
                        std::chrono::milliseconds(1), kPatience));
  EXPECT_EQ(StopCored(SIGKILL), -SIGKILL);
  for (std::thread& thread : threads) thread.join();
  ASSERT_TRUE(unexpected.empty()) << unexpected.size() << " posts failed: " << unexpected.front();
  ASSERT_EQ(acknowledged.size(), static_cast<std::size_t>(kPosters * kPostsEach));
  EXPECT_FALSE(in_doubt.empty()) << "no post was in flight on node A when it was killed";
  // Each poster's first post, acknowledged before the kill (by either node), posted again through
  // the front to the node left: the same activity comes back.
  for (int t = 0; t < kPosters; ++t) {
    const Acked& first = acknowledged["p" + std::to_string(t) + "-0"];
    Client poster(front_, env().Token(posters[static_cast<std::size_t>(t)]));
    Reply again =
        PostContent(poster, first.conversation, first.content, "p" + std::to_string(t) + "-0");
    ASSERT_EQ(again.status, 201) << again;
    EXPECT_EQ(Text(again.json(), "id"), first.id);
    EXPECT_EQ(Seq(again.json()), first.seq);
  }

  // What the surviving node stores: each post once, as acknowledged; seqs without a gap.
  Client reader(node_b_.port(), env().Token(listeners[0]));
  std::map<std::string, std::vector<std::string>> history;  // conversation -> ids in seq order
  std::map<std::string, int> stored;                        // clientActivityId -> times
  std::vector<std::int64_t> seqs;
  for (const std::string& conversation : conversations) {
    for (const Object::Ptr& activity : History(reader, conversation)) {
      history[conversation].push_back(Text(activity, "id"));
      seqs.push_back(Seq(activity));
      if (Text(activity, "verb") != "post") continue;
      const std::string client_id = Text(activity, "clientActivityId");
      ++stored[client_id];
      auto acked = acknowledged.find(client_id);
      if (acked == acknowledged.end()) {
        ADD_FAILURE() << "stored post " << client_id << " was never acknowledged";
        continue;
      }
      EXPECT_EQ(Text(activity, "id"), acked->second.id) << client_id;
      EXPECT_EQ(Seq(activity), acked->second.seq) << client_id;
      EXPECT_EQ(conversation, acked->second.conversation) << client_id;
    }
  }
  for (const auto& [client_id, acked] : acknowledged) {
    EXPECT_EQ(stored[client_id], 1)
        << client_id << (in_doubt.count(client_id) ? " (in doubt)" : "");
  }
  std::sort(seqs.begin(), seqs.end());
  ASSERT_EQ(seqs.size(), static_cast<std::size_t>(2 + kPosters * kPostsEach));
  for (std::size_t i = 1; i < seqs.size(); ++i) {
    EXPECT_EQ(seqs[i], seqs[i - 1] + 1) << "a gap or a repeat in the seqs at " << seqs[i];
  }

  // Every listener sees everything, once and in order; those of node A resumed through the front.
  for (auto& stream : streams) stream->SetThrough(seqs.back());
  for (std::size_t i = 0; i < streams.size(); ++i) {
    EXPECT_TRUE(WaitUntil([&] { return streams[i]->last_seq() >= seqs.back(); },
                          std::chrono::milliseconds(20), std::chrono::minutes(2)))
        << listeners[i] << " saw seq " << streams[i]->last_seq() << " of " << seqs.back();
  }
  int resumed = 0;
  for (std::size_t i = 0; i < streams.size(); ++i) {
    streams[i]->Stop();
    resumed += streams[i]->reconnects() > 0 ? 1 : 0;
    std::map<std::string, std::vector<std::string>> seen;
    std::int64_t previous = 0;
    for (const Object::Ptr& event : streams[i]->events()) {
      EXPECT_GT(Seq(event), previous) << listeners[i] << ": out of order or repeated";
      previous = Seq(event);
      seen[Text(event, "conversationId")].push_back(Text(event, "id"));
    }
    EXPECT_EQ(seen, history) << listeners[i];
  }
  // Node A's listeners, and only they, lost their streams and resumed.
  EXPECT_EQ(resumed, on_a) << on_a << " listeners were on node A, " << on_b << " on node B";
}

// ---------------------------------------------------------------------------------------------
// 5. Invariant 1: the core never holds a plaintext word or a content key.

class CoredInvariantTest : public CoredTest {
 protected:
  // Every file under `root` (recursively) holding `needle`, with the file names.
  static std::vector<std::string> FilesHolding(const fs::path& root, const std::string& needle) {
    std::vector<std::string> found;
    for (const auto& entry : fs::recursive_directory_iterator(root)) {
      if (!entry.is_regular_file()) continue;
      if (ReadFile(entry.path()).find(needle) != std::string::npos) {
        found.push_back(entry.path().filename().string());
      }
    }
    return found;
  }

  // Each form a key could be written in.
  static std::vector<std::pair<std::string, std::string>> KeyForms(const ContentKey& key) {
    const std::string base64 = Base64(key.bytes);
    return {{"raw", std::string(key.bytes.begin(), key.bytes.end())},
            {"hex", Hex(key.bytes)},
            {"HEX", Hex(key.bytes, true)},
            {"base64", base64.substr(0, base64.find('='))},
            {"base64url", jose::Base64UrlEncode(key.bytes)}};
  }
};

TEST_F(CoredInvariantTest, DatabaseFilesAndLogHoldNoPlaintextWordAndNoContentKey) {
  ASSERT_TRUE(StartCored());
  Client alice = As(kAlice), bob = As(kBob);
  const std::vector<std::string> markers = {"Xylophonic-Quasar-4711", "marmalade_zeppelin_0815",
                                            "QUOKKA-SUNDIAL-PLUTONIC"};
  const ContentKey first = ContentKey::Make(), second = ContentKey::Make();

  Object body;
  body.set("kmsResourceUri", ResourceUri());
  body.set("keyUri", first.uri);
  body.set("participants", Strings({kBob}));
  body.set("encryptedTitle", Seal(first, "title: " + markers[0]));
  Reply created = alice.Post("/v1/conversations", body);
  ASSERT_EQ(created.status, 201) << created;
  const std::string id = Text(created.json()->getObject("conversation"), "id");
  auto events = Connect(kBob);  // the realtime path carries the same ciphertext
  ASSERT_TRUE(events);
  std::vector<std::string> contents;
  for (int i = 0; i < 5; ++i) {
    Object::Ptr posted = Post(i % 2 ? bob : alice, id, first,
                              "we talk about " + markers[static_cast<std::size_t>(i) % 3] +
                                  " and " + markers[(static_cast<std::size_t>(i) + 1) % 3]);
    ASSERT_TRUE(posted);
    contents.push_back(Text(posted, "content"));
  }
  // A file: its bytes encrypted under the key, its reference in a share.
  const std::string file_blob = Seal(first, "file body: " + markers[1] + " " + markers[2]);
  Reply uploaded = bob.Send(
      Request("POST", "/v1/conversations/" + id + "/files", file_blob, "application/octet-stream"));
  ASSERT_EQ(uploaded.status, 201) << uploaded;
  Object share;
  share.set("content", Seal(first, "the file " + markers[0] + ".txt"));
  share.set("fileIds", Strings({Text(uploaded.json(), "id")}));
  ASSERT_EQ(bob.Post("/v1/conversations/" + id + "/activities", share).status, 201);
  Object rotate;
  rotate.set("keyUri", second.uri);
  ASSERT_TRUE(ChangeActivity(alice.Put("/v1/conversations/" + id + "/key", rotate)));
  Object::Ptr last = Post(alice, id, second, "after rotation " + markers[2]);
  ASSERT_TRUE(last);
  contents.push_back(Text(last, "content"));
  // bob connected after the creation: 5 posts, the share, the rotation, the last post.
  EXPECT_EQ(events->Until(Text(last, "id"), "bob").size(), 8u);
  // Refusals are logged at most without their content.
  EXPECT_EQ(PostContent(alice, id, Seal(first, "refused " + markers[0])).status, 409);
  EXPECT_EQ(PostContent(alice, id, "not a JWE " + markers[1]).status, 400);

  auto scan = [&](const std::string& when) {
    SCOPED_TRACE(when);
    // The scan does see what cored stored: the ciphertext is there.
    bool ciphertext_found = false;
    for (const std::string& content : contents) {
      const std::string iv_and_ciphertext = content.substr(content.find("..") + 2);
      ciphertext_found = ciphertext_found || !FilesHolding(dir_->path(), iv_and_ciphertext).empty();
    }
    EXPECT_TRUE(ciphertext_found)
        << "no stored ciphertext found: the scan looks at the wrong files";
    for (const std::string& marker : markers) {
      std::vector<std::string> holding = FilesHolding(dir_->path(), marker);
      EXPECT_TRUE(holding.empty()) << "the word " << marker << " is in " << holding.front();
    }
    for (const ContentKey* key : {&first, &second}) {
      for (const auto& [form, text] : KeyForms(*key)) {
        std::vector<std::string> holding = FilesHolding(dir_->path(), text);
        EXPECT_TRUE(holding.empty()) << "a content key (" << form << ") is in " << holding.front();
      }
    }
    const std::string log = ReadFile(path("cored.log"));
    EXPECT_FALSE(log.empty()) << "cored wrote no log at all";
    for (const std::string* token : {&alice.token(), &bob.token()}) {
      EXPECT_EQ(log.find(*token), std::string::npos) << "a bearer token is in cored's log";
      // Its signature alone neither.
      EXPECT_EQ(log.find(token->substr(token->rfind('.') + 1)), std::string::npos);
    }
  };
  // Crashed: the write-ahead log still holds the latest pages.
  EXPECT_EQ(StopCored(SIGKILL), -SIGKILL);
  EXPECT_TRUE(fs::exists(db_path().string() + "-wal"));
  scan("after SIGKILL");
  // Restarted and stopped cleanly: whatever the checkpoint moved into the database.
  ASSERT_TRUE(StartCored());
  Client again = As(kAlice);
  EXPECT_EQ(History(again, id).size(), 9u);  // and the creation
  EXPECT_EQ(StopCored(SIGTERM), 0);
  scan("after SIGTERM");

  // The scan is able to fail: a planted word is found.
  std::ofstream(path("planted.txt")) << "xx" << markers[0] << "yy";
  EXPECT_EQ(FilesHolding(dir_->path(), markers[0]), (std::vector<std::string>{"planted.txt"}));
}

// Issue 14: an edit or a retraction takes the old ciphertext and its index tokens out of
// everything cored keeps on disk before it answers, while cored runs; the new content is there.
TEST_F(CoredInvariantTest, AnEditedOrRetractedMessagesOldCiphertextAndTokensAreGoneWhenAnswered) {
  ASSERT_TRUE(StartCored());
  Client alice = As(kAlice), bob = As(kBob), indexer = As(kIndexer);
  const ContentKey key = ContentKey::Make();
  Object::Ptr conversation = Create(alice, key, {kBob});
  ASSERT_TRUE(conversation);
  const std::string id = Text(conversation, "id");
  auto events = Connect(kBob);
  ASSERT_TRUE(events);
  // Messages on the same pages around them; a long one on overflow pages of its own.
  std::vector<Object::Ptr> fillers;
  for (int i = 0; i < 30; ++i) fillers.push_back(Post(i % 2 ? bob : alice, id, key, "filler"));
  Object::Ptr small = Post(alice, id, key, "a short message to take back");
  Object::Ptr large = Post(alice, id, key, std::string(30000, 'L'));
  for (int i = 0; i < 30; ++i) fillers.push_back(Post(i % 2 ? bob : alice, id, key, "filler"));
  ASSERT_TRUE(small && large);
  for (const Object::Ptr& filler : fillers) ASSERT_TRUE(filler);
  // The core stores 24 bits of each token, as an entry in a chunk of the entries of its bucket in
  // the room (core/src/posting_chunk.h): fillers' tokens in the same two buckets make each chunk
  // long enough for the scan to tell it apart.
  auto random_token = [] { return jose::Base64UrlEncode(RandomBytes(24)); };
  auto token_in = [&](std::uint8_t bucket) {
    for (;;) {
      std::string token = random_token();
      if (core::internal::IndexKey::Of(token).bucket == bucket) return token;
    }
  };
  const std::string small_token = random_token();
  const std::uint8_t small_bucket = core::internal::IndexKey::Of(small_token).bucket;
  std::string large_token = random_token();
  while (core::internal::IndexKey::Of(large_token).bucket == small_bucket) {
    large_token = random_token();
  }
  const std::uint8_t large_bucket = core::internal::IndexKey::Of(large_token).bucket;
  const std::vector<std::string> filler_tokens = {token_in(small_bucket), token_in(large_bucket)};
  auto put = [&](const std::string& activity, const std::vector<std::string>& tokens) {
    Object body;
    body.set("tokens", Strings(tokens));
    return indexer.Put("/v1/index/" + id + "/" + activity, body).status;
  };
  for (std::size_t i = 0; i < fillers.size(); ++i) {
    if (i == 30) {
      ASSERT_EQ(put(Text(small, "id"), {small_token}), 204);
      ASSERT_EQ(put(Text(large, "id"), {large_token}), 204);
    }
    ASSERT_EQ(put(Text(fillers[i], "id"), filler_tokens), 204);
  }
  // The stored chunk that holds an activity's entry of a bucket, read beside the running cored.
  auto chunk = [&](const Object::Ptr& activity, std::uint8_t bucket) {
    std::string bytes;
    auto db = Database::OpenSqlite(db_path().string(), core::CoreService::Migrations());
    EXPECT_TRUE(db.ok()) << db.error().ToString();
    if (!db.ok()) return bytes;
    Status read = (*db)->WithSession([&](Poco::Data::Session& s) -> Status {
      SqlStatement room = Database::Prepare(s, core::internal::IndexPostings::kRoomSql);
      room.Bind(id);
      if (!room.Next()) return OkStatus();
      SqlStatement found = Database::Prepare(s, core::internal::IndexPostings::kChunkAtOrBelowSql);
      found.Bind(room.Int(0)).Bind(std::int64_t{bucket}).Bind(Seq(activity));
      if (found.Next()) {
        const std::span<const std::uint8_t> blob = found.Blob(1);
        bytes.assign(blob.begin(), blob.end());
      }
      return OkStatus();
    });
    EXPECT_TRUE(read.ok()) << read.error().ToString();
    return bytes;
  };
  const std::string small_chunk = chunk(small, small_bucket);
  const std::string large_chunk = chunk(large, large_bucket);
  ASSERT_GT(small_chunk.size(), 100u);
  ASSERT_GT(large_chunk.size(), 100u);

  // Pieces of a JWE's text every 1,000 characters: a long one is split over pages.
  auto pieces = [](const std::string& content) {
    const std::string text = content.substr(content.find("..") + 2);
    std::vector<std::string> out;
    for (std::size_t at = 0; at + 24 <= text.size(); at += 1000) out.push_back(text.substr(at, 24));
    return out;
  };
  auto holding = [&](const std::vector<std::string>& needles) {
    std::set<std::string> files;
    for (const std::string& needle : needles) {
      for (const std::string& file : FilesHolding(dir_->path(), needle)) files.insert(file);
    }
    return files;
  };
  // The scan sees what cored stores.
  ASSERT_FALSE(holding(pieces(Text(small, "content"))).empty());
  ASSERT_FALSE(holding(pieces(Text(large, "content"))).empty());
  ASSERT_FALSE(holding({small_chunk}).empty());
  ASSERT_FALSE(holding({large_chunk}).empty());
  // And no token's text: the store keeps 24 bits of it.
  EXPECT_EQ(holding({small_token, large_token}), std::set<std::string>{});

  Object edit;
  const std::string replacement = Seal(key, "the edited message");
  edit.set("content", replacement);
  Reply edited =
      alice.Send(Request("PUT", "/v1/conversations/" + id + "/activities/" + Text(small, "id"),
                         Stringify(edit), "application/json"));
  ASSERT_EQ(edited.status, 200) << edited;
  EXPECT_EQ(holding(pieces(Text(small, "content"))), std::set<std::string>{});
  EXPECT_EQ(holding({small_chunk}), std::set<std::string>{});
  EXPECT_FALSE(holding(pieces(replacement)).empty());

  Reply retracted = alice.Delete("/v1/conversations/" + id + "/activities/" + Text(large, "id"));
  ASSERT_EQ(retracted.status, 200) << retracted;
  EXPECT_EQ(holding(pieces(Text(large, "content"))), std::set<std::string>{});
  EXPECT_EQ(holding({large_chunk}), std::set<std::string>{});

  // bob saw both live, told apart from new messages, with their targets.
  std::vector<Object::Ptr> seen = events->Until(Text(retracted.json(), "id"), "bob");
  ASSERT_GE(seen.size(), 2u);
  EXPECT_EQ(Text(seen[seen.size() - 2], "verb"), "edit");
  EXPECT_EQ(Text(seen[seen.size() - 2], "targetId"), Text(small, "id"));
  EXPECT_EQ(Text(seen[seen.size() - 2], "content"), replacement);
  EXPECT_EQ(Text(seen.back(), "verb"), "retract");
  EXPECT_EQ(Text(seen.back(), "targetId"), Text(large, "id"));
  // The index finds neither old token.
  for (const std::string& token : {small_token, large_token}) {
    Object search;
    search.set("queries", Queries({id}, {token}));
    Reply found = indexer.Post("/v1/index/search", search);
    ASSERT_EQ(found.status, 200) << found;
    EXPECT_EQ(found.json()->getArray("items")->size(), 0u);
  }

  // Killed and restarted: nothing comes back from the log.
  EXPECT_EQ(StopCored(SIGKILL), -SIGKILL);
  EXPECT_EQ(holding(pieces(Text(small, "content"))), std::set<std::string>{});
  EXPECT_EQ(holding(pieces(Text(large, "content"))), std::set<std::string>{});
  EXPECT_EQ(holding({small_chunk, large_chunk}), std::set<std::string>{});
  ASSERT_TRUE(StartCored());
  Client again = As(kBob);
  Reply message = again.Get("/v1/conversations/" + id + "/activities/" + Text(small, "id"));
  ASSERT_EQ(message.status, 200) << message;
  EXPECT_EQ(Text(message.json(), "content"), replacement);
  EXPECT_FALSE(Text(message.json(), "edited").empty());
  message = again.Get("/v1/conversations/" + id + "/activities/" + Text(large, "id"));
  EXPECT_EQ(Text(message.json(), "content"), "");
  EXPECT_FALSE(Text(message.json(), "retracted").empty());
  EXPECT_EQ(StopCored(SIGTERM), 0);
  EXPECT_EQ(holding(pieces(Text(small, "content"))), std::set<std::string>{});
  EXPECT_EQ(holding(pieces(Text(large, "content"))), std::set<std::string>{});
  EXPECT_EQ(holding({small_chunk, large_chunk}), std::set<std::string>{});
}

// ---------------------------------------------------------------------------------------------
// 6. The core realm links no PKCS#11.

class CoredLinkTest : public ::testing::Test {};

TEST_F(CoredLinkTest, CoredLinksNoPkcs11) {
  ToolRun needed = Tool("/usr/bin/readelf", {"-d", CORED_PATH});
  ASSERT_EQ(needed.exit_code, 0) << needed.err;
  ASSERT_NE(needed.out.find("(NEEDED)"), std::string::npos) << needed.out;
  ASSERT_NE(needed.out.find("libPocoNet"), std::string::npos) << needed.out;  // read right
  ToolRun ldd = Tool("/usr/bin/ldd", {CORED_PATH});
  ASSERT_EQ(ldd.exit_code, 0) << ldd.err;
  for (const std::string forbidden : {"p11-kit", "softhsm", "pkcs11", "libp11"}) {
    EXPECT_EQ(needed.out.find(forbidden), std::string::npos) << "cored needs " << forbidden;
    EXPECT_EQ(ldd.out.find(forbidden), std::string::npos) << "cored loads " << forbidden;
  }
  ToolRun undefined = Tool("/usr/bin/nm", {"-D", "--undefined-only", CORED_PATH});
  ASSERT_EQ(undefined.exit_code, 0) << undefined.err;
  for (const std::string symbol : {"C_Initialize", "C_GetFunctionList", "p11_kit_"}) {
    EXPECT_EQ(undefined.out.find(symbol), std::string::npos) << "cored imports " << symbol;
  }
  ToolRun symbols = Tool("/usr/bin/nm", {"-C", CORED_PATH});
  ASSERT_EQ(symbols.exit_code, 0) << symbols.err;
  EXPECT_EQ(symbols.out.find("strongroom::hsm::"), std::string::npos)
      << "cored contains the HSM library";
  // The check can fail: kmsd, which does use PKCS#11, is caught by it.
  ToolRun kmsd = Tool("/usr/bin/ldd", {KMSD_PATH});
  ASSERT_EQ(kmsd.exit_code, 0) << kmsd.err;
  EXPECT_NE(kmsd.out.find("p11-kit"), std::string::npos) << kmsd.out;
}

// cored links the PostgreSQL engine (libpq, statically) without the libraries Debian's libpq.so
// brings along: libldap, and through it GnuTLS and p11-kit. A cored linked with libpq.so loads
// p11-kit, which the test above catches too; this one names the way it came in.
TEST_F(CoredLinkTest, CoredLinksPostgresWithoutLdap) {
  ToolRun symbols = Tool("/usr/bin/nm", {CORED_PATH});
  ASSERT_EQ(symbols.exit_code, 0) << symbols.err;
  EXPECT_NE(symbols.out.find(" T PQconnectdb\n"), std::string::npos) << "cored has no libpq";
  // libpq's LDAP calls are answered by ours (common/src/libpq_without_ldap.cc), not imported.
  EXPECT_NE(symbols.out.find(" T ldap_init\n"), std::string::npos) << "ldap_init is not ours";
  ToolRun ldd = Tool("/usr/bin/ldd", {CORED_PATH});
  ASSERT_EQ(ldd.exit_code, 0) << ldd.err;
  for (const std::string forbidden : {"libpq.so", "libldap", "liblber", "libgnutls", "libsasl"}) {
    EXPECT_EQ(ldd.out.find(forbidden), std::string::npos) << "cored loads " << forbidden;
  }
  // The check can fail: PostgreSQL's psql, which links libpq.so, is caught by it.
  ToolRun psql = Tool("/usr/bin/ldd", {"/usr/lib/postgresql/15/bin/psql"});
  ASSERT_EQ(psql.exit_code, 0) << psql.err;
  EXPECT_NE(psql.out.find("libpq.so"), std::string::npos) << psql.out;
  EXPECT_NE(psql.out.find("libldap"), std::string::npos) << psql.out;
  EXPECT_NE(psql.out.find("libgnutls"), std::string::npos) << psql.out;
}

// ---------------------------------------------------------------------------------------------
// 7. A failed start: one line and the exit status of the error (docs/exit-status.md).

TEST_F(CoredApiTest, AFailedStartExitsWithTheStatusOfItsError) {
  const std::pair<std::map<std::string, std::string>, std::string> cases[] = {
      {{{"max_connections", "lots"}}, "exit status 64"},  // INVALID_ARGUMENT: EX_USAGE
      {{{"database", path("absent/core.db").string()}}, "exit status 69"},  // UNAVAILABLE
  };
  for (const auto& [overrides, status] : cases) {
    WriteCoredConfig(overrides);
    fs::remove(path("cored.log"));
    EXPECT_FALSE(cored_.Start({CORED_PATH,
                               {"--config", path("core.ini").string()},
                               {},
                               path("cored.log").string(),
                               path("cored.port").string()}));
    EXPECT_NE(cored_.error().find("exited during start-up (" + status + ")"), std::string::npos)
        << cored_.error();
    const std::string log = ReadFile(path("cored.log"));
    EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
    EXPECT_EQ(log.find("serving"), std::string::npos) << log;
  }
}

// Issue 15: a database whose schema is another program's, or newer than this cored knows, stops
// cored at start with one line that says so (exit status 78, EX_CONFIG, as FAILED_PRECONDITION),
// and leaves the database as it was.
TEST_F(CoredApiTest, AWrongOrNewerSchemaStopsCoredWithOneLine) {
  const std::string file = db_path().string();
  const std::vector<Migration> kms_like = {
      {1, "the KMS's keys", {"CREATE TABLE keys (uri TEXT PRIMARY KEY)"}}};
  const std::pair<const char*, std::function<void()>> cases[] = {
      {"another program's schema",
       [&] {
         fs::remove(file);
         ASSERT_TRUE(Database::OpenSqlite(file, kms_like).ok());
       }},
      {"newer than this program knows",
       [&] {
         fs::remove(file);
         auto db = Database::OpenSqlite(file, CoreService::Migrations());
         ASSERT_TRUE(db.ok()) << db.error().ToString();
         ASSERT_TRUE((*db)
                         ->InTransaction([](Poco::Data::Session& s) -> Status {
                           Database::Prepare(s,
                                             "INSERT INTO schema_migrations VALUES "
                                             "(99, 'a later Strongroom', '2030-01-01T00:00:00Z')")
                               .Run();
                           return OkStatus();
                         })
                         .ok());
       }},
  };
  for (const auto& [what, make] : cases) {
    make();
    const std::string before = ReadFile(db_path());
    WriteCoredConfig({});
    fs::remove(path("cored.log"));
    EXPECT_FALSE(cored_.Start({CORED_PATH,
                               {"--config", path("core.ini").string()},
                               {},
                               path("cored.log").string(),
                               path("cored.port").string()}))
        << what;
    EXPECT_NE(cored_.error().find("exited during start-up (exit status 78)"), std::string::npos)
        << what << ": " << cored_.error();
    const std::string log = ReadFile(path("cored.log"));
    EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << what << ":\n" << log;
    EXPECT_EQ(log.rfind("cored: error: ", 0), 0u) << log;
    EXPECT_NE(log.find("schema"), std::string::npos) << what << ":\n" << log;
    EXPECT_NE(log.find(what), std::string::npos) << log;
    EXPECT_EQ(ReadFile(db_path()), before) << what << ": the database changed";
  }
}

// Compliance: acme's officer reads, ciphertext only, the acme conversations alice is or was in;
// globex's officer, a non-officer and an officer asking about another user's room do not.
TEST_F(CoredApiTest, ComplianceOfficersReadTheirOrganizationsRoomsOfAUser) {
  constexpr char kOfficer[] = "officer@acme.test";
  constexpr char kGlobexOfficer[] = "officer@globex.test";
  WriteCoredConfig(
      {}, "",
      std::string("[compliance]\nacme = ") + kOfficer + "\nglobex = " + kGlobexOfficer + "\n");
  ASSERT_TRUE(StartCored());
  Client alice = As(kAlice), bob = As(kBob), carol = As(kCarol), officer = As(kOfficer);
  Client globex_officer(port(), env().Token(kGlobexOfficer, "core", 0, 3600, "globex"));
  const ContentKey key = ContentKey::Make(), other_key = ContentKey::Make();
  Object::Ptr room = Create(alice, key, {kBob});
  Object::Ptr not_hers = Create(bob, other_key, {kCarol});
  ASSERT_TRUE(room && not_hers);
  const std::string id = Text(room, "id");
  ASSERT_TRUE(Post(alice, id, key, "hello bob"));
  ASSERT_TRUE(Post(bob, id, key, "hello alice"));
  const std::vector<Object::Ptr> as_alice = History(alice, id);

  const std::string list = "/v1/compliance/conversations?user=" + std::string(kAlice);
  Reply listed = officer.Get(list);
  ASSERT_EQ(listed.status, 200) << listed;
  Array::Ptr items = listed.json()->getArray("items");
  ASSERT_TRUE(items);
  ASSERT_EQ(items->size(), 1u) << listed;  // her room only, not bob's with carol
  EXPECT_EQ(Text(items->getObject(0), "id"), id);

  const std::string history =
      "/v1/compliance/conversations/" + id + "/activities?user=" + std::string(kAlice);
  Reply read = officer.Get(history + "&after=0&limit=200");
  ASSERT_EQ(read.status, 200) << read;
  Array::Ptr activities = read.json()->getArray("items");
  ASSERT_TRUE(activities);
  std::vector<std::string> ids, contents;
  for (unsigned i = 0; i < activities->size(); ++i) {
    ids.push_back(Text(activities->getObject(i), "id"));
    if (activities->getObject(i)->has("content")) {
      contents.push_back(Text(activities->getObject(i), "content"));
    }
  }
  EXPECT_EQ(ids, Ids(as_alice));  // exactly the history participants read: ciphertext
  ASSERT_EQ(contents.size(), 2u);
  EXPECT_EQ(contents[0].rfind("ey", 0), 0u);  // a compact JWE, never plaintext
  EXPECT_EQ(read.body.find("hello"), std::string::npos);

  // Another org's officer: nothing listed, the room not found.
  Reply globex_list = globex_officer.Get(list);
  ASSERT_EQ(globex_list.status, 200) << globex_list;
  EXPECT_EQ(globex_list.json()->getArray("items")->size(), 0u);
  EXPECT_EQ(globex_officer.Get(history).status, 404);
  // Not officers: refused.
  for (Client* who : {&alice, &bob, &carol}) {
    EXPECT_EQ(who->Get(list).status, 403);
    EXPECT_EQ(who->Get(history).status, 403);
  }
  // A room alice never was in is not hers to read through her.
  EXPECT_EQ(officer
                .Get("/v1/compliance/conversations/" + Text(not_hers, "id") +
                     "/activities?user=" + std::string(kAlice))
                .status,
            404);
  // No user, an unknown parameter, a write: refused.
  EXPECT_EQ(officer.Get("/v1/compliance/conversations").status, 400);
  EXPECT_EQ(officer.Get(list + "&cursor=1").status, 400);
  EXPECT_EQ(officer.Post(list, Object()).status, 405);
  EXPECT_EQ(officer.Get("/v1/compliance/other").status, 404);

  // Every access is one log line with the ids, never content.
  const std::string log = ReadFile(path("cored.log"));
  EXPECT_NE(log.find("cored: compliance: officer \"officer@acme.test\" (org \"acme\") read user "
                     "\"alice@acme.test\" conversation \"" +
                     id + "\": ok"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("officer \"officer@globex.test\" (org \"globex\") read user "
                     "\"alice@acme.test\" conversation \"" +
                     id + "\": not_found"),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find(Text(as_alice.back(), "content")), std::string::npos);
}

}  // namespace
}  // namespace strongroom::core
