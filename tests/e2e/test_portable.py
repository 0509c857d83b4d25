"""The launcher carries its own Python home (issue "Portable").

The *installed* tree (`cmake --install` into a temporary prefix) runs inside a mount namespace in
which the machine's Python is gone: /usr/lib/python3*, /usr/bin/python3*, libpython, Debian's
python-wheels, the Python headers and dist-packages are hidden behind empty mounts (`unshare -m`,
as root). Everything a user does with it — scripts, -c, -m, the REPL, the stdlib's C modules,
building a runtime from an sdist with a C extension, multiprocessing, `python -m venv`, bundles,
apps — must work there.
"""
import glob
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, clean_env
from fixture_index import write_sdist, write_spec

BUILD = BIN.parent.parent
HIDDEN = ["/usr/lib/python3*", "/usr/bin/python3*", "/usr/lib/x86_64-linux-gnu/libpython3*",
          "/usr/share/python-wheels", "/usr/include/python3*", "/usr/include/x86_64-linux-gnu/python3*",
          "/usr/lib/python3/dist-packages", "/usr/local/lib/python3*", "/root/.pyenv"]
GLIBC = {"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1", "libutil.so.1",
         "libresolv.so.2", "libanl.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}


def _hide_commands() -> str:
    """Empty mounts over every match: a tmpfs over a folder, /dev/null over a file (its target,
    for a link), leaving out what an earlier folder already hides."""
    real = {os.path.realpath(p) for pattern in HIDDEN for p in glob.glob(pattern)}
    dirs = sorted(p for p in real if os.path.isdir(p))
    dirs = [d for d in dirs if not any(d.startswith(o + "/") for o in dirs)]
    files = sorted(p for p in real if os.path.isfile(p) and not any(p.startswith(d + "/") for d in dirs))
    lines = [f"mount -t tmpfs -o size=1m,mode=755 none {shlex.quote(d)}" for d in dirs]
    lines += [f"mount --bind /dev/null {shlex.quote(f)}" for f in files]
    return " && ".join(lines)


def _namespace_works() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not _namespace_works(), reason="needs root and unshare -m (CI runs as root)")


def without_python(argv, env, **kwargs):
    """Runs argv in a mount namespace where the machine's Python is hidden."""
    script = _hide_commands() + ' && exec "$@"'
    env = dict(env, PATH="/usr/local/bin:/usr/bin:/bin")
    kwargs.setdefault("timeout", 300)
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *map(str, argv)], env=env,
                          capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    prefix = tmp_path_factory.mktemp("install") / "inferenceutils"
    subprocess.run(["cmake", "--install", str(BUILD), "--prefix", str(prefix)], check=True,
                   capture_output=True)
    return prefix


@pytest.fixture
def iu(installed):
    return installed / "bin" / "inferenceutils"


def test_the_machine_has_no_python_in_the_namespace(env):
    proc = without_python(["sh", "-c", "ls -A /usr/lib/python3.11 | wc -l; /usr/bin/python3.11 -c 1"], env)
    assert proc.stdout.split()[0] == "0"
    assert proc.returncode != 0


def test_script_c_m_and_repl(iu, installed, env, tmp_path):
    home = installed / "lib" / "inferenceutils" / "python3.11"
    script = tmp_path / "hello.py"
    script.write_text("import sys\nprint(sys.version.split()[0], sys.prefix, sys.base_prefix, sys._base_executable)\n")
    proc = without_python([iu, "--system", "run", script], env)
    assert proc.returncode == 0, proc.stderr
    version, prefix, base_prefix, base_executable = proc.stdout.split()
    assert version == "3.11.2"
    assert prefix == base_prefix == str(home)
    assert base_executable == str(home / "bin" / "python3.11")

    proc = without_python([iu, "--system", "run", "-c", "import os; print(os.__file__)"], env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(home / "lib" / "python3.11"))

    proc = without_python([iu, "--system", "run", "-m", "json.tool"], env, input='{"a": [1]}')
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"a": [1]}

    proc = without_python([iu, "--system", "run", "-i", "-c", "x = 6"], env, input="print(x * 7)\n")
    assert proc.returncode == 0, proc.stderr
    assert "42" in proc.stdout


