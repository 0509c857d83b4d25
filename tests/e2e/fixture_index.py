"""The tests' offline package index, built from tests/fixtures/packages.

    from fixture_index import build_index, fixture_index, http_index   # or pytest_plugins = ["fixture_index"]

build_index() builds (once, cached by a hash of the fixture sources) a PEP 503 "simple" index:

    <root>/files/       every distribution, flat (usable as --find-links)
    <root>/simple/      PEP 503 index: simple/<project>/index.html → ../../files/<file>#sha256=...
    <root>/prebuilt/    a second simple index holding only the prebuilt llama-cpp-python wheel,
                        shaped like a backend's wheel index (e.g. .../whl/cu124)
    <root>/index.json   what is in it

Contents (tests/fixtures/packages/README.md): iu-fixture-pure 1.0.0 (wheel), llama-cpp-python
0.3.99 (sdist only; its build records the build environment) and 0.3.98 (prebuilt wheel only),
iu-fixture-native 1.0.0 (wheel with a C extension and its own shared library), the
shared-library conflict wheels iu-conflict-{framework,backend,nvidia,cuda-backend}, and Debian's
pip and setuptools wheels.

The cache lives in $IU_TEST_BUILD_DIR/fixture-index/<hash>/ (else a per-user temp dir). It is built
in a temporary directory and renamed into place, so concurrent pytest processes never see half an
index; the loser of a race discards its copy.

Pytest fixtures (session-scoped): `fixture_index` (the Index) and `http_index` (the same files
served over HTTP on 127.0.0.1, an HttpIndex; its .url is the simple index URL).
"""
from __future__ import annotations

import base64
import functools
import hashlib
import html
import http.server
import json
import os
import platform
import shutil
import tarfile
import subprocess
import sys
import sysconfig
import tempfile
import threading
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["Index", "HttpIndex", "build_index", "serve_index", "write_spec", "pip_env", "without_build_vars",
           "fixture_index", "http_index", "BASE_PYTHON", "PACKAGES_DIR"]

REPO = Path(__file__).resolve().parents[2]
PACKAGES_DIR = REPO / "tests" / "fixtures" / "packages"
BASE_PYTHON = "/usr/bin/python3.11"  # the interpreter the launcher embeds; never the pyenv one
DEBIAN_WHEELS = Path("/usr/share/python-wheels")
ZIP_TIME = (2024, 1, 1, 0, 0, 0)

PURE = "iu-fixture-pure"
LLAMA = "llama-cpp-python"
NATIVE = "iu-fixture-native"
FAKE_IPYKERNEL = "iu-fake-ipykernel"  # source directory; distribution `ipykernel` 0.0.1
LLAMA_SDIST_VERSION = "0.3.99"   # newest: what an unpinned `llama-cpp-python` resolves to
LLAMA_WHEEL_VERSION = "0.3.98"   # prebuilt wheel only


