// An app's payload in the store: verified once per copy of the file, extracted once per payload
// (<store>/apps/<id>, under a lock, through a staging directory renamed into place).
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "inferenceutils/app.h"
#include "inferenceutils/digest.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/lock.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/store.h"
#include "app_internal.h"
#include "link_guard.h"

namespace iu {
namespace {

using app_internal::Damaged;
using app_internal::ReadAt;

// A safe relative member path: no absolute, no "..", no empty or "." components.
std::string UnsafePath(const std::string& path, bool app_layout = true) {
  if (path.empty()) return "empty path";
  if (path[0] == '/') return "absolute path";
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part == "..") return "path has a '..' component";
    if (part.empty() || part == ".") return "path has an empty or '.' component";
  }
  std::string top = path.substr(0, path.find('/'));
  if (app_layout && top != "app" && top != "assets" && top != "spec.toml" && top != "icon.png") return "not part of an app";
  return "";
}

// The archive's bytes [offset, offset+size) of `fd`, decompressed, for libarchive.
struct RangeReader {
  int fd = -1;
  uint64_t offset = 0, left = 0;
  ZSTD_DCtx* dctx = nullptr;
  std::string in, out;
  ZSTD_inBuffer ib{nullptr, 0, 0};
  size_t last = 0;
  bool any = false;
  std::string error;
};

la_ssize_t RangeRead(struct archive*, void* context, const void** buffer) {
  auto* r = static_cast<RangeReader*>(context);
  for (;;) {
    if (r->ib.pos < r->ib.size) {
      ZSTD_outBuffer ob{r->out.data(), r->out.size(), 0};
      r->last = ZSTD_decompressStream(r->dctx, &ob, &r->ib);
      if (ZSTD_isError(r->last)) {
        r->error = absl::StrCat("corrupt zstd data: ", ZSTD_getErrorName(r->last));
        return -1;
      }
      if (ob.pos > 0) {
        *buffer = r->out.data();
        return static_cast<la_ssize_t>(ob.pos);
      }
      continue;
    }
    if (r->left == 0) {
      // Flush what the decoder still holds.
      if (r->any && r->last != 0) {
        ZSTD_outBuffer ob{r->out.data(), r->out.size(), 0};
        ZSTD_inBuffer empty{nullptr, 0, 0};
        r->last = ZSTD_decompressStream(r->dctx, &ob, &empty);
        if (ZSTD_isError(r->last)) {
          r->error = absl::StrCat("corrupt zstd data: ", ZSTD_getErrorName(r->last));
          return -1;
        }
        if (ob.pos > 0) {
          *buffer = r->out.data();
          return static_cast<la_ssize_t>(ob.pos);
        }
        r->error = "truncated zstd stream";
        return -1;
      }
      *buffer = nullptr;
      return 0;
    }
    size_t n = static_cast<size_t>(std::min<uint64_t>(r->in.size(), r->left));
    std::string chunk;
    if (!ReadAt(r->fd, r->offset, n, &chunk)) {
      r->error = absl::StrCat("cannot read: ", std::strerror(errno));
      return -1;
    }
    std::memcpy(r->in.data(), chunk.data(), n);
    r->offset += n;
    r->left -= n;
    r->ib = ZSTD_inBuffer{r->in.data(), n, 0};
    r->any = true;
  }
}

