// Facts about the machine: CPU, memory, OS/libc, the embedded Python, NVIDIA/AMD/Apple/Vulkan
// GPUs and toolkits. Detected in-process (files, CPUID/getauxval/sysctl, dlopen of driver
// libraries; never a subprocess), cached in the store, and plain data with a JSON form.
//
// Detection never fails: whatever cannot be read or loaded becomes a note inside the facts, so
// the backend decision can fall back and say why.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace iu {

// Where detection looks. Tests point `root` at a fixture tree (proc/, sys/, etc/, opt/, usr/)
// and the libraries at fakes; every filesystem read goes through `root`.
struct DetectOptions {
  std::string root = "/";
  std::string cuda_library;  // empty: "libcuda.so.1" through the dlopen search path
  std::string nvml_library;  // empty: "libnvidia-ml.so.1"
  // The environment as detection sees it (PATH, CUDA_HOME, CUDA_PATH, CUDA_VISIBLE_DEVICES,
  // ROCM_PATH, HIP_PATH, ROCR_VISIBLE_DEVICES, HIP_VISIBLE_DEVICES, VK_ICD_FILENAMES,
  // VK_DRIVER_FILES). Explicit so tests need no setenv and the cache can fingerprint it.
  std::map<std::string, std::string> env;
};

// The variables detection reads (see DetectOptions::env).
const std::vector<std::string>& DetectionEnvVars();

// From the process environment: INFERENCEUTILS_SYSROOT (a fixture root for /proc, /sys, ...),
// INFERENCEUTILS_CUDA_LIBRARY, INFERENCEUTILS_NVML_LIBRARY (testing/diagnostic variables), and the
// variables of DetectionEnvVars().
DetectOptions DetectOptionsFromEnv();

struct CpuFacts {
  std::string arch;            // "x86_64", "aarch64", "arm64"
  std::string vendor;          // "GenuineIntel", "AuthenticAMD", "ARM", "Apple"
  std::string model_name;
  int logical_cores = 0;
  int physical_cores = 0;
  int usable_cores = 0;        // min(logical, affinity, ceil(cgroup quota))
  double cgroup_cpu_quota = 0; // CPUs the cgroup allows; 0 = no limit
  std::string cgroup_version;  // "v1", "v2" or "" (none found)
  std::vector<std::string> features;  // canonical names, see docs/info.md
  std::string feature_source;  // "cpuid", "hwcap", "sysctl", "cpuinfo" or ""
  std::string isa_level;       // "x86-64-v3", "x86-64-v4+avx512_vnni", "armv8+dotprod+i8mm", ...
  bool Has(const std::string& feature) const;
};

struct MemoryFacts {
  uint64_t total_bytes = 0;
  uint64_t available_bytes = 0;
  uint64_t cgroup_limit_bytes = 0;  // 0 = no limit
};

struct OsFacts {
  std::string system;       // "linux", "macos"
  std::string kernel;       // release, e.g. "6.1.0-18-amd64"
  std::string distro;       // PRETTY_NAME of os-release
  std::string libc;         // "glibc", "musl", "libSystem"
  std::string libc_version; // "2.36"
};

struct PythonFacts {
  std::string version;       // "3.11.2"
  std::string abi_tag;       // "cp311"
  std::string platform_tag;  // "manylinux_2_36_x86_64", "macosx_14_0_arm64"
  std::string platform;      // "linux_x86_64", "linux_aarch64", "macosx_arm64" (wheel table key)
};

struct GpuDevice {
  int index = 0;               // as the application will number it (after *_VISIBLE_DEVICES)
  std::string name;
  std::string uuid;            // "GPU-xxxxxxxx-..." (NVIDIA) or the kfd unique_id (AMD)
  std::string arch;            // NVIDIA: "8.6" (compute capability); AMD: "gfx1100"
  uint64_t memory_bytes = 0;
};

