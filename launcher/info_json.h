// The `info --json` document, shared by `info --json` and the Python face
// (`inferenceutils.system_info()` inside a launcher-started runtime returns the same document).
#pragma once

#include <string>
#include <vector>

#include "inferenceutils/backend.h"
#include "inferenceutils/bundle.h"
#include "inferenceutils/hardware.h"
#include "nlohmann/json.hpp"

namespace iu {

constexpr int kInfoSchemaVersion = 1;

// Names of the published runtimes under <store>/runtimes, sorted.
std::vector<std::string> RuntimeDirs(const std::string& store);

// {schema_version, launcher_version, facts, decision, store: {root, facts_cache, runtimes}}.
// The Python home in use: its identity, where it is and where it came from.
nlohmann::json PythonHomeJson();

nlohmann::json InfoJson(const Facts& facts, const Decision& decision, const std::string& store);

// The document's "bundles" section: where the runtime `target` could come from (--bundle files,
// INFERENCEUTILS_BUNDLES, <assets>/bundles), each bundle seen with why it is chosen or rejected.
nlohmann::json BundlesJson(const std::vector<std::string>& explicit_bundles, const BundleTarget& target,
                           const Facts& facts);

}  // namespace iu
