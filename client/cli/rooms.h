// Finding the user's rooms: every room, one by its id or name, its whole history, and the SDK
// session opened on a room for the commands that name one.
#ifndef STRONGROOM_CLIENT_CLI_ROOMS_H_
#define STRONGROOM_CLIENT_CLI_ROOMS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "profile.h"
#include "strongroom/client/core_client.h"
#include "strongroom/common/error.h"

namespace strongroom::cli {

// Every room the user is in.
Result<std::vector<client::Conversation>> AllRooms(Session& s);
// The room's decrypted name, or why it cannot be read.
std::string TitleOf(Session& s, const client::Conversation& room);
// ROOM as an id, or a unique prefix of a room's decrypted name.
Result<client::Conversation> ResolveRoom(Session& s, const std::string& room);
// The room's activities after `after`, every page.
Result<std::vector<client::Activity>> WholeHistory(Session& s, const std::string& id,
                                                   std::int64_t after = 0);
// The room's activity #seq (as `read` prints it); NOT_FOUND when the room has none.
Result<client::Activity> ActivityAt(Session& s, const client::Conversation& room,
                                    const std::string& seq);

// The SDK from the saved profile, and ROOM resolved in it.
struct RoomSession {
  std::unique_ptr<Session> session;
  client::Conversation room;
};
Result<RoomSession> OpenRoom(const std::string& room);

}  // namespace strongroom::cli

#endif  // STRONGROOM_CLIENT_CLI_ROOMS_H_
