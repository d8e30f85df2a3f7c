#include "postgres_cluster.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <vector>

extern char** environ;

namespace strongroom::testing {
namespace {

// The cluster's superuser (initdb -U); the socket is reachable by its directory's owner alone.
constexpr char kSuperuser[] = "strongroom";

// STRONGROOM_POSTGRES_BIN names another directory of PostgreSQL's programs (the support's own test
// points it at none).
std::string Bin(const char* program) {
  const char* dir = std::getenv("STRONGROOM_POSTGRES_BIN");
  return std::string(dir != nullptr && *dir != '\0' ? dir : kPostgresBin) + "/" + program;
}

bool IsRoot() { return ::geteuid() == 0; }

// The command line as the cluster's owner: as root, through runuser to the postgres user.
std::vector<std::string> AsOwner(std::vector<std::string> argv) {
  if (!IsRoot()) return argv;
  std::vector<std::string> wrapped = {"/usr/sbin/runuser", "-u", "postgres", "--"};
  wrapped.insert(wrapped.end(), argv.begin(), argv.end());
  return wrapped;
}

std::string Tail(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  std::string all = text.str();
  return all.size() > 2000 ? all.substr(all.size() - 2000) : all;
}

// Runs `argv` in `cwd` with its output in `log` (no descriptor of ours but those), and waits.
Status Run(const std::vector<std::string>& argv, const std::filesystem::path& cwd,
           const std::filesystem::path& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addchdir_np(&actions, cwd.c_str());
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    return Error(ErrorCode::kUnavailable, "cannot run " + argv[0] + ": " + std::strerror(rc));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string command;
    for (const std::string& arg : argv) command += (command.empty() ? "" : " ") + arg;
    return Error(ErrorCode::kUnavailable, command + " failed:\n" + Tail(log));
  }
  return OkStatus();
}

// The file StartShared writes: the connection string, then the cluster's directory.
struct SharedFile {
  std::string conninfo;
  std::filesystem::path dir;
};

Result<SharedFile> ReadSharedFile(const std::string& file) {
  std::ifstream in(file);
  SharedFile shared;
  std::string dir;
  if (!std::getline(in, shared.conninfo) || !std::getline(in, dir) || shared.conninfo.empty()) {
    return Error(ErrorCode::kUnavailable,
                 "no shared test cluster: " + file +
                     " is missing or incomplete (did the ctest fixture that starts it fail?)");
  }
  shared.dir = dir;
  return shared;
}

// Runs `sql` on the cluster's postgres database.
Status Admin(const std::string& base_conninfo, const std::string& sql) {
  std::unique_ptr<PGconn, decltype(&PQfinish)> admin(
      PQconnectdb((base_conninfo + " dbname=postgres").c_str()), &PQfinish);
  if (PQstatus(admin.get()) != CONNECTION_OK) {
    return Error(ErrorCode::kUnavailable,
                 std::string("cannot reach the test cluster: ") + PQerrorMessage(admin.get()));
  }
  std::unique_ptr<PGresult, decltype(&PQclear)> done(PQexec(admin.get(), sql.c_str()), &PQclear);
  if (PQresultStatus(done.get()) != PGRES_COMMAND_OK) {
    return Error(ErrorCode::kUnavailable,
                 sql + " failed: " + std::string(PQerrorMessage(admin.get())));
  }
  return OkStatus();
}

class Cluster {
 public:
  Result<std::string> NewDatabase() {
    std::lock_guard lock(mutex_);
    if (!started_) {
      const char* shared = std::getenv("STRONGROOM_TEST_POSTGRES");
      if (shared != nullptr && *shared != '\0') {
        started_ = Attach(shared);
      } else {
        started_ = Start();
        if (!started_->ok()) Stop();
      }
    }
    if (!started_->ok()) return started_->error();
    // On a shared cluster, other processes make databases too.
    const std::string name =
        "test_" + (shared_ ? std::to_string(::getpid()) + "_" : "") + std::to_string(++databases_);
    SR_RETURN_IF_ERROR(Admin(base_conninfo_, "CREATE DATABASE " + name));
    return base_conninfo_ + " dbname=" + name;
  }

