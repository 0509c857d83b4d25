"""`inferenceutils info [--json]`: hardware facts, the backend decision and its reasons, the facts
cache, backend overrides. GPUs are faked with tests/fixtures/roots and the fake libcuda."""
import json
from pathlib import Path

from conftest import BIN, BUILD_DIR, REPO, clean_env, run

ROOTS = REPO / "tests" / "fixtures" / "roots"
# The fake driver libraries are built beside the binary's build tree (tests/fixtures/fakecuda).
_BESIDE_BIN = BIN.resolve().parent.parent / "tests" / "fixtures" / "fakecuda"
FAKECUDA = _BESIDE_BIN if (_BESIDE_BIN / "libcuda.so.1").exists() else BUILD_DIR / "fixtures" / "fakecuda"


def cpuinfo_flags():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def info_json(env, *extra):
    proc = run([*extra, "info", "--json"], env, check_rc=0)
    return json.loads(proc.stdout)


def fake_gpu_env(tmp_path, **extra):
    settings = dict(INFERENCEUTILS_SYSROOT=ROOTS / "x86-nvidia",
                    INFERENCEUTILS_CUDA_LIBRARY=FAKECUDA / "libcuda.so.1",
                    INFERENCEUTILS_NVML_LIBRARY=FAKECUDA / "libnvidia-ml.so.1")
    settings.update(extra)
    return clean_env(tmp_path, **settings)


def test_this_machine_chooses_cpu_and_names_its_features(tmp_path):
    env = clean_env(tmp_path)
    proc = run(["info"], env, check_rc=0)
    out = proc.stdout
    assert "Decision" in out and "Store" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert lines["backend"].split()[1] == "cpu"
    features = lines["features"].split()[1:]
    flags = cpuinfo_flags()
    for feature in ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni"):
        assert (feature in features) == (feature in flags), feature
    assert "cuda not usable: no NVIDIA driver" in out
    assert str(tmp_path / "store") in out
    assert "-DGGML_NATIVE=on" in out


def test_json_schema(tmp_path):
    env = clean_env(tmp_path)
    doc = info_json(env)
    assert doc["schema_version"] == 1
    assert set(doc) >= {"schema_version", "launcher_version", "facts", "decision", "store"}
    facts, decision = doc["facts"], doc["decision"]
    assert facts["schema_version"] == 1
    assert facts["python"]["abi_tag"] == "cp311"
    assert facts["cpu"]["logical_cores"] >= 1
    assert set(facts["cpu"]["features"]) <= cpuinfo_flags()
    assert decision["backend"] == "cpu"
    assert decision["profile_key"].startswith("cpu-")
    assert decision["wheel_indexes"] == ["https://abetlen.github.io/llama-cpp-python/whl/cpu"]
    assert [c["backend"] for c in decision["considered"]] == ["cuda", "rocm", "metal", "vulkan", "cpu"]
    assert doc["store"]["root"] == str(tmp_path / "store")
    assert doc["store"]["runtimes"] == []


def test_facts_are_cached_in_the_store(tmp_path):
    env = clean_env(tmp_path)
    first = info_json(env)
    assert first["facts"]["source"] == "detected"
    assert (tmp_path / "store" / "facts.json").is_file()
    second = info_json(env)
    assert second["facts"]["source"] == "cache"
    assert second["decision"]["profile_key"] == first["decision"]["profile_key"]
    refreshed = json.loads(run(["info", "--json", "--refresh"], env, check_rc=0).stdout)
    assert refreshed["facts"]["source"] == "detected"
    # A changed input (CUDA_VISIBLE_DEVICES) is a cache miss.
    env2 = dict(env, CUDA_VISIBLE_DEVICES="0")
    assert info_json(env2)["facts"]["source"] == "detected"


def test_fake_gpus_choose_cuda_with_their_architectures(tmp_path):
    env = fake_gpu_env(tmp_path)
    doc = info_json(env)
    nv = doc["facts"]["nvidia"]
    assert [d["arch"] for d in nv["devices"]] == ["8.6", "9.0"]
    assert nv["driver_version"] == "580.159.03" and nv["cuda_version"] == "13.0"
    decision = doc["decision"]
    assert decision["backend"] == "cuda"
    cmake_args = decision["build_env"]["CMAKE_ARGS"]
    assert "-DGGML_CUDA=on" in cmake_args and "-DCMAKE_CUDA_ARCHITECTURES=86;90" in cmake_args
    assert "LLAMA_CUBLAS" not in cmake_args
    assert decision["wheel_indexes"][0].endswith("/whl/cu130")
    assert decision["profile_key"].startswith("cuda-")
    human = run(["info"], env, check_rc=0).stdout
    assert "NVIDIA RTX A6000 (sm_86), NVIDIA H100 80GB HBM3 (sm_90), driver 580.159.03 supports CUDA 13.0" in human
    assert "→ cuda" in human


