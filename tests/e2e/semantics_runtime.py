"""One warm runtime shared by the python-semantics tests (test_python_semantics, test_shebang,
test_repl): those tests compare the launcher with python, not provisioning, so they run in a runtime
built once per pytest session from the offline fixture index (the prebuilt stand-in llama-cpp-python
wheel, preloaded as `llama_cpp`, as a real runtime is). The launcher finds it through
INFERENCEUTILS_HOME and INFERENCEUTILS_SPEC, so command lines and shebang lines stay untouched.

    from semantics_runtime import env, warm_runtime  # noqa: F401  (pytest fixtures)
"""
import pytest

from conftest import clean_env, run

LLAMA_WHEEL_VERSION = "0.3.98"  # fixture_index: the prebuilt wheel, no sdist build


@pytest.fixture(scope="session")
def warm_runtime(tmp_path_factory, fixture_index) -> dict:
    """Environment variables selecting the shared runtime (built here, once)."""
    root = tmp_path_factory.mktemp("semantics-runtime")
    spec = fixture_index.write_spec(root / "spec.toml", [f"llama-cpp-python=={LLAMA_WHEEL_VERSION}"],
                                    ["llama_cpp"],
                                    backends={"cpu": {"wheel_indexes": [fixture_index.prebuilt_url]}})
    variables = {"INFERENCEUTILS_HOME": str(root / "store"), "INFERENCEUTILS_SPEC": str(spec)}
    run(["--quiet", "run", "-c", "import llama_cpp"], clean_env(root, **variables), timeout=600,
        check_rc=0)
    return variables


@pytest.fixture
def env(tmp_path, warm_runtime):
    """conftest's clean environment (private HOME), in the shared warm runtime."""
    return clean_env(tmp_path, **warm_runtime)