  // A cluster that outlives this process (PostgresCluster::StartShared).
  Status StartShared(const std::string& file, pid_t owner) {
    std::lock_guard lock(mutex_);
    std::filesystem::remove(file);
    owner_ = owner;
    Status started = Start();
    if (!started.ok()) {
      Stop();
      return started;
    }
    {
      std::ofstream out(file + ".new");
      out << base_conninfo_ << "\n" << dir_.string() << "\n";
      if (!out.flush()) {
        Stop();
        return Error(ErrorCode::kUnavailable, "cannot write " + file);
      }
    }
    std::filesystem::rename(file + ".new", file);
    // Leave the watcher running: it stops the cluster when the owner is gone.
    ::close(watcher_pipe_);
    watcher_ = -1;
    dir_.clear();
    return OkStatus();
  }

  // Closes the watcher's pipe and waits for it: the cluster is stopped and removed when it ends.
  void Stop() {
    if (watcher_ > 0) {
      ::close(watcher_pipe_);
      int status = 0;
      while (::waitpid(watcher_, &status, 0) < 0 && errno == EINTR) {
      }
      watcher_ = -1;
    } else if (!dir_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(dir_, ignored);
    }
    dir_.clear();
  }

  void Shutdown() {
    std::lock_guard lock(mutex_);
    if (shared_) {
      // The others' tests go on; this program's databases go (a failed drop only costs space).
      for (int i = 1; i <= databases_; ++i) {
        (void)Admin(base_conninfo_, "DROP DATABASE IF EXISTS test_" + std::to_string(::getpid()) +
                                        "_" + std::to_string(i) + " WITH (FORCE)");
      }
      databases_ = 0;
      return;
    }
    Stop();
  }

  // Stops the server (fast: sessions are ended) and keeps its data; Resume starts it again.
  Status Pause() {
    std::lock_guard lock(mutex_);
    if (shared_) return Error(ErrorCode::kFailedPrecondition, "the test cluster is shared");
    if (!started_ || !started_->ok()) {
      return Error(ErrorCode::kFailedPrecondition, "the test cluster is not running");
    }
    return Run(AsOwner({Bin("pg_ctl"), "stop", "-m", "fast", "-w", "-D", (dir_ / "data").string()}),
               dir_, dir_ / "commands.log");
  }

  Status Resume() {
    std::lock_guard lock(mutex_);
    if (shared_) return Error(ErrorCode::kFailedPrecondition, "the test cluster is shared");
    if (!started_ || !started_->ok()) {
      return Error(ErrorCode::kFailedPrecondition, "the test cluster was never started");
    }
    return StartServer();
  }

 private:
  Status Attach(const std::string& file) {
    SR_ASSIGN_OR_RETURN(SharedFile shared, ReadSharedFile(file));
    base_conninfo_ = shared.conninfo;
    shared_ = true;
    return OkStatus();
  }

  Status Start() {
    if (::access(Bin("initdb").c_str(), X_OK) != 0) {
      return Error(ErrorCode::kFailedPrecondition,
                   "PostgreSQL 15 is not installed (" + Bin("initdb") +
                       " is missing): install Debian's postgresql package (scripts/setup-debian)");
    }
    std::string pattern = (std::filesystem::temp_directory_path() / "sr-pg-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      return Error(ErrorCode::kUnavailable, std::string("mkdtemp: ") + std::strerror(errno));
    }
    dir_ = pattern;
    if (IsRoot()) {
      const passwd* postgres = ::getpwnam("postgres");
      if (postgres == nullptr) {
        return Error(ErrorCode::kFailedPrecondition,
                     "running as root, the test cluster runs as the postgres user, and there is "
                     "none: install Debian's postgresql package (scripts/setup-debian)");
      }
      if (::chown(dir_.c_str(), postgres->pw_uid, postgres->pw_gid) != 0) {
        return Error(ErrorCode::kUnavailable, std::string("chown: ") + std::strerror(errno));
      }
    }
    SR_RETURN_IF_ERROR(StartWatcher());
    const std::filesystem::path data = dir_ / "data", log = dir_ / "commands.log";
    // --no-sync: initdb's own files need not reach the disk; the server's settings are untouched.
    SR_RETURN_IF_ERROR(Run(AsOwner({Bin("initdb"), "-D", data.string(), "-U", kSuperuser,
                                    "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"}),
                           dir_, log));
    SR_RETURN_IF_ERROR(StartServer());
    base_conninfo_ = "host=" + dir_.string() + " port=5432 user=" + kSuperuser;
    return OkStatus();
  }

