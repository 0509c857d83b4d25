// CPU, memory, OS, libc and the embedded Python: /proc and /sys under the detection root, CPUID
// (x86) or getauxval (Arm) for the real machine, sysctl on macOS.
#include <sched.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__linux__) && (defined(__aarch64__) || defined(__arm__))
#include <sys/auxv.h>
#endif
#if defined(__GLIBC__)
#include <gnu/libc-version.h>
#endif
#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "hardware/detect_util.h"
#include "inferenceutils/python.h"

namespace iu::detect {
namespace {

bool IsRealRoot(const DetectOptions& options) { return options.root.empty() || options.root == "/"; }

// The x86 features ggml cares about (and those the psABI levels need), by their /proc/cpuinfo
// names, which are also our canonical names.
constexpr const char* kX86Features[] = {
    "ssse3",   "sse4_2",   "popcnt",      "avx",         "avx2",     "fma",      "f16c",
    "bmi2",    "avx512f",  "avx512dq",    "avx512cd",    "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8",   "amx_bf16"};

#if defined(__x86_64__)
uint64_t Xgetbv() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

void CpuidFeatures(CpuFacts& cpu) {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(0, 0, &a, &b, &c, &d)) return;
  unsigned max_leaf = a;
  char vendor[13] = {};
  std::memcpy(vendor, &b, 4);
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &c, 4);
  if (cpu.vendor.empty()) cpu.vendor = vendor;
  std::set<std::string> f;
  __get_cpuid_count(1, 0, &a, &b, &c, &d);
  bool osxsave = c & (1u << 27);
  uint64_t xcr0 = osxsave ? Xgetbv() : 0;
  bool os_avx = (xcr0 & 0x6) == 0x6;
  bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;
  bool os_amx = (xcr0 & (3ull << 17)) == (3ull << 17);
  if (c & (1u << 9)) f.insert("ssse3");
  if (c & (1u << 20)) f.insert("sse4_2");
  if (c & (1u << 23)) f.insert("popcnt");
  if (os_avx && (c & (1u << 28))) f.insert("avx");
  if (os_avx && (c & (1u << 12))) f.insert("fma");
  if (os_avx && (c & (1u << 29))) f.insert("f16c");
  if (max_leaf >= 7) {
    __get_cpuid_count(7, 0, &a, &b, &c, &d);
    if (os_avx && (b & (1u << 5))) f.insert("avx2");
    if (b & (1u << 8)) f.insert("bmi2");
    if (os_avx512) {
      if (b & (1u << 16)) f.insert("avx512f");
      if (b & (1u << 17)) f.insert("avx512dq");
      if (b & (1u << 28)) f.insert("avx512cd");
      if (b & (1u << 30)) f.insert("avx512bw");
      if (b & (1u << 31)) f.insert("avx512vl");
      if (c & (1u << 11)) f.insert("avx512_vnni");
    }
    if (os_amx) {
      if (d & (1u << 24)) f.insert("amx_tile");
      if (d & (1u << 25)) f.insert("amx_int8");
      if (d & (1u << 22)) f.insert("amx_bf16");
    }
    unsigned subleaves = a;
    if (subleaves >= 1) {
      __get_cpuid_count(7, 1, &a, &b, &c, &d);
      if (os_avx512 && (a & (1u << 5))) f.insert("avx512_bf16");
      if (os_avx && (a & (1u << 4))) f.insert("avx_vnni");
    }
  }
  if (cpu.model_name.empty() && __get_cpuid_count(0x80000000, 0, &a, &b, &c, &d) && a >= 0x80000004) {
    unsigned brand[12];
    for (unsigned i = 0; i < 3; ++i) {
      __get_cpuid_count(0x80000002 + i, 0, &brand[i * 4], &brand[i * 4 + 1], &brand[i * 4 + 2],
                        &brand[i * 4 + 3]);
    }
    cpu.model_name = Trim(std::string(reinterpret_cast<char*>(brand), sizeof(brand)));
  }
  cpu.features.clear();
  for (const char* name : kX86Features) {
    if (f.count(name)) cpu.features.push_back(name);
  }
  cpu.feature_source = "cpuid";
}
#endif

