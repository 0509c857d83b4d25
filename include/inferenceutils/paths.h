// Where things are: the launcher's own install (relocatable: everything relative to the
// executable), the user's XDG directories and the store.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace iu {

// Absolute path of the running launcher binary (/proc/self/exe), symlinks resolved.
std::string SelfExecutable();
// <prefix>/share/inferenceutils beside the executable (<prefix>/bin/inferenceutils), or the
// directory given to SetAssetsDir.
std::string AssetsDir();
// Makes AssetsDir() return `dir` for the rest of the process: an app (docs/apps.md) carries its
// own assets, extracted into the store, since nothing is installed beside its executable.
void SetAssetsDir(const std::string& dir);

// $XDG_STATE_HOME/inferenceutils or ~/.local/state/inferenceutils (REPL history lives here).
std::string StateDir();

// The store root, by precedence: `--home` (explicit), $INFERENCEUTILS_HOME, a portable install
// (<exe dir>/store when a file `inferenceutils.portable` or a folder `store/` is beside the
// executable), $XDG_CACHE_HOME/inferenceutils, ~/.cache/inferenceutils. Not created here.
// The folder of `path` ("." without a slash, "/" for a top-level entry).
std::string Dirname(const std::string& path);
std::string StoreRoot(const std::string& explicit_home);
// `path` made absolute against the current directory and normalised as os.path.abspath does
// (no symlink resolved; "" stays "").
std::string MakeAbsolutePath(const std::string& path);

// Creates `dir` and its parents (mode 0755). On failure the error names the path and `hint`.
absl::Status MakeDirs(const std::string& dir, const std::string& hint);

// Small file helpers used across the library.
absl::StatusOr<std::string> ReadFile(const std::string& path);
// Writes `path` atomically: a temporary file beside it, fsync, rename.
absl::Status WriteFileAtomic(const std::string& path, const std::string& content);
bool PathExists(const std::string& path);
bool IsDirectory(const std::string& path);
bool IsRegularFile(const std::string& path);

}  // namespace iu
