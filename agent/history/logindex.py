"""The op log's per-actor index: for each sealed segment, the runs of seqs
of each actor it holds (docs/FORMAT.md, "Segment index").

    idx = LogIndex(log)
    idx.runs(n)              {actor: [[lo, hi], ...]} of sealed segment n
    idx.start_for(known)     where a session for a peer holding `known` starts
    idx.known_of([n, ...])   a Known of what those segments hold

A sealed segment never changes, so its index is built once (one pass over
its change headers) and kept beside it as `NNNNNNNN.idx`, a JSON file with
a CRC. A missing or damaged index is rebuilt from its segment; a read-only
process builds it in memory only.

Within a segment, blocks of BLOCK entries (their offset and runs, in memory,
each entry read once per process: the segment being written is read on from
where the last look ended) let a session start at the first block the peer
does not wholly hold, not at the segment's start. A peer a few changes
behind then costs a few blocks to read, however long the segment or the
history (bench/session_start.py).
"""
import os

from .. import fs
from ..change import actor_seq
from ..errors import AgentError, MalformedChange, StoreCorrupt
from ..vector import Known

__all__ = ["LogIndex", "runs_of", "BLOCK"]

BLOCK = 256           # entries per block of a segment


def runs_of(seqs_by_actor) -> dict:
    """{actor: sorted disjoint runs [lo, hi]} from {actor: iterable of seqs}."""
    out = {}
    for a, seqs in seqs_by_actor.items():
        runs = []
        for s in sorted(set(seqs)):
            if runs and s == runs[-1][1] + 1:
                runs[-1][1] = s
            else:
                runs.append([s, s])
        out[a] = runs
    return out


def merge_runs(many) -> dict:
    """The union of several {actor: runs}, as sorted disjoint runs."""
    seqs = {}
    for runs in many:
        for a, rs in runs.items():
            seqs.setdefault(a, []).extend(rs)
    merged = {}
    for a, rs in seqs.items():
        rs = sorted(rs)
        out = []
        for lo, hi in rs:
            if out and lo <= out[-1][1] + 1:
                out[-1][1] = max(out[-1][1], hi)
            else:
                out.append([lo, hi])
        merged[a] = out
    return merged


def _holds(known, runs) -> bool:
    for a, rs in runs.items():
        for lo, hi in rs:
            if not known.covers(a, lo, hi):
                return False
    return True


