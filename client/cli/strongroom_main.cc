// strongroom: the command-line client. It parses commands, reads the profile `strongroom login`
// wrote, and prints; everything else is the SDK (strongroom::client). See docs/cli.md.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/JSON/Stringifier.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "strongroom/client/conversation.h"
#include "strongroom/client/core_client.h"
#include "strongroom/client/https_transport.h"
#include "strongroom/client/kms_context.h"
#include "strongroom/common/config_file.h"
#include "strongroom/common/error.h"
#include "strongroom/common/jose/base64url.h"
#include "strongroom/common/rfc3339.h"

namespace strongroom::cli {
namespace {

namespace fs = std::filesystem;
using client::Activity;
using client::Conversation;
using client::Message;

// Exit statuses (docs/cli.md).
constexpr int kExitOk = 0;
constexpr int kExitOther = 1;
constexpr int kExitUsage = 2;
constexpr int kExitNotFound = 3;
constexpr int kExitAuth = 4;
constexpr int kExitUnavailable = 5;

constexpr char kUsage[] = R"(usage: strongroom [--json] [--progress|--no-progress] COMMAND [ARGS]

  login --user USER --core URL --ca FILE --kms-cluster kms://HOST
        [--transport direct|relay] [--kms-url URL] [--kms-ca FILE] [--kms-info FILE]
        (--token-command 'CMD ... {audience}' | --core-token-file F --kms-token-file F)
        [--client-id NAME] [--no-check]
                                  write the profile (mode 0600) and check it works
  whoami                          the profile in use (never the tokens)
  room create NAME --with USER... a room with these members (you are added)
  room list                       your rooms, with their decrypted names
  room add ROOM USER              authorize USER at the KMS and add them
  room remove ROOM USER           remove USER and rotate the room's key (USER = you: leave)
  send ROOM TEXT                  post TEXT ('-' reads it from stdin)
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
  key show KEY_URI                the content key as a JWK (interoperability checks only)

ROOM is a room id or a unique prefix of its name. The profile is $STRONGROOM_HOME/profile.ini
(default ~/.config/strongroom/). --json prints JSON on stdout for scripts. send-file and get-file
draw a progress bar on stderr for files of 1 MiB or more when stderr is a terminal; --progress
draws it always, --no-progress never.

exit status: 0 ok; 1 other failure; 2 usage or bad input; 3 not found, not a member, or the KMS
refused a key; 4 authentication (a token refused: renew it, or `strongroom login` again);
5 the core or the KMS is unreachable or busy (retry later).
)";

std::atomic<bool> g_stop{false};

class UsageError {
 public:
  explicit UsageError(std::string message) : message_(std::move(message)) {}
  const std::string& message() const { return message_; }

