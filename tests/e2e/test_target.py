"""Building for a target profile (issue #17 point 3): a build host with nvcc and no GPU or driver
decides and keys the CUDA runtime for machines with the given GPUs (`runtime build --cuda-arch`),
`info` shows the target, `runtime pack` makes the bundle, and a GPU machine with one of those GPUs
takes it offline without building; one with another GPU refuses it, saying why."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import clean_env, run, runtime_dirs
from test_info import FAKECUDA, ROOTS

PROBE = r'''
import json, llama_cpp
print(json.dumps({"build_env": llama_cpp.BUILD_ENV}))
'''


@pytest.fixture
def build_host(tmp_path):
    """The fake x86-nvidia machine without its driver: no /proc/driver/nvidia, no libcuda, no NVML;
    its CUDA toolkit (nvcc 12.4 by version.json, lib64/stubs/libcuda.so) stays."""
    root = tmp_path / "build-host-root"
    shutil.copytree(ROOTS / "x86-nvidia", root, symlinks=True)
    shutil.rmtree(root / "proc" / "driver")
    env = clean_env(tmp_path, INFERENCEUTILS_SYSROOT=root,
                    INFERENCEUTILS_CUDA_LIBRARY="/nonexistent/libcuda.so.1",
                    INFERENCEUTILS_NVML_LIBRARY="/nonexistent/libnvidia-ml.so.1")
    return {"root": root, "env": env}


def gpu_node(tmp_path, name, devices, cuda_version="12040"):
    (tmp_path / name).mkdir()
    return clean_env(tmp_path / name, INFERENCEUTILS_SYSROOT=ROOTS / "x86-nvidia",
                     INFERENCEUTILS_CUDA_LIBRARY=FAKECUDA / "libcuda.so.1",
                     INFERENCEUTILS_NVML_LIBRARY=FAKECUDA / "libnvidia-ml.so.1",
                     FAKE_CUDA_DEVICES=devices, FAKE_CUDA_VERSION=cuda_version)


def test_build_for_a_target_on_a_host_without_gpu_pack_and_use_on_a_gpu_node(tmp_path, build_host, fixture_index):
    env = build_host["env"]
    spec = fixture_index.write_spec(tmp_path / "spec.toml", ["llama-cpp-python"], ["llama_cpp"],
                                    backends={"cuda": {"wheel_indexes": []}})
    # This machine alone decides cpu: no driver, no GPU.
    assert json.loads(run(["--spec", spec, "info", "--json"], env, check_rc=0).stdout)["decision"]["backend"] == "cpu"

    info = json.loads(run(["--spec", spec, "info", "--json", "--cuda-arch", "90,sm_86"], env, check_rc=0).stdout)
    decision = info["decision"]
    assert decision["backend"] == "cuda"
    assert decision["target"] == {"backend": "cuda", "cuda_archs": ["8.6", "9.0"], "cuda": "12.4"}  # nvcc's CUDA
    assert decision["profile"]["gpu_targets"] == ["sm_86", "sm_90"] and decision["profile"]["cuda"] == "12.4"
    assert "-DCMAKE_CUDA_ARCHITECTURES=86;90" in decision["build_env"]["CMAKE_ARGS"]
    human = run(["--spec", spec, "info", "--cuda-arch", "86,90"], env, check_rc=0).stdout
    assert "target      sm_86, sm_90, CUDA 12.4 (--cuda-arch" in human

    proc = run(["--spec", spec, "runtime", "build", "--backend", "cuda", "--cuda-arch", "86,90", "--cuda", "12.4",
                "--json"], env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    built = json.loads(proc.stdout)
    assert built["backend"] == "cuda" and built["target"]["cuda_archs"] == ["8.6", "9.0"]
    assert built["key"] == info["sources"]["runtime_key"]      # info keyed the same runtime
    store = tmp_path / "store"
    assert list(runtime_dirs(store)["runtimes"]) == [built["key"]]
    manifest = json.loads(run(["runtime", "info", built["key"]], env, check_rc=0).stdout)
    assert manifest["decision"]["target"]["cuda"] == "12.4"
    listed = json.loads(run(["runtime", "list", "--json"], env, check_rc=0).stdout)
    assert listed[0]["target"]["cuda_archs"] == ["8.6", "9.0"] and listed[0]["matches"] is False
    # The build host has no driver library: its build linked against the toolkit's stub.
    log = open(manifest["log"]).read()
    assert "stub" in log and "-DCMAKE_CUDA_ARCHITECTURES=86;90" in log

    bundle = tmp_path / "cuda-86-90.tar.zst"
    run(["runtime", "pack", built["key"], "-o", bundle], env, check_rc=0, timeout=300)

    # A node with an RTX-3090-like GPU (8.6) and a driver for CUDA 12.4: takes the bundle, no build.
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    node = gpu_node(tmp_path, "node-a", "Fake A|8.6|24")
    proc = run(["--spec", spec, "--bundle", bundle, "--no-build", "run", script], node, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "-DCMAKE_CUDA_ARCHITECTURES=86;90" in got["build_env"]["CMAKE_ARGS"]
    [node_key] = runtime_dirs(tmp_path / "node-a" / "store")["runtimes"]
    node_manifest = json.loads(run(["runtime", "info", node_key], node, check_rc=0).stdout)
    assert node_manifest["source"] == "bundle", node_manifest["source"]

    # A node with a 7.5 GPU: the bundle holds no code for it; --no-build says so and builds nothing.
    other = gpu_node(tmp_path, "node-b", "Fake T|7.5|16")
    proc = run(["--spec", spec, "--bundle", bundle, "--no-build", "run", script], other, timeout=300)
    assert proc.returncode != 0
    assert "8.6, 9.0" in proc.stderr and "7.5" in proc.stderr, proc.stderr
    assert runtime_dirs(tmp_path / "node-b" / "store")["runtimes"] == {}


@pytest.mark.parametrize("args, rc, words", [
    (["--cuda-arch", "8x"], 2, ["'8x' is not a compute capability"]),
    (["--cuda-arch", ""], 2, ["at least one compute capability"]),
    (["--cuda", "12.4"], 2, ["--cuda needs --cuda-arch"]),
    (["--cuda-arch", "86", "--cuda", "twelve"], 2, ["'twelve' is not a CUDA version"]),
    (["--backend", "cpu", "--cuda-arch", "86"], 2, ["--cuda-arch describes CUDA machines", "cpu"]),
    (["--cuda-arch", "100"], 69, ["nvcc 12.4 cannot target sm_100"]),
    (["--cuda-arch", "86", "--cuda", "12.0"], 69, ["nvcc 12.4 is newer than the target's (--cuda) CUDA 12.0"]),
    (["--cuda-arch"], 2, ["--cuda-arch needs a value"]),
])
def test_bad_target_options_say_what_and_build_nothing(tmp_path, build_host, fixture_index, args, rc, words):
    spec = fixture_index.write_spec(tmp_path / "spec.toml", ["llama-cpp-python"], ["llama_cpp"],
                                    backends={"cuda": {"wheel_indexes": []}})
    proc = run(["--spec", spec, "runtime", "build", *args], build_host["env"], timeout=120)
    assert proc.returncode == rc, (proc.returncode, proc.stderr)
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, err
    assert runtime_dirs(tmp_path / "store")["runtimes"] == {}


def test_a_build_host_verifies_a_cuda_build_that_needs_the_driver_with_the_stub(tmp_path, build_host, fixture_index):
    """The real libggml-cuda.so needs libcuda.so.1 at load time: without a driver the runtime's
    check (importing the preload) would fail after the whole build. The verification alone finds
    the toolkit's stub as libcuda.so.1; the runtime itself never does."""
    stub_c = tmp_path / "stub.c"
    stub_c.write_text("int cuInit(unsigned flags) { (void)flags; return 34; /* CUDA_ERROR_STUB_LIBRARY */ }\n")
    stub = build_host["root"] / "usr" / "local" / "cuda" / "lib64" / "stubs" / "libcuda.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(stub), str(stub_c)], check=True)
    spec = fixture_index.write_spec(tmp_path / "spec.toml", ["llama-cpp-python"], ["llama_cpp"],
                                    backends={"cuda": {"wheel_indexes": []}})
    env = dict(build_host["env"], IU_FIXTURE_LINK_LIBCUDA="1")
    proc = run(["--spec", spec, "runtime", "build", "--cuda-arch", "86", "--json"], env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    built = json.loads(proc.stdout)
    prefix = Path(built["prefix"])
    lib = prefix / "lib" / "python3.11" / "site-packages" / "llama_cpp" / "lib" / "libggml-cuda.so"
    assert "libcuda.so.1" in subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True).stdout
    manifest = json.loads(run(["runtime", "info", built["key"]], env, check_rc=0).stdout)
    log = Path(manifest["log"]).read_text()
    assert f"verifying with the toolkit's stub {stub.parent}/libcuda.so as libcuda.so.1" in log
    assert not (prefix / ".iu-verify-stubs").exists()
    assert not any("stubs" in lib for lib in manifest["libraries"])
    # The runtime itself does not see the stub: on this driverless host its python cannot load it.
    proc = subprocess.run([str(prefix / "bin" / "python"), "-c", "import llama_cpp"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "libcuda.so.1" in proc.stderr, proc.stderr
