// doctor [--json]: start the selected runtime's interpreter the way `run` would, import its
// preload, then report what the dynamic loader actually loaded and from where, the backend the
// native library initialised, the environment that changes library loading, and findings with
// one-line fixes. Exit 0 when no finding is an error, 1 when one is (docs/libraries.md).
// Also ReportLibraryConflicts, for `run --check-conflicts`, and ReportOtherCopiesUsed, after every
// `run`: objects of the runtime that got another copy of a library than their own.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "commands.h"
#include "inferenceutils/json_text.h"
#include "inferenceutils/doctor.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/libraries.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/provision.h"
#include "inferenceutils/python.h"
#include "selection.h"
#include "terminal_progress.h"

namespace iu {
namespace {

// Runs inside the runtime instead of a user program: imports the preload (catching a failure, so
// it can be diagnosed), asks llama_cpp what it initialised, lists the loaded shared objects.
// argv: OUT_FILE PRELOAD_JSON. Writes one JSON object to OUT_FILE; stdout stays the preload's.
constexpr char kDoctorScript[] = R"PY(
import sys, importlib, _inferenceutils
out, preload = sys.argv[1], sys.argv[2].split("\n") if sys.argv[2] else []
errors = {}
for name in preload:
    try:
        importlib.import_module(name)
    except BaseException as e:
        errors[name] = "%s: %s" % (type(e).__name__, e)
        break
loaded = [path for path, _ in _inferenceutils.loaded_libraries()]
backend = None
llama = sys.modules.get("llama_cpp")
if llama is not None:
    backend = {"module": "llama_cpp", "version": str(getattr(llama, "__version__", ""))}
    for key, fn in (("gpu_offload", "llama_supports_gpu_offload"), ("system_info", "llama_print_system_info")):
        try:
            value = getattr(llama, fn)()
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            backend[key] = bool(value) if key == "gpu_offload" else str(value).strip()
        except BaseException as e:
            backend[key + "_error"] = "%s: %s" % (type(e).__name__, e)
import json, os
# Loaded paths as the bytes they are (hex): a store path need not be UTF-8.
report = {"preload_errors": errors, "backend": backend, "loaded_hex": [os.fsencode(p).hex() for p in loaded]}
with open(out, "wb") as f:
    f.write(json.dumps(report, ensure_ascii=False).encode("utf-8", "replace"))
)PY";

struct Report {
  nlohmann::json json;
  std::vector<Finding> findings;
};

std::string Where(const std::string& path, const std::string& prefix, const std::vector<std::string>& system_dirs) {
  return LibraryOrigin(path, prefix, system_dirs);
}

std::string Human(const Report& report) {
  const nlohmann::json& j = report.json;
  std::string out;
  const nlohmann::json& rt = j["runtime"];
  if (rt["source"] == "system") {
    absl::StrAppend(&out, "Runtime      none: the base interpreter (--system)\n             ", rt["prefix"].get<std::string>(), "\n");
  } else {
    absl::StrAppend(&out, "Runtime      ", rt["key"].get<std::string>(), " (", rt["source"].get<std::string>(), ", backend ",
                    rt["backend"].get<std::string>(), ")\n             ", rt["prefix"].get<std::string>(), "\n");
  }
  absl::StrAppend(&out, "Preload      ", rt["preload"].empty() ? "(none)" : absl::StrJoin(rt["preload"].get<std::vector<std::string>>(), ", "), "\n");
  absl::StrAppend(&out, "Loaded first ",
                  rt["libraries"].empty() ? "(no libraries)" : absl::StrCat(rt["libraries"].size(), " libraries, in this order:"), "\n");
  for (const auto& library : rt["libraries"]) absl::StrAppend(&out, "  ", library.get<std::string>(), "\n");
  const nlohmann::json& backend = j["backend"];
  if (backend.is_null()) {
    absl::StrAppend(&out, "Backend      (no llama_cpp in the preload)\n");
  } else {
    absl::StrAppend(&out, "Backend      llama_cpp ", backend.value("version", ""), ": GPU offload ",
                    backend.contains("gpu_offload") ? (backend["gpu_offload"].get<bool>() ? "yes" : "no") : "unknown", "\n");
    if (backend.contains("system_info")) absl::StrAppend(&out, "             ", backend["system_info"].get<std::string>(), "\n");
  }
  const nlohmann::json& libraries = j["libraries"];
  int counts[4] = {0, 0, 0, 0};
  for (const auto& library : libraries) {
    std::string origin = library["origin"];
    counts[origin == "runtime" ? 0 : origin == "home" ? 1 : origin == "system" ? 2 : 3]++;
  }
  absl::StrAppend(&out, "Libraries    ", libraries.size(), " shared objects loaded (", counts[0], " from the runtime, ",
                  counts[1], " from the Python home, ", counts[2], " system, ", counts[3], " outside)\n");
  for (const auto& library : libraries) {
    std::string soname = library["soname"];
    absl::StrAppend(&out, absl::StrFormat("  %-8s %s", library["origin"].get<std::string>(), library["path"].get<std::string>()),
                    soname.empty() ? "" : absl::StrCat("  [", soname, "]"), "\n");
  }
  absl::StrAppend(&out, "Environment\n");
  for (const auto& name : LoaderEnvironmentNames()) {
    absl::StrAppend(&out, absl::StrFormat("  %-21s %s", name,
                                          j["environment"].contains(name) ? j["environment"][name].get<std::string>() : "(not set)"),
                    "\n");
  }
  if (report.findings.empty()) {
    absl::StrAppend(&out, "Findings     none\n");
  } else {
    absl::StrAppend(&out, "Findings\n");
    for (const auto& finding : report.findings) {
      absl::StrAppend(&out, "  ", finding.severity, ": ", finding.message, "\n    fix: ", finding.fix, "\n");
    }
  }
  int problems = 0;
  for (const auto& finding : report.findings) problems += finding.severity == "error";
  absl::StrAppend(&out, problems == 0 ? "OK: no problems found\n" : absl::StrCat(problems, problems == 1 ? " problem" : " problems", " found\n"));
  return out;
}

nlohmann::json LoadedJson(const std::vector<LoadedObject>& loaded, const std::string& prefix,
                          const std::vector<std::string>& system_dirs) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& object : loaded) {
    out.push_back({{"path", object.path}, {"soname", object.soname}, {"origin", Where(object.path, prefix, system_dirs)}});
  }
  return out;
}

}  // namespace

