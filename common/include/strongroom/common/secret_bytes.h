// Bytes that are secret (keys, PINs): move-only, zeroized when destroyed or cleared.
#ifndef STRONGROOM_COMMON_SECRET_BYTES_H_
#define STRONGROOM_COMMON_SECRET_BYTES_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace strongroom {

class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(std::size_t size);
  explicit SecretBytes(std::span<const std::uint8_t> bytes);
  ~SecretBytes();

  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;

  // Random bytes from OpenSSL's CSPRNG.
  static SecretBytes Random(std::size_t size);

  std::uint8_t* data() { return data_; }
  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<const std::uint8_t> view() const { return {data_, size_}; }
  std::span<std::uint8_t> mutable_view() { return {data_, size_}; }
  std::string_view as_string_view() const { return {reinterpret_cast<const char*>(data_), size_}; }

  // Shrinks the visible size (the dropped tail is zeroized).
  void Truncate(std::size_t size);
  void Clear();

 private:
  std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

// Constant-time equality for secrets and authenticators; false when the sizes differ.
bool ConstantTimeEquals(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b);

// Overwrites a string that held a secret (a serialized request with a bearer token, a PIN read as
// text) before it is freed; the string is left empty.
void ZeroizeString(std::string& text);

}  // namespace strongroom

#endif  // STRONGROOM_COMMON_SECRET_BYTES_H_
