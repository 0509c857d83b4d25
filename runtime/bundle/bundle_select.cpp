// Finding and choosing a bundle: the sources in order, each bundle's requirements against the
// Facts, the match with the request, and a rank (docs/bundles.md "Selection").
#include <dirent.h>
#include <limits.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bundle_internal.h"
#include "inferenceutils/json_text.h"
#include "inferenceutils/backend.h"
#include "inferenceutils/bundle.h"
#include "inferenceutils/digest.h"
#include "inferenceutils/oci.h"
#include "inferenceutils/paths.h"

namespace iu {

absl::StatusOr<std::string> HttpGetSmall(const std::string& url);  // bundle_fetch.cpp

namespace {

using bundle_internal::CompareVersions;

bool IsUrl(absl::string_view s) { return absl::StartsWith(s, "http://") || absl::StartsWith(s, "https://"); }

// "x86-64-v3+avx_vnni" → rank of the base level (x86-64 = 1 ... v4 = 4; armv8 = 1), the extras.
int IsaRank(const std::string& base) {
  if (base == "x86-64") return 1;
  if (base == "x86-64-v2") return 2;
  if (base == "x86-64-v3") return 3;
  if (base == "x86-64-v4") return 4;
  if (base == "armv8-noneon") return 0;
  if (base == "armv8") return 1;
  return -1;
}

bool SameFamily(const std::string& a, const std::string& b) {
  return absl::StartsWith(a, "x86-64") == absl::StartsWith(b, "x86-64") &&
         absl::StartsWith(a, "armv8") == absl::StartsWith(b, "armv8");
}

std::string IsaUnmet(const std::string& needed, const CpuFacts& cpu) {
  if (needed.empty()) return "";
  std::vector<std::string> need = absl::StrSplit(needed, '+');
  std::vector<std::string> have = absl::StrSplit(cpu.isa_level, '+');
  int need_rank = IsaRank(need[0]), have_rank = IsaRank(have[0]);
  if (need_rank < 0 || have_rank < 0 || !SameFamily(need[0], have[0])) {
    if (need[0] != have[0]) return absl::StrCat("needs CPU ISA ", needed, ", this CPU is ", cpu.isa_level);
  } else if (have_rank < need_rank) {
    return absl::StrCat("needs CPU ISA ", needed, ", this CPU is ", cpu.isa_level);
  }
  for (size_t i = 1; i < need.size(); ++i) {
    if (!cpu.Has(need[i]) && std::find(have.begin(), have.end(), need[i]) == have.end()) {
      return absl::StrCat("needs CPU feature ", need[i], " (ISA ", needed, "), this CPU is ", cpu.isa_level);
    }
  }
  return "";
}

int64_t IsaScore(const std::string& isa) {
  std::vector<std::string> parts = absl::StrSplit(isa, '+');
  return std::max(0, IsaRank(parts[0])) * 16 + static_cast<int64_t>(parts.size() - 1);
}

std::string PlatformOf(const std::string& platform_tag) {  // manylinux_2_36_x86_64 → linux_x86_64
  if (absl::StartsWith(platform_tag, "manylinux_")) {
    std::vector<std::string> parts = absl::StrSplit(platform_tag, absl::MaxSplits('_', 3));
    if (parts.size() == 4) return "linux_" + parts[3];
  }
  return platform_tag;
}

// The key inputs that decide a runtime's content: without the machine-specific parts (checked
// against the machine instead) and without where its packages came from (indexes, links,
// offline, prebuilt wheel indexes): a fleet's build host always has other sources than its nodes.
nlohmann::json SpecPart(nlohmann::json inputs) {
  if (inputs.is_object()) {
    inputs.erase("profile_key");
    inputs.erase("platform_tag");
    inputs.erase("sources");
    if (inputs.contains("backend_settings") && inputs["backend_settings"].is_object()) {
      inputs["backend_settings"].erase("wheel_indexes");
    }
  }
  return inputs;
}

std::vector<std::string> SplitSources(const std::string& value) {
  std::vector<std::string> out;
  for (absl::string_view piece : absl::StrSplit(value, absl::ByAnyChar(",; \t\n"), absl::SkipEmpty())) {
    if (absl::StrContains(piece, "://")) {
      out.emplace_back(piece);
    } else {
      for (absl::string_view p : absl::StrSplit(piece, ':', absl::SkipEmpty())) out.emplace_back(p);
    }
  }
  return out;
}

BundleCandidate FromManifest(const std::string& location, const std::string& source, nlohmann::json manifest) {
  BundleCandidate c;
  c.location = location;
  c.source = source;
  c.manifest = std::move(manifest);
  return c;
}

}  // namespace

namespace {

// A string field of a JSON object that came from a bundle or an index: "" when `j` is not an
// object or the field is missing or not a string (nlohmann's value() throws on those).
std::string StringField(const nlohmann::json& j, const char* name) {
  if (!j.is_object()) return "";
  auto it = j.find(name);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

const nlohmann::json& ObjectField(const nlohmann::json& j, const char* name) {
  static const nlohmann::json empty = nlohmann::json::object();
  if (!j.is_object()) return empty;
  auto it = j.find(name);
  return it != j.end() && it->is_object() ? *it : empty;
}

std::string UnmetRequirementOf(const nlohmann::json& requires_json, const Facts& facts);

}  // namespace

// A hostile or damaged manifest is unmet, never an exception.
std::string UnmetRequirement(const nlohmann::json& requires_json, const Facts& facts) {
  try {
    return UnmetRequirementOf(requires_json, facts);
  } catch (const nlohmann::json::exception& e) {
    return absl::StrCat("its requirements are malformed (", e.what(), ")");
  }
}

namespace {

std::string UnmetRequirementOf(const nlohmann::json& requires_json, const Facts& facts) {
  if (!requires_json.is_object()) return "the manifest states no requirements";
  std::string platform = requires_json.value("platform", "");
  if (!platform.empty() && PlatformOf(platform) != PlatformOf(facts.python.platform_tag) &&
      PlatformOf(platform) != facts.python.platform) {
    return absl::StrCat("built for platform ", platform, ", this machine is ", facts.python.platform_tag);
  }
  std::string libc = requires_json.value("libc", "");
  if (!libc.empty() && libc != facts.os.libc) return absl::StrCat("needs ", libc, ", this machine has ", facts.os.libc);
  std::string glibc = requires_json.value("min_glibc", "");
  if (!glibc.empty() && CompareVersions(facts.os.libc_version, glibc) < 0) {
    return absl::StrCat("needs glibc >= ", glibc, ", this machine has ", facts.os.libc_version);
  }
  if (std::string why = PythonMismatch(requires_json); !why.empty()) return why;
  std::string arch = requires_json.value("arch", "");
  if (!arch.empty() && arch != facts.cpu.arch) return absl::StrCat("built for ", arch, ", this CPU is ", facts.cpu.arch);
  if (std::string why = IsaUnmet(requires_json.value("cpu_isa", ""), facts.cpu); !why.empty()) return why;
  std::string backend = requires_json.value("backend", "");
  if (backend == "cuda") {
    const nlohmann::json cuda = requires_json.value("cuda", nlohmann::json::object());
    if (facts.nvidia.devices.empty()) return "needs an NVIDIA GPU, none is visible";
    std::string min_cuda = cuda.value("min_driver_cuda", "");
    if (!min_cuda.empty() && CompareVersions(facts.nvidia.cuda_version, min_cuda) < 0) {
      return absl::StrCat("needs a driver supporting CUDA ", min_cuda, ", this driver supports ",
                          facts.nvidia.cuda_version.empty() ? "none" : facts.nvidia.cuda_version);
    }
    std::vector<std::string> ccs = cuda.value("compute_capabilities", std::vector<std::string>{});
    for (const GpuDevice& d : facts.nvidia.devices) {
      // Code for M.m runs on M.n with n >= m (same major).
      bool covered = false;
      for (const std::string& cc : ccs) {
        std::vector<std::string> a = absl::StrSplit(cc, '.'), b = absl::StrSplit(d.arch, '.');
        if (a.size() == 2 && b.size() == 2 && a[0] == b[0] && CompareVersions(a[1], b[1]) <= 0) covered = true;
      }
      if (!covered) {
        return absl::StrCat("has code for compute capabilities ", absl::StrJoin(ccs, ", "), ", not for GPU ",
                            d.index, " (", d.name, ", ", d.arch, ")");
      }
    }
  } else if (backend == "rocm") {
    std::vector<std::string> targets = requires_json.value("rocm", nlohmann::json::object())
                                           .value("gpu_targets", std::vector<std::string>{});
    if (facts.rocm.devices.empty()) return "needs an AMD GPU, none is visible";
    for (const GpuDevice& d : facts.rocm.devices) {
      if (std::find(targets.begin(), targets.end(), d.arch) == targets.end()) {
        return absl::StrCat("has code for ", absl::StrJoin(targets, ", "), ", not for GPU ", d.index, " (", d.arch, ")");
      }
    }
  } else if (backend == "metal" && !facts.apple.metal) {
    return "needs Metal";
  }
  return "";
}

}  // namespace

absl::StatusOr<std::vector<BundleCandidate>> ListBundleSourceOf(const std::string& location, const std::string& source);

// A hostile or damaged index is an unusable source, never an exception.
absl::StatusOr<std::vector<BundleCandidate>> ListBundleSource(const std::string& location, const std::string& source) {
  try {
    return ListBundleSourceOf(location, source);
  } catch (const nlohmann::json::exception& e) {
    return WithExit(absl::DataLossError(absl::StrCat(location, ": malformed bundle index (", e.what(), ")")), kExitBundle);
  }
}

absl::StatusOr<std::vector<BundleCandidate>> ListBundleSourceOf(const std::string& location, const std::string& source) {
  if (IsOciLocation(location)) return ListOciSource(location, source);  // an index of profiles in a registry
  std::vector<BundleCandidate> out;
  if (IsUrl(location)) {
    std::string url = location;
    std::string sha;
    if (size_t hash = url.find("#sha256="); hash != std::string::npos) {
      sha = url.substr(hash + 8);
      url = url.substr(0, hash);
    }
    if (absl::EndsWith(url, ".tar.zst")) {  // one bundle: its manifest comes with the download
      BundleCandidate c;
      c.location = url;
      c.source = source;
      c.sha256 = sha;
      out.push_back(c);
      return out;
    }
    std::string base = absl::EndsWith(url, "/") ? url : url + "/";
    absl::StatusOr<std::string> text = HttpGetSmall(base + "index.json");
    if (!text.ok()) return text.status();
    nlohmann::json index = nlohmann::json::parse(*text, nullptr, false);
    if (index.is_discarded() || !index.contains("bundles")) {
      return WithExit(absl::DataLossError(absl::StrCat(base, "index.json is not a bundle index")), kExitBundle);
    }
    for (const auto& b : index["bundles"]) {
      BundleCandidate c = FromManifest(base + b.value("file", ""), source, b.value("manifest", nlohmann::json::object()));
      c.sha256 = b.value("sha256", "");
      c.size = b.value("size", uint64_t{0});
      out.push_back(c);
    }
    return out;
  }
  if (IsDirectory(location)) {
    if (absl::StatusOr<std::string> text = ReadFile(location + "/index.json"); text.ok()) {
      nlohmann::json index = nlohmann::json::parse(*text, nullptr, false);
      if (!index.is_discarded() && index.contains("bundles")) {
        for (const auto& b : index["bundles"]) {
          BundleCandidate c = FromManifest(location + "/" + b.value("file", ""), source,
                                           b.value("manifest", nlohmann::json::object()));
          c.sha256 = b.value("sha256", "");
          c.size = b.value("size", uint64_t{0});
          out.push_back(c);
        }
        return out;
      }
    }
    std::vector<std::string> names;
    if (DIR* d = opendir(location.c_str())) {
      while (dirent* e = readdir(d)) {
        if (absl::EndsWith(e->d_name, ".tar.zst")) names.emplace_back(e->d_name);
      }
      closedir(d);
    }
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      std::string file = location + "/" + name;
      absl::StatusOr<nlohmann::json> m = ReadBundleManifest(file);
      BundleCandidate c = FromManifest(file, source, m.ok() ? *m : nlohmann::json::object());
      if (!m.ok()) c.rejected = std::string(m.status().message());
      out.push_back(c);
    }
    return out;
  }
  if (!PathExists(location)) {
    return WithExit(absl::NotFoundError(absl::StrCat("bundle ", location, " does not exist")), kExitBundle);
  }
  absl::StatusOr<nlohmann::json> m = ReadBundleManifest(location);
  if (!m.ok()) return m.status();
  out.push_back(FromManifest(location, source, *m));
  return out;
}

BundleChoice ChooseBundle(const std::vector<std::string>& explicit_bundles, const std::string& assets_dir,
                          const BundleTarget& target, const Facts& facts) {
  BundleChoice choice;
  std::vector<std::pair<std::string, std::string>> sources;  // location, source name
  for (const auto& b : explicit_bundles) sources.emplace_back(b, "--bundle");
  if (const char* env = std::getenv("INFERENCEUTILS_BUNDLES")) {
    for (const auto& s : SplitSources(env)) sources.emplace_back(s, "INFERENCEUTILS_BUNDLES");
  }
  if (!assets_dir.empty() && IsDirectory(assets_dir + "/bundles")) sources.emplace_back(assets_dir + "/bundles", "assets");

  const nlohmann::json wanted = SpecPart(target.key_inputs);
  int order = 0;
  for (auto [location, source] : sources) {
    if (!IsUrl(location) && !IsOciLocation(location) && !location.empty() && location[0] != '/') {
      if (char* real = realpath(location.c_str(), nullptr)) {
        location = real;
        free(real);
      }
    }
    absl::StatusOr<std::vector<BundleCandidate>> listed = ListBundleSource(location, source);
    if (!listed.ok()) {
      choice.notes.push_back(absl::StrCat(source, " ", location, ": ", listed.status().message()));
      if (source == "--bundle") {
        BundleCandidate c;
        c.location = location;
        c.source = source;
        c.rejected = std::string(listed.status().message());
        choice.candidates.push_back(c);
      }
      continue;
    }
    for (BundleCandidate& c : *listed) {
      ++order;
      if (c.rejected.empty() && c.manifest.is_object() && !c.manifest.empty()) {  // no field may throw
        const nlohmann::json& m = c.manifest;
        std::string key = StringField(m, "key");
        std::string backend = StringField(m, "backend");
        bool exact = key == target.key;
        if (!exact && SpecPart(m.contains("key_inputs") ? m["key_inputs"] : nlohmann::json()) != wanted) {
          c.rejected = absl::StrCat("a runtime for other requirements, preload, libraries or build settings (key ", key, ")");
        } else if (!target.backend.empty() && backend != target.backend) {
          c.rejected = absl::StrCat("built for the ", backend, " backend, this runtime is for ", target.backend);
        } else if (std::string why = UnmetRequirement(m.contains("requires") ? m["requires"] : nlohmann::json(), facts);
                   !why.empty()) {
          c.rejected = why;
        } else {
          const nlohmann::json& req = ObjectField(m, "requires");
          int pref = 0;
          const auto& known = KnownBackends();
          if (auto it = std::find(known.begin(), known.end(), backend); it != known.end()) {
            pref = static_cast<int>(known.end() - it);
          }
          c.rank = (exact ? (int64_t{1} << 40) : 0) + (int64_t{pref} << 32) +
                   (IsaScore(StringField(req, "cpu_isa")) << 20) - order;
        }
      } else if (c.rejected.empty() && !(IsUrl(c.location) && absl::EndsWith(c.location, ".tar.zst"))) {
        c.rejected = "no manifest";
      } else if (c.rejected.empty()) {
        c.rank = -order;  // a direct URL: its manifest is read after the download
      }
      choice.candidates.push_back(std::move(c));
    }
  }
  int best = -1;
  for (size_t i = 0; i < choice.candidates.size(); ++i) {
    if (!choice.candidates[i].rejected.empty()) continue;
    if (best < 0 || choice.candidates[i].rank > choice.candidates[static_cast<size_t>(best)].rank) best = static_cast<int>(i);
  }
  if (best > 0) std::rotate(choice.candidates.begin(), choice.candidates.begin() + best, choice.candidates.begin() + best + 1);
  choice.chosen = best < 0 ? -1 : 0;
  return choice;
}

nlohmann::json ExplainBundles(const std::vector<std::string>& explicit_bundles, const std::string& assets_dir,
                              const BundleTarget& target, const Facts& facts) {
  BundleChoice choice = ChooseBundle(explicit_bundles, assets_dir, target, facts);
  nlohmann::json rows = nlohmann::json::array();
  for (size_t i = 0; i < choice.candidates.size(); ++i) {
    const BundleCandidate& c = choice.candidates[i];
    nlohmann::json row = {{"location", c.location},
                          {"source", c.source},
                          {"key", StringField(c.manifest, "key")},
                          {"backend", StringField(c.manifest, "backend")},
                          {"requires", ObjectField(c.manifest, "requires")},
                          {"chosen", static_cast<int>(i) == choice.chosen}};
    if (!c.rejected.empty()) row["rejected"] = c.rejected;
    rows.push_back(row);
  }
  nlohmann::json sources = explicit_bundles;
  const char* env = std::getenv("INFERENCEUTILS_BUNDLES");
  return {{"sources", {{"--bundle", sources},
                       {"INFERENCEUTILS_BUNDLES", env ? env : ""},
                       {"assets", assets_dir.empty() ? "" : assets_dir + "/bundles"}}},
          {"target_key", target.key},
          {"candidates", rows},
          {"chosen", choice.chosen >= 0 ? nlohmann::json(choice.candidates[0].location) : nlohmann::json(nullptr)},
          {"notes", choice.notes}};
}

absl::StatusOr<int> WriteBundleIndex(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (absl::EndsWith(e->d_name, ".tar.zst")) names.emplace_back(e->d_name);
    }
    closedir(d);
  } else {
    return UsageError(absl::StrCat("cannot read the directory ", dir));
  }
  std::sort(names.begin(), names.end());
  nlohmann::json bundles = nlohmann::json::array();
  for (const auto& name : names) {
    std::string file = dir + "/" + name;
    absl::StatusOr<nlohmann::json> m = ReadBundleManifest(file);
    if (!m.ok()) return m.status();
    m->erase("files");
    absl::StatusOr<std::string> content = ReadFile(file);
    if (!content.ok()) return content.status();
    bundles.push_back({{"file", name}, {"sha256", Sha256Hex(*content)}, {"size", content->size()}, {"manifest", *m}});
  }
  nlohmann::json index = {{"format", kBundleFormat}, {"bundles", bundles}};
  if (auto s = WriteFileAtomic(dir + "/index.json", DumpJson(index, 1) + "\n"); !s.ok()) return s;
  return static_cast<int>(bundles.size());
}

}  // namespace iu
