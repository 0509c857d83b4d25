#include "progressive.h"

#include <sys/stat.h>

#include <cstdlib>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "inferenceutils/bundle.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/lock.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/provision.h"

namespace iu {
namespace {

std::string FirstLine(const std::string& text) { return text.substr(0, text.find('\n')); }

// The inode of the record of a background build of `key`, 0 when there is none.
ino_t RecordInode(const Store& store, const std::string& key) {
  struct stat st;
  return stat(BackgroundRecordPath(store, key).c_str(), &st) == 0 ? st.st_ino : 0;
}

// A fallback: a lower usable backend of the same spec whose runtime can be ready at once, and how.
struct Fallback {
  Selection selection;
  std::string how;  // "published", "a matching bundle", "a prebuilt wheel index"
};

// How the runtime of `s` can be ready at once, "" when it cannot (it would need a source build).
std::string ReadyAtOnce(const Selection& s, const ProvisionOptions& options) {
  if (s.store.Lookup(s.key).ok()) return "published";
  BundleChoice bundles = ChooseBundle(options.bundles, s.request.assets_dir,
                                      BundleTarget{s.key, s.request.key_inputs, s.decision.backend}, s.facts);
  if (bundles.chosen >= 0) return "a matching bundle";
  if (PrebuiltWheelListed(s.request)) return "a prebuilt wheel index";
  return "";
}

// `why` gets, for each lower backend tried, why it cannot stand in.
std::optional<Fallback> FindFallback(const Invocation& invocation, const std::optional<std::string>& script,
                                     const Selection& selected, const ProvisionOptions& options, std::string* why) {
  bool below = false;
  for (const BackendCheck& check : selected.decision.considered) {
    if (check.backend == selected.decision.backend) {
      below = true;
      continue;
    }
    if (!below || !check.usable) continue;
    absl::StatusOr<Decision> decision = Decide(selected.facts, check.backend, AssetsDir() + "/backends.toml");
    if (!decision.ok()) continue;
    absl::StatusOr<Selection> s = SelectFor(invocation, script, selected.facts, *std::move(decision));
    if (!s.ok() || s->key == selected.key) continue;
    std::string how = ReadyAtOnce(*s, options);
    if (!how.empty()) return Fallback{*std::move(s), how};
    absl::StrAppend(why, why->empty() ? "" : "; ", check.backend,
                    ": not built, no matching bundle, no prebuilt wheel of ", s->request.backend_package, " listed");
  }
  if (why->empty()) *why = absl::StrCat("no usable backend below ", selected.decision.backend);
  return std::nullopt;
}

std::string WaitHint() { return "to wait for it instead: `inferenceutils runtime wait`, or start with --wait"; }

}  // namespace

nlohmann::json StartRuntime::PendingJson() const {
  if (pending) {
    return {{"key", pending->key},         {"backend", pending->backend}, {"state", "building"},
            {"started", pending->started}, {"step", pending->step},       {"log", pending->log},
            {"pid", pending->pid}};
  }
  if (failed) {
    return {{"key", failed->key}, {"backend", failed->backend}, {"state", "failed"},
            {"failed", failed->failed}, {"log", failed->log}, {"error", FirstLine(failed->error)}};
  }
  return nullptr;
}

bool ProgressiveAllowed(const LauncherOptions& options) {
  const char* progressive = std::getenv("INFERENCEUTILS_PROGRESSIVE");
  if (progressive && std::string(progressive) == "0") return false;
  return !options.wait && !options.no_build && ForcedBackend(options).empty();
}

absl::StatusOr<StartRuntime> ProvisionForStart(const Invocation& invocation, const std::optional<std::string>& script,
                                               const Selection& selected, Progress& progress,
                                               const std::function<void(const std::string&)>& announce) {
  const Store& store = selected.store;
  ProvisionOptions options = ProvisionOptionsFor(invocation.options);
  StartRuntime result;
  if (!ProgressiveAllowed(invocation.options) || selected.request.backend_package.empty()) {
    absl::StatusOr<Manifest> manifest = EnsureRuntime(store, selected.request, options, progress);
    if (!manifest.ok()) return manifest.status();
    result.manifest = *std::move(manifest);
    return result;
  }
  // The warm path: the selected runtime is published.
  if (absl::StatusOr<Manifest> found = store.Lookup(selected.key); found.ok()) {
    result.manifest = *std::move(found);
    return result;
  }

  std::optional<std::optional<Fallback>> fallback;  // found once, when first needed
  std::string no_fallback;                          // why there is none
  auto find_fallback = [&]() -> const Fallback* {
    if (!fallback) fallback = FindFallback(invocation, script, selected, options, &no_fallback);
    return *fallback ? &**fallback : nullptr;
  };

  // The program on the fallback; when even that cannot be ready at once after all (its prebuilt
  // wheel does not install), it waits for the background build.
  auto run_on_fallback = [&](const Fallback& fb) -> absl::StatusOr<StartRuntime> {
    std::string fallback_text = absl::StrCat("this run uses the ", fb.selection.decision.backend, " runtime ",
                                             fb.selection.key, " (", fb.how, ")");
    if (result.pending) {
      const BackgroundBuild& b = *result.pending;
      announce(absl::StrCat("building the ", b.backend, " runtime ", b.key, " in the background since ",
                            ClockTime(b.started_unix), " (pid ", b.pid, ", step: ", b.step, ", log: ", b.log,
                            "); ", fallback_text, "; ", WaitHint()));
    } else {
      const BackgroundFailure& f = *result.failed;
      announce(absl::StrCat("the ", f.backend, " runtime ", f.key, " failed to build in the background at ", f.failed,
                            " (", FirstLine(f.error), "; log: ", f.log, "); ", fallback_text,
                            "; retry with `inferenceutils runtime rebuild`"));
    }
    ProvisionOptions fb_options = options;
    fb_options.stop_waiting = nullptr;  // another launcher provisioning the fallback: wait for it
    fb_options.before_source_build = [](const FileLock&) {
      return absl::FailedPreconditionError("no prebuilt wheel fits it either");
    };
    absl::StatusOr<Manifest> manifest = EnsureRuntime(store, fb.selection.request, fb_options, progress);
    if (manifest.ok()) {
      result.manifest = *std::move(manifest);
      return result;
    }
    if (!result.pending) {
      return WithExit(absl::UnavailableError(absl::StrCat(
                          "the ", result.failed->backend, " runtime ", result.failed->key,
                          " failed to build in the background (log: ", result.failed->log, ") and the ",
                          fb.selection.decision.backend, " runtime cannot be ready at once (",
                          manifest.status().message(), "); retry with `inferenceutils runtime rebuild`")),
                      kExitProvision);
    }
    progress.Note(absl::StrCat("the ", fb.selection.decision.backend, " runtime cannot be ready at once (",
                               manifest.status().message(), "); waiting for the ", result.pending->backend,
                               " build (log: ", result.pending->log, ")"));
    absl::StatusOr<FileLock> lock = FileLock::Exclusive(store.LockPath(selected.key), options.lock_timeout, [](long) {});
    if (!lock.ok()) return lock.status();
    if (absl::StatusOr<Manifest> built = store.Lookup(selected.key); built.ok()) {
      result.pending.reset();
      result.manifest = *std::move(built);
      return result;
    }
    std::optional<BackgroundFailure> failure = ReadBackgroundFailure(store, selected.key);
    return WithExit(absl::UnavailableError(absl::StrCat(
                        "the background build of runtime ", selected.key, " did not publish it",
                        failure ? absl::StrCat(": ", failure->error) : std::string(),
                        "; retry with `inferenceutils runtime rebuild`")),
                    kExitProvision);
  };

  // A background build under way, or one that failed with these inputs: the fallback, if any.
  std::optional<BackgroundBuild> record = ReadBackgroundBuild(store, selected.key);
  if (record && record->running) {
    if (const Fallback* fb = find_fallback()) {
      result.pending = record;
      return run_on_fallback(*fb);
    }
  } else if (std::optional<BackgroundFailure> failure = ReadBackgroundFailure(store, selected.key)) {
    if (const Fallback* fb = find_fallback()) {
      result.failed = failure;
      return run_on_fallback(*fb);
    }
  } else if (record) {
    progress.Note(absl::StrCat("the background build of runtime ", selected.key, " (pid ", record->pid,
                               ") ended without publishing it (log: ", record->log, "); building it again"));
  }

  // The selected runtime, as before; a source build of its backend package goes to the background
  // when a fallback can be ready at once.
  ino_t seen = RecordInode(store, selected.key);
  options.stop_waiting = [&] {
    ino_t now = RecordInode(store, selected.key);
    return now != 0 && now != seen;
  };
  options.before_source_build = [&](const FileLock& lock) -> absl::Status {
    const Fallback* fb = find_fallback();
    if (!fb) {
      progress.Note(absl::StrCat("no runtime of a lower backend can be ready at once (", no_fallback,
                                 "), so the ", selected.decision.backend, " runtime is built here"));
      return absl::OkStatus();
    }
    absl::StatusOr<BackgroundBuild> started = StartBackgroundBuild(store, selected.request, lock, fb->selection.key);
    if (!started.ok()) {
      progress.Note(absl::StrCat("cannot build in the background (", started.status().message(), "); building here"));
      return absl::OkStatus();
    }
    result.pending = *started;
    return BackgroundStatus(absl::StrCat("built in the background by pid ", started->pid, " (log: ", started->log, ")"));
  };
  absl::StatusOr<Manifest> manifest = EnsureRuntime(store, selected.request, options, progress);
  if (manifest.ok()) {
    result.manifest = *std::move(manifest);
    return result;
  }
  if (!IsBackground(manifest.status())) return manifest.status();
  if (!result.pending) {
    // Another launcher started the builder while this one waited for the lock; by now it may
    // even have ended.
    if (absl::StatusOr<Manifest> found = store.Lookup(selected.key); found.ok()) {
      result.manifest = *std::move(found);
      return result;
    }
    if ((record = ReadBackgroundBuild(store, selected.key))) {
      result.pending = record;
    } else if (std::optional<BackgroundFailure> failure = ReadBackgroundFailure(store, selected.key)) {
      result.failed = failure;
    } else {
      BackgroundBuild unknown;
      unknown.key = selected.key;
      unknown.backend = selected.decision.backend;
      unknown.started_unix = std::time(nullptr);
      unknown.step = "unknown";
      result.pending = unknown;
    }
  }
  const Fallback* fb = find_fallback();
  if (!fb) {
    // Cannot happen for a builder this launcher started; for another's, wait for it as before.
    options.stop_waiting = nullptr;
    options.before_source_build = nullptr;
    absl::StatusOr<Manifest> waited = EnsureRuntime(store, selected.request, options, progress);
    if (!waited.ok()) return waited.status();
    result.pending.reset();
    result.manifest = *std::move(waited);
    return result;
  }
  return run_on_fallback(*fb);
}

}  // namespace iu
