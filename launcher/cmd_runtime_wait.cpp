// runtime wait [KEY]: blocks until the background build of KEY (default: the runtime this machine
// selects) ends. Exit 0 when the runtime is published, 74 when the build failed or its builder
// died, 65 when there is neither a build nor a runtime of that key (docs/progressive.md).
#include <algorithm>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "commands.h"
#include "inferenceutils/background.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/lock.h"
#include "inferenceutils/paths.h"
#include "runtime_keys.h"
#include "selection.h"
#include "terminal_progress.h"

namespace iu {
namespace {

// A key or the first hex digits of one, among the background builds, their failures and the
// published runtimes.
absl::StatusOr<std::string> ResolveWaitKey(const Store& store, const std::string& given) {
  std::vector<std::string> keys;
  for (const auto& b : ListBackgroundBuilds(store)) keys.push_back(b.key);
  for (const auto& f : ListBackgroundFailures(store)) keys.push_back(f.key);
  for (const auto& e : store.List()) keys.push_back(e.key);
  return MatchKey(keys, given, absl::StrCat("no background build and no runtime '", given, "' in ", store.root()),
                  "`inferenceutils runtime list` shows the keys and the background builds");
}

}  // namespace

absl::StatusOr<int> CmdRuntimeWait(const Invocation& invocation, const std::vector<std::string>& args) {
  if (args.size() > 1) return UsageError("runtime wait takes at most one KEY");
  if (!args.empty() && absl::StartsWith(args[0], "-")) {
    return UsageError(absl::StrCat("runtime wait: unknown option '", args[0], "' (runtime wait [KEY])"));
  }
  Store store(StoreRoot(invocation.options.home));
  std::string key;
  if (!args.empty()) {
    absl::StatusOr<std::string> resolved = ResolveWaitKey(store, args[0]);
    if (!resolved.ok()) return resolved.status();
    key = *resolved;
  } else {
    absl::StatusOr<Selection> selection = Select(invocation, std::nullopt);
    if (!selection.ok()) return selection.status();
    key = selection->key;
  }
  std::optional<BackgroundBuild> build = ReadBackgroundBuild(store, key);
  if (build && build->running) {
    TerminalProgress progress(invocation.options.quiet, invocation.options.verbose);
    progress.Note(absl::StrCat("waiting for the background build of the ", build->backend, " runtime ", key,
                               " (pid ", build->pid, ", since ", ClockTime(build->started_unix), ", step: ",
                               build->step, ", log: ", build->log, ")"));
    progress.Finish();
    absl::StatusOr<FileLock> lock = FileLock::Exclusive(store.LockPath(key),
                                                        ProvisionOptionsFor(invocation.options).lock_timeout, [](long) {});
    if (!lock.ok()) return lock.status();
  }
  if (absl::StatusOr<Manifest> manifest = store.Lookup(key); manifest.ok()) {
    std::cout << manifest->prefix << "\n";
    return 0;
  }
  if (std::optional<BackgroundFailure> failure = ReadBackgroundFailure(store, key)) {
    return WithExit(absl::UnavailableError(absl::StrCat(
                        "the background build of the ", failure->backend, " runtime ", key, " failed at ",
                        failure->failed, ": ", failure->error, "\nlog: ", failure->log,
                        "\nretry with `inferenceutils runtime rebuild`")),
                    kExitProvision);
  }
  if (build = ReadBackgroundBuild(store, key); build) {
    return WithExit(absl::UnavailableError(absl::StrCat(
                        "the background build of runtime ", key, " (pid ", build->pid,
                        ") ended without publishing it or recording why (the builder was killed?); log: ", build->log,
                        "; the next start builds it again, or `inferenceutils runtime rebuild` now")),
                    kExitProvision);
  }
  return ConfigError(absl::StrCat("no background build and no runtime ", key, " in ", store.root(),
                                  "; starting the program builds it"));
}

}  // namespace iu
