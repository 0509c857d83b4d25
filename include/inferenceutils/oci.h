// Runtime bundles through OCI registries (docs/oci.md): `runtime push` uploads a runtime as an
// OCI artifact (one zstd tar layer per installed distribution plus the venv skeleton, bundle.json
// as its config) and keeps, at a tag, an OCI image index with one manifest per hardware profile;
// `oci://` bundle sources read that index, and a chosen profile is fetched into the store's blob
// cache and unpacked by the same checks as a .tar.zst bundle.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inferenceutils/bundle.h"
#include "inferenceutils/progress.h"
#include "inferenceutils/store.h"

namespace iu {

// oci://HOST[:PORT]/REPO[:TAG][@sha256:HEX]
struct OciReference {
  std::string host;        // host[:port], as in the docker config's auths ("127.0.0.1:5000")
  std::string repository;  // "team/llama"
  std::string tag;         // "latest" when neither a tag nor a digest is given
  std::string digest;      // "sha256:..." or ""
  bool plain_http = false; // loopback or INFERENCEUTILS_INSECURE_REGISTRIES: http://, else https://

  std::string ToString() const;  // oci://host/repo[:tag][@digest]
  std::string BaseUrl() const;   // http(s)://host/v2/repo
};

bool IsOciLocation(absl::string_view location);

// Parses an oci:// reference; errors (exit 65) name the reference and the form.
absl::StatusOr<OciReference> ParseOciReference(absl::string_view text);

// Whether plain HTTP may be spoken to `host` (host[:port]): loopback (127.0.0.0/8, localhost,
// ::1), or listed in INFERENCEUTILS_INSECURE_REGISTRIES (comma/space separated host[:port]).
bool PlainHttpAllowed(const std::string& host);

struct OciPushOptions {
  PackOptions pack;        // level, threads, isa, min_driver_cuda of the layers and bundle.json
};

struct OciPushResult {
  std::string reference;        // where it went
  std::string manifest_digest;  // the profile's image manifest
  std::string index_digest;     // the index at the tag
  std::string profile_key;
  int layers = 0;               // layers of the runtime (config not counted)
  int uploaded = 0;             // blobs sent (layers and config)
  int present = 0;              // blobs the repository had already (HEAD)
  int mounted = 0;              // blobs mounted from another repository of the registry
  uint64_t uploaded_bytes = 0;
  uint64_t total_bytes = 0;     // of every blob
  int profiles = 0;             // entries in the index after the push
  int index_attempts = 0;       // read-modify-write rounds of the index
};

// Pushes the runtime at `prefix` to `ref` (a tag). Layer blobs are kept in <store>/blobs.
absl::StatusOr<OciPushResult> PushRuntime(const Store& store, const std::string& prefix, const OciReference& ref,
                                          const OciPushOptions& options, Progress& progress);

// Bundle candidates of an oci:// source: one per profile in the index at the tag (or the one
// manifest the tag or digest names), each with the manifest its annotations describe.
absl::StatusOr<std::vector<BundleCandidate>> ListOciSource(const std::string& location, const std::string& source);

// Fetches a candidate of ListOciSource into <store>/blobs (skipping blobs it has) and returns a
// bundle in parts (a list file under <store>/cache/oci) for UnpackBundle. Errors exit 77.
absl::StatusOr<std::string> FetchOciBundle(const Store& store, const BundleCandidate& candidate, Progress& progress);

}  // namespace iu
