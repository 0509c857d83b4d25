// One function per launcher command; each returns the process exit status or an error that
// main() reports as one line with its documented exit code.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cli.h"

namespace iu {

absl::StatusOr<int> CmdRun(const Invocation& invocation);      // run, repl, python mode
absl::StatusOr<int> CmdInfo(const Invocation& invocation);     // info [--json]
absl::StatusOr<int> CmdRuntime(const Invocation& invocation);  // runtime SUBCOMMAND

// "inferenceutils: error: <message>" on stderr; returns the status's exit code.
int ReportError(const absl::Status& status);

}  // namespace iu
