// Cross-node delivery (CoreServiceConfig::cluster_poll, core/src/commit_follower.h): two nodes,
// each with a Database, a CoreService and a RealtimeHub of its own as two cored processes have,
// on ONE database, on each engine (on SQLite two Database objects on one file, which take turns
// writing as two processes do; on PostgreSQL two pools of connections to one database). Each node's
// hub serves realtime WebSockets (RealtimeHub::Serve) from a plain HTTP server on 127.0.0.1;
// clients connect to either. What a client of one node receives of the other node's posts, how a
// resume on the other node goes, how activities are numbered when both post at once, and that a
// membership change on one node holds at once on the other.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/ServerSocket.h>
#include <Poco/Net/WebSocket.h>
#include <Poco/ThreadPool.h>
#include <Poco/URI.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../support/test_dir.h"
#include "../support/test_engines.h"
#include "../support/wait_until.h"
#include "strongroom/common/jose/dir_jwe.h"
#include "strongroom/core/core_service.h"
#include "strongroom/core/realtime_hub.h"
#include "validation.h"

namespace strongroom::core {
namespace {

using std::chrono::milliseconds;
using strongroom::testing::WaitUntil;

constexpr char kKms[] = "kms://kms.acme.test";
const Caller kAlice{"alice@acme.test", "acme"};
const Caller kBob{"bob@acme.test", "acme"};
const Caller kCarol{"carol@acme.test", "acme"};

std::string KeyUri() { return std::string(kKms) + "/keys/" + internal::NewUuid(); }

std::string Jwe(const std::string& kid, const std::string& text) {
  static const std::vector<std::uint8_t> kKey(32, 7);
  return jose::EncryptDir(
             kKey, kid, std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()))
      .value();
}

// What a node's listener heard of one activity.
struct Heard {
  std::int64_t seq;
  std::string id;
  std::vector<std::string> recipients;
  std::string conversation_org;
};

// GET /events?user=U&cursor=N upgraded and handed to the hub, as cored's route does once it has
// checked the token (core_server.cc).
class EventsHandler : public Poco::Net::HTTPRequestHandler {
 public:
  explicit EventsHandler(RealtimeHub& hub) : hub_(hub) {}
  void handleRequest(Poco::Net::HTTPServerRequest& request,
                     Poco::Net::HTTPServerResponse& response) override {
    std::string user;
    std::int64_t cursor = 0;
    for (const auto& [name, value] : Poco::URI(request.getURI()).getQueryParameters()) {
      if (name == "user") user = value;
      if (name == "cursor") cursor = std::stoll(value);
    }
    try {
      Poco::Net::WebSocket socket(request, response);
      (void)hub_.Serve(user, cursor, socket);
    } catch (const Poco::Exception&) {
      // The client went away.
    }
  }

 private:
  RealtimeHub& hub_;
};

class EventsFactory : public Poco::Net::HTTPRequestHandlerFactory {
 public:
  explicit EventsFactory(RealtimeHub& hub) : hub_(hub) {}
  Poco::Net::HTTPRequestHandler* createRequestHandler(
      const Poco::Net::HTTPServerRequest&) override {
    return new EventsHandler(hub_);
  }

 private:
  RealtimeHub& hub_;
};

// One cored node: its own connections to the shared database, its service (state cache, writer,
// follower), its hub and the HTTP server in front of the hub.
class Node {
 public:
  using Open = std::function<Result<std::unique_ptr<Database>>()>;

