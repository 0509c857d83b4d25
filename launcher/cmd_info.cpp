// info [--json] [--refresh]: the detected hardware, the backend decision with its reasons, the
// build flags, the profile key and the store.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "commands.h"
#include "inferenceutils/json_text.h"
#include "inferenceutils/backend.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/hardware.h"
#include "inferenceutils/paths.h"
#include "info_json.h"
#include "inferenceutils/python_home.h"
#include "inferenceutils/bundle.h"
#include "selection.h"

namespace iu {
// Where the packages of that runtime come from, each source with its origin (spec, option,
// INFERENCEUTILS_*, PIP_*, pip.conf), and pip's connection settings (not part of the key).
nlohmann::json SourcesSection(const absl::StatusOr<Selection>& s) {
  if (!s.ok()) return {{"error", std::string(s.status().message())}};
  nlohmann::json connection = nlohmann::json::array();
  for (const auto& [name, value] : s->request.pip_env) {
    std::string option = absl::AsciiStrToLower(absl::StrReplaceAll(name.substr(4), {{"_", "-"}}));
    auto it = s->request.pip_env_origins.find(option);
    connection.push_back({{"variable", name}, {"value", value},
                          {"origin", it == s->request.pip_env_origins.end() ? "" : it->second}});
  }
  nlohmann::json prebuilt = nlohmann::json::array();
  for (const auto& index : s->request.wheel_indexes) {
    prebuilt.push_back({{"value", index}, {"used", !s->request.offline || IsLocalSource(index)}});
  }
  return {{"runtime_key", s->key}, {"offline", s->spec.sources.offline}, {"sources", s->request.sources},
          {"prebuilt_indexes", prebuilt}, {"connection", connection}};
}

namespace {

std::string Gib(uint64_t bytes) { return absl::StrFormat("%.1f GiB", static_cast<double>(bytes) / (1ull << 30)); }

void Line(std::string& out, const std::string& label, const std::string& value) {
  absl::StrAppendFormat(&out, "  %-11s %s\n", label, value);
}

void Notes(std::string& out, const std::vector<std::string>& notes) {
  for (const std::string& note : notes) Line(out, "", absl::StrCat("note: ", note));
}

// The bundles the runtime this invocation needs could come from, and which one would be used.
nlohmann::json BundlesSection(const Invocation& invocation, const absl::StatusOr<Selection>& s) {
  if (!s.ok()) return {{"error", std::string(s.status().message())}};
  return BundlesJson(ProvisionOptionsFor(invocation.options).bundles,
                     BundleTarget{s->key, s->request.key_inputs, s->decision.backend}, s->facts);
}

void HumanSources(std::string& out, const nlohmann::json& j) {
  out += "\nSources\n";
  if (j.contains("error")) {
    Line(out, "error", j["error"].get<std::string>());
    return;
  }
  for (const auto& row : j["sources"]) {
    std::string text = absl::StrCat(row["value"].get<std::string>(), "  (", row["origin"].get<std::string>(), ")");
    if (!row["used"].get<bool>()) absl::StrAppend(&text, "  not used: ", row.value("why_not", ""));
    Line(out, row["kind"].get<std::string>(), text);
  }
  for (size_t i = 0; i < j["prebuilt_indexes"].size(); ++i) {
    const auto& row = j["prebuilt_indexes"][i];
    Line(out, i == 0 ? "prebuilt" : "",
         absl::StrCat(row["value"].get<std::string>(), row["used"].get<bool>() ? "" : "  not used: offline"));
  }
  for (const auto& row : j["connection"]) {
    Line(out, "connection", absl::StrCat(row["variable"].get<std::string>(), "=", row["value"].get<std::string>(),
                                         "  (", row["origin"].get<std::string>(), ", given to pip, not in the key)"));
  }
}

void HumanBundles(std::string& out, const nlohmann::json& b) {
  out += "\nBundles\n";
  if (b.contains("error")) {
    Line(out, "error", b["error"].get<std::string>());
    return;
  }
  Line(out, "for", absl::StrCat("runtime ", b["runtime_key"].get<std::string>()));
  const auto& sources = b["sources"];
  std::vector<std::string> names;
  for (const auto& f : sources["--bundle"]) names.push_back(absl::StrCat("--bundle ", f.get<std::string>()));
  if (!sources["INFERENCEUTILS_BUNDLES"].get<std::string>().empty()) {
    names.push_back(absl::StrCat("INFERENCEUTILS_BUNDLES=", sources["INFERENCEUTILS_BUNDLES"].get<std::string>()));
  }
  if (!sources["assets"].get<std::string>().empty()) names.push_back(sources["assets"].get<std::string>());
  Line(out, "sources", names.empty() ? "(none)" : absl::StrJoin(names, ", "));
  const auto& rows = b["candidates"];
  if (rows.empty()) Line(out, "seen", "(no bundles: the runtime is built)");
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    std::string verdict = r["chosen"].get<bool>() ? "chosen"
                          : r.contains("rejected") ? absl::StrCat("rejected: ", r["rejected"].get<std::string>())
                                                   : "usable, another ranks higher";
    Line(out, i == 0 ? "seen" : "",
         absl::StrCat(r["location"].get<std::string>(), " (", r["backend"].get<std::string>(), "): ", verdict));
  }
  for (const auto& note : b["notes"]) Line(out, "", absl::StrCat("note: ", note.get<std::string>()));
}

std::string Human(const Facts& f, const Decision& d, const std::string& store) {
  std::string out = "Hardware\n";
  const CpuFacts& c = f.cpu;
  Line(out, "CPU", absl::StrCat(c.model_name.empty() ? "(unknown model)" : c.model_name,
                                c.vendor.empty() ? "" : absl::StrCat(" (", c.vendor, ")"), ", ", c.arch));
  Line(out, "cores", absl::StrCat(c.logical_cores, " logical, ", c.physical_cores, " physical, ", c.usable_cores,
                                  " usable",
                                  c.cgroup_cpu_quota > 0 ? absl::StrFormat(" (cgroup %s quota %.2f CPUs)",
                                                                           c.cgroup_version, c.cgroup_cpu_quota)
                                                         : std::string()));
  Line(out, "ISA", absl::StrCat(c.isa_level, c.feature_source.empty() ? "" : absl::StrCat(" (from ", c.feature_source, ")")));
  Line(out, "features", c.features.empty() ? "(none detected)" : absl::StrJoin(c.features, " "));
  Line(out, "memory", absl::StrCat(Gib(f.memory.total_bytes), " total, ", Gib(f.memory.available_bytes), " available",
                                   f.memory.cgroup_limit_bytes ? absl::StrCat(", cgroup limit ", Gib(f.memory.cgroup_limit_bytes)) : ""));
  Line(out, "OS", absl::StrCat(f.os.distro.empty() ? f.os.system : f.os.distro, ", kernel ", f.os.kernel, ", ",
                               f.os.libc, " ", f.os.libc_version));
  Line(out, "Python", absl::StrCat(f.python.version, " (", f.python.abi_tag, ", ", f.python.platform_tag, ")"));
  const NvidiaFacts& nv = f.nvidia;
  if (!nv.api.empty()) {
    Line(out, "NVIDIA", absl::StrCat("driver ", nv.driver_version.empty() ? "?" : nv.driver_version, ", CUDA ",
                                     nv.cuda_version, " (via ", nv.api, ": ", nv.library, ")",
                                     nv.visible_devices_set ? absl::StrCat(", CUDA_VISIBLE_DEVICES=", nv.visible_devices) : ""));
    for (const GpuDevice& g : nv.devices) {
      Line(out, "", absl::StrCat(g.index, ": ", g.name, " (sm_", absl::StrJoin(absl::StrSplit(g.arch, '.'), ""), "), ",
                                 Gib(g.memory_bytes), g.uuid.empty() ? "" : absl::StrCat(", ", g.uuid)));
    }
  } else {
    Line(out, "NVIDIA", nv.driver_present ? absl::StrCat("driver ", nv.driver_version, " (API unusable)") : "no driver");
  }
  Line(out, "", nv.nvcc_path.empty() ? "nvcc: not found"
                                     : absl::StrCat("nvcc ", nv.nvcc_version.empty() ? "?" : nv.nvcc_version, " at ", nv.nvcc_path));
  Notes(out, nv.notes);
  const RocmFacts& r = f.rocm;
  if (!r.devices.empty()) {
    Line(out, "AMD ROCm", absl::StrCat(r.devices.size(), " GPU(s)"));
    for (const GpuDevice& g : r.devices) {
      Line(out, "", absl::StrCat(g.index, ": ", g.name, " (", g.arch, "), ", Gib(g.memory_bytes)));
    }
  } else {
    Line(out, "AMD ROCm", r.kfd_present ? "kfd present, no GPU visible" : "no GPU");
  }
  if (!r.hip_path.empty()) Line(out, "", absl::StrCat("ROCm ", r.hip_version, " at ", r.hip_path, r.hipcc ? " (hipcc)" : " (no hipcc)"));
  if (r.kfd_present) Notes(out, r.notes);
  const AppleFacts& a = f.apple;
  if (a.macos) {
    Line(out, "Apple", absl::StrCat(a.chip, a.apple_silicon ? ", Apple Silicon" : ", Intel", a.rosetta ? ", under Rosetta 2" : "",
                                    a.metal ? ", Metal" : ""));
    Notes(out, a.notes);
  }
  Line(out, "Vulkan", f.vulkan.loader.empty() ? "no loader"
                                               : absl::StrCat(f.vulkan.loader, ", ICDs: ",
                                                              f.vulkan.icds.empty() ? "none" : absl::StrJoin(f.vulkan.icds, " ")));
  Line(out, "compilers", absl::StrCat("cc: ", f.tools.c_compiler.empty() ? "none" : f.tools.c_compiler,
                                      ", glslc: ", f.tools.glslc.empty() ? "none" : f.tools.glslc));
  Notes(out, f.notes);

  out += "\nDecision\n";
  Line(out, "backend", absl::StrCat(d.backend, d.forced ? " (forced)" : ""));
  if (d.target.is_object()) {
    Line(out, "target", absl::StrCat(TargetSummary(d.target), " (--cuda-arch: for machines with these GPUs, not this one)"));
  }
  for (size_t i = 0; i < d.reasons.size(); ++i) Line(out, i == 0 ? "why" : "", d.reasons[i]);
  for (const auto& [name, value] : d.build_env) Line(out, name, value);
  if (d.wheel_indexes.empty()) Line(out, "wheels", "(no prebuilt index fits: source build)");
  for (size_t i = 0; i < d.wheel_indexes.size(); ++i) Line(out, i == 0 ? "wheels" : "", d.wheel_indexes[i]);
  Line(out, "source", d.source_build_possible ? "a local build is possible" : "no local build possible");
  Line(out, "profile", d.profile_key);

  out += "\nPython home\n";
  {
    const PythonHome& home = CurrentHome();
    Line(out, "home", absl::StrCat(home.prefix, home.source == "system" ? " (the system's python3.11: a build without a home of its own)"
                                              : home.source == "store" ? " (an app's, in the store)" : " (carried beside the launcher)"));
    Line(out, "identity", home.id);
    if (absl::Status ok = CheckHome(home); !ok.ok()) Line(out, "problem", std::string(ok.message()));
  }

  out += "\nStore\n";
  Line(out, "location", store);
  Line(out, "facts", f.source == "cache" ? absl::StrCat("cached in ", store, "/facts.json")
                                         : absl::StrFormat("detected in %.2f ms", f.detect_ms));
  const nlohmann::json store_doc = InfoJson(f, d, store)["store"];
  const nlohmann::json& runtimes = store_doc["runtimes"];
  if (runtimes.empty()) Line(out, "runtimes", "(none)");
  for (size_t i = 0; i < runtimes.size(); ++i) {
    const auto& r = runtimes[i];
    Line(out, i == 0 ? "runtimes" : "",
         absl::StrCat(r["name"].get<std::string>(), " ", r.value("backend", "?"), " ", r.value("source", ""),
                      r["matches"].get<bool>() ? " (matches this machine)" : " (made for another profile)"));
  }
  const nlohmann::json& builds = store_doc["background_builds"];
  for (size_t i = 0; i < builds.size(); ++i) {
    const auto& b = builds[i];
    std::string state = b["state"].get<std::string>();
    std::string text =
        state == "failed"
            ? absl::StrCat(b["key"].get<std::string>(), " ", b["backend"].get<std::string>(), " failed at ",
                           b["failed"].get<std::string>(), " (log: ", b["log"].get<std::string>(), ")")
            : absl::StrCat(b["key"].get<std::string>(), " ", b["backend"].get<std::string>(), " ", state, " since ",
                           b["started"].get<std::string>(), ", step: ", b["step"].get<std::string>(),
                           " (log: ", b["log"].get<std::string>(), ")");
    Line(out, i == 0 ? "background" : "", text);
  }
  return out;
}

}  // namespace

