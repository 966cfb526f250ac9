"""`mycelium check PEER` between real processes over TLS: directly, and
through a running serve's control socket (in its live session with the
peer). The devices' vectors agree but one device's store lost updates of
five records, which no version vector can show."""
import json

from agent.history.digests import digests_of
from agent.node import Node
from agent.values import is_visible

from .procs import Serve, cmd, init, wait_for

LOST = ["k11", "k120", "k2", "k250", "k7"]


def _records(d):
    with Node(d, readonly=True) as n:
        return dict(n.scan("")), digests_of(n.store).root


def _check(d, peer, *flags):
    p = cmd(d, "--json", "check", peer, *flags, check=None)
    assert p.returncode in (0, 11), (p.stdout, p.stderr)
    return p.returncode, json.loads(p.stdout)


def _b_lost_updates(tmp_path):
    """a (serving) and b with 300 records, caught up, but b's store lost
    a's last update of each key in LOST. Returns a, b, their ids, a's Serve."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ida, idb = init(a), init(b)
    with Node(a) as n:
        for i in range(300):
            n.put("k%d" % i, {"x": i, "name": "rec %d" % i})
    cmd(a, "peer", "add", idb, "--name", "b")
    sa = Serve(a)
    cmd(b, "peer", "add", ida, sa.addr, "--name", "a")
    cmd(b, "sync", "a")
    with Node(b) as n:
        old = {k: bytes(n.store.load(k)) for k in LOST}
    for k in LOST:
        cmd(a, "put", k, "x=-1")
    cmd(b, "sync", "a")
    with Node(b) as n:          # the damage: b's store loses a's last updates
        for k, blob in old.items():
            n.store.save(k, blob, is_visible(blob))
    return a, b, ida, idb, sa


def test_check_peer_finds_and_repairs_lost_updates(tmp_path):
    a, b, ida, idb, sa = _b_lost_updates(tmp_path)
    try:
        assert _records(b)[0]["k7"]["x"] == 7

        # directly (no serve on b): list only, then the same through b's serve
        rc, out = _check(b, "a", "--no-repair")
        assert rc == 11 and out["differ"] == LOST and not out["agree"]
        assert out["round_trips"] <= 20 and out["wire_bytes"] <= 64 << 10
        sb = Serve(b)
        try:
            assert wait_for(lambda: cmd(b, "--json", "peer", "list").stdout.count(
                '"connected": true') == 1)
            rc, out = _check(b, "a", "--no-repair")
            assert rc == 11 and out["differ"] == LOST
            rc, out = _check(b, "a")
            assert rc == 0 and out["agree"] and out["differ"] == LOST
            assert out["repaired_here"] == LOST
            rc, out = _check(b, "a")
            assert rc == 0 and out["differ"] == [] and out["round_trips"] == 1
            text = cmd(b, "check", "a").stdout
            assert "holds the same records" in text
        finally:
            sb.stop()
        # the fleet: a agrees; a peer that cannot be reached is a failure, not a pass
        p = cmd(b, "--json", "check", "--fleet", check=0)
        got = json.loads(p.stdout)
        assert got["agree"] and [r["agree"] for r in got["peers"]] == [True]
        cmd(b, "peer", "add", init(str(tmp_path / "c")), "127.0.0.1:9", "--name", "gone")
        p = cmd(b, "--json", "check", "--fleet", check=11)
        rows = {r.get("peer"): r for r in json.loads(p.stdout)["peers"]}
        assert sorted(r["agree"] for r in rows.values()) == [False, True]
        assert any("PeerUnreachable" in r.get("error", "") for r in rows.values())
    finally:
        sa.stop()
    ra, rb = _records(a), _records(b)
    assert ra == rb and ra[0]["k7"]["x"] == "-1"   # the CLI put a string


def test_check_peer_repairs_the_serving_side_too(tmp_path):
    """The damaged device is the one serving: the check run on the other
    device joins its records there (RECORDS with a reply asked)."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ida, idb = init(a), init(b)
    with Node(a) as n:
        for i in range(300):
            n.put("k%d" % i, {"x": i})
    cmd(a, "peer", "add", idb, "--name", "b")

    def serve_a():
        srv = Serve(a)
        cmd(b, "peer", "add", ida, srv.addr, "--name", "a")
        return srv

    sa = serve_a()
    cmd(b, "sync", "a")
    sa.stop()
    with Node(a) as n:
        old = {k: bytes(n.store.load(k)) for k in LOST}
    with Node(b) as n:
        for k in LOST:
            n.put(k, {"x": -1})
    sa = serve_a()
    cmd(b, "sync", "a")
    sa.stop()
    with Node(a) as n:               # the damage, on the serving side
        for k, blob in old.items():
            n.store.save(k, blob, is_visible(blob))
    sa = serve_a()
    try:
        rc, out = _check(b, "a")
        assert rc == 0 and out["differ"] == LOST and out["repaired_here"] == []
    finally:
        sa.stop()
    ev = cmd(a, "--json", "events", "--kind", "sync.mended").stdout
    assert _records(a) == _records(b)
    assert _records(a)[0]["k2"]["x"] == -1
    assert sorted(k for line in ev.splitlines()
                  for k in json.loads(line)["changed"]) == LOST, ev


def test_serve_checks_its_peers_unasked(tmp_path, monkeypatch):
    """Two serves in a live session run the check themselves every
    MYCELIUM_CHECK_EVERY seconds: a store that lost updates is found and
    mended with nobody asking, and both say so (timeline, state.json)."""
    from . import procs
    a, b, ida, idb, sa = _b_lost_updates(tmp_path)
    try:
        monkeypatch.setattr(procs, "ENV", dict(procs.ENV, MYCELIUM_CHECK_EVERY="1"))
        sa.stop()
        sa = Serve(a)
        cmd(b, "peer", "add", ida, sa.addr, "--name", "a")
        sb = Serve(b)
        try:
            assert wait_for(lambda: _records(b)[0]["k7"]["x"] == "-1", timeout=60), sb.log()
        finally:
            sb.stop()
    finally:
        sa.stop()
    assert _records(a) == _records(b)
    from agent.sync.devid import stored_id
    first = a if stored_id(ida) < stored_id(idb) else b
    checks = [json.loads(line) for line in
              cmd(first, "--json", "events", "--kind", "check").stdout.splitlines()]
    assert checks and checks[0]["differ"] == 5 and checks[0]["agree"], checks
    rows = [json.loads(line) for line in cmd(first, "--json", "peer", "list").stdout.splitlines()]
    assert rows[0]["last_check"]["agree"] is True