#if defined(__linux__) && defined(__aarch64__)
void HwcapFeatures(CpuFacts& cpu) {
  unsigned long hwcap = getauxval(AT_HWCAP), hwcap2 = getauxval(AT_HWCAP2);
  cpu.features.clear();
  if (hwcap & (1ul << 1)) cpu.features.push_back("neon");     // HWCAP_ASIMD
  if (hwcap & (1ul << 20)) cpu.features.push_back("dotprod"); // HWCAP_ASIMDDP
  if (hwcap2 & (1ul << 13)) cpu.features.push_back("i8mm");   // HWCAP2_I8MM
  if (hwcap & (1ul << 22)) cpu.features.push_back("sve");     // HWCAP_SVE
  if (hwcap2 & (1ul << 1)) cpu.features.push_back("sve2");    // HWCAP2_SVE2
  cpu.feature_source = "hwcap";
}
#endif

std::string ArmVendor(const std::string& implementer) {
  static const std::pair<const char*, const char*> kVendors[] = {
      {"0x41", "ARM"}, {"0x42", "Broadcom"}, {"0x43", "Cavium"}, {"0x48", "HiSilicon"},
      {"0x4e", "NVIDIA"}, {"0x51", "Qualcomm"}, {"0x61", "Apple"}, {"0xc0", "Ampere"}};
  for (const auto& [id, name] : kVendors) {
    if (absl::AsciiStrToLower(implementer) == id) return name;
  }
  return implementer.empty() ? "" : absl::StrCat("implementer ", implementer);
}

std::string ArmPart(const std::string& implementer, const std::string& part) {
  static const std::pair<const char*, const char*> kParts[] = {
      {"0xd08", "Cortex-A72"}, {"0xd0b", "Cortex-A76"}, {"0xd0c", "Neoverse-N1"},
      {"0xd40", "Neoverse-V1"}, {"0xd49", "Neoverse-N2"}, {"0xd4f", "Neoverse-V2"},
      {"0xd84", "Neoverse-V3"}, {"0xd8e", "Neoverse-N3"}};
  if (absl::AsciiStrToLower(implementer) == "0x41") {
    for (const auto& [id, name] : kParts) {
      if (absl::AsciiStrToLower(part) == id) return name;
    }
  }
  return part.empty() ? "" : absl::StrCat(ArmVendor(implementer), " part ", part);
}

int CountCpuList(const std::string& list) {  // "0-3,5,7-8"
  int count = 0;
  for (absl::string_view range : absl::StrSplit(Trim(list), ',', absl::SkipEmpty())) {
    std::vector<std::string> ends = absl::StrSplit(range, '-');
    uint64_t lo = 0, hi = 0;
    if (ends.size() == 1 && ParseU64(ends[0], &lo)) ++count;
    else if (ends.size() == 2 && ParseU64(ends[0], &lo) && ParseU64(ends[1], &hi) && hi >= lo)
      count += static_cast<int>(hi - lo + 1);
  }
  return count;
}

// The most restrictive value of `file` along `path` and its parents inside `mount`.
template <typename ReadLimit>
void WalkCgroup(const DetectOptions& options, const std::string& mount, const std::string& path,
                ReadLimit&& read_limit) {
  std::string p = path;
  while (true) {
    read_limit(Rooted(options, mount + (p == "/" ? "" : p)));
    if (p.empty() || p == "/") break;
    auto slash = p.find_last_of('/');
    p = slash == 0 || slash == std::string::npos ? "/" : p.substr(0, slash);
  }
}

