// The INFERENCEUTILS_* variables that hold a number: one parser, one error for a bad value
// (exit 65, naming the variable and the form it takes). A bad value is never replaced by the
// default: INFERENCEUTILS_BUNDLE_MAX_BYTES=20M meaning 64 GiB would switch a safety bound off.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace iu {

// The variable `name`, "" when unset.
std::string Env(const char* name);

// A duration in seconds: a whole or decimal number >= `minimum` ("0" = do not wait, "1.5").
absl::StatusOr<absl::Duration> ParseSeconds(const std::string& name, const std::string& value,
                                            absl::Duration minimum = absl::ZeroDuration());
// A size in bytes: a whole number > 0 with an optional suffix K, M, G or T (powers of 1024; "KiB",
// "MiB", ... and "KB", "MB", ... mean the same), e.g. "20M", "64GiB", "1048576".
absl::StatusOr<uint64_t> ParseBytes(const std::string& name, const std::string& value);

// The variable `name`, parsed; `fallback` when it is unset or empty.
absl::StatusOr<absl::Duration> EnvSeconds(const char* name, absl::Duration fallback,
                                          absl::Duration minimum = absl::ZeroDuration());
absl::StatusOr<uint64_t> EnvBytes(const char* name, uint64_t fallback);

// Defaults of the variables below (README "Options").
constexpr int64_t kDefaultLockTimeoutSeconds = 3600;     // INFERENCEUTILS_LOCK_TIMEOUT
constexpr int64_t kDefaultDownloadTimeoutSeconds = 60;   // INFERENCEUTILS_DOWNLOAD_TIMEOUT (>= 1)
constexpr uint64_t kDefaultBundleMaxBytes = 64ull << 30;  // INFERENCEUTILS_BUNDLE_MAX_BYTES

// Every numeric INFERENCEUTILS_* variable checked at once, before a command does anything: the
// first bad one's error.
absl::Status CheckEnvValues();

}  // namespace iu
