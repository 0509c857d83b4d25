// The backend decision: Facts + forced backend + assets/backends.toml → Decision.
#include "inferenceutils/json_text.h"
#include "inferenceutils/backend.h"
#include "inferenceutils/digest.h"


#include <algorithm>
#include <cstdio>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "inferenceutils/errors.h"
#include "toml++/toml.h"

namespace iu {
namespace {

using Version = std::pair<int, int>;

Version ParseVersion(const std::string& s) {  // "12.4" / "8.6" / "2.36" → {12,4}; garbage → {-1,-1}
  std::vector<std::string> parts = absl::StrSplit(s, '.');
  if (parts.size() < 2) return {-1, -1};
  int a = 0, b = 0;
  try {
    a = std::stoi(parts[0]);
    b = std::stoi(parts[1]);
  } catch (...) {
    return {-1, -1};
  }
  return {a, b};
}

struct WheelSpec {
  std::string tag, cuda, min_cc, max_cc, min_glibc;
  std::vector<std::string> python, platforms, gfx;
};
struct ToolkitSpec {
  std::string cuda, min_cc, max_cc;
};
struct BackendSpec {
  std::vector<std::string> cmake_args, build_tools;
  std::map<std::string, std::string> env;
  std::vector<WheelSpec> wheels;
  std::vector<ToolkitSpec> toolkits;
};
struct Table {
  std::vector<std::string> preference;
  std::string wheel_index;
  std::map<std::string, BackendSpec> backends;
};

std::vector<std::string> Strings(const toml::node* node) {
  std::vector<std::string> out;
  if (const toml::array* arr = node ? node->as_array() : nullptr) {
    for (const auto& item : *arr) {
      if (auto s = item.value<std::string>()) out.push_back(*s);
    }
  }
  return out;
}

absl::StatusOr<Table> LoadTable(const std::string& path) {
  toml::table doc;
  try {
    doc = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return WithExit(absl::FailedPreconditionError(absl::StrCat(
                        "cannot read the backend table ", path, ": ", std::string(e.description()),
                        " (reinstall inferenceutils: the file ships in share/inferenceutils)")),
                    kExitConfig);
  }
  Table table;
  table.preference = Strings(doc.get("preference"));
  table.wheel_index = doc["wheel_index"].value_or(std::string());
  if (table.preference.empty()) {
    return ConfigError(absl::StrCat(path, ": 'preference' must list the backends"));
  }
  for (const std::string& name : table.preference) {
    const toml::table* t = doc[name].as_table();
    if (!t) return ConfigError(absl::StrCat(path, ": no [", name, "] table for a backend in 'preference'"));
    BackendSpec spec;
    spec.cmake_args = Strings(t->get("cmake_args"));
    spec.build_tools = Strings(t->get("build_tools"));
    if (const toml::table* env = t->get_as<toml::table>("env")) {
      for (const auto& [k, v] : *env) spec.env[std::string(k.str())] = v.value_or(std::string());
    }
    auto str = [](const toml::table& w, const char* key) { return w[key].value_or(std::string()); };
    if (const toml::array* wheels = t->get_as<toml::array>("wheels")) {
      for (const auto& item : *wheels) {
        const toml::table* w = item.as_table();
        if (!w) continue;
        WheelSpec wheel{str(*w, "tag"), str(*w, "cuda"), str(*w, "min_cc"), str(*w, "max_cc"),
                        str(*w, "min_glibc"), Strings(w->get("python")), Strings(w->get("platforms")),
                        Strings(w->get("gfx"))};
        if (wheel.tag.empty()) return ConfigError(absl::StrCat(path, ": a [[", name, ".wheels]] entry has no tag"));
        spec.wheels.push_back(std::move(wheel));
      }
    }
    if (const toml::array* toolkits = t->get_as<toml::array>("toolkits")) {
      for (const auto& item : *toolkits) {
        if (const toml::table* k = item.as_table()) {
          spec.toolkits.push_back({str(*k, "cuda"), str(*k, "min_cc"), str(*k, "max_cc")});
        }
      }
    }
    table.backends[name] = std::move(spec);
  }
  return table;
}

std::string Sm(const std::string& cc) {  // "8.6" → "sm_86"
  return absl::StrCat("sm_", absl::StrReplaceAll(cc, {{".", ""}}));
}

bool Contains(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

// Why `wheel` does not fit this machine; "" when it does.
std::string WheelMismatch(const WheelSpec& wheel, const Facts& facts, const std::string& backend) {
  if (!wheel.platforms.empty() && !Contains(wheel.platforms, facts.python.platform)) {
    return absl::StrCat("built for ", absl::StrJoin(wheel.platforms, "/"), ", not ", facts.python.platform);
  }
  if (!wheel.python.empty() && !Contains(wheel.python, facts.python.abi_tag)) {
    return absl::StrCat("built for ", absl::StrJoin(wheel.python, "/"), ", not ", facts.python.abi_tag);
  }
  if (!wheel.min_glibc.empty() && facts.os.system == "linux") {
    if (facts.os.libc != "glibc") return absl::StrCat("needs glibc, this is ", facts.os.libc);
    if (ParseVersion(facts.os.libc_version) < ParseVersion(wheel.min_glibc)) {
      return absl::StrCat("needs glibc >= ", wheel.min_glibc, ", have ", facts.os.libc_version);
    }
  }
  if (backend == "cuda") {
    if (!wheel.cuda.empty() && ParseVersion(facts.nvidia.cuda_version) < ParseVersion(wheel.cuda)) {
      return absl::StrCat("needs a driver for CUDA >= ", wheel.cuda, ", the driver supports ", facts.nvidia.cuda_version);
    }
    for (const GpuDevice& gpu : facts.nvidia.devices) {
      Version cc = ParseVersion(gpu.arch);
      if ((!wheel.min_cc.empty() && cc < ParseVersion(wheel.min_cc)) ||
          (!wheel.max_cc.empty() && cc > ParseVersion(wheel.max_cc))) {
        return absl::StrCat("covers sm_", absl::StrReplaceAll(wheel.min_cc, {{".", ""}}), "..sm_",
                            absl::StrReplaceAll(wheel.max_cc, {{".", ""}}), ", not ", Sm(gpu.arch));
      }
    }
  }
  if (backend == "rocm" && !wheel.gfx.empty()) {
    for (const GpuDevice& gpu : facts.rocm.devices) {
      if (!Contains(wheel.gfx, gpu.arch)) return absl::StrCat("not built for ", gpu.arch);
    }
  }
  return {};
}

struct Check {
  BackendCheck result;
  std::string hardware;                 // what was found, for the reason
  std::vector<std::string> wheel_tags;  // matching wheels, best first
  bool source_ok = false;
  std::string source_why;               // why a source build is (im)possible
};

// Why a source build is impossible ("" when possible) and what it would use.
std::string SourceBuildProblem(const std::string& backend, const BackendSpec& spec, const Facts& facts,
                               std::string* found) {
  std::vector<std::string> problems;
  for (const std::string& tool : spec.build_tools) {
    if (tool == "c_compiler") {
      if (facts.tools.c_compiler.empty()) problems.push_back("no C compiler (cc, gcc, clang) on PATH");
      else if (found->empty()) *found = absl::StrCat("compiler ", facts.tools.c_compiler);
    } else if (tool == "nvcc") {
      const NvidiaFacts& nv = facts.nvidia;
      if (nv.nvcc_path.empty()) {
        problems.push_back("no nvcc (CUDA_HOME, CUDA_PATH, PATH, /usr/local/cuda)");
        continue;
      }
      if (nv.nvcc_version.empty()) {
        problems.push_back(absl::StrCat("nvcc at ", nv.nvcc_path, " has an unknown version"));
        continue;
      }
      *found = absl::StrCat("nvcc ", nv.nvcc_version, " found");
      if (ParseVersion(nv.nvcc_version) > ParseVersion(nv.cuda_version)) {
        problems.push_back(absl::StrCat("nvcc ", nv.nvcc_version, " is newer than the ",
                                        nv.api == "target" ? "target's (--cuda) " : "driver's ", "CUDA ",
                                        nv.cuda_version, " (its builds would not run there)"));
        continue;
      }
      const ToolkitSpec* kit = nullptr;
      for (const ToolkitSpec& k : spec.toolkits) {
        if (ParseVersion(k.cuda) <= ParseVersion(nv.nvcc_version)) kit = &k;
      }
      if (kit) {
        for (const GpuDevice& gpu : nv.devices) {
          Version cc = ParseVersion(gpu.arch);
          if (cc < ParseVersion(kit->min_cc) || cc > ParseVersion(kit->max_cc)) {
            problems.push_back(absl::StrCat("nvcc ", nv.nvcc_version, " cannot target ", Sm(gpu.arch)));
            break;
          }
        }
      }
    } else if (tool == "hipcc") {
      if (facts.rocm.hip_path.empty() || !facts.rocm.hipcc) {
        problems.push_back("no ROCm/HIP install with hipcc ($ROCM_PATH, $HIP_PATH, /opt/rocm)");
      } else {
        *found = absl::StrCat("ROCm ", facts.rocm.hip_version.empty() ? "" : facts.rocm.hip_version + " ",
                              "at ", facts.rocm.hip_path);
      }
    } else if (tool == "glslc") {
      if (facts.tools.glslc.empty()) problems.push_back("no glslc (Vulkan shader compiler) on PATH");
    }
  }
  (void)backend;
  return absl::StrJoin(problems, ", ");
}

std::string GpuList(const std::vector<GpuDevice>& devices, bool nvidia) {
  std::vector<std::string> parts;
  for (const GpuDevice& gpu : devices) {
    parts.push_back(absl::StrCat(gpu.name, " (", nvidia ? Sm(gpu.arch) : gpu.arch, ")"));
  }
  return absl::StrJoin(parts, ", ");
}

// Is the hardware for `backend` there? Fills check.hardware, or returns the reason it is not.
std::string HardwareProblem(const std::string& backend, const Facts& facts, Check& check) {
  if (backend == "cuda") {
    const NvidiaFacts& nv = facts.nvidia;
    std::string notes = absl::StrJoin(nv.notes, "; ");
    if (nv.api.empty()) {
      // No driver and nothing else tried (nvcc notes are about the toolkit, not the driver).
      for (const std::string& note : nv.notes) {
        if (!nv.driver_present && absl::StartsWith(note, "no NVIDIA driver")) return note;
      }
      return absl::StrCat(nv.driver_present ? absl::StrCat("NVIDIA driver ", nv.driver_version, " present but ")
                                            : std::string(),
                          "the driver API is unusable: ", notes);
    }
    if (nv.devices.empty()) {
      if (nv.visible_devices_set) return absl::StrCat("CUDA_VISIBLE_DEVICES=", nv.visible_devices, " leaves no GPU visible");
      return "the NVIDIA driver reports no GPU";
    }
    if (nv.api == "target") {  // --cuda-arch: the GPUs of the machines the runtime is for
      std::vector<std::string> sms;
      for (const GpuDevice& gpu : nv.devices) sms.push_back(Sm(gpu.arch));
      check.hardware = absl::StrCat("target ", absl::StrJoin(sms, ", "), " with a driver for CUDA ", nv.cuda_version,
                                    " (--cuda-arch; this machine's GPUs are not used)");
      return {};
    }
    check.hardware = absl::StrCat(GpuList(nv.devices, true), ", driver ",
                                  nv.driver_version.empty() ? "(version unknown)" : nv.driver_version,
                                  " supports CUDA ", nv.cuda_version);
    return {};
  }
  if (backend == "rocm") {
    const RocmFacts& r = facts.rocm;
    if (!r.kfd_present) return "no AMD GPU driver (/sys/class/kfd absent)";
    if (r.devices.empty()) return absl::StrCat("no AMD GPU visible (", absl::StrJoin(r.notes, "; "), ")");
    check.hardware = GpuList(r.devices, false);
    return {};
  }
  if (backend == "metal") {
    const AppleFacts& a = facts.apple;
    if (!a.macos) return "not macOS";
    if (a.rosetta) {
      return "x86_64 process under Rosetta 2 on Apple Silicon: builds would be x86_64 without Metal; "
             "install the arm64 launcher";
    }
    if (!a.metal) return "no Apple Silicon GPU";
    check.hardware = absl::StrCat(a.chip.empty() ? "Apple Silicon" : a.chip, " (Metal)");
    return {};
  }
  if (backend == "vulkan") {
    const VulkanFacts& v = facts.vulkan;
    if (v.loader.empty()) return "no Vulkan loader (libvulkan.so.1)";
    if (!v.hardware_icd) return v.icds.empty() ? "no Vulkan driver (ICD) installed" : "only software Vulkan drivers";
    check.hardware = absl::StrCat("Vulkan loader ", v.loader, ", ", v.icds.size(), " driver(s)");
    return {};
  }
  if (backend == "cpu") {
    check.hardware = absl::StrCat(facts.cpu.model_name.empty() ? "CPU" : facts.cpu.model_name, " (",
                                  facts.cpu.isa_level, ")");
    return {};
  }
  return absl::StrCat("unknown backend ", backend);
}

Check Evaluate(const std::string& backend, const BackendSpec& spec, const Facts& facts) {
  Check check;
  check.result.backend = backend;
  std::string problem = HardwareProblem(backend, facts, check);
  if (!problem.empty()) {
    check.result.reason = absl::StrCat(backend, " not usable: ", problem);
    return check;
  }
  std::vector<std::string> rejected;
  for (const WheelSpec& wheel : spec.wheels) {
    std::string why = WheelMismatch(wheel, facts, backend);
    if (why.empty()) check.wheel_tags.push_back(wheel.tag);
    else rejected.push_back(absl::StrCat(wheel.tag, " ", why));
  }
  std::string found;
  std::string source_problem = SourceBuildProblem(backend, spec, facts, &found);
  check.source_ok = source_problem.empty();
  std::vector<std::string> parts = {check.hardware};
  if (!found.empty()) parts.push_back(found);
  if (!check.source_ok) parts.push_back(absl::StrCat("no source build (", source_problem, ")"));
  if (!check.wheel_tags.empty()) parts.push_back(absl::StrCat("prebuilt ", absl::StrJoin(check.wheel_tags, ", ")));
  else if (!rejected.empty()) parts.push_back(absl::StrCat("no prebuilt wheel fits (", rejected.front(), ")"));
  else parts.push_back("no prebuilt wheels");
  check.result.usable = check.source_ok || !check.wheel_tags.empty() || backend == "cpu";
  check.result.reason = absl::StrJoin(parts, ", ");
  if (!check.result.usable) check.result.reason = absl::StrCat(backend, " not usable: ", check.result.reason);
  return check;
}

std::string Substitute(const std::string& arg, const std::map<std::string, std::string>& vars, bool* empty) {
  std::string out = arg;
  *empty = false;
  for (const auto& [name, value] : vars) {
    std::string placeholder = absl::StrCat("{", name, "}");
    if (absl::StrContains(out, placeholder)) {
      if (value.empty()) *empty = true;
      out = absl::StrReplaceAll(out, {{placeholder, value}});
    }
  }
  return out;
}

}  // namespace

const std::vector<std::string>& KnownBackends() {
  static const std::vector<std::string> kBackends = {"cuda", "rocm", "metal", "vulkan", "cpu"};
  return kBackends;
}

std::string ProfileKeyOf(const nlohmann::json& profile) {
  std::string canonical = DumpJson(profile);  // objects keep sorted keys: canonical
  std::string hex = Sha256Hex(canonical).substr(0, 16);
  return absl::StrCat(profile.value("backend", "unknown"), "-", hex);
}

absl::StatusOr<Decision> Decide(const Facts& facts, const std::string& forced_backend,
                                const std::string& backends_toml_path) {
  if (!forced_backend.empty() && !Contains(KnownBackends(), forced_backend)) {
    return ConfigError(absl::StrCat("unknown backend '", forced_backend, "' (--backend or INFERENCEUTILS_BACKEND); choose ",
                                    absl::StrJoin(KnownBackends(), ", "), " or auto"));
  }
  absl::StatusOr<Table> table = LoadTable(backends_toml_path);
  if (!table.ok()) return table.status();
  if (!forced_backend.empty() && !table->backends.count(forced_backend)) {
    return WithExit(absl::FailedPreconditionError(absl::StrCat(
                        "backend ", forced_backend, " is not in ", backends_toml_path)),
                    kExitUnavailable);
  }

  Decision decision;
  std::vector<Check> checks;
  for (const std::string& name : table->preference) checks.push_back(Evaluate(name, table->backends[name], facts));
  const Check* chosen = nullptr;
  if (!forced_backend.empty()) {
    for (const Check& c : checks) {
      if (c.result.backend == forced_backend) chosen = &c;
    }
    if (!chosen->result.usable) {
      return WithExit(absl::FailedPreconditionError(absl::StrCat(
                          "backend ", forced_backend, " was asked for (--backend or INFERENCEUTILS_BACKEND) but ",
                          chosen->result.reason, "; run `inferenceutils info` for details or choose another")),
                      kExitUnavailable);
    }
    decision.forced = true;
  } else {
    for (const Check& c : checks) {
      if (c.result.usable) {
        chosen = &c;
        break;
      }
    }
    if (!chosen) {
      return WithExit(absl::FailedPreconditionError(absl::StrCat(
                          "no usable backend: ", checks.empty() ? "" : checks.back().result.reason)),
                      kExitUnavailable);
    }
  }
  const std::string& backend = chosen->result.backend;
  decision.backend = backend;
  decision.source_build_possible = chosen->source_ok;
  decision.reasons.push_back(absl::StrCat(chosen->result.reason, " → ", backend,
                                          decision.forced ? " (forced)" : ""));
  for (const Check& c : checks) {
    decision.considered.push_back(c.result);
    if (&c == chosen) continue;
    if (!c.result.usable) decision.reasons.push_back(c.result.reason);
    else decision.reasons.push_back(absl::StrCat(c.result.backend, " also usable: ", c.result.reason));
  }
  if (backend != "cpu") {
    decision.reasons.push_back(absl::StrCat("CPU ", facts.cpu.model_name, ": ", facts.cpu.isa_level));
  }
  for (const std::string& note : facts.notes) decision.reasons.push_back(note);

  // Build recipe.
  const BackendSpec& spec = table->backends[backend];
  std::set<Version> ccs;
  std::set<std::string> gfx;
  for (const GpuDevice& gpu : facts.nvidia.devices) ccs.insert(ParseVersion(gpu.arch));
  std::vector<std::string> cuda_archs;
  for (const Version& cc : ccs) cuda_archs.push_back(absl::StrCat(cc.first, cc.second));
  for (const GpuDevice& gpu : facts.rocm.devices) gfx.insert(gpu.arch);
  std::map<std::string, std::string> vars = {
      {"cuda_architectures", absl::StrJoin(cuda_archs, ";")},
      {"gpu_targets", absl::StrJoin(gfx, ";")},
      {"nvcc", facts.nvidia.nvcc_path},
      {"hip_path", facts.rocm.hip_path},
  };
  std::vector<std::string> args;
  for (const std::string& arg : spec.cmake_args) {
    bool empty = false;
    std::string value = Substitute(arg, vars, &empty);
    if (!empty) args.push_back(value);
  }
  // No driver library (libcuda.so.1) here: a build host, container build or CI machine. The
  // toolkit's stub libcuda.so goes on the link path of the build only (llama.cpp's executables
  // link against libggml-cuda.so, which needs libcuda.so.1), never on the runtime's library path.
  if (backend == "cuda" && facts.nvidia.api != "cuda" && !facts.nvidia.cuda_stubs.empty()) {
    const std::string& dir = facts.nvidia.cuda_stubs;
    args.push_back(absl::StrCat("-DCMAKE_EXE_LINKER_FLAGS=-Wl,-L", dir, ",--allow-shlib-undefined"));
    args.push_back(absl::StrCat("-DCMAKE_SHARED_LINKER_FLAGS=-Wl,-L", dir));
    decision.build_env["LIBRARY_PATH"] = dir;
    decision.cuda_stubs = dir;
    decision.reasons.push_back(absl::StrCat("no driver library (libcuda.so.1): the build links against the toolkit's stub ",
                                            dir, "/libcuda.so (link path only, not the runtime's)"));
  }
  decision.build_env["CMAKE_ARGS"] = absl::StrJoin(args, " ");
  for (const auto& [name, value] : spec.env) {
    bool empty = false;
    std::string v = Substitute(value, vars, &empty);
    if (!empty) decision.build_env[name] = v;
  }
  decision.wheel_tags = chosen->wheel_tags;
  for (const std::string& tag : chosen->wheel_tags) {
    decision.wheel_indexes.push_back(absl::StrReplaceAll(table->wheel_index, {{"{tag}", tag}}));
  }

  // Profile key: only what the runtime's build depends on.
  nlohmann::json profile = {
      {"key_version", 1},
      {"backend", backend},
      {"arch", facts.cpu.arch},
      {"isa", facts.cpu.isa_level},
      {"python_abi", facts.python.abi_tag},
      {"platform", facts.python.platform_tag},
  };
  if (backend == "cuda") {
    std::vector<std::string> targets;
    for (const std::string& a : cuda_archs) targets.push_back("sm_" + a);
    profile["gpu_targets"] = targets;
    profile["cuda"] = facts.nvidia.cuda_version;
  } else if (backend == "rocm") {
    profile["gpu_targets"] = std::vector<std::string>(gfx.begin(), gfx.end());
  }
  decision.profile = profile;
  decision.profile_key = ProfileKeyOf(profile);
  return decision;
}

nlohmann::json Decision::ToJson() const {
  nlohmann::json considered_json = nlohmann::json::array();
  for (const BackendCheck& c : considered) {
    considered_json.push_back({{"backend", c.backend}, {"usable", c.usable}, {"reason", c.reason}});
  }
  return {{"backend", backend},
          {"forced", forced},
          {"reasons", reasons},
          {"considered", considered_json},
          {"build_env", build_env},
          {"wheel_indexes", wheel_indexes},
          {"wheel_tags", wheel_tags},
          {"source_build_possible", source_build_possible},
          {"profile", profile},
          {"profile_key", profile_key},
          {"target", target}};
}

}  // namespace iu
