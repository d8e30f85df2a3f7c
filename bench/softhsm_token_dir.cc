#include "softhsm_token_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "strongroom/hsm/slot_inventory.h"
#include "strongroom/hsm/token_uri.h"

namespace strongroom::bench {
namespace {

constexpr char kUserPin[] = "4711-bench-user";
constexpr char kSoPin[] = "0815-bench-officer";

Error SystemError(const std::string& what, int err) {
  return Error(ErrorCode::kInternal, what + ": " + std::strerror(err));
}

}  // namespace

Result<std::unique_ptr<SoftHsmTokenDir>> SoftHsmTokenDir::Create() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr && *tmp ? tmp : "/tmp") + "/srbench-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) return SystemError("mkdtemp " + pattern, errno);
  std::unique_ptr<SoftHsmTokenDir> dir(new SoftHsmTokenDir(pattern));

  std::error_code ec;
  std::filesystem::create_directory(dir->dir_ + "/tokens", ec);
  if (ec) return Error(ErrorCode::kInternal, "creating " + dir->dir_ + "/tokens: " + ec.message());
  SR_ASSIGN_OR_RETURN(std::string conf,
                      dir->WriteFile("softhsm2.conf", "directories.tokendir = " + dir->dir_ +
                                                          "/tokens\n"
                                                          "objectstore.backend = file\n"
                                                          "log.level = ERROR\n"
                                                          "slots.removable = false\n"));
  if (setenv("SOFTHSM2_CONF", conf.c_str(), 1) != 0) return SystemError("setenv", errno);
  SR_ASSIGN_OR_RETURN(dir->user_pin_file_, dir->WriteFile("user.pin", std::string(kUserPin)));
  SR_ASSIGN_OR_RETURN(dir->so_pin_file_, dir->WriteFile("so.pin", std::string(kSoPin)));
  return dir;
}

SoftHsmTokenDir::~SoftHsmTokenDir() {
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

Result<std::string> SoftHsmTokenDir::WriteFile(const std::string& name,
                                               const std::string& content) const {
  const std::string path = dir_ + "/" + name;
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return SystemError("creating " + path, errno);
  const bool written =
      write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
  const int err = errno;
  close(fd);
  if (!written) return SystemError("writing " + path, err);
  return path;
}

Status SoftHsmTokenDir::InitializeToken(hsm::Module& module, const std::string& label) const {
  SR_ASSIGN_OR_RETURN(SecretBytes so_pin, hsm::ReadPin("file:" + so_pin_file_));
  SR_ASSIGN_OR_RETURN(SecretBytes user_pin, hsm::ReadPin("file:" + user_pin_file_));
  SR_ASSIGN_OR_RETURN(CK_SLOT_ID slot, hsm::InitializeToken(module, label, so_pin, user_pin));
  static_cast<void>(slot);
  return OkStatus();
}

std::string SoftHsmTokenDir::Uri(const std::string& label) const {
  return "pkcs11:token=" + label + "?module-path=" + kSoftHsmModule +
         "&pin-source=file:" + user_pin_file_;
}

}  // namespace strongroom::bench
