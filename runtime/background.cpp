// The detached builder of a progressive start (docs/progressive.md) and its records in the store.
#include "inferenceutils/background.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/json_text.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/process.h"

namespace iu {
namespace {

constexpr char kFailedSuffix[] = ".failed.json";

std::string Rfc3339(std::time_t when) {
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&when));
  return buf;
}

std::string BuildsDir(const Store& store) { return store.root() + "/builds"; }

bool LockBusy(const Store& store, const std::string& key) {
  absl::StatusOr<FileLock> probe = FileLock::TryExclusive(store.LockPath(key));
  return probe.ok() && !probe->held();
}

std::optional<nlohmann::json> ReadJson(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return std::nullopt;
  nlohmann::json json = nlohmann::json::parse(*text, nullptr, false);
  if (!json.is_object()) return std::nullopt;
  return json;
}

BackgroundBuild BuildFromJson(const nlohmann::json& j) {
  BackgroundBuild b;
  b.key = j.value("key", "");
  b.backend = j.value("backend", "");
  b.pid = j.value("pid", 0L);
  b.started = j.value("started", "");
  b.started_unix = j.value("started_unix", int64_t{0});
  b.step = j.value("step", "");
  b.detail = j.value("detail", "");
  b.log = j.value("log", "");
  b.fallback_key = j.value("fallback_key", "");
  return b;
}

// The builder's Progress: the current step (and pip's latest headline, at most every 2 s) in the
// record, notes in the log (the builder's stderr).
class RecordProgress : public Progress {
 public:
  RecordProgress(const Store& store, BackgroundBuild* record) : store_(store), record_(record) {}
  void Step(absl::string_view step) override {
    record_->step = std::string(step);
    record_->detail.clear();
    Write();
  }
  void Detail(absl::string_view detail) override {
    record_->detail = std::string(detail);
    auto now = std::chrono::steady_clock::now();
    if (now - last_ > std::chrono::seconds(2)) Write();
  }
  void Note(absl::string_view message) override {
    std::string line = absl::StrCat("# inferenceutils: ", message, "\n");
    ssize_t ignored = write(STDERR_FILENO, line.data(), line.size());
    (void)ignored;
  }
  void Finish() override {}

  void Write() {
    last_ = std::chrono::steady_clock::now();
    WriteFileAtomic(BackgroundRecordPath(store_, record_->key), DumpJson(record_->ToJson(), 2) + "\n").IgnoreError();
  }

 private:
  const Store& store_;
  BackgroundBuild* record_;
  std::chrono::steady_clock::time_point last_{};
};

// Every descriptor but 0, 1, 2 and `keep` closed: the builder holds nothing of its parent's (the
// parent's build log, a bundle, a terminal) but the lock.
void CloseOtherDescriptors(int keep) {
  std::vector<int> fds;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) {
      int fd = std::atoi(e->d_name);
      if (fd > 2 && fd != keep && fd != dirfd(d)) fds.push_back(fd);
    }
    closedir(d);
  }
  for (int fd : fds) close(fd);
}

