// runtime pack [KEY] -o FILE.tar.zst [--level N] [--threads N] [--isa LEVEL] [--min-cuda X.Y]
// runtime pack --index DIR        (writes DIR/index.json for serving DIR over HTTP)
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "commands.h"
#include "inferenceutils/bundle.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/paths.h"
#include "runtime_keys.h"
#include "selection.h"
#include "terminal_progress.h"

namespace iu {

absl::StatusOr<int> CmdRuntimePack(const Invocation& invocation, const std::vector<std::string>& args) {
  std::string key, output, index_dir;
  PackOptions options;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](std::string* out) -> absl::Status {
      if (i + 1 >= args.size()) return UsageError(absl::StrCat("runtime pack: ", a, " needs a value"));
      *out = args[++i];
      return absl::OkStatus();
    };
    std::string text;
    if (a == "-o" || a == "--output") {
      if (auto s = value(&output); !s.ok()) return s;
    } else if (a == "--index") {
      if (auto s = value(&index_dir); !s.ok()) return s;
    } else if (a == "--level" || a == "--threads") {
      if (auto s = value(&text); !s.ok()) return s;
      int n = 0;
      if (!absl::SimpleAtoi(text, &n) || n < (a == "--level" ? 1 : 0) || n > (a == "--level" ? 22 : 256)) {
        return UsageError(absl::StrCat("runtime pack: ", a, " needs a number (level 1..22), got '", text, "'"));
      }
      (a == "--level" ? options.level : options.threads) = n;
    } else if (a == "--isa") {
      if (auto s = value(&options.isa); !s.ok()) return s;
    } else if (a == "--min-cuda") {
      if (auto s = value(&options.min_driver_cuda); !s.ok()) return s;
    } else if (!absl::StartsWith(a, "-") && key.empty()) {
      key = a;
    } else {
      return UsageError(absl::StrCat("runtime pack: unknown argument '", a,
                                     "' (runtime pack [KEY] -o FILE.tar.zst [--level N] [--threads N] "
                                     "[--isa LEVEL] [--min-cuda X.Y], or runtime pack --index DIR)"));
    }
  }
  if (!index_dir.empty()) {
    absl::StatusOr<int> n = WriteBundleIndex(index_dir);
    if (!n.ok()) return n.status();
    std::cout << "indexed " << *n << " bundle" << (*n == 1 ? "" : "s") << " in " << index_dir << "/index.json\n";
    return 0;
  }
  if (output.empty()) return UsageError("runtime pack needs -o FILE.tar.zst");
  Store store(StoreRoot(invocation.options.home));
  absl::StatusOr<Manifest> manifest = RuntimeToUse(invocation, store, key, "pack");
  if (!manifest.ok()) return manifest.status();
  TerminalProgress progress(invocation.options.quiet, invocation.options.verbose);
  absl::StatusOr<PackResult> packed = PackRuntime(manifest->prefix, output, options, progress);
  progress.Finish();
  if (!packed.ok()) return packed.status();
  std::cout << absl::StrFormat("packed %s: %d entries, %.1f MiB → %.1f MiB\nsha256 %s\n", packed->path,
                               packed->files, packed->unpacked_bytes / 1048576.0, packed->packed_bytes / 1048576.0,
                               packed->sha256);
  return 0;
}

}  // namespace iu
