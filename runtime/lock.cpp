#include "inferenceutils/lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "inferenceutils/errors.h"

namespace iu {
namespace {

absl::StatusOr<int> OpenLockFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0 && errno == ELOOP) {
    return StoreError(absl::StrCat("the lock file ", path, " is a symlink, which the store never makes; "
                                   "remove it (the store's files are written only as themselves)"));
  }
  if (fd < 0) {
    return StoreError(absl::StrCat("cannot open lock file ", path, ": ", std::strerror(errno),
                                   "; set INFERENCEUTILS_HOME to a writable directory"));
  }
  return fd;
}

void WritePid(int fd) {
  std::string pid = std::to_string(getpid()) + "\n";
  if (ftruncate(fd, 0) == 0) {
    ssize_t ignored = pwrite(fd, pid.data(), pid.size(), 0);
    (void)ignored;
  }
}

}  // namespace

FileLock::FileLock(FileLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
FileLock& FileLock::operator=(FileLock&& other) noexcept {
  if (this != &other) {
    Release();
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}
FileLock::~FileLock() { Release(); }

void FileLock::Release() {
  if (fd_ >= 0) close(fd_);  // closing the descriptor releases the flock
  fd_ = -1;
}

long LockHolderPid(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[32] = {};
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  return n > 0 ? std::strtol(buf, nullptr, 10) : 0;
}

absl::StatusOr<FileLock> FileLock::Acquire(const std::string& path, absl::Duration timeout,
                                           void (*on_wait)(void*, long), void* context,
                                           const std::function<bool()>* give_up) {
  absl::StatusOr<int> fd = OpenLockFile(path);
  if (!fd.ok()) return fd.status();
  FileLock lock;
  lock.fd_ = *fd;
  if (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) {
      return StoreError(absl::StrCat("cannot lock ", path, ": ", std::strerror(errno)));
    }
    on_wait(context, LockHolderPid(path));
    absl::Time deadline = absl::Now() + timeout;
    absl::Duration pause = absl::Milliseconds(20);
    while (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
      if (give_up && *give_up && (*give_up)()) {
        lock.Release();
        return lock;
      }
      if (absl::Now() >= deadline) {
        return WithExit(
            absl::DeadlineExceededError(absl::StrCat(
                "gave up after ", absl::FormatDuration(timeout), " waiting for the lock ", path,
                " held by pid ", LockHolderPid(path),
                "; wait for that process or raise INFERENCEUTILS_LOCK_TIMEOUT (seconds)")),
            kExitLockTimeout);
      }
      absl::SleepFor(pause);
      pause = std::min(pause * 2, absl::Milliseconds(250));
    }
  }
  WritePid(*fd);
  return lock;
}

absl::StatusOr<FileLock> FileLock::ExclusiveUnless(const std::string& path, absl::Duration timeout,
                                                   const std::function<void(long)>& on_wait,
                                                   const std::function<bool()>& give_up) {
  return Acquire(
      path, timeout, [](void* context, long pid) { (*static_cast<const std::function<void(long)>*>(context))(pid); },
      const_cast<std::function<void(long)>*>(&on_wait), &give_up);
}

absl::StatusOr<FileLock> FileLock::TryExclusive(const std::string& path) {
  absl::StatusOr<int> fd = OpenLockFile(path);
  if (!fd.ok()) return fd.status();
  FileLock lock;
  lock.fd_ = *fd;
  if (flock(*fd, LOCK_EX | LOCK_NB) != 0) lock.Release();
  return lock;
}

absl::StatusOr<FileLock> FileLock::TryShared(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return FileLock();
  FileLock lock;
  lock.fd_ = fd;
  if (flock(fd, LOCK_SH | LOCK_NB) != 0) lock.Release();
  return lock;
}

}  // namespace iu
