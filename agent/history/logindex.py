"""The op log's per-actor index: for each sealed segment, the runs of seqs
of each actor it holds (docs/FORMAT.md, "Segment index").

    idx = LogIndex(log)
    idx.runs(n)              {actor: [[lo, hi], ...]} of sealed segment n
    idx.start_for(known)     where a session for a peer holding `known` starts
    idx.known_of([n, ...])   a Known of what those segments hold

A sealed segment never changes, so its index is built once (one pass over
its change headers) and kept beside it as `NNNNNNNN.idx`, a JSON file with
a CRC. A missing or damaged index is rebuilt from its segment; a read-only
process builds it in memory only. The segment being written has no index:
a session reads it whole, so a session's start costs at most one segment.
"""
import os

from .. import fs
from ..change import actor_seq
from ..errors import AgentError, MalformedChange, StoreCorrupt
from ..vector import Known

__all__ = ["LogIndex", "runs_of"]


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


class LogIndex:
    def __init__(self, log, readonly: bool = False):
        self.log = log
        self.readonly = readonly
        self._runs = {}       # segment -> {actor: runs}

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
        for a, rs in self.runs(n).items():
            for lo, hi in rs:
                if not known.covers(a, lo, hi):
                    return False
        return True

    def start_for(self, known: Known):
        """The log position where a session for a peer holding `known` starts:
        the first sealed segment it does not wholly hold, else the segment
        being written."""
        for n in self.sealed():
            if not self.held_by(n, known):
                return (n, 0)
        return (self.log.seg, 0)

    def known_of(self, segments) -> Known:
        seqs = {}
        for n in segments:
            for a, rs in self.runs(n).items():
                seqs.setdefault(a, []).extend(rs)
        merged = {}
        for a, rs in seqs.items():
            rs.sort()
            out = []
            for lo, hi in rs:
                if out and lo <= out[-1][1] + 1:
                    out[-1][1] = max(out[-1][1], hi)
                else:
                    out.append([lo, hi])
            merged[a] = out
        return Known.from_runs(merged)

    def forget(self, n: int) -> None:
        self._runs.pop(n, None)
        try:
            fs.unlink(self._path(n))
        except OSError:
            pass
