#include <Poco/Exception.h>
#include <Poco/JSON/Parser.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "commands.h"
#include "output.h"
#include "profile.h"
#include "strongroom/client/core_json.h"
#include "strongroom/common/config_file.h"

namespace strongroom::cli {
namespace {

using client::Activity;
using client::Conversation;
using client::Message;

Result<std::vector<Activity>> ActivitiesFromFile(const std::string& path, const std::string& room) {
  SR_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path, 256u << 20));
  std::vector<Activity> out;
  try {
    Poco::JSON::Parser parser;
    Poco::JSON::Object::Ptr doc = parser.parse(text).extract<Poco::JSON::Object::Ptr>();
    Poco::JSON::Array::Ptr items = doc->getArray("items");
    if (!items) return Error(ErrorCode::kInvalidArgument, path + " has no \"items\" array");
    for (std::size_t i = 0; i < items->size(); ++i) {
      Poco::JSON::Object::Ptr item = items->getObject(static_cast<unsigned>(i));
      if (!item) {
        return Error(ErrorCode::kInvalidArgument, path + " is not an export: an item is no object");
      }
      SR_ASSIGN_OR_RETURN(Activity a, client::ActivityFromJson(*item));
      if (room.empty() || a.conversation_id == room) out.push_back(std::move(a));
    }
  } catch (const Poco::Exception& e) {
    return Error(ErrorCode::kInvalidArgument, path + " is not an export: " + e.message());
  }
  return out;
}

}  // namespace

Status Compliance(Args& args, const std::string& sub) {
  if (sub == "search") return ComplianceSearch(args);
  if (sub != "read") throw UsageError("compliance takes read or search");
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

}  // namespace strongroom::cli
