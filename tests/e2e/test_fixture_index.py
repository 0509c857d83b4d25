"""The offline fixture index is well-formed: pip resolves and installs every fixture package from
it, as a file:// index, over HTTP on 127.0.0.1 and as --find-links, into throw-away venvs of
Debian's python3.11, with no network and no cache. pip runs from Debian's pip wheel, the way the
launcher runs it (runtime/build.cpp)."""
import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixture_index import (BASE_PYTHON, LLAMA_SDIST_VERSION, LLAMA_WHEEL_VERSION, PACKAGES_DIR,  # noqa: E402
                           build_index, fixture_index, http_index, normalize, pip_env, without_build_vars,
                           write_spec)

PIP_WHEEL = sorted(Path("/usr/share/python-wheels").glob("pip-*.whl"))[-1]


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs.append(dict(attrs)["href"])


def links(html_text):
    parser = Links()
    parser.feed(html_text)
    return parser.hrefs


class Venv:
    def __init__(self, path: Path):
        self.path = path
        subprocess.run([BASE_PYTHON, "-m", "venv", "--without-pip", str(path)], check=True)
        self.python = path / "bin" / "python"

    def pip(self, *args, env=None, check=True):
        proc = subprocess.run([str(self.python), f"{PIP_WHEEL}/pip", *args, "--no-cache-dir",
                               "--disable-pip-version-check", "--no-input"],
                              env=pip_env(env), capture_output=True, text=True, timeout=300)
        if check:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def install(self, *args, env=None, check=True):
        return self.pip("install", *args, env=env, check=check)

    def run(self, code, env=None):
        proc = subprocess.run([str(self.python), "-c", code], env=pip_env(env), capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def json(self, code, env=None):
        return json.loads(self.run(code, env).strip().splitlines()[-1])

    def site_packages(self) -> Path:
        return self.path / "lib" / "python3.11" / "site-packages"


@pytest.fixture
def venv(tmp_path):
    return Venv(tmp_path / "venv")


def env_without_build_vars(**extra):
    return without_build_vars(os.environ, **extra)


LLAMA_PROBE = ("import json, llama_cpp, iu_fixture_pure; print(json.dumps({"
               "'version': llama_cpp.__version__, 'source_build': llama_cpp.SOURCE_BUILD, "
               "'env': llama_cpp.BUILD_ENV, 'gpu': llama_cpp.llama_supports_gpu_offload(), "
               "'backend': llama_cpp.BACKEND, 'info': llama_cpp.llama_print_system_info().decode(), "
               "'pure': iu_fixture_pure.__version__, 'file': llama_cpp.__file__}))")


# --- the index itself -----------------------------------------------------------------------------

def test_index_layout_and_hashes(fixture_index):
    contents = fixture_index.contents
    projects = {(f["project"], f["version"]) for f in contents["files"]}
    assert {("iu-fixture-pure", "1.0.0"), ("llama-cpp-python", LLAMA_SDIST_VERSION),
            ("llama-cpp-python", LLAMA_WHEEL_VERSION), ("iu-fixture-native", "1.0.0")} <= projects
    assert {p for p, _ in projects} >= {"pip", "setuptools"}
    # 0.3.99 is an sdist only, 0.3.98 a wheel only.
    assert fixture_index.file("llama-cpp-python", LLAMA_SDIST_VERSION).name.endswith(".tar.gz")
    assert fixture_index.file("llama-cpp-python", LLAMA_WHEEL_VERSION).name.endswith("-py3-none-any.whl")
    assert re.search(r"-cp311-cp311-linux_\w+\.whl$", fixture_index.file("iu-fixture-native", "1.0.0").name)

    root_links = links((fixture_index.simple_dir / "index.html").read_text())
    assert sorted(h.rstrip("/") for h in root_links) == sorted({p for p, _ in projects})
    seen = set()
    for project in root_links:
        page = fixture_index.simple_dir / project / "index.html"
        for href in links(page.read_text()):
            target, _, fragment = href.partition("#sha256=")
            path = (page.parent / target).resolve()
            assert path.parent == fixture_index.files_dir.resolve()
            assert hashlib.sha256(path.read_bytes()).hexdigest() == fragment
            assert normalize(re.split(r"-\d", path.name, maxsplit=1)[0]) == project.rstrip("/")
            seen.add(path.name)
    assert seen == {p.name for p in fixture_index.files_dir.iterdir()}
    # The prebuilt index holds the wheel only.
    prebuilt = links((fixture_index.prebuilt_dir / "llama-cpp-python" / "index.html").read_text())
    assert [h.split("#")[0].rsplit("/", 1)[1] for h in prebuilt] == \
        [fixture_index.file("llama-cpp-python", LLAMA_WHEEL_VERSION).name]


def test_index_is_cached_and_safe_to_build_concurrently(tmp_path):
    assert build_index() is build_index()  # once per process
    # Two fresh processes racing on an empty cache: both get the same complete index.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import fixture_index as f; "
            "print(f.build_index().root)")
    env = dict(os.environ, IU_TEST_BUILD_DIR=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(Path(__file__).parent)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    roots = set()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        roots.add(out.strip())
    assert len(roots) == 1
    cache = tmp_path / "fixture-index"
    assert [p.name for p in cache.iterdir()] == [Path(roots.pop()).name]  # no staging left behind
    # A second run reuses it without building (the directory is not replaced).
    before = (cache / next(cache.iterdir()).name / "index.json").stat().st_ino
    subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)], env=env, check=True,
                   capture_output=True)
    assert (cache / next(cache.iterdir()).name / "index.json").stat().st_ino == before


