// Bearer secrets kept in files: the operator token of kmsd's operations listener and the relay
// token shared by kmsd and cored. One reader for both, so both refuse the same things.
#ifndef STRONGROOM_COMMON_TOKEN_FILE_H_
#define STRONGROOM_COMMON_TOKEN_FILE_H_

#include <cstddef>
#include <string>

#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"

namespace strongroom {

// The token in `path`: a regular file (not a symbolic link) that only its owner can read, holding
// `min` to `max` printable characters without spaces and at most one final newline. Any failure
// is INVALID_ARGUMENT naming `what` ("relay token file") and the path, never the content.
Result<SecretBytes> ReadTokenFile(const std::string& path, const std::string& what, std::size_t min,
                                  std::size_t max);

}  // namespace strongroom

#endif  // STRONGROOM_COMMON_TOKEN_FILE_H_
