"""Snapshots in: a peer's snapshot taken over sync (a new device, or one
behind the compacted history), and this device's own snapshot as the base
of a rebuild or a repair.

    inc = Incoming(node); inc.write(chunk, first, last)  a peer's snapshot, to disk
    absorb(node, path)        join every record into the store, then hold what it holds
    own_blobs(node, keys)     {key: blob} of this device's snapshot, in the store's ids

A peer's snapshot is checked whole before anything of it is applied: every
CRC, every blob decoded, every id in range (SnapshotCorrupt, MalformedChange:
the session closes, nothing changes). Applying joins each record (history/
join.py), so records this device wrote meanwhile keep their writes. The
known vector is raised only once every record is in, and the result is made
this device's own snapshot (compact) before the session acknowledges it: a
crash before that takes the snapshot again next session.
"""
import os

from .. import fs
from ..errors import MalformedChange, ClockSkewError
from ..store.keyindex import MAX_KEY
from ..store.big import MAX_RECORD
from ..values import is_visible
from ..vector import Known, MAX_GAPS
from .join import join_blob
from .snapshot import Reader, SnapshotCorrupt

__all__ = ["Incoming", "absorb", "own_blobs", "MAX_SNAPSHOT", "load_tables"]

MAX_SNAPSHOT = int(float(os.environ.get("MYCELIUM_MAX_SNAPSHOT_MB", 4096)) * (1 << 20))
MAX_NAMES = 1 << 16
MAX_NAME = 4096
MAX_ACTORS = 1 << 16


