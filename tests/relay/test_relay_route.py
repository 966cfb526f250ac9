"""A peer whose address does not answer while the relay is connected is left
to the relay: serve says so in `peer list`, and its writes still arrive."""
import json

from agent.client import connect

from tests.sync.procs import Serve, cmd, init, wait_for


def test_an_unreachable_peer_is_left_to_the_relay(tmp_path, natsd):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    init(a)
    idb = init(b)
    for d in (a, b):
        cmd(d, "relay", "add", natsd.url, "--fleet", "route")
    cmd(a, "peer", "add", idb, "127.0.0.1:9")        # nothing listens there
    sa, sb = Serve(a), Serve(b)
    try:
        def row():
            return json.loads(cmd(a, "--json", "peer", "list").stdout)
        assert wait_for(lambda: row()["route"] == "relay", timeout=30, step=0.5), \
            (row(), sa.log()[-2000:])
        assert row()["sync"].startswith("unreachable 3 times"), row()
        with connect(b) as c:
            c.put("from-b", {"v": 1})

        def arrived():
            with connect(a, readonly=True) as n:
                return n.get("from-b") == {"v": 1}
        assert wait_for(arrived, timeout=20), sa.log()[-2000:]
    finally:
        sa.stop()
        sb.stop()
