"""`inferenceutils run` behaves like `python` itself.

Each semantic test runs the same program under Debian's /usr/bin/python3.11 -E -s (the interpreter
the launcher embeds, isolated the way the launcher isolates it) and under the launcher, and compares
stdout, the exit status and stderr. Python names itself in some messages ("/usr/bin/python3.11:
can't open file ...", "usage: /usr/bin/python3.11 [option] ..."), the launcher says
"inferenceutils: ..."; `norm` replaces either program name with "<prog>" before comparing.
"""
import json
import os
import re
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from conftest import BASE_PYTHON, BIN, clean_env, run, run_python
from semantics_runtime import env, warm_runtime  # noqa: F401  (fixtures: a shared warm runtime)

# A JSON report of what python set up for __main__.
REPORT = """\
import json, sys
print(json.dumps({"name": __name__, "file": globals().get("__file__"), "argv": sys.argv,
                  "path0": sys.path[0]}))
"""

# Program names python or the launcher put at the start of their own messages: the launcher's
# argv[0], python's argv[0], and sys.executable (runpy's "<exe>: No module named x").
_PROG = re.compile(r"(?m)(^|usage: )(/usr/bin/python3(\.11)?|\S*inferenceutils|\S*/bin/python3?(\.11)?)"
                   r"(?=[: ])")


def norm(text: str) -> str:
    return _PROG.sub(r"\1<prog>", text)


