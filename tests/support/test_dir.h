// A fresh, empty directory for the running test, named after it and removed when the test ends.
#ifndef STRONGROOM_TESTS_SUPPORT_TEST_DIR_H_
#define STRONGROOM_TESTS_SUPPORT_TEST_DIR_H_

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace strongroom::testing {

class TestDir {
 public:
  TestDir() {
    const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            ("sr-" + std::to_string(getpid()) + "-" + test->test_suite_name() + "." + test->name());
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TestDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TestDir(const TestDir&) = delete;
  TestDir& operator=(const TestDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }
  std::string string() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace strongroom::testing

#endif  // STRONGROOM_TESTS_SUPPORT_TEST_DIR_H_