absl::Status WriteAll(int fd, absl::string_view data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::InternalError(std::strerror(errno));
    off += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> ParseManifest(const std::string& text, const std::string& where) {
  nlohmann::json m = nlohmann::json::parse(text, nullptr, false);
  if (m.is_discarded() || !m.is_object()) return Damaged(where, "its app.json is not valid JSON");
  // Every field the launcher reads has the type it reads it as, so no later access can throw.
  auto string_or_absent = [&](const nlohmann::json& j, const char* name) {
    return !j.contains(name) || j[name].is_string();
  };
  auto unsigned_field = [&](const nlohmann::json& j, const char* name) {
    return j.is_object() && j.contains(name) && j[name].is_number_unsigned();
  };
  if (!m.contains("app_format") || !m["app_format"].is_number_integer()) {
    return Damaged(where, "its app.json has no app_format");
  }
  for (const char* name : {"name", "version", "entry", "script", "spec", "icon", "launcher_version", "python"}) {
    if (!string_or_absent(m, name)) return Damaged(where, absl::StrCat("its app.json's '", name, "' is not a string"));
  }
  if (!m.contains("archive") || !unsigned_field(m["archive"], "offset") || !unsigned_field(m["archive"], "size")) {
    return Damaged(where, "its app.json has no archive");
  }
  if (m.contains("bundles")) {
    if (!m["bundles"].is_array()) return Damaged(where, "its app.json's 'bundles' is not a list");
    for (const auto& b : m["bundles"]) {
      if (!b.is_object() || !b.contains("name") || !b["name"].is_string() || !unsigned_field(b, "offset") ||
          !unsigned_field(b, "size") || !string_or_absent(b, "key") || !string_or_absent(b, "backend") ||
          !string_or_absent(b, "sha256")) {
        return Damaged(where, "its app.json has a malformed bundle entry");
      }
    }
  }
  if (m.contains("home")) {
    const nlohmann::json& h = m["home"];
    if (!h.is_object() || !h.contains("id") || !h["id"].is_string() || !unsigned_field(h, "offset") ||
        !unsigned_field(h, "size")) {
      return Damaged(where, "its app.json has a malformed Python home entry");
    }
  }
  if (m.value("app_format", 0) != kAppFormat) {
    return WithExit(absl::FailedPreconditionError(absl::StrCat("app ", where, ": app format ", m.value("app_format", 0),
                                                               " is not ", kAppFormat,
                                                               " (built by another inferenceutils version)")),
                    kExitBundle);
  }
  return m;
}

// Extracts the tar.zst bytes [offset, offset+size) of the app file `fd` into `dir`: folders and
// regular files only, every member path checked.
absl::Status ExtractTar(const AppFile& app, int fd, uint64_t offset, uint64_t size, const std::string& dir,
                        bool app_layout) {
  RangeReader reader;
  reader.fd = fd;
  reader.offset = offset;
  reader.left = size;
  reader.dctx = ZSTD_createDCtx();
  ZSTD_DCtx_setParameter(reader.dctx, ZSTD_d_windowLogMax, 27);
  reader.in.resize(ZSTD_DStreamInSize() * 4);
  reader.out.resize(ZSTD_DStreamOutSize() * 4);
  struct archive* a = archive_read_new();
  archive_read_support_format_tar(a);
  archive_read_open(a, &reader, nullptr, RangeRead, nullptr);
  absl::Status status;
  LinkGuard links("the app");
  std::string block(1 << 20, '\0');
  for (;;) {
    struct archive_entry* e = nullptr;
    int rc = archive_read_next_header(a, &e);
    if (rc == ARCHIVE_EOF) break;
    if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) {
      status = Damaged(app.path, absl::StrCat("its archive cannot be read (",
                                              reader.error.empty() ? archive_error_string(a) ? archive_error_string(a) : "?"
                                                                   : reader.error,
                                              ")"));
      break;
    }
    std::string member = archive_entry_pathname(e) ? archive_entry_pathname(e) : "";
    mode_t type = archive_entry_filetype(e);
    if (type == AE_IFDIR && member.size() > 1 && member.back() == '/') member.pop_back();
    if (std::string why = UnsafePath(member, app_layout); !why.empty()) {
      status = Damaged(app.path, absl::StrCat("member ", member, ": ", why));
      break;
    }
    if (archive_entry_hardlink(e) || (type != AE_IFDIR && type != AE_IFREG && (type != AE_IFLNK || !app_layout))) {
      status = Damaged(app.path, absl::StrCat("member ", member, ": neither a file, a folder nor a symlink"));
      break;
    }
    if (std::string why = links.CheckPath(member, type == AE_IFLNK); !why.empty()) {
      status = Damaged(app.path, absl::StrCat("member ", member, ": ", why));
      break;
    }
    std::string out = dir + "/" + member;
    if (type == AE_IFLNK) {
      // A link app build kept (it stayed inside APP_DIR); judged again here, chain and all.
      std::string target = archive_entry_symlink(e) ? archive_entry_symlink(e) : "";
      if (std::string why = links.AddSymlink(member, target); !why.empty()) {
        status = Damaged(app.path, absl::StrCat("member ", member, ": ", why));
        break;
      }
      if (symlink(target.c_str(), out.c_str()) != 0) {
        status = StoreError(absl::StrCat("cannot create ", out, ": ", std::strerror(errno)));
        break;
      }
      continue;
    }
    if (type == AE_IFDIR) {
      if (mkdir(out.c_str(), 0755) != 0 && errno != EEXIST) {
        status = StoreError(absl::StrCat("cannot create ", out, ": ", std::strerror(errno)));
        break;
      }
      continue;
    }
    int mode = (archive_entry_perm(e) & 0111) ? 0755 : 0644;
    int ofd = open(out.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (ofd < 0) {
      status = StoreError(absl::StrCat("cannot create ", out, ": ", std::strerror(errno)));
      break;
    }
    for (;;) {
      la_ssize_t n = archive_read_data(a, block.data(), block.size());
      if (n == 0) break;
      if (n < 0) {
        status = Damaged(app.path, absl::StrCat("member ", member, ": truncated (",
                                                reader.error.empty() ? "corrupt tar" : reader.error, ")"));
        break;
      }
      if (auto w = WriteAll(ofd, absl::string_view(block.data(), static_cast<size_t>(n))); !w.ok()) {
        status = StoreError(absl::StrCat("cannot write ", out, ": ", w.message()));
        break;
      }
    }
    close(ofd);
    if (!status.ok()) break;
  }
  archive_read_free(a);
  ZSTD_freeDCtx(reader.dctx);
  return status;
}

// The Python home the app carries, extracted once per home id into <store>/homes/<id>, shared by
// every app of that home: under <store>/locks/home-<id>.lock, through a staging folder.
absl::Status EnsureHome(const std::string& store_root, const AppFile& app, int fd, const nlohmann::json& home,
                        uint64_t lo, uint64_t hi, Progress& progress) {
  std::string id = home.value("id", "");
  uint64_t offset = home.value("offset", uint64_t{0}), size = home.value("size", uint64_t{0});
  bool id_ok = !id.empty() && id[0] != '.' &&
               id.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") == std::string::npos;
  if (!id_ok || offset < lo || size > hi || offset > hi - size) {
    return Damaged(app.path, absl::StrCat("its Python home entry '", id, "' does not fit the payload"));
  }
  const std::string dir = store_root + "/homes/" + id;
  if (IsRegularFile(dir + "/home.json")) return absl::OkStatus();
  if (auto s = MakeDirs(store_root + "/homes", ""); !s.ok()) return s;
  absl::StatusOr<FileLock> lock = FileLock::Exclusive(store_root + "/locks/home-" + id + ".lock", absl::Hours(1),
                                                      [&](long) { progress.Note("waiting for another start to extract the Python home"); });
  if (!lock.ok()) return lock.status();
  if (IsRegularFile(dir + "/home.json")) return absl::OkStatus();
  progress.Step("extracting the Python home");
  const std::string staging = absl::StrCat(store_root, "/homes/.tmp-", id, ".", getpid());
  RemoveTree(staging);
  if (PathExists(dir)) RemoveTree(dir);  // not whole (no home.json): a crashed extraction before renaming
  if (mkdir(staging.c_str(), 0755) != 0) return StoreError(absl::StrCat("cannot create ", staging, ": ", std::strerror(errno)));
  absl::Status status = ExtractTar(app, fd, app.footer.payload_offset + offset, size, staging, false);
  if (status.ok() && !IsRegularFile(staging + "/home.json")) status = Damaged(app.path, "its Python home has no home.json");
  if (status.ok() && rename(staging.c_str(), dir.c_str()) != 0) {
    status = StoreError(absl::StrCat("cannot rename ", staging, " to ", dir, ": ", std::strerror(errno)));
  }
  if (!status.ok()) RemoveTree(staging);
  return status;
}

// The app's own launcher tree inside `dir` (the install layout the launcher expects): the
// launcher (the app file without its payload), its assets, and a view of the shared home.
absl::Status MakeLauncherTree(const AppFile& app, int fd, const std::string& dir, const std::string& home_id) {
  for (const char* sub : {"/bin", "/share", "/lib", "/lib/inferenceutils", "/lib/inferenceutils/python3.11",
                          "/lib/inferenceutils/python3.11/bin"}) {
    if (mkdir((dir + sub).c_str(), 0755) != 0 && errno != EEXIST) {
      return StoreError(absl::StrCat("cannot create ", dir, sub, ": ", std::strerror(errno)));
    }
  }
  const std::string launcher = dir + "/bin/inferenceutils";
  int out = open(launcher.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0755);
  if (out < 0) return StoreError(absl::StrCat("cannot create ", launcher, ": ", std::strerror(errno)));
  std::string chunk;
  absl::Status copy;
  for (uint64_t done = 0; done < app.footer.payload_offset && copy.ok();) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(1 << 20, app.footer.payload_offset - done));
    if (!ReadAt(fd, done, n, &chunk)) copy = Damaged(app.path, "its launcher cannot be read");
    else if (auto w = WriteAll(out, chunk); !w.ok()) copy = StoreError(absl::StrCat("cannot write ", launcher, ": ", w.message()));
    done += n;
  }
  close(out);
  if (!copy.ok()) return copy;
  const std::string home = dir + "/lib/inferenceutils/python3.11";
  const std::string shared = "../../../../../homes/" + home_id;  // relative: the store may move
  std::vector<std::pair<std::string, std::string>> links = {
      {dir + "/share/inferenceutils", "../assets"},
      {home + "/bin/python3.11", "../../../../bin/inferenceutils"},
      {home + "/bin/python3", "python3.11"},
      {home + "/lib", shared + "/lib"},
      {home + "/include", shared + "/include"},
      {home + "/share", shared + "/share"},
      {home + "/home.json", shared + "/home.json"},
  };
  for (const auto& [link, target] : links) {
    if (symlink(target.c_str(), link.c_str()) != 0) {
      return StoreError(absl::StrCat("cannot create ", link, ": ", std::strerror(errno)));
    }
  }
  return absl::OkStatus();
}

