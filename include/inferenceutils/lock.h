// File locks the OS releases when the holder dies (flock(2)): the build lock of a runtime key and
// the shared "in use" lock that running launchers hold on the runtime they started in.
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace iu {

class FileLock {
 public:
  FileLock() = default;
  FileLock(FileLock&& other) noexcept;
  FileLock& operator=(FileLock&& other) noexcept;
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  ~FileLock();

  // Exclusive lock on `path` (created if missing); the holder's pid is written into the file so
  // waiters can name it. Returns the lock, or an error (kExitLockTimeout) after `timeout`.
  // `on_wait(holder_pid)` is called once if the lock is busy, before waiting.
  template <typename OnWait>
  static absl::StatusOr<FileLock> Exclusive(const std::string& path, absl::Duration timeout,
                                            OnWait on_wait);
  // The same, and `give_up()` is asked at each poll while waiting: true ends the wait with an
  // empty lock (held() false) instead of the lock.
  static absl::StatusOr<FileLock> ExclusiveUnless(const std::string& path, absl::Duration timeout,
                                                  const std::function<void(long)>& on_wait,
                                                  const std::function<bool()>& give_up);
  // Non-blocking: the lock, or nullopt-like empty lock (held() false) when someone holds it.
  static absl::StatusOr<FileLock> TryExclusive(const std::string& path);
  // Shared lock (non-blocking; an empty lock if an exclusive holder has it).
  static absl::StatusOr<FileLock> TryShared(const std::string& path);

  bool held() const { return fd_ >= 0; }
  void Release();
  // The descriptor that holds the lock (a forked builder keeps it after its parent closes its copy).
  int fd() const { return fd_; }

 private:
  static absl::StatusOr<FileLock> Acquire(const std::string& path, absl::Duration timeout,
                                          void (*on_wait)(void*, long), void* context,
                                          const std::function<bool()>* give_up = nullptr);
  int fd_ = -1;
};

// The pid written into a lock file by its holder, or 0.
long LockHolderPid(const std::string& path);

template <typename OnWait>
absl::StatusOr<FileLock> FileLock::Exclusive(const std::string& path, absl::Duration timeout,
                                             OnWait on_wait) {
  return Acquire(path, timeout,
                 [](void* context, long pid) { (*static_cast<OnWait*>(context))(pid); }, &on_wait);
}

}  // namespace iu
