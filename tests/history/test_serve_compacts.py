"""`serve` compacts by itself once the log has grown past MYCELIUM_COMPACT_MB
(the log found at start counts), and a peer it has heard from holds back
only what that peer lacks."""
import os

from agent.node import Node
from agent.values import Inc

from tests.sync.procs import ENV, Serve, cmd, init, snapshot, wait_for


def test_serve_compacts_a_grown_log_by_itself_and_keeps_every_record(tmp_path, monkeypatch):
    a = str(tmp_path / "a")
    init(a)
    with Node(a) as node:
        for i in range(3000):
            node.put("k%02d" % (i % 50), {"v": i, "n": Inc(1)})
        before = node.log.size()
    want = snapshot(a)[0]
    monkeypatch.setitem(ENV, "MYCELIUM_COMPACT_MB", "0.1")
    monkeypatch.setitem(ENV, "MYCELIUM_COMPACT_GAP", "2")
    srv = Serve(a)
    try:
        snap = os.path.join(a, "history", "snapshot")
        assert wait_for(lambda: os.path.exists(snap), 20), srv.log()
        assert wait_for(lambda: "compacted: snapshot of 50 record(s)" in srv.log(), 10), srv.log()
        st = __import__("json").loads(cmd(a, "--json", "stats").stdout)
        assert st["log_bytes"] < before / 10 and st["compacted_changes"] == 3000, st
    finally:
        assert srv.stop() == 0
    assert snapshot(a)[0] == want
