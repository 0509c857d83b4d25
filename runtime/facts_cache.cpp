// The facts cache: <store>/facts.json = {"fingerprint": ..., "facts": {...}}. The warm path reads
// that one small file and fingerprints a few small files plus some stat() calls; no directory
// walks, no dlopen. Any problem with the cache only means detecting again.
#include <sys/stat.h>

#include <cstdio>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "hardware/detect_util.h"
#include "inferenceutils/json_text.h"
#include "inferenceutils/hardware.h"
#include "inferenceutils/paths.h"

namespace iu {
namespace {

struct Fnv {
  uint64_t h = 1469598103934665603ull;
  void Add(absl::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
    h ^= 0xff;  // field separator
    h *= 1099511628211ull;
  }
};

void AddFile(Fnv& fnv, const std::string& path, size_t limit = 4096) {
  std::string text;
  if (detect::ReadSmallFile(path, &text, nullptr, limit)) fnv.Add(text);
  else fnv.Add("<absent>");
}

void AddStat(Fnv& fnv, const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    fnv.Add("-");
    return;
  }
  fnv.Add(absl::StrCat(path, ":", st.st_ino, ":", st.st_size, ":", st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec));
}

}  // namespace

std::string FactsFingerprint(const DetectOptions& options) {
  using detect::Rooted;
  Fnv fnv;
  fnv.Add(absl::StrCat("facts-v", Facts::kSchemaVersion, " launcher ", IU_VERSION));
  fnv.Add(options.root);
  fnv.Add(options.cuda_library);
  fnv.Add(options.nvml_library);
  for (const std::string& var : DetectionEnvVars()) {
    auto it = options.env.find(var);
    fnv.Add(it == options.env.end() ? std::string("<unset>") : absl::StrCat("=", it->second));
  }
  if (!options.cuda_library.empty()) AddStat(fnv, options.cuda_library);
  if (!options.nvml_library.empty()) AddStat(fnv, options.nvml_library);
  AddFile(fnv, Rooted(options, "/proc/driver/nvidia/version"));
  AddFile(fnv, Rooted(options, "/proc/sys/kernel/osrelease"));
  AddFile(fnv, Rooted(options, "/proc/sys/kernel/random/boot_id"));
  AddFile(fnv, Rooted(options, "/sys/class/kfd/kfd/topology/generation_id"));
  // The CPU's identity. On the real x86 machine CPUID (vendor, signature, brand) is much cheaper
  // than /proc/cpuinfo, which the kernel generates with a frequency sample per CPU.
  bool cpu_done = false;
#if defined(__x86_64__)
  if (options.root.empty() || options.root == "/") {
    unsigned regs[4 * 6] = {};
    __get_cpuid_count(0, 0, &regs[0], &regs[1], &regs[2], &regs[3]);
    __get_cpuid_count(1, 0, &regs[4], &regs[5], &regs[6], &regs[7]);
    regs[5] &= 0x00ffffffu;  // EBX[31:24] is the APIC id of the CPU we happen to run on
    for (unsigned i = 0; i < 3; ++i) {
      __get_cpuid_count(0x80000002 + i, 0, &regs[8 + i * 4], &regs[9 + i * 4], &regs[10 + i * 4], &regs[11 + i * 4]);
    }
    fnv.Add(absl::string_view(reinterpret_cast<const char*>(regs), sizeof(regs)));
    cpu_done = true;
  }
#endif
  if (!cpu_done) {
    std::string cpuinfo;
    detect::ReadSmallFile(Rooted(options, "/proc/cpuinfo"), &cpuinfo, nullptr, 2048);
    for (const char* key : {"model name", "CPU part", "vendor_id", "CPU implementer"}) {
      fnv.Add(detect::FieldOf(cpuinfo, key, ':'));
    }
  }
  // Toolkits that decide whether a source build is possible.
  for (const char* var : {"CUDA_HOME", "CUDA_PATH"}) {
    auto it = options.env.find(var);
    if (it != options.env.end()) AddStat(fnv, Rooted(options, it->second + "/bin/nvcc"));
  }
  auto path = options.env.find("PATH");
  if (path != options.env.end()) {
    for (absl::string_view dir : absl::StrSplit(path->second, ':', absl::SkipEmpty())) {
      AddStat(fnv, Rooted(options, absl::StrCat(dir, "/nvcc")));
    }
  }
  for (const char* file : {"/usr/local/cuda/bin/nvcc", "/opt/rocm/.info/version", "/usr/share/vulkan/icd.d",
                           "/etc/vulkan/icd.d"}) {
    AddStat(fnv, Rooted(options, file));
  }
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(fnv.h));
  return hex;
}

namespace {

Facts DetectAndStore(const std::string& store_root, const DetectOptions& options, const std::string& fingerprint) {
  Facts facts = DetectFacts(options);
  if (!store_root.empty() && MakeDirs(store_root, "").ok()) {
    nlohmann::json entry = {{"fingerprint", fingerprint}, {"facts", facts.ToJson()}};
    (void)WriteFileAtomic(store_root + "/facts.json", DumpJson(entry, 1));  // best effort
  }
  return facts;
}

}  // namespace

Facts LoadOrDetectFacts(const std::string& store_root, const DetectOptions& options) {
  std::string fingerprint = FactsFingerprint(options);
  std::string text;
  if (!store_root.empty() && detect::ReadSmallFile(store_root + "/facts.json", &text, nullptr, 1 << 20)) {
    nlohmann::json entry = nlohmann::json::parse(text, nullptr, false);
    if (entry.is_object() && entry.contains("fingerprint") && entry["fingerprint"].is_string() &&
        entry["fingerprint"].get<std::string>() == fingerprint && entry.contains("facts")) {
      absl::StatusOr<Facts> facts = Facts::FromJson(entry["facts"]);
      if (facts.ok()) {
        facts->source = "cache";
        return *std::move(facts);
      }
    }
  }
  return DetectAndStore(store_root, options, fingerprint);
}

Facts RefreshFacts(const std::string& store_root, const DetectOptions& options) {
  return DetectAndStore(store_root, options, FactsFingerprint(options));
}

}  // namespace iu