 private:
  std::string message_;
};

int ExitFor(const Error& error) {
  switch (error.code()) {
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kAlreadyExists:
      return kExitUsage;
    case ErrorCode::kNotFound:
    case ErrorCode::kPermissionDenied:
      return kExitNotFound;
    case ErrorCode::kUnauthenticated:
      return kExitAuth;
    case ErrorCode::kUnavailable:
    case ErrorCode::kResourceExhausted:
    case ErrorCode::kDataLoss:  // an answer altered or forged on the way: the service path failed
      return kExitUnavailable;
    default:
      return kExitOther;
  }
}

std::string HintFor(const Error& error) {
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

// Output ------------------------------------------------------------------------------------------

bool g_json = false;
// Whether to draw progress bars: only on a terminal for large files (the default), always, never.
enum class ProgressMode { kAuto, kAlways, kNever };
ProgressMode g_progress = ProgressMode::kAuto;

std::string Json(const Poco::Dynamic::Var& value) {
  std::ostringstream out;
  Poco::JSON::Stringifier::stringify(value, out);
  return out.str();
}

void PrintJson(const Poco::JSON::Object::Ptr& object) { std::cout << Json(object) << std::endl; }

Poco::JSON::Array::Ptr JsonList(const std::vector<std::string>& items) {
  Poco::JSON::Array::Ptr array = new Poco::JSON::Array;
  for (const std::string& item : items) array->add(item);
  return array;
}

std::string Joined(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

std::string LocalTime(std::int64_t ms) {
  const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  localtime_r(&seconds, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &tm);
  return text;
}

Poco::JSON::Object::Ptr ActivityJson(const Activity& a) {
  Poco::JSON::Object::Ptr o = new Poco::JSON::Object;
  o->set("seq", a.seq);
  o->set("id", a.id);
  o->set("conversationId", a.conversation_id);
  o->set("actor", a.actor);
  o->set("verb", a.verb);
  if (!a.content.empty()) o->set("content", a.content);
  if (!a.key_uri.empty()) o->set("keyUri", a.key_uri);
  if (!a.object_users.empty()) o->set("objectUsers", JsonList(a.object_users));
  if (!a.file_ids.empty()) o->set("fileIds", JsonList(a.file_ids));
  if (!a.client_activity_id.empty()) o->set("clientActivityId", a.client_activity_id);
  o->set("published", FormatRfc3339Ms(a.published_ms));
  return o;
}

std::vector<std::string> StringList(const Poco::JSON::Object::Ptr& o, const std::string& key) {
  std::vector<std::string> out;
  Poco::JSON::Array::Ptr array = o->getArray(key);
  if (!array) return out;
  for (std::size_t i = 0; i < array->size(); ++i)
    out.push_back(array->getElement<std::string>(static_cast<unsigned>(i)));
  return out;
}

Result<Activity> ActivityFromJson(const Poco::JSON::Object::Ptr& o) {
  try {
    Activity a;
    a.seq = o->getValue<std::int64_t>("seq");
    a.id = o->getValue<std::string>("id");
    a.conversation_id = o->getValue<std::string>("conversationId");
    a.actor = o->optValue<std::string>("actor", "");
    a.verb = o->getValue<std::string>("verb");
    a.content = o->optValue<std::string>("content", "");
    a.key_uri = o->optValue<std::string>("keyUri", "");
    a.object_users = StringList(o, "objectUsers");
    a.file_ids = StringList(o, "fileIds");
    a.client_activity_id = o->optValue<std::string>("clientActivityId", "");
    a.published_ms = ParseRfc3339Ms(o->optValue<std::string>("published", "")).value_or(0);
    return a;
  } catch (const Poco::Exception& e) {
    return Error(ErrorCode::kInvalidArgument, "an activity is malformed: " + e.message());
  }
}

std::string Describe(const Message& m) {
  const Activity& a = m.activity;
  if (m.error) return "[cannot decrypt: " + m.error->message() + "]";
  if (a.verb == "post") return m.text.value_or("");
  if (a.verb == "share" && m.file) {
    return "shared " + (m.file->name.empty() ? std::string("a file") : m.file->name) + " (" +
           std::to_string(m.file->size) + " bytes), file id " + m.file->loc;
  }
  if (a.verb == "create") return "created the room \"" + m.text.value_or("") + "\"";
  if (a.verb == "title") return "renamed the room \"" + m.text.value_or("") + "\"";
  if (a.verb == "add") return "added " + Joined(a.object_users);
  if (a.verb == "remove") return "removed " + Joined(a.object_users);
  if (a.verb == "leave") return "left";
  if (a.verb == "rotate") return "rotated the room's key";
  return a.verb;
}

Poco::JSON::Object::Ptr MessageJson(const Message& m) {
  const Activity& a = m.activity;
  Poco::JSON::Object::Ptr o = new Poco::JSON::Object;
  o->set("seq", a.seq);
  o->set("id", a.id);
  o->set("room", a.conversation_id);
  o->set("actor", a.actor);
  o->set("verb", a.verb);
  o->set("published", FormatRfc3339Ms(a.published_ms));
  if (!a.object_users.empty()) o->set("users", JsonList(a.object_users));
  if (!a.key_uri.empty()) o->set("keyUri", a.key_uri);
  if (m.text) o->set("text", *m.text);
  if (m.file) {
    Poco::JSON::Object::Ptr file = new Poco::JSON::Object;
    file->set("id", m.file->loc);
    file->set("name", m.file->name);
    file->set("size", m.file->size);
    o->set("file", file);
  }
  if (m.error) {
    Poco::JSON::Object::Ptr error = new Poco::JSON::Object;
    error->set("code", std::string(ErrorCodeName(m.error->code())));
    error->set("message", m.error->message());
    o->set("error", error);
  }
  return o;
}

void PrintMessage(const Message& m, const std::string& room_label = "") {
  if (g_json) {
    PrintJson(MessageJson(m));
    return;
  }
  std::cout << "#" << m.activity.seq << " " << LocalTime(m.activity.published_ms) << " "
            << (room_label.empty() ? "" : "[" + room_label + "] ") << m.activity.actor << ": "
            << Describe(m) << std::endl;
}

// The first error among messages whose content could not be decrypted.
std::optional<Error> FirstError(const std::vector<Message>& messages) {
  for (const Message& m : messages) {
    if (m.error) return m.error;
  }
  return std::nullopt;
}

// A progress bar on stderr, drawn (unless --progress or --no-progress says otherwise) only when
// stderr is a terminal and the transfer is large.
class ProgressBar {
 public:
  ProgressBar(std::string label, std::uint64_t total)
      : label_(std::move(label)),
        total_(total),
        on_(g_progress == ProgressMode::kAlways ||
            (g_progress == ProgressMode::kAuto && isatty(2) && total >= (1u << 20))) {}
  ~ProgressBar() {
    if (drawn_) std::cerr << "\n";
  }
  client::Progress Callback() {
    return [this](std::uint64_t done, std::uint64_t total) { Draw(done, total ? total : total_); };
  }

 private:
  void Draw(std::uint64_t done, std::uint64_t total) {
    if (!on_ || total == 0) return;
    const int percent = static_cast<int>(std::min<std::uint64_t>(100, done * 100 / total));
    if (percent == last_) return;
    last_ = percent;
    drawn_ = true;
    const int width = 30, filled = percent * width / 100;
    std::cerr << "\r" << label_ << " [" << std::string(static_cast<std::size_t>(filled), '#')
              << std::string(static_cast<std::size_t>(width - filled), '.') << "] " << percent
              << "% " << (done >> 20) << "/" << (total >> 20) << " MiB" << std::flush;
  }
  std::string label_;
  std::uint64_t total_;
  bool on_;
  bool drawn_ = false;
  int last_ = -1;
};

// The profile ------------------------------------------------------------------------------------

fs::path HomeDir() {
  if (const char* home = std::getenv("STRONGROOM_HOME"); home && *home) return home;
  const char* user_home = std::getenv("HOME");
  return fs::path(user_home ? user_home : ".") / ".config" / "strongroom";
}

struct Profile {
  std::string user, core_url, ca_file, kms_cluster, kms_url, kms_ca_file, kms_info_file;
  std::string transport = "direct", client_id, token_command, core_token_file, kms_token_file;
};

const std::set<std::string> kProfileKeys = {"user",          "core_url",        "ca_file",
                                            "kms_cluster",   "kms_url",         "kms_ca_file",
                                            "kms_info_file", "transport",       "client_id",
                                            "token_command", "core_token_file", "kms_token_file"};

Result<Profile> LoadProfile() {
  const fs::path path = HomeDir() / "profile.ini";
  if (!fs::exists(path)) {
    return Error(ErrorCode::kFailedPrecondition,
                 "no profile at " + path.string() + ": run `strongroom login` first");
  }
  SR_ASSIGN_OR_RETURN(auto config, LoadConfigFile(path.string()));
  SR_RETURN_IF_ERROR(CheckSettingKeys(*config, "profile", kProfileKeys));
  Profile p;
  auto get = [&](const char* key) { return SettingText(*config, std::string("profile.") + key); };
  p.user = get("user");
  p.core_url = get("core_url");
  p.ca_file = get("ca_file");
  p.kms_cluster = get("kms_cluster");
  p.kms_url = get("kms_url");
  p.kms_ca_file = get("kms_ca_file");
  p.kms_info_file = get("kms_info_file");
  p.transport = get("transport");
  p.client_id = get("client_id");
  p.token_command = get("token_command");
  p.core_token_file = get("core_token_file");
  p.kms_token_file = get("kms_token_file");
  if (p.user.empty() || p.core_url.empty() || p.ca_file.empty() || p.kms_cluster.empty()) {
    return Error(ErrorCode::kFailedPrecondition,
                 "the profile " + path.string() + " is incomplete: run `strongroom login` again");
  }
  return p;
}

Status SaveProfile(const Profile& p) {
  const fs::path home = HomeDir();
  std::error_code ec;
  fs::create_directories(home, ec);
  ::chmod(home.c_str(), 0700);
  const fs::path path = home / "profile.ini";
  const fs::path temp = home / "profile.ini.tmp";
  const mode_t old_mask = ::umask(077);
  {
    std::ofstream out(temp, std::ios::trunc);
    out << "; written by `strongroom login`; holds no token, only where tokens come from\n"
        << "[profile]\n";
    auto put = [&](const char* key, const std::string& value) {
      if (!value.empty()) out << key << " = " << value << "\n";
    };
    put("user", p.user);
    put("core_url", p.core_url);
    put("ca_file", p.ca_file);
    put("kms_cluster", p.kms_cluster);
    put("kms_url", p.kms_url);
    put("kms_ca_file", p.kms_ca_file);
    put("kms_info_file", p.kms_info_file);
    put("transport", p.transport);
    put("client_id", p.client_id);
    put("token_command", p.token_command);
    put("core_token_file", p.core_token_file);
    put("kms_token_file", p.kms_token_file);
    if (!out) {
      ::umask(old_mask);
      return Error(ErrorCode::kInvalidArgument, "cannot write " + temp.string());
    }
  }
  ::umask(old_mask);
  ::chmod(temp.c_str(), 0600);
  fs::rename(temp, path, ec);
  if (ec) return Error(ErrorCode::kInvalidArgument, "cannot write " + path.string());
  return OkStatus();
}

// A token from the profile's file or command; tokens are never printed.
client::TokenSource MakeTokenSource(const Profile& p, const std::string& audience) {
  const std::string file = audience == "core" ? p.core_token_file : p.kms_token_file;
  if (p.token_command.empty()) {
    return [file]() -> Result<std::string> {
      SR_ASSIGN_OR_RETURN(std::string token, ReadSmallFile(file, 64 * 1024));
      while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) {
        token.pop_back();
      }
      if (token.empty()) return Error(ErrorCode::kUnauthenticated, "the token file is empty");
      return token;
    };
  }
  std::string command = p.token_command;
  const auto at = command.find("{audience}");
  if (at != std::string::npos) command.replace(at, 10, audience);
  struct Cached {
    std::mutex mutex;
    std::string token;
    std::chrono::steady_clock::time_point made;
  };
  auto cached = std::make_shared<Cached>();
  return [command, cached]() -> Result<std::string> {
    std::lock_guard<std::mutex> lock(cached->mutex);
    const auto now = std::chrono::steady_clock::now();
    if (!cached->token.empty() && now - cached->made < std::chrono::minutes(10)) {
      return cached->token;
    }
    FILE* pipe = ::popen(command.c_str(), "r");
    if (!pipe) return Error(ErrorCode::kUnauthenticated, "cannot run the profile's token command");
    std::string token;
    char buffer[4096];
    std::size_t got;
    while ((got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) token.append(buffer, got);
    const int status = ::pclose(pipe);
    while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) {
      token.pop_back();
    }
    if (status != 0 || token.empty()) {
      return Error(ErrorCode::kUnauthenticated, "the profile's token command failed");
    }
    cached->token = token;
    cached->made = now;
    return token;
  };
}

// One user's SDK, made from the profile.
struct Session {
  Profile profile;
  std::unique_ptr<client::CoreClient> core;
  std::unique_ptr<client::KmsContext> kms;
  std::unique_ptr<client::Conversations> sdk;

  ~Session() {
    sdk.reset();
    if (kms) (void)kms->Close();
  }
};

Result<std::unique_ptr<Session>> Connect(Profile profile, bool background_pool = false) {
  auto s = std::make_unique<Session>();
  s->profile = std::move(profile);
  const Profile& p = s->profile;
  SR_ASSIGN_OR_RETURN(s->core,
                      client::CoreClient::New({p.core_url, p.ca_file, MakeTokenSource(p, "core")}));
  client::KmsContextOptions options;
  options.client_id = p.client_id.empty() ? "strongroom-cli" : p.client_id;
  options.kms_token = MakeTokenSource(p, "kms");
  options.trust = {p.kms_cluster, p.kms_ca_file.empty() ? p.ca_file : p.kms_ca_file};
  if (p.transport == "relay") {
    SR_ASSIGN_OR_RETURN(std::string info, ReadSmallFile(p.kms_info_file, 1 << 20));
    SR_ASSIGN_OR_RETURN(s->kms, client::KmsContext::OverRelay(options, info,
                                                              {p.core_url, p.ca_file, p.kms_cluster,
                                                               MakeTokenSource(p, "core")}));
  } else {
    SR_ASSIGN_OR_RETURN(
        s->kms, client::KmsContext::OverHttps(
                    options, {p.kms_url, p.kms_ca_file.empty() ? p.ca_file : p.kms_ca_file}));
  }
  client::ConversationsOptions sdk_options;
  sdk_options.user_id = p.user;
  sdk_options.pool.background = background_pool;
  sdk_options.pool.target = 2;
  sdk_options.pool.low_water = 1;
  SR_ASSIGN_OR_RETURN(s->sdk, client::Conversations::New(*s->core, *s->kms, sdk_options));
  return s;
}

Result<std::unique_ptr<Session>> Connect() {
  SR_ASSIGN_OR_RETURN(Profile profile, LoadProfile());
  return Connect(std::move(profile));
}

// Arguments --------------------------------------------------------------------------------------

class Args {
 public:
  Args(std::vector<std::string> args) : args_(std::move(args)) {}  // NOLINT

  // Takes `--name VALUE` out of the arguments.
  std::optional<std::string> Option(const std::string& name) {
    for (std::size_t i = 0; i < args_.size(); ++i) {
      if (args_[i] == name) {
        if (i + 1 >= args_.size()) throw UsageError(name + " needs a value");
        std::string value = args_[i + 1];
        args_.erase(args_.begin() + static_cast<long>(i), args_.begin() + static_cast<long>(i) + 2);
        return value;
      }
    }
    return std::nullopt;
  }
  // Takes `--name V1 V2 ...` (up to the next --option).
  std::vector<std::string> Options(const std::string& name) {
    std::vector<std::string> values;
    for (std::size_t i = 0; i < args_.size(); ++i) {
      if (args_[i] != name) continue;
      std::size_t j = i + 1;
      while (j < args_.size() && args_[j].rfind("--", 0) != 0) values.push_back(args_[j++]);
      args_.erase(args_.begin() + static_cast<long>(i), args_.begin() + static_cast<long>(j));
      break;
    }
    return values;
  }
  bool Flag(const std::string& name) {
    auto found = std::find(args_.begin(), args_.end(), name);
    if (found == args_.end()) return false;
    args_.erase(found);
    return true;
  }
  std::int64_t Number(const std::string& name, std::int64_t fallback) {
    std::optional<std::string> text = Option(name);
    if (!text) return fallback;
    try {
      std::size_t used = 0;
      const long long value = std::stoll(*text, &used);
      if (used != text->size() || value < 0) throw std::invalid_argument("");
      return value;
    } catch (const std::exception&) {
      throw UsageError(name + " takes a whole number, not '" + *text + "'");
    }
  }
  // The positional arguments left, exactly `count` of them (after every option was taken).
  std::vector<std::string> Positional(std::size_t min, std::size_t max, const std::string& what) {
    for (const std::string& arg : args_) {
      if (arg.size() > 1 && arg[0] == '-') throw UsageError("unknown option " + arg);
    }
    if (args_.size() < min || args_.size() > max) throw UsageError("usage: strongroom " + what);
    return args_;
  }

 private:
  std::vector<std::string> args_;
};

// Rooms ------------------------------------------------------------------------------------------

Result<std::vector<Conversation>> AllRooms(Session& s) {
  std::vector<Conversation> rooms;
  std::optional<std::int64_t> before;
  for (int page = 0; page < 1000; ++page) {
    SR_ASSIGN_OR_RETURN(client::ConversationPage listed, s.core->ListConversations(before, 200));
    rooms.insert(rooms.end(), listed.items.begin(), listed.items.end());
    if (!listed.next) break;
    before = listed.next;
  }
  return rooms;
}

std::string TitleOf(Session& s, const Conversation& room) {
  Result<std::string> title = s.sdk->Title(room);
  return title.ok() ? *title : "(name not readable: " + title.error().message() + ")";
}

// ROOM as an id, or a unique prefix of a room's decrypted name.
Result<Conversation> ResolveRoom(Session& s, const std::string& room) {
  SR_ASSIGN_OR_RETURN(std::vector<Conversation> rooms, AllRooms(s));
  for (const Conversation& c : rooms) {
    if (c.id == room) return c;
  }
  std::vector<Conversation> matches;
  for (const Conversation& c : rooms) {
    Result<std::string> title = s.sdk->Title(c);
    if (!title.ok()) continue;
    if (*title == room) return c;
    if (!room.empty() && title->rfind(room, 0) == 0) matches.push_back(c);
  }
  if (matches.size() == 1) return matches[0];
  if (matches.empty()) {
    return Error(ErrorCode::kNotFound,
                 "you are in no room with the id or a name starting '" + room + "'");
  }
  std::string ids;
  for (const Conversation& c : matches) ids += " " + c.id;
  return Error(ErrorCode::kInvalidArgument,
               "'" + room + "' names several rooms; use one of their ids:" + ids);
}

Result<std::vector<Activity>> WholeHistory(Session& s, const std::string& id,
                                           std::int64_t after = 0) {
  std::vector<Activity> all;
  client::HistoryQuery query;
  query.limit = 200;
  query.after = after;
  while (true) {
    SR_ASSIGN_OR_RETURN(client::HistoryPage page, s.core->History(id, query));
    all.insert(all.end(), page.items.begin(), page.items.end());
    if (!page.more || page.items.empty()) break;
    query.after = page.items.back().seq;
  }
  return all;
}

Poco::JSON::Object::Ptr RoomJson(const Conversation& c, const std::string& title) {
  Poco::JSON::Object::Ptr o = new Poco::JSON::Object;
  o->set("id", c.id);
  o->set("name", title);
  o->set("members", JsonList(c.participants));
  o->set("createdBy", c.created_by);
  o->set("kmsResourceUri", c.kms_resource_uri);
  o->set("currentKeyUri", c.current_key_uri);
  o->set("lastSeq", c.last_seq);
  return o;
}

// Commands ---------------------------------------------------------------------------------------

Status Login(Args& args) {
  Profile p;
  p.user = args.Option("--user").value_or("");
  p.core_url = args.Option("--core").value_or("");
  p.ca_file = args.Option("--ca").value_or("");
  p.kms_cluster = args.Option("--kms-cluster").value_or("");
  p.transport = args.Option("--transport").value_or("direct");
  p.kms_url = args.Option("--kms-url").value_or("");
  p.kms_ca_file = args.Option("--kms-ca").value_or("");
  p.kms_info_file = args.Option("--kms-info").value_or("");
  p.token_command = args.Option("--token-command").value_or("");
  p.core_token_file = args.Option("--core-token-file").value_or("");
  p.kms_token_file = args.Option("--kms-token-file").value_or("");
  p.client_id = args.Option("--client-id").value_or("");
  const bool check = !args.Flag("--no-check");
  args.Positional(0, 0, "login --user USER --core URL --ca FILE --kms-cluster kms://HOST ...");
  if (p.user.empty() || p.core_url.empty() || p.ca_file.empty() || p.kms_cluster.empty()) {
    throw UsageError("login needs --user, --core, --ca and --kms-cluster");
  }
  if (p.transport != "direct" && p.transport != "relay") {
    throw UsageError("--transport is direct or relay");
  }
  if (p.transport == "direct" && p.kms_url.empty()) {
    throw UsageError("--transport direct needs --kms-url (the KMS's https:// address)");
  }
  if (p.transport == "relay" && p.kms_info_file.empty() && p.kms_url.empty()) {
    throw UsageError(
        "--transport relay needs --kms-info FILE (the KMS's /kms/info document) or --kms-url to "
        "fetch it once");
  }
  if (p.token_command.empty() == (p.core_token_file.empty() || p.kms_token_file.empty())) {
    throw UsageError("give either --token-command or both --core-token-file and --kms-token-file");
  }
  auto absolute = [](std::string& path) {
    if (!path.empty()) path = fs::absolute(path).lexically_normal().string();
  };
  absolute(p.ca_file);
  absolute(p.kms_ca_file);
  absolute(p.kms_info_file);
  absolute(p.core_token_file);
  absolute(p.kms_token_file);
  if (p.client_id.empty()) p.client_id = "cli-" + p.user.substr(0, p.user.find('@'));
  std::error_code ec;
  fs::create_directories(HomeDir(), ec);
  if (p.transport == "relay" && p.kms_info_file.empty()) {
    // The KMS's identity document, fetched once and kept: the core does not serve it. It is
    // checked against the roots each time it is used.
    SR_ASSIGN_OR_RETURN(auto https,
                        client::HttpsTransport::New(
                            {p.kms_url, p.kms_ca_file.empty() ? p.ca_file : p.kms_ca_file}));
    SR_ASSIGN_OR_RETURN(std::string info, https->GetInfo());
    p.kms_info_file = (fs::absolute(HomeDir()) / "kms-info.json").string();
    std::ofstream(p.kms_info_file, std::ios::trunc) << info;
  }
  SR_RETURN_IF_ERROR(SaveProfile(p));
  if (check) {
    SR_ASSIGN_OR_RETURN(auto s, Connect(p));
    auto listed = s->core->ListConversations(std::nullopt, 1);
    if (!listed.ok()) return listed.error();
    SR_RETURN_IF_ERROR(s->kms->Ping());
  }
  if (g_json) {
    Poco::JSON::Object::Ptr o = new Poco::JSON::Object;
    o->set("user", p.user);
    o->set("profile", (HomeDir() / "profile.ini").string());
    o->set("transport", p.transport);
    o->set("checked", check);
    PrintJson(o);
  } else {
    std::cout << "Logged in as " << p.user << " at " << p.core_url << " (KMS " << p.kms_cluster
              << ", " << p.transport << ")" << (check ? "; the core and the KMS answered" : "")
              << ".\nProfile: " << (HomeDir() / "profile.ini").string() << std::endl;
  }
  return OkStatus();
}

Status WhoAmI(Args& args) {
  args.Positional(0, 0, "whoami");
  SR_ASSIGN_OR_RETURN(Profile p, LoadProfile());
  if (g_json) {
    Poco::JSON::Object::Ptr o = new Poco::JSON::Object;
    o->set("user", p.user);
    o->set("core", p.core_url);
    o->set("kmsCluster", p.kms_cluster);
    o->set("transport", p.transport);
    PrintJson(o);
  } else {
    std::cout << p.user << " at " << p.core_url << " (KMS " << p.kms_cluster << ", " << p.transport
              << ")" << std::endl;
  }
  return OkStatus();
}

Status RoomCommand(Args& args, const std::string& sub) {
  if (sub == "create") {
    std::vector<std::string> with = args.Options("--with");
    auto rest = args.Positional(1, 1, "room create NAME --with USER...");
    SR_ASSIGN_OR_RETURN(auto s, Connect());
    SR_ASSIGN_OR_RETURN(Conversation room, s->sdk->Create(rest[0], with));
    if (g_json) {
      PrintJson(RoomJson(room, rest[0]));
    } else {
      std::cout << "Created room \"" << rest[0] << "\" (" << room.id << ") with "
                << Joined(room.participants) << "." << std::endl;
    }
    return OkStatus();
  }
  if (sub == "list") {
    args.Positional(0, 0, "room list");
    SR_ASSIGN_OR_RETURN(auto s, Connect());
    SR_ASSIGN_OR_RETURN(std::vector<Conversation> rooms, AllRooms(*s));
    Poco::JSON::Array::Ptr items = new Poco::JSON::Array;
    for (const Conversation& c : rooms) {
      const std::string title = TitleOf(*s, c);
      if (g_json) {
        items->add(RoomJson(c, title));
      } else {
        std::cout << c.id << "  " << title << "  (" << Joined(c.participants) << ")" << std::endl;
      }
    }
    if (g_json) {
      Poco::JSON::Object::Ptr o = new Poco::JSON::Object;
      o->set("rooms", items);
      PrintJson(o);
    } else if (rooms.empty()) {
      std::cout << "You are in no room yet (strongroom room create NAME --with USER)." << std::endl;
    }
    return OkStatus();
  }
  if (sub == "add" || sub == "remove") {
    auto rest = args.Positional(2, 2, "room " + sub + " ROOM USER");
    SR_ASSIGN_OR_RETURN(auto s, Connect());
    SR_ASSIGN_OR_RETURN(Conversation room, ResolveRoom(*s, rest[0]));
    Poco::JSON::Object::Ptr o = new Poco::JSON::Object;
    o->set("room", room.id);
    o->set("user", rest[1]);
    if (sub == "add") {
      SR_ASSIGN_OR_RETURN(Activity added, s->sdk->AddMember(room.id, rest[1]));
      o->set("activity", ActivityJson(added));
      if (!g_json) std::cout << "Added " << rest[1] << " to " << room.id << "." << std::endl;
    } else {
      SR_ASSIGN_OR_RETURN(client::Removal removal, s->sdk->RemoveMember(room.id, rest[1]));
      o->set("activity", ActivityJson(removal.removed));
      if (removal.rotated) o->set("newKeyUri", removal.rotated->key_uri);
      if (!g_json) {
        std::cout << "Removed " << rest[1] << " from " << room.id
                  << (removal.rotated ? "; the room moved to a new key " +
                                            removal.rotated->key_uri + " they cannot read"
                                      : " (left; no rotation)")
                  << "." << std::endl;
      }
    }
    if (g_json) PrintJson(o);
    return OkStatus();
  }
  throw UsageError("room takes create, list, add or remove");
}

Status Send(Args& args) {
  auto rest = args.Positional(2, 2, "send ROOM TEXT");
  std::string text = rest[1];
  if (text == "-") {
    std::ostringstream in;
    in << std::cin.rdbuf();
    text = in.str();
  }
  SR_ASSIGN_OR_RETURN(auto s, Connect());
  SR_ASSIGN_OR_RETURN(Conversation room, ResolveRoom(*s, rest[0]));
  SR_ASSIGN_OR_RETURN(Activity sent, s->sdk->Send(room.id, text));
  if (g_json) {
    PrintJson(ActivityJson(sent));
  } else {
    std::cout << "Sent #" << sent.seq << " to " << room.id << "." << std::endl;
  }
  return OkStatus();
}

Status SendFile(Args& args) {
  auto rest = args.Positional(2, 2, "send-file ROOM PATH");
  std::error_code ec;
  const std::uint64_t size = fs::file_size(rest[1], ec);
  if (ec || !fs::is_regular_file(rest[1])) {
    return Error(ErrorCode::kInvalidArgument, "cannot read the file '" + rest[1] + "'");
  }
  SR_ASSIGN_OR_RETURN(auto s, Connect());
  SR_ASSIGN_OR_RETURN(Conversation room, ResolveRoom(*s, rest[0]));
  ProgressBar bar("upload", size);
  SR_ASSIGN_OR_RETURN(Activity shared, s->sdk->SendFile(room.id, rest[1], bar.Callback()));
  if (g_json) {
    PrintJson(ActivityJson(shared));
  } else {
    std::cout << "Shared " << fs::path(rest[1]).filename().string() << " (" << size << " bytes) in "
              << room.id << " as #" << shared.seq << ", file id "
              << (shared.file_ids.empty() ? "" : shared.file_ids[0]) << "." << std::endl;
  }
  return OkStatus();
}

// Prints the messages, then fails with the first decryption error (exit 3 for a refused key).
Status PrintMessages(const std::vector<Message>& messages) {
  if (g_json) {
    Poco::JSON::Array::Ptr items = new Poco::JSON::Array;
    for (const Message& m : messages) items->add(MessageJson(m));
    Poco::JSON::Object::Ptr o = new Poco::JSON::Object;
    o->set("messages", items);
    PrintJson(o);
  } else {
    for (const Message& m : messages) PrintMessage(m);
  }
  if (std::optional<Error> error = FirstError(messages)) {
    return Error(error->code(), "some content could not be decrypted: " + error->message());
  }
  return OkStatus();
}

Status Read(Args& args) {
  const std::int64_t since = args.Number("--since", 0);
  auto rest = args.Positional(1, 1, "read ROOM [--since SEQ]");
  SR_ASSIGN_OR_RETURN(auto s, Connect());
  SR_ASSIGN_OR_RETURN(Conversation room, ResolveRoom(*s, rest[0]));
  std::vector<Message> messages;
  client::HistoryQuery query;
  query.limit = 200;
  query.after = since;
  while (true) {
    SR_ASSIGN_OR_RETURN(client::MessagePage page, s->sdk->Read(room.id, query));
    for (Message& m : page.messages) messages.push_back(std::move(m));
    if (!page.more || messages.empty()) break;
    query.after = messages.back().activity.seq;
  }
  return PrintMessages(messages);
}

Status GetFile(Args& args) {
  std::optional<std::string> out = args.Option("-o");
  auto rest = args.Positional(2, 2, "get-file ROOM FILE_ID [-o PATH]");
  SR_ASSIGN_OR_RETURN(auto s, Connect());
  SR_ASSIGN_OR_RETURN(Conversation room, ResolveRoom(*s, rest[0]));
  SR_ASSIGN_OR_RETURN(std::vector<Activity> history, WholeHistory(*s, room.id));
  for (auto a = history.rbegin(); a != history.rend(); ++a) {
    if (a->verb != "share" ||
        std::find(a->file_ids.begin(), a->file_ids.end(), rest[1]) == a->file_ids.end()) {
      continue;
    }
    Message m = s->sdk->Decrypt(*a);
    if (m.error) return *m.error;
    if (!m.file) return Error(ErrorCode::kInternal, "the share holds no file reference");
    std::string path = out.value_or(fs::path(m.file->name).filename().string());
    if (path.empty()) path = rest[1];
    if (!out && fs::exists(path)) {
      return Error(ErrorCode::kAlreadyExists,
                   "'" + path + "' exists: choose where to write with -o PATH");
    }
    ProgressBar bar("download", m.file->size);
    SR_RETURN_IF_ERROR(s->sdk->GetFile(room.id, *m.file, path, bar.Callback()));
    if (g_json) {
      Poco::JSON::Object::Ptr o = new Poco::JSON::Object;
      o->set("path", path);
      o->set("size", m.file->size);
      o->set("name", m.file->name);
      PrintJson(o);
    } else {
      std::cout << "Wrote " << path << " (" << m.file->size << " bytes, verified)." << std::endl;
    }
    return OkStatus();
  }
  return Error(ErrorCode::kNotFound, "no file " + rest[1] + " was shared in " + room.id);
}

Status Listen(Args& args) {
  std::optional<std::int64_t> since;
  if (std::int64_t n = args.Number("--since", -1); n >= 0) since = n;
  const std::int64_t count = args.Number("--count", 0);
  auto rest = args.Positional(0, 1, "listen [ROOM] [--since SEQ] [--count N]");
  SR_ASSIGN_OR_RETURN(Profile profile, LoadProfile());
  SR_ASSIGN_OR_RETURN(auto s, Connect(std::move(profile), /*background_pool=*/false));
  std::string only;
  std::map<std::string, std::string> labels;
  if (!rest.empty()) {
    SR_ASSIGN_OR_RETURN(Conversation room, ResolveRoom(*s, rest[0]));
    only = room.id;
    if (!since) since = room.last_seq;
  }
  if (!since) {
    // Live: what comes after the newest activity of any of our rooms.
    SR_ASSIGN_OR_RETURN(std::vector<Conversation> rooms, AllRooms(*s));
    std::int64_t newest = 0;
    for (const Conversation& c : rooms) newest = std::max(newest, c.last_seq);
    since = newest;
  }
  std::optional<std::int64_t> cursor = since;
  std::int64_t shown = 0;
  std::unique_ptr<client::EventStream> stream;
  int failures = 0;
  if (!g_json) std::cerr << "listening as " << s->profile.user << " (Ctrl-C stops)" << std::endl;
  while (!g_stop.load()) {
    if (!stream) {
      Result<std::unique_ptr<client::EventStream>> opened = s->core->OpenEvents(cursor);
      if (!opened.ok()) {
        if (opened.error().code() == ErrorCode::kUnauthenticated) return opened.error();
        if (failures++ == 0) {
          std::cerr << "strongroom: the connection to the core dropped ("
                    << opened.error().message() << "); reconnecting" << std::endl;
        }
        for (int i = 0; i < std::min(failures, 10) * 5 && !g_stop.load(); ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        continue;
      }
      if (failures > 0) std::cerr << "strongroom: reconnected" << std::endl;
      failures = 0;
      stream = std::move(opened).value();
    }
    Result<std::vector<Activity>> next = stream->Next(std::chrono::milliseconds(500));
    if (!next.ok()) {
      cursor = stream->cursor();
      stream.reset();
      continue;
    }
    for (const Activity& a : *next) {
      cursor = a.seq;
      if (!only.empty() && a.conversation_id != only) continue;
      if (!labels.count(a.conversation_id)) {
        Result<Conversation> c = s->sdk->Get(a.conversation_id, /*refresh=*/true);
        labels[a.conversation_id] = c.ok() ? TitleOf(*s, *c) : a.conversation_id;
      } else if (a.verb == "rotate" || a.verb == "add" || a.verb == "remove") {
        (void)s->sdk->Get(a.conversation_id, /*refresh=*/true);
      }
      PrintMessage(s->sdk->Decrypt(a), only.empty() ? labels[a.conversation_id] : "");
      if (count > 0 && ++shown >= count) return OkStatus();
    }
  }
  return OkStatus();
}

Status Rotate(Args& args) {
  auto rest = args.Positional(1, 1, "rotate ROOM");
  SR_ASSIGN_OR_RETURN(auto s, Connect());
  SR_ASSIGN_OR_RETURN(Conversation room, ResolveRoom(*s, rest[0]));
  SR_ASSIGN_OR_RETURN(Activity rotated, s->sdk->Rotate(room.id));
  if (g_json) {
    PrintJson(ActivityJson(rotated));
  } else {
    std::cout << "Room " << room.id << " now uses key " << rotated.key_uri << "." << std::endl;
  }
  return OkStatus();
}

Status Export(Args& args) {
  auto rest = args.Positional(1, 1, "export ROOM");
  SR_ASSIGN_OR_RETURN(auto s, Connect());
  SR_ASSIGN_OR_RETURN(Conversation room, ResolveRoom(*s, rest[0]));
  SR_ASSIGN_OR_RETURN(std::vector<Activity> history, WholeHistory(*s, room.id));
  Poco::JSON::Array::Ptr items = new Poco::JSON::Array;
  for (const Activity& a : history) items->add(ActivityJson(a));
  Poco::JSON::Object::Ptr o = new Poco::JSON::Object;
  o->set("conversationId", room.id);
  o->set("kmsResourceUri", room.kms_resource_uri);
  o->set("items", items);
  PrintJson(o);
  return OkStatus();
}

Result<std::vector<Activity>> ActivitiesFromFile(const std::string& path, const std::string& room) {
  SR_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path, 256u << 20));
  std::vector<Activity> out;
  try {
    Poco::JSON::Parser parser;
    Poco::JSON::Object::Ptr doc = parser.parse(text).extract<Poco::JSON::Object::Ptr>();
    Poco::JSON::Array::Ptr items = doc->getArray("items");
    if (!items) return Error(ErrorCode::kInvalidArgument, path + " has no \"items\" array");
    for (std::size_t i = 0; i < items->size(); ++i) {
      SR_ASSIGN_OR_RETURN(Activity a, ActivityFromJson(items->getObject(static_cast<unsigned>(i))));
      if (room.empty() || a.conversation_id == room) out.push_back(std::move(a));
    }
  } catch (const Poco::Exception& e) {
    return Error(ErrorCode::kInvalidArgument, path + " is not an export: " + e.message());
  }
  return out;
}

Status Compliance(Args& args, const std::string& sub) {
  if (sub != "read") throw UsageError("compliance takes read");
  std::optional<std::string> user = args.Option("--user");
  std::optional<std::string> from = args.Option("--from");
  auto rest = args.Positional(0, 1, "compliance read --user USER [--from FILE] [ROOM_ID]");
  if (!user) throw UsageError("compliance read needs --user USER");
  SR_ASSIGN_OR_RETURN(auto s, Connect());
  std::vector<Activity> activities;
  if (from) {
    SR_ASSIGN_OR_RETURN(activities, ActivitiesFromFile(*from, rest.empty() ? "" : rest[0]));
  } else {
    // Through the core's compliance reads: the user's rooms created in the officer's org, named
    // by id (an officer cannot read room names), or all of them.
    std::vector<std::string> rooms;
    if (!rest.empty()) {
      rooms.push_back(rest[0]);
    } else {
      std::optional<std::int64_t> before;
      for (int page = 0; page < 1000; ++page) {
        SR_ASSIGN_OR_RETURN(client::ConversationPage listed,
                            s->core->ComplianceConversations(*user, before, 200));
        for (const Conversation& c : listed.items) rooms.push_back(c.id);
        if (!listed.next) break;
        before = listed.next;
      }
    }
    for (const std::string& room : rooms) {
      client::HistoryQuery query;
      query.limit = 200;
      query.after = 0;
      while (true) {
        Result<client::HistoryPage> page = s->core->ComplianceHistory(*user, room, query);
        if (!page.ok()) {
          if (client::CoreErrorCode(page.error()) == "not_found") {
            return Error(ErrorCode::kNotFound,
                         *user + " is in no room with the id " + room +
                             " created in your organization (name the room by its id)");
          }
          return page.error();
        }
        activities.insert(activities.end(), page->items.begin(), page->items.end());
        if (!page->more || page->items.empty()) break;
        query.after = page->items.back().seq;
      }
    }
  }
  SR_ASSIGN_OR_RETURN(std::vector<Message> messages, s->sdk->ReadOnBehalfOf(*user, activities));
  return PrintMessages(messages);
}

Status Key(Args& args, const std::string& sub) {
  if (sub != "show") throw UsageError("key takes show");
  auto rest = args.Positional(1, 1, "key show KEY_URI");
  SR_ASSIGN_OR_RETURN(auto s, Connect());
  SR_ASSIGN_OR_RETURN(client::KmsKey key, s->kms->RetrieveKey(rest[0]));
  Poco::JSON::Object::Ptr jwk = new Poco::JSON::Object;
  jwk->set("kty", "oct");
  jwk->set("kid", key.uri);
  jwk->set("k", jose::Base64UrlEncode(key.key.view()));
  std::cout << Json(jwk) << std::endl;
  return OkStatus();
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
    return argv.empty() ? kExitUsage : kExitOk;
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
      if (command == "send-file") return SendFile(args);
      if (command == "read") return Read(args);
      if (command == "get-file") return GetFile(args);
      if (command == "listen") return Listen(args);
      if (command == "rotate") return Rotate(args);
      if (command == "export") return Export(args);
      if (command == "compliance") return Compliance(args, sub);
      if (command == "key") return Key(args, sub);
      throw UsageError("unknown command '" + command + "' (strongroom --help lists them)");
    }();
    if (status.ok()) return kExitOk;
    const Error& error = status.error();
    std::cerr << "strongroom: " << error.message() << std::endl;
    if (std::string hint = HintFor(error); !hint.empty()) std::cerr << "  " << hint << std::endl;
    if (g_json) {
      Poco::JSON::Object::Ptr e = new Poco::JSON::Object;
      e->set("code", std::string(ErrorCodeName(error.code())));
      e->set("message", error.message());
      Poco::JSON::Object::Ptr o = new Poco::JSON::Object;
      o->set("error", e);
      PrintJson(o);
    }
    return error.code() == ErrorCode::kFailedPrecondition &&
                   error.message().find("strongroom login") != std::string::npos
               ? kExitUsage
               : ExitFor(error);
  } catch (const UsageError& e) {
    std::cerr << "strongroom: " << e.message() << "\n  strongroom --help lists the commands"
              << std::endl;
    return kExitUsage;
  } catch (const Poco::Exception& e) {
    std::cerr << "strongroom: " << e.displayText() << std::endl;
    return kExitOther;
  } catch (const std::exception& e) {
    std::cerr << "strongroom: " << e.what() << std::endl;
    return kExitOther;
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
