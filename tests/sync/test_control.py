"""While `mycelium serve` holds a data directory, the other commands go
through its control socket, and what they write reaches the peers."""
import json

from .procs import Serve, cmd, init, wait_for


def test_commands_work_beside_a_running_serve_and_writes_reach_peers(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ida, idb = init(a), init(b)
    sa, sb = Serve(a), Serve(b)
    try:
        cmd(a, "peer", "add", idb, sb.addr)
        cmd(b, "peer", "add", ida, sa.addr)
        cmd(a, "put", "s:1", "site=hall", "n+=2", "tags[]+=x", "m|=ok")
        cmd(a, "put", "s:1", "n+=3", "tags[]-=x")
        got = json.loads(cmd(a, "--json", "get", "s:1").stdout)
        assert got["fields"] == {"site": "hall", "n": 5, "m": ["ok"]}
        stats = json.loads(cmd(a, "--json", "stats").stdout)
        assert stats["served_by"] == "mycelium serve" and stats["records"] == 1
        cmd(a, "get", "nope", check=1)
        cmd(a, "put", "s:1", "n=text", check=2)      # kind errors keep their exit code

        def on_b():
            p = cmd(b, "--json", "get", "s:1", check=None)
            return p.returncode == 0 and json.loads(p.stdout)["fields"]["n"] == 5
        assert wait_for(on_b, 30), sa.log() + sb.log()
        cmd(b, "del", "s:1")
        assert wait_for(lambda: cmd(a, "get", "s:1", check=None).returncode == 1, 30)
        rows = cmd(b, "--json", "scan", "").stdout.splitlines()
        assert rows == []
    finally:
        assert sa.stop() == 0 and sb.stop() == 0
    # with the daemons gone the commands open the store themselves again
    assert cmd(a, "get", "s:1", check=None).returncode == 1
