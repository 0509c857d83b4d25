"""A bundle matches by what it holds, not by where its packages came from (issue #15, first part):
a runtime built with --find-links (a build host's mirror) and packed serves a machine that has no
index at all, offline and without building; so does an app that embeds it."""
import json
import subprocess
from pathlib import Path

from conftest import clean_env, run


def test_a_bundle_built_from_other_sources_serves_an_offline_machine(tmp_path, fixture_index):
    for name in ("host", "node", "user"):
        (tmp_path / name).mkdir()
    spec = tmp_path / "spec.toml"
    spec.write_text('requirements = ["iu-fixture-pure"]\npreload = ["iu_fixture_pure"]\n')
    build_host = clean_env(tmp_path / "host")
    run(["--spec", spec, "--find-links", fixture_index.files_dir, "--offline", "run", "-c", "pass"], build_host,
        check_rc=0, timeout=300)
    bundle = tmp_path / "rt.tar.zst"
    run(["--spec", spec, "--find-links", fixture_index.files_dir, "--offline", "runtime", "pack", "-o", bundle],
        build_host, check_rc=0, timeout=300)

    node = clean_env(tmp_path / "node")
    code = "import sys; print('iu_fixture_pure' in sys.modules, sys.prefix)"
    # No index of any kind, offline, no building: only the bundle can provide it.
    proc = run(["--spec", spec, "--offline", "--no-build", "--bundle", bundle, "run", "-c", code], node, timeout=300)
    assert proc.returncode == 0, proc.stderr
    preloaded, prefix = proc.stdout.split()
    assert preloaded == "True" and prefix.startswith(node["INFERENCEUTILS_HOME"])
    manifest = json.loads((Path(prefix) / "manifest.json").read_text())
    assert manifest["source"] == "bundle"
    assert manifest["bundle"]["key"] != manifest["key"]  # stood in for another key: same content, other sources

    # An app embedding that bundle starts offline on a fresh store.
    app_dir = tmp_path / "appsrc" / "demo"
    app_dir.mkdir(parents=True)
    (app_dir / "__init__.py").write_text("")
    (app_dir / "cli.py").write_text("import sys\ndef main():\n    print('iu_fixture_pure' in sys.modules)\n")
    out = tmp_path / "demo"
    run(["app", "build", tmp_path / "appsrc", "-o", out, "--entry", "demo.cli:main", "--spec", spec,
         "--with-bundle", bundle], build_host, check_rc=0, timeout=300)
    user = clean_env(tmp_path / "user", INFERENCEUTILS_APP_TERMINAL="1")
    proc = subprocess.run([str(out), "--inferenceutils-offline", "--inferenceutils-no-build"], env=user,
                          capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stdout) == (0, "True\n"), proc.stderr
