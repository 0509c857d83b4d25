// The shared objects this process has loaded, as the dynamic loader itself lists them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace iu {

struct LoadedLibrary {
  std::string path;    // as the loader knows it (dl_phdr_info::dlpi_name); the executable is ""
  uintptr_t base = 0;  // load address
};

// dl_iterate_phdr, in load order; the vdso and the main program (empty names) are skipped.
std::vector<LoadedLibrary> LoadedLibraries();

}  // namespace iu
