// Unpacking a bundle in one streaming pass: a decompressor thread (zstd) feeds libarchive's tar
// reader on this thread, which checks every member against the bundle's manifest and hands file
// contents to a pool that hashes and writes them. Then relocation to the new prefix.
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "bundle_internal.h"
#include "link_guard.h"
#include "inferenceutils/env_values.h"
#include "inferenceutils/json_text.h"
#include "inferenceutils/bundle.h"
#include "inferenceutils/digest.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/provision.h"
#include "inferenceutils/python.h"
#include "inferenceutils/python_home.h"

namespace iu {
namespace {

using bundle_internal::Refused;

constexpr size_t kBlock = 1 << 20;
constexpr size_t kSmallFile = 16 << 20;        // whole-file jobs for the pool up to this size
constexpr uint64_t kMaxInFlight = 256ull << 20;

// Decompressor thread → tar reader: a bounded queue of decompressed blocks.
class Stream {
 public:
  // `paths`: one file, or the parts of a bundle in parts, read one after the other as one stream
  // (each part ends at a zstd frame's end).
  Stream(std::vector<std::string> paths, size_t max_blocks, uint64_t max_output, bool hash_input)
      : paths_(std::move(paths)), max_blocks_(max_blocks), max_output_(max_output), hash_input_(hash_input) {}

  void Start() { thread_ = std::thread([this] { Run(); }); }
  // Stops the decompressor (when the reader gives up early) and waits for it.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  ~Stream() { Stop(); }

  // The next block; false at the end or on error.
  bool Next(std::string* block) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !blocks_.empty() || done_; });
    if (blocks_.empty()) return false;
    *block = std::move(blocks_.front());
    blocks_.pop_front();
    cv_.notify_all();
    return true;
  }
  std::string error() {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }
  std::string input_sha256() { return input_sha_; }

 private:
  void Finish(std::string error) {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = std::move(error);
    done_ = true;
    cv_.notify_all();
  }
  bool Push(std::string block) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return blocks_.size() < max_blocks_ || stop_; });
    if (stop_) return false;
    blocks_.push_back(std::move(block));
    cv_.notify_all();
    return true;
  }
  void Run() {
    size_t next_part = 0;
    int fd = -1;
    auto open_next = [&]() -> std::string {
      const std::string& p = paths_[next_part++];
      fd = open(p.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return absl::StrCat("cannot read ", paths_.size() > 1 ? p : "it", ": ", std::strerror(errno));
      posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
      return "";
    };
    if (std::string e = open_next(); !e.empty()) return Finish(e);
    ZSTD_DCtx* dctx = ZSTD_createDCtx();
    ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, 27);  // bounds the decoder's memory
    Sha256 sha;
    std::string in(ZSTD_DStreamInSize() * 8, '\0');
    std::string error;
    size_t last = 0;
    uint64_t produced = 0;
    bool any = false;
    for (;;) {
      ssize_t n = read(fd, in.data(), in.size());
      if (n < 0) {
        error = absl::StrCat("read error: ", std::strerror(errno));
        break;
      }
      if (n == 0) {
        if (!any) error = "empty file";
        else if (last != 0) error = "truncated zstd stream (the file ends inside a frame)";
        if (error.empty() && next_part < paths_.size()) {  // the next part continues the stream
          close(fd);
          error = open_next();
          if (error.empty()) continue;
          fd = -1;
        }
        break;
      }
      any = true;
      if (hash_input_) sha.Update(absl::string_view(in.data(), static_cast<size_t>(n)));
      ZSTD_inBuffer ib{in.data(), static_cast<size_t>(n), 0};
      while (ib.pos < ib.size && error.empty()) {
        std::string out(kBlock, '\0');
        ZSTD_outBuffer ob{out.data(), out.size(), 0};
        last = ZSTD_decompressStream(dctx, &ob, &ib);
        if (ZSTD_isError(last)) {
          error = absl::StrCat("corrupt zstd data: ", ZSTD_getErrorName(last));
          break;
        }
        produced += ob.pos;
        if (produced > max_output_) {
          error = absl::StrCat("decompresses to more than ", max_output_, " bytes (the bound)");
          break;
        }
        if (ob.pos > 0) {
          out.resize(ob.pos);
          if (!Push(std::move(out))) {
            error = "stopped";
            break;
          }
        }
      }
      if (!error.empty()) break;
    }
    ZSTD_freeDCtx(dctx);
    if (fd >= 0) close(fd);
    if (hash_input_ && error.empty()) input_sha_ = sha.HexDigest();
    Finish(error);
  }

  std::vector<std::string> paths_;
  size_t max_blocks_;
  uint64_t max_output_;
  bool hash_input_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> blocks_;
  bool done_ = false;
  bool stop_ = false;
  std::string error_;
  std::string input_sha_;
};

