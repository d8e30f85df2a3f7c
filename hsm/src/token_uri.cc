#include "strongroom/hsm/token_uri.h"

#include <fcntl.h>
#include <p11-kit/uri.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace strongroom::hsm {
namespace {

constexpr std::size_t kMaxPinLength = 256;

struct UriDeleter {
  void operator()(P11KitUri* uri) const { p11_kit_uri_free(uri); }
};

}  // namespace

std::string TrimmedField(const unsigned char* field, std::size_t size) {
  std::string out(reinterpret_cast<const char*>(field), size);
  while (!out.empty() && (out.back() == ' ' || out.back() == '\0')) out.pop_back();
  return out;
}

Result<TokenUri> TokenUri::Parse(const std::string& uri) {
  std::unique_ptr<P11KitUri, UriDeleter> parsed(p11_kit_uri_new());
  int rc = p11_kit_uri_parse(uri.c_str(), P11_KIT_URI_FOR_ANY, parsed.get());
  if (rc != P11_KIT_URI_OK) {
    // The URI may carry a pin-value; never echo it.
    return Error(ErrorCode::kInvalidArgument,
                 std::string("invalid PKCS#11 URI: ") + p11_kit_uri_message(rc));
  }
  if (p11_kit_uri_get_pin_value(parsed.get()) != nullptr) {
    return Error(ErrorCode::kInvalidArgument,
                 "PKCS#11 URI carries pin-value; name a pin-source (file:<path> or env:<VAR>) "
                 "instead of writing the PIN into configuration");
  }
  TokenUri out;
  out.text_ = uri;
  if (const char* path = p11_kit_uri_get_module_path(parsed.get())) out.module_path_ = path;
  if (out.module_path_.empty()) {
    return Error(ErrorCode::kInvalidArgument, "PKCS#11 URI " + uri + " names no module-path");
  }
  if (const char* pin = p11_kit_uri_get_pin_source(parsed.get())) out.pin_source_ = pin;
  if (CK_TOKEN_INFO* info = p11_kit_uri_get_token_info(parsed.get())) {
    out.token_label_ = TrimmedField(info->label, sizeof info->label);
    out.serial_ = TrimmedField(info->serialNumber, sizeof info->serialNumber);
  }
  CK_SLOT_ID slot = p11_kit_uri_get_slot_id(parsed.get());
  if (slot != static_cast<CK_SLOT_ID>(-1)) out.slot_id_ = slot;
  if (out.token_label_.empty() && out.serial_.empty() && !out.slot_id_) {
    return Error(ErrorCode::kInvalidArgument,
                 "PKCS#11 URI " + uri + " names no token (give token=, serial= or slot-id=)");
  }
  return out;
}

bool TokenUri::Matches(CK_SLOT_ID slot, const CK_TOKEN_INFO& info) const {
  if (slot_id_ && *slot_id_ != slot) return false;
  if (!token_label_.empty() && TrimmedField(info.label, sizeof info.label) != token_label_) {
    return false;
  }
  if (!serial_.empty() && TrimmedField(info.serialNumber, sizeof info.serialNumber) != serial_) {
    return false;
  }
  return true;
}

Result<SecretBytes> ReadPin(const std::string& pin_source) {
  if (pin_source.empty()) {
    return Error(ErrorCode::kInvalidArgument,
                 "no pin-source configured for the token (file:<path> or env:<VAR>)");
  }
  if (pin_source.rfind("env:", 0) == 0) {
    std::string var = pin_source.substr(4);
    const char* value = var.empty() ? nullptr : std::getenv(var.c_str());
    if (value == nullptr || *value == '\0') {
      return Error(ErrorCode::kNotFound, "PIN environment variable " + var + " is not set");
    }
    std::size_t len = std::strlen(value);
    if (len > kMaxPinLength) {
      return Error(ErrorCode::kInvalidArgument, "PIN in " + var + " is longer than 256 bytes");
    }
    return SecretBytes({reinterpret_cast<const std::uint8_t*>(value), len});
  }
  std::string path = pin_source.rfind("file:", 0) == 0 ? pin_source.substr(5) : pin_source;
  if (path.empty() || path[0] != '/') {
    return Error(ErrorCode::kInvalidArgument,
                 "pin-source must be file:<absolute path> or env:<VARIABLE>, got " + pin_source);
  }
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return Error(ErrorCode::kNotFound,
                 "cannot read PIN file " + path + ": " + std::strerror(errno));
  }
  SecretBytes pin(kMaxPinLength + 1);
  std::size_t got = 0;
  while (got < pin.size()) {
    ssize_t n = read(fd, pin.data() + got, pin.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  close(fd);
  if (got > kMaxPinLength) {
    return Error(ErrorCode::kInvalidArgument, "PIN file " + path + " is longer than 256 bytes");
  }
  while (got > 0 && (pin.data()[got - 1] == '\n' || pin.data()[got - 1] == '\r')) --got;
  if (got == 0) return Error(ErrorCode::kInvalidArgument, "PIN file " + path + " is empty");
  pin.Truncate(got);
  return pin;
}

}  // namespace strongroom::hsm
