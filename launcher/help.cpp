// Help texts: `inferenceutils --help` and `inferenceutils help COMMAND`. Keep in step with README.
#include "cli.h"

namespace iu {

namespace {

constexpr char kMain[] = R"(usage: inferenceutils [OPTIONS] COMMAND [ARGS...]
       inferenceutils [OPTIONS] SCRIPT [ARGS...]

Runs Python code in an isolated runtime that matches this machine (CPU features, GPUs, drivers),
with the inference library imported before any user code.

Commands:
  run SCRIPT [ARGS...]      run a file; sys.argv == [SCRIPT, *ARGS]
  run -m MODULE [ARGS...]   like python -m
  run -c CODE [ARGS...]     like python -c
  run - [ARGS...]           read the program from stdin
  run -i SCRIPT             run, then the interactive prompt (any python option works after run)
  repl                      interactive prompt with line editing and history
  info [--json]             hardware, backend decision with reasons, build flags, store
  runtime SUBCOMMAND        list | info KEY | path | build | rebuild | remove KEY | prune | pack | push | pull | wait
  doctor [--json]           what the runtime's native libraries loaded, from where; problems
  app build APP_DIR -o OUT  a single-file app: this launcher + the app + optional bundles
  kernel install|list|remove  a Jupyter kernel that starts through the launcher
  help [COMMAND]            this text, or a command's

A bare word that names a command is the command, even if a file of that name exists; a script
named like a command runs as `inferenceutils ./info` or `inferenceutils run info`. Any other
existing file is a script. Everything after SCRIPT, -m MODULE or -c CODE belongs to the program.

Options (before the command or script; each also an INFERENCEUTILS_* variable, see README):
  --home DIR                the store (default $XDG_CACHE_HOME/inferenceutils)
  --spec FILE               runtime spec (TOML) replacing the default
  --with REQ                add a requirement (repeatable)
  --index-url URL           package index (default PyPI)
  --extra-index-url URL     another package index (repeatable)
  --find-links PATH|URL     a directory or page of distributions (repeatable)
  --offline                 no network at all
  --backend NAME            force cuda, rocm, metal, vulkan or cpu
  --bundle FILE|URL         a prebuilt runtime bundle to use before building (repeatable)
  --no-build                fail instead of building a runtime
  --wait                    build the selected runtime now, never run on a fallback meanwhile
  --check-conflicts         after the program, report shared libraries loaded twice
  --system                  run in the base interpreter, without a runtime
  --python-env              accepted, no effect: PYTHON* variables count as for python3.11 (run -E ignores them)
  -q, --quiet               no progress output
  -v, --verbose             explain decisions
  -V, --version             print the launcher and embedded Python versions
  -h, --help                this text
)";

constexpr char kRun[] = R"(usage: inferenceutils [OPTIONS] run [PYTHON-OPTIONS] SCRIPT|-m MODULE|-c CODE|- [ARGS...]

Runs the program the way `python` would: python's own options (-i, -u, -W, -X, -O, -B, ...) may
come first; sys.argv, sys.path[0], exit codes, tracebacks and Ctrl-C behave as in python.
`inferenceutils SCRIPT ARGS` is the same as `inferenceutils run SCRIPT ARGS`, which is what a
`#!/usr/bin/env inferenceutils` line produces.
)";

constexpr char kRepl[] = R"(usage: inferenceutils [OPTIONS] repl

The interactive prompt inside the runtime, with line editing and a history file in
$XDG_STATE_HOME/inferenceutils/history (default ~/.local/state/inferenceutils/history).
Ctrl-D exits with status 0.
)";

constexpr char kInfo[] = R"(usage: inferenceutils [OPTIONS] info [--json] [--refresh] [--cuda-arch LIST [--cuda X.Y]]

Shows the detected hardware, the backend decision with its reasons, the build flags, the profile
key and the store location. --json prints the same as JSON (schema in the README); --refresh
detects again instead of using the cached facts. `--backend auto` (or INFERENCEUTILS_BACKEND=auto)
means the automatic choice. --cuda-arch (and --cuda) show the decision for a target profile:
machines with those GPUs and a driver for that CUDA, not this one (see `runtime build`).
)";

