// Running a child process on the cold path (pip, the verification interpreter). The warm path
// never spawns one.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace iu {

struct ProcessSpec {
  std::vector<std::string> argv;
  std::map<std::string, std::string> set_env;   // added or replaced
  std::vector<std::string> unset_prefixes;      // variables starting with these are removed
  std::string cwd;                              // empty: inherit
  int log_fd = -1;                              // all output is also appended here
  std::function<void(absl::string_view line)> on_line;  // each line of stdout+stderr
};

struct ProcessResult {
  int exit_code = -1;   // exit status, or 128+signal when killed
  std::string output;   // stdout+stderr (kept whole; callers take the tail)
  bool interrupted = false;  // Ctrl-C (SIGINT) reached the launcher: the child's group was stopped
};

// Spawns argv[0] (looked up on PATH when it has no '/'), stdin from /dev/null, SIGPIPE default,
// in a process group of its own. A SIGINT to the launcher while it runs stops that group (SIGINT,
// then SIGKILL after 3 s) and sets `interrupted`.
absl::StatusOr<ProcessResult> RunProcess(const ProcessSpec& spec);

// The last `lines` lines of `text`.
std::string TailLines(absl::string_view text, int lines);

}  // namespace iu
