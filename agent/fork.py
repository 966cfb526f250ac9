"""Forks: two devices writing under one actor id (a data directory copied or
restored onto a second device), found and made loud (docs/SYNC.md, "Forks").

An (actor, seq) names one change. If two devices issue the same one with
different content, peers keep whichever reached them first and drop the
other as a duplicate, and every sync reports success: a silent split. A
node therefore keeps, per actor, the seq and hash of the highest change it
holds (`heads`, in the store's meta) and of its own last OWN_HASHES changes.
Sync compares them (the HELLO carries the sender's heads). A HELLO is not
signed, so where the heads differ each side sends the other its change of
that (actor, seq), signed as every change is; the fork is proven only by such
a change, so that a hostile peer's claims cannot make a device move:

  - a peer sends a signed change of this node's actor above any seq this
    node issued: another device writes as this one;
  - a peer sends a signed change for an (actor, seq) that differs from the
    one held here.

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
FORKS_DIR = "forks"      # the other side's changes, kept for repair


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

    def _known_hash(self, actor, seq):
        """The first HEAD_HASH bytes of the hash of (actor, seq) if this node
        knows it cheaply (one of its own recent changes, or an actor's head)."""
        mine = self._own_hash(seq) if actor == self.actor else None
        top = self.heads.get(actor)
        if mine is None and top is not None and top[0] == seq:
            mine = top[1]
        return mine

    def heads_to_send(self):
        """[(actor, seq, hash)] of the tops this node holds (what HELLO carries)."""
        vv = self.known.vv
        return [(a, s, h) for a, (s, h) in sorted(self.heads.items()) if vv.get(a) == s]

    def check_heads(self, peer_vv: dict, peer_heads, peer: str) -> list:
        """Compare a peer's HELLO heads with what this node holds. A HELLO is
        not signed, so a mismatch proves nothing and changes nothing here:
        returns the (actor, seq) whose change differs, and the session sends
        this node's change of each to the peer, signed, as its evidence (the
        peer does the same). A fork is recorded only from such a change
        (_forks_in); a claim to hold more of this node's actor than it issued
        is settled the same way, by the changes the peer then sends."""
        me = self.actor
        differ = []
        for a, s, h in peer_heads:
            mine = self._known_hash(a, s)
            if mine is not None and mine != h:
                differ.append((a, s))
        return differ

    def fork_found(self, actor: int, why: str, other=None) -> None:
        """Record a fork of actor; if it is this node's own, take a fresh actor
        id. other: the peer's signed change that proved it, whose content
        this node did not take (it holds another under that name): it is
        kept in forks/ for repair."""
        if any(f["actor"] == "%016x" % actor for f in self.forks):
            if actor != self.actor:
                return
        entry = {"actor": "%016x" % actor, "why": why, "time": int(time.time())}
        if other is not None and not self.readonly:
            entry["kept"] = self._keep_other(other)
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
        self.timeline.emit("fork", actor="%016x" % actor, why=why, own=actor == self.actor)
        if not self.readonly:
            fs.write_json(os.path.join(self.data_dir, FORKS_FILE), {"version": 1,
                                                                   "forks": self.forks})
            self.checkpoint()

    def _keep_other(self, c):
        """Write the other side's change to forks/ACTOR-SEQ-HASH.chg (bytes as
        in the log, docs/FORMAT.md); returns its path in the data directory."""
        d = os.path.join(self.data_dir, FORKS_DIR)
        name = "%016x-%d-%s.chg" % (c.actor, c.seq, c.hash[:HEAD_HASH].hex())
        try:
            if len(os.listdir(d)) >= MAX_FORKS:
                return None
        except FileNotFoundError:
            fs.mkdir(d)
        fs.atomic_write(os.path.join(d, name), bytes(c.raw))
        return FORKS_DIR + "/" + name

    def _load_forks(self):
        d = fs.read_json(os.path.join(self.data_dir, FORKS_FILE), "the forks this device found",
                         "Delete it: the forks it listed are found again at the next sync",
                         default=None)
        self.forks = list(d.get("forks", [])) if d else []

    def _forks_in(self, changes) -> list:
        """Forks that signed changes from a peer prove (they passed
        agent/sync/signing.py's check): a change of this node's actor above
        any seq it issued, or another change than the one this node holds for
        an (actor, seq) whose hash it knows. Returns [(actor, why)]."""
        found = []
        me = self.actor
        for c in changes:
            if c.prev_hash is None:
                continue            # unsigned (0.1): proves nothing
            if c.actor == me:
                if c.seq > self.seq:
                    why = ("a peer sent change %d of this device's actor %016x, signed with "
                           "its key, which this device never issued (it issued up to %d)"
                           % (c.seq, me, self.seq))
                else:
                    mine = self._known_hash(me, c.seq)
                    if mine is None or mine == c.hash[:HEAD_HASH]:
                        continue
                    why = ("a peer sent another change %d of this device's actor %016x, "
                           "signed with its key" % (c.seq, me))
                self.fork_found(me, why, c if c.seq <= self.seq else None)
                found.append((me, why))
                me = self.actor
                continue
            top = self.heads.get(c.actor)
            if top is not None and top[0] == c.seq and top[1] != c.hash[:HEAD_HASH] \
                    and not any(f[0] == c.actor for f in found):
                why = ("two devices wrote change %d of actor %016x (both signed with its key): "
                       "a copied data directory" % (c.seq, c.actor))
                self.fork_found(c.actor, why, c)
                found.append((c.actor, why))
        return found

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
