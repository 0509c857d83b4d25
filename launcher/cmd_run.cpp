// run / repl / python mode: select the runtime, provision it if needed, start Python inside it.
#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "commands.h"
#include "progressive.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/provision.h"
#include "inferenceutils/python.h"
#include "inferenceutils/python_home.h"
#include "python_face.h"
#include "selection.h"
#include "terminal_progress.h"

namespace iu {
namespace {

void UseRuntime(const Manifest& manifest, InterpreterConfig& config) {
  MarkInUse(manifest.prefix);
  config.executable = manifest.prefix + "/bin/python";
  config.preload = manifest.preload;
  config.libraries = manifest.libraries;
}

// After the program, however it ends (returning, or sys.exit(), where CPython's Py_Exit calls
// exit() itself): what the libraries its imports needed resolved to (docs/libraries.md).
// Only in the launcher's own process: a child of os.fork() that exits through exit() says nothing.
struct AfterProgram {
  std::string runtime_prefix;
  bool check_conflicts = false;
  bool armed = false;
  pid_t pid = 0;
};
AfterProgram g_after;

void ReportAfterProgram() {
  if (!g_after.armed || g_after.pid != getpid()) return;
  g_after.armed = false;
  if (g_after.check_conflicts) {
    ReportLibraryConflicts(g_after.runtime_prefix);
  } else {
    ReportOtherCopiesUsed(g_after.runtime_prefix);
  }
}

}  // namespace

absl::StatusOr<int> CmdRun(const Invocation& invocation) {
  InterpreterConfig config;
  config.argv = invocation.args;
  config.history_file = StateDir() + "/history";

  if (invocation.command == Command::kPython) {
    // Started as a runtime's bin/python* (sys.executable of a runtime, e.g. by subprocess or
    // multiprocessing): plain python inside that runtime, with its preload. A venv made from a
    // runtime, or the home's bin/python3.11: plain python, no preload.
    config.program_name = invocation.argv.empty() ? invocation.python_path : invocation.argv[0];
    config.orig_argv = invocation.argv;
    config.history_file.clear();  // python's own ~/.python_history
    if (!invocation.venv.empty()) {
      AdoptHomeOfVenv(invocation.venv);
      if (absl::StatusOr<Manifest> manifest = Manifest::Read(invocation.venv); manifest.ok()) {
        UseRuntime(*manifest, config);
        AttachPythonFace(invocation.options, *manifest, nullptr, config);
      }
    }
    config.executable = invocation.python_path;
    config.pin_home = !invocation.pth_file;
    return RunPython(config);
  }
  config.orig_argv = invocation.argv;
  if (invocation.options.system) return RunPython(config);  // the home's python, no runtime

  std::optional<std::string> script;
  if (invocation.command == Command::kRun) script = ScriptOf(invocation.args);
  absl::StatusOr<Selection> selection = Select(invocation, script);
  if (!selection.ok()) return selection.status();
  TerminalProgress progress(invocation.options.quiet, invocation.options.verbose);
  absl::StatusOr<StartRuntime> start = ProvisionForStart(invocation, script, *selection, progress,
                                                         [&](const std::string& line) { progress.Note(line); });
  progress.Finish();
  if (!start.ok()) return start.status();
  const Manifest* manifest = &start->manifest;
  EnsurePythonLink(manifest->prefix, CurrentHome().launcher);
  UseRuntime(*manifest, config);
  AttachPythonFace(invocation.options, *manifest, &*selection, config, start->PendingJson());
  g_after = {manifest->prefix, invocation.options.check_conflicts, true, getpid()};
  static const bool registered = std::atexit(ReportAfterProgram) == 0;
  (void)registered;
  absl::StatusOr<int> status = RunPython(config);
  if (!status.ok()) g_after.armed = false;  // the program did not run (a preload failed)
  return status;
}

}  // namespace iu
