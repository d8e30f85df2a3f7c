// Reads the HSM part of a KMS configuration file into hsm::HsmConfig.
//
//   [hsm]
//   tokens = primary, standby        ; order = preference; the first is the primary
//   node_id = kms-1                  ; optional, default: the host name
//   probe_interval_ms = 1000         ; optional: how often the tokens are checked in the
//                                    ; background (0 = never; 50-60000, default 1000)
//
//   [hsm.primary]
//   uri =
//   pkcs11:token=strongroom?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/strongroom/pin
//   pool_size = 16                   ; optional: PKCS#11 sessions (1-1024, default 16)
//   acquire_timeout_ms = 2000        ; optional: how long a caller waits for a session
//   session_copies = true            ; optional: use session copies of root keys
//   wrap_limit = 2147483648          ; optional: GCM encryptions per root-key version
//   reserve_block = 65536            ; optional: wraps reserved on the token at a time
//   orgs = acme, globex              ; optional: organizations this token serves (default all)
//
// Unknown keys in [hsm] and [hsm.<token>] sections are refused, so a typo never silently falls
// back to a default.
#ifndef STRONGROOM_KMS_HSM_SETTINGS_H_
#define STRONGROOM_KMS_HSM_SETTINGS_H_

#include <Poco/Util/AbstractConfiguration.h>

#include "strongroom/common/error.h"
#include "strongroom/hsm/key_vault.h"

namespace strongroom::kms {

Result<hsm::HsmConfig> ReadHsmSettings(const Poco::Util::AbstractConfiguration& config);

// Loads an INI file and reads its HSM settings.
Result<hsm::HsmConfig> LoadHsmSettings(const std::string& path);

}  // namespace strongroom::kms

#endif  // STRONGROOM_KMS_HSM_SETTINGS_H_
