#include "strongroom/common/rfc3339.h"

#include <gtest/gtest.h>

namespace strongroom {
namespace {

constexpr std::int64_t kNoon = 1796133804000;  // 2026-12-01T14:03:24Z

TEST(Rfc3339Test, ParseKeepsTheFraction) {
  EXPECT_EQ(ParseRfc3339Ms("2026-12-01T14:03:24Z"), kNoon);
  EXPECT_EQ(ParseRfc3339Ms("2026-12-01T14:03:24.576Z"), kNoon + 576);
  EXPECT_EQ(ParseRfc3339Ms("2026-12-01T14:03:24.5Z"), kNoon + 500);
  EXPECT_EQ(ParseRfc3339Ms("2026-12-01T14:03:24.123456789Z"), kNoon + 123);
}

TEST(Rfc3339Test, ParseAppliesTheOffsetWithOrWithoutAFraction) {
  EXPECT_EQ(ParseRfc3339Ms("2026-12-01T16:03:24+02:00"), kNoon);
  EXPECT_EQ(ParseRfc3339Ms("2026-12-01T16:03:24.250+02:00"), kNoon + 250);
  EXPECT_EQ(ParseRfc3339Ms("2026-12-01T12:33:24.001-01:30"), kNoon + 1);
}

TEST(Rfc3339Test, WhatFormatWritesParseReadsBack) {
  for (std::int64_t ms :
       {std::int64_t{0}, kNoon, kNoon + 1, kNoon + 999, std::int64_t{4102444799999}}) {
    EXPECT_EQ(ParseRfc3339Ms(FormatRfc3339Ms(ms)), ms) << FormatRfc3339Ms(ms);
  }
}

TEST(Rfc3339Test, ParseRefusesOtherShapes) {
  for (const char* bad :
       {"", "2026-12-01", "2026-12-01 14:03:24Z", "2026-12-01T14:03:24", "2026-12-01T14:03:24.Z",
        "2026-12-01T14:03:24.1234567890Z", "2026-12-01T14:03:24+0200", "x2026-12-01T14:03:24Z"}) {
    EXPECT_FALSE(ParseRfc3339Ms(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace strongroom