def test_the_stdlib_c_modules_work(iu, env):
    code = """
import ssl, sqlite3, ctypes, lzma, bz2, readline, decimal, uuid, zoneinfo, hashlib, json, zlib, pyexpat, curses
assert ssl.create_default_context().check_hostname
db = sqlite3.connect(":memory:"); assert db.execute("select 6*7").fetchone() == (42,)
assert ctypes.CDLL(None).strlen(b"abc") == 3
assert lzma.decompress(lzma.compress(b"x" * 100)) == b"x" * 100
assert bz2.decompress(bz2.compress(b"y" * 100)) == b"y" * 100
assert str(decimal.Decimal(1) / decimal.Decimal(8)) == "0.125"
assert uuid.uuid4().version == 4
assert hashlib.sha256(b"").hexdigest().startswith("e3b0c442")
assert json.loads('{"a": 1}') == {"a": 1}
print("ok", ssl.OPENSSL_VERSION.split()[0], sqlite3.sqlite_version, readline.__file__)
"""
    proc = without_python([iu, "--system", "run", "-c", code], env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok OpenSSL"), proc.stdout
    assert "/lib/inferenceutils/python3.11/lib/python3.11/lib-dynload/readline" in proc.stdout


def _c_extension_sdist(directory: Path) -> Path:
    """iu-portable-cext 1.0: an sdist with a C extension, built by pip in an isolated environment."""
    return write_sdist(directory, "iu_portable_cext", "1.0", {
        "pyproject.toml": '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
                          '[project]\nname = "iu-portable-cext"\nversion = "1.0"\n',
        "setup.py": "from setuptools import setup, Extension\n"
                    "setup(ext_modules=[Extension('iu_cext', ['iu_cext.c'])])\n",
        "iu_cext.c": IU_CEXT_C})


IU_CEXT_C = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static PyObject* add(PyObject* self, PyObject* args) {
  long a, b;
  if (!PyArg_ParseTuple(args, "ll", &a, &b)) return NULL;
  return PyLong_FromLong(a + b);
}
static PyMethodDef methods[] = {{"add", add, METH_VARARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "iu_cext", NULL, -1, methods};
PyMODINIT_FUNC PyInit_iu_cext(void) { return PyModule_Create(&module); }
"""


def test_runtime_on_the_home_without_python(iu, installed, env, tmp_path, fixture_index):
    links = tmp_path / "links"
    _c_extension_sdist(links)
    spec = write_spec(tmp_path / "spec.toml", ["iu-fixture-pure", "iu-portable-cext"], preload=["iu_fixture_pure"],
                      index=fixture_index, find_links=[links])
    home = installed / "lib" / "inferenceutils" / "python3.11"
    code = ("import sys, iu_cext, iu_fixture_pure; "
            "print(iu_cext.add(2, 3), 'iu_fixture_pure' in sys.modules, sys.prefix, sys.base_prefix, sys._base_executable)")
    proc = without_python([iu, "--spec", spec, "run", "-c", code], env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    five, preloaded, prefix, base_prefix, base_executable = proc.stdout.split()
    assert (five, preloaded) == ("5", "True")
    assert prefix.startswith(env["INFERENCEUTILS_HOME"] + "/data/")
    assert base_prefix == str(home) and base_executable == str(home / "bin" / "python3.11")
    cfg = (Path(prefix) / "pyvenv.cfg").read_text()
    assert f"home = {home}/bin" in cfg

    # multiprocessing spawn: the child is the launcher again, in the runtime, with the preload.
    mp = tmp_path / "mp.py"
    mp.write_text(
        "import multiprocessing as mp, sys\n"
        "def probe(_):\n"
        "    import sys\n"
        "    return sys.executable, sys.prefix, 'iu_fixture_pure' in sys.modules\n"
        "if __name__ == '__main__':\n"
        "    with mp.get_context('spawn').Pool(1) as pool:\n"
        "        exe, prefix, pre = pool.map(probe, [0])[0]\n"
        "    print(exe == sys.executable, prefix == sys.prefix, pre)\n")
    proc = without_python([iu, "--spec", spec, "run", mp], env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True", "True"]

    # python -m venv from the runtime: a working venv on the same home, with pip.
    venv = tmp_path / "venv"
    proc = without_python([iu, "--spec", spec, "run", "-m", "venv", venv], env)
    assert proc.returncode == 0, proc.stderr
    proc = without_python([venv / "bin" / "python", "-c",
                           "import sys; print(sys.prefix, sys.base_prefix, 'iu_fixture_pure' in sys.modules)"], env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(venv), str(home), "False"]
    proc = without_python([venv / "bin" / "pip", "--version"], env)
    assert proc.returncode == 0, proc.stderr
    assert str(venv) in proc.stdout

    # Pack it and unpack it into a fresh store, without building (the spec names only local sources).
    bundle = tmp_path / "rt.tar.zst"
    proc = without_python([iu, "--spec", spec, "runtime", "pack", "-o", bundle], env)
    assert proc.returncode == 0, proc.stderr
    fresh = dict(env, INFERENCEUTILS_HOME=str(tmp_path / "store2"))
    proc = without_python([iu, "--spec", spec, "--bundle", bundle, "--no-build", "run", "-c", code], fresh)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:2] == ["5", "True"]
    assert proc.stdout.split()[2].startswith(str(tmp_path / "store2"))


def _needed_and_runpath(path: str):
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
    needed = [line.split("[")[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]
    runpath = [line.split("[")[1].rstrip("]") for line in out.splitlines() if "(RUNPATH)" in line or "(RPATH)" in line]
    return needed, (runpath[0].split(":") if runpath else [])


def test_every_elf_file_needs_only_glibc_or_the_tree(installed):
    missing = []
    elf_files = 0
    for root, _dirs, files in os.walk(installed):
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            with open(path, "rb") as f:
                if f.read(4) != b"\x7fELF":
                    continue
            elf_files += 1
            needed, runpath = _needed_and_runpath(path)
            dirs = [d.replace("$ORIGIN", os.path.dirname(path)) for d in runpath]
            for lib in needed:
                if lib in GLIBC:
                    continue
                if not any(os.path.exists(os.path.join(d, lib)) for d in dirs):
                    missing.append(f"{os.path.relpath(path, installed)} needs {lib} (RUNPATH {':'.join(runpath) or '-'})")
    assert elf_files > 30
    assert not missing, "\n".join(missing)


def test_copied_app_runs_without_python(iu, env, tmp_path, fixture_index):
    """An app carries the Python home: copied to a machine without Python it extracts the home once
    (into <store>/homes/<id>, shared), unpacks its embedded bundle without building, and starts warm."""
    app_dir = tmp_path / "appsrc"
    (app_dir / "demo").mkdir(parents=True)
    (app_dir / "demo" / "__init__.py").write_text("")
    (app_dir / "demo" / "cli.py").write_text(
        "import json, sqlite3, ssl, sys\n"
        "def main():\n"
        "    print(json.dumps({'argv': sys.argv, 'prefix': sys.prefix, 'base_prefix': sys.base_prefix,\n"
        "                      'pure': 'iu_fixture_pure' in sys.modules}))\n")
    spec = write_spec(tmp_path / "spec.toml", ["iu-fixture-pure"], preload=["iu_fixture_pure"], index=fixture_index)
    bundle = tmp_path / "rt.tar.zst"
    proc = subprocess.run([str(iu), "--spec", spec, "run", "-c", "pass"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([str(iu), "--spec", spec, "runtime", "pack", "-o", bundle], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "dist" / "demo"
    out.parent.mkdir()
    proc = subprocess.run([str(iu), "app", "build", app_dir, "-o", out, "--entry", "demo.cli:main", "--spec", spec,
                           "--with-bundle", bundle], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    elsewhere = tmp_path / "Downloads"
    elsewhere.mkdir()
    shutil.copy2(out, elsewhere / "demo")
    fresh = dict(env, INFERENCEUTILS_HOME=str(tmp_path / "user-store"), INFERENCEUTILS_APP_TERMINAL="1")
    store = tmp_path / "user-store"
    for attempt in ("first", "second"):
        proc = without_python([elsewhere / "demo", "--inferenceutils-offline", "--inferenceutils-no-build", "x"], fresh)
        assert proc.returncode == 0, (attempt, proc.stderr)
        seen = json.loads(proc.stdout)
        assert seen["argv"] == [str(elsewhere / "demo"), "x"] and seen["pure"] is True
        assert seen["prefix"].startswith(str(store / "data"))
        homes = sorted((store / "homes").iterdir())
        assert len(homes) == 1 and (homes[0] / "home.json").is_file()
        assert os.path.realpath(seen["base_prefix"]).startswith(str(store))


def test_info_names_the_home_in_use(iu, installed, env):
    home = installed / "lib" / "inferenceutils" / "python3.11"
    proc = without_python([iu, "info", "--json"], env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)["python_home"]
    identity = json.loads((home / "home.json").read_text())
    assert doc == {"id": identity["id"], "version": "3.11.2", "prefix": str(home),
                   "executable": str(home / "bin" / "python3.11"), "source": "bundled", "present": True}
    proc = without_python([iu, "info"], env)
    assert f"home        {home} (carried beside the launcher)" in proc.stdout
    assert f"identity    {identity['id']}" in proc.stdout
