#include "absl/strings/str_cat.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/store.h"

namespace iu {

nlohmann::json Manifest::ToJson() const {
  nlohmann::json dists = nlohmann::json::array();
  for (const auto& [name, version] : distributions) dists.push_back({{"name", name}, {"version", version}});
  return {
      {"format", format},         {"key", key},
      {"key_inputs", key_inputs}, {"source", source},
      {"created", created},       {"prefix", prefix},
      {"python", {{"version", python_version}, {"abi", python_abi}, {"base_prefix", base_prefix}, {"home", python_home}}},
      {"backend", backend},       {"profile_key", profile_key},
      {"decision", decision},     {"requirements", requirements},
      {"preload", preload},       {"libraries", libraries},
      {"distributions", dists},   {"sys_path", sys_path},
      {"timings", timings},       {"build_env", build_env},
      {"log", log},
  };
}

absl::StatusOr<Manifest> Manifest::FromJson(const nlohmann::json& json) {
  try {
    Manifest m;
    m.format = json.at("format").get<int>();
    if (m.format != kManifestFormat) {
      return absl::DataLossError(absl::StrCat("manifest format ", m.format, " is not ", kManifestFormat));
    }
    m.key = json.at("key").get<std::string>();
    m.key_inputs = json.value("key_inputs", nlohmann::json::object());
    m.source = json.at("source").get<std::string>();
    m.created = json.value("created", "");
    m.prefix = json.at("prefix").get<std::string>();
    const auto& python = json.at("python");
    m.python_version = python.at("version").get<std::string>();
    m.python_abi = python.at("abi").get<std::string>();
    m.base_prefix = python.at("base_prefix").get<std::string>();
    m.python_home = python.value("home", "");
    m.backend = json.at("backend").get<std::string>();
    m.profile_key = json.value("profile_key", "");
    m.decision = json.value("decision", nlohmann::json::object());
    m.requirements = json.at("requirements").get<std::vector<std::string>>();
    m.preload = json.at("preload").get<std::vector<std::string>>();
    m.libraries = json.value("libraries", std::vector<std::string>{});
    for (const auto& dist : json.value("distributions", nlohmann::json::array())) {
      m.distributions.emplace_back(dist.at("name").get<std::string>(), dist.at("version").get<std::string>());
    }
    m.sys_path = json.at("sys_path").get<std::vector<std::string>>();
    m.timings = json.value("timings", std::map<std::string, double>{});
    m.build_env = json.value("build_env", std::map<std::string, std::string>{});
    m.log = json.value("log", "");
    return m;
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat("manifest is malformed: ", e.what()));
  }
}

absl::StatusOr<Manifest> Manifest::Read(const std::string& dir) {
  std::string path = dir + "/manifest.json";
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  nlohmann::json json = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return absl::DataLossError(absl::StrCat("corrupt manifest (", path, " is not valid JSON)"));
  absl::StatusOr<Manifest> manifest = FromJson(json);
  if (!manifest.ok()) return absl::DataLossError(absl::StrCat(manifest.status().message(), " (", path, ")"));
  manifest->prefix = dir;
  return manifest;
}

}  // namespace iu
