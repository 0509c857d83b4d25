"""`import inferenceutils` in a plain Python process (a notebook, a web server started by another
tool): ask the launcher for the runtime matched to this machine (provisioning it if needed, with
its progress on stderr), put the runtime's site-packages on sys.path, load its libraries and
preload modules, and warn when native libraries the backend also needs are already loaded.

The launcher remains the recommended way: it loads the runtime's libraries before anything else
in the process, which a plain Python process cannot guarantee (docs/python.md).
"""
from __future__ import annotations

import ctypes
import importlib
import json
import os
import shutil
import site
import subprocess
import sys
import threading
import time
import warnings

from ._errors import LauncherError

try:
    from ._build import LAUNCHER as BUILT_LAUNCHER, VERSION
except ImportError:  # the package straight from the launcher's assets
    BUILT_LAUNCHER, VERSION = None, "0+unknown"

# Libraries a backend's llama.cpp needs that other packages (torch, CuPy, ...) often bring their
# own copies of: one loaded first from elsewhere is what llama_cpp then binds to.
BACKEND_LIBRARIES = {
    "cuda": ("libcudart", "libcublas", "libcublasLt", "libnvrtc"),
    "rocm": ("libamdhip64", "libhipblas", "librocblas", "libhsa-runtime64"),
    "vulkan": ("libvulkan",),
}
COMMON_LIBRARIES = ("libllama", "libggml", "libggml-base", "libggml-cpu", "libggml-cuda", "libggml-hip",
                    "libggml-vulkan", "libmtmd", "libllava")

_state = {}


def find_launcher() -> str:
    """$INFERENCEUTILS_BIN, else `inferenceutils` on PATH, else the launcher this wheel was built for."""
    candidates = []
    env = os.environ.get("INFERENCEUTILS_BIN")
    if env:
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return os.path.abspath(env)
        raise LauncherError(f"INFERENCEUTILS_BIN={env} is not an executable file; point it at the inferenceutils "
                            "launcher or unset it")
    on_path = shutil.which("inferenceutils")
    if on_path:
        return on_path
    if BUILT_LAUNCHER:
        candidates.append(BUILT_LAUNCHER)
        if os.path.isfile(BUILT_LAUNCHER) and os.access(BUILT_LAUNCHER, os.X_OK):
            return BUILT_LAUNCHER
    raise LauncherError("cannot find the inferenceutils launcher (looked at $INFERENCEUTILS_BIN, PATH"
                        + (f", {', '.join(candidates)}" if candidates else "") +
                        "): put it on PATH or set INFERENCEUTILS_BIN=/path/to/inferenceutils")


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is sys.__stderr__ and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _launcher_output(args, what: str) -> str:
    """Runs the launcher, returns its stdout. Its progress reaches this process's stderr: straight
    through on a terminal (the live line), else (a notebook, a log) as lines copied to sys.stderr
    with --verbose, so a notebook shows a long first build as it happens."""
    launcher = find_launcher()
    started = time.monotonic()
    announced = []

    def announce():  # only when the launcher is slow: it is provisioning (building or unpacking)
        announced.append(True)
        sys.stderr.write(f"inferenceutils: {what} (a first build for this machine can take a few minutes)...\n")
        sys.stderr.flush()

    timer = threading.Timer(1.0, announce)
    timer.daemon = True
    timer.start()
    try:
        if _stderr_is_terminal():
            proc = subprocess.run([launcher, *args], stdout=subprocess.PIPE, stderr=None,
                                  stdin=subprocess.DEVNULL, text=True)
            stdout = proc.stdout
        else:
            with subprocess.Popen([launcher, "--verbose", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, text=True, errors="replace") as proc:
                chunks = []
                reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)
                reader.start()
                for line in proc.stderr:
                    sys.stderr.write(line)
                    sys.stderr.flush()
                reader.join()
            stdout = "".join(chunks)
    except OSError as e:
        raise LauncherError(f"cannot run the inferenceutils launcher {launcher}: {e}") from None
    finally:
        timer.cancel()
    if announced and proc.returncode == 0:
        sys.stderr.write(f"inferenceutils: done in {time.monotonic() - started:.1f} s\n")
        sys.stderr.flush()
    if proc.returncode != 0:
        raise LauncherError(f"`{launcher} {' '.join(args)}` failed with exit status {proc.returncode} while "
                            f"{what} (its message is above on stderr); fix that, or run your program with "
                            "`inferenceutils run`")
    return stdout


def info_document() -> dict:
    if "info" not in _state:
        _state["info"] = json.loads(_launcher_output(["info", "--json"], "reading the machine's facts"))
    return _state["info"]


def runtime_document() -> dict:
    prefix = _state["prefix"]
    m = _state["manifest"]
    spec = {"requirements": m.get("requirements", []), "preload": m.get("preload", []),
            "libraries": m.get("libraries", [])}
    return {
        "key": m.get("key"), "backend": m.get("backend"), "path": prefix, "source": m.get("source"),
        "origin": "unpacked" if m.get("source") == "bundle" else "built", "created": m.get("created"),
        "profile_key": m.get("profile_key"), "python_version": m.get("python_version"),
        "python_abi": m.get("python_abi"), "executable": os.path.join(prefix, "bin", "python"),
        "requirements": spec["requirements"], "preload": spec["preload"], "libraries": spec["libraries"],
        "distributions": m.get("distributions", []), "spec": spec, "key_inputs": m.get("key_inputs"),
        "manifest": os.path.join(prefix, "manifest.json"), "launcher": _state["launcher"],
        "fallback": False, "pending": None,
        "launcher_version": VERSION,
    }


