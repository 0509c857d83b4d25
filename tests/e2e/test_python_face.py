"""The Python face (issue: `import inferenceutils`, `inferenceutils.load(...)`, Jupyter, portable
installs): the package inside launcher-started runtimes, load()'s machine defaults on real and
fake-GPU facts, the plain-Python import from a venv without the runtime, kernel install/list/remove,
and portable mode. Runtimes come from the offline fixture index; a runtime is built once per module
(one CPU, one fake-CUDA) and shared by the tests."""
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BIN, REPO, clean_env, run
from test_info import FAKECUDA, ROOTS

PIP_WHEEL = sorted(Path("/usr/share/python-wheels").glob("pip-*.whl"))[-1]
GiB = 1 << 30


def write_gguf(path, block_count=32, size=0, arch="llama"):
    """A tiny GGUF v3 file: header and metadata (architecture, block_count), sparse-padded to `size`."""
    def s(text):
        return struct.pack("<Q", len(text.encode())) + text.encode()
    kvs = [s("general.architecture") + struct.pack("<I", 8) + s(arch),
           s("general.name") + struct.pack("<I", 8) + s("fixture"),
           s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + s("a") + s("b"),
           s(f"{arch}.block_count") + struct.pack("<II", 4, block_count)]
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs)
    with open(path, "wb") as f:
        f.write(data)
        if size > len(data):
            f.truncate(size)
    return Path(path)


