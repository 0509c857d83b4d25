"""Shared pieces of the end-to-end tests: they run the real `inferenceutils` binary as a user would.

Every test gets its own store, HOME and XDG directories under pytest's tmp_path, so nothing of the
developer's machine leaks in or out. The binary comes from $INFERENCEUTILS_BIN (set by ctest).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

# The offline package index of fixture projects (fixture_index.py): `fixture_index`, `http_index`.
pytest_plugins = ["fixture_index"]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("INFERENCEUTILS_BIN") or REPO / "build" / "bin" / "inferenceutils")
BUILD_DIR = Path(os.environ.get("IU_TEST_BUILD_DIR") or REPO / "build" / "tests")
BASE_PYTHON = "/usr/bin/python3.11"  # the interpreter the launcher embeds


def clean_env(tmp_path: Path, **extra) -> dict:
    """An environment like a user's shell, with a private HOME/store and no PYTHON*/INFERENCEUTILS_* leaks."""
    from fixture_index import without_build_vars, pip_env
    # No build variables (the fixture llama-cpp-python records them), no proxies (127.0.0.1 is
    # reached directly), no PYTHON*/PIP_*/INFERENCEUTILS_*/XDG_* settings of the developer's.
    env = pip_env(without_build_vars(os.environ))
    env = {k: v for k, v in env.items()
           if not k.startswith(("PYTHON", "INFERENCEUTILS_", "XDG_", "CUDA_", "ROCR_", "HIP_", "PIP_"))}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), INFERENCEUTILS_HOME=str(tmp_path / "store"), LANG="C.UTF-8")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(args, env, input=None, cwd=None, timeout=120, check_rc=None):
    proc = subprocess.run([str(BIN), *map(str, args)], env=env, input=input, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    if check_rc is not None:
        assert proc.returncode == check_rc, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def run_python(args, env, input=None, cwd=None, timeout=120):
    """The reference: Debian's python3.11 itself, isolated the way the launcher isolates (-E -s)."""
    return subprocess.run([BASE_PYTHON, "-E", "-s", *map(str, args)], env=env, input=input, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def env(tmp_path):
    return clean_env(tmp_path)


def runtime_dirs(store: Path) -> dict:
    """What a store holds: published runtimes (key → data dir name), data dirs, build logs."""
    runtimes = store / "runtimes"
    return {
        "runtimes": {p.name: os.readlink(p).split("/")[-1] for p in sorted(runtimes.iterdir())} if runtimes.exists() else {},
        "data": sorted(p.name for p in (store / "data").iterdir()) if (store / "data").exists() else [],
        "logs": sorted(p.name for p in (store / "logs").iterdir()) if (store / "logs").exists() else [],
    }
