"""`serve` under attack, as a real process: a flood of idle and half-done
TLS connections, and a pinned peer opening many sessions that send bombs
and partial frames. Its RSS is sampled all along: it must stay under 100 MB
(the shipped unit's MemoryMax is 160M), fall back under 50 MB within 10 s
after the attack, and a real peer must still sync meanwhile."""
import asyncio
import os
import resource
import socket
import ssl
import struct
import threading
import time

import zstandard

from agent.sync.transport import client_context, connect
from agent.sync.session import Session

from .helpers import make_node
from .procs import Serve, cmd, init

FLOOD = 1000


CGROUP_V1 = "/sys/fs/cgroup/memory"
MEMORY_MAX = 160 << 20          # packaging/systemd/mycelium.service: MemoryMax=160M


def _confine(pid, name):
    """Put pid in a memory cgroup limited like the shipped unit (cgroup v1
    here; v2 where that is what the machine has). Returns its directory, or
    None where neither can be used (not root)."""
    for base, limit, key in (("/sys/fs/cgroup/unified", "memory.max", "cgroup.procs"),
                             (CGROUP_V1, "memory.limit_in_bytes", "tasks")):
        d = os.path.join(base, name)
        try:
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, limit), "w") as f:
                f.write(str(MEMORY_MAX))
            with open(os.path.join(d, key), "w") as f:
                f.write(str(pid))
            return d
        except OSError:
            try:
                os.rmdir(d)
            except OSError:
                pass
    return None


def _release(d):
    if d:
        try:
            os.rmdir(d)
        except OSError:
            pass


def _rss_mb(pid):
    with open("/proc/%d/statm" % pid) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


class Sampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, False

    def run(self):
        while not self.stop:
            try:
                self.peak = max(self.peak, _rss_mb(self.pid))
            except OSError:
                return
            time.sleep(0.05)


def _client_hello():
    """The first flight of a TLS 1.3 client: sent, then the client goes silent."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def _settle(pid, limit_mb, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if _rss_mb(pid) < limit_mb:
            return _rss_mb(pid)
        time.sleep(0.2)
    return _rss_mb(pid)


def test_a_flood_of_unauthenticated_connections_is_capped(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ida, idb = init(a), init(b)
    cmd(a, "peer", "add", idb, "127.0.0.1:9")
    for i in range(3):
        cmd(a, "put", "k%d" % i, "v:=%d" % i)
    srv = Serve(a)
    cg = _confine(srv.p.pid, "mycelium-flood-%d" % os.getpid())
    host, port = srv.addr.rsplit(":", 1)
    sampler = Sampler(srv.p.pid)
    sampler.start()
    hello = _client_hello()
    socks = []
    try:
        base = _rss_mb(srv.p.pid)
        for i in range(FLOOD):
            s = socket.create_connection((host, int(port)))
            if i % 2:
                s.sendall(hello)          # a handshake begun and abandoned
            socks.append(s)
        time.sleep(2)
        flood_peak = sampler.peak
        cmd(b, "peer", "add", ida, srv.addr)
        cmd(b, "sync", ida, timeout=60)   # a real peer still gets through
        assert "k2" in cmd(b, "scan", "--keys-only").stdout
        closed = 0
        for s in socks:
            s.setblocking(False)
            try:
                while True:                  # a ServerHello may come before the close
                    if s.recv(1 << 16) == b"":
                        closed += 1
                        break
            except BlockingIOError:
                pass
            except OSError:                  # reset
                closed += 1
        during = sampler.peak
    finally:
        for s in socks:
            s.close()
    after = _settle(srv.p.pid, 50, 10)
    sampler.stop = True
    assert srv.p.poll() is None, srv.log()          # not OOM-killed under MemoryMax
    code = srv.stop()
    _release(cg)
    print("flood (%s): base %.1f MB, peak %.1f MB (%.1f MB before the real sync), after %.1f MB, "
          "%d of %d connections dropped" % ("in a 160 MiB cgroup" if cg else "no cgroup", base,
                                            during, flood_peak, after, closed, FLOOD))
    assert code == 0
    assert closed >= FLOOD - 64 - 1          # all but the newest 64 were dropped
    assert during < 100, during
    assert after < 50, after
    assert "connection(s) dropped" in srv.log()


def test_a_pinned_peer_with_many_sessions_of_bombs_is_bounded(tmp_path):
    """32 sessions from one pinned peer, each sending a HELLO and then a
    zstd bomb (16 MiB of zeros in a few KB) or most of a 16 MiB frame."""
    a = str(tmp_path / "a")
    ida = init(a)
    evil = make_node(tmp_path / "evil")
    from agent.sync.devid import display_id
    from agent.sync.identity import ensure_identity
    ide = ensure_identity(str(tmp_path / "evil"))
    cmd(a, "peer", "add", display_id(ide), "127.0.0.1:9")
    srv = Serve(a)
    cg = _confine(srv.p.pid, "mycelium-bombs-%d" % os.getpid())
    host, port = srv.addr.rsplit(":", 1)
    sampler = Sampler(srv.p.pid)
    sampler.start()
    base = _rss_mb(srv.p.pid)
    bomb_body = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(
        b"\x02" + b"\x00" * ((16 << 20) - 1))
    bomb = struct.pack("<I", len(bomb_body) + 1) + b"\x01" + bomb_body
    partial = struct.pack("<I", 16 << 20) + b"\x01" + os.urandom((15 << 20))

    async def one(i):
        try:
            reader, writer = await connect(host, int(port), client_context(str(tmp_path / "evil")),
                                           ida)
        except Exception:
            return "refused"
        s = Session(evil, ide, ida)
        s.start()
        try:
            writer.write(s.data_to_send())
            writer.write(bomb if i % 2 else partial)
            await writer.drain()
            await asyncio.wait_for(reader.read(1 << 16), 5)
        except (Exception, asyncio.TimeoutError):
            pass
        finally:
            writer.close()
        return "done"

    async def attack():
        return await asyncio.gather(*(one(i) for i in range(32)))

    asyncio.run(attack())
    during = sampler.peak
    after = _settle(srv.p.pid, 50, 10)
    sampler.stop = True
    alive = srv.p.poll() is None                    # not OOM-killed under MemoryMax
    code = srv.stop()
    _release(cg)
    evil.close()
    print("bombs (%s): base %.1f MB, peak %.1f MB, after %.1f MB"
          % ("in a 160 MiB cgroup" if cg else "no cgroup", base, during, after))
    assert alive and code == 0, srv.log()
    assert "opened more than 2 sessions; the oldest is closed" in srv.log()
    assert during < 100, during
    assert after < 50, after