def normalize(name: str) -> str:
    """PEP 503."""
    import re
    return re.sub(r"[-_.]+", "-", name).lower()


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a TOML basic string


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_sdist(directory: Path, name: str, version: str, files: dict) -> Path:
    """An sdist `<name>-<version>.tar.gz` (name with underscores) in `directory`: `files` (relative
    path → text) plus PKG-INFO, under the `<name>-<version>/` folder pip expects."""
    src = Path(directory) / f"{name}-{version}"
    for rel, text in {**files, "PKG-INFO": f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n"}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    sdist = Path(directory) / f"{name}-{version}.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(src, arcname=src.name)
    shutil.rmtree(src)
    return sdist


def write_spec(path, requirements, preload=(), url=None, *, index=None, extra_index_urls=None,
               find_links=None, offline=None, libraries=None, backend_package=None, build_env=None,
               backends=None) -> Path:
    """Writes a runtime spec (docs/spec.md) to `path`. `url` is the index URL (default: the fixture
    index's file:// URL when `index` is given); the other arguments are written only when given.
    `backends` is {backend: {"build_env": {...}, "wheel_indexes": [...]}}."""
    if url is None and index is not None:
        url = index.file_url
    lines = [f"requirements = {_toml_value(list(requirements))}", f"preload = {_toml_value(list(preload))}"]
    if libraries is not None:
        lines.append(f"libraries = {_toml_value(list(libraries))}")
    if backend_package is not None:
        lines.append(f"backend_package = {_toml_value(backend_package)}")
    if build_env is not None:
        lines.append(f"build_env = {_toml_value(dict(build_env))}")
    sources = {}
    if url is not None:
        sources["index_url"] = url
    if extra_index_urls is not None:
        sources["extra_index_urls"] = list(extra_index_urls)
    if find_links is not None:
        sources["find_links"] = [str(f) for f in find_links]
    if offline is not None:
        sources["offline"] = bool(offline)
    if sources:
        lines.append("")
        lines.append("[sources]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in sources.items()]
    for backend, settings in (backends or {}).items():
        lines.append("")
        lines.append(f"[backends.{backend}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in settings.items()]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class Index:
    root: Path

    @property
    def simple_dir(self) -> Path:
        return self.root / "simple"

    @property
    def files_dir(self) -> Path:
        return self.root / "files"

    @property
    def prebuilt_dir(self) -> Path:
        return self.root / "prebuilt"

    @property
    def file_url(self) -> str:
        """file:// URL of the simple index (for --index-url / [sources] index_url)."""
        return self.simple_dir.as_uri()

    @property
    def prebuilt_url(self) -> str:
        return self.prebuilt_dir.as_uri()

    @property
    def contents(self) -> dict:
        return json.loads((self.root / "index.json").read_text())

    def file(self, project: str, version: str) -> Path:
        """The one distribution file of `project` `version` in files/."""
        for entry in self.contents["files"]:
            if entry["project"] == normalize(project) and entry["version"] == version:
                return self.files_dir / entry["filename"]
        raise KeyError((project, version))

    def write_spec(self, path, requirements, preload=(), url=None, **kwargs) -> Path:
        return write_spec(path, requirements, preload, url if url is not None else self.file_url, **kwargs)


@dataclass(frozen=True)
class HttpIndex:
    index: Index
    base_url: str  # http://127.0.0.1:PORT

    @property
    def url(self) -> str:
        """The simple index over HTTP."""
        return f"{self.base_url}/simple/"

    @property
    def prebuilt_url(self) -> str:
        return f"{self.base_url}/prebuilt/"

    @property
    def files_url(self) -> str:
        return f"{self.base_url}/files/"

    def write_spec(self, path, requirements, preload=(), **kwargs) -> Path:
        return write_spec(path, requirements, preload, self.url, **kwargs)

    def __str__(self) -> str:
        return self.url


# --- building ------------------------------------------------------------------------------------

def _cache_parent() -> Path:
    build_dir = os.environ.get("IU_TEST_BUILD_DIR")
    if build_dir:
        return Path(build_dir) / "fixture-index"
    return Path(tempfile.gettempdir()) / f"iu-fixture-index-{os.getuid()}"


def _debian_wheels() -> list[Path]:
    # wheel too: setuptools 66 asks for it in every isolated build of a setup.py project.
    wheels = sorted(DEBIAN_WHEELS.glob("pip-*.whl")) + sorted(DEBIAN_WHEELS.glob("setuptools-*.whl")) \
        + sorted(DEBIAN_WHEELS.glob("wheel-*.whl"))
    if not wheels:
        raise RuntimeError(f"no pip/setuptools wheels in {DEBIAN_WHEELS}: apt-get install python3-pip-whl python3-setuptools-whl")
    return wheels


def _sources_hash() -> str:
    digest = hashlib.sha256()
    digest.update(Path(__file__).read_bytes())
    for path in sorted(PACKAGES_DIR.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".so", ".o"):
            digest.update(str(path.relative_to(PACKAGES_DIR)).encode() + b"\0" + path.read_bytes() + b"\0")
    for wheel in _debian_wheels():
        digest.update(wheel.name.encode())
    digest.update(platform.machine().encode())
    return digest.hexdigest()[:16]


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _clean_build_env() -> dict:
    """The builder's children see no CMAKE_*/GGML_*/PIP_*/PYTHON* of the developer's shell."""
    return without_build_vars(os.environ)


# What the llama-cpp-python stand-in's build records (tests/fixtures/packages/llama-cpp-python/backend.py).
RECORDED_PREFIXES = ("CMAKE", "GGML", "LLAMA")
RECORDED_NAMES = ("FORCE_CMAKE", "CUDACXX", "CMAKE_CUDA_ARCHITECTURES", "CUDA_HOME", "CUDA_PATH", "HIPCXX",
                  "HIP_PATH", "ROCM_PATH", "CC", "CXX", "MAKEFLAGS", "SKBUILD_CMAKE_ARGS", "IU_FIXTURE_PREBUILT")


def without_build_vars(env, **extra) -> dict:
    """`env` without what a build would record (and without PIP_*/PYTHON*), plus `extra`."""
    out = {k: v for k, v in env.items()
           if k not in RECORDED_NAMES and not k.startswith(RECORDED_PREFIXES + ("PIP_", "PYTHON"))}
    out.update({k: str(v) for k, v in extra.items()})
    return out


def _write_wheel(directory: Path, name: str, version: str, files: dict, *, requires=(), requires_python=None,
                 tag="py3-none-any", purelib=True, summary="") -> Path:
    dist = normalize(name).replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", f"Summary: {summary}"]
    if requires_python:
        metadata.append(f"Requires-Python: {requires_python}")
    metadata += [f"Requires-Dist: {req}" for req in requires]
    files = dict(files)
    files[f"{info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    files[f"{info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: iu-fixture-index\n"
                              f"Root-Is-Purelib: {'true' if purelib else 'false'}\nTag: {tag}\n").encode()
    top = sorted({arcname.split("/")[0] for arcname in files if not arcname.startswith(info)})
    files[f"{info}/top_level.txt"] = ("\n".join(top) + "\n").encode()
    record = []
    for arcname, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{arcname},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = directory / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname, data in files.items():
            zinfo = zipfile.ZipInfo(arcname, ZIP_TIME)
            zinfo.external_attr = (0o755 if arcname.endswith(".so") else 0o644) << 16
            zf.writestr(zinfo, data, zipfile.ZIP_DEFLATED)
    return path


def _project(directory: Path) -> dict:
    with open(directory / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _package_files(project_dir: Path, package: str, suffixes=(".py",)) -> dict:
    root = project_dir / package
    return {str(p.relative_to(project_dir)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in suffixes}


def _build_pure(out: Path) -> Path:
    src = PACKAGES_DIR / PURE
    project = _project(src)
    return _write_wheel(out, project["name"], project["version"], _package_files(src, "iu_fixture_pure"),
                        requires=project.get("dependencies", []), requires_python=project.get("requires-python"),
                        summary=project.get("description", ""))


def _build_fake_ipykernel(out: Path) -> Path:
    """The stand-in `ipykernel` (package `ipykernel` + module `ipykernel_launcher`) as a wheel."""
    src = PACKAGES_DIR / FAKE_IPYKERNEL
    project = _project(src)
    files = _package_files(src, "ipykernel")
    files["ipykernel_launcher.py"] = (src / "ipykernel_launcher.py").read_bytes()
    return _write_wheel(out, project["name"], project["version"], files,
                        requires=project.get("dependencies", []), requires_python=project.get("requires-python"),
                        summary=project.get("description", ""))


def _run(argv, cwd=None, env=None):
    proc = subprocess.run(argv, cwd=cwd, env=env if env is not None else _clean_build_env(),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"fixture index: {' '.join(map(str, argv))} failed ({proc.returncode}):\n"
                           f"{proc.stdout}\n{proc.stderr}")
    return proc


def _build_llama(out: Path, work: Path) -> list[Path]:
    """0.3.99 as an sdist (through its own backend), 0.3.98 as a prebuilt wheel (the same backend
    run here with IU_FIXTURE_PREBUILT=1 and a clean environment)."""
    src = PACKAGES_DIR / LLAMA
    hook = "import sys, backend; print(getattr(backend, sys.argv[1])(sys.argv[2]))"
    sdist_src = work / "llama-sdist"
    shutil.copytree(src, sdist_src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    sdist = _run([BASE_PYTHON, "-c", hook, "build_sdist", str(out)], cwd=sdist_src).stdout.strip()

    wheel_src = work / "llama-wheel"
    shutil.copytree(src, wheel_src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pyproject = wheel_src / "pyproject.toml"
    text = pyproject.read_text()
    assert f'version = "{LLAMA_SDIST_VERSION}"' in text, "keep LLAMA_SDIST_VERSION in step with pyproject.toml"
    pyproject.write_text(text.replace(f'version = "{LLAMA_SDIST_VERSION}"', f'version = "{LLAMA_WHEEL_VERSION}"'))
    env = _clean_build_env()
    env["IU_FIXTURE_PREBUILT"] = "1"
    wheel = _run([BASE_PYTHON, "-c", hook, "build_wheel", str(out)], cwd=wheel_src, env=env).stdout.strip()
    return [out / sdist, out / wheel]


def _build_native(out: Path, work: Path) -> Path:
    src = PACKAGES_DIR / NATIVE
    project = _project(src)
    pkg_src = src / "iu_fixture_native"
    build = work / "native"
    build.mkdir()
    paths = json.loads(_run([BASE_PYTHON, "-c",
                             "import json, sysconfig; print(json.dumps({'include': sysconfig.get_paths()['include'],"
                             " 'ext': sysconfig.get_config_var('EXT_SUFFIX'), 'abi': sysconfig.get_config_var('SOABI')}))"]).stdout)
    cc = os.environ.get("CC") or shutil.which("cc") or "cc"
    lib = build / "libiufixture.so"
    _run([cc, "-shared", "-fPIC", "-O2", "-Wl,-soname,libiufixture.so", "-o", str(lib), str(pkg_src / "libiufixture.c")])
    ext_name = f"_native{paths['ext']}"
    ext = build / ext_name
    _run([cc, "-shared", "-fPIC", "-O2", f"-I{paths['include']}", "-o", str(ext), str(pkg_src / "_native.c"),
          f"-L{build}", "-liufixture", "-Wl,--no-as-needed", "-Wl,-rpath,$ORIGIN", "-ldl"])
    files = _package_files(src, "iu_fixture_native")
    files["iu_fixture_native/libiufixture.so"] = lib.read_bytes()
    files[f"iu_fixture_native/{ext_name}"] = ext.read_bytes()
    py = _run([BASE_PYTHON, "-c", "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')"]).stdout.strip()
    machine = platform.machine()
    tag = f"{py}-{py}-linux_{machine}"
    return _write_wheel(out, project["name"], project["version"], files, requires=project.get("dependencies", []),
                        requires_python=project.get("requires-python"), tag=tag, purelib=False,
                        summary=project.get("description", ""))


CONFLICT_LIB = PACKAGES_DIR / "iu-conflict-lib"  # C sources shared by the iu-conflict-* projects


def _build_conflict(out: Path, work: Path) -> list[Path]:
    """The shared-library conflict fixtures (docs/libraries.md, tests/e2e/test_conflicts.py):
    libiuconflict.so.1 built twice with one SONAME (v1 in iu-conflict-framework, v2 in
    iu-conflict-backend, each beside an extension linked against it with rpath $ORIGIN), fake
    CUDA libraries laid out like nvidia-* wheels (iu-conflict-nvidia), and an extension that
    needs them by SONAME without shipping them (iu-conflict-cuda-backend)."""
    build = work / "conflict"
    build.mkdir()
    paths = json.loads(_run([BASE_PYTHON, "-c",
                             "import json, sysconfig; print(json.dumps({'include': sysconfig.get_paths()['include'],"
                             " 'ext': sysconfig.get_config_var('EXT_SUFFIX')}))"]).stdout)
    cc = os.environ.get("CC") or shutil.which("cc") or "cc"
    py = _run([BASE_PYTHON, "-c", "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')"]).stdout.strip()
    tag = f"{py}-{py}-linux_{platform.machine()}"

    def lib(source: str, soname: str, out_dir: Path, *args) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / soname
        _run([cc, "-shared", "-fPIC", "-O2", f"-Wl,-soname,{soname}", "-o", str(path), str(CONFLICT_LIB / source), *args])
        return path

    def ext(project_dir: Path, package: str, name: str, libs, *args) -> tuple[str, bytes]:
        filename = f"{name}{paths['ext']}"
        path = build / package / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        _run([cc, "-shared", "-fPIC", "-O2", f"-I{paths['include']}", f"-I{CONFLICT_LIB}", "-o", str(path),
              str(project_dir / package / f"{name}.c"), *map(str, libs), "-Wl,--no-as-needed", *args])
        return f"{package}/{filename}", path.read_bytes()

    def wheel(project_dir: Path, files: dict) -> Path:
        project = _project(project_dir)
        return _write_wheel(out, project["name"], project["version"], files, requires=project.get("dependencies", []),
                            requires_python=project.get("requires-python"), tag=tag, purelib=False,
                            summary=project.get("description", ""))

    built = []
    for project, package, name, version, extra in (
            ("iu-conflict-framework", "iu_conflict_framework", "_framework", 1, ()),
            ("iu-conflict-backend", "iu_conflict_backend", "_backend", 2, ("-Wl,-z,now",))):
        src = PACKAGES_DIR / project
        shared = lib("libiuconflict.c", "libiuconflict.so.1", build / f"v{version}", f"-DIUCONFLICT_VERSION={version}")
        files = _package_files(src, package)
        files[f"{package}/libiuconflict.so.1"] = shared.read_bytes()
        arcname, data = ext(src, package, name, [shared], "-Wl,-rpath,$ORIGIN", *extra)
        files[arcname] = data
        built.append(wheel(src, files))

    cudart = lib("libfakecudart.c", "libfakecudart.so.12", build / "nvidia")
    cublas = lib("libfakecublas.c", "libfakecublas.so.12", build / "nvidia", str(build / "nvidia" / "libfakecudart.so.12"))
    built.append(wheel(PACKAGES_DIR / "iu-conflict-nvidia", {
        "nvidia/fake_cuda_runtime/lib/libfakecudart.so.12": cudart.read_bytes(),
        "nvidia/fake_cublas/lib/libfakecublas.so.12": cublas.read_bytes(),
    }))
    src = PACKAGES_DIR / "iu-conflict-cuda-backend"
    files = _package_files(src, "iu_conflict_cuda_backend")
    arcname, data = ext(src, "iu_conflict_cuda_backend", "_cuda_backend", [cublas, cudart], "-Wl,-z,now")
    files[arcname] = data
    built.append(wheel(src, files))
    return built


def _project_of(filename: str) -> tuple[str, str]:
    """(normalized project, version) of a wheel or sdist file name."""
    if filename.endswith(".whl"):
        name, version = filename[:-4].split("-")[:2]
    else:
        stem = filename[: -len(".tar.gz")]
        name, version = stem.rsplit("-", 1)
    return normalize(name), version


def _write_simple(directory: Path, files: list[Path], href_prefix: str) -> None:
    projects: dict[str, list[Path]] = {}
    for path in files:
        projects.setdefault(_project_of(path.name)[0], []).append(path)
    directory.mkdir(parents=True)
    links = "\n".join(f'    <a href="{p}/">{p}</a><br/>' for p in sorted(projects))
    (directory / "index.html").write_text(
        f"<!DOCTYPE html>\n<html><head><title>Simple index</title></head><body>\n{links}\n</body></html>\n")
    for project, paths in projects.items():
        (directory / project).mkdir()
        anchors = "\n".join(
            f'    <a href="{href_prefix}{html.escape(p.name)}#sha256={_sha256_file(p)}">{html.escape(p.name)}</a><br/>'
            for p in sorted(paths, key=lambda p: p.name))
        (directory / project / "index.html").write_text(
            f"<!DOCTYPE html>\n<html><head><title>Links for {project}</title></head><body>\n"
            f"<h1>Links for {project}</h1>\n{anchors}\n</body></html>\n")


def _build_into(root: Path) -> None:
    files = root / "files"
    files.mkdir(parents=True)
    work = root / ".work"
    work.mkdir()
    built = [_build_pure(files), *_build_llama(files, work), _build_native(files, work),
             _build_fake_ipykernel(files), *_build_conflict(files, work)]
    for wheel in _debian_wheels():
        shutil.copy2(wheel, files / wheel.name)
        built.append(files / wheel.name)
    shutil.rmtree(work)
    _write_simple(root / "simple", built, "../../files/")
    prebuilt = [p for p in built if _project_of(p.name) == (LLAMA, LLAMA_WHEEL_VERSION)]
    _write_simple(root / "prebuilt", prebuilt, "../../files/")
    contents = {
        "files": [{"project": _project_of(p.name)[0], "version": _project_of(p.name)[1], "filename": p.name,
                   "sha256": _sha256_file(p)} for p in sorted(built)],
        "llama_sdist_version": LLAMA_SDIST_VERSION,
        "llama_wheel_version": LLAMA_WHEEL_VERSION,
    }
    (root / "index.json").write_text(json.dumps(contents, indent=2) + "\n")


@functools.lru_cache(maxsize=None)
def build_index() -> Index:
    """The fixture index, built once per content (see the module's doc)."""
    parent = _cache_parent()
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / _sources_hash()
    if (final / "index.json").is_file():
        return Index(final)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=parent))
    try:
        _build_into(staging)
        try:
            os.rename(staging, final)
        except OSError:
            if not (final / "index.json").is_file():  # not a lost race: a real problem
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return Index(final)


# --- serving -------------------------------------------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


class serve_index:
    """Context manager: serves `index.root` on 127.0.0.1 (a free port) from a background thread.

        with serve_index(build_index()) as http:
            http.url  # http://127.0.0.1:PORT/simple/
    """

    def __init__(self, index: Index):
        self.index = index
        handler = functools.partial(_QuietHandler, directory=str(index.root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fixture-index-http", daemon=True)

    def __enter__(self) -> HttpIndex:
        self.thread.start()
        host, port = self.server.server_address[:2]
        return HttpIndex(self.index, f"http://{host}:{port}")

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def pip_env(base: dict | None = None) -> dict:
    """An environment for pip or the launcher's pip: no proxies (127.0.0.1 must be reached directly),
    no PIP_* configuration, no user site."""
    env = dict(os.environ if base is None else base)
    for key in list(env):
        if key.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy") or key.startswith("PIP_"):
            del env[key]
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="session")
def fixture_index() -> Index:
    return build_index()


@pytest.fixture(scope="session")
def http_index(fixture_index) -> HttpIndex:
    with serve_index(fixture_index) as served:
        yield served
