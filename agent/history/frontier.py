"""The causally stable frontier: what every active peer holds.

    f = Frontier(data_dir)
    f.note(peer_id, known)      a peer said (HELLO, ACK, HAVE) it holds `known`
    f.stable(lo_hi_runs)        True if every active peer holds those changes
    f.save()                    history/acked, a JSON file with a CRC

A peer not heard from for `retire_after` seconds (default 14 days,
MYCELIUM_RETIRE_DAYS) leaves the frontier: history it lacks may be
compacted, and it catches up later by snapshot. With no active peer the
frontier holds everything this device holds (a lone device compacts all).
A peer added but not yet heard from holds nothing (expect()).
A peer can only hold back compaction by claiming less; claiming more than it
holds costs it a snapshot, never anyone else's data.
"""
import os
import time

from .. import fs
from ..errors import StoreCorrupt
from ..vector import Known

__all__ = ["Frontier", "RETIRE_DAYS"]

RETIRE_DAYS = 14.0
MAX_PEERS = 4096


class Frontier:
    def __init__(self, data_dir: str, readonly: bool = False, retire_after: float = None):
        self.path = os.path.join(data_dir, "history", "acked")
        self.readonly = readonly
        if retire_after is None:
            retire_after = float(os.environ.get("MYCELIUM_RETIRE_DAYS", RETIRE_DAYS)) * 86400
        self.retire_after = retire_after
        self.peers = {}    # peer id -> [unix time, Known]
        self.dirty = False
        self.error = None
        try:
            obj = fs.read_json(self.path, "what each peer has acknowledged",
                               "Remove it: it is rebuilt as peers sync (until then nothing "
                               "is compacted that a peer may lack).", {})
        except StoreCorrupt as e:
            self.error = str(e)
            obj = {"damaged": True}
        self.damaged = bool(obj.get("damaged"))
        for pid, e in obj.get("peers", {}).items():
            try:
                self.peers[pid] = [float(e["t"]), Known.from_json(e["known"])]
            except (KeyError, TypeError, ValueError, AttributeError):
                self.damaged = True

    def note(self, peer_id: str, known: Known, now: float = None) -> None:
        if peer_id is None or known is None:
            return
        if peer_id not in self.peers and len(self.peers) >= MAX_PEERS:
            return
        self.peers[peer_id] = [time.time() if now is None else now, known.copy()]
        self.dirty = True

    def expect(self, configured: dict) -> None:
        """Peers added (sync/peers.json: {device id: {"added": unix}}) but
        not heard from yet hold nothing: they keep all history for
        retire_after from when they were added, so a device added before
        its first sync gets deltas, not a snapshot."""
        for pid, entry in configured.items():
            if pid not in self.peers and len(self.peers) < MAX_PEERS:
                try:
                    t = float(entry.get("added", 0))
                except (AttributeError, TypeError, ValueError):
                    t = 0.0
                self.peers[pid] = [t, Known()]

    def active(self, now: float = None):
        now = time.time() if now is None else now
        return {pid: k for pid, (t, k) in self.peers.items() if now - t <= self.retire_after}

    def retired(self, now: float = None):
        now = time.time() if now is None else now
        return sorted(pid for pid, (t, _) in self.peers.items() if now - t > self.retire_after)

    def stable(self, runs: dict, now: float = None) -> bool:
        """True if every active peer holds every change in runs {actor: [[lo, hi]]}.
        A damaged file holds nothing back only once rewritten by note()s."""
        if self.damaged:
            return False
        for k in self.active(now).values():
            for a, rs in runs.items():
                for lo, hi in rs:
                    if not k.covers(a, lo, hi):
                        return False
        return True

    def save(self) -> None:
        if self.readonly or not self.dirty:
            return
        try:
            fs.mkdir(os.path.dirname(self.path))
        except OSError as e:
            raise fs.error(e, "create", os.path.dirname(self.path)) from None
        fs.write_json(self.path, {"peers": {pid: {"t": t, "known": k.to_json()}
                                            for pid, (t, k) in self.peers.items()}})
        self.dirty = False
        self.damaged = False

    def describe(self, now: float = None) -> dict:
        now = time.time() if now is None else now
        return {pid: {"last_heard_s": round(now - t), "retired": now - t > self.retire_after}
                for pid, (t, _) in self.peers.items()}

