#include "inferenceutils/store.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/lock.h"
#include "inferenceutils/paths.h"

namespace iu {
namespace {

constexpr char kHomeHint[] = "set INFERENCEUTILS_HOME (or pass --home) to a writable directory";
constexpr char kInUse[] = "/.in-use";

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (!d) return names;
  while (dirent* entry = readdir(d)) {
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

std::string ReadLink(const std::string& path) {
  char buf[4096];
  ssize_t n = readlink(path.c_str(), buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

// "<key>.<pid>.<nonce>" → key, pid.
bool ParseDataName(const std::string& name, std::string* key, long* pid) {
  std::vector<std::string> parts = absl::StrSplit(name, '.');
  if (parts.size() != 3) return false;
  *key = parts[0];
  return absl::SimpleAtoi(parts[1], pid);
}

// The data directory a runtimes/ link names: <root>/data/<the target's last component>, and only
// when that is a real directory (not a link) directly inside data/. "" otherwise: a link whose
// target is anything else (a relative climb such as ../../elsewhere, ".", "..") names nothing
// the store may delete.
std::string DataDirOf(const std::string& root, const std::string& target) {
  std::string name = target.substr(target.find_last_of('/') + 1);
  if (name.empty() || name == "." || name == "..") return "";
  std::string dir = root + "/data/" + name;
  struct stat st;
  if (lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return "";
  return dir;
}

// Whether a published link other than runtimes/<except_key> names the data directory `dir`.
bool PublishedElsewhere(const std::string& root, const std::string& dir, const std::string& except_key) {
  if (dir.empty()) return false;
  std::string name = dir.substr(dir.find_last_of('/') + 1);
  for (const auto& key : ListDir(root + "/runtimes")) {
    if (key == except_key) continue;
    std::string target = ReadLink(root + "/runtimes/" + key);
    if (!target.empty() && target.substr(target.find_last_of('/') + 1) == name) return true;
  }
  return false;
}

bool ProcessAlive(long pid) { return pid > 0 && (kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM); }

// Deletes a data directory unless a running launcher holds its in-use lock.
bool DeleteIfUnused(const std::string& data_dir) {
  struct stat st;
  if (data_dir.empty() || lstat(data_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return false;
  absl::StatusOr<FileLock> probe = FileLock::TryExclusive(data_dir + kInUse);
  if (probe.ok() && !probe->held()) return false;  // a running launcher holds it shared
  return RemoveTree(data_dir);
}

}  // namespace

bool RemoveTree(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return errno == ENOENT;
  if (S_ISDIR(st.st_mode)) {
    chmod(path.c_str(), st.st_mode | S_IRWXU);  // a read-only tree (pip sometimes makes one)
    for (const auto& name : ListDir(path)) RemoveTree(path + "/" + name);
    return rmdir(path.c_str()) == 0;
  }
  return unlink(path.c_str()) == 0;
}

uint64_t TreeSize(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return 0;
  if (!S_ISDIR(st.st_mode)) return S_ISREG(st.st_mode) ? static_cast<uint64_t>(st.st_size) : 0;
  uint64_t total = 0;
  for (const auto& name : ListDir(path)) total += TreeSize(path + "/" + name);
  return total;
}

void MarkInUse(const std::string& prefix) {
  std::string path = prefix + kInUse;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return;
  flock(fd, LOCK_SH | LOCK_NB);
  futimens(fd, nullptr);  // last used (needs write permission; harmless when it fails)
  // The lock belongs to the open file, which a mapping keeps alive after the descriptor is
  // closed: the process holds the shared lock until it ends (or execs) without holding an extra
  // descriptor, so the user's program sees exactly the descriptors python would give it.
  void* mapping = mmap(nullptr, 1, PROT_READ, MAP_SHARED, fd, 0);
  (void)mapping;  // on failure the lock simply ends with the descriptor (best effort)
  close(fd);
}

absl::StatusOr<Manifest> Store::Lookup(const std::string& key) const {
  // Read through the link: the prefix is where the runtime is now (the store may have moved).
  std::string target = ReadLink(RuntimeLink(key));
  if (target.empty()) return absl::NotFoundError(absl::StrCat("no runtime ", key));
  std::string data_dir = root_ + "/data/" + target.substr(target.find_last_of('/') + 1);
  absl::StatusOr<Manifest> manifest = Manifest::Read(data_dir);
  if (absl::IsNotFound(manifest.status())) {
    if (!PathExists(data_dir)) return absl::NotFoundError(absl::StrCat("no runtime ", key));  // a dangling link
    return absl::DataLossError(absl::StrCat("runtime ", key, " has no readable manifest (", data_dir, "/manifest.json)"));
  }
  if (!manifest.ok()) return absl::DataLossError(absl::StrCat("runtime ", key, ": ", manifest.status().message()));
  if (manifest->key != key) {
    return absl::DataLossError(absl::StrCat("runtime ", key, " has the manifest of ", manifest->key));
  }
  return manifest;
}

absl::Status Store::EnsureLayout() const {
  for (const char* sub : {"/runtimes", "/data", "/locks", "/cache"}) {
    if (auto status = MakeDirs(root_ + sub, kHomeHint); !status.ok()) return status;
  }
  std::string probe = absl::StrCat(root_, "/locks/.write-test.", getpid());
  int fd = open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) {
    return StoreError(absl::StrCat("the store ", root_, " is not writable (", std::strerror(errno), "); ", kHomeHint));
  }
  close(fd);
  unlink(probe.c_str());
  return absl::OkStatus();
}

absl::StatusOr<std::string> Store::NewDataDir(const std::string& key) const {
  std::random_device random;
  std::string dir = absl::StrCat(root_, "/data/", key, ".", getpid(), ".", random() % 1000000);
  if (mkdir(dir.c_str(), 0755) != 0) {
    return StoreError(absl::StrCat("cannot create ", dir, ": ", std::strerror(errno), "; ", kHomeHint));
  }
  int fd = open((dir + kInUse).c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd >= 0) close(fd);
  return dir;
}

absl::Status Store::Publish(const std::string& key, const std::string& data_dir) const {
  std::string link = RuntimeLink(key);
  std::string previous = ReadLink(link);
  std::string target = "../data/" + data_dir.substr(data_dir.find_last_of('/') + 1);
  std::string tmp = absl::StrCat(link, ".new.", getpid());
  unlink(tmp.c_str());
  if (symlink(target.c_str(), tmp.c_str()) != 0 || rename(tmp.c_str(), link.c_str()) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return StoreError(absl::StrCat("cannot publish runtime ", key, " at ", link, ": ", std::strerror(err)));
  }
  if (!previous.empty() && previous != target) {
    std::string old = DataDirOf(root_, previous);
    if (!PublishedElsewhere(root_, old, key)) DeleteIfUnused(old);
  }
  return absl::OkStatus();
}

absl::Status Store::Remove(const std::string& key) const {
  std::string link = RuntimeLink(key);
  std::string target = ReadLink(link);
  if (target.empty()) {
    return WithExit(absl::NotFoundError(absl::StrCat("no runtime '", key, "' in ", root_,
                                                     "; `inferenceutils runtime list` shows the keys")),
                    kExitConfig);
  }
  if (unlink(link.c_str()) != 0) {
    return StoreError(absl::StrCat("cannot remove ", link, ": ", std::strerror(errno)));
  }
  std::string data_dir = DataDirOf(root_, target);
  if (!PublishedElsewhere(root_, data_dir, key)) DeleteIfUnused(data_dir);  // else: CleanStale deletes it once unused
  return absl::OkStatus();
}

int Store::CleanStale(const std::string& key_locked) const {
  std::vector<std::string> published;
  for (const auto& name : ListDir(root_ + "/runtimes")) {
    std::string target = ReadLink(root_ + "/runtimes/" + name);
    if (!target.empty()) published.push_back(target.substr(target.find_last_of('/') + 1));
  }
  int removed = 0;
  for (const auto& name : ListDir(root_ + "/data")) {
    if (std::find(published.begin(), published.end(), name) != published.end()) continue;
    std::string key;
    long pid = 0;
    if (!ParseDataName(name, &key, &pid)) continue;
    // Unpublished: a crashed or finished-and-replaced build. Its builder holds the key's lock
    // while it works, so under that lock every unpublished directory of the key is stale.
    bool stale = key == key_locked || !ProcessAlive(pid);
    if (stale && DeleteIfUnused(root_ + "/data/" + name)) ++removed;
  }
  return removed;
}

std::vector<RuntimeEntry> Store::List() const {
  std::vector<RuntimeEntry> entries;
  for (const auto& name : ListDir(root_ + "/runtimes")) {
    if (absl::StrContains(name, ".new.")) continue;
    RuntimeEntry entry;
    entry.key = name;
    std::string target = ReadLink(root_ + "/runtimes/" + name);
    if (target.empty()) continue;
    entry.path = root_ + "/data/" + target.substr(target.find_last_of('/') + 1);
    entry.manifest = Lookup(name);
    entry.size_bytes = TreeSize(entry.path);
    struct stat st;
    if (stat((entry.path + kInUse).c_str(), &st) == 0) entry.last_used = st.st_mtime;
    entries.push_back(std::move(entry));
  }
  return entries;
}

}  // namespace iu
