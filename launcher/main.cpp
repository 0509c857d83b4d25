// inferenceutils: parse the command line, dispatch, turn errors into one line and an exit code.
#include <signal.h>

#include <cstdio>
#include <exception>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cli.h"
#include "commands.h"
#include "inferenceutils/env_values.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/python.h"

namespace iu {
namespace {

absl::StatusOr<int> Dispatch(const Invocation& invocation) {
  switch (invocation.command) {
    case Command::kHelp:
      std::fputs(HelpText(invocation.args.empty() ? "" : invocation.args[0]).c_str(), stdout);
      return 0;
    case Command::kVersion:
      std::printf("inferenceutils %s (embedded Python %s)\n", IU_VERSION, EmbeddedPythonVersion().c_str());
      return 0;
    case Command::kPython:
      return CmdRun(invocation);  // plain python: the launcher's variables are not its business
    default:
      break;
  }
  if (auto status = CheckEnvValues(); !status.ok()) return status;
  switch (invocation.command) {
    case Command::kRun:
    case Command::kRepl:
      return CmdRun(invocation);
    case Command::kInfo:
      return CmdInfo(invocation);
    case Command::kRuntime:
      return CmdRuntime(invocation);
    case Command::kDoctor:
      return CmdDoctor(invocation);
    case Command::kApp:
      return CmdApp(invocation);
    case Command::kKernel:
      return CmdKernel(invocation);
    default:
      return absl::InternalError("unknown command");
  }
}

// The launcher's exit for an error: one line, its code; Ctrl-C ends the process by SIGINT, as
// python does, so a shell (or make, or a calling script) sees an interrupted program.
int Fail(const absl::Status& status) {
  int code = ReportError(status);
  if (code == kExitInterrupted) {
    std::fflush(nullptr);
    signal(SIGINT, SIG_DFL);
    raise(SIGINT);
  }
  return code;
}

int Main(int argc, char** argv) {
  // A runtime's (or a venv's, or the home's) python: plain python, whatever argv[0] says.
  if (std::optional<Invocation> python = PythonModeInvocation(argc, argv)) {
    absl::StatusOr<int> result = CmdRun(*python);
    if (!result.ok()) return Fail(result.status());
    return *result;
  }
  if (std::optional<absl::StatusOr<int>> app = MaybeRunApp(argc, argv)) {
    if (!app->ok()) return Fail(app->status());
    return **app;
  }
  absl::StatusOr<Invocation> invocation = ParseCommandLine(argc, argv);
  if (!invocation.ok()) return Fail(invocation.status());
  absl::StatusOr<int> result = Dispatch(*invocation);
  if (!result.ok()) return Fail(result.status());
  return *result;
}

}  // namespace
}  // namespace iu

int main(int argc, char** argv) {
  // Library code returns errors as values; an exception reaching here is a bug (e.g. a JSON
  // value of an unexpected type): one line and exit 70 rather than an abort and a core dump.
  try {
    return iu::Main(argc, argv);
  } catch (const std::exception& e) {
    return iu::ReportError(iu::WithExit(
        absl::InternalError(absl::StrCat("internal error (", e.what(), "); please report it with the command line")),
        iu::kExitInternal));
  }
}