def test_the_sdist_needs_no_build_dependencies(fixture_index):
    import tarfile
    with tarfile.open(fixture_index.file("llama-cpp-python", LLAMA_SDIST_VERSION)) as tf:
        names = tf.getnames()
        base = f"llama_cpp_python-{LLAMA_SDIST_VERSION}"
        assert {f"{base}/PKG-INFO", f"{base}/pyproject.toml", f"{base}/backend.py",
                f"{base}/llama_cpp/__init__.py"} <= set(names)
        pyproject = tomllib.loads(tf.extractfile(f"{base}/pyproject.toml").read().decode())
    assert pyproject["build-system"] == {"requires": [], "build-backend": "backend", "backend-path": ["."]}
    assert pyproject["project"]["dependencies"] == ["iu-fixture-pure"]


# --- pip against it -------------------------------------------------------------------------------

def test_file_index_builds_the_sdist_with_the_build_environment(fixture_index, venv, tmp_path):
    log = tmp_path / "llama.jsonl"
    build_vars = dict(CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=86", FORCE_CMAKE="1",
                      CUDACXX="/usr/local/cuda/bin/nvcc", GGML_CCACHE="OFF", CMAKE_BUILD_PARALLEL_LEVEL="2")
    proc = venv.install("--index-url", fixture_index.file_url, "llama-cpp-python",
                        env=env_without_build_vars(**build_vars))
    assert "Building wheel for llama-cpp-python" in proc.stdout + proc.stderr
    result = venv.json(LLAMA_PROBE)
    assert result["version"] == LLAMA_SDIST_VERSION  # the newest, from the sdist
    assert result["source_build"] is True
    assert result["env"] == build_vars  # exactly what the build saw, nothing of the shell besides
    assert result["gpu"] is True and result["backend"] == "cuda"
    assert "BACKEND = cuda" in result["info"]
    assert result["pure"] == "1.0.0"  # the dependency was resolved from the index too
    assert Path(result["file"]).is_relative_to(venv.site_packages())

    out = venv.run("import llama_cpp; m = llama_cpp.Llama('/models/x.gguf', n_gpu_layers=-1, n_ctx=512); "
                   "print(m.kwargs)", env=dict(os.environ, IU_FIXTURE_LLAMA_LOG=str(log)))
    assert out.strip() == "{'n_gpu_layers': -1, 'n_ctx': 512}"
    record = json.loads(log.read_text())
    assert record["model_path"] == "/models/x.gguf"
    assert record["kwargs"] == {"n_gpu_layers": -1, "n_ctx": 512}


