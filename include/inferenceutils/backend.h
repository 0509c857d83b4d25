// The backend decision: which inference backend the runtime is built for, why, how to build or
// fetch it (CMAKE_ARGS, prebuilt wheel indexes), and the profile key. A pure function of the
// Facts, the forced backend (if any) and the per-backend table in assets/backends.toml.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "inferenceutils/hardware.h"
#include "nlohmann/json.hpp"

namespace iu {

// One backend as the decision saw it.
struct BackendCheck {
  std::string backend;
  bool usable = false;
  std::string reason;  // one line a user can read
};

struct Decision {
  std::string backend;                          // "cuda", "rocm", "metal", "vulkan", "cpu"
  bool forced = false;                          // --backend / INFERENCEUTILS_BACKEND
  std::vector<std::string> reasons;             // chosen backend first, then the others
  std::vector<BackendCheck> considered;         // in preference order
  std::map<std::string, std::string> build_env; // for a source build, e.g. CMAKE_ARGS
  std::string cuda_stubs;                       // no driver library here: the toolkit's stub dir the build uses, or ""
  std::vector<std::string> wheel_indexes;       // prebuilt index URLs, best first
  std::vector<std::string> wheel_tags;          // their tags ("cu124"), same order
  bool source_build_possible = false;           // the toolchain the backend needs is present
  nlohmann::json profile;                       // the canonical inputs of the profile key
  std::string profile_key;                      // "<backend>-<16 hex>"
  nlohmann::json target;                        // a target profile (target.h) it was made for; null = this machine

  nlohmann::json ToJson() const;
};

// The backends in preference order, as in the table (default cuda, rocm, metal, vulkan, cpu).
const std::vector<std::string>& KnownBackends();

// Decides. `forced_backend` "" = automatic. An unknown name is a usage error (kExitUsage); a
// forced backend this machine cannot use is kExitUnavailable with the reason; an unreadable or
// invalid table is kExitConfig.
absl::StatusOr<Decision> Decide(const Facts& facts, const std::string& forced_backend,
                                const std::string& backends_toml_path);

// The digest of canonical JSON: "<backend>-" + the first 16 hex digits of its SHA-256.
std::string ProfileKeyOf(const nlohmann::json& profile);

}  // namespace iu
