"""Bundled apps (issue: one file a user double-clicks, that sets itself up and runs; docs/apps.md).

The fixture app (tests/fixtures/apps/hello-app: app.toml, package hello_app, an icon) is built once
per module with a spec pointing at the offline fixture index, into a folder whose name has a
space (the desktop entry's Exec quoting). Every run here has no terminal (captured output), so
the launcher's own progress and errors go to <store>/logs/app-<id>.log; a fake `notify-send`
first on PATH records what the user would have seen.
"""
import json
import os
import shlex
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, REPO, clean_env, run, runtime_dirs

FIXTURE_APP = REPO / "tests" / "fixtures" / "apps" / "hello-app"
SAME = {"wheel_indexes": []}  # the same settings for cpu and cuda (as in test_bundle.py)
FOOTER = struct.Struct("<QQQQ32sII16s8s")
EXIT_BUNDLE, EXIT_USAGE, EXIT_CONFIG = 77, 2, 65


def footer_of(path: Path) -> dict:
    data = path.read_bytes()[-FOOTER.size:]
    offset, size, moffset, msize, sha, fmt, fsize, _, magic = FOOTER.unpack(data)
    assert magic == b"IU-APP01" and fmt == 1 and fsize == FOOTER.size
    return {"offset": offset, "size": size, "manifest_offset": moffset, "manifest_size": msize, "sha256": sha.hex()}


def fake_notifier(tmp_path: Path) -> tuple[Path, Path]:
    """A folder with a fake notify-send (each call: one JSON line of its argv), and the record."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "notified.jsonl"
    tool = bin_dir / "notify-send"
    tool.write_text(f"#!/usr/bin/python3\nimport json, sys\nopen({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    tool.chmod(0o755)
    return bin_dir, record


def notifications(record: Path, count: int, timeout: float = 5.0) -> list:
    """The notifier's calls once there are `count` of them (it runs detached)."""
    deadline = time.monotonic() + timeout
    while True:
        calls = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
        if len(calls) >= count or time.monotonic() > deadline:
            return calls
        time.sleep(0.05)


def app_env(tmp_path: Path, store: Path | None = None, **extra) -> dict:
    bin_dir, _ = fake_notifier(tmp_path)
    env = clean_env(tmp_path, **extra)
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    if store is not None:
        env["INFERENCEUTILS_HOME"] = str(store)
    return env


