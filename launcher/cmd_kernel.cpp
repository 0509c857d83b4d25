// Placeholder until the Jupyter kernel work lands (issue: the Python face).
#include "commands.h"
#include "inferenceutils/errors.h"

namespace iu {

absl::StatusOr<int> CmdKernel(const Invocation&) {
  return WithExit(absl::UnimplementedError("kernel is not available yet"), kExitInternal);
}

}  // namespace iu
