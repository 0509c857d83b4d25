// Building a runtime: a venv made natively for the embedded interpreter's own Python, pip run
// from Debian's pip wheel with the backend's build environment, a verification interpreter that
// imports the preload, and the manifest.
#include <fcntl.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
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
#include "inferenceutils/spec.h"
#include "index_probe.h"

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

// An index given as a path becomes the file:// URL pip reads.
std::string IndexUrl(const std::string& url) {
  return absl::StartsWith(url, "/") ? absl::StrCat("file://", url) : url;
}

struct PipRun {
  std::vector<std::string> extra_indexes;  // asked besides the request's (prebuilt wheel indexes)
  std::vector<std::string> extra_args;     // --only-binary / --no-binary
  std::string report;                      // --report FILE ("" = none)
};

// The indexes and links of one pip run. Online: the request's as given (no index_url = PyPI).
// Offline: only local ones; pip reads an index only without --no-index, so the first local
// index becomes --index-url (PyPI is then never asked) and --no-index is given only when there
// is no local index at all.
std::vector<std::string> SourceArgs(const BuildRequest& request, const std::vector<std::string>& more_indexes) {
  std::vector<std::string> args;
  std::vector<std::string> indexes;
  if (!request.index_url.empty()) indexes.push_back(request.index_url);
  indexes.insert(indexes.end(), request.extra_index_urls.begin(), request.extra_index_urls.end());
  indexes.insert(indexes.end(), more_indexes.begin(), more_indexes.end());
  if (!request.offline) {
    if (!request.index_url.empty()) args.insert(args.end(), {"--index-url", IndexUrl(request.index_url)});
    for (size_t i = request.index_url.empty() ? 0 : 1; i < indexes.size(); ++i) {
      args.insert(args.end(), {"--extra-index-url", IndexUrl(indexes[i])});
    }
  } else {
    bool first = true;
    for (const auto& url : indexes) {
      if (!IsLocalSource(url)) continue;
      args.insert(args.end(), {first ? "--index-url" : "--extra-index-url", IndexUrl(url)});
      first = false;
    }
    if (first) args.push_back("--no-index");  // no local index: find-links only
  }
  for (const auto& link : request.find_links) {
    if (!request.offline || IsLocalSource(link)) args.insert(args.end(), {"--find-links", link});
  }
  for (const auto& host : request.trusted_hosts) args.insert(args.end(), {"--trusted-host", host});
  return args;
}

absl::StatusOr<ProcessResult> RunPip(const BuildRequest& request, const std::string& prefix,
                                     const std::string& pip_wheel, const std::string& cache_dir,
                                     const PipRun& run, int log_fd, Progress& progress) {
  std::vector<std::string> argv = {prefix + "/bin/" + PythonDirName(), pip_wheel + "/pip", "install",
                                   "-v", "--disable-pip-version-check", "--no-input",
                                   "--cache-dir", cache_dir};
  std::vector<std::string> sources = SourceArgs(request, run.extra_indexes);
  argv.insert(argv.end(), sources.begin(), sources.end());
  if (!run.report.empty()) argv.insert(argv.end(), {"--report", run.report});
  argv.insert(argv.end(), run.extra_args.begin(), run.extra_args.end());
  argv.insert(argv.end(), request.requirements.begin(), request.requirements.end());
  argv.push_back(pip_wheel);  // pip itself, so `python -m pip` works inside the runtime

  std::vector<std::string> connection;
  for (const auto& [name, value] : request.pip_env) connection.push_back(absl::StrCat(name, "=", value));
  std::string stub_note;
  if (const std::string& stubs = request.cuda_stubs; !stubs.empty()) {
    stub_note = absl::StrCat("\n# no NVIDIA driver library (libcuda.so.1) here: linking against the CUDA toolkit's stub ",
                             stubs, "/libcuda.so, for this build only (not on the runtime's library path)");
  }
  std::string header = absl::StrCat(stub_note, "\n$ ", FlagsText(request.build_env), " ", absl::StrJoin(connection, " "),
                                    connection.empty() ? "" : " ", absl::StrJoin(argv, " "), "\n");
  ssize_t ignored = write(log_fd, header.data(), header.size());
  (void)ignored;

  ProcessSpec spec;
  spec.argv = argv;
  spec.unset_prefixes = {"PYTHON", "PIP_", "VIRTUAL_ENV"};
  // How to connect (PIP_CERT, PIP_PROXY, PIP_TIMEOUT, PIP_RETRIES, PIP_CLIENT_CERT, from the
  // PIP_* variables and pip.conf) goes to pip; where packages come from is in the arguments.
  // The *_proxy variables are inherited.
  spec.set_env = request.pip_env;
  for (const auto& [name, value] : request.build_env) spec.set_env[name] = value;
  spec.set_env["PIP_CONFIG_FILE"] = "/dev/null";  // pip.conf is read by the launcher (pip_config.cpp)
  spec.set_env["PYTHONNOUSERSITE"] = "1";
  spec.set_env["PYTHONUNBUFFERED"] = "1";  // pip's lines as they happen, for the live progress line
  spec.log_fd = log_fd;
  spec.on_line = [&](absl::string_view line) {
    line = absl::StripAsciiWhitespace(line);
    if (IsPipHeadline(line)) progress.Detail(line);
  };
  return RunProcess(spec);
}

