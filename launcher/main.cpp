// inferenceutils: parse the command line, dispatch, turn errors into one line and an exit code.
#include <cstdio>
#include <string>

#include "absl/status/statusor.h"
#include "cli.h"
#include "commands.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/python.h"

int main(int argc, char** argv) {
  using namespace iu;
  // A runtime's (or a venv's, or the home's) python: plain python, whatever argv[0] says.
  if (std::optional<Invocation> python = PythonModeInvocation(argc, argv)) {
    absl::StatusOr<int> result = CmdRun(*python);
    if (!result.ok()) return ReportError(result.status());
    return *result;
  }
  if (std::optional<absl::StatusOr<int>> app = MaybeRunApp(argc, argv)) {
    if (!app->ok()) return ReportError(app->status());
    return **app;
  }
  absl::StatusOr<Invocation> invocation = ParseCommandLine(argc, argv);
  if (!invocation.ok()) return ReportError(invocation.status());
  absl::StatusOr<int> result;
  switch (invocation->command) {
    case Command::kHelp:
      std::fputs(HelpText(invocation->args.empty() ? "" : invocation->args[0]).c_str(), stdout);
      return 0;
    case Command::kVersion:
      std::printf("inferenceutils %s (embedded Python %s)\n", IU_VERSION,
                  EmbeddedPythonVersion().c_str());
      return 0;
    case Command::kRun:
    case Command::kRepl:
    case Command::kPython:
      result = CmdRun(*invocation);
      break;
    case Command::kInfo:
      result = CmdInfo(*invocation);
      break;
    case Command::kRuntime:
      result = CmdRuntime(*invocation);
      break;
    case Command::kDoctor:
      result = CmdDoctor(*invocation);
      break;
    case Command::kApp:
      result = CmdApp(*invocation);
      break;
    case Command::kKernel:
      result = CmdKernel(*invocation);
      break;
  }
  if (!result.ok()) return ReportError(result.status());
  return *result;
}