  Status StartServer() {
    const std::string options = "-c listen_addresses='' -c unix_socket_directories='" +
                                dir_.string() + "' -c port=5432 -c max_connections=" +
                                (owner_ > 0 ? "200" : "60");  // shared: ctest -j tests at once
    return Run(AsOwner({Bin("pg_ctl"), "start", "-w", "-t", "60", "-D", (dir_ / "data").string(),
                        "-l", (dir_ / "server.log").string(), "-o", options}),
               dir_, dir_ / "commands.log");
  }

  // A process of its own session (so that a signal to the test's process group spares it) that
  // waits for the end of a pipe held by this process alone, then stops the cluster and removes its
  // directory.
  Status StartWatcher() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      return Error(ErrorCode::kUnavailable, std::string("pipe: ") + std::strerror(errno));
    }
    std::string stop;
    for (const std::string& arg : AsOwner({Bin("pg_ctl"), "stop", "-m", "fast", "-w", "-D"})) {
      stop += arg + " ";
    }
    // A shared cluster's watcher waits for its owner instead (or for StopShared to remove it).
    const std::string wait = owner_ > 0 ? "while kill -0 " + std::to_string(owner_) +
                                              " 2>/dev/null && [ -d \"$1\" ]; do sleep 1; done; "
                                        : "cat >/dev/null; ";
    const std::string script = wait + stop + "\"$1/data\"; rm -rf \"$1\"";
    const std::string dir = dir_.string();
    const pid_t pid = ::fork();
    if (pid < 0) {
      ::close(fds[0]);
      ::close(fds[1]);
      return Error(ErrorCode::kUnavailable, std::string("fork: ") + std::strerror(errno));
    }
    if (pid == 0) {
      // Only async-signal-safe calls until exec.
      ::setsid();
      ::dup2(fds[0], 0);
      const int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
      ::close_range(3, ~0U, 0);
      ::execl("/bin/sh", "sh", "-c", script.c_str(), "sh", dir.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fds[0]);
    watcher_ = pid;
    watcher_pipe_ = fds[1];
    return OkStatus();
  }

  std::mutex mutex_;
  std::optional<Status> started_;
  std::filesystem::path dir_;
  std::string base_conninfo_;
  int databases_ = 0;
  bool shared_ = false;  // another process's cluster (STRONGROOM_TEST_POSTGRES)
  pid_t owner_ = -1;     // StartShared: the process whose end stops the cluster
  pid_t watcher_ = -1;
  int watcher_pipe_ = -1;
};

Cluster& TheCluster() {
  static Cluster* cluster = new Cluster();  // never destroyed: Shutdown ends it
  return *cluster;
}

class ClusterEnvironment : public ::testing::Environment {
 public:
  void TearDown() override { PostgresCluster::Shutdown(); }
};

// Registered before main() runs; gtest owns it.
[[maybe_unused]] ::testing::Environment* const kEnvironment =
    ::testing::AddGlobalTestEnvironment(new ClusterEnvironment);

}  // namespace

Result<std::string> PostgresCluster::NewDatabase() { return TheCluster().NewDatabase(); }

void PostgresCluster::Shutdown() { TheCluster().Shutdown(); }

Status PostgresCluster::Pause() { return TheCluster().Pause(); }

Status PostgresCluster::Resume() { return TheCluster().Resume(); }

Status PostgresCluster::StartShared(const std::string& file, int owner) {
  return TheCluster().StartShared(file, owner);
}

Status PostgresCluster::StopShared(const std::string& file) {
  SR_ASSIGN_OR_RETURN(SharedFile shared, ReadSharedFile(file));
  std::filesystem::remove(file);
  const Status stopped = Run(
      AsOwner({Bin("pg_ctl"), "stop", "-m", "fast", "-w", "-D", (shared.dir / "data").string()}),
      shared.dir, shared.dir / "commands.log");
  std::error_code ignored;
  std::filesystem::remove_all(shared.dir, ignored);
  return stopped;
}

}  // namespace strongroom::testing
