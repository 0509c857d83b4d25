// The shared libraries a runtime loads before its preload (Manifest::libraries), decided once at
// build time: the spec's `libraries` and the NVIDIA libraries the runtime's own `nvidia-*` wheels
// ship (<site-packages>/nvidia/*/lib) that something else in the runtime needs by SONAME, each
// by absolute path, dependencies first. Loading them by path, RTLD_GLOBAL, before any module
// makes every later DT_NEEDED of the same SONAME resolve to that one copy (docs/libraries.md).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace iu {

// What the dynamic section of an ELF shared object says about names.
struct ElfDynamic {
  std::string soname;               // DT_SONAME ("" if none)
  std::vector<std::string> needed;  // DT_NEEDED, in order
  std::vector<std::string> runpath; // DT_RUNPATH, else DT_RPATH, split at ':' ($ORIGIN unexpanded)
};

// Reads DT_SONAME, DT_NEEDED and the run path of a 64-bit ELF file of this machine's byte order. A file that
// is not such an ELF object (or has no dynamic section) is an error.
absl::StatusOr<ElfDynamic> ReadElfDynamic(const std::string& path);

struct LibraryFile {
  std::string path;
  std::string soname;
  std::vector<std::string> needed;
};

// `libraries` reordered so that each comes after the members of the set it needs (matched by
// SONAME, else by file name); otherwise the given order is kept. Cycles are broken by the order.
std::vector<LibraryFile> DependencyOrder(const std::vector<LibraryFile>& libraries);

// The ELF shared objects below `directory` (files whose name contains ".so"), sorted by path;
// symlinks are not followed.
std::vector<LibraryFile> SharedObjectsBelow(const std::string& directory);

// <prefix>/lib/python3.X/site-packages ("" if there is none).
std::string RuntimeSitePackages(const std::string& prefix);

// The libraries to record in the manifest for the runtime at `prefix`: the spec's `libraries`
// (absolute paths, paths relative to `prefix`, or bare file names found in the runtime's
// site-packages; glob patterns allowed in paths), then <site-packages>/nvidia/*/lib/* files that
// another shared object of the runtime needs (and what those need in turn), as absolute paths in
// dependency order. A spec library that matches nothing is an error (kExitConfig) naming it; a
// bare name not found in the runtime is kept as it is, for the dynamic loader's own search.
absl::StatusOr<std::vector<std::string>> RuntimeLibraries(const std::string& prefix,
                                                          const std::vector<std::string>& spec_libraries);

// Python code that loads `libraries` in order (ctypes, RTLD_NOW | RTLD_GLOBAL), for a child
// interpreter that must see what the launcher would have loaded (the build's verify step).
// "" when there are none.
std::string LoadLibrariesPython(const std::vector<std::string>& libraries);

}  // namespace iu
