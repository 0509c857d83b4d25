"""Runtime bundles through OCI registries (issue #15): `runtime push` / `runtime pull` and
`--bundle oci://` against Debian's real registry (`docker-registry`, the reference distribution
server 2.8) on 127.0.0.1 with a temporary storage folder; Basic auth (htpasswd, bcrypt) and the
token flow (a token server of the test's own, its certificate made with `openssl`); `skopeo`
reading what was pushed; and a fake registry in Python serving hostile answers.

Two runtimes of one spec are built once per module: on this machine (cpu) and on a fake NVIDIA
machine (tests/fixtures/roots/x86-nvidia with the fake CUDA driver) — two hardware profiles.
"""
import base64
import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from bundle_tools import tar_of
from conftest import BIN, BUILD_DIR, REPO, clean_env, run, runtime_dirs

REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"
ROOTS = REPO / "tests" / "fixtures" / "roots"
_BESIDE_BIN = BIN.resolve().parent.parent / "tests" / "fixtures" / "fakecuda"
FAKECUDA = _BESIDE_BIN if (_BESIDE_BIN / "libcuda.so.1").exists() else BUILD_DIR / "fixtures" / "fakecuda"
SAME = {"wheel_indexes": []}  # the same settings for cpu and cuda: one spec, two profiles
CODE = "import sys, iu_fixture_pure; print(sys.prefix, 'iu_fixture_pure' in sys.modules)"

