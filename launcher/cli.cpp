#include "cli.h"

#include <sys/auxv.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string_view>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/python_home.h"

namespace iu {
namespace {

bool SameDirectory(const std::string& a, const std::string& b) {
  if (a == b) return true;
  struct stat sa, sb;
  return stat(a.c_str(), &sa) == 0 && stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

bool IsFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string Basename(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// argv[0] as a path: itself when it has a slash, else looked up on PATH (as getpath does).
std::string ResolveArgv0(const std::string& argv0) {
  if (argv0.find('/') != std::string::npos) return argv0;
  const char* path = std::getenv("PATH");
  if (!path) return argv0;
  for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
    std::string candidate = absl::StrCat(dir, "/", argv0);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return argv0;
}

constexpr const char* kCommands[] = {"run", "repl", "info", "runtime", "doctor", "app", "kernel", "help"};

bool IsCommand(const std::string& word) {
  for (const char* command : kCommands) {
    if (word == command) return true;
  }
  return false;
}

// Launcher options: name, whether it takes a value.
struct OptionSpec {
  const char* name;
  bool takes_value;
};
constexpr OptionSpec kOptions[] = {
    {"--home", true},       {"--spec", true},       {"--with", true},
    {"--index-url", true},  {"--extra-index-url", true}, {"--find-links", true},
    {"--backend", true},    {"--offline", false},   {"--quiet", false},
    {"-q", false},          {"--verbose", false},   {"-v", false},
    {"--python-env", false}, {"--system", false},
    {"--bundle", true},     {"--no-build", false},  {"--check-conflicts", false},
    {"--wait", false},
};

absl::Status ApplyOption(const std::string& name, const std::string& value, LauncherOptions& o) {
  if (name == "--home") o.home = value;
  else if (name == "--spec") o.spec_file = value;
  else if (name == "--with") o.with.push_back(value);
  else if (name == "--index-url") o.index_url = value;
  else if (name == "--extra-index-url") o.extra_index_urls.push_back(value);
  else if (name == "--find-links") o.find_links.push_back(value);
  else if (name == "--backend") o.backend = value;
  else if (name == "--offline") o.offline = true;
  else if (name == "--quiet" || name == "-q") o.quiet = true;
  else if (name == "--verbose" || name == "-v") o.verbose = true;
  else if (name == "--python-env") {}  // a no-op alias: PYTHON* variables always count now
  else if (name == "--system") o.system = true;
  else if (name == "--bundle") o.bundles.push_back(value);
  else if (name == "--no-build") o.no_build = true;
  else if (name == "--check-conflicts") o.check_conflicts = true;
  else if (name == "--wait") o.wait = true;
  if ((name == "--home" || name == "--spec" || name == "--backend" || name == "--index-url" ||
       name == "--with" || name == "--extra-index-url" || name == "--find-links" ||
       name == "--bundle") &&
      value.empty()) {
    return UsageError(absl::StrCat("option ", name, " needs a non-empty value"));
  }
  return absl::OkStatus();
}

// Python options that take a value as the next argument (Modules/main.c, Python/getopt.c).
bool PythonOptionTakesValue(char letter) { return letter == 'W' || letter == 'X'; }

}  // namespace

std::optional<std::string> ScriptOf(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") return i + 1 < args.size() ? std::optional(args[i + 1]) : std::nullopt;
    if (arg == "-" || arg.empty()) return std::nullopt;
    if (arg[0] != '-') return arg;
    if (absl::StartsWith(arg, "--")) continue;  // --version, --help, --check-hash-based-pycs...
    // A cluster of short options, e.g. -iu, -Werror, -X dev, -c CODE, -m MOD.
    for (size_t j = 1; j < arg.size(); ++j) {
      char letter = arg[j];
      if (letter == 'c' || letter == 'm') return std::nullopt;
      if (PythonOptionTakesValue(letter)) {
        if (j + 1 == arg.size()) ++i;  // the value is the next argument
        break;
      }
    }
  }
  return std::nullopt;
}

// What the kernel executed (a symlink's own path, not its target), absolute. For a script
// started through a #! line that is the script, and the interpreter path the line names is argv[0].
std::string ExecutedPath(const std::string& argv0) {
  std::string executed;
  if (const char* execfn = reinterpret_cast<const char*>(getauxval(AT_EXECFN)); execfn && *execfn) {
    struct stat a, self;
    if (stat(execfn, &a) == 0 && stat("/proc/self/exe", &self) == 0 && a.st_dev == self.st_dev &&
        a.st_ino == self.st_ino) {
      executed = execfn;
    }
  }
  if (executed.empty()) executed = ResolveArgv0(argv0);
  return MakeAbsolutePath(executed);
}

std::optional<Invocation> PythonModeInvocation(int argc, char** argv) {
  std::string argv0 = argc > 0 && argv[0] ? argv[0] : "";
  std::string executed = ExecutedPath(argv0);
  if (executed.empty()) return std::nullopt;
  std::string name = Basename(executed);
  if (absl::StartsWith(name, "inferenceutils")) return std::nullopt;  // always the launcher's command line
  std::string bin = Dirname(executed);
  std::string venv;
  if (IsFile(bin + "/pyvenv.cfg")) {
    venv = bin;
  } else if (IsFile(Dirname(bin) + "/pyvenv.cfg")) {
    venv = Dirname(bin);
  } else if (!SameDirectory(bin, CurrentHome().prefix + "/bin")) {
    return std::nullopt;  // not a venv's python, not the home's: the launcher (or an app)
  }
  Invocation inv;
  inv.command = Command::kPython;
  inv.python_path = executed;
  inv.venv = venv;
  inv.argv.assign(argv, argv + argc);
  inv.args.assign(argv + 1, argv + argc);
  return inv;
}

absl::StatusOr<Invocation> ParseCommandLine(int argc, char** argv) {
  Invocation inv;
  inv.argv.assign(argv, argv + argc);

  int i = 1;
  for (; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      inv.command = Command::kHelp;
      return inv;
    }
    if (arg == "--version" || arg == "-V") {
      inv.command = Command::kVersion;
      return inv;
    }
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg.empty() || arg[0] != '-' || arg == "-") break;
    std::string name = arg, value;
    bool inline_value = false;
    if (auto eq = arg.find('='); absl::StartsWith(arg, "--") && eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      inline_value = true;
    }
    const OptionSpec* spec = nullptr;
    for (const auto& candidate : kOptions) {
      if (name == candidate.name) spec = &candidate;
    }
    if (!spec && i == 1 && arg.size() >= 2 && arg[1] != '-' &&
        std::string_view("bBcdEiImOPsSuWxXR").find(arg[1]) != std::string_view::npos) {
      // The launcher binary itself given python's options (`<launcher> -c CODE`, as tools do with
      // realpath(sys.executable)): plain python on the home, as /usr/bin/python3.11 is for a venv.
      inv.command = Command::kPython;
      inv.python_path = CurrentHome().executable;
      // python's exclusive mode: a <executable>._pth beside the executed file defines sys.path
      // (getpath reads it only when the home is not pinned).
      if (std::string executed = ExecutedPath(argv[0]); IsFile(executed + "._pth")) {
        inv.python_path = executed;
        inv.pth_file = true;
      }
      inv.args.assign(argv + 1, argv + argc);
      return inv;
    }
    if (!spec) {
      return UsageError(absl::StrCat("unknown option '", name,
                                     "' (see `inferenceutils --help`; python's own options go "
                                     "after `run`, e.g. `inferenceutils run ", name, " ...`)"));
    }
    if (spec->takes_value && !inline_value) {
      if (i + 1 >= argc) return UsageError(absl::StrCat("option ", name, " needs a value"));
      value = argv[++i];
    } else if (!spec->takes_value && inline_value) {
      return UsageError(absl::StrCat("option ", name, " takes no value"));
    }
    if (auto status = ApplyOption(name, value, inv.options); !status.ok()) return status;
  }

