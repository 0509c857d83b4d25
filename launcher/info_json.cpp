#include "info_json.h"

#include <dirent.h>

#include <algorithm>

#include "inferenceutils/paths.h"

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

nlohmann::json InfoJson(const Facts& facts, const Decision& decision, const std::string& store) {
  nlohmann::json runtimes = nlohmann::json::array();
  for (const std::string& name : RuntimeDirs(store)) {
    runtimes.push_back({{"name", name}, {"path", store + "/runtimes/" + name}});
  }
  return {
      {"schema_version", kInfoSchemaVersion},
      {"launcher_version", IU_VERSION},
      {"facts", facts.ToJson()},
      {"decision", decision.ToJson()},
      {"store", {{"root", store}, {"facts_cache", store + "/facts.json"}, {"runtimes", runtimes}}},
  };
}

}  // namespace iu
