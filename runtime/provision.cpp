#include "inferenceutils/errors.h"
#include "inferenceutils/lock.h"
#include "inferenceutils/provision.h"

#include "absl/strings/str_cat.h"

namespace iu {

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
  absl::StatusOr<FileLock> lock = FileLock::Exclusive(
      store.LockPath(request.key), options.lock_timeout, [&](long pid) {
        waited = true;
        progress.Note(absl::StrCat("waiting for another inferenceutils (pid ", pid,
                                   ") that is building runtime ", request.key));
      });
  if (!lock.ok()) return lock.status();

  // Look again: the launcher we waited for may have built it.
  if (!options.rebuild || waited) {
    absl::StatusOr<Manifest> found = store.Lookup(request.key);
    if (found.ok()) return found;
  }
  if (!options.allow_build) {
    return WithExit(absl::FailedPreconditionError(absl::StrCat(
                        "no runtime ", request.key, " in ", store.root(),
                        " and building is switched off (--no-build); drop --no-build or give a bundle")),
                    kExitProvision);
  }
  store.CleanStale(request.key);
  absl::StatusOr<std::string> data_dir = store.NewDataDir(request.key);
  if (!data_dir.ok()) return data_dir.status();
  absl::StatusOr<Manifest> manifest = BuildRuntime(store, request, *data_dir, progress);
  progress.Finish();
  if (!manifest.ok()) {
    RemoveTree(*data_dir);
    return manifest.status();
  }
  if (auto status = store.Publish(request.key, *data_dir); !status.ok()) {
    RemoveTree(*data_dir);
    return status;
  }
  return manifest;
}

}  // namespace iu
