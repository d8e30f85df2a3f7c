// Send-to-receive latency between two SDK clients (issue 5, Performance; bar: p50 < 10 ms):
// alice and bob, each with a CoreClient, a KmsContext over the core's relay and Conversations,
// against a running cored with kmsd attached (bench/run-sdk-latency.sh sets them up on loopback).
//
// alice creates a conversation with bob; keys are warmed (a few messages sent and decrypted by bob
// before measuring); then bob reads the realtime stream (EventStream) on a thread of his own while
// alice sends --count messages, either one at a time (the next once bob has the previous: closed
// loop) or at --rate messages/s (open loop). A message's latency is from the moment alice calls
// Conversations::Send to the moment bob holds its decrypted plaintext (Conversations::Decrypt of
// the streamed activity). Every message must arrive, decrypt to exactly what was sent, and come in
// the order sent; any miss makes the exit status 1.
//
//   sdk_latency --core-url URL --kms-url URL --ca PEM --cluster kms://host --kms-roots PEM
//       --alice-core FILE --alice-kms FILE --bob-core FILE --bob-kms FILE
//       [--alice ID] [--bob ID] [--count 2000] [--rate 0] [--bytes 200] [--warmup 20]
#include <Poco/Net/SSLManager.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "strongroom/client/conversation.h"
#include "strongroom/client/core_client.h"
#include "strongroom/client/https_transport.h"
#include "strongroom/client/kms_context.h"

namespace strongroom::client {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string core_url, kms_url, ca, cluster, kms_roots;
  std::string alice_core, alice_kms, bob_core, bob_kms;
  std::string alice = "alice@acme.test", bob = "bob@acme.test";
  std::size_t count = 2000;
  double rate = 0;  // messages/s; 0: one at a time
  std::size_t bytes = 200;
  std::size_t warmup = 20;
};

std::string ReadToken(const std::string& path) {
  std::ifstream in(path);
  std::string token;
  std::getline(in, token);
  return token;
}

struct User {
  std::unique_ptr<CoreClient> core;
  std::unique_ptr<KmsContext> kms;
  std::unique_ptr<Conversations> sdk;
};

Result<User> MakeUser(const Options& o, const std::string& id, const std::string& core_token_file,
                      const std::string& kms_token_file, const std::string& kms_info) {
  User user;
  const std::string core_token = ReadToken(core_token_file);
  SR_ASSIGN_OR_RETURN(user.core, CoreClient::New({o.core_url, o.ca, StaticToken(core_token)}));
  KmsContextOptions options;
  options.client_id = "sdk-latency-" + id.substr(0, id.find('@'));
  options.kms_token = StaticToken(ReadToken(kms_token_file));
  options.trust = {o.cluster, o.kms_roots};
  SR_ASSIGN_OR_RETURN(
      user.kms, KmsContext::OverRelay(options, kms_info,
                                      {o.core_url, o.ca, o.cluster, StaticToken(core_token)}));
  ConversationsOptions sdk_options;
  sdk_options.user_id = id;
  sdk_options.pool.target = 2;
  SR_ASSIGN_OR_RETURN(user.sdk, Conversations::New(*user.core, *user.kms, sdk_options));
  return user;
}

// The text of message i: its number and a filler up to `bytes`.
std::string Text(const std::string& prefix, std::size_t i, std::size_t bytes) {
  std::string text = prefix + std::to_string(i) + ":";
  while (text.size() < bytes) text.push_back(static_cast<char>('a' + (text.size() + i) % 26));
  return text;
}

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto index = static_cast<std::size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(index, sorted.size() - 1)];
}

