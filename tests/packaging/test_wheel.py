"""The wheel `pip install .` builds holds every module of the agent, its
core and the py.typed marker (the package list once left agent.history out:
compaction and snapshots were missing from a non-editable install)."""
import os
import shutil
import subprocess
import sys
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_wheel_holds_every_module(tmp_path):
    # from a copy: a build/ left in the checkout would hand stale files to the wheel
    src = tmp_path / "src"
    shutil.copytree(os.path.join(REPO, "agent"), src / "agent",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.cwasm"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, f), src / f)
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                        "-q", "-w", str(out), str(src)], capture_output=True, text=True,
                       timeout=300, cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    wheel = [f for f in os.listdir(out) if f.endswith(".whl")]
    assert len(wheel) == 1
    names = set(zipfile.ZipFile(out / wheel[0]).namelist())
    want = set()
    for dirpath, _, files in os.walk(os.path.join(REPO, "agent")):
        if "__pycache__" in dirpath:
            continue
        for f in files:
            if f.endswith(".py") or f in ("py.typed", "crdt_core.wasm"):
                want.add(os.path.relpath(os.path.join(dirpath, f), REPO))
    assert "agent/history/snapshot.py" in want and "agent/py.typed" in want
    assert want - names == set()
