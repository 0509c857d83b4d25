"""Package sources (issue #16, and #14's last point): local indexes survive --offline, a network
failure is named first, one progress line per prebuilt index, the machine's pip set-up honoured.

Unreachable indexes are a closed port on 127.0.0.1 and an unresolvable name (.invalid); nothing
leaves the machine. PIP_RETRIES=0 keeps pip's own retries short (and shows that connection
settings reach pip).
"""
import json
import socket
import time
from pathlib import Path

import pytest

from conftest import clean_env, run

PROBE = "import json, llama_cpp; print(json.dumps({'version': llama_cpp.__version__}))"
PURE_PROBE = "import iu_fixture_pure; print('pure ok')"
NOWHERE = "https://nonexistent.invalid/simple"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the socket is


@pytest.fixture
def env(tmp_path):
    return clean_env(tmp_path, PIP_RETRIES="0")


def pip_commands(store: Path) -> list[str]:
    lines = []
    for log in sorted((store / "logs").glob("*.log")):
        lines += [line for line in log.read_text().splitlines() if line.startswith("$ ")]
    return lines


def llama_version(tmp_path, env, *args):
    proc = run([*args, "run", "-c", PROBE], env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])["version"], proc


# --- 1. --offline keeps local indexes and links ------------------------------------------------

SOURCE_ONLY = {"cpu": {"wheel_indexes": []}}


@pytest.mark.parametrize("kind", ["index-url file://", "index-url path", "extra-index-url file://",
                                  "find-links dir", "find-links file://", "spec wheel_indexes file://"])
def test_offline_keeps_every_kind_of_local_source(tmp_path, env, fixture_index, http_index, kind):
    """The spec's index is HTTP (network: never asked offline); the local source alone provides."""
    backends = SOURCE_ONLY
    args = ["--offline"]
    expected = "0.3.99"
    if kind == "index-url file://":
        args += ["--index-url", fixture_index.file_url]
    elif kind == "index-url path":
        args += ["--index-url", str(fixture_index.simple_dir)]
    elif kind == "extra-index-url file://":
        args += ["--extra-index-url", fixture_index.file_url]
    elif kind == "find-links dir":
        args += ["--find-links", str(fixture_index.files_dir)]
    elif kind == "find-links file://":
        args += ["--find-links", fixture_index.files_dir.as_uri()]
    else:  # the backend's prebuilt index on the local disk: the prebuilt wheel (its dependency from links)
        backends = {"cpu": {"wheel_indexes": [fixture_index.prebuilt_url]}}
        args += ["--find-links", str(fixture_index.files_dir)]
        expected = "0.3.98"
    spec = http_index.write_spec(tmp_path / "spec.toml", ["llama-cpp-python"], ["llama_cpp"], backends=backends)
    version, proc = llama_version(tmp_path, env, *args, "--spec", spec)
    assert version == expected
    commands = pip_commands(tmp_path / "store")
    assert all("127.0.0.1" not in c for c in commands), commands
    last = commands[-1]
    if kind.startswith("find-links"):
        assert "--no-index" in last
    else:  # a local index is read: never under --no-index
        assert "--no-index" not in last and " --index-url file://" in last, last


def test_offline_with_no_local_source_says_what_was_asked(tmp_path, env, http_index):
    spec = http_index.write_spec(tmp_path / "spec.toml", ["iu-fixture-pure"], [], backend_package="")
    proc = run(["--offline", "--spec", spec, "run", "-c", "print(1)"], env, timeout=300)
    assert proc.returncode == 74
    assert "pip could not install 'iu-fixture-pure'" in proc.stderr
    assert "(offline, and no local index or find-links to ask)" in proc.stderr


# --- 2. a network failure is named first, then the ways out ------------------------------------

