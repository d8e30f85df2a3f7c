// The exit status of every Strongroom program for an error: one table, by the error's code, in
// sysexits.h terms, so a failure exits alike whichever program reports it (kmsd, cored, kmsctl,
// strongroom-idp, the strongroom CLI; docs/exit-status.md).
//
//   INVALID_ARGUMENT                        64 EX_USAGE        a command line, setting or input is
//                                                              malformed: fix it
//   DATA_LOSS                               65 EX_DATAERR      data failed an integrity check
//   NOT_FOUND                               66 EX_NOINPUT      something named does not exist (a
//                                                              file, module, token, key, room)
//   UNAVAILABLE, RESOURCE_EXHAUSTED         69 EX_UNAVAILABLE  a dependency is down or a limit was
//                                                              reached
//   INTERNAL                                70 EX_SOFTWARE     a bug
//   UNAUTHENTICATED, PERMISSION_DENIED      77 EX_NOPERM       a credential, PIN or role refused
//   ALREADY_EXISTS, FAILED_PRECONDITION,    78 EX_CONFIG       the state forbids it: something must
//   UNIMPLEMENTED                                              change first
//
// A usage error a program finds in its own command line exits EX_USAGE too.
#ifndef STRONGROOM_COMMON_EXIT_STATUS_H_
#define STRONGROOM_COMMON_EXIT_STATUS_H_

#include <sysexits.h>

#include "strongroom/common/error.h"

namespace strongroom {

int ExitStatusFor(ErrorCode code);

}  // namespace strongroom

#endif  // STRONGROOM_COMMON_EXIT_STATUS_H_