ProbeOptions ProbeOptionsFor(const BuildRequest& request) {
  ProbeOptions options;
  auto get = [&](const char* name) {
    auto it = request.pip_env.find(name);
    return it == request.pip_env.end() ? std::string() : it->second;
  };
  options.cert = get("PIP_CERT");
  options.client_cert = get("PIP_CLIENT_CERT");
  options.proxy = get("PIP_PROXY");
  options.trusted_hosts = request.trusted_hosts;
  double timeout = 0;
  if (absl::SimpleAtod(get("PIP_TIMEOUT"), &timeout) && timeout > 0) {
    options.timeout_s = std::max(1L, std::min(options.timeout_s, static_cast<long>(timeout + 0.5)));
  }
  return options;
}

// "https://pypi.org/simple (pip's default (PyPI))": a source and where it came from.
std::string Described(const BuildRequest& request, const std::string& url) {
  for (const auto& row : request.sources) {
    if (row.value("value", "") == url && !row.value("origin", "").empty()) {
      return absl::StrCat(url, " (", row["origin"].get<std::string>(), ")");
    }
  }
  return url;
}

// The network sources the last pip run used, for the diagnosis of a failure.
std::vector<ProbeTarget> NetworkSources(const BuildRequest& request, const std::vector<std::string>& more_indexes) {
  std::vector<ProbeTarget> targets;
  if (request.offline) return targets;
  targets.push_back({request.index_url.empty() ? "https://pypi.org/simple" : request.index_url, true});
  for (const auto& url : request.extra_index_urls) targets.push_back({url, true});
  for (const auto& url : more_indexes) targets.push_back({url, true});
  for (const auto& link : request.find_links) targets.push_back({link, false});
  std::vector<ProbeTarget> network;
  for (auto& target : targets) {
    if (!IsLocalSource(target.url)) network.push_back(std::move(target));
  }
  return network;
}

absl::Status BuildFailure(absl::string_view step, absl::string_view reason, const BuildRequest& request,
                          const std::string& log_path, absl::string_view output);

