"""Real `serve` and `sync` processes over TCP + TLS on 127.0.0.1."""
import os
import signal
import subprocess
import sys
from collections import Counter

from agent.node import Node
from agent.values import Inc

from .procs import ENV, Serve, cmd, init, snapshot, state_vv, wait_for


def _writer(data_dir, name, n):
    code = ("import sys; from agent.node import Node; from agent.values import Inc, Add\n"
            "with Node(%r) as node:\n"
            "    for i in range(%d):\n"
            "        node.put('shared:%%d' %% (i %% 20), {'n': Inc(1), 'tags': Add(%r), %r: i})\n"
            "        node.put('%s:%%d' %% i, {'v': i})\n" % (data_dir, n, name, name, name))
    return subprocess.Popen([sys.executable, "-c", code], env=ENV)


def test_three_agents_writing_concurrently_converge(tmp_path):
    dirs = [str(tmp_path / n) for n in "abc"]
    ids = [init(d) for d in dirs]
    ws = [_writer(d, n, 150) for d, n in zip(dirs, "abc")]        # concurrent writers
    assert all(w.wait(60) == 0 for w in ws)
    serves = [Serve(d) for d in dirs]
    try:
        for i, d in enumerate(dirs):
            for j in range(3):
                if i != j:
                    cmd(d, "peer", "add", ids[j], serves[j].addr)
        assert wait_for(lambda: (lambda v: None not in v and len({tuple(sorted(x.items()))
                                                                   for x in v}) == 1
                                 and len(v[0]) == 3)([state_vv(d) for d in dirs]), 30), \
            [s.log() for s in serves]
    finally:
        codes = [s.stop() for s in serves]
    assert codes == [0, 0, 0]
    snaps = [snapshot(d) for d in dirs]
    assert snaps[0][0] == snaps[1][0] == snaps[2][0]
    assert snaps[0][1] == snaps[1][1] == snaps[2][1]
    assert snaps[0][0]["shared:3"]["n"] == 3 * len(range(3, 150, 20))
    assert sorted(snaps[0][0]["shared:0"]["tags"]) == ["a", "b", "c"]
    for s in snaps:        # nothing applied twice
        assert max(Counter(s[2]).values()) == 1 and len(s[2]) == 900


def test_killed_mid_sync_resumes_with_nothing_lost_or_doubled(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ida, idb = init(a), init(b)
    with Node(a) as node:
        for i in range(30000):
            node.put("k%d" % i, {"v": i, "n": Inc(1)})
    srv = Serve(a)
    try:
        cmd(a, "peer", "add", idb, "127.0.0.1:9")
        cmd(b, "peer", "add", ida, srv.addr)
        p = subprocess.Popen([sys.executable, "-m", "agent", "--data-dir", b,
                              "sync", ida], env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        log = os.path.join(b, "log")

        def grown():
            try:
                return sum(os.path.getsize(os.path.join(log, f)) for f in os.listdir(log))
            except FileNotFoundError:
                return 0
        assert wait_for(lambda: grown() > 200_000, 30, 0.005)
        p.send_signal(signal.SIGKILL)
        p.wait()
        with Node(b) as node:
            got = node.vv.get(_actor(a), 0)
        assert 0 < got < 30000, "the kill did not land mid-sync (%d changes)" % got
        cmd(b, "sync", ida, timeout=120)
    finally:
        srv.stop()
    sa, sb = snapshot(a), snapshot(b)
    assert sa[0] == sb[0] and sa[1] == sb[1]
    assert Counter(sb[2]).most_common(1)[0][1] == 1 and len(sb[2]) == 30000


def _actor(d):
    import json
    with open(os.path.join(d, "identity.json")) as f:
        return int(json.load(f)["actor"], 16)


def test_unknown_certificate_is_refused(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    ida, idb, idc = init(a), init(b), init(c)
    with Node(a) as node:
        node.put("secret", {"v": 1})
    srv = Serve(a)
    try:
        cmd(a, "peer", "add", idb, "127.0.0.1:9")
        # c is not known to a: refused before any sync message
        cmd(c, "peer", "add", ida, srv.addr)
        p = cmd(c, "sync", ida, check=7)
        assert "peer add" in p.stderr
        assert wait_for(lambda: "refused %s" % idc in srv.log(), 5)
        # b dials a's address but expects another id: b refuses a
        cmd(b, "peer", "add", idc, srv.addr)
        p = cmd(b, "sync", idc, check=7)
        assert "presented device id %s" % ida in p.stderr
    finally:
        srv.stop()
    with Node(c) as node:
        assert node.get("secret") is None
    with Node(b) as node:
        assert node.get("secret") is None


def test_malformed_frames_from_a_known_peer_leave_the_daemon_serving(tmp_path):
    """A known (pinned) but hostile peer sends every malformed frame class;
    each closes only its own connection, and an honest peer keeps syncing."""
    import asyncio
    import types
    from agent.sync.session import Session
    from agent.sync.transport import client_context, connect
    from .test_frames import CASES

    a, b, e = (str(tmp_path / n) for n in "abe")
    ida, idb, ide = init(a), init(b), init(e)
    srv = Serve(a)
    try:
        cmd(a, "peer", "add", idb, "127.0.0.1:9")
        cmd(a, "peer", "add", ide, "127.0.0.1:9")
        cmd(b, "peer", "add", ida, srv.addr)
        host, port = srv.addr.rsplit(":", 1)
        from agent.vector import Known
        k = Known()
        fake = types.SimpleNamespace(actor=0x1234567, vv={}, known=k, advertised=lambda: k,
                                     heads_to_send=lambda: [], _holes_pending=False,
                                     data_dir=e, readonly=True)

        async def attack(data, close_after):
            reader, writer = await connect(host, int(port), client_context(e), ida)
            s = Session(fake, ide, ida)
            s.start()
            writer.write(s.data_to_send() + data)
            await writer.drain()
            if close_after:
                writer.write_eof() if writer.can_write_eof() else None
            got = b""
            while True:                   # a replies HELLO, maybe a BYE, then closes
                chunk = await asyncio.wait_for(reader.read(65536), 10)
                if not chunk:
                    break
                got += chunk
            writer.close()
            return got

        for name, data, err, close_after in CASES:
            if close_after:
                continue                  # a truncated frame then EOF: covered below
            try:
                asyncio.run(attack(data, False))
            except TimeoutError:
                raise AssertionError("%s: the daemon did not close the connection" % name)
            cmd(b, "sync", ida)           # the honest peer still syncs
    finally:
        srv.stop()
    log = srv.log()
    for cls in ("BadCompression", "FrameTooLarge", "MissingContentSize", "SizeMismatch",
                "WindowTooLarge", "BadFrameVersion", "ProtocolError"):
        assert cls in log, (cls, log)
    assert "Traceback" not in log
