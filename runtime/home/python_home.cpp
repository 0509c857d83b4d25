#include "inferenceutils/python_home.h"

#include <sys/stat.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/python.h"
#if IU_WITH_HOME
#include "iu_home_identity.h"
#endif

namespace iu {
namespace {

std::string PythonDir() {  // "python3.11"
  std::string version = EmbeddedPythonVersion();
  return "python" + version.substr(0, version.rfind('.'));
}

PythonHome Make(const std::string& install_prefix, const std::string& launcher, const std::string& source) {
  PythonHome home;
  home.version = EmbeddedPythonVersion();
  home.launcher = launcher;
#if IU_WITH_HOME
  home.prefix = absl::StrCat(install_prefix, "/lib/inferenceutils/", PythonDir());
  home.executable = absl::StrCat(home.prefix, "/bin/", PythonDir());
  home.id = IU_HOME_ID;
  home.source = source;
  home.wheels_dir = home.prefix + "/share/python-wheels";
#else
  (void)install_prefix;
  (void)source;
  home.prefix = BasePythonPrefix();
  home.executable = BasePythonExecutable();
  home.id = absl::StrCat("system-", home.version);
  home.source = "system";
  home.wheels_dir = home.prefix + "/share/python-wheels";
#endif
  return home;
}

PythonHome& Current() {
  static PythonHome home = [] {
    std::string self = SelfExecutable();
    return Make(Dirname(Dirname(self)), self, "bundled");
  }();
  return home;
}

}  // namespace

const PythonHome& CurrentHome() { return Current(); }

void UseHomeAt(const std::string& install_prefix, const std::string& source) {
  Current() = Make(install_prefix, install_prefix + "/bin/inferenceutils", source);
}

bool AdoptHomeOfVenv(const std::string& venv) {
  if (CheckHome(Current()).ok()) return false;
  absl::StatusOr<std::string> cfg = ReadFile(venv + "/pyvenv.cfg");
  if (!cfg.ok()) return false;
  for (absl::string_view line : absl::StrSplit(*cfg, '\n')) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
    if (absl::StripAsciiWhitespace(kv.first) != "home") continue;
    std::string bin(absl::StripAsciiWhitespace(kv.second));
    PythonHome candidate = Current();
    candidate.prefix = Dirname(bin);
    candidate.executable = absl::StrCat(bin, "/", PythonDir());
    candidate.wheels_dir = candidate.prefix + "/share/python-wheels";
    if (!CheckHome(candidate).ok()) return false;
    Current() = candidate;
    return true;
  }
  return false;
}

std::string HomeBeside(const std::string& launcher) {
  return absl::StrCat(Dirname(Dirname(launcher)), "/lib/inferenceutils/", PythonDir());
}

std::string CompiledHomeId() {
#if IU_WITH_HOME
  return IU_HOME_ID;
#else
  return "";
#endif
}

std::string CompiledHomeDigest() {
#if IU_WITH_HOME
  return IU_HOME_DIGEST;
#else
  return "";
#endif
}

absl::Status CheckHome(const PythonHome& home) {
  std::string landmark = absl::StrCat(home.prefix, "/lib/", PythonDir(), "/os.py");
  struct stat st;
  if (stat(landmark.c_str(), &st) == 0) return absl::OkStatus();
  if (home.source == "system") {
    return WithExit(absl::FailedPreconditionError(absl::StrCat(
                        "this development build has no Python home of its own and the system's python3.11 "
                        "is missing (", landmark, "); install python3.11, or build with -DIU_PYTHON_HOME=ON")),
                    kExitInstall);
  }
  return WithExit(absl::FailedPreconditionError(absl::StrCat(
                      "the launcher's Python home is missing or incomplete (", landmark,
                      " not found); reinstall inferenceutils (the folder lib/inferenceutils/ belongs beside bin/)")),
                  kExitInstall);
}

}  // namespace iu