void DetectCgroup(const DetectOptions& options, Facts& facts) {
  std::string text, error;
  if (!ReadSmallFile(Rooted(options, "/proc/self/cgroup"), &text, &error, 64 * 1024)) return;
  std::string v2_path, v1_cpu_controllers, v1_cpu_path, v1_mem_path;
  bool v2 = false;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (parts.size() != 3) continue;
    if (parts[0] == "0" && parts[1].empty()) {
      v2 = true;
      v2_path = parts[2];
      continue;
    }
    for (absl::string_view controller : absl::StrSplit(parts[1], ',')) {
      if (controller == "cpu") {
        v1_cpu_controllers = parts[1];
        v1_cpu_path = parts[2];
      }
      if (controller == "memory") v1_mem_path = parts[2];
    }
  }
  double quota = 0;
  uint64_t mem_limit = 0;
  auto take_quota = [&](double q) {
    if (q > 0 && (quota == 0 || q < quota)) quota = q;
  };
  auto take_mem = [&](uint64_t m) {
    if (m > 0 && m < (1ull << 60) && (mem_limit == 0 || m < mem_limit)) mem_limit = m;
  };
  if (!v1_cpu_controllers.empty()) {
    facts.cpu.cgroup_version = "v1";
    for (std::string mount : {"/sys/fs/cgroup/" + v1_cpu_controllers, std::string("/sys/fs/cgroup/cpu"),
                              std::string("/sys/fs/cgroup/cpu,cpuacct")}) {
      auto read_cpu = [&](const std::string& dir) {
        uint64_t period = 0;
        std::string q = ReadLine(dir + "/cpu.cfs_quota_us");
        int64_t quota_us = 0;
        if (absl::SimpleAtoi(q, &quota_us) && quota_us > 0 &&
            ParseU64(ReadLine(dir + "/cpu.cfs_period_us"), &period) && period > 0) {
          take_quota(static_cast<double>(quota_us) / static_cast<double>(period));
        }
      };
      WalkCgroup(options, mount, v1_cpu_path, read_cpu);
      if (v1_cpu_path != "/") read_cpu(Rooted(options, mount));  // a cgroup namespace's root
    }
    if (!v1_mem_path.empty()) {
      auto read_mem = [&](const std::string& dir) {
        uint64_t m = 0;
        if (ParseU64(ReadLine(dir + "/memory.limit_in_bytes"), &m)) take_mem(m);
      };
      WalkCgroup(options, "/sys/fs/cgroup/memory", v1_mem_path, read_mem);
      if (v1_mem_path != "/") read_mem(Rooted(options, "/sys/fs/cgroup/memory"));
    }
  } else if (v2) {
    facts.cpu.cgroup_version = "v2";
    auto read = [&](const std::string& dir) {
      std::vector<std::string> max = absl::StrSplit(ReadLine(dir + "/cpu.max"), ' ', absl::SkipEmpty());
      uint64_t q = 0, period = 0;
      if (max.size() == 2 && ParseU64(max[0], &q) && ParseU64(max[1], &period) && period > 0) {
        take_quota(static_cast<double>(q) / static_cast<double>(period));
      }
      uint64_t m = 0;
      if (ParseU64(ReadLine(dir + "/memory.max"), &m)) take_mem(m);
    };
    WalkCgroup(options, "/sys/fs/cgroup", v2_path, read);
  }
  facts.cpu.cgroup_cpu_quota = quota;
  facts.memory.cgroup_limit_bytes = mem_limit;
}

