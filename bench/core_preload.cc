// core_preload: fills a core database with one conversation of N activities, in process, through
// CoreService itself (the same checks, the same group commit with a full fsync per batch, the
// same schema) against the database file cored will open afterwards. For load runs that need a
// large history (bench/run-core-load.sh --preload N); run it while no cored has the file open.
//
//   core_preload --database FILE --files-dir DIR --user USER --org ORG [--participant USER ...]
//                [--count 1000000] [--threads 16] [--content-bytes 200]
//                [--conversation-out FILE]
//
// The conversation is created by USER (of organization ORG) with the participants given; every
// activity is a "post" by USER whose content is a fresh compact JWE (dir/A256GCM, 200 bytes of
// plaintext by default) under a random key the core never sees, kid = the conversation's key URL.
// Prints the conversation id, the time taken and the rate.
#include <Poco/UUIDGenerator.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "strongroom/common/database.h"
#include "strongroom/common/error.h"
#include "strongroom/common/jose.h"
#include "strongroom/core/core_service.h"

namespace strongroom::bench {
namespace {

using core::Caller;
using core::CoreService;

const char kUsage[] =
    "usage: core_preload --database FILE --files-dir DIR --user USER --org ORG\n"
    "                    [--participant USER ...] [--count N] [--threads N] [--content-bytes N]\n"
    "                    [--conversation-out FILE]\n";

std::string NewUuid() { return Poco::UUIDGenerator::defaultGenerator().createRandom().toString(); }

struct Options {
  std::string database;
  std::string files_dir;
  std::string user;
  std::string org;
  std::vector<std::string> participants;
  std::uint64_t count = 1000000;
  std::size_t threads = 16;
  std::size_t content_bytes = 200;
  std::string conversation_out;
};

bool ParseNumber(const std::string& text, std::uint64_t min, std::uint64_t max,
                 std::uint64_t* out) {
  char* end = nullptr;
  const unsigned long long value = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || value < min || value > max) return false;
  *out = value;
  return true;
}

int Main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0 || i + 1 >= argc) {
      std::cerr << kUsage;
      return 64;
    }
    const std::string value = argv[++i];
    std::uint64_t number = 0;
    bool ok = true;
    if (arg == "--database") {
      o.database = value;
    } else if (arg == "--files-dir") {
      o.files_dir = value;
    } else if (arg == "--user") {
      o.user = value;
    } else if (arg == "--org") {
      o.org = value;
    } else if (arg == "--participant") {
      o.participants.push_back(value);
    } else if (arg == "--count") {
      ok = ParseNumber(value, 1, 1'000'000'000, &o.count);
    } else if (arg == "--threads") {
      ok = ParseNumber(value, 1, 256, &number);
      o.threads = static_cast<std::size_t>(number);
    } else if (arg == "--content-bytes") {
      ok = ParseNumber(value, 1, 48 * 1024, &number);
      o.content_bytes = static_cast<std::size_t>(number);
    } else if (arg == "--conversation-out") {
      o.conversation_out = value;
    } else {
      ok = false;
    }
    if (!ok) {
      std::cerr << "core_preload: bad " << arg << "\n" << kUsage;
      return 64;
    }
  }
  if (o.database.empty() || o.files_dir.empty() || o.user.empty() || o.org.empty()) {
    std::cerr << kUsage;
    return 64;
  }

  Result<std::unique_ptr<Database>> db =
      Database::OpenSqlite(o.database, CoreService::Migrations());
  if (!db.ok()) {
    std::cerr << "core_preload: " << db.error().ToString() << "\n";
    return 69;
  }
  core::CoreServiceConfig config;
  config.files_dir = o.files_dir;
  Result<std::unique_ptr<CoreService>> service = CoreService::New(config, **db);
  if (!service.ok()) {
    std::cerr << "core_preload: " << service.error().ToString() << "\n";
    return 69;
  }
  const Caller caller{o.user, o.org};
  core::NewConversation create;
  create.kms_resource_uri = "kms://kms.load.test/resources/" + NewUuid();
  create.key_uri = "kms://kms.load.test/keys/" + NewUuid();
  create.participants = o.participants;
  Result<core::Conversation> conversation = (*service)->CreateConversation(caller, create);
  if (!conversation.ok()) {
    std::cerr << "core_preload: create: " << conversation.error().ToString() << "\n";
    return 69;
  }
  const std::string id = conversation->id;
  std::array<std::uint8_t, 32> key{};
  RAND_bytes(key.data(), static_cast<int>(key.size()));

  std::atomic<std::uint64_t> next{0};
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint64_t> done{0};
  const auto started = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < o.threads; ++t) {
    threads.emplace_back([&] {
      std::vector<std::uint8_t> plaintext(o.content_bytes);
      RAND_bytes(plaintext.data(), static_cast<int>(plaintext.size()));
      for (;;) {
        const std::uint64_t n = next.fetch_add(1);
        if (n >= o.count) return;
        for (std::size_t b = 0; b < 8 && b < plaintext.size(); ++b) {
          plaintext[b] = static_cast<std::uint8_t>(n >> (8 * b));
        }
        Result<std::string> jwe = jose::EncryptDir(key, create.key_uri, plaintext);
        core::NewPost post;
        if (jwe.ok()) post.content = std::move(jwe).value();
        Result<core::Activity> posted = (*service)->PostActivity(caller, id, post);
        if (!posted.ok()) {
          if (errors.fetch_add(1) < 5) {
            std::cerr << "core_preload: post: " << posted.error().ToString() << "\n";
          }
          continue;
        }
        const std::uint64_t total = done.fetch_add(1) + 1;
        if (total % 100000 == 0) {
          const double s =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
          std::cerr << "core_preload: " << total << " posted in " << std::fixed
                    << std::setprecision(1) << s << " s\n";
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  OPENSSL_cleanse(key.data(), key.size());
  service->reset();
  db->reset();
  std::cout << std::fixed << std::setprecision(1) << "conversation " << id << ": " << done.load()
            << " activities posted in process by " << o.threads << " threads in " << seconds
            << " s (" << static_cast<double>(done.load()) / seconds << "/s), " << errors.load()
            << " errors\n";
  if (!o.conversation_out.empty()) {
    std::ofstream out(o.conversation_out);
    out << id << "\n";
    if (!out) {
      std::cerr << "core_preload: cannot write " << o.conversation_out << "\n";
      return 1;
    }
  }
  return errors.load() == 0 ? 0 : 3;
}

}  // namespace
}  // namespace strongroom::bench

int main(int argc, char** argv) { return strongroom::bench::Main(argc, argv); }
