// runtime list | info KEY | path | build (cmd_runtime_build.cpp) | rebuild | remove KEY | prune [--unused-for DAYS] [--not-matching] | wait [KEY]
#include <algorithm>
#include <ctime>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "commands.h"
#include "inferenceutils/background.h"
#include "inferenceutils/json_text.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/paths.h"
#include "runtime_keys.h"
#include "selection.h"
#include "terminal_progress.h"

namespace iu {
namespace {

std::string HumanSize(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  return absl::StrFormat(unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
}

// A last-used time more than this far ahead of the clock is not a time of use (a clock that was
// wrong, a copied store): shown as such, and pruned as unused for however long is asked.
constexpr int64_t kClockSlack = 300;
bool InTheFuture(int64_t when) { return when > std::time(nullptr) + kClockSlack; }

std::string Ago(int64_t when) {
  if (when <= 0) return "never";
  if (InTheFuture(when)) return "unknown (future)";
  int64_t seconds = std::max<int64_t>(0, std::time(nullptr) - when);
  if (seconds < 120) return "just now";
  if (seconds < 7200) return absl::StrCat(seconds / 60, " min ago");
  if (seconds < 172800) return absl::StrCat(seconds / 3600, " h ago");
  return absl::StrCat(seconds / 86400, " days ago");
}

// The profile key this machine has now (automatic decision), for "matches this machine?".
std::string CurrentProfile(const Invocation& invocation) {
  Facts facts = LoadOrDetectFacts(StoreRoot(invocation.options.home), DetectOptionsFromEnv());
  absl::StatusOr<Decision> decision = Decide(facts, ForcedBackend(invocation.options), AssetsDir() + "/backends.toml");
  return decision.ok() ? decision->profile_key : "";
}

int List(const Invocation& invocation, const Store& store, bool json) {
  std::string profile = CurrentProfile(invocation);
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& entry : store.List()) {
    nlohmann::json row = {{"key", entry.key}, {"path", entry.path}, {"size_bytes", entry.size_bytes},
                          {"last_used", entry.last_used}};
    if (entry.manifest.ok()) {
      row["backend"] = entry.manifest->backend;
      row["source"] = entry.manifest->source;
      row["requirements"] = entry.manifest->requirements;
      row["matches"] = entry.manifest->profile_key == profile;
      if (entry.manifest->decision.is_object() && entry.manifest->decision.contains("target")) {
        row["target"] = entry.manifest->decision["target"];  // made for a target profile (--cuda-arch)
      }
    } else {
      row["backend"] = "?";
      row["error"] = std::string(entry.manifest.status().message());
      row["matches"] = false;
    }
    rows.push_back(row);
  }
  // Background builds (docs/progressive.md): rows with a "state" of "building", "interrupted"
  // (the builder died) or "failed"; published runtimes have none.
  nlohmann::json builds = nlohmann::json::array();
  for (const BackgroundBuild& b : ListBackgroundBuilds(store)) {
    nlohmann::json row = b.ToJson();
    row["state"] = b.running ? "building" : "interrupted";
    builds.push_back(row);
  }
  for (const BackgroundFailure& f : ListBackgroundFailures(store)) {
    nlohmann::json row = f.ToJson();
    row["state"] = "failed";
    builds.push_back(row);
  }
  if (json) {
    for (const auto& row : builds) rows.push_back(row);
    std::cout << DumpJson(rows, 2) << "\n";
    return 0;
  }
  auto print_builds = [&] {
    for (const auto& b : builds) {
      std::string state = b["state"].get<std::string>();
      if (state == "failed") {
        std::cout << absl::StrFormat("failed    %s %s at %s: %s\n          log: %s\n", b["key"].get<std::string>(),
                                     b["backend"].get<std::string>(), b["failed"].get<std::string>(),
                                     b["error"].get<std::string>().substr(0, b["error"].get<std::string>().find('\n')),
                                     b["log"].get<std::string>());
      } else {
        std::cout << absl::StrFormat("%-9s %s %s since %s (pid %d, step: %s)\n          log: %s\n", state,
                                     b["key"].get<std::string>(), b["backend"].get<std::string>(),
                                     b["started"].get<std::string>(), b["pid"].get<long>(), b["step"].get<std::string>(),
                                     b["log"].get<std::string>());
      }
    }
  };
  if (rows.empty()) {
    std::cout << "no runtimes in " << store.root() << "\n";
    print_builds();
    return 0;
  }
  std::cout << absl::StrFormat("%-18s %-8s %-7s %10s  %-14s %s\n", "KEY", "BACKEND", "SOURCE", "SIZE",
                               "LAST USED", "MATCHES");
  for (const auto& row : rows) {
    std::cout << absl::StrFormat("%-18s %-8s %-7s %10s  %-14s %s\n", row["key"].get<std::string>(),
                                 row["backend"].get<std::string>(), row.value("source", "?"),
                                 HumanSize(row["size_bytes"].get<uint64_t>()),
                                 Ago(row["last_used"].get<int64_t>()),
                                 row["matches"].get<bool>() ? "yes" : "no");
  }
  if (!builds.empty()) std::cout << "\nbackground builds:\n";
  print_builds();
  return 0;
}

absl::StatusOr<int> Prune(const Invocation& invocation, const Store& store, const std::vector<std::string>& args) {
  int unused_days = -1;
  bool not_matching = false;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--not-matching") {
      not_matching = true;
    } else if (args[i] == "--unused-for" && i + 1 < args.size()) {
      if (!absl::SimpleAtoi(args[++i], &unused_days) || unused_days < 0) {
        return UsageError(absl::StrCat("--unused-for needs a number of days, got '", args[i], "'"));
      }
    } else {
      return UsageError(absl::StrCat("runtime prune: unknown argument '", args[i],
                                     "' (use --unused-for DAYS and/or --not-matching)"));
    }
  }
  if (unused_days < 0 && !not_matching) {
    return UsageError("runtime prune needs --unused-for DAYS and/or --not-matching");
  }
  std::string profile = not_matching ? CurrentProfile(invocation) : "";
  int64_t cutoff = std::time(nullptr) - static_cast<int64_t>(unused_days) * 86400;
  int removed = 0;
  for (const auto& entry : store.List()) {
    bool old = unused_days >= 0 && (entry.last_used <= cutoff || InTheFuture(entry.last_used));
    bool foreign = not_matching && (!entry.manifest.ok() || entry.manifest->profile_key != profile);
    if (!old && !foreign) continue;
    if (auto status = store.Remove(entry.key); !status.ok()) return status;
    std::cout << "removed " << entry.key << " (" << (old ? "unused" : "does not match this machine") << ")\n";
    ++removed;
  }
  store.CleanStale("");  // and the data of removed runtimes that were in use then
  std::cout << removed << " runtime" << (removed == 1 ? "" : "s") << " removed\n";
  return 0;
}

}  // namespace