class LogIndex:
    def __init__(self, log, readonly: bool = False):
        self.log = log
        self.readonly = readonly
        self._runs = {}       # segment -> {actor: runs}
        self._blocks = {}     # segment -> [end read, [[offset, count, seqs|runs, cumulative runs]]]

    def _path(self, n):
        return self.log.path(n)[:-4] + ".idx"

    def sealed(self):
        return [n for n in self.log.segments if n < self.log.seg or
                (self.log.fd < 0 and n != self.log.segments[-1])]

    def runs(self, n: int) -> dict:
        got = self._runs.get(n)
        if got is not None:
            return got
        try:
            obj = fs.read_json(self._path(n), "the index of a log segment", "", None, False)
        except StoreCorrupt:
            obj = None  # rebuilt below
        if obj is not None and obj.get("size") == self._size(n):
            got = {int(a, 16): rs for a, rs in obj["runs"].items()}
        else:
            got = self._build(n)
        self._runs[n] = got
        return got

    def _size(self, n):
        try:
            return os.path.getsize(self.log.path(n))
        except OSError:
            return -1

    def _build(self, n):
        seqs = {}
        for _, raw in self.log.read((n, 0), upto=(n + 1, 0)):
            try:
                a, s = actor_seq(raw)
            except MalformedChange:
                continue
            seqs.setdefault(a, []).append(s)
        runs = runs_of(seqs)
        if not self.readonly and n < self.log.seg:
            try:
                fs.write_json(self._path(n), {"size": self._size(n), "runs": {
                    "%016x" % a: rs for a, rs in runs.items()}})
            except AgentError:
                pass  # an index is a cache (a full disk): built again next time
        return runs

    def held_by(self, n: int, known: Known) -> bool:
        """True if `known` holds every change of sealed segment n."""
        return _holds(known, self.runs(n))

    def start_for(self, known: Known):
        """The log position where a session for a peer holding `known` starts:
        in the first segment it does not wholly hold (else the one being
        written), the first block of it that it does not wholly hold. Every
        change `known` lacks is at or after it."""
        for n in self.sealed():
            if not self.held_by(n, known):
                return self._within(n, known)
        return self._within(self.log.seg, known)

    def _within(self, n, known):
        """The offset in segment n of its first block `known` lacks a change
        of; the end read so far if it holds them all. "Holds every change of
        the blocks up to i" can only turn false as i grows, so the first full
        block it fails for is found by bisection over the blocks' cumulative
        runs: a few checks, however long the segment."""
        got = self._read_blocks(n)
        if got is None:
            return (n, 0)
        end, blocks = got
        full = len(blocks) if not blocks or blocks[-1][1] >= BLOCK else len(blocks) - 1
        lo, hi = 0, full           # the first full block not held is in [lo, hi]
        while lo < hi:
            mid = (lo + hi) // 2
            if _holds(known, blocks[mid][3]):
                lo = mid + 1
            else:
                hi = mid
        if lo < full:
            return (n, blocks[lo][0])
        if full < len(blocks) and not _holds(known, runs_of(blocks[-1][2])):
            return (n, blocks[-1][0])
        return (n, end)

    def _read_blocks(self, n):
        """Read segment n's entries not yet read into its blocks (up to what
        is on disk); None if it cannot be read (the session reads it whole)."""
        state = self._blocks.get(n)
        if state is None:
            state = self._blocks[n] = self._saved_blocks(n) or [0, []]
        upto = self.log.durable_end() if n == self.log.seg else (n + 1, 0)
        blocks = state[1]
        try:
            for pos, raw, end in self.log.entries((n, state[0]), upto=upto):
                if not blocks or blocks[-1][1] >= BLOCK:
                    blocks.append([pos[1], 0, {}])
                b = blocks[-1]
                try:
                    a, sq = actor_seq(raw)
                except MalformedChange:
                    a = None
                if a is not None:
                    b[2].setdefault(a, []).append(sq)
                b[1] += 1
                if b[1] >= BLOCK:     # a full block keeps its runs and those up to it
                    b[2] = runs_of(b[2])
                    b.append(merge_runs([blocks[-2][3], b[2]]) if len(blocks) > 1 else b[2])
                state[0] = end[1]
        except AgentError:
            self._blocks.pop(n, None)
            return None
        return state

    # The blocks of the segment being written are saved when the node closes
    # (log/blocks.json), so a restart reads on from there, not the whole
    # segment; after a crash the segment is read again. Only full blocks of
    # entries that were on disk are saved, and the log only grows past them.

    def _blocks_path(self):
        return os.path.join(self.log.dir, "blocks.json")

    def save_blocks(self) -> None:
        n = self.log.seg
        state = self._blocks.get(n)
        if self.readonly or state is None:
            return
        full = [b for b in state[1] if b[1] >= BLOCK]
        if not full:
            return
        end = state[1][len(full)][0] if len(full) < len(state[1]) else state[0]
        try:
            fs.write_json(self._blocks_path(), {"segment": n, "end": end, "blocks": [
                [b[0], b[1], {"%016x" % a: rs for a, rs in b[2].items()}] for b in full]})
        except AgentError:
            pass        # a cache: the segment is read again next time

    def _saved_blocks(self, n):
        try:
            obj = fs.read_json(self._blocks_path(), "the log's block index", "", None, False)
        except (StoreCorrupt, AgentError):
            return None
        if not obj or obj.get("segment") != n or not (0 < obj.get("end", 0) <= self._size(n)):
            return None
        blocks = []
        for off, count, runs in obj["blocks"]:
            runs = {int(a, 16): rs for a, rs in runs.items()}
            blocks.append([off, count, runs, merge_runs([blocks[-1][3], runs]) if blocks
                           else runs])
        return [obj["end"], blocks]

    def known_of(self, segments) -> Known:
        return Known.from_runs(merge_runs([self.runs(n) for n in segments]))

    def forget(self, n: int) -> None:
        self._runs.pop(n, None)
        self._blocks.pop(n, None)
        try:
            fs.unlink(self._path(n))
        except OSError:
            pass
