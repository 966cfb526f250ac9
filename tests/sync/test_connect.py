"""agent.connect beside a running serve (issue 14): the Python API works
while serve holds the data directory, and watch sees every change that
lands, written by another process or synced from a peer. Real processes."""
import threading

import pytest

import agent
from agent.control import RemoteNode
from .procs import Serve, cmd, init, wait_for


def test_connect_beside_serve_reads_writes_and_watches(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ida, idb = init(a), init(b)
    cmd(a, "peer", "add", idb, "127.0.0.1:9")
    srv = Serve(a)
    try:
        with agent.connect(a) as db:
            assert isinstance(db, RemoteNode)
            db.put("s:1", {"t": 21.5, "n": agent.Inc(2)})
            assert db.get("s:1") == {"t": 21.5, "n": 2}
            with pytest.raises(agent.UsageError):
                db.put("s:1", {"n": "text"})          # a counter: typed error, not a crash
            seen, lock = [], threading.Lock()

            def on_change(key, fields):
                with lock:
                    seen.append((key, fields))
            h = db.watch("s:", on_change)
            try:
                cmd(a, "put", "s:2", "t:=3")            # another process, through serve
                cmd(a, "put", "other", "x=1")           # not under the prefix
                cmd(b, "put", "s:3", "t:=4")            # a peer's change, synced in
                cmd(b, "peer", "add", ida, srv.addr)
                cmd(b, "sync", ida[:7])
                assert wait_for(lambda: {k for k, _ in list(seen)} >= {"s:2", "s:3"}, 20), seen
            finally:
                h.cancel()
            got = dict(seen)
            assert got["s:2"] == {"t": 3} and got["s:3"] == {"t": 4}
            assert "other" not in got
        assert cmd(a, "--json", "get", "s:1").returncode == 0
    finally:
        assert srv.stop() == 0


def test_connect_without_serve_opens_the_directory(tmp_path):
    a = str(tmp_path / "a")
    init(a)
    with agent.connect(a) as db:
        assert isinstance(db, agent.Node)
        db.put("k", {"v": 1})
    with agent.connect(a, readonly=True) as db:
        assert db.get("k") == {"v": 1}
    with pytest.raises(agent.UsageError, match="not a Mycelium data directory"):
        agent.connect(str(tmp_path / "nothing"))
