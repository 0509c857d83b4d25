// The runtime spec: what goes into a runtime (requirements, where they come from, what is loaded
// before user code) and the runtime key, the digest of everything that makes one runtime differ
// from another. The default spec ships in assets/default-spec.toml; `--spec`, `--with`, the
// source options, their INFERENCEUTILS_* variables and a script's PEP 723 block change it.
// The format is documented in docs/spec.md. Pure functions, no processes, no network.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace iu {

struct PipConfig;

// Where packages come from (pip's --index-url, --extra-index-url, --find-links, --trusted-host).
struct Sources {
  std::string index_url;  // "" = pip's default (PyPI)
  std::vector<std::string> extra_index_urls;
  std::vector<std::string> find_links;     // URLs or absolute paths
  std::vector<std::string> trusted_hosts;  // pip's --trusted-host (in the key only when set)
  bool offline = false;  // no network at all: only local (file://, path) indexes and links

  // Where each value came from, for `info` and `-v` (not part of the key): keyed by
  // OriginKey(field, value); field is "index_url", "extra_index_urls", "find_links",
  // "trusted_hosts" or "offline".
  std::map<std::string, std::string> origins;
  static std::string OriginKey(absl::string_view field, absl::string_view value);
  std::string OriginOf(absl::string_view field, absl::string_view value) const;

  nlohmann::json ToJson() const;  // what goes into the key
  // Every source with its origin and whether it is used ({"kind", "value", "origin", "used"}),
  // PyPI included when it is the default index.
  nlohmann::json Described() const;
};

// A local index or link (a path or a file:// URL): still used offline.
bool IsLocalSource(absl::string_view url);

// A spec's settings for one backend, applied on top of the backend decision's own recipe.
struct BackendSettings {
  std::map<std::string, std::string> build_env;  // merged over the decision's, spec wins
  bool wheel_indexes_set = false;                // false: the decision's prebuilt indexes
  std::vector<std::string> wheel_indexes;        // replaces the decision's ([] = build from source)

  nlohmann::json ToJson() const;
};

struct RuntimeSpec {
  std::vector<std::string> requirements;  // PEP 508 strings as given (deduplicated)
  std::vector<std::string> preload;       // modules imported before user code, in order
  std::vector<std::string> libraries;     // shared libraries loaded first (absolute or runtime-relative)
  std::string backend_package = "llama-cpp-python";  // gets the backend's build env / wheel index; "" = none
  Sources sources;
  std::map<std::string, std::string> build_env;     // extra env for pip and builds (user's)
  std::map<std::string, BackendSettings> backends;  // [backends.<name>] tables
  std::string origin;  // where it came from, for messages ("default", a path)

  nlohmann::json ToJson() const;
};

// Parses a spec. Unknown keys, wrong types, invalid requirements or module names are errors
// (kExitConfig) naming the key and `origin`. Relative find_links paths are resolved against
// `base_dir` (the spec file's directory) when it is given.
absl::StatusOr<RuntimeSpec> ParseSpec(const std::string& toml_text, const std::string& origin,
                                      const std::string& base_dir = "");
// Reads and parses a spec file (origin = its path). A missing file is an error naming it.
absl::StatusOr<RuntimeSpec> LoadSpecFile(const std::string& path);

// The build settings for `backend` once the spec is applied to the decision's recipe:
// decision env < spec build_env < spec [backends.<backend>].build_env; wheel indexes replaced
// when the spec sets them for that backend.
void ApplyBackendSettings(const RuntimeSpec& spec, const std::string& backend,
                          std::map<std::string, std::string>* build_env,
                          std::vector<std::string>* wheel_indexes);

// A script's PEP 723 `script` block.
struct ScriptMetadata {
  std::vector<std::string> dependencies;
  std::string requires_python;  // "" = none given
  bool present = false;         // the script has a `# /// script` block
  std::string path;             // the script, for messages
};

// Reads the `script` block with the reference regex semantics of PEP 723
// (`^# /// (?P<type>[a-zA-Z0-9-]+)$` ... `^# ///$`). No block: present=false. Two `script`
// blocks, invalid TOML, wrong types or invalid dependencies: kExitConfig naming `path`.
absl::StatusOr<ScriptMetadata> ParsePep723(const std::string& script_text, const std::string& path);

