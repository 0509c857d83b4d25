#include "hardware/detect_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace iu::detect {

std::string Rooted(const DetectOptions& options, const std::string& path) {
  if (options.root.empty() || options.root == "/") return path;
  std::string root = options.root;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  return path.empty() || path[0] != '/' ? absl::StrCat(root, "/", path) : root + path;
}

bool ReadSmallFile(const std::string& path, std::string* out, std::string* error, size_t limit) {
  out->clear();
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (error) *error = absl::StrCat("cannot read ", path, ": ", std::strerror(errno));
    return false;
  }
  char buf[8192];
  while (out->size() < limit) {
    ssize_t n = read(fd, buf, std::min(sizeof(buf), limit - out->size()));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (error) *error = absl::StrCat("cannot read ", path, ": ", std::strerror(errno));
      close(fd);
      return false;
    }
    if (n == 0) break;
    out->append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return true;
}

std::string ReadLine(const std::string& path) {
  std::string text;
  if (!ReadSmallFile(path, &text, nullptr, 4096)) return {};
  auto nl = text.find('\n');
  return Trim(nl == std::string::npos ? text : text.substr(0, nl));
}

std::string Trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '\n' || s[b] == '\r')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\n' || s[e - 1] == '\r' ||
                   s[e - 1] == '\0'))
    --e;
  return s.substr(b, e - b);
}

std::string EnvOf(const DetectOptions& options, const std::string& name) {
  auto it = options.env.find(name);
  return it == options.env.end() ? std::string() : it->second;
}

bool IsExecutableFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111);
}

std::string FindOnPath(const DetectOptions& options, const std::string& name) {
  for (absl::string_view dir : absl::StrSplit(EnvOf(options, "PATH"), ':', absl::SkipEmpty())) {
    if (dir[0] != '/') continue;  // relative PATH entries depend on the cwd: ignore
    std::string candidate = absl::StrCat(dir, "/", name);
    if (IsExecutableFile(Rooted(options, candidate))) return candidate;
  }
  return {};
}

std::string FieldOf(const std::string& text, const std::string& key, char sep) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    auto pos = line.find(sep);
    if (pos == absl::string_view::npos) continue;
    if (Trim(std::string(line.substr(0, pos))) == key) return Trim(std::string(line.substr(pos + 1)));
  }
  return {};
}

bool ParseU64(const std::string& s, uint64_t* out) {
  std::string t = Trim(s);
  if (t.empty() || t.size() > 19) return false;
  uint64_t v = 0;
  for (char c : t) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  *out = v;
  return true;
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (!d) return names;
  while (dirent* e = readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    names.emplace_back(e->d_name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace iu::detect
