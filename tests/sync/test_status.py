"""`mycelium status` for monitoring (issue 14): exit 0 healthy, 1 degraded,
2 down, with the reasons. Real serve processes."""
import json
import time

from .procs import Serve, cmd, init, wait_for


def _status(d, *args):
    p = cmd(d, "--json", "status", *args, check=None)
    return p.returncode, json.loads(p.stdout)


def test_status_down_healthy_degraded(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ida, idb = init(a), init(b)
    rc, s = _status(a)
    assert rc == 2 and s["health"] == "down" and not s["serve"]
    assert "not running" in s["reasons"][0]
    sa = Serve(a)
    try:
        rc, s = _status(a)
        assert rc == 0 and s["health"] == "healthy" and s["serve"], s   # no peers yet
        cmd(a, "peer", "add", idb, "127.0.0.1:9", "--name", "bee")
        rc, s = _status(a)
        assert rc == 1 and any("bee has never synced" in r for r in s["reasons"]), s
        cmd(b, "peer", "add", ida, sa.addr)
        sb = Serve(b)
        try:
            cmd(b, "put", "k", "v=1")
            assert wait_for(lambda: _status(a)[0] == 0 and _status(b)[0] == 0, 30), \
                (_status(a), _status(b))
            assert _status(a)[1]["peers"][0]["behind"] == 0
        finally:
            sb.stop()
        time.sleep(2.5)
        rc, s = _status(a, "--stale", "2")      # b's serve is gone: it no longer syncs
        assert rc == 1 and any(r.startswith("bee last synced") for r in s["reasons"]), s
        rc, s = _status(a)                       # within the default hour: fine
        assert rc == 0, s
        text = cmd(a, "status", "--stale", "2", check=1).stdout
        assert "health   degraded" in text and "bee" in text and idb in text
    finally:
        sa.stop()


def test_status_of_a_directory_that_is_not_one_is_down(tmp_path):
    p = cmd(str(tmp_path / "nothing"), "status", check=None)
    assert p.returncode == 2 and "not a Mycelium data directory" in p.stderr, p.stderr
