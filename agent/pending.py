"""Changes a node received but has not applied (docs/SYNC.md, "Held and
quarantined changes"):

  held         stamped further ahead of this device's clock than the bound;
               re-checked as the clock moves, or released by the operator
  quarantined  this build cannot apply it (it does not parse, or its merge is
               refused); retried after an upgrade, or by the operator

A pending change is kept whole in `pending/ACTOR-SEQ.chg` (written durably
before the peer's ACK) and counts as held in what the node tells peers, so
no peer resends it and no session stalls on it. An actor's later changes
wait behind its first held one (its later stamps are ahead too), so each
actor's changes past that point apply in seq order; every other actor's
changes keep flowing, and a quarantined change holds back nothing.

File: b"MYPEND01", u32 header length, header (JSON: kind, why, actor, seq,
prev, hlc, build, time), the change's bytes, u32 crc32 of all before.
"""
import json
import os
import struct
import time
import zlib

from . import __version__, fs
from .errors import StoreCorrupt

__all__ = ["Pending", "HELD", "QUARANTINED", "MAX_PENDING"]

HELD, QUARANTINED = "held", "quarantined"
MAGIC = b"MYPEND01"
MAX_PENDING = 4096          # changes; past it a change is not taken (its sender keeps it)
_u32 = struct.Struct("<I")


class Item:
    __slots__ = ("kind", "why", "actor", "seq", "prev", "hlc", "build", "time", "path")

    def to_json(self):
        return {"kind": self.kind, "why": self.why, "actor": "%016x" % self.actor,
                "seq": self.seq, "prev": self.prev, "hlc": self.hlc, "build": self.build,
                "time": self.time}


def encode(item: Item, raw: bytes) -> bytes:
    head = json.dumps({k: v for k, v in item.to_json().items()}, sort_keys=True).encode()
    body = MAGIC + _u32.pack(len(head)) + head + raw
    return body + _u32.pack(zlib.crc32(body))


def decode(data: bytes, path: str):
    """(Item, raw change) from a file's bytes; StoreCorrupt if damaged."""
    if len(data) < 16 or data[:8] != MAGIC or \
            _u32.unpack_from(data, len(data) - 4)[0] != zlib.crc32(data[:-4]):
        raise StoreCorrupt("%s is damaged (bad magic or checksum)" % path)
    n = _u32.unpack_from(data, 8)[0]
    try:
        h = json.loads(data[12:12 + n])
        it = Item()
        it.kind, it.why = h["kind"], h["why"]
        it.actor, it.seq, it.prev, it.hlc = int(h["actor"], 16), h["seq"], h["prev"], h["hlc"]
        it.build, it.time, it.path = h["build"], h["time"], path
    except (ValueError, KeyError, TypeError):
        raise StoreCorrupt("%s is damaged (its header does not parse)" % path) from None
    if it.kind not in (HELD, QUARANTINED):
        raise StoreCorrupt("%s has an unknown kind %r" % (path, it.kind))
    return it, data[12 + n:-4]


class Pending:
    def __init__(self, data_dir: str, readonly: bool = False, events=None):
        self.dir = os.path.join(data_dir, "pending")
        self.readonly = readonly
        self.items = {}          # (actor, seq) -> Item
        self.first = {}          # actor -> lowest held seq
        events = events if events is not None else []
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            names = []
        except OSError as e:
            raise fs.error(e, "list", self.dir) from None
        for name in names:
            path = os.path.join(self.dir, name)
            if name.endswith(".tmp") and not readonly:
                fs.unlink(path)  # a write a crash interrupted: its peer resends it
                continue
            if not name.endswith(".chg"):
                continue
            try:
                it, _ = decode(fs.read_file(path), path)
            except StoreCorrupt as e:
                # Not counted as held: the peers that hold it send it again.
                events.append("%s; it is set aside, and the change is fetched again" % e)
                if not readonly:
                    fs.rename(path, path + ".damaged")
                continue
            except OSError as e:
                raise fs.error(e, "read", path) from None
            self._index(it)

    def __len__(self):
        return len(self.items)

    def __contains__(self, key):
        return key in self.items

    def _index(self, it):
        self.items[(it.actor, it.seq)] = it
        self._first(it.actor)

    def _first(self, actor):
        held = [s for (a, s), it in self.items.items() if a == actor and it.kind == HELD]
        if held:
            self.first[actor] = min(held)
        else:
            self.first.pop(actor, None)

    def blocks(self, actor: int, seq: int):
        """The held seq of `actor` that a change (actor, seq) waits behind, or
        None. Held changes keep their actor's order (its later stamps are
        ahead too); a quarantined change blocks nothing: merges are joins,
        so later changes apply without it, as after any gap."""
        f = self.first.get(actor)
        return f if f is not None and f < seq else None

    def count(self, kind: str) -> int:
        return sum(1 for it in self.items.values() if it.kind == kind)

    def add(self, c, kind: str, why: str) -> bool:
        """Keep change c (a parsed Change, or one with actor, seq, prev, hlc
        and raw) durably. False when the pending area is full."""
        key = (c.actor, c.seq)
        if key in self.items:
            return True
        if len(self.items) >= MAX_PENDING:
            return False
        it = Item()
        it.kind, it.why, it.actor, it.seq, it.prev, it.hlc = kind, why, c.actor, c.seq, \
            c.prev, c.hlc
        it.build, it.time = __version__, int(time.time())
        it.path = os.path.join(self.dir, "%016x-%d.chg" % (c.actor, c.seq))
        if not os.path.isdir(self.dir):
            fs.mkdir(self.dir)
        fs.atomic_write(it.path, encode(it, bytes(c.raw)))
        self._index(it)
        return True

    def set_kind(self, it, kind: str, why: str) -> None:
        """Rewrite an item as another kind (a held change that then failed to apply)."""
        raw = self.raw(it)
        it.kind, it.why, it.build = kind, why, __version__
        fs.atomic_write(it.path, encode(it, raw))
        self._first(it.actor)

    def raw(self, it) -> bytes:
        try:
            return decode(fs.read_file(it.path), it.path)[1]
        except OSError as e:
            raise fs.error(e, "read", it.path) from None

    def of_actor(self, actor: int):
        """Pending items of one actor, in seq order."""
        return sorted((it for (a, _), it in self.items.items() if a == actor),
                      key=lambda it: it.seq)

    def actors(self):
        return sorted({a for a, _ in self.items})

    def drop(self, it) -> None:
        """Forget an item (applied, or a duplicate of what the log holds)."""
        self.items.pop((it.actor, it.seq), None)
        try:
            fs.unlink(it.path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise fs.error(e, "remove", it.path) from None
        self._first(it.actor)

    def add_to(self, known) -> None:
        for it in self.items.values():
            known.add(it.actor, it.seq, it.prev)

    def to_json(self) -> list:
        return [it.to_json() for it in sorted(self.items.values(),
                                              key=lambda it: (it.actor, it.seq))]
