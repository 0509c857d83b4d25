"""inferenceutils: llama.cpp set up for this machine.

    import inferenceutils
    print(inferenceutils.system_info())        # what the launcher found (the `info --json` document)
    model = inferenceutils.load("model.gguf")  # a llama_cpp.Llama with this machine's defaults

Inside the launcher (`inferenceutils run`, `repl`, a kernel installed by `inferenceutils kernel
install`) this package comes with the launcher itself and asks it for its facts: nothing is probed
twice. In a plain Python process it asks the launcher for the matching runtime first (see
`_outside.py` and docs/python.md for the trade-off).
"""
from __future__ import annotations

import json as _json
import os as _os
import sys as _sys

from ._errors import (InferenceUtilsError, LauncherError, ModelError, ModelNotFoundError, ModelTooLargeError,
                      NotGGUFError)
from ._info import Info
from ._plan import LoadPlan

__all__ = ["system_info", "runtime", "load", "plan", "last_load_plan", "inside_launcher", "Info", "LoadPlan",
           "InferenceUtilsError", "LauncherError", "ModelError", "ModelNotFoundError", "NotGGUFError",
           "ModelTooLargeError", "__version__"]

try:
    import _inferenceutils as _native
except ImportError:
    _native = None


def _launcher_documents() -> bool:
    return _native is not None and hasattr(_native, "document_names") and "runtime" in _native.document_names()


inside_launcher: bool = _launcher_documents()
"""True when this process was started by the launcher (facts come from it, in-process)."""

if inside_launcher:
    __version__ = _native.version()
else:
    from . import _outside
    __version__ = _outside.VERSION
    _outside.bootstrap()

last_load_plan: LoadPlan | None = None
"""The plan of the last load() call: the keywords given to llama_cpp.Llama and why."""

_cache: dict = {}


def _document(name: str) -> dict:
    if name not in _cache:
        if inside_launcher:
            text = _native.document(name)
            if text is None:
                raise LauncherError(f"the launcher offers no '{name}' document")
            _cache[name] = _json.loads(text)
        elif name == "info":
            _cache[name] = _outside.info_document()
        else:
            _cache[name] = _outside.runtime_document()
    return _cache[name]


def system_info() -> Info:
    """The launcher's facts about this machine and its backend decision: the same document, field
    for field, as `inferenceutils info --json` (schema_version, launcher_version, facts, decision,
    store). Attribute access (`system_info().facts.cpu.physical_cores`) and `.to_dict()`."""
    return Info(_document("info"))


def runtime() -> Info:
    """The runtime this process runs in: key, backend, path (sys.prefix under the launcher),
    origin ("built" or "unpacked" from a bundle), spec, preload and which of those modules are
    loaded now (`preloaded`), distributions, and whether the launcher started this process."""
    doc = dict(_document("runtime"))
    doc["preloaded"] = [m for m in doc.get("preload", []) if m in _sys.modules]
    doc["inside_launcher"] = inside_launcher
    return Info(doc)


def plan(model_path, **overrides) -> LoadPlan:
    """What load(model_path, **overrides) would pass to llama_cpp.Llama and why, without loading.
    Raises ModelNotFoundError, NotGGUFError or ModelTooLargeError like load()."""
    check_memory = bool(overrides.pop("check_memory", True))
    from . import _plan
    info = _document("info")
    backend = _document("runtime").get("backend") or info.get("decision", {}).get("backend", "cpu")
    return _plan.compute(model_path, info.get("facts", {}), backend, overrides, check_memory=check_memory)


def load(model_path, **overrides):
    """A llama_cpp.Llama for `model_path` with this machine's defaults:

    - n_gpu_layers: on a GPU backend all layers (-1) when the model file fits in the visible GPUs'
      memory, else the share that fits; 0 on the CPU backend;
    - n_threads: the physical cores this process may use (CPU affinity and cgroup quota);
    - use_mmap: True.

    Every keyword you pass wins (check_memory=False skips the memory check). The choices and their
    reasons are in `inferenceutils.last_load_plan` (see plan()). A missing file, a file that is not
    GGUF or a model larger than this machine's memory raise a ModelError naming the path and the
    fix before llama.cpp is asked to load anything.
    """
    global last_load_plan
    chosen = plan(model_path, **overrides)
    last_load_plan = chosen
    import llama_cpp
    return llama_cpp.Llama(model_path=chosen.model_path, **chosen.kwargs)