  // `open` opens the shared database (a connection pool of the node's own).
  Node(const Open& open, const std::filesystem::path& files_dir, milliseconds poll) {
    auto db = open();
    if (!db.ok()) throw std::runtime_error(db.error().ToString());
    db_ = std::move(db).value();
    CoreServiceConfig config;
    config.files_dir = files_dir.string();
    config.cluster_poll = poll;
    auto service = CoreService::New(config, *db_);
    if (!service.ok()) throw std::runtime_error(service.error().ToString());
    service_ = std::move(service).value();
    hub_ = std::make_unique<RealtimeHub>(*service_);
    service_->SetActivityListener([this](const std::vector<CoreService::Committed>& committed) {
      hub_->Publish(committed);
      std::lock_guard lock(mutex_);
      for (const CoreService::Committed& c : committed) {
        heard_.push_back({c.activity.seq, c.activity.id, c.recipients, c.conversation_org});
      }
    });
    Poco::Net::ServerSocket socket(Poco::Net::SocketAddress("127.0.0.1", 0));
    port_ = socket.address().port();
    Poco::Net::HTTPServerParams::Ptr params = new Poco::Net::HTTPServerParams;
    params->setMaxThreads(16);
    server_ =
        std::make_unique<Poco::Net::HTTPServer>(new EventsFactory(*hub_), pool_, socket, params);
    server_->start();
  }

  ~Node() {
    hub_->Stop();
    server_->stopAll(true);
    pool_.joinAll();
    service_->SetActivityListener({});
    service_.reset();
    hub_.reset();
    db_.reset();
  }

  CoreService& service() { return *service_; }
  RealtimeHub& hub() { return *hub_; }
  std::uint16_t port() const { return port_; }

  std::vector<Heard> heard() {
    std::lock_guard lock(mutex_);
    return heard_;
  }
  bool HeardSeq(std::int64_t seq) {
    std::lock_guard lock(mutex_);
    return std::any_of(heard_.begin(), heard_.end(), [&](const Heard& h) { return h.seq == seq; });
  }

 private:
  std::unique_ptr<Database> db_;
  std::unique_ptr<CoreService> service_;
  std::unique_ptr<RealtimeHub> hub_;
  Poco::ThreadPool pool_{2, 16};
  std::unique_ptr<Poco::Net::HTTPServer> server_;
  std::uint16_t port_ = 0;
  std::mutex mutex_;
  std::vector<Heard> heard_;
};

// A realtime client of one node.
class Subscriber {
 public:
  Subscriber(std::uint16_t port, const std::string& user, std::int64_t cursor)
      : session_("127.0.0.1", port) {
    session_.setTimeout(Poco::Timespan(60, 0));
    Poco::Net::HTTPRequest request(Poco::Net::HTTPRequest::HTTP_GET,
                                   "/events?user=" + user + "&cursor=" + std::to_string(cursor),
                                   Poco::Net::HTTPMessage::HTTP_1_1);
    Poco::Net::HTTPResponse response;
    socket_ = std::make_unique<Poco::Net::WebSocket>(session_, request, response);
    socket_->setReceiveTimeout(Poco::Timespan(60, 0));
  }

  // Reads until the event with `id` came (or a minute passed, or the connection ended) and
  // returns every event received so far, as (seq, id).
  std::vector<std::pair<std::int64_t, std::string>> Until(const std::string& id) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(1);
    while (!Received(id) && std::chrono::steady_clock::now() < deadline) {
      Poco::Buffer<char> buffer(0);
      int flags = 0;
      int n = 0;
      try {
        n = socket_->receiveFrame(buffer, flags);
      } catch (const Poco::Exception& e) {
        ADD_FAILURE() << "the stream ended: " << e.displayText();
        break;
      }
      const int opcode = flags & Poco::Net::WebSocket::FRAME_OP_BITMASK;
      if (opcode == Poco::Net::WebSocket::FRAME_OP_CLOSE || n <= 0) break;
      if (opcode != Poco::Net::WebSocket::FRAME_OP_TEXT) continue;
      Poco::JSON::Object::Ptr frame =
          Poco::JSON::Parser()
              .parse(std::string(buffer.begin(), static_cast<std::size_t>(n)))
              .extract<Poco::JSON::Object::Ptr>();
      Poco::JSON::Array::Ptr events = frame->getArray("events");
      for (unsigned i = 0; i < events->size(); ++i) {
        Poco::JSON::Object::Ptr event = events->getObject(i);
        events_.emplace_back(event->getValue<std::int64_t>("seq"),
                             event->getValue<std::string>("id"));
      }
    }
    return events_;
  }

  void Close() { socket_->shutdown(); }

