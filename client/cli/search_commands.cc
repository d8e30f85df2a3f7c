// strongroom search, and compliance search: the messages, file names and room names that have
// every term, newest first, from indexerd (the profile's indexer_url, a token of audience
// "indexer"), fetched from the core and decrypted here, each with a snippet with the terms marked.
#include <functional>
#include <iostream>
#include <map>

#include "commands.h"
#include "output.h"
#include "profile.h"
#include "rooms.h"
#include "strongroom/client/core_json.h"
#include "strongroom/client/search.h"

namespace strongroom::cli {
namespace {

struct Searching {
  std::unique_ptr<Session> session;
  std::unique_ptr<client::Searcher> searcher;
  client::SearchQuery query;
};

// The session and searcher of the saved profile, and the query from the arguments.
Result<Searching> Prepare(Args& args, const std::string& usage, bool compliance) {
  std::optional<std::string> room = args.Option("--room");
  const std::int64_t limit = args.Number("--limit", 20);
  const std::int64_t before = args.Number("--before", 0);
  auto rest = args.Positional(1, 1, usage);
  if (limit < 1 || limit > 200) throw UsageError("--limit must be 1-200");
  if (before < 0) throw UsageError("--before must be a seq");
  if (compliance && room && room->size() != 36) {
    throw UsageError("compliance search names a room by its id");
  }
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
  Searching out;
  SR_ASSIGN_OR_RETURN(out.session, Connect(profile));
  out.query.query = rest[0];
  out.query.limit = static_cast<std::size_t>(limit);
  if (before > 0) out.query.before = before;
  if (room && compliance) out.query.room = *room;
  if (room && !compliance) {
    SR_ASSIGN_OR_RETURN(client::Conversation resolved, ResolveRoom(*out.session, *room));
    out.query.room = resolved.id;
  }
  SR_ASSIGN_OR_RETURN(out.searcher, client::Searcher::New({profile.indexer_url, profile.ca_file,
                                                           ProfileTokenSource(profile, "indexer"),
                                                           ProfileTokenSource(profile, "kms")},
                                                          *out.session->core, *out.session->sdk));
  return out;
}

// Prints the hits; `names` gives a room's label (its decrypted name, or its id).
void PrintResults(const client::SearchResults& results,
                  const std::function<std::string(const std::string&)>& name_of) {
  if (g_json) {
    Poco::JSON::Array::Ptr items = new Poco::JSON::Array;
    for (const client::SearchHit& hit : results.hits) {
      const client::Activity& a = hit.message.activity;
      Poco::JSON::Object::Ptr item = new Poco::JSON::Object;
      item->set("room", a.conversation_id);
      item->set("roomName", name_of(a.conversation_id));
      item->set("seq", a.seq);
      item->set("activityId", a.id);
      item->set("actor", a.actor);
      item->set("verb", a.verb);
      item->set("published", a.published_ms);
      item->set("snippet", hit.snippet);
      items->add(item);
    }
    Poco::JSON::Object::Ptr o = new Poco::JSON::Object;
    o->set("results", items);
    if (results.next) o->set("next", *results.next);
    PrintJson(o);
    return;
  }
  for (const client::SearchHit& hit : results.hits) {
    const client::Activity& a = hit.message.activity;
    std::cout << "#" << a.seq << " " << LocalTime(a.published_ms) << " ["
              << name_of(a.conversation_id) << "] " << a.actor << ": " << hit.snippet << std::endl;
  }
  if (results.hits.empty()) std::cout << "No messages match." << std::endl;
  if (results.next) {
    std::cout << "More: the same search with --before " << *results.next << std::endl;
  }
}

}  // namespace

Status Search(Args& args) {
  SR_ASSIGN_OR_RETURN(
      Searching s, Prepare(args, "search TERMS [--room ROOM] [--limit N] [--before SEQ]", false));
  SR_ASSIGN_OR_RETURN(client::SearchResults results, s.searcher->Search(s.query));
  std::map<std::string, std::string> names;  // conversation id -> decrypted name
  PrintResults(results, [&](const std::string& id) -> std::string {
    auto known = names.find(id);
    if (known != names.end()) return known->second;
    Result<client::Conversation> conversation = s.session->sdk->Get(id);
    std::string name = conversation.ok() ? TitleOf(*s.session, *conversation) : id;
    if (name.empty()) name = id;
    return names[id] = name;
  });
  return OkStatus();
}

Status ComplianceSearch(Args& args) {
  std::optional<std::string> user = args.Option("--user");
  if (!user) throw UsageError("compliance search needs --user USER");
  SR_ASSIGN_OR_RETURN(
      Searching s,
      Prepare(args,
              "compliance search --user USER TERMS [--room ROOM_ID] [--limit N] [--before SEQ]",
              true));
  SR_ASSIGN_OR_RETURN(client::SearchResults results, s.searcher->ComplianceSearch(*user, s.query));
  // An officer is no member: rooms are shown by their ids.
  PrintResults(results, [](const std::string& id) { return id; });
  return OkStatus();
}

}  // namespace strongroom::cli