// The offset just past the last byte of `block` that is not zero, 0 when all are (from the end,
// so a block that ends in data costs nothing).
size_t NonZeroEnd(const std::string& block) {
  size_t k = block.size();
  while (k > 0 && block[k - 1] == '\0') --k;
  return k;
}

struct ReadContext {
  Stream* stream;
  std::string block;
  uint64_t delivered = 0;         // decompressed bytes handed to libarchive
  uint64_t last_non_zero = 0;     // offset just past the last non-zero byte among them
};

la_ssize_t ReadCallback(struct archive*, void* context, const void** buffer) {
  auto* ctx = static_cast<ReadContext*>(context);
  if (!ctx->stream->Next(&ctx->block)) {
    *buffer = nullptr;
    return ctx->stream->error().empty() ? 0 : -1;
  }
  if (size_t end = NonZeroEnd(ctx->block); end > 0) ctx->last_non_zero = ctx->delivered + end;
  ctx->delivered += ctx->block.size();
  *buffer = ctx->block.data();
  return static_cast<la_ssize_t>(ctx->block.size());
}

// Opens a bundle for reading: decompressor + tar reader.
struct Reader {
  Stream stream;
  ReadContext ctx{&stream, {}};
  struct archive* a = nullptr;
  Reader(std::vector<std::string> paths, uint64_t max_output, bool hash_input)
      : stream(paths, 16, max_output, hash_input) {
    stream.Start();
    a = archive_read_new();
    archive_read_support_format_tar(a);
    // A bundle in parts is a whole tar per part: read on past each part's end marker.
    if (paths.size() > 1) archive_read_set_format_option(a, "tar", "read_concatenated_archives", "1");
    archive_read_open(a, &ctx, nullptr, ReadCallback, nullptr);
  }
  ~Reader() {
    archive_read_free(a);
    stream.Stop();
  }
  // Why reading failed: the decompressor's reason if it had one, else libarchive's.
  std::string Error() {
    std::string e = stream.error();
    if (!e.empty()) return e;
    const char* s = archive_error_string(a);
    return s ? absl::StrCat("truncated or corrupt tar (", s, ")") : "truncated or corrupt tar";
  }
};

absl::Status ReadManifestMember(Reader& r, const std::string& bundle, nlohmann::json* manifest) {
  struct archive_entry* e = nullptr;
  int rc = archive_read_next_header(r.a, &e);
  if (rc != ARCHIVE_OK) return Refused(bundle, "", absl::StrCat("cannot read the first member: ", r.Error()));
  std::string name = archive_entry_pathname(e) ? archive_entry_pathname(e) : "";
  if (name != kBundleManifestName) {
    return Refused(bundle, name, absl::StrCat("the first member must be ", kBundleManifestName, " (not a bundle?)"));
  }
  la_int64_t size = archive_entry_size(e);
  if (size <= 0 || static_cast<uint64_t>(size) > bundle_internal::kMaxManifestBytes) {
    return Refused(bundle, name, absl::StrCat("size ", size, " is out of bounds"));
  }
  std::string text(static_cast<size_t>(size), '\0');
  la_ssize_t got = archive_read_data(r.a, text.data(), text.size());
  if (got != size) return Refused(bundle, name, absl::StrCat("truncated: ", r.Error()));
  *manifest = nlohmann::json::parse(text, nullptr, false);
  if (manifest->is_discarded() || !manifest->is_object()) return Refused(bundle, name, "not valid JSON");
  if (manifest->value("bundle_format", 0) != kBundleFormat) {
    return Refused(bundle, name, absl::StrCat("bundle format ", manifest->value("bundle_format", 0),
                                              " is not ", kBundleFormat, " (packed by another inferenceutils version)"));
  }
  return absl::OkStatus();
}

