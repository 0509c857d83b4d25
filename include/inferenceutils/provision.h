// Provisioning: make the runtime a key names exist in the store, exactly once, atomically.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "inferenceutils/hardware.h"
#include "inferenceutils/lock.h"
#include "inferenceutils/progress.h"
#include "inferenceutils/store.h"
#include "nlohmann/json.hpp"

namespace iu {

// Everything a build needs, already decided (spec + backend decision + key).
struct BuildRequest {
  std::string key;
  nlohmann::json key_inputs;
  std::vector<std::string> requirements;      // as given (PEP 508)
  std::vector<std::string> preload;
  std::vector<std::string> libraries;
  std::string backend_package;                // gets the backend's build env / wheel index
  std::string index_url;                      // "" = pip's default (PyPI)
  std::vector<std::string> extra_index_urls;
  std::vector<std::string> find_links;
  std::vector<std::string> trusted_hosts;     // pip --trusted-host
  bool offline = false;                       // only local (file://, path) indexes and links
  nlohmann::json sources;                     // Sources::Described(): each source and its origin
  std::map<std::string, std::string> pip_env; // connection-only pip settings (PIP_CERT, ...), not keyed
  std::map<std::string, std::string> pip_env_origins;  // pip option -> where it was set
  std::map<std::string, std::string> build_env;  // CMAKE_ARGS etc. for pip and its builds
  std::vector<std::string> wheel_indexes;     // prebuilt indexes for backend_package, best first
  std::string cuda_stubs;                     // Decision::cuda_stubs: link and import check only, never the runtime's
  std::string backend;
  std::string profile_key;
  nlohmann::json decision;
  std::string launcher;                       // the launcher binary bin/python points at
  Facts facts;                                // this machine: which bundles it can use
  std::string assets_dir;                     // <assets>/bundles is the last bundle source; "" = none
  std::string log;                            // the build log; "" = <store>/logs/<key>-<time>-<pid>.log
};

struct ProvisionOptions {
  bool rebuild = false;                          // build again even if present
  bool allow_build = true;                       // false: error instead of building
  absl::Duration lock_timeout = absl::Minutes(60);
  std::vector<std::string> bundles;              // --bundle: files or URLs to try before building
  // Asked under the key's lock when the backend package is about to be built from source (no
  // prebuilt wheel fits): OK builds it here; an error stops the build (nothing of it is kept)
  // and EnsureRuntime returns it, e.g. a BackgroundStatus after starting a builder that took
  // over the lock (docs/progressive.md).
  std::function<absl::Status(const FileLock& lock)> before_source_build;
  // Asked at each poll while another launcher holds the key's lock: true stops waiting and
  // EnsureRuntime returns a BackgroundStatus (the holder is a background builder).
  std::function<bool()> stop_waiting;
};

// A status that says "not provisioned here: a background build of the runtime is under way"
// (progressive starts, docs/progressive.md); IsBackground recognises it.
absl::Status BackgroundStatus(absl::string_view message);
bool IsBackground(const absl::Status& status);

// Builds the runtime in the fresh data directory `data_dir`: venv, pip, verification, manifest.
// Does not publish. Errors (kExitProvision) carry the failing step, the log's last lines, the
// log's path and the flags used.
// `before_source_build` as in ProvisionOptions, without the lock.
absl::StatusOr<Manifest> BuildRuntime(const Store& store, const BuildRequest& request,
                                      const std::string& data_dir, Progress& progress,
                                      const std::function<absl::Status()>& before_source_build = nullptr);

// Whether one of request.wheel_indexes (the local ones when offline) lists a wheel of the
// backend package: one parallel probe with a short timeout, no pip. False without indexes.
bool PrebuiltWheelListed(const BuildRequest& request);

// The runtime for request.key: the published one, else built under the key's lock (waiting for
// another launcher's build if one is under way), verified and published.
absl::StatusOr<Manifest> EnsureRuntime(const Store& store, const BuildRequest& request,
                                       const ProvisionOptions& options, Progress& progress);

// Points <prefix>/bin/python, python3 and python3.X at `launcher` if they point elsewhere (a
// moved install). One readlink each on the warm path.
void EnsurePythonLink(const std::string& prefix, const std::string& launcher);
// Writes <prefix>/pyvenv.cfg naming this launcher's Python home (builds, unpacked bundles).
absl::Status WritePyvenvCfg(const std::string& prefix);

}  // namespace iu