def start(app: Path, args=(), env=None, cwd=None, rc=0, timeout=120):
    proc = subprocess.run([str(app), *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if rc is not None:
        assert proc.returncode == rc, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def report(proc) -> dict:
    return json.loads(proc.stdout.splitlines()[0])


def app_log(store: Path, app: Path) -> Path:
    return store / "logs" / f"app-{footer_of(app)['sha256'][:16]}.log"


@pytest.fixture(scope="module")
def spec(tmp_path_factory, fixture_index):
    base = tmp_path_factory.mktemp("spec")
    return fixture_index.write_spec(base / "spec.toml", ["llama-cpp-python"], ["llama_cpp"], offline=True,
                                    backends={"cpu": SAME, "cuda": SAME})


@pytest.fixture(scope="module")
def built(tmp_path_factory, spec):
    """The fixture app, built into a folder with a space in its name."""
    out_dir = tmp_path_factory.mktemp("built") / "my apps"
    out_dir.mkdir()
    out = out_dir / "hello"
    proc = run(["app", "build", FIXTURE_APP, "-o", out, "--spec", spec], clean_env(out_dir.parent), check_rc=0)
    assert "built" in proc.stdout and str(out) in proc.stdout
    return out


@pytest.fixture(scope="module")
def warm(tmp_path_factory, built):
    """A store where the app has run once: (app copy, env, store)."""
    base = tmp_path_factory.mktemp("warm")
    app = base / "hello"
    shutil.copy2(built, app)
    env = app_env(base)
    start(app, env=env)
    return app, env, base / "store"


def snapshot(store: Path) -> dict:
    """What a start could change: every path under apps/ with its mtime, runtimes, data, logs."""
    apps = {str(p.relative_to(store)): p.stat().st_mtime_ns for p in sorted((store / "apps").rglob("*"))}
    logs = {p.name: p.read_bytes() for p in sorted((store / "logs").iterdir())}
    return {"apps": apps, "logs": logs, **{k: v for k, v in runtime_dirs(store).items() if k != "logs"}}


def test_build_writes_one_executable_a_desktop_entry_and_the_icon(built):
    assert os.access(built, os.X_OK)
    footer = footer_of(built)
    assert footer["offset"] == BIN.stat().st_size  # the launcher, then the payload
    data = built.read_bytes()
    assert data[footer["offset"]:footer["offset"] + 8] == b"IUAPPBEG"
    manifest = json.loads(data[footer["offset"] + footer["manifest_offset"]:][:footer["manifest_size"]])
    assert manifest["name"] == "Hello App" and manifest["version"] == "1.2.3"
    assert manifest["entry"] == "hello_app.cli:main" and manifest["spec"] == "spec.toml"
    assert manifest["icon"] == "app/icon.png" and manifest["bundles"] == []
    desktop = dict(line.split("=", 1) for line in Path(f"{built}.desktop").read_text().splitlines()[1:])
    assert desktop["Type"] == "Application" and desktop["Name"] == "Hello App" and desktop["Terminal"] == "false"
    assert shlex.split(desktop["Exec"]) == [str(built)]  # quoted: the folder's name has a space
    assert desktop["Icon"] == f"{built}.png" and Path(desktop["Icon"]).read_bytes() == (FIXTURE_APP / "icon.png").read_bytes()
    assert sorted(p.name for p in built.parent.iterdir()) == ["hello", "hello.desktop", "hello.png"]


def test_copied_app_sets_itself_up_once_then_starts_warm(built, tmp_path):
    elsewhere = tmp_path / "Downloads"
    elsewhere.mkdir()
    app = elsewhere / "hello"
    shutil.copy2(built, app)
    env = app_env(tmp_path)
    store = tmp_path / "store"
    first = start(app, ["a", "b c", "--flag"], env=env, cwd=tmp_path)
    seen = report(first)
    assert seen["argv"] == [str(app), "a", "b c", "--flag"]
    assert seen["preloaded"] is True and seen["pure"] == "1.0.0" and seen["name"] == "hello_app.cli"
    assert seen["data"] == "hello from the app's data file" and seen["cwd"] == str(tmp_path)
    assert seen["prefix"].startswith(str(store / "data"))
    # no terminal: the setup went to the log, and the desktop was told once
    log = app_log(store, app).read_text()
    assert "extracting the app" in log and "provisioning runtime" in log and "ready at" in log
    calls = notifications(tmp_path / "notified.jsonl", 1)
    assert len(calls) == 1 and "Setting up Hello App" in calls[0][-1] and str(app_log(store, app)) in calls[0][-1]
    installed = store / "apps" / footer_of(app)["sha256"][:16]
    assert (installed / "app" / "hello_app" / "cli.py").is_file()
    assert not (installed / "app" / "notes").exists()  # app.toml's exclude
    assert (installed / "assets" / "backends.toml").is_file() and (installed / "spec.toml").is_file()
    state = snapshot(store)
    assert len(state["runtimes"]) == 1 and len(state["data"]) == 1

    # second start, no arguments: nothing extracted, verified or built again, nothing logged
    again = start(app, env=env)
    assert report(again)["argv"] == [str(app)] and report(again)["prefix"] == seen["prefix"]
    after = snapshot(store)
    after["apps"] = {k: v for k, v in after["apps"].items() if "__pycache__" not in k}
    state["apps"] = {k: v for k, v in state["apps"].items() if "__pycache__" not in k}
    assert after == state
    assert len(notifications(tmp_path / "notified.jsonl", 2, timeout=0.5)) == 1


def test_concurrent_first_starts_extract_and_build_once(built, tmp_path):
    app = tmp_path / "hello"
    shutil.copy2(built, app)
    env = app_env(tmp_path)
    procs = [subprocess.Popen([str(app), str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True) for i in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    assert sorted(json.loads(o.splitlines()[0])["argv"][1] for o, _ in outs) == ["0", "1", "2", "3"]
    store = tmp_path / "store"
    assert [p.name for p in (store / "apps").iterdir()] == [footer_of(app)["sha256"][:16]]
    state = runtime_dirs(store)
    assert len(state["runtimes"]) == 1 and len(state["data"]) == 1  # one runtime built, no leftovers


def test_app_flags_reach_the_app_and_failures_are_reported(warm, tmp_path):
    app, env, store = warm
    helped = start(app, ["--help"], env=env)
    assert "the app's own help" in helped.stdout and "inferenceutils" not in helped.stdout
    before = app_log(store, app).read_text()
    record = Path(env["PATH"].split(":")[0]).parent / "notified.jsonl"
    count = len(notifications(record, 0))
    assert start(app, ["--exit", "3"], env=env, rc=3)
    crashed = start(app, ["--crash"], env=env, rc=1)
    assert "RuntimeError: the fixture app crashed on purpose" in crashed.stderr
    log = app_log(store, app).read_text()[len(before):]
    assert "the app exited with status 3" in log
    assert "RuntimeError: the fixture app crashed on purpose" in log and "uncaught exception" in log
    calls = notifications(record, count + 2)[count:]
    assert len(calls) == 2 and all("-u" in c and "critical" in c and str(app_log(store, app)) in c[-1] for c in calls)


def test_info_shows_payload_runtime_and_hardware(warm):
    app, env, store = warm
    text = start(app, ["--inferenceutils-info"], env=env).stdout
    for word in ("payload", "runtime", "hardware", "backend", "Hello App 1.2.3", "hello_app.cli:main", "ready at"):
        assert word in text, text
    doc = json.loads(start(app, ["--inferenceutils-info", "--json"], env=env).stdout)
    assert doc["app"]["name"] == "Hello App" and doc["app"]["payload"]["sha256"] == footer_of(app)["sha256"]
    assert doc["runtime"]["ready"] is True and doc["runtime"]["key"] in runtime_dirs(store)["runtimes"]
    assert doc["system"]["facts"]["cpu"]["arch"] and doc["system"]["decision"]["backend"]
    helped = start(app, ["--inferenceutils-help"], env=env).stdout
    assert "--inferenceutils-info" in helped
    bad = start(app, ["--inferenceutils-nonsense"], env=env, rc=EXIT_USAGE)
    assert bad.stderr.count("\n") == 1 and "--inferenceutils-nonsense" in bad.stderr


def test_python_children_of_the_app_run_in_its_runtime(warm):
    app, env, store = warm
    seen = report(start(app, ["--subprocess"], env=env))
    assert seen["child"][0] == 0, seen["child"]
    assert seen["child"][1] == seen["prefix"]


def test_desktop_exec_line_starts_the_app(built, warm):
    _, env, store = warm
    desktop = dict(line.split("=", 1) for line in Path(f"{built}.desktop").read_text().splitlines()[1:])
    argv = shlex.split(desktop["Exec"])
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert report(proc)["argv"] == [str(built)]


def test_embedded_bundle_starts_offline_without_building(built, warm, spec, tmp_path):
    app, env, store = warm
    key = next(iter(runtime_dirs(store)["runtimes"]))
    bundle = tmp_path / "rt.tar.zst"
    run(["runtime", "pack", key, "-o", bundle, "--level", "3"], env, check_rc=0)
    out = tmp_path / "hello-offline"
    run(["app", "build", FIXTURE_APP, "-o", out, "--spec", spec, "--with-bundle", bundle], env, check_rc=0)
    moved = tmp_path / "usb" / "hello-offline"
    moved.parent.mkdir()
    shutil.copy2(out, moved)
    # no network at all: proxies that do not exist, offline, and building switched off
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    env2 = app_env(fresh, http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    seen = report(start(moved, ["--inferenceutils-offline", "--inferenceutils-no-build", "x"], env=env2))
    assert seen["argv"] == [str(moved), "x"] and seen["preloaded"] is True
    state = runtime_dirs(fresh / "store")
    assert list(state["runtimes"]) == [key]
    assert [name for name in state["logs"] if not name.startswith("app-")] == []  # no build log
    manifest = json.loads((Path(seen["prefix"]) / "manifest.json").read_text())
    assert manifest["source"] == "bundle" and manifest["build_env"]["bundle"].endswith("/bundles/rt.tar.zst")
    # the same with INFERENCEUTILS_OFFLINE, warm now
    env2["INFERENCEUTILS_OFFLINE"] = "1"
    assert report(start(moved, env=env2))["prefix"] == seen["prefix"]


def test_modified_or_truncated_app_is_refused(built, warm, tmp_path):
    app, env, store = warm
    footer = footer_of(built)
    data = bytearray(built.read_bytes())
    flipped = tmp_path / "flipped"
    data[footer["offset"] + footer["size"] // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    flipped.chmod(0o755)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(built.read_bytes()[:-50])
    truncated.chmod(0o755)
    for store_env in (env, app_env(tmp_path)):  # where the app is installed, and a fresh store
        before = sorted(p.name for p in (Path(store_env["INFERENCEUTILS_HOME"]) / "apps").iterdir()) \
            if (Path(store_env["INFERENCEUTILS_HOME"]) / "apps").exists() else []
        for bad, why in ((flipped, "SHA-256"), (truncated, "truncated")):
            proc = start(bad, ["a"], env=store_env, rc=EXIT_BUNDLE)
            assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
            assert proc.stderr.startswith("inferenceutils: error: app ") and why in proc.stderr
            assert "damaged" in proc.stderr and "log:" in proc.stderr
        apps = Path(store_env["INFERENCEUTILS_HOME"]) / "apps"
        after = sorted(p.name for p in apps.iterdir()) if apps.exists() else []
        assert after == before  # nothing extracted, no staging left
    # the launcher itself, without a payload, still runs normally
    assert run(["--version"], env, check_rc=0).stdout.startswith("inferenceutils ")


def test_script_entry_from_pyproject_settings(warm, spec, tmp_path):
    app, env, store = warm
    project = tmp_path / "py-app"
    project.mkdir()
    (project / "main.py").write_text("import json, sys\nprint(json.dumps({'argv': sys.argv, 'name': __name__, "
                                     "'path0': sys.path[0], 'preloaded': 'llama_cpp' in sys.modules}))\n")
    (project / "pyproject.toml").write_text(
        '[project]\nname = "py-app"\nversion = "2.0"\n\n'
        f'[tool.inferenceutils]\nscript = "main.py"\nspec = {json.dumps(str(spec))}\noutput = "dist/python-app"\n')
    (project / "dist").mkdir()
    run(["app", "build", project], env, check_rc=0)
    out = project / "dist" / "python-app"  # named like python, still the app
    seen = report(start(out, ["--help", "-x"], env=env))
    assert seen["argv"] == [str(out), "--help", "-x"] and seen["name"] == "__main__" and seen["preloaded"]
    assert seen["path0"].endswith("/app")
    assert "Name=py-app" in Path(f"{out}.desktop").read_text()
    assert len(runtime_dirs(store)["runtimes"]) == 1  # the same spec: the same runtime


BAD_BUILDS = [
    # (arguments after `app build`, exit code, words in the message)
    (lambda p: [], EXIT_USAGE, "APP_DIR"),
    (lambda p: [p / "nowhere", "-o", p / "out"], EXIT_USAGE, "not a directory"),
    (lambda p: [FIXTURE_APP / "app.toml", "-o", p / "out"], EXIT_USAGE, "not a directory"),
    (lambda p: [FIXTURE_APP], EXIT_USAGE, "-o OUT"),
    (lambda p: [FIXTURE_APP, "-o", p / "no-such-dir" / "out"], EXIT_USAGE, "does not exist"),
    (lambda p: [FIXTURE_APP, "-o", p / "out", "--entry", "not an entry"], EXIT_USAGE, "MODULE:FUNC"),
    (lambda p: [FIXTURE_APP, "-o", p / "out", "--entry", "a:b", "--script", "script.py"], EXIT_USAGE, "not both"),
    (lambda p: [FIXTURE_APP, "-o", p / "out", "--script", "missing.py"], EXIT_USAGE, "does not exist"),
    (lambda p: [FIXTURE_APP, "-o", p / "out", "--icon", FIXTURE_APP / "app.toml"], EXIT_USAGE, "not a PNG"),
    (lambda p: [FIXTURE_APP, "-o", p / "out", "--spec", p / "bad.toml"], EXIT_CONFIG, "bad.toml"),
    (lambda p: [FIXTURE_APP, "-o", p / "out", "--with-bundle", FIXTURE_APP / "icon.png"], EXIT_CONFIG, "not a usable runtime bundle"),
    (lambda p: [FIXTURE_APP, "-o", p / "out", "--level", "99"], EXIT_USAGE, "--level"),
    (lambda p: [FIXTURE_APP, "-o", p / "out", "--frobnicate"], EXIT_USAGE, "--frobnicate"),
    (lambda p: [p / "badsettings", "-o", p / "out"], EXIT_CONFIG, "unknown key 'entrypoint'"),
]


@pytest.mark.parametrize("case", range(len(BAD_BUILDS)))
def test_bad_build_input_is_one_line_and_leaves_nothing(case, tmp_path):
    make_args, rc, words = BAD_BUILDS[case]
    (tmp_path / "bad.toml").write_text("requirements = [\n")
    (tmp_path / "badsettings").mkdir()
    (tmp_path / "badsettings" / "app.toml").write_text('entrypoint = "x:y"\n')
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run(["app", "build", *make_args(tmp_path)], clean_env(tmp_path), check_rc=rc)
    assert proc.stderr.startswith("inferenceutils: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert words in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name not in ("home", "store")) == \
        [n for n in before if n not in ("home", "store")]


HELLO_SPEC = REPO / "examples" / "hello.toml"  # nothing to install: a runtime in seconds


def test_symlinks_in_app_dir_stay_links_inside_and_are_refused_outside(tmp_path):
    project = tmp_path / "linked"
    (project / "pkg").mkdir(parents=True)
    (project / "main.py").write_text("import os, sys\nhere = os.path.dirname(os.path.abspath(__file__))\n"
                                     "print(open(os.path.join(here, 'alias.py')).read().count('import'), "
                                     "os.path.islink(os.path.join(here, 'alias.py')), os.path.islink(os.path.join(here, 'again')))\n")
    (project / "pkg" / "data.txt").write_text("data\n")
    os.symlink("main.py", project / "alias.py")        # a file link inside: kept as a link
    os.symlink("pkg", project / "again")               # a folder link inside: kept, not walked twice
    os.symlink("/etc/passwd", project / "passwd")      # outside: refused, naming the link
    env = clean_env(tmp_path)
    out = tmp_path / "linked-app"
    args = ["app", "build", project, "-o", out, "--script", "main.py", "--spec", HELLO_SPEC, "--level", "1"]
    proc = run(args, env, check_rc=EXIT_USAGE)
    assert proc.stderr.count("\n") == 1 and str(project / "passwd") in proc.stderr and "outside APP_DIR" in proc.stderr
    assert not out.exists()
    (project / "passwd").unlink()
    os.symlink("/", project / "root")                  # a link to / would walk the whole file system
    assert "outside APP_DIR" in run(args, env, check_rc=EXIT_USAGE).stderr
    (project / "root").unlink()
    os.symlink("missing.py", project / "dangling")
    assert "does not exist" in run(args, env, check_rc=EXIT_USAGE).stderr
    (project / "dangling").unlink()
    run(args, env, check_rc=0)
    seen = start(out, env=app_env(tmp_path), timeout=300)
    assert seen.stdout.split() == ["2", "True", "True"], seen.stdout
    extracted = next((tmp_path / "store" / "apps").iterdir()) / "app"
    assert os.readlink(extracted / "alias.py") == "main.py" and os.readlink(extracted / "again") == "pkg"


def test_damage_messages_say_what_happened(built, tmp_path):
    footer = footer_of(built)
    data = bytearray(built.read_bytes())
    data[-FOOTER.size + 32 + 31] ^= 0x01             # the footer's hash, last byte
    wrong_hash = tmp_path / "wrong-hash"
    wrong_hash.write_bytes(bytes(data))
    appended = tmp_path / "appended"
    appended.write_bytes(built.read_bytes() + b"junk after the footer")
    for f in (wrong_hash, appended):
        f.chmod(0o755)
    env = app_env(tmp_path)
    line = start(wrong_hash, env=env, rc=EXIT_BUNDLE).stderr
    hashes = [w.strip(",") for w in line.split() if len(w.strip(",")) == 64]
    assert len(hashes) == 2 and hashes[0] != hashes[1] and footer["sha256"] in hashes, line
    line = start(appended, env=env, rc=EXIT_BUNDLE).stderr
    assert "21 bytes appended" in line and "truncated" not in line, line
    # No writable store (HOME is a file): the message says there is no log instead of naming one.
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    no_store = dict(env, HOME=str(home))
    del no_store["INFERENCEUTILS_HOME"]
    alone = tmp_path / "alone"  # no store/ folder beside it (that would be a portable store)
    alone.mkdir()
    shutil.copy2(wrong_hash, alone / "wrong-hash")
    line = start(alone / "wrong-hash", env=no_store, rc=EXIT_BUNDLE).stderr
    assert "no log:" in line and "cannot be written" in line and line.count("\n") == 1, line
