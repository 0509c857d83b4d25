"""Prebuilt runtime bundles (issue: pack once, unpack anywhere in seconds, safely).

One fixture runtime is built (offline fixture index) and packed once per module; every test then
starts from a fresh store. Variants for selection and hostile bundles are forged from that bundle
by bundle_tools (a rewritten bundle.json, added or altered members).
"""
import copy
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

import bundle_tools as bt
from conftest import BUILD_DIR, BIN, REPO, clean_env, run, runtime_dirs

SCRIPT = "import sys, llama_cpp\nprint(sys.prefix, llama_cpp.__version__, 'llama_cpp' in sys.modules)\n"
ROOTS = REPO / "tests" / "fixtures" / "roots"
_BESIDE_BIN = BIN.resolve().parent.parent / "tests" / "fixtures" / "fakecuda"
FAKECUDA = _BESIDE_BIN if (_BESIDE_BIN / "libcuda.so.1").exists() else BUILD_DIR / "fixtures" / "fakecuda"
SAME = {"wheel_indexes": []}  # equal settings for cpu and cuda: the spec part of both keys is the same


@pytest.fixture(scope="module")
def packed(tmp_path_factory, fixture_index):
    """(spec, bundle path, key, build store) of the fixture runtime, packed at level 3."""
    base = tmp_path_factory.mktemp("built")
    spec = fixture_index.write_spec(base / "spec.toml", ["llama-cpp-python"], ["llama_cpp"],
                                    backends={"cpu": SAME, "cuda": SAME})
    env = clean_env(base)
    run(["--spec", spec, "runtime", "path"], env, timeout=300, check_rc=0)
    key = next(iter(runtime_dirs(base / "store")["runtimes"]))
    bundle = base / "rt.tar.zst"
    run(["runtime", "pack", key, "-o", bundle, "--level", "3"], env, check_rc=0)
    return spec, bundle, key, base / "store"


def start(tmp_path, spec, *launcher_args, env=None, rc=0):
    script = tmp_path / "s.py"
    script.write_text(SCRIPT)
    env = env or clean_env(tmp_path)
    proc = run([*launcher_args, "--spec", spec, "run", script], env, timeout=120)
    if rc is not None:
        assert proc.returncode == rc, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def installed_manifest(tmp_path, env):
    key = next(iter(runtime_dirs(tmp_path / "store")["runtimes"]))
    return json.loads(run(["runtime", "info", key], env, check_rc=0).stdout)


def test_pack_is_a_reproducible_standard_tar(packed, tmp_path):
    spec, bundle, key, store = packed
    env = clean_env(tmp_path, INFERENCEUTILS_HOME=store)
    again = tmp_path / "again.tar.zst"
    run(["runtime", "pack", key[:6], "-o", again, "--level", "3"], env, check_rc=0)
    assert again.read_bytes() == bundle.read_bytes()
    listing = subprocess.run(["tar", "--zstd", "-tvf", str(bundle)], capture_output=True, text=True, check=True).stdout
    lines = listing.splitlines()
    assert lines[0].split()[-1] == "bundle.json"
    assert all(" 0/0 " in line and "2024-01-01 00:00" in line for line in lines)
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "--zstd", "-xf", str(bundle), "-C", str(out)], check=True)
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["key"] == key and manifest["bundle_format"] == 1
    req = manifest["requires"]
    assert req["backend"] == "cpu" and req["python"]["abi"] == "cp311" and req["python"]["version"].startswith("3.11")
    assert req["cpu_isa"] and req["platform"] and req["min_glibc"]
    pyvenv = bt.file_entry(manifest, "pyvenv.cfg")
    assert pyvenv["sha256"] == hashlib.sha256((out / "pyvenv.cfg").read_bytes()).hexdigest()
    assert "bin/pip" in manifest["relocate"]["text_files"]


