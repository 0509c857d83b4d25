#include <cstdio>
#include <string>

#include "commands.h"
#include "inferenceutils/errors.h"

namespace iu {

int ReportError(const absl::Status& status) {
  std::string message(status.message());
  for (char& c : message) {
    if (c == '\n') c = ' ';  // one line, always
  }
  std::fprintf(stderr, "inferenceutils: error: %s\n", message.c_str());
  return ExitCodeOf(status);
}

}  // namespace iu
