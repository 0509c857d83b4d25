"""Runtimes (issue: build the matching venv once, atomically, then start Python inside it).

Every test builds from the offline fixture index (fixture_index.py): a stand-in llama-cpp-python
sdist whose build records the environment it saw, a pure dependency, a native extension.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BIN, clean_env, run, runtime_dirs

PROBE = r'''
import json, sys
preloaded = "llama_cpp" in sys.modules          # before this script imported anything
import llama_cpp
print(json.dumps({"preloaded": preloaded, "prefix": sys.prefix, "base_prefix": sys.base_prefix,
                  "executable": sys.executable, "argv": sys.argv, "build_env": llama_cpp.BUILD_ENV,
                  "version": llama_cpp.__version__, "path": sys.path}))
'''

SOURCE_ONLY = {"cpu": {"wheel_indexes": []}}  # no prebuilt index: always the sdist


def probe(tmp_path, env, *launcher_args, script_args=()):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    proc = run([*launcher_args, "run", script, *script_args], env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc


@pytest.fixture
def spec(tmp_path, fixture_index):
    return fixture_index.write_spec(tmp_path / "spec.toml", ["llama-cpp-python"], ["llama_cpp"],
                                    backends=SOURCE_ONLY)


def test_cold_build_then_warm_start(tmp_path, env, spec):
    store = tmp_path / "store"
    first, proc = probe(tmp_path, env, "--spec", spec, script_args=["a", "--spec", "b"])
    assert first["preloaded"] is True
    assert first["argv"][1:] == ["a", "--spec", "b"]
    assert first["base_prefix"] == str(BIN.parent.parent / "lib" / "inferenceutils" / "python3.11")  # the launcher's home
    state = runtime_dirs(store)
    assert len(state["runtimes"]) == 1 and len(state["data"]) == 1 and len(state["logs"]) == 1
    key, data = next(iter(state["runtimes"].items()))
    assert first["prefix"] == str(store / "data" / data)
    assert first["executable"] == str(store / "data" / data / "bin" / "python")
    assert str(store / "data" / data / "lib/python3.11/site-packages") in first["path"]
    manifest = json.loads((store / "runtimes" / key / "manifest.json").read_text())
    assert manifest["key"] == key and manifest["preload"] == ["llama_cpp"]
    assert {"name": "llama_cpp_python", "version": "0.3.99"} in manifest["distributions"] or \
           {"name": "llama-cpp-python", "version": "0.3.99"} in manifest["distributions"]
    assert Path(manifest["log"]).is_file()

    second, proc2 = probe(tmp_path, env, "--spec", spec)
    assert second["prefix"] == first["prefix"]
    assert runtime_dirs(store) == state          # nothing built again
    assert proc2.stderr == ""


def test_recorded_build_flags_match_the_decision(tmp_path, env, spec):
    info = json.loads(run(["info", "--json"], env, check_rc=0).stdout)
    decided = info["decision"]["build_env"]
    result, _ = probe(tmp_path, env, "--spec", spec)
    assert decided["CMAKE_ARGS"]
    assert result["build_env"]["CMAKE_ARGS"] == decided["CMAKE_ARGS"]
    assert "GGML_CUDA" not in result["build_env"]["CMAKE_ARGS"]


def test_spec_build_env_wins_over_the_decision(tmp_path, env, fixture_index):
    spec = fixture_index.write_spec(tmp_path / "spec.toml", ["llama-cpp-python"], ["llama_cpp"],
                                    backends={"cpu": {"wheel_indexes": [], "build_env": {"CMAKE_ARGS": "-DGGML_BLAS=on"}}})
    result, _ = probe(tmp_path, env, "--spec", spec)
    assert result["build_env"]["CMAKE_ARGS"] == "-DGGML_BLAS=on"


def test_prebuilt_wheel_index_is_used_when_it_has_the_version(tmp_path, env, fixture_index):
    spec = fixture_index.write_spec(tmp_path / "spec.toml", ["llama-cpp-python"], ["llama_cpp"],
                                    backends={"cpu": {"wheel_indexes": [fixture_index.prebuilt_url]}})
    result, _ = probe(tmp_path, env, "--spec", spec)
    assert result["version"] == "0.3.98"        # the prebuilt wheel, not the newer sdist
    key = next(iter(runtime_dirs(tmp_path / "store")["runtimes"]))
    manifest = json.loads(run(["runtime", "info", key], env, check_rc=0).stdout)
    assert manifest["build_env"]["prebuilt_index"] == fixture_index.prebuilt_url


def test_prebuilt_index_without_the_version_builds_from_source_and_says_why(tmp_path, env, fixture_index):
    spec = fixture_index.write_spec(tmp_path / "spec.toml", ["llama-cpp-python==0.3.99"], ["llama_cpp"],
                                    backends={"cpu": {"wheel_indexes": [fixture_index.prebuilt_url]}})
    result, proc = probe(tmp_path, env, "--verbose", "--spec", spec)
    assert result["version"] == "0.3.99"
    assert "has llama-cpp-python wheels (0.3.98), none for 'llama-cpp-python==0.3.99'" in proc.stderr
    assert "building llama-cpp-python from source with CMAKE_ARGS=" in proc.stderr


def test_quiet_when_not_a_terminal(tmp_path, env, spec):
    _, proc = probe(tmp_path, env, "--spec", spec)
    assert proc.stderr == ""


def test_pep723_script_gets_its_extra_package(tmp_path, env, spec):
    script = tmp_path / "native.py"
    script.write_text('# /// script\n# dependencies = ["iu-fixture-native"]\n# requires-python = ">=3.10"\n# ///\n'
                      "import iu_fixture_native, sys\nprint(iu_fixture_native.answer(), 'llama_cpp' in sys.modules)\n")
    proc = run(["--spec", spec, "run", script], env, timeout=300, check_rc=0)
    assert proc.stdout.split() == ["42", "True"]   # 42 comes from the package's own libiufixture.so
    plain = tmp_path / "plain.py"
    plain.write_text("import importlib.util\nprint(importlib.util.find_spec('iu_fixture_native') is None)\n")
    assert run(["--spec", spec, "run", plain], env, timeout=300, check_rc=0).stdout.strip() == "True"
    assert len(runtime_dirs(tmp_path / "store")["runtimes"]) == 2  # the script's own runtime


def test_requires_python_that_cannot_be_met(tmp_path, env, spec):
    script = tmp_path / "future.py"
    script.write_text('# /// script\n# requires-python = ">=3.13"\n# ///\nprint("ran")\n')
    proc = run(["--spec", spec, "run", script], env)
    assert proc.returncode == 69
    assert "ran" not in proc.stdout
    assert ">=3.13" in proc.stderr and "3.11" in proc.stderr and str(script) in proc.stderr
    assert not (tmp_path / "store" / "runtimes").exists() or runtime_dirs(tmp_path / "store")["runtimes"] == {}


def test_concurrent_cold_starts_build_once(tmp_path, env, spec):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    procs = [subprocess.Popen([str(BIN), "--spec", str(spec), "run", str(script)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [o[1] for o in outs]
    prefixes = {json.loads(o[0].strip().splitlines()[-1])["prefix"] for o in outs}
    assert len(prefixes) == 1
    state = runtime_dirs(tmp_path / "store")
    assert len(state["logs"]) == 1 and len(state["data"]) == 1   # exactly one build


def test_concurrent_waiters_say_whom_they_wait_for(tmp_path, env, spec):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    first = subprocess.Popen([str(BIN), "--spec", str(spec), "run", str(script)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: runtime_dirs(tmp_path / "store")["logs"], 60)
    second = run(["--verbose", "--spec", spec, "run", script], env, timeout=300, check_rc=0)
    first.communicate(timeout=300)
    assert f"waiting for another inferenceutils (pid {first.pid})" in second.stderr


def _wait_for(condition, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_lock_timeout_names_the_holder(tmp_path, fixture_index):
    env = clean_env(tmp_path, INFERENCEUTILS_LOCK_TIMEOUT="1")
    spec = fixture_index.write_spec(tmp_path / "spec.toml", ["llama-cpp-python"], ["llama_cpp"], backends=SOURCE_ONLY)
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    holder = subprocess.Popen([str(BIN), "--spec", str(spec), "run", str(script)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: runtime_dirs(tmp_path / "store")["logs"], 60)
    waiter = run(["--spec", spec, "run", script], env, timeout=60)
    holder.communicate(timeout=300)
    if holder.returncode == 0 and waiter.returncode == 0:
        pytest.skip("the build finished within the 1 s timeout")
    assert waiter.returncode == 75
    assert f"held by pid {holder.pid}" in waiter.stderr and "INFERENCEUTILS_LOCK_TIMEOUT" in waiter.stderr


def test_kill_9_mid_build_leaves_nothing_ready_and_the_next_start_builds(tmp_path, env, spec):
    store = tmp_path / "store"
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    victim = subprocess.Popen([str(BIN), "--spec", str(spec), "run", str(script)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Kill once pip is at work inside the half-built runtime.
    _wait_for(lambda: any("Processing " in (store / "logs" / name).read_text(errors="replace")
                          for name in runtime_dirs(store)["logs"]), 120)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    state = runtime_dirs(store)
    assert state["runtimes"] == {}            # nothing published
    assert len(state["data"]) == 1            # the half-built directory is left behind ...
    stale = state["data"][0]
    result, _ = probe(tmp_path, env, "--spec", spec)
    assert result["preloaded"]
    after = runtime_dirs(store)
    assert stale not in after["data"] and len(after["data"]) == 1   # ... and cleaned by the next start


def test_unwritable_store_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    env = clean_env(tmp_path, INFERENCEUTILS_HOME=blocker / "store")
    proc = run(["run", "-c", "print(1)"], env)
    assert proc.returncode == 73
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(blocker / "store") in lines[0] and "INFERENCEUTILS_HOME" in lines[0]


def test_a_requirement_that_does_not_exist(tmp_path, env, fixture_index):
    spec = fixture_index.write_spec(tmp_path / "spec.toml", ["iu-no-such-project"], [])
    proc = run(["--spec", spec, "run", "-c", "print('ran')"], env, timeout=300)
    assert proc.returncode == 74
    first = proc.stderr.splitlines()[0]
    assert first.startswith("inferenceutils: error: building runtime")
    assert "'iu-no-such-project'" in first and "log: " in first
    log = first.split("log: ")[1].strip()
    assert Path(log).is_file() and "iu-no-such-project" in Path(log).read_text()
    assert "flags:" in proc.stderr and "last lines of the log" in proc.stderr
    state = runtime_dirs(tmp_path / "store")
    assert state["runtimes"] == {} and state["data"] == []   # nothing half-made left


def test_a_corrupt_manifest_is_rebuilt(tmp_path, env, spec):
    first, _ = probe(tmp_path, env, "--spec", spec)
    key = next(iter(runtime_dirs(tmp_path / "store")["runtimes"]))
    (tmp_path / "store" / "runtimes" / key / "manifest.json").write_text("{ broken")
    second, proc = probe(tmp_path, env, "--verbose", "--spec", spec)
    assert "corrupt manifest" in proc.stderr
    assert second["prefix"] != first["prefix"]
    assert json.loads(run(["runtime", "info", key], env, check_rc=0).stdout)["key"] == key


def test_a_preload_that_fails_after_the_build(tmp_path, env, spec):
    first, _ = probe(tmp_path, env, "--spec", spec)
    package = Path(first["prefix"]) / "lib/python3.11/site-packages/llama_cpp/__init__.py"
    package.write_text("raise ImportError('libllama.so: cannot open shared object file')\n")
    proc = run(["--spec", spec, "run", "-c", "print('user code ran')"], env)
    assert proc.returncode == 76
    assert "user code ran" not in proc.stdout
    assert "libllama.so" in proc.stderr and "runtime rebuild" in proc.stderr


def test_a_preload_that_never_imports_fails_the_build(tmp_path, env, fixture_index):
    spec = fixture_index.write_spec(tmp_path / "spec.toml", ["iu-fixture-pure"], ["iu_not_a_module"])
    proc = run(["--spec", spec, "run", "-c", "print(1)"], env, timeout=300)
    assert proc.returncode == 74
    assert "preload module 'iu_not_a_module' does not import" in proc.stderr
    assert runtime_dirs(tmp_path / "store")["runtimes"] == {}


def test_children_re_enter_the_runtime(tmp_path, env, spec):
    script = tmp_path / "children.py"
    script.write_text(r'''
import json, multiprocessing, subprocess, sys
def child(_):
    import sys
    return sys.prefix, "llama_cpp" in sys.modules
if __name__ == "__main__":
    pip = subprocess.run([sys.executable, "-m", "pip", "list", "--format=json"], capture_output=True, text=True)
    names = sorted(d["name"].lower().replace("_", "-") for d in json.loads(pip.stdout))
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        kids = pool.map(child, range(2))
    sub = subprocess.run([sys.executable, "-c", "import sys; print('llama_cpp' in sys.modules, sys.prefix)"],
                         capture_output=True, text=True)
    print(json.dumps({"pip": names, "kids": kids, "sub": sub.stdout.split(), "prefix": sys.prefix}))
''')
    proc = run(["--spec", spec, "run", script], env, timeout=300, check_rc=0)
    out = json.loads(proc.stdout)
    assert "llama-cpp-python" in out["pip"] and "pip" in out["pip"]
    assert out["kids"] == [[out["prefix"], True]] * 2
    assert out["sub"] == ["True", out["prefix"]]


def test_http_index(tmp_path, env, http_index):
    spec = http_index.write_spec(tmp_path / "spec.toml", ["llama-cpp-python"], ["llama_cpp"], backends=SOURCE_ONLY)
    result, _ = probe(tmp_path, env, "--spec", spec)
    assert result["preloaded"] and result["version"] == "0.3.99"


def test_offline_uses_no_network_index_but_local_links(tmp_path, env, http_index, fixture_index):
    """--offline: the spec's HTTP index is not asked; local find-links (and file:// indexes) still are."""
    spec = http_index.write_spec(tmp_path / "spec.toml", ["llama-cpp-python"], ["llama_cpp"], backends=SOURCE_ONLY)
    result, _ = probe(tmp_path, env, "--offline", "--find-links", fixture_index.files_dir, "--spec", spec)
    assert result["version"] == "0.3.99"
    log = next((tmp_path / "store" / "logs").iterdir()).read_text()
    command = next(line for line in log.splitlines() if line.startswith("$ "))
    assert "--no-index" in command and "127.0.0.1" not in command
    assert f"--find-links {fixture_index.files_dir}" in command