// Extracts the verified payload of `app` into the empty directory `dir`.
absl::Status Extract(const std::string& store_root, const AppFile& app, const std::string& dir, Progress& progress) {
  const AppFooter& f = app.footer;
  int fd = open(app.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return StoreError(absl::StrCat("cannot read ", app.path, ": ", std::strerror(errno)));
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  std::string text;
  if (!ReadAt(fd, f.payload_offset + f.manifest_offset, f.manifest_size, &text)) return Damaged(app.path, "cannot read app.json");
  absl::StatusOr<nlohmann::json> manifest = ParseManifest(text, app.path);
  if (!manifest.ok()) return manifest.status();
  uint64_t archive_offset = 0, archive_size = 0;
  try {
    archive_offset = manifest->at("archive").at("offset").get<uint64_t>();
    archive_size = manifest->at("archive").at("size").get<uint64_t>();
  } catch (const nlohmann::json::exception&) {
    return Damaged(app.path, "its app.json has no archive");
  }
  if (archive_offset < kAppHeaderSize || archive_size > f.manifest_offset || archive_offset > f.manifest_offset - archive_size) {
    return Damaged(app.path, "its archive lies outside the payload");
  }

  progress.Step("extracting the app");
  if (auto status = ExtractTar(app, fd, f.payload_offset + archive_offset, archive_size, dir, true); !status.ok()) {
    return status;
  }

  if (manifest->contains("home") && manifest->at("home").is_object()) {
    const nlohmann::json& home = manifest->at("home");
    if (auto s = EnsureHome(store_root, app, fd, home, archive_offset + archive_size, f.manifest_offset, progress); !s.ok()) {
      return s;
    }
    if (auto s = MakeLauncherTree(app, fd, dir, home.value("id", "")); !s.ok()) return s;
  }

  // Embedded bundles, copied out as they are.
  const nlohmann::json bundles = manifest->value("bundles", nlohmann::json::array());
  if (!bundles.empty()) {
    progress.Step("extracting the app's runtime bundles");
    if (mkdir((dir + "/bundles").c_str(), 0755) != 0) {
      return StoreError(absl::StrCat("cannot create ", dir, "/bundles: ", std::strerror(errno)));
    }
  }
  for (const auto& b : bundles) {
    std::string name = b.value("name", "");
    uint64_t offset = b.value("offset", uint64_t{0}), size = b.value("size", uint64_t{0});
    if (name.empty() || name.find('/') != std::string::npos || name[0] == '.' || offset < archive_offset + archive_size ||
        size > f.manifest_offset || offset > f.manifest_offset - size) {
      return Damaged(app.path, absl::StrCat("bundle entry '", name, "' does not fit the payload"));
    }
    std::string out = dir + "/bundles/" + name;
    int ofd = open(out.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (ofd < 0) return StoreError(absl::StrCat("cannot create ", out, ": ", std::strerror(errno)));
    uint64_t done = 0;
    absl::Status copy;
    std::string chunk;
    while (done < size && copy.ok()) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(1 << 20, size - done));
      if (!ReadAt(fd, f.payload_offset + offset + done, n, &chunk)) {
        copy = Damaged(app.path, absl::StrCat("bundle ", name, " cannot be read"));
      } else if (auto w = WriteAll(ofd, chunk); !w.ok()) {
        copy = StoreError(absl::StrCat("cannot write ", out, ": ", w.message()));
      }
      done += n;
    }
    close(ofd);
    if (!copy.ok()) return copy;
  }
  return WriteFileAtomic(dir + "/app.json", text);
}