 private:
  bool Received(const std::string& id) const {
    return std::any_of(events_.begin(), events_.end(),
                       [&](const auto& e) { return e.second == id; });
  }

  Poco::Net::HTTPClientSession session_;
  std::unique_ptr<Poco::Net::WebSocket> socket_;
  std::vector<std::pair<std::int64_t, std::string>> events_;
};

std::vector<std::string> Sorted(std::vector<std::string> users) {
  std::sort(users.begin(), users.end());
  return users;
}

class ClusterDeliveryTest : public ::testing::TestWithParam<Database::Engine> {
 protected:
  void SetUp() override {
    Result<strongroom::testing::TestDatabase> where =
        strongroom::testing::TestDatabase::New(GetParam(), dir_ / "core.db");
    ASSERT_TRUE(where.ok()) << where.error().ToString();
    where_ = std::move(where).value();
  }

  // A node on the test's database; `poll`: how soon it hears of the other node's commits.
  std::unique_ptr<Node> StartNode(const std::string& name, milliseconds poll = milliseconds(20)) {
    return std::make_unique<Node>(
        [&] { return where_.Open(CoreService::Migrations(), CoreService::PostgresMigrations()); },
        dir_ / ("files-" + name), poll);
  }

  // A conversation of `creator` and `others`, made on `node`, and its key.
  std::pair<std::string, std::string> Create(Node& node, const Caller& creator,
                                             const std::vector<std::string>& others) {
    NewConversation request;
    request.kms_resource_uri = std::string(kKms) + "/resources/" + internal::NewUuid();
    request.key_uri = KeyUri();
    request.participants = others;
    auto created = node.service().CreateConversation(creator, request);
    EXPECT_TRUE(created.ok()) << created.error().ToString();
    return {created.ok() ? created->id : "", request.key_uri};
  }

  Result<Activity> Post(Node& node, const Caller& author, const std::string& id,
                        const std::string& key, const std::string& text) {
    NewPost post;
    post.content = Jwe(key, text);
    return node.service().PostActivity(author, id, post);
  }

  // The id of a post that must be accepted.
  std::pair<std::int64_t, std::string> Posted(Node& node, const Caller& author,
                                              const std::string& id, const std::string& key,
                                              const std::string& text) {
    Result<Activity> posted = Post(node, author, id, key, text);
    EXPECT_TRUE(posted.ok()) << posted.error().ToString();
    return posted.ok() ? std::make_pair(posted->seq, posted->id)
                       : std::make_pair(std::int64_t{0}, std::string());
  }

  // The first activity of a conversation (its creation).
  std::pair<std::int64_t, std::string> First(Node& node, const Caller& reader,
                                             const std::string& id) {
    HistoryQuery query;
    query.after = 0;
    query.limit = 1;
    auto page = node.service().History(reader, id, query);
    EXPECT_TRUE(page.ok() && !page->items.empty());
    if (!page.ok() || page->items.empty()) return {0, ""};
    return {page->items[0].seq, page->items[0].id};
  }

  // A realtime client of `user` on `node` from the start (cursor 0), once the node's hub has
  // registered it: from then on everything reaches it live, not by the replay.
  static std::unique_ptr<Subscriber> Listen(Node& node, const Caller& user) {
    const std::size_t before = node.hub().connections();
    auto subscriber = std::make_unique<Subscriber>(node.port(), user.user_id, 0);
    EXPECT_TRUE(WaitUntil([&] { return node.hub().connections() > before; }));
    return subscriber;
  }

  // What `node`'s listener heard once it heard the last of `events` (seq, id), which must be
  // every one of them, once, in order, and nothing else.
  static std::vector<Heard> HeardOnceInOrder(
      Node& node, const std::vector<std::pair<std::int64_t, std::string>>& events) {
    EXPECT_TRUE(WaitUntil([&] { return node.HeardSeq(events.back().first); }));
    std::vector<Heard> heard = node.heard();
    std::vector<std::pair<std::int64_t, std::string>> seen;
    for (const Heard& h : heard) seen.emplace_back(h.seq, h.id);
    EXPECT_EQ(seen, events);
    return heard;
  }

