// Progressive starts (docs/progressive.md): when the selected runtime needs a long source build of
// its backend package and a lower backend of the same spec can be ready at once, the program runs
// now on that one while a detached builder makes the selected one for the next start.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "cli.h"
#include "inferenceutils/background.h"
#include "inferenceutils/progress.h"
#include "inferenceutils/store.h"
#include "nlohmann/json.hpp"
#include "selection.h"

namespace iu {

struct StartRuntime {
  Manifest manifest;
  // Set when `manifest` is a fallback: the runtime the start selected, being built or failed.
  std::optional<BackgroundBuild> pending;
  std::optional<BackgroundFailure> failed;

  bool fallback() const { return pending.has_value() || failed.has_value(); }
  // inferenceutils.runtime()'s "pending": null, or the selected runtime's key, backend, state
  // ("building" / "failed"), since when, log.
  nlohmann::json PendingJson() const;
};

// Whether a start may run on a fallback: not with --wait, INFERENCEUTILS_PROGRESSIVE=0,
// --no-build, or a forced backend (--backend / INFERENCEUTILS_BACKEND: that one or nothing).
bool ProgressiveAllowed(const LauncherOptions& options);

// The runtime a start runs in: the selected one when it is published or can be provisioned
// without a source build of the backend (or progressive starts are off), else a fallback as
// above. `announce` gets the one line that says so (the caller shows it on a terminal / with -v;
// an app also logs and notifies). The warm path costs one Lookup, as before.
absl::StatusOr<StartRuntime> ProvisionForStart(const Invocation& invocation, const std::optional<std::string>& script,
                                               const Selection& selected, Progress& progress,
                                               const std::function<void(const std::string&)>& announce);

}  // namespace iu
