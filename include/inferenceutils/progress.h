// How long work reports itself. The library calls these; the launcher decides how they look
// (one live line on a terminal, nothing otherwise). Logs keep the full detail regardless.
#pragma once

#include "absl/strings/string_view.h"

namespace iu {

class Progress {
 public:
  virtual ~Progress() = default;
  // A new step begins ("creating the venv", "installing requirements", "verifying").
  virtual void Step(absl::string_view step) = 0;
  // What the current step is doing right now (e.g. pip's latest "Collecting x" line).
  virtual void Detail(absl::string_view detail) = 0;
  // A message worth keeping on screen (a decision taken, a fallback and its reason).
  virtual void Note(absl::string_view message) = 0;
  // The work ended (successfully or not): clear any live line.
  virtual void Finish() = 0;
};

// Says nothing.
class SilentProgress : public Progress {
 public:
  void Step(absl::string_view) override {}
  void Detail(absl::string_view) override {}
  void Note(absl::string_view) override {}
  void Finish() override {}
};

}  // namespace iu