def test_visible_devices_change_the_decision(tmp_path):
    both = info_json(fake_gpu_env(tmp_path))["decision"]
    one = info_json(fake_gpu_env(tmp_path, INFERENCEUTILS_CUDA_LIBRARY="/nonexistent/libcuda.so.1",
                                 CUDA_VISIBLE_DEVICES="GPU-2222"))
    assert [d["name"] for d in one["facts"]["nvidia"]["devices"]] == ["NVIDIA H100 80GB HBM3"]
    assert "-DCMAKE_CUDA_ARCHITECTURES=90" in one["decision"]["build_env"]["CMAKE_ARGS"]
    assert one["decision"]["profile_key"] != both["profile_key"]


def test_broken_driver_falls_back_to_cpu_with_the_reason(tmp_path):
    env = fake_gpu_env(tmp_path, FAKE_CUDA_INIT_ERROR="999", INFERENCEUTILS_NVML_LIBRARY="/nonexistent/nvml.so")
    decision = info_json(env)["decision"]
    assert decision["backend"] == "cpu"
    assert any("CUDA_ERROR_UNKNOWN" in r for r in decision["reasons"])
    env = fake_gpu_env(tmp_path, INFERENCEUTILS_CUDA_LIBRARY=FAKECUDA / "nosym" / "libcuda.so.1",
                       INFERENCEUTILS_NVML_LIBRARY="/nonexistent/nvml.so")
    decision = info_json(env)["decision"]
    assert decision["backend"] == "cpu"
    assert any("cuDeviceTotalMem_v2" in r for r in decision["reasons"])


def test_malformed_root_does_not_crash(tmp_path):
    env = clean_env(tmp_path, INFERENCEUTILS_SYSROOT=ROOTS / "malformed",
                    INFERENCEUTILS_CUDA_LIBRARY="/nonexistent/libcuda.so.1")
    doc = info_json(env)
    assert doc["decision"]["backend"] == "cpu"
    assert any("no 'processor' entries" in r for r in doc["decision"]["reasons"])


def test_backend_overrides(tmp_path):
    env = clean_env(tmp_path)
    proc = run(["--backend", "cuda", "info"], env, check_rc=69)
    assert "cuda" in proc.stderr and "no NVIDIA driver" in proc.stderr
    run(["info"], dict(env, INFERENCEUTILS_BACKEND="cuda"), check_rc=69)
    doc = info_json(dict(env, INFERENCEUTILS_BACKEND="cuda"), "--backend", "cpu")  # command line wins
    assert doc["decision"]["backend"] == "cpu" and doc["decision"]["forced"] is True
    proc = run(["info"], dict(env, INFERENCEUTILS_BACKEND="tpu"), check_rc=65)  # a bad value (README)
    assert "unknown backend 'tpu'" in proc.stderr
    gpu = fake_gpu_env(tmp_path)
    assert info_json(gpu, "--backend", "cpu")["decision"]["backend"] == "cpu"


def test_unwritable_store_still_reports(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    env = clean_env(tmp_path, INFERENCEUTILS_HOME=blocker / "store")
    doc = info_json(env)
    assert doc["decision"]["backend"] == "cpu"
    assert doc["facts"]["source"] == "detected"


def _fake_runtime(store, key, profile_key):
    """A store entry as the store lays it out: runtimes/KEY -> ../data/KEY.1.0/ with a manifest."""
    data = store / "data" / f"{key}.1.0"
    data.mkdir(parents=True)
    (data / "manifest.json").write_text(json.dumps({
        "format": 1, "key": key, "source": "build", "prefix": str(data),
        "python": {"version": "3.11.2", "abi": "cp311", "base_prefix": "/usr"},
        "backend": "cpu", "profile_key": profile_key, "requirements": [], "preload": [], "sys_path": []}))
    (store / "runtimes").mkdir(exist_ok=True)
    (store / "runtimes" / key).symlink_to(f"../data/{key}.1.0")


def test_runtimes_section_lists_store_runtimes(tmp_path):
    env = clean_env(tmp_path)
    profile = info_json(env)["decision"]["profile_key"]
    _fake_runtime(tmp_path / "store", "cpu-0123456789abcdef", profile)
    _fake_runtime(tmp_path / "store", "cuda-fedcba9876543210", "cuda-elsewhere")
    rows = {r["name"]: r for r in info_json(env)["store"]["runtimes"]}
    assert sorted(rows) == ["cpu-0123456789abcdef", "cuda-fedcba9876543210"]
    assert rows["cpu-0123456789abcdef"]["matches"] is True and rows["cpu-0123456789abcdef"]["source"] == "build"
    assert rows["cuda-fedcba9876543210"]["matches"] is False
    out = run(["info"], env, check_rc=0).stdout
    assert "cpu-0123456789abcdef cpu build (matches this machine)" in out
    assert "cuda-fedcba9876543210 cpu build (made for another profile)" in out


def test_bad_argument_is_a_usage_error(tmp_path):
    proc = run(["info", "--bogus"], clean_env(tmp_path), check_rc=2)
    assert "--bogus" in proc.stderr
