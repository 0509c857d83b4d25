// runtime pull oci://HOST[:PORT]/REPO[:TAG] [--home DIR] [--insecure-registry]
// Fills a store ahead of time: the runtime this machine and spec select, from the registry's
// index (the best profile, by the rules of bundle selection), never by building (docs/oci.md).
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "commands.h"
#include "inferenceutils/bundle.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/oci.h"
#include "inferenceutils/provision.h"
#include "selection.h"
#include "terminal_progress.h"

namespace iu {

void AllowPlainHttp(const std::string& reference);  // cmd_runtime_push.cpp

absl::StatusOr<int> CmdRuntimePull(const Invocation& invocation, const std::vector<std::string>& args) {
  Invocation inv = invocation;
  std::string reference;
  bool insecure = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--home") {
      if (i + 1 >= args.size() || args[i + 1].empty()) return UsageError("runtime pull: --home needs a directory");
      inv.options.home = args[++i];
    } else if (a == "--insecure-registry") {
      insecure = true;
    } else if (IsOciLocation(a) && reference.empty()) {
      reference = a;
    } else {
      return UsageError(absl::StrCat("runtime pull: unknown argument '", a,
                                     "' (runtime pull oci://HOST[:PORT]/REPO[:TAG] [--home DIR] [--insecure-registry])"));
    }
  }
  if (reference.empty()) return UsageError("runtime pull needs a registry reference: oci://HOST[:PORT]/REPO[:TAG]");
  if (insecure) AllowPlainHttp(reference);
  absl::StatusOr<OciReference> ref = ParseOciReference(reference);
  if (!ref.ok()) return ref.status();
  inv.options.bundles = {reference};
  inv.options.no_build = true;
  absl::StatusOr<Selection> selection = Select(inv, std::nullopt);
  if (!selection.ok()) return selection.status();
  if (absl::StatusOr<Manifest> there = selection->store.Lookup(selection->key); there.ok()) {
    std::cout << "runtime " << selection->key << " is in " << selection->store.root() << " already: " << there->prefix
              << "\n";
    return 0;
  }
  // Which profile, before anything is fetched: a registry that cannot be read, or an index
  // without a profile for this machine and spec, is said as such (not as a --no-build failure).
  BundleTarget target{selection->request.key, selection->request.key_inputs, selection->request.backend};
  BundleChoice choice = ChooseBundle({reference}, "", target, selection->facts);
  if (choice.chosen < 0) {
    std::vector<std::string> why;
    for (const auto& c : choice.candidates) {
      if (c.location != reference) why.push_back(absl::StrCat(c.location, ": ", c.rejected));
    }
    if (why.empty()) {
      for (const auto& n : choice.notes) why.push_back(n.substr(n.find(' ') + 1));
      return WithExit(absl::UnavailableError(absl::StrCat("runtime pull: ", absl::StrJoin(why, "; "))), kExitBundle);
    }
    return WithExit(absl::NotFoundError(absl::StrCat(
                        "runtime pull: no profile in ", reference, " fits this machine and spec (", absl::StrJoin(why, "; "),
                        "); push one from a machine like this (`inferenceutils runtime push`), with the same spec")),
                    kExitBundle);
  }
  ProvisionOptions options = ProvisionOptionsFor(inv.options);
  TerminalProgress progress(inv.options.quiet, inv.options.verbose);
  absl::StatusOr<Manifest> manifest = EnsureRuntime(selection->store, selection->request, options, progress);
  progress.Finish();
  if (!manifest.ok()) return manifest.status();
  auto origin = manifest->build_env.find("bundle");
  std::cout << "pulled runtime " << selection->key << " from "
            << (origin != manifest->build_env.end() ? origin->second : reference) << "\n" << manifest->prefix << "\n";
  return 0;
}

}  // namespace iu
