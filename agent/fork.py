"""Forks: two devices writing under one actor id (a data directory copied or
restored onto a second device), found and made loud (docs/SYNC.md, "Forks").

An (actor, seq) names one change. If two devices issue the same one with
different content, peers keep whichever reached them first and drop the
other as a duplicate, and every sync reports success: a silent split. A
node therefore keeps, per actor, the seq and hash of the highest change it
holds (`heads`, in the store's meta) and of its own last OWN_HASHES changes.
Sync compares them (the HELLO carries the sender's heads):

  - a peer holds a change of this node's actor above any seq this node
    issued, or sends one: another device writes as this one;
  - the two sides hold the same (actor, seq) with different hashes.

Either is a fork: it is recorded (`forks` in `stats`, the daemon's log,
node.events) and sync goes on. A node that finds its own actor forked takes
a fresh actor id for every later write (identity.json keeps the old ones in
"previous_actors"), so from then on both devices' writes reach every peer.
Changes the two issued under the shared id before that stay split; they are
listed for the operator (`mycelium stats`).

A mixin of Node (agent/node.py).
"""
import os
import time

from . import fs
from .change import NO_HASH, actor_table
from .core.batch import index_map
from .identity import identity_path, read_identity
from .reserve import Reserve

__all__ = ["Forks", "OWN_HASHES", "OWN_MASK", "HEAD_HASH"]

OWN_HASHES = 4096       # this node's last changes whose hashes it keeps in memory (2^k)
OWN_MASK = OWN_HASHES - 1
HEAD_HASH = 8           # bytes of a change's hash compared
MAX_FORKS = 64
FORKS_FILE = "forks.json"


class Forks:
    def _note_head(self, actor, seq, h):
        top = self.heads.get(actor)
        if top is None or seq >= top[0]:
            self.heads[actor] = (seq, bytes(h[:HEAD_HASH]))

    def _note_own(self, seq, h):
        self.own_hashes[seq & OWN_MASK] = (seq, bytes(h[:HEAD_HASH]))

    def _own_hash(self, seq):
        got = self.own_hashes[seq & OWN_MASK]
        return got[1] if got is not None and got[0] == seq else None

    def heads_to_send(self):
        """[(actor, seq, hash)] of the tops this node holds (what HELLO carries)."""
        vv = self.known.vv
        return [(a, s, h) for a, (s, h) in sorted(self.heads.items()) if vv.get(a) == s]

    def check_heads(self, peer_vv: dict, peer_heads, peer: str) -> list:
        """Compare a peer's HELLO with what this node holds; returns the forks
        found (and, for this node's own actor, takes a fresh one)."""
        found = []
        me = self.actor
        if peer_vv.get(me, 0) > self.seq:
            found.append((me, "%s holds change %d of this device's actor %016x, which this "
                               "device never issued (it issued up to %d)"
                          % (peer, peer_vv[me], me, self.seq)))
        for a, s, h in peer_heads:
            mine = self._own_hash(s) if a == me else None
            top = self.heads.get(a)
            if mine is None and top is not None and top[0] == s:
                mine = top[1]
            if mine is not None and mine != h and not any(f[0] == a for f in found):
                found.append((a, "%s holds a different change %d of actor %016x than this "
                                 "device" % (peer, s, a)))
        for a, why in found:
            self.fork_found(a, why)
        return found

    def fork_found(self, actor: int, why: str) -> None:
        """Record a fork of actor; if it is this node's own, take a fresh actor id."""
        if any(f["actor"] == "%016x" % actor for f in self.forks):
            if actor != self.actor:
                return
        entry = {"actor": "%016x" % actor, "why": why, "time": int(time.time())}
        if actor == self.actor and not self.readonly:
            entry["own"] = True
            entry["split_seqs"] = [1, self.seq]
            entry["new_actor"] = "%016x" % self._take_fresh_actor()
            msg = ("fork: %s. This device now writes as actor %s; the changes it wrote "
                   "as %016x (seqs up to %d) may not have reached every peer"
                   % (why, entry["new_actor"], actor, entry["split_seqs"][1]))
        else:
            msg = "fork: %s; both devices' later changes are kept" % why
        self.forks = (self.forks + [entry])[-MAX_FORKS:]
        self.events.append(msg)
        self.fork_events.append(msg)
        if not self.readonly:
            fs.write_json(os.path.join(self.data_dir, FORKS_FILE), {"version": 1,
                                                                   "forks": self.forks})
            self.checkpoint()

    def _load_forks(self):
        d = fs.read_json(os.path.join(self.data_dir, FORKS_FILE), "the forks this device found",
                         "Delete it: the forks it listed are found again at the next sync",
                         default=None)
        self.forks = list(d.get("forks", [])) if d else []

    def _own_changes_from_peer(self, changes) -> None:
        """A peer sent a change of this node's actor above any seq it issued."""
        me = self.actor
        for c in changes:
            if c.actor == me and c.seq > self.seq:
                self.fork_found(me, "a peer sent change %d of this device's actor %016x, which "
                                    "this device never issued (it issued up to %d)"
                                % (c.seq, me, self.seq))
                return

    def _take_fresh_actor(self) -> int:
        old = self.actor
        self.log.commit()
        from .keys import new_actor_key
        new = new_actor_key(self.data_dir)
        ident = read_identity(self.data_dir)
        ident["previous_actors"] = list(ident.get("previous_actors", [])) + ["%016x" % old]
        ident["actor"] = "%016x" % new
        fs.write_json(identity_path(self.data_dir), ident)
        try:
            fs.unlink(os.path.join(self.data_dir, "reserve"))
        except FileNotFoundError:
            pass
        self.reserve = Reserve(self.data_dir, new)
        self.reserve.need_clock(self.clock.last)
        self.actor = new
        self._actor_b = new.to_bytes(8, "little")
        self.clock.actor = new
        self.seq = 0
        self.own_top = (0, NO_HASH)
        self.own_hashes = [None] * OWN_HASHES
        self.me = self.store.actor_index(new)
        self._me_map = [self.me]
        self._me_enc = index_map(self._me_map)
        self._me_table = actor_table([new])
        return new
