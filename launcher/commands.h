// One function per launcher command; each returns the process exit status or an error that
// main() reports as one line with its documented exit code.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cli.h"

namespace iu {

absl::StatusOr<int> CmdRun(const Invocation& invocation);      // run, repl, python mode
absl::StatusOr<int> CmdInfo(const Invocation& invocation);     // info [--json]
absl::StatusOr<int> CmdRuntime(const Invocation& invocation);  // runtime SUBCOMMAND
absl::StatusOr<int> CmdDoctor(const Invocation& invocation);   // doctor [--json]           (cmd_doctor.cpp)
absl::StatusOr<int> CmdApp(const Invocation& invocation);      // app build ...             (cmd_app.cpp)
absl::StatusOr<int> CmdKernel(const Invocation& invocation);   // kernel install|list|remove (cmd_kernel.cpp)
// runtime pack [KEY] -o FILE.tar.zst [--level N] (cmd_pack.cpp); args are those after "pack".
absl::StatusOr<int> CmdRuntimePack(const Invocation& invocation, const std::vector<std::string>& args);
// runtime build [--backend NAME] [--cuda-arch LIST [--cuda X.Y]] (cmd_runtime_build.cpp)
absl::StatusOr<int> CmdRuntimeBuild(const Invocation& invocation, const std::vector<std::string>& args);
// The selected runtime, built in the foreground if needed; prints its prefix (runtime path,
// rebuild), or its key and prefix as JSON; `summary`: a line on stderr saying what it is for.
absl::StatusOr<int> ProvisionSelected(const Invocation& invocation, bool rebuild, bool json, bool summary);
// runtime push [KEY] oci://… (cmd_runtime_push.cpp), runtime pull oci://… (cmd_runtime_pull.cpp).
absl::StatusOr<int> CmdRuntimePush(const Invocation& invocation, const std::vector<std::string>& args);
absl::StatusOr<int> CmdRuntimePull(const Invocation& invocation, const std::vector<std::string>& args);

// runtime wait [KEY] (cmd_runtime_wait.cpp): until KEY's background build ends; args after "wait".
absl::StatusOr<int> CmdRuntimeWait(const Invocation& invocation, const std::vector<std::string>& args);

// A launcher with an app payload appended (see `app build`) runs that app: the whole command
// line is the app's. Returns nullopt when this binary carries no payload (app.cpp).
std::optional<absl::StatusOr<int>> MaybeRunApp(int argc, char** argv);

// With --check-conflicts: after the program ran, report shared libraries loaded twice or from
// outside the runtime (cmd_doctor.cpp).
void ReportLibraryConflicts(const std::string& runtime_prefix);
// After every `run`: a warning for each object of the runtime that got another copy of a library
// than the one its run path ships (the framework after a preload that needs another version).
void ReportOtherCopiesUsed(const std::string& runtime_prefix);

// "inferenceutils: error: <message>" on stderr; returns the status's exit code.
int ReportError(const absl::Status& status);

}  // namespace iu
