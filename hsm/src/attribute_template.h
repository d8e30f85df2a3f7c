// A PKCS#11 attribute template that owns the values its attributes point to.
//
// A CK_ATTRIBUTE holds a pointer to its value and the value's length. Built by hand from locals,
// every template is a set of pointers that must outlive the call and lengths that must match the
// types (sizeof bookkeeping at each call site). Here the values are copied in, typed by what
// PKCS#11 says the attribute holds, and the pointers are set when the template is handed to a call
// (data()), so they can never dangle. Not copyable: a copy would point into the original.
//
// Values are labels, identifiers, flags and counters, never secrets: the storage is not zeroized.
#ifndef STRONGROOM_HSM_SRC_ATTRIBUTE_TEMPLATE_H_
#define STRONGROOM_HSM_SRC_ATTRIBUTE_TEMPLATE_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "strongroom/hsm/pkcs11.h"

namespace strongroom::hsm::internal {

class AttributeTemplate {
 public:
  AttributeTemplate() = default;
  AttributeTemplate(const AttributeTemplate&) = delete;
  AttributeTemplate& operator=(const AttributeTemplate&) = delete;

  // A CK_BBOOL attribute (CKA_TOKEN, CKA_SENSITIVE, CKA_EXTRACTABLE, ...).
  AttributeTemplate& Bool(CK_ATTRIBUTE_TYPE type, bool value);
  // A CK_ULONG attribute and its aliases: CKA_CLASS (CK_OBJECT_CLASS), CKA_KEY_TYPE
  // (CK_KEY_TYPE), CKA_VALUE_LEN, CKA_MODULUS_BITS.
  AttributeTemplate& Ulong(CK_ATTRIBUTE_TYPE type, CK_ULONG value);
  // A byte string: CKA_LABEL, CKA_ID, CKA_APPLICATION, CKA_VALUE, CKA_PUBLIC_EXPONENT, ...
  AttributeTemplate& Bytes(CK_ATTRIBUTE_TYPE type, std::span<const std::uint8_t> value);
  AttributeTemplate& String(CK_ATTRIBUTE_TYPE type, std::string_view value);

  // The attributes, pointing into this template, for a call; valid until the template changes.
  CK_ATTRIBUTE* data();
  CK_ULONG size() const { return static_cast<CK_ULONG>(attributes_.size()); }

 private:
  AttributeTemplate& Add(CK_ATTRIBUTE_TYPE type, const void* value, std::size_t size);

  std::vector<CK_ATTRIBUTE> attributes_;  // pValue set by data()
  std::vector<std::size_t> offsets_;      // of each value in values_
  std::vector<std::uint8_t> values_;      // every value, each aligned for a CK_ULONG
};

}  // namespace strongroom::hsm::internal

#endif  // STRONGROOM_HSM_SRC_ATTRIBUTE_TEMPLATE_H_