def test_cpu_build_records_no_gpu(fixture_index, venv):
    venv.install("--index-url", fixture_index.file_url, "llama-cpp-python",
                 env=env_without_build_vars(CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_CUDA=OFF"))
    result = venv.json(LLAMA_PROBE)
    assert result["env"] == {"CMAKE_ARGS": "-DGGML_NATIVE=ON -DGGML_CUDA=OFF"}
    assert result["gpu"] is False and result["backend"] == "cpu"


def test_native_extension_loads_its_own_library(fixture_index, venv):
    venv.install("--index-url", fixture_index.file_url, "iu-fixture-native", env=env_without_build_vars())
    result = venv.json("import json, iu_fixture_native as n; print(json.dumps("
                       "{'answer': n.answer(), 'greeting': n.greeting(), 'lib': n.library_path()}))")
    assert result["answer"] == 42
    assert result["greeting"] == "hello from libiufixture"
    assert Path(result["lib"]).resolve() == (venv.site_packages() / "iu_fixture_native" / "libiufixture.so").resolve()


def test_http_index_serves_the_prebuilt_wheel(fixture_index, http_index, venv):
    # A pinned older version exists only as a wheel: nothing is built, the build env is not seen.
    proc = venv.install("--index-url", http_index.url, f"llama-cpp-python=={LLAMA_WHEEL_VERSION}",
                        env=env_without_build_vars(CMAKE_ARGS="-DGGML_CUDA=on"))
    output = proc.stdout + proc.stderr
    assert f"Looking in indexes: {http_index.url}" in output
    assert "Building wheel" not in output
    result = venv.json(LLAMA_PROBE)
    assert result["version"] == LLAMA_WHEEL_VERSION
    assert result["source_build"] is False
    assert result["env"] == {}
    assert result["backend"] == "cpu"
    assert result["pure"] == "1.0.0"
    # The server really is HTTP on 127.0.0.1.
    assert http_index.url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(http_index.url + "llama-cpp-python/", timeout=10) as response:
        assert "llama_cpp_python-0.3.98-py3-none-any.whl" in response.read().decode()


def test_http_index_builds_the_sdist_and_only_binary_picks_the_wheel(http_index, tmp_path):
    built = Venv(tmp_path / "built")
    built.install("--index-url", http_index.url, "llama-cpp-python", "iu-fixture-native",
                  env=env_without_build_vars(CMAKE_ARGS="-DGGML_VULKAN=ON"))
    result = built.json(LLAMA_PROBE)
    assert (result["version"], result["source_build"], result["backend"]) == (LLAMA_SDIST_VERSION, True, "vulkan")
    assert built.json("import json, iu_fixture_native as n; print(json.dumps(n.answer()))") == 42

    binary = Venv(tmp_path / "binary")
    binary.install("--index-url", http_index.url, "--only-binary", "llama-cpp-python", "llama-cpp-python",
                   env=env_without_build_vars())
    assert binary.json(LLAMA_PROBE)["version"] == LLAMA_WHEEL_VERSION


def test_prebuilt_index_as_extra_index(fixture_index, venv):
    """The shape of a backend's wheel index: the prebuilt wheel comes from it, its dependency from
    the main index."""
    venv.install("--index-url", fixture_index.file_url, "--extra-index-url", fixture_index.prebuilt_url,
                 "--only-binary", "llama-cpp-python", "llama-cpp-python", env=env_without_build_vars())
    assert venv.json(LLAMA_PROBE)["version"] == LLAMA_WHEEL_VERSION


def test_find_links_offline(fixture_index, venv):
    venv.install("--no-index", "--find-links", str(fixture_index.files_dir), "llama-cpp-python",
                 env=env_without_build_vars(CMAKE_ARGS="-DGGML_METAL=on"))
    result = venv.json(LLAMA_PROBE)
    assert (result["version"], result["backend"], result["pure"]) == (LLAMA_SDIST_VERSION, "metal", "1.0.0")


def test_duplicate_requirements_of_one_project_are_merged_by_pip(fixture_index, venv):
    """What a spec's `llama-cpp-python` plus `--with llama-cpp-python==0.3.98` gives: pip combines them."""
    venv.install("--index-url", fixture_index.file_url, "llama-cpp-python",
                 f"llama-cpp-python=={LLAMA_WHEEL_VERSION}", env=env_without_build_vars())
    assert venv.json(LLAMA_PROBE)["version"] == LLAMA_WHEEL_VERSION


def test_pip_and_setuptools_resolve_offline(fixture_index, venv, tmp_path):
    dest = tmp_path / "dl"
    venv.pip("download", "--no-deps", "--index-url", fixture_index.file_url, "-d", str(dest), "pip", "setuptools",
             env=env_without_build_vars())
    names = sorted(p.name for p in dest.iterdir())
    debian = sorted(p.name for p in Path("/usr/share/python-wheels").glob("*.whl")
                    if p.name.startswith(("pip-", "setuptools-")))
    assert names == debian


def test_missing_package_fails_without_network(fixture_index, venv):
    proc = venv.install("--index-url", fixture_index.file_url, "requests", env=env_without_build_vars(), check=False)
    assert proc.returncode != 0
    assert "No matching distribution found for requests" in proc.stderr


# --- specs pointing at it -------------------------------------------------------------------------

def test_write_spec(fixture_index, http_index, tmp_path):
    path = fixture_index.write_spec(tmp_path / "spec.toml", ["llama-cpp-python", "iu-fixture-native"], ["llama_cpp"])
    spec = tomllib.loads(path.read_text())
    assert spec == {"requirements": ["llama-cpp-python", "iu-fixture-native"], "preload": ["llama_cpp"],
                    "sources": {"index_url": fixture_index.file_url}}
    assert fixture_index.file_url.startswith("file:///") and fixture_index.file_url.endswith("/simple")

    full = write_spec(tmp_path / "full.toml", ["iu-fixture-pure"], [], http_index.url,
                      extra_index_urls=[fixture_index.prebuilt_url], find_links=[fixture_index.files_dir],
                      offline=False, libraries=[], backend_package="", build_env={"A": "1"},
                      backends={"cuda": {"build_env": {"CMAKE_CUDA_ARCHITECTURES": "86"}, "wheel_indexes": []}})
    spec = tomllib.loads(full.read_text())
    assert spec["sources"] == {"index_url": http_index.url, "extra_index_urls": [fixture_index.prebuilt_url],
                               "find_links": [str(fixture_index.files_dir)], "offline": False}
    assert spec["backends"]["cuda"] == {"build_env": {"CMAKE_CUDA_ARCHITECTURES": "86"}, "wheel_indexes": []}
    assert spec["build_env"] == {"A": "1"} and spec["backend_package"] == ""
    # Only keys the launcher's spec parser knows (runtime/spec.cpp, docs/spec.md).
    assert set(spec) <= {"requirements", "preload", "libraries", "backend_package", "build_env", "sources", "backends"}


def test_fixture_sources_are_not_polluted():
    """Building the index must not write into the source tree (it is hashed for the cache key)."""
    assert not list(PACKAGES_DIR.rglob("*.so")) and not list(PACKAGES_DIR.rglob("_build_env.json"))