def test_round_trip_unpacks_relocates_and_runs(packed, tmp_path):
    spec, bundle, key, build_store = packed
    env = clean_env(tmp_path)
    proc = start(tmp_path, spec, "--verbose", "--no-build", "--bundle", bundle, env=env)
    prefix, version, preloaded = proc.stdout.split()
    store = tmp_path / "store"
    assert prefix.startswith(str(store / "data" / key)) and version == "0.3.99" and preloaded == "True"
    assert "using bundle" in proc.stderr
    state = runtime_dirs(store)
    assert list(state["runtimes"]) == [key] and state["logs"] == []   # nothing built
    manifest = installed_manifest(tmp_path, env)
    assert manifest["source"] == "bundle" and manifest["prefix"] == prefix
    assert manifest["build_env"]["bundle"] == str(bundle)
    assert all(str(build_store) not in p for p in manifest["sys_path"])
    # relocated: the pip script's shebang and pip itself work at the new path
    pip = Path(prefix) / "bin" / "pip"
    assert pip.read_text().splitlines()[0] == f"#!{prefix}/bin/python3.11"
    out = subprocess.run([str(pip), "--version"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and prefix in out.stdout
    assert os.readlink(Path(prefix) / "bin" / "python") == str(BIN.resolve())
    # the warm path: no bundle looked at again
    again = start(tmp_path, spec, "--bundle", tmp_path / "missing.tar.zst", env=env)
    assert again.stdout.split()[0] == prefix and runtime_dirs(store) == state


def test_bundle_directory_from_the_environment(packed, tmp_path):
    spec, bundle, key, _ = packed
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    shutil.copy(bundle, shelf / "rt.tar.zst")
    env = clean_env(tmp_path, INFERENCEUTILS_BUNDLES=f"{tmp_path / 'nowhere'}:{shelf}")
    start(tmp_path, spec, "--no-build", env=env)
    assert installed_manifest(tmp_path, env)["build_env"]["bundle"] == str(shelf / "rt.tar.zst")


def forge(bundle, path, edit):
    manifest, members = bt.read(bundle)
    edit(manifest, members)
    return bt.write(path, manifest, members)


def variant(key, backend=None, isa=None, cuda=None):
    def edit(m, members):
        m["key"] = key
        if backend:
            m["backend"] = m["requires"]["backend"] = backend
        if isa:
            m["requires"]["cpu_isa"] = isa
        if cuda:
            m["requires"]["cuda"] = cuda
    return edit


def test_selection_prefers_the_highest_isa_this_cpu_has(packed, tmp_path):
    spec, bundle, _, _ = packed
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    forge(bundle, shelf / "a-v1.tar.zst", variant("aaaa000000000001", isa="x86-64"))
    forge(bundle, shelf / "b-v2.tar.zst", variant("aaaa000000000002", isa="x86-64-v2"))
    forge(bundle, shelf / "c-odd.tar.zst", variant("aaaa000000000003", isa="x86-64-v2+no_such_feature"))
    forge(bundle, shelf / "d-gpu.tar.zst", variant("aaaa000000000004", backend="cuda",
                                                    cuda={"compute_capabilities": ["8.6"], "min_driver_cuda": "12.0"}))
    env = clean_env(tmp_path, INFERENCEUTILS_BUNDLES=shelf)
    if json.loads(run(["info", "--json"], env, check_rc=0).stdout)["facts"]["cpu"]["arch"] != "x86_64":
        pytest.skip("x86-64 ISA levels")
    # info explains the choice before anything is installed ...
    doc = json.loads(run(["--spec", spec, "info", "--json"], env, check_rc=0).stdout)["bundles"]
    assert doc["chosen"] == str(shelf / "b-v2.tar.zst")
    rows = {Path(r["location"]).name: r for r in doc["candidates"]}
    assert rows["b-v2.tar.zst"]["chosen"] and not rows["a-v1.tar.zst"]["chosen"]
    assert "no_such_feature" in rows["c-odd.tar.zst"]["rejected"]
    human = run(["--spec", spec, "info"], env, check_rc=0).stdout
    assert f"{shelf / 'b-v2.tar.zst'} (cpu): chosen" in human
    assert f"{shelf / 'd-gpu.tar.zst'} (cuda): rejected: built for the cuda backend" in human
    assert runtime_dirs(tmp_path / "store")["runtimes"] == {}
    # ... and --verbose explains it while it installs
    proc = start(tmp_path, spec, "--verbose", "--no-build", env=env)
    assert installed_manifest(tmp_path, env)["build_env"]["bundle"] == str(shelf / "b-v2.tar.zst")
    assert "needs CPU feature no_such_feature" in proc.stderr
    assert "built for the cuda backend, this runtime is for cpu" in proc.stderr
    assert "a-v1.tar.zst (INFERENCEUTILS_BUNDLES): usable, but another ranks higher" in proc.stderr


def test_selection_on_fake_gpus(packed, tmp_path):
    spec, bundle, _, _ = packed
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    forge(bundle, shelf / "cpu.tar.zst", variant("bbbb000000000001"))
    forge(bundle, shelf / "cuda-new-driver.tar.zst", variant("bbbb000000000002", backend="cuda",
          cuda={"compute_capabilities": ["8.6", "9.0"], "min_driver_cuda": "13.1"}))
    forge(bundle, shelf / "cuda-sm80.tar.zst", variant("bbbb000000000003", backend="cuda",
          cuda={"compute_capabilities": ["8.0"], "min_driver_cuda": "12.0"}))
    forge(bundle, shelf / "cuda-ok.tar.zst", variant("bbbb000000000004", backend="cuda",
          cuda={"compute_capabilities": ["8.0", "9.0"], "min_driver_cuda": "12.4"}))
    env = clean_env(tmp_path, INFERENCEUTILS_SYSROOT=ROOTS / "x86-nvidia",
                    INFERENCEUTILS_CUDA_LIBRARY=FAKECUDA / "libcuda.so.1",
                    INFERENCEUTILS_NVML_LIBRARY=FAKECUDA / "libnvidia-ml.so.1", INFERENCEUTILS_BUNDLES=shelf)
    facts = json.loads(run(["info", "--json"], env, check_rc=0).stdout)["facts"]
    for f in shelf.iterdir():  # the fixture root's CPU and libc, not this machine's
        forge(f, f, lambda m, _: m["requires"].update(cpu_isa=facts["cpu"]["isa_level"].split("+")[0],
                                                       min_glibc=facts["os"]["libc_version"] or ""))
    proc = start(tmp_path, spec, "--verbose", "--no-build", env=env)
    manifest = installed_manifest(tmp_path, env)
    assert manifest["build_env"]["bundle"] == str(shelf / "cuda-ok.tar.zst"), proc.stderr
    assert manifest["decision"]["backend"] == "cuda"
    assert "needs a driver supporting CUDA 13.1, this driver supports 13.0" in proc.stderr
    assert "has code for compute capabilities 8.0, not for GPU" in proc.stderr and "9.0)" in proc.stderr, proc.stderr
    assert "built for the cpu backend, this runtime is for cuda" in proc.stderr


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def serve(directory, cut_first=0):
    """Serves `directory` on 127.0.0.1 with Range support; the first `cut_first` bundle GETs
    stop after half the bytes. Returns (server, url, log of (path, Range))."""
    log = []
    state = {"cuts": cut_first}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            path = Path(directory) / self.path.lstrip("/")
            log.append((self.path, self.headers.get("Range")))
            if not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if path.suffix == ".zst" and state["cuts"] > 0:
                state["cuts"] -= 1
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.connection.shutdown(2)
                return
            self.wfile.write(body)

    server = _Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/", log


def test_download_from_http_index_resumes_after_an_interruption(packed, tmp_path):
    spec, bundle, key, _ = packed
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    shutil.copy(bundle, shelf / "rt.tar.zst")
    run(["runtime", "pack", "--index", shelf], clean_env(tmp_path), check_rc=0)
    index = json.loads((shelf / "index.json").read_text())
    assert index["bundles"][0]["sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    server, url, log = serve(shelf, cut_first=1)
    try:
        env = clean_env(tmp_path, INFERENCEUTILS_BUNDLES=url)
        first = start(tmp_path, spec, "--no-build", env=env, rc=77)
        assert "run again to resume" in first.stderr and len(first.stderr.splitlines()) == 1
        assert runtime_dirs(tmp_path / "store")["runtimes"] == {}
        parts = list((tmp_path / "store" / "cache" / "bundles").glob("*.part"))
        assert len(parts) == 1 and 0 < parts[0].stat().st_size < bundle.stat().st_size
        have = parts[0].stat().st_size
        second = start(tmp_path, spec, "--verbose", "--no-build", env=env)
        assert "resuming the download" in second.stderr
        assert [r for p, r in log if p.endswith(".zst")] == [None, f"bytes={have}-"]
        assert installed_manifest(tmp_path, env)["build_env"]["bundle"] == url + "rt.tar.zst"
    finally:
        server.shutdown()


def _traversal(m, members):
    bt.add_listed_file(m, members, "../evil.txt", b"x")


def _absolute(m, members):
    bt.add_listed_file(m, members, "/tmp/iu-evil.txt", b"x")


def _symlink(m, members):
    bt.add_link(m, members, "lib/evil", "../../../../../../etc/passwd")


def _hardlink(m, members):
    bt.add_link(m, members, "lib/evil", "../../etc/passwd", hard=True)


def _device(m, members):
    info = tarfile.TarInfo("dev-null")
    info.type = tarfile.CHRTYPE
    m["files"].append({"path": "dev-null", "type": "f", "mode": 0o644, "size": 0, "sha256": ""})
    members.append((info, None))


def _setuid(m, members):
    bt.add_listed_file(m, members, "suid", b"x", mode=0o4755)


def _wrong_hash(m, members):
    for i, (info, data) in enumerate(members):
        if info.name == "pyvenv.cfg":
            members[i] = (info, data.replace(b"false", b"FALSE"))


def _other_python(m, members):
    m["requires"]["python"].update(abi="cp312", version="3.12.1")


def _oversized(m, members):
    m["total_size"] = 1 << 62


def _duplicate(m, members):
    members.append(next(x for x in members if x[0].name == "pyvenv.cfg"))


def _link_chain(m, members):
    # `a -> .` makes a/a/a/... the runtime itself: lexically the target stays inside, really it
    # climbs out through the links to /etc/passwd.
    bt.add_link(m, members, "a", ".")
    bt.add_link(m, members, "chain", "a/" * 24 + "../" * 24 + "etc/passwd")


def _link_chain_later(m, members):
    # A target that is harmless until a link is made where it passes: refused at that link.
    bt.add_link(m, members, "lib/ok", "../d/../pyvenv.cfg")
    bt.add_link(m, members, "d", "lib/python3.11/site-packages")


def _launcher_file_as_link(m, members):
    entry = bt.file_entry(m, "pyvenv.cfg")
    m["total_size"] -= entry["size"]
    m["files"].remove(entry)
    members[:] = [x for x in members if x[0].name != "pyvenv.cfg"]
    bt.add_link(m, members, "pyvenv.cfg", "lib")


def _root_prefix(m, members):
    m["prefix"] = "/"


def _usr_prefix(m, members):
    m["prefix"] = "/usr"


HOSTILE = {
    "link-chain": (_link_chain, "chain: symlink to 'a/a/"),
    "link-made-where-a-target-passes": (_link_chain_later, "d: symlink where an earlier symlink's target passes through"),
    "launcher-file-as-link": (_launcher_file_as_link, "pyvenv.cfg: must be a regular file"),
    "root-prefix": (_root_prefix, "recorded prefix '/' is not a store's data directory"),
    "usr-prefix": (_usr_prefix, "recorded prefix '/usr' is not a store's data directory"),
    "traversal": (_traversal, "../evil.txt: path has a '..' component"),
    "absolute": (_absolute, "absolute path"),
    "escaping-symlink": (_symlink, "lib/evil: symlink to '../../../../../../etc/passwd' points outside the runtime"),
    "hardlink-escape": (_hardlink, "lib/evil: hardlink to '../../etc/passwd' points outside the runtime"),
    "device": (_device, "dev-null: device, fifo or socket file"),
    "setuid": (_setuid, "suid: setuid, setgid or sticky bit"),
    "wrong-hash": (_wrong_hash, "pyvenv.cfg: SHA-256 does not match the manifest"),
    "other-python": (_other_python, "built for Python ABI cp312"),
    "oversized-claim": (_oversized, "more than the bound"),
    "duplicate": (_duplicate, "pyvenv.cfg: duplicate member"),
}


def _refused(tmp_path, spec, bad, expected):
    env = clean_env(tmp_path)
    proc = start(tmp_path, spec, "--no-build", "--bundle", bad, env=env, rc=77)
    assert expected in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    state = runtime_dirs(tmp_path / "store")
    assert state["runtimes"] == {} and state["data"] == []
    assert not Path("/tmp/iu-evil.txt").exists() and not (tmp_path / "store" / "evil.txt").exists()


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_bundle_is_refused(packed, tmp_path, name):
    spec, bundle, _, _ = packed
    edit, expected = HOSTILE[name]
    _refused(tmp_path, spec, forge(bundle, tmp_path / f"{name}.tar.zst", edit), expected)


def test_truncated_and_corrupt_bundles_are_refused(packed, tmp_path):
    spec, bundle, _, _ = packed
    raw = bt.decompress(bundle)
    truncated = bt.compress(raw[: len(raw) // 2], tmp_path / "truncated.tar.zst")
    _refused(tmp_path, spec, truncated, "truncated")
    data = bytearray(bundle.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0x5A
    corrupt = tmp_path / "corrupt.tar.zst"
    corrupt.write_bytes(bytes(data))
    _refused(tmp_path / "c", spec, corrupt, "corrupt zstd data") if (tmp_path / "c").mkdir() is None else None
    cut = tmp_path / "cut.tar.zst"
    cut.write_bytes(bundle.read_bytes()[:-100])
    (tmp_path / "d").mkdir()
    _refused(tmp_path / "d", spec, cut, "truncated")


def test_junk_after_the_tar_end_inside_the_stream_is_refused(packed, tmp_path):
    spec, bundle, _, _ = packed
    manifest, members = bt.read(bundle)
    junk = bt.write(tmp_path / "junk.tar.zst", manifest, members, raw_tail=b"not padding" * 100)
    _refused(tmp_path, spec, junk, "data after the end of the tar archive")
    padded = bt.write(tmp_path / "padded.tar.zst", manifest, members, raw_tail=bytes(4096))
    (tmp_path / "p").mkdir()
    start(tmp_path / "p", spec, "--no-build", "--bundle", padded, env=clean_env(tmp_path / "p"))  # zeros are padding


def test_bundle_max_bytes_takes_a_size_suffix(packed, tmp_path):
    spec, bundle, _, _ = packed
    env = clean_env(tmp_path, INFERENCEUTILS_BUNDLE_MAX_BYTES="1K")  # was silently 64 GiB
    proc = start(tmp_path, spec, "--no-build", "--bundle", bundle, env=env, rc=77)
    assert "more than the bound of 1024 bytes" in proc.stderr, proc.stderr
    assert runtime_dirs(tmp_path / "store")["data"] == []
    env["INFERENCEUTILS_BUNDLE_MAX_BYTES"] = "2G"
    start(tmp_path, spec, "--no-build", "--bundle", bundle, env=env)


def test_the_launcher_loads_libcurl_only_for_a_download():
    # Linked, libcurl and its ~35 dependencies cost every start milliseconds in the dynamic loader;
    # it is opened with dlopen by the first download (test_download_... above exercises that).
    needed = subprocess.run(["readelf", "-d", str(BIN)], capture_output=True, text=True, check=True).stdout
    libs = [line.split("[")[1].rstrip("]") for line in needed.splitlines() if "(NEEDED)" in line]
    assert libs and not [lib for lib in libs if lib.startswith(("libcurl", "libgnutls", "libssl", "libxml2"))], libs