struct NvidiaFacts {
  bool driver_present = false;     // /proc/driver/nvidia/version
  std::string driver_version;      // "580.159.03"
  std::string cuda_version;        // highest CUDA the driver supports, "13.0"
  std::string api;                 // "cuda" (libcuda), "nvml", or "" (none worked)
  std::string library;             // the library that answered
  std::vector<GpuDevice> devices;  // visible devices
  std::string visible_devices;     // CUDA_VISIBLE_DEVICES, if set
  bool visible_devices_set = false;
  std::string nvcc_path;           // CUDA toolkit for source builds
  std::string nvcc_version;        // "12.4"
  std::string cuda_stubs;          // the toolkit's lib64/stubs holding libcuda.so (link-time stand-in), or ""
  std::vector<std::string> notes;  // what failed and why
};

struct RocmFacts {
  bool kfd_present = false;        // /sys/class/kfd/kfd/topology/nodes
  std::vector<GpuDevice> devices;  // GPU agents (CPU nodes skipped), after ROCR/HIP_VISIBLE_DEVICES
  std::string hip_path;            // ROCm/HIP install for source builds
  std::string hip_version;
  bool hipcc = false;
  std::vector<std::string> notes;
};

struct AppleFacts {
  bool macos = false;
  bool apple_silicon = false;  // the machine (even when this process is translated)
  bool rosetta = false;        // sysctl.proc_translated: an x86_64 process on Apple Silicon
  bool metal = false;          // Metal usable by a native build
  std::string chip;
  std::vector<std::string> notes;
};

struct VulkanFacts {
  std::string loader;              // path of libvulkan
  std::vector<std::string> icds;   // installed ICD manifests (json)
  bool hardware_icd = false;       // an ICD that is not a software rasterizer (lavapipe, swiftshader)
  std::vector<std::string> notes;
};

struct ToolFacts {
  std::string c_compiler;   // cc/gcc/clang on PATH
  std::string cxx_compiler; // c++/g++/clang++
  std::string glslc;        // Vulkan shader compiler (source builds)
};

struct Facts {
  static constexpr int kSchemaVersion = 1;
  int schema_version = kSchemaVersion;
  std::string launcher_version;
  std::string root = "/";   // the detection root (not "/" only in tests/diagnostics)
  CpuFacts cpu;
  MemoryFacts memory;
  OsFacts os;
  PythonFacts python;
  NvidiaFacts nvidia;
  RocmFacts rocm;
  AppleFacts apple;
  VulkanFacts vulkan;
  ToolFacts tools;
  std::vector<std::string> notes;  // CPU/memory/OS problems
  double detect_ms = 0;            // how long detection took
  std::string source = "detected"; // "detected" or "cache" (set by LoadOrDetectFacts)

  nlohmann::json ToJson() const;
  static absl::StatusOr<Facts> FromJson(const nlohmann::json& json);
};

// Full detection. Never fails.
Facts DetectFacts(const DetectOptions& options);

// Facts from <store_root>/facts.json when its fingerprint matches FactsFingerprint(options),
// else detected and written there (best effort: an unwritable store only means no cache).
Facts LoadOrDetectFacts(const std::string& store_root, const DetectOptions& options);
// Same, but always detects (and refreshes the cache).
Facts RefreshFacts(const std::string& store_root, const DetectOptions& options);

// A digest of what can change the facts: launcher version, options and their env, the NVIDIA
// driver version file, kernel release and boot id, the first CPU's model line, the kfd topology
// generation. Reads a few small files; no directory walks.
std::string FactsFingerprint(const DetectOptions& options);

// CUDA_VISIBLE_DEVICES with CUDA's rules, applied to the devices NVML reports (NVML ignores the
// variable): entries are indices, GPU-UUID prefixes or MIG- ids; devices are renumbered in list
// order; an invalid, ambiguous or repeated entry ends the list; an empty value means none.
// `uuids` are the devices' UUIDs in NVML order; returns the selected NVML indices in CUDA order.
std::vector<int> ApplyCudaVisibleDevices(const std::string& value, const std::vector<std::string>& uuids);

// "gfx1100" from kfd's gfx_target_version 110000 (major*10000 + minor*100 + stepping).
std::string GfxName(uint32_t gfx_target_version);

}  // namespace iu
