"""A data directory copied onto a second device (or restored from a backup)
writes under the same actor id: the fork is found the first time both
copies meet a common peer, reported on both sides, and the copy that finds
its own actor forked takes a fresh one, so its later writes reach everyone."""
import json
import os
import shutil

from agent.node import Node

from .helpers import make_node, pair, run
from .procs import Serve, cmd, init


def _clone(tmp_path):
    a = make_node(tmp_path / "a")
    for i in range(3):
        a.put("k%d" % i, {"v": i})
    a.close()
    shutil.copytree(str(tmp_path / "a"), str(tmp_path / "a2"))
    return Node(str(tmp_path / "a")), Node(str(tmp_path / "a2"))


def test_a_copy_that_wrote_the_same_seqs_is_found_at_the_common_peer(tmp_path):
    a, a2 = _clone(tmp_path)
    b = make_node(tmp_path / "b")
    actor = a.actor
    assert a2.actor == actor
    a.put("x", {"v": 1})                   # both issue seq 4, with different content
    a2.put("y", {"v": 2})
    run(*pair(a, b))
    sa2, sb = pair(a2, b)
    evs = run(sa2, sb)
    assert not sa2.closed and not sb.closed
    forked = [e for e in evs if e.kind == "forked"]
    assert {e.actor for e in forked} == {actor}
    assert any(f["actor"] == "%016x" % actor for f in b.stats()["forks"])
    own = [f for f in a2.stats()["forks"] if f.get("own")]
    assert own and own[0]["new_actor"] == "%016x" % a2.actor and a2.actor != actor
    # each side keeps the other's signed change of seq 4 for repair
    from agent.change import parse_change
    for node, f, key in ((b, b.stats()["forks"][0], "y"), (a2, own[0], "x")):
        with open(os.path.join(node.data_dir, f["kept"]), "rb") as fh:
            c = parse_change(fh.read())
        assert (c.actor, c.seq, c.keys) == (actor, 4, [key]), f
    # and `mycelium check` says so, on both (read-only, beside the open nodes)
    for node in (b, a2):
        p = cmd(node.data_dir, "check", check=11)
        assert p.stdout.startswith("forks: 1.") and "forks/" in p.stdout, p.stdout
    a2.put("z", {"v": 3})                  # written under the fresh actor
    run(*pair(a2, b))
    run(*pair(a, b))
    assert a.get("z") == {"v": 3} == b.get("z")
    assert a2.get("x") == {"v": 1} or a2.get("x") is None
    path = a2.data_dir
    a2.close()
    a2 = Node(path)                        # the fresh actor and the fork survive a restart
    assert a2.actor != actor and a2.stats()["forks"][0]["own"]
    a2.put("w", {"v": 4})
    run(*pair(a2, b))
    assert b.get("w") == {"v": 4}
    for n in (a, a2, b):
        n.close()


def test_a_restored_backup_behind_its_peers_takes_a_fresh_actor(tmp_path):
    """A copy that wrote nothing since, meeting a peer that holds later
    changes of its actor: without a fresh actor its next write would reuse
    a seq the fleet already holds, and be dropped everywhere."""
    a, a2 = _clone(tmp_path)
    b = make_node(tmp_path / "b")
    actor = a.actor
    for i in range(5):
        a.put("later%d" % i, {"v": i})
    run(*pair(a, b))
    run(*pair(a2, b))
    assert a2.actor != actor and a2.get("later4") == {"v": 4}
    a2.put("new", {"v": 1})
    run(*pair(a2, b))
    run(*pair(a, b))
    assert b.get("new") == {"v": 1} == a.get("new")
    for n in (a, a2, b):
        n.close()


def test_a_copied_data_directory_with_real_processes(tmp_path):
    a, a2, b = (str(tmp_path / n) for n in ("a", "a2", "b"))
    ida, idb = init(a), init(b)
    cmd(a, "put", "k", "v=1")
    shutil.copytree(a, a2)
    cmd(a, "put", "x", "v=1")
    cmd(a2, "put", "y", "v=2")
    srv = Serve(b)
    try:
        cmd(b, "peer", "add", ida, "127.0.0.1:9")
        cmd(a, "peer", "add", idb, srv.addr)
        cmd(a2, "peer", "add", idb, srv.addr)
        import time
        time.sleep(1.2)                    # serve re-reads peers.json once a second
        cmd(a, "sync", idb)
        p = cmd(a2, "sync", idb)
        assert "fork" in p.stderr
        cmd(a2, "put", "z", "v=3")
        cmd(a2, "sync", idb)
        cmd(a, "sync", idb)
    finally:
        assert srv.stop() == 0
    assert "FORK" in srv.log()
    assert json.loads(cmd(a, "--json", "get", "z").stdout)["fields"] == {"v": "3"}
    forks = json.loads(cmd(b, "--json", "stats").stdout)["forks"]
    assert len(forks) == 1
    assert "forks: 1." in cmd(b, "check", check=11).stdout
    own = json.loads(cmd(a2, "--json", "stats").stdout)["forks"]
    assert own[0]["own"] and own[0]["new_actor"] != own[0]["actor"]


def test_a_hostile_peers_hello_cannot_make_a_device_move_or_report_forks(tmp_path):
    """A HELLO is not signed. A pinned peer that claims to hold changes of
    this device's actor above what it issued, or other changes than this
    device's for its seqs (and for a third device's), proves nothing: the
    device keeps its actor and records no fork. Before, each such session
    moved it to a fresh actor id, which every peer's vectors then carried
    for good."""
    x, m, y = (make_node(tmp_path / n) for n in ("x", "m", "y"))
    for i in range(3):
        x.put("x%d" % i, {"v": i})
    y.put("from-y", {"v": 1})
    run(*pair(y, x))
    actor = x.actor
    real = m.advertised

    def lying_vv():
        k = real().copy()
        k.vv[actor] = x.seq + 50
        return k
    m.advertised = lying_vv
    m.heads_to_send = lambda: [(actor, x.seq, b"\xee" * 8), (y.actor, y.seq, b"\xdd" * 8)]
    evs = run(*pair(x, m))
    assert x.actor == actor and x.stats()["forks"] == [] and not x.fork_events
    assert cmd(x.data_dir, "check").stdout.startswith("ok")   # exit 0
    assert not [e for e in evs if e.kind == "forked"]
    x.put("later", {"v": 1})
    m.advertised = real
    run(*pair(x, m))
    assert m.get("later") == {"v": 1} and x.actor == actor


def test_the_fork_evidence_is_sent_from_a_segment_the_peer_seems_to_hold(tmp_path):
    """The change that proves a fork is one the peer's HELLO claims to hold
    (same actor and seq, other content): the session must send it even
    though the log index says the peer holds its segment and block."""
    a, a2 = _clone(tmp_path)
    b = make_node(tmp_path / "b")
    actor = a.actor
    a.put("x", {"v": 1})
    a2.put("y", {"v": 2})
    run(*pair(a, b))
    b.log.seal()                             # a's seq 4 now in a sealed segment of b's log
    for i in range(300):
        b.put("b%d" % i, {"v": i})
    sa2, sb = pair(a2, b)
    run(sa2, sb)
    own = [f for f in a2.stats()["forks"] if f.get("own")]
    assert own and a2.actor != actor, a2.stats()["forks"]
    for n in (a, a2, b):
        n.close()
