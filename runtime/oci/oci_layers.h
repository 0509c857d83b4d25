// Splitting a runtime into layers that dedupe, and writing one layer blob (oci_layers.cpp).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bundle/bundle_internal.h"

namespace iu::oci {

struct LayerPlan {
  std::string name;            // "runtime" (the skeleton) or the distribution ("numpy-1.26.4")
  std::string kind;            // "skeleton" or "distribution"
  std::vector<size_t> items;   // indexes into PackPlan::items, in order
};

// The skeleton first (every directory, so the layers after it unpack into existing folders),
// then one layer per distribution, sorted by name.
std::vector<LayerPlan> SplitIntoLayers(const bundle_internal::PackPlan& plan);

struct LayerBlob {
  std::string digest;  // sha256:…
  uint64_t size = 0;
  std::string path;    // <blobs_dir>/sha256/<hex>
};

// Writes the layer as a zstd tar into <blobs_dir>/sha256/<hex> (atomically; blobs_dir/sha256 exists).
absl::StatusOr<LayerBlob> WriteLayer(const bundle_internal::PackPlan& plan, const LayerPlan& layer,
                                     const std::string& blobs_dir, const PackOptions& options);

}  // namespace iu::oci
