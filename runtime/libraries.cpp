#include "inferenceutils/libraries.h"

#include <link.h>

namespace iu {

std::vector<LoadedLibrary> LoadedLibraries() {
  std::vector<LoadedLibrary> libraries;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        if (info->dlpi_name && info->dlpi_name[0]) {
          static_cast<std::vector<LoadedLibrary>*>(data)->push_back(
              {info->dlpi_name, static_cast<uintptr_t>(info->dlpi_addr)});
        }
        return 0;
      },
      &libraries);
  return libraries;
}

}  // namespace iu
