#include <iostream>
#include <optional>

#include "commands.h"
#include "output.h"
#include "profile.h"
#include "rooms.h"
#include "strongroom/client/core_json.h"

namespace strongroom::cli {
namespace {

using client::Activity;
using client::Conversation;

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

}  // namespace

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
    SR_ASSIGN_OR_RETURN(RoomSession opened, OpenRoom(rest[0]));
    auto& [s, room] = opened;
    Poco::JSON::Object::Ptr o = new Poco::JSON::Object;
    o->set("room", room.id);
    o->set("user", rest[1]);
    if (sub == "add") {
      SR_ASSIGN_OR_RETURN(Activity added, s->sdk->AddMember(room.id, rest[1]));
      o->set("activity", client::ActivityToJson(added));
      if (!g_json) std::cout << "Added " << rest[1] << " to " << room.id << "." << std::endl;
    } else {
      SR_ASSIGN_OR_RETURN(client::Removal removal, s->sdk->RemoveMember(room.id, rest[1]));
      o->set("activity", client::ActivityToJson(removal.removed));
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

Status Rotate(Args& args) {
  auto rest = args.Positional(1, 1, "rotate ROOM");
  SR_ASSIGN_OR_RETURN(RoomSession opened, OpenRoom(rest[0]));
  auto& [s, room] = opened;
  SR_ASSIGN_OR_RETURN(Activity rotated, s->sdk->Rotate(room.id));
  PrintActivity(rotated, "Room " + room.id + " now uses key " + rotated.key_uri + ".");
  return OkStatus();
}

Status Export(Args& args) {
  auto rest = args.Positional(1, 1, "export ROOM");
  SR_ASSIGN_OR_RETURN(RoomSession opened, OpenRoom(rest[0]));
  auto& [s, room] = opened;
  SR_ASSIGN_OR_RETURN(std::vector<Activity> history, WholeHistory(*s, room.id));
  Poco::JSON::Array::Ptr items = new Poco::JSON::Array;
  for (const Activity& a : history) items->add(client::ActivityToJson(a));
  Poco::JSON::Object::Ptr o = new Poco::JSON::Object;
  o->set("conversationId", room.id);
  o->set("kmsResourceUri", room.kms_resource_uri);
  o->set("items", items);
  PrintJson(o);
  return OkStatus();
}

}  // namespace strongroom::cli
