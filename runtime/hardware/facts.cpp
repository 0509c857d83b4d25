// DetectFacts: runs the part detectors; the Facts JSON form (docs/info.md documents it).
#include <chrono>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "hardware/detect_util.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/hardware.h"

namespace iu {

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(CpuFacts, arch, vendor, model_name, logical_cores,
                                                physical_cores, usable_cores, cgroup_cpu_quota,
                                                cgroup_version, features, feature_source, isa_level)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(MemoryFacts, total_bytes, available_bytes, cgroup_limit_bytes)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(OsFacts, system, kernel, distro, libc, libc_version)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(PythonFacts, version, abi_tag, platform_tag, platform)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(GpuDevice, index, name, uuid, arch, memory_bytes)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(NvidiaFacts, driver_present, driver_version, cuda_version,
                                                api, library, devices, visible_devices,
                                                visible_devices_set, nvcc_path, nvcc_version, cuda_stubs, notes)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(RocmFacts, kfd_present, devices, hip_path, hip_version,
                                                hipcc, notes)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(AppleFacts, macos, apple_silicon, rosetta, metal, chip, notes)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(VulkanFacts, loader, icds, hardware_icd, notes)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(ToolFacts, c_compiler, cxx_compiler, glslc)

bool CpuFacts::Has(const std::string& feature) const {
  for (const auto& f : features) {
    if (f == feature) return true;
  }
  return false;
}

const std::vector<std::string>& DetectionEnvVars() {
  static const std::vector<std::string> kVars = {
      "PATH",        "CUDA_HOME",       "CUDA_PATH",        "CUDA_VISIBLE_DEVICES",
      "ROCM_PATH",   "HIP_PATH",        "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
      "VK_ICD_FILENAMES", "VK_DRIVER_FILES"};
  return kVars;
}

DetectOptions DetectOptionsFromEnv() {
  DetectOptions options;
  auto get = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v ? v : "";
  };
  if (!get("INFERENCEUTILS_SYSROOT").empty()) options.root = get("INFERENCEUTILS_SYSROOT");
  options.cuda_library = get("INFERENCEUTILS_CUDA_LIBRARY");
  options.nvml_library = get("INFERENCEUTILS_NVML_LIBRARY");
  for (const std::string& var : DetectionEnvVars()) {
    if (const char* v = std::getenv(var.c_str())) options.env[var] = v;
  }
  return options;
}

Facts DetectFacts(const DetectOptions& options) {
  auto start = std::chrono::steady_clock::now();
  Facts facts;
  facts.launcher_version = IU_VERSION;
  facts.root = options.root.empty() ? "/" : options.root;
  detect::DetectCpu(options, facts);
  detect::DetectSystem(options, facts);
  detect::DetectNvidia(options, facts);
  detect::DetectRocm(options, facts);
  detect::DetectApple(options, facts);
  detect::DetectVulkan(options, facts);
  detect::DetectTools(options, facts);
  facts.detect_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return facts;
}

nlohmann::json Facts::ToJson() const {
  return nlohmann::json{{"schema_version", schema_version},
                        {"launcher_version", launcher_version},
                        {"root", root},
                        {"cpu", cpu},
                        {"memory", memory},
                        {"os", os},
                        {"python", python},
                        {"nvidia", nvidia},
                        {"rocm", rocm},
                        {"apple", apple},
                        {"vulkan", vulkan},
                        {"tools", tools},
                        {"notes", notes},
                        {"detect_ms", detect_ms},
                        {"source", source}};
}

absl::StatusOr<Facts> Facts::FromJson(const nlohmann::json& json) {
  if (!json.is_object()) return ConfigError("facts: not a JSON object");
  try {
    int version = json.value("schema_version", 0);
    if (version != kSchemaVersion) {
      return ConfigError(absl::StrCat("facts: schema_version ", version, ", expected ", kSchemaVersion));
    }
    Facts facts;
    facts.launcher_version = json.value("launcher_version", "");
    facts.root = json.value("root", "/");
    facts.cpu = json.value("cpu", CpuFacts{});
    facts.memory = json.value("memory", MemoryFacts{});
    facts.os = json.value("os", OsFacts{});
    facts.python = json.value("python", PythonFacts{});
    facts.nvidia = json.value("nvidia", NvidiaFacts{});
    facts.rocm = json.value("rocm", RocmFacts{});
    facts.apple = json.value("apple", AppleFacts{});
    facts.vulkan = json.value("vulkan", VulkanFacts{});
    facts.tools = json.value("tools", ToolFacts{});
    facts.notes = json.value("notes", std::vector<std::string>{});
    facts.detect_ms = json.value("detect_ms", 0.0);
    facts.source = json.value("source", "detected");
    return facts;
  } catch (const nlohmann::json::exception& e) {
    return ConfigError(absl::StrCat("facts: ", e.what()));
  }
}

}  // namespace iu
