#include "strongroom/indexer/indexer_clients.h"

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <stdio.h>

#include <cctype>
#include <mutex>

#include "strongroom/common/jose/base64url.h"
#include "strongroom/common/secret_bytes.h"

namespace strongroom::indexer {
namespace {

std::int64_t SystemNowS() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The "exp" of a JWT's payload, unverified; 0 when there is none.
std::int64_t ExpiryOf(const std::string& token) {
  const std::size_t first = token.find('.');
  const std::size_t second = first == std::string::npos ? first : token.find('.', first + 1);
  if (second == std::string::npos) return 0;
  Result<std::vector<std::uint8_t>> payload =
      jose::Base64UrlDecode(std::string_view(token).substr(first + 1, second - first - 1));
  if (!payload.ok()) return 0;
  try {
    Poco::JSON::Parser parser;
    Poco::JSON::Object::Ptr claims = parser.parse(std::string(payload->begin(), payload->end()))
                                         .extract<Poco::JSON::Object::Ptr>();
    if (claims && claims->has("exp")) return claims->getValue<std::int64_t>("exp");
  } catch (const Poco::Exception&) {
  } catch (const std::exception&) {
  }
  return 0;
}

class Stream : public ActivityStream {
 public:
  explicit Stream(std::unique_ptr<client::EventStream> events) : events_(std::move(events)) {}
  ~Stream() override { events_->Close(); }
  Result<std::vector<client::Activity>> Next(std::chrono::milliseconds patience) override {
    return events_->Next(patience);
  }

 private:
  std::unique_ptr<client::EventStream> events_;
};

}  // namespace

client::TokenSource CommandTokenSource(std::string command, const std::string& audience,
                                       std::function<std::int64_t()> now_s) {
  for (std::size_t at = command.find("{audience}"); at != std::string::npos;
       at = command.find("{audience}", at + audience.size())) {
    command.replace(at, 10, audience);
  }
  if (!now_s) now_s = SystemNowS;
  struct Cached {
    std::mutex mutex;
    std::string token;
    std::int64_t renew_at = 0;
  };
  auto cached = std::make_shared<Cached>();
  return [command, cached, now_s]() -> Result<std::string> {
    std::lock_guard<std::mutex> lock(cached->mutex);
    const std::int64_t now = now_s();
    if (!cached->token.empty() && now < cached->renew_at) return cached->token;
    FILE* pipe = ::popen(command.c_str(), "r");
    if (!pipe) return Error(ErrorCode::kUnauthenticated, "cannot run the token command");
    std::string token;
    char buffer[4096];
    std::size_t got;
    while ((got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0 && token.size() < 64 * 1024) {
      token.append(buffer, got);
    }
    const int status = ::pclose(pipe);
    while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) {
      token.pop_back();
    }
    if (status != 0 || token.empty() || token.size() >= 64 * 1024) {
      ZeroizeString(token);
      return Error(ErrorCode::kUnauthenticated, "the token command failed or printed no token");
    }
    const std::int64_t exp = ExpiryOf(token);
    ZeroizeString(cached->token);
    cached->token = token;
    cached->renew_at = exp > 0 ? exp - 60 : now + 300;
    return token;
  };
}

namespace {
// Owns the officer's context, which it closes when done.
class OfficerKms : public KmsContextIndexerKms {
 public:
  OfficerKms(std::unique_ptr<client::KmsContext> context, std::string org)
      : KmsContextIndexerKms(*context, std::move(org)), context_(std::move(context)) {}
  ~OfficerKms() override { (void)context_->Close(); }

 private:
  std::unique_ptr<client::KmsContext> context_;
};
}  // namespace

OfficerKmsOpener OfficerKmsOverHttps(client::KmsContextOptions base,
                                     client::HttpsTransportOptions https, std::string org) {
  return [base, https, org](const std::string& token) -> Result<std::unique_ptr<IndexerKms>> {
    client::KmsContextOptions options = base;
    options.kms_token = client::StaticToken(token);
    SR_ASSIGN_OR_RETURN(std::unique_ptr<client::KmsContext> context,
                        client::KmsContext::OverHttps(options, https));
    return std::unique_ptr<IndexerKms>(new OfficerKms(std::move(context), org));
  };
}

StreamOpener CoreStreamOpener(client::CoreClient& core) {
  return [&core](std::int64_t cursor) -> Result<std::unique_ptr<ActivityStream>> {
    SR_ASSIGN_OR_RETURN(std::unique_ptr<client::EventStream> events, core.OpenIndexEvents(cursor));
    return std::unique_ptr<ActivityStream>(new Stream(std::move(events)));
  };
}

}  // namespace strongroom::indexer
