// The checks behind `doctor` and `run --check-conflicts` (include/inferenceutils/doctor.h).
#include "inferenceutils/doctor.h"
#include "inferenceutils/python_home.h"

#include <glob.h>
#include <sys/stat.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "inferenceutils/paths.h"

namespace iu {
namespace {

std::string Basename(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool Below(const std::string& path, const std::string& dir) {
  if (dir.empty()) return false;
  std::string d = dir.back() == '/' ? dir : dir + "/";
  return absl::StartsWith(path, d);
}

std::vector<std::string> SplitList(const std::string& value, const char* separators) {
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(value, absl::ByAnyChar(separators), absl::SkipWhitespace())) {
    out.emplace_back(absl::StripAsciiWhitespace(part));
  }
  return out;
}

std::string EnvValue(const std::map<std::string, std::string>& env, const std::string& name) {
  auto it = env.find(name);
  return it == env.end() ? std::string() : it->second;
}

// The package directory that ships `path` (the first component below site-packages), for messages.
std::string PackageOf(const std::string& path) {
  size_t at = path.find("/site-packages/");
  if (at == std::string::npos) return Dirname(path);
  std::string rest = path.substr(at + 15);
  return rest.substr(0, rest.find('/'));
}

// The path below site-packages (torch/lib/libtorch.so), else the path itself, for messages.
std::string ShortName(const std::string& path) {
  size_t at = path.find("/site-packages/");
  return at == std::string::npos ? path : path.substr(at + 15);
}

// Why `path` (outside the runtime) is in the process, as a fix.
std::string FixFor(const std::string& path, const std::map<std::string, std::string>& env) {
  for (const auto& entry : SplitList(EnvValue(env, "LD_PRELOAD"), " :")) {
    if (entry == path || ResolvedPath(entry) == path || Basename(entry) == Basename(path)) {
      return "unset LD_PRELOAD (e.g. `env -u LD_PRELOAD inferenceutils ...`): the runtime loads its own copy";
    }
  }
  for (const auto& dir : SplitList(EnvValue(env, "LD_LIBRARY_PATH"), ":")) {
    if (ResolvedPath(dir) == Dirname(path) || dir == Dirname(path)) {
      return absl::StrCat("remove ", dir, " from LD_LIBRARY_PATH (or unset it): the runtime's libraries are loaded by absolute path");
    }
  }
  return absl::StrCat("find what loads ", path,
                      " (run with LD_DEBUG=libs) and stop it, or name the runtime's copy in the spec's `libraries`");
}

// Two files with the same bytes (sizes first: most differ there).
bool SameBytes(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  if (stat(a.c_str(), &sa) != 0 || stat(b.c_str(), &sb) != 0 || sa.st_size != sb.st_size) return false;
  absl::StatusOr<std::string> x = ReadFile(a), y = ReadFile(b);
  return x.ok() && y.ok() && *x == *y;
}

}  // namespace

nlohmann::json Finding::ToJson() const {
  return {{"severity", severity}, {"code", code}, {"message", message}, {"fix", fix}, {"paths", paths}};
}

std::string LibraryOrigin(const std::string& path, const std::string& runtime_prefix,
                          const std::vector<std::string>& system_dirs) {
  if (Below(path, runtime_prefix)) return "runtime";
  // The launcher's Python home (its stdlib's extension modules and their libraries) is the
  // runtime's base, as /usr/lib/python3.11 is a venv's.
  const std::string home = CurrentHome().prefix;
  if (Below(path, home) || Below(path, ResolvedPath(home))) return "home";
  for (const auto& dir : system_dirs) {
    if (Below(path, dir)) return "system";
  }
  return "outside";
}

std::vector<Finding> CheckLibraries(const LibraryCheck& check) {
  std::vector<Finding> findings;
  // One SONAME, several files.
  std::map<std::string, std::vector<std::string>> by_soname;
  for (const auto& object : check.loaded) {
    if (object.soname.empty()) continue;
    auto& paths = by_soname[object.soname];
    if (std::find(paths.begin(), paths.end(), object.path) == paths.end()) paths.push_back(object.path);
  }
  for (const auto& [soname, paths] : by_soname) {
    if (paths.size() < 2) continue;
    std::string fix;
    for (const auto& path : paths) {
      if (LibraryOrigin(path, check.runtime_prefix, check.system_dirs) == "outside") fix = FixFor(path, check.env);
    }
    if (fix.empty()) {
      fix = absl::StrCat("keep one copy: name ", paths.front(),
                         " in the spec's `libraries` and install packages built against the same ", soname);
    }
    findings.push_back({"error", "duplicate",
                        absl::StrCat(soname, " is loaded twice: ", absl::StrJoin(paths, " and "),
                                     " (each caller may get a different copy)"),
                        fix, paths});
  }
  // Loaded from neither the runtime nor the system.
  for (const auto& object : check.loaded) {
    if (LibraryOrigin(object.path, check.runtime_prefix, check.system_dirs) != "outside") continue;
    std::string own;
    std::vector<std::string> paths = {object.path};
    for (const auto& file : check.shipped) {
      if (!object.soname.empty() && file.soname == object.soname && file.path != object.path) {
        own = absl::StrCat(" (the runtime's own ", object.soname, " is ", file.path, ")");
        paths.push_back(file.path);
        break;
      }
    }
    findings.push_back({"error", "outside",
                        absl::StrCat(object.path, " was loaded from outside the runtime and the system library paths", own),
                        FixFor(object.path, check.env), paths});
  }
  // Objects of the runtime that got another copy than their own.
  std::set<std::string> reported;
  for (auto& finding : CheckResolutions(check)) {
    reported.insert(finding.paths[1]);
    findings.push_back(std::move(finding));
  }
  // Copies the runtime ships that never get used: the SONAME already resolved elsewhere.
  std::set<std::string> loaded_paths;
  for (const auto& object : check.loaded) loaded_paths.insert(object.path);
  for (const auto& file : check.shipped) {
    if (file.soname.empty() || loaded_paths.count(file.path) || reported.count(file.path)) continue;
    auto it = by_soname.find(file.soname);
    if (it == by_soname.end()) continue;
    const std::string& used = it->second.front();
    // The same bytes twice is no conflict: llama-cpp-python 0.3.x wheels install their libraries
    // both in llama_cpp/lib/ and in site-packages/lib/; whichever loads, it is the same build.
    if (SameBytes(used, file.path)) continue;
    findings.push_back({"warning", "shadowed",
                        absl::StrCat(file.soname, " resolved to ", used, " (loaded first); the copy ", PackageOf(file.path),
                                     " ships at ", file.path, " is not used"),
                        LibraryOrigin(used, check.runtime_prefix, check.system_dirs) == "outside"
                            ? FixFor(used, check.env)
                            : absl::StrCat("if ", PackageOf(file.path), " needs its own ", file.soname,
                                           ", install versions of it and ", PackageOf(used), " built against the same library"),
                        {used, file.path}});
  }
  return findings;
}

std::vector<Finding> CheckResolutions(const LibraryCheck& check) {
  std::set<std::string> loaded_paths;
  std::map<std::string, std::string> used;  // SONAME → the first loaded file with it
  for (const auto& object : check.loaded) {
    loaded_paths.insert(object.path);
    if (!object.soname.empty()) used.emplace(object.soname, object.path);
  }
  // Grouped by the copy that was not used, in the order found.
  std::vector<std::string> order;
  std::map<std::string, std::vector<const OwnCopy*>> by_copy;
  for (const auto& own : check.own) {
    if (loaded_paths.count(own.path)) continue;
    auto it = used.find(own.soname);
    if (it == used.end() || it->second == own.path) continue;
    auto& consumers = by_copy[own.path];
    if (consumers.empty()) order.push_back(own.path);
    consumers.push_back(&own);
  }
  std::vector<Finding> findings;
  for (const auto& copy : order) {
    const std::vector<const OwnCopy*>& consumers = by_copy[copy];
    const std::string& soname = consumers.front()->soname;
    const std::string& got = used[soname];
    const std::string package = PackageOf(consumers.front()->consumer);
    std::string who = ShortName(consumers.front()->consumer);
    if (consumers.size() > 1) absl::StrAppend(&who, " (and ", consumers.size() - 1, " more)");
    std::string fix =
        LibraryOrigin(got, check.runtime_prefix, check.system_dirs) == "outside"
            ? FixFor(got, check.env)
            : absl::StrCat("if ", package, " fails or misbehaves, install versions of ", package, " and ", PackageOf(got),
                           " built against the same ", soname, " (see docs/libraries.md)");
    findings.push_back({"warning", "resolved_elsewhere",
                        absl::StrCat(who, " needs ", soname, " and ships its own, ", copy, ", but uses ", got,
                                     ": that copy was loaded first, and a process holds one library per SONAME"),
                        fix, {consumers.front()->consumer, copy, got}});
  }
  return findings;
}

const std::vector<std::string>& LoaderEnvironmentNames() {
  static const std::vector<std::string> names = {"LD_PRELOAD", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES"};
  return names;
}

std::vector<Finding> CheckEnvironment(const std::map<std::string, std::string>& env) {
  std::vector<Finding> findings;
  if (auto it = env.find("LD_PRELOAD"); it != env.end() && !SplitList(it->second, " :").empty()) {
    findings.push_back({"warning", "ld_preload",
                        absl::StrCat("LD_PRELOAD=", it->second,
                                     " loads these before the runtime's own libraries, into every process"),
                        "unset LD_PRELOAD (e.g. `env -u LD_PRELOAD inferenceutils ...`)",
                        SplitList(it->second, " :")});
  }
  if (auto it = env.find("LD_LIBRARY_PATH"); it != env.end() && !SplitList(it->second, ":").empty()) {
    findings.push_back({"warning", "ld_library_path",
                        absl::StrCat("LD_LIBRARY_PATH=", it->second,
                                     " is searched first for every library not loaded by absolute path"),
                        "unset LD_LIBRARY_PATH: the runtime's libraries are loaded by absolute path",
                        SplitList(it->second, ":")});
  }
  if (auto it = env.find("CUDA_VISIBLE_DEVICES"); it != env.end()) {
    std::string value = std::string(absl::StripAsciiWhitespace(it->second));
    std::string lower = absl::AsciiStrToLower(value);
    if (value.empty() || value == "-1" || lower == "none" || lower == "nodevfiles") {
      findings.push_back({"warning", "cuda_visible_devices",
                          absl::StrCat("CUDA_VISIBLE_DEVICES=", value, " hides every GPU from CUDA"),
                          "unset CUDA_VISIBLE_DEVICES (or list the GPUs to use)", {}});
    } else {
      findings.push_back({"info", "cuda_visible_devices",
                          absl::StrCat("CUDA_VISIBLE_DEVICES=", value, " limits CUDA to these GPUs"),
                          "unset CUDA_VISIBLE_DEVICES to use every GPU", {}});
    }
  }
  return findings;
}

std::vector<Finding> CheckBackend(const std::map<std::string, std::string>& preload_errors,
                                  const std::string& runtime_backend, std::optional<bool> gpu_offload) {
  std::vector<Finding> findings;
  for (const auto& [module, error] : preload_errors) {
    findings.push_back({"error", "preload", absl::StrCat("preloading '", module, "' failed: ", error),
                        absl::StrContains(error, "undefined symbol")
                            ? "another copy of one of its libraries was loaded first: see the findings above, or rebuild with `inferenceutils runtime rebuild`"
                            : "rebuild the runtime with `inferenceutils runtime rebuild`",
                        {}});
  }
  if (gpu_offload.has_value() && !*gpu_offload && !runtime_backend.empty() && runtime_backend != "cpu") {
    findings.push_back({"warning", "backend",
                        absl::StrCat("the runtime was built for ", runtime_backend,
                                     " but llama_cpp reports no GPU offload (llama_supports_gpu_offload() is False)"),
                        "check the driver with `inferenceutils info`, then `inferenceutils runtime rebuild`", {}});
  }
  return findings;
}

bool HasProblems(const std::vector<Finding>& findings) {
  return std::any_of(findings.begin(), findings.end(), [](const Finding& f) { return f.severity == "error"; });
}

std::vector<std::string> LdSoConfDirs(const std::string& text, const std::string& conf_dir) {
  std::vector<std::string> dirs;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    absl::string_view line = raw.substr(0, raw.find('#'));
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    if (absl::ConsumePrefix(&line, "include") && !line.empty() && absl::ascii_isspace(line[0])) {
      std::string pattern(absl::StripAsciiWhitespace(line));
      if (!pattern.empty() && pattern[0] != '/') pattern = conf_dir + "/" + pattern;
      glob_t matches;
      if (glob(pattern.c_str(), 0, nullptr, &matches) == 0) {
        for (size_t i = 0; i < matches.gl_pathc; ++i) {
          std::string path = matches.gl_pathv[i];
          if (absl::StatusOr<std::string> included = ReadFile(path); included.ok()) {
            for (auto& dir : LdSoConfDirs(*included, Dirname(path))) dirs.push_back(std::move(dir));
          }
        }
      }
      globfree(&matches);
      continue;
    }
    for (absl::string_view dir : absl::StrSplit(line, absl::ByAnyChar(" \t:,="), absl::SkipEmpty())) {
      if (!dir.empty() && dir[0] == '/') dirs.emplace_back(dir);
    }
  }
  return dirs;
}

std::vector<std::string> SystemLibraryDirs(const std::string& ld_so_conf) {
  std::vector<std::string> dirs = {"/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib"};
  if (absl::StatusOr<std::string> text = ReadFile(ld_so_conf); text.ok()) {
    for (auto& dir : LdSoConfDirs(*text, Dirname(ld_so_conf))) dirs.push_back(std::move(dir));
  }
  std::vector<std::string> out;
  for (const auto& dir : dirs) {
    for (const std::string& d : {dir, ResolvedPath(dir)}) {
      if (std::find(out.begin(), out.end(), d) == out.end()) out.push_back(d);
    }
  }
  return out;
}

std::string ResolvedPath(const std::string& path) {
  char buf[PATH_MAX];
  return realpath(path.c_str(), buf) ? std::string(buf) : path;
}

std::vector<LoadedObject> DescribeLoaded(const std::vector<std::string>& paths) {
  std::vector<LoadedObject> out;
  for (const auto& path : paths) {
    if (path.find('/') == std::string::npos) continue;  // linux-vdso.so.1 and the like
    LoadedObject object{ResolvedPath(path), ""};
    if (absl::StatusOr<ElfDynamic> elf = ReadElfDynamic(object.path); elf.ok()) object.soname = elf->soname;
    out.push_back(std::move(object));
  }
  return out;
}

std::vector<OwnCopy> OwnCopies(const std::vector<std::string>& loaded, const std::string& runtime_prefix) {
  std::vector<OwnCopy> out;
  for (const auto& consumer : loaded) {
    if (!Below(consumer, runtime_prefix)) continue;
    absl::StatusOr<ElfDynamic> elf = ReadElfDynamic(consumer);
    if (!elf.ok() || elf->runpath.empty() || elf->needed.empty()) continue;
    const std::string origin = Dirname(consumer);
    std::vector<std::string> dirs;
    for (const auto& dir : elf->runpath) {
      std::string expanded = absl::StrReplaceAll(dir, {{"${ORIGIN}", origin}, {"$ORIGIN", origin}});
      if (expanded.find('$') == std::string::npos) dirs.push_back(std::move(expanded));  // $LIB, $PLATFORM: skipped
    }
    for (const auto& name : elf->needed) {
      for (const auto& dir : dirs) {
        std::string candidate = absl::StrCat(dir, "/", name);
        if (access(candidate.c_str(), F_OK) == 0) {
          out.push_back({consumer, name, ResolvedPath(candidate)});
          break;
        }
      }
    }
  }
  return out;
}

std::vector<LibraryFile> ShippedLibraries(const std::string& runtime_prefix) {
  std::string site = RuntimeSitePackages(runtime_prefix);
  if (site.empty()) return {};
  std::vector<LibraryFile> files = SharedObjectsBelow(site);
  for (auto& file : files) file.path = ResolvedPath(file.path);
  return files;
}

std::map<std::string, std::string> LoaderEnvironment() {
  std::map<std::string, std::string> env;
  for (const auto& name : LoaderEnvironmentNames()) {
    if (const char* value = std::getenv(name.c_str())) env[name] = value;
  }
  return env;
}

}  // namespace iu
