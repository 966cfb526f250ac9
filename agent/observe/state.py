"""What the dashboard and /metrics show, gathered from serve's daemon, its
node and the timeline, in a time that does not grow with the store.

Records per prefix are kept up to date, not counted per request: one pass
over the visible keys when the dashboard starts, then each save moves its
key id in or out of its prefix's bitmap (a store watch, one key lookup per
save). Everything else is a figure the node or the daemon already holds.
"""
import collections
import shutil
import time

from pyroaring import BitMap

from .. import __version__

__all__ = ["Observer", "prefix_of", "MAX_PREFIXES"]

MAX_PREFIXES = 1000     # prefixes counted apart; the rest go under OTHER
OTHER = "(other)"
NONE = "(no prefix)"
RECENT_WRITES = 20
RECENT_EVENTS = 100


def prefix_of(key: str) -> str:
    """A key's prefix: up to and with its first ':' ("sensor:1" -> "sensor:")."""
    i = key.find(":")
    return key[:i + 1] if i >= 0 else NONE


class Observer:
    """Reads a running daemon for the dashboard; owned by the HTTP server."""

    def __init__(self, daemon, clock=time.time, on_change=None):
        self.d = daemon
        self.on_change = on_change or (lambda: None)
        self.node = daemon.node
        self.clock = clock
        self.started = clock()
        self.version = 0                  # bumped on every change the page should see
        self.writes = collections.deque(maxlen=RECENT_WRITES)
        self.events = collections.deque(maxlen=RECENT_EVENTS)
        self.kinds = collections.Counter()  # events by kind since start
        self.totals = collections.Counter()  # (what, peer) -> count since start
        self._store = None
        self._rebuilds = None
        self._watch = None
        self.prefixes = {}
        from .. import events as E
        for ev in E.read(self.node.data_dir)[-RECENT_EVENTS:]:
            self.events.append(ev)
        self.node.timeline.listeners.append(self._on_event)
        daemon.watchers.append(self._on_session)
        self._attach()

    def close(self):
        if self._on_event in self.node.timeline.listeners:
            self.node.timeline.listeners.remove(self._on_event)
        if self._on_session in self.d.watchers:
            self.d.watchers.remove(self._on_session)
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    # -- records per prefix

    def _attach(self):
        """Count the visible records per prefix, and watch the store."""
        store = self.node.store
        if self._watch is not None:
            self._watch.cancel()
        self._store, self._rebuilds = store, self.node._rebuilds
        counts = {}
        keys = store.keys
        for kid in (store.visible if store.visible is not None else ()):
            _bitmap(counts, prefix_of(keys.key(kid).decode("utf-8", "replace"))).add(kid)
        self.prefixes = counts
        # that pass touched every key's page of the mapped key index: give
        # them back, or serve's RSS would grow by ~30 bytes per record
        keys.trim()
        self._watch = store.watch("", self._on_save)

    def _on_save(self, key, blob):
        store = self._store
        kid = store.keys.find(key.encode("utf-8"))
        bm = _bitmap(self.prefixes, prefix_of(key))
        live = kid >= 0 and store.visible is not None and kid in store.visible
        if live:
            bm.add(kid)
        else:
            bm.discard(kid)
        self.writes.append((self.clock(), key, live))
        self.version += 1
        self.on_change()

    def _fresh(self):
        if self.node.store is not self._store or self.node._rebuilds != self._rebuilds:
            self._attach()

    # -- timeline and sessions

    def _on_event(self, ev):
        self.events.append(ev)
        self.kinds[ev["kind"]] += 1
        self.version += 1
        self.on_change()

    def _on_session(self, pid, ev):
        k = ev.kind
        if k == "received":
            self.totals[("received", pid)] += ev.changes
            self.totals[("new", pid)] += ev.new
        elif k == "sent":
            self.totals[("sent", pid)] += ev.changes
            self.totals[("sent_bytes", pid)] += ev.wire_bytes
        elif k == "connected":
            self.totals[("sessions", pid)] += 1
        elif k == "pended":
            self.totals[("held", pid)] += ev.held
            self.totals[("quarantined", pid)] += ev.quarantined + ev.refused
        else:
            return
        self.version += 1
        self.on_change()

    # -- the whole picture

    def state(self) -> dict:
        """Everything the page shows, as one JSON-able dict."""
        from ..sync import peers as P
        from ..sync.devid import display_id
        self._fresh()
        node, d = self.node, self.d
        st = node.stats()
        now = self.clock()
        ours = node.vv
        peers = []
        for pid in sorted(set(d.peers) | set(d.peer_state)):
            entry, ps = d.peers.get(pid, {}), d.peer_state.get(pid, {})
            pvv = P.vv_int(ps["vv"]) if "vv" in ps else None
            behind = P.behind(ours, pvv) if pvv is not None else None
            ahead = P.behind(pvv, ours) if pvv is not None else None
            connected = d.connected(pid)
            err = ps.get("last_error")
            peers.append({
                "device_id": display_id(pid), "name": entry.get("name"),
                "addr": entry.get("addr"), "known": pid in d.peers,
                "connected": connected, "behind": behind, "ahead": ahead,
                "last_sync": ps.get("last_sync"), "last_error": err,
                "last_check": ps.get("last_check"),
                "state": _peer_state(connected, behind, ahead, err, ps,
                                     st["held_changes"] and self.totals[("held", pid)],
                                     st["quarantined_changes"] and
                                     self.totals[("quarantined", pid)]),
                "received": self.totals[("received", pid)],
                "sent": self.totals[("sent", pid)]})
        try:
            disk = shutil.disk_usage(node.data_dir)
            disk = {"total": disk.total, "free": disk.free}
        except OSError:
            disk = None
        prefixes = sorted(((p, len(bm)) for p, bm in self.prefixes.items() if len(bm)),
                          key=lambda x: (-x[1], x[0]))
        in_step = sum(1 for p in peers if p["behind"] == 0 and p["ahead"] == 0)
        checks = [p["last_check"] for p in peers if p.get("last_check")]
        how = "version vectors"
        if checks:
            how += "; the last record check agreed with %d of %d checked" % (
                sum(1 for c in checks if c.get("agree")), len(checks))
        reasons = self.reasons(st, peers, now)
        from .colours import fleet_colours
        me = display_id(d.my_id)
        return {
            "time": now, "version": __version__, "device_id": me,
            "colours": fleet_colours([me] + [p["device_id"] for p in peers]),
            "started": self.started, "engine": st["engine"], "durable": st["durable"],
            "health": "degraded" if reasons else "healthy", "reasons": reasons,
            "records": st["records"], "prefixes": prefixes[:50],
            "prefix_count": len(prefixes), "peers": peers,
            "convergence": {"in_step": in_step, "peers": len(peers),
                            "how": how},
            "memory": {"rss": st["rss_bytes"], "budget": st["rss_budget_bytes"],
                       "trims": st["store_trims"]},
            "disk": disk,
            "store": {"data_bytes": st["data_bytes"], "file_bytes": st["store_file_bytes"],
                      "log_bytes": st["log_bytes"], "log_segments": st["log_segments"],
                      "snapshot_bytes": st["snapshot_bytes"],
                      "compacted_changes": st["compacted_changes"],
                      "last_compaction": st["last_compaction"]},
            "pending": {"held": st["held_changes"], "quarantined": st["quarantined_changes"],
                        "forks": len(st["forks"]), "missing": st["missing_changes"]},
            "writes": [{"time": t, "key": k, "live": live} for t, k, live in
                       reversed(self.writes)],
            "events": list(self.events)[-50:][::-1],
            "timeline": {"written": node.timeline.written, "dropped": node.timeline.dropped,
                         "error": node.timeline.error},
            "kinds": dict(self.kinds), "totals": self._totals(),
        }

    def _totals(self):
        from ..sync.devid import display_id
        out = collections.defaultdict(dict)
        for (what, pid), n in self.totals.items():
            out[what][display_id(pid) if pid else "?"] = n
        return out

    def reasons(self, st, peers, now, stale=3600) -> list:
        """Why the device is not healthy (empty: it is), as `status` says."""
        from ..cli import check_findings
        st = dict(st, refused_changes=sum(int(self.d.peer_state.get(pid, {}).get("refused", 0))
                                          for pid in self.d.peer_state))
        out = ["%s: %d. %s" % f for f in check_findings(st)]
        for p in peers:
            if not p["known"]:
                continue
            who = p["name"] or p["device_id"][:7]
            if p["last_sync"] is None and not p["connected"]:
                out.append("%s has never synced with this device" % who)
            elif p["last_sync"] is not None and now - p["last_sync"] > stale and \
                    not p["connected"]:
                out.append("%s last synced %d min ago" % (who, (now - p["last_sync"]) // 60))
            lc = p.get("last_check")
            if lc and not lc.get("agree", True):
                out.append("%s held %d record(s) different from this device's at the last "
                           "convergence check: run `mycelium check %s`"
                           % (who, lc.get("differ", 0), who))
        if self.node.timeline.error:
            out.append("the timeline cannot be written: %s" % self.node.timeline.error)
        return out


def _bitmap(counts, p):
    """The key ids under prefix p; past MAX_PREFIXES prefixes, under OTHER."""
    bm = counts.get(p)
    if bm is None:
        if len(counts) >= MAX_PREFIXES:
            p = OTHER
            bm = counts.get(p)
        if bm is None:
            bm = counts[p] = BitMap()
    return bm


def _peer_state(connected, behind, ahead, err, ps, held, quarantined):
    if err and err.startswith("fork"):
        return "forked"
    if quarantined or ps.get("refused"):
        return "quarantined"
    if held:
        return "held"
    if behind is None:
        return "connected" if connected else "never synced"
    if behind or ahead:
        return "behind" if connected else "offline, behind"
    return "connected" if connected else "offline"

