// In-memory stand-ins for what indexerd asks of the KMS and the core (indexer_ports.h), for the
// pipeline's and the query path's unit tests. The daemon's tests (indexerd_test.cc) run the real
// kmsd and cored instead.
//
// FakeKms holds content keys bound to resources, the organization's search keys and each user's
// authorized resources. FakeCore keeps each activity's token set as the core's PUT does (replaced
// whole) and searches as POST /v1/index/search does (every token of the room's query, newest
// first, `next` when more remain); it knows each activity's seq from the activities registered.
#ifndef STRONGROOM_TESTS_INDEXER_INDEXER_FAKES_H_
#define STRONGROOM_TESTS_INDEXER_INDEXER_FAKES_H_

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "strongroom/indexer/indexer_ports.h"

namespace strongroom::indexer::testing {

class FakeKms : public IndexerKms {
 public:
  // A new content key bound to `resource_uri`; returns its URI.
  std::string AddKey(const std::string& resource_uri) {
    client::KmsKey key;
    key.uri = "kms://kms.acme.test/keys/" + std::to_string(keys_.size() + 1);
    key.key = SecretBytes::Random(32);
    key.resource_uri = resource_uri;
    key.bound_ms = 1;
    const std::string uri = key.uri;
    keys_.emplace(uri, std::move(key));
    return uri;
  }
  const SecretBytes& KeyBytes(const std::string& uri) const { return keys_.at(uri).key; }
  void Authorize(const std::string& user, const std::string& resource_uri) {
    authorizations_[user].insert(resource_uri);
  }
  void Deauthorize(const std::string& user, const std::string& resource_uri) {
    authorizations_[user].erase(resource_uri);
  }
  void Refuse(const std::string& key_uri) { refused_.insert(key_uri); }
  void SetAvailable(bool available) { available_ = available; }
  const SecretBytes& OrgKey(std::uint32_t version) {
    auto [it, made] = org_keys_.try_emplace(version);
    if (made) it->second = SecretBytes::Random(32);
    return it->second;
  }

  Result<client::KmsKey> RetrieveKey(const std::string& key_uri) override {
    ++key_retrievals;
    if (!available_) return Error(ErrorCode::kUnavailable, "the KMS is down");
    if (refused_.contains(key_uri)) return Error(ErrorCode::kPermissionDenied, "not authorized");
    auto it = keys_.find(key_uri);
    if (it == keys_.end()) return Error(ErrorCode::kNotFound, "no such key");
    return it->second.Copy();
  }
  Result<client::KmsSearchKey> CurrentSearchKey() override { return SearchKey(current_version); }
  Result<client::KmsSearchKey> SearchKey(std::uint32_t version) override {
    if (!available_) return Error(ErrorCode::kUnavailable, "the KMS is down");
    client::KmsSearchKey key;
    key.version = version;
    key.uri = "kms://kms.acme.test/search-keys/acme/" + std::to_string(version);
    key.key = SecretBytes(OrgKey(version).view());
    return key;
  }
  Result<client::KmsAuthorizationPage> ListAuthorizations(
      const std::string& user, const std::string& cursor, std::size_t limit,
      const std::string& on_behalf_of) override {
    return ListFor(indexer_id, user, cursor, limit, on_behalf_of);
  }
  // As the KMS answers `requester`: the indexer about any user, a user about themselves, an
  // officer onBehalfOf a user.
  Result<client::KmsAuthorizationPage> ListFor(const std::string& requester,
                                               const std::string& user, const std::string& cursor,
                                               std::size_t limit, const std::string& on_behalf_of) {
    ++authorization_lists;
    if (!available_) return Error(ErrorCode::kUnavailable, "the KMS is down");
    const bool allowed = on_behalf_of.empty()
                             ? (requester == indexer_id || requester == user)
                             : (on_behalf_of == user && officers.contains(requester));
    if (!allowed) return Error(ErrorCode::kPermissionDenied, "not allowed to list");
    client::KmsAuthorizationPage page;
    const std::set<std::string>& resources = authorizations_[user];
    for (auto it = resources.upper_bound(cursor); it != resources.end(); ++it) {
      if (page.authorizations.size() == limit) {
        page.cursor = page.authorizations.back().resource_uri;
        break;
      }
      page.authorizations.push_back({*it, "participant"});
    }
    return page;
  }
  Status Check() override {
    return available_ ? OkStatus() : Status(Error(ErrorCode::kUnavailable, "the KMS is down"));
  }

  // The KMS as seen over `requester`'s own channel (a compliance officer's).
  std::unique_ptr<IndexerKms> As(const std::string& requester);

  std::string indexer_id = "indexer@acme.test";
  std::set<std::string> officers;
  std::uint32_t current_version = 1;
  int key_retrievals = 0;
  int authorization_lists = 0;