  strongroom::testing::TestDir dir_;
  strongroom::testing::TestDatabase where_;
};

INSTANTIATE_TEST_SUITE_P(Engines, ClusterDeliveryTest, strongroom::testing::kBothEngines,
                         strongroom::testing::EngineName);

TEST_P(ClusterDeliveryTest, APostOnOneNodeReachesTheOtherNodesSubscriberOnceAndInOrder) {
  auto a = StartNode("a");
  auto b = StartNode("b");
  // bob listens on node B from the start: everything reaches him live, through B's follower.
  auto bob_on_b = Listen(*b, kBob);
  auto alice_on_a = Listen(*a, kAlice);

  std::vector<std::pair<std::int64_t, std::string>> done;  // in the order acknowledged
  const auto [id, key] = Create(*a, kAlice, {kBob.user_id});
  done.push_back(First(*a, kAlice, id));
  // Node B hears of node A's commit with nothing committed on B: by its poll.
  ASSERT_TRUE(WaitUntil([&] { return b->HeardSeq(done.back().first); }));
  for (int round = 0; round < 5; ++round) {
    done.push_back(Posted(*a, kAlice, id, key, "from a " + std::to_string(round)));
    done.push_back(Posted(*b, kBob, id, key, "from b " + std::to_string(round)));
    done.push_back(Posted(*b, kAlice, id, key, "alice on b " + std::to_string(round)));
    done.push_back(Posted(*a, kBob, id, key, "bob on a " + std::to_string(round)));
  }
  for (std::size_t i = 1; i < done.size(); ++i) ASSERT_EQ(done[i].first, done[i - 1].first + 1);

  // Each subscriber, on either node, gets every activity once, in seq order.
  EXPECT_EQ(bob_on_b->Until(done.back().second), done);
  EXPECT_EQ(alice_on_a->Until(done.back().second), done);

  // Each node's listener heard every activity once, in seq order, whichever node committed it,
  // with the recipients and organization the committing node computed.
  for (Node* node : {a.get(), b.get()}) {
    for (const Heard& heard : HeardOnceInOrder(*node, done)) {
      EXPECT_EQ(heard.recipients, Sorted({kAlice.user_id, kBob.user_id}));
      EXPECT_EQ(heard.conversation_org, "acme");
    }
  }
}

TEST_P(ClusterDeliveryTest, MembershipChangesOnOneNodeReachTheOtherWithTheirRecipients) {
  auto a = StartNode("a");
  auto b = StartNode("b");
  auto bob_on_b = Listen(*b, kBob);
  auto carol_on_b = Listen(*b, kCarol);

  const auto [id, key] = Create(*a, kAlice, {kBob.user_id});
  const auto created = First(*a, kAlice, id);
  const auto before = Posted(*a, kAlice, id, key, "before carol");
  auto added = a->service().AddParticipants(kAlice, id, {kCarol.user_id});
  ASSERT_TRUE(added.ok()) << added.error().ToString();
  const auto with_carol = Posted(*a, kAlice, id, key, "with carol");
  auto removed = a->service().RemoveParticipant(kAlice, id, kBob.user_id);
  ASSERT_TRUE(removed.ok()) << removed.error().ToString();
  const auto after = Posted(*a, kAlice, id, key, "without bob");

  // bob gets his removal and nothing after it; carol what came from her addition on.
  const std::vector<std::pair<std::int64_t, std::string>> bobs = {
      created, before, {added->seq, added->id}, with_carol, {removed->seq, removed->id}};
  const std::vector<std::pair<std::int64_t, std::string>> carols = {
      {added->seq, added->id}, with_carol, {removed->seq, removed->id}, after};
  EXPECT_EQ(carol_on_b->Until(after.second), carols);
  EXPECT_EQ(bob_on_b->Until(removed->id), bobs);

  // As node A's writer computed them when it committed: the participants after each activity
  // and the user it removed.
  ASSERT_TRUE(WaitUntil([&] { return b->HeardSeq(after.first); }));
  std::map<std::int64_t, std::vector<std::string>> recipients;
  for (const Heard& h : b->heard()) recipients[h.seq] = h.recipients;
  EXPECT_EQ(recipients[before.first], Sorted({kAlice.user_id, kBob.user_id}));
  EXPECT_EQ(recipients[added->seq], Sorted({kAlice.user_id, kBob.user_id, kCarol.user_id}));
  EXPECT_EQ(recipients[removed->seq], Sorted({kAlice.user_id, kBob.user_id, kCarol.user_id}));
  EXPECT_EQ(recipients[after.first], Sorted({kAlice.user_id, kCarol.user_id}));
}

