"""Issue cases that used to wedge sync, with real `serve`, `sync`, `put` and
`pending` processes over TCP + TLS: a wrong clock, a refused local write, and
two legal writes that merge past the largest record."""
import json
import os
import re

from agent.node import Node
from agent.store.big import MAX_RECORD
from agent.sync.devid import normalize_id

from .helpers import pair, run
from .procs import Serve, cmd, init, wait_for


def _get(data_dir, key):
    return json.loads(cmd(data_dir, "--json", "get", key).stdout)["fields"]


def _log_entries(data_dir):
    with Node(data_dir, readonly=True) as n:
        return sum(1 for _ in n.log.read())


def test_one_wrong_clock_holds_only_its_own_changes(tmp_path):
    """A relays C's changes, and its own clock ran an hour ahead for one
    write. B takes everything else, holds A's changes from there on, says
    so in `pending` and `stats`, and applies them on release."""
    a, b, c = (str(tmp_path / n) for n in "abc")
    ida, idb, _ = init(a), init(b), init(c)
    with Node(a) as na, Node(c) as nc:
        na.put("ok", {"v": 1})
        for i in range(20):
            nc.put("c%d" % i, {"v": i})
        run(*pair(nc, na))
        real = na.clock._wall
        na.clock._wall = lambda: real() + 3600_000
        na.put("future", {"v": 2})
        na.clock._wall = real
        for i in range(20, 40):
            nc.put("c%d" % i, {"v": i})
        run(*pair(nc, na))
        actor_a = "%016x" % na.actor
    srv = Serve(a)
    try:
        cmd(a, "peer", "add", idb, "127.0.0.1:9")
        cmd(b, "peer", "add", ida, srv.addr)
        cmd(b, "sync", ida[:7])
        cmd(b, "sync", ida[:7])                          # again: nothing loops or fails
    finally:
        assert srv.stop() == 0
    for i in range(40):
        assert _get(b, "c%d" % i) == {"v": i}
    assert _get(b, "ok") == {"v": 1}
    cmd(b, "get", "future", check=1)
    items = json.loads(cmd(b, "--json", "pending").stdout)
    assert [(it["kind"], it["actor"]) for it in items] == [("held", actor_a)]
    assert "ahead" in items[0]["why"] and "--max-skew" in items[0]["why"]
    st = json.loads(cmd(b, "--json", "stats").stdout)
    assert st["held_changes"] == 1 and st["missing_changes"] == 0
    found = json.loads(cmd(b, "--json", "check", check=11).stdout)
    assert [(f["name"], f["count"]) for f in found["findings"]] == [("held_changes", 1)]
    out = cmd(b, "pending", "--release", actor_a).stdout
    assert "applied 1" in out
    assert _get(b, "future") == {"v": 2}
    assert json.loads(cmd(b, "--json", "pending").stdout) == []
    assert json.loads(cmd(b, "--json", "check").stdout) == {"ok": True, "findings": []}


def test_a_larger_max_skew_takes_the_change(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ida, idb = init(a), init(b)
    with Node(a) as na:
        real = na.clock._wall
        na.clock._wall = lambda: real() + 3600_000
        na.put("future", {"v": 2})
    srv = Serve(a)
    try:
        cmd(a, "peer", "add", idb, "127.0.0.1:9")
        cmd(b, "peer", "add", ida, srv.addr)
        cmd(b, "sync", ida, "--max-skew", "7200")
    finally:
        srv.stop()
    assert _get(b, "future") == {"v": 2}
    p = cmd(b, "sync", ida, "--max-skew", "soon", check=2)
    assert "seconds" in p.stderr


def test_a_refused_local_write_leaves_no_trace_and_sync_goes_on(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ida, idb = init(a), init(b)
    cmd(a, "put", "first", "v=1")
    seq = json.loads(cmd(a, "--json", "stats").stdout)["seq"]
    entries = _log_entries(a)
    p = cmd(a, "put", "k" * 1025, "v=1", check=2)
    assert "1024" in p.stderr
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 19))                 # 1.5 MiB: over the per-write limit
    p = cmd(a, "put", "r", "v=@%s" % big, check=2)
    assert "one write may be at most" in p.stderr
    assert json.loads(cmd(a, "--json", "stats").stdout)["seq"] == seq
    assert _log_entries(a) == entries
    cmd(a, "put", "after", "v:=2")
    photo = tmp_path / "photo.bin"
    photo.write_bytes(os.urandom(300_000))               # past the largest slot, under 1 MiB
    cmd(a, "put", "photo", "jpg=@%s" % photo)
    srv = Serve(a)
    try:
        cmd(a, "peer", "add", idb, "127.0.0.1:9")
        cmd(b, "peer", "add", ida, srv.addr)
        cmd(b, "sync", ida)
    finally:
        srv.stop()
    assert _get(b, "after") == {"v": 2}
    import base64
    assert base64.b64decode(_get(b, "photo")["jpg"]["$bytes"]) == photo.read_bytes()
    assert _log_entries(b) == entries + 2