def test_offline_keeps_a_file_index(tmp_path, env, fixture_index):
    spec = fixture_index.write_spec(tmp_path / "spec.toml", ["llama-cpp-python"], ["llama_cpp"], backends=SOURCE_ONLY)
    result, _ = probe(tmp_path, env, "--offline", "--spec", spec)
    assert result["version"] == "0.3.99"


def test_the_default_spec_as_far_as_offline_allows(tmp_path, env):
    """llama-cpp-python from PyPI: no PyPI here, so --offline shows the resolved flags and command."""
    proc = run(["--offline", "run", "-c", "print(1)"], env, timeout=300)
    assert proc.returncode == 74
    assert "'llama-cpp-python'" in proc.stderr
    log = Path(proc.stderr.splitlines()[0].split("log: ")[1]).read_text()
    assert "--no-binary llama-cpp-python" in log and "CMAKE_ARGS=" in log and "--no-index" in log


def test_runtime_subcommands(tmp_path, env, spec):
    first, _ = probe(tmp_path, env, "--spec", spec)
    listed = json.loads(run(["runtime", "list", "--json"], env, check_rc=0).stdout)
    assert len(listed) == 1 and listed[0]["backend"] == "cpu" and listed[0]["matches"] is True
    key = listed[0]["key"]
    table = run(["runtime", "list"], env, check_rc=0).stdout
    assert key in table and "MATCHES" in table
    assert run(["--spec", spec, "runtime", "path"], env, check_rc=0).stdout.strip() == first["prefix"]
    info = json.loads(run(["runtime", "info", key[:6]], env, check_rc=0).stdout)
    assert info["key"] == key and info["source"] == "build"
    rebuilt = run(["--spec", spec, "runtime", "rebuild"], env, timeout=300, check_rc=0).stdout.strip()
    assert rebuilt != first["prefix"] and Path(rebuilt).is_dir() and not Path(first["prefix"]).exists()
    assert run(["runtime", "remove", "nope"], env).returncode == 65
    assert run(["runtime", "remove", key], env, check_rc=0).stdout.strip() == f"removed {key}"
    assert runtime_dirs(tmp_path / "store")["runtimes"] == {} and not Path(rebuilt).exists()
    assert run(["runtime", "prune"], env).returncode == 2
    probe(tmp_path, env, "--spec", spec)
    assert "0 runtimes removed" in run(["runtime", "prune", "--unused-for", "1"], env, check_rc=0).stdout
    assert "1 runtime removed" in run(["runtime", "prune", "--unused-for", "0"], env, check_rc=0).stdout
    assert run(["runtime", "frob"], env).returncode == 2


