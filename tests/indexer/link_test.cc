// The indexer's text library links the common base, ICU, libstemmer and libcrypto only
// (docs/architecture.md): no Poco networking, data, configuration or JSON library, no libssl and
// no PKCS#11 code comes with strongroom::indexer_text.
#include <gtest/gtest.h>

#include <string>

#include "../support/tool_steps.h"

namespace strongroom::indexer {
namespace {

using strongroom::testing::Tool;
using strongroom::testing::ToolRun;

TEST(IndexerTextLinkTest, BringsOnlyTheBaseIcuAndLibstemmer) {
  ToolRun needed = Tool("/usr/bin/readelf", {"-d", SR_INDEXER_TEXT_LINK_PROBE_PATH});
  ASSERT_EQ(needed.exit_code, 0) << needed.err;
  for (const std::string wanted : {"libicuuc", "libicui18n", "libstemmer", "libcrypto"}) {
    EXPECT_NE(needed.out.find(wanted), std::string::npos) << "no " << wanted << ":\n" << needed.out;
  }
  for (const std::string forbidden :
       {"libPocoNet", "libPocoNetSSL", "libPocoUtil", "libPocoJSON", "libPocoXML", "libPocoData",
        "libPocoCrypto", "libssl", "libsqlite3", "libp11-kit"}) {
    EXPECT_EQ(needed.out.find(forbidden + "."), std::string::npos)
        << "strongroom::indexer_text brings " << forbidden << ":\n"
        << needed.out;
  }
}

}  // namespace
}  // namespace strongroom::indexer
