"""A CLI write run as root on the service's data directory (owned by the
service's user) must leave no root-owned file behind: the service, which
runs as that user, would then fail with "Permission denied" (issue 14).
Root may read it; a write is refused, naming the command to run instead.
Real processes; needs root (CI runs as root)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
UID, GID = 65534, 65534     # nobody; any non-root owner will do


def run(d, *args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("MYCELIUM_DATA_DIR", None)
    return subprocess.run([sys.executable, "-m", "agent", "--data-dir", d, *args],
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture
def service_dir(tmp_path):
    d = str(tmp_path / "data")
    assert run(d, "init").returncode == 0
    assert run(d, "put", "k", "v=1").returncode == 0
    for dirpath, dirnames, filenames in os.walk(d):     # as install.sh leaves it
        for n in [dirpath] + [os.path.join(dirpath, x) for x in dirnames + filenames]:
            os.lchown(n, UID, GID)
    return d


def _tree(d):
    out = {}
    for dirpath, dirnames, filenames in os.walk(d):
        for n in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, n))
            out[os.path.relpath(os.path.join(dirpath, n), d)] = (st.st_uid, st.st_size,
                                                                  st.st_mtime_ns)
    return out


WRITES = [("put", "k", "v=2"), ("del", "k"), ("compact",), ("repair",),
          ("peer", "add", "AAAAAAA-AAAAAAA-AAAAAAA-AAAAAAA-A", "127.0.0.1:9"),
          ("pending", "--release", "all"), ("init",), ("sync", "AAAA")]


@pytest.mark.parametrize("args", WRITES, ids=[" ".join(a[:2]) for a in WRITES])
def test_root_is_refused_a_write_and_nothing_is_left_behind(service_dir, args):
    before = _tree(service_dir)
    p = run(service_dir, *args)
    assert p.returncode == 2, (args, p.stdout, p.stderr)
    assert "sudo -u nobody" in p.stderr and "Traceback" not in p.stderr
    assert _tree(service_dir) == before
    assert all(uid == UID for uid, _, _ in before.values())


def test_root_may_read(service_dir):
    before = _tree(service_dir)
    p = run(service_dir, "--json", "get", "k")
    assert p.returncode == 0 and '"v": "1"' in p.stdout, p.stderr
    for args in (("scan",), ("stats",), ("check",), ("peer", "list"), ("pending",), ("id",)):
        p = run(service_dir, *args)
        assert p.returncode == 0, (args, p.stderr)
    assert {k: v[0] for k, v in _tree(service_dir).items()} == \
        {k: v[0] for k, v in before.items()}


def test_root_defaults_to_the_service_data_dir(service_dir, monkeypatch):
    """With no --data-dir, root uses the service's directory, not a second
    empty device under /root."""
    import agent.cli as cli
    monkeypatch.setattr(cli, "SERVICE_DATA_DIR", service_dir)
    monkeypatch.delenv("MYCELIUM_DATA_DIR", raising=False)
    assert cli._default_data_dir() == service_dir
    monkeypatch.setenv("MYCELIUM_DATA_DIR", "/elsewhere")
    assert cli._default_data_dir() == "/elsewhere"
