"""While `mycelium serve` holds a data directory, the other commands go
through its control socket, and what they write reaches the peers."""
import json

from .procs import Serve, cmd, init, paired, wait_for


def test_commands_work_beside_a_running_serve_and_writes_reach_peers(tmp_path):
    a, b, sa, sb = paired(tmp_path)
    try:
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


def test_scans_beside_serve_are_limited_and_streamed_by_the_daemon(tmp_path):
    """`scan --limit 1` costs the daemon one record, and a full scan is sent
    in chunks: serve's RSS grows by a fraction of what the whole result
    would take. Every record arrives, in key order."""
    import subprocess
    import sys
    import threading
    import time
    from agent.node import Node
    from .procs import ENV
    a = str(tmp_path / "a")
    init(a)
    n = 30_000
    with Node(a) as node:
        for i in range(n):
            node.put("k:%06d" % i, {"name": "x" * 200, "i": i, "t": "t%d" % i})
    srv = Serve(a)
    peak = [0]
    stop = []

    def rss():
        with open("/proc/%d/statm" % srv.p.pid) as f:
            return int(f.read().split()[1]) * 4096

    def sample():
        while not stop:
            peak[0] = max(peak[0], rss())
            time.sleep(0.01)
    try:
        time.sleep(0.5)
        base = rss()
        th = threading.Thread(target=sample, daemon=True)
        th.start()
        one = cmd(a, "--json", "scan", "k:", "--limit", "1").stdout.splitlines()
        assert [json.loads(x)["key"] for x in one] == ["k:000000"]
        after_one = peak[0] - base
        p = subprocess.run([sys.executable, "-m", "agent", "--data-dir", a, "scan", "k:",
                            "--keys-only"], capture_output=True, text=True, env=ENV, timeout=120)
        keys = p.stdout.split()
        full = peak[0] - base
        stop.append(1)
    finally:
        srv.stop()
    print("serve RSS growth: scan --limit 1 %.1f MB, full scan of %d records %.1f MB"
          % (after_one / 2**20, n, full / 2**20))
    assert keys == ["k:%06d" % i for i in range(n)]
    # Before: 54 MB for either (the daemon built the whole result). What a
    # full scan still costs is the sorted key list and the store pages it
    # touched, which are mapped (30K slots of 256 bytes: 7.7 MB). The bounds
    # leave room for qemu-user, whose translated code counts in serve's RSS
    # (scan --limit 1: 1.9 MB natively, 4.4 MB seen under arm64 emulation on a
    # loaded machine); both stay far below the 54 MB of the defect.
    assert after_one < 8 << 20
    assert full < 24 << 20
