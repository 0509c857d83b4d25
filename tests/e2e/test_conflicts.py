"""The shared-library guarantee (docs/libraries.md), proved with the iu-conflict-* fixtures
(tests/fixtures/packages): libiuconflict.so.1 built twice with one SONAME, v1 beside the
"framework" extension (the torch role), v2 beside the "backend" extension (the llama_cpp role,
bound at load time to a v2-only symbol); fake libcudart/libcublas shipped like nvidia-* wheels and
a "CUDA backend" that needs them by SONAME without shipping them. Then `doctor` and
`run --check-conflicts`.

Runtimes are built once per module in one store (a few seconds each, from the offline fixture index).
"""
import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import BIN, clean_env, run

FRAMEWORK_FIRST = """\
import json, sys
import iu_conflict_framework as framework
import iu_conflict_backend as backend
print(json.dumps({"framework": [framework.library_version(), framework.library_path()],
                  "backend": [backend.library_version(), backend.library_path(), backend.feature()]}))
print("USER-DONE", file=sys.stderr)
"""
BACKEND_FIRST = """\
import json, sys
import iu_conflict_backend as backend
import iu_conflict_framework as framework
print(json.dumps({"framework": [framework.library_version(), framework.library_path()],
                  "backend": [backend.library_version(), backend.library_path(), backend.feature()]}))
print("USER-DONE", file=sys.stderr)
"""
CUDA = """\
import json
import iu_conflict_cuda_backend as cuda
print(json.dumps({"paths": cuda.library_paths(), "version": cuda.runtime_version(), "gemm": cuda.gemm()}))
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("conflicts")


def env_for(store, tmp_path, **extra):
    # The CPU backend whatever the machine has: the runtimes' keys and contents do not depend on it.
    return clean_env(tmp_path, INFERENCEUTILS_HOME=store / "store", INFERENCEUTILS_BACKEND="cpu", **extra)


class Runtime:
    def __init__(self, spec: Path, prefix: Path, store: Path):
        self.spec, self.prefix, self.store = spec, prefix, store
        self.site = next(prefix.glob("lib/python3*/site-packages"))

    @property
    def manifest(self) -> dict:
        return json.loads((self.prefix / "manifest.json").read_text())

    def run(self, tmp_path, *args, env=None, **extra):
        env = env or env_for(self.store, tmp_path, **extra)
        return run(["--spec", self.spec, *args], env, timeout=120)

    def script(self, tmp_path, text, name="s.py") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path


def build(store, index, name, requirements, preload, **kwargs) -> Runtime:
    spec = index.write_spec(store / f"{name}.toml", requirements, preload, **kwargs)
    (store / f"{name}-env").mkdir()
    env = env_for(store, store / f"{name}-env")
    proc = run(["--spec", spec, "runtime", "path"], env, timeout=300, check_rc=0)
    return Runtime(spec, Path(proc.stdout.strip()), store)


@pytest.fixture(scope="module")
def conflict(store, fixture_index) -> Runtime:
    """framework (v1) and backend (v2) in one runtime; the backend is the preload."""
    return build(store, fixture_index, "conflict", ["iu-conflict-framework", "iu-conflict-backend"],
                 ["iu_conflict_backend"])


@pytest.fixture(scope="module")
def healthy(store, fixture_index) -> Runtime:
    """The backend, the fake nvidia-* libraries and the CUDA backend needing them, and the
    llama-cpp-python stand-in, all preloaded: nothing in it conflicts."""
    return build(store, fixture_index, "healthy",
                 ["iu-conflict-backend", "iu-conflict-nvidia", "iu-conflict-cuda-backend", "llama-cpp-python==0.3.98"],
                 ["llama_cpp", "iu_conflict_cuda_backend", "iu_conflict_backend"], backend_package="")


def outcome(proc) -> dict:
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return json.loads(proc.stdout.splitlines()[-1])


# --- the conflict, and what the launcher does about it -------------------------------------------

def test_plain_python_gets_the_conflict(conflict, tmp_path):
    """Plain python (Debian's python3.11 with the runtime's site-packages on its path; every
    bin/python* of the runtime is the launcher): whichever extension comes first decides the copy
    of libiuconflict.so.1 for both."""
    python = "/usr/bin/python3.11"
    for name in ("python", "python3", "python3.11"):
        assert os.path.realpath(conflict.prefix / "bin" / name) == os.path.realpath(BIN)
    env = dict(env_for(conflict.store, tmp_path), PYTHONPATH=str(conflict.site))
    v1 = str(conflict.site / "iu_conflict_framework" / "libiuconflict.so.1")
    v2 = str(conflict.site / "iu_conflict_backend" / "libiuconflict.so.1")

    proc = subprocess.run([str(python), conflict.script(tmp_path, FRAMEWORK_FIRST)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "undefined symbol: iuconflict_v2_feature" in proc.stderr, proc.stderr
    # The framework alone works with its own copy; the backend then finds v1 already there.
    alone = subprocess.run([str(python), "-c", "import iu_conflict_framework as f; print(f.library_version(), f.library_path())"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert alone.stdout.split() == ["1", v1], alone

    proc = subprocess.run([str(python), conflict.script(tmp_path, BACKEND_FIRST)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert outcome(proc) == {"framework": [2, v2], "backend": [2, v2, 2000]}


@pytest.mark.parametrize("script", [FRAMEWORK_FIRST, BACKEND_FIRST], ids=["framework-first", "backend-first"])
def test_under_the_launcher_the_preload_wins_in_either_order(conflict, tmp_path, script):
    v1 = str(conflict.site / "iu_conflict_framework" / "libiuconflict.so.1")
    v2 = str(conflict.site / "iu_conflict_backend" / "libiuconflict.so.1")
    proc = conflict.run(tmp_path, "run", conflict.script(tmp_path, script))
    assert outcome(proc) == {"framework": [2, v2], "backend": [2, v2, 2000]}
    # After the program, the launcher says what the framework resolved to, naming both copies.
    after = proc.stderr.split("USER-DONE\n", 1)[1]
    assert "inferenceutils: warning: iu_conflict_framework/_framework." in after, proc.stderr
    warning = after.splitlines()
    assert v1 in warning[0] and v2 in warning[0], warning
    assert warning[1].startswith("  fix: ") and "iu_conflict_framework" in warning[1], warning
    assert len(warning) == 2, warning


def test_the_warning_comes_once_also_after_sys_exit_and_fork(conflict, tmp_path):
    script = conflict.script(tmp_path, "import os, sys\nimport iu_conflict_framework\n"
                                       "pid = os.fork()\nif pid == 0:\n    sys.exit(0)\n"
                                       "os.waitpid(pid, 0)\nsys.exit(5)\n")
    proc = conflict.run(tmp_path, "run", script)
    assert proc.returncode == 5, proc
    assert proc.stderr.count("inferenceutils: warning: iu_conflict_framework/_framework.") == 1, proc.stderr


def test_no_warning_when_every_object_gets_its_own_copy(conflict, tmp_path):
    proc = conflict.run(tmp_path, "run", "-c", "import iu_conflict_backend as b; print(b.feature())")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "2000\n", "")


def test_python_mode_of_the_runtime_preloads_too(conflict, tmp_path):
    """bin/python (sys.executable inside a runtime, the launcher in python mode) has the preload."""
    proc = subprocess.run([str(conflict.prefix / "bin" / "python"), conflict.script(tmp_path, FRAMEWORK_FIRST)],
                          env=env_for(conflict.store, tmp_path), capture_output=True, text=True, timeout=60)
    assert outcome(proc)["backend"][0] == 2


def test_a_spec_that_forces_v1_is_refused_at_build(store, fixture_index, tmp_path):
    """What cannot be guaranteed: a process holds one libiuconflict.so.1. Naming the framework's v1
    in `libraries` makes the v2 backend impossible, and the build says so instead of publishing."""
    spec = fixture_index.write_spec(tmp_path / "v1.toml", ["iu-conflict-framework", "iu-conflict-backend"],
                                    ["iu_conflict_backend"],
                                    libraries=["lib/python3*/site-packages/iu_conflict_framework/libiuconflict.so.1"])
    proc = run(["--spec", spec, "runtime", "path"], env_for(store, tmp_path), timeout=120)
    assert proc.returncode == 74, (proc.stdout, proc.stderr)
    assert "iu_conflict_backend" in proc.stderr and "undefined symbol: iuconflict_v2_feature" in proc.stderr


# --- the CUDA case ------------------------------------------------------------------------------

def test_nvidia_libraries_are_loaded_from_the_runtime_before_the_preload(healthy, tmp_path):
    cudart = str(healthy.site / "nvidia" / "fake_cuda_runtime" / "lib" / "libfakecudart.so.12")
    cublas = str(healthy.site / "nvidia" / "fake_cublas" / "lib" / "libfakecublas.so.12")
    # Recorded once, at build time, by absolute path, dependencies first (cublas needs cudart).
    assert healthy.manifest["libraries"] == [cudart, cublas]
    proc = healthy.run(tmp_path, "run", healthy.script(tmp_path, CUDA))
    assert outcome(proc) == {"paths": {"cudart": cudart, "cublas": cublas}, "version": 12040, "gemm": 12041}
    assert proc.stderr == ""
    # Plain python has nothing that finds them: the extension needs them by SONAME only.
    plain = subprocess.run(["/usr/bin/python3.11", "-c", "import iu_conflict_cuda_backend"],
                           env=dict(env_for(healthy.store, tmp_path), PYTHONPATH=str(healthy.site)),
                           capture_output=True, text=True, timeout=60)
    assert plain.returncode == 1 and "libfakecublas.so.12: cannot open shared object file" in plain.stderr, plain.stderr


def test_the_spec_names_extra_libraries_to_load_first(store, fixture_index, tmp_path):
    """Libraries from elsewhere (here: extracted from the nvidia wheel), named in the wrong order:
    loaded first, by those paths, dependencies first."""
    libs = tmp_path / "cuda"
    with zipfile.ZipFile(fixture_index.file("iu-conflict-nvidia", "12.4.0")) as zf:
        for name in zf.namelist():
            if ".so" in name:
                (libs / Path(name).name).parent.mkdir(exist_ok=True)
                (libs / Path(name).name).write_bytes(zf.read(name))
    cudart, cublas = str(libs / "libfakecudart.so.12"), str(libs / "libfakecublas.so.12")
    rt = build(store, fixture_index, "extra", ["iu-conflict-cuda-backend"], ["iu_conflict_cuda_backend"],
               libraries=[cublas, cudart])
    assert rt.manifest["libraries"] == [cudart, cublas]
    proc = rt.run(tmp_path, "run", rt.script(tmp_path, CUDA))
    assert outcome(proc)["paths"] == {"cudart": cudart, "cublas": cublas}

    missing = fixture_index.write_spec(tmp_path / "missing.toml", ["iu-conflict-cuda-backend"], [],
                                       libraries=["lib/nowhere/libfakecudart.so.12"])
    proc = run(["--spec", missing, "runtime", "path"], env_for(store, tmp_path), timeout=120)
    assert proc.returncode == 65 and "lib/nowhere/libfakecudart.so.12" in proc.stderr, proc.stderr


# --- doctor ---------------------------------------------------------------------------------------

def doctor_json(rt, tmp_path, rc, **extra) -> dict:
    proc = rt.run(tmp_path, "doctor", "--json", **extra)
    assert proc.returncode == rc, (proc.returncode, proc.stdout, proc.stderr)
    report = json.loads(proc.stdout)
    for finding in report["findings"]:
        assert finding["fix"] and "\n" not in finding["fix"] and "\n" not in finding["message"], finding
    return report


def test_doctor_in_a_healthy_runtime(healthy, tmp_path):
    proc = healthy.run(tmp_path, "doctor")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    text = proc.stdout
    assert "OK: no problems found" in text
    for lib in ("iu_conflict_backend/libiuconflict.so.1", "nvidia/fake_cuda_runtime/lib/libfakecudart.so.12",
                "nvidia/fake_cublas/lib/libfakecublas.so.12"):
        assert f"  runtime  {healthy.site / lib}" in text, text
    assert "Backend      llama_cpp 0.3.98: GPU offload no" in text
    assert "LD_PRELOAD            (not set)" in text

    report = doctor_json(healthy, tmp_path, 0)
    assert report["ok"] is True
    manifest = healthy.manifest
    assert report["runtime"]["key"] == manifest["key"] and report["runtime"]["source"] == "built"
    assert report["runtime"]["libraries"] == manifest["libraries"]
    origins = {Path(lib["path"]).name: (lib["origin"], lib["path"]) for lib in report["libraries"]}
    assert origins["libiuconflict.so.1"] == ("runtime", str(healthy.site / "iu_conflict_backend" / "libiuconflict.so.1"))
    assert origins["libfakecudart.so.12"][0] == "runtime"
    assert {lib["origin"] for lib in report["libraries"]} <= {"runtime", "home", "system"}
    assert report["backend"]["module"] == "llama_cpp" and report["backend"]["gpu_offload"] is False
    assert "FIXTURE = 1" in report["backend"]["system_info"]
    assert report["preload_errors"] == {} and report["environment"] == {}
    assert [f for f in report["findings"] if f["severity"] == "error"] == []


def test_doctor_reports_the_loader_environment(healthy, tmp_path):
    report = doctor_json(healthy, tmp_path, 0, LD_LIBRARY_PATH=tmp_path / "nolibs", CUDA_VISIBLE_DEVICES="-1")
    assert report["environment"] == {"LD_LIBRARY_PATH": str(tmp_path / "nolibs"), "CUDA_VISIBLE_DEVICES": "-1"}
    codes = {f["code"]: f for f in report["findings"]}
    assert codes["ld_library_path"]["severity"] == "warning" and "LD_LIBRARY_PATH" in codes["ld_library_path"]["fix"]
    assert codes["cuda_visible_devices"]["severity"] == "warning"
    text = healthy.run(tmp_path, "doctor", CUDA_VISIBLE_DEVICES="0").stdout
    assert "CUDA_VISIBLE_DEVICES  0" in text and "info: CUDA_VISIBLE_DEVICES=0 limits CUDA" in text
    # LD_PRELOAD of a system library (an allocator, a profiler) is worth a warning, not a problem.
    report = doctor_json(healthy, tmp_path, 0, LD_PRELOAD="libz.so.1")
    assert [(f["code"], f["severity"]) for f in report["findings"]] == [("ld_preload", "warning")]


def test_doctor_with_an_ld_preloaded_second_copy(healthy, tmp_path):
    ours = str(healthy.site / "nvidia" / "fake_cuda_runtime" / "lib" / "libfakecudart.so.12")
    theirs = tmp_path / "elsewhere" / "libfakecudart.so.12"
    theirs.parent.mkdir()
    theirs.write_bytes(Path(ours).read_bytes())
    report = doctor_json(healthy, tmp_path, 1, LD_PRELOAD=theirs)
    assert report["ok"] is False
    codes = {f["code"]: f for f in report["findings"]}
    assert set(codes) >= {"duplicate", "outside", "ld_preload"}, codes
    assert [f["severity"] for f in report["findings"]].count("error") == 2
    duplicate = codes["duplicate"]
    assert duplicate["severity"] == "error" and duplicate["paths"] == [str(theirs), ours]
    assert str(theirs) in duplicate["message"] and ours in duplicate["message"]
    assert "LD_PRELOAD" in duplicate["fix"]
    assert ours in codes["outside"]["message"]

    proc = healthy.run(tmp_path, "doctor", LD_PRELOAD=theirs)
    assert proc.returncode == 1
    assert f"  outside  {theirs}  [libfakecudart.so.12]" in proc.stdout
    assert f"error: libfakecudart.so.12 is loaded twice: {theirs} and {ours}" in proc.stdout
    assert proc.stdout.rstrip().endswith("problems found")


def test_doctor_when_an_ld_preloaded_copy_breaks_the_preload(conflict, tmp_path):
    """v1 LD_PRELOADed: the backend cannot import. doctor still reports, naming both copies."""
    v1 = tmp_path / "libiuconflict.so.1"
    v1.write_bytes((conflict.site / "iu_conflict_framework" / "libiuconflict.so.1").read_bytes())
    report = doctor_json(conflict, tmp_path, 1, LD_PRELOAD=v1)
    codes = {f["code"]: f for f in report["findings"]}
    assert "undefined symbol: iuconflict_v2_feature" in codes["preload"]["message"]
    assert str(v1) in codes["outside"]["message"]
    assert str(conflict.site / "iu_conflict_backend" / "libiuconflict.so.1") in codes["outside"]["message"]
    # And `run` stops before the user's code, with exit status 76.
    proc = conflict.run(tmp_path, "run", "-c", "print('never')", LD_PRELOAD=v1)
    assert proc.returncode == 76 and "never" not in proc.stdout, proc
    assert "LD_PRELOAD / LD_LIBRARY_PATH may have put another copy of a library first" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_doctor_shows_the_framework_copy_that_is_never_used(conflict, tmp_path):
    report = doctor_json(conflict, tmp_path, 0)
    shadowed = [f for f in report["findings"] if f["code"] == "shadowed"]
    assert len(shadowed) == 1 and shadowed[0]["severity"] == "warning"
    assert shadowed[0]["paths"] == [str(conflict.site / "iu_conflict_backend" / "libiuconflict.so.1"),
                                    str(conflict.site / "iu_conflict_framework" / "libiuconflict.so.1")]


# --- run --check-conflicts -------------------------------------------------------------------------

def test_check_conflicts_after_the_program(conflict, healthy, tmp_path):
    proc = conflict.run(tmp_path, "--check-conflicts", "run", conflict.script(tmp_path, FRAMEWORK_FIRST))
    assert outcome(proc)["framework"][0] == 2
    before, after = proc.stderr.split("USER-DONE\n", 1)
    assert before == ""
    assert after.startswith("inferenceutils: check-conflicts: ") and "1 finding\n" in after, after
    assert "iu_conflict_framework/libiuconflict.so.1" in after and "iu_conflict_backend/libiuconflict.so.1" in after

    proc = healthy.run(tmp_path, "--check-conflicts", "run", "-c", "import sys; sys.exit(3)")
    assert proc.returncode == 3
    assert proc.stderr.startswith("inferenceutils: check-conflicts: ") and "none twice" in proc.stderr, proc.stderr

    copy = tmp_path / "libfakecudart.so.12"
    copy.write_bytes((healthy.site / "nvidia" / "fake_cuda_runtime" / "lib" / "libfakecudart.so.12").read_bytes())
    proc = healthy.run(tmp_path, "--check-conflicts", "run", "-c", "print('ran')", LD_PRELOAD=copy)
    assert proc.returncode == 0 and proc.stdout == "ran\n"
    assert f"inferenceutils: error: libfakecudart.so.12 is loaded twice: {copy} and " in proc.stderr, proc.stderr
