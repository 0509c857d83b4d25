// An app's file: the footer that locates its payload, and `app build`, which writes launcher +
// payload + footer (include/inferenceutils/app.h has the layout).
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_replace.h"
#include "inferenceutils/json_text.h"
#include "inferenceutils/app.h"
#include "inferenceutils/bundle.h"
#include "inferenceutils/digest.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/python.h"
#include "inferenceutils/spec.h"
#include "app_internal.h"
#include "stream_writers.h"

namespace iu {
namespace app_internal {

absl::Status Damaged(const std::string& path, absl::string_view why) {
  return WithExit(absl::DataLossError(absl::StrCat("app ", path, ": ", why,
                                                   "; the file is damaged or incomplete: download or build it again")),
                  kExitBundle);
}

bool ReadAt(int fd, uint64_t offset, size_t size, std::string* out) {
  out->assign(size, '\0');
  size_t got = 0;
  while (got < size) {
    ssize_t n = pread(fd, out->data() + got, size - got, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    got += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace app_internal
namespace {

using app_internal::Damaged;
using app_internal::ReadAt;

constexpr int kDefaultLevel = 19;

void PutU64(std::string& out, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) out[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
uint64_t GetU64(absl::string_view in, size_t at) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(in[at + i]);
  return v;
}
void PutU32(std::string& out, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) out[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
uint32_t GetU32(absl::string_view in, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(in[at + i]);
  return v;
}


// Where the ELF image ends (its section header table is the last thing the linker writes);
// 0 when `header` is not a 64-bit little-endian ELF header.
uint64_t ElfEnd(absl::string_view header) {
  if (header.size() < 64 || header.substr(0, 4) != "\x7f" "ELF" || header[4] != 2 || header[5] != 1) return 0;
  uint64_t shoff = GetU64(header, 0x28);
  uint64_t shentsize = static_cast<unsigned char>(header[0x3a]) | (static_cast<unsigned char>(header[0x3b]) << 8);
  uint64_t shnum = static_cast<unsigned char>(header[0x3c]) | (static_cast<unsigned char>(header[0x3d]) << 8);
  return shoff + shentsize * shnum;
}

// How many bytes follow a footer that is still in the file (of `size` bytes, payload at
// `payload_at`) when something was appended to an app; 0 when there is no such footer.
uint64_t AppendedAfterFooter(int fd, uint64_t payload_at, uint64_t size) {
  const uint64_t window = std::min<uint64_t>(size - payload_at, 16u << 20);
  std::string tail;
  if (window < kAppFooterSize || !ReadAt(fd, size - window, window, &tail)) return 0;
  const std::string magic(kAppFooterMagic, 8);
  for (size_t at = tail.rfind(magic); at != std::string::npos && at + 8 >= kAppFooterSize;
       at = at == 0 ? std::string::npos : tail.rfind(magic, at - 1)) {
    uint64_t footer_end = size - window + at + 8;
    absl::string_view footer = absl::string_view(tail).substr(at + 8 - kAppFooterSize, kAppFooterSize);
    if (GetU64(footer, 0) == payload_at && payload_at + GetU64(footer, 8) + kAppFooterSize == footer_end) {
      return size - footer_end;
    }
  }
  return 0;
}

}  // namespace

std::string EncodeAppFooter(const AppFooter& f) {
  std::string out(kAppFooterSize, '\0');
  PutU64(out, 0, f.payload_offset);
  PutU64(out, 8, f.payload_size);
  PutU64(out, 16, f.manifest_offset);
  PutU64(out, 24, f.manifest_size);
  std::string raw = absl::HexStringToBytes(f.sha256);
  raw.resize(32, '\0');
  out.replace(32, 32, raw);
  PutU32(out, 64, kAppFormat);
  PutU32(out, 68, kAppFooterSize);
  out.replace(kAppFooterSize - 8, 8, kAppFooterMagic, 8);
  return out;
}

absl::StatusOr<std::optional<AppFooter>> DecodeAppFooter(absl::string_view bytes, uint64_t file_size,
                                                         const std::string& path) {
  if (bytes.size() != kAppFooterSize || bytes.substr(kAppFooterSize - 8) != absl::string_view(kAppFooterMagic, 8)) {
    return std::optional<AppFooter>();
  }
  if (GetU32(bytes, 64) != kAppFormat || GetU32(bytes, 68) != kAppFooterSize) {
    return WithExit(absl::FailedPreconditionError(absl::StrCat(
                        "app ", path, ": app format ", GetU32(bytes, 64), " is not ", kAppFormat,
                        " (built by another inferenceutils version)")),
                    kExitBundle);
  }
  AppFooter f;
  f.payload_offset = GetU64(bytes, 0);
  f.payload_size = GetU64(bytes, 8);
  f.manifest_offset = GetU64(bytes, 16);
  f.manifest_size = GetU64(bytes, 24);
  f.sha256 = absl::BytesToHexString(bytes.substr(32, 32));
  bool fits = f.payload_offset >= 64 && f.payload_size >= kAppHeaderSize && f.payload_offset < file_size &&
              f.payload_size <= file_size && f.payload_offset + f.payload_size + kAppFooterSize == file_size &&
              f.manifest_offset >= kAppHeaderSize && f.manifest_size > 0 && f.manifest_size <= (16u << 20) &&
              f.manifest_offset + f.manifest_size <= f.payload_size;
  if (!fits) return Damaged(path, "its footer does not match the file's size");
  return std::optional<AppFooter>(f);
}

absl::StatusOr<std::optional<AppFile>> OpenAppFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::optional<AppFile>();  // nothing to run as an app
  struct stat st;
  std::string tail;
  absl::StatusOr<std::optional<AppFooter>> footer = std::optional<AppFooter>();
  uint64_t size = 0;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    size = static_cast<uint64_t>(st.st_size);
    if (size > kAppFooterSize && ReadAt(fd, size - kAppFooterSize, kAppFooterSize, &tail)) {
      footer = DecodeAppFooter(tail, size, path);
    }
    if (footer.ok() && !footer->has_value()) {
      // No footer at the end. A payload's header right after the ELF image means the file was
      // cut short, or had bytes appended after its footer (which is then still in the file).
      std::string header, magic;
      uint64_t end = ReadAt(fd, 0, 64, &header) ? ElfEnd(header) : 0;
      if (end > 0 && end + kAppHeaderSize <= size && ReadAt(fd, end, 8, &magic) &&
          magic == absl::string_view(kAppHeaderMagic, 8)) {
        uint64_t appended = AppendedAfterFooter(fd, end, size);
        footer = Damaged(path, appended > 0 ? absl::StrCat("it has ", appended, " bytes appended after its payload's footer; "
                                                           "remove them (or build the app again)")
                                            : "its payload has no footer (the file is truncated)");
      }
    }
  }
  close(fd);
  if (!footer.ok()) return footer.status();
  if (!footer->has_value()) return std::optional<AppFile>();
  AppFile app;
  app.path = path;
  app.footer = **footer;
  app.identity = absl::StrCat(st.st_dev, "-", st.st_ino, "-", st.st_size, "-", st.st_mtim.tv_sec, ".",
                              st.st_mtim.tv_nsec, "-", st.st_ctim.tv_sec, ".", st.st_ctim.tv_nsec);
  return std::optional<AppFile>(app);
}

// --- app build ---------------------------------------------------------------------------------
namespace {

struct PackedFile {
  std::string source;  // absolute path
  std::string member;  // path in the archive
  uint64_t size = 0;
  int mode = 0644;
  std::string link_target;  // a symlink kept as one (relative, inside APP_DIR); "" for a file
};

bool Excluded(const std::string& rel, const std::string& name, const std::vector<std::string>& patterns) {
  for (const auto& p : patterns) {
    if (fnmatch(p.c_str(), rel.c_str(), 0) == 0 || fnmatch(p.c_str(), name.c_str(), 0) == 0) return true;
    // "build/" or "build" excludes the folder and what is in it.
    std::string dir = p;
    while (!dir.empty() && dir.back() == '/') dir.pop_back();
    if (!dir.empty() && (rel == dir || absl::StartsWith(rel, dir + "/"))) return true;
  }
  return false;
}

std::string RealPath(const std::string& path);

// `target` (absolute, resolved) relative to the directory `from` (absolute, resolved).
std::string RelativeTo(const std::string& target, const std::string& from) {
  std::vector<std::string> t = absl::StrSplit(target, '/', absl::SkipEmpty());
  std::vector<std::string> f = absl::StrSplit(from, '/', absl::SkipEmpty());
  size_t common = 0;
  while (common < t.size() && common < f.size() && t[common] == f[common]) ++common;
  std::vector<std::string> parts(f.size() - common, "..");
  parts.insert(parts.end(), t.begin() + static_cast<long>(common), t.end());
  return parts.empty() ? "." : absl::StrJoin(parts, "/");
}

// The files below `root` (sorted; hidden names, __pycache__ and *.pyc left out), as members
// under `prefix`. With `follow_links` (the launcher's own assets) a symlink is packed as what it
// points at. Without (APP_DIR), a symlink that resolves inside `root` is kept as a relative link
// (a folder link is not walked again), and one that leads outside, or nowhere, is refused: an
// app must not carry /etc/passwd because a link in its folder pointed there.
absl::Status Collect(const std::string& root, const std::string& rel, const std::string& prefix,
                     const std::vector<std::string>& exclude, const std::set<std::string>& skip,
                     std::vector<PackedFile>* files, bool follow_links = true, int depth = 0) {
  std::string dir = rel.empty() ? root : root + "/" + rel;
  if (depth > 64) return UsageError(absl::StrCat("app build: ", dir, " is nested too deep (a symlink loop?)"));
  DIR* d = opendir(dir.c_str());
  if (!d) return UsageError(absl::StrCat("app build: cannot read ", dir, ": ", std::strerror(errno)));
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.empty() || name[0] == '.' || name == "__pycache__" || absl::EndsWith(name, ".pyc")) continue;
    names.push_back(name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    std::string r = rel.empty() ? name : rel + "/" + name;
    std::string full = root + "/" + r;
    if (skip.count(full) || Excluded(r, name, exclude)) continue;
    struct stat st;
    if (!follow_links && lstat(full.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
      char target[PATH_MAX];
      ssize_t n = readlink(full.c_str(), target, sizeof(target) - 1);
      std::string text = n > 0 ? std::string(target, static_cast<size_t>(n)) : std::string();
      std::string real_root = RealPath(root), resolved = RealPath(full);
      struct stat target_st;
      bool exists = stat(full.c_str(), &target_st) == 0;
      if (!exists || (resolved != real_root && !absl::StartsWith(resolved, real_root + "/"))) {
        return UsageError(absl::StrCat("app build: ", full, " is a symlink to '", text, "', ",
                                       exists ? absl::StrCat("outside APP_DIR (", resolved, ")") : "which does not exist",
                                       "; put a copy of what it points at in its place, or leave it out with exclude"));
      }
      std::string parent = RealPath(Dirname(full));
      files->push_back({full, prefix + r, 0, 0777, RelativeTo(resolved, parent)});
      continue;
    }
    if (stat(full.c_str(), &st) != 0) {
      return UsageError(absl::StrCat("app build: cannot read ", full, ": ", std::strerror(errno),
                                     " (a dangling symlink? leave it out with exclude)"));
    }
    if (S_ISDIR(st.st_mode)) {
      if (auto s = Collect(root, r, prefix, exclude, skip, files, follow_links, depth + 1); !s.ok()) return s;
    } else if (S_ISREG(st.st_mode)) {
      files->push_back({full, prefix + r, static_cast<uint64_t>(st.st_size), (st.st_mode & 0111) ? 0755 : 0644, ""});
    }  // sockets, fifos, devices: not part of an app
  }
  return absl::OkStatus();
}

std::string Basename(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string MakeAbsolute(const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  char buf[4096];
  if (!getcwd(buf, sizeof(buf))) return path;
  std::string p = path;
  while (absl::StartsWith(p, "./")) p = p.substr(2);
  return absl::StrCat(buf, "/", p);
}

std::string RealPath(const std::string& path) {
  char buf[PATH_MAX];
  return realpath(path.c_str(), buf) ? std::string(buf) : path;
}

// `path` relative to `dir` when it is inside it ("" otherwise).
std::string Inside(const std::string& dir, const std::string& path) {
  std::string d = RealPath(dir), p = RealPath(path);
  if (absl::StartsWith(p, d + "/")) return p.substr(d.size() + 1);
  return "";
}

bool IsPng(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  std::string magic;
  bool ok = ReadAt(fd, 0, 8, &magic) && magic == "\x89PNG\r\n\x1a\n";
  close(fd);
  return ok;
}

// Copies [0, size) of `from` to `fd`.
absl::Status CopyPrefix(const std::string& from, uint64_t size, int fd, HashingWriter* hashed) {
  int in = open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return StoreError(absl::StrCat("cannot read ", from, ": ", std::strerror(errno)));
  std::string buf(1 << 20, '\0');
  uint64_t left = size;
  absl::Status status;
  while (left > 0) {
    ssize_t n = read(in, buf.data(), std::min<uint64_t>(buf.size(), left));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      status = StoreError(absl::StrCat("cannot read ", from, ": ", n < 0 ? std::strerror(errno) : "it shrank"));
      break;
    }
    absl::string_view chunk(buf.data(), static_cast<size_t>(n));
    if (hashed) {
      if (!hashed->Write(chunk)) {
        status = StoreError(absl::StrCat("cannot write: ", hashed->error));
        break;
      }
    } else {
      size_t off = 0;
      while (off < chunk.size()) {
        ssize_t w = write(fd, chunk.data() + off, chunk.size() - off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) break;
        off += static_cast<size_t>(w);
      }
      if (off != chunk.size()) {
        status = StoreError(absl::StrCat("cannot write: ", std::strerror(errno)));
        break;
      }
    }
    left -= static_cast<uint64_t>(n);
  }
  close(in);
  return status;
}

// Removes the temporary files of a build that did not finish.
struct Cleanup {
  std::vector<std::string> paths;
  ~Cleanup() {
    for (const auto& p : paths) unlink(p.c_str());
  }
};

}  // namespace

absl::StatusOr<AppBuildResult> BuildApp(const AppBuildRequest& request, Progress& progress) {
  AppSettings s = request.settings;
  if (request.app_dir.empty()) return UsageError("app build needs APP_DIR (see `inferenceutils help app`)");
  const std::string app_dir = RealPath(MakeAbsolute(request.app_dir));
  if (!IsDirectory(app_dir)) {
    return UsageError(absl::StrCat("app build: APP_DIR ", request.app_dir, " is not a directory"));
  }
  if (s.output.empty()) return UsageError("app build needs -o OUT (or `output` in app.toml)");
  const std::string output = MakeAbsolute(s.output);
  if (IsDirectory(output)) return UsageError(absl::StrCat("app build: -o ", s.output, " is a directory; give a file name"));
  if (!IsDirectory(Dirname(output))) {
    return UsageError(absl::StrCat("app build: the folder of -o ", s.output, " does not exist"));
  }
  if (!s.entry.empty() && !s.script.empty()) return UsageError("app build: give --entry or --script, not both");
  if (s.entry.empty() && s.script.empty()) {
    if (IsRegularFile(app_dir + "/__main__.py")) {
      s.script = "__main__.py";
    } else {
      return UsageError("app build needs --entry MODULE:FUNC or --script FILE (or `entry`/`script` in app.toml)");
    }
  }
  AppEntry entry;
  if (!s.entry.empty()) {
    absl::StatusOr<AppEntry> parsed = ParseAppEntry(s.entry);
    if (!parsed.ok()) return WithExit(absl::Status(parsed.status().code(), absl::StrCat("app build: ", parsed.status().message())), kExitUsage);
    entry = *parsed;
    std::string base = app_dir + "/" + absl::StrReplaceAll(entry.module, {{".", "/"}});
    if (!IsRegularFile(base + ".py") && !IsRegularFile(base + "/__init__.py") && !IsDirectory(base)) {
      progress.Note(absl::StrCat("module ", entry.module, " is not in ", app_dir,
                                 "; it must come from the runtime's requirements"));
    }
  } else {
    std::string script = s.script[0] == '/' ? s.script : app_dir + "/" + s.script;
    if (!IsRegularFile(script)) return UsageError(absl::StrCat("app build: script ", s.script, " does not exist"));
    entry.script = Inside(app_dir, script);
    if (entry.script.empty()) {
      return UsageError(absl::StrCat("app build: script ", s.script, " is not inside APP_DIR ", app_dir));
    }
  }
  if (s.name.empty()) s.name = Basename(app_dir);
  for (char c : s.name) {
    if (static_cast<unsigned char>(c) < 0x20 || c == '/') {
      return UsageError(absl::StrCat("app build: name '", absl::CEscape(s.name), "' has a '/' or a control character"));
    }
  }
  if (s.version.empty()) s.version = "0";
  const int level = s.level == 0 ? kDefaultLevel : s.level;
  if (level < 1 || level > ZSTD_maxCLevel()) return UsageError(absl::StrCat("app build: --level must be 1..", ZSTD_maxCLevel()));

  // What goes in: app files, the launcher's assets, the spec, the icon.
  std::set<std::string> skip = {output, output + ".desktop", output + ".png"};
  std::vector<PackedFile> files;
  if (auto st = Collect(app_dir, "", "app/", s.exclude, skip, &files, /*follow_links=*/false); !st.ok()) return st;
  uint64_t app_files = files.size();
  if (app_files == 0) return UsageError(absl::StrCat("app build: APP_DIR ", app_dir, " has no files to pack"));
  std::string spec_member;
  nlohmann::json spec_summary = nullptr;
  if (!s.spec.empty()) {
    std::string spec = MakeAbsolute(s.spec);
    if (!IsRegularFile(spec)) return UsageError(absl::StrCat("app build: spec ", s.spec, " does not exist"));
    absl::StatusOr<RuntimeSpec> parsed = LoadSpecFile(spec);
    if (!parsed.ok()) return parsed.status();
    spec_summary = {{"requirements", parsed->requirements}, {"preload", parsed->preload}};
    std::string inside = Inside(app_dir, spec);
    bool packed = false;
    for (const auto& f : files) packed = packed || (!inside.empty() && f.member == "app/" + inside);
    if (packed) {
      spec_member = "app/" + inside;
    } else {
      spec_member = "spec.toml";
      struct stat st;
      stat(spec.c_str(), &st);
      files.push_back({spec, spec_member, static_cast<uint64_t>(st.st_size), 0644, ""});
    }
  }
  std::string icon_member;
  if (!s.icon.empty()) {
    std::string icon = MakeAbsolute(s.icon);
    if (!IsRegularFile(icon)) return UsageError(absl::StrCat("app build: icon ", s.icon, " does not exist"));
    if (!IsPng(icon)) return UsageError(absl::StrCat("app build: icon ", s.icon, " is not a PNG file"));
    s.icon = icon;
    std::string inside = Inside(app_dir, icon);
    bool packed = false;
    for (const auto& f : files) packed = packed || (!inside.empty() && f.member == "app/" + inside);
    icon_member = packed ? "app/" + inside : "icon.png";
    if (!packed) {
      struct stat st;
      stat(icon.c_str(), &st);
      files.push_back({icon, icon_member, static_cast<uint64_t>(st.st_size), 0644, ""});
    }
  }
  if (request.assets_dir.empty() || !IsRegularFile(request.assets_dir + "/backends.toml")) {
    return WithExit(absl::FailedPreconditionError(absl::StrCat(
                        "app build: the launcher's assets are missing (", request.assets_dir,
                        "/backends.toml); reinstall inferenceutils")),
                    kExitConfig);
  }
  if (auto st = Collect(RealPath(request.assets_dir), "", "assets/", {"bundles"}, {}, &files); !st.ok()) return st;

  // Bundles: each a runtime bundle, each name once.
  std::vector<std::pair<std::string, nlohmann::json>> bundles;
  std::set<std::string> bundle_names;
  for (const auto& b : s.bundles) {
    std::string path = MakeAbsolute(b);
    if (!IsRegularFile(path)) return UsageError(absl::StrCat("app build: bundle ", b, " does not exist"));
    absl::StatusOr<nlohmann::json> manifest = ReadBundleManifest(path);
    if (!manifest.ok()) {
      return ConfigError(absl::StrCat("app build: ", b, " is not a usable runtime bundle: ", manifest.status().message()));
    }
    std::string name = Basename(path);
    if (!absl::EndsWith(name, ".tar.zst")) name += ".tar.zst";
    if (!bundle_names.insert(name).second) {
      return UsageError(absl::StrCat("app build: two bundles are named ", name, "; rename one"));
    }
    bundles.emplace_back(path, *manifest);
  }

  // The launcher to copy: this one, without a payload of its own.
  absl::StatusOr<std::optional<AppFile>> self = OpenAppFile(request.launcher);
  if (!self.ok()) return self.status();
  struct stat launcher_st;
  if (stat(request.launcher.c_str(), &launcher_st) != 0) {
    return StoreError(absl::StrCat("cannot read the launcher ", request.launcher, ": ", std::strerror(errno)));
  }
  const uint64_t launcher_bytes =
      self->has_value() ? (*self)->footer.payload_offset : static_cast<uint64_t>(launcher_st.st_size);

  Cleanup cleanup;
  const std::string tmp = absl::StrCat(output, ".tmp.", getpid());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0755);
  if (fd < 0) return StoreError(absl::StrCat("cannot write ", tmp, ": ", std::strerror(errno)));
  cleanup.paths.push_back(tmp);
  struct FdCloser {
    int& fd;
    ~FdCloser() {
      if (fd >= 0) close(fd);
    }
  } closer{fd};

  progress.Step("copying the launcher");
  if (auto st = CopyPrefix(request.launcher, launcher_bytes, fd, nullptr); !st.ok()) return st;
  HashingWriter payload;  // everything written after the launcher: hashed as the payload
  payload.fd = fd;
  std::string header(kAppHeaderSize, '\0');
  header.replace(0, 8, kAppHeaderMagic, 8);
  PutU32(header, 8, kAppFormat);
  if (!payload.Write(header)) return StoreError(absl::StrCat("cannot write ", tmp, ": ", payload.error));

  // The archive.
  progress.Step("compressing the app");
  ZstdSink sink;
  Sha256 archive_sha;
  sink.out = [&](absl::string_view chunk) {
    archive_sha.Update(chunk);
    if (!payload.Write(chunk)) sink.error = payload.error;
    return payload.error.empty();
  };
  sink.Start(level, 2);
  struct archive* a = NewTarWriter(&sink);
  absl::Status failure;
  auto fail = [&](absl::string_view what) {
    if (!failure.ok()) return;
    std::string why = !sink.error.empty() ? sink.error : archive_error_string(a) ? archive_error_string(a) : "?";
    failure = StoreError(absl::StrCat("cannot pack ", what, " into ", output, ": ", why));
  };
  std::set<std::string> dirs;
  auto add_header = [&](const std::string& path, int type, int mode, uint64_t size, const std::string& target = "") {
    int rc = WriteFixedHeader(a, path, type, mode, size, target);
    if (rc != ARCHIVE_OK) fail(path);
    return rc == ARCHIVE_OK;
  };
  std::sort(files.begin(), files.end(), [](const PackedFile& x, const PackedFile& y) { return x.member < y.member; });
  std::string buf(1 << 20, '\0');
  uint64_t unpacked = 0;
  for (const PackedFile& f : files) {
    if (!failure.ok()) break;
    // Parent folders first, once each.
    for (size_t slash = f.member.find('/'); slash != std::string::npos; slash = f.member.find('/', slash + 1)) {
      std::string dir = f.member.substr(0, slash);
      if (dirs.insert(dir).second) add_header(dir, AE_IFDIR, 0755, 0);
    }
    if (!f.link_target.empty()) {
      if (!add_header(f.member, AE_IFLNK, 0777, 0, f.link_target)) break;
      continue;
    }
    struct stat st;
    if (stat(f.source.c_str(), &st) != 0 || static_cast<uint64_t>(st.st_size) != f.size) {
      failure = StoreError(absl::StrCat("app build: ", f.source, " changed while packing"));
      break;
    }
    if (!add_header(f.member, AE_IFREG, f.mode, f.size)) break;
    int in = open(f.source.c_str(), O_RDONLY | O_CLOEXEC);
    uint64_t left = f.size;
    while (in >= 0 && left > 0) {
      ssize_t n = read(in, buf.data(), std::min<uint64_t>(buf.size(), left));
      if (n <= 0) break;
      if (archive_write_data(a, buf.data(), static_cast<size_t>(n)) < 0) break;
      left -= static_cast<uint64_t>(n);
    }
    if (in >= 0) close(in);
    if (left != 0) fail(absl::StrCat(f.source, " (unreadable, or changed while packing?)"));
    unpacked += f.size;
  }
  if (archive_write_close(a) != ARCHIVE_OK) fail("the end of the archive");
  archive_write_free(a);
  if (failure.ok() && !sink.Finish()) fail("the zstd frame");
  ZSTD_freeCCtx(sink.cctx);
  if (!failure.ok()) return failure;
  const uint64_t archive_offset = kAppHeaderSize;

  // A file appended to the payload as it is: where it lies, its size and SHA-256.
  struct Appended {
    uint64_t offset = 0, size = 0;
    std::string sha256;
  };
  auto append = [&](const std::string& path) -> absl::StatusOr<Appended> {
    Appended out;
    out.offset = payload.written;
    Sha256 sha;
    int in = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (in < 0) return StoreError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
    for (;;) {
      ssize_t n = read(in, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        close(in);
        return StoreError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
      }
      if (n == 0) break;
      absl::string_view chunk(buf.data(), static_cast<size_t>(n));
      sha.Update(chunk);
      if (!payload.Write(chunk)) {
        close(in);
        return StoreError(absl::StrCat("cannot write ", tmp, ": ", payload.error));
      }
      out.size += static_cast<uint64_t>(n);
    }
    close(in);
    out.sha256 = sha.HexDigest();
    return out;
  };

  // The bundles, as they are.
  nlohmann::json bundle_list = nlohmann::json::array();
  for (const auto& [path, manifest] : bundles) {
    progress.Step(absl::StrCat("adding bundle ", Basename(path)));
    absl::StatusOr<Appended> added = append(path);
    if (!added.ok()) return added.status();
    std::string name = Basename(path);
    if (!absl::EndsWith(name, ".tar.zst")) name += ".tar.zst";
    bundle_list.push_back({{"name", name},
                           {"offset", added->offset},
                           {"size", added->size},
                           {"sha256", added->sha256},
                           {"key", manifest.contains("key") && manifest["key"].is_string() ? manifest["key"] : ""},
                           {"backend", manifest.contains("backend") && manifest["backend"].is_string() ? manifest["backend"] : ""}});
  }

  // The Python home (made once by the build as <home>.tar.zst): the app runs where no Python is.
  nlohmann::json home_entry = nullptr;
  if (!request.home_archive.empty()) {
    progress.Step("adding the Python home");
    if (!IsRegularFile(request.home_archive)) {
      return WithExit(absl::FailedPreconditionError(absl::StrCat(
                          "app build: the Python home archive ", request.home_archive,
                          " is missing; reinstall inferenceutils (or rebuild it)")),
                      kExitInstall);
    }
    absl::StatusOr<Appended> added = append(request.home_archive);
    if (!added.ok()) return added.status();
    home_entry = {{"id", request.home_id}, {"offset", added->offset}, {"size", added->size}, {"sha256", added->sha256}};
  }

  // app.json, then the footer.
  nlohmann::json app_manifest = {
      {"app_format", kAppFormat},
      {"name", s.name},
      {"version", s.version},
      {"entry", entry.script.empty() ? entry.ToString() : ""},
      {"script", entry.script},
      {"spec", spec_member},
      {"spec_summary", spec_summary},
      {"icon", icon_member},
      {"launcher_version", IU_VERSION},
      {"python", EmbeddedPythonVersion()},
      {"archive",
       {{"offset", archive_offset},
        {"size", sink.size},
        {"sha256", archive_sha.HexDigest()},
        {"files", app_files},
        {"members", files.size()},
        {"unpacked_bytes", unpacked}}},
      {"bundles", bundle_list},
  };
  if (!home_entry.is_null()) app_manifest["home"] = home_entry;
  std::string manifest_text = DumpJson(app_manifest, 1) + "\n";
  AppFooter footer;
  footer.payload_offset = launcher_bytes;
  footer.manifest_offset = payload.written;
  footer.manifest_size = manifest_text.size();
  if (!payload.Write(manifest_text)) return StoreError(absl::StrCat("cannot write ", tmp, ": ", payload.error));
  footer.payload_size = payload.written;
  footer.sha256 = payload.sha.HexDigest();
  std::string footer_bytes = EncodeAppFooter(footer);
  if (write(fd, footer_bytes.data(), footer_bytes.size()) != static_cast<ssize_t>(footer_bytes.size()) ||
      fsync(fd) != 0 || fchmod(fd, 0755) != 0) {
    return StoreError(absl::StrCat("cannot write ", tmp, ": ", std::strerror(errno)));
  }
  close(fd);
  fd = -1;

  // OUT.png and OUT.desktop beside it.
  AppBuildResult result;
  std::string icon_out;
  if (!s.icon.empty()) {
    icon_out = output + ".png";
    std::string icon_tmp = absl::StrCat(icon_out, ".tmp.", getpid());
    int ifd = open(icon_tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (ifd < 0) return StoreError(absl::StrCat("cannot write ", icon_tmp, ": ", std::strerror(errno)));
    cleanup.paths.push_back(icon_tmp);
    struct stat st;
    stat(s.icon.c_str(), &st);
    absl::Status copied = CopyPrefix(s.icon, static_cast<uint64_t>(st.st_size), ifd, nullptr);
    close(ifd);
    if (!copied.ok()) return copied;
  }
  std::string desktop_tmp = absl::StrCat(output, ".desktop.tmp.", getpid());
  {
    std::string text = DesktopEntry(s.name, output, icon_out, absl::StrCat(s.name, " ", s.version));
    int dfd = open(desktop_tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0755);
    if (dfd < 0) return StoreError(absl::StrCat("cannot write ", desktop_tmp, ": ", std::strerror(errno)));
    cleanup.paths.push_back(desktop_tmp);
    bool ok = write(dfd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    close(dfd);
    if (!ok) return StoreError(absl::StrCat("cannot write ", desktop_tmp, ": ", std::strerror(errno)));
  }
  // Publish: OUT last, so a visible OUT always has its desktop entry.
  if (!icon_out.empty() && rename(absl::StrCat(icon_out, ".tmp.", getpid()).c_str(), icon_out.c_str()) != 0) {
    return StoreError(absl::StrCat("cannot write ", icon_out, ": ", std::strerror(errno)));
  }
  if (rename(desktop_tmp.c_str(), (output + ".desktop").c_str()) != 0) {
    return StoreError(absl::StrCat("cannot write ", output, ".desktop: ", std::strerror(errno)));
  }
  if (rename(tmp.c_str(), output.c_str()) != 0) {
    int err = errno;
    unlink((output + ".desktop").c_str());
    if (!icon_out.empty()) unlink(icon_out.c_str());
    return StoreError(absl::StrCat("cannot write ", output, ": ", std::strerror(err)));
  }
  cleanup.paths.clear();
  progress.Finish();

  result.output = output;
  result.desktop = output + ".desktop";
  result.icon = icon_out;
  result.sha256 = footer.sha256;
  result.files = app_files;
  result.payload_bytes = footer.payload_size;
  result.launcher_bytes = launcher_bytes;
  result.manifest = app_manifest;
  return result;
}

}  // namespace iu
