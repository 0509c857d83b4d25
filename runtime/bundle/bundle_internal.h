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
namespace iu::bundle_internal {

constexpr uint64_t kMaxManifestBytes = 64ull << 20;

}  // namespace iu::bundle_internal
