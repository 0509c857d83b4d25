#include <cstdio>
#include <string>

#include "absl/strings/str_split.h"
#include "commands.h"
#include "inferenceutils/errors.h"

namespace iu {

int ReportError(const absl::Status& status) {
  // The first line is the error; further lines (a build's flags and log tail) are indented detail.
  bool first = true;
  for (absl::string_view line : absl::StrSplit(status.message(), '\n')) {
    if (first) {
      std::fprintf(stderr, "inferenceutils: error: %.*s\n", static_cast<int>(line.size()), line.data());
      first = false;
    } else {
      std::fprintf(stderr, "  | %.*s\n", static_cast<int>(line.size()), line.data());
    }
  }
  return ExitCodeOf(status);
}

}  // namespace iu