// Relocation replaces every occurrence of the packed prefix in text files, so it must be the
// data directory a store made (<store>/data/<key>.<pid>.<n>), not "/" or "/usr", which would
// rewrite unrelated paths. Why `prefix` is not one, "" when it is.
std::string BadPrefix(const std::string& prefix) {
  if (prefix.size() > 4096) return "is too long";
  std::vector<std::string> parts = absl::StrSplit(prefix.substr(1), '/');
  for (const auto& part : parts) {
    if (part == "." || part == "..") return "is not a clean absolute path";
  }
  std::vector<std::string> name = absl::StrSplit(parts.back(), '.');
  bool hex = name.size() == 3 && !name[0].empty() &&
             std::all_of(name[0].begin(), name[0].end(), [](char c) { return absl::ascii_isxdigit(c); });
  uint64_t number = 0;
  if (parts.size() < 2 || parts[parts.size() - 2] != "data" || !hex || !absl::SimpleAtoi(name[1], &number) ||
      !absl::SimpleAtoi(name[2], &number)) {
    return "is not a store's data directory (<store>/data/<key>.<pid>.<n>); relocating it would rewrite other paths";
  }
  return "";
}

struct Expected {
  char type = 'f';
  uint64_t size = 0;
  int mode = 0644;
  std::string sha256;
  std::string target;
  std::string role;
  bool seen = false;
};

// Hash + write jobs.
class Writers {
 public:
  explicit Writers(int threads) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Run(); });
  }
  ~Writers() { Wait(); }
  void Submit(std::string member, std::string path, int mode, std::string sha, std::string data) {
    std::unique_lock<std::mutex> lock(mu_);
    uint64_t size = data.size();
    cv_.wait(lock, [&] { return in_flight_ == 0 || in_flight_ + size <= kMaxInFlight; });
    in_flight_ += size;
    jobs_.push_back({std::move(member), std::move(path), mode, std::move(sha), std::move(data)});
    cv_.notify_all();
  }
  void Wait() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closing_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }
  // The first failure: member, reason.
  std::pair<std::string, std::string> failure() {
    std::lock_guard<std::mutex> lock(mu_);
    return failure_;
  }
  void Fail(const std::string& member, const std::string& reason) {
    std::lock_guard<std::mutex> lock(mu_);
    if (failure_.first.empty()) failure_ = {member, reason};
  }
  bool failed() {
    std::lock_guard<std::mutex> lock(mu_);
    return !failure_.first.empty();
  }

 private:
  struct Job {
    std::string member, path;
    int mode;
    std::string sha, data;
  };
  void Run() {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return !jobs_.empty() || closing_; });
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      std::string reason = WriteFile(job);
      std::lock_guard<std::mutex> lock(mu_);
      in_flight_ -= job.data.size();
      if (!reason.empty() && failure_.first.empty()) failure_ = {job.member, reason};
      cv_.notify_all();
    }
  }
  static std::string WriteFile(const Job& job) {
    if (Sha256Hex(job.data) != job.sha) return "SHA-256 does not match the manifest";
    int fd = open(job.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, job.mode);
    if (fd < 0) return absl::StrCat("cannot create it: ", std::strerror(errno));
    size_t off = 0;
    while (off < job.data.size()) {
      ssize_t n = write(fd, job.data.data() + off, job.data.size() - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        std::string e = absl::StrCat("cannot write it: ", std::strerror(errno));
        close(fd);
        return e;
      }
      off += static_cast<size_t>(n);
    }
    close(fd);
    return "";
  }
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  uint64_t in_flight_ = 0;
  bool closing_ = false;
  std::pair<std::string, std::string> failure_;
};

absl::StatusOr<uint64_t> MaxBytes(uint64_t given) {
  if (given > 0) return given;
  return EnvBytes("INFERENCEUTILS_BUNDLE_MAX_BYTES", kDefaultBundleMaxBytes);
}

void ReplaceStrings(nlohmann::json& j, const std::string& from, const std::string& to) {
  if (j.is_string()) {
    std::string s = j.get<std::string>();
    if (absl::StrContains(s, from)) j = absl::StrReplaceAll(s, {{from, to}});
  } else if (j.is_array() || j.is_object()) {
    for (auto& v : j) ReplaceStrings(v, from, to);
  }
}