def write(path: Path, text: str, mode=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    if mode is not None:
        path.chmod(mode)
    return path


def both(launcher_args, python_args, env, **kw):
    """(python, launcher) results of the same program."""
    return run_python(python_args, env, **kw), run(launcher_args, env, **kw)


def assert_same(py, iu):
    assert (iu.returncode, iu.stdout, norm(iu.stderr)) == (py.returncode, py.stdout, norm(py.stderr))


# ---------------------------------------------------------------------------------------------
# __name__, __file__, sys.argv, sys.path[0]


@pytest.mark.parametrize("form", ["run", "bare"])
@pytest.mark.parametrize("where", ["relative", "subdir", "absolute"])
def test_script_main_globals(tmp_path, env, form, where):
    script = write(tmp_path / "pkg" / "report.py", REPORT)
    cwd = tmp_path if where != "relative" else script.parent
    # "report.py" has no '/': an existing file is a script in the bare form too.
    path = {"relative": "report.py", "subdir": "pkg/report.py", "absolute": str(script)}[where]
    args = [path, "a", "--quiet", "-v", "--help", "run", "-m", "x"]  # the program's, not ours
    py, iu = both((["run"] if form == "run" else []) + args, args, env, cwd=cwd)
    assert_same(py, iu)
    report = json.loads(iu.stdout)
    # python 3.9+ makes __main__.__file__ absolute; argv[0] stays as given.
    assert report == {"name": "__main__", "file": str(script), "argv": args,
                      "path0": str(script.parent)}


def test_dash_c(tmp_path, env):
    args = ["-c", REPORT, "a", "--version", "-q"]
    py, iu = both(["run", *args], args, env, cwd=tmp_path)
    assert_same(py, iu)
    assert json.loads(iu.stdout) == {"name": "__main__", "file": None,
                                     "argv": ["-c", "a", "--version", "-q"], "path0": ""}


def test_dash_m(tmp_path, env):
    write(tmp_path / "mymod.py", REPORT)
    args = ["-m", "mymod", "a", "--help", "-c", "x"]
    py, iu = both(["run", *args], args, env, cwd=tmp_path)
    assert_same(py, iu)
    assert json.loads(iu.stdout) == {"name": "__main__", "file": str(tmp_path / "mymod.py"),
                                     "argv": [str(tmp_path / "mymod.py"), "a", "--help", "-c", "x"],
                                     "path0": str(tmp_path)}


def test_dash_m_package(tmp_path, env):
    write(tmp_path / "app" / "__init__.py", "")
    write(tmp_path / "app" / "__main__.py", REPORT)
    py, iu = both(["run", "-m", "app", "x"], ["-m", "app", "x"], env, cwd=tmp_path)
    assert_same(py, iu)
    assert json.loads(iu.stdout)["argv"] == [str(tmp_path / "app" / "__main__.py"), "x"]


def test_program_from_stdin(tmp_path, env):
    py, iu = both(["run", "-", "a", "--quiet"], ["-", "a", "--quiet"], env, input=REPORT, cwd=tmp_path)
    assert_same(py, iu)
    assert json.loads(iu.stdout) == {"name": "__main__", "file": "<stdin>",
                                     "argv": ["-", "a", "--quiet"], "path0": ""}


def test_directory_with_main(tmp_path, env):
    write(tmp_path / "appdir" / "__main__.py", REPORT)
    py, iu = both(["run", "appdir", "z"], ["appdir", "z"], env, cwd=tmp_path)
    assert_same(py, iu)
    assert json.loads(iu.stdout)["argv"] == ["appdir", "z"]
    # Bare form: a directory is a path when it has a '/'.
    bare = run(["./appdir", "z"], env, cwd=tmp_path, check_rc=0)
    assert json.loads(bare.stdout)["argv"] == ["./appdir", "z"]


def test_runs_in_the_runtime_and_preload_leaves_main_alone(tmp_path, env):
    """The program runs in the runtime with its preload imported, and __main__ looks exactly as
    python's: no preloaded name in it, the same builtins."""
    code = ["-c", "import sys; print(sorted(globals()), sorted(vars(sys.modules['__main__'])))"]
    py, iu = both(["run", *code], code, env)
    assert_same(py, iu)
    probe = run(["run", "-c", "import sys; print(sys.prefix != sys.base_prefix, 'llama_cpp' in sys.modules)"],
                env, check_rc=0)
    assert probe.stdout == "True True\n"


# ---------------------------------------------------------------------------------------------
# -u: unbuffered stdout (stderr is merged into the same pipe, so the order shows the buffering)

INTERLEAVE = """\
import sys
print("out1")
sys.stderr.write("err\\n")
print("out2")
"""


@pytest.mark.parametrize("flags", [[], ["-u"]])
def test_unbuffered(tmp_path, env, flags):
    script = write(tmp_path / "inter.py", INTERLEAVE)
    outs = []
    for argv in ([BASE_PYTHON, "-E", "-s", *flags, script], [BIN, "run", *flags, script]):
        proc = subprocess.run(list(map(str, argv)), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=60)
        assert proc.returncode == 0
        outs.append(proc.stdout)
    assert outs[1] == outs[0]
    assert outs[1] == ("out1\nerr\nout2\n" if flags else "err\nout1\nout2\n")


# ---------------------------------------------------------------------------------------------
# Exit codes, messages, tracebacks

@pytest.mark.parametrize("body, code", [
    ("import sys; sys.exit(3)", 3),
    ("import sys; sys.exit(0)", 0),
    ("import sys; sys.exit(None)", 0),
    ("import sys; sys.exit('fatal: no input')", 1),
    ("raise SystemExit(258)", 2),
    ("import sys; print('before'); sys.stdout.flush(); raise ValueError('boom')", 1),
    ("def f():\n    1/0\nf()", 1),
    ("import os; os._exit(7)", 7),
])
def test_exit_status(tmp_path, env, body, code):
    script = write(tmp_path / "prog.py", body + "\n")
    py, iu = both(["run", script], [script], env)
    assert_same(py, iu)
    assert iu.returncode == code
    if "sys.exit('" in body:
        assert iu.stderr == "fatal: no input\n"
    if "raise ValueError" in body:
        assert iu.stderr.startswith("Traceback (most recent call last):\n")
        assert f'File "{script}", line 1, in <module>' in iu.stderr
        assert iu.stderr.endswith("ValueError: boom\n")


def test_exception_in_dash_c(tmp_path, env):
    args = ["-c", "import sys\nsys.exit(sys.argv[1])", "msg"]
    py, iu = both(["run", *args], args, env)
    assert_same(py, iu)
    assert (iu.returncode, iu.stderr) == (1, "msg\n")


def test_missing_module(tmp_path, env):
    py, iu = both(["run", "-m", "no_such_module_xyz"], ["-m", "no_such_module_xyz"], env, cwd=tmp_path)
    assert_same(py, iu)
    assert iu.returncode == 1
    assert norm(iu.stderr) == "<prog>: No module named no_such_module_xyz\n"


# ---------------------------------------------------------------------------------------------
# Files that cannot be run: python's message, python's exit status

@pytest.mark.parametrize("form", ["run", "bare"])
def test_missing_script(tmp_path, env, form):
    py, iu = both((["run"] if form == "run" else []) + ["missing.py", "a"], ["missing.py", "a"],
                  env, cwd=tmp_path)
    assert_same(py, iu)
    assert iu.returncode == 2
    assert norm(iu.stderr) == (f"<prog>: can't open file '{tmp_path}/missing.py': "
                               "[Errno 2] No such file or directory\n")
    assert iu.stderr.startswith("inferenceutils: ")


def test_missing_script_with_slash(tmp_path, env):
    py, iu = both(["./no/such/tool"], ["./no/such/tool"], env, cwd=tmp_path)
    assert_same(py, iu)
    assert iu.returncode == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file; see the ENOTDIR/ELOOP tests")
def test_unreadable_script_permissions(tmp_path, env):
    script = write(tmp_path / "secret.py", "print('x')\n", mode=0)
    py, iu = both(["run", script], [script], env)
    assert_same(py, iu)
    assert iu.returncode == 2
    assert "[Errno 13] Permission denied" in iu.stderr


@pytest.mark.parametrize("kind", ["notdir", "symlink-loop"])
def test_unreadable_script(tmp_path, env, kind):
    """Paths that cannot be opened even by root: through a non-directory, or a symlink loop."""
    if kind == "notdir":
        write(tmp_path / "plain.py", "print('x')\n")
        target, errno_text = tmp_path / "plain.py" / "x.py", "[Errno 20] Not a directory"
    else:
        (tmp_path / "loop.py").symlink_to("loop.py")
        target, errno_text = tmp_path / "loop.py", "[Errno 40] Too many levels of symbolic links"
    py, iu = both(["run", target], [target], env)
    assert_same(py, iu)
    assert iu.returncode == 2
    assert iu.stderr == f"inferenceutils: can't open file '{target}': {errno_text}\n"


@pytest.mark.parametrize("form", ["run", "bare"])
def test_directory_without_main(tmp_path, env, form):
    (tmp_path / "nomain").mkdir()
    path = "nomain" if form == "run" else "./nomain"
    py, iu = both((["run"] if form == "run" else []) + [path], [path], env, cwd=tmp_path)
    assert_same(py, iu)
    # python's status for this case is 1 (runpy's sys.exit(message)), not 2.
    assert iu.returncode == 1
    assert norm(iu.stderr) == f"<prog>: can't find '__main__' module in '{tmp_path}/{path}'\n"


# ---------------------------------------------------------------------------------------------
# Ctrl-C and broken pipes

SLEEPER = """\
import sys, time
try:
    print("ready", flush=True)
    time.sleep(60)
finally:
    print("finally ran", flush=True)
"""


def wait_sleeping(pid, timeout=5.0):
    """Until the process has been asleep (state S) for a few consecutive looks."""
    deadline, sleeping = time.monotonic() + timeout, 0
    while time.monotonic() < deadline and sleeping < 3:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
        sleeping = sleeping + 1 if state == "S" else 0
        time.sleep(0.02)


def _interrupt(argv, env):
    # The child must start with SIGINT at its default disposition (a shell's background job
    # would have it ignored, and python then installs no KeyboardInterrupt handler).
    proc = subprocess.Popen(list(map(str, argv)), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline() == "ready\n"
        # Let it get from print() into time.sleep(), so the traceback names the same line.
        wait_sleeping(proc.pid)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    return proc.returncode, out, err


def test_ctrl_c(tmp_path, env):
    script = write(tmp_path / "sleeper.py", SLEEPER)
    py = _interrupt([BASE_PYTHON, "-E", "-s", script], env)
    iu = _interrupt([BIN, "run", script], env)
    assert (iu[0], iu[1], norm(iu[2])) == (py[0], py[1], norm(py[2]))
    # python re-raises SIGINT after the traceback: killed by the signal (a shell shows 130).
    assert iu[0] == -signal.SIGINT
    assert iu[1] == "finally ran\n"
    assert iu[2].startswith("Traceback (most recent call last):\n")
    assert iu[2].endswith("KeyboardInterrupt\n")


def test_ctrl_c_status_in_shell(tmp_path, env):
    """What a shell sees after Ctrl-C: python's 130 (killed by SIGINT after the traceback)."""
    script = write(tmp_path / "sleeper.py", """\
        import sys, time
        open(sys.argv[1], "w").close()
        time.sleep(60)
        """)
    # `set -m`: the job keeps SIGINT's default disposition although it runs in the background.
    shell = ('set -m; "${@:2}" "$1" & pid=$!; while [ ! -e "$1" ]; do sleep 0.02; done; '
             'sleep 0.2; kill -INT $pid; wait $pid; echo "status=$?"')
    results = []
    for i, argv in enumerate(([BASE_PYTHON, "-E", "-s", script], [BIN, "run", script])):
        proc = subprocess.run(["bash", "-c", shell, "sh", tmp_path / f"ready{i}", *argv],
                              env=env, capture_output=True, text=True, timeout=30,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        # (test_ctrl_c compares the whole traceback; here the timing of `kill` is coarser.)
        results.append((proc.stdout, "\nKeyboardInterrupt\n" in proc.stderr))
    assert results[1] == results[0] == ("status=130\n", True)


GENERATOR = """\
i = 0
while True:
    print(i)
    i += 1
"""


@pytest.mark.parametrize("flags", [[], ["-u"]])
def test_broken_pipe(tmp_path, env, flags):
    """`inferenceutils run gen.py | head -1`: the reader goes away; python's BrokenPipeError."""
    script = write(tmp_path / "gen.py", GENERATOR)
    results = []
    for argv in ([BASE_PYTHON, "-E", "-s", *flags, script], [BIN, "run", *flags, script]):
        shell = '"$@" | head -1; echo "status=${PIPESTATUS[0]}" >&2'
        proc = subprocess.run(["bash", "-c", shell, "sh", *map(str, argv)], env=env,
                              capture_output=True, text=True, timeout=60)
        results.append((proc.stdout, norm(proc.stderr)))
    assert results[1] == results[0]
    out, err = results[1]
    assert out == "0\n"
    assert "BrokenPipeError: [Errno 32] Broken pipe" in err
    assert err.splitlines()[-1] in ("status=1", "status=120")


def test_broken_pipe_closed_reader(tmp_path, env):
    script = write(tmp_path / "gen.py", GENERATOR)
    results = []
    for argv in ([BASE_PYTHON, "-E", "-s", script], [BIN, "run", script]):
        proc = subprocess.Popen(list(map(str, argv)), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "0\n"
        proc.stdout.close()
        err = proc.stderr.read()
        proc.wait(timeout=30)
        results.append((proc.returncode, norm(err)))
    assert results[1] == results[0]
    assert results[1][0] != -signal.SIGPIPE  # python ignores SIGPIPE: an exception, not a kill


# ---------------------------------------------------------------------------------------------
# PYTHON* variables: python's own rules (issue "the launcher is python"). The reference is
# python3.11 -s (a runtime is a venv: no user site); -E after `run` ignores them, as python -E.

def test_pythonpath_honoured_and_e_ignores_it(tmp_path, warm_runtime):
    extra = tmp_path / "extra"
    write(extra / "leaked.py", "VALUE = 'from PYTHONPATH'\n")
    env = clean_env(tmp_path, **warm_runtime, PYTHONPATH=extra)
    code = ["-c", "import leaked; print(leaked.VALUE)"]
    plain = subprocess.run([BASE_PYTHON, "-s", *code], env=env, capture_output=True, text=True)
    iu = run(["run", *code], env)
    assert (iu.returncode, iu.stdout) == (plain.returncode, plain.stdout) == (0, "from PYTHONPATH\n")
    py, iu = both(["run", "-E", *code], code, env)  # run_python is python3.11 -E -s
    assert_same(py, iu)
    assert iu.returncode == 1 and "ModuleNotFoundError: No module named 'leaked'" in iu.stderr
    # --python-env is kept as a no-op alias.
    assert run(["--python-env", "run", *code], env).stdout == "from PYTHONPATH\n"


def test_pythonhome_is_the_launchers(tmp_path, warm_runtime):
    env = clean_env(tmp_path, **warm_runtime, PYTHONHOME=tmp_path / "nowhere")
    code = ["-c", "import sys, os; print(sys.base_prefix, os.__file__)"]
    iu = run(["run", *code], env)
    assert iu.returncode == 0, iu.stderr
    home = str(BIN.parent.parent / "lib" / "inferenceutils" / "python3.11")
    base_prefix, os_file = iu.stdout.split()
    assert base_prefix == home and os_file.startswith(home + "/lib/python3.11/")
    # Sanity: python honouring the variable cannot even start.
    assert subprocess.run([BASE_PYTHON, *code], env=env, capture_output=True).returncode != 0


def test_pythonstartup_honoured(tmp_path, warm_runtime):
    startup = write(tmp_path / "startup.py", "print('STARTUP RAN')\n")
    env = clean_env(tmp_path, **warm_runtime, PYTHONSTARTUP=startup)
    # `-i` with a piped stdin: python's interactive loop, which runs $PYTHONSTARTUP when honoured.
    plain = subprocess.run([BASE_PYTHON, "-s", "-i"], env=env, input="print('hi')\n", capture_output=True, text=True)
    iu = run(["run", "-i"], env, input="print('hi')\n")
    assert (iu.returncode, iu.stdout) == (plain.returncode, plain.stdout) == (0, "STARTUP RAN\nhi\n")
    py, iu = both(["run", "-E", "-i"], ["-i"], env, input="print('hi')\n")
    assert (iu.returncode, iu.stdout) == (py.returncode, py.stdout) == (0, "hi\n")


def test_pythonunbuffered_honoured(tmp_path, warm_runtime):
    script = write(tmp_path / "inter.py", INTERLEAVE)
    env = clean_env(tmp_path, **warm_runtime, PYTHONUNBUFFERED="1")

    def merged(argv):
        return subprocess.run(list(map(str, argv)), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=60).stdout

    assert merged([BIN, "run", script]) == merged([BASE_PYTHON, script]) == "out1\nerr\nout2\n"
    assert merged([BIN, "run", "-E", script]) == merged([BASE_PYTHON, "-E", script]) == "err\nout1\nout2\n"


@pytest.mark.parametrize("name,value,code", [
    ("PYTHONHASHSEED", "123", "print(hash('inferenceutils'))"),
    ("PYTHONIOENCODING", "latin-1", "import sys; print(sys.stdout.encoding)"),
    ("PYTHONWARNINGS", "error::UserWarning", "import warnings; print(warnings.filters[0][0])"),
    ("PYTHONDEVMODE", "1", "import sys; print(sys.flags.dev_mode)"),
    ("PYTHONINTMAXSTRDIGITS", "1000", "import sys; print(sys.get_int_max_str_digits())"),
    ("PYTHONDONTWRITEBYTECODE", "1", "import sys; print(sys.dont_write_bytecode)"),
    ("PYTHONFAULTHANDLER", "1", "import faulthandler; print(faulthandler.is_enabled())"),
    ("PYTHONSAFEPATH", "1", "import sys; print(sys.flags.safe_path)"),
    ("PYTHONINTMAXSTRDIGITS", "foo", "print(1)"),   # python's own fatal error, exit 1
])
def test_python_variables_as_python(tmp_path, warm_runtime, name, value, code):
    env = clean_env(tmp_path, **warm_runtime, **{name: value})
    plain = subprocess.run([BASE_PYTHON, "-s", "-c", code], env=env, capture_output=True, text=True)
    iu = run(["run", "-c", code], env)
    assert (iu.returncode, iu.stdout) == (plain.returncode, plain.stdout), (iu.stderr, plain.stderr)
    assert norm(iu.stderr).splitlines()[:1] == norm(plain.stderr).splitlines()[:1]


def test_user_site_ignored(tmp_path, env):
    site = Path(env["HOME"]) / ".local" / "lib" / "python3.11" / "site-packages"
    write(site / "usersitemod.py", "VALUE = 'user site'\n")
    code = ["-c", "import site, sys; print(site.ENABLE_USER_SITE, any('.local' in p for p in sys.path))\n"
                  "import usersitemod"]
    py, iu = both(["run", *code], code, env)
    assert_same(py, iu)
    assert iu.stdout == "False False\n" and iu.returncode == 1
    # Sanity: python without -s would have used it; so does nothing the launcher offers.
    plain = subprocess.run([BASE_PYTHON, "-E", *code], env=env, capture_output=True, text=True)
    assert plain.returncode == 0
    assert run(["--python-env", "run", *code], env).returncode == 1


@pytest.mark.parametrize("flags", [[], ["-E", "-s"], ["-I"]])
def test_python_flags_passed_to_children(tmp_path, warm_runtime, flags):
    """sys.flags say what python was given, so children started the way multiprocessing does get
    the same isolation as python's."""
    extra = tmp_path / "extra"
    write(extra / "leaked.py", "")
    env = clean_env(tmp_path, **warm_runtime, PYTHONPATH=extra)
    code = ["-c", "import subprocess, sys\n"
                  "flags = subprocess._args_from_interpreter_flags()\n"
                  "r = subprocess.run([sys.executable, *flags, '-c', 'import leaked'], capture_output=True)\n"
                  "print(sys.flags.ignore_environment, flags, r.returncode)"]
    plain = subprocess.run([BASE_PYTHON, *flags, *code], env=env, capture_output=True, text=True)
    iu = run(["run", *flags, *code], env)
    assert (iu.returncode, iu.stdout) == (plain.returncode, plain.stdout), (iu.stderr, plain.stderr)
    assert iu.stdout.split()[-1] == ("0" if not flags else "1")


# ---------------------------------------------------------------------------------------------
# The command line: usage errors, option placement, command-named files, --version/--help

@pytest.mark.parametrize("args", [
    ["frobnicate"],                 # unknown command
    ["--frobnicate", "x.py"],       # unknown launcher option
    ["--home"],                     # option without its value
    ["--quiet=yes", "x.py"],        # flag with a value
    [],                             # nothing to do
    ["run"],                        # run without a program
    ["repl", "extra"],              # repl takes no arguments
    ["help", "frobnicate"],         # no such help topic
])
def test_usage_errors(tmp_path, env, args):
    proc = run(args, env, cwd=tmp_path)
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    assert proc.stderr.startswith("inferenceutils: ") and proc.stderr.count("\n") == 1, proc.stderr


@pytest.mark.parametrize("args", [["-Z"], ["-m"], ["-c"], ["-X"], ["-W"], ["--frobnicate", "x.py"]])
def test_python_usage_error_after_run(tmp_path, env, args):
    """After `run`, python's own option parser speaks: its message, its status 2."""
    py, iu = both(["run", *args], args, env, cwd=tmp_path)
    assert_same(py, iu)
    assert iu.returncode == 2 and "usage: inferenceutils [option]" in iu.stderr


def test_launcher_options_before_script(tmp_path, env):
    script = write(tmp_path / "report.py", REPORT)
    args = [script, "--quiet", "--home", "/x", "-v", "--version"]
    store = env["INFERENCEUTILS_HOME"]  # the warm runtime's store, named explicitly
    for launcher_opts in (["--quiet"], ["-q", "--verbose"], ["--home", store, "-v"],
                          ["--home=" + store], ["--python-env", "--quiet"], ["--"]):
        iu = run([*launcher_opts, *args], env, cwd=tmp_path, check_rc=0)
        assert json.loads(iu.stdout)["argv"] == list(map(str, args))
        iu = run([*launcher_opts, "run", *args], env, cwd=tmp_path, check_rc=0)
        assert json.loads(iu.stdout)["argv"] == list(map(str, args))


def test_everything_after_program_belongs_to_it(tmp_path, env):
    for prog in (["-c", REPORT], ["-m", "report"]):
        write(tmp_path / "report.py", REPORT)
        iu = run(["--quiet", "run", *prog, "--help", "--version", "run", "repl", "-h"], env,
                 cwd=tmp_path, check_rc=0)
        assert json.loads(iu.stdout)["argv"][1:] == ["--help", "--version", "run", "repl", "-h"]


@pytest.mark.parametrize("name", ["repl", "run", "help", "info", "runtime"])
def test_command_named_file_is_a_script_by_path_or_after_run(tmp_path, env, name):
    write(tmp_path / name, REPORT)
    for args in (["./" + name], ["run", name]):
        iu = run([*args, "a", "-v"], env, cwd=tmp_path, check_rc=0)
        assert json.loads(iu.stdout) == {"name": "__main__", "file": f"{tmp_path}/{args[-1]}",
                                         "argv": [args[-1], "a", "-v"],
                                         "path0": str(tmp_path)}
        iu = run(["--quiet", *args], env, cwd=tmp_path, check_rc=0)
        assert json.loads(iu.stdout)["argv"] == [args[-1]]


@pytest.mark.parametrize("name", ["repl", "run", "help", "info", "runtime"])
def test_a_bare_command_word_is_the_command_even_beside_a_file_of_that_name(tmp_path, env, name):
    """A cloned repository holding a file `info` must not turn `inferenceutils info` into running it."""
    marker = tmp_path / "ran"
    write(tmp_path / name, f"open({str(marker)!r}, 'w').write('ran')\nprint('__main__')\n")
    iu = run([name] if name == "help" else [name, "--help"], env, cwd=tmp_path, check_rc=0)
    assert "__main__" not in iu.stdout and not marker.exists()
    assert "usage" in iu.stdout.lower() or "inferenceutils" in iu.stdout


def test_command_named_file_rule_is_documented(env):
    text = " ".join(run(["--help"], env, check_rc=0).stdout.split())
    assert "A bare word that names a command is the command, even if a file of that name exists" in text
    assert "`inferenceutils ./info` or `inferenceutils run info`" in text


def test_version(env):
    proc = run(["--version"], env, check_rc=0)
    version = subprocess.run([BASE_PYTHON, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True).stdout.strip()
    assert re.fullmatch(r"inferenceutils \S+ \(embedded Python " + re.escape(version) + r"\)\n",
                        proc.stdout), proc.stdout
    assert run(["-V"], env, check_rc=0).stdout == proc.stdout
    assert run(["--quiet", "--version"], env, check_rc=0).stdout == proc.stdout


def test_help(env):
    main = run(["--help"], env, check_rc=0)
    assert main.stdout.startswith("usage: inferenceutils") and main.stderr == ""
    for word in ("run SCRIPT", "run -m MODULE", "run -c CODE", "run -i SCRIPT", "repl", "--python-env"):
        assert word in main.stdout
    assert run(["-h"], env, check_rc=0).stdout == main.stdout
    assert run(["help"], env, check_rc=0).stdout == main.stdout
    listed = main.stdout.split("Commands:\n")[1].split("\n\n")[0]
    commands = sorted({line.split()[0] for line in listed.splitlines() if line.startswith("  ")})
    assert {"run", "repl", "info", "runtime", "doctor", "app", "kernel", "help"} <= set(commands)
    for command in commands:
        if command == "help":
            continue
        text = run(["help", command], env, check_rc=0).stdout
        assert text.startswith("usage: inferenceutils") and command in text.splitlines()[0]
        assert run([command, "--help"], env, check_rc=0).stdout == text
    assert "history" in run(["help", "repl"], env).stdout
