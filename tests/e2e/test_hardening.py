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


# --- 1-3: the store never deletes or writes outside itself ------------------------------------

def test_remove_and_publish_never_delete_outside_the_store(tmp_path, env):
    store = tmp_path / "store"
    key = hello_runtime(env)
    victims = []
    for name in ("elsewhere", "elsewhere2"):
        victim = tmp_path / name
        victim.mkdir()
        (victim / "precious").write_text("keep me")
        victims.append(victim)
    # A forged key whose link climbs out of the store, then `runtime remove` of it.
    forged = "abcdef0123456789"
    os.symlink("../../elsewhere", store / "runtimes" / forged)
    assert run(["runtime", "remove", forged], env, check_rc=0).stdout.strip() == f"removed {forged}"
    assert not (store / "runtimes" / forged).is_symlink()
    # The real runtime's link bent outside, then replaced by a rebuild (Publish deletes the old).
    (store / "runtimes" / key).unlink()
    os.symlink("../../elsewhere2", store / "runtimes" / key)
    run(["--spec", HELLO, "runtime", "rebuild"], env, timeout=300, check_rc=0)
    for victim in victims:
        assert (victim / "precious").read_text() == "keep me"
        assert not (victim / ".in-use").exists()  # not even the in-use probe was made there


def test_lock_file_symlink_is_not_followed(tmp_path, env):
    key = runtime_key(env)
    store = tmp_path / "store"
    (store / "locks").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched\n")
    os.symlink(victim, store / "locks" / f"{key}.lock")
    proc = run(["--spec", HELLO, "run", "-c", "print(1)"], env, timeout=300)
    assert proc.returncode == 73, proc.stderr
    assert "symlink" in one_error_line(proc)
    assert victim.read_text() == "untouched\n"
    assert runtime_dirs(store)["data"] == []


@pytest.mark.parametrize("bad", ["", "../data", "xyz", "/", "abc def"])
def test_remove_rejects_an_empty_or_non_hex_key(tmp_path, env, bad):
    key = hello_runtime(env)
    proc = run(["runtime", "remove", bad], env)
    assert proc.returncode == 65, proc.stderr
    assert "runtime list" in one_error_line(proc)
    assert list(runtime_dirs(tmp_path / "store")["runtimes"]) == [key]
    assert run(["runtime", "info", bad], env).returncode == 65


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


# --- 7: info lists a bundle it cannot read as rejected ----------------------------------------

def test_info_lists_unreadable_bundles_as_rejected(tmp_path, env):
    corrupt = tmp_path / "corrupt.tar.zst"
    corrupt.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(200))
    bundles = [tmp_path / "missing.tar.zst", corrupt, "http://127.0.0.1:9/none/", "http://127.0.0.1:9/rt.tar.zst"]
    args = [x for b in bundles for x in ("--bundle", b)]
    for fmt in (["--json"], []):
        proc = run([*args, "--spec", HELLO, "info", *fmt], env, timeout=60)
        assert proc.returncode == 0, proc.stderr
    doc = json.loads(run([*args, "--spec", HELLO, "info", "--json"], env, check_rc=0).stdout)
    rows = {row["location"]: row for row in doc["bundles"]["candidates"]}
    assert "does not exist" in rows[str(tmp_path / "missing.tar.zst")]["rejected"]
    assert rows[str(corrupt)]["rejected"]
    assert rows["http://127.0.0.1:9/none/"]["rejected"]
    assert rows["http://127.0.0.1:9/rt.tar.zst"]["chosen"] in (True, False)  # read after the download


# --- 8: bad numbers are errors, 0 means do not wait -------------------------------------------

@pytest.mark.parametrize("name,value", [("INFERENCEUTILS_LOCK_TIMEOUT", "-1"), ("INFERENCEUTILS_LOCK_TIMEOUT", "abc"),
                                        ("INFERENCEUTILS_LOCK_TIMEOUT", "1e3"), ("INFERENCEUTILS_DOWNLOAD_TIMEOUT", "0"),
                                        ("INFERENCEUTILS_DOWNLOAD_TIMEOUT", "soon"),
                                        ("INFERENCEUTILS_BUNDLE_MAX_BYTES", "20X"),
                                        ("INFERENCEUTILS_BUNDLE_MAX_BYTES", "0"),
                                        ("INFERENCEUTILS_APP_TERMINAL", "yes")])
def test_a_bad_numeric_variable_is_exit_65_naming_it(tmp_path, name, value):
    env = clean_env(tmp_path, **{name: value})
    for args in (["--spec", HELLO, "run", "-c", "print(1)"], ["info"], ["runtime", "list"]):
        proc = run(args, env, timeout=60)
        assert proc.returncode == 65, (args, proc.stderr)
        line = one_error_line(proc)
        assert f"{name}='{value}'" in line
    assert not (tmp_path / "store" / "data").exists()  # refused before anything was made