@pytest.mark.parametrize("case", ["refused", "dns", "proxy", "tls"])
def test_an_unreachable_index_is_named_with_why_and_the_ways_out(tmp_path, env, http_index, case):
    extra = {}
    if case == "refused":
        url, why = f"http://127.0.0.1:{closed_port()}/simple", "connection refused by 127.0.0.1:"
    elif case == "dns":
        url, why = NOWHERE, "DNS: the name 'nonexistent.invalid' does not resolve"
    elif case == "proxy":
        port = closed_port()
        url, why = NOWHERE, f"proxy: cannot connect to the proxy http://127.0.0.1:{port}"
        extra = {"HTTPS_PROXY": f"http://127.0.0.1:{port}", "https_proxy": f"http://127.0.0.1:{port}"}
    else:  # an HTTP server asked for TLS
        url, why = http_index.url.replace("http://", "https://"), "TLS: "
    env.update(extra)
    spec = http_index.write_spec(tmp_path / "spec.toml", ["iu-fixture-pure"], [], backend_package="")
    spec.write_text(spec.read_text().replace(http_index.url, url))
    proc = run(["--spec", spec, "run", "-c", "print(1)"], env, timeout=300)
    assert proc.returncode == 74, proc.stderr
    first = proc.stderr.splitlines()[0]
    assert f"cannot reach the package index {url} (spec {spec})" in first, first
    assert why in first, first
    assert first.index("cannot reach") < first.index("pip could not install 'iu-fixture-pure'")
    assert "ways out: --index-url URL or --find-links" in proc.stderr
    for way in ("--bundle", "--offline", "HTTPS_PROXY"):
        assert way in proc.stderr
    assert "Retrying" not in proc.stderr and "WARNING" not in proc.stderr  # pip's lines stay in the log
    log = Path(proc.stderr.split("pip's output: ")[1].split()[0])
    assert "ERROR: " in log.read_text() and "PIP_RETRIES=0" in log.read_text()


def test_pypi_unreachable_by_default_is_named(tmp_path, env):
    """The default spec: no PyPI here (no network), the first start names it."""
    proc = run(["run", "-c", "print(1)"], env, timeout=300)
    assert proc.returncode == 74
    first = proc.stderr.splitlines()[0]
    assert "cannot reach the package index https://pypi.org/simple (pip's default (PyPI))" in first, first
    assert "pip could not install 'llama-cpp-python'" in first


# --- 3. one line per prebuilt index, "building from source" once -------------------------------

def test_one_line_per_prebuilt_index_then_one_source_build_line(tmp_path, env, fixture_index):
    refused = f"http://127.0.0.1:{closed_port()}/whl/cpu"
    missing = (tmp_path / "empty-index").as_uri()
    (tmp_path / "empty-index").mkdir()
    indexes = [refused, "https://nonexistent.invalid/whl/cpu", missing, fixture_index.prebuilt_url]
    spec = fixture_index.write_spec(tmp_path / "spec.toml", ["llama-cpp-python==0.3.99"], ["llama_cpp"],
                                    backends={"cpu": {"wheel_indexes": indexes}})
    version, proc = llama_version(tmp_path, env, "-v", "--spec", spec)
    assert version == "0.3.99"
    lines = proc.stderr.splitlines()
    index_lines = [line for line in lines if line.startswith("inferenceutils: prebuilt index ")]
    assert [line.split()[3].rstrip(":") for line in index_lines] == indexes, index_lines
    assert "unreachable: connection refused by 127.0.0.1:" in index_lines[0]
    assert "unreachable: DNS: the name 'nonexistent.invalid' does not resolve" in index_lines[1]
    assert "no llama-cpp-python wheel" in index_lines[2]
    assert "has llama-cpp-python wheels (0.3.98), none for 'llama-cpp-python==0.3.99'" in index_lines[3]
    source = [line for line in lines if "from source" in line]
    assert len(source) == 1 and "building llama-cpp-python from source with CMAKE_ARGS=" in source[0]
    assert lines.index(source[0]) > lines.index(index_lines[-1])
    # One pip run for the indexes that answered with wheels, one for the source build.
    commands = pip_commands(tmp_path / "store")
    assert len(commands) == 2
    assert fixture_index.prebuilt_url in commands[0] and "127.0.0.1" not in commands[0]
    assert "nonexistent.invalid" not in commands[0] and "--only-binary llama-cpp-python" in commands[0]


