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
    os.chmod(tmp_path, 0o755)       # as /var/lib is: only the data directory is closed
    for up in (tmp_path.parent, tmp_path.parent.parent):
        os.chmod(up, 0o755)
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



def _as_other_user(d, *args):
    """The CLI run as a user that is neither the directory's owner nor in its
    group: a forked child drops to it and runs cli.main (this Python may not
    be executable by another user; what main needs is imported first)."""
    import importlib
    import agent.cli as cli
    for m in ("pwd", "agent.config", "agent.sync.devid"):   # the child cannot import from /root
        importlib.import_module(m)
    r_out, w_out = os.pipe()
    r_err, w_err = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            sys.stdout = os.fdopen(w_out, "w")      # not pytest's capture
            sys.stderr = os.fdopen(w_err, "w")
            os.setgroups([])
            os.setgid(GID - 1)
            os.setuid(UID - 1)
            os.environ.pop("MYCELIUM_DATA_DIR", None)
            code = cli.main(["--data-dir", d, *args])
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException as e:      # noqa: BLE001  (reported through the pipe)
            os.write(2, ("Traceback: %r" % e).encode())
            code = 99
        os._exit(code)
    os.close(w_out)
    os.close(w_err)
    with os.fdopen(r_out) as fo, os.fdopen(r_err) as fe:
        out, err = fo.read(), fe.read()
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return subprocess.CompletedProcess(args, code, out, err)


def test_a_closed_directory_is_named_with_its_owner_not_called_uninitialised(service_dir):
    """The service's directory is 0750: to anyone outside its group, every
    command said "is not a Mycelium data directory; run mycelium init" (and
    config show failed on the mycelium.toml it could not read)."""
    os.chmod(service_dir, 0o750)
    before = _tree(service_dir)
    for args in (("get", "k"), ("put", "k", "v=3"), ("status",)):
        p = _as_other_user(service_dir, *args)
        assert p.returncode == 2, (args, p.stderr)
        assert "belongs to user nobody" in p.stderr and "sudo -u nobody" in p.stderr, p.stderr
        assert "init" not in p.stderr and "Traceback" not in p.stderr
    p = _as_other_user(service_dir, "config", "show")
    assert p.returncode == 0, p.stderr
    assert "data_dir" in p.stdout and "was not read" in p.stderr
    assert _tree(service_dir) == before