def test_two_legal_writes_that_merge_past_the_limit_do_not_stop_sync(tmp_path):
    """Each device writes just over half the largest record (16 MiB) into
    its own field of one key, then more records. Both serve and dial each other:
    the merge that would not fit is quarantined on each side, everything
    else converges, and the sessions do not reconnect in a loop."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ida, idb = init(a), init(b)
    half = "x" * (MAX_RECORD // 2 + 100)
    with Node(a, max_write=MAX_RECORD) as na, Node(b, max_write=MAX_RECORD) as nb:
        na.put("r", {"fa": half})
        nb.put("r", {"fb": half})
        for i in range(50):
            na.put("a%d" % i, {"v": i})
            nb.put("b%d" % i, {"v": i})
    sa, sb = Serve(a), Serve(b)
    try:
        cmd(a, "peer", "add", idb, sb.addr)
        cmd(b, "peer", "add", ida, sa.addr)

        def done():
            try:
                return all(json.loads(cmd(d, "--json", "stats").stdout)["quarantined_changes"]
                           == 1 for d in (a, b))
            except ValueError:
                return False
        assert wait_for(done, 30), (sa.log(), sb.log())
        cmd(a, "put", "late", "v:=1")                         # still flowing afterwards
        assert wait_for(lambda: cmd(b, "get", "late", check=None).returncode == 0, 15)
        import time
        time.sleep(3)
    finally:
        codes = sa.stop(), sb.stop()
    logs = sa.log() + sb.log()
    assert codes == (0, 0), logs
    assert "Traceback" not in logs and "Unhandled" not in logs
    assert len(re.findall(r"connected to", logs)) <= 4, logs   # no reconnect loop
    assert "quarantined" in logs
    for d in (a, b):
        for i in range(50):
            assert _get(d, "a%d" % i) == {"v": i}
            assert _get(d, "b%d" % i) == {"v": i}
        items = json.loads(cmd(d, "--json", "pending").stdout)
        assert [it["kind"] for it in items] == ["quarantined"]
        assert items[0]["why"].startswith("RecordTooLarge")
        assert os.listdir(os.path.join(d, "pending"))


def test_a_pinned_peer_relaying_a_forged_change_gets_it_refused_and_reported(tmp_path):
    """M holds X's real change and a change it made up under X's id (a
    counter of 1,000,000). M's `sync` pushes both to B's `serve`: B takes the
    real one, refuses the forged one, says so in its log, `stats` and
    state.json, and later takes X's real change of that seq from X."""
    from agent.change import build_change, parse_change
    from agent.codec import varint
    from agent.values import Inc
    x, b, m = (str(tmp_path / n) for n in "xbm")
    idx, idb, idm = init(x), init(b), init(m)
    with Node(x) as nx, Node(m) as nm:
        nx.put("c", {"n": Inc(5)})
        run(*pair(nx, nm))
        top = parse_change([r for _, r in nx.log.read()][-1])
        total = b"\x00\x02\x00\x00" + varint(0) + varint(1_000_000) + varint(0)  # counter
        forged = build_change(nx.actor, 2, top.hlc + 1, ["c"], ["n"], [nx.actor], 1, total,
                              prev_hash=top.hash)
        nm.merge_changes([forged])
        assert nm.get("c") == {"n": 1_000_000}
    srv = Serve(b)
    try:
        cmd(b, "peer", "add", idm, "127.0.0.1:9")
        cmd(m, "peer", "add", idb, srv.addr)
        p = cmd(m, "sync", idb[:7])
        assert wait_for(lambda: "REFUSED" in srv.log(), 10), srv.log()
    finally:
        assert srv.stop() == 0
    assert re.search(r"REFUSED 1 change\(s\) from %s .*not signed by its actor" % idm,
                     srv.log()), srv.log()
    assert _get(b, "c") == {"n": 5}
    st = json.loads(cmd(b, "--json", "stats").stdout)
    assert st["refused_changes"] == 1
    with open(os.path.join(b, "sync", "state.json")) as f:
        assert json.load(f)["peers"][normalize_id(idm)]["refused"] == 1
    with Node(x) as nx:
        nx.put("c", {"n": Inc(1)})
    srv = Serve(x)
    try:
        cmd(x, "peer", "add", idb, "127.0.0.1:9")
        cmd(b, "peer", "add", idx, srv.addr)
        p = cmd(b, "--json", "sync", idx[:7])
        assert json.loads(p.stdout)["refused"] == 0
    finally:
        assert srv.stop() == 0
    assert _get(b, "c") == {"n": 6}
