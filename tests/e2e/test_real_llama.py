"""The real llama-cpp-python 0.3.7 (issue #17 point 1), from ../shared/real-llama served on 127.0.0.1:
the default spec (no --spec) builds it from the sdist with its real build dependencies, preloads
it, tokenizes and generates with real GGUF models; the next start is warm and offline; doctor sees
the real libllama/libggml; inferenceutils.load() works inside the launcher and from a plain venv;
the CPU backend's prebuilt wheel index gives a runtime without a compiler run.

One store for the source-built runtime (module fixture): the ~2.5 min build is paid once per run.
"""
import functools
import http.server
import json
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import BIN, REPO, clean_env, run, runtime_dirs
from fixture_index import write_spec
from test_python_face import PIP_WHEEL, find_wheel

REAL = (REPO.parent / "shared" / "real-llama").resolve()
VOCAB = REAL / "models" / "ggml-vocab-llama-spm.gguf"
TINY = REAL / "models" / "tiny-llama-random-f16.gguf"

if not (REAL / "index" / "simple" / "llama-cpp-python").is_dir():
    pytest.skip(f"no real llama-cpp-python index at {REAL} (the checkout's ../shared)", allow_module_level=True)

# What the user's script does: llama_cpp is already imported before its first line.
PROBE = r'''
import sys
preloaded = "llama_cpp" in sys.modules
import json, llama_cpp
vocab = llama_cpp.Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)
tokens = vocab.tokenize(b"Hello world")
llm = llama_cpp.Llama(model_path=sys.argv[2], n_ctx=64, seed=42, verbose=False)
out = llm("Hello world", max_tokens=8, temperature=0.0)
print(json.dumps({"preloaded": preloaded, "tokens": tokens, "completion_tokens": out["usage"]["completion_tokens"],
                  "version": llama_cpp.__version__, "file": llama_cpp.__file__, "prefix": sys.prefix}))
'''

LOAD = r'''
import json, sys
import inferenceutils as iu
llm = iu.load(sys.argv[1], n_ctx=64, seed=42, verbose=False)
out = llm("Hello world", max_tokens=8, temperature=0.0)
print(json.dumps({"inside": iu.inside_launcher, "completion_tokens": out["usage"]["completion_tokens"],
                  "kwargs": iu.last_load_plan.kwargs, "key": iu.runtime().key, "class": type(llm).__name__}))
'''


class Server:
    """../shared/real-llama over HTTP on 127.0.0.1 (index/simple: the PyPI-like index; whl/cpu: the
    prebuilt CPU wheel index), counting the requests it answered."""

    def __init__(self):
        self.requests = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                outer.requests.append(self.path)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(REAL)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def last_json(proc):
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """The default spec's runtime, built once from the real sdist (the source build of the CPU backend:
    its prebuilt indexes are those of the real project, unreachable here)."""
    base = tmp_path_factory.mktemp("real")
    server = Server()
    env = clean_env(base, INFERENCEUTILS_INDEX_URL=f"{server.url}/index/simple")
    script = base / "probe.py"
    script.write_text(PROBE)
    first = run(["run", script, VOCAB, TINY], env, timeout=1200)
    state = {"base": base, "env": env, "server": server, "script": script, "first": first}
    yield state
    server.stop()


def test_default_spec_builds_the_real_sdist_preloads_tokenizes_and_generates(real):
    got = last_json(real["first"])
    assert got["preloaded"] is True
    assert got["tokens"] == [1, 15043, 3186]
    assert got["completion_tokens"] == 8
    assert got["version"] == "0.3.7"
    store = real["base"] / "store"
    [key] = runtime_dirs(store)["runtimes"]
    manifest = json.loads(run(["runtime", "info", key], real["env"], check_rc=0).stdout)
    assert manifest["backend"] == "cpu" and got["prefix"] == manifest["prefix"]
    assert got["file"].startswith(manifest["prefix"])
    assert manifest["requirements"] == ["llama-cpp-python"] and manifest["preload"] == ["llama_cpp"]
    log = Path(manifest["log"]).read_text()
    # Built from the sdist with its real build dependencies, fetched from the served index.
    assert "llama_cpp_python-0.3.7.tar.gz" in log and "scikit_build_core" in log
    assert any(p.startswith("/index/files/llama_cpp_python-0.3.7.tar.gz") for p in real["server"].requests)