pytestmark = pytest.mark.skipif(not Path(REGISTRY).exists(), reason="docker-registry is not installed (scripts/setup)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """docker-registry serving on 127.0.0.1:port with its storage in `root`; `log` is its output."""

    def __init__(self, root: Path, auth: str = ""):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.storage = root / "storage"
        self.config = root / "config.yml"
        self.config.write_text(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: iu-test\n" + auth)
        self.log_path = root / "registry.log"
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen([REGISTRY, "serve", str(self.config)], stdout=self.log_file,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # 401: it is up, and wants a login
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"docker-registry did not start:\n{self.log_path.read_text()}")
                time.sleep(0.1)
        self.host = f"127.0.0.1:{self.port}"

    def ref(self, name):
        return f"oci://{self.host}/{name}"

    def blob_uploads(self):
        """Completed blob uploads so far, from the registry's access log (PUT …/blobs/uploads/…?digest=)."""
        self.log_file.flush()
        return len(re.findall(r'"PUT /v2/[^ ]+/blobs/uploads/[^ ]*digest=sha256[^ ]* HTTP/1.1" 201',
                              self.log_path.read_text()))

    def stored_blobs(self):
        d = self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256"
        return {p.name for p in d.glob("*/*")} if d.exists() else set()

    def get(self, path, accept="application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"):
        req = urllib.request.Request(f"http://{self.host}/v2/{path}", headers={"Accept": accept})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log_file.close()


@pytest.fixture
def registry(tmp_path):
    r = Registry(tmp_path / "registry")
    yield r
    r.stop()


def env_at(path: Path, **extra):
    """A user's environment with its store and HOME under `path` (made)."""
    path.mkdir(parents=True, exist_ok=True)
    return clean_env(path, **extra)


def nvidia_env(path, **extra):
    return env_at(path, INFERENCEUTILS_SYSROOT=ROOTS / "x86-nvidia",
                     INFERENCEUTILS_CUDA_LIBRARY=FAKECUDA / "libcuda.so.1",
                     INFERENCEUTILS_NVML_LIBRARY=FAKECUDA / "libnvidia-ml.so.1", **extra)


@pytest.fixture(scope="module")
def built(tmp_path_factory, fixture_index):
    """Runtimes of one spec for two profiles (this cpu; a fake NVIDIA machine), and of a second
    spec that shares most packages: {name: (spec, env)}."""
    base = tmp_path_factory.mktemp("oci-built")
    spec = fixture_index.write_spec(base / "spec.toml", ["iu-fixture-pure"], ["iu_fixture_pure"],
                                    backends={"cpu": SAME, "cuda": SAME})
    more = fixture_index.write_spec(base / "more.toml", ["iu-fixture-pure", "iu-fixture-native"], ["iu_fixture_pure"],
                                    backends={"cpu": SAME, "cuda": SAME})
    cpu = env_at(base / "cpu")
    gpu = nvidia_env(base / "gpu")
    procs = [subprocess.Popen([str(BIN), "--spec", str(s), "runtime", "path"], env=e, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for s, e in ((spec, cpu), (spec, gpu), (more, cpu))]
    for p in procs:
        out, err = p.communicate(timeout=400)
        assert p.returncode == 0, err
    return {"cpu": (spec, cpu), "gpu": (spec, gpu), "more": (more, cpu)}


def push(what, ref, *extra, rc=0):
    spec, env = what
    proc = run(["--spec", spec, "runtime", "push", ref, "--level", "3", *extra], env, timeout=300)
    assert proc.returncode == rc, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def pushed_numbers(stdout):
    m = re.search(r": (\d+) layers; (\d+) blobs uploaded .*?, (\d+) already there, (\d+) mounted", stdout)
    assert m, stdout
    return dict(zip(("layers", "uploaded", "present", "mounted"), map(int, m.groups())))


def store_files(store: Path):
    """Every file (not folder) in a store's runtime, data, blob and cache folders."""
    out = []
    for top in ("runtimes", "data", "blobs", "cache"):
        d = store / top
        if d.exists():
            out += [str(p.relative_to(store)) for p in d.rglob("*") if not p.is_dir() or p.is_symlink()]
    return sorted(out)


def test_two_profiles_share_one_tag_and_each_machine_pulls_its_own(built, registry, tmp_path):
    ref = registry.ref("fleet/llama:1")
    # Two machines push their profiles to one tag at the same time: the index keeps both.
    procs = [subprocess.Popen([str(BIN), "--spec", str(built[n][0]), "runtime", "push", ref, "--level", "3"],
                              env=built[n][1], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in ("cpu", "gpu")]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    index = json.loads(registry.get("fleet/llama/manifests/1"))
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    entries = {m["annotations"]["io.inferenceutils.backend"]: m for m in index["manifests"]}
    assert sorted(entries) == ["cpu", "cuda"], index
    assert all(m["platform"] == {"os": "linux", "architecture": "amd64"} for m in index["manifests"])
    gpu_req = json.loads(entries["cuda"]["annotations"]["io.inferenceutils.requires"])
    assert gpu_req["cuda"]["compute_capabilities"] and entries["cuda"]["annotations"]["io.inferenceutils.cuda.min_driver"]
    assert entries["cpu"]["annotations"]["io.inferenceutils.python.abi"] == "cp311"
    # Each profile's manifest: bundle.json as config, zstd tar layers (skeleton + one per distribution).
    manifest = json.loads(registry.get(f"fleet/llama/manifests/{entries['cpu']['digest']}"))
    assert manifest["config"]["mediaType"] == "application/vnd.inferenceutils.bundle.v1+json"
    titles = [l["annotations"]["org.opencontainers.image.title"] for l in manifest["layers"]]
    assert titles[0] == "runtime" and any(t.startswith("iu_fixture_pure-") for t in titles), titles
    assert all(l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd" for l in manifest["layers"])

    # Pushing a profile again replaces its entry and keeps the other one.
    push(built["cpu"], ref)
    assert len(json.loads(registry.get("fleet/llama/manifests/1"))["manifests"]) == 2

    # A fresh store: info explains the choice, pull fills the store, a start needs nothing else.
    spec, _ = built["cpu"]
    node = env_at(tmp_path / "node", INFERENCEUTILS_BUNDLES=ref)
    doc = json.loads(run(["--spec", spec, "info", "--json"], node, check_rc=0).stdout)["bundles"]
    rows = {r["backend"]: r for r in doc["candidates"]}
    assert rows["cpu"]["chosen"] and rows["cpu"]["location"].startswith(ref + "@sha256:"), doc
    assert "built for the cuda backend, this runtime is for cpu" in rows["cuda"]["rejected"]
    human = run(["--spec", spec, "info"], node, check_rc=0).stdout
    assert f"{rows['cpu']['location']} (cpu): chosen" in human
    del node["INFERENCEUTILS_BUNDLES"]
    proc = run(["--spec", spec, "runtime", "pull", ref], node, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("pulled runtime ")
    proc = run(["--spec", spec, "--no-build", "run", "-c", CODE], node, check_rc=0)
    prefix, preloaded = proc.stdout.split()
    assert preloaded == "True" and prefix.startswith(str(tmp_path / "node" / "store"))
    info = json.loads((Path(prefix) / "manifest.json").read_text())
    assert info["source"] == "bundle" and info["bundle"]["origin"] == rows["cpu"]["location"]
    # The parts and the bundle.json part are gone; the layers stay in the blob cache.
    store = tmp_path / "node" / "store"
    assert not list((store / "cache" / "oci").iterdir())
    assert len(list((store / "blobs" / "sha256").glob("*[0-9a-f]"))) == len(manifest["layers"])
    # Pull again: nothing to do.
    assert "already" in run(["--spec", spec, "runtime", "pull", ref], node, check_rc=0).stdout

    # --bundle oci:// with -v on a fresh store says why, and uses the blob cache of nothing.
    fresh = env_at(tmp_path / "fresh")
    proc = run(["--spec", spec, "-v", "--no-build", "--bundle", ref, "run", "-c", CODE], fresh, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"using bundle {rows['cpu']['location']} (--bundle)" in proc.stderr
    assert "(--bundle): rejected: built for the cuda backend" in proc.stderr

    # The fake NVIDIA machine pulls the cuda profile from the same tag.
    gpu_node = nvidia_env(tmp_path / "gpunode")
    proc = run(["--spec", spec, "runtime", "pull", ref], gpu_node, timeout=120)
    assert proc.returncode == 0, proc.stderr
    key = next(iter(runtime_dirs(tmp_path / "gpunode" / "store")["runtimes"]))
    gpu_manifest = json.loads(run(["runtime", "info", key], gpu_node, check_rc=0).stdout)
    assert gpu_manifest["decision"]["backend"] == "cuda"
    assert gpu_manifest["build_env"]["bundle"].endswith("@" + entries["cuda"]["digest"])

    # Other OCI tools read what was pushed.
    if shutil.which("skopeo"):
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/fleet/llama:1"],
                             capture_output=True, text=True, timeout=60)
        assert raw.returncode == 0, raw.stderr
        assert {m["digest"] for m in json.loads(raw.stdout)["manifests"]} == {m["digest"] for m in index["manifests"]}
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                              f"docker://{registry.host}/fleet/llama@{entries['cpu']['digest']}"],
                             capture_output=True, text=True, timeout=60)
        assert raw.returncode == 0, raw.stderr
        assert json.loads(raw.stdout)["layers"] == manifest["layers"]


def test_a_second_push_uploads_only_new_layers_and_mounts_across_repositories(built, registry):
    before = registry.blob_uploads()
    first = pushed_numbers(push(built["cpu"], registry.ref("team/a:1")).stdout)
    assert registry.blob_uploads() - before == first["uploaded"] == first["layers"] + 1  # and bundle.json
    stored = registry.stored_blobs()

    # Another runtime that shares most packages: only its own layers (and bundle.json) go.
    second_out = push(built["more"], registry.ref("team/a:2")).stdout
    second = pushed_numbers(second_out)
    new_uploads = registry.blob_uploads() - before - first["uploaded"]
    assert new_uploads == second["uploaded"]
    assert second["present"] >= 2 and second["uploaded"] < second["layers"], second
    # In the registry's storage: those blobs, the manifest and the new index, nothing else.
    new_blobs = registry.stored_blobs() - stored
    manifest_digest = re.search(r"^manifest sha256:([0-9a-f]{64})$", second_out, re.M).group(1)
    index_digest = hashlib.sha256(registry.get("team/a/manifests/2")).hexdigest()
    assert manifest_digest in new_blobs and index_digest in new_blobs
    assert len(new_blobs) == second["uploaded"] + 2

    # Into another repository: the blobs this store pushed before are mounted, not sent again.
    third = pushed_numbers(push(built["more"], registry.ref("team/b:1")).stdout)
    assert third["mounted"] == third["layers"] and third["uploaded"] == 1, third  # bundle.json has no record
    assert registry.blob_uploads() - before - first["uploaded"] - second["uploaded"] == 1

    # A pull says why nothing fits: another spec, a tag that is not there.
    node = env_at(registry.root.parent / "node")
    proc = run(["--spec", built["more"][0], "runtime", "pull", registry.ref("team/a:1")], node)
    assert proc.returncode == 77 and "no profile in " in proc.stderr and "other requirements" in proc.stderr, proc.stderr
    proc = run(["--spec", built["more"][0], "runtime", "pull", registry.ref("team/a:9")], node)
    assert proc.returncode == 77 and "has no manifest '9' in team/a (HTTP 404)" in proc.stderr, proc.stderr
    assert store_files(registry.root.parent / "node" / "store") == []

    # Pulling both runtimes into one store: the second fetches only the layers the first lacked.
    run(["--spec", built["cpu"][0], "runtime", "pull", registry.ref("team/a:1")], node, check_rc=0)
    proc = run(["--spec", built["more"][0], "-v", "runtime", "pull", registry.ref("team/a:2")], node, check_rc=0)
    fetched = second["layers"] - second["present"]  # the layers that were new at the push
    assert f": {fetched} layers fetched" in proc.stderr and f"), {second['layers'] - fetched} from the blob cache" in proc.stderr, proc.stderr


def test_eight_fresh_stores_pull_at_once(built, registry, tmp_path):
    ref = registry.ref("fleet/eight:1")
    push(built["cpu"], ref)
    spec, _ = built["cpu"]
    envs = [env_at(tmp_path / f"n{i}") for i in range(8)]
    procs = [subprocess.Popen([str(BIN), "--spec", str(spec), "runtime", "pull", ref], env=e,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for e in envs]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [r[1] for r in results]
    for i, e in enumerate(envs):
        proc = run(["--spec", spec, "--no-build", "run", "-c", CODE], e, check_rc=0)
        assert proc.stdout.split()[0].startswith(str(tmp_path / f"n{i}" / "store"))


def test_basic_auth_from_a_docker_config(built, tmp_path):
    htpasswd = tmp_path / "htpasswd"
    subprocess.run(["htpasswd", "-B", "-b", "-c", str(htpasswd), "alice", "wonder"], check=True, capture_output=True)
    reg = Registry(tmp_path / "reg", auth=f"auth:\n  htpasswd:\n    realm: iu-basic\n    path: {htpasswd}\n")
    try:
        spec, env = built["cpu"]
        ref = reg.ref("private/rt:1")
        proc = push(built["cpu"], ref, rc=77)
        assert "asks for a login (HTTP 401, Basic)" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        config = tmp_path / "docker"
        config.mkdir()
        auth = lambda pw: json.dumps({"auths": {reg.host: {"auth": base64.b64encode(f"alice:{pw}".encode()).decode()}}})
        (config / "config.json").write_text(auth("wrong"))
        proc = run(["--spec", spec, "runtime", "push", ref, "--level", "3"], {**env, "DOCKER_CONFIG": str(config)})
        assert proc.returncode == 77 and "refused the login of 'alice'" in proc.stderr, proc.stderr
        (config / "config.json").write_text(auth("wonder"))
        proc = run(["--spec", spec, "runtime", "push", ref, "--level", "3"], {**env, "DOCKER_CONFIG": str(config)},
                   timeout=300)
        assert proc.returncode == 0, proc.stderr
        # ~/.docker/config.json works as well.
        node = env_at(tmp_path / "node")
        (Path(node["HOME"]) / ".docker").mkdir()
        (Path(node["HOME"]) / ".docker" / "config.json").write_text(auth("wonder"))
        proc = run(["--spec", spec, "runtime", "pull", ref], node, timeout=120)
        assert proc.returncode == 0, proc.stderr
        run(["--spec", spec, "--no-build", "run", "-c", CODE], node, check_rc=0)
    finally:
        reg.stop()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_token_flow_against_the_registry_token_mode(built, tmp_path):
    # The token issuer's key and certificate (the registry trusts it: rootcertbundle), by openssl.
    key_pem, cert_pem = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key_pem), "-out",
                    str(cert_pem), "-days", "2", "-subj", "/CN=iu-test-token-issuer"], check=True, capture_output=True)
    cert_der = subprocess.run(["openssl", "x509", "-in", str(cert_pem), "-outform", "DER"], check=True,
                              capture_output=True).stdout

    def sign(data: bytes) -> bytes:  # RS256: RSASSA-PKCS1-v1_5 with SHA-256
        return subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key_pem)], input=data, check=True,
                              capture_output=True).stdout
    asked = []

    class Token(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            from urllib.parse import parse_qs, urlparse
            q = parse_qs(urlparse(self.path).query)
            login = self.headers.get("Authorization", "")
            asked.append((q.get("service"), q.get("scope"), login))
            if login != "Basic " + base64.b64encode(b"bob:builder").decode():
                self.send_response(401)
                self.end_headers()
                return
            access = []
            for scope in q.get("scope", []):
                kind, name, actions = scope.split(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
            now = int(time.time())
            header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(cert_der).decode()]}
            claims = {"iss": "iu-test-issuer", "sub": "bob", "aud": "iu-test-registry", "exp": now + 300,
                      "nbf": now - 10, "iat": now, "jti": str(now) + str(len(asked)), "access": access}
            signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
            signature = sign(signing_input.encode())
            body = json.dumps({"token": signing_input + "." + b64url(signature), "expires_in": 300}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = _Server(("127.0.0.1", 0), Token)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    realm = f"http://127.0.0.1:{server.server_address[1]}/token"
    reg = Registry(tmp_path / "reg", auth=f"auth:\n  token:\n    realm: {realm}\n    service: iu-test-registry\n"
                                          f"    issuer: iu-test-issuer\n    rootcertbundle: {cert_pem}\n")
    try:
        spec, env = built["cpu"]
        ref = reg.ref("tokens/rt:1")
        config = tmp_path / "docker"
        config.mkdir()
        # The login for the registry's host is what the token server gets.
        (config / "config.json").write_text(json.dumps({"auths": {reg.host: {"username": "bob", "password": "builder"}}}))
        proc = run(["--spec", spec, "runtime", "push", ref, "--level", "3"], {**env, "DOCKER_CONFIG": str(config)},
                   timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert any(s == ["iu-test-registry"] and "repository:tokens/rt:pull,push" in (sc or []) for s, sc, _ in asked), asked
        node = env_at(tmp_path / "node", DOCKER_CONFIG=config)
        proc = run(["--spec", spec, "runtime", "pull", ref], node, timeout=120)
        assert proc.returncode == 0, proc.stderr
        run(["--spec", spec, "--no-build", "run", "-c", CODE], node, check_rc=0)
        # Without the login the token server says no: one line, exit 77, nothing in the store.
        anon = env_at(tmp_path / "anon")
        proc = run(["--spec", spec, "runtime", "pull", ref], anon, timeout=120)
        assert proc.returncode == 77 and "token server" in proc.stderr and "HTTP 401" in proc.stderr, proc.stderr
        assert store_files(tmp_path / "anon" / "store") == []
    finally:
        reg.stop()
        server.shutdown()


# --- a hostile registry ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def artifact(built, tmp_path_factory):
    """What a real push of the cpu runtime put in a registry: index, manifest, config, layers."""
    reg = Registry(tmp_path_factory.mktemp("oci-artifact"))
    try:
        push(built["cpu"], reg.ref("rt:1"))
        index = json.loads(reg.get("rt/manifests/1"))
        entry = index["manifests"][0]
        manifest = json.loads(reg.get(f"rt/manifests/{entry['digest']}"))
        blobs = {d["digest"]: reg.get(f"rt/blobs/{d['digest']}", accept="*/*")
                 for d in [manifest["config"], *manifest["layers"]]}
        return index, manifest, blobs
    finally:
        reg.stop()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeRegistry:
    """Serves a registry from a dict path → (status, headers, body) on 127.0.0.1, with Range;
    `cuts[path] = n`: the next n GETs of path stop after half the body; `login`: a Basic login
    the /v2/ paths demand; `seen`: (path, Range, Authorization) of every request."""

    def __init__(self, index, manifest, blobs, login=None):
        self.routes = {}
        self.cuts = {}
        self.stall = set()  # paths answered with headers, then nothing for 5 s
        self.seen = []
        self.set(index, manifest, blobs)
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, body_too):
                path = self.path.split("?")[0]
                auth = self.headers.get("Authorization")
                fake.seen.append((path, self.headers.get("Range"), auth))
                if login and path.startswith("/v2/") and auth != "Basic " + base64.b64encode(login.encode()).decode():
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="fake"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status, headers, body = fake.routes.get(path, (404, {}, b"{}"))
                start = 0
                rng = self.headers.get("Range")
                if status == 200 and rng and rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[6:-1])
                    if start >= len(body):
                        status, body = 416, b""
                    else:
                        status = 206
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body) - start if status == 206 else len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                if not body_too:
                    return
                if path in fake.stall:
                    self.wfile.flush()
                    time.sleep(5)
                    return
                data = body[start:] if status == 206 else body
                if fake.cuts.get(path, 0) > 0:
                    fake.cuts[path] -= 1
                    self.wfile.write(data[:len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

            def do_GET(self):
                self.answer(True)

            def do_HEAD(self):
                self.answer(False)

        self.server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]
        self.ref = f"oci://127.0.0.1:{self.port}/rt:1"

    def set(self, index, manifest, blobs, manifest_bytes=None):
        """Routes for an artifact; the index entry is made to point at the (re-encoded) manifest."""
        mbytes = manifest_bytes if manifest_bytes is not None else json.dumps(manifest).encode()
        index = json.loads(json.dumps(index))
        index["manifests"][0]["digest"] = digest(mbytes)
        index["manifests"][0]["size"] = len(mbytes)
        ibytes = json.dumps(index).encode()
        self.routes.clear()
        self.routes["/v2/"] = (200, {}, b"{}")
        self.routes["/v2/rt/manifests/1"] = (200, {"Content-Type": index["mediaType"]}, ibytes)
        self.routes[f"/v2/rt/manifests/{digest(mbytes)}"] = (200, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, mbytes)
        for d, data in blobs.items():
            self.routes[f"/v2/rt/blobs/{d}"] = (200, {}, data)

    def stop(self):
        self.server.shutdown()


def layer_with(members):
    """A zstd tar layer of (TarInfo, bytes|None)."""
    return subprocess.run(["zstd", "-q", "-c"], input=tar_of(members), capture_output=True, check=True).stdout


def with_layer(artifact, members, listed):
    """The artifact with one more layer holding `members`, and bundle.json listing `listed`."""
    index, manifest, blobs = (json.loads(json.dumps(artifact[0])), json.loads(json.dumps(artifact[1])), dict(artifact[2]))
    config = json.loads(blobs.pop(manifest["config"]["digest"]))
    for entry in listed:
        config["files"].append(entry)
        config["total_size"] += entry.get("size", 0)
    cbytes = json.dumps(config).encode()
    layer = layer_with(members)
    blobs[digest(cbytes)] = cbytes
    blobs[digest(layer)] = layer
    manifest["config"].update(digest=digest(cbytes), size=len(cbytes))
    manifest["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": digest(layer),
                               "size": len(layer)})
    return index, manifest, blobs