 private:
  std::map<std::string, client::KmsKey> keys_;
  std::map<std::uint32_t, SecretBytes> org_keys_;
  std::map<std::string, std::set<std::string>> authorizations_;
  std::set<std::string> refused_;
  bool available_ = true;
};

class FakeKmsAs : public IndexerKms {
 public:
  FakeKmsAs(FakeKms& kms, std::string requester) : kms_(kms), requester_(std::move(requester)) {}
  Result<client::KmsKey> RetrieveKey(const std::string&) override {
    return Error(ErrorCode::kUnimplemented, "not used");
  }
  Result<client::KmsSearchKey> CurrentSearchKey() override {
    return Error(ErrorCode::kPermissionDenied, "only the indexer");
  }
  Result<client::KmsSearchKey> SearchKey(std::uint32_t) override {
    return Error(ErrorCode::kPermissionDenied, "only the indexer");
  }
  Result<client::KmsAuthorizationPage> ListAuthorizations(
      const std::string& user, const std::string& cursor, std::size_t limit,
      const std::string& on_behalf_of) override {
    return kms_.ListFor(requester_, user, cursor, limit, on_behalf_of);
  }
  Status Check() override { return kms_.Check(); }

 private:
  FakeKms& kms_;
  const std::string requester_;
};

inline std::unique_ptr<IndexerKms> FakeKms::As(const std::string& requester) {
  return std::make_unique<FakeKmsAs>(*this, requester);
}

class FakeCore : public IndexerCore {
 public:
  void Register(const client::Activity& activity) {
    seq_of_[activity.id] = activity.seq;
    conversation_of_[activity.id] = activity.conversation_id;
  }
  void SetAvailable(bool available) { available_ = available; }
  // Fails the next put request holding `activity_id` with UNAVAILABLE.
  void FailPutOf(const std::string& activity_id) { fail_put_of_ = activity_id; }
  const std::map<std::string, std::vector<std::string>>& sets() const { return sets_; }

  // All or nothing, as POST /v1/index/sets: one unknown activity refuses the request.
  Status PutTokenSets(const std::vector<TokenSet>& sets) override {
    ++requests;
    if (!available_) return Error(ErrorCode::kUnavailable, "the core is down");
    for (const TokenSet& set : sets) {
      if (set.activity_id == fail_put_of_) {
        fail_put_of_.clear();
        return Error(ErrorCode::kUnavailable, "the core is down");
      }
    }
    if (sets.empty() || sets.size() > kMaxSetsPerPut) {
      return Error(ErrorCode::kInvalidArgument, "1 to 256 sets");
    }
    for (const TokenSet& set : sets) {
      auto known = conversation_of_.find(set.activity_id);
      if (known == conversation_of_.end() || known->second != set.conversation_id) {
        return Error(ErrorCode::kNotFound, "no such activity");
      }
    }
    for (const TokenSet& set : sets) {
      ++puts;
      ++puts_of[set.activity_id];
      sets_[set.activity_id] = set.tokens;
    }
    return OkStatus();
  }
  Result<IndexPage> Search(const std::vector<RoomQuery>& queries,
                           std::optional<std::int64_t> before, std::size_t limit) override {
    if (!available_) return Error(ErrorCode::kUnavailable, "the core is down");
    searched.push_back(queries);
    IndexPage page;
    for (const RoomQuery& query : queries) {
      for (const auto& [activity, tokens] : sets_) {
        if (conversation_of_[activity] != query.conversation_id) continue;
        if (before && seq_of_[activity] >= *before) continue;
        const bool all = std::all_of(query.tokens.begin(), query.tokens.end(), [&](auto& t) {
          return std::find(tokens.begin(), tokens.end(), t) != tokens.end();
        });
        if (all) page.items.push_back({query.conversation_id, activity, seq_of_[activity]});
      }
    }
    std::sort(page.items.begin(), page.items.end(),
              [](const IndexMatch& a, const IndexMatch& b) { return a.seq > b.seq; });
    if (page.items.size() > limit) {
      page.items.resize(limit);
      page.next = page.items.back().seq;
    }
    return page;
  }

  int puts = 0;      // sets stored
  int requests = 0;  // PutTokenSets calls
  std::map<std::string, int> puts_of;
  std::vector<std::vector<RoomQuery>> searched;

 private:
  std::map<std::string, std::vector<std::string>> sets_;
  std::map<std::string, std::int64_t> seq_of_;
  std::map<std::string, std::string> conversation_of_;
  std::string fail_put_of_;
  bool available_ = true;
};

}  // namespace strongroom::indexer::testing

#endif  // STRONGROOM_TESTS_INDEXER_INDEXER_FAKES_H_