std::string NowRfc3339() {
  std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return buf;
}

}  // namespace

absl::StatusOr<nlohmann::json> ReadBundleManifest(const std::string& path) {
  Reader r({path}, bundle_internal::kMaxManifestBytes + (1 << 20), false);
  nlohmann::json manifest;
  if (auto s = ReadManifestMember(r, path, &manifest); !s.ok()) return s;
  return manifest;
}

// Checks the base Python the bundle needs; "" when this launcher's is it.
std::string PythonMismatch(const nlohmann::json& requires_json) {
  const nlohmann::json python = requires_json.value("python", nlohmann::json::object());
  std::string abi = python.value("abi", ""), version = python.value("version", "");
  std::string home = python.value("home", "");
  if (abi != EmbeddedPythonAbi()) {
    return absl::StrCat("built for Python ABI ", abi.empty() ? "?" : abi, ", this launcher embeds ", EmbeddedPythonAbi());
  }
  if (version != EmbeddedPythonVersion()) {
    return absl::StrCat("built for Python ", version.empty() ? "?" : version, ", this launcher embeds Python ",
                        EmbeddedPythonVersion());
  }
  if (home != CurrentHome().id) {
    return absl::StrCat("built on the Python home ", home.empty() ? python.value("executable", "?") : home,
                        ", this launcher carries ", CurrentHome().id,
                        " (pack it again with this launcher's version)");
  }
  return "";
}

