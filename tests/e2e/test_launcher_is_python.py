"""Inside a runtime the launcher is python (issue #11): one test per point of the issue, each
against python3.11 itself where it applies. (CPython's own suite: test_cpython_suite.py; PYTHON*
variables: test_python_semantics.py.)"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BASE_PYTHON, BIN, clean_env, run
from fixture_index import write_sdist
from semantics_runtime import env, warm_runtime  # noqa: F401  (pytest fixtures)

HOME = BIN.parent.parent / "lib" / "inferenceutils" / "python3.11"


def runtime_python(env) -> Path:
    proc = run(["runtime", "path"], env, check_rc=0)
    return Path(proc.stdout.strip()) / "bin" / "python"


def _sdist(directory: Path) -> Path:
    """iu-sdist-demo 1.0: a setuptools sdist pip builds in an isolated environment (PYTHONPATH)."""
    return write_sdist(directory, "iu_sdist_demo", "1.0", {
        "iu_sdist_demo/__init__.py": "VALUE = 'built from the sdist'\n",
        "pyproject.toml": '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
                          '[project]\nname = "iu-sdist-demo"\nversion = "1.0"\n'})


def test_1_pip_installs_an_sdist_into_the_running_runtime(tmp_path, fixture_index):
    """pip's build isolation reaches its child through PYTHONPATH; the next start still takes the
    runtime as valid (the key and manifest describe the spec, not what pip added)."""
    spec = fixture_index.write_spec(tmp_path / "spec.toml", ["iu-fixture-pure"], ["iu_fixture_pure"])
    e = clean_env(tmp_path, INFERENCEUTILS_SPEC=spec)
    links = tmp_path / "links"
    links.mkdir()
    _sdist(links)
    for wheel in (HOME / "share" / "python-wheels").glob("*.whl"):
        shutil.copy(wheel, links)  # setuptools and wheel for the isolated build, offline
    code = ("import subprocess, sys\n"
            "r = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-index', '--find-links', sys.argv[1],"
            " 'iu-sdist-demo'], capture_output=True, text=True)\n"
            "print(r.returncode); sys.stderr.write(r.stdout + r.stderr)")
    proc = run(["run", "-c", code, links], e, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "0", proc.stderr
    state = sorted(os.listdir(tmp_path / "store" / "data"))
    proc = run(["run", "-c", "import iu_sdist_demo; print(iu_sdist_demo.VALUE)"], e, check_rc=0)
    assert proc.stdout == "built from the sdist\n"
    assert sorted(os.listdir(tmp_path / "store" / "data")) == state  # the same runtime, not rebuilt


@pytest.mark.parametrize("how", ["popen", "execv"])
def test_3_python_mode_comes_from_what_was_executed_not_argv0(env, how):
    child = "import sys; print(sys.prefix, sys.orig_argv[0], 'llama_cpp' in sys.modules)"
    if how == "popen":
        code = ("import subprocess, sys; subprocess.run(['anything', '-c', %r], executable=sys.executable)" % child)
    else:
        code = "import os, sys; os.execv(sys.executable, ['x', '-c', %r])" % child
    proc = run(["run", "-c", code], env, check_rc=0)
    prefix, argv0, preloaded = proc.stdout.split()
    assert prefix == str(runtime_python(env).parent.parent)
    assert argv0 == ("anything" if how == "popen" else "x") and preloaded == "True"


def test_4_a_venv_made_in_a_runtime_works_like_one_made_by_python(env, tmp_path):
    for copies in ([], ["--copies"]):
        venv = tmp_path / ("venv-copies" if copies else "venv")
        run(["run", "-m", "venv", *copies, "--without-pip", venv], env, check_rc=0)
        for name in ("python", "python3", "python3.11"):
            proc = subprocess.run([str(venv / "bin" / name), "-c",
                                   "import sys; print(sys.prefix, sys.base_prefix, sys._base_executable)"],
                                  env=env, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, (copies, name, proc.stderr)
            assert proc.stdout.split() == [str(venv), str(HOME), str(HOME / "bin" / "python3.11")]
        assert not (venv / "bin" / "inferenceutils").exists()
    venv = tmp_path / "with-pip"
    run(["run", "-m", "venv", venv], env, check_rc=0, timeout=300)  # ensurepip from the home's wheels
    proc = subprocess.run([str(venv / "bin" / "pip"), "--version"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and str(venv) in proc.stdout, proc.stderr


def test_5_the_program_holds_the_descriptors_python_would(env):
    code = ("import os, subprocess, sys\n"
            "print(sorted(os.listdir('/proc/self/fd')))\n"
            "r = subprocess.run([sys.executable, '-c', 'import os; print(sorted(os.listdir(\"/proc/self/fd\")))'],"
            " capture_output=True, text=True)\n"
            "print(r.stdout.strip())")
    iu = run(["run", "-c", code], env, check_rc=0).stdout.splitlines()
    py = subprocess.run([BASE_PYTHON, "-c", code], env=env, capture_output=True, text=True).stdout.splitlines()
    assert iu == py


@pytest.mark.parametrize("closed", [0, 1, 2])
def test_6_closed_standard_streams(env, closed):
    """Started with stdin, stdout or stderr closed, python runs the program (that stream is None)
    and exits with the program's status; the report goes through an extra pipe."""
    code = ("import sys, os\n"
            "out = os.fdopen(int(sys.argv[1]), 'w')\n"
            "out.write(' '.join(str(s is None) for s in (sys.stdin, sys.stdout, sys.stderr))); out.close()\n"
            "sys.exit(42)")
    results = []
    for argv in ([str(BIN), "run", "-c", code], [BASE_PYTHON, "-c", code]):
        r, w = os.pipe()
        proc = subprocess.run(["sh", "-c", f'exec "$@" {closed}>&- {closed}<&-', "sh", *argv, str(w)], env=env,
                              pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        os.close(w)
        with os.fdopen(r) as f:
            results.append((proc.returncode, f.read()))
    assert results[0] == results[1]
    assert results[0][0] == 42 and results[0][1].split()[closed] == "True"


def test_7_scripts_that_are_not_regular_files(env, tmp_path):
    proc = subprocess.run(["bash", "-c", f'"{BIN}" run <(echo "print(11)")'], env=env, capture_output=True, text=True,
                          timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "11\n"), proc.stderr
    proc = subprocess.run([str(BIN), "run", "/dev/stdin"], env=env, input="print(12)\n", capture_output=True, text=True,
                          timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "12\n"), proc.stderr
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen([str(BIN), "run", str(fifo)], env=env, stdout=subprocess.PIPE, text=True)
    with open(fifo, "w") as f:
        f.write("print(13)\n")
    assert reader.wait(timeout=60) == 0 and reader.stdout.read() == "13\n"


def test_8_a_relative_store_becomes_absolute(env, tmp_path):
    e = dict(env)
    store = Path(e.pop("INFERENCEUTILS_HOME"))
    e["INFERENCEUTILS_HOME"] = os.path.relpath(store, tmp_path)
    code = ("import os, subprocess, sys\n"
            "os.chdir('/')\n"
            "print(sys.executable)\n"
            "print(subprocess.run([sys.executable, '-c', 'print(6*7)'], capture_output=True, text=True).stdout.strip())")
    proc = run(["run", "-c", code], e, cwd=tmp_path, check_rc=0)
    executable, answer = proc.stdout.split()
    assert executable.startswith(str(store) + "/") and answer == "42"
    proc = run(["--home", os.path.relpath(store, tmp_path), "runtime", "path"], e, cwd=tmp_path, check_rc=0)
    assert proc.stdout.strip().startswith(str(store) + "/")
    doc = json.loads(run(["info", "--json"], e, cwd=tmp_path, check_rc=0).stdout)
    assert doc["store"]["root"] == str(store)


def test_9_smaller_ones(env):
    iu = run(["run", "-X", "int_max_str_digits=10", "-c", "1"], env)
    py = subprocess.run([BASE_PYTHON, "-X", "int_max_str_digits=10", "-c", "1"], capture_output=True, text=True)
    assert iu.returncode == py.returncode == 1
    assert iu.stderr.splitlines()[0] == py.stderr.splitlines()[0]
    for flag in ("-I", "-P"):
        path0 = run(["run", flag, "-c", "import sys; print(sys.path[0])"], env, check_rc=0).stdout.strip()
        assert path0 == str(HOME / "lib" / "python311.zip"), flag
    proc = run(["run", "-c", "import sys; print(sys.orig_argv)"], env, check_rc=0)
    assert json.loads(proc.stdout.replace("'", '"')) == [str(BIN), "run", "-c", "import sys; print(sys.orig_argv)"]
    # the launcher binary given python's options, as tools do with realpath(sys.executable)
    proc = subprocess.run([str(BIN), "-c", "import sys; print(sys.prefix)"], env=env, capture_output=True, text=True)
    assert (proc.returncode, proc.stdout.strip()) == (0, str(HOME))