// Checks the SHA-256 of the payload against the footer's.
absl::Status Verify(const AppFile& app, Progress& progress) {
  progress.Step("verifying the app");
  int fd = open(app.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return StoreError(absl::StrCat("cannot read ", app.path, ": ", std::strerror(errno)));
  posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  Sha256 sha;
  std::string buf(1 << 20, '\0');
  uint64_t offset = app.footer.payload_offset, left = app.footer.payload_size;
  bool ok = true;
  while (left > 0) {
    ssize_t n = pread(fd, buf.data(), std::min<uint64_t>(buf.size(), left), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = false;
      break;
    }
    sha.Update(absl::string_view(buf.data(), static_cast<size_t>(n)));
    offset += static_cast<uint64_t>(n);
    left -= static_cast<uint64_t>(n);
  }
  close(fd);
  if (!ok) return Damaged(app.path, "its payload cannot be read whole");
  std::string actual = sha.HexDigest();
  if (actual != app.footer.sha256) {
    return Damaged(app.path, absl::StrCat("its payload's SHA-256 is ", actual, ", not the ", app.footer.sha256,
                                          " its footer records"));
  }
  return absl::OkStatus();
}

// The installed app at `dir`, or an error when it is not whole.
absl::StatusOr<InstalledApp> Load(const std::string& dir) {
  absl::StatusOr<std::string> text = ReadFile(dir + "/app.json");
  if (!text.ok()) return text.status();
  absl::StatusOr<nlohmann::json> manifest = ParseManifest(*text, dir);
  if (!manifest.ok()) return manifest.status();
  InstalledApp app;
  app.dir = dir;
  app.manifest = *std::move(manifest);
  app.files_dir = dir + "/app";
  app.assets_dir = dir + "/assets";
  std::string spec = app.manifest.value("spec", "");
  if (!spec.empty()) app.spec_file = dir + "/" + spec;
  for (const auto& b : app.manifest.value("bundles", nlohmann::json::array())) {
    app.bundles.push_back(dir + "/bundles/" + b.value("name", ""));
  }
  std::string script = app.manifest.value("script", "");
  if (!script.empty()) {
    app.entry.script = script;
  } else {
    absl::StatusOr<AppEntry> entry = ParseAppEntry(app.manifest.value("entry", ""));
    if (!entry.ok()) return Damaged(dir, "its app.json has no valid entry");
    app.entry = *entry;
  }
  if (!IsDirectory(app.files_dir)) return absl::NotFoundError(absl::StrCat(app.files_dir, " is missing"));
  if (app.manifest.contains("home")) {
    // The launcher tree, and the shared home it sees (a pruned home means extracting again).
    if (!IsRegularFile(dir + "/bin/inferenceutils") || !IsRegularFile(dir + "/lib/inferenceutils/python3.11/home.json")) {
      return absl::NotFoundError(absl::StrCat(dir, "/bin/inferenceutils or its Python home is missing"));
    }
    app.launcher_prefix = dir;
  }
  return app;
}

}  // namespace