def test_the_prebuilt_index_that_answered_is_named_and_no_source_build(tmp_path, env, fixture_index, http_index):
    indexes = [f"http://127.0.0.1:{closed_port()}/whl", fixture_index.prebuilt_url, http_index.prebuilt_url]
    spec = fixture_index.write_spec(tmp_path / "spec.toml", ["llama-cpp-python"], ["llama_cpp"],
                                    backends={"cpu": {"wheel_indexes": indexes}})
    version, proc = llama_version(tmp_path, env, "-v", "--spec", spec)
    assert version == "0.3.98"
    assert f"prebuilt index {fixture_index.prebuilt_url}: llama-cpp-python 0.3.98: using it" in proc.stderr
    assert f"prebuilt index {http_index.prebuilt_url}: answered (llama-cpp-python 0.3.98), not chosen" in proc.stderr
    assert "from source" not in proc.stderr
    commands = pip_commands(tmp_path / "store")
    assert len(commands) == 1  # every index that answered, in one resolution


def test_six_unreachable_prebuilt_indexes_cost_one_probe(tmp_path, env, fixture_index):
    """#14: offline-like, six prebuilt indexes that cannot answer: asked once, in parallel; pip never
    retries them. (The time is printed for the README's figure, not asserted.)"""
    indexes = [f"http://127.0.0.1:{closed_port()}/whl/cu12{i}" for i in range(3)] + \
              [f"https://nonexistent{i}.invalid/whl/cu12{i}" for i in range(3)]
    spec = fixture_index.write_spec(tmp_path / "spec.toml", ["llama-cpp-python"], ["llama_cpp"],
                                    backends={"cpu": {"wheel_indexes": indexes}})
    start = time.monotonic()
    version, proc = llama_version(tmp_path, clean_env(tmp_path), "-v", "--spec", spec)  # pip's default retries
    print(f"six unreachable prebuilt indexes, then a source build: {time.monotonic() - start:.1f} s")
    assert version == "0.3.99"
    index_lines = [line for line in proc.stderr.splitlines() if line.startswith("inferenceutils: prebuilt index ")]
    assert len(index_lines) == 6 and all(": unreachable: " in line for line in index_lines), index_lines
    assert len(pip_commands(tmp_path / "store")) == 1  # only the source build


# --- 4. the machine's pip set-up ----------------------------------------------------------------

def info_json(env, *args):
    proc = run([*args, "info", "--json"], env, check_rc=0)
    return json.loads(proc.stdout)["sources"]


def rows(sources, kind):
    return [(r["value"], r["origin"]) for r in sources["sources"] if r["kind"] == kind]


def test_pip_index_url_is_a_default_below_the_spec_and_in_the_key(tmp_path, env, fixture_index):
    bare = tmp_path / "bare.toml"
    bare.write_text('requirements = ["iu-fixture-pure"]\npreload = []\nbackend_package = ""\n')
    plain = info_json(env, "--spec", bare)
    env["PIP_INDEX_URL"] = fixture_index.file_url
    company = info_json(env, "--spec", bare)
    assert rows(company, "index") == [(fixture_index.file_url, "PIP_INDEX_URL")]
    assert rows(plain, "index") == [("https://pypi.org/simple", "pip's default (PyPI)")]
    assert company["runtime_key"] != plain["runtime_key"]
    # It works: the runtime is built from the company's index.
    proc = run(["--spec", bare, "run", "-c", PURE_PROBE], env, timeout=300)
    assert proc.returncode == 0 and "pure ok" in proc.stdout, proc.stderr
    # The spec, INFERENCEUTILS_INDEX_URL and --index-url each win over it.
    spec = fixture_index.write_spec(tmp_path / "spec.toml", ["iu-fixture-pure"], [], backend_package="")
    assert rows(info_json(env, "--spec", spec), "index") == [(fixture_index.file_url, f"spec {spec}")]
    env["INFERENCEUTILS_INDEX_URL"] = "file:///elsewhere/simple"
    assert rows(info_json(env, "--spec", spec), "index") == [("file:///elsewhere/simple", "INFERENCEUTILS_INDEX_URL")]
    assert rows(info_json(env, "--spec", spec, "--index-url", "file:///x/simple"), "index") == \
        [("file:///x/simple", "--index-url")]