bool ParseArgs(int argc, char** argv, Options& o) {
  std::map<std::string, std::string*> text = {{"--core-url", &o.core_url},
                                              {"--kms-url", &o.kms_url},
                                              {"--ca", &o.ca},
                                              {"--cluster", &o.cluster},
                                              {"--kms-roots", &o.kms_roots},
                                              {"--alice-core", &o.alice_core},
                                              {"--alice-kms", &o.alice_kms},
                                              {"--bob-core", &o.bob_core},
                                              {"--bob-kms", &o.bob_kms},
                                              {"--alice", &o.alice},
                                              {"--bob", &o.bob}};
  std::map<std::string, std::size_t*> numbers = {
      {"--count", &o.count}, {"--bytes", &o.bytes}, {"--warmup", &o.warmup}};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (auto t = text.find(flag); t != text.end()) {
      *t->second = argv[i + 1];
    } else if (auto n = numbers.find(flag); n != numbers.end()) {
      *n->second = std::strtoull(argv[i + 1], nullptr, 10);
    } else if (flag == "--rate") {
      o.rate = std::strtod(argv[i + 1], nullptr);
    } else {
      std::cerr << "sdk_latency: unknown option " << flag << "\n";
      return false;
    }
  }
  if (argc % 2 == 0 || o.core_url.empty() || o.kms_url.empty() || o.ca.empty() ||
      o.cluster.empty() || o.kms_roots.empty() || o.alice_core.empty() || o.alice_kms.empty() ||
      o.bob_core.empty() || o.bob_kms.empty() || o.count == 0 || o.bytes < 16 ||
      o.bytes > kMaxTextBytes) {
    std::cerr << "sdk_latency: see the comment at the top of bench/sdk_latency.cc for usage\n";
    return false;
  }
  return true;
}

