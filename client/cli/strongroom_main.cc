// strongroom: the command-line client. It parses commands, reads the profile `strongroom login`
// wrote, and prints; everything else is the SDK (strongroom::client). See docs/cli.md. Each command
// group is a file of its own (commands.h); this one dispatches and maps errors to exit statuses.
#include <Poco/Exception.h>
#include <Poco/JSON/Object.h>
#include <signal.h>

#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "args.h"
#include "commands.h"
#include "output.h"
#include "strongroom/common/error.h"
#include "strongroom/common/exit_status.h"

namespace strongroom::cli {
namespace {

constexpr char kUsage[] = R"(usage: strongroom [--json] [--progress|--no-progress] COMMAND [ARGS]

  login --user USER --core URL --ca FILE --kms-cluster kms://HOST
        [--transport direct|relay] [--kms-url URL] [--kms-ca FILE] [--kms-info FILE]
        (--token-command 'CMD ... {audience}' | --core-token-file F --kms-token-file F)
        [--client-id NAME] [--indexer URL [--indexer-token-file F]] [--no-check]
                                  write the profile (mode 0600) and check it works
  whoami                          the profile in use (never the tokens)
  room create NAME --with USER... a room with these members (you are added)
  room list                       your rooms, with their decrypted names
  room add ROOM USER              authorize USER at the KMS and add them
  room remove ROOM USER           remove USER and rotate the room's key (USER = you: leave)
  send ROOM TEXT                  post TEXT ('-' reads it from stdin)
  edit ROOM SEQ TEXT              replace the text of your message #SEQ ('-': from stdin)
  retract ROOM SEQ                take your message #SEQ back (the room keeps a tombstone)
  send-file ROOM PATH             encrypt and upload a file
  read ROOM [--since SEQ]         the history after SEQ, decrypted
  get-file ROOM FILE_ID [-o PATH] download and decrypt a shared file
  listen [ROOM] [--since SEQ] [--count N]
                                  new activity as it arrives, decrypted (Ctrl-C stops)
  rotate ROOM                     move the room to a new key
  export ROOM                     the activities as the core stores them (ciphertext, JSON)
  compliance read --user USER [--from FILE] [ROOM_ID]
                                  as a compliance officer, decrypt USER's room (all their rooms
                                  in your organization without ROOM_ID) on their behalf, read
                                  through the core or from an export FILE
                                  (activities from FILE, an `export`, or from the core)
  compliance search --user USER TERMS [--room ROOM_ID] [--limit N] [--before SEQ]
                                  as a compliance officer, search USER's rooms (the KMS decides
                                  you may; each match decrypted on USER's behalf, audited)
  search TERMS [--room ROOM] [--limit N] [--before SEQ]
                                  your messages, file names and room names with every term,
                                  newest first, with the terms marked (needs --indexer at login)
  key show KEY_URI                the content key as a JWK (interoperability checks only)

ROOM is a room id or a unique prefix of its name. The profile is $STRONGROOM_HOME/profile.ini
(default ~/.config/strongroom/). --json prints JSON on stdout for scripts. send-file and get-file
draw a progress bar on stderr for files of 1 MiB or more when stderr is a terminal; --progress
draws it always, --no-progress never.

exit status (docs/exit-status.md): 0 ok; 64 usage or bad input; 65 an answer did not verify;
66 not found (a room you are not in is not found); 69 the core or the KMS is unreachable or busy
(retry later); 70 internal error; 77 refused: a token (renew it, or `strongroom login` again), or
the KMS refused a key; 78 no profile (`strongroom login`), or something must change first.
)";