// The builder itself (the grandchild of the starting launcher, in its own session). Never returns.
[[noreturn]] void RunBuilder(const Store& store, BuildRequest request, BackgroundBuild record, int lock_fd) {
  prctl(PR_SET_NAME, "iu-build", 0, 0, 0);
  // Below the program that runs meanwhile on the fallback (often CPU inference): the compilers
  // pip starts inherit it. A nicer value than that is kept.
  if (getpriority(PRIO_PROCESS, 0) < 10) setpriority(PRIO_PROCESS, 0, 10);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGQUIT}) signal(sig, SIG_DFL);
  CloseOtherDescriptors(lock_fd);
  int null = open("/dev/null", O_RDWR);
  int log = open(record.log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0644);
  if (null >= 0) {
    dup2(null, STDIN_FILENO);
    dup2(null, STDOUT_FILENO);
  }
  dup2(log >= 0 ? log : null, STDERR_FILENO);
  if (null > 2) close(null);
  if (log > 2) close(log);
  // The lock stays with this process only: pip and the build must not inherit it.
  fcntl(lock_fd, F_SETFD, FD_CLOEXEC);

  record.pid = getpid();
  RecordProgress progress(store, &record);
  progress.Write();
  store.CleanStale(request.key);
  absl::StatusOr<Manifest> manifest = absl::UnknownError("not built");
  absl::StatusOr<std::string> data_dir = store.NewDataDir(request.key);
  if (!data_dir.ok()) {
    manifest = data_dir.status();
  } else {
    manifest = BuildRuntime(store, request, *data_dir, progress);
    if (manifest.ok()) {
      if (auto status = store.Publish(request.key, *data_dir); !status.ok()) manifest = status;
    }
    if (!manifest.ok()) RemoveTree(*data_dir);
  }
  if (manifest.ok()) {
    unlink(BackgroundFailurePath(store, request.key).c_str());
    unlink(BackgroundRecordPath(store, request.key).c_str());
    std::string line = absl::StrCat("# inferenceutils: published runtime ", request.key, " (", request.backend, ")\n");
    ssize_t ignored = write(STDERR_FILENO, line.data(), line.size());
    (void)ignored;
    _exit(0);
  }
  BackgroundFailure failure;
  failure.key = request.key;
  failure.backend = request.backend;
  failure.failed = Rfc3339(std::time(nullptr));
  failure.log = record.log;
  failure.error = std::string(manifest.status().message());
  absl::StatusOr<std::string> text = ReadFile(record.log);
  if (text.ok()) failure.last_lines = absl::StrSplit(TailLines(*text, 12), '\n', absl::SkipEmpty());
  std::string line = absl::StrCat("# inferenceutils: the background build failed: ", failure.error, "\n");
  ssize_t ignored = write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
  WriteFileAtomic(BackgroundFailurePath(store, request.key), DumpJson(failure.ToJson(), 2) + "\n").IgnoreError();
  unlink(BackgroundRecordPath(store, request.key).c_str());
  _exit(kExitProvision);
}

}  // namespace

nlohmann::json BackgroundBuild::ToJson() const {
  return {{"key", key},   {"backend", backend}, {"pid", pid},   {"started", started}, {"started_unix", started_unix},
          {"step", step}, {"detail", detail},   {"log", log},   {"fallback_key", fallback_key}};
}

nlohmann::json BackgroundFailure::ToJson() const {
  return {{"key", key}, {"backend", backend}, {"failed", failed}, {"log", log}, {"error", error},
          {"last_lines", last_lines}};
}

std::string BackgroundRecordPath(const Store& store, const std::string& key) {
  return absl::StrCat(BuildsDir(store), "/", key, ".json");
}

std::string BackgroundFailurePath(const Store& store, const std::string& key) {
  return absl::StrCat(BuildsDir(store), "/", key, kFailedSuffix);
}

std::optional<BackgroundBuild> ReadBackgroundBuild(const Store& store, const std::string& key) {
  std::optional<nlohmann::json> json = ReadJson(BackgroundRecordPath(store, key));
  if (!json) return std::nullopt;
  BackgroundBuild build = BuildFromJson(*json);
  build.key = key;
  build.running = LockBusy(store, key);
  return build;
}

std::optional<BackgroundFailure> ReadBackgroundFailure(const Store& store, const std::string& key) {
  std::optional<nlohmann::json> j = ReadJson(BackgroundFailurePath(store, key));
  if (!j) return std::nullopt;
  BackgroundFailure f;
  f.key = key;
  f.backend = j->value("backend", "");
  f.failed = j->value("failed", "");
  f.log = j->value("log", "");
  f.error = j->value("error", "");
  if (j->contains("last_lines") && (*j)["last_lines"].is_array()) {
    for (const auto& line : (*j)["last_lines"]) {
      if (line.is_string()) f.last_lines.push_back(line.get<std::string>());
    }
  }
  return f;
}

namespace {
std::vector<std::string> RecordKeys(const Store& store, bool failed) {
  std::vector<std::string> keys;
  if (DIR* d = opendir(BuildsDir(store).c_str())) {
    while (dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (absl::StrContains(name, ".tmp.")) continue;
      if (failed && absl::EndsWith(name, kFailedSuffix)) {
        keys.push_back(name.substr(0, name.size() - strlen(kFailedSuffix)));
      } else if (!failed && absl::EndsWith(name, ".json") && !absl::EndsWith(name, kFailedSuffix)) {
        keys.push_back(name.substr(0, name.size() - 5));
      }
    }
    closedir(d);
  }
  std::sort(keys.begin(), keys.end());
  return keys;
}
}  // namespace