def test_removing_a_runtime_in_use_does_not_break_the_running_process(tmp_path, env, spec):
    probe(tmp_path, env, "--spec", spec)
    key = next(iter(runtime_dirs(tmp_path / "store")["runtimes"]))
    script = tmp_path / "slow.py"
    script.write_text("import sys, time\nprint('ready', flush=True)\nsys.stdin.readline()\n"
                      "import iu_fixture_pure\nprint('imported', iu_fixture_pure.__version__)\n")
    proc = subprocess.Popen([str(BIN), "--spec", str(spec), "run", str(script)], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "ready"
    run(["runtime", "remove", key], env, check_rc=0)
    out, err = proc.communicate("go\n", timeout=60)
    assert proc.returncode == 0, err
    assert "imported 1.0.0" in out             # a lazy import after the removal still works
    assert runtime_dirs(tmp_path / "store")["runtimes"] == {}


STUB_PROBE = r'''
import json, os, sys
import llama_cpp
print(json.dumps({"build_env": llama_cpp.BUILD_ENV, "LD_LIBRARY_PATH": os.environ.get("LD_LIBRARY_PATH", ""),
                  "LIBRARY_PATH": os.environ.get("LIBRARY_PATH", "")}))
'''


def test_cuda_build_without_the_driver_library_links_against_the_toolkit_stub(tmp_path, fixture_index):
    """Issue #17 point 2: a build host (nvcc, no libcuda.so.1): the stub dir is on the build's link
    path (recorded by the fixture sdist), said in the build log, and nowhere in the runtime."""
    from test_info import FAKECUDA, ROOTS
    stubs = str((ROOTS / "x86-nvidia" / "usr" / "local" / "cuda" / "lib64" / "stubs").resolve())
    env = clean_env(tmp_path, INFERENCEUTILS_SYSROOT=ROOTS / "x86-nvidia",
                    INFERENCEUTILS_CUDA_LIBRARY="/nonexistent/libcuda.so.1",  # no driver library
                    INFERENCEUTILS_NVML_LIBRARY=FAKECUDA / "libnvidia-ml.so.1")
    decision = json.loads(run(["info", "--json"], env, check_rc=0).stdout)["decision"]
    assert decision["backend"] == "cuda", decision["reasons"]
    assert decision["build_env"]["LIBRARY_PATH"] == stubs
    assert any("stub" in r and "link path only" in r for r in decision["reasons"])
    spec = fixture_index.write_spec(tmp_path / "spec.toml", ["llama-cpp-python"], ["llama_cpp"],
                                    backends={"cuda": {"wheel_indexes": []}})
    script = tmp_path / "probe.py"
    script.write_text(STUB_PROBE)
    proc = run(["--spec", spec, "run", script], env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert f"-DCMAKE_EXE_LINKER_FLAGS=-Wl,-L{stubs},--allow-shlib-undefined" in result["build_env"]["CMAKE_ARGS"]
    assert f"-DCMAKE_SHARED_LINKER_FLAGS=-Wl,-L{stubs}" in result["build_env"]["CMAKE_ARGS"]
    assert stubs not in result["LD_LIBRARY_PATH"] and stubs not in result["LIBRARY_PATH"]
    key = next(iter(runtime_dirs(tmp_path / "store")["runtimes"]))
    manifest = json.loads(run(["runtime", "info", key], env, check_rc=0).stdout)
    assert not any("stubs" in lib for lib in manifest["libraries"]), manifest["libraries"]
    log = Path(manifest["log"]).read_text()
    assert f"linking against the CUDA toolkit's stub {stubs}/libcuda.so, for this build only" in log