void ComputeIsaLevel(CpuFacts& cpu) {
  std::vector<std::string> extras;
  auto has_all = [&](std::initializer_list<const char*> names) {
    for (const char* n : names) {
      if (!cpu.Has(n)) return false;
    }
    return true;
  };
  if (cpu.arch == "x86_64" || cpu.arch == "amd64" || cpu.arch == "i686") {
    std::string level = "x86-64";
    if (has_all({"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd", "avx2", "fma", "f16c"})) {
      level = "x86-64-v4";
      for (const char* e : {"avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"}) {
        if (cpu.Has(e)) extras.push_back(e);
      }
    } else if (has_all({"avx2", "fma", "f16c"})) {
      level = "x86-64-v3";
      if (cpu.Has("avx_vnni")) extras.push_back("avx_vnni");
    } else if (has_all({"sse4_2"})) {
      level = "x86-64-v2";
      if (cpu.Has("avx")) extras.push_back("avx");
    }
    cpu.isa_level = extras.empty() ? level : absl::StrCat(level, "+", absl::StrJoin(extras, "+"));
  } else if (cpu.arch == "aarch64" || cpu.arch == "arm64") {
    std::string level = cpu.Has("neon") ? "armv8" : "armv8-noneon";
    for (const char* e : {"dotprod", "i8mm", "sve"}) {
      if (cpu.Has(e)) extras.push_back(e);
    }
    cpu.isa_level = extras.empty() ? level : absl::StrCat(level, "+", absl::StrJoin(extras, "+"));
  } else {
    cpu.isa_level = cpu.arch.empty() ? "unknown" : cpu.arch;
  }
}

#if defined(__APPLE__)
std::string SysctlString(const char* name) {
  char buf[256];
  size_t size = sizeof(buf);
  if (sysctlbyname(name, buf, &size, nullptr, 0) != 0 || size == 0) return {};
  return std::string(buf, strnlen(buf, size));
}
int64_t SysctlInt(const char* name, int64_t fallback = 0) {
  int64_t value = 0;
  size_t size = sizeof(value);
  if (sysctlbyname(name, &value, &size, nullptr, 0) != 0) return fallback;
  if (size == sizeof(int32_t)) return static_cast<int32_t>(value);
  return value;
}
#endif

}  // namespace

void DetectCpu(const DetectOptions& options, Facts& facts) {
  CpuFacts& cpu = facts.cpu;
  bool real = IsRealRoot(options);
#if defined(__APPLE__)
  if (real) {
    struct utsname u;
    if (uname(&u) == 0) cpu.arch = u.machine;
    cpu.model_name = SysctlString("machdep.cpu.brand_string");
    cpu.logical_cores = static_cast<int>(SysctlInt("hw.logicalcpu"));
    cpu.physical_cores = static_cast<int>(SysctlInt("hw.physicalcpu"));
    cpu.usable_cores = cpu.logical_cores;
    if (cpu.arch == "arm64") {
      cpu.vendor = "Apple";
      cpu.features = {"neon"};
      if (SysctlInt("hw.optional.arm.FEAT_DotProd")) cpu.features.push_back("dotprod");
      if (SysctlInt("hw.optional.arm.FEAT_I8MM")) cpu.features.push_back("i8mm");
      cpu.feature_source = "sysctl";
    } else {
#if defined(__x86_64__)
      CpuidFeatures(cpu);
#endif
    }
    ComputeIsaLevel(cpu);
    return;
  }
#endif
  std::string text, error;
  bool have_cpuinfo = ReadSmallFile(Rooted(options, "/proc/cpuinfo"), &text, &error, 8 << 20);
  if (!have_cpuinfo) facts.notes.push_back(error);

  // Blocks separated by blank lines; the first processor's block carries model and flags.
  int processors = 0;
  std::set<std::pair<std::string, std::string>> cores;
  std::string physical_id, flags, arm_features, implementer, part, cpu_arch_field;
  bool first_done = false;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    auto colon = raw.find(':');
    if (colon == absl::string_view::npos) continue;
    std::string key = Trim(std::string(raw.substr(0, colon)));
    std::string value = Trim(std::string(raw.substr(colon + 1)));
    uint64_t n = 0;
    if (key == "processor" && ParseU64(value, &n)) {
      if (processors > 0) first_done = true;
      ++processors;
      continue;
    }
    if (key == "physical id") physical_id = value;
    if (key == "core id") cores.insert({physical_id, value});
    if (first_done) continue;
    if (key == "vendor_id" && cpu.vendor.empty()) cpu.vendor = value;
    else if (key == "model name" && cpu.model_name.empty()) cpu.model_name = value;
    else if (key == "flags" && flags.empty()) flags = value;
    else if (key == "Features" && arm_features.empty()) arm_features = value;
    else if (key == "CPU implementer" && implementer.empty()) implementer = value;
    else if (key == "CPU part" && part.empty()) part = value;
    else if (key == "CPU architecture" && cpu_arch_field.empty()) cpu_arch_field = value;
  }
  if (have_cpuinfo && processors == 0) {
    facts.notes.push_back(absl::StrCat("cannot parse ", Rooted(options, "/proc/cpuinfo"),
                                       ": no 'processor' entries"));
  }

  cpu.arch = ReadLine(Rooted(options, "/proc/sys/kernel/arch"));
  if (cpu.arch.empty() && real) {
    struct utsname u;
    if (uname(&u) == 0) cpu.arch = u.machine;
  }
  if (cpu.arch.empty()) {
    if (!flags.empty()) cpu.arch = "x86_64";
    else if (!arm_features.empty() || !implementer.empty())
      cpu.arch = cpu_arch_field == "7" ? "armv7l" : "aarch64";
  }
  if (cpu.arch.empty()) facts.notes.push_back("cannot tell the CPU architecture");

  bool x86 = cpu.arch == "x86_64" || cpu.arch == "i686";
  bool arm = cpu.arch == "aarch64" || cpu.arch == "arm64";
  if (arm) {
    if (cpu.vendor.empty()) cpu.vendor = ArmVendor(implementer);
    if (cpu.model_name.empty()) cpu.model_name = ArmPart(implementer, part);
  }

  // Features: the hardware itself for the real machine, else the cpuinfo of the root.
