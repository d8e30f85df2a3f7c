// The profile `strongroom login` writes ($STRONGROOM_HOME/profile.ini, mode 0600: where the core,
// the KMS and the tokens are; never a token) and the SDK made from it for one command.
#ifndef STRONGROOM_CLIENT_CLI_PROFILE_H_
#define STRONGROOM_CLIENT_CLI_PROFILE_H_

#include <filesystem>
#include <memory>
#include <string>

#include "strongroom/client/conversation.h"
#include "strongroom/client/core_client.h"
#include "strongroom/client/kms_context.h"
#include "strongroom/common/error.h"

namespace strongroom::cli {

// $STRONGROOM_HOME, or ~/.config/strongroom.
std::filesystem::path HomeDir();

struct Profile {
  std::string user, core_url, ca_file, kms_cluster, kms_url, kms_ca_file, kms_info_file;
  std::string transport = "direct", client_id, token_command, core_token_file, kms_token_file;
  std::string indexer_url, indexer_token_file;  // optional: search (`strongroom search`)
};

// Every setting of a profile: its key in profile.ini, the `strongroom login` option that sets it,
// and its field. The one list that loading, saving and login read.
struct ProfileSetting {
  const char* key;
  const char* option;
  std::string Profile::*field;
};
inline constexpr ProfileSetting kProfileSettings[] = {
    {"user", "--user", &Profile::user},
    {"core_url", "--core", &Profile::core_url},
    {"ca_file", "--ca", &Profile::ca_file},
    {"kms_cluster", "--kms-cluster", &Profile::kms_cluster},
    {"kms_url", "--kms-url", &Profile::kms_url},
    {"kms_ca_file", "--kms-ca", &Profile::kms_ca_file},
    {"kms_info_file", "--kms-info", &Profile::kms_info_file},
    {"transport", "--transport", &Profile::transport},
    {"client_id", "--client-id", &Profile::client_id},
    {"token_command", "--token-command", &Profile::token_command},
    {"core_token_file", "--core-token-file", &Profile::core_token_file},
    {"kms_token_file", "--kms-token-file", &Profile::kms_token_file},
    {"indexer_url", "--indexer", &Profile::indexer_url},
    {"indexer_token_file", "--indexer-token-file", &Profile::indexer_token_file},
};

Result<Profile> LoadProfile();
Status SaveProfile(const Profile& p);

// One user's SDK, made from the profile.
struct Session {
  Profile profile;
  std::unique_ptr<client::CoreClient> core;
  std::unique_ptr<client::KmsContext> kms;
  std::unique_ptr<client::Conversations> sdk;

  ~Session() {
    sdk.reset();
    if (kms) (void)kms->Close();
  }
};

Result<std::unique_ptr<Session>> Connect(Profile profile, bool background_pool = false);
// The bearer tokens of the profile for `audience` ("core", "kms", "indexer").
client::TokenSource ProfileTokenSource(const Profile& p, const std::string& audience);
// With the saved profile.
Result<std::unique_ptr<Session>> Connect();

}  // namespace strongroom::cli

#endif  // STRONGROOM_CLIENT_CLI_PROFILE_H_