def test_lock_timeout_zero_does_not_wait(tmp_path, env):
    key = runtime_key(env)
    locks = tmp_path / "store" / "locks"
    locks.mkdir(parents=True)
    with open(locks / f"{key}.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        start = time.monotonic()
        proc = run(["--spec", HELLO, "run", "-c", "print(1)"], dict(env, INFERENCEUTILS_LOCK_TIMEOUT="0"), timeout=30)
        assert proc.returncode == 75, proc.stderr
        assert time.monotonic() - start < 10
        proc = run(["--spec", HELLO, "run", "-c", "print(1)"], dict(env, INFERENCEUTILS_LOCK_TIMEOUT="0.3"), timeout=30)
        assert proc.returncode == 75 and "INFERENCEUTILS_LOCK_TIMEOUT" in proc.stderr


# --- 10: doctor --json is always one JSON document; --system is honoured ----------------------

def test_doctor_json_is_json_even_when_the_preload_prints(tmp_path, env):
    spec = write_spec(tmp_path / "zen.toml", [], ["this"])  # `import this` prints the Zen of Python
    proc = run(["--spec", spec, "doctor", "--json"], env, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["runtime"]["preload"] == ["this"]
    assert "Beautiful is better than ugly" in proc.stderr  # the preload's output, out of the way


def test_doctor_json_prints_the_error_as_json(tmp_path, env):
    proc = run(["--spec", HELLO, "--no-build", "doctor", "--json"], env, timeout=60)
    assert proc.returncode == 74, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False and "--no-build" in doc["error"]
    one_error_line(proc)


def test_doctor_system_checks_the_base_interpreter(tmp_path, env):
    proc = run(["--system", "doctor", "--json"], env, timeout=60)
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["runtime"]["source"] == "system" and doc["runtime"]["preload"] == []
    assert runtime_dirs(tmp_path / "store")["runtimes"] == {}  # no runtime was made
    human = run(["--system", "doctor"], env, timeout=60)
    assert "--system" in human.stdout


# --- 11: markers are validated and normalised -------------------------------------------------

@pytest.mark.parametrize("req", ['tinypkg; bogus_var == "1"', 'tinypkg; python_version >=', 'tinypkg; (os_name == "nt"',
                                 "tinypkg; python_version ~ '3'", 'tinypkg; os_name == "nt" and'])
def test_an_invalid_marker_is_exit_65(tmp_path, env, req):
    proc = run(["--with", req, "--spec", HELLO, "run", "-c", "print(1)"], env, timeout=60)
    assert proc.returncode == 65, proc.stderr
    assert "marker" in one_error_line(proc)
    assert runtime_dirs(tmp_path / "store")["data"] == []


def test_whitespace_and_quotes_in_markers_do_not_change_the_key(tmp_path, env):
    keys = {runtime_key(env, "--with", req) for req in (
        'tinypkg; python_version>="3" and (os_name=="posix" or sys_platform=="linux")',
        "tinypkg ;  python_version >= '3'  and ( os_name == 'posix' or sys_platform == 'linux' )",
        'tinypkg;python_version >= "3" and(os_name  ==  "posix"  or sys_platform=="linux")')}
    assert len(keys) == 1
    assert runtime_key(env, "--with", 'tinypkg; python_version >= "4"') not in keys


# --- 12: Ctrl-C while pip works ---------------------------------------------------------------

class _Hang(http.server.BaseHTTPRequestHandler):
    """An index that never answers: pip waits in its request until it is stopped."""
    asked = threading.Event()
    release = threading.Event()

    def do_GET(self):
        type(self).asked.set()
        type(self).release.wait(60)

    def log_message(self, *args):
        pass


def _processes_mentioning(text: str) -> list:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
            except OSError:
                pass
    return found


def test_ctrl_c_while_pip_runs_stops_it_cleans_up_and_exits_130(tmp_path, env):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hang)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = write_spec(tmp_path / "hang.toml", ["iu-hang-pkg"], [], f"http://127.0.0.1:{server.server_port}/simple/")
        # A terminal's Ctrl-C: SIGINT to the foreground process group.
        proc = subprocess.Popen([str(BIN), "--spec", str(spec), "run", "-c", "print(1)"], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        assert _Hang.asked.wait(120), "pip never asked the index"
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        _Hang.release.set()
        server.shutdown()
    assert proc.returncode == -signal.SIGINT, (proc.returncode, err)  # a shell reports 130, as for python
    line = one_error_line(subprocess.CompletedProcess([], 0, out, err))
    assert "interrupted" in line and "Traceback" not in err
    state = runtime_dirs(tmp_path / "store")
    assert state["runtimes"] == {} and state["data"] == []  # nothing half-made
    time.sleep(0.5)
    assert _processes_mentioning(str(tmp_path / "store" / "data")) == []  # pip is gone too


# --- 13: messages and values that were wrong ---------------------------------------------------

def test_a_future_last_use_is_shown_and_pruned(tmp_path, env):
    key = hello_runtime(env)
    data = tmp_path / "store" / "runtimes" / key
    future = time.time() + 10 * 365 * 86400
    os.utime(data / ".in-use", (future, future))
    table = run(["runtime", "list"], env, check_rc=0).stdout
    assert "just now" not in table and "future" in table
    assert "1 runtime removed" in run(["runtime", "prune", "--unused-for", "30"], env, check_rc=0).stdout


def test_a_huge_but_valid_requires_python_is_unmet_not_invalid(tmp_path, env):
    script = tmp_path / "future.py"
    script.write_text('# /// script\n# requires-python = ">=3.99999999999999999999"\n# ///\nprint(1)\n')
    proc = run(["--spec", HELLO, "run", script], env, timeout=60)
    assert proc.returncode == 69, proc.stderr
    assert "invalid" not in one_error_line(proc)
    script.write_text('# /// script\n# requires-python = "<3.99999999999999999999"\n# ///\nprint(1)\n')
    assert run(["--spec", HELLO, "run", script], env, timeout=300).stdout.strip() == "1"


def test_an_unknown_backend_is_exit_65(tmp_path, env):
    for args, extra in ((["info"], {"INFERENCEUTILS_BACKEND": "xyz"}), (["--backend", "xyz", "info"], {})):
        proc = run(args, dict(env, **extra))
        assert proc.returncode == 65, proc.stderr
        assert "unknown backend 'xyz'" in one_error_line(proc)