  if (i >= argc) {
    return UsageError("no command or script given (see `inferenceutils --help`)");
  }
  std::string first = argv[i];
  std::vector<std::string> rest(argv + i + 1, argv + argc);

  // A bare word that names a command is the command, even when a file of that name is here (a
  // cloned repository must not turn `inferenceutils info` into running its file `info`). A
  // shebang passes the script as a path, so a script named like a command runs as ./info or
  // `run info`.
  if (IsCommand(first)) {
    if (first == "help") {
      inv.command = Command::kHelp;
      inv.args = rest;
      if (!rest.empty() && HelpText(rest[0]).empty()) {
        return UsageError(absl::StrCat("no help for '", rest[0], "': not a command"));
      }
      return inv;
    }
    if (!rest.empty() && (rest[0] == "--help" || rest[0] == "-h")) {
      inv.command = Command::kHelp;
      inv.args = {first};
      return inv;
    }
    if (first == "run") {
      if (rest.empty()) {
        return UsageError("run needs SCRIPT, -m MODULE, -c CODE or - (see `inferenceutils help run`)");
      }
      inv.command = Command::kRun;
      inv.args = std::move(rest);
      return inv;
    }
    if (first == "repl") {
      if (!rest.empty()) return UsageError(absl::StrCat("repl takes no arguments, got '", rest[0], "'"));
      inv.command = Command::kRepl;
      return inv;
    }
    inv.command = first == "info"     ? Command::kInfo
                  : first == "doctor" ? Command::kDoctor
                  : first == "app"    ? Command::kApp
                  : first == "kernel" ? Command::kKernel
                                      : Command::kRuntime;
    inv.args = std::move(rest);
    return inv;
  }

  bool looks_like_path = first.find('/') != std::string::npos || absl::EndsWith(first, ".py") ||
                         absl::EndsWith(first, ".pyz") || IsFile(first);
  if (!looks_like_path) {
    return UsageError(absl::StrCat("unknown command '", first,
                                   "' (commands: run, repl, info, runtime, doctor, app, kernel, help; a script path "
                                   "needs a '/' or a .py suffix when the file does not exist)"));
  }
  inv.command = Command::kRun;
  inv.args.push_back(first);
  inv.args.insert(inv.args.end(), rest.begin(), rest.end());
  return inv;
}

}  // namespace iu