def _stem(filename: str) -> str:
    return filename.split(".so", 1)[0]


def loaded_libraries() -> list[str]:
    """Paths of the shared objects mapped into this process now."""
    paths = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6:
                    path = parts[5].strip()
                    if path.endswith(" (deleted)"):
                        path = path[: -len(" (deleted)")]
                    if path.startswith("/") and ".so" in os.path.basename(path) and path not in paths:
                        paths.append(path)
    except OSError:
        pass
    return paths


def _runtime_libraries(prefix: str, manifest: dict) -> dict:
    """stem → path of the shared libraries inside the runtime (extension modules excluded)."""
    found = {}
    for library in manifest.get("libraries", []):
        path = library if os.path.isabs(library) else os.path.join(prefix, library)
        found[_stem(os.path.basename(path))] = path
    for entry in manifest.get("sys_path", []) or [os.path.join(prefix, "lib", "python3.11", "site-packages")]:
        if not entry.startswith(prefix) or not os.path.isdir(entry):
            continue
        for root, dirs, files in os.walk(entry):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if ".so" in name and ".cpython-" not in name and ".abi3." not in name and name.startswith("lib"):
                    found.setdefault(_stem(name), os.path.join(root, name))
    return found


def conflicts(prefix: str, manifest: dict, loaded=None) -> list[tuple[str, str]]:
    """[(library name, loaded path)]: native libraries the runtime's backend needs that this
    process has already loaded from outside the runtime."""
    inside = _runtime_libraries(prefix, manifest)
    wanted = set(inside) | set(COMMON_LIBRARIES) | set(BACKEND_LIBRARIES.get(manifest.get("backend", ""), ()))
    real_prefix = os.path.realpath(prefix)
    out = []
    for path in loaded if loaded is not None else loaded_libraries():
        name = os.path.basename(path)
        if _stem(name) in wanted and not os.path.realpath(path).startswith(real_prefix + os.sep):
            out.append((name, path))
    return out


def _put_on_sys_path(site_packages: str) -> None:
    """The runtime's site-packages (and its .pth files, as site.addsitedir does) go before this
    process's own site-packages, so the runtime's llama_cpp is the one imported."""
    before = list(sys.path)
    site.addsitedir(site_packages)
    added = [p for p in sys.path if p not in before]
    for p in added:
        sys.path.remove(p)
    index = next((i for i, p in enumerate(sys.path) if p.rstrip("/").endswith(("site-packages", "dist-packages"))),
                 len(sys.path))
    sys.path[index:index] = added


def bootstrap() -> None:
    if "prefix" in _state:
        return
    launcher = find_launcher()
    _state["launcher"] = launcher
    output = _launcher_output(["runtime", "path"], "preparing the runtime")
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        raise LauncherError(f"`{launcher} runtime path` printed no runtime path")
    prefix = lines[-1].strip()
    try:
        with open(os.path.join(prefix, "manifest.json")) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise LauncherError(f"cannot read the runtime's manifest in {prefix}: {e}; rebuild it with "
                            "`inferenceutils runtime rebuild`") from None
    want = manifest.get("python_version", "")
    have = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if want and not (want == have or want.startswith(have + ".")):
        raise ImportError(f"the inferenceutils runtime {prefix} is for Python {want}, this process is Python "
                          f"{sys.version.split()[0]}; use Python {'.'.join(want.split('.')[:2])} or run your "
                          "program with `inferenceutils run`")
    _state.update(prefix=prefix, manifest=manifest)

    found = conflicts(prefix, manifest)
    if found:
        names = ", ".join(f"{name} ({path})" for name, path in found)
        warnings.warn(
            f"inferenceutils: native libraries that the runtime's {manifest.get('backend', '?')} backend also "
            f"needs are already loaded in this process from outside the runtime: {names}. llama_cpp may bind "
            "to these copies and fail or misbehave. Import inferenceutils before other native packages, or "
            "start the program with the launcher (`inferenceutils run ...`), which loads the runtime's "
            "libraries first.", RuntimeWarning, stacklevel=3)

    site_packages = [p for p in manifest.get("sys_path", []) if p.startswith(prefix) and p.endswith("site-packages")]
    for sp in site_packages or [os.path.join(prefix, "lib", f"python{have}", "site-packages")]:
        _put_on_sys_path(sp)
    for library in manifest.get("libraries", []):
        path = library if os.path.isabs(library) else os.path.join(prefix, library)
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError as e:
            raise ImportError(f"cannot load the runtime library {path}: {e}; rebuild the runtime with "
                              "`inferenceutils runtime rebuild`") from None
    for module in manifest.get("preload", []):
        try:
            importlib.import_module(module)
        except Exception as e:
            raise ImportError(f"preloading {module!r} from the runtime {prefix} failed: {type(e).__name__}: {e}; "
                              "rebuild the runtime with `inferenceutils runtime rebuild`") from e
