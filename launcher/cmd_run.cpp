// run / repl / python mode: choose the interpreter configuration and start Python.
#include "commands.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/python.h"

namespace iu {

absl::StatusOr<int> CmdRun(const Invocation& invocation) {
  InterpreterConfig config;
  config.argv = invocation.args;
  config.inherit_python_env = invocation.options.inherit_python_env;
  config.history_file = StateDir() + "/history";
  if (invocation.command == Command::kPython) config.program_name = invocation.python_path;
  return RunPython(config);
}

}  // namespace iu
