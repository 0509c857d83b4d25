// runtime build [--backend NAME] [--cuda-arch LIST [--cuda X.Y]] [--rebuild] [--json]
// Provisions the spec's runtime for this machine, or for a target profile (a build host with nvcc
// and no GPU making the runtime for machines with those GPUs: target.h), and says its key, so that
// `runtime pack KEY` serves those machines.
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "commands.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/json_text.h"
#include "selection.h"
#include "terminal_progress.h"

namespace iu {

absl::StatusOr<int> CmdRuntimeBuild(const Invocation& given, const std::vector<std::string>& given_args) {
  Invocation invocation = given;
  std::vector<std::string> args = given_args;
  if (absl::Status target = TakeTargetArgs(args, invocation.options.target, "runtime build"); !target.ok()) {
    return target;
  }
  bool json = false, rebuild = false;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--json") {
      json = true;
    } else if (args[i] == "--rebuild") {
      rebuild = true;
    } else if (args[i] == "--backend" && i + 1 < args.size() && !args[i + 1].empty()) {
      invocation.options.backend = args[++i];
    } else {
      return UsageError(absl::StrCat("runtime build: unknown argument '", args[i],
                                     "' (runtime build [--backend NAME] [--cuda-arch LIST [--cuda X.Y]] "
                                     "[--rebuild] [--json])"));
    }
  }
  return ProvisionSelected(invocation, rebuild, json, /*summary=*/true);
}

absl::StatusOr<int> ProvisionSelected(const Invocation& invocation, bool rebuild, bool json, bool summary) {
  absl::StatusOr<Selection> selection = Select(invocation, std::nullopt);
  if (!selection.ok()) return selection.status();
  ProvisionOptions options = ProvisionOptionsFor(invocation.options);
  options.rebuild = rebuild;
  TerminalProgress progress(invocation.options.quiet, invocation.options.verbose);
  absl::StatusOr<Manifest> manifest = EnsureRuntime(selection->store, selection->request, options, progress);
  progress.Finish();
  if (!manifest.ok()) return manifest.status();

  const Decision& d = selection->decision;
  std::string made_for = d.target.is_object() ? absl::StrCat("machines with ", TargetSummary(d.target), " or newer")
                                              : "this machine";
  if (json) {
    nlohmann::json out = {{"key", manifest->key},   {"prefix", manifest->prefix}, {"backend", manifest->backend},
                          {"profile_key", d.profile_key}, {"target", d.target},     {"source", manifest->source}};
    std::cout << DumpJson(out, 2) << "\n";
  } else {
    std::cout << manifest->prefix << "\n";
    if (summary && !invocation.options.quiet) {
      std::cerr << "runtime " << manifest->key << " (" << manifest->backend << ", for " << made_for
                << "); `inferenceutils runtime pack " << manifest->key.substr(0, 12)
                << " -o FILE.tar.zst` makes its bundle\n";
    }
  }
  return 0;
}

}  // namespace iu