// Checks a PEP 440 specifier set (">=3.10,<3.13", "==3.11.*", "~=3.11", "!=3.11.1") against
// the embedded interpreter's version ("3.11.2"). Unsatisfied: FailedPrecondition with
// kExitUnavailable naming both; an invalid specifier: kExitConfig. "" is always satisfied.
absl::Status CheckRequiresPython(const std::string& specifier, const std::string& python_version,
                                 const std::string& path);

// What the user asked for on the command line or through INFERENCEUTILS_* variables.
struct SpecOverrides {
  std::string spec_file;
  std::vector<std::string> with;
  std::string index_url;
  std::vector<std::string> extra_index_urls, find_links;
  bool offline = false;
  // Which option or variable gave each field ("--index-url", "INFERENCEUTILS_INDEX_URL"), keyed
  // by the Sources field name; set by SpecOverridesFromLookup and MergeOverrides.
  std::map<std::string, std::string> origins;
};

// INFERENCEUTILS_SPEC (path), INFERENCEUTILS_WITH (requirements separated by whitespace),
// INFERENCEUTILS_INDEX_URL, INFERENCEUTILS_EXTRA_INDEX_URL and INFERENCEUTILS_FIND_LINKS
// (whitespace-separated), INFERENCEUTILS_OFFLINE (set and not "", "0", "false", "no", "off").
SpecOverrides SpecOverridesFromEnv();
// The same from an explicit lookup (tests).
SpecOverrides SpecOverridesFromLookup(const std::map<std::string, std::string>& env);
// Command line wins per field: a non-empty command-line string or list replaces the variable's
// value; offline is on if either sets it.
SpecOverrides MergeOverrides(const SpecOverrides& command_line, const SpecOverrides& env);

// The spec a run uses: `overrides.spec_file` or else <assets_dir>/default-spec.toml, then the
// --with requirements and the script's PEP 723 dependencies appended (exact duplicates dropped),
// then the sources: the machine's pip set-up (`pip`, nullable) fills each of index_url,
// extra_index_urls, find_links and trusted_hosts the spec leaves empty; then index_url is replaced
// when given, extra_index_urls and find_links appended, offline switched on when asked.
// requires-python is not checked here (CheckRequiresPython).
absl::StatusOr<RuntimeSpec> ResolveSpec(const std::string& assets_dir, const SpecOverrides& overrides,
                                        const ScriptMetadata* script /* nullable */,
                                        const PipConfig* pip = nullptr);

// PEP 503 name normalization: lowercase, runs of "-", "_", "." become one "-".
std::string NormalizeName(absl::string_view name);
// The normalized project name a PEP 508 requirement names ("" if it names none).
std::string RequirementName(absl::string_view requirement);
// Checks that `requirement` is a PEP 508 requirement this library understands; the error
// (kExitConfig) names it and `where`.
absl::Status CheckRequirement(absl::string_view requirement, absl::string_view where);
// Canonical form for comparison and keys: normalized name, extras normalized and sorted,
// whitespace removed from the version specifiers, which are sorted; a URL and the marker kept
// (marker whitespace collapsed). Equal requirements give equal strings.
std::string NormalizeRequirement(const std::string& requirement);

struct KeyContext {
  std::string profile_key;   // the backend decision's profile key ("cpu-0123...")
  std::string python_abi;    // "cp311"
  std::string platform_tag;  // "manylinux_2_36_x86_64"
  std::string backend;       // the spec's [backends.<backend>] settings that count; "" = the
                             // profile key's prefix before '-'
  std::string python_home;   // the launcher's Python home ("3.11.2-<digest>"): a launcher with
                             // another stdlib never reuses the runtime
};

// 2: runtimes on the launcher's own Python home (pyvenv.cfg home = the home's bin).
constexpr int kRuntimeFormatVersion = 2;

// The canonical JSON (sorted keys, compact) of what the key is a digest of: requirements
// normalized, deduplicated and sorted; preload and libraries in order; backend_package; sources;
// build_env; the chosen backend's settings; the key context; kRuntimeFormatVersion. `origin`
// is not part of it: the same content from two files is the same runtime.
nlohmann::json RuntimeKeyJson(const RuntimeSpec& spec, const KeyContext& context);
std::string RuntimeKeyInputs(const RuntimeSpec& spec, const KeyContext& context);
// The first 16 hex digits of the SHA-256 of RuntimeKeyInputs.
std::string RuntimeKey(const RuntimeSpec& spec, const KeyContext& context);

}  // namespace iu
