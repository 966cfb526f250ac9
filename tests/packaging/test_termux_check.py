"""`sh packaging/termux/build.sh --check` as a new user runs it, with the
system's Python (which has none of the agent's dependencies): the script
makes its venv first and checks the agent in it, on the reference engine,
with no wasmtime (issue 14: its self-check ran the system python and failed
with "ModuleNotFoundError: pyroaring"). Needs PyPI (or pip's cache)."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_termux_check_runs_in_the_venv_it_makes(tmp_path):
    base = os.path.join(sys.base_prefix, "bin", "python3")
    probe = subprocess.run([base, "-c", "import pyroaring"], capture_output=True)
    assert probe.returncode != 0, "the base python has pyroaring: the test would prove nothing"
    env = dict(os.environ, HOME=str(tmp_path), PYTHON=base)
    for k in ("VIRTUAL_ENV", "PYTHONPATH", "MYCELIUM_CORE"):
        env.pop(k, None)
    p = subprocess.run(["sh", os.path.join(REPO, "packaging", "termux", "build.sh"), "--check"],
                       capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "reference engine ok" in p.stderr and "checks passed" in p.stderr
    venv = tmp_path / ".cache" / "mycelium-build" / "venv" / "bin" / "python"
    got = subprocess.run([str(venv), "-c", "import wasmtime"], capture_output=True)
    assert got.returncode != 0          # the check really ran without wasmtime