std::string AppInstallDir(const std::string& store_root, const std::string& id) {
  return store_root + "/apps/" + id;
}

absl::StatusOr<nlohmann::json> ReadAppManifest(const AppFile& app) {
  int fd = open(app.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return StoreError(absl::StrCat("cannot read ", app.path, ": ", std::strerror(errno)));
  std::string text;
  bool ok = ReadAt(fd, app.footer.payload_offset + app.footer.manifest_offset, app.footer.manifest_size, &text);
  close(fd);
  if (!ok) return Damaged(app.path, "cannot read app.json");
  return ParseManifest(text, app.path);
}

absl::StatusOr<InstalledApp> InstallApp(const std::string& store_root, const AppFile& app,
                                        absl::Duration lock_timeout, Progress& progress) {
  const std::string id = app.footer.id();
  const std::string dir = AppInstallDir(store_root, id);
  const std::string marker = dir + "/verified/" + app.identity;
  // Warm: this very file was verified against an extracted payload before.
  if (PathExists(marker)) {
    absl::StatusOr<InstalledApp> installed = Load(dir);
    if (installed.ok()) return installed;
  }
  if (auto status = Verify(app, progress); !status.ok()) return status;

  const std::string hint = "set INFERENCEUTILS_HOME or --inferenceutils-home=DIR to a writable folder";
  if (auto s = MakeDirs(store_root + "/apps", hint); !s.ok()) return s;
  if (auto s = MakeDirs(store_root + "/locks", hint); !s.ok()) return s;
  bool extracted = false;
  absl::StatusOr<InstalledApp> installed = Load(dir);
  if (!installed.ok()) {
    absl::StatusOr<FileLock> lock = FileLock::Exclusive(
        store_root + "/locks/app-" + id + ".lock", lock_timeout,
        [&](long pid) { progress.Note(absl::StrCat("waiting for another start of this app (pid ", pid, ") to extract it")); });
    if (!lock.ok()) return lock.status();
    installed = Load(dir);
    if (!installed.ok()) {
      // Not there, or not whole (a folder someone emptied): extract it again, beside it first.
      const std::string staging = absl::StrCat(store_root, "/apps/.tmp-", id, ".", getpid());
      RemoveTree(staging);
      if (PathExists(dir)) {
        std::string old = absl::StrCat(store_root, "/apps/.old-", id, ".", getpid());
        if (rename(dir.c_str(), old.c_str()) == 0) RemoveTree(old);
      }
      if (mkdir(staging.c_str(), 0755) != 0) {
        return StoreError(absl::StrCat("cannot create ", staging, ": ", std::strerror(errno), "; ", hint));
      }
      absl::Status status = Extract(store_root, app, staging, progress);
      if (status.ok() && rename(staging.c_str(), dir.c_str()) != 0) {
        status = StoreError(absl::StrCat("cannot rename ", staging, " to ", dir, ": ", std::strerror(errno)));
      }
      if (!status.ok()) {
        RemoveTree(staging);
        return status;
      }
      extracted = true;
      installed = Load(dir);
      if (!installed.ok()) return installed.status();
    }
  }
  if (auto s = MakeDirs(dir + "/verified", hint); !s.ok()) return s;
  int fd = open(marker.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd >= 0) {
    std::string line = app.path + "\n";
    (void)!write(fd, line.data(), line.size());
    close(fd);
  }
  installed->verified = true;
  installed->extracted = extracted;
  return installed;
}

}  // namespace iu
