// strongroom-idp: a development identity provider. It creates an organization's signing key,
// publishes its JWKS, and mints bearer tokens (ES256 JWTs) for a user, audience and lifetime.
// Production deployments point the KMS and the core at a real OIDC issuer instead.
//
//   strongroom-idp init  --dir DIR --issuer URL [--kid KID]
//   strongroom-idp token --dir DIR --subject USER --audience kms|core [--ttl SECONDS] [--out FILE]
//
// DIR holds signing-key.jwk (the private key, mode 0600), jwks.json (public) and issuer.
#include <Poco/Util/Application.h>
#include <Poco/Util/Option.h>
#include <Poco/Util/OptionException.h>
#include <Poco/Util/OptionSet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include "strongroom/common/exit_status.h"
#include "strongroom/common/jwt.h"

namespace strongroom::kms {
namespace {

constexpr char kUsage[] =
    "strongroom-idp init  --dir DIR --issuer URL [--kid KID]\n"
    "strongroom-idp token --dir DIR --subject USER --audience AUD [--ttl SECONDS] [--out FILE]\n";

Status WriteFile(const std::string& path, std::string_view content, mode_t mode) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) {
    return Error(ErrorCode::kUnavailable, "cannot write " + path + ": " + std::strerror(errno));
  }
  fchmod(fd, mode);
  bool ok = write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
  close(fd);
  if (!ok) return Error(ErrorCode::kUnavailable, "cannot write " + path);
  return OkStatus();
}

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error(ErrorCode::kNotFound, "cannot read " + path + " (run init first?)");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

class Idp : public Poco::Util::Application {
 protected:
  void defineOptions(Poco::Util::OptionSet& options) override {
    using Poco::Util::Option;
    for (const char* name : {"dir", "issuer", "kid", "subject", "audience", "ttl", "out"}) {
      options.addOption(Option(name, "", name).required(false).repeatable(false).argument("V"));
    }
    options.addOption(Option("help", "h", "show usage").required(false).repeatable(false));
  }
  void handleOption(const std::string& name, const std::string& value) override {
    Poco::Util::Application::handleOption(name, value);
    values_[name] = value;
  }

  int main(const std::vector<std::string>& args) override {
    if (values_.count("help") || args.size() != 1) {
      (values_.count("help") ? std::cout : std::cerr) << "usage:\n" << kUsage;
      return values_.count("help") ? EXIT_OK : EXIT_USAGE;
    }
    Status status =
        args[0] == "init" ? Init()
        : args[0] == "token"
            ? Token()
            : Status(Error(ErrorCode::kInvalidArgument, "unknown command '" + args[0] + "'"));
    if (!status.ok()) {
      std::cerr << "strongroom-idp: " << status.error().message() << "\n";
      return ExitStatusFor(status.error().code());
    }
    return EXIT_OK;
  }

 private:
  Result<std::string> Need(const std::string& name) {
    auto it = values_.find(name);
    if (it == values_.end() || it->second.empty()) {
      return Error(ErrorCode::kInvalidArgument, "missing --" + name);
    }
    return it->second;
  }

  Status Init() {
    SR_ASSIGN_OR_RETURN(std::string dir, Need("dir"));
    SR_ASSIGN_OR_RETURN(std::string issuer, Need("issuer"));
    const std::string kid = values_.count("kid") ? values_["kid"] : "dev-1";
    if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return Error(ErrorCode::kUnavailable, "cannot create " + dir + ": " + std::strerror(errno));
    }
    if (access((dir + "/signing-key.jwk").c_str(), F_OK) == 0) {
      return Error(ErrorCode::kAlreadyExists, dir + " already holds a signing key");
    }
    SR_ASSIGN_OR_RETURN(jose::EcKeyPair key, jose::EcKeyPair::Generate(kid));
    SR_ASSIGN_OR_RETURN(SecretBytes private_jwk, key.PrivateJwkJson());
    SR_RETURN_IF_ERROR(WriteFile(dir + "/signing-key.jwk", private_jwk.as_string_view(), 0600));
    SR_ASSIGN_OR_RETURN(std::string public_jwk, key.PublicJwkJson());
    SR_RETURN_IF_ERROR(WriteFile(dir + "/jwks.json", "{\"keys\":[" + public_jwk + "]}\n", 0644));
    SR_RETURN_IF_ERROR(WriteFile(dir + "/issuer", issuer + "\n", 0644));
    std::cout << "issuer " << issuer << ": signing key " << kid << ", JWKS in " << dir
              << "/jwks.json\n";
    return OkStatus();
  }

  Status Token() {
    SR_ASSIGN_OR_RETURN(std::string dir, Need("dir"));
    SR_ASSIGN_OR_RETURN(std::string subject, Need("subject"));
    SR_ASSIGN_OR_RETURN(std::string audience, Need("audience"));
    std::int64_t ttl = 3600;
    if (values_.count("ttl")) {
      const std::string& text = values_["ttl"];
      auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), ttl);
      if (ec != std::errc() || ptr != text.data() + text.size() || ttl <= 0 || ttl > 86400 * 30) {
        return Error(ErrorCode::kInvalidArgument, "--ttl must be 1 to 2592000 seconds");
      }
    }
    SR_ASSIGN_OR_RETURN(std::string issuer, ReadFile(dir + "/issuer"));
    while (!issuer.empty() && issuer.back() == '\n') issuer.pop_back();
    SR_ASSIGN_OR_RETURN(std::string jwk_text, ReadFile(dir + "/signing-key.jwk"));
    SecretBytes jwk({reinterpret_cast<const std::uint8_t*>(jwk_text.data()), jwk_text.size()});
    std::fill(jwk_text.begin(), jwk_text.end(), '\0');
    SR_ASSIGN_OR_RETURN(jose::EcKeyPair key, jose::EcKeyPair::FromPrivateJwk(jwk));
    const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
    SR_ASSIGN_OR_RETURN(std::string token, MintJwt(key, {issuer, subject, audience, now, ttl}));
    if (values_.count("out")) return WriteFile(values_["out"], token + "\n", 0600);
    std::cout << token << "\n";
    return OkStatus();
  }

  std::map<std::string, std::string> values_;
};

}  // namespace
}  // namespace strongroom::kms

int main(int argc, char** argv) {
  strongroom::kms::Idp app;
  try {
    app.init(argc, argv);
  } catch (const Poco::Util::OptionException& e) {
    std::cerr << "strongroom-idp: " << e.displayText() << " (strongroom-idp --help)\n";
    return EX_USAGE;
  }
  return app.run();
}
