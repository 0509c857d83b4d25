#include "inferenceutils/errors.h"

#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"

namespace iu {
namespace {
constexpr char kExitPayload[] = "inferenceutils/exit";
}

absl::Status WithExit(absl::Status status, ExitCode code) {
  if (!status.ok()) status.SetPayload(kExitPayload, absl::Cord(std::to_string(code)));
  return status;
}

int ExitCodeOf(const absl::Status& status) {
  if (status.ok()) return kExitOk;
  if (auto payload = status.GetPayload(kExitPayload)) {
    int code = 0;
    if (absl::SimpleAtoi(std::string(*payload), &code)) return code;
  }
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument: return kExitConfig;
    case absl::StatusCode::kFailedPrecondition: return kExitUnavailable;
    case absl::StatusCode::kPermissionDenied: return kExitStore;
    case absl::StatusCode::kDeadlineExceeded: return kExitLockTimeout;
    default: return kExitInternal;
  }
}

absl::Status UsageError(absl::string_view message) {
  return WithExit(absl::InvalidArgumentError(message), kExitUsage);
}
absl::Status ConfigError(absl::string_view message) {
  return WithExit(absl::InvalidArgumentError(message), kExitConfig);
}
absl::Status StoreError(absl::string_view message) {
  return WithExit(absl::PermissionDeniedError(message), kExitStore);
}

}  // namespace iu