TEST_P(ClusterDeliveryTest, AResumeOnTheOtherNodeMissesNothingAndRepeatsNothing) {
  auto a = StartNode("a");
  auto b = StartNode("b");
  const auto [id, key] = Create(*a, kAlice, {kBob.user_id});
  std::vector<std::pair<std::int64_t, std::string>> done = {First(*a, kAlice, id)};
  for (int i = 0; i < 10; ++i) {
    done.push_back(Posted(i % 2 == 0 ? *a : *b, kAlice, id, key, "first " + std::to_string(i)));
  }
  // bob reads the first part on node A, then his connection ends.
  std::int64_t cursor = 0;
  {
    Subscriber bob_on_a(a->port(), kBob.user_id, 0);
    const auto received = bob_on_a.Until(done[5].second);
    ASSERT_GE(received.size(), 6u);
    EXPECT_TRUE(std::equal(received.begin(), received.end(), done.begin()));
    cursor = received.back().first;
    bob_on_a.Close();
  }
  std::size_t seen = 0;
  while (seen < done.size() && done[seen].first <= cursor) ++seen;
  for (int i = 0; i < 10; ++i) {
    done.push_back(Posted(i % 2 == 0 ? *b : *a, kAlice, id, key, "missed " + std::to_string(i)));
  }
  // He resumes on node B while both nodes go on posting: the replay from the store and the live
  // queue overlap, and what he gets is everything after his cursor, once, in order.
  std::thread poster([&] {
    for (int i = 0; i < 40; ++i) {
      done.push_back(Posted(i % 2 == 0 ? *a : *b, kAlice, id, key, "live " + std::to_string(i)));
    }
  });
  Subscriber bob_on_b(b->port(), kBob.user_id, cursor);
  poster.join();
  std::sort(done.begin(), done.end());
  const auto last = Posted(*a, kAlice, id, key, "last");
  done.push_back(last);
  const std::vector<std::pair<std::int64_t, std::string>> missed(done.begin() + seen, done.end());
  EXPECT_EQ(bob_on_b.Until(last.second), missed);
}

