// One error type through the library: absl::Status, carrying what failed, the path or name
// involved and the fix to try. Each error may carry the launcher's documented exit code; the
// launcher turns a Status into one line on stderr and that code. Library code never prints or exits.
#pragma once

#include "absl/strings/string_view.h"

#include "absl/status/status.h"

namespace iu {

// Documented exit codes of the launcher's own errors (README "Exit codes"). Python's own exit
// statuses (0, 1, 2 for a script it cannot open, 130 for Ctrl-C, n for sys.exit(n)) pass through.
enum ExitCode : int {
  kExitOk = 0,
  kExitUsage = 2,             // bad command line: unknown command or option, missing argument
  kExitConfig = 65,           // a bad spec, PEP 723 block, manifest or option value
  kExitUnavailable = 69,      // the machine cannot do what was asked (backend, requires-python)
  kExitInternal = 70,         // a bug: please report it
  kExitInstall = 72,          // the launcher's installation is incomplete (its Python home is missing)
  kExitStore = 73,            // the store cannot be created or written
  kExitProvision = 74,        // building or unpacking the runtime failed
  kExitLockTimeout = 75,      // waited too long for another launcher's build
  kExitPreload = 76,          // the runtime's preload module failed to import
  kExitBundle = 77,           // a bundle was refused (bad hash, unsafe member, wrong Python)
  kExitInterrupted = 130,     // Ctrl-C (SIGINT) while the launcher itself worked (a build); as python
};

// Attaches an exit code to a status (kept through copies).
absl::Status WithExit(absl::Status status, ExitCode code);
// The exit code of a status: the attached one, else one derived from its absl code.
int ExitCodeOf(const absl::Status& status);

// Shorthands for the common cases; message = what failed + the fix.
absl::Status UsageError(absl::string_view message);
absl::Status ConfigError(absl::string_view message);
absl::Status StoreError(absl::string_view message);

}  // namespace iu