def test_next_start_is_warm_and_needs_no_network(real):
    store = real["base"] / "store"
    before = runtime_dirs(store)
    real["server"].stop()  # nothing answers on that port any more
    real["server"].requests.clear()
    proc = run(["run", real["script"], VOCAB, TINY], real["env"], timeout=300)
    got = last_json(proc)
    assert got["tokens"] == [1, 15043, 3186] and got["completion_tokens"] == 8 and got["preloaded"]
    assert runtime_dirs(store) == before      # no new build, no new data dir, no new log
    assert "preparing" not in proc.stderr


def test_doctor_reports_the_real_native_libraries(real):
    proc = run(["doctor", "--json"], real["env"], timeout=300)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
    report = json.loads(proc.stdout)
    runtime_prefix = run(["runtime", "path"], real["env"], check_rc=0).stdout.strip()
    loaded = {Path(lib["path"]).name: lib["path"] for lib in report["libraries"]}
    assert "libllama.so" in loaded and "libggml.so" in loaded and "libggml-base.so" in loaded, sorted(loaded)
    for name in ("libllama.so", "libggml.so", "libggml-base.so", "libggml-cpu.so"):
        assert loaded[name].startswith(runtime_prefix + "/lib/python3.11/site-packages/llama_cpp/lib/"), loaded[name]
    # The wheel installs its libraries twice (llama_cpp/lib/ and site-packages/lib/), the same
    # bytes: healthy, no warning about the unused copies.
    assert (Path(runtime_prefix) / "lib/python3.11/site-packages/lib/libllama.so").exists()
    assert report["ok"] is True
    assert [f for f in report["findings"] if f["severity"] in ("error", "warning")] == [], report["findings"]


def test_load_inside_the_launcher_and_from_a_plain_venv(real, tmp_path):
    script = tmp_path / "load.py"
    script.write_text(LOAD)
    inside = last_json(run(["run", script, TINY], real["env"], timeout=300))
    assert inside["inside"] is True and inside["class"] == "Llama" and inside["completion_tokens"] == 8
    assert inside["kwargs"]["n_gpu_layers"] == 0 and inside["kwargs"]["n_ctx"] == 64

    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3.11", "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = dict(real["env"], INFERENCEUTILS_BIN=str(BIN), PIP_CONFIG_FILE="/dev/null")
    pip = subprocess.run([str(python), f"{PIP_WHEEL}/pip", "install", "--no-index", "--no-cache-dir",
                          "--disable-pip-version-check", str(find_wheel())], env=env, capture_output=True, text=True)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    plain = last_json(subprocess.run([str(python), str(script), str(TINY)], env=env, capture_output=True, text=True,
                                     timeout=300))
    assert plain["inside"] is False and plain["completion_tokens"] == 8 and plain["key"] == inside["key"]


def test_cpu_wheel_index_gives_a_runtime_without_a_build(tmp_path):
    server = Server()
    try:
        spec = write_spec(tmp_path / "spec.toml", ["llama-cpp-python"], ["llama_cpp"], url=f"{server.url}/index/simple",
                          backends={"cpu": {"wheel_indexes": [f"{server.url}/whl/cpu"]}})
        env = clean_env(tmp_path)
        script = tmp_path / "probe.py"
        script.write_text(PROBE)
        got = last_json(run(["--spec", spec, "run", script, VOCAB, TINY], env, timeout=600))
    finally:
        server.stop()
    assert got["tokens"] == [1, 15043, 3186] and got["completion_tokens"] == 8 and got["preloaded"]
    [key] = runtime_dirs(tmp_path / "store")["runtimes"]
    manifest = json.loads(run(["runtime", "info", key], env, check_rc=0).stdout)
    log = Path(manifest["log"]).read_text()
    assert f"{server.url}/whl/cpu" in log
    assert "llama_cpp_python-0.3.7.tar.gz" not in log          # the prebuilt wheel, no sdist build
    assert any(p.startswith("/whl/cpu/llama-cpp-python/llama_cpp_python-0.3.7-cp311") for p in server.requests)