TEST_P(ClusterDeliveryTest, ConcurrentPostsOnBothNodesAreNumberedWithoutGapsAndDeliveredInOrder) {
  auto a = StartNode("a");
  auto b = StartNode("b");
  auto bob_on_a = Listen(*a, kBob);
  auto bob_on_b = Listen(*b, kBob);
  const auto [one, one_key] = Create(*a, kAlice, {kBob.user_id});
  const auto [two, two_key] = Create(*b, kBob, {kAlice.user_id});

  // Four posters, two on each node, each in both conversations.
  constexpr int kPerPoster = 40;
  std::mutex mutex;
  std::vector<std::pair<std::int64_t, std::string>> posted;
  std::vector<std::thread> posters;
  for (int p = 0; p < 4; ++p) {
    posters.emplace_back([&, p] {
      Node& node = p % 2 == 0 ? *a : *b;
      for (int i = 0; i < kPerPoster; ++i) {
        const bool first = (i + p) % 2 == 0;
        auto result =
            Post(node, p < 2 ? kAlice : kBob, first ? one : two, first ? one_key : two_key,
                 "p" + std::to_string(p) + " " + std::to_string(i));
        std::lock_guard lock(mutex);
        EXPECT_TRUE(result.ok()) << result.error().ToString();
        if (result.ok()) posted.emplace_back(result->seq, result->id);
      }
    });
  }
  for (std::thread& t : posters) t.join();
  posted.push_back(First(*a, kAlice, one));
  posted.push_back(First(*b, kBob, two));
  std::sort(posted.begin(), posted.end());

  // Every seq from 1 to the last once: no gap, no number given twice.
  ASSERT_EQ(posted.size(), 4u * kPerPoster + 2);
  for (std::size_t i = 0; i < posted.size(); ++i) {
    EXPECT_EQ(posted[i].first, static_cast<std::int64_t>(i) + 1);
  }
  // Each conversation's history holds its activities in seq order, none missing, whichever node
  // read it.
  std::set<std::string> in_histories;
  for (const std::string& id : {one, two}) {
    for (Node* node : {a.get(), b.get()}) {
      HistoryQuery query;
      query.after = 0;
      query.limit = kMaxPageSize;
      auto page = node->service().History(kAlice, id, query);
      ASSERT_TRUE(page.ok()) << page.error().ToString();
      for (std::size_t i = 1; i < page->items.size(); ++i) {
        EXPECT_LT(page->items[i - 1].seq, page->items[i].seq);
      }
      for (const Activity& activity : page->items) in_histories.insert(activity.id);
    }
  }
  EXPECT_EQ(in_histories.size(), posted.size());

  // A subscriber on each node gets all of it once, in seq order, and so does each listener.
  EXPECT_EQ(bob_on_a->Until(posted.back().second), posted);
  EXPECT_EQ(bob_on_b->Until(posted.back().second), posted);
  for (Node* node : {a.get(), b.get()}) HeardOnceInOrder(*node, posted);
}

TEST_P(ClusterDeliveryTest, AMembershipChangeOnOneNodeHoldsAtOnceOnTheOther) {
  // The nodes poll seldom: what holds at once does not wait for the follower.
  auto a = StartNode("a", kMaxClusterPoll);
  auto b = StartNode("b", kMaxClusterPoll);
  const auto [id, key] = Create(*a, kAlice, {kBob.user_id});
  // Node B has the conversation's state cached from here on.
  Posted(*b, kBob, id, key, "bob on b");
  Posted(*b, kAlice, id, key, "alice on b");

  // Added on A: carol posts on B at once.
  ASSERT_TRUE(a->service().AddParticipants(kAlice, id, {kCarol.user_id}).ok());
  auto carols = Post(*b, kCarol, id, key, "carol on b");
  EXPECT_TRUE(carols.ok()) << carols.error().ToString();
  // Removed on A: bob can no longer post on B.
  ASSERT_TRUE(a->service().RemoveParticipant(kAlice, id, kBob.user_id).ok());
  auto bobs = Post(*b, kBob, id, key, "bob after his removal");
  ASSERT_FALSE(bobs.ok());
  EXPECT_EQ(bobs.error().code(), ErrorCode::kNotFound);
  // A key rotated on A: content under the old key is refused on B.
  const std::string new_key = KeyUri();
  ASSERT_TRUE(a->service().RotateKey(kAlice, id, new_key).ok());
  auto stale = Post(*b, kAlice, id, key, "under the old key");
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().reason(), ErrorReason::kKeyRotationRequired) << stale.error().ToString();
  EXPECT_TRUE(Post(*b, kAlice, id, new_key, "under the new key").ok());
}

TEST(ClusterDeliveryConfigTest, APollIntervalOutsideItsBoundsIsRefused) {
  strongroom::testing::TestDir dir;
  auto db = Database::OpenSqlite((dir / "core.db").string(), CoreService::Migrations());
  ASSERT_TRUE(db.ok());
  for (milliseconds poll :
       {kMinClusterPoll - milliseconds(1), kMaxClusterPoll + milliseconds(1), milliseconds(-5)}) {
    CoreServiceConfig config;
    config.files_dir = (dir / "files").string();
    config.cluster_poll = poll;
    auto service = CoreService::New(config, **db);
    ASSERT_FALSE(service.ok()) << poll.count();
    EXPECT_EQ(service.error().code(), ErrorCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace strongroom::core
