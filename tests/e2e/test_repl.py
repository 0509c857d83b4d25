"""The interactive prompt (`repl`, `run -i SCRIPT`) under a real terminal: a pseudo-terminal.

Checks the prompt, evaluation, readline line editing (Ctrl-A/Ctrl-E, Ctrl-P history recall), the
history file in $XDG_STATE_HOME/inferenceutils/history (never ~/.python_history) and that Ctrl-D
exits 0 -- as `python3.11 -E -s` does at its own prompt.
"""
import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import textwrap
import time
from pathlib import Path

import pytest

from conftest import BASE_PYTHON, BIN, clean_env
from semantics_runtime import warm_runtime  # noqa: F401  (fixture: a shared warm runtime)

CTRL_A, CTRL_C, CTRL_D, CTRL_E, CTRL_P = b"\x01", b"\x03", b"\x04", b"\x05", b"\x10"
TIMEOUT = 15


class Terminal:
    """A child process on a pseudo-terminal (its stdin, stdout and stderr, and controlling tty)."""

    def __init__(self, argv, env, cwd=None):
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))

        def child_setup():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            signal.signal(signal.SIGINT, signal.SIG_DFL)

        self.proc = subprocess.Popen(list(map(str, argv)), env=env, cwd=cwd, stdin=slave,
                                     stdout=slave, stderr=slave, preexec_fn=child_setup)
        os.close(slave)
        self.master = master
        self.output = b""

    def read_until(self, needle: bytes, timeout=TIMEOUT) -> bytes:
        """Reads until `needle` appears in the output not yet consumed; returns that output."""
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"no {needle!r} in the terminal output: {self.output!r} "
                                     f"(exit status: {self.proc.poll()})")
        head, _, self.output = self.output.partition(needle)
        return head + needle

    def _read(self, timeout) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.master, 4096)
        except OSError:  # EIO: the child is gone and the terminal closed
            return False
        self.output += data
        return bool(data)

    def send(self, data: bytes):
        os.write(self.master, data)

    def wait_blocked(self, timeout=5.0):
        """Waits until the child sleeps (waiting for input), e.g. before sending Ctrl-C: python's
        readline loop only sees a SIGINT that arrives while it waits in select(); one that arrives
        while it still processes earlier input stays unnoticed until the next key (as at a real
        terminal, where nobody types that fast)."""
        deadline = time.monotonic() + timeout
        sleeping = 0
        while time.monotonic() < deadline and sleeping < 3:
            with open(f"/proc/{self.proc.pid}/stat") as stat:
                state = stat.read().rpartition(")")[2].split()[0]
            sleeping = sleeping + 1 if state == "S" else 0
            time.sleep(0.02)

    def wait(self, timeout=TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while self._read(max(0.0, deadline - time.monotonic())):  # drain so it never blocks
            pass
        try:
            return self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        finally:
            self.close()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.master >= 0:  # once: the number may belong to another file afterwards
            os.close(self.master)
            self.master = -1


@pytest.fixture
def term_env(tmp_path, warm_runtime):
    env = clean_env(tmp_path, **warm_runtime, TERM="xterm", XDG_STATE_HOME=tmp_path / "state",
                    INPUTRC=tmp_path / "no-inputrc")  # readline's defaults (emacs mode)
    return env


def history_file(tmp_path) -> Path:
    return tmp_path / "state" / "inferenceutils" / "history"


PROMPT = b">>> "

INTERPRETERS = {
    "python": lambda: [BASE_PYTHON, "-E", "-s"],
    "repl": lambda: [BIN, "repl"],
    "run-i": lambda: [BIN, "run", "-i"],
}


@pytest.mark.parametrize("which", INTERPRETERS)
def test_prompt_eval_and_ctrl_d(tmp_path, term_env, which):
    term = Terminal(INTERPRETERS[which](), term_env, cwd=tmp_path)
    try:
        banner = term.read_until(PROMPT)
        assert b"Python 3.11" in banner
        term.send(b"1+1\r")
        assert b"\r\n2\r\n" in term.read_until(PROMPT)
        term.send(b"import sys; print(sys.argv, repr(sys.path[0]), __name__)\r")
        assert b"[''] '' __main__" in term.read_until(PROMPT)
        term.send(CTRL_D)
        assert term.wait() == 0
    finally:
        term.close()


@pytest.mark.parametrize("which", INTERPRETERS)
def test_line_editing(tmp_path, term_env, which):
    term = Terminal(INTERPRETERS[which](), term_env, cwd=tmp_path)
    try:
        term.read_until(PROMPT)
        # "1+" then Ctrl-A (start of line), "4", Ctrl-E (end of line), "1": the line is "41+1".
        # Without readline the control characters would reach python: a SyntaxError.
        term.send(b"1+" + CTRL_A + b"4" + CTRL_E + b"1\r")
        assert b"\r\n42\r\n" in term.read_until(PROMPT)
        # Ctrl-P recalls the previous line; "*2" is appended: 41+1*2.
        term.send(CTRL_P + b"*2\r")
        assert b"\r\n43\r\n" in term.read_until(PROMPT)
        term.send(CTRL_D)
        assert term.wait() == 0
    finally:
        term.close()


@pytest.mark.parametrize("which", INTERPRETERS)
def test_ctrl_c_at_prompt(tmp_path, term_env, which):
    """Ctrl-C at the prompt: KeyboardInterrupt, a fresh prompt, the session goes on."""
    term = Terminal(INTERPRETERS[which](), term_env, cwd=tmp_path)
    try:
        term.read_until(PROMPT)
        term.send(b"half typed")
        term.read_until(b"half typed")
        term.wait_blocked()
        term.send(CTRL_C)
        assert b"KeyboardInterrupt" in term.read_until(PROMPT)
        term.send(b"2+3\r")
        assert b"\r\n5\r\n" in term.read_until(PROMPT)
        term.send(CTRL_D)
        assert term.wait() == 0
    finally:
        term.close()


@pytest.mark.parametrize("opt_in", [False, True])
def test_pythonstartup_at_prompt(tmp_path, term_env, opt_in):
    """$PYTHONSTARTUP runs at python's prompt as python runs it (`repl`, as python -s); `run -E`
    ignores it, as python -E."""
    startup = tmp_path / "startup.py"
    startup.write_text("print('STARTUP' + ' RAN')\nfrom_startup = 1\n")
    term_env["PYTHONSTARTUP"] = str(startup)
    argv = [BIN, "repl"] if opt_in else [BIN, "run", "-E"]
    reference = [BASE_PYTHON, "-s"] if opt_in else [BASE_PYTHON, "-E", "-s"]
    for command in (reference, argv):
        term = Terminal(command, term_env, cwd=tmp_path)
        try:
            assert (b"STARTUP RAN" in term.read_until(PROMPT)) == opt_in
            term.send(b"'from_startup' in globals()\r")
            assert f"\r\n{opt_in}\r\n".encode() in term.read_until(PROMPT)
            term.send(CTRL_D)
            assert term.wait() == 0
        finally:
            term.close()


def test_history_file_in_state_dir(tmp_path, term_env):
    home = Path(term_env["HOME"])
    term = Terminal([BIN, "repl"], term_env, cwd=tmp_path)
    try:
        term.read_until(PROMPT)
        term.send(b"6*7\r")
        assert b"\r\n42\r\n" in term.read_until(PROMPT)
        term.send(CTRL_D)
        assert term.wait() == 0
    finally:
        term.close()
    assert history_file(tmp_path).read_text().splitlines()[-1] == "6*7"
    assert not (home / ".python_history").exists()

    # A new session reads it back: Ctrl-P at once recalls the previous session's line.
    term = Terminal([BIN, "repl"], term_env, cwd=tmp_path)
    try:
        term.read_until(PROMPT)
        term.send(CTRL_P + b"+1\r")
        assert b"\r\n43\r\n" in term.read_until(PROMPT)
        term.send(CTRL_D)
        assert term.wait() == 0
    finally:
        term.close()
    assert history_file(tmp_path).read_text().splitlines()[-2:] == ["6*7", "6*7+1"]
    assert not (home / ".python_history").exists()


def test_history_default_location(tmp_path, term_env):
    """Without XDG_STATE_HOME: ~/.local/state/inferenceutils/history."""
    del term_env["XDG_STATE_HOME"]
    home = Path(term_env["HOME"])
    term = Terminal([BIN, "repl"], term_env, cwd=tmp_path)
    try:
        term.read_until(PROMPT)
        term.send(b"'default place'\r")
        term.read_until(PROMPT)
        term.send(CTRL_D)
        assert term.wait() == 0
    finally:
        term.close()
    assert (home / ".local/state/inferenceutils/history").read_text().splitlines()[-1] == \
        "'default place'"
    assert not (home / ".python_history").exists()


def test_exit_status_from_prompt(tmp_path, term_env):
    term = Terminal([BIN, "repl"], term_env, cwd=tmp_path)
    try:
        term.read_until(PROMPT)
        term.send(b"raise SystemExit(4)\r")
        assert term.wait() == 4
    finally:
        term.close()


def test_run_i_script_keeps_globals(tmp_path, term_env):
    script = tmp_path / "setup_state.py"
    script.write_text(textwrap.dedent("""\
        import sys
        answer = 42
        print("script ran", sys.argv[1:])
        """))
    results = {}
    for which, argv in (("python", [BASE_PYTHON, "-E", "-s", "-i", script, "x"]),
                        ("launcher", [BIN, "run", "-i", script, "x"])):
        term = Terminal(argv, term_env, cwd=tmp_path)
        try:
            before = term.read_until(PROMPT)
            assert b"script ran ['x']" in before
            assert b"Python 3.11" not in before  # no banner after a script, as in python
            # python removes __file__ from __main__ after running the script.
            term.send(b"answer + 1, __name__, '__file__' in globals()\r")
            results[which] = term.read_until(PROMPT)
            term.send(CTRL_D)
            assert term.wait() == 0
        finally:
            term.close()
        assert b"(43, '__main__', False)" in results[which]
    assert history_file(tmp_path).read_text().splitlines()[-1] == \
        "answer + 1, __name__, '__file__' in globals()"


def test_run_i_after_exception(tmp_path, term_env):
    """python -i enters the prompt even after the script fails, and then exits 0 on Ctrl-D."""
    script = tmp_path / "fails.py"
    script.write_text("value = 'kept'\nraise ValueError('bad')\n")
    term = Terminal([BIN, "run", "-i", script], term_env, cwd=tmp_path)
    try:
        assert b"ValueError: bad" in term.read_until(PROMPT)
        term.send(b"value\r")
        assert b"'kept'" in term.read_until(PROMPT)
        term.send(CTRL_D)
        assert term.wait() == 0
    finally:
        term.close()