def _file(name, data=b"x\n"):
    info = tarfile.TarInfo(name)
    return (info, data), {"path": name, "type": "f", "mode": 0o644, "size": len(data),
                          "sha256": hashlib.sha256(data).hexdigest()}


def _link(name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return (info, None), {"path": name, "type": "l", "mode": 0o777, "target": target}


def hostile_cases(artifact):
    index, manifest, blobs = artifact
    layer0 = manifest["layers"][0]["digest"]
    cases = {}
    bad = dict(blobs)
    bad[layer0] = blobs[layer0][:-10] + b"0123456789"  # same size, other bytes
    cases["wrong digest"] = ((index, manifest, bad), None, "has the digest sha256:")
    cases["huge manifest"] = ((index, manifest, blobs), b"{" + b" " * (5 << 20) + b"}", "is larger than 4194304 bytes")
    cases["malformed manifest"] = ((index, manifest, blobs), b'{"layers": "not a list"', "the manifest is not a JSON object")
    no_layers = dict(manifest, layers=[])
    cases["manifest without layers"] = ((index, no_layers, blobs), None, "the manifest has no config or no layers")
    cases["redirect to file:"] = ((index, manifest, blobs), None, "is not an http(s) URL")
    cases["a stalled blob"] = ((index, manifest, blobs), None, "(INFERENCEUTILS_DOWNLOAD_TIMEOUT)")
    bigger = dict(blobs)
    bigger[layer0] = blobs[layer0] + b"more bytes than the manifest says"
    cases["blob larger than its size"] = ((index, manifest, bigger), None, "is larger than the")
    config = json.loads(blobs[manifest["config"]["digest"]])
    config["requires"]["cpu_isa"] = "x86-64"  # the index says otherwise
    cbytes = json.dumps(config).encode()
    lying = dict(blobs)
    lying[digest(cbytes)] = cbytes
    lied = json.loads(json.dumps(manifest))
    lied["config"].update(digest=digest(cbytes), size=len(cbytes))
    cases["annotations that lie"] = ((index, lied, lying), None, "the index's annotations say another requires than its bundle.json")
    m, l = _file("../escaped")
    cases["dot-dot member"] = (with_layer(artifact, [m], [l]), None, "member ../escaped: path has a '..' component")
    m, l = _file("/tmp/absolute-escape")
    cases["absolute member"] = (with_layer(artifact, [m], [l]), None, "absolute path")
    m1, l1 = _link("lib/out", "/etc")
    m2, l2 = _file("lib/out/passwd")
    cases["symlink out"] = (with_layer(artifact, [m1, m2], [l1, l2]), None, "symlink to '/etc' points outside the runtime")
    return cases


@pytest.mark.parametrize("case", ["wrong digest", "blob larger than its size", "huge manifest", "malformed manifest",
                                  "manifest without layers", "annotations that lie", "redirect to file:", "a stalled blob",
                                  "dot-dot member", "absolute member", "symlink out"])
def test_a_hostile_registry_is_refused_with_nothing_written(built, artifact, tmp_path, case):
    (index, manifest, blobs), manifest_bytes, expected = hostile_cases(artifact)[case]
    fake = FakeRegistry(index, manifest, blobs)
    try:
        fake.set(index, manifest, blobs, manifest_bytes)
        if case == "a stalled blob":
            fake.stall.add(f"/v2/rt/blobs/{manifest['layers'][0]['digest']}")
        if case == "redirect to file:":
            layer0 = manifest["layers"][0]["digest"]
            fake.routes[f"/v2/rt/blobs/{layer0}"] = (307, {"Location": "file:///etc/passwd"}, b"")
        spec, _ = built["cpu"]
        node = env_at(tmp_path / "node", INFERENCEUTILS_DOWNLOAD_TIMEOUT=2)
        started = time.time()
        proc = run(["--spec", spec, "runtime", "pull", fake.ref], node, timeout=120)
        assert time.time() - started < 5  # never waits for the stalled registry
        assert proc.returncode == 77, (proc.returncode, proc.stdout, proc.stderr)
        assert expected in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith("inferenceutils: error: ")
        store = tmp_path / "node" / "store"
        assert store_files(store) == [], store_files(store)
        assert not (tmp_path / "node" / "store" / "data" / "escaped").exists()
        assert not Path("/tmp/absolute-escape").exists()
        assert not list(tmp_path.rglob("passwd"))
    finally:
        fake.stop()


def test_plain_http_only_for_loopback_or_an_explicit_option(built, artifact, tmp_path):
    index, manifest, blobs = artifact
    fake = FakeRegistry(index, manifest, blobs)
    try:
        port = fake.server.server_address[1]
        name = socket.gethostname()  # not a loopback name, though it may lead to this machine
        try:
            socket.create_connection((name, port), timeout=2).close()
        except OSError:
            pytest.skip(f"this machine's name {name} does not lead to 127.0.0.1")
        spec, _ = built["cpu"]
        ref = f"oci://{name}:{port}/rt:1"
        node = env_at(tmp_path / "node")
        proc = run(["--spec", spec, "runtime", "pull", ref], node, timeout=120)
        assert proc.returncode == 77 and f"(https://{name}:{port}/v2/rt/manifests/1)" in proc.stderr, proc.stderr
        assert store_files(tmp_path / "node" / "store") == []
        # --insecure-registry, or the variable, allow plain HTTP to that registry.
        proc = run(["--spec", spec, "runtime", "pull", ref, "--insecure-registry"], node, timeout=120)
        assert proc.returncode == 0, proc.stderr
        other = env_at(tmp_path / "other", INFERENCEUTILS_INSECURE_REGISTRIES=f"{name}:{port}")
        proc = run(["--spec", spec, "-v", "--no-build", "--bundle", ref, "run", "-c", CODE], other, timeout=120)
        assert proc.returncode == 0, proc.stderr
    finally:
        fake.stop()
    env = env_at(tmp_path / "plain")
    bad = run(["runtime", "pull", "oci://Bad/Name"], env)
    assert bad.returncode == 65 and "not an OCI reference" in bad.stderr and "oci://HOST[:PORT]/REPO[:TAG]" in bad.stderr
    proc = run(["runtime", "push", "oci://h/a@sha256:" + "0" * 64], env)
    assert proc.returncode == 65 and "push needs a tag" in proc.stderr, proc.stderr


def test_blob_storage_redirects_are_followed_and_downloads_resume(built, artifact, tmp_path):
    index, manifest, blobs = artifact
    fake = FakeRegistry(index, manifest, blobs, login="fleet:secret")
    try:
        # Every layer lives in "blob storage" on another host name (localhost, not 127.0.0.1).
        for layer in manifest["layers"]:
            path = f"/v2/rt/blobs/{layer['digest']}"
            fake.routes[f"/storage/{layer['digest'][7:]}"] = fake.routes[path]
            fake.routes[path] = (307, {"Location": f"http://localhost:{fake.port}/storage/{layer['digest'][7:]}"}, b"")
        big = max(manifest["layers"], key=lambda l: l["size"])
        fake.cuts[f"/storage/{big['digest'][7:]}"] = 1
        spec, _ = built["cpu"]
        node = env_at(tmp_path / "node", INFERENCEUTILS_REGISTRY_AUTH="fleet:secret")
        proc = run(["--spec", spec, "runtime", "pull", fake.ref], node, timeout=120)
        assert proc.returncode == 77 and "run again to resume" in proc.stderr, proc.stderr
        part = tmp_path / "node" / "store" / "blobs" / "sha256" / (big["digest"][7:] + ".part")
        assert 0 < part.stat().st_size < big["size"]
        have = part.stat().st_size
        proc = run(["--spec", spec, "-v", "runtime", "pull", fake.ref], node, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "resuming the download of runtime" in proc.stderr
        assert (f"/storage/{big['digest'][7:]}", f"bytes={have}-", None) in fake.seen
        # The registry's login went to the registry only, never to the storage host.
        assert all(auth is None for path, _, auth in fake.seen if path.startswith("/storage/"))
        assert any(auth for path, _, auth in fake.seen if path.startswith("/v2/rt/"))
        run(["--spec", spec, "--no-build", "run", "-c", CODE], node, check_rc=0)
    finally:
        fake.stop()
