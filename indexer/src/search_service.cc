#include "strongroom/indexer/search_service.h"

#include <algorithm>

#include "strongroom/indexer/query_parser.h"

namespace strongroom::indexer {

Result<std::vector<std::string>> SearchService::Terms(const std::string& query) {
  std::unique_ptr<TermExtractor> extractor;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!idle_extractors_.empty()) {
      extractor = std::move(idle_extractors_.back());
      idle_extractors_.pop_back();
    }
  }
  if (!extractor) {
    SR_ASSIGN_OR_RETURN(TermExtractor made, TermExtractor::New(language_));
    extractor = std::make_unique<TermExtractor>(std::move(made));
  }
  Result<std::vector<std::string>> terms = ParseQuery(*extractor, query);
  std::lock_guard<std::mutex> lock(mutex_);
  idle_extractors_.push_back(std::move(extractor));
  return terms;
}

Result<std::vector<std::string>> SearchService::AuthorizedResources(
    IndexerKms& kms, const std::string& user, const std::string& on_behalf_of) {
  std::vector<std::string> resources;
  std::string cursor;
  do {
    SR_ASSIGN_OR_RETURN(client::KmsAuthorizationPage page,
                        kms.ListAuthorizations(user, cursor, 1000, on_behalf_of));
    for (const client::KmsUserAuthorization& authorization : page.authorizations) {
      resources.push_back(authorization.resource_uri);
    }
    if (!page.cursor.empty() && page.cursor == cursor) {
      return Error(ErrorCode::kDataLoss, "the KMS answered the same page of authorizations again");
    }
    cursor = page.cursor;
  } while (!cursor.empty() && resources.size() < kMaxAuthorizationsRead);
  return resources;
}

Result<IndexPage> SearchService::Search(const SearchRequest& request) {
  return SearchIn(request, kms_, "");
}

Result<IndexPage> SearchService::ComplianceSearch(const SearchRequest& request,
                                                  IndexerKms& officer_kms) {
  return SearchIn(request, officer_kms, request.user);
}

Result<IndexPage> SearchService::SearchIn(const SearchRequest& request, IndexerKms& kms,
                                          const std::string& on_behalf_of) {
  if (request.limit < 1 || request.limit > kMaxSearchLimit) {
    return Error(ErrorCode::kInvalidArgument, "limit must be 1-" + std::to_string(kMaxSearchLimit));
  }
  if (request.before && *request.before < 1) {
    return Error(ErrorCode::kInvalidArgument, "before must be a seq above 0");
  }
  SR_ASSIGN_OR_RETURN(std::vector<std::string> terms, Terms(request.query));
  SR_ASSIGN_OR_RETURN(std::vector<std::string> resources,
                      AuthorizedResources(kms, request.user, on_behalf_of));
  SR_ASSIGN_OR_RETURN(std::vector<Room> rooms, store_.RoomsOfResources(resources));
  if (request.room) {
    auto room = std::find_if(rooms.begin(), rooms.end(), [&](const Room& candidate) {
      return candidate.conversation_id == *request.room;
    });
    if (room == rooms.end()) {
      return Error(ErrorCode::kPermissionDenied,
                   "the room is not one the user may search (not a member, or not indexed)");
    }
    rooms = {*room};
  }
  // A room's tokens may be of every version from its stored one (the oldest it may hold: a
  // re-index after a rotation is not done) to the current one (new activities): one request per
  // version, since the core takes each conversation once per request.
  SR_ASSIGN_OR_RETURN(const std::uint32_t current, keys_.CurrentVersion());
  std::uint32_t oldest = current;
  for (const Room& room : rooms) oldest = std::min(oldest, room.search_key_version);
  IndexPage page;
  bool more = false;
  for (std::uint32_t version = oldest; version <= current; ++version) {
    std::vector<const Room*> covered;
    for (const Room& room : rooms) {
      if (room.search_key_version <= version) covered.push_back(&room);
    }
    for (std::size_t start = 0; start < covered.size(); start += kMaxRoomsPerCoreSearch) {
      const std::size_t end = std::min(covered.size(), start + kMaxRoomsPerCoreSearch);
      std::vector<RoomQuery> queries;
      for (std::size_t i = start; i < end; ++i) {
        SR_ASSIGN_OR_RETURN(std::shared_ptr<const RoomSearchKey> key,
                            keys_.RoomKey(covered[i]->conversation_id, version));
        queries.push_back({covered[i]->conversation_id, key->Tokens(terms)});
      }
      SR_ASSIGN_OR_RETURN(IndexPage part, core_.Search(queries, request.before, request.limit));
      page.items.insert(page.items.end(), part.items.begin(), part.items.end());
      more = more || part.next.has_value();
    }
  }
  // An activity re-indexed between two of the requests may be found under both versions.
  std::sort(page.items.begin(), page.items.end(), [](const IndexMatch& a, const IndexMatch& b) {
    return a.seq != b.seq ? a.seq > b.seq : a.activity_id < b.activity_id;
  });
  page.items.erase(std::unique(page.items.begin(), page.items.end(),
                               [](const IndexMatch& a, const IndexMatch& b) {
                                 return a.activity_id == b.activity_id;
                               }),
                   page.items.end());
  // Each part holds its newest `limit` before `before`: together they hold the newest `limit`.
  std::sort(page.items.begin(), page.items.end(),
            [](const IndexMatch& a, const IndexMatch& b) { return a.seq > b.seq; });
  if (page.items.size() > request.limit) {
    page.items.resize(request.limit);
    more = true;
  }
  if (more && !page.items.empty()) page.next = page.items.back().seq;
  return page;
}

}  // namespace strongroom::indexer
