#include "strongroom/hsm/wrapped_key.h"

#include <cstring>

namespace strongroom::hsm {
namespace {

constexpr std::uint8_t kMagic[4] = {'S', 'R', 'W', '1'};
constexpr char kAadLabel[] = "strongroom/wrapped-key/v1";

// Appends into a buffer sized up front (GCC 12 misreports vector::insert of string ranges).
class Writer {
 public:
  explicit Writer(std::size_t size) : out_(size) {}
  void Bytes(const void* data, std::size_t size) {
    if (size != 0) std::memcpy(out_.data() + pos_, data, size);
    pos_ += size;
  }
  void U16(std::size_t v) {
    const std::uint8_t b[2] = {static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)};
    Bytes(b, sizeof b);
  }
  void U32(std::uint32_t v) {
    const std::uint8_t b[4] = {static_cast<std::uint8_t>(v >> 24),
                               static_cast<std::uint8_t>(v >> 16),
                               static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)};
    Bytes(b, sizeof b);
  }
  std::vector<std::uint8_t> Take() { return std::move(out_); }

 private:
  std::vector<std::uint8_t> out_;
  std::size_t pos_ = 0;
};

}  // namespace

Status ValidateOrgName(const std::string& org) {
  if (org.empty() || org.size() > 63) {
    return Error(ErrorCode::kInvalidArgument, "organization name must be 1 to 63 characters");
  }
  for (std::size_t i = 0; i < org.size(); ++i) {
    char c = org[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-'))) {
      return Error(ErrorCode::kInvalidArgument,
                   "organization name may hold only a-z, 0-9, '.', '_' and '-', and must start "
                   "with a letter or digit");
    }
  }
  return OkStatus();
}

Status ValidateBinding(const KeyBinding& binding) {
  SR_RETURN_IF_ERROR(ValidateOrgName(binding.org));
  if (binding.context.empty() || binding.context.size() > kMaxBindingContext) {
    return Error(ErrorCode::kInvalidArgument, "key binding context must be 1 to 1024 bytes");
  }
  return OkStatus();
}

std::vector<std::uint8_t> WrappedKeyAad(const KeyBinding& binding, std::uint32_t root_version) {
  Writer w(sizeof kAadLabel + 2 + binding.org.size() + 4 + 2 + binding.context.size());
  w.Bytes(kAadLabel, sizeof kAadLabel);  // includes the 0x00
  w.U16(binding.org.size());
  w.Bytes(binding.org.data(), binding.org.size());
  w.U32(root_version);
  w.U16(binding.context.size());
  w.Bytes(binding.context.data(), binding.context.size());
  return w.Take();
}

Result<WrappedKeyView> ParseWrappedKey(std::span<const std::uint8_t> blob) {
  if (blob.size() != kWrappedKeySize) {
    return Error(ErrorCode::kDataLoss, "wrapped key has " + std::to_string(blob.size()) +
                                           " bytes, expected " + std::to_string(kWrappedKeySize));
  }
  if (std::memcmp(blob.data(), kMagic, sizeof kMagic) != 0) {
    return Error(ErrorCode::kDataLoss, "wrapped key has an unknown format");
  }
  WrappedKeyView view;
  view.root_version = (std::uint32_t{blob[4]} << 24) | (std::uint32_t{blob[5]} << 16) |
                      (std::uint32_t{blob[6]} << 8) | std::uint32_t{blob[7]};
  view.iv = blob.subspan(8, kGcmIvSize);
  view.ciphertext_and_tag = blob.subspan(8 + kGcmIvSize);
  return view;
}

std::vector<std::uint8_t> EncodeWrappedKey(std::uint32_t root_version,
                                           std::span<const std::uint8_t> iv,
                                           std::span<const std::uint8_t> ciphertext_and_tag) {
  Writer w(sizeof kMagic + 4 + iv.size() + ciphertext_and_tag.size());
  w.Bytes(kMagic, sizeof kMagic);
  w.U32(root_version);
  w.Bytes(iv.data(), iv.size());
  w.Bytes(ciphertext_and_tag.data(), ciphertext_and_tag.size());
  return w.Take();
}

}  // namespace strongroom::hsm