std::vector<BackgroundBuild> ListBackgroundBuilds(const Store& store) {
  std::vector<BackgroundBuild> builds;
  for (const auto& key : RecordKeys(store, false)) {
    if (auto build = ReadBackgroundBuild(store, key)) builds.push_back(*std::move(build));
  }
  return builds;
}

std::vector<BackgroundFailure> ListBackgroundFailures(const Store& store) {
  std::vector<BackgroundFailure> failures;
  for (const auto& key : RecordKeys(store, true)) {
    if (auto failure = ReadBackgroundFailure(store, key)) failures.push_back(*std::move(failure));
  }
  return failures;
}

std::string ClockTime(int64_t unix_seconds) {
  std::time_t when = static_cast<std::time_t>(unix_seconds);
  char buf[16];
  std::strftime(buf, sizeof(buf), "%H:%M:%S", std::localtime(&when));
  return buf;
}

absl::StatusOr<BackgroundBuild> StartBackgroundBuild(const Store& store, const BuildRequest& request,
                                                     const FileLock& lock, const std::string& fallback_key) {
  if (auto status = MakeDirs(BuildsDir(store), "set INFERENCEUTILS_HOME (or --home) to a writable directory");
      !status.ok()) {
    return status;
  }
  if (auto status = MakeDirs(store.root() + "/logs", ""); !status.ok()) return status;
  std::time_t now = std::time(nullptr);
  BackgroundBuild record;
  record.key = request.key;
  record.backend = request.backend;
  record.started = Rfc3339(now);
  record.started_unix = now;
  record.step = "starting";
  record.log = absl::StrCat(store.root(), "/logs/", request.key, "-", now, "-", getpid(), "-background.log");
  record.fallback_key = fallback_key;
  BuildRequest builder_request = request;
  builder_request.log = record.log;

  // pid_pipe: the builder's pid to this process. go_pipe: the builder starts once this process
  // has recorded that pid (its end closed), so the record never names a builder not yet known.
  int pid_pipe[2], go_pipe[2];
  if (pipe2(pid_pipe, O_CLOEXEC) != 0) {
    return StoreError(absl::StrCat("cannot start the background build: pipe: ", std::strerror(errno)));
  }
  if (pipe2(go_pipe, O_CLOEXEC) != 0) {
    close(pid_pipe[0]);
    close(pid_pipe[1]);
    return StoreError(absl::StrCat("cannot start the background build: pipe: ", std::strerror(errno)));
  }
  std::fflush(nullptr);
  pid_t child = fork();
  if (child < 0) {
    int err = errno;
    for (int fd : {pid_pipe[0], pid_pipe[1], go_pipe[0], go_pipe[1]}) close(fd);
    return StoreError(absl::StrCat("cannot start the background build: fork: ", std::strerror(err)));
  }
  if (child == 0) {
    // A session of its own (no terminal, no SIGHUP or Ctrl-C of the starting shell), and a
    // second fork so that the builder is nobody's child: the program that runs meanwhile never
    // sees it in os.wait().
    close(pid_pipe[0]);
    close(go_pipe[1]);
    setsid();
    pid_t builder = fork();
    if (builder == 0) {
      close(pid_pipe[1]);
      char go;
      while (read(go_pipe[0], &go, 1) < 0 && errno == EINTR) {
      }
      close(go_pipe[0]);
      RunBuilder(store, std::move(builder_request), record, lock.fd());
    }
    long pid = builder;
    ssize_t ignored = write(pid_pipe[1], &pid, sizeof(pid));
    (void)ignored;
    _exit(builder > 0 ? 0 : 1);
  }
  close(pid_pipe[1]);
  close(go_pipe[0]);
  long pid = 0;
  ssize_t n = read(pid_pipe[0], &pid, sizeof(pid));
  close(pid_pipe[0]);
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (n != sizeof(pid) || pid <= 0) {
    close(go_pipe[1]);
    return StoreError("cannot start the background build: fork failed in its session");
  }
  // Written once the builder's pid is known and before it starts, under the lock: a launcher
  // waiting for the lock sees it appear and runs on the fallback instead of waiting for the build.
  record.pid = pid;
  absl::Status written = WriteFileAtomic(BackgroundRecordPath(store, request.key), DumpJson(record.ToJson(), 2) + "\n");
  close(go_pipe[1]);  // the builder starts
  if (!written.ok()) return written;
  return record;
}

}  // namespace iu
