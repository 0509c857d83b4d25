// Packing a runtime into a reproducible .tar.zst: walk (sorted), hash every file on a pool,
// write bundle.json first, then the entries with fixed owners and mtimes, through libarchive's
// tar writer into a multi-threaded zstd stream.
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bundle_internal.h"
#include "stream_writers.h"
#include "inferenceutils/json_text.h"
#include "inferenceutils/bundle.h"
#include "inferenceutils/digest.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/python.h"
#include "inferenceutils/python_home.h"

namespace iu {
namespace bundle_internal {

absl::Status Refused(absl::string_view bundle, absl::string_view member, absl::string_view reason) {
  return WithExit(absl::DataLossError(member.empty()
                                          ? absl::StrCat("bundle ", bundle, ": ", reason)
                                          : absl::StrCat("bundle ", bundle, ": member ", member, ": ", reason)),
                  kExitBundle);
}

int UsableCores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

int CompareVersions(absl::string_view a, absl::string_view b) {
  std::vector<absl::string_view> pa = absl::StrSplit(a, '.'), pb = absl::StrSplit(b, '.');
  for (size_t i = 0; i < std::max(pa.size(), pb.size()); ++i) {
    long x = 0, y = 0;
    if (i < pa.size()) (void)absl::SimpleAtoi(pa[i], &x);
    if (i < pb.size()) (void)absl::SimpleAtoi(pb[i], &y);
    if (x != y) return x < y ? -1 : 1;
  }
  return 0;
}

}  // namespace bundle_internal

namespace {


using Item = bundle_internal::PackItem;

void Walk(const std::string& root, const std::string& rel, std::vector<Item>* items, std::string* error) {
  std::string dir = rel.empty() ? root : root + "/" + rel;
  DIR* d = opendir(dir.c_str());
  if (!d) {
    *error = absl::StrCat("cannot read ", dir, ": ", std::strerror(errno));
    return;
  }
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    if (rel.empty() && (name == ".in-use" || absl::StartsWith(name, ".tmp"))) continue;
    names.push_back(name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    std::string r = rel.empty() ? name : rel + "/" + name;
    struct stat st;
    if (lstat((root + "/" + r).c_str(), &st) != 0) continue;
    Item item;
    item.path = r;
    if (S_ISDIR(st.st_mode)) {
      item.type = 'd';
      item.mode = 0755;
      items->push_back(item);
      Walk(root, r, items, error);
    } else if (S_ISREG(st.st_mode)) {
      item.type = 'f';
      item.size = static_cast<uint64_t>(st.st_size);
      item.mode = (st.st_mode & 0111) ? 0755 : 0644;
      items->push_back(item);
    } else if (S_ISLNK(st.st_mode)) {
      char buf[4096];
      ssize_t n = readlink((root + "/" + r).c_str(), buf, sizeof(buf) - 1);
      if (n <= 0) continue;
      item.type = 'l';
      item.mode = 0777;
      item.target.assign(buf, static_cast<size_t>(n));
      items->push_back(item);
    }  // sockets, fifos, devices: not part of a runtime
  }
}

absl::Status HashFile(const std::string& path, const std::string& prefix, Item* item) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  Sha256 sha;
  std::string buf(1 << 20, '\0');
  std::string carry;  // the last prefix.size()-1 bytes, to find the prefix across reads
  uint64_t total = 0;
  for (;;) {
    ssize_t n = read(fd, buf.data(), buf.size());
    if (n < 0) {
      close(fd);
      return absl::InternalError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
    }
    if (n == 0) break;
    absl::string_view chunk(buf.data(), static_cast<size_t>(n));
    sha.Update(chunk);
    total += static_cast<uint64_t>(n);
    if (chunk.find('\0') != absl::string_view::npos) item->binary = true;
    if (!item->has_prefix) {
      std::string window = carry + std::string(chunk.substr(0, std::min(chunk.size(), prefix.size())));
      if (absl::StrContains(window, prefix) || absl::StrContains(chunk, prefix)) item->has_prefix = true;
      size_t keep = std::min(chunk.size(), prefix.size() - 1);
      carry = std::string(chunk.substr(chunk.size() - keep));
    }
  }
  close(fd);
  item->size = total;
  item->sha256 = sha.HexDigest();
  return absl::OkStatus();
}

std::string RequiredGlibc(const std::string& platform_tag) {  // manylinux_2_36_x86_64 → 2.36
  std::vector<std::string> parts = absl::StrSplit(platform_tag, '_');
  if (parts.size() >= 3 && parts[0] == "manylinux") return parts[1] + "." + parts[2];
  return "";
}

}  // namespace

