// kernel install|list|remove: Jupyter kernels that start ipykernel through the launcher, so a
// notebook runs inside the runtime matched to this machine, with its preload (docs/python.md).
//
//   <data dir>/kernels/<name>/kernel.json
//   {"argv": [<launcher>, <launcher options>..., "--with", "ipykernel",
//             "run", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
//    "display_name": ..., "language": "python", "env": {INFERENCEUTILS_* of the installing shell},
//    "metadata": {"inferenceutils": {...}}}
//
// Data dirs as Jupyter names them: --user → $JUPYTER_DATA_DIR, else $XDG_DATA_HOME/jupyter, else
// ~/.local/share/jupyter; --prefix P → P/share/jupyter; default (system-wide) →
// /usr/local/share/jupyter.
#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "commands.h"
#include "inferenceutils/env_values.h"
#include "inferenceutils/json_text.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/spec.h"
#include "inferenceutils/store.h"
#include "nlohmann/json.hpp"

namespace iu {
namespace {

constexpr char kUsage[] =
    "usage: inferenceutils [OPTIONS] kernel install [--name NAME] [--display-name TEXT] [--user | --prefix DIR]\n"
    "       inferenceutils kernel list [--json]\n"
    "       inferenceutils kernel remove NAME [--user | --prefix DIR]";

std::string UserDataDir() {
  std::string dir = Env("JUPYTER_DATA_DIR");
  if (!dir.empty()) return dir;
  std::string xdg = Env("XDG_DATA_HOME");
  if (!xdg.empty() && xdg[0] == '/') return xdg + "/jupyter";
  std::string home = Env("HOME");
  return (home.empty() ? std::string("/tmp") : home) + "/.local/share/jupyter";
}

constexpr char kSystemDataDir[] = "/usr/local/share/jupyter";

std::string Absolute(const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  char buf[4096];
  if (!getcwd(buf, sizeof(buf))) return path;
  return absl::StrCat(buf, "/", path);
}

// Every place Jupyter looks for kernels, user first (as jupyter_core.paths.jupyter_path()).
std::vector<std::string> SearchDataDirs() {
  std::vector<std::string> dirs = {UserDataDir()};
  for (absl::string_view entry : absl::StrSplit(Env("JUPYTER_PATH"), ':', absl::SkipEmpty())) {
    dirs.emplace_back(entry);
  }
  dirs.push_back(kSystemDataDir);
  dirs.push_back("/usr/share/jupyter");
  std::vector<std::string> unique;
  std::set<std::string> seen;
  for (auto& dir : dirs) {
    if (seen.insert(dir).second) unique.push_back(dir);
  }
  return unique;
}

bool ValidName(const std::string& name) {
  if (name.empty() || name == "." || name == "..") return false;
  for (char c : name) {
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  }
  return true;
}

struct Target {
  std::string data_dir;
  bool explicit_dir = false;
};

// --user / --prefix DIR from args[i]; true when it consumed the option.
absl::StatusOr<bool> TakeLocation(const std::vector<std::string>& args, size_t& i, Target& target) {
  if (args[i] == "--user") {
    target.data_dir = UserDataDir();
    target.explicit_dir = true;
    return true;
  }
  if (args[i] == "--prefix" || args[i].rfind("--prefix=", 0) == 0) {
    std::string value;
    if (args[i] == "--prefix") {
      if (i + 1 >= args.size()) return UsageError("kernel: --prefix needs a directory");
      value = args[++i];
    } else {
      value = args[i].substr(9);
    }
    target.data_dir = Absolute(value) + "/share/jupyter";
    target.explicit_dir = true;
    return true;
  }
  return false;
}

// The launcher options that select the runtime, as a command line.
std::vector<std::string> RuntimeOptions(const LauncherOptions& o) {
  std::vector<std::string> argv;
  if (!o.home.empty()) argv.insert(argv.end(), {"--home", Absolute(o.home)});
  if (!o.spec_file.empty()) argv.insert(argv.end(), {"--spec", Absolute(o.spec_file)});
  bool has_ipykernel = false;
  for (const std::string& req : o.with) {
    argv.insert(argv.end(), {"--with", req});
    if (RequirementName(req) == "ipykernel") has_ipykernel = true;
  }
  if (!has_ipykernel) argv.insert(argv.end(), {"--with", "ipykernel"});
  if (!o.index_url.empty()) argv.insert(argv.end(), {"--index-url", o.index_url});
  for (const std::string& url : o.extra_index_urls) argv.insert(argv.end(), {"--extra-index-url", url});
  for (const std::string& link : o.find_links) {
    argv.insert(argv.end(), {"--find-links", link.find("://") == std::string::npos ? Absolute(link) : link});
  }
  if (o.offline) argv.push_back("--offline");
  if (!o.backend.empty()) argv.insert(argv.end(), {"--backend", o.backend});
  for (const std::string& bundle : o.bundles) argv.insert(argv.end(), {"--bundle", bundle});
  if (o.no_build) argv.push_back("--no-build");
  return argv;
}

// The INFERENCEUTILS_* settings of the installing shell that select the runtime: a kernel runs
// with Jupyter's environment, so they are kept in the kernel spec.
nlohmann::json RuntimeEnv() {
  nlohmann::json env = nlohmann::json::object();
  for (const char* name : {"INFERENCEUTILS_HOME", "INFERENCEUTILS_SPEC", "INFERENCEUTILS_WITH",
                           "INFERENCEUTILS_INDEX_URL", "INFERENCEUTILS_EXTRA_INDEX_URL", "INFERENCEUTILS_FIND_LINKS",
                           "INFERENCEUTILS_OFFLINE", "INFERENCEUTILS_BACKEND", "INFERENCEUTILS_SYSROOT",
                           "INFERENCEUTILS_CUDA_LIBRARY", "INFERENCEUTILS_NVML_LIBRARY"}) {
    std::string value = Env(name);
    if (value.empty()) continue;
    if (std::string(name) == "INFERENCEUTILS_HOME" || std::string(name) == "INFERENCEUTILS_SPEC") value = Absolute(value);
    env[name] = value;
  }
  return env;
}

bool IsOurs(const std::string& kernel_json) {
  absl::StatusOr<std::string> text = ReadFile(kernel_json);
  if (!text.ok()) return false;
  nlohmann::json doc = nlohmann::json::parse(*text, nullptr, false);
  return doc.is_object() && doc.contains("metadata") && doc["metadata"].is_object() &&
         doc["metadata"].contains("inferenceutils");
}

absl::StatusOr<int> Install(const Invocation& invocation, const std::vector<std::string>& args) {
  std::string name = "inferenceutils", display_name;
  Target target{kSystemDataDir, false};
  for (size_t i = 0; i < args.size(); ++i) {
    absl::StatusOr<bool> location = TakeLocation(args, i, target);
    if (!location.ok()) return location.status();
    if (*location) continue;
    if ((args[i] == "--name" || args[i] == "--display-name") && i + 1 < args.size()) {
      (args[i] == "--name" ? name : display_name) = args[i + 1];
      ++i;
    } else if (args[i].rfind("--name=", 0) == 0) {
      name = args[i].substr(7);
    } else if (args[i].rfind("--display-name=", 0) == 0) {
      display_name = args[i].substr(15);
    } else {
      return UsageError(absl::StrCat("kernel install: unknown argument '", args[i], "'\n", kUsage));
    }
  }
  if (!ValidName(name)) {
    return UsageError(absl::StrCat("kernel install: invalid kernel name '", name,
                                   "' (use letters, digits, '-', '_' and '.')"));
  }
  if (display_name.empty()) {
    display_name = name == "inferenceutils" ? "Python 3 (inferenceutils)" : absl::StrCat("Python 3 (inferenceutils: ", name, ")");
  }
  std::string launcher = SelfExecutable();
  nlohmann::json argv = nlohmann::json::array({launcher});
  std::vector<std::string> options = RuntimeOptions(invocation.options);
  for (const std::string& option : options) argv.push_back(option);
  for (const char* arg : {"run", "-m", "ipykernel_launcher", "-f", "{connection_file}"}) argv.push_back(arg);
  nlohmann::json spec = {
      {"argv", argv},
      {"display_name", display_name},
      {"language", "python"},
      {"interrupt_mode", "signal"},
      {"env", RuntimeEnv()},
      {"metadata", {{"inferenceutils", {{"launcher", launcher}, {"launcher_version", IU_VERSION},
                                         {"options", options}}}}},
  };
  std::string dir = absl::StrCat(target.data_dir, "/kernels/", name);
  std::string hint = target.explicit_dir ? "choose another location"
                                         : "install for this user only with `inferenceutils kernel install --user`";
  if (auto status = MakeDirs(dir, hint); !status.ok()) return status;
  if (auto status = WriteFileAtomic(dir + "/kernel.json", DumpJson(spec, 1) + "\n"); !status.ok()) {
    return WithExit(absl::PermissionDeniedError(absl::StrCat(status.message(), "; ", hint)), kExitStore);
  }
  std::printf("installed kernel '%s' (%s) in %s\n", name.c_str(), display_name.c_str(), dir.c_str());
  return 0;
}

struct Found {
  std::string name, dir, display_name;
  nlohmann::json argv;
};

std::vector<Found> FindKernels() {
  std::vector<Found> found;
  std::set<std::string> names;
  for (const std::string& data_dir : SearchDataDirs()) {
    std::string kernels = data_dir + "/kernels";
    DIR* d = opendir(kernels.c_str());
    if (!d) continue;
    std::vector<std::string> entries;
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') entries.emplace_back(e->d_name);
    }
    closedir(d);
    std::sort(entries.begin(), entries.end());
    for (const std::string& entry : entries) {
      std::string json_path = kernels + "/" + entry + "/kernel.json";
      if (!IsOurs(json_path) || !names.insert(entry).second) continue;  // the first one Jupyter sees wins
      nlohmann::json doc = nlohmann::json::parse(*ReadFile(json_path), nullptr, false);
      found.push_back({entry, kernels + "/" + entry, doc.value("display_name", ""), doc.value("argv", nlohmann::json::array())});
    }
  }
  return found;
}

absl::StatusOr<int> List(const std::vector<std::string>& args) {
  bool json = false;
  for (const std::string& arg : args) {
    if (arg == "--json") json = true;
    else return UsageError(absl::StrCat("kernel list: unknown argument '", arg, "'\n", kUsage));
  }
  std::vector<Found> kernels = FindKernels();
  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (const Found& k : kernels) {
      out.push_back({{"name", k.name}, {"path", k.dir}, {"display_name", k.display_name}, {"argv", k.argv}});
    }
    std::printf("%s\n", DumpJson(out, 2).c_str());
    return 0;
  }
  if (kernels.empty()) std::printf("no inferenceutils kernels installed (see `inferenceutils kernel install`)\n");
  for (const Found& k : kernels) std::printf("%-20s %s  (%s)\n", k.name.c_str(), k.dir.c_str(), k.display_name.c_str());
  return 0;
}

