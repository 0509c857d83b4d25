// Pieces shared by the app files (payload, install). Not a public interface.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace iu::app_internal {

// "app PATH: WHY; the file is damaged or incomplete: ..." (kExitBundle).
absl::Status Damaged(const std::string& path, absl::string_view why);

// Reads exactly `size` bytes at `offset` of `fd`; false when the file is shorter or unreadable.
bool ReadAt(int fd, uint64_t offset, size_t size, std::string* out);

}  // namespace iu::app_internal