absl::StatusOr<int> CmdInfo(const Invocation& given) {
  Invocation invocation = given;
  bool json = false, refresh = false;
  std::vector<std::string> args = invocation.args;
  if (absl::Status target = TakeTargetArgs(args, invocation.options.target, "info"); !target.ok()) return target;
  for (const std::string& arg : args) {
    if (arg == "--json") json = true;
    else if (arg == "--refresh") refresh = true;
    else return UsageError(absl::StrCat("info: unknown argument '", arg,
                                        "' (usage: inferenceutils info [--json] [--refresh] [--cuda-arch LIST [--cuda X.Y]])"));
  }
  std::string backend = ForcedBackend(invocation.options);
  std::string store = StoreRoot(invocation.options.home);
  DetectOptions options = DetectOptionsFromEnv();
  Facts facts = refresh ? RefreshFacts(store, options) : LoadOrDetectFacts(store, options);
  absl::StatusOr<nlohmann::json> target = ApplyTargetOf(invocation.options, facts);
  if (!target.ok()) return target.status();
  absl::StatusOr<Decision> decision = Decide(facts, backend, AssetsDir() + "/backends.toml");
  if (!decision.ok()) return decision.status();
  decision->target = *std::move(target);

  absl::StatusOr<Selection> selection = SelectFor(invocation, std::nullopt, facts, *decision);
  nlohmann::json bundles = BundlesSection(invocation, selection);
  nlohmann::json sources = SourcesSection(selection);
  if (json) {
    nlohmann::json doc = InfoJson(facts, *decision, store);
    doc["bundles"] = bundles;
    doc["sources"] = sources;
    std::fputs((DumpJson(doc, 2) + "\n").c_str(), stdout);
  } else {
    std::string out = Human(facts, *decision, store);
    HumanSources(out, sources);
    HumanBundles(out, bundles);
    std::fputs(out.c_str(), stdout);
  }
  return 0;
}

}  // namespace iu