namespace {

// The runtime doctor checks, provisioned as `run` would; with --system none: the base interpreter.
absl::StatusOr<Manifest> DoctorTarget(const Invocation& invocation) {
  if (invocation.options.system) {
    Manifest m;
    m.source = "system";
    m.prefix = BasePythonPrefix();
    m.python_version = EmbeddedPythonVersion();
    m.python_abi = EmbeddedPythonAbi();
    m.base_prefix = BasePythonPrefix();
    return m;
  }
  absl::StatusOr<Selection> selection = Select(invocation, std::nullopt);
  if (!selection.ok()) return selection.status();
  TerminalProgress progress(invocation.options.quiet, invocation.options.verbose);
  absl::StatusOr<Manifest> manifest = EnsureRuntime(selection->store, selection->request,
                                                    ProvisionOptionsFor(invocation.options), progress);
  progress.Finish();
  if (!manifest.ok()) return manifest.status();
  EnsurePythonLink(manifest->prefix, selection->request.launcher);
  MarkInUse(manifest->prefix);
  return manifest;
}

// The probe's report: what the preload did and what got loaded. The preload's own output goes
// to stderr while it runs, so stdout carries only doctor's report.
absl::StatusOr<nlohmann::json> Probe(const Manifest& manifest) {
  std::string tmpdir = std::getenv("TMPDIR") && *std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
  std::string out_file = absl::StrCat(tmpdir, "/inferenceutils-doctor-XXXXXX");
  int fd = mkstemp(out_file.data());
  if (fd < 0) return StoreError(absl::StrCat("cannot create a temporary file in ", tmpdir, "; set TMPDIR"));
  close(fd);
  struct Unlink {
    std::string path;
    ~Unlink() { unlink(path.c_str()); }
  } unlink_out{out_file};

  // The interpreter exactly as `run` starts it (same executable, libraries loaded first), except
  // that the preload is imported by the doctor script, so a failing import can be diagnosed.
  InterpreterConfig config;
  if (manifest.source != "system") config.executable = manifest.prefix + "/bin/python";
  config.libraries = manifest.libraries;
  config.argv = {"-P", "-c", kDoctorScript, out_file, absl::StrJoin(manifest.preload, "\n")};
  std::fflush(stdout);
  int saved_stdout = dup(STDOUT_FILENO);
  if (saved_stdout >= 0) dup2(STDERR_FILENO, STDOUT_FILENO);
  absl::StatusOr<int> status = RunPython(config);
  std::fflush(stdout);
  if (saved_stdout >= 0) {
    dup2(saved_stdout, STDOUT_FILENO);
    close(saved_stdout);
  }
  if (!status.ok()) return status.status();
  absl::StatusOr<std::string> text = ReadFile(out_file);
  nlohmann::json result = text.ok() ? nlohmann::json::parse(*text, nullptr, false) : nlohmann::json();
  bool well_formed = !result.is_discarded() && result.is_object() && result.contains("loaded_hex") &&
                     result["loaded_hex"].is_array() && result.contains("preload_errors") &&
                     result["preload_errors"].is_object();
  if (well_formed) {
    for (const auto& hex : result["loaded_hex"]) well_formed = well_formed && hex.is_string();
    for (const auto& [name, error] : result["preload_errors"].items()) well_formed = well_formed && error.is_string();
  }
  if (*status != 0 || !well_formed) {
    return WithExit(absl::InternalError(absl::StrCat("doctor's probe in ", manifest.prefix, " exited with ", *status,
                                                     " without a report; please report this")),
                    kExitInternal);
  }
  return result;
}

absl::StatusOr<Report> Examine(const Invocation& invocation) {
  absl::StatusOr<Manifest> manifest = DoctorTarget(invocation);
  if (!manifest.ok()) return manifest.status();
  absl::StatusOr<nlohmann::json> probed = Probe(*manifest);
  if (!probed.ok()) return probed.status();
  nlohmann::json& result = *probed;

  std::string prefix = ResolvedPath(manifest->prefix);
  LibraryCheck check;
  check.runtime_prefix = manifest->source == "system" ? "" : prefix;
  check.system_dirs = SystemLibraryDirs();
  std::vector<std::string> loaded;
  for (const auto& hex : result["loaded_hex"]) loaded.push_back(absl::HexStringToBytes(hex.get<std::string>()));
  check.loaded = DescribeLoaded(loaded);
  std::vector<std::string> resolved;
  for (const auto& object : check.loaded) resolved.push_back(object.path);
  if (manifest->source != "system") {
    check.own = OwnCopies(resolved, prefix);
    check.shipped = ShippedLibraries(prefix);
  }
  check.env = LoaderEnvironment();

  std::map<std::string, std::string> preload_errors = result["preload_errors"].get<std::map<std::string, std::string>>();
  std::optional<bool> gpu_offload;
  if (result["backend"].is_object() && result["backend"].contains("gpu_offload") &&
      result["backend"]["gpu_offload"].is_boolean()) {
    gpu_offload = result["backend"]["gpu_offload"].get<bool>();
  }
  Report report;
  for (auto& finding : CheckBackend(preload_errors, manifest->backend, gpu_offload)) report.findings.push_back(finding);
  for (auto& finding : CheckLibraries(check)) report.findings.push_back(finding);
  for (auto& finding : CheckEnvironment(check.env)) report.findings.push_back(finding);

  nlohmann::json findings = nlohmann::json::array();
  for (const auto& finding : report.findings) findings.push_back(finding.ToJson());
  report.json = {
      {"runtime", {{"key", manifest->key},
                   {"source", manifest->source == "bundle" ? "bundle" : manifest->source == "system" ? "system" : "built"},
                   {"prefix", manifest->prefix},
                   {"backend", manifest->backend},
                   {"preload", manifest->preload},
                   {"libraries", manifest->libraries}}},
      {"preload_errors", result["preload_errors"]},
      {"backend", result.contains("backend") ? result["backend"] : nlohmann::json()},
      {"libraries", LoadedJson(check.loaded, check.runtime_prefix, check.system_dirs)},
      {"environment", check.env},
      {"findings", findings},
      {"ok", !HasProblems(report.findings)},
  };
  return report;
}

}  // namespace

