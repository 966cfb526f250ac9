"""The daemon behind `mycelium serve`: one node, a listener, a dialer per
known peer, the control socket and `state.json`, all in one asyncio loop.

Admission (docs/SYNC.md, "Connection"): TCP is accepted plain and TLS is
started by hand, so connections still in their handshake are counted. At
most MAX_UNAUTHENTICATED of them at once (the oldest is dropped to admit a
new one) and MAX_SESSIONS_PER_PEER sessions per pinned peer (likewise), so
neither a flood of idle connections nor one peer's many sessions can run
the daemon out of memory. After a burst, freed heap goes back to the OS.

One session per peer: when two devices dial each other at once, both
sessions get through their handshake; as soon as the second of them is
connected, each side closes the same one (_one_session: the one dialled by
the device with the larger id), so only one carries changes.
"""
import asyncio
import gc
import os
import ssl
import time

from ..control import ControlServer, socket_path
from ..errors import AgentError, UsageError, SyncError
from . import journal
from . import peers as P
from .errors import ListenError, PeerRefused, PeerUnreachable, UnknownPeer
from .devid import display_id, normalize_id
from . import orchestrate as O
from .session import Recent, Session
from .transport import HANDSHAKE_TIMEOUT, KEEPALIVE, client_context, connect, drive, \
    peer_device_id, server_context

__all__ = ["Daemon", "MAX_UNAUTHENTICATED", "MAX_SESSIONS_PER_PEER"]

BACKOFF_MAX = O.BACKOFF_MAX
STATE_EVERY = 1.0
COMPACT_MB = 8          # log growth (MB) after which serve compacts
COMPACT_GAP = 60.0      # seconds between compactions, at least
CHECK_EVERY = 3600.0    # seconds between automatic convergence checks with a peer (0: none)
MAX_UNAUTHENTICATED = 64
MAX_SESSIONS_PER_PEER = 2
ACCEPT_BACKLOG = 16
# asyncio's TLS transport keeps a read buffer of this size per connection
# (256 KiB in CPython 3.11 and 3.12); TLS records are at most 16 KiB, so 64
# KiB costs nothing in throughput and a quarter of the memory per connection.
SSL_READ_BUFFER = 64 << 10


def _smaller_tls_buffers():
    try:
        from asyncio import sslproto
        if getattr(sslproto.SSLProtocol, "max_size", 0) > SSL_READ_BUFFER:
            sslproto.SSLProtocol.max_size = SSL_READ_BUFFER
    except ImportError:  # pragma: no cover
        pass


def _known(data_dir):
    return {normalize_id(k, unchecked=True): v for k, v in P.load_peers(data_dir).items()}


