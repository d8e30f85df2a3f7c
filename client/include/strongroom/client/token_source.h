// Where the SDK gets a user's bearer tokens: a function called before each request (or channel),
// so a caller can refresh tokens as they near expiry. Tokens are never logged or put in errors.
#ifndef STRONGROOM_CLIENT_TOKEN_SOURCE_H_
#define STRONGROOM_CLIENT_TOKEN_SOURCE_H_

#include <functional>
#include <string>

#include "strongroom/common/error.h"

namespace strongroom::client {

using TokenSource = std::function<Result<std::string>()>;

// Always the same token (tests, short-lived command-line runs).
inline TokenSource StaticToken(std::string token) {
  return [token = std::move(token)]() -> Result<std::string> { return token; };
}

}  // namespace strongroom::client

#endif  // STRONGROOM_CLIENT_TOKEN_SOURCE_H_
