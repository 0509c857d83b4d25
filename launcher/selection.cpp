#include "selection.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "inferenceutils/env_values.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/pip_config.h"
#include "inferenceutils/python.h"
#include "inferenceutils/python_home.h"

namespace iu {

std::string ForcedBackend(const LauncherOptions& options) {
  std::string backend = options.backend.empty() ? Env("INFERENCEUTILS_BACKEND") : options.backend;
  if (!options.target.empty() && (backend.empty() || backend == "auto")) return "cuda";
  return backend == "auto" ? "" : backend;
}

absl::StatusOr<nlohmann::json> ApplyTargetOf(const LauncherOptions& options, Facts& facts) {
  if (options.target.empty()) return nlohmann::json();
  if (std::string backend = ForcedBackend(options); backend != "cuda") {
    return UsageError(absl::StrCat("--cuda-arch describes CUDA machines, but the backend asked for is ", backend,
                                   " (--backend or INFERENCEUTILS_BACKEND); use --backend cuda"));
  }
  absl::StatusOr<TargetProfile> applied = ApplyTarget(options.target, facts);
  if (!applied.ok()) return applied.status();
  return applied->ToJson();
}

ProvisionOptions ProvisionOptionsFor(const LauncherOptions& launcher) {
  ProvisionOptions options;
  options.allow_build = !launcher.no_build;
  options.bundles = launcher.bundles;
  // A bad value was refused before the command started (CheckEnvValues in main).
  options.lock_timeout = EnvSeconds("INFERENCEUTILS_LOCK_TIMEOUT", absl::Seconds(kDefaultLockTimeoutSeconds))
                             .value_or(absl::Seconds(kDefaultLockTimeoutSeconds));
  return options;
}

absl::StatusOr<Selection> Select(const Invocation& invocation, const std::optional<std::string>& script) {
  std::string store = StoreRoot(invocation.options.home);
  Facts facts = LoadOrDetectFacts(store, DetectOptionsFromEnv());
  absl::StatusOr<nlohmann::json> target = ApplyTargetOf(invocation.options, facts);
  if (!target.ok()) return target.status();
  absl::StatusOr<Decision> decision =
      Decide(facts, ForcedBackend(invocation.options), AssetsDir() + "/backends.toml");
  if (!decision.ok()) return decision.status();
  decision->target = *std::move(target);
  return SelectFor(invocation, script, std::move(facts), *std::move(decision));
}

absl::StatusOr<Selection> SelectFor(const Invocation& invocation, const std::optional<std::string>& script,
                                    Facts facts, Decision decision) {
  const LauncherOptions& options = invocation.options;
  Selection s;
  s.store = Store(StoreRoot(options.home));
  s.facts = std::move(facts);
  s.decision = std::move(decision);

  SpecOverrides command_line;
  command_line.spec_file = options.spec_file;
  command_line.with = options.with;
  command_line.index_url = options.index_url;
  command_line.extra_index_urls = options.extra_index_urls;
  command_line.find_links = options.find_links;
  command_line.offline = options.offline;
  SpecOverrides overrides = MergeOverrides(command_line, SpecOverridesFromEnv());

  ScriptMetadata metadata;
  if (script) {
    // A script that cannot be read is python's to report (exit 2, its message). Only a regular
    // file is scanned: a pipe, FIFO or /dev/stdin would be consumed (or block) before python reads it.
    absl::StatusOr<std::string> text = absl::NotFoundError("not a regular file");
    if (IsRegularFile(*script)) text = ReadFile(*script);
    if (text.ok()) {
      absl::StatusOr<ScriptMetadata> parsed = ParsePep723(*text, *script);
      if (!parsed.ok()) return parsed.status();
      metadata = *std::move(parsed);
      if (!metadata.requires_python.empty()) {
        if (auto status = CheckRequiresPython(metadata.requires_python, EmbeddedPythonVersion(), *script);
            !status.ok()) {
          return status;
        }
      }
    }
  }
  // The machine's pip set-up: where packages come from (defaults below the spec, keyed) and
  // how to connect (given to pip, not keyed).
  PipConfig pip = PipConfigFromEnv();
  absl::StatusOr<RuntimeSpec> spec =
      ResolveSpec(AssetsDir(), overrides, metadata.present ? &metadata : nullptr, &pip);
  if (!spec.ok()) return spec.status();
  s.spec = *std::move(spec);

  KeyContext context{s.decision.profile_key, s.facts.python.abi_tag, s.facts.python.platform_tag,
                     s.decision.backend, CurrentHome().id};
  s.key = RuntimeKey(s.spec, context);

  BuildRequest& r = s.request;
  r.key = s.key;
  r.key_inputs = RuntimeKeyJson(s.spec, context);
  r.requirements = s.spec.requirements;
  r.preload = s.spec.preload;
  r.libraries = s.spec.libraries;
  r.backend_package = s.spec.backend_package;
  r.index_url = s.spec.sources.index_url;
  r.extra_index_urls = s.spec.sources.extra_index_urls;
  r.find_links = s.spec.sources.find_links;
  r.trusted_hosts = s.spec.sources.trusted_hosts;
  r.offline = s.spec.sources.offline;
  r.sources = s.spec.sources.Described();
  r.pip_env = pip.ConnectionEnv();
  for (const auto& [name, setting] : pip.connection) r.pip_env_origins[name] = setting.origin;
  if (!s.spec.backend_package.empty()) {
    r.build_env = s.decision.build_env;
    r.wheel_indexes = s.decision.wheel_indexes;
  }
  // decision < the spec's build_env < its [backends.<chosen>] table.
  ApplyBackendSettings(s.spec, s.decision.backend, &r.build_env, &r.wheel_indexes);
  r.backend = s.decision.backend;
  r.cuda_stubs = s.decision.cuda_stubs;
  r.profile_key = s.decision.profile_key;
  r.decision = s.decision.ToJson();
  r.launcher = CurrentHome().launcher;
  r.facts = s.facts;           // which prebuilt bundles this machine can use
  r.assets_dir = AssetsDir();  // <assets>/bundles: the last bundle source
  return s;
}

}  // namespace iu
