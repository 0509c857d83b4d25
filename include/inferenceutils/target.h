// A target profile: the GPUs and driver a runtime is built for when they are not this machine's
// (a build host with nvcc and no GPU serving a fleet). `runtime build --cuda-arch 86,90 --cuda 12.4`
// and `info --cuda-arch ...` decide and key the runtime as a machine with those GPUs would.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "inferenceutils/hardware.h"
#include "nlohmann/json.hpp"

namespace iu {

struct TargetProfile {
  std::vector<std::string> cuda_archs;  // compute capabilities, "8.6", sorted, unique
  std::string cuda;                     // the target driver's CUDA, "12.4"; "" = this nvcc's version
  bool empty() const { return cuda_archs.empty() && cuda.empty(); }
  nlohmann::json ToJson() const;  // {"backend": "cuda", "cuda_archs": [...], "cuda": "12.4"}; null when empty
};

// "sm_86, sm_90, CUDA 12.4" from a TargetProfile::ToJson() (info, runtime build).
std::string TargetSummary(const nlohmann::json& target);

// "86,90" / "8.6;9.0" / "sm_86" → {"8.6", "9.0"}. A bad list is a usage error (kExitUsage).
absl::StatusOr<std::vector<std::string>> ParseCudaArchs(const std::string& text);
// "12.4" → "12.4"; anything but MAJOR.MINOR is a usage error.
absl::StatusOr<std::string> ParseCudaVersion(const std::string& text);

// Takes --cuda-arch LIST and --cuda X.Y (and their NAME=VALUE forms) out of `args` into `target`.
absl::Status TakeTargetArgs(std::vector<std::string>& args, TargetProfile& target, const std::string& command);

// This machine's facts as the target would have them: the NVIDIA devices and the driver's CUDA
// are the target's; the toolkit (nvcc, its stub libcuda) stays this machine's. The stub goes on the
// link path when this machine has no driver library, as for any build host.
// Returns the target as applied (its CUDA filled in).
absl::StatusOr<TargetProfile> ApplyTarget(const TargetProfile& target, Facts& facts);

}  // namespace iu