absl::StatusOr<int> CmdRuntime(const Invocation& invocation) {
  const auto& args = invocation.args;
  if (args.empty()) return UsageError("runtime needs a subcommand: list, info, path, build, rebuild, remove, prune, pack, push, pull, wait");
  Store store(StoreRoot(invocation.options.home));
  const std::string& sub = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (sub == "list") {
    if (!rest.empty() && rest != std::vector<std::string>{"--json"}) {
      return UsageError(absl::StrCat("runtime list: unknown argument '", rest[0], "'"));
    }
    return List(invocation, store, !rest.empty());
  }
  if (sub == "info" || sub == "remove") {
    if (rest.size() != 1) return UsageError(absl::StrCat("runtime ", sub, " needs one KEY"));
    absl::StatusOr<std::string> key = ResolveKey(store, rest[0]);
    if (!key.ok()) return key.status();
    if (sub == "remove") {
      if (auto status = store.Remove(*key); !status.ok()) return status;
      std::cout << "removed " << *key << "\n";
      return 0;
    }
    absl::StatusOr<Manifest> manifest = store.Lookup(*key);
    if (!manifest.ok()) return WithExit(manifest.status(), kExitConfig);
    std::cout << DumpJson(manifest->ToJson(), 2) << "\n";
    return 0;
  }
  if (sub == "path" || sub == "rebuild") {
    if (!rest.empty()) return UsageError(absl::StrCat("runtime ", sub, " takes no arguments"));
    return ProvisionSelected(invocation, sub == "rebuild", /*json=*/false, /*summary=*/false);
  }
  if (sub == "prune") return Prune(invocation, store, rest);
  if (sub == "wait") return CmdRuntimeWait(invocation, rest);
  if (sub == "pack") return CmdRuntimePack(invocation, rest);
  if (sub == "build") return CmdRuntimeBuild(invocation, rest);
  if (sub == "push") return CmdRuntimePush(invocation, rest);
  if (sub == "pull") return CmdRuntimePull(invocation, rest);
  return UsageError(absl::StrCat("unknown runtime subcommand '", sub,
                                 "' (list, info, path, build, rebuild, remove, prune, pack, push, pull, wait)"));
}

}  // namespace iu
