// KEY arguments of the runtime commands (info, remove, pack, push, wait): a key or the first hex
// digits of one, and "the selected runtime" when none is given.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cli.h"
#include "inferenceutils/store.h"

namespace iu {

// The one of `keys` that `given` names: itself, or the only key it is a prefix of. Anything but
// hex digits (an empty prefix would match every key; a path, '/', '..') names none. Errors are
// kExitConfig and end with `hint`.
absl::StatusOr<std::string> MatchKey(const std::vector<std::string>& keys, const std::string& given,
                                     const std::string& not_found, const std::string& hint);

// A published runtime of `store` by key or prefix (runtime info, remove).
absl::StatusOr<std::string> ResolveKey(const Store& store, const std::string& given);

// The runtime a command acts on: `given` (key or prefix), else the one this machine and spec
// select; it must be in the store ("no runtime ... to <verb>" otherwise).
absl::StatusOr<Manifest> RuntimeToUse(const Invocation& invocation, const Store& store, const std::string& given,
                                      const std::string& verb);

}  // namespace iu