namespace {

absl::StatusOr<Manifest> UnpackStream(const std::vector<std::string>& parts, const std::string& path,
                                      const std::string& data_dir, const UnpackOptions& options, Progress& progress) {
  auto start = std::chrono::steady_clock::now();
  absl::StatusOr<uint64_t> max_bytes = MaxBytes(options.max_bytes);
  if (!max_bytes.ok()) return max_bytes.status();  // never the default instead: it is a safety bound
  const uint64_t bound = *max_bytes;
  progress.Step("unpacking the runtime bundle");
  // The tar stream is at most the files plus headers and padding: bound it generously.
  Reader r(parts, bound + (bound >> 3) + (256ull << 20), !options.expected_sha256.empty());
  nlohmann::json manifest;
  if (auto s = ReadManifestMember(r, path, &manifest); !s.ok()) return s;

  // What it is and needs, before writing anything.
  nlohmann::json requires_json = manifest.value("requires", nlohmann::json::object());
  if (std::string why = PythonMismatch(requires_json); !why.empty()) {
    return Refused(path, kBundleManifestName, why);
  }
  const std::string old_prefix = manifest.contains("prefix") && manifest["prefix"].is_string() ? manifest["prefix"].get<std::string>() : "";
  if (old_prefix.empty() || old_prefix[0] != '/') return Refused(path, kBundleManifestName, "no absolute prefix recorded");
  if (std::string why = BadPrefix(old_prefix); !why.empty()) {
    return Refused(path, kBundleManifestName, absl::StrCat("recorded prefix '", old_prefix, "' ", why));
  }
  uint64_t claimed = 0;
  if (!manifest.contains("total_size") || !manifest["total_size"].is_number_unsigned()) {
    return Refused(path, kBundleManifestName, "no total_size");
  }
  claimed = manifest["total_size"].get<uint64_t>();
  if (claimed > bound) {
    return Refused(path, kBundleManifestName,
                   absl::StrCat("claims ", claimed, " bytes unpacked, more than the bound of ", bound,
                                " bytes (INFERENCEUTILS_BUNDLE_MAX_BYTES)"));
  }
  std::map<std::string, Expected> expected;
  uint64_t sum = 0;
  try {
    for (const auto& f : manifest.at("files")) {
      Expected x;
      std::string p = f.at("path").get<std::string>();
      std::string t = f.at("type").get<std::string>();
      x.type = t.empty() ? '?' : t[0];
      x.mode = f.value("mode", 0644);
      if (x.type == 'f') {
        x.size = f.at("size").get<uint64_t>();
        x.sha256 = f.at("sha256").get<std::string>();
        sum += x.size;
      }
      x.target = f.value("target", "");
      x.role = f.value("role", "");
      // What the launcher and python read from the runtime are files of its own, never links
      // (a link could make them read anything on this machine).
      if (x.type != 'f' && (p == "manifest.json" || p == "pyvenv.cfg" || absl::EndsWith(p, ".pth"))) {
        return Refused(path, p, "must be a regular file (the launcher or python reads it), not a link or a folder");
      }
      if (!expected.emplace(p, x).second) return Refused(path, p, "listed twice in the manifest");
    }
  } catch (const nlohmann::json::exception& e) {
    return Refused(path, kBundleManifestName, absl::StrCat("malformed file list: ", e.what()));
  }
  if (sum != claimed) {
    return Refused(path, kBundleManifestName, absl::StrCat("file sizes add up to ", sum, ", not the claimed ", claimed));
  }
  if (expected.count("manifest.json") == 0) return Refused(path, kBundleManifestName, "no runtime manifest.json listed");

  int threads = options.threads > 0 ? options.threads : std::min(8, bundle_internal::UsableCores());
  Writers writers(std::max(1, threads));
  LinkGuard links;
  uint64_t written = 0, last_report = 0;
  std::string block(kBlock, '\0');
  auto fail_now = [&](const std::string& member, const std::string& reason) {
    writers.Wait();
    r.stream.Stop();
    return Refused(path, member, reason);
  };

  for (;;) {
    struct archive_entry* e = nullptr;
    int rc = archive_read_next_header(r.a, &e);
    if (rc == ARCHIVE_EOF) break;
    if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) return fail_now("(after the last complete member)", r.Error());
    const char* raw = archive_entry_pathname(e);
    std::string member = raw ? raw : "";
    if (writers.failed()) break;
    if (archive_entry_filetype(e) == AE_IFDIR && member.size() > 1 && member.back() == '/') member.pop_back();
    if (std::string why = UnsafeMemberPath(member); !why.empty()) return fail_now(member, why);
    mode_t type = archive_entry_filetype(e);
    const char* hardlink = archive_entry_hardlink(e);
    if (hardlink) {
      std::string target = hardlink;
      bool escapes = !UnsafeMemberPath(target).empty();
      return fail_now(member, escapes ? absl::StrCat("hardlink to '", target, "' points outside the runtime")
                                      : absl::StrCat("hardlink to '", target, "' (bundles hold no hardlinks)"));
    }
    if (type == AE_IFCHR || type == AE_IFBLK || type == AE_IFIFO || type == AE_IFSOCK) {
      return fail_now(member, "device, fifo or socket file");
    }
    if (archive_entry_mode(e) & (S_ISUID | S_ISGID | S_ISVTX)) return fail_now(member, "setuid, setgid or sticky bit");
    if (std::string why = links.CheckPath(member, type == AE_IFLNK); !why.empty()) return fail_now(member, why);
    if (type == AE_IFLNK) {
      std::string target = archive_entry_symlink(e) ? archive_entry_symlink(e) : "";
      auto it = expected.find(member);
      bool allowed_absolute = it != expected.end() && it->second.target == target && it->second.role == "launcher";
      // Judged against the links unpacked so far: a chain of relative links cannot climb out.
      std::string why = allowed_absolute ? links.AddTrustedSymlink(member) : links.AddSymlink(member, target);
      if (!why.empty()) return fail_now(member, why);
    }
    auto it = expected.find(member);
    if (it == expected.end()) return fail_now(member, "not in the manifest");
    Expected& x = it->second;
    if (x.seen) return fail_now(member, "duplicate member");
    x.seen = true;
    char actual = type == AE_IFDIR ? 'd' : type == AE_IFREG ? 'f' : type == AE_IFLNK ? 'l' : '?';
    if (actual != x.type) return fail_now(member, absl::StrCat("type '", std::string(1, actual), "' differs from the manifest"));
    std::string out = data_dir + "/" + member;
    if (actual == 'd') {
      if (mkdir(out.c_str(), 0755) != 0 && errno != EEXIST) {
        return fail_now(member, absl::StrCat("cannot create it: ", std::strerror(errno)));
      }
      continue;
    }
    if (actual == 'l') {
      if (x.target != (archive_entry_symlink(e) ? archive_entry_symlink(e) : "")) {
        return fail_now(member, "symlink target differs from the manifest");
      }
      if (x.role == "launcher") continue;  // pointed at this launcher below
      if (symlink(x.target.c_str(), out.c_str()) != 0) {
        return fail_now(member, absl::StrCat("cannot create it: ", std::strerror(errno)));
      }
      continue;
    }
    la_int64_t size = archive_entry_size(e);
    if (size < 0 || static_cast<uint64_t>(size) != x.size) {
      return fail_now(member, absl::StrCat("size ", size, " differs from the manifest's ", x.size,
                                           static_cast<uint64_t>(size) > x.size ? " (oversized)" : ""));
    }
    written += x.size;
    if (written > claimed) return fail_now(member, "more data than the manifest claims");
    int mode = (x.mode & 0111) ? 0755 : 0644;
    if (x.size <= kSmallFile) {
      std::string data(x.size, '\0');
      size_t got = 0;
      while (got < data.size()) {
        la_ssize_t n = archive_read_data(r.a, data.data() + got, data.size() - got);
        if (n <= 0) return fail_now(member, absl::StrCat("truncated: ", r.Error()));
        got += static_cast<size_t>(n);
      }
      writers.Submit(member, out, mode, x.sha256, std::move(data));
    } else {
      int fd = open(out.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
      if (fd < 0) return fail_now(member, absl::StrCat("cannot create it: ", std::strerror(errno)));
      Sha256 sha;
      uint64_t left = x.size;
      while (left > 0) {
        la_ssize_t n = archive_read_data(r.a, block.data(), std::min<uint64_t>(block.size(), left));
        if (n <= 0) {
          close(fd);
          return fail_now(member, absl::StrCat("truncated: ", r.Error()));
        }
        sha.Update(absl::string_view(block.data(), static_cast<size_t>(n)));
        if (write(fd, block.data(), static_cast<size_t>(n)) != n) {
          close(fd);
          return fail_now(member, absl::StrCat("cannot write it: ", std::strerror(errno)));
        }
        left -= static_cast<uint64_t>(n);
      }
      close(fd);
      if (sha.HexDigest() != x.sha256) return fail_now(member, "SHA-256 does not match the manifest");
    }
    if (written - last_report > (64u << 20)) {
      last_report = written;
      progress.Detail(absl::StrCat("unpacking ", written >> 20, " / ", claimed >> 20, " MiB"));
    }
  }
  writers.Wait();
  if (auto [member, reason] = writers.failure(); !member.empty()) {
    r.stream.Stop();
    return Refused(path, member, reason);
  }
  // Drain the decompressor: trailing garbage or a broken frame after the tar's end is an error
  // too, and so is data after the tar's end marker inside the stream: only zero padding may
  // follow it (what libarchive read past the marker, and what it never asked for).
  std::string rest;
  uint64_t after_tar = 0;
  while (r.stream.Next(&rest)) {
    if (size_t end = NonZeroEnd(rest); end > 0) after_tar = end;
  }
  if (std::string e = r.stream.error(); !e.empty()) return Refused(path, "", e);
  const la_int64_t tar_end = archive_filter_bytes(r.a, 0);
  if (after_tar > 0 || (tar_end >= 0 && r.ctx.last_non_zero > static_cast<uint64_t>(tar_end))) {
    return Refused(path, "", "data after the end of the tar archive (junk appended inside the zstd stream)");
  }
  for (const auto& [p, x] : expected) {
    if (!x.seen) return Refused(path, p, "missing from the archive (truncated bundle?)");
  }
  if (!options.expected_sha256.empty() && r.stream.input_sha256() != options.expected_sha256) {
    return Refused(path, "", absl::StrCat("SHA-256 of the file is ", r.stream.input_sha256(), ", not ",
                                          options.expected_sha256));
  }

  // Relocation: the prefix in text files (pyvenv.cfg, bin/ script shebangs, .pth, ...).
  progress.Step("relocating the runtime");
  for (const auto& rel : manifest.value("relocate", nlohmann::json::object()).value("text_files", std::vector<std::string>{})) {
    auto it = expected.find(rel);
    if (it == expected.end() || it->second.type != 'f') return Refused(path, rel, "relocation target is not a file in the bundle");
    std::string file = data_dir + "/" + rel;
    absl::StatusOr<std::string> text = ReadFile(file);
    if (!text.ok()) return text.status();
    std::string replaced = absl::StrReplaceAll(*text, {{old_prefix, data_dir}});
    if (auto s = WriteFileAtomic(file, replaced); !s.ok()) return s;
    chmod(file.c_str(), (it->second.mode & 0111) ? 0755 : 0644);
  }
  // pyvenv.cfg names this launcher's home (the same identity the bundle requires), wherever it is.
  if (auto s = WritePyvenvCfg(data_dir); !s.ok()) return s;
  EnsurePythonLink(data_dir, options.launcher);

  // The installed manifest: where it is now, where it came from, the key it stands in for.
  absl::StatusOr<std::string> runtime_text = ReadFile(data_dir + "/manifest.json");
  if (!runtime_text.ok()) return runtime_text.status();
  nlohmann::json runtime = nlohmann::json::parse(*runtime_text, nullptr, false);
  if (runtime.is_discarded()) return Refused(path, "manifest.json", "not valid JSON");
  ReplaceStrings(runtime, old_prefix, data_dir);
  absl::StatusOr<Manifest> installed = Manifest::FromJson(runtime);
  if (!installed.ok()) return Refused(path, "manifest.json", installed.status().message());
  std::string bundle_key = installed->key;
  std::string bundle_profile = installed->profile_key;
  if (!options.key.empty()) installed->key = options.key;
  if (!options.key_inputs.is_null()) installed->key_inputs = options.key_inputs;
  if (!options.profile_key.empty()) installed->profile_key = options.profile_key;
  if (!options.decision.is_null()) installed->decision = options.decision;
  installed->prefix = data_dir;
  installed->source = "bundle";
  installed->log = "";
  installed->build_env["bundle"] = options.origin.empty() ? path : options.origin;
  installed->build_env["bundle_key"] = bundle_key;
  installed->build_env["bundle_profile_key"] = bundle_profile;
  installed->timings["unpack"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  nlohmann::json out = installed->ToJson();
  out["bundle"] = {{"origin", options.origin.empty() ? path : options.origin},
                   {"key", bundle_key},
                   {"profile_key", bundle_profile},
                   {"packed_prefix", old_prefix},
                   {"requires", requires_json},
                   {"unpacked", NowRfc3339()}};
  if (auto s = WriteFileAtomic(data_dir + "/manifest.json", DumpJson(out, 2) + "\n"); !s.ok()) return s;
  progress.Finish();
  return installed;
}

}  // namespace

// A bundle in parts (what an OCI fetch hands over, runtime/oci/): a list file in the store,
// "iu-bundle-parts 1", then "discard|new|keep PATH" a line. The stream is the parts in order,
// each a whole zstd tar; "discard" parts go after unpacking, "new" ones too when it fails (they
// were fetched for this bundle), so a refused bundle leaves the store as it was.
absl::StatusOr<Manifest> UnpackBundle(const std::string& path, const std::string& data_dir,
                                      const UnpackOptions& options, Progress& progress) {
  if (!(absl::StartsWith(options.origin, "oci://") && absl::EndsWith(path, ".parts"))) {
    return UnpackStream({path}, path, data_dir, options, progress);
  }
  absl::StatusOr<std::string> list = ReadFile(path);
  if (!list.ok()) return list.status();
  std::vector<std::string> parts, discard, fresh;
  std::vector<std::string> lines = absl::StrSplit(*list, '\n', absl::SkipEmpty());
  if (lines.empty() || lines[0] != "iu-bundle-parts 1") {
    return Refused(options.origin, "", absl::StrCat("the parts list ", path, " is damaged; run again"));
  }
  for (size_t i = 1; i < lines.size(); ++i) {
    size_t space = lines[i].find(' ');
    std::string flag = lines[i].substr(0, space), file = space == std::string::npos ? "" : lines[i].substr(space + 1);
    if (file.empty()) continue;
    parts.push_back(file);
    if (flag == "discard") discard.push_back(file);
    if (flag == "new") fresh.push_back(file);
  }
  absl::StatusOr<Manifest> m = parts.empty() ? Refused(options.origin, "", "no parts")
                                             : UnpackStream(parts, options.origin, data_dir, options, progress);
  for (const auto& f : discard) unlink(f.c_str());
  if (!m.ok()) {
    for (const auto& f : fresh) {
      unlink(f.c_str());
      unlink((f + ".repos").c_str());
    }
  }
  unlink(path.c_str());
  return m;
}

}  // namespace iu
