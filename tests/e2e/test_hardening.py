"""Hardening (issue #12): a hostile or damaged store, environment or input never escapes the
store, crashes the launcher or silently misleads. Bundles and apps have theirs in test_bundle.py
and test_app.py; the readers are fuzzed in tests/unit/test_fuzz.cpp.

Most tests use examples/hello.toml (nothing to install: a runtime in seconds, offline).
"""
import fcntl
import http.server
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import BIN, REPO, clean_env, run, runtime_dirs
from fixture_index import write_spec

HELLO = REPO / "examples" / "hello.toml"
NOT_UTF8 = "\udcff"  # os.fsencode → the byte 0xff, which is not UTF-8


def run_bytes(args, env, timeout=120, cwd=None):
    """The launcher, its output kept as bytes (what it prints must be valid UTF-8 JSON)."""
    return subprocess.run([str(BIN), *map(str, args)], env=env, capture_output=True, timeout=timeout, cwd=cwd)


def one_error_line(proc) -> str:
    err = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("inferenceutils: error: "), err
    assert "; " in lines[0], err  # what failed; the fix
    return lines[0]


def hello_runtime(env) -> str:
    """Builds the hello runtime; its key."""
    run(["--spec", HELLO, "runtime", "path"], env, timeout=300, check_rc=0)
    return runtime_key(env)


def runtime_key(env, *args) -> str:
    doc = json.loads(run([*args, "--spec", HELLO, "info", "--json"], env, check_rc=0).stdout)
    return doc["bundles"]["runtime_key"]


# --- 6: bytes that are not UTF-8 never abort --------------------------------------------------

def test_non_utf8_environment_and_links_do_not_abort(tmp_path):
    env = clean_env(tmp_path, CUDA_VISIBLE_DEVICES=NOT_UTF8, LD_LIBRARY_PATH=f"/opt/{NOT_UTF8}")
    proc = run_bytes(["--spec", HELLO, "run", "-c", "print('ok')"], env, timeout=300)
    assert (proc.returncode, proc.stdout) == (0, b"ok\n"), proc.stderr
    store = Path(env["INFERENCEUTILS_HOME"])
    (store / "runtimes" / f"k{NOT_UTF8}").symlink_to("../data/nothing")  # a name that is not UTF-8
    for args in (["--find-links", f"/links/{NOT_UTF8}", "--spec", HELLO, "info", "--json"],
                 ["runtime", "list", "--json"],
                 ["--spec", HELLO, "doctor", "--json"],
                 ["runtime", "info", runtime_key(env)]):
        proc = run_bytes(args, env, timeout=300)
        assert proc.returncode in (0, 1), (args, proc.returncode, proc.stderr)
        json.loads(proc.stdout.decode("utf-8"))  # valid UTF-8 and valid JSON
    doc = json.loads(run_bytes(["--spec", HELLO, "info", "--json"], env).stdout)
    assert doc["facts"]["nvidia"]["visible_devices"] == "\ufffd"
    doc = json.loads(run_bytes(["--spec", HELLO, "doctor", "--json"], env, timeout=120).stdout)
    assert doc["environment"]["LD_LIBRARY_PATH"] == "/opt/\ufffd"


def test_a_store_path_that_is_not_utf8(tmp_path):
    """pip cannot install below such a path: a clear error before it starts; nothing aborts."""
    env = clean_env(tmp_path)
    env["INFERENCEUTILS_HOME"] = str(tmp_path / f"st{NOT_UTF8}re")
    proc = run_bytes(["--spec", HELLO, "run", "-c", "print('ok')"], env, timeout=300)
    assert proc.returncode == 73, proc.stderr
    assert "not valid UTF-8" in one_error_line(proc) and "INFERENCEUTILS_HOME" in proc.stderr.decode()
    assert runtime_dirs(Path(env["INFERENCEUTILS_HOME"]))["data"] == []
    for args in (["--spec", HELLO, "info", "--json"], ["runtime", "list", "--json"]):
        proc = run_bytes(args, env)
        assert proc.returncode == 0, proc.stderr
        json.loads(proc.stdout.decode("utf-8"))
