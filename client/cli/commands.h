// The command groups of the strongroom CLI, one file each: what Run() in strongroom_main.cc
// dispatches to. Each takes the arguments after its command (and sub-command), prints, and returns
// the error that decides the exit status; a UsageError it throws is exit status 64 (EX_USAGE).
#ifndef STRONGROOM_CLIENT_CLI_COMMANDS_H_
#define STRONGROOM_CLIENT_CLI_COMMANDS_H_

#include <atomic>
#include <string>

#include "args.h"
#include "strongroom/common/error.h"

namespace strongroom::cli {

// login_commands.cc: write the profile and check it works; the profile in use.
Status Login(Args& args);
Status WhoAmI(Args& args);

// room_commands.cc: room create|list|add|remove, rotate, export.
Status RoomCommand(Args& args, const std::string& sub);
Status Rotate(Args& args);
Status Export(Args& args);

// message_commands.cc: a room's messages and files, and the live stream.
Status Send(Args& args);
Status Edit(Args& args);
Status Retract(Args& args);
Status SendFile(Args& args);
Status Read(Args& args);
Status GetFile(Args& args);
Status Listen(Args& args);
// Set by SIGINT and SIGTERM: `listen` stops.
extern std::atomic<bool> g_stop;

// compliance_commands.cc: a compliance officer reads a user's rooms on their behalf, through the
// core or from an `export` file.
Status Compliance(Args& args, const std::string& sub);

// search_commands.cc: search the user's rooms through indexerd, decrypted and marked here.
Status Search(Args& args);
// compliance search --user USER TERMS: an officer's search of USER's rooms (compliance_commands.cc
// dispatches to it).
Status ComplianceSearch(Args& args);

// key_commands.cc: a content key as a JWK (interoperability checks only).
Status Key(Args& args, const std::string& sub);

}  // namespace strongroom::cli

#endif  // STRONGROOM_CLIENT_CLI_COMMANDS_H_
