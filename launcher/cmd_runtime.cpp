#include "commands.h"
#include "inferenceutils/errors.h"

namespace iu {

absl::StatusOr<int> CmdRuntime(const Invocation&) {
  return WithExit(absl::UnimplementedError("runtime is not implemented yet"), kExitInternal);
}

}  // namespace iu
