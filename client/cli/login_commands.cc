#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>

#include "commands.h"
#include "output.h"
#include "profile.h"
#include "strongroom/client/https_transport.h"

namespace strongroom::cli {

namespace fs = std::filesystem;

Status Login(Args& args) {
  Profile p;
  for (const ProfileSetting& setting : kProfileSettings) {
    if (std::optional<std::string> value = args.Option(setting.option)) {
      p.*setting.field = std::move(*value);
    }
  }
  const bool check = !args.Flag("--no-check");
  args.Positional(0, 0, "login --user USER --core URL --ca FILE --kms-cluster kms://HOST ...");
  if (p.user.empty() || p.core_url.empty() || p.ca_file.empty() || p.kms_cluster.empty()) {
    throw UsageError("login needs --user, --core, --ca and --kms-cluster");
  }
  if (p.transport != "direct" && p.transport != "relay") {
    throw UsageError("--transport is direct or relay");
  }
  if (p.transport == "direct" && p.kms_url.empty()) {
    throw UsageError("--transport direct needs --kms-url (the KMS's https:// address)");
  }
  if (p.transport == "relay" && p.kms_info_file.empty() && p.kms_url.empty()) {
    throw UsageError(
        "--transport relay needs --kms-info FILE (the KMS's /kms/info document) or --kms-url to "
        "fetch it once");
  }
  if (p.token_command.empty() == (p.core_token_file.empty() || p.kms_token_file.empty())) {
    throw UsageError("give either --token-command or both --core-token-file and --kms-token-file");
  }
  auto absolute = [](std::string& path) {
    if (!path.empty()) path = fs::absolute(path).lexically_normal().string();
  };
  absolute(p.ca_file);
  absolute(p.kms_ca_file);
  absolute(p.kms_info_file);
  absolute(p.core_token_file);
  absolute(p.kms_token_file);
  absolute(p.indexer_token_file);
  if (p.client_id.empty()) p.client_id = "cli-" + p.user.substr(0, p.user.find('@'));
  std::error_code ec;
  fs::create_directories(HomeDir(), ec);
  if (p.transport == "relay" && p.kms_info_file.empty()) {
    // The KMS's identity document, fetched once and kept: the core does not serve it. It is
    // checked against the roots each time it is used.
    SR_ASSIGN_OR_RETURN(auto https,
                        client::HttpsTransport::New(
                            {p.kms_url, p.kms_ca_file.empty() ? p.ca_file : p.kms_ca_file}));
    SR_ASSIGN_OR_RETURN(std::string info, https->GetInfo());
    p.kms_info_file = (fs::absolute(HomeDir()) / "kms-info.json").string();
    std::ofstream(p.kms_info_file, std::ios::trunc) << info;
  }
  SR_RETURN_IF_ERROR(SaveProfile(p));
  if (check) {
    SR_ASSIGN_OR_RETURN(auto s, Connect(p));
    auto listed = s->core->ListConversations(std::nullopt, 1);
    if (!listed.ok()) return listed.error();
    SR_RETURN_IF_ERROR(s->kms->Ping());
  }
  if (g_json) {
    Poco::JSON::Object::Ptr o = new Poco::JSON::Object;
    o->set("user", p.user);
    o->set("profile", (HomeDir() / "profile.ini").string());
    o->set("transport", p.transport);
    o->set("checked", check);
    PrintJson(o);
  } else {
    std::cout << "Logged in as " << p.user << " at " << p.core_url << " (KMS " << p.kms_cluster
              << ", " << p.transport << ")" << (check ? "; the core and the KMS answered" : "")
              << ".\nProfile: " << (HomeDir() / "profile.ini").string() << std::endl;
  }
  return OkStatus();
}

Status WhoAmI(Args& args) {
  args.Positional(0, 0, "whoami");
  SR_ASSIGN_OR_RETURN(Profile p, LoadProfile());
  if (g_json) {
    Poco::JSON::Object::Ptr o = new Poco::JSON::Object;
    o->set("user", p.user);
    o->set("core", p.core_url);
    o->set("kmsCluster", p.kms_cluster);
    o->set("transport", p.transport);
    PrintJson(o);
  } else {
    std::cout << p.user << " at " << p.core_url << " (KMS " << p.kms_cluster << ", " << p.transport
              << ")" << std::endl;
  }
  return OkStatus();
}

}  // namespace strongroom::cli
