// Prebuilt runtime bundles: a published runtime packed once into one .tar.zst, unpacked on a
// matching machine instead of building (docs/bundles.md).
//
//   bundle.tar.zst = zstd( tar( bundle.json, then every entry of the runtime, sorted ) )
//
// bundle.json (the first member) says what the bundle is (key, key inputs), what it requires of
// a machine, the prefix it was built at and every entry with its type, size, mode and SHA-256.
// Unpacking streams (decompression on one thread, tar parsing on another, hashing and writing
// on a pool), refuses anything the manifest does not describe exactly, and relocates the runtime
// to its new prefix. Errors carry kExitBundle and name the member and the reason.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "inferenceutils/hardware.h"
#include "inferenceutils/progress.h"
#include "inferenceutils/store.h"
#include "nlohmann/json.hpp"

namespace iu {

constexpr int kBundleFormat = 1;
constexpr char kBundleManifestName[] = "bundle.json";

struct PackOptions {
  int level = 19;                 // zstd level (1..22)
  int threads = 0;                // zstd workers; 0 = every usable core
  std::string isa;                // required CPU ISA level; "" = the one it was built on
  std::string min_driver_cuda;    // CUDA: minimum driver CUDA version; "" = the build machine's
};

struct PackResult {
  std::string path;
  uint64_t files = 0;
  uint64_t unpacked_bytes = 0;
  uint64_t packed_bytes = 0;
  std::string sha256;             // of the .tar.zst
};

// Packs the runtime at `prefix` (its manifest.json describes it) into `output` (atomically).
absl::StatusOr<PackResult> PackRuntime(const std::string& prefix, const std::string& output,
                                       const PackOptions& options, Progress& progress);

// The bundle manifest (bundle.json) of a .tar.zst file, reading only its first member.
absl::StatusOr<nlohmann::json> ReadBundleManifest(const std::string& path);

// Writes <dir>/index.json listing every *.tar.zst in `dir` (file, sha256, size, manifest
// without its file list): what an HTTP(S) source serves. Returns how many bundles it lists.
absl::StatusOr<int> WriteBundleIndex(const std::string& dir);

// Whether this machine meets a bundle's requirements; "" when it does, else the reason.
std::string UnmetRequirement(const nlohmann::json& requires_json, const Facts& facts);

// What a bundle must share with a request to stand in for it: the key, or the key inputs
// without the profile and platform (see docs/bundles.md "Selection").
struct BundleTarget {
  std::string key;
  nlohmann::json key_inputs;
  std::string backend;            // the decision's backend
};

struct BundleCandidate {
  std::string location;           // file path or URL
  std::string source;             // "--bundle", "INFERENCEUTILS_BUNDLES", "assets"
  std::string sha256;             // known from an index or a #sha256= fragment; "" = unknown
  uint64_t size = 0;
  nlohmann::json manifest;        // bundle.json (files may be absent when it came from an index)
  std::string rejected;           // "" = usable
  int64_t rank = 0;               // higher is better
};

struct BundleChoice {
  std::vector<BundleCandidate> candidates;  // every bundle seen, the chosen one first
  int chosen = -1;                          // index into candidates, -1 = none
  std::vector<std::string> notes;           // sources that could not be read
};

// The sources in order: `explicit_bundles` (--bundle FILE|URL), INFERENCEUTILS_BUNDLES
// (directories and HTTP(S) base URLs serving index.json; separated by ',', ';', whitespace, or
// ':' between plain paths), then <assets>/bundles. Never fails: unreadable sources become notes.
BundleChoice ChooseBundle(const std::vector<std::string>& explicit_bundles, const std::string& assets_dir,
                          const BundleTarget& target, const Facts& facts);

// For `info`: the sources, every bundle seen with why it was chosen or rejected.
nlohmann::json ExplainBundles(const std::vector<std::string>& explicit_bundles, const std::string& assets_dir,
                              const BundleTarget& target, const Facts& facts);

struct UnpackOptions {
  std::string launcher;           // bin/python and bin/python3 point here
  std::string key;                // the key it is installed as (may differ from the bundle's)
  nlohmann::json key_inputs;      // and its inputs, profile key and decision (null: the bundle's)
  std::string profile_key;
  nlohmann::json decision;
  std::string origin;             // recorded in the manifest (file or URL)
  std::string expected_sha256;    // of the file; "" = not checked (per-file hashes still are)
  uint64_t max_bytes = 0;         // bound on the unpacked size; 0 = INFERENCEUTILS_BUNDLE_MAX_BYTES or 64 GiB
  int threads = 0;                // writer threads; 0 = usable cores
};

// Unpacks the bundle `path` into the empty directory `data_dir`, verifies every file, relocates
// it there and writes its manifest (source "bundle"). Does not publish. On error the caller
// removes data_dir. Errors carry kExitBundle: "bundle FILE: member M: reason".
absl::StatusOr<Manifest> UnpackBundle(const std::string& path, const std::string& data_dir,
                                      const UnpackOptions& options, Progress& progress);

// Fetches an http(s) bundle into <store>/cache/bundles (resuming a partial download), checks its
// SHA-256 when known, and returns the local path. A file path is returned as it is.
absl::StatusOr<std::string> FetchBundle(const Store& store, const BundleCandidate& candidate, Progress& progress);

// Lists a bundle source's bundles (a file, a directory, an http(s) file or base URL). Errors
// name the source.
absl::StatusOr<std::vector<BundleCandidate>> ListBundleSource(const std::string& location, const std::string& source);

}  // namespace iu
