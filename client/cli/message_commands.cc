#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "commands.h"
#include "output.h"
#include "profile.h"
#include "rooms.h"

namespace strongroom::cli {

namespace fs = std::filesystem;
using client::Activity;
using client::Conversation;
using client::Message;

std::atomic<bool> g_stop{false};

Status Send(Args& args) {
  auto rest = args.Positional(2, 2, "send ROOM TEXT");
  std::string text = rest[1];
  if (text == "-") {
    std::ostringstream in;
    in << std::cin.rdbuf();
    text = in.str();
  }
  SR_ASSIGN_OR_RETURN(RoomSession opened, OpenRoom(rest[0]));
  auto& [s, room] = opened;
  SR_ASSIGN_OR_RETURN(Activity sent, s->sdk->Send(room.id, text));
  PrintActivity(sent, "Sent #" + std::to_string(sent.seq) + " to " + room.id + ".");
  return OkStatus();
}

Status Edit(Args& args) {
  auto rest = args.Positional(3, 3, "edit ROOM SEQ TEXT");
  std::string text = rest[2];
  if (text == "-") {
    std::ostringstream in;
    in << std::cin.rdbuf();
    text = in.str();
  }
  SR_ASSIGN_OR_RETURN(RoomSession opened, OpenRoom(rest[0]));
  auto& [s, room] = opened;
  SR_ASSIGN_OR_RETURN(Activity message, ActivityAt(*s, room, rest[1]));
  SR_ASSIGN_OR_RETURN(Activity edit, s->sdk->Edit(room.id, message.id, text));
  PrintActivity(edit, "Edited #" + std::to_string(message.seq) + " in " + room.id + " (#" +
                          std::to_string(edit.seq) + ").");
  return OkStatus();
}

Status Retract(Args& args) {
  auto rest = args.Positional(2, 2, "retract ROOM SEQ");
  SR_ASSIGN_OR_RETURN(RoomSession opened, OpenRoom(rest[0]));
  auto& [s, room] = opened;
  SR_ASSIGN_OR_RETURN(Activity message, ActivityAt(*s, room, rest[1]));
  SR_ASSIGN_OR_RETURN(Activity retraction, s->sdk->Retract(room.id, message.id));
  PrintActivity(retraction, "Retracted #" + std::to_string(message.seq) + " in " + room.id + " (#" +
                                std::to_string(retraction.seq) + ").");
  return OkStatus();
}

Status SendFile(Args& args) {
  auto rest = args.Positional(2, 2, "send-file ROOM PATH");
  std::error_code ec;
  const std::uint64_t size = fs::file_size(rest[1], ec);
  if (ec || !fs::is_regular_file(rest[1])) {
    return Error(ErrorCode::kInvalidArgument, "cannot read the file '" + rest[1] + "'");
  }
  SR_ASSIGN_OR_RETURN(RoomSession opened, OpenRoom(rest[0]));
  auto& [s, room] = opened;
  ProgressBar bar("upload", size);
  SR_ASSIGN_OR_RETURN(Activity shared, s->sdk->SendFile(room.id, rest[1], bar.Callback()));
  PrintActivity(shared, "Shared " + fs::path(rest[1]).filename().string() + " (" +
                            std::to_string(size) + " bytes) in " + room.id + " as #" +
                            std::to_string(shared.seq) + ", file id " +
                            (shared.file_ids.empty() ? "" : shared.file_ids[0]) + ".");
  return OkStatus();
}

Status Read(Args& args) {
  const std::int64_t since = args.Number("--since", 0);
  auto rest = args.Positional(1, 1, "read ROOM [--since SEQ]");
  SR_ASSIGN_OR_RETURN(RoomSession opened, OpenRoom(rest[0]));
  auto& [s, room] = opened;
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
  SR_ASSIGN_OR_RETURN(RoomSession opened, OpenRoom(rest[0]));
  auto& [s, room] = opened;
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

}  // namespace strongroom::cli
