// A runtime as OCI layers: one zstd tar per installed distribution (the files its RECORD lists)
// and one for the rest (the venv skeleton: every directory, bin/, pyvenv.cfg, manifest.json, each
// RECORD, and whatever names the runtime's prefix, such as compiled bytecode), so runtimes that share a
// distribution share its blob. Every layer is a whole, reproducible tar: the same files make
// the same bytes (fixed owners, mtimes and modes, as bundles have).
#include "oci_layers.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bundle/bundle_internal.h"
#include "inferenceutils/paths.h"
#include "stream_writers.h"

namespace iu::oci {
namespace {

// "a/b/../c" → "a/c"; "" when it climbs out.
std::string Normalize(const std::string& path) {
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    if (part == "..") {
      if (out.empty()) return "";
      out.pop_back();
      continue;
    }
    out.emplace_back(part);
  }
  return absl::StrJoin(out, "/");
}

// The first field of a RECORD line (CSV: a path with a comma is quoted, "" is a quote).
std::string RecordPath(absl::string_view line) {
  if (line.empty()) return "";
  if (line[0] != '"') return std::string(line.substr(0, line.find(',')));
  std::string out;
  for (size_t i = 1; i < line.size(); ++i) {
    if (line[i] == '"') {
      if (i + 1 < line.size() && line[i + 1] == '"') {
        out += '"';
        ++i;
      } else {
        break;
      }
    } else {
      out += line[i];
    }
  }
  return out;
}

}  // namespace

std::vector<LayerPlan> SplitIntoLayers(const bundle_internal::PackPlan& plan) {
  // Which distribution owns each path: from every site-packages/*.dist-info/RECORD.
  std::map<std::string, std::string> owner;
  for (const auto& item : plan.items) {
    if (item.type != 'f' || !absl::EndsWith(item.path, ".dist-info/RECORD")) continue;
    std::string info_dir = item.path.substr(0, item.path.rfind('/'));
    size_t slash = info_dir.rfind('/');
    if (slash == std::string::npos) continue;
    std::string site = info_dir.substr(0, slash);
    std::string dist = info_dir.substr(slash + 1);
    dist = dist.substr(0, dist.size() - std::string(".dist-info").size());
    absl::StatusOr<std::string> text = ReadFile(plan.prefix + "/" + item.path);
    if (!text.ok()) continue;
    for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
      std::string rel = RecordPath(absl::StripTrailingAsciiWhitespace(line));
      if (rel.empty() || rel[0] == '/') continue;
      std::string path = Normalize(site + "/" + rel);
      if (!path.empty()) owner.emplace(path, dist);
    }
  }
  std::vector<LayerPlan> layers(1);
  layers[0].name = "runtime";
  layers[0].kind = "skeleton";
  std::map<std::string, size_t> by_dist;
  for (size_t i = 0; i < plan.items.size(); ++i) {
    const auto& item = plan.items[i];
    auto it = item.type == 'd' ? owner.end() : owner.find(item.path);
    // What names the prefix (shebangs, .pth, bytecode) differs between two runtimes of the same
    // distribution: it stays with the runtime, so the distribution's layer is the same blob.
    // RECORD too: it lists the hashes of the entry-point scripts, whose shebangs name the prefix.
    bool shared = it != owner.end() && !item.has_prefix && !absl::EndsWith(item.path, ".pyc") &&
                  !absl::EndsWith(item.path, ".dist-info/RECORD") && !absl::EndsWith(item.path, "/direct_url.json") &&
                  !absl::StrContains(item.path, "__pycache__/") && item.role.empty();
    if (!shared) {
      layers[0].items.push_back(i);
      continue;
    }
    auto [pos, added] = by_dist.emplace(it->second, layers.size());
    if (added) {
      LayerPlan layer;
      layer.name = it->second;
      layer.kind = "distribution";
      layers.push_back(layer);
    }
    layers[pos->second].items.push_back(i);
  }
  std::sort(layers.begin() + 1, layers.end(), [](const LayerPlan& a, const LayerPlan& b) { return a.name < b.name; });
  return layers;
}

absl::StatusOr<LayerBlob> WriteLayer(const bundle_internal::PackPlan& plan, const LayerPlan& layer,
                                     const std::string& blobs_dir, const PackOptions& options) {
  static std::atomic<int> counter{0};
  std::string tmp = absl::StrCat(blobs_dir, "/tmp.", getpid(), ".", counter++);
  HashingWriter file;
  file.fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (file.fd < 0) return StoreError(absl::StrCat("cannot write ", tmp, ": ", std::strerror(errno)));
  ZstdSink sink;
  sink.WriteTo(&file);
  sink.Start(options.level, options.threads > 0 ? options.threads : bundle_internal::UsableCores());
  struct archive* a = NewTarWriter(&sink);
  std::string failure;
  std::string buf(1 << 20, '\0');
  for (size_t index : layer.items) {
    if (!failure.empty()) break;
    const auto& item = plan.items[index];
    int type = item.type == 'd' ? AE_IFDIR : item.type == 'l' ? AE_IFLNK : AE_IFREG;
    if (WriteFixedHeader(a, item.path, type, item.type == 'l' ? 0777 : item.mode, item.type == 'f' ? item.size : 0,
                         item.target) != ARCHIVE_OK) {
      failure = item.path;
      break;
    }
    if (item.type != 'f') continue;
    int fd = open((plan.prefix + "/" + item.path).c_str(), O_RDONLY | O_CLOEXEC);
    uint64_t left = item.size;
    while (fd >= 0 && left > 0) {
      ssize_t n = read(fd, buf.data(), std::min<uint64_t>(buf.size(), left));
      if (n <= 0) break;
      if (archive_write_data(a, buf.data(), static_cast<size_t>(n)) < 0) break;
      left -= static_cast<uint64_t>(n);
    }
    if (fd >= 0) close(fd);
    if (left != 0) failure = absl::StrCat(item.path, " (changed while packing?)");
  }
  if (archive_write_close(a) != ARCHIVE_OK && failure.empty()) failure = "the end of the archive";
  archive_write_free(a);
  if (failure.empty() && !sink.Finish()) failure = "the zstd frame";
  ZSTD_freeCCtx(sink.cctx);
  if (failure.empty() && fsync(file.fd) != 0) failure = "the file";
  close(file.fd);
  if (!failure.empty()) {
    unlink(tmp.c_str());
    return StoreError(absl::StrCat("cannot write the layer ", layer.name, " (", failure, ") into ", blobs_dir,
                                   sink.error.empty() ? "" : ": " + sink.error));
  }
  LayerBlob blob;
  blob.digest = "sha256:" + file.sha.HexDigest();
  blob.size = file.written;
  blob.path = absl::StrCat(blobs_dir, "/sha256/", blob.digest.substr(7));
  if (rename(tmp.c_str(), blob.path.c_str()) != 0) {
    std::string e = std::strerror(errno);
    unlink(tmp.c_str());
    return StoreError(absl::StrCat("cannot write ", blob.path, ": ", e));
  }
  return blob;
}

}  // namespace iu::oci