// The failure of the last pip run, the cause first: an index that could not be reached (which,
// why, and the ways out), else what pip could not install. pip's own lines stay in the log.
absl::Status PipFailure(const BuildRequest& request, const std::string& log_path, const ProcessResult& pip,
                        const std::vector<std::string>& more_indexes, Progress& progress) {
  std::string failing = FailingRequirement(pip.output);
  std::string what = failing.empty() ? absl::StrCat("pip exited with ", pip.exit_code)
                                     : absl::StrCat("pip could not install '", failing, "'");
  std::vector<ProbeTarget> network = NetworkSources(request, more_indexes);
  PipNetworkError pip_error = PipNetworkErrorIn(pip.output);
  std::vector<std::string> unreachable;
  if (!network.empty() && (!pip_error.kind.empty() || !failing.empty())) {
    progress.Detail("checking which package indexes answer");
    for (const ProbeResult& r : ProbeSources(network, failing.empty() ? "pip" : RequirementName(failing),
                                             ProbeOptionsFor(request))) {
      if (!r.reachable()) unreachable.push_back(absl::StrCat(Described(request, r.url), ": ", r.why));
    }
  }
  if (unreachable.empty() && pip_error.kind.empty()) {
    std::string local;
    if (request.offline) {
      std::vector<std::string> used;
      for (const auto& row : request.sources) {
        if (row.value("used", false) && row.value("kind", "") != "offline" && row.value("kind", "") != "trusted host") {
          used.push_back(row["value"].get<std::string>());
        }
      }
      local = used.empty() ? " (offline, and no local index or find-links to ask)"
                           : absl::StrCat(" (offline: only ", absl::StrJoin(used, ", "), " asked)");
    }
    return BuildFailure("installing requirements", absl::StrCat(what, local), request, log_path, pip.output);
  }
  std::string cause = unreachable.empty()
                          ? absl::StrCat("pip could not reach a package index: ", pip_error.why)
                          : absl::StrCat(unreachable.size() == 1 ? "cannot reach the package index "
                                                                 : "cannot reach the package indexes ",
                                         absl::StrJoin(unreachable, "; "));
  return WithExit(
      absl::UnavailableError(absl::StrCat(
          "building runtime ", request.key, " failed: ", cause, "; so ", what,
          ".\nways out: --index-url URL or --find-links DIR|URL to a mirror or a local copy; --bundle FILE|URL "
          "(a prebuilt runtime); --offline with local sources (--find-links DIR, a file:// index); "
          "HTTPS_PROXY=http://HOST:PORT when the network needs a proxy (PIP_CERT or pip.conf's cert for its CA)"
          "\npip's output: ", log_path, "\nflags: ", FlagsText(request.build_env))),
      kExitProvision);
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

// One line (terminal, -v) naming the sources a build uses and where each came from.
void ReportSources(const BuildRequest& request, Progress& progress) {
  std::vector<std::string> parts;
  for (const auto& row : request.sources) {
    std::string text = absl::StrCat(row.value("kind", ""), " ", row.value("value", ""), " (", row.value("origin", ""), ")");
    if (!row.value("used", true)) absl::StrAppend(&text, " not used: ", row.value("why_not", ""));
    parts.push_back(std::move(text));
  }
  for (const auto& [name, value] : request.pip_env) {
    auto it = request.pip_env_origins.find(absl::AsciiStrToLower(absl::StrReplaceAll(name.substr(4), {{"_", "-"}})));
    parts.push_back(absl::StrCat(name, "=", value, it == request.pip_env_origins.end() ? "" : absl::StrCat(" (", it->second, ")")));
  }
  if (!parts.empty()) progress.Note(absl::StrCat("package sources: ", absl::StrJoin(parts, "; ")));
}

// The backend package's prebuilt wheel: every matching index asked once, in parallel, with a
// short timeout; the ones that answer with wheels of the package go into one pip resolution.
// One line per index tried. True when installed.
absl::StatusOr<bool> InstallPrebuilt(const BuildRequest& request, const std::string& prefix,
                                     const std::string& pip_wheel, const std::string& cache_dir, int log_fd,
                                     Progress& progress, Manifest* manifest) {
  const std::string& package = request.backend_package;
  std::vector<ProbeTarget> targets;
  for (const auto& index : request.wheel_indexes) {
    if (request.offline && !IsLocalSource(index)) {
      progress.Note(absl::StrCat("prebuilt index ", index, ": not asked (offline)"));
      continue;
    }
    targets.push_back({index, true});
  }
  if (targets.empty()) return false;
  progress.Detail(absl::StrCat("asking ", targets.size(), " prebuilt index", targets.size() == 1 ? "" : "es",
                               " for ", package));
  std::vector<ProbeResult> probed = ProbeSources(targets, package, ProbeOptionsFor(request));
  std::vector<const ProbeResult*> answered;
  std::string log_text = "\n# prebuilt wheel indexes asked for " + package + ":\n";
  for (const ProbeResult& r : probed) {
    size_t wheels = std::count_if(r.files.begin(), r.files.end(), [](const std::string& f) { return absl::EndsWith(f, ".whl"); });
    absl::StrAppend(&log_text, "#   ", r.url, ": ", r.kind, r.why.empty() ? "" : absl::StrCat(" (", r.why, ")"), ", ", wheels, " wheel(s)\n");
    if (!r.reachable()) {
      progress.Note(absl::StrCat("prebuilt index ", r.url, ": unreachable: ", r.why));
    } else if (wheels == 0) {
      progress.Note(absl::StrCat("prebuilt index ", r.url, ": no ", package, " wheel",
                                 r.kind == "missing" ? absl::StrCat(" (", r.why, ")") : ""));
    } else {
      answered.push_back(&r);
    }
  }
  ssize_t ignored = write(log_fd, log_text.data(), log_text.size());
  (void)ignored;
  if (answered.empty()) return false;

  PipRun run;
  for (const ProbeResult* r : answered) run.extra_indexes.push_back(r->url);
  run.extra_args = {"--only-binary", package};
  run.report = manifest->log + ".report.json";
  absl::StatusOr<ProcessResult> pip = RunPip(request, prefix, pip_wheel, cache_dir, run, log_fd, progress);
  if (!pip.ok()) return pip.status();
  if (pip->interrupted) return Interrupted(request, manifest->log);
  // Which wheel pip took, from its installation report: the first index listing it answered.
  std::string chosen_file, chosen_version;
  if (absl::StatusOr<std::string> report = ReadFile(run.report); report.ok()) {
    nlohmann::json json = nlohmann::json::parse(*report, nullptr, false);
    if (json.is_object() && json["install"].is_array()) {
      for (const auto& item : json["install"]) {
        std::string name = item.value("metadata", nlohmann::json::object()).value("name", "");
        if (NormalizeName(name) != NormalizeName(package)) continue;
        std::string url = item.value("download_info", nlohmann::json::object()).value("url", "");
        chosen_file = url.substr(url.rfind('/') + 1);
        chosen_version = item["metadata"].value("version", "");
      }
    }
  }
  unlink(run.report.c_str());
  std::vector<std::string> versions;
  auto versions_of = [&](const ProbeResult& r) {
    std::vector<std::string> out;
    for (const auto& f : r.files) {
      std::string v = DistributionVersion(f);
      if (absl::EndsWith(f, ".whl") && std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
    }
    return absl::StrJoin(out, ", ");
  };
  if (pip->exit_code == 0) {
    const ProbeResult* source = nullptr;
    for (const ProbeResult* r : answered) {
      if (!source && std::find(r->files.begin(), r->files.end(), chosen_file) != r->files.end()) source = r;
    }
    for (const ProbeResult* r : answered) {
      if (r == source || (!source && r == answered.front())) {
        progress.Note(absl::StrCat("prebuilt index ", r->url, ": ", package, " ",
                                   chosen_version.empty() ? versions_of(*r) : chosen_version,
                                   source ? "" : " (pip's report does not say which index; the first asked)",
                                   ": using it"));
      } else {
        progress.Note(absl::StrCat("prebuilt index ", r->url, ": answered (", package, " ", versions_of(*r), "), not chosen"));
      }
    }
    manifest->build_env["prebuilt_index"] = source ? source->url : answered.front()->url;
    return true;
  }
  std::string failing = FailingRequirement(pip->output);
  std::vector<std::string> wanted;
  for (const auto& requirement : request.requirements) {
    if (RequirementName(requirement) == NormalizeName(package)) wanted.push_back(requirement);
  }
  for (const ProbeResult* r : answered) {
    if (!failing.empty() && RequirementName(failing) != NormalizeName(package)) {
      progress.Note(absl::StrCat("prebuilt index ", r->url, ": has ", package, " ", versions_of(*r),
                                 ", but pip could not install '", failing, "' with it"));
    } else {
      progress.Note(absl::StrCat("prebuilt index ", r->url, ": has ", package, " wheels (", versions_of(*r),
                                 "), none for '", absl::StrJoin(wanted, "', '"), "' on Python ",
                                 request.facts.python.abi_tag, " / ", request.facts.python.platform_tag));
    }
  }
  return false;
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

bool PrebuiltWheelListed(const BuildRequest& request) {
  std::vector<ProbeTarget> targets;
  for (const auto& index : request.wheel_indexes) {
    if (!request.offline || IsLocalSource(index)) targets.push_back({index, true});
  }
  if (request.backend_package.empty() || targets.empty()) return false;
  for (const ProbeResult& r : ProbeSources(targets, request.backend_package, ProbeOptionsFor(request))) {
    if (!r.reachable()) continue;
    for (const auto& file : r.files) {
      if (absl::EndsWith(file, ".whl")) return true;
    }
  }
  return false;
}

absl::StatusOr<Manifest> BuildRuntime(const Store& store, const BuildRequest& request,
                                      const std::string& prefix, Progress& progress,
                                      const std::function<absl::Status()>& before_source_build) {
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
  manifest.log = !request.log.empty() ? request.log
                                      : absl::StrCat(store.root(), "/logs/", request.key, "-", std::time(nullptr), "-", getpid(), ".log");
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
  ReportSources(request, progress);
  absl::StatusOr<ProcessResult> pip;
  bool installed = false;
  if (has_backend_package && !request.wheel_indexes.empty()) {
    absl::StatusOr<bool> prebuilt = InstallPrebuilt(request, prefix, *pip_wheel, cache_dir, log_fd, progress, &manifest);
    if (!prebuilt.ok()) return prebuilt.status();
    installed = *prebuilt;
  }
  if (!installed) {
    PipRun source_build;
    if (has_backend_package) {
      if (before_source_build) {
        if (absl::Status go = before_source_build(); !go.ok()) {
          std::string line = absl::StrCat("\n# ", request.backend_package, " not built from source here: ", go.message(), "\n");
          ssize_t ignored = write(log_fd, line.data(), line.size());
          (void)ignored;
          return go;
        }
      }
      source_build.extra_args = {"--no-binary", request.backend_package};
      progress.Note(absl::StrCat("building ", request.backend_package, " from source with ", FlagsText(request.build_env)));
    }
    pip = RunPip(request, prefix, *pip_wheel, cache_dir, source_build, log_fd, progress);
    if (!pip.ok()) return pip.status();
    if (pip->interrupted) return Interrupted(request, manifest.log);
    if (pip->exit_code != 0) return PipFailure(request, manifest.log, *pip, {}, progress);
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
  // No driver library here (a build host): what the build linked against libcuda.so.1 cannot be
  // loaded without one, so the verification (only) finds the toolkit's stub under that name, in
  // a directory of the data dir removed right after (with the data dir if the build dies). Where
  // the runtime runs, the driver's is used.
  std::string verify_stubs;
  if (const std::string& stubs = request.cuda_stubs; !stubs.empty() && IsRegularFile(stubs + "/libcuda.so")) {
    verify_stubs = absl::StrCat(prefix, "/.iu-verify-stubs");
    if (mkdir(verify_stubs.c_str(), 0700) == 0 &&
        symlink((stubs + "/libcuda.so").c_str(), (verify_stubs + "/libcuda.so.1").c_str()) == 0) {
      verify.set_env["LD_LIBRARY_PATH"] = verify_stubs;
      std::string note = absl::StrCat("# verifying with the toolkit's stub ", stubs,
                                      "/libcuda.so as libcuda.so.1 (no driver here; not kept in the runtime)\n");
      ssize_t ignored = write(log_fd, note.data(), note.size());
      (void)ignored;
    }
  }
  absl::StatusOr<ProcessResult> verified = RunProcess(verify);
  if (!verify_stubs.empty()) {
    unlink((verify_stubs + "/libcuda.so.1").c_str());
    rmdir(verify_stubs.c_str());
  }
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
