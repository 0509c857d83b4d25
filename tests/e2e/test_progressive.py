"""Progressive starts (issue #14, docs/progressive.md): the first start on an NVIDIA machine whose
CUDA runtime needs a source build runs the program at once on the CPU runtime (from the fixture's
prebuilt wheel index) while a detached builder makes the CUDA one; the next start after it is
published runs there.

The GPU is the fake NVIDIA root + fake libcuda of the detection tests; the CUDA build is the
fixture llama-cpp-python sdist, whose build records each source build it starts
(IU_FIXTURE_BUILD_STARTS), says it has arrived through one FIFO (IU_FIXTURE_BUILD_REACHED, read by
the test) and then blocks on another (IU_FIXTURE_BUILD_GATE) until the test writes to it ("fail"
makes it fail). No sleeps: the test and the build meet at the FIFOs; a dead builder is seen through
its build lock, which the kernel frees when it dies.
"""
import fcntl
import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import BIN, run, runtime_dirs
from test_info import fake_gpu_env

PROBE = r'''
import json, inferenceutils, llama_cpp
rt = inferenceutils.runtime()
print(json.dumps({"backend": rt["backend"], "key": rt["key"], "fallback": rt["fallback"], "pending": rt["pending"],
                  "llama_backend": llama_cpp.BACKEND, "cmake_args": llama_cpp.BUILD_ENV.get("CMAKE_ARGS", "")}, default=dict))
'''


