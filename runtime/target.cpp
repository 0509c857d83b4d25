// Target profiles (include/inferenceutils/target.h).
#include "inferenceutils/target.h"

#include <algorithm>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "inferenceutils/errors.h"

namespace iu {

nlohmann::json TargetProfile::ToJson() const {
  if (empty()) return nullptr;
  return {{"backend", "cuda"}, {"cuda_archs", cuda_archs}, {"cuda", cuda}};
}

std::string TargetSummary(const nlohmann::json& target) {
  std::vector<std::string> sms;
  if (!target.is_object()) return "";
  for (const auto& cc : target.value("cuda_archs", nlohmann::json::array())) {
    if (cc.is_string()) sms.push_back(absl::StrCat("sm_", absl::StrJoin(absl::StrSplit(cc.get<std::string>(), '.'), "")));
  }
  return absl::StrCat(absl::StrJoin(sms, ", "), ", CUDA ", target.value("cuda", ""));
}

absl::StatusOr<std::vector<std::string>> ParseCudaArchs(const std::string& text) {
  std::set<std::pair<int, int>> archs;
  for (absl::string_view part : absl::StrSplit(text, absl::ByAnyChar(",; "), absl::SkipWhitespace())) {
    std::string item = absl::AsciiStrToLower(part);
    absl::string_view v = item;
    absl::ConsumePrefix(&v, "sm_") || absl::ConsumePrefix(&v, "compute_");
    int major = 0, minor = 0;
    bool ok = false;
    if (std::vector<std::string> dotted = absl::StrSplit(v, '.'); dotted.size() == 2) {
      ok = dotted[1].size() == 1 && absl::SimpleAtoi(dotted[0], &major) && absl::SimpleAtoi(dotted[1], &minor);
    } else if ((v.size() == 2 || v.size() == 3) && std::all_of(v.begin(), v.end(), absl::ascii_isdigit)) {
      ok = absl::SimpleAtoi(v.substr(0, v.size() - 1), &major) && absl::SimpleAtoi(v.substr(v.size() - 1), &minor);
    }
    if (!ok || major < 1 || major > 20) {
      return UsageError(absl::StrCat("--cuda-arch: '", std::string(part),
                                     "' is not a compute capability (give a list such as 86,90 or 8.6,9.0)"));
    }
    archs.insert({major, minor});
  }
  if (archs.empty()) return UsageError("--cuda-arch needs at least one compute capability, such as 86,90");
  std::vector<std::string> out;
  for (const auto& [major, minor] : archs) out.push_back(absl::StrCat(major, ".", minor));
  return out;
}

absl::StatusOr<std::string> ParseCudaVersion(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, '.');
  int major = 0, minor = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &major) || !absl::SimpleAtoi(parts[1], &minor) ||
      major < 1 || minor < 0 || parts[0].empty() || parts[1].empty()) {
    return UsageError(absl::StrCat("--cuda: '", text, "' is not a CUDA version (give MAJOR.MINOR, such as 12.4)"));
  }
  return absl::StrCat(major, ".", minor);
}

absl::Status TakeTargetArgs(std::vector<std::string>& args, TargetProfile& target, const std::string& command) {
  std::vector<std::string> rest;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string name = args[i], value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos && absl::StartsWith(name, "--cuda")) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (name != "--cuda-arch" && name != "--cuda") {
      rest.push_back(args[i]);
      continue;
    }
    if (!has_value) {
      if (i + 1 >= args.size()) return UsageError(absl::StrCat(command, ": ", name, " needs a value"));
      value = args[++i];
    }
    if (name == "--cuda-arch") {
      absl::StatusOr<std::vector<std::string>> archs = ParseCudaArchs(value);
      if (!archs.ok()) return archs.status();
      target.cuda_archs = *std::move(archs);
    } else {
      absl::StatusOr<std::string> version = ParseCudaVersion(value);
      if (!version.ok()) return version.status();
      target.cuda = *std::move(version);
    }
  }
  if (!target.cuda.empty() && target.cuda_archs.empty()) {
    return UsageError(absl::StrCat(command, ": --cuda needs --cuda-arch too (the target's GPUs, such as 86,90)"));
  }
  args = std::move(rest);
  return absl::OkStatus();
}

absl::StatusOr<TargetProfile> ApplyTarget(const TargetProfile& target, Facts& facts) {
  if (target.empty()) return target;
  NvidiaFacts& nv = facts.nvidia;
  std::string cuda = target.cuda.empty() ? nv.nvcc_version : target.cuda;
  if (cuda.empty()) {
    return UsageError("--cuda-arch: no nvcc here to take the target's CUDA version from; give --cuda X.Y "
                      "(the oldest driver CUDA the target machines have)");
  }
  // A driver library here (api "cuda") links the build as usual; without one the stub is used.
  if (nv.api == "cuda") nv.cuda_stubs.clear();
  nv.api = "target";
  nv.library = "--cuda-arch";
  nv.driver_present = true;
  nv.driver_version = "";
  nv.cuda_version = cuda;
  nv.visible_devices_set = false;
  nv.visible_devices.clear();
  nv.devices.clear();
  for (size_t i = 0; i < target.cuda_archs.size(); ++i) {
    GpuDevice gpu;
    gpu.index = static_cast<int>(i);
    gpu.name = "target";
    gpu.arch = target.cuda_archs[i];
    nv.devices.push_back(gpu);
  }
  nv.notes = {absl::StrCat("target profile (--cuda-arch): compute capabilities ", absl::StrJoin(target.cuda_archs, ", "),
                           ", a driver for CUDA ", cuda, "; this machine's GPUs are not used")};
  facts.source = "target";
  TargetProfile applied = target;
  applied.cuda = cuda;
  return applied;
}

}  // namespace iu