class Incoming:
    """A peer's snapshot as it arrives, chunk by chunk, in history/incoming.part."""

    def __init__(self, node):
        self.dir = os.path.join(node.data_dir, "history")
        self.part = os.path.join(self.dir, "incoming.part")
        self.path = os.path.join(self.dir, "incoming")
        self.fd = -1
        self.size = 0

    def write(self, chunk, first: bool, last: bool) -> bool:
        """Append one chunk (first: start over). Returns True once the last
        chunk is on disk at self.path. Raises SnapshotCorrupt past the cap."""
        if first or self.fd < 0:
            self.close()
            fs.mkdir(self.dir)
            try:
                self.fd = fs.open_fd(self.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            except OSError as e:
                raise fs.error(e, "write", self.part) from None
            self.size = 0
        self.size += len(chunk)
        if self.size > MAX_SNAPSHOT:
            self.close()
            raise SnapshotCorrupt("the peer's snapshot is over %d MB (MYCELIUM_MAX_SNAPSHOT_MB)"
                                  % (MAX_SNAPSHOT >> 20))
        try:
            fs.write(self.fd, chunk)
            if last:
                fs.fsync(self.fd)
                fs.close(self.fd)
                self.fd = -1
                fs.rename(self.part, self.path)
        except OSError as e:
            self.close()
            raise fs.error(e, "write", self.part) from None
        return last

    def close(self):
        self.fd = fs.close_quietly(self.fd)


def _known(obj, what):
    if not isinstance(obj, dict):
        raise MalformedChange("%s is not a version vector" % what)
    vv, gaps = obj.get("vv", {}), obj.get("gaps", {})
    if not isinstance(vv, dict) or not isinstance(gaps, dict) or len(vv) > MAX_ACTORS:
        raise MalformedChange("%s is not a version vector" % what)
    try:
        k = Known.from_json(obj)
        n = 0
        for a, s in k.vv.items():
            if not (0 < a < 1 << 64) or not isinstance(s, int) or not 0 < s < 1 << 63:
                raise ValueError
        for a, gs in k.gaps.items():
            for lo, hi in gs:
                n += 1
                if not isinstance(lo, int) or not isinstance(hi, int) or not 0 < lo <= hi \
                        or hi > k.vv.get(a, 0):
                    raise ValueError
        if n > MAX_GAPS:
            raise ValueError
    except (ValueError, TypeError, AttributeError):
        raise MalformedChange("%s is not a version vector" % what) from None
    return k


def load_tables(header):
    """(field names, actor ids, known) of a snapshot header, each checked."""
    fields, actors = header.get("fields"), header.get("actors")
    if not isinstance(fields, list) or len(fields) > MAX_NAMES or not all(
            isinstance(f, str) and 0 < len(f.encode("utf-8", "replace")) <= MAX_NAME
            for f in fields):
        raise MalformedChange("the snapshot's field table is malformed")
    try:
        if not isinstance(actors, list) or len(actors) > MAX_ACTORS:
            raise ValueError
        ids = [int(a, 16) for a in actors]
        if any(not 0 < a < 1 << 64 for a in ids):
            raise ValueError
    except (ValueError, TypeError):
        raise MalformedChange("the snapshot's actor table is malformed") from None
    return fields, ids, _known(header.get("known"), "the snapshot's `known`")


def _check(path):
    """Read a snapshot whole without applying it: every CRC, blob and key."""
    with Reader(path) as r:
        fields, actors, known = load_tables(r.header)
        fmap, amap = range(len(fields)), range(len(actors))
        n = 0
        for key, blob in r.records():
            if not 0 < len(key) <= MAX_KEY:
                raise MalformedChange("a snapshot key of %d bytes" % len(key))
            try:
                key.decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedChange("a snapshot key is not UTF-8") from None
            join_blob(b"", blob, fmap, amap, actors)
            n += 1
        return r.header, n


def _apply(node, path, keep=None):
    """Join the snapshot's records into node's store (only keys in `keep`
    if given: then return {key: blob} instead of saving). Returns the header."""
    store = node.store
    out = {}
    with Reader(path) as r:
        fields, actors, _ = load_tables(r.header)
        fmap = [store.field_id(f) for f in fields]
        amap = [store.actor_index(a) for a in actors]
        ids = store.actors.items
        group = []
        for rec in r.records():
            if keep is not None:
                k = rec[0].decode("utf-8")
                if k in keep:
                    out[k] = join_blob(b"", rec[1], fmap, amap, ids)
                continue
            group.append(rec)
            if len(group) >= 512:
                _join_group(node, group, fmap, amap, ids)
                group = []
        if group:
            _join_group(node, group, fmap, amap, ids)
        return out if keep is not None else r.header


def _join_group(node, group, fmap, amap, ids):
    store = node.store
    kbs = [k for k, _ in group]
    kids, ours = node._load_many(kbs)
    changed = []
    for kb, kid, o, (_, theirs) in zip(kbs, kids, ours, group):
        b = join_blob(o, theirs, fmap, amap, ids)
        if len(b) > MAX_RECORD:
            # ours and the peer's state together outgrow a record, as a merge
            # of the changes would (that change is quarantined): keep ours, say so
            node._mark_incomplete("record %r: joined with the peer's snapshot it would take %d "
                                  "bytes, over the %d-byte limit; this device keeps its own "
                                  "state of it" % (kb.decode("utf-8", "replace"), len(b),
                                                   MAX_RECORD))
            continue
        if b != o:
            changed.append((kid, kb, b))
    if not changed:
        return
    store.make_room([(kid, kb, len(b)) for kid, kb, b in changed])
    store.save_group(changed, is_visible)


def _adopt(node, header, known):
    """Hold what the snapshot holds: known, heads, seq and clock."""
    node.known = node.known.union(known)
    for a, v in (header.get("heads") or {}).items():
        try:
            actor, (sq, h) = int(a, 16), v
            hb = bytes.fromhex(h)
            if isinstance(sq, int) and sq > 0 and node.known.has(actor, sq):
                node._note_head(actor, sq, hb)
        except (ValueError, TypeError):
            continue
    own = node.known.vv.get(node.actor, 0)
    if own > node.seq:  # our own changes came back (a restored backup): never reuse a seq
        node.seq = own
        if not node.readonly:
            node.reserve.need_seq(own)
    clock = header.get("clock")
    if isinstance(clock, int) and clock > 0:
        try:
            node.clock.observe(clock)
        except ClockSkewError:
            pass


def absorb(node, path) -> dict:
    """Take a peer's snapshot at path: check it whole, join it in, hold
    what it holds, and make the result this device's snapshot."""
    from .compact import compact
    header, n = _check(path)
    _, _, known = load_tables(header)
    _apply(node, path)
    _adopt(node, header, known)
    node.dropped = node.dropped.union(known)   # held here without their changes in the log
    compact(node, drop=False)
    try:
        fs.unlink(path)
    except OSError:
        pass
    return {"records": n}


def load_own(node, path) -> dict:
    """Rebuild: this device's own snapshot into a fresh store; returns its header."""
    header, _ = _check(path)
    _, _, known = load_tables(header)
    _apply(node, path)
    _adopt(node, header, known)
    try:
        node.dropped = _known(header.get("dropped", {}), "the snapshot's `dropped`")
    except MalformedChange:
        node.dropped = known
    return header


def own_blobs(node, keys) -> dict:
    """Repair: {key: blob} of keys in this device's snapshot (store ids)."""
    path = node.snapshot_path
    if not os.path.exists(path):
        return {}
    try:
        return _apply(node, path, keep=set(keys))
    except (SnapshotCorrupt, MalformedChange, UnicodeDecodeError) as e:
        node.events.append("the snapshot could not be read for a repair (%s)" % e)
        return {}
