#include "rooms.h"

#include <algorithm>
#include <optional>

namespace strongroom::cli {

using client::Activity;
using client::Conversation;

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

Result<std::vector<Activity>> WholeHistory(Session& s, const std::string& id, std::int64_t after) {
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

Result<Activity> ActivityAt(Session& s, const Conversation& room, const std::string& seq) {
  std::int64_t number = 0;
  const bool digits =
      !seq.empty() && seq.size() <= 18 &&
      std::all_of(seq.begin(), seq.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (digits) number = std::stoll(seq);
  if (number <= 0) {
    return Error(
        ErrorCode::kInvalidArgument,
        "SEQ is a message's number as `strongroom read` shows it (#12: 12), not '" + seq + "'");
  }
  client::HistoryQuery query;
  query.after = number - 1;
  query.limit = 1;
  SR_ASSIGN_OR_RETURN(client::HistoryPage page, s.core->History(room.id, query));
  if (page.items.empty() || page.items.front().seq != number) {
    return Error(ErrorCode::kNotFound, "room " + room.id + " has no activity #" + seq);
  }
  return page.items.front();
}

Result<RoomSession> OpenRoom(const std::string& room) {
  RoomSession opened;
  SR_ASSIGN_OR_RETURN(opened.session, Connect());
  SR_ASSIGN_OR_RETURN(opened.room, ResolveRoom(*opened.session, room));
  return opened;
}

}  // namespace strongroom::cli
