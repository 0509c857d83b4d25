// Building a runtime: a venv made natively for the embedded interpreter's own Python, pip run
// from Debian's pip wheel with the backend's build environment, a verification interpreter that
// imports the preload, and the manifest.
#include <fcntl.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <ctime>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "inferenceutils/json_text.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/process.h"
#include "inferenceutils/provision.h"
#include "inferenceutils/python.h"
#include "inferenceutils/python_home.h"
#include "inferenceutils/runtime_libraries.h"

namespace iu {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string NowRfc3339() {
  std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return buf;
}

std::string PythonDirName() {  // "python3.11"
  std::string version = EmbeddedPythonVersion();
  return "python" + version.substr(0, version.rfind('.'));
}

std::string SitePackages(const std::string& prefix) {
  return absl::StrCat(prefix, "/lib/", PythonDirName(), "/site-packages");
}

absl::Status Symlink(const std::string& target, const std::string& link) {
  unlink(link.c_str());
  if (symlink(target.c_str(), link.c_str()) != 0) {
    return StoreError(absl::StrCat("cannot create ", link, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// The venv `python -m venv --without-pip` would make, in microseconds: pyvenv.cfg (home = the
// launcher's Python home), bin/ links, site-packages. bin/python, python3 and python3.X are the
// launcher, which is python there (with the runtime's preload once it is published), so
// sys.executable, pip and every child re-enter it.
absl::Status CreateVenv(const std::string& prefix, const std::string& launcher) {
  if (auto s = WritePyvenvCfg(prefix); !s.ok()) return s;
  if (auto s = MakeDirs(SitePackages(prefix), ""); !s.ok()) return s;
  if (auto s = MakeDirs(prefix + "/bin", ""); !s.ok()) return s;
  if (auto s = Symlink("lib", prefix + "/lib64"); !s.ok()) return s;
  EnsurePythonLink(prefix, launcher);
  // The preload hook: runs during site's .pth processing (before sitecustomize and any user
  // code), and only under the launcher, which registers the built-in _inferenceutils module.
  return WriteFileAtomic(
      SitePackages(prefix) + "/00-inferenceutils-preload.pth",
      "import sys; exec('import _inferenceutils; _inferenceutils.preload()') "
      "if '_inferenceutils' in sys.builtin_module_names else None\n");
}

absl::StatusOr<std::string> FindPipWheel() {
  std::string pattern = absl::StrCat(CurrentHome().wheels_dir, "/pip-*.whl");
  glob_t matches;
  std::string found;
  if (glob(pattern.c_str(), 0, nullptr, &matches) == 0 && matches.gl_pathc > 0) {
    found = matches.gl_pathv[matches.gl_pathc - 1];
  }
  globfree(&matches);
  if (found.empty()) {
    return WithExit(absl::FailedPreconditionError(absl::StrCat(
                        "pip's wheel is missing (", pattern,
                        CurrentHome().source == "system"
                            ? "); install it with `apt-get install python3.11-venv python3-pip-whl`"
                            : "); the launcher's Python home is incomplete: reinstall inferenceutils")),
                    kExitProvision);
  }
  return found;
}

// pip's output lines worth showing on the live line.
bool IsPipHeadline(absl::string_view line) {
  for (absl::string_view prefix : {"Collecting ", "Downloading ", "Building wheel", "Installing ",
                                   "Successfully ", "Processing ", "Looking in ", "Preparing ",
                                   "Created wheel", "Getting requirements", "Using cached"}) {
    if (absl::StartsWith(line, prefix)) return true;
  }
  return false;
}

// The requirement pip names in its error, if any.
std::string FailingRequirement(absl::string_view output) {
  for (absl::string_view marker : {"No matching distribution found for ",
                                   "Could not find a version that satisfies the requirement ",
                                   "Failed building wheel for ", "Failed to build "}) {
    size_t pos = output.rfind(marker);
    if (pos == absl::string_view::npos) continue;
    absl::string_view rest = output.substr(pos + marker.size());
    return std::string(rest.substr(0, rest.find_first_of(" \n\r(")));
  }
  return {};
}

std::string FlagsText(const std::map<std::string, std::string>& env) {
  std::vector<std::string> parts;
  for (const auto& [name, value] : env) parts.push_back(absl::StrCat(name, "=", value));
  return parts.empty() ? "(no build flags)" : absl::StrJoin(parts, " ");
}

// A local index or link (a path or file:// URL): usable offline.
bool IsLocal(absl::string_view url) { return absl::StartsWith(url, "file:") || absl::StartsWith(url, "/") || !absl::StrContains(url, "://"); }

struct PipRun {
  std::vector<std::string> extra_args;  // --only-binary / --no-binary, extra index
  std::string what;                     // for messages
};

absl::StatusOr<ProcessResult> RunPip(const BuildRequest& request, const std::string& prefix,
                                     const std::string& pip_wheel, const std::string& cache_dir,
                                     const PipRun& run, int log_fd, Progress& progress) {
  std::vector<std::string> argv = {prefix + "/bin/" + PythonDirName(), pip_wheel + "/pip", "install",
                                   "-v", "--disable-pip-version-check", "--no-input",
                                   "--cache-dir", cache_dir};
  // Offline: nothing over the network; indexes and links on the local disk (file://) still count.
  auto usable = [&](const std::string& url) { return !request.offline || IsLocal(url); };
  if (!request.index_url.empty() && usable(request.index_url)) {
    argv.insert(argv.end(), {"--index-url", request.index_url});
  } else if (request.offline) {
    argv.push_back("--no-index");  // pip's default index is PyPI
  }
  for (const auto& url : request.extra_index_urls) {
    if (usable(url)) argv.insert(argv.end(), {"--extra-index-url", url});
  }
  for (const auto& link : request.find_links) {
    if (usable(link)) argv.insert(argv.end(), {"--find-links", link});
  }
  argv.insert(argv.end(), run.extra_args.begin(), run.extra_args.end());
  argv.insert(argv.end(), request.requirements.begin(), request.requirements.end());
  argv.push_back(pip_wheel);  // pip itself, so `python -m pip` works inside the runtime

  std::string header = absl::StrCat("\n$ ", FlagsText(request.build_env), " ", absl::StrJoin(argv, " "), "\n");
  ssize_t ignored = write(log_fd, header.data(), header.size());
  (void)ignored;

  ProcessSpec spec;
  spec.argv = argv;
  spec.unset_prefixes = {"PYTHON", "PIP_", "VIRTUAL_ENV"};
  spec.set_env = request.build_env;
  spec.set_env["PIP_CONFIG_FILE"] = "/dev/null";  // the spec, not pip.conf, says where packages come from
  spec.set_env["PYTHONNOUSERSITE"] = "1";
  spec.set_env["PYTHONUNBUFFERED"] = "1";  // pip's lines as they happen, for the live progress line
  spec.log_fd = log_fd;
  spec.on_line = [&](absl::string_view line) {
    line = absl::StripAsciiWhitespace(line);
    if (IsPipHeadline(line)) progress.Detail(line);
  };
  return RunProcess(spec);
}

constexpr char kVerifyScript[] = R"PY(
import importlib, json, sys
import importlib.metadata as md
errors = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as e:
        errors[name] = "%s: %s" % (type(e).__name__, e)
dists = sorted({(d.metadata["Name"], d.version) for d in md.distributions()})
# Paths are bytes: one that is not UTF-8 is shown with U+FFFD (the report is for the manifest).
text = json.dumps({"sys_path": [p for p in sys.path if p], "dists": dists,
                   "errors": errors, "prefix": sys.prefix}, ensure_ascii=False)
sys.stdout.flush()
sys.stdout.buffer.write(("IU-VERIFY " + text + "\n").encode("utf-8", "replace"))
)PY";

absl::Status BuildFailure(absl::string_view step, absl::string_view reason,
                          const BuildRequest& request, const std::string& log_path,
                          absl::string_view output) {
  return WithExit(
      absl::UnavailableError(absl::StrCat(
          "building runtime ", request.key, " failed while ", step, ": ", reason, "; log: ", log_path,
          "\nflags: ", FlagsText(request.build_env), "\nlast lines of the log:\n", TailLines(output, 12))),
      kExitProvision);
}

// Ctrl-C stopped pip or the verification: the caller removes the data directory, as after a
// failure, and the launcher ends by SIGINT (exit status 130), as python does.
absl::Status Interrupted(const BuildRequest& request, const std::string& log_path) {
  return WithExit(absl::CancelledError(absl::StrCat("interrupted (Ctrl-C) while building runtime ", request.key,
                                                    "; nothing of it was kept, start again to build it (log: ",
                                                    log_path, ")")),
                  kExitInterrupted);
}

}  // namespace

absl::Status WritePyvenvCfg(const std::string& prefix) {
  const PythonHome& home = CurrentHome();
  std::string cfg = absl::StrCat("home = ", home.executable.substr(0, home.executable.rfind('/')),
                                 "\ninclude-system-site-packages = false\nversion = ", home.version,
                                 "\nexecutable = ", home.executable, "\ncommand = inferenceutils (native venv)\n",
                                 "inferenceutils-home = ", home.id, "\n");
  return WriteFileAtomic(prefix + "/pyvenv.cfg", cfg);
}

void EnsurePythonLink(const std::string& prefix, const std::string& launcher) {
  for (const std::string& name : {std::string("/bin/python"), std::string("/bin/python3"), "/bin/" + PythonDirName()}) {
    std::string link = prefix + name;
    char buf[4096];
    ssize_t n = readlink(link.c_str(), buf, sizeof(buf) - 1);
    if (n > 0 && std::string(buf, static_cast<size_t>(n)) == launcher) continue;
    std::string tmp = absl::StrCat(link, ".tmp.", getpid());
    unlink(tmp.c_str());
    if (symlink(launcher.c_str(), tmp.c_str()) == 0 && rename(tmp.c_str(), link.c_str()) != 0) {
      unlink(tmp.c_str());
    }
  }
}

absl::StatusOr<Manifest> BuildRuntime(const Store& store, const BuildRequest& request,
                                      const std::string& prefix, Progress& progress) {
  auto total_start = Clock::now();
  Manifest manifest;
  manifest.key = request.key;
  manifest.key_inputs = request.key_inputs;
  manifest.source = "build";
  manifest.prefix = prefix;
  manifest.python_version = EmbeddedPythonVersion();
  manifest.python_abi = EmbeddedPythonAbi();
  manifest.base_prefix = CurrentHome().prefix;
  manifest.python_home = CurrentHome().id;
  manifest.backend = request.backend;
  manifest.profile_key = request.profile_key;
  manifest.decision = request.decision;
  manifest.requirements = request.requirements;
  manifest.preload = request.preload;
  manifest.libraries = request.libraries;
  manifest.build_env = request.build_env;

  // pip writes the runtime's path into scripts as UTF-8 and fails on other bytes (after a while,
  // with a traceback): say so before it starts. Runtimes from bundles need no pip.
  if (ValidUtf8(prefix) != prefix) {
    return StoreError(absl::StrCat("the store's path ", ValidUtf8(store.root()),
                                   " is not valid UTF-8, and pip cannot install into such a path; "
                                   "set INFERENCEUTILS_HOME (or --home) to a UTF-8 path"));
  }
  if (auto s = MakeDirs(store.root() + "/logs", ""); !s.ok()) return s;
  manifest.log = absl::StrCat(store.root(), "/logs/", request.key, "-", std::time(nullptr), "-", getpid(), ".log");
  int log_fd = open(manifest.log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (log_fd < 0) return StoreError(absl::StrCat("cannot write the build log ", manifest.log, ": ", std::strerror(errno)));
  struct CloseLog {
    int fd;
    ~CloseLog() { close(fd); }
  } close_log{log_fd};

  progress.Step("creating the venv");
  auto start = Clock::now();
  if (auto s = CreateVenv(prefix, request.launcher); !s.ok()) return s;
  manifest.timings["venv"] = SecondsSince(start);

  absl::StatusOr<std::string> pip_wheel = FindPipWheel();
  if (!pip_wheel.ok()) return pip_wheel.status();
  std::string cache_dir = store.PipCacheDir(request.profile_key.empty() ? "default" : request.profile_key);

  progress.Step("installing requirements");
  start = Clock::now();
  bool has_backend_package = false;
  for (const auto& req : request.requirements) {
    std::string lower = absl::AsciiStrToLower(req);
    absl::StrReplaceAll({{"_", "-"}, {".", "-"}}, &lower);
    if (!request.backend_package.empty() && absl::StartsWith(lower, request.backend_package)) has_backend_package = true;
  }
  absl::StatusOr<ProcessResult> pip;
  bool installed = false;
  if (has_backend_package && !request.wheel_indexes.empty()) {
    for (const auto& index : request.wheel_indexes) {
      if (request.offline && !IsLocal(index)) {
        progress.Note(absl::StrCat("offline: not asking the prebuilt index ", index));
        continue;
      }
      progress.Detail(absl::StrCat("looking for a prebuilt ", request.backend_package, " in ", index));
      pip = RunPip(request, prefix, *pip_wheel, cache_dir,
                   {{"--extra-index-url", index, "--only-binary", request.backend_package}, "prebuilt"},
                   log_fd, progress);
      if (!pip.ok()) return pip.status();
      if (pip->interrupted) return Interrupted(request, manifest.log);
      if (pip->exit_code == 0) {
        installed = true;
        manifest.build_env["prebuilt_index"] = index;
        break;
      }
      progress.Note(absl::StrCat("the prebuilt index ", index, " has no usable wheel for ",
                                 FailingRequirement(pip->output).empty() ? request.backend_package
                                                                          : FailingRequirement(pip->output),
                                 " (Python ", manifest.python_abi, "); building from source with ",
                                 FlagsText(request.build_env)));
    }
  }
  if (!installed) {
    PipRun source_build{{}, "source"};
    if (has_backend_package) source_build.extra_args = {"--no-binary", request.backend_package};
    pip = RunPip(request, prefix, *pip_wheel, cache_dir, source_build, log_fd, progress);
    if (!pip.ok()) return pip.status();
    if (pip->interrupted) return Interrupted(request, manifest.log);
    if (pip->exit_code != 0) {
      std::string failing = FailingRequirement(pip->output);
      return BuildFailure("installing requirements",
                          failing.empty() ? absl::StrCat("pip exited with ", pip->exit_code)
                                          : absl::StrCat("pip could not install '", failing, "'"),
                          request, manifest.log, pip->output);
    }
  }
  manifest.timings["pip"] = SecondsSince(start);

  progress.Step("verifying");
  start = Clock::now();
  // The spec's libraries and the runtime's own NVIDIA libraries, by absolute path, loaded before
  // the preload at every start (docs/libraries.md); the verification loads them first too.
  absl::StatusOr<std::vector<std::string>> libraries = RuntimeLibraries(prefix, request.libraries);
  if (!libraries.ok()) return libraries.status();
  manifest.libraries = *std::move(libraries);
  ProcessSpec verify;
  verify.argv = {prefix + "/bin/" + PythonDirName(), "-E", "-s", "-c",
                 LoadLibrariesPython(manifest.libraries) + kVerifyScript};
  verify.argv.insert(verify.argv.end(), request.preload.begin(), request.preload.end());
  verify.unset_prefixes = {"PYTHON"};
  verify.log_fd = log_fd;
  absl::StatusOr<ProcessResult> verified = RunProcess(verify);
  if (!verified.ok()) return verified.status();
  if (verified->interrupted) return Interrupted(request, manifest.log);
  size_t mark = verified->output.rfind("IU-VERIFY ");
  nlohmann::json report = mark == std::string::npos
                              ? nlohmann::json()
                              : nlohmann::json::parse(verified->output.substr(mark + 10), nullptr, false);
  if (verified->exit_code != 0 || report.is_discarded() || report.is_null()) {
    return BuildFailure("verifying", "the runtime's interpreter did not start", request, manifest.log,
                        verified->output);
  }
  for (const auto& [module, error] : report["errors"].items()) {
    return BuildFailure("verifying", absl::StrCat("preload module '", module, "' does not import: ",
                                                  error.get<std::string>()),
                        request, manifest.log, verified->output);
  }
  manifest.sys_path = report["sys_path"].get<std::vector<std::string>>();
  for (const auto& dist : report["dists"]) {
    manifest.distributions.emplace_back(dist[0].get<std::string>(), dist[1].get<std::string>());
  }
  manifest.timings["verify"] = SecondsSince(start);
  manifest.timings["total"] = SecondsSince(total_start);
  manifest.created = NowRfc3339();

  if (auto s = WriteFileAtomic(prefix + "/manifest.json", DumpJson(manifest.ToJson(), 2) + "\n"); !s.ok()) return s;
  return manifest;
}

}  // namespace iu
