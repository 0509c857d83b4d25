#include "inferenceutils/background.h"
#include "inferenceutils/bundle.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/lock.h"
#include "inferenceutils/provision.h"

#include <unistd.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace iu {
namespace {

constexpr char kBackgroundPayload[] = "inferenceutils/background";

// The last step of a build or an unpack into `data_dir`: publish it as `key`, or, when that step
// failed (or publishing does), remove every file of it.
absl::StatusOr<Manifest> PublishOrDiscard(const Store& store, const std::string& key, const std::string& data_dir,
                                          absl::StatusOr<Manifest> manifest) {
  if (manifest.ok()) {
    if (auto status = store.Publish(key, data_dir); !status.ok()) manifest = status;
  }
  // A failed background build of the key, or one whose builder died, is history once the key is
  // published here, under its lock (docs/progressive.md).
  if (manifest.ok()) {
    unlink(BackgroundFailurePath(store, key).c_str());
    unlink(BackgroundRecordPath(store, key).c_str());
  }
  if (!manifest.ok()) RemoveTree(data_dir);
  return manifest;
}

// Under the key's lock: the best matching bundle unpacked into a fresh data directory and
// published. nullopt-like NotFound when no bundle matches (`why` says what was seen).
absl::StatusOr<Manifest> TryBundles(const Store& store, const BuildRequest& request,
                                    const ProvisionOptions& options, Progress& progress, std::string* why,
                                    bool* explicit_refused) {
  BundleTarget target{request.key, request.key_inputs, request.backend};
  BundleChoice choice = ChooseBundle(options.bundles, request.assets_dir, target, request.facts);
  std::vector<std::string> seen;
  for (const auto& note : choice.notes) progress.Note(absl::StrCat("bundle source unusable: ", note));
  for (size_t i = 0; i < choice.candidates.size(); ++i) {
    const BundleCandidate& c = choice.candidates[i];
    if (static_cast<int>(i) == choice.chosen) continue;
    progress.Note(absl::StrCat("bundle ", c.location, " (", c.source, "): ",
                               c.rejected.empty() ? "usable, but another ranks higher" : "rejected: " + c.rejected));
    if (!c.rejected.empty()) {
      seen.push_back(absl::StrCat(c.location, ": ", c.rejected));
      if (c.source == "--bundle") *explicit_refused = true;
    }
  }
  if (choice.chosen < 0) {
    *why = seen.empty() ? "no bundles found" : absl::StrCat("no bundle matches (", absl::StrJoin(seen, "; "), ")");
    return absl::NotFoundError(*why);
  }
  const BundleCandidate& chosen = choice.candidates[static_cast<size_t>(choice.chosen)];
  progress.Note(absl::StrCat("using bundle ", chosen.location, " (", chosen.source, ")"));
  absl::StatusOr<std::string> local = FetchBundle(store, chosen, progress);
  if (!local.ok()) return local.status();
  bool downloaded = *local != chosen.location;
  if (downloaded && !chosen.manifest.contains("key")) {
    // A direct URL: its requirements are known only now.
    absl::StatusOr<nlohmann::json> manifest = ReadBundleManifest(*local);
    if (!manifest.ok()) return manifest.status();
    std::string unmet = UnmetRequirement(manifest->value("requires", nlohmann::json()), request.facts);
    if (!unmet.empty()) {
      return WithExit(absl::FailedPreconditionError(absl::StrCat("bundle ", chosen.location, ": ", unmet)), kExitBundle);
    }
  }
  absl::StatusOr<std::string> data_dir = store.NewDataDir(request.key);
  if (!data_dir.ok()) return data_dir.status();
  UnpackOptions unpack;
  unpack.launcher = request.launcher;
  unpack.key = request.key;
  unpack.key_inputs = request.key_inputs;
  unpack.profile_key = request.profile_key;
  unpack.decision = request.decision;
  unpack.origin = chosen.location;
  // A download was checked already; a local file from an index is checked while it streams.
  unpack.expected_sha256 = downloaded ? "" : chosen.sha256;
  absl::StatusOr<Manifest> manifest = UnpackBundle(*local, *data_dir, unpack, progress);
  progress.Finish();
  return PublishOrDiscard(store, request.key, *data_dir, std::move(manifest));
}

}  // namespace

absl::Status BackgroundStatus(absl::string_view message) {
  absl::Status status = absl::UnavailableError(message);
  status.SetPayload(kBackgroundPayload, absl::Cord("1"));
  return status;
}

bool IsBackground(const absl::Status& status) { return status.GetPayload(kBackgroundPayload).has_value(); }

absl::StatusOr<Manifest> EnsureRuntime(const Store& store, const BuildRequest& request,
                                       const ProvisionOptions& options, Progress& progress) {
  if (!options.rebuild) {
    absl::StatusOr<Manifest> found = store.Lookup(request.key);
    if (found.ok()) return found;
    if (absl::IsDataLoss(found.status())) {
      progress.Note(absl::StrCat(found.status().message(), "; building it again"));
    }
  }
  if (auto status = store.EnsureLayout(); !status.ok()) return status;

  bool waited = false;
  absl::StatusOr<FileLock> lock = FileLock::ExclusiveUnless(
      store.LockPath(request.key), options.lock_timeout,
      [&](long pid) {
        waited = true;
        if (options.stop_waiting && options.stop_waiting()) return;  // said by the caller
        progress.Note(absl::StrCat("waiting for another inferenceutils (pid ", pid,
                                   ") that is building runtime ", request.key));
      },
      options.stop_waiting);
  if (!lock.ok()) return lock.status();
  if (!lock->held()) return BackgroundStatus(absl::StrCat("runtime ", request.key, " is being built in the background"));

  // Look again: the launcher we waited for may have built it.
  if (!options.rebuild || waited) {
    absl::StatusOr<Manifest> found = store.Lookup(request.key);
    if (found.ok()) return found;
  }
  store.CleanStale(request.key);
  std::string bundle_why;
  bool explicit_refused = false;
  if (!options.rebuild || !options.bundles.empty()) {
    absl::StatusOr<Manifest> unpacked = TryBundles(store, request, options, progress, &bundle_why, &explicit_refused);
    if (unpacked.ok() || !absl::IsNotFound(unpacked.status())) return unpacked;
  }
  if (!options.allow_build) {
    return WithExit(absl::FailedPreconditionError(absl::StrCat(
                        "no runtime ", request.key, " in ", store.root(), ", ", bundle_why,
                        ", and building is switched off (--no-build); drop --no-build or give a matching bundle")),
                    explicit_refused ? kExitBundle : kExitProvision);
  }
  absl::StatusOr<std::string> data_dir = store.NewDataDir(request.key);
  if (!data_dir.ok()) return data_dir.status();
  std::function<absl::Status()> before_source_build;
  if (options.before_source_build) {
    before_source_build = [&] { return options.before_source_build(*lock); };
  }
  absl::StatusOr<Manifest> manifest = BuildRuntime(store, request, *data_dir, progress, before_source_build);
  progress.Finish();
  return PublishOrDiscard(store, request.key, *data_dir, std::move(manifest));
}

}  // namespace iu