#if defined(__x86_64__)
  if (real && x86) CpuidFeatures(cpu);
#endif
#if defined(__linux__) && defined(__aarch64__)
  if (real && arm) HwcapFeatures(cpu);
#endif
  if (cpu.feature_source.empty()) {
    if (x86 && !flags.empty()) {
      std::set<std::string> have;
      for (absl::string_view f : absl::StrSplit(flags, ' ', absl::SkipEmpty())) have.insert(std::string(f));
      for (const char* name : kX86Features) {
        if (have.count(name)) cpu.features.push_back(name);
      }
      cpu.feature_source = "cpuinfo";
    } else if (arm && !arm_features.empty()) {
      std::set<std::string> have;
      for (absl::string_view f : absl::StrSplit(arm_features, ' ', absl::SkipEmpty())) have.insert(std::string(f));
      if (have.count("asimd")) cpu.features.push_back("neon");
      if (have.count("asimddp")) cpu.features.push_back("dotprod");
      if (have.count("i8mm")) cpu.features.push_back("i8mm");
      if (have.count("sve")) cpu.features.push_back("sve");
      if (have.count("sve2")) cpu.features.push_back("sve2");
      cpu.feature_source = "cpuinfo";
    } else {
      facts.notes.push_back("no CPU features detected (no CPUID/hwcap and no flags in /proc/cpuinfo): "
                            "assuming the baseline ISA");
    }
  }
  ComputeIsaLevel(cpu);

  cpu.logical_cores = processors;
  if (cpu.logical_cores == 0) {
    cpu.logical_cores = CountCpuList(ReadLine(Rooted(options, "/sys/devices/system/cpu/online")));
  }
  if (cpu.logical_cores == 0) {
    cpu.logical_cores = 1;
    facts.notes.push_back("cannot count CPUs: assuming 1");
  }
  cpu.physical_cores = cores.empty() ? cpu.logical_cores : static_cast<int>(cores.size());
  cpu.usable_cores = cpu.logical_cores;
  if (real) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
      cpu.usable_cores = std::min(cpu.usable_cores, CPU_COUNT(&set));
    }
  }
  DetectCgroup(options, facts);
  if (cpu.cgroup_cpu_quota > 0) {
    cpu.usable_cores =
        std::max(1, std::min(cpu.usable_cores, static_cast<int>(std::ceil(cpu.cgroup_cpu_quota))));
  }
}