class Setup:
    def __init__(self, tmp_path, fixture_index, **env):
        self.tmp = tmp_path
        self.gate = tmp_path / "gate"
        self.reached = tmp_path / "reached"
        os.mkfifo(self.gate)
        os.mkfifo(self.reached)
        self.arrived = None  # the pid of the build at the gate, once the test has seen it arrive
        self.starts = tmp_path / "build-starts.jsonl"
        self.env = fake_gpu_env(tmp_path, IU_FIXTURE_BUILD_GATE=self.gate, IU_FIXTURE_BUILD_REACHED=self.reached,
                                IU_FIXTURE_BUILD_STARTS=self.starts, **env)
        # CUDA: no prebuilt index (a source build); CPU: the fixture's prebuilt wheel index.
        self.spec = fixture_index.write_spec(tmp_path / "spec.toml", ["llama-cpp-python"], ["llama_cpp"],
                                             backends={"cuda": {"wheel_indexes": []},
                                                       "cpu": {"wheel_indexes": [fixture_index.prebuilt_url]}})
        self.script = tmp_path / "probe.py"
        self.script.write_text(PROBE)
        self.store = tmp_path / "store"

    def start(self, *options, env=None, timeout=240):
        proc = run([*options, "--spec", self.spec, "run", self.script], env or self.env, timeout=timeout)
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr

    def runtime(self, *args, check_rc=None, timeout=240):
        return run(["--spec", self.spec, "runtime", *args], self.env, timeout=timeout, check_rc=check_rc)

    def builds(self):
        rows = json.loads(self.runtime("list", "--json", check_rc=0).stdout)
        return [r for r in rows if "state" in r]

    def build_starts(self):
        return [json.loads(line) for line in self.starts.read_text().splitlines()] if self.starts.exists() else []

    def at_gate(self):
        """Blocks until a source build has arrived at the gate; returns its pid."""
        got = []
        reader = threading.Thread(target=lambda: got.append(int(self.reached.read_text())), daemon=True)
        reader.start()
        reader.join(timeout=240)
        assert got, "no build arrived at the gate"
        self.arrived = got[0]
        return self.arrived

    def release(self, verdict="ok"):
        """Lets the next build at the gate go on (a thread: join it with wait_released)."""
        def go():
            if self.arrived is None:
                self.reached.read_text()
            self.arrived = None
            self.gate.write_text(verdict)
        opener = threading.Thread(target=go, daemon=True)
        opener.start()
        return opener

    def wait_released(self, opener):
        """Returns once the build has read the verdict."""
        opener.join(timeout=240)
        assert not opener.is_alive(), "no build read the gate"

    def wait_lock_free(self, key):
        """Blocks until nobody holds the key's build lock (the kernel frees it when its holder dies)."""
        with open(self.store / "locks" / f"{key}.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            fcntl.flock(f, fcntl.LOCK_UN)

    def store_consistent(self):
        """Every data directory is published (no half-made or orphaned runtime is left)."""
        dirs = runtime_dirs(self.store)
        assert sorted(dirs["runtimes"].values()) == dirs["data"], dirs


def test_first_start_runs_on_the_cpu_runtime_while_cuda_builds_then_uses_cuda(tmp_path, fixture_index):
    s = Setup(tmp_path, fixture_index)
    first, err = s.start("-v")
    # The program ran while the CUDA build is still blocked at the gate (nobody has written to it).
    assert first["backend"] == "cpu" and first["llama_backend"] == "cpu", first
    assert first["fallback"] is True
    pending = first["pending"]
    assert pending["backend"] == "cuda" and pending["state"] == "building", pending
    assert "GGML_CUDA" not in first["cmake_args"]
    line = next(l for l in err.splitlines() if "in the background" in l)
    assert f"building the cuda runtime {pending['key']} in the background since " in line
    assert pending["log"] in line and "this run uses the cpu runtime" in line and "--wait" in line
    assert "runtime wait" in line
    s.at_gate()  # the builder works on after the start ended; from here it is at the gate
    assert len(s.build_starts()) == 1 and "-DGGML_CUDA=on" in s.build_starts()[0]["CMAKE_ARGS"]

    # Shown while it builds: runtime list (human and JSON) and info --json.
    [build] = s.builds()
    assert build["state"] == "building" and build["key"] == pending["key"] and build["backend"] == "cuda"
    assert build["step"] == "installing requirements" and Path(build["log"]).is_file()
    human = s.runtime("list", check_rc=0).stdout
    assert "background builds:" in human and f"building  {pending['key']} cuda since " in human
    info = json.loads(run(["--spec", s.spec, "info", "--json"], s.env, check_rc=0).stdout)
    assert [b["key"] for b in info["store"]["background_builds"]] == [pending["key"]]
    assert info["store"]["background_builds"][0]["state"] == "building"
    human_info = run(["--spec", s.spec, "info"], s.env, check_rc=0).stdout
    assert f"{pending['key']} cuda building since " in human_info

    # Quiet without a terminal and without -v, as before.
    second, quiet_err = s.start()
    assert second["backend"] == "cpu" and second["pending"]["pid"] == build["pid"]
    assert "background" not in quiet_err

    # Pruning every runtime during the build: the builder's directory stays, the store stays whole.
    prune = s.runtime("prune", "--unused-for", "0", check_rc=0)
    assert "1 runtime removed" in prune.stdout, prune.stdout

    s.wait_released(s.release())
    waited = s.runtime("wait", check_rc=0)
    cuda_prefix = waited.stdout.strip()
    assert Path(cuda_prefix, "manifest.json").is_file()
    assert s.builds() == []
    s.store_consistent()

    after, err = s.start("-v")
    assert after["backend"] == "cuda" and after["llama_backend"] == "cuda", after
    assert after["fallback"] is False and after["pending"] is None
    assert "-DGGML_CUDA=on" in after["cmake_args"]
    assert "in the background" not in err
    assert len(s.build_starts()) == 1  # one source build in all
    log = Path(pending["log"]).read_text()
    assert f"published runtime {pending['key']}" in log
    assert s.runtime("wait", pending["key"][:8], check_rc=0).stdout.strip() == cuda_prefix


def test_a_failed_background_build_is_recorded_not_retried_and_rebuilt_on_request(tmp_path, fixture_index):
    s = Setup(tmp_path, fixture_index)
    first, _ = s.start()
    key = first["pending"]["key"]
    s.wait_released(s.release("fail"))
    waited = s.runtime("wait")
    assert waited.returncode == 74, (waited.stdout, waited.stderr)
    assert f"the background build of the cuda runtime {key} failed" in waited.stderr
    assert "runtime rebuild" in waited.stderr
    [failed] = s.builds()
    assert failed["state"] == "failed" and failed["key"] == key
    assert any("Building wheel for llama-cpp-python" in l for l in failed["last_lines"]), failed["last_lines"]
    assert "failed, as the test asked" in Path(failed["log"]).read_text()
    s.store_consistent()  # nothing of the failed build is left

    again, err = s.start("-v")
    assert again["backend"] == "cpu" and again["pending"]["state"] == "failed"
    assert [l for l in err.splitlines() if "failed to build in the background" in l][0].count("runtime rebuild") == 1
    assert len(s.build_starts()) == 1  # not retried by a start

    opener = s.release("ok")  # the rebuild the user asks for, in the foreground
    rebuilt = s.runtime("rebuild", check_rc=0)
    s.wait_released(opener)
    assert len(s.build_starts()) == 2
    assert s.builds() == []
    after, _ = s.start()
    assert after["backend"] == "cuda" and after["fallback"] is False
    assert after["key"] == key and Path(rebuilt.stdout.strip()) == Path(s.runtime("path", check_rc=0).stdout.strip())


def test_eight_concurrent_cold_starts_run_at_once_and_start_one_builder(tmp_path, fixture_index):
    s = Setup(tmp_path, fixture_index)
    procs = [subprocess.Popen([str(BIN), "--spec", str(s.spec), "run", str(s.script)], env=s.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    # All ran on the CPU runtime while the CUDA build is still blocked at the gate.
    assert {r["backend"] for r in results} == {"cpu"}
    assert {r["pending"]["state"] for r in results} == {"building"}
    [build] = s.builds()
    assert {r["pending"]["pid"] for r in results} == {build["pid"]}
    s.at_gate()
    s.wait_released(s.release())
    s.runtime("wait", check_rc=0)
    assert len(s.build_starts()) == 1
    s.store_consistent()


def test_a_killed_builder_is_noticed_and_one_new_builder_starts(tmp_path, fixture_index):
    s = Setup(tmp_path, fixture_index)
    first, _ = s.start()
    key, pid = first["pending"]["key"], first["pending"]["pid"]
    blocked = s.at_gate()
    os.kill(pid, signal.SIGKILL)  # kill -9 of the builder; its pip dies with it (PR_SET_PDEATHSIG)
    os.kill(blocked, signal.SIGKILL)  # and the build pip ran, blocked at the gate
    s.arrived = None
    s.wait_lock_free(key)
    [dead] = s.builds()
    assert dead["state"] == "interrupted" and dead["pid"] == pid
    assert s.runtime("wait").returncode == 74

    again, err = s.start("-v")
    assert f"the background build of runtime {key} (pid {pid}) ended without publishing it" in err
    assert again["backend"] == "cpu" and again["pending"]["state"] == "building"
    assert again["pending"]["pid"] != pid
    s.at_gate()
    third, _ = s.start()  # during the new build: no third builder
    assert third["pending"]["pid"] == again["pending"]["pid"]
    s.wait_released(s.release())
    s.runtime("wait", check_rc=0)
    assert len(s.build_starts()) == 2
    s.store_consistent()
    after, _ = s.start()
    assert after["backend"] == "cuda"


@pytest.mark.parametrize("how", ["--wait", "INFERENCEUTILS_PROGRESSIVE=0", "--backend cuda"])
def test_foreground_build_when_asked(tmp_path, fixture_index, how):
    s = Setup(tmp_path, fixture_index)
    options, env = [], s.env
    if how.startswith("INFERENCEUTILS_"):
        env = dict(s.env, INFERENCEUTILS_PROGRESSIVE="0")
    else:
        options = how.split()
    opener = s.release()
    result, err = s.start("-v", *options, env=env)
    s.wait_released(opener)
    assert result["backend"] == "cuda" and result["llama_backend"] == "cuda", result
    assert result["fallback"] is False and "in the background" not in err
    assert not (s.store / "builds").exists() or s.builds() == []
    assert len(s.build_starts()) == 1


def test_bad_progressive_value_is_refused(tmp_path, fixture_index):
    s = Setup(tmp_path, fixture_index)
    proc = run(["--spec", s.spec, "run", s.script], dict(s.env, INFERENCEUTILS_PROGRESSIVE="maybe"))
    assert proc.returncode == 65
    assert "INFERENCEUTILS_PROGRESSIVE='maybe' is neither 0 nor 1" in proc.stderr
    assert not (s.store / "runtimes").exists() or runtime_dirs(s.store)["runtimes"] == {}


def test_an_app_runs_on_the_fallback_logs_it_and_notifies_once(tmp_path, fixture_index):
    """An app without a terminal: the line goes to the app's log and one desktop notification
    (the fake notify-send of test_app.py records it)."""
    from test_app import FIXTURE_APP, app_log, fake_notifier, notifications
    s = Setup(tmp_path, fixture_index)
    app = tmp_path / "hello"
    run(["app", "build", FIXTURE_APP, "-o", app, "--spec", s.spec], s.env, check_rc=0)
    bin_dir, record = fake_notifier(tmp_path)
    env = dict(s.env, PATH=f"{bin_dir}:{s.env['PATH']}")

    def start_app():
        proc = subprocess.run([str(app)], env=env, capture_output=True, text=True, timeout=240,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.splitlines()[0])

    first = start_app()
    [build] = s.builds()
    runtimes = {r["backend"]: r["path"] for r in json.loads(s.runtime("list", "--json", check_rc=0).stdout)
                if "state" not in r}
    assert first["prefix"] == runtimes["cpu"] and "cuda" not in runtimes
    log = app_log(s.store, app).read_text()
    assert f"building the cuda runtime {build['key']} in the background" in log
    # The first-start notice and the background one (the notifier runs detached: its helper waits for it).
    calls = notifications(record, 2)
    assert sum("prepared in the background" in " ".join(c) for c in calls) == 1, calls
    s.wait_released(s.release())
    s.runtime("wait", build["key"], check_rc=0)
    after = start_app()
    assert Path(after["prefix"]).parent == Path(runtimes["cpu"]).parent and after["prefix"] != first["prefix"]
    cuda = [r for r in json.loads(s.runtime("list", "--json", check_rc=0).stdout) if r.get("backend") == "cuda"]
    assert [r["path"] for r in cuda] == [after["prefix"]]


def test_a_foreground_build_after_a_killed_builder_clears_its_record(tmp_path, fixture_index):
    s = Setup(tmp_path, fixture_index)
    first, _ = s.start()
    key, pid = first["pending"]["key"], first["pending"]["pid"]
    blocked = s.at_gate()
    os.kill(pid, signal.SIGKILL)
    os.kill(blocked, signal.SIGKILL)
    s.arrived = None
    s.wait_lock_free(key)
    opener = s.release()
    result, _ = s.start("--wait")
    s.wait_released(opener)
    assert result["backend"] == "cuda" and result["fallback"] is False
    assert s.builds() == []  # no "interrupted" record left once the key is published
    s.store_consistent()
