// AMD ROCm (kfd topology), Apple Silicon / Metal (sysctl), Vulkan (loader + ICDs), build tools.
#include <algorithm>
#include <cstdio>

#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "hardware/detect_util.h"
#include "inferenceutils/paths.h"

namespace iu {

std::string GfxName(uint32_t v) {
  if (v == 0) return {};
  uint32_t major = v / 10000, minor = (v / 100) % 100, stepping = v % 100;
  char buf[32];
  std::snprintf(buf, sizeof(buf), "gfx%u%x%x", major, minor, stepping);
  return buf;
}

namespace detect {
namespace {

std::vector<int> ApplyVisible(const std::string& value, const std::vector<std::string>& ids) {
  return ApplyCudaVisibleDevices(value, ids);  // same rules: indices, GPU- ids, invalid ends the list
}

}  // namespace

void DetectRocm(const DetectOptions& options, Facts& facts) {
  RocmFacts& rocm = facts.rocm;
  std::string nodes_dir = Rooted(options, "/sys/class/kfd/kfd/topology/nodes");
  std::vector<std::string> names = ListDir(nodes_dir);
  std::vector<std::pair<uint64_t, std::string>> nodes;
  for (const std::string& name : names) {
    uint64_t n = 0;
    if (ParseU64(name, &n)) nodes.push_back({n, name});
  }
  std::sort(nodes.begin(), nodes.end());
  if (nodes.empty()) {
    rocm.notes.push_back("no AMD GPU driver (/sys/class/kfd/kfd/topology/nodes absent)");
  } else {
    rocm.kfd_present = true;
  }
  std::vector<GpuDevice> all;
  std::vector<std::string> ids;
  for (const auto& [number, name] : nodes) {
    std::string text, error;
    std::string props = nodes_dir + "/" + name + "/properties";
    if (!ReadSmallFile(props, &text, &error, 64 * 1024)) {
      rocm.notes.push_back(error);
      continue;
    }
    uint64_t gfx = 0, simd = 0, unique = 0;
    ParseU64(FieldOf(text, "gfx_target_version", ' '), &gfx);
    ParseU64(FieldOf(text, "simd_count", ' '), &simd);
    ParseU64(FieldOf(text, "unique_id", ' '), &unique);
    if (gfx == 0 || simd == 0) continue;  // a CPU node
    GpuDevice gpu;
    gpu.arch = GfxName(static_cast<uint32_t>(gfx));
    std::string marketing = ReadLine(nodes_dir + "/" + name + "/name");
    gpu.name = marketing.empty() || marketing == gpu.arch ? absl::StrCat("AMD ", gpu.arch) : marketing;
    char uuid[32];
    std::snprintf(uuid, sizeof(uuid), "GPU-%016llx", static_cast<unsigned long long>(unique));
    gpu.uuid = unique ? uuid : "";
    std::string bank;
    if (ReadSmallFile(nodes_dir + "/" + name + "/mem_banks/0/properties", &bank, nullptr, 16 * 1024)) {
      ParseU64(FieldOf(bank, "size_in_bytes", ' '), &gpu.memory_bytes);
    }
    all.push_back(gpu);
    ids.push_back(gpu.uuid.empty() ? absl::StrCat("node-", number) : gpu.uuid);
  }
  if (rocm.kfd_present && all.empty()) rocm.notes.push_back("kfd lists no GPU nodes (CPU nodes only)");
  // ROCR_VISIBLE_DEVICES selects among all GPUs, HIP_VISIBLE_DEVICES among those.
  std::vector<int> order(all.size());
  for (size_t i = 0; i < all.size(); ++i) order[i] = static_cast<int>(i);
  for (const char* var : {"ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"}) {
    auto it = options.env.find(var);
    if (it == options.env.end()) continue;
    std::vector<std::string> current;
    for (int i : order) current.push_back(ids[static_cast<size_t>(i)]);
    std::vector<int> next;
    for (int j : ApplyVisible(it->second, current)) next.push_back(order[static_cast<size_t>(j)]);
    if (next.size() < order.size()) {
      rocm.notes.push_back(absl::StrCat(var, "=", it->second, " leaves ", next.size(), " of ", order.size(), " AMD GPUs"));
    }
    order = next;
  }
  for (size_t k = 0; k < order.size(); ++k) {
    GpuDevice gpu = all[static_cast<size_t>(order[k])];
    gpu.index = static_cast<int>(k);
    rocm.devices.push_back(gpu);
  }

  // The ROCm/HIP install for source builds.
  std::vector<std::string> roots;
  for (const char* var : {"ROCM_PATH", "HIP_PATH"}) {
    if (!EnvOf(options, var).empty()) roots.push_back(EnvOf(options, var));
  }
  roots.push_back("/opt/rocm");
  for (const std::string& dir : roots) {
    std::string rooted = Rooted(options, dir);
    if (!IsDirectory(rooted)) continue;
    rocm.hip_path = dir;
    rocm.hipcc = IsExecutableFile(rooted + "/bin/hipcc");
    std::string version = ReadLine(rooted + "/.info/version");
    if (version.empty()) version = ReadLine(rooted + "/.info/version-dev");
    rocm.hip_version = version.substr(0, version.find('-'));
    break;
  }
}

void DetectApple(const DetectOptions& options, Facts& facts) {
  AppleFacts& apple = facts.apple;
  (void)options;
#if defined(__APPLE__)
  apple.macos = true;
  int value = 0;
  size_t size = sizeof(value);
  if (sysctlbyname("hw.optional.arm64", &value, &size, nullptr, 0) == 0 && value == 1) apple.apple_silicon = true;
  value = 0;
  size = sizeof(value);
  if (sysctlbyname("sysctl.proc_translated", &value, &size, nullptr, 0) == 0 && value == 1) apple.rosetta = true;
  char chip[256] = {};
  size = sizeof(chip) - 1;
  if (sysctlbyname("machdep.cpu.brand_string", chip, &size, nullptr, 0) == 0) apple.chip = chip;
#if defined(__aarch64__) || defined(__arm64__)
  apple.metal = apple.apple_silicon;
#else
  apple.metal = false;
#endif
  if (apple.rosetta) {
    apple.notes.push_back(
        "this launcher is an x86_64 process under Rosetta 2 on Apple Silicon: builds would be x86_64 "
        "without Metal; install the arm64 launcher");
  } else if (!apple.apple_silicon) {
    apple.notes.push_back("Intel Mac: no Apple Silicon GPU for Metal");
  }
#else
  apple.notes.push_back("not macOS");
#endif
}

void DetectVulkan(const DetectOptions& options, Facts& facts) {
  VulkanFacts& vk = facts.vulkan;
  for (const char* path : {"/usr/lib/x86_64-linux-gnu/libvulkan.so.1", "/usr/lib/aarch64-linux-gnu/libvulkan.so.1",
                           "/usr/lib64/libvulkan.so.1", "/usr/lib/libvulkan.so.1", "/usr/local/lib/libvulkan.so.1",
                           "/opt/homebrew/lib/libvulkan.1.dylib", "/usr/local/lib/libvulkan.1.dylib"}) {
    if (IsRegularFile(Rooted(options, path))) {
      vk.loader = path;
      break;
    }
  }
  std::string files = EnvOf(options, "VK_DRIVER_FILES");
  if (files.empty()) files = EnvOf(options, "VK_ICD_FILENAMES");
  if (!files.empty()) {
    for (absl::string_view f : absl::StrSplit(files, ':', absl::SkipEmpty())) {
      if (IsRegularFile(Rooted(options, std::string(f)))) vk.icds.emplace_back(f);
    }
  } else {
    for (const char* dir : {"/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d",
                            "/usr/local/etc/vulkan/icd.d"}) {
      for (const std::string& name : ListDir(Rooted(options, dir))) {
        if (absl::EndsWith(name, ".json")) vk.icds.push_back(absl::StrCat(dir, "/", name));
      }
    }
  }
  for (const std::string& icd : vk.icds) {
    std::string lower = absl::AsciiStrToLower(icd.substr(icd.rfind('/') + 1));
    if (!absl::StrContains(lower, "lvp") && !absl::StrContains(lower, "swiftshader") &&
        !absl::StrContains(lower, "llvmpipe")) {
      vk.hardware_icd = true;
    }
  }
  if (vk.loader.empty()) vk.notes.push_back("no Vulkan loader (libvulkan.so.1)");
  if (vk.icds.empty()) vk.notes.push_back("no Vulkan driver (ICD) installed");
  else if (!vk.hardware_icd) vk.notes.push_back("only software Vulkan drivers (lavapipe/swiftshader)");
}

void DetectTools(const DetectOptions& options, Facts& facts) {
  for (const char* cc : {"cc", "gcc", "clang"}) {
    if (facts.tools.c_compiler.empty()) facts.tools.c_compiler = FindOnPath(options, cc);
  }
  for (const char* cxx : {"c++", "g++", "clang++"}) {
    if (facts.tools.cxx_compiler.empty()) facts.tools.cxx_compiler = FindOnPath(options, cxx);
  }
  facts.tools.glslc = FindOnPath(options, "glslc");
}

}  // namespace detect
}  // namespace iu