void DetectSystem(const DetectOptions& options, Facts& facts) {
  bool real = IsRealRoot(options);
  // Memory.
  std::string meminfo, error;
#if defined(__APPLE__)
  if (real) facts.memory.total_bytes = static_cast<uint64_t>(SysctlInt("hw.memsize"));
#endif
  if (ReadSmallFile(Rooted(options, "/proc/meminfo"), &meminfo, &error, 64 * 1024)) {
    auto kib = [&](const char* key) -> uint64_t {
      std::string v = FieldOf(meminfo, key, ':');
      if (auto sp = v.find(' '); sp != std::string::npos) v = v.substr(0, sp);
      uint64_t n = 0;
      return ParseU64(v, &n) ? n * 1024 : 0;
    };
    facts.memory.total_bytes = kib("MemTotal");
    facts.memory.available_bytes = kib("MemAvailable");
  } else if (facts.memory.total_bytes == 0) {
    facts.notes.push_back(error);
  }

  // OS.
#if defined(__APPLE__)
  facts.os.system = "macos";
  facts.os.libc = "libSystem";
#else
  facts.os.system = "linux";
#endif
  facts.os.kernel = ReadLine(Rooted(options, "/proc/sys/kernel/osrelease"));
  struct utsname u;
  if (facts.os.kernel.empty() && real && uname(&u) == 0) facts.os.kernel = u.release;
  for (const char* file : {"/etc/os-release", "/usr/lib/os-release"}) {
    std::string text;
    if (!ReadSmallFile(Rooted(options, file), &text, nullptr, 64 * 1024)) continue;
    std::string name = FieldOf(text, "PRETTY_NAME", '=');
    if (name.size() >= 2 && (name.front() == '"' || name.front() == '\'')) name = name.substr(1, name.size() - 2);
    facts.os.distro = name;
    break;
  }
#if defined(__APPLE__)
  if (real) {
    facts.os.distro = absl::StrCat("macOS ", SysctlString("kern.osproductversion"));
    facts.os.libc_version = SysctlString("kern.osproductversion");
  }
#elif defined(__GLIBC__)
  facts.os.libc = "glibc";
  facts.os.libc_version = gnu_get_libc_version();
#else
  facts.os.libc = "musl";
#endif

  // The embedded Python and the wheel platform.
  facts.python.version = EmbeddedPythonVersion();
  std::vector<std::string> v = absl::StrSplit(facts.python.version, '.');
  if (v.size() >= 2) facts.python.abi_tag = absl::StrCat("cp", v[0], v[1]);
  std::string arch = facts.cpu.arch;
  if (facts.os.system == "macos") {
    std::vector<std::string> mac = absl::StrSplit(facts.os.libc_version, '.');
    std::string major = mac.empty() || mac[0].empty() ? "11" : mac[0];
    facts.python.platform_tag = absl::StrCat("macosx_", major, "_0_", arch);
    facts.python.platform = absl::StrCat("macosx_", arch);
  } else {
    if (facts.os.libc == "glibc") {
      std::vector<std::string> g = absl::StrSplit(facts.os.libc_version, '.');
      if (g.size() >= 2) facts.python.platform_tag = absl::StrCat("manylinux_", g[0], "_", g[1], "_", arch);
    } else {
      facts.python.platform_tag = absl::StrCat("musllinux_1_2_", arch);
    }
    facts.python.platform = absl::StrCat("linux_", arch);
  }
}

}  // namespace iu::detect
