// The Python face inside the launcher: makes `import inferenceutils` work in every runtime the
// launcher starts (assets/python on sys.path, no pip) and hands the package what the launcher
// already knows (the `info --json` document, the runtime in use) through the built-in module
// `_inferenceutils`, computed only if Python code asks. See docs/python.md.
#pragma once

#include "cli.h"
#include "inferenceutils/python.h"
#include "inferenceutils/store.h"
#include "selection.h"

namespace iu {

// `selection` is the run's selection (facts and decision already loaded), or nullptr when the
// launcher runs as <runtime>/bin/python: the documents are then computed from the facts cache.
// Must outlive RunPython when given. Costs a few string copies; nothing is serialised here.
// `pending`: null, or the runtime the start selected when `manifest` is a fallback for it
// (StartRuntime::PendingJson, docs/progressive.md).
void AttachPythonFace(const LauncherOptions& options, const Manifest& manifest, const Selection* selection,
                      InterpreterConfig& config, nlohmann::json pending = nullptr);

}  // namespace iu