absl::StatusOr<int> CmdDoctor(const Invocation& invocation) {
  bool json = false;
  for (const auto& arg : invocation.args) {
    if (arg == "--json") {
      json = true;
    } else if (arg == "-h" || arg == "--help") {
      std::fputs("usage: inferenceutils [OPTIONS] doctor [--json]\n", stdout);
      return 0;
    } else {
      return UsageError(absl::StrCat("doctor takes only --json, got '", arg, "'"));
    }
  }
  absl::StatusOr<Report> report = Examine(invocation);
  if (!report.ok()) {
    // --json always prints a document: the error where the report would be (as info --json does).
    if (json) {
      std::string doc = DumpJson({{"ok", false}, {"error", std::string(report.status().message())}}, 2) + "\n";
      std::fwrite(doc.data(), 1, doc.size(), stdout);
      std::fflush(stdout);
    }
    return report.status();
  }
  std::string text_out = json ? DumpJson(report->json, 2) + "\n" : Human(*report);
  std::fwrite(text_out.data(), 1, text_out.size(), stdout);
  std::fflush(stdout);
  return HasProblems(report->findings) ? 1 : 0;
}

namespace {

// This process's loaded objects, checked against the runtime at `runtime_prefix`.
LibraryCheck CheckOfThisProcess(const std::string& runtime_prefix) {
  std::vector<std::string> paths;
  for (const auto& library : LoadedLibraries()) paths.push_back(library.path);
  LibraryCheck check;
  check.runtime_prefix = ResolvedPath(runtime_prefix);
  check.system_dirs = SystemLibraryDirs();
  check.loaded = DescribeLoaded(paths);
  std::vector<std::string> resolved;
  for (const auto& object : check.loaded) resolved.push_back(object.path);
  check.own = OwnCopies(resolved, check.runtime_prefix);
  check.env = LoaderEnvironment();
  return check;
}

void PrintFindings(const std::vector<Finding>& findings) {
  for (const auto& finding : findings) {
    std::fprintf(stderr, "inferenceutils: %s: %s\n  fix: %s\n", finding.severity.c_str(), finding.message.c_str(),
                 finding.fix.c_str());
  }
}

}  // namespace

