#include "profile.h"

#include <stdio.h>
#include <sys/stat.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <set>

#include "strongroom/common/config_file.h"

namespace strongroom::cli {
namespace {

namespace fs = std::filesystem;

// A token from the profile's file or command; tokens are never printed.
client::TokenSource MakeTokenSource(const Profile& p, const std::string& audience) {
  const std::string file = audience == "core"      ? p.core_token_file
                           : audience == "indexer" ? p.indexer_token_file
                                                   : p.kms_token_file;
  if (p.token_command.empty()) {
    return [file]() -> Result<std::string> {
      SR_ASSIGN_OR_RETURN(std::string token, ReadSmallFile(file, 64 * 1024));
      while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) {
        token.pop_back();
      }
      if (token.empty()) return Error(ErrorCode::kUnauthenticated, "the token file is empty");
      return token;
    };
  }
  std::string command = p.token_command;
  const auto at = command.find("{audience}");
  if (at != std::string::npos) command.replace(at, 10, audience);
  struct Cached {
    std::mutex mutex;
    std::string token;
    std::chrono::steady_clock::time_point made;
  };
  auto cached = std::make_shared<Cached>();
  return [command, cached]() -> Result<std::string> {
    std::lock_guard<std::mutex> lock(cached->mutex);
    const auto now = std::chrono::steady_clock::now();
    if (!cached->token.empty() && now - cached->made < std::chrono::minutes(10)) {
      return cached->token;
    }
    FILE* pipe = ::popen(command.c_str(), "r");
    if (!pipe) return Error(ErrorCode::kUnauthenticated, "cannot run the profile's token command");
    std::string token;
    char buffer[4096];
    std::size_t got;
    while ((got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) token.append(buffer, got);
    const int status = ::pclose(pipe);
    while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) {
      token.pop_back();
    }
    if (status != 0 || token.empty()) {
      return Error(ErrorCode::kUnauthenticated, "the profile's token command failed");
    }
    cached->token = token;
    cached->made = now;
    return token;
  };
}

}  // namespace

std::filesystem::path HomeDir() {
  if (const char* home = std::getenv("STRONGROOM_HOME"); home && *home) return home;
  const char* user_home = std::getenv("HOME");
  return fs::path(user_home ? user_home : ".") / ".config" / "strongroom";
}

Result<Profile> LoadProfile() {
  const fs::path path = HomeDir() / "profile.ini";
  if (!fs::exists(path)) {
    return Error(ErrorCode::kFailedPrecondition,
                 "no profile at " + path.string() + ": run `strongroom login` first");
  }
  SR_ASSIGN_OR_RETURN(auto config, LoadConfigFile(path.string()));
  std::set<std::string> keys;
  for (const ProfileSetting& setting : kProfileSettings) keys.insert(setting.key);
  SR_RETURN_IF_ERROR(CheckSettingKeys(*config, "profile", keys));
  Profile p;
  for (const ProfileSetting& setting : kProfileSettings) {
    p.*setting.field = SettingText(*config, std::string("profile.") + setting.key);
  }
  if (p.user.empty() || p.core_url.empty() || p.ca_file.empty() || p.kms_cluster.empty()) {
    return Error(ErrorCode::kFailedPrecondition,
                 "the profile " + path.string() + " is incomplete: run `strongroom login` again");
  }
  return p;
}

Status SaveProfile(const Profile& p) {
  const fs::path home = HomeDir();
  std::error_code ec;
  fs::create_directories(home, ec);
  ::chmod(home.c_str(), 0700);
  const fs::path path = home / "profile.ini";
  const fs::path temp = home / "profile.ini.tmp";
  const mode_t old_mask = ::umask(077);
  {
    std::ofstream out(temp, std::ios::trunc);
    out << "; written by `strongroom login`; holds no token, only where tokens come from\n"
        << "[profile]\n";
    for (const ProfileSetting& setting : kProfileSettings) {
      const std::string& value = p.*setting.field;
      if (!value.empty()) out << setting.key << " = " << value << "\n";
    }
    if (!out) {
      ::umask(old_mask);
      return Error(ErrorCode::kInvalidArgument, "cannot write " + temp.string());
    }
  }
  ::umask(old_mask);
  ::chmod(temp.c_str(), 0600);
  fs::rename(temp, path, ec);
  if (ec) return Error(ErrorCode::kInvalidArgument, "cannot write " + path.string());
  return OkStatus();
}

Result<std::unique_ptr<Session>> Connect(Profile profile, bool background_pool) {
  auto s = std::make_unique<Session>();
  s->profile = std::move(profile);
  const Profile& p = s->profile;
  SR_ASSIGN_OR_RETURN(s->core,
                      client::CoreClient::New({p.core_url, p.ca_file, MakeTokenSource(p, "core")}));
  client::KmsContextOptions options;
  options.client_id = p.client_id.empty() ? "strongroom-cli" : p.client_id;
  options.kms_token = MakeTokenSource(p, "kms");
  options.trust = {p.kms_cluster, p.kms_ca_file.empty() ? p.ca_file : p.kms_ca_file};
  if (p.transport == "relay") {
    SR_ASSIGN_OR_RETURN(std::string info, ReadSmallFile(p.kms_info_file, 1 << 20));
    SR_ASSIGN_OR_RETURN(s->kms, client::KmsContext::OverRelay(options, info,
                                                              {p.core_url, p.ca_file, p.kms_cluster,
                                                               MakeTokenSource(p, "core")}));
  } else {
    SR_ASSIGN_OR_RETURN(
        s->kms, client::KmsContext::OverHttps(
                    options, {p.kms_url, p.kms_ca_file.empty() ? p.ca_file : p.kms_ca_file}));
  }
  client::ConversationsOptions sdk_options;
  sdk_options.user_id = p.user;
  sdk_options.pool.background = background_pool;
  sdk_options.pool.target = 2;
  sdk_options.pool.low_water = 1;
  SR_ASSIGN_OR_RETURN(s->sdk, client::Conversations::New(*s->core, *s->kms, sdk_options));
  return s;
}

client::TokenSource ProfileTokenSource(const Profile& p, const std::string& audience) {
  return MakeTokenSource(p, audience);
}

Result<std::unique_ptr<Session>> Connect() {
  SR_ASSIGN_OR_RETURN(Profile profile, LoadProfile());
  return Connect(std::move(profile));
}

}  // namespace strongroom::cli
