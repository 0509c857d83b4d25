// Starting the embedded CPython (PEP 587 PyConfig) the way the `python` command would.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace iu {

struct InterpreterConfig {
  // Name python uses in its own messages ("<name>: can't open file ...", usage errors).
  std::string program_name = "inferenceutils";
  // Python's command line after the program name, parsed by python itself (parse_argv=1), so
  // -c/-m/-i/-u/-W/-X/- and the script's own arguments mean exactly what they mean to python.
  std::vector<std::string> argv;
  // sys.executable. site reads pyvenv.cfg beside or above it, so a runtime's bin/python makes
  // sys.prefix the runtime. Empty: the home's bin/python3.11 (plain python, no runtime).
  // sys.base_prefix and sys._base_executable are always the launcher's Python home.
  std::string executable;
  // Shared libraries loaded (RTLD_GLOBAL, by absolute path) before the interpreter starts.
  std::vector<std::string> libraries;
  // Modules imported after the interpreter is set up and before any user code.
  std::vector<std::string> preload;
  // REPL history file; empty leaves python's default (~/.python_history).
  std::string history_file;
  // false: leave config.home and base_executable to getpath (python's ._pth exclusive mode).
  bool pin_home = true;
  // sys.orig_argv: the command line as the process got it; empty = program_name + argv.
  std::vector<std::string> orig_argv;
  // Directories put on sys.path right after the interpreter is set up (after site and the
  // preload, before any user code), just before site-packages, e.g. <assets>/python holding the
  // `inferenceutils` package.
  std::vector<std::string> extra_paths;
  // Documents the built-in module `_inferenceutils` hands to Python code on request
  // (`_inferenceutils.document(name)`, e.g. "info", "runtime"): computed only when asked, so a
  // start whose program never asks pays nothing for them.
  std::map<std::string, std::function<std::string()>> documents;
};

// Initializes the interpreter, imports the preload modules, runs what argv asks (script, -c, -m,
// stdin or the REPL) and finalizes. Returns the exit status `python` would have returned (SIGINT
// is re-raised like python does). A preload that fails to import is an error (kExitPreload) whose
// message carries the exception; an interpreter that cannot start is an error too.
absl::StatusOr<int> RunPython(const InterpreterConfig& config);

// The base interpreter's facts, compiled in: e.g. "/usr/bin/python3.11" and "/usr".
const char* BasePythonExecutable();
const char* BasePythonPrefix();
// "3.11.2", from the linked libpython (Py_GetVersion), without starting it.
std::string EmbeddedPythonVersion();
// "cp311".
std::string EmbeddedPythonAbi();

}  // namespace iu
