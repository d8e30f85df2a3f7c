// kmsctl: the KMS operator's command-line tool.
#include <Poco/Util/Application.h>
#include <Poco/Util/HelpFormatter.h>
#include <Poco/Util/Option.h>
#include <Poco/Util/OptionException.h>
#include <Poco/Util/OptionSet.h>

#include <cstdlib>
#include <iostream>

#include "audit_commands.h"
#include "hsm_commands.h"
#include "ops_commands.h"
#include "strongroom/common/exit_status.h"

namespace strongroom::kms {
namespace {

class Kmsctl : public Poco::Util::Application {
 protected:
  void defineOptions(Poco::Util::OptionSet& options) override {
    using Poco::Util::Option;
    options.addOption(Option("help", "h", "show usage").required(false).repeatable(false));
    options.addOption(Option("config", "c", "KMS configuration file (INI)")
                          .required(false)
                          .repeatable(false)
                          .argument("FILE"));
    options.addOption(
        Option("org", "", "organization").required(false).repeatable(false).argument("ORG"));
    options.addOption(Option("module", "", "PKCS#11 module path")
                          .required(false)
                          .repeatable(false)
                          .argument("PATH"));
    options.addOption(
        Option("label", "", "token label").required(false).repeatable(false).argument("LABEL"));
    options.addOption(Option("pin-source", "", "user PIN source (file:PATH or env:VAR)")
                          .required(false)
                          .repeatable(false)
                          .argument("SRC"));
    options.addOption(Option("so-pin-source", "", "security officer PIN source")
                          .required(false)
                          .repeatable(false)
                          .argument("SRC"));
    // Before --ca-cert, --ca-key and --token-file: Poco matches option prefixes, and takes an
    // exact match only if it comes first.
    options.addOption(Option("token", "", "hsm init-identity, certify-identity: only this token")
                          .required(false)
                          .repeatable(false)
                          .argument("NAME"));
    for (const char* name : {"url", "ca", "token-file", "file", "operator"}) {
      options.addOption(Option(name, "", "ops: see kmsctl --help")
                            .required(false)
                            .repeatable(false)
                            .argument("V"));
    }
    options.addOption(
        Option("wait", "", "ops rewrap, ops reconcile: follow until done").required(false));
    options.addOption(Option("ca-cert", "", "CA certificate (PEM)")
                          .required(false)
                          .repeatable(false)
                          .argument("FILE"));
    options.addOption(Option("ca-key", "", "CA private key (PEM)")
                          .required(false)
                          .repeatable(false)
                          .argument("FILE"));
    options.addOption(
        Option("host", "", "the KMS host name").required(false).repeatable(false).argument("HOST"));
    options.addOption(
        Option("out", "", "output file").required(false).repeatable(false).argument("FILE"));
    options.addOption(
        Option("days", "", "validity in days").required(false).repeatable(false).argument("N"));
    for (const char* name : {"user", "resource", "from", "to", "limit"}) {
      options.addOption(
          Option(name, "", "audit query filter").required(false).repeatable(false).argument("V"));
    }
    options.addOption(Option("json", "", "audit query: one JSON object per record")
                          .required(false)
                          .repeatable(false));
  }

  void handleOption(const std::string& name, const std::string& value) override {
    Poco::Util::Application::handleOption(name, value);
    if (name == "help") help_ = true;
    if (name == "config") options_.config_path = value;
    if (name == "org") options_.org = value;
    if (name == "module") options_.module = value;
    if (name == "label") options_.label = value;
    if (name == "pin-source") options_.pin_source = value;
    if (name == "so-pin-source") options_.so_pin_source = value;
    if (name == "ca-cert") options_.ca_cert = value;
    if (name == "ca-key") options_.ca_key = value;
    if (name == "host") options_.host = value;
    if (name == "out") options_.out = value;
    if (name == "days") options_.days = value;
    if (name == "token") options_.token = value;
    if (name == "url") ops_.url = value;
    if (name == "ca") ops_.ca = value;
    if (name == "token-file") ops_.token_file = value;
    if (name == "file") ops_.file = value;
    if (name == "operator") ops_.operator_name = value;
    if (name == "wait") ops_.wait = true;
    if (name == "user") audit_.user = value;
    if (name == "resource") audit_.resource = value;
    if (name == "from") audit_.from = value;
    if (name == "to") audit_.to = value;
    if (name == "limit") audit_.limit = value;
    if (name == "json") audit_.json = true;
  }

  int main(const std::vector<std::string>& args) override {
    if (help_ || args.empty()) {
      std::cout << "usage:\n" << kHsmUsage << kAuditUsage << kOpsUsage;
      return help_ ? EXIT_OK : EXIT_USAGE;
    }
    if (options_.config_path.empty()) {
      const char* env = std::getenv("STRONGROOM_KMS_CONFIG");
      options_.config_path = env != nullptr ? env : "/etc/strongroom/kms.ini";
    }
    if (args[0] != "hsm" && args[0] != "audit" && args[0] != "ops") {
      std::cerr << "kmsctl: unknown command '" << args[0] << "' (kmsctl --help lists them)\n";
      return EXIT_USAGE;
    }
    std::vector<std::string> rest(args.begin() + 1, args.end());
    Status status = args[0] == "hsm"     ? RunHsmCommand(rest, options_, std::cout)
                    : args[0] == "audit" ? RunAuditCommand(rest, options_, audit_, std::cout)
                                         : RunOpsCommand(rest, options_, ops_, std::cout);
    if (!status.ok()) {
      std::cerr << "kmsctl: " << status.error().message() << "\n";
      return ExitStatusFor(status.error().code());
    }
    return EXIT_OK;
  }

 private:
  bool help_ = false;
  CtlOptions options_;
  AuditOptions audit_;
  OpsOptions ops_;
};

}  // namespace
}  // namespace strongroom::kms

int main(int argc, char** argv) {
  strongroom::kms::Kmsctl app;
  try {
    app.init(argc, argv);
  } catch (const Poco::Util::OptionException& e) {
    std::cerr << "kmsctl: " << e.displayText() << " (kmsctl --help shows usage)\n";
    return EX_USAGE;
  }
  return app.run();
}
