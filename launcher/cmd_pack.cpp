// Placeholder until the bundle work lands (issue: prebuilt runtime bundles).
#include "commands.h"
#include "inferenceutils/errors.h"

namespace iu {

absl::StatusOr<int> CmdRuntimePack(const Invocation&, const std::vector<std::string>&) {
  return WithExit(absl::UnimplementedError("runtime pack is not available yet"), kExitInternal);
}

}  // namespace iu