namespace bundle_internal {

absl::StatusOr<PackPlan> PlanPack(const std::string& prefix, const PackOptions& options, Progress& progress) {
  absl::StatusOr<std::string> manifest_text = ReadFile(prefix + "/manifest.json");
  if (!manifest_text.ok()) {
    return WithExit(absl::NotFoundError(absl::StrCat("no runtime at ", prefix, " (no manifest.json)")), kExitConfig);
  }
  nlohmann::json runtime = nlohmann::json::parse(*manifest_text, nullptr, false);
  absl::StatusOr<Manifest> manifest =
      runtime.is_discarded() ? absl::DataLossError("corrupt manifest.json") : Manifest::FromJson(runtime);
  if (!manifest.ok()) return WithExit(manifest.status(), kExitConfig);
  if (options.level < 1 || options.level > ZSTD_maxCLevel()) {
    return UsageError(absl::StrCat("--level must be 1..", ZSTD_maxCLevel()));
  }
  // What the files contain: the prefix recorded at build (or at the last unpack).
  const std::string old_prefix = manifest->prefix;

  progress.Step("hashing the runtime");
  std::vector<Item> items;
  std::string walk_error;
  Walk(prefix, "", &items, &walk_error);
  if (!walk_error.empty()) return StoreError(walk_error);

  const std::string python_name = CurrentHome().executable.substr(CurrentHome().executable.rfind('/') + 1);
  for (Item& item : items) {
    if (item.type != 'l') continue;
    if (item.path == "bin/python" || item.path == "bin/python3" || item.path == "bin/" + python_name) {
      item.role = "launcher";  // re-pointed at the unpacking launcher
    } else if (absl::StartsWith(item.target, "/")) {
      if (absl::StartsWith(item.target, old_prefix + "/")) {  // inside: make it relative
        std::string inside = item.target.substr(old_prefix.size() + 1);
        int depth = static_cast<int>(std::count(item.path.begin(), item.path.end(), '/'));
        std::string rel;
        for (int i = 0; i < depth; ++i) rel += "../";
        item.target = rel + inside;
      } else {
        return WithExit(absl::FailedPreconditionError(absl::StrCat(
                            "cannot pack ", prefix, ": symlink ", item.path, " points outside the runtime (",
                            item.target, ")")),
                        kExitConfig);
      }
    }
  }

  // Hash on every core.
  std::atomic<size_t> next{0};
  std::vector<absl::Status> errors(items.size());
  auto worker = [&] {
    for (size_t i; (i = next.fetch_add(1)) < items.size();) {
      if (items[i].type == 'f') errors[i] = HashFile(prefix + "/" + items[i].path, old_prefix, &items[i]);
    }
  };
  std::vector<std::thread> pool;
  int cores = bundle_internal::UsableCores();
  for (int i = 0; i < cores; ++i) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  for (const auto& e : errors) {
    if (!e.ok()) return e;
  }

  // bundle.json
  const nlohmann::json& profile = manifest->decision.value("profile", nlohmann::json::object());
  nlohmann::json requires_json = {
      {"backend", manifest->backend},
      {"arch", profile.value("arch", "")},
      {"cpu_isa", options.isa.empty() ? profile.value("isa", "") : options.isa},
      {"python", {{"abi", manifest->python_abi}, {"version", manifest->python_version}, {"home", CurrentHome().id}}},
      {"platform", profile.value("platform", "")},
  };
  std::string platform_tag = profile.value("platform", "");
  requires_json["platform"] = platform_tag;
  requires_json["libc"] = absl::StartsWith(platform_tag, "manylinux") ? "glibc" : "";
  requires_json["min_glibc"] = RequiredGlibc(platform_tag);
  if (manifest->backend == "cuda") {
    std::vector<std::string> ccs;
    for (const auto& t : profile.value("gpu_targets", nlohmann::json::array())) {
      std::string s = t.get<std::string>();  // "sm_86" → "8.6"
      if (absl::StartsWith(s, "sm_") && s.size() >= 5) ccs.push_back(s.substr(3, s.size() - 4) + "." + s.substr(s.size() - 1));
    }
    requires_json["cuda"] = {{"compute_capabilities", ccs},
                             {"min_driver_cuda", options.min_driver_cuda.empty() ? profile.value("cuda", "")
                                                                                 : options.min_driver_cuda}};
  } else if (manifest->backend == "rocm") {
    requires_json["rocm"] = {{"gpu_targets", profile.value("gpu_targets", nlohmann::json::array())}};
  }
  nlohmann::json files = nlohmann::json::array();
  uint64_t total = 0;
  std::vector<std::string> relocate, binary_prefix;
  for (const Item& item : items) {
    nlohmann::json entry = {{"path", item.path}, {"type", std::string(1, item.type)}, {"mode", item.mode}};
    if (item.type == 'f') {
      entry["size"] = item.size;
      entry["sha256"] = item.sha256;
      total += item.size;
      if (item.has_prefix && item.path != "manifest.json") (item.binary ? binary_prefix : relocate).push_back(item.path);
    } else if (item.type == 'l') {
      entry["target"] = item.target;
      if (!item.role.empty()) entry["role"] = item.role;
    }
    files.push_back(entry);
  }
  nlohmann::json bundle = {
      {"bundle_format", kBundleFormat},
      {"key", manifest->key},
      {"key_inputs", manifest->key_inputs},
      {"backend", manifest->backend},
      {"profile_key", manifest->profile_key},
      {"requires", requires_json},
      {"prefix", old_prefix},
      {"created", manifest->created},
      {"requirements", manifest->requirements},
      {"distributions", runtime.value("distributions", nlohmann::json::array())},
      {"relocate", {{"text_files", relocate}, {"binary_files_not_rewritten", binary_prefix}}},
      {"total_size", total},
      {"file_count", files.size()},
      {"files", files},
  };
  PackPlan plan;
  plan.prefix = prefix;
  plan.bundle = std::move(bundle);
  plan.items = std::move(items);
  plan.total = total;
  return plan;
}

}  // namespace bundle_internal

