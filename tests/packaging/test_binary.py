"""The built binary itself (packaging/smoke.sh): init, put, get, scan, stats.

Skips when no binary has been built. MYCELIUM_BINARY names one; else
dist/mycelium (make dist). Runs with the wasm core (when the binary has one)
and with MYCELIUM_CORE=reference.
"""
import json
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("MYCELIUM_BINARY") or os.path.join(REPO, "dist", "mycelium")

pytestmark = pytest.mark.skipif(not os.access(BINARY, os.X_OK),
                                reason="no built binary at %s (make dist)" % BINARY)


def _env(tmp_path, **kw):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), **kw)
    env.pop("MYCELIUM_CORE", None)
    env.update(kw)
    return env


@pytest.mark.parametrize("core", ["default", "reference"])
def test_binary_passes_the_smoke_script(tmp_path, core):
    env = _env(tmp_path, **({"MYCELIUM_CORE": "reference", "EXPECT_ENGINE": "reference"}
                            if core == "reference" else {}))
    p = subprocess.run(["sh", os.path.join(REPO, "packaging", "smoke.sh"), BINARY],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr


def test_binary_loads_the_wasm_core_where_wasmtime_exists(tmp_path):
    if os.uname().machine not in ("x86_64", "aarch64"):
        pytest.skip("wasmtime has no build for %s" % os.uname().machine)
    d = str(tmp_path / "d")
    env = _env(tmp_path)
    subprocess.run([BINARY, "--data-dir", d, "init"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([BINARY, "--data-dir", d, "put", "k", "n+=1"], env=env, check=True)
    st = json.loads(subprocess.run([BINARY, "--data-dir", d, "--json", "stats"], env=env,
                                   check=True, capture_output=True, text=True).stdout)
    assert st["engine"] == "wasm"
