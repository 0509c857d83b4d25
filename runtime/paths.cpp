#include "inferenceutils/paths.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/env_values.h"

namespace iu {
namespace {


std::string HomeDir() {
  std::string home = Env("HOME");
  return home.empty() ? std::string("/tmp") : home;
}


}  // namespace

std::string Dirname(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string SelfExecutable() {
  // One readlink per process (the home, the assets and the store all start from it); a fork
  // runs the same executable, an exec starts afresh.
  static const std::string self = [] {
    char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    return n <= 0 ? std::string() : std::string(buf, static_cast<size_t>(n));
  }();
  return self;
}

namespace {
std::string& AssetsOverride() {
  static std::string dir;
  return dir;
}
}  // namespace

void SetAssetsDir(const std::string& dir) { AssetsOverride() = dir; }

std::string AssetsDir() {
  if (!AssetsOverride().empty()) return AssetsOverride();
  return absl::StrCat(Dirname(Dirname(SelfExecutable())), "/share/inferenceutils");
}

std::string StateDir() {
  std::string xdg = Env("XDG_STATE_HOME");
  if (!xdg.empty() && xdg[0] == '/') return xdg + "/inferenceutils";
  return HomeDir() + "/.local/state/inferenceutils";
}

std::string MakeAbsolutePath(const std::string& path) {
  if (path.empty()) return path;
  std::string joined = path;
  if (path[0] != '/') {
    char cwd[4096];
    if (!getcwd(cwd, sizeof(cwd))) return path;
    joined = std::string(cwd) + "/" + path;
  }
  // Lexically, as os.path.abspath: "." and ".." folded, no symlink resolved.
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= joined.size()) {
    size_t slash = joined.find('/', start);
    if (slash == std::string::npos) slash = joined.size();
    std::string part = joined.substr(start, slash - start);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    start = slash + 1;
  }
  std::string out;
  for (const auto& part : parts) out += "/" + part;
  return out.empty() ? "/" : out;
}

std::string StoreRoot(const std::string& explicit_home) {
  // Absolute once, here: a relative store would give relative sys.executable, shebangs and
  // manifest paths that break after a chdir.
  if (!explicit_home.empty()) return MakeAbsolutePath(explicit_home);
  std::string home = Env("INFERENCEUTILS_HOME");
  if (!home.empty()) return MakeAbsolutePath(home);
  // A portable install (a copied folder, a USB stick): the store lives beside the executable
  // when a file `inferenceutils.portable` or a folder `store/` is there. Two stat() calls.
  std::string exe_dir = Dirname(SelfExecutable());
  if (PathExists(exe_dir + "/inferenceutils.portable") || IsDirectory(exe_dir + "/store")) {
    return exe_dir + "/store";
  }
  std::string xdg = Env("XDG_CACHE_HOME");
  if (!xdg.empty() && xdg[0] == '/') return xdg + "/inferenceutils";
  return HomeDir() + "/.cache/inferenceutils";
}

absl::Status MakeDirs(const std::string& dir, const std::string& hint) {
  if (dir.empty()) return absl::InvalidArgumentError("empty directory name");
  std::string partial;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    partial = dir.substr(0, pos);
    if (partial.empty()) continue;
    if (mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST) {
      return StoreError(absl::StrCat("cannot create ", dir, " (", partial, ": ",
                                     std::strerror(errno), ")", hint.empty() ? "" : "; ", hint));
    }
  }
  if (!IsDirectory(dir)) {
    return StoreError(absl::StrCat("cannot create ", dir, ": a file is in the way",
                                   hint.empty() ? "" : "; ", hint));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

absl::Status WriteFileAtomic(const std::string& path, const std::string& content) {
  std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) return StoreError(absl::StrCat("cannot write ", tmp, ": ", std::strerror(errno)));
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      close(fd);
      unlink(tmp.c_str());
      return StoreError(absl::StrCat("cannot write ", tmp, ": ", std::strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  fsync(fd);
  close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return StoreError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

bool PathExists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}
bool IsDirectory(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
bool IsRegularFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace iu
