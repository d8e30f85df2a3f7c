// The core's checks of untrusted input that need no stored state: ids, user ids, KMS URLs, client
// activity ids, index tokens and page sizes. Each says what is wrong without echoing secrets (none
// of these values is one).
#ifndef STRONGROOM_CORE_SRC_VALIDATION_H_
#define STRONGROOM_CORE_SRC_VALIDATION_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "strongroom/common/error.h"

namespace strongroom::core::internal {

// INVALID_ARGUMENT with `message`.
Error Invalid(std::string message);

// The same answer for an unknown conversation and for one the caller is not in (so ids cannot be
// probed).
Error NoSuchConversation();

// NOT_FOUND for an activity id the conversation does not hold (or that is not an id at all).
Error NoSuchActivity();

// 1..kMaxPageSize.
Status CheckPageSize(std::size_t limit);

// A random (version 4) UUID in its canonical lowercase form.
std::string NewUuid();

// 8-4-4-4-12 lowercase hex digits: the form of every id the core and the KMS hand out.
bool IsUuid(std::string_view text);

// 1..kMaxUserIdBytes of UTF-8 without control characters. `what` names the value in the error.
Status CheckUserId(std::string_view user_id, std::string_view what);

// `uri` is kms://<host>[:<port>]/<collection>/<uuid> as KmsUri writes it (the host in lower
// case, nothing percent-encoded) and at most kMaxUriBytes; returns "kms://<host>[:<port>]", the
// KMS it names.
Result<std::string> CheckKmsUri(std::string_view uri, std::string_view collection,
                                std::string_view what);

// [A-Za-z0-9_-]{1,kMaxClientActivityIdBytes}.
Status CheckClientActivityId(std::string_view id);

// Base64url characters (and '=' padding), 1..kMaxIndexTokenBytes.
Status CheckIndexToken(std::string_view token);

// Hex of bytes, lowercase.
std::string Hex(const unsigned char* data, std::size_t size);

}  // namespace strongroom::core::internal

#endif  // STRONGROOM_CORE_SRC_VALIDATION_H_
