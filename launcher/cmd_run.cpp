// run / repl / python mode: select the runtime, provision it if needed, start Python inside it.
#include <optional>

#include "absl/strings/str_cat.h"
#include "commands.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/provision.h"
#include "inferenceutils/python.h"
#include "python_face.h"
#include "selection.h"
#include "terminal_progress.h"

namespace iu {
namespace {

std::string Parent(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

void UseRuntime(const Manifest& manifest, InterpreterConfig& config) {
  MarkInUse(manifest.prefix);
  config.executable = manifest.prefix + "/bin/python";
  config.preload = manifest.preload;
  config.libraries = manifest.libraries;
}

}  // namespace

absl::StatusOr<int> CmdRun(const Invocation& invocation) {
  InterpreterConfig config;
  config.argv = invocation.args;
  config.inherit_python_env = invocation.options.inherit_python_env;
  config.history_file = StateDir() + "/history";

  if (invocation.command == Command::kPython) {
    // Started as <runtime>/bin/python (sys.executable of a runtime, e.g. by subprocess or
    // multiprocessing): plain python inside that runtime, with its preload.
    config.program_name = invocation.python_path;
    config.executable = invocation.python_path;
    std::string prefix = Parent(Parent(invocation.python_path));
    if (absl::StatusOr<std::string> text = ReadFile(prefix + "/manifest.json"); text.ok()) {
      nlohmann::json json = nlohmann::json::parse(*text, nullptr, false);
      if (absl::StatusOr<Manifest> manifest = Manifest::FromJson(json); manifest.ok()) {
        manifest->prefix = prefix;
        UseRuntime(*manifest, config);
        AttachPythonFace(invocation.options, *manifest, nullptr, config);
        config.executable = invocation.python_path;
      }
    }
    return RunPython(config);
  }
  if (invocation.options.system) return RunPython(config);  // the base interpreter, no runtime

  std::optional<std::string> script;
  if (invocation.command == Command::kRun) script = ScriptOf(invocation.args);
  absl::StatusOr<Selection> selection = Select(invocation, script);
  if (!selection.ok()) return selection.status();
  TerminalProgress progress(invocation.options.quiet, invocation.options.verbose);
  absl::StatusOr<Manifest> manifest = EnsureRuntime(
      selection->store, selection->request, ProvisionOptionsFor(invocation.options), progress);
  progress.Finish();
  if (!manifest.ok()) return manifest.status();
  EnsurePythonLink(manifest->prefix, selection->request.launcher);
  UseRuntime(*manifest, config);
  AttachPythonFace(invocation.options, *manifest, &*selection, config);
  absl::StatusOr<int> status = RunPython(config);
  if (invocation.options.check_conflicts && status.ok()) ReportLibraryConflicts(manifest->prefix);
  return status;
}

}  // namespace iu
