#include "commands.h"
#include "inferenceutils/errors.h"

namespace iu {

absl::StatusOr<int> CmdInfo(const Invocation&) {
  return WithExit(absl::UnimplementedError("info is not implemented yet"), kExitInternal);
}

}  // namespace iu
