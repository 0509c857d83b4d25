// Placeholder until the doctor work lands (issue: shared-library guarantee and doctor).
#include "commands.h"
#include "inferenceutils/errors.h"

namespace iu {

absl::StatusOr<int> CmdDoctor(const Invocation&) {
  return WithExit(absl::UnimplementedError("doctor is not available yet"), kExitInternal);
}

void ReportLibraryConflicts(const std::string&) {}

}  // namespace iu
