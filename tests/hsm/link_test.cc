// The HSM layer links the common base only (docs/architecture.md): no Poco networking, data,
// configuration or JSON library, and no libssl, comes with strongroom::hsm.
#include <gtest/gtest.h>

#include <string>

#include "../support/tool_steps.h"

namespace strongroom::hsm {
namespace {

using strongroom::testing::Tool;
using strongroom::testing::ToolRun;

TEST(HsmLinkTest, HsmBringsOnlyTheCommonBasesLibraries) {
  ToolRun needed = Tool("/usr/bin/readelf", {"-d", SR_HSM_LINK_PROBE_PATH});
  ASSERT_EQ(needed.exit_code, 0) << needed.err;
  // Read right: what the HSM layer and the base do need is there.
  for (const std::string wanted : {"libp11-kit", "libcrypto", "libcjose", "libPocoFoundation"}) {
    EXPECT_NE(needed.out.find(wanted), std::string::npos) << "no " << wanted << ":\n" << needed.out;
  }
  for (const std::string forbidden :
       {"libPocoNet", "libPocoNetSSL", "libPocoUtil", "libPocoJSON", "libPocoXML", "libPocoData",
        "libPocoCrypto", "libssl", "libsqlite3"}) {
    EXPECT_EQ(needed.out.find(forbidden + "."), std::string::npos)
        << "strongroom::hsm brings " << forbidden << ":\n"
        << needed.out;
  }
}

}  // namespace
}  // namespace strongroom::hsm
