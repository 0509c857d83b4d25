#include "python_face.h"

#include <memory>

#include "inferenceutils/json_text.h"
#include "inferenceutils/backend.h"
#include "inferenceutils/hardware.h"
#include "inferenceutils/paths.h"
#include "info_json.h"

namespace iu {
namespace {

std::string Parent(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string(".") : slash == 0 ? std::string("/") : path.substr(0, slash);
}

std::string Basename(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The store a runtime lives in: <root>/data/<id> is the usual layout.
std::string StoreOf(const std::string& prefix, const LauncherOptions& options) {
  std::string data = Parent(prefix);
  if (Basename(data) == "data") return Parent(data);
  return StoreRoot(options.home);
}

std::string InfoDocument(const std::shared_ptr<const Manifest>& manifest, const LauncherOptions& options,
                         const Selection* selection) {
  if (selection) {
    nlohmann::json doc = InfoJson(selection->facts, selection->decision, selection->store.root());
    doc["bundles"] = BundlesJson(ProvisionOptionsFor(options).bundles,
                                 BundleTarget{selection->key, selection->request.key_inputs, selection->decision.backend},
                                 selection->facts);
    doc["sources"] = SourcesSection(*selection);
    return DumpJson(doc);
  }
  // Started as <runtime>/bin/python: what `info --json` would say, from the facts cache.
  std::string store = StoreOf(manifest->prefix, options);
  Facts facts = LoadOrDetectFacts(store, DetectOptionsFromEnv());
  std::string table = AssetsDir() + "/backends.toml";
  absl::StatusOr<Decision> decision = Decide(facts, ForcedBackend(options), table);
  if (decision.ok() && decision->backend != manifest->backend && !manifest->backend.empty()) {
    // The parent launcher was told a backend (--backend): describe the one this runtime has.
    if (absl::StatusOr<Decision> forced = Decide(facts, manifest->backend, table); forced.ok()) decision = forced;
  }
  nlohmann::json doc = InfoJson(facts, decision.ok() ? *decision : Decision(), store);
  if (!decision.ok()) doc["decision"] = manifest->decision;
  // The runtime in use is the one its bundles would be for.
  doc["bundles"] = BundlesJson(ProvisionOptionsFor(options).bundles,
                               BundleTarget{manifest->key, manifest->key_inputs, manifest->backend}, facts);
  return DumpJson(doc);
}

std::string RuntimeDocument(const std::shared_ptr<const Manifest>& manifest, const Selection* selection,
                            const nlohmann::json& pending) {
  const Manifest& m = *manifest;
  nlohmann::json distributions = nlohmann::json::array();
  for (const auto& [name, version] : m.distributions) distributions.push_back({{"name", name}, {"version", version}});
  nlohmann::json spec = {{"requirements", m.requirements}, {"preload", m.preload}, {"libraries", m.libraries}};
  if (selection) spec = selection->spec.ToJson();
  return DumpJson(nlohmann::json{
      {"key", m.key},
      {"backend", m.backend},
      {"path", m.prefix},
      {"source", m.source},
      {"origin", m.source == "bundle" ? "unpacked" : "built"},
      {"created", m.created},
      {"profile_key", m.profile_key},
      {"python_version", m.python_version},
      {"python_abi", m.python_abi},
      {"executable", m.prefix + "/bin/python"},
      {"requirements", m.requirements},
      {"preload", m.preload},
      {"libraries", m.libraries},
      {"distributions", distributions},
      {"spec", spec},
      {"key_inputs", m.key_inputs},
      {"manifest", m.prefix + "/manifest.json"},
      {"launcher", SelfExecutable()},
      {"launcher_version", IU_VERSION},
      {"fallback", !pending.is_null()},
      {"pending", pending},
  });
}

}  // namespace

void AttachPythonFace(const LauncherOptions& options, const Manifest& manifest, const Selection* selection,
                      InterpreterConfig& config, nlohmann::json pending) {
  config.extra_paths.push_back(AssetsDir() + "/python");
  auto shared = std::make_shared<const Manifest>(manifest);
  config.documents["info"] = [shared, options, selection] { return InfoDocument(shared, options, selection); };
  config.documents["runtime"] = [shared, selection, pending = std::move(pending)] {
    return RuntimeDocument(shared, selection, pending);
  };
}

}  // namespace iu
