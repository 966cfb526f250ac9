"""`mycelium serve | sync | peer add | peer list | id`.

Their arguments are in parser.py (agent/cli.py adds them). Each command
takes args with data_dir, json and durable and returns an exit code.
"""
import asyncio
import json
import random
import signal
import sys
import time

from ..control import ControlServer, socket_path
from ..errors import AgentError, UsageError, SyncError
from . import peers as P
from .errors import PeerUnreachable, UnknownPeer
from .identity import ensure_identity, normalize_id
from .session import Recent, Session
from .transport import client_context, connect, drive, peer_device_id, server_context

__all__ = ["cmd_serve", "cmd_sync", "cmd_peer_add", "cmd_peer_list", "cmd_id", "Daemon"]

BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0
STATE_EVERY = 1.0


def _log(msg):
    print("%s mycelium: %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def _open_node(args):
    from ..node import Node
    return Node(args.data_dir, durable=args.durable)


def _known(data_dir):
    return {normalize_id(k): v for k, v in P.load_peers(data_dir).items()}


# -- id, peer add, peer list


def cmd_id(args):
    did = ensure_identity(args.data_dir)
    print(json.dumps({"device_id": did}) if args.json else did)
    return 0


def cmd_peer_add(args):
    did = normalize_id(args.id)
    host, port = P.parse_addr(args.addr)
    if did == ensure_identity(args.data_dir):
        raise UsageError("%s is this device's own id; add the id another device prints "
                         "with `mycelium id`" % did)
    new = P.add_peer(args.data_dir, did, "%s:%d" % (host, port))
    if args.json:
        print(json.dumps({"device_id": did, "addr": "%s:%d" % (host, port), "new": new}))
    else:
        print("%s peer %s at %s:%d" % ("added" if new else "updated", did, host, port))
    return 0


def _our_vv(args, state):
    """Our version vector, read from the store (read-only, beside a running
    serve too)."""
    from ..node import Node
    with Node(args.data_dir, readonly=True) as n:
        return dict(n.vv), "store"


def cmd_peer_list(args):
    peers = _known(args.data_dir)
    state = P.load_state(args.data_dir)
    ours, source = _our_vv(args, state)
    rows = []
    for did, entry in sorted(peers.items()):
        st = state.get("peers", {}).get(did, {})
        pvv = P.vv_int(st["vv"]) if "vv" in st else None
        rows.append({"device_id": did, "addr": entry.get("addr"),
                     "behind": P.behind(ours, pvv) if pvv is not None else None,
                     "ahead": P.behind(pvv, ours) if pvv is not None else None,
                     "connected": st.get("connected", False),
                     "last_sync": st.get("last_sync"), "last_error": st.get("last_error")})
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    if not rows:
        print("no peers yet; add one with `mycelium peer add ID HOST:PORT`", file=sys.stderr)
        return 0
    for r in rows:
        if r["behind"] is None:
            lag = "never synced"
        else:
            lag = "lacks %d of our changes, has %d we lack" % (r["behind"], r["ahead"])
        when = (" (last sync %s)" % time.strftime("%Y-%m-%d %H:%M:%S",
                                                   time.localtime(r["last_sync"]))
                if r["last_sync"] else "")
        print("%s  %-21s  %s%s%s%s" % (r["device_id"], r["addr"], lag, when,
                                        "  connected" if r["connected"] else "",
                                        "  last error: " + r["last_error"]
                                        if r["last_error"] else ""))
    print("(our vector from the %s)" % source, file=sys.stderr)
    return 0


# -- sync PEER (one catch-up)


class _Progress:
    def __init__(self, enabled):
        self.enabled = enabled
        self.total = 0
        self.last = 0.0

    def start(self, to_send, to_recv):
        self.total = max(1, to_send + to_recv)

    def show(self, s, final=False):
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self.last < 0.1:
            return
        self.last = now
        st = s.stats
        done = st["sent_changes"] + st["skipped"] + st["recv_changes"]
        frac = min(1.0, done / self.total) if self.total else 1.0
        bar = "#" * int(frac * 30)
        sys.stderr.write("\r[%-30s] %3d%%  sent %d  received %d  %s on the wire"
                         % (bar, frac * 100, st["sent_changes"], st["recv_changes"],
                            _size(st["wire_out"] + st["wire_in"])))
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _size(n):
    for div, unit in ((1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return "%.1f %s" % (n / div, unit)
    return "%d B" % n


def _resolve_peer(data_dir, text):
    peers = _known(data_dir)
    s = "".join(ch for ch in text.upper() if ch not in "- ")
    hits = [d for d in peers if d.replace("-", "").startswith(s)] if len(s) >= 4 else []
    if len(hits) != 1:
        raise UsageError("%r does not name one known peer; see `mycelium peer list`" % text)
    return hits[0], peers[hits[0]]


async def sync_once(node, data_dir, my_id, peer_id, addr, progress=None, timeout=None):
    host, port = P.parse_addr(addr)
    reader, writer = await connect(host, port, client_context(data_dir), peer_id)
    session = Session(node, my_id, peer_id)

    def on_event(s, ev):
        if progress is not None:
            if ev.kind == "connected":
                progress.start(P.behind(node.vv, ev.peer_vv), P.behind(ev.peer_vv, node.vv))
            progress.show(s, final=ev.kind == "closed")

    await drive(session, reader, writer, until_caught_up=True, on_event=on_event)
    return session


def _record(data_dir, peer_id, session, node, error=None):
    state = P.load_state(data_dir)
    state["vv"] = P.vv_hex(node.vv)
    entry = state.setdefault("peers", {}).setdefault(peer_id, {})
    if session is not None and session.peer_vv is not None:
        entry["vv"] = P.vv_hex(session.peer_vv)
    if session is not None and session.caught_up:
        entry["last_sync"] = int(time.time())
    entry["connected"] = False
    entry["last_error"] = None if error is None else str(error)
    P.save_state(data_dir, state)


def cmd_sync(args):
    my_id = ensure_identity(args.data_dir)
    peer_id, entry = _resolve_peer(args.data_dir, args.peer)
    progress = _Progress(args.progress or sys.stderr.isatty())
    t0 = time.monotonic()
    with _open_node(args) as node:
        session = None
        try:
            session = asyncio.run(sync_once(node, args.data_dir, my_id, peer_id, entry["addr"],
                                            progress))
        except SyncError as e:
            _record(args.data_dir, peer_id, session, node, e)
            raise
        err = session.error
        _record(args.data_dir, peer_id, session, node, err)
    if err is not None:
        raise err
    if session.peer_vv is None:
        from .errors import PeerRefused
        raise PeerRefused("%s closed the connection before the sync began: it may not know "
                          "this device; on it run `mycelium peer add %s HOST:PORT`"
                          % (peer_id, my_id))
    if not session.caught_up:
        raise PeerUnreachable("the connection to %s closed before the sync finished: %s"
                              % (peer_id, "run `mycelium sync` again"))
    st = session.stats
    out = {"peer": peer_id, "sent_changes": st["sent_changes"], "skipped_by_bloom": st["skipped"],
           "received_changes": st["recv_changes"], "new": st["new"], "duplicates": st["dup"],
           "wire_bytes_out": st["wire_out"], "wire_bytes_in": st["wire_in"],
           "seconds": round(time.monotonic() - t0, 3)}
    if args.json:
        print(json.dumps(out))
    else:
        print("synced with %s in %.2f s: sent %d change(s) (%s on the wire), received %d "
              "(%d new, %s on the wire)" % (peer_id, out["seconds"], out["sent_changes"],
                                             _size(st["wire_out"]), out["received_changes"],
                                             out["new"], _size(st["wire_in"])))
    return 0


# -- serve


class Daemon:
    """One node, a listener and a dialer per known peer, all in one loop."""

    def __init__(self, node, data_dir, my_id, quiet=False):
        self.node = node
        self.data_dir = data_dir
        self.my_id = my_id
        self.recent = Recent()
        self.sessions = {}          # session -> wake event
        self.dialers = {}           # peer id -> task
        self.peers = {}
        self.peers_mtime = None
        self.stop = asyncio.Event()
        self.state_dirty = True
        self.peer_state = P.load_state(data_dir).get("peers", {})
        self.state_error = None
        self.quiet = quiet

    def log(self, msg):
        if not self.quiet:
            _log(msg)

    def connected(self, peer_id):
        return any(s.peer_id == peer_id and not s.closed for s in self.sessions)

    def on_event(self, s, ev):
        pid = s.peer_id or s.expect_peer
        k = ev.kind
        if k == "connected":
            self.log("connected to %s (it lacks %d of our changes, we lack %d)"
                     % (pid, P.behind(self.node.vv, ev.peer_vv), P.behind(ev.peer_vv, self.node.vv)))
            self._peer(pid).update(connected=True, vv=P.vv_hex(ev.peer_vv))
        elif k == "received":
            if ev.new:
                self.log("received %d change(s) from %s, %d new" % (ev.changes, pid, ev.new))
                for other, wake in self.sessions.items():
                    if other is not s:
                        wake.set()
            self.state_dirty = True
        elif k == "sent":
            self.log("sent %d change(s) to %s (%d skipped by Bloom, %s)"
                     % (ev.changes, pid, ev.skipped, _size(ev.wire_bytes)))
        elif k == "acked":
            self._peer(pid)["vv"] = P.vv_hex(s.peer_vv)
            self.state_dirty = True
        elif k == "caught_up":
            self.log("caught up with %s" % pid)
            self._peer(pid).update(last_sync=int(time.time()), vv=P.vv_hex(s.peer_vv),
                                   last_error=None)
        elif k == "closed":
            if ev.error is not None:
                self.log("session with %s closed: %s: %s" % (pid, type(ev.error).__name__,
                                                             ev.error))
                self._peer(pid)["last_error"] = "%s: %s" % (type(ev.error).__name__, ev.error)
            else:
                self.log("session with %s closed (%s)" % (pid, ev.reason))
            if not self.connected_except(pid, s):
                self._peer(pid)["connected"] = False
        self.state_dirty = True

    def connected_except(self, pid, s):
        return any(o.peer_id == pid and not o.closed and o is not s for o in self.sessions)

    def _peer(self, pid):
        return self.peer_state.setdefault(pid, {})

    async def run_session(self, session, reader, writer):
        wake = asyncio.Event()
        self.sessions[session] = wake
        try:
            await drive(session, reader, writer, wake=wake, on_event=self.on_event,
                        stop=self.stop)
        finally:
            self.sessions.pop(session, None)

    async def handle(self, reader, writer):
        try:
            pid = peer_device_id(writer)
        except UnknownPeer as e:
            self.log("refused a connection: %s" % e)
            writer.close()
            return
        self.reload_peers()
        if pid not in self.peers:
            addr = writer.get_extra_info("peername")
            self.log("refused %s from %s: not a known peer (add it with `mycelium peer add "
                     "%s HOST:PORT`)" % (pid, addr[0] if addr else "?", pid))
            writer.close()
            return
        s = Session(self.node, self.my_id, pid, live=True, recent=self.recent)
        await self.run_session(s, reader, writer)

    async def dial(self, pid):
        backoff = BACKOFF_MIN
        ctx = client_context(self.data_dir)
        while not self.stop.is_set() and pid in self.peers:
            if self.connected(pid):
                await self._sleep(1.0)
                continue
            addr = self.peers[pid].get("addr")
            try:
                host, port = P.parse_addr(addr)
                reader, writer = await connect(host, port, ctx, pid)
            except (SyncError, UsageError) as e:
                self._peer(pid)["last_error"] = "%s: %s" % (type(e).__name__, e)
                self.state_dirty = True
                self.log("cannot reach %s at %s: %s (retry in %.1f s)" % (pid, addr, e, backoff))
                await self._sleep(backoff * (0.8 + 0.4 * random.random()))
                backoff = min(BACKOFF_MAX, backoff * 2)
                continue
            s = Session(self.node, self.my_id, pid, live=True, recent=self.recent)
            await self.run_session(s, reader, writer)
            if s.caught_up or s.stats["new"] or s.stats["sent_changes"]:
                backoff = BACKOFF_MIN
            if not self.stop.is_set():
                await self._sleep(backoff * (0.8 + 0.4 * random.random()))
                backoff = min(BACKOFF_MAX, backoff * 2)

    async def _sleep(self, t):
        try:
            await asyncio.wait_for(self.stop.wait(), t)
        except asyncio.TimeoutError:
            pass

    def reload_peers(self):
        m = P.peers_mtime(self.data_dir)
        if m == self.peers_mtime:
            return
        self.peers_mtime = m
        self.peers = _known(self.data_dir)
        for pid in self.peers:
            t = self.dialers.get(pid)
            if t is None or t.done():
                self.dialers[pid] = asyncio.ensure_future(self.dial(pid))

    def save_state(self):
        """Write state.json; a full disk is logged (once) and retried, never fatal."""
        if not self.state_dirty:
            return
        for pid, e in self.peer_state.items():
            e["connected"] = self.connected(pid)
        try:
            P.save_state(self.data_dir, {"device_id": self.my_id, "vv": P.vv_hex(self.node.vv),
                                         "peers": self.peer_state})
        except AgentError as e:
            if str(e) != self.state_error:
                self.log("cannot save the sync state (%s); retrying every %.0f s"
                         % (e, STATE_EVERY))
                self.state_error = str(e)
            return
        if self.state_error:
            self.log("the sync state is saved again")
            self.state_error = None
        self.state_dirty = False

    def wake_all(self):
        """A local write came in through the control socket: offer it now."""
        for wake in self.sessions.values():
            wake.set()
        self.state_dirty = True

    async def run(self, host, port, on_listening=None):
        try:
            server = await asyncio.start_server(self.handle, host, port,
                                                ssl=server_context(self.data_dir),
                                                ssl_handshake_timeout=10.0)
        except OSError as e:
            raise PeerUnreachable(_listen_hint(host, port, e)) from None
        loop = asyncio.get_running_loop()
        self.node.log.on_synced = lambda: loop.call_soon_threadsafe(self.wake_all)
        for msg in self.node.events:
            self.log("warning: %s" % msg)
        control = ControlServer(self.node, socket_path(self.data_dir), self.wake_all)
        await control.start()
        bound = server.sockets[0].getsockname()
        if on_listening:
            on_listening(bound[0], bound[1])
        self.log("listening on %s:%d as %s" % (bound[0], bound[1], self.my_id))
        try:
            while not self.stop.is_set():
                self.reload_peers()
                self.save_state()
                await self._sleep(STATE_EVERY)
        finally:
            server.close()
            await control.close()
            for wake in list(self.sessions.values()):
                wake.set()
            tasks = [t for t in self.dialers.values() if not t.done()]
            if self.sessions or tasks:
                await asyncio.wait(tasks + [asyncio.ensure_future(self._drain())], timeout=5)
            for t in tasks:
                t.cancel()
            self.state_dirty = True
            self.save_state()
            self.log("stopped")

    async def _drain(self):
        while self.sessions:
            await asyncio.sleep(0.05)


def cmd_serve(args):
    my_id = ensure_identity(args.data_dir)
    host, port = P.parse_addr(args.listen)

    def listening(h, p):
        if args.json:
            print(json.dumps({"listening": "%s:%d" % (h, p), "device_id": my_id}), flush=True)
        else:
            print("listening on %s:%d as %s" % (h, p, my_id), flush=True)

    with _open_node(args) as node:
        d = Daemon(node, args.data_dir, my_id)

        async def main():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, d.stop.set)
                except (NotImplementedError, RuntimeError):  # pragma: no cover
                    pass
            await d.run(host, port, listening)

        asyncio.run(main())
    return 0


def _listen_hint(host, port, e):
    import errno
    if e.errno == errno.EADDRINUSE:
        why = "the port is in use (is another `mycelium serve` running?): pick another --listen"
    elif e.errno == errno.EADDRNOTAVAIL:
        why = "%s is not an address of this machine: use one of its addresses, or 0.0.0.0" % host
    elif e.errno == errno.EACCES:
        why = "ports below 1024 need root: pick a port above 1024"
    else:
        why = "check the --listen address"
    return "cannot listen on %s:%d: %s; %s" % (host, port, e.strerror or e, why)
