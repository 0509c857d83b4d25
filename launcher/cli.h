// The command line: argv → Invocation (what to run, launcher options). Pure; no I/O beyond
// stat() of a first argument that may be a script.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "inferenceutils/target.h"

namespace iu {

// Options that come before the command or script. Each also has an INFERENCEUTILS_* variable
// (README "Environment variables"); the command line wins.
struct LauncherOptions {
  std::string home;                       // --home DIR
  std::string spec_file;                  // --spec FILE
  std::vector<std::string> with;          // --with REQ (repeatable)
  std::string index_url;                  // --index-url URL
  std::vector<std::string> extra_index_urls;  // --extra-index-url URL (repeatable)
  std::vector<std::string> find_links;    // --find-links PATH|URL (repeatable)
  bool offline = false;                   // --offline
  std::string backend;                    // --backend NAME
  bool quiet = false;                     // --quiet, -q
  bool verbose = false;                   // --verbose, -v
  // --python-env: accepted and ignored (python's PYTHON* rules always apply now).
  bool system = false;                    // --system: the base interpreter, no runtime
  std::vector<std::string> bundles;       // --bundle FILE|URL (repeatable): prebuilt runtimes to try first
  bool no_build = false;                  // --no-build: fail instead of building a runtime
  bool wait = false;                      // --wait: build the selected runtime here, no fallback (docs/progressive.md)
  bool check_conflicts = false;           // --check-conflicts: after the program, report libraries loaded twice
  TargetProfile target;                   // runtime build / info --cuda-arch LIST [--cuda X.Y]: not this machine
};

enum class Command {
  kRun,      // run SCRIPT|-m|-c|- [ARGS]; also a bare SCRIPT
  kRepl,     // interactive prompt
  kInfo,     // info [--json]
  kRuntime,  // runtime SUBCOMMAND ...
  kDoctor,   // doctor [--json]
  kApp,      // app build APP_DIR -o OUT ...
  kKernel,   // kernel install|list|remove ...
  kHelp,     // --help, help [COMMAND]
  kVersion,  // --version
  kPython,   // started as <runtime>/bin/python: behave exactly like python
};

struct Invocation {
  Command command = Command::kHelp;
  LauncherOptions options;
  // kRun/kPython: python's own command line (options, script or -c/-m/-, the program's args).
  // Other commands: their arguments. kHelp: the topic, if any.
  std::vector<std::string> args;
  // kPython: the path the launcher was started as (what was executed) and the venv (a runtime,
  // or a venv made from one) it belongs to; "" = the Python home's own bin/python3.11.
  std::string python_path;
  std::string venv;
  // kPython: a `<executable>._pth` file beside python_path: the home is not pinned, python's
  // getpath reads the file (exclusive mode).
  bool pth_file = false;
  // The process's whole command line (sys.orig_argv).
  std::vector<std::string> argv;
};

// Started as a python (a venv's bin/python*, any name but inferenceutils*, or the home's
// bin/python3.11): the launcher is plain python there. Decided from what the kernel executed
// (AT_EXECFN; argv[0] for a #! script) and a pyvenv.cfg beside or above it, as getpath finds a
// venv — never from argv[0]'s name. nullopt: the launcher's own command line.
std::optional<Invocation> PythonModeInvocation(int argc, char** argv);

// Parses argv. Usage errors carry kExitUsage.
absl::StatusOr<Invocation> ParseCommandLine(int argc, char** argv);

// For a python command line (Invocation::args of kRun), the script file it runs, if any: not for
// -c, -m, - or the REPL. Used to read the script's PEP 723 metadata.
std::optional<std::string> ScriptOf(const std::vector<std::string>& python_args);

// Help texts (`--help`, `help COMMAND`); empty for an unknown topic.
std::string HelpText(const std::string& topic);

}  // namespace iu
