#include "output.h"

#include <Poco/JSON/Stringifier.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <iostream>
#include <sstream>

#include "strongroom/client/core_json.h"
#include "strongroom/common/rfc3339.h"

namespace strongroom::cli {
namespace {

using client::Activity;
using client::Message;

}  // namespace

std::string LocalTime(std::int64_t ms) {
  const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  localtime_r(&seconds, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &tm);
  return text;
}

namespace {

std::string Describe(const Message& m) {
  const Activity& a = m.activity;
  if (a.retracted_ms != 0) return "(retracted " + LocalTime(a.retracted_ms) + ")";
  if (m.error) return "[cannot decrypt: " + m.error->message() + "]";
  if (a.verb == "post") {
    return m.text.value_or("") +
           (a.edited_ms != 0 ? " (edited " + LocalTime(a.edited_ms) + ")" : std::string());
  }
  if (a.verb == "edit") {
    // Without text once a later edit or a retraction replaced it.
    return "edited #" + std::to_string(a.target_seq) + (m.text ? ": " + *m.text : std::string());
  }
  if (a.verb == "retract") return "retracted #" + std::to_string(a.target_seq);
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
  if (!a.target_id.empty()) {
    o->set("targetId", a.target_id);
    o->set("targetSeq", a.target_seq);
  }
  if (a.edited_ms != 0) o->set("edited", FormatRfc3339Ms(a.edited_ms));
  if (a.retracted_ms != 0) o->set("retracted", FormatRfc3339Ms(a.retracted_ms));
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

// The first error among messages whose content could not be decrypted.
std::optional<Error> FirstError(const std::vector<Message>& messages) {
  for (const Message& m : messages) {
    if (m.error) return m.error;
  }
  return std::nullopt;
}

}  // namespace

bool g_json = false;
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

void PrintActivity(const Activity& a, const std::string& said) {
  if (g_json) {
    PrintJson(client::ActivityToJson(a));
  } else {
    std::cout << said << std::endl;
  }
}

void PrintMessage(const Message& m, const std::string& room_label) {
  if (g_json) {
    PrintJson(MessageJson(m));
    return;
  }
  std::cout << "#" << m.activity.seq << " " << LocalTime(m.activity.published_ms) << " "
            << (room_label.empty() ? "" : "[" + room_label + "] ") << m.activity.actor << ": "
            << Describe(m) << std::endl;
}

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

ProgressBar::ProgressBar(std::string label, std::uint64_t total)
    : label_(std::move(label)),
      total_(total),
      on_(g_progress == ProgressMode::kAlways ||
          (g_progress == ProgressMode::kAuto && isatty(2) && total >= (1u << 20))) {}

ProgressBar::~ProgressBar() {
  if (drawn_) std::cerr << "\n";
}

client::Progress ProgressBar::Callback() {
  return [this](std::uint64_t done, std::uint64_t total) { Draw(done, total ? total : total_); };
}

void ProgressBar::Draw(std::uint64_t done, std::uint64_t total) {
  if (!on_ || total == 0) return;
  const int percent = static_cast<int>(std::min<std::uint64_t>(100, done * 100 / total));
  if (percent == last_) return;
  last_ = percent;
  drawn_ = true;
  const int width = 30, filled = percent * width / 100;
  std::cerr << "\r" << label_ << " [" << std::string(static_cast<std::size_t>(filled), '#')
            << std::string(static_cast<std::size_t>(width - filled), '.') << "] " << percent << "% "
            << (done >> 20) << "/" << (total >> 20) << " MiB" << std::flush;
}

}  // namespace strongroom::cli
