// The store: where runtimes live, and how they become visible atomically.
//
//   <root>/runtimes/<key>   symlink → ../data/<key>.<pid>.<nonce>: the published runtime
//   <root>/data/<id>/       a runtime: venv + manifest.json + build.log; immutable once published
//   <root>/locks/<key>.lock build lock (flock, holder's pid inside)
//   <root>/cache/pip/<profile>/  pip's cache, one per hardware profile (never shared across backends)
//
// A runtime is built in place in a fresh data directory, verified, given its manifest, then
// published by renaming a new symlink onto runtimes/<key>. A crash leaves an unpublished data
// directory that the next start under the key's lock removes. Running launchers hold a shared
// lock on <data>/.in-use, so removing a runtime unpublishes it at once and deletes its data only
// when no process uses it any more.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace iu {

constexpr int kManifestFormat = 1;

struct Manifest {
  int format = kManifestFormat;
  std::string key;
  nlohmann::json key_inputs;           // what the key is a digest of
  std::string source = "build";        // "build" or "bundle"
  std::string created;                 // RFC 3339, UTC
  std::string prefix;                  // the data directory (sys.prefix)
  std::string python_version;          // "3.11.2"
  std::string python_abi;              // "cp311"
  std::string base_prefix;             // the Python home's prefix when built
  std::string python_home;             // the Python home's identity ("3.11.2-<digest>")
  std::string backend;                 // "cpu", "cuda", ...
  std::string profile_key;
  nlohmann::json decision;             // the backend decision it was built for
  std::vector<std::string> requirements;
  std::vector<std::string> preload;
  std::vector<std::string> libraries;  // shared libraries loaded before the preload
  std::vector<std::pair<std::string, std::string>> distributions;  // name, version
  std::vector<std::string> sys_path;   // sys.path of the runtime's interpreter (without the script dir)
  std::map<std::string, double> timings;  // seconds per step
  std::map<std::string, std::string> build_env;
  std::string log;                     // path of the build log

  nlohmann::json ToJson() const;
  static absl::StatusOr<Manifest> FromJson(const nlohmann::json& json);
  // <dir>/manifest.json, with prefix = dir (where the runtime is now). NotFound when the file
  // cannot be read; DataLoss "corrupt manifest (...)" when it is not JSON, or FromJson's error.
  static absl::StatusOr<Manifest> Read(const std::string& dir);
};

struct RuntimeEntry {
  std::string key;
  std::string path;          // data directory
  absl::StatusOr<Manifest> manifest = absl::UnknownError("not read");
  uint64_t size_bytes = 0;
  int64_t last_used = 0;     // unix seconds (mtime of <data>/.in-use, touched at each start)
};

class Store {
 public:
  explicit Store(std::string root) : root_(std::move(root)) {}
  const std::string& root() const { return root_; }

  std::string RuntimeLink(const std::string& key) const { return root_ + "/runtimes/" + key; }
  std::string LockPath(const std::string& key) const { return root_ + "/locks/" + key + ".lock"; }
  std::string PipCacheDir(const std::string& profile) const { return root_ + "/cache/pip/" + profile; }

  // Warm path: the manifest of the published runtime `key`. NotFound when there is none,
  // DataLoss when its manifest is unreadable or corrupt (the caller rebuilds it).
  absl::StatusOr<Manifest> Lookup(const std::string& key) const;

  // Creates the store's directories; an error names the path and INFERENCEUTILS_HOME / --home.
  absl::Status EnsureLayout() const;
  // A fresh, empty data directory for a new runtime of `key`.
  absl::StatusOr<std::string> NewDataDir(const std::string& key) const;
  // Makes `data_dir` the runtime `key` (atomic symlink swap); the one it replaces is deleted
  // when no process uses it.
  absl::Status Publish(const std::string& key, const std::string& data_dir) const;
  // Unpublishes `key` and deletes its data when unused. NotFound if there is no such runtime.
  absl::Status Remove(const std::string& key) const;
  // Deletes data directories that are not published and whose builder is dead (under `key`'s
  // lock, every unpublished one of that key is stale). Returns how many were removed.
  int CleanStale(const std::string& key_locked) const;
  // Every published runtime, sorted by key.
  std::vector<RuntimeEntry> List() const;

 private:
  std::string root_;
};

// Holds a shared lock on <prefix>/.in-use for the life of the process and touches it (last used).
void MarkInUse(const std::string& prefix);

// Recursive delete (no symlink following). Best effort; returns false if anything stayed.
bool RemoveTree(const std::string& path);
// Total size of the regular files below `path`.
uint64_t TreeSize(const std::string& path);

}  // namespace iu
