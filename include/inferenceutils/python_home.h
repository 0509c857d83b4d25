// The Python home the launcher carries (issue "Portable"): the standard library, its extension
// modules and their libraries, the C headers and pip's wheels, made by scripts/make-python-home
// from Debian's packages. Every runtime's pyvenv.cfg points at it, its identity is part of every
// runtime key and bundle requirement, and nothing of the machine's own Python is used.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace iu {

struct PythonHome {
  std::string prefix;      // sys.base_prefix of every runtime: <launcher>/../lib/inferenceutils/python3.11
  std::string executable;  // <prefix>/bin/python3.11: sys._base_executable, the launcher as plain python
  std::string version;     // "3.11.2"
  std::string id;          // "3.11.2-<16 hex of the digest>"; "system-3.11.2" without a home
  std::string source;      // "bundled" (beside the launcher), "store" (extracted from an app), "system"
  std::string wheels_dir;  // pip's and setuptools' wheels
  std::string launcher;    // the launcher runtimes' bin/python links point at
};

// This launcher's home, worked out once from where the executable is (a few string operations;
// no file is read). A build without a home (-DIU_PYTHON_HOME=OFF) uses the system python3.11.
const PythonHome& CurrentHome();
// Apps: the home they extracted into the store (<store>/homes/<id>, an install-tree layout).
void UseHomeAt(const std::string& install_prefix, const std::string& source);
// A copy of the launcher in a venv's bin/ (`python -m venv --copies`, venv.create() without
// symlinks) has no home beside it: take the one its pyvenv.cfg `home` names, when that is one.
bool AdoptHomeOfVenv(const std::string& venv);
// Where a launcher at `launcher` finds its home: <dir>/../lib/inferenceutils/python3.11.
std::string HomeBeside(const std::string& launcher);
// The identity compiled into this launcher: "3.11.2-<16 hex>", "" in a build without a home.
std::string CompiledHomeId();
std::string CompiledHomeDigest();
// Ok when the home's standard library is where it should be; else an error naming the path and
// the fix (exit 72): a launcher must never fall back to another Python silently.
absl::Status CheckHome(const PythonHome& home);

}  // namespace iu