constexpr char kRuntime[] = R"(usage: inferenceutils [OPTIONS] runtime SUBCOMMAND

  list                          runtimes in the store: key, backend, size, last used, matches?
  info KEY                      a runtime's manifest
  path                          the path of the runtime this machine and spec select
  build [--backend NAME] [--cuda-arch LIST [--cuda X.Y]] [--rebuild] [--json]
                                provision the selected runtime and say its key; --cuda-arch 86,90
                                builds for machines with those GPUs (a build host needs only nvcc;
                                --cuda: their drivers' CUDA, default this nvcc's), for `pack`
  rebuild                       build the selected runtime again
  remove KEY                    delete a runtime (running launchers keep working)
  prune [--unused-for DAYS] [--not-matching]
                                delete runtimes unused for DAYS, or made for another machine
  pack [KEY] -o FILE.tar.zst [--level N] [--threads N] [--isa LEVEL] [--min-cuda X.Y]
                                a prebuilt bundle of a runtime (default: the selected one)
  pack --index DIR              write DIR/index.json, for serving DIR's bundles over HTTP
  push [KEY] oci://HOST[:PORT]/REPO[:TAG] [--level N] [--threads N] [--isa LEVEL] [--min-cuda X.Y]
       [--insecure-registry]    upload a runtime to an OCI registry: its profile joins the
                                index at TAG (docs/oci.md)
  pull oci://HOST[:PORT]/REPO[:TAG] [--home DIR] [--insecure-registry]
                                fill the store with the selected runtime from a registry's
                                index (the best profile for this machine), never building
  wait [KEY]                    until the background build of KEY (default: the selected
                                runtime) ends: exit 0 published, 74 failed

When the selected runtime needs a source build of its backend (e.g. CUDA) and a lower backend's
runtime can be ready at once, a start runs on that one and builds the selected one in the
background (docs/progressive.md); `list` shows it. --wait or INFERENCEUTILS_PROGRESSIVE=0 builds
in the foreground instead.
)";

constexpr char kDoctor[] = R"(usage: inferenceutils [OPTIONS] doctor [--json]

Starts the runtime this machine and spec select, runs its preload, and reports: the runtime (key,
built or from a bundle), the backend the native library initialised, every shared object loaded
with its path (from the dynamic loader), libraries loaded twice or from outside the runtime and
the system paths, and variables that change library loading (LD_LIBRARY_PATH, LD_PRELOAD,
CUDA_VISIBLE_DEVICES). Each finding comes with a fix. Exit 0 when healthy, 1 when it finds a
problem (docs/libraries.md).
)";

constexpr char kKernel[] = R"(usage: inferenceutils [OPTIONS] kernel install [--name NAME] [--display-name TEXT] [--user | --prefix DIR]
       inferenceutils kernel list [--json]
       inferenceutils kernel remove NAME [--user | --prefix DIR]

A Jupyter kernel that starts ipykernel through this launcher, in the runtime selected by the
options given before `kernel` (kept in the kernel's argv). Default: system-wide in
/usr/local/share/jupyter; --user: $JUPYTER_DATA_DIR or ~/.local/share/jupyter (docs/python.md).
)";

constexpr char kApp[] = R"(usage: inferenceutils [OPTIONS] app build APP_DIR -o OUT [--name NAME] [--entry MODULE:FUNC | --script FILE]
                          [--icon PNG] [--spec FILE] [--with-bundle FILE.tar.zst ...] [--version V]
                          [--exclude GLOB ...] [--level N]

Makes OUT, one executable file: this launcher + APP_DIR's files + the runtime spec + the given
runtime bundles, and OUT.desktop (and OUT.png with --icon) beside it. APP_DIR/app.toml, or
[tool.inferenceutils] in APP_DIR/pyproject.toml, may hold the same settings (name, entry, script,
icon, spec, version, output, bundles, exclude, level); the command line wins. Without --spec the
app uses the default spec (llama-cpp-python for the machine it runs on).

`OUT [ARGS...]` verifies and extracts itself once into the store, provisions its runtime (from
an embedded bundle when one matches this machine, else by building) and runs the entry with
sys.argv == [OUT, *ARGS]. Leading --inferenceutils-* options are the launcher's
(`OUT --inferenceutils-help` lists them; `OUT --inferenceutils-info` shows payload, runtime and
hardware). Without a terminal, progress and errors go to <store>/logs/app-<id>.log and the
desktop's notify-send, zenity or kdialog shows them. docs/apps.md has the details.
)";

}  // namespace

std::string HelpText(const std::string& topic) {
  if (topic.empty()) return kMain;
  if (topic == "run") return kRun;
  if (topic == "repl") return kRepl;
  if (topic == "info") return kInfo;
  if (topic == "runtime") return kRuntime;
  if (topic == "doctor") return kDoctor;
  if (topic == "kernel") return kKernel;
  if (topic == "app") return kApp;
  if (topic == "help") return "usage: inferenceutils help [COMMAND]\n";
  return {};
}

}  // namespace iu