def launcher_json(args, env, cwd=None):
    proc = run(args, env, cwd=cwd, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc


def find_wheel() -> Path:
    prefix = BIN.resolve().parent.parent
    wheels = sorted((prefix / "share" / "inferenceutils").glob("inferenceutils-*.whl")) or \
        sorted((prefix / "wheel").glob("inferenceutils-*.whl"))
    assert wheels, f"no inferenceutils wheel beside {BIN}"
    return wheels[-1]


@pytest.fixture(scope="module")
def cpu(tmp_path_factory, fixture_index):
    """A CPU runtime with llama_cpp (preloaded), a native package and the stand-in ipykernel."""
    base = tmp_path_factory.mktemp("cpu")
    spec = fixture_index.write_spec(base / "spec.toml", ["llama-cpp-python", "iu-fixture-native", "ipykernel"],
                                    ["llama_cpp"], backends={"cpu": {"wheel_indexes": []}})
    env = clean_env(base, INFERENCEUTILS_SPEC=spec)
    proc = run(["runtime", "path"], env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    prefix = Path(proc.stdout.strip())
    manifest = json.loads((prefix / "manifest.json").read_text())
    return {"base": base, "env": env, "spec": spec, "prefix": prefix, "key": manifest["key"]}


@pytest.fixture(scope="module")
def gpu(tmp_path_factory, fixture_index):
    """A CUDA runtime on fake GPUs (24 + 16 GiB) and the fake x86-nvidia machine."""
    base = tmp_path_factory.mktemp("gpu")
    spec = fixture_index.write_spec(base / "spec.toml", ["llama-cpp-python"], ["llama_cpp"],
                                    backends={"cuda": {"wheel_indexes": []}})
    env = clean_env(base, INFERENCEUTILS_SPEC=spec, INFERENCEUTILS_SYSROOT=ROOTS / "x86-nvidia",
                    INFERENCEUTILS_CUDA_LIBRARY=FAKECUDA / "libcuda.so.1",
                    INFERENCEUTILS_NVML_LIBRARY=FAKECUDA / "libnvidia-ml.so.1",
                    FAKE_CUDA_DEVICES="Fake A|8.6|24;Fake B|9.0|16")
    proc = run(["runtime", "path"], env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return {"base": base, "env": env, "prefix": Path(proc.stdout.strip())}


FACE_PROBE = r'''
import json, subprocess, sys
import inferenceutils as iu
info, rt = iu.system_info(), iu.runtime()
child = subprocess.run([sys.executable, "-c",
    "import json, inferenceutils as iu; print(json.dumps([iu.system_info().to_dict(), iu.runtime().to_dict()]))"],
    capture_output=True, text=True)
print(json.dumps({
    "info": info.to_dict(), "runtime": rt.to_dict(), "file": iu.__file__, "version": iu.__version__,
    "inside": iu.inside_launcher, "attr": [info.facts.cpu.physical_cores, info.decision.backend, rt.key, rt.path],
    "prefix": sys.prefix, "child": json.loads(child.stdout) if child.returncode == 0 else child.stderr}))
'''


def test_system_info_and_runtime_inside_the_launcher(cpu, tmp_path):
    script = tmp_path / "face.py"
    script.write_text(FACE_PROBE)
    got, proc = launcher_json(["run", script], cpu["env"])
    info = json.loads(run(["info", "--json"], cpu["env"], check_rc=0).stdout)
    assert got["info"] == info                                   # the same document, field for field
    assert got["inside"] is True and got["version"] == info["launcher_version"]
    # The package comes with the launcher (its assets), not from the runtime's site-packages.
    assert Path(got["file"]).resolve() == (BIN.resolve().parent.parent / "share/inferenceutils/python/inferenceutils/__init__.py").resolve()
    assert not list(cpu["prefix"].glob("lib/python3.11/site-packages/inferenceutils*"))
    rt = got["runtime"]
    assert rt["key"] == cpu["key"] and rt["path"] == got["prefix"] == str(cpu["prefix"])
    assert rt["backend"] == "cpu" and rt["origin"] == "built" and rt["source"] == "build"
    assert rt["preload"] == ["llama_cpp"] and rt["preloaded"] == ["llama_cpp"]
    assert "ipykernel" in rt["spec"]["requirements"] and rt["inside_launcher"] is True
    assert got["attr"] == [info["facts"]["cpu"]["physical_cores"], "cpu", cpu["key"], str(cpu["prefix"])]
    # A child started through sys.executable (<runtime>/bin/python → the launcher) has it too.
    child_info, child_rt = got["child"]
    assert child_info["facts"] == info["facts"] and child_info["decision"] == info["decision"]
    assert child_rt["key"] == cpu["key"] and child_rt["preloaded"] == ["llama_cpp"]


LOAD_PROBE = r'''
import json, sys
import inferenceutils as iu
out = {}
for name, path, kwargs in json.loads(sys.argv[1]):
    try:
        model = iu.load(path, **kwargs)
        out[name] = {"kwargs": model.kwargs, "model_path": model.model_path, "reasons": iu.last_load_plan.reasons,
                     "gguf": iu.last_load_plan.gguf}
    except iu.ModelError as e:
        out[name] = {"error": type(e).__name__, "message": str(e), "bases": [c.__name__ for c in type(e).__mro__]}
print(json.dumps({"out": out, "facts": iu.system_info().facts.to_dict()}))
'''


def load_probe(env, tmp_path, cases):
    script = tmp_path / "load.py"
    script.write_text(LOAD_PROBE)
    log = tmp_path / "llama.log"
    env = dict(env, IU_FIXTURE_LLAMA_LOG=str(log))
    got, _ = launcher_json(["run", script, json.dumps(cases)], env)
    return got["out"], got["facts"], [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def expected_threads(facts):
    cpu = facts["cpu"]
    n = min(cpu["physical_cores"], cpu["usable_cores"])
    if cpu["cgroup_cpu_quota"] > 0:
        n = min(n, max(1, int(cpu["cgroup_cpu_quota"])))
    return max(1, n)


def test_load_defaults_and_errors_on_the_cpu(cpu, tmp_path):
    model = write_gguf(tmp_path / "tiny.gguf")
    (tmp_path / "weights.bin").write_bytes(b"PK\x03\x04 not a gguf file")
    huge = write_gguf(tmp_path / "huge.gguf", size=8 << 40)  # 8 TiB, sparse
    out, facts, calls = load_probe(cpu["env"], tmp_path, [
        ["default", str(model), {}],
        ["override", str(model), {"n_threads": 3, "n_gpu_layers": 7, "use_mmap": False, "n_ctx": 512}],
        ["missing", str(tmp_path / "nope.gguf"), {}],
        ["not_gguf", str(tmp_path / "weights.bin"), {}],
        ["huge", str(huge), {}],
    ])
    n = expected_threads(facts)
    assert out["default"]["kwargs"] == {"n_gpu_layers": 0, "n_threads": n, "use_mmap": True}
    assert out["default"]["reasons"]["n_gpu_layers"].startswith("0 (no offload): the runtime's backend is cpu")
    assert f"{facts['cpu']['physical_cores']} physical core" in out["default"]["reasons"]["n_threads"]
    assert out["default"]["gguf"]["block_count"] == 32 and out["default"]["gguf"]["architecture"] == "llama"
    assert out["override"]["kwargs"] == {"n_gpu_layers": 7, "n_threads": 3, "use_mmap": False, "n_ctx": 512}
    assert out["override"]["reasons"]["n_threads"].startswith("given by you")
    assert [c["kwargs"] for c in calls] == [out["default"]["kwargs"], out["override"]["kwargs"]]
    assert calls[0]["model_path"] == str(model)
    # Errors before llama.cpp is asked (no more Llama calls), naming the path and the fix.
    assert out["missing"]["error"] == "ModelNotFoundError" and "FileNotFoundError" in out["missing"]["bases"]
    assert str(tmp_path / "nope.gguf") in out["missing"]["message"] and "download" in out["missing"]["message"]
    assert out["not_gguf"]["error"] == "NotGGUFError" and str(tmp_path / "weights.bin") in out["not_gguf"]["message"]
    assert "convert" in out["not_gguf"]["message"]
    assert out["huge"]["error"] == "ModelTooLargeError" and str(huge) in out["huge"]["message"]
    assert "quantization" in out["huge"]["message"] and "MemoryError" in out["huge"]["bases"]


def test_load_offload_on_fake_gpus(gpu, tmp_path):
    small = write_gguf(tmp_path / "small.gguf", size=8 * GiB)
    large = write_gguf(tmp_path / "large.gguf", block_count=40, size=50 * GiB)
    too_large = write_gguf(tmp_path / "too-large.gguf", size=400 * GiB)
    out, facts, calls = load_probe(gpu["env"], tmp_path, [
        ["small", str(small), {}], ["large", str(large), {}], ["large_forced", str(large), {"n_gpu_layers": -1}],
        ["too_large", str(too_large), {}]])
    assert [d["memory_bytes"] for d in facts["nvidia"]["devices"]] == [24 * GiB, 16 * GiB]
    n = expected_threads(facts)
    assert out["small"]["kwargs"] == {"n_gpu_layers": -1, "n_threads": n, "use_mmap": True}
    reason = out["small"]["reasons"]["n_gpu_layers"]
    assert reason.startswith("-1 (all layers)") and "2 visible GPUs with 40.0 GiB" in reason
    assert "free memory is not known" in reason
    share = int(40 * (0.9 * 40 * GiB) // (50 * GiB))           # 28 of 40 layers fit in 36 GiB
    assert out["large"]["kwargs"]["n_gpu_layers"] == share == 28
    assert out["large"]["reasons"]["n_gpu_layers"].startswith(f"{share} of 40 layers")
    assert out["large_forced"]["kwargs"]["n_gpu_layers"] == -1
    assert out["too_large"]["error"] == "ModelTooLargeError" and "GPU memory" in out["too_large"]["message"]
    assert [c["kwargs"]["n_gpu_layers"] for c in calls] == [-1, share, -1]


CONFLICT_PROBE = r'''
import ctypes, json, sys, warnings
warnings.simplefilter("always")
if len(sys.argv) > 1:
    ctypes.CDLL(sys.argv[1])          # another copy of a library the runtime has, loaded first
import inferenceutils as iu
import llama_cpp
print(json.dumps({"inside": iu.inside_launcher, "runtime": iu.runtime().to_dict(), "llama": llama_cpp.__file__,
                  "info": iu.system_info().to_dict(), "prefix": sys.prefix}))
'''


def test_plain_python_import_from_another_venv(cpu, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3.11", "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = dict(cpu["env"], INFERENCEUTILS_BIN=str(BIN), PIP_CONFIG_FILE=os.devnull)
    pip = subprocess.run([str(python), f"{PIP_WHEEL}/pip", "install", "--no-index", "--no-cache-dir",
                          "--disable-pip-version-check", str(find_wheel())], env=env, capture_output=True, text=True)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert not list(venv.glob("lib/python3.11/site-packages/llama_cpp*"))   # the runtime is elsewhere
    script = tmp_path / "plain.py"
    script.write_text(CONFLICT_PROBE)
    other = tmp_path / "elsewhere" / "libiufixture.so"
    other.parent.mkdir()
    shutil.copy(next(cpu["prefix"].glob("lib/python3.11/site-packages/iu_fixture_native/libiufixture.so")), other)

    proc = subprocess.run([str(python), str(script), str(other)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["inside"] is False and got["prefix"] == str(venv)
    assert got["runtime"]["key"] == cpu["key"] and got["runtime"]["path"] == str(cpu["prefix"])
    assert got["runtime"]["preloaded"] == ["llama_cpp"]
    assert got["llama"].startswith(str(cpu["prefix"]))
    assert got["info"]["decision"]["backend"] == "cpu"
    assert "RuntimeWarning" in proc.stderr and f"libiufixture.so ({other})" in proc.stderr

    clean = subprocess.run([str(python), str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0 and "Warning" not in clean.stderr, clean.stderr

    # A store without the runtime: the import provisions it, saying so on stderr.
    fresh = subprocess.run([str(python), str(script)], env=dict(env, INFERENCEUTILS_HOME=str(tmp_path / "fresh")),
                           capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr
    assert "inferenceutils: preparing the runtime" in fresh.stderr
    assert json.loads(fresh.stdout.strip().splitlines()[-1])["runtime"]["key"] == cpu["key"]

    no_launcher = dict(env, INFERENCEUTILS_BIN=str(tmp_path / "missing"))
    failed = subprocess.run([str(python), "-c", "import inferenceutils"], env=no_launcher, capture_output=True, text=True)
    assert failed.returncode == 1 and "LauncherError" in failed.stderr and "INFERENCEUTILS_BIN" in failed.stderr


def test_kernel_install_list_remove(cpu, tmp_path):
    env = dict(cpu["env"], JUPYTER_DATA_DIR=str(tmp_path / "jupyter"))
    proc = run(["kernel", "install", "--name", "iu-test", "--user"], env, check_rc=0)
    spec_dir = tmp_path / "jupyter" / "kernels" / "iu-test"
    assert str(spec_dir) in proc.stdout
    kernel = json.loads((spec_dir / "kernel.json").read_text())
    assert kernel["language"] == "python" and kernel["display_name"]
    assert kernel["argv"][0] == str(BIN.resolve())
    assert kernel["argv"][-5:] == ["run", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    assert kernel["argv"][1:-5] == ["--with", "ipykernel"]
    assert kernel["env"]["INFERENCEUTILS_SPEC"] == str(cpu["spec"])

    listed = json.loads(run(["kernel", "list", "--json"], env, check_rc=0).stdout)
    assert [(k["name"], k["path"]) for k in listed] == [("iu-test", str(spec_dir))]

    # The command Jupyter would run: ipykernel inside the runtime, after the preload.
    connection = tmp_path / "kernel-123.json"
    log = tmp_path / "kernel.log"
    argv = [a.replace("{connection_file}", str(connection)) for a in kernel["argv"]]
    (tmp_path / "jupyter-env").mkdir()
    kernel_env = dict(clean_env(tmp_path / "jupyter-env"), **kernel["env"], IU_FIXTURE_KERNEL_LOG=str(log))
    started = subprocess.run(argv, env=kernel_env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    record = json.loads(log.read_text().splitlines()[-1])
    assert record["argv"][1:] == ["-f", str(connection)]
    assert record["llama_cpp_preloaded"] is True and record["prefix"] == str(cpu["prefix"])
    assert record["inferenceutils"] == cpu["key"]   # --with ipykernel: already in this spec, same runtime

    # --user without JUPYTER_DATA_DIR: ~/.local/share/jupyter.
    home_env = {k: v for k, v in env.items() if k != "JUPYTER_DATA_DIR"}
    run(["kernel", "install", "--user"], home_env, check_rc=0)
    assert (Path(home_env["HOME"]) / ".local/share/jupyter/kernels/inferenceutils/kernel.json").is_file()

    assert "removed" in run(["kernel", "remove", "iu-test"], env, check_rc=0).stdout
    assert not spec_dir.exists()
    assert json.loads(run(["kernel", "list", "--json"], env, check_rc=0).stdout) == []
    again = run(["kernel", "remove", "iu-test"], env)
    assert again.returncode != 0 and "no inferenceutils kernel named 'iu-test'" in again.stderr
    foreign = tmp_path / "jupyter" / "kernels" / "python3"
    foreign.mkdir(parents=True)
    (foreign / "kernel.json").write_text(json.dumps({"argv": ["python3"], "display_name": "Python 3", "language": "python"}))
    refused = run(["kernel", "remove", "python3"], env)
    assert refused.returncode != 0 and "not installed by inferenceutils" in refused.stderr and foreign.exists()


def test_portable_install_keeps_its_store_beside_the_executable(tmp_path):
    port = tmp_path / "usb"
    (port / "bin").mkdir(parents=True)
    (port / "share").mkdir()
    shutil.copy2(BIN, port / "bin" / "inferenceutils")
    (port / "share" / "inferenceutils").symlink_to(BIN.resolve().parent.parent / "share" / "inferenceutils")
    exe = port / "bin" / "inferenceutils"
    env = {k: v for k, v in clean_env(tmp_path).items() if k != "INFERENCEUTILS_HOME"}

    def store_root(environment):
        proc = subprocess.run([str(exe), "info", "--json"], env=environment, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["store"]["root"]

    assert store_root(env) == str(Path(env["HOME"]) / ".cache" / "inferenceutils")   # not portable: XDG
    (port / "bin" / "inferenceutils.portable").write_text("")
    assert store_root(env) == str(port / "bin" / "store")
    assert (port / "bin" / "store" / "facts.json").is_file()
    assert store_root(dict(env, INFERENCEUTILS_HOME=str(tmp_path / "explicit"))) == str(tmp_path / "explicit")
    (port / "bin" / "inferenceutils.portable").unlink()
    assert store_root(env) == str(port / "bin" / "store")      # a store/ folder alone is enough

    # A read-only location: the same error as any store that cannot be written (exit 73).
    shutil.rmtree(port / "bin" / "store")
    (port / "bin" / "store").symlink_to("/proc/self/fdinfo")
    proc = subprocess.run([str(exe), "run", "-c", "pass"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 73, (proc.returncode, proc.stderr)
    assert str(port / "bin" / "store") in proc.stderr and "INFERENCEUTILS_HOME" in proc.stderr
