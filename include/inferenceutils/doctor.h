// `doctor` and `run --check-conflicts`: what the process loaded, from where, and what is wrong
// with it. Gathering (realpath, ELF names, /etc/ld.so.conf) is separate from the checks, which
// are pure functions of their inputs (tests/unit/test_doctor.cpp). Documented in docs/libraries.md.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "inferenceutils/runtime_libraries.h"
#include "nlohmann/json.hpp"

namespace iu {

// One finding: severity "error" (a problem: doctor exits 1), "warning" or "info"; a stable code;
// one line saying what is wrong, naming the paths involved; one line saying what to do.
struct Finding {
  std::string severity;
  std::string code;  // duplicate, outside, resolved_elsewhere, shadowed, ld_preload, ld_library_path,
                     // cuda_visible_devices, preload, backend
  std::string message;
  std::string fix;
  std::vector<std::string> paths;

  nlohmann::json ToJson() const;
};

// A shared object the process has loaded.
struct LoadedObject {
  std::string path;    // resolved (realpath) when the file exists
  std::string soname;  // from its dynamic section; "" for most Python extension modules
};

// Where a loaded path lives: "runtime" (below the runtime's prefix), "system" (below a system
// library directory) or "outside".
std::string LibraryOrigin(const std::string& path, const std::string& runtime_prefix,
                          const std::vector<std::string>& system_dirs);

// A library that a loaded object of the runtime finds through its own run path (DT_RUNPATH or
// DT_RPATH, $ORIGIN expanded): the copy it was built and shipped with.
struct OwnCopy {
  std::string consumer;  // the loaded object (resolved path)
  std::string soname;    // one of its DT_NEEDED names
  std::string path;      // the file its run path finds for that name (resolved)
};

struct LibraryCheck {
  std::string runtime_prefix;             // resolved
  std::vector<std::string> system_dirs;   // SystemLibraryDirs()
  std::vector<LoadedObject> loaded;       // in load order
  std::vector<LibraryFile> shipped;       // the runtime's own shared objects (resolved paths)
  std::map<std::string, std::string> env; // LD_PRELOAD, LD_LIBRARY_PATH, ... as set (names the fixes)
  std::vector<OwnCopy> own;               // OwnCopies() of `loaded`
};

// duplicate (error): one SONAME loaded from two paths; outside (error): loaded from neither the
// runtime nor a system directory; then CheckResolutions; shadowed (warning): the runtime ships a
// library whose SONAME already resolved to another file, so that copy is never used (a copy
// already named by a resolved_elsewhere finding is not repeated).
std::vector<Finding> CheckLibraries(const LibraryCheck& check);

// resolved_elsewhere (warning): a loaded object of the runtime was built to use its own copy of a
// library (check.own) but the process holds another file of that SONAME, loaded first, and that
// is what it got. One finding per own copy, naming the object, its copy and the copy it got.
// Needs only check.loaded, check.own, check.runtime_prefix, check.system_dirs and check.env.
std::vector<Finding> CheckResolutions(const LibraryCheck& check);

// The variables that change library loading, as found: LD_PRELOAD and LD_LIBRARY_PATH (warnings:
// what they load is judged by CheckLibraries: a second copy or one from outside is the error),
// CUDA_VISIBLE_DEVICES (warning when it hides every GPU, else info).
std::vector<Finding> CheckEnvironment(const std::map<std::string, std::string>& env);
// The names CheckEnvironment looks at.
const std::vector<std::string>& LoaderEnvironmentNames();

// A preload module that failed to import (error); a GPU runtime whose llama_cpp says it cannot
// offload to the GPU (warning). `gpu_offload` is unset when the backend was not asked.
std::vector<Finding> CheckBackend(const std::map<std::string, std::string>& preload_errors,
                                  const std::string& runtime_backend, std::optional<bool> gpu_offload);

bool HasProblems(const std::vector<Finding>& findings);

// --- gathering (reads the file system) ---------------------------------------------------------

// The default directories of the dynamic loader and those /etc/ld.so.conf names (includes followed).
std::vector<std::string> SystemLibraryDirs(const std::string& ld_so_conf = "/etc/ld.so.conf");
// Parses one ld.so.conf text; `include` patterns are globbed relative to `conf_dir`.
std::vector<std::string> LdSoConfDirs(const std::string& text, const std::string& conf_dir);
// Loaded paths (as the loader lists them) → resolved paths with their SONAMEs; names without a
// '/' (the vdso) are dropped.
std::vector<LoadedObject> DescribeLoaded(const std::vector<std::string>& paths);
// The OwnCopy of each DT_NEEDED name of each object of `loaded` (resolved paths) below
// `runtime_prefix` that its run path finds. Reads only those objects' dynamic sections.
std::vector<OwnCopy> OwnCopies(const std::vector<std::string>& loaded, const std::string& runtime_prefix);
// The runtime's own shared objects, with resolved paths.
std::vector<LibraryFile> ShippedLibraries(const std::string& runtime_prefix);
// realpath(), or `path` itself when it cannot be resolved.
std::string ResolvedPath(const std::string& path);
// The set LoaderEnvironmentNames() of the current environment.
std::map<std::string, std::string> LoaderEnvironment();

}  // namespace iu
