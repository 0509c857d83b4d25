// From an invocation to the runtime it needs: facts → decision → spec → key → build request.
// Shared by run, info and runtime; the warm path's whole cost before Python starts is here.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "cli.h"
#include "inferenceutils/backend.h"
#include "inferenceutils/hardware.h"
#include "inferenceutils/provision.h"
#include "inferenceutils/spec.h"
#include "inferenceutils/store.h"

namespace iu {

struct Selection {
  Store store{""};
  Facts facts;
  Decision decision;
  RuntimeSpec spec;
  std::string key;
  BuildRequest request;
};

// `script` (a file the invocation runs) adds its PEP 723 requirements and requires-python check.
absl::StatusOr<Selection> Select(const Invocation& invocation, const std::optional<std::string>& script);

// The same from facts and a decision the caller has already made (info: detected with --refresh).
absl::StatusOr<Selection> SelectFor(const Invocation& invocation, const std::optional<std::string>& script,
                                    Facts facts, Decision decision);

// The backend asked for: --backend, else INFERENCEUTILS_BACKEND, else "" (automatic; so is "auto").
// A target profile (--cuda-arch) is cuda.
std::string ForcedBackend(const LauncherOptions& options);

// The facts as the decision sees them: this machine's, or the target profile's (target.h).
// A target with another forced backend is a usage error. Returns the target as the decision
// records it (Decision::target; null for this machine).
absl::StatusOr<nlohmann::json> ApplyTargetOf(const LauncherOptions& options, Facts& facts);

// Where the packages of the selected runtime come from, each source with its origin, and pip's
// connection settings: the `sources` section of `info --json` and system_info() (cmd_info.cpp).
nlohmann::json SourcesSection(const absl::StatusOr<Selection>& s);

// Provisioning options from the launcher options and environment (INFERENCEUTILS_LOCK_TIMEOUT).
ProvisionOptions ProvisionOptionsFor(const LauncherOptions& options);

}  // namespace iu
