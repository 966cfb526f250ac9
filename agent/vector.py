"""What a node holds of each actor's changes: a version vector with gaps.

    vv[actor]    the highest seq held
    gaps[actor]  sorted, disjoint ranges [lo, hi] below it that may hold
                 changes not held here; hi is known to exist (a change held
                 here names it as its prev)

A change (actor, seq, prev) is held if seq <= vv[actor] and seq lies in no
gap. Seqs of one actor rise but may skip (a device jumps past its reserved
seqs after a crash); `prev` says nothing lies between. Changes may arrive
out of order: every op is a state the merge joins, so order does not change
the result, and a change past a missing one opens a gap that any peer may
fill. A gap also marks a change this node held but lost from its log (a
damaged entry), so that a peer sends it again.
"""
import struct

from .codec import get_varint, put_varint
from .errors import MalformedChange

__all__ = ["Known", "MAX_GAPS"]

MAX_GAPS = 4096  # per vector: past this the oldest gaps are forgotten (reported)
_u64 = struct.Struct("<Q")


class Known:
    __slots__ = ("vv", "gaps", "forgotten")

    def __init__(self, vv=None, gaps=None):
        self.vv = dict(vv or {})
        self.gaps = {a: [list(r) for r in rs] for a, rs in (gaps or {}).items() if rs}
        self.forgotten = 0

    def copy(self):
        return Known(self.vv, self.gaps)

    def has(self, actor: int, seq: int) -> bool:
        if seq > self.vv.get(actor, 0):
            return False
        gs = self.gaps.get(actor)
        if gs:
            for lo, hi in gs:
                if lo <= seq <= hi:
                    return False
        return True

    def add(self, actor: int, seq: int, prev: int) -> None:
        """Record that (actor, seq) is now held; its prev is prev."""
        top = self.vv.get(actor, 0)
        if seq > top:
            self.vv[actor] = seq
            if prev > top:
                self._insert(actor, top + 1, prev)
            return
        gs = self.gaps.get(actor)
        if not gs:
            return
        for i, (lo, hi) in enumerate(gs):
            if lo <= seq <= hi:
                parts = []
                if prev >= lo:
                    parts.append([lo, prev])
                if seq < hi:
                    parts.append([seq + 1, hi])
                gs[i:i + 1] = parts
                if not gs:
                    del self.gaps[actor]
                return

    def lose(self, actor: int, seq: int) -> None:
        """A change held here is gone (its log entry was damaged): ask for it."""
        if seq <= self.vv.get(actor, 0) and self.has(actor, seq):
            self._insert(actor, seq, seq)

    def _insert(self, actor, lo, hi):
        gs = self.gaps.setdefault(actor, [])
        gs.append([lo, hi])
        gs.sort()
        merged = []
        for r in gs:
            if merged and r[0] <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], r[1])
            else:
                merged.append(r)
        self.gaps[actor] = merged
        n = sum(len(v) for v in self.gaps.values())
        while n > MAX_GAPS:
            a = max(self.gaps, key=lambda k: len(self.gaps[k]))
            self.gaps[a].pop(0)
            if not self.gaps[a]:
                del self.gaps[a]
            self.forgotten += 1
            n -= 1

    def union(self, other) -> "Known":
        """What this or other holds: a seq is missing only where both lack it."""
        out = Known()
        inf = float("inf")
        for a in set(self.vv) | set(other.vv):
            m1 = self.gaps.get(a, []) + [[self.vv.get(a, 0) + 1, inf]]
            m2 = other.gaps.get(a, []) + [[other.vv.get(a, 0) + 1, inf]]
            both, i, j = [], 0, 0
            while i < len(m1) and j < len(m2):
                lo, hi = max(m1[i][0], m2[j][0]), min(m1[i][1], m2[j][1])
                if lo <= hi:
                    both.append([lo, hi])
                if m1[i][1] < m2[j][1]:
                    i += 1
                else:
                    j += 1
            top = both.pop()[0] - 1          # the last range is the open one
            if top:
                out.vv[a] = top
            if both:
                out.gaps[a] = both
        return out

    def covers(self, actor: int, lo: int, hi: int) -> bool:
        """True if every seq in lo..hi of actor is held."""
        if hi > self.vv.get(actor, 0):
            return False
        for glo, ghi in self.gaps.get(actor, ()):
            if glo <= hi and lo <= ghi:
                return False
        return True

    @classmethod
    def from_runs(cls, runs: dict) -> "Known":
        """What a set of changes holds: runs {actor: sorted disjoint [lo, hi]}
        (seqs outside them are gaps below the top)."""
        k = cls()
        for a, rs in runs.items():
            if not rs:
                continue
            k.vv[a] = rs[-1][1]
            gaps, nxt = [], 1
            for lo, hi in rs:
                if lo > nxt:
                    gaps.append([nxt, lo - 1])
                nxt = hi + 1
            if gaps:
                k.gaps[a] = gaps
        return k

    def lacks_any(self, base: "Known") -> bool:
        """True if base holds some change this does not (exact, by ranges)."""
        inf = float("inf")
        for a, top in base.vv.items():
            mine = self.gaps.get(a, []) + [[self.vv.get(a, 0) + 1, inf]]
            theirs = base.gaps.get(a, [])
            for lo, hi in mine:           # each range this lacks, within 1..top
                hi = min(hi, top)
                if lo > hi:
                    continue
                # base lacks the whole range only if one of its gaps spans it
                if not any(glo <= lo and hi <= ghi for glo, ghi in theirs):
                    return True
        return False

    def missing(self) -> int:
        """How many gap ranges are open."""
        return sum(len(v) for v in self.gaps.values())

    def behind(self, other) -> int:
        """Roughly how many changes other holds that this lacks (seq
        distance: seqs may skip, so it can overstate)."""
        n = 0
        for a, s in other.vv.items():
            n += max(0, s - self.vv.get(a, 0))
        for a, gs in self.gaps.items():
            for lo, hi in gs:
                top = other.vv.get(a, 0)
                if top >= lo:
                    n += min(hi, top) - lo + 1
        return n

    # -- encodings

    def encode(self, out: bytearray) -> None:
        """Wire form (docs/SYNC.md): the vector, then the gaps."""
        items = sorted((a, s) for a, s in self.vv.items() if s > 0)
        put_varint(out, len(items))
        for a, s in items:
            out += _u64.pack(a)
            put_varint(out, s)
        gaps = sorted((a, lo, hi) for a, gs in self.gaps.items() for lo, hi in gs)
        put_varint(out, len(gaps))
        for a, lo, hi in gaps:
            out += _u64.pack(a)
            put_varint(out, lo)
            put_varint(out, hi - lo)

    @classmethod
    def decode(cls, buf, p, max_entries: int):
        """(Known, new position). Counts are bounded before anything is
        allocated; raises MalformedChange on bad bytes."""
        k = cls()
        n, p = get_varint(buf, p)
        if n > max_entries or n * 9 > len(buf) - p:
            raise MalformedChange("version vector of %d entries runs past its message" % n)
        vv = k.vv
        for _ in range(n):
            if p + 8 > len(buf):
                raise MalformedChange("version vector runs past its message")
            a = _u64.unpack_from(buf, p)[0]
            s, p = get_varint(buf, p + 8)
            if a == 0 or s == 0 or a in vv:
                raise MalformedChange("version vector has a zero or repeated entry")
            vv[a] = s
        n, p = get_varint(buf, p)
        if n > MAX_GAPS or n * 10 > len(buf) - p:
            raise MalformedChange("gap list of %d entries runs past its message" % n)
        for _ in range(n):
            if p + 8 > len(buf):
                raise MalformedChange("gap list runs past its message")
            a = _u64.unpack_from(buf, p)[0]
            lo, p = get_varint(buf, p + 8)
            span, p = get_varint(buf, p)
            hi = lo + span
            if lo == 0 or hi > vv.get(a, 0):
                raise MalformedChange("gap %d..%d of %016x lies outside its vector" % (lo, hi, a))
            k.gaps.setdefault(a, []).append([lo, hi])
        for gs in k.gaps.values():
            gs.sort()
        return k, p

    def to_json(self) -> dict:
        out = {"vv": {"%016x" % a: s for a, s in self.vv.items()}}
        if self.gaps:
            out["gaps"] = {"%016x" % a: gs for a, gs in self.gaps.items()}
        return out

    @classmethod
    def from_json(cls, d: dict):
        return cls({int(a, 16): s for a, s in d.get("vv", {}).items()},
                   {int(a, 16): gs for a, gs in d.get("gaps", {}).items()})
