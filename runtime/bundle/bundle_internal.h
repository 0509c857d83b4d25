// Pieces shared by the bundle files (pack, unpack, select, download). Not a public interface.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "inferenceutils/errors.h"

namespace iu::bundle_internal {

// A bundle error: "bundle FILE: member M: reason" (kExitBundle).
absl::Status Refused(absl::string_view bundle, absl::string_view member, absl::string_view reason);

// Usable cores (affinity), at least 1.
int UsableCores();

// "1.2" < "1.10": dotted numeric comparison (-1, 0, 1); non-numeric parts compare as 0.
int CompareVersions(absl::string_view a, absl::string_view b);

// Why this launcher's base Python cannot run a bundle with these requirements; "" when it can.
}  // namespace iu::bundle_internal
#include "nlohmann/json.hpp"
namespace iu {
std::string PythonMismatch(const nlohmann::json& requires_json);
}
#include <vector>

#include "absl/status/statusor.h"
#include "inferenceutils/bundle.h"

namespace iu::bundle_internal {

constexpr uint64_t kMaxManifestBytes = 64ull << 20;

// One entry of a runtime as the packer sees it.
struct PackItem {
  std::string path;     // relative, no leading "./"
  char type = 'f';      // 'd', 'f', 'l'
  uint64_t size = 0;
  int mode = 0644;
  std::string target;   // symlink
  std::string role;     // "launcher", "base_python" or ""
  std::string sha256;
  bool has_prefix = false;
  bool binary = false;
};

// What packing the runtime at `prefix` writes: bundle.json (with its file list) and the entries
// in order (sorted; directories before what they hold). Shared by the .tar.zst packer and the OCI
// layer writer (runtime/oci/), so both describe a runtime the same way.
struct PackPlan {
  std::string prefix;
  nlohmann::json bundle;
  std::vector<PackItem> items;
  uint64_t total = 0;
};
absl::StatusOr<PackPlan> PlanPack(const std::string& prefix, const PackOptions& options, Progress& progress);

}  // namespace iu::bundle_internal