absl::StatusOr<int> Remove(const std::vector<std::string>& args) {
  std::string name;
  Target target;
  for (size_t i = 0; i < args.size(); ++i) {
    absl::StatusOr<bool> location = TakeLocation(args, i, target);
    if (!location.ok()) return location.status();
    if (*location) continue;
    if (!args[i].empty() && args[i][0] == '-') {
      return UsageError(absl::StrCat("kernel remove: unknown argument '", args[i], "'\n", kUsage));
    }
    if (!name.empty()) return UsageError(absl::StrCat("kernel remove takes one NAME\n", kUsage));
    name = args[i];
  }
  if (name.empty() || !ValidName(name)) return UsageError(absl::StrCat("kernel remove needs a kernel NAME\n", kUsage));
  std::vector<std::string> dirs = target.explicit_dir ? std::vector<std::string>{target.data_dir} : SearchDataDirs();
  for (const std::string& data_dir : dirs) {
    std::string dir = absl::StrCat(data_dir, "/kernels/", name);
    if (!IsRegularFile(dir + "/kernel.json")) continue;
    if (!IsOurs(dir + "/kernel.json")) {
      return WithExit(absl::FailedPreconditionError(absl::StrCat(
                          "kernel '", name, "' in ", dir, " was not installed by inferenceutils; remove it with "
                          "`jupyter kernelspec remove ", name, "`")),
                      kExitConfig);
    }
    if (!RemoveTree(dir)) {
      return WithExit(absl::PermissionDeniedError(absl::StrCat("cannot remove ", dir,
                                                               ": permission denied? (try as its owner)")),
                      kExitStore);
    }
    std::printf("removed kernel '%s' from %s\n", name.c_str(), dir.c_str());
    return 0;
  }
  return WithExit(absl::NotFoundError(absl::StrCat("no inferenceutils kernel named '", name,
                                                   "' (see `inferenceutils kernel list`)")),
                  kExitConfig);
}

}  // namespace

absl::StatusOr<int> CmdKernel(const Invocation& invocation) {
  const std::vector<std::string>& args = invocation.args;
  if (args.empty()) return UsageError(absl::StrCat("kernel needs a subcommand: install, list, remove\n", kUsage));
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "install") return Install(invocation, rest);
  if (args[0] == "list") return List(rest);
  if (args[0] == "remove") return Remove(rest);
  return UsageError(absl::StrCat("unknown kernel subcommand '", args[0], "' (install, list, remove)\n", kUsage));
}

}  // namespace iu