int Run(const Options& o) {
  auto https = HttpsTransport::New({o.kms_url, o.ca});
  if (!https.ok()) return std::cerr << https.error().ToString() << "\n", 1;
  auto kms_info = (*https)->GetInfo();
  if (!kms_info.ok()) return std::cerr << kms_info.error().ToString() << "\n", 1;
  auto alice = MakeUser(o, o.alice, o.alice_core, o.alice_kms, *kms_info);
  if (!alice.ok()) return std::cerr << "alice: " << alice.error().ToString() << "\n", 1;
  auto bob = MakeUser(o, o.bob, o.bob_core, o.bob_kms, *kms_info);
  if (!bob.ok()) return std::cerr << "bob: " << bob.error().ToString() << "\n", 1;

  auto created = alice->sdk->Create("latency", {o.bob});
  if (!created.ok()) return std::cerr << "create: " << created.error().ToString() << "\n", 1;
  const std::string conversation = created->id;
  auto stream = bob->core->OpenEvents(created->last_seq);
  if (!stream.ok()) return std::cerr << "events: " << stream.error().ToString() << "\n", 1;

  // Bob's side: every post of the conversation, decrypted, in the order it comes.
  std::vector<std::atomic<std::int64_t>> sent_ns(o.count);
  std::vector<double> latency_ms;
  latency_ms.reserve(o.count);
  std::atomic<std::size_t> received{0};
  std::atomic<std::size_t> warm_received{0};
  std::atomic<bool> stop{false};
  std::string failure;  // written by the receiver before `failed`, read after the join
  std::atomic<bool> failed{false};
  std::thread receiver([&] {
    std::size_t next_warm = 0, next = 0;
    while (!stop.load() && next < o.count) {
      auto batch = (*stream)->Next(std::chrono::milliseconds(200));
      if (!batch.ok()) {
        failure = "events: " + batch.error().ToString();
        failed = true;
        return;
      }
      for (const Activity& activity : *batch) {
        if (activity.conversation_id != conversation || activity.verb != "post") continue;
        Message message = bob->sdk->Decrypt(activity);
        const auto now = Clock::now().time_since_epoch().count();
        if (!message.text) {
          failure = "a message did not decrypt: " +
                    (message.error ? message.error->ToString() : std::string("no text"));
          failed = true;
          return;
        }
        if (next_warm < o.warmup) {
          if (*message.text != Text("w", next_warm, o.bytes)) {
            failure = "warm-up message " + std::to_string(next_warm) + " wrong or out of order";
            failed = true;
            return;
          }
          warm_received = ++next_warm;
          continue;
        }
        if (next >= o.count || *message.text != Text("m", next, o.bytes)) {
          failure = "message " + std::to_string(next) + " wrong or out of order";
          failed = true;
          return;
        }
        latency_ms.push_back(static_cast<double>(now - sent_ns[next].load()) / 1e6);
        received = ++next;
      }
    }
  });

  // Warm-up: the conversation's key in both caches, the connections open.
  for (std::size_t i = 0; i < o.warmup && !failed.load(); ++i) {
    auto sent = alice->sdk->Send(conversation, Text("w", i, o.bytes));
    if (!sent.ok()) return std::cerr << "send: " << sent.error().ToString() << "\n", 1;
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (warm_received.load() <= i && Clock::now() < deadline && !failed.load()) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  std::vector<double> send_ms;
  send_ms.reserve(o.count);
  const auto started = Clock::now();
  int status = 0;
  for (std::size_t i = 0; i < o.count && !failed.load(); ++i) {
    if (o.rate > 0) {
      const auto due =
          started + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(static_cast<double>(i) / o.rate));
      std::this_thread::sleep_until(due);
    }
    const auto start = Clock::now();
    sent_ns[i] = start.time_since_epoch().count();
    auto sent = alice->sdk->Send(conversation, Text("m", i, o.bytes));
    if (!sent.ok()) {
      std::cerr << "send " << i << ": " << sent.error().ToString() << "\n";
      status = 1;
      break;
    }
    send_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    if (o.rate <= 0) {  // one at a time: the next once bob has this one
      const auto deadline = Clock::now() + std::chrono::seconds(60);
      while (received.load() <= i && Clock::now() < deadline && !failed.load()) {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (received.load() < send_ms.size() && Clock::now() < deadline && !failed.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const double elapsed_s = std::chrono::duration<double>(Clock::now() - started).count();
  stop = true;
  receiver.join();

  std::sort(latency_ms.begin(), latency_ms.end());
  std::sort(send_ms.begin(), send_ms.end());
  std::printf(
      "mode %s, %zu-byte messages, %zu warm-up; sent %zu, received decrypted in order %zu of "
      "%zu in %.2f s\n",
      o.rate > 0 ? ("open loop at " + std::to_string(static_cast<long>(o.rate)) + " msg/s").c_str()
                 : "one at a time (closed loop)",
      o.bytes, o.warmup, send_ms.size(), latency_ms.size(), o.count, elapsed_s);
  std::printf("send->receive latency ms: p50 %.3f p90 %.3f p99 %.3f max %.3f (n %zu)\n",
              Percentile(latency_ms, 0.5), Percentile(latency_ms, 0.9),
              Percentile(latency_ms, 0.99), latency_ms.empty() ? 0 : latency_ms.back(),
              latency_ms.size());
  std::printf("alice's Send call ms:     p50 %.3f p90 %.3f p99 %.3f max %.3f\n",
              Percentile(send_ms, 0.5), Percentile(send_ms, 0.9), Percentile(send_ms, 0.99),
              send_ms.empty() ? 0 : send_ms.back());
  if (!failure.empty()) {
    std::cerr << "FAILED: " << failure << "\n";
    status = 1;
  }
  if (latency_ms.size() != o.count) {
    std::cerr << "FAILED: " << o.count - latency_ms.size() << " messages not received\n";
    status = 1;
  }
  (*stream)->Close();
  return status;
}

}  // namespace
}  // namespace strongroom::client

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  strongroom::client::Options options;
  if (!strongroom::client::ParseArgs(argc, argv, options)) return 64;
  Poco::Net::initializeSSL();
  const int status = strongroom::client::Run(options);
  Poco::Net::uninitializeSSL();
  return status;
}