def _size(n):
    for div, unit in ((1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return "%.1f %s" % (n / div, unit)
    return "%d B" % n


class Daemon:
    """One node, a listener and a dialer per known peer, all in one loop."""

    def __init__(self, node, data_dir, my_id, quiet=False, accept_unsigned=None,
                 log_format="text", http=None):
        from ..logs import Logger
        self.node = node
        self.logger = Logger(display_id(my_id)[:7], log_format)
        self.accept_unsigned = accept_unsigned
        self.data_dir = data_dir
        self.my_id = my_id
        self.recent = Recent()
        self.watchers = []          # fn(peer id, session event), e.g. the dashboard
        self.http = http            # (host, port) of the dashboard, or None
        self.dashboard = None
        self.sessions = {}          # session -> wake event
        self.dialers = {}           # peer id -> task
        self.peers = {}
        self.peers_mtime = None
        self.stop = asyncio.Event()
        self.state_dirty = True
        self.peer_state = P.load_state(data_dir).get("peers", {})
        self.state_error = None
        self.quiet = quiet
        self.max_unauth = MAX_UNAUTHENTICATED
        self.max_per_peer = MAX_SESSIONS_PER_PEER
        self.unauth = {}            # connection number -> writer, oldest first
        self._conn_seq = 0
        self.dropped = 0
        self.released = False       # a connection ended since the last malloc_trim
        self.server_ctx = None
        self.compact_bytes = int(float(os.environ.get("MYCELIUM_COMPACT_MB", COMPACT_MB)) * 1e6)
        self.compact_gap = float(os.environ.get("MYCELIUM_COMPACT_GAP", COMPACT_GAP))
        self.check_every = float(os.environ.get("MYCELIUM_CHECK_EVERY", CHECK_EVERY))
        self.power = O.Power()
        self.battery_every = float(os.environ.get("MYCELIUM_BATTERY_SYNC_S") or O.BATTERY_EVERY)
        self.metered_every = float(os.environ.get("MYCELIUM_METERED_SYNC_S") or O.METERED_EVERY)
        self.was_on_battery = None
        self.checked_at = {}        # peer id -> when its last automatic check started
        self.checking = set()
        self.relay = None           # relay.link.Relay, while sync/relay.json sets one up
        self.relay_mtime = None
        # not in the first gap: peers being added then hold history back
        self.next_compact = time.monotonic() + self.compact_gap
        _smaller_tls_buffers()

    def log(self, msg, level="info", key=None, event=True):
        """A line on stderr; a warning or an error is also a timeline event,
        rate-limited as the line is (event=False: on_event wrote a typed one)."""
        shown = self.logger.write(level, msg, key, emit=not self.quiet)
        if event and level != "info" and shown is not None:
            self.node.timeline.emit(level, msg=shown)

    def label(self, pid):
        """A peer as the log names it: its name, else its id."""
        if pid is None:
            return "?"
        name = self.peers.get(pid, {}).get("name")
        return "%s (%s)" % (name, display_id(pid)[:7]) if name else display_id(pid)

    def connected(self, peer_id):
        return any(s.peer_id == peer_id and not s.closed for s in self.sessions)

    def on_event(self, s, ev):
        pid = s.peer_id or s.expect_peer
        who = self.label(pid)
        k = ev.kind
        journal.note(self.node.timeline, ev, pid)
        for fn in self.watchers:
            fn(pid, ev)
        if k == "connected":
            self._one_session(pid, s)
            self.log("connected to %s (it lacks %d of our changes, we lack %d)"
                     % (who, P.behind(self.node.vv, ev.peer_vv), P.behind(ev.peer_vv, self.node.vv)))
            self._peer(pid).update(connected=True, vv=P.vv_hex(ev.peer_vv))
        elif k == "received":
            if ev.new:
                self.log("received %d change(s) from %s, %d new" % (ev.changes, who, ev.new))
                for other, wake in self.sessions.items():
                    if other is not s:
                        wake.set()
                if self.relay is not None:
                    self.relay.wake.set()
            self.state_dirty = True
        elif k == "forked":
            self.log("FORK: %s (see `mycelium stats`, docs/SYNC.md \"Forks\")" % ev.why, "error", event=False)
            self._peer(pid)["last_error"] = "fork: %s" % ev.why
        elif k == "pended":
            self.log("from %s: %d change(s) held, %d quarantined, %d not taken (pending area "
                     "full); see `mycelium pending`: %s" % (who, ev.held, ev.quarantined,
                                                            ev.refused, "; ".join(ev.reasons[:3])),
                     "warning", ("pended", pid), event=False)
        elif k == "refused":
            self.log("REFUSED %d change(s) from %s that no signature of their device vouches "
                     "for: %s" % (ev.count, who, "; ".join(ev.reasons)), "warning", ("refused", pid), event=False)
            P.note_refused(self._peer(pid), ev)
            self.state_dirty = True
        elif k == "sent":
            self.log("sent %d change(s) to %s (%d skipped by Bloom, %s)"
                     % (ev.changes, who, ev.skipped, _size(ev.wire_bytes)))
        elif k == "snapshot_sent":
            if ev.can_take:
                self.log("sent %s the snapshot (%s): it lacked compacted history"
                         % (who, _size(ev.bytes)))
            else:
                self.log("%s lacks history this device has compacted and is too old to take "
                         "a snapshot: upgrade it to 0.4 or later" % who, "warning",
                         ("old", pid), event=False)
                self._peer(pid)["last_error"] = "needs a snapshot: upgrade it"
        elif k == "snapshot_taken":
            self.log("took a snapshot from %s (%s, %d record(s))" % (who, _size(ev.bytes),
                                                                     ev.records))
        elif k == "mended" and ev.changed:
            self.log("a convergence check with %s changed %d record(s) here, whose state "
                     "this device had lost or not had: %s" % (
                         who, len(ev.changed), ", ".join(ev.changed[:10])), "warning",
                     ("mended", pid), event=False)
        elif k == "acked":
            self._peer(pid)["vv"] = P.vv_hex(s.peer_vv)
            self.state_dirty = True
        elif k == "caught_up":
            self.log("caught up with %s" % who)
            self._peer(pid).update(last_sync=int(time.time()), vv=P.vv_hex(s.peer_vv),
                                   last_error=None)
        elif k == "closed":
            if ev.error is not None:
                self.log("session with %s closed: %s: %s" % (who, type(ev.error).__name__,
                                                             ev.error),
                         "warning", ("closed", pid, type(ev.error).__name__), event=False)
                self._peer(pid)["last_error"] = "%s: %s" % (type(ev.error).__name__, ev.error)
            else:
                self.log("session with %s closed (%s)" % (who, ev.reason))
            if not self.connected_except(pid, s):
                self._peer(pid)["connected"] = False
        self.state_dirty = True

    def _dialler(self, s, pid):
        return self.my_id if s.dialled else pid

    def _one_session(self, pid, s):
        """s with peer pid is connected: if another of serve's sessions with
        pid is too, keep the one dialled by the smaller device id (the
        newer if one side dialled both), as the peer does, and close the
        other. A session that has heard nothing for two keep-alives is
        stale and goes first."""
        if getattr(s, "dialled", None) is None:
            return
        for o in list(self.sessions):
            if o is s or o.closed or o.peer_id != pid or getattr(o, "dialled", None) is None \
                    or o.peer_vv is None:
                continue
            stale = time.monotonic() - o.last_heard > 2 * KEEPALIVE
            loser = o if stale or self._dialler(s, pid) <= self._dialler(o, pid) else s
            loser.close("a second session with %s%s; one is kept" % (
                display_id(pid), " (this one had gone quiet)" if stale else ""))
            self.sessions[loser].set()
            if loser is s:
                return

    def connected_except(self, pid, s):
        return any(o.peer_id == pid and not o.closed and o is not s for o in self.sessions)

    def _peer(self, pid):
        return self.peer_state.setdefault(pid, {})

    def plan(self, pid, failures=0, peer_live=True, synced=True, note=True):
        """The orchestrator's plan for peer pid (orchestrate.decide), noted
        in its state (state.json, `peer list`) unless note is False."""
        on_battery = self.power.on_battery()
        if on_battery != self.was_on_battery:
            if self.was_on_battery is not None or on_battery:
                self.log("on %s: %s" % (
                    "battery" if on_battery else "mains power",
                    "syncing with each peer every %.0f s" % self.battery_every
                    if on_battery and self.battery_every > 0 else "staying connected to peers"))
                self.node.timeline.emit("power", on_battery=on_battery)
            self.was_on_battery = on_battery
        p = O.decide(on_battery=on_battery, metered=bool(self.peers.get(pid, {}).get("metered")),
                     failures=failures, relay_up=bool(self.relay and self.relay.state["connected"]),
                     peer_live=peer_live, synced=synced, battery_every=self.battery_every,
                     metered_every=self.metered_every)
        st = self._peer(pid)
        if note and (st.get("sync") != p.why or st.get("route") != p.route):
            st.update(sync=p.why, route=p.route)
            self.state_dirty = True
        return p

    async def run_session(self, session, reader, writer):
        wake = asyncio.Event()
        self.sessions[session] = wake
        try:
            await drive(session, reader, writer, wake=wake, on_event=self.on_event,
                        stop=self.stop, until_caught_up=not session.live)
        finally:
            self.sessions.pop(session, None)
            self.released = True

    def _admit(self, writer):
        """Count a connection still in its handshake; past the cap, drop the oldest."""
        self._conn_seq += 1
        key = self._conn_seq
        self.unauth[key] = asyncio.current_task()
        while len(self.unauth) > self.max_unauth:
            old_key = next(iter(self.unauth))
            self.unauth.pop(old_key).cancel()  # start_tls then closes its transport
            self.dropped += 1
            if self.dropped in (1, 10, 100, 1000) or self.dropped % 10000 == 0:
                self.log("%d connection(s) dropped so far: more than %d were in their TLS "
                         "handshake at once (a scan or a flood?)" % (self.dropped,
                                                                      self.max_unauth))
        return key

    def _make_room_for(self, pid):
        """At most max_per_peer sessions with one peer: close the oldest."""
        mine = [s for s in self.sessions if s.peer_id == pid or s.expect_peer == pid]
        for s in mine[:max(0, len(mine) - self.max_per_peer + 1)]:
            s.close("%s opened more than %d sessions; the oldest is closed"
                    % (pid, self.max_per_peer))
            self.sessions[s].set()

    async def handle(self, reader, writer):
        key = self._admit(writer)
        try:
            await writer.start_tls(self.server_ctx, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except asyncio.CancelledError:
            if key in self.unauth:  # not dropped by _admit: the daemon is stopping
                raise
            return
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError):
            writer.transport.abort()
            return
        finally:
            self.unauth.pop(key, None)
            self.released = True
        try:
            pid = peer_device_id(writer)
        except UnknownPeer as e:
            self.log("refused a connection: %s" % e, "warning", ("badcert",))
            writer.close()
            return
        self.reload_peers()
        if pid not in self.peers:
            from . import invite
            try:
                inviting = invite.open_invites(self.data_dir)
            except AgentError as e:     # a damaged invites.json: no invite is open
                self.log("cannot read the open invites: %s" % e, "error", ("invites",))
                inviting = 0
            if inviting:
                await invite.answer(self, reader, writer, pid)
                return
            addr = writer.get_extra_info("peername")
            self.log("refused %s from %s: not a known peer (add it with `mycelium peer add "
                     "%s HOST:PORT`)" % (display_id(pid), addr[0] if addr else "?",
                                         display_id(pid)), "warning", ("unknown", pid))
            writer.close()
            return
        self._make_room_for(pid)
        # what the dialer to pid last planned stays in its state, if there is one
        live = self.plan(pid, note=not self.peers.get(pid, {}).get("addr")).live
        s = Session(self.node, self.my_id, pid, live=live, recent=self.recent,
                    accept_unsigned=self.accept_unsigned)
        s.dialled = False
        await self.run_session(s, reader, writer)

    async def dial(self, pid):
        """Dial peer pid, again and again, as the orchestrator plans: a live
        session, or one that catches up and closes, then a wait."""
        failures = 0
        ctx = client_context(self.data_dir)
        while not self.stop.is_set() and self.peers.get(pid, {}).get("addr"):
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
                failures += 1
                p = self.plan(pid, failures)
                self.log("cannot reach %s at %s: %s (retrying, at most every %.0f s%s)"
                         % (self.label(pid), addr, e, BACKOFF_MAX,
                            "; the relay carries its changes meanwhile" if p.route == "relay"
                            else ""), "warning", ("unreachable", pid))
                await self._sleep(p.wait)
                continue
            if self.logger.clear(("unreachable", pid)):
                self.log("reached %s at %s again" % (self.label(pid), addr))
            s = Session(self.node, self.my_id, pid, live=self.plan(pid).live,
                        recent=self.recent, accept_unsigned=self.accept_unsigned)
            s.dialled = True
            await self.run_session(s, reader, writer)
            synced = bool(s.caught_up or s.stats["new"] or s.stats["sent_changes"])
            failures = 0 if synced else failures + 1
            if not self.stop.is_set():
                p = self.plan(pid, failures, peer_live=s.peer_live or s.peer_id is None,
                              synced=synced)
                await self._sleep(p.wait)

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
        for pid, entry in self.peers.items():
            t = self.dialers.get(pid)
            if entry.get("addr") and (t is None or t.done()):
                self.dialers[pid] = asyncio.ensure_future(self.dial(pid))
        for s, wake in list(self.sessions.items()):   # a removed peer's sessions end
            if s.peer_id is not None and s.peer_id not in self.peers and not s.closed:
                s.close("%s was removed from this device's peers" % display_id(s.peer_id))
                wake.set()

    async def reload_relay(self):
        """Start, restart or stop the relay link as sync/relay.json says
        (`mycelium relay add` or `remove` while serve runs)."""
        from ..relay import config as RC
        try:
            m = os.stat(RC.path(self.data_dir)).st_mtime_ns
        except OSError:
            m = None
        if m == self.relay_mtime:
            return
        self.relay_mtime = m
        if self.relay is not None:
            await self.relay.stop()
            self.relay = None
            self.state_dirty = True
        if m is None:
            return
        try:
            cfg = RC.load(self.data_dir)
        except AgentError as e:
            self.log("no relay: %s" % e, "error", ("relaycfg",))
            return
        from ..relay.link import Relay     # nats-py: only with a relay
        self.relay = Relay(self, cfg)
        self.relay.start()

    def save_state(self):
        """Write state.json; a full disk is logged (once) and retried, never fatal."""
        if not self.state_dirty:
            return
        for pid, e in self.peer_state.items():
            e["connected"] = self.connected(pid)
        try:
            st = {"device_id": self.my_id, "vv": P.vv_hex(self.node.vv),
                  "peers": self.peer_state}
            if self.relay is not None:
                st["relay"] = self.relay.state
            P.save_state(self.data_dir, st)
        except AgentError as e:
            if str(e) != self.state_error:
                self.log("cannot save the sync state (%s); retrying every %.0f s"
                         % (e, STATE_EVERY), "error")
                self.state_error = str(e)
            return
        if self.state_error:
            self.log("the sync state is saved again")
            self.state_error = None
        self.state_dirty = False

    def give_back_memory(self):
        """After connections ended, return the freed heap to the OS (glibc
        keeps it otherwise; a burst would leave the RSS high for good)."""
        if not self.released:
            return
        self.released = False
        gc.collect()  # a dropped handshake leaves cycles (exception, traceback, frames)
        _malloc_trim()

    def release_held(self):
        """Apply held changes the clock has reached (Node.release_due checks every few s)."""
        try:
            n = self.node.release_due()
        except AgentError as e:
            self.log("cannot apply held changes: %s" % e, "error", ("held",))
            return
        if n:
            self.log("applied %d held change(s): this device's clock reached their stamps" % n)
            self.wake_all()

    def maybe_compact(self, now=None):
        """Compact once the log has grown by COMPACT_MB since the last time,
        at most every COMPACT_GAP s (MYCELIUM_COMPACT_GAP; the first one
        after start too) and never more than 1/20 of the time."""
        now = time.monotonic() if now is None else now
        if now < self.next_compact or not self.node.compaction_due(self.compact_bytes):
            return
        from ..history.compact import safe_compact
        got = safe_compact(self.node, self.log)
        spent = got["seconds"] if got else 1.0
        self.next_compact = now + max(self.compact_gap, 20 * spent)
        if got:
            self.log("compacted: snapshot of %d record(s) (%s), log %s -> %s"
                     % (got["records"], _size(got["snapshot_bytes"]),
                        _size(got["log_bytes_before"]), _size(got["log_bytes_after"])))

    def wake_all(self):
        """A local write came in through the control socket: offer it now."""
        for wake in self.sessions.values():
            wake.set()
        if self.relay is not None:
            self.relay.wake.set()
        self.state_dirty = True

    async def run(self, host, port, on_listening=None):
        try:
            self.server_ctx = server_context(self.data_dir)
            # A short backlog also bounds how many connections one accept burst takes in.
            server = await asyncio.start_server(self.handle, host, port, backlog=ACCEPT_BACKLOG)
        except OSError as e:
            raise ListenError(_listen_hint(host, port, e)) from None
        loop = asyncio.get_running_loop()
        self.node.log.on_synced = lambda: loop.call_soon_threadsafe(self.wake_all)
        for msg in self.node.events:
            self.log(msg, "warning", event=False)   # a notice on the timeline already
        control = ControlServer(self.node, socket_path(self.data_dir), self.wake_all,
                                self.check_peer)
        await control.start()
        if self.http is not None:
            from ..observe.http import Dashboard     # only with --http
            self.dashboard = Dashboard(self, *self.http)
            try:
                url = await self.dashboard.start()
            except BaseException:
                server.close()
                await control.close()
                raise
            self.log("dashboard on %s" % url)
        bound = server.sockets[0].getsockname()
        if on_listening:
            on_listening(bound[0], bound[1])
        where = ", ".join(P.format_addr(*so.getsockname()[:2]) for so in server.sockets)
        self.log("listening on %s as %s" % (where, display_id(self.my_id)))
        from .. import __version__
        self.node.timeline.emit("serve.start", listen=where, version=__version__,
                                durable=self.node.durable,
                                peers=len(_known(self.data_dir)))
        try:
            while not self.stop.is_set():
                self.reload_peers()
                await self.reload_relay()
                self.release_held()
                self.maybe_compact()
                self.maybe_check()
                self.node.save_mended()
                self.save_state()
                self.node.timeline.flush()
                self.give_back_memory()
                await self._sleep(STATE_EVERY)
        finally:
            server.close()
            await control.close()
            if self.dashboard is not None:
                await self.dashboard.close()
            if self.relay is not None:
                await self.relay.stop()
            for wake in list(self.sessions.values()):
                wake.set()
            tasks = [t for t in self.dialers.values() if not t.done()]
            if self.sessions or tasks:
                await asyncio.wait(tasks + [asyncio.ensure_future(self._drain())], timeout=5)
            for t in tasks:
                t.cancel()
            self.state_dirty = True
            self.save_state()
            self.node.timeline.flush(force=True)     # the traffic tallies first
            self.node.timeline.emit("serve.stop")
            self.log("stopped")

    async def check_peer(self, req) -> dict:
        """The control op behind `mycelium check PEER` while serve runs: the
        check runs in the live session with the peer, or in one dialled for it."""
        from .check import Compare
        from .commands import check_result
        try:
            from .devid import stored_id
            pid = stored_id(str(req["peer"]))
            repair = bool(req.get("repair", True))
            s = next((s for s in self.sessions if s.peer_id == pid and s.ready
                      and s.compare is None), None)
            if s is None:
                addr = self.peers.get(pid, {}).get("addr")
                if not addr:
                    raise UsageError("%s is not connected and has no address to dial"
                                     % self.label(pid))
                host, port = P.parse_addr(addr)
                reader, writer = await connect(host, port, client_context(self.data_dir), pid)
                s = Session(self.node, self.my_id, pid, recent=self.recent,
                            accept_unsigned=self.accept_unsigned)
                s.compare = Compare(s, repair)
                wake = asyncio.Event()
                self.sessions[s] = wake
                try:
                    await drive(s, reader, writer, until_caught_up=True, wake=wake,
                                on_event=self.on_event, stop=self.stop)
                finally:
                    self.sessions.pop(s, None)
                out = check_result(s)
                self.note_check(pid, out)
                return {"ok": out}
            return {"ok": await self._check_live(s, repair)}
        except AgentError as e:
            return {"error": type(e).__name__, "message": str(e)}
        except (KeyError, TypeError, ValueError) as e:
            return {"error": "UsageError", "message": "bad check request: %s" % e}

    async def _check_live(self, s, repair) -> dict:
        """A check in the live session s (its drive loop carries the messages)."""
        from .check import Compare
        pid = s.peer_id
        c = s.compare = Compare(s, repair)
        asked = time.monotonic()
        try:
            while not c.done and not s.closed and not self.stop.is_set():
                if c.started is None and (s.caught_up or time.monotonic() - asked > 5):
                    if not s.peer_check:
                        raise PeerRefused("%s runs a build without the convergence "
                                          "check: upgrade it" % self.label(pid))
                    if c.prepare():      # our tree, in slices: the loop goes on
                        c.start()
                        self.sessions[s].set()
                await asyncio.sleep(0.005)
        finally:
            s.compare = None
        if not c.done:
            raise PeerUnreachable("the session with %s ended before the check finished"
                                  % self.label(pid))
        out = dict(c.report(), peer=display_id(pid))
        self.note_check(pid, out)
        return out

    def note_check(self, pid, out):
        """A check's result in state.json (peer list, status) and on the log."""
        self._peer(pid)["last_check"] = {"time": int(time.time()), "agree": out["agree"],
                                         "differ": len(out["differ"]),
                                         "repaired_here": len(out["repaired_here"])}
        self.state_dirty = True
        self.node.timeline.emit("check", display_id(pid), agree=out["agree"],
                                differ=len(out["differ"]), keys=out["differ"][:20])
        if out["differ"]:
            self.log("convergence check with %s: %d record(s) differed (%s)%s" % (
                self.label(pid), len(out["differ"]), ", ".join(out["differ"][:10]),
                "; both now hold their join" if out["agree"] else "; they still differ"),
                "warning", ("check", pid), event=False)

    def maybe_check(self, now=None):
        """Every check_every seconds, a check (with repair) with each peer in
        a live session, started by the side with the smaller device id, so a
        fleet whose records drift apart is told, and mended, unasked."""
        if not self.check_every:
            return
        now = time.monotonic() if now is None else now
        for s in list(self.sessions):
            pid = s.peer_id
            if pid is None or not s.ready or not s.caught_up or not s.peer_check or \
                    s.compare is not None or not self.my_id < pid or pid in self.checking:
                continue
            if now - self.checked_at.setdefault(pid, now) < self.check_every:
                continue
            self.checked_at[pid] = now
            self.checking.add(pid)
            task = asyncio.ensure_future(self._auto_check(s))
            task.add_done_callback(lambda _t, pid=pid: self.checking.discard(pid))

    async def _auto_check(self, s):
        try:
            await self._check_live(s, True)
        except AgentError as e:
            self.log("convergence check with %s did not finish: %s" % (self.label(s.peer_id),
                                                                        e))

    async def _drain(self):
        while self.sessions:
            await asyncio.sleep(0.05)


_libc = None
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 << 10


def _glibc():
    global _libc
    if _libc is None:
        try:
            import ctypes
            lib = ctypes.CDLL(None)
            lib.malloc_trim, lib.mallopt  # glibc only (Termux's bionic has neither)
            _libc = lib
        except (OSError, AttributeError):
            _libc = False
    return _libc


def tune_malloc():
    """Blocks of 256 KiB and more (frame buffers, decoded batches) come
    straight from mmap and go back to the OS when freed. glibc would
    otherwise raise that threshold after the first such free and serve them
    from its heap, where a burst stays resident."""
    lib = _glibc()
    if lib:
        lib.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def _malloc_trim():
    lib = _glibc()
    if lib:
        lib.malloc_trim(0)


def raise_fd_limit():
    """Lift the soft limit on open files to the hard one: a flood of
    connections must meet the admission cap, not EMFILE."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def _listen_hint(host, port, e):
    import errno
    import socket
    where = P.format_addr(host, port)
    if e.errno == errno.EADDRINUSE:
        why = ("port %d is in use (is another `mycelium serve` running? `ss -ltnp` shows "
               "what holds it): pick another port with --listen" % port)
    elif e.errno == errno.EADDRNOTAVAIL:
        why = ("%s is not an address of this machine (`ip addr` lists them): listen on "
               "one of those, or on every address with --listen :%d" % (host, port))
    elif isinstance(e, socket.gaierror):
        why = ("%r is not an address or a name this machine can resolve: give an IP "
               "address, or --listen :%d for every address" % (host, port))
    elif e.errno == errno.EACCES:
        why = "ports below 1024 need root: pick a port above 1024"
    else:
        why = "check the --listen address"
    return "cannot listen on %s: %s; %s" % (where, e.strerror or e, why)
