// Background builds (docs/progressive.md): a detached builder that makes the best runtime while
// the program runs on a fallback, and what the store records of it.
//
//   <root>/builds/<key>.json         a background build under way: backend, pid, started, step, log
//   <root>/builds/<key>.failed.json  the last background build of <key> failed: when, log, error,
//                                    the log's last lines; removed when <key> is published
//
// The builder holds the key's build lock from before it exists (it inherits the descriptor of the
// launcher that started it) until it ends, so "a build is under way" is: the record exists and
// the lock is held. A record whose lock is free is a builder that died (kill -9, a reboot).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "inferenceutils/lock.h"
#include "inferenceutils/provision.h"
#include "inferenceutils/store.h"
#include "nlohmann/json.hpp"

namespace iu {

struct BackgroundBuild {
  std::string key;
  std::string backend;
  long pid = 0;                // the builder
  std::string started;         // RFC 3339, UTC
  int64_t started_unix = 0;
  std::string step;            // "starting", "creating the venv", "installing requirements", ...
  std::string detail;          // pip's latest headline
  std::string log;             // the build's full log
  std::string fallback_key;    // the runtime the starting launcher ran on
  bool running = false;        // read back: the key's lock is held (false: the builder died)

  nlohmann::json ToJson() const;
};

struct BackgroundFailure {
  std::string key;
  std::string backend;
  std::string failed;          // RFC 3339, UTC
  std::string log;
  std::string error;           // the build's error message (its first line is the summary)
  std::vector<std::string> last_lines;  // of the log

  nlohmann::json ToJson() const;
};

std::string BackgroundRecordPath(const Store& store, const std::string& key);
std::string BackgroundFailurePath(const Store& store, const std::string& key);

// The record of a background build of `key` (running or not), nullopt when there is none.
std::optional<BackgroundBuild> ReadBackgroundBuild(const Store& store, const std::string& key);
// The failure record of `key`, nullopt when there is none.
std::optional<BackgroundFailure> ReadBackgroundFailure(const Store& store, const std::string& key);
// Every background record and failure in the store, sorted by key.
std::vector<BackgroundBuild> ListBackgroundBuilds(const Store& store);
std::vector<BackgroundFailure> ListBackgroundFailures(const Store& store);

// Starts the detached builder of `request` (its own session, stdin and stdout on /dev/null, its
// stderr and the build in the log), which keeps `lock` (the key's build lock, held by the caller)
// until it has published the runtime or recorded its failure. Returns the record it starts with.
absl::StatusOr<BackgroundBuild> StartBackgroundBuild(const Store& store, const BuildRequest& request,
                                                     const FileLock& lock, const std::string& fallback_key);

// "23:50:12" (local time) of a unix time, for the one-line messages.
std::string ClockTime(int64_t unix_seconds);

}  // namespace iu
