// Progress on a terminal: one live line on stderr ("[12.3s] installing requirements: Collecting
// x"), notes kept above it. Quiet when stderr is not a terminal or with --quiet (the log keeps
// everything); --verbose prints notes even then.
#pragma once

#include <chrono>
#include <string>

#include "inferenceutils/progress.h"

namespace iu {

class TerminalProgress : public Progress {
 public:
  TerminalProgress(bool quiet, bool verbose);
  void Step(absl::string_view step) override;
  void Detail(absl::string_view detail) override;
  void Note(absl::string_view message) override;
  void Finish() override;

 private:
  void Draw();
  bool live_;         // a terminal: draw the live line
  bool notes_;        // print notes
  std::string step_, detail_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace iu
