#include "info_json.h"

#include "inferenceutils/store.h"

#include <dirent.h>

#include <algorithm>

#include "inferenceutils/background.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/python_home.h"

namespace iu {

std::vector<std::string> RuntimeDirs(const std::string& store) {
  std::vector<std::string> names;
  if (DIR* d = opendir((store + "/runtimes").c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      if (IsDirectory(store + "/runtimes/" + e->d_name)) names.emplace_back(e->d_name);
    }
    closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

nlohmann::json PythonHomeJson() {
  const PythonHome& home = CurrentHome();
  return {{"id", home.id},
          {"version", home.version},
          {"prefix", home.prefix},
          {"executable", home.executable},
          {"source", home.source},  // bundled (beside the launcher), store (an app's), system (a dev build)
          {"present", CheckHome(home).ok()}};
}

nlohmann::json InfoJson(const Facts& facts, const Decision& decision, const std::string& store) {
  // The runtime state: what the store holds, and whether each runtime was made for this
  // machine's current decision (its profile key).
  nlohmann::json runtimes = nlohmann::json::array();
  for (const RuntimeEntry& entry : Store(store).List()) {
    nlohmann::json row = {{"name", entry.key}, {"path", entry.path}};
    if (entry.manifest.ok()) {
      row["backend"] = entry.manifest->backend;
      row["source"] = entry.manifest->source;
      row["profile_key"] = entry.manifest->profile_key;
      row["matches"] = entry.manifest->profile_key == decision.profile_key;
    } else {
      row["error"] = std::string(entry.manifest.status().message());
      row["matches"] = false;
    }
    runtimes.push_back(row);
  }
  // Background builds (docs/progressive.md): under way, interrupted (the builder died), failed.
  nlohmann::json builds = nlohmann::json::array();
  for (const BackgroundBuild& b : ListBackgroundBuilds(Store(store))) {
    nlohmann::json row = b.ToJson();
    row["state"] = b.running ? "building" : "interrupted";
    builds.push_back(row);
  }
  for (const BackgroundFailure& f : ListBackgroundFailures(Store(store))) {
    nlohmann::json row = f.ToJson();
    row["state"] = "failed";
    builds.push_back(row);
  }
  return {
      {"schema_version", kInfoSchemaVersion},
      {"launcher_version", IU_VERSION},
      {"facts", facts.ToJson()},
      {"decision", decision.ToJson()},
      {"store", {{"root", store}, {"facts_cache", store + "/facts.json"}, {"runtimes", runtimes},
                 {"background_builds", builds}}},
      {"python_home", PythonHomeJson()},
  };
}

nlohmann::json BundlesJson(const std::vector<std::string>& explicit_bundles, const BundleTarget& target,
                           const Facts& facts) {
  nlohmann::json doc = ExplainBundles(explicit_bundles, AssetsDir(), target, facts);
  doc["runtime_key"] = target.key;
  return doc;
}

}  // namespace iu
