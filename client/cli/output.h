// What the command line prints: --json output, activities and decrypted messages, progress bars.
#ifndef STRONGROOM_CLIENT_CLI_OUTPUT_H_
#define STRONGROOM_CLIENT_CLI_OUTPUT_H_

#include <Poco/Dynamic/Var.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "strongroom/client/conversation.h"
#include "strongroom/common/error.h"

namespace strongroom::cli {

// --json: JSON on stdout for scripts.
extern bool g_json;
// Whether to draw progress bars: only on a terminal for large files (the default), always, never.
enum class ProgressMode { kAuto, kAlways, kNever };
extern ProgressMode g_progress;

std::string Json(const Poco::Dynamic::Var& value);
void PrintJson(const Poco::JSON::Object::Ptr& object);
Poco::JSON::Array::Ptr JsonList(const std::vector<std::string>& items);
// "a, b, c".
std::string Joined(const std::vector<std::string>& items);
// A time (ms since the epoch) as local "YYYY-MM-DD HH:MM:SS".
std::string LocalTime(std::int64_t ms);

// The activity a command made: its JSON with --json, else `said`.
void PrintActivity(const client::Activity& a, const std::string& said);

void PrintMessage(const client::Message& m, const std::string& room_label = "");
// Prints the messages, then fails with the first decryption error (exit 77 for a refused key).
Status PrintMessages(const std::vector<client::Message>& messages);

// A progress bar on stderr, drawn (unless --progress or --no-progress says otherwise) only when
// stderr is a terminal and the transfer is large.
class ProgressBar {
 public:
  ProgressBar(std::string label, std::uint64_t total);
  ~ProgressBar();
  client::Progress Callback();

 private:
  void Draw(std::uint64_t done, std::uint64_t total);
  std::string label_;
  std::uint64_t total_;
  bool on_;
  bool drawn_ = false;
  int last_ = -1;
};

}  // namespace strongroom::cli

#endif  // STRONGROOM_CLIENT_CLI_OUTPUT_H_