std::string HintFor(const Error& error, const std::string& command) {
  // An officer is not a member of the rooms they read: adding them is never the answer.
  if (command == "compliance" && error.code() == ErrorCode::kPermissionDenied) {
    return "only a compliance officer of USER's organization reads on USER's behalf: the KMS "
           "policy's complianceOfficers (kmsctl ops policy set) and cored's [compliance] section "
           "must list you; ask the operators";
  }
  if ((command == "edit" || command == "retract") && error.code() == ErrorCode::kPermissionDenied) {
    return "only the author of a message may edit or retract it";
  }
  if (command == "edit" && error.code() == ErrorCode::kFailedPrecondition) {
    return "a retracted message cannot be edited: send a new one";
  }
  if (command == "compliance" && error.code() == ErrorCode::kNotFound) {
    return "an officer reads the rooms USER is or was in that a user of your organization "
           "created: name one by its id, or none for all of them";
  }
  switch (error.code()) {
    case ErrorCode::kNotFound:
      return "check the room with `strongroom room list`, or ask a member to add you";
    case ErrorCode::kPermissionDenied:
      return "you are not authorized for this: ask a member of the room to add you";
    case ErrorCode::kUnauthenticated:
      return "a token was refused: renew it, or run `strongroom login` again";
    case ErrorCode::kUnavailable:
    case ErrorCode::kResourceExhausted:
      return "the core or the KMS cannot be reached or is busy: check that they run, then retry";
    case ErrorCode::kDataLoss:
      return "an answer did not verify: something between you and the service altered it; "
             "retry, and tell the operator";
    default:
      return "";
  }
}
int Run(std::vector<std::string> argv) {
  // Global flags, anywhere on the command line.
  const std::map<std::string, std::function<void()>> global = {
      {"--json", [] { g_json = true; }},
      {"--progress", [] { g_progress = ProgressMode::kAlways; }},
      {"--no-progress", [] { g_progress = ProgressMode::kNever; }}};
  std::erase_if(argv, [&](const std::string& arg) {
    auto flag = global.find(arg);
    if (flag == global.end()) return false;
    flag->second();
    return true;
  });
  if (argv.empty() || argv[0] == "--help" || argv[0] == "-h" || argv[0] == "help") {
    (argv.empty() ? std::cerr : std::cout) << kUsage;
    return argv.empty() ? EX_USAGE : EX_OK;
  }
  const std::string command = argv[0];
  const bool has_sub = command == "room" || command == "compliance" || command == "key";
  const std::string sub = has_sub && argv.size() > 1 ? argv[1] : "";
  Args args(
      std::vector<std::string>(argv.begin() + (has_sub && argv.size() > 1 ? 2 : 1), argv.end()));
  try {
    Status status = [&]() -> Status {
      if (command == "login") return Login(args);
      if (command == "whoami") return WhoAmI(args);
      if (command == "room") return RoomCommand(args, sub);
      if (command == "send") return Send(args);
      if (command == "edit") return Edit(args);
      if (command == "retract") return Retract(args);
      if (command == "send-file") return SendFile(args);
      if (command == "read") return Read(args);
      if (command == "get-file") return GetFile(args);
      if (command == "listen") return Listen(args);
      if (command == "rotate") return Rotate(args);
      if (command == "export") return Export(args);
      if (command == "compliance") return Compliance(args, sub);
      if (command == "search") return Search(args);
      if (command == "key") return Key(args, sub);
      throw UsageError("unknown command '" + command + "' (strongroom --help lists them)");
    }();
    if (status.ok()) return EX_OK;
    const Error& error = status.error();
    std::cerr << "strongroom: " << error.message() << std::endl;
    if (std::string hint = HintFor(error, command); !hint.empty()) {
      std::cerr << "  " << hint << std::endl;
    }
    if (g_json) {
      Poco::JSON::Object::Ptr e = new Poco::JSON::Object;
      e->set("code", std::string(ErrorCodeName(error.code())));
      e->set("message", error.message());
      Poco::JSON::Object::Ptr o = new Poco::JSON::Object;
      o->set("error", e);
      PrintJson(o);
    }
    return ExitStatusFor(error.code());
  } catch (const UsageError& e) {
    std::cerr << "strongroom: " << e.message() << "\n  strongroom --help lists the commands"
              << std::endl;
    return EX_USAGE;
  } catch (const Poco::Exception& e) {
    std::cerr << "strongroom: " << e.displayText() << std::endl;
    return EX_SOFTWARE;
  } catch (const std::exception& e) {
    std::cerr << "strongroom: " << e.what() << std::endl;
    return EX_SOFTWARE;
  }
}

void OnSignal(int) { g_stop.store(true); }

}  // namespace
}  // namespace strongroom::cli

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  struct sigaction action {};
  action.sa_handler = strongroom::cli::OnSignal;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  return strongroom::cli::Run(std::vector<std::string>(argv + 1, argv + argc));
}
