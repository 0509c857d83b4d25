// runtime push [KEY] oci://HOST[:PORT]/REPO[:TAG] [--level N] [--threads N] [--isa LEVEL]
//                                                 [--min-cuda X.Y] [--insecure-registry]
// Uploads a runtime as OCI layers and adds (or replaces) its profile in the index at TAG (docs/oci.md).
#include <cstdlib>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "commands.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/oci.h"
#include "inferenceutils/paths.h"
#include "runtime_keys.h"
#include "selection.h"
#include "terminal_progress.h"

namespace iu {

// --insecure-registry: plain HTTP to this registry for this command (INFERENCEUTILS_INSECURE_REGISTRIES).
void AllowPlainHttp(const std::string& reference) {
  absl::StatusOr<OciReference> ref = ParseOciReference(reference);
  if (!ref.ok()) return;
  const char* old = std::getenv("INFERENCEUTILS_INSECURE_REGISTRIES");
  std::string value = old && *old ? absl::StrCat(old, ",", ref->host) : ref->host;
  setenv("INFERENCEUTILS_INSECURE_REGISTRIES", value.c_str(), 1);
}

absl::StatusOr<int> CmdRuntimePush(const Invocation& invocation, const std::vector<std::string>& args) {
  std::string key, reference;
  bool insecure = false;
  OciPushOptions options;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](std::string* out) -> absl::Status {
      if (i + 1 >= args.size()) return UsageError(absl::StrCat("runtime push: ", a, " needs a value"));
      *out = args[++i];
      return absl::OkStatus();
    };
    std::string text;
    if (a == "--level" || a == "--threads") {
      if (auto s = value(&text); !s.ok()) return s;
      int n = 0;
      if (!absl::SimpleAtoi(text, &n) || n < (a == "--level" ? 1 : 0) || n > (a == "--level" ? 22 : 256)) {
        return UsageError(absl::StrCat("runtime push: ", a, " needs a number (level 1..22), got '", text, "'"));
      }
      (a == "--level" ? options.pack.level : options.pack.threads) = n;
    } else if (a == "--isa") {
      if (auto s = value(&options.pack.isa); !s.ok()) return s;
    } else if (a == "--min-cuda") {
      if (auto s = value(&options.pack.min_driver_cuda); !s.ok()) return s;
    } else if (a == "--insecure-registry") {
      insecure = true;
    } else if (IsOciLocation(a) && reference.empty()) {
      reference = a;
    } else if (!absl::StartsWith(a, "-") && key.empty() && !absl::StrContains(a, "://")) {
      key = a;
    } else {
      return UsageError(absl::StrCat("runtime push: unknown argument '", a,
                                     "' (runtime push [KEY] oci://HOST[:PORT]/REPO[:TAG] [--level N] [--threads N] "
                                     "[--isa LEVEL] [--min-cuda X.Y] [--insecure-registry])"));
    }
  }
  if (reference.empty()) return UsageError("runtime push needs a registry reference: oci://HOST[:PORT]/REPO[:TAG]");
  if (insecure) AllowPlainHttp(reference);
  absl::StatusOr<OciReference> ref = ParseOciReference(reference);
  if (!ref.ok()) return ref.status();
  if (!ref->digest.empty()) {
    return ConfigError(absl::StrCat("push needs a tag, not a digest: ", reference, " (oci://HOST/REPO:TAG)"));
  }
  Store store(StoreRoot(invocation.options.home));
  absl::StatusOr<Manifest> manifest = RuntimeToUse(invocation, store, key, "push");
  if (!manifest.ok()) return manifest.status();
  TerminalProgress progress(invocation.options.quiet, invocation.options.verbose);
  absl::StatusOr<OciPushResult> pushed = PushRuntime(store, manifest->prefix, *ref, options, progress);
  progress.Finish();
  if (!pushed.ok()) return pushed.status();
  std::cout << absl::StrFormat(
      "pushed %s (profile %s) to %s: %d layers; %d blobs uploaded (%.1f MiB of %.1f MiB), %d already there, "
      "%d mounted\nmanifest %s\nindex %s: %d profile%s\n",
      key, pushed->profile_key, pushed->reference, pushed->layers, pushed->uploaded,
      pushed->uploaded_bytes / 1048576.0, pushed->total_bytes / 1048576.0, pushed->present, pushed->mounted,
      pushed->manifest_digest, pushed->index_digest, pushed->profiles, pushed->profiles == 1 ? "" : "s");
  return 0;
}

}  // namespace iu
