// strongroom search: the messages, file names and room names of the user's rooms that have every
// term, newest first, from indexerd (the profile's indexer_url, a token of audience "indexer"),
// fetched from the core and decrypted here, each with a snippet with the terms marked.
#include <iostream>
#include <map>

#include "commands.h"
#include "output.h"
#include "profile.h"
#include "rooms.h"
#include "strongroom/client/core_json.h"
#include "strongroom/client/search.h"

namespace strongroom::cli {

Status Search(Args& args) {
  std::optional<std::string> room = args.Option("--room");
  const std::int64_t limit = args.Number("--limit", 20);
  const std::int64_t before = args.Number("--before", 0);
  auto rest = args.Positional(1, 1, "search TERMS [--room ROOM] [--limit N] [--before SEQ]");
  if (limit < 1 || limit > 200) throw UsageError("--limit must be 1-200");
  if (before < 0) throw UsageError("--before must be a seq");
  SR_ASSIGN_OR_RETURN(Profile profile, LoadProfile());
  if (profile.indexer_url.empty()) {
    return Error(ErrorCode::kFailedPrecondition,
                 "the profile names no indexer: `strongroom login ... --indexer URL` first");
  }
  if (profile.token_command.empty() && profile.indexer_token_file.empty()) {
    return Error(ErrorCode::kFailedPrecondition,
                 "the profile has no token for the indexer: give --token-command or "
                 "--indexer-token-file to `strongroom login`");
  }
  SR_ASSIGN_OR_RETURN(auto s, Connect(profile));
  client::SearchQuery query;
  query.query = rest[0];
  query.limit = static_cast<std::size_t>(limit);
  if (before > 0) query.before = before;
  if (room) {
    SR_ASSIGN_OR_RETURN(client::Conversation resolved, ResolveRoom(*s, *room));
    query.room = resolved.id;
  }
  SR_ASSIGN_OR_RETURN(auto searcher, client::Searcher::New({profile.indexer_url, profile.ca_file,
                                                            ProfileTokenSource(profile, "indexer")},
                                                           *s->core, *s->sdk));
  SR_ASSIGN_OR_RETURN(client::SearchResults results, searcher->Search(query));

  std::map<std::string, std::string> names;  // conversation id -> decrypted name
  auto name_of = [&](const std::string& id) -> std::string {
    auto known = names.find(id);
    if (known != names.end()) return known->second;
    Result<client::Conversation> conversation = s->sdk->Get(id);
    std::string name = conversation.ok() ? TitleOf(*s, *conversation) : id;
    if (name.empty()) name = id;
    return names[id] = name;
  };
  if (g_json) {
    Poco::JSON::Array::Ptr items = new Poco::JSON::Array;
    for (const client::SearchHit& hit : results.hits) {
      Poco::JSON::Object::Ptr item = new Poco::JSON::Object;
      item->set("room", hit.message.activity.conversation_id);
      item->set("roomName", name_of(hit.message.activity.conversation_id));
      item->set("seq", hit.message.activity.seq);
      item->set("activityId", hit.message.activity.id);
      item->set("actor", hit.message.activity.actor);
      item->set("verb", hit.message.activity.verb);
      item->set("published", hit.message.activity.published_ms);
      item->set("snippet", hit.snippet);
      items->add(item);
    }
    Poco::JSON::Object::Ptr o = new Poco::JSON::Object;
    o->set("results", items);
    if (results.next) o->set("next", *results.next);
    PrintJson(o);
    return OkStatus();
  }
  for (const client::SearchHit& hit : results.hits) {
    const client::Activity& a = hit.message.activity;
    std::cout << "#" << a.seq << " " << LocalTime(a.published_ms) << " ["
              << name_of(a.conversation_id) << "] " << a.actor << ": " << hit.snippet << std::endl;
  }
  if (results.hits.empty()) std::cout << "No messages match." << std::endl;
  if (results.next) {
    std::cout << "More: strongroom search ... --before " << *results.next << std::endl;
  }
  return OkStatus();
}

}  // namespace strongroom::cli