def test_pip_conf_files_in_pips_order(tmp_path, env, fixture_index):
    bare = tmp_path / "bare.toml"
    bare.write_text('requirements = ["iu-fixture-pure"]\npreload = []\nbackend_package = ""\n')
    system = tmp_path / "xdg-dirs" / "pip" / "pip.conf"
    legacy = Path(env["HOME"]) / ".pip" / "pip.conf"
    user = tmp_path / "xdg-home" / "pip" / "pip.conf"
    for path in (system, legacy, user):
        path.parent.mkdir(parents=True)
    system.write_text("[global]\nindex-url = file:///system/simple\ntrusted-host = mirror.example\n")
    legacy.write_text("[global]\nindex-url = file:///legacy/simple\n")
    user.write_text(f"[global]\nindex-url = file:///user/simple\n[install]\nextra-index-url =\n"
                    f"    file:///one/simple\n    file:///two/simple\nfind-links = {fixture_index.files_dir}\n"
                    "timeout = 7\n")
    env.update(XDG_CONFIG_DIRS=str(tmp_path / "xdg-dirs"), XDG_CONFIG_HOME=str(tmp_path / "xdg-home"))
    sources = info_json(env, "--spec", bare)
    assert rows(sources, "index") == [("file:///user/simple", f"{user} [global]")]
    assert rows(sources, "extra index") == [("file:///one/simple", f"{user} [install]"),
                                            ("file:///two/simple", f"{user} [install]")]
    assert rows(sources, "find-links") == [(str(fixture_index.files_dir), f"{user} [install]")]
    assert rows(sources, "trusted host") == [("mirror.example", f"{system} [global]")]
    assert {"variable": "PIP_TIMEOUT", "value": "7", "origin": f"{user} [install]"} in sources["connection"]
    # PIP_CONFIG_FILE (an existing file) replaces the user files; /dev/null reads none.
    env_file = tmp_path / "env.conf"
    env_file.write_text("[global]\nextra-index-url = file:///env/simple\n")
    env["PIP_CONFIG_FILE"] = str(env_file)
    sources = info_json(env, "--spec", bare)
    assert rows(sources, "index") == [("file:///system/simple", f"{system} [global]")]
    assert rows(sources, "extra index") == [("file:///env/simple", f"{env_file} [global]")]
    env["PIP_CONFIG_FILE"] = "/dev/null"
    sources = info_json(env, "--spec", bare)
    assert rows(sources, "index") == [("https://pypi.org/simple", "pip's default (PyPI)")]
    # The human form says the same.
    del env["PIP_CONFIG_FILE"]
    human = run(["--spec", bare, "info"], env, check_rc=0).stdout
    assert f"file:///user/simple  ({user} [global])" in human and "\nSources\n" in human


def test_connection_settings_reach_pip_and_stay_out_of_the_key(tmp_path, env, fixture_index):
    spec = fixture_index.write_spec(tmp_path / "spec.toml", ["iu-fixture-pure"], [], backend_package="")
    before = info_json(env, "--spec", spec)
    ca = tmp_path / "company-ca.pem"
    ca.write_text(Path("/etc/ssl/certs/ca-certificates.crt").read_text())
    env.update(PIP_CERT=str(ca), PIP_TIMEOUT="9", HTTPS_PROXY="http://127.0.0.1:1",
               NO_PROXY="127.0.0.1,localhost")
    after = info_json(env, "--spec", spec)
    assert after["runtime_key"] == before["runtime_key"]
    assert {"variable": "PIP_CERT", "value": str(ca), "origin": "PIP_CERT"} in after["connection"]
    proc = run(["-v", "--spec", spec, "run", "-c", PURE_PROBE], env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"PIP_CERT={ca} (PIP_CERT)" in proc.stderr  # -v names where each setting came from
    assert f"index {fixture_index.file_url} (spec {spec})" in proc.stderr
    command = pip_commands(tmp_path / "store")[-1]
    assert f"PIP_CERT={ca}" in command and "PIP_TIMEOUT=9" in command and "PIP_RETRIES=0" in command
