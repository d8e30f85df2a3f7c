#include "attribute_template.h"

#include <cstring>

namespace strongroom::hsm::internal {

AttributeTemplate& AttributeTemplate::Bool(CK_ATTRIBUTE_TYPE type, bool value) {
  const CK_BBOOL flag = value ? CK_TRUE : CK_FALSE;
  return Add(type, &flag, sizeof flag);
}

AttributeTemplate& AttributeTemplate::Ulong(CK_ATTRIBUTE_TYPE type, CK_ULONG value) {
  return Add(type, &value, sizeof value);
}

AttributeTemplate& AttributeTemplate::Bytes(CK_ATTRIBUTE_TYPE type,
                                            std::span<const std::uint8_t> value) {
  return Add(type, value.data(), value.size());
}

AttributeTemplate& AttributeTemplate::String(CK_ATTRIBUTE_TYPE type, std::string_view value) {
  return Add(type, value.data(), value.size());
}

AttributeTemplate& AttributeTemplate::Add(CK_ATTRIBUTE_TYPE type, const void* value,
                                          std::size_t size) {
  // The buffer's start is aligned for any type (operator new), so aligned offsets are too: a
  // module may read a CK_ULONG value in place.
  constexpr std::size_t kAlign = alignof(CK_ULONG);
  const std::size_t offset = (values_.size() + kAlign - 1) / kAlign * kAlign;
  values_.resize(offset + size);
  if (size != 0) std::memcpy(values_.data() + offset, value, size);
  attributes_.push_back(CK_ATTRIBUTE{type, nullptr, static_cast<CK_ULONG>(size)});
  offsets_.push_back(offset);
  return *this;
}

CK_ATTRIBUTE* AttributeTemplate::data() {
  for (std::size_t i = 0; i < attributes_.size(); ++i) {
    attributes_[i].pValue = attributes_[i].ulValueLen == 0 ? nullptr : values_.data() + offsets_[i];
  }
  return attributes_.data();
}

}  // namespace strongroom::hsm::internal
