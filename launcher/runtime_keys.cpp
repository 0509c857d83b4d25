#include "runtime_keys.h"

#include <algorithm>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "inferenceutils/errors.h"
#include "selection.h"

namespace iu {

absl::StatusOr<std::string> MatchKey(const std::vector<std::string>& keys, const std::string& given,
                                     const std::string& not_found, const std::string& hint) {
  bool hex = !given.empty() && given.size() <= 64 &&
             std::all_of(given.begin(), given.end(), [](char c) { return absl::ascii_isxdigit(c); });
  if (!hex) {
    return ConfigError(absl::StrCat("'", given, "' is not a runtime key (a key, or the first hex digits of one); ", hint));
  }
  std::string found;
  for (const auto& key : keys) {
    if (key == given) return key;
    if (!absl::StartsWith(key, given) || key == found) continue;
    if (!found.empty()) {
      return ConfigError(absl::StrCat("runtime key prefix '", given, "' is ambiguous (", found, ", ", key,
                                      "); give more of the key"));
    }
    found = key;
  }
  if (found.empty()) return ConfigError(absl::StrCat(not_found, "; ", hint));
  return found;
}

absl::StatusOr<std::string> ResolveKey(const Store& store, const std::string& given) {
  std::vector<std::string> keys;
  for (const auto& entry : store.List()) keys.push_back(entry.key);
  return MatchKey(keys, given, absl::StrCat("no runtime '", given, "' in ", store.root()),
                  "`inferenceutils runtime list` shows the keys");
}

absl::StatusOr<Manifest> RuntimeToUse(const Invocation& invocation, const Store& store, const std::string& given,
                                      const std::string& verb) {
  std::string key = given;
  if (key.empty()) {  // the runtime this machine and spec select
    absl::StatusOr<Selection> selection = Select(invocation, std::nullopt);
    if (!selection.ok()) return selection.status();
    key = selection->key;
  } else {
    absl::StatusOr<std::string> resolved = ResolveKey(store, given);
    if (!resolved.ok()) return resolved.status();
    key = *resolved;
  }
  absl::StatusOr<Manifest> manifest = store.Lookup(key);
  if (!manifest.ok()) {
    return WithExit(absl::NotFoundError(absl::StrCat("no runtime '", key, "' in ", store.root(), " to ", verb,
                                                     "; `inferenceutils runtime list` shows the keys")),
                    kExitConfig);
  }
  return manifest;
}

}  // namespace iu
