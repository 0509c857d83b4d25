// Placeholder until the app work lands (issue: bundled apps).
#include "commands.h"
#include "inferenceutils/errors.h"

namespace iu {

absl::StatusOr<int> CmdApp(const Invocation&) {
  return WithExit(absl::UnimplementedError("app is not available yet"), kExitInternal);
}

std::optional<absl::StatusOr<int>> MaybeRunApp(int, char**) { return std::nullopt; }

}  // namespace iu
