// An HTTPS listener's settings (listener_settings.h) as kmsd's [kms] and [ops] and cored's [core]
// read them: defaults, what each key may be, and the edge started from them on 127.0.0.1.
#include "strongroom/common/listener_settings.h"

#include <Poco/AutoPtr.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/Util/IniFileConfiguration.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <sstream>
#include <string>

#include "../support/connection_flood.h"
#include "../support/test_dir.h"
#include "strongroom/common/http_support.h"

namespace strongroom {
namespace {

using testing::TestDir;
using testing::TlsConnection;

Poco::AutoPtr<Poco::Util::IniFileConfiguration> Ini(const std::string& text) {
  std::istringstream in(text);
  return new Poco::Util::IniFileConfiguration(in);
}

const std::string kTls = "tls_cert = /etc/x.crt\ntls_key = /etc/x.key\n";

// The listener of a section, read over `defaults`; the error message when it is refused.
Result<ListenerSettings> Read(const std::string& section_body,
                              const ListenerSettings& defaults = {},
                              const WorkerSetting& workers = {}) {
  return ReadListenerSettings(*Ini("[svc]\n" + section_body), "svc", defaults, workers);
}

std::string Refusal(const std::string& section_body, const WorkerSetting& workers = {}) {
  Result<ListenerSettings> read = Read(section_body, {}, workers);
  EXPECT_FALSE(read.ok()) << section_body;
  if (read.ok()) return "";
  EXPECT_EQ(read.error().code(), ErrorCode::kInvalidArgument) << section_body;
  return read.error().message();
}

TEST(ListenerSettingsTest, AbsentKeysKeepTheSectionsDefaults) {
  const ListenerSettings defaults{.port = 8443,
                                  .max_connections = 64,
                                  .max_connections_per_peer = 32,
                                  .keep_alive_timeout = std::chrono::seconds(10)};
  Result<ListenerSettings> read = Read(kTls, defaults);
  ASSERT_TRUE(read.ok()) << read.error().ToString();
  EXPECT_EQ(read->host, "127.0.0.1");
  EXPECT_EQ(read->port, 8443);
  EXPECT_EQ(read->tls_cert, "/etc/x.crt");
  EXPECT_EQ(read->tls_key, "/etc/x.key");
  EXPECT_EQ(read->max_connections, 64u);
  EXPECT_EQ(read->max_open_connections, 4096u);
  EXPECT_EQ(read->max_connections_per_peer, 32u);
  EXPECT_EQ(read->keep_alive_timeout, std::chrono::seconds(10));
  EXPECT_EQ(read->io_timeout, std::chrono::seconds(30));
}

TEST(ListenerSettingsTest, EveryKeyIsReadFromItsSection) {
  Result<ListenerSettings> read =
      Read("listen = [::1]:0\n" + kTls +
           "max_connections = 128\nmax_open_connections = 20000\nmax_connections_per_peer = 0\n");
  ASSERT_TRUE(read.ok()) << read.error().ToString();
  EXPECT_EQ(read->host, "::1");
  EXPECT_EQ(read->port, 0);
  EXPECT_EQ(read->max_connections, 128u);
  EXPECT_EQ(read->max_open_connections, 20000u);
  EXPECT_EQ(read->max_connections_per_peer, 0u);  // no limit

  // Another section's keys are not this one's.
  Result<ListenerSettings> other = ReadListenerSettings(
      *Ini("[other]\nlisten = 0.0.0.0:1\nmax_connections = 9\n[svc]\n" + kTls), "svc", {}, {});
  ASSERT_TRUE(other.ok()) << other.error().ToString();
  EXPECT_EQ(other->host, "127.0.0.1");
  EXPECT_EQ(other->max_connections, 64u);
}

TEST(ListenerSettingsTest, TheSectionNamesAndBoundsItsWorkers) {
  const WorkerSetting threads{"max_threads", 1, 64};
  Result<ListenerSettings> read = Read(kTls + "max_threads = 8\n", {}, threads);
  ASSERT_TRUE(read.ok()) << read.error().ToString();
  EXPECT_EQ(read->max_connections, 8u);
  EXPECT_EQ(Refusal(kTls + "max_threads = 65\n", threads),
            "svc.max_threads must be a whole number from 1 to 64, got '65'");
  EXPECT_EQ(ListenerSettingKeys(threads),
            (std::set<std::string>{"listen", "tls_cert", "tls_key", "max_threads",
                                   "max_open_connections", "max_connections_per_peer"}));
}

TEST(ListenerSettingsTest, BadValuesAreRefusedNamingTheSetting) {
  EXPECT_EQ(Refusal("listen = 127.0.0.1\n" + kTls),
            "svc.listen must be host:port or [address]:port, got '127.0.0.1'");
  EXPECT_EQ(Refusal("listen = 127.0.0.1:70000\n" + kTls),
            "svc.listen must be host:port or [address]:port, got '127.0.0.1:70000'");
  EXPECT_EQ(Refusal(kTls + "max_connections = 0\n"),
            "svc.max_connections must be a whole number from 1 to 4096, got '0'");
  EXPECT_EQ(Refusal(kTls + "max_connections = 4097\n"),
            "svc.max_connections must be a whole number from 1 to 4096, got '4097'");
  EXPECT_EQ(Refusal(kTls + "max_open_connections = 0\n"),
            "svc.max_open_connections must be a whole number from 1 to 65536, got '0'");
  EXPECT_EQ(Refusal(kTls + "max_connections_per_peer = -1\n"),
            "svc.max_connections_per_peer must be a whole number from 0 to 65536, got '-1'");
  EXPECT_EQ(Refusal(kTls + "max_connections_per_peer = lots\n"),
            "svc.max_connections_per_peer must be a whole number from 0 to 65536, got 'lots'");
}

TEST(ListenerSettingsTest, TheCertificateAndKeyAreRequired) {
  EXPECT_EQ(Refusal("tls_key = /etc/x.key\n"),
            "the configuration names no TLS certificate (set tls_cert = ... in section [svc])");
  EXPECT_EQ(Refusal("tls_cert = /etc/x.crt\ntls_key =  \n"),
            "the configuration names no TLS private key (set tls_key = ... in section [svc])");
}

TEST(ListenerSettingsTest, ServerOptionsCarryEverySetting) {
  const ListenerSettings settings{.host = "::1",
                                  .port = 9,
                                  .max_connections = 3,
                                  .max_open_connections = 5,
                                  .max_connections_per_peer = 7,
                                  .keep_alive_timeout = std::chrono::seconds(11),
                                  .io_timeout = std::chrono::seconds(13)};
  const http::HttpsServerOptions options = settings.ServerOptions("named");
  EXPECT_EQ(options.listen_host, "::1");
  EXPECT_EQ(options.listen_port, 9);
  EXPECT_EQ(options.max_threads, 3u);
  EXPECT_EQ(options.max_connections, 5u);
  EXPECT_EQ(options.max_connections_per_peer, 7u);
  EXPECT_EQ(options.keep_alive_timeout, std::chrono::seconds(11));
  EXPECT_EQ(options.io_timeout, std::chrono::seconds(13));
  EXPECT_EQ(options.server_name, "named");
}

class Hello : public Poco::Net::HTTPRequestHandler {
 public:
  void handleRequest(Poco::Net::HTTPServerRequest& request,
                     Poco::Net::HTTPServerResponse& response) override {
    http::Discard(request, response);
    http::SendJson(response, 200, "{\"hello\":true}");
  }
};

class HelloFactory : public Poco::Net::HTTPRequestHandlerFactory {
 public:
  Poco::Net::HTTPRequestHandler* createRequestHandler(
      const Poco::Net::HTTPServerRequest&) override {
    return new Hello;
  }
};

TEST(ListenerSettingsTest, StartHttpsListenerServesOverTlsOrNamesTheListener) {
  TestDir dir;
  const std::string script =
      "cd '" + dir.string() +
      "' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "
      "l.key -out l.crt -days 2 -subj '/CN=localhost' 2>/dev/null";
  ASSERT_EQ(std::system(script.c_str()), 0) << script;
  ListenerSettings settings{.tls_cert = (dir / "l.crt").string(),
                            .tls_key = (dir / "l.key").string(),
                            .max_connections = 2};
  {
    auto server =
        StartHttpsListener(settings, "the test listener", "listener-test", new HelloFactory);
    ASSERT_TRUE(server.ok()) << server.error().ToString();
    ASSERT_NE((*server)->port(), 0);  // port 0: any free one
    TlsConnection c;
    ASSERT_TRUE(c.Open((*server)->port()));
    ASSERT_TRUE(c.Write("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    const std::string answer = c.ReadAnswer();
    EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0u) << answer;
    EXPECT_NE(answer.find("{\"hello\":true}"), std::string::npos) << answer;
  }
  Poco::Net::uninitializeSSL();

  settings.tls_key = (dir / "missing.key").string();
  auto refused =
      StartHttpsListener(settings, "the test listener", "listener-test", new HelloFactory);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(refused.error().message().find("the test listener"), std::string::npos)
      << refused.error().message();
  EXPECT_NE(refused.error().message().find("missing.key"), std::string::npos)
      << refused.error().message();
}

}  // namespace
}  // namespace strongroom
