"""A brand-new device catches up from a compacted device, with real
processes: `mycelium compact` through a running `serve` (the control
socket), a tail written after it, then `mycelium sync --progress` over TCP
+ TLS on the new device."""
import json
import time

from agent.node import Node
from agent.values import Inc

from tests.sync.procs import Serve, cmd, init, snapshot


def test_a_new_device_syncs_from_a_compacted_serve_by_snapshot_then_tail(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ida, idb = init(a), init(b)
    with Node(a) as node:
        for i in range(6000):                          # 60 updates to each of 100 keys
            node.put("sensor-%02d" % (i % 100), {"reading": i, "n": Inc(1)})
        log_before = node.log.size()
    srv = Serve(a)
    try:
        got = json.loads(cmd(a, "--json", "compact").stdout)    # through serve
        assert got["records"] == 100 and got["segments_dropped"] >= 1, got
        assert got["log_bytes_after"] < log_before / 20, got
        cmd(a, "peer", "add", idb, "127.0.0.1:9")      # b is added after the compaction
        time.sleep(1.2)                                # serve re-reads peers once a second
        for i in range(5):                             # the tail, after the snapshot
            cmd(a, "put", "tail-%d" % i, "v:=%d" % i)
        cmd(b, "peer", "add", ida, srv.addr)
        p = cmd(b, "sync", ida, "--progress", timeout=120)
        assert "snapshot" in p.stderr, p.stderr
        assert "100%" in p.stderr, p.stderr
    finally:
        assert srv.stop() == 0
    ra, rb = snapshot(a), snapshot(b)
    assert rb[0] == ra[0]                              # every record, in full
    assert len(rb[0]) == 105 and rb[0]["sensor-07"]["n"] == 60
    assert rb[1] == ra[1]                              # and the same version vector
    assert len(rb[2]) == 5                             # b's log: the tail alone
    with Node(b) as node:
        st = node.stats()
        assert st["snapshot_bytes"] > 0 and st["compacted_changes"] == 6000, st
