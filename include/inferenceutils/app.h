// Bundled apps (docs/apps.md): one executable file = this launcher + an appended payload (the
// app's files, the launcher's assets, the runtime spec, optional runtime bundles) + a fixed
// footer that locates it. The app finds its own payload, verifies it, extracts it once into the
// store keyed by its SHA-256 and runs its entry in the runtime its spec selects.
//
//   OUT = launcher | payload | footer
//   payload = header "IUAPPBEG" + format
//           | archive: zstd(tar(app/..., assets/..., spec.toml?))
//           | bundle 1 (.tar.zst, as it is) | bundle 2 | ...
//           | app.json (the app manifest: name, version, entry, spec, the archive's and every
//             bundle's offset, size and SHA-256)
//   footer (kAppFooterSize bytes): payload offset and size, app.json's offset and size, the
//           SHA-256 of the whole payload, format, magic "IU-APP01" in the last 8 bytes.
//
// Errors about a damaged payload carry kExitBundle; bad `app build` input kExitUsage or
// kExitConfig. Library code never prints.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "inferenceutils/progress.h"
#include "nlohmann/json.hpp"

namespace iu {

constexpr int kAppFormat = 1;
constexpr size_t kAppFooterSize = 96;
constexpr char kAppFooterMagic[] = "IU-APP01";   // the file's last 8 bytes
constexpr char kAppHeaderMagic[] = "IUAPPBEG";   // the payload's first 8 bytes
constexpr size_t kAppHeaderSize = 16;

struct AppFooter {
  uint64_t payload_offset = 0;   // where the payload starts (the launcher's size)
  uint64_t payload_size = 0;     // bytes from payload_offset up to the footer
  uint64_t manifest_offset = 0;  // app.json, relative to payload_offset
  uint64_t manifest_size = 0;
  std::string sha256;            // hex SHA-256 of the payload's bytes
  // The app's id in the store: the first 16 hex digits of the payload's SHA-256.
  std::string id() const { return sha256.substr(0, 16); }
};

// The footer's bytes (kAppFooterSize).
std::string EncodeAppFooter(const AppFooter& footer);
// Parses a footer read from the end of a file of `file_size` bytes; nullopt when the bytes do
// not end with the magic (no payload); an error (kExitBundle) when the magic is there but the
// rest does not fit the file.
absl::StatusOr<std::optional<AppFooter>> DecodeAppFooter(absl::string_view bytes, uint64_t file_size,
                                                         const std::string& path);

// An executable as an app: its footer and which copy of the file it is.
struct AppFile {
  std::string path;
  AppFooter footer;
  std::string identity;  // device, inode, size, mtime, ctime: a file verified once is trusted again
};

// Cheap (open, fstat, one or two preads): nullopt for a plain launcher. A file with a payload
// but no valid footer (truncated, damaged footer) is an error (kExitBundle).
absl::StatusOr<std::optional<AppFile>> OpenAppFile(const std::string& path);

// `MODULE:FUNC` (FUNC may be dotted) or a script path relative to the app directory.
struct AppEntry {
  std::string module, function;  // MODULE:FUNC
  std::string script;            // or a script
  std::string ToString() const { return script.empty() ? module + ":" + function : script; }
};
// Parses MODULE:FUNC (dotted identifiers). Errors carry kExitUsage.
absl::StatusOr<AppEntry> ParseAppEntry(const std::string& text);

// What `app build` needs: the command line over app.toml (or pyproject.toml's
// [tool.inferenceutils]). Paths are absolute once loaded.
struct AppSettings {
  std::string name, entry, script, icon, spec, version, output;
  std::vector<std::string> bundles;   // runtime bundles to embed (.tar.zst)
  std::vector<std::string> exclude;   // glob patterns (fnmatch) of app files to leave out
  int level = 0;                      // zstd level; 0 = default (19)
  std::string origin;                 // the settings file, "" = none
};

// <app_dir>/app.toml, else [tool.inferenceutils] of <app_dir>/pyproject.toml; [project] name and
// version of pyproject.toml are defaults either way. Relative paths are resolved against
// app_dir. No file: empty settings. Unknown keys or wrong types: kExitConfig naming the file.
absl::StatusOr<AppSettings> LoadAppSettings(const std::string& app_dir);
// The same from text (`pyproject`: the settings are its [tool.inferenceutils] table).
absl::StatusOr<AppSettings> ParseAppSettings(const std::string& text, const std::string& origin,
                                             const std::string& base_dir, bool pyproject);
// Each field the command line gives replaces the file's (an entry replaces a script and back).
AppSettings MergeAppSettings(const AppSettings& file, const AppSettings& command_line);

struct AppBuildRequest {
  std::string app_dir;
  AppSettings settings;   // merged
  std::string launcher;   // the executable to copy (its own payload, if any, is left out)
  std::string assets_dir; // the launcher's assets, carried by the app
  std::string home_archive;  // the Python home as .tar.zst ("" = an app without one: a system-Python build)
  std::string home_id;
};

struct AppBuildResult {
  std::string output, desktop, icon;  // icon: the PNG written beside OUT ("" = none)
  std::string sha256;                 // of the payload
  uint64_t files = 0;                 // app files packed
  uint64_t payload_bytes = 0;
  uint64_t launcher_bytes = 0;
  nlohmann::json manifest;            // app.json
};

// Writes OUT (mode 0755), OUT.desktop and, with an icon, OUT.png; each atomically, and nothing
// on failure. Bad input: kExitUsage (arguments) or kExitConfig (settings, spec, bundle).
absl::StatusOr<AppBuildResult> BuildApp(const AppBuildRequest& request, Progress& progress);

// A Linux desktop entry (Type=Application, Name, Exec, Icon, Terminal=false).
std::string DesktopEntry(const std::string& name, const std::string& exec_path, const std::string& icon,
                         const std::string& comment);
// `path` as one argument of a desktop entry's Exec key (quoted and escaped when needed).
std::string DesktopExecArgument(const std::string& path);

// An app extracted into the store.
struct InstalledApp {
  std::string dir;                   // <store>/apps/<id>
  nlohmann::json manifest;           // app.json
  std::string files_dir;             // <dir>/app: the app's own files
  std::string assets_dir;            // <dir>/assets
  std::string spec_file;             // "" = the default spec of assets_dir
  std::vector<std::string> bundles;  // embedded runtime bundles, extracted
  // <dir> as a launcher install tree (bin/inferenceutils, share/inferenceutils, and
  // lib/inferenceutils/python3.11 → <store>/homes/<home id>): "" for an app without a Python home.
  std::string launcher_prefix;
  AppEntry entry;
  bool verified = false;             // this start hashed the payload
  bool extracted = false;            // this start extracted it
};

// <store>/apps/<id>.
std::string AppInstallDir(const std::string& store_root, const std::string& id);

// The app in the store. Warm (this file verified before): a stat and app.json read. Otherwise
// the payload's SHA-256 is checked (kExitBundle when it differs), then the payload is extracted
// once: under <store>/locks/app-<id>.lock into a staging directory renamed into place.
absl::StatusOr<InstalledApp> InstallApp(const std::string& store_root, const AppFile& app,
                                        absl::Duration lock_timeout, Progress& progress);

// The app manifest (app.json) read from the file, unverified (for messages before extraction).
absl::StatusOr<nlohmann::json> ReadAppManifest(const AppFile& app);

// Python's command line (InterpreterConfig::argv) that runs the entry with
// sys.argv == [app_path, *args]; with `traceback_log`, an uncaught exception's traceback is also
// appended there.
std::vector<std::string> AppPythonArgv(const InstalledApp& app, const std::string& app_path,
                                       const std::vector<std::string>& args, const std::string& traceback_log);

}  // namespace iu
