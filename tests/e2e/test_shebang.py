"""`#!/usr/bin/env inferenceutils` scripts: the launcher found on PATH, the script run with its args.

The kernel turns `./tool.py A B` with that first line into `/usr/bin/env inferenceutils ./tool.py A B`
(`env -S` splits `inferenceutils --quiet` into two words), so these test the bare-SCRIPT form and
launcher options before the script. Each is compared with the same script under a python shebang.
"""
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import BASE_PYTHON, BIN, clean_env
from semantics_runtime import warm_runtime  # noqa: F401  (fixture: a shared warm runtime)

BODY = """\
import json, sys
print(json.dumps({"name": __name__, "file": __file__, "argv": sys.argv, "path0": sys.path[0]}))
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 0)
"""

ARGS = ["5", "--quiet", "--version", "-h", "run", "repl", "-c", "x", "-m", "y"]


@pytest.fixture
def path_env(tmp_path, warm_runtime):
    """A user's environment whose PATH finds `inferenceutils` (a symlink to the binary under test)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "inferenceutils").symlink_to(Path(BIN).resolve())
    return clean_env(tmp_path, **warm_runtime, PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}")


def make_script(path: Path, shebang: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(shebang + "\n" + BODY)
    path.chmod(0o755)
    return path


def execute(argv, env, cwd):
    return subprocess.run(list(map(str, argv)), env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def reference(tmp_path, name, args, env, cwd, invoke):
    """The same script with a python shebang, placed and invoked the same way."""
    ref_dir = tmp_path / "ref" / Path(name).parent
    script = make_script(ref_dir / Path(name).name, f"#!/usr/bin/env -S {BASE_PYTHON} -E -s")
    return execute([invoke(script), *args], env, cwd)


@pytest.mark.parametrize("shebang", ["#!/usr/bin/env inferenceutils",
                                     "#!/usr/bin/env -S inferenceutils --quiet",
                                     "#!/usr/bin/env -S inferenceutils --quiet --python-env"])
def test_shebang_script_runs_with_args(tmp_path, path_env, shebang):
    script = make_script(tmp_path / "work" / "tool.py", shebang)
    proc = execute(["./tool.py", *ARGS], path_env, script.parent)
    assert proc.stderr == ""
    assert proc.returncode == 5
    # python makes __file__ absolute by joining the current directory: ".../work/./tool.py".
    assert json.loads(proc.stdout) == {"name": "__main__", "file": f"{script.parent}/./tool.py",
                                       "argv": ["./tool.py", *ARGS], "path0": str(script.parent)}
    # Exactly what the same script says under a python shebang, in a directory of its own.
    ref = reference(tmp_path, "tool.py", ARGS, path_env, tmp_path / "ref", lambda s: "./" + s.name)
    assert (ref.returncode, ref.stderr) == (proc.returncode, proc.stderr)
    assert ref.stdout.replace(str(tmp_path / "ref"), str(script.parent)) == proc.stdout


def test_shebang_script_found_on_path_named_like_a_command(tmp_path, path_env):
    """A tool called `run` on PATH: env gets its absolute path, an existing file, so a script."""
    tools = tmp_path / "bin"
    script = make_script(tools / "run", "#!/usr/bin/env inferenceutils")
    proc = execute(["run", "7", "--help"], path_env, tmp_path)
    assert (proc.returncode, proc.stderr) == (7, "")
    assert json.loads(proc.stdout) == {"name": "__main__", "file": str(script),
                                       "argv": [str(script), "7", "--help"], "path0": str(tools)}


def test_shebang_script_without_suffix_by_absolute_path(tmp_path, path_env):
    script = make_script(tmp_path / "scripts" / "mytool", "#!/usr/bin/env -S inferenceutils --quiet")
    proc = execute([script, "0", "-v"], path_env, tmp_path)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert json.loads(proc.stdout)["argv"] == [str(script), "0", "-v"]


def test_shebang_errors_like_python(tmp_path, path_env):
    """An uncaught exception in a shebang script: python's traceback and status 1."""
    script = tmp_path / "work" / "boom.py"
    script.parent.mkdir()
    script.write_text("#!/usr/bin/env inferenceutils\nraise RuntimeError('boom')\n")
    script.chmod(0o755)
    proc = execute(["./boom.py"], path_env, script.parent)
    assert proc.returncode == 1
    assert proc.stderr == textwrap.dedent(f"""\
        Traceback (most recent call last):
          File "{script.parent}/./boom.py", line 2, in <module>
            raise RuntimeError('boom')
        RuntimeError: boom
        """)
