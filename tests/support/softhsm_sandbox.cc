#include "softhsm_sandbox.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <stdexcept>

#include "strongroom/hsm/module.h"
#include "strongroom/hsm/slot_inventory.h"
#include "strongroom/hsm/token_uri.h"

namespace strongroom::testing {

SoftHsmSandbox& SoftHsmSandbox::Get() {
  static SoftHsmSandbox sandbox;
  return sandbox;
}

SoftHsmSandbox::SoftHsmSandbox() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr && *tmp ? tmp : "/tmp") + "/srhsm-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  dir_ = pattern;
  std::filesystem::create_directory(dir_ + "/tokens");
  std::string conf = WriteFile("softhsm2.conf", "directories.tokendir = " + dir_ +
                                                    "/tokens\nobjectstore.backend = file\n"
                                                    "log.level = ERROR\nslots.removable = false\n");
  setenv("SOFTHSM2_CONF", conf.c_str(), 1);
  pin_file_ = WriteFile("user.pin", std::string(kUserPin) + "\n");
  so_pin_file_ = WriteFile("so.pin", std::string(kSoPin) + "\n");
}

SoftHsmSandbox::~SoftHsmSandbox() {
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string SoftHsmSandbox::WriteFile(const std::string& name, const std::string& content) const {
  std::string path = dir_ + "/" + name;
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || write(fd, content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
    std::perror(path.c_str());
    std::abort();
  }
  close(fd);
  return path;
}

std::string SoftHsmSandbox::CreateToken(const std::string& module_path,
                                        const std::string& label_prefix) {
  std::string label = label_prefix + std::to_string(++tokens_);
  auto module = hsm::Module::Load(module_path);
  if (!module.ok()) throw std::runtime_error(module.error().ToString());
  modules_.push_back(*module);
  auto so_pin = hsm::ReadPin("file:" + so_pin_file_);
  auto user_pin = hsm::ReadPin("file:" + pin_file_);
  std::set<std::string> before;
  for (const auto& entry : std::filesystem::directory_iterator(dir_ + "/tokens")) {
    before.insert(entry.path().string());
  }
  auto slot = hsm::InitializeToken(**module, label, *so_pin, *user_pin);
  if (!slot.ok()) throw std::runtime_error(slot.error().ToString());
  for (const auto& entry : std::filesystem::directory_iterator(dir_ + "/tokens")) {
    if (!before.count(entry.path().string())) token_dirs_[label] = entry.path().string();
  }
  return label;
}

std::string SoftHsmSandbox::TokenDirectory(const std::string& label) const {
  auto it = token_dirs_.find(label);
  if (it == token_dirs_.end()) throw std::runtime_error("no token directory for " + label);
  return it->second;
}

std::string SoftHsmSandbox::Uri(const std::string& module, const std::string& label) const {
  return Uri(module, label, pin_file_);
}

std::string SoftHsmSandbox::Uri(const std::string& module, const std::string& label,
                                const std::string& pin_file) const {
  return "pkcs11:token=" + label + "?module-path=" + module + "&pin-source=file:" + pin_file;
}

}  // namespace strongroom::testing