void ReportLibraryConflicts(const std::string& runtime_prefix) {
  LibraryCheck check = CheckOfThisProcess(runtime_prefix);
  check.shipped = ShippedLibraries(check.runtime_prefix);
  std::vector<Finding> findings = CheckLibraries(check);
  std::fflush(stdout);
  if (findings.empty()) {
    std::fprintf(stderr, "inferenceutils: check-conflicts: %zu shared objects loaded, none twice or from outside the runtime and the system\n",
                 check.loaded.size());
    return;
  }
  std::fprintf(stderr, "inferenceutils: check-conflicts: %zu shared objects loaded; %zu finding%s\n", check.loaded.size(),
               findings.size(), findings.size() == 1 ? "" : "s");
  PrintFindings(findings);
}

void ReportOtherCopiesUsed(const std::string& runtime_prefix) {
  // The common case costs one realpath per loaded object and one dynamic section per object of
  // the runtime that has a run path: stop there when every such object got its own copies.
  std::string prefix = ResolvedPath(runtime_prefix);
  std::vector<std::string> resolved;
  for (const auto& library : LoadedLibraries()) {
    if (library.path.find('/') != std::string::npos) resolved.push_back(ResolvedPath(library.path));
  }
  std::vector<OwnCopy> own = OwnCopies(resolved, prefix);
  std::sort(resolved.begin(), resolved.end());
  bool all_used = std::all_of(own.begin(), own.end(), [&](const OwnCopy& copy) {
    return std::binary_search(resolved.begin(), resolved.end(), copy.path);
  });
  if (all_used) return;
  LibraryCheck check = CheckOfThisProcess(runtime_prefix);
  // A system copy in use (libz, libstdc++... loaded by the launcher or Python first) is the normal
  // case for a wheel that ships its own: doctor and --check-conflicts show those, not every run.
  std::vector<Finding> findings;
  for (auto& finding : CheckResolutions(check)) {
    std::string origin = LibraryOrigin(finding.paths.back(), check.runtime_prefix, check.system_dirs);
    if (origin != "system" && origin != "home") {
      findings.push_back(std::move(finding));
    }
  }
  if (findings.empty()) return;
  std::fflush(stdout);
  PrintFindings(findings);
}

}  // namespace iu