absl::StatusOr<PackResult> PackRuntime(const std::string& prefix, const std::string& output,
                                       const PackOptions& options, Progress& progress) {
  absl::StatusOr<bundle_internal::PackPlan> plan = bundle_internal::PlanPack(prefix, options, progress);
  if (!plan.ok()) return plan.status();
  const std::vector<Item>& items = plan->items;
  const nlohmann::json& files = plan->bundle["files"];
  const uint64_t total = plan->total;
  const int cores = bundle_internal::UsableCores();
  const nlohmann::json& bundle = plan->bundle;
  std::string bundle_text = DumpJson(bundle, 1) + "\n";

  progress.Step("compressing");
  std::string tmp = absl::StrCat(output, ".tmp.", getpid());
  HashingWriter file;
  file.fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (file.fd < 0) return StoreError(absl::StrCat("cannot write ", tmp, ": ", std::strerror(errno)));
  ZstdSink sink;
  sink.WriteTo(&file);
  if (!sink.Start(options.level, options.threads > 0 ? options.threads : cores)) {
    ZSTD_freeCCtx(sink.cctx);
    close(file.fd);
    unlink(tmp.c_str());
    return WithExit(absl::FailedPreconditionError(sink.error), kExitInternal);
  }

  struct archive* a = NewTarWriter(&sink);
  absl::Status failure;
  auto fail = [&](absl::string_view what) {
    if (failure.ok()) {
      failure = StoreError(absl::StrCat("cannot pack ", what, " into ", output, ": ",
                                        sink.error.empty() ? archive_error_string(a) ? archive_error_string(a) : "?"
                                                           : sink.error));
    }
  };
  auto header = [&](const std::string& path, int type, int mode, uint64_t size, const std::string& target) {
    int rc = WriteFixedHeader(a, path, type, mode, size, target);
    if (rc != ARCHIVE_OK) fail(path);
    return rc == ARCHIVE_OK;
  };
  if (header(kBundleManifestName, AE_IFREG, 0644, bundle_text.size(), "") &&
      archive_write_data(a, bundle_text.data(), bundle_text.size()) < 0) {
    fail(kBundleManifestName);
  }
  std::string buf(1 << 20, '\0');
  uint64_t done = 0;
  for (const Item& item : items) {
    if (!failure.ok()) break;
    if (item.type == 'd') {
      header(item.path, AE_IFDIR, item.mode, 0, "");
    } else if (item.type == 'l') {
      header(item.path, AE_IFLNK, 0777, 0, item.target);
    } else if (header(item.path, AE_IFREG, item.mode, item.size, "")) {
      int fd = open((prefix + "/" + item.path).c_str(), O_RDONLY | O_CLOEXEC);
      uint64_t left = item.size;
      while (fd >= 0 && left > 0) {
        ssize_t n = read(fd, buf.data(), std::min<uint64_t>(buf.size(), left));
        if (n <= 0) break;
        if (archive_write_data(a, buf.data(), static_cast<size_t>(n)) < 0) break;
        left -= static_cast<uint64_t>(n);
        done += static_cast<uint64_t>(n);
      }
      if (fd >= 0) close(fd);
      if (left != 0) fail(absl::StrCat(item.path, " (changed while packing?)"));
      progress.Detail(absl::StrCat("compressing ", done >> 20, " / ", total >> 20, " MiB"));
    }
  }
  if (archive_write_close(a) != ARCHIVE_OK) fail("the end of the archive");
  archive_write_free(a);
  if (failure.ok() && !sink.Finish()) fail("the zstd frame");
  ZSTD_freeCCtx(sink.cctx);
  if (failure.ok() && fsync(file.fd) != 0) fail("the file");
  close(file.fd);
  if (failure.ok() && rename(tmp.c_str(), output.c_str()) != 0) {
    failure = StoreError(absl::StrCat("cannot write ", output, ": ", std::strerror(errno)));
  }
  progress.Finish();
  if (!failure.ok()) {
    unlink(tmp.c_str());
    return failure;
  }
  PackResult result;
  result.path = output;
  result.files = files.size();
  result.unpacked_bytes = total;
  result.packed_bytes = file.written;
  result.sha256 = file.sha.HexDigest();
  return result;
}

}  // namespace iu
