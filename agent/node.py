"""A node: one device's store, op log, clock and engine, wired together.

    with Node.open(data_dir) as n:
        n.put("user:1", {"name": "Ada", "visits": Inc(1)})
        n.get("user:1")        # {'name': 'Ada', 'visits': 1}

Local write: check -> clock -> engine.apply -> reserve seq and room ->
             op log (the ack) -> store. A write refused at any step before
             the log leaves no trace; once the log holds it, it is acked.
Remote change: parse -> held already? -> skew check -> engine.merge (one
               call per group) -> room -> op log -> store.
Read: store -> decode in Python; the engine is never loaded for reads.

The store is a cache of the op log. A record that fails its checksum is
rebuilt from the log; a store whose structure is damaged is moved aside to
`store.damaged` and rebuilt whole (`events` says so). A read-only node
(readonly=True: get, scan, stats) writes nothing: it repairs in memory.
"""
from __future__ import annotations      # annotations are not evaluated: no cost at start-up

import os
import struct
import time

from . import clock as clock_mod
from .change import (NO_HASH, Change, actor_table, key_table_one, build_change_raw,
                     change_head, parse_change, string_table)
from .codec import varint
from .core import load_engine
from .core import ops as O
from .core.batch import (build_batch, build_batch_raw, build_multi, index_map,
                         parse_apply_result, parse_merge_result)
from .events import Notes, Timeline
from .errors import (UsageError, InvalidArgument, StoreCorrupt, ClockSkewError, CoreError,
                     MalformedChange, AgentError, RecordTooLarge, RemoteError)
from . import __version__
from .pending import Pending, HELD, QUARANTINED
from .identity import init_identity, read_identity
from .oplog.log import OpLog, SEGMENT_MAX
from .fork import Forks, OWN_HASHES, OWN_MASK
from .recovery import Recovery
from .store import BlobCorrupt
from .store.big import MAX_RECORD
from .store.keyindex import MAX_KEY
from .store.mapped import READ
from .values import Inc, MV, Add, Remove, decode_record, is_visible
from .vector import Known

TYPE_CHECKING = False
if TYPE_CHECKING:       # for type checkers only (typing is not imported at run time)
    from typing import Any, Callable, Iterable, Iterator
    from .core import ReferenceEngine
    from .core.wasm import WasmEngine
    from .history.frontier import Frontier
    from .history.logindex import LogIndex
    from .store.store import Watch
    Engine = WasmEngine | ReferenceEngine
    Callback = Callable[[str, "dict | None"], None]

__all__ = ["Node", "default_data_dir", "init_identity", "read_identity"]

CHECKPOINT_EVERY = 50_000     # changes; or CHECKPOINT_SECONDS after the first since the last
CHECKPOINT_SECONDS = 60.0
Z = b"\x00"  # key index 0 and actor index 0 of a local change: its one key, this device
TRIM_CHECK_EVERY = 2048
DEFAULT_MAX_WRITE_MB = 1      # one local write; records hold up to MAX_RECORD (16 MiB)
RELEASE_EVERY = 5.0           # seconds between checks of held changes against the clock
MEND_GAP = 60.0               # seconds between snapshots written for records a check joined
# 0: off. Trimming trades read latency (pages fault back in) for a bounded
# RSS; 100K records and the core fit in 35 MB without it. Set
# MYCELIUM_RSS_BUDGET_MB on small devices with stores far larger than that.
DEFAULT_RSS_BUDGET_MB = 0
_u64 = struct.Struct("<Q")


def _then(first, more):
    """first, then (only if reached) what more() returns."""
    yield from first
    yield from more()


class Taken:
    """What Node.receive did with a batch: new, duplicates, held,
    quarantined, refused (the pending area was full), and a few reasons."""
    __slots__ = ("new", "dup", "held", "quarantined", "refused", "reasons", "forks")

    def __init__(self):
        self.new = self.dup = self.held = self.quarantined = self.refused = 0
        self.reasons = []
        self.forks = []     # [(actor, why)] the batch's signed changes proved


def default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "mycelium")


def _finite(v):
    """A value a local write may store: not NaN or an infinity (not JSON,
    and NaN is not equal to itself). Changes from peers may still hold them."""
    if type(v) is float and v - v != 0.0:
        raise ValueError("%r cannot be stored (NaN and infinities are not JSON, and NaN is "
                         "not equal to itself); store null or a string instead" % v)
    return v


def _not_utf8(text, what="a key"):
    return UsageError("%s must be valid UTF-8 text; %r is not (a file name or argument "
                      "in another encoding?)" % (what, text))


def _utf8(text, what="a key") -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise _not_utf8(text, what) from None


class Node(Recovery, Forks):
    def __init__(self, data_dir: str, durable: bool = False, engine: Engine | None = None,
                 max_skew_ms: int = clock_mod.DEFAULT_MAX_SKEW_MS,
                 flush_interval_ms: int = 100, rss_budget_mb: float | None = None,
                 readonly: bool = False,
                 segment_bytes: int = SEGMENT_MAX, max_write: int = None):
        self.data_dir = data_dir
        self.readonly = readonly
        self.durable = durable
        self._engine = engine
        self._closed = True
        self.timeline = Timeline(data_dir, readonly=readonly)   # agent/events.py
        self.events = Notes(self.timeline)  # what this open found and did: damage, repairs
        self.incomplete = None  # why records may lack changes (the CLI exits non-zero)
        self._holes_pending = False
        self._repaired = {}     # read-only, READ mode: key id -> blob rebuilt from the log
        self._rebuilds = 0      # stores rebuilt while open (key and field ids change)
        self._rebuilding = False
        self._since_checkpoint = 0
        self._checkpoint_due = 0.0
        self._ops = 0
        self.trims = 0
        self.replayed = 0
        self._tables = {}
        self.actor = int(read_identity(data_dir)["actor"], 16)
        self._actor_b = _u64.pack(self.actor)
        self.reserve = self._open_reserve()
        self.log = OpLog(os.path.join(data_dir, "log"), durable=durable,
                         interval_ms=flush_interval_ms, segment_max=segment_bytes,
                         readonly=readonly)
        self.log.on_damage = self._log_damage
        self._log_index = None
        self.snapshot_path = os.path.join(data_dir, "history", "snapshot")
        self.dropped = Known()       # changes no longer in the log (a snapshot holds them)
        self.snapshot_damaged = None
        self.last_compaction = None
        self._frontier = None
        self._incoming = None
        self._read_snapshot_header()
        # log.written at the last compaction; the log found at open counts as
        # grown, so a device restarted often still compacts
        self._log_at_compaction = -self.log.size()
        self.mended_unsaved = False   # records a convergence check joined, in no log yet
        self._mend_saved = float("-inf")
        self.pending = Pending(data_dir, readonly, self.events)
        self._next_release = 0.0
        self.heads = {}          # actor -> (seq, hash prefix) of the highest change held
        self.own_hashes = [None] * OWN_HASHES  # seq % N -> (seq, hash prefix): own last changes
        self.own_top = (0, NO_HASH)  # (seq, hash) of this actor's last change: the next's prev
        self.fork_events = []
        self._load_forks()
        self.store = None
        try:
            self._open(max_skew_ms)
        except BaseException:
            if self.store is not None:
                self.store._release()
            self.log.close()
            raise
        self.me = self.store.actor_index(self.actor)
        self._me_map = [self.me]
        self._me_enc = index_map(self._me_map)
        self._me_table = actor_table([self.actor])
        self._closed = False
        budget = rss_budget_mb if rss_budget_mb is not None else float(
            os.environ.get("MYCELIUM_RSS_BUDGET_MB", DEFAULT_RSS_BUDGET_MB))
        self.rss_budget = int(budget * 1024 * 1024)
        self.max_write = int(float(os.environ.get("MYCELIUM_MAX_WRITE_MB", DEFAULT_MAX_WRITE_MB))
                             * 1024 * 1024) if max_write is None else max_write
        self.max_write = min(self.max_write, MAX_RECORD)
        if self.snapshot_damaged is not None:
            self.dropped = self.known.copy()  # unknown: assume the worst until rewritten
        if self.pending and not readonly:
            self._settle_pending()
        if not readonly and os.path.exists(os.path.join(data_dir, "history", "incoming")):
            self._absorb_left_over()

    @classmethod
    def open(cls, data_dir: str | None = None, create: bool = True, **kw: Any) -> Node:
        data_dir = data_dir or default_data_dir()
        if create and not kw.get("readonly"):
            init_identity(data_dir)
        return cls(data_dir, **kw)

    # -- engine (loaded on first write or merge, never for reads)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = load_engine()
        return self._engine

    @property
    def vv(self) -> dict:
        return self.known.vv

    # -- reads

    def _decode(self, blob, with_kinds):
        try:
            return decode_record(blob, self.store.field_names, with_kinds)
        except IndexError:  # a name interned by a writer after we opened
            self.store.refresh_names()
            return decode_record(blob, self.store.field_names, with_kinds)

    def _blob(self, key, kid=None):
        """The record's blob (None if absent); rebuilt from the log if it
        failed its checksum, with the whole store if its index did."""
        try:
            if kid is None:
                return self.store.load(key)
            return self.store.load_id(kid, key)
        except BlobCorrupt as e:
            got = self._repaired.get(e.kid)
            if got is None:
                self.repair({e.kid})
                got = self._repaired.get(e.kid)
            if got is None:
                return self.store.load(key) if kid is None else self.store.load_id(kid, key)
            return got or None
        except StoreCorrupt as e:
            self._store_damaged(e)
            return self.store.load(key)  # key ids change in a rebuilt store

    def get(self, key: str, with_kinds: bool = False) -> dict | tuple[dict, dict] | None:
        """The record's fields as a dict, or None if absent or deleted."""
        if type(key) is not str:
            raise InvalidArgument("a key is a string, not %s" % type(key).__name__)
        if self.rss_budget:
            self._ops += 1
            if self._ops >= TRIM_CHECK_EVERY:
                self._check_memory()
        try:
            blob = self.store.load(key)
        except (StoreCorrupt, BlobCorrupt):
            blob = self._blob(key)
        except AttributeError:
            raise UsageError("this node is closed") from None
        except UnicodeEncodeError:
            raise _not_utf8(key) from None
        if blob is None:
            return None
        try:
            return decode_record(blob, self.store.field_names, with_kinds)
        except IndexError:
            return self._decode(blob, with_kinds)

    def scan(self, prefix: str = "", with_kinds: bool = False,
             limit: int = 0) -> Iterator[tuple]:
        """Yield (key, fields) of visible records under prefix, in key order;
        (key, fields, kinds) with with_kinds; at most limit (0: all)."""
        if type(prefix) is not str:
            raise InvalidArgument("a prefix is a string, not %s" % type(prefix).__name__)
        self._live()
        _utf8(prefix)
        shown = 0
        # With a limit only the first keys are read (a few spare: a record
        # the store calls visible may decode to nothing); all, if that falls short.
        want = limit + 16 if limit else 0
        found = self._retry("scan", prefix, want)
        if want and len(found) == want:
            found = _then(found, lambda: self._retry("scan", prefix)[want:])
        for key, kid in found:
            blob = self._blob(key, kid)
            got = self._decode(blob, with_kinds) if blob else None
            if got is not None:
                yield (key, got[0], got[1]) if with_kinds else (key, got)
                shown += 1
                if shown == limit:
                    return

    def pending_list(self) -> list:
        """Held and quarantined changes (agent/pending.py), as dicts."""
        return self.pending.to_json()

    def count(self) -> int:
        self._live()
        return self._retry("count")

    def watch(self, prefix: str, callback: Callback) -> Watch:
        """Call callback(key, fields_or_None) after each change under prefix.
        Returns a handle with cancel()."""
        self._live()
        names = self.store.field_names
        return self.store.watch(prefix, lambda k, b: callback(k, decode_record(b, names)))

    # -- local writes

    def _live(self):
        if self._closed:
            raise UsageError("this node is closed")

    def _writable(self):
        if self.readonly:
            raise UsageError("this node was opened read-only")
        self._live()

    def put(self, key: str, fields: dict) -> None:
        """Merge fields into key's record. Plain values are lww; use Inc, MV,
        Add and Remove for the other kinds. Returns once acknowledged (in
        durable mode: on disk). A refused write changes nothing."""
        if self.readonly or self._closed:
            self._writable()
        if not isinstance(key, str) or not key:
            raise InvalidArgument("a key must be a non-empty string")
        if not isinstance(fields, dict) or not fields:
            raise InvalidArgument("put needs a dict of at least one field")
        kb = _utf8(key)
        if len(kb) > MAX_KEY:
            raise UsageError("a key must be 1 to %d bytes of UTF-8, not %d" % (MAX_KEY, len(kb)))
        try:
            kid = self.store.find(kb)
        except StoreCorrupt:
            kid = self._retry("find", kb)
        store = self.store
        blob = b""
        if kid >= 0:
            rebuilds = self._rebuilds
            blob = self._load(key, kid)
            if self._rebuilds != rebuilds:  # the store was rebuilt: ids changed
                return self.put(key, fields)
            if blob:
                self._check_kinds(key, blob, fields)
        stamp = self._stamp()
        sb = varint(stamp)
        names = tuple(fields)
        tables = self._tables.get(names)
        if tables is None:
            for n in names:
                if not isinstance(n, str) or not n or len(_utf8(n, "a field name")) > 255:
                    raise InvalidArgument("a field name must be a string of 1 to 255 bytes")
            if len(self._tables) > 512:
                self._tables.clear()
            tables = self._tables[names] = (
                index_map([store.field_id(n) for n in names]), string_table(names))
        fmap, ftab = tables
        parts = []
        visible = False
        try:
            for fi, name in enumerate(names):
                v = fields[name]
                t = type(v)
                fb = varint(fi)
                if t is Inc:
                    parts.append(O.inc_op(Z, fb, Z, v.delta))
                elif t is MV:
                    parts.append(O.mv_write_op(Z, fb, sb, Z, _finite(v.value)))
                elif t is Add:
                    for x in v.values:
                        parts.append(O.set_add_op(Z, fb, sb, Z, _finite(x)))
                    visible = visible or bool(v.values)
                    continue
                elif t is Remove:
                    for x in v.values:
                        parts.append(O.set_remove_op(Z, fb, _finite(x)))
                    continue
                else:
                    parts.append(O.lww_op(Z, fb, sb, Z, v if t is not float else _finite(v)))
                visible = True
        except (ValueError, TypeError) as e:
            raise UsageError("field %r: %s" % (name, e)) from None
        ops = b"".join(parts)
        if len(ops) > self.max_write:
            raise UsageError("this write is %d bytes; one write may be at most %d (a record "
                             "holds at most %d). Split the value over several fields or "
                             "records, or raise MYCELIUM_MAX_WRITE_MB"
                             % (len(ops), self.max_write, MAX_RECORD))
        # A fresh stamp is above the record's delete stamp, so any write but a
        # remove leaves the record visible; only then is the blob read again.
        self._commit_local(key, kb, kid, blob, stamp, ftab, fmap, len(parts), ops, visible)

    def delete(self, key: str) -> bool:
        """Delete the record (a tombstone; a later write revives it).
        Returns False if there was nothing visible to delete."""
        self._writable()
        if not isinstance(key, str) or not key:
            raise InvalidArgument("a key must be a non-empty string")
        kid = self._retry("find", _utf8(key))
        blob = self._load(key, kid) if kid >= 0 else b""
        if not blob or self._decode(blob, False) is None:
            return False
        stamp = self._stamp()
        self._commit_local(key, key.encode("utf-8"), kid, blob, stamp, b"\x00", b"\x00", 1,
                           O.delete_op(Z, varint(stamp)), False)
        return True

    def _stamp(self) -> int:
        stamp = self.clock.now()
        if stamp > self.reserve.clock:
            self.reserve.need_clock(stamp)  # durably reserved before use
        return stamp

    def _check_kinds(self, key, blob, fields):
        from .core.reference import decode_blob
        want = {Inc: 2, MV: 3, Add: 4, Remove: 4}
        rec = decode_blob(blob)
        ids = self.store.field_ids
        for name, v in fields.items():
            fid = ids.get(name)
            if fid is None or fid not in rec.fields:
                continue
            have = rec.fields[fid][0]
            if have != want.get(type(v), 1):
                from .clihelp import KIND_SYNTAX
                from .values import KIND_NAMES, KIND_API
                kind = KIND_NAMES[have]
                raise UsageError(
                    "field %r of %r is a %s; write it as a %s: %s on the command line, %s in "
                    "Python (see `mycelium put --help`)"
                    % (name, key, kind, kind, KIND_SYNTAX[kind].format(f=name), KIND_API[kind]))

    def _load(self, key, kid) -> bytes:
        return self._blob(key, kid) or b""

    def _commit_local(self, key, kb, kid, blob, stamp, ftab, fmap, nops, ops, visible):
        store = self.store
        batch = build_batch_raw(store.actor_table, fmap, self._me_enc, [blob], nops, ops)
        _, blobs, amap, rnops, rops = parse_apply_result(self.engine.apply(batch))
        if amap == self._me_map:
            atab = self._me_table
        else:
            atab = actor_table([store.actor_id(i) for i in amap])
        new = blobs[0]
        store.make_room_one(kid, kb, len(new))  # RecordTooLarge, DiskFull: nothing logged
        seq = self.seq + 1
        if seq > self.reserve.seq:
            self.reserve.need_seq(seq)
        vv = self.known.vv
        prev = vv.get(self.actor, 0)
        top = self.own_top
        raw = build_change_raw(self._actor_b, seq, prev, stamp, key_table_one(kb), ftab, atab,
                               rnops, rops, top[1] if top[0] == prev else NO_HASH)
        self.seq = seq  # issued: never again, even if the append below fails
        self.log.append(raw)
        self.own_top = (seq, raw[-16:])
        h = raw[-16:-8]
        self.heads[self.actor] = (seq, h)
        self.own_hashes[seq & OWN_MASK] = (seq, h)   # = _note_own(seq, h), inline
        if self.durable:
            self.log.commit()
        vv[self.actor] = seq  # = known.add(actor, seq, prev): prev is our top
        if not visible:
            visible = is_visible(new)
        store.begin()
        try:
            store.save(key, new, visible, kid, kb)
        finally:
            store.end()
        self._tick()

    # -- remote changes

    def merge_changes(self, raws: Iterable[bytes]) -> int:
        """Merge changes from a peer or a file, in any order. Each change is
        all or nothing: the first bad one raises a RemoteError
        (MalformedChange, ClockSkewError) after the good ones before it are
        merged, and leaves nothing of itself behind. Returns how many were new."""
        return self.merge_parsed([parse_change(raw) for raw in raws])

    def merge_parsed(self, changes: Iterable[Change]) -> int:
        """merge_changes for changes already checked by parse_change. New
        changes are merged in one engine call (core batch version 2)."""
        self._writable()
        self._forks_in(changes)
        take = []
        seen = set()
        holds = self.holds
        try:
            for c in changes:
                if holds(c.actor, c.seq) or (c.actor, c.seq) in seen:
                    continue
                self.clock.check(c.hlc)
                seen.add((c.actor, c.seq))
                take.append(c)
        finally:
            # what came before a bad change is merged, as if one by one
            if take:
                self._merge_group(take)
        return len(take)

    # -- changes from peers, each judged alone (agent/pending.py)

    def holds(self, actor: int, seq: int) -> bool:
        """True if this node holds change (actor, seq): merged, held or quarantined."""
        return self.known.has(actor, seq) or (actor, seq) in self.pending

    def advertised(self) -> Known:
        """What this node tells peers it holds: its log, and its pending changes."""
        if not self.pending:
            return self.known
        k = self.known.copy()
        self.pending.add_to(k)
        return k

    def receive(self, changes: list[Change]) -> Taken:
        """Take parsed changes from a peer. Each is judged alone: merged;
        held (its stamp is beyond the clock bound, or an earlier change of its
        actor is pending); or quarantined (this build cannot apply it). None
        of that is raised: only faults of this node's own storage are."""
        self._writable()
        self.release_due()
        t = Taken()
        t.forks = self._forks_in(changes)
        take, seen = [], set()
        holds, check = self.holds, self.clock.check
        for c in changes:
            key = (c.actor, c.seq)
            if holds(c.actor, c.seq) or key in seen:
                t.dup += 1
                continue
            seen.add(key)
            if self._waits(t, c):
                continue
            try:
                check(c.hlc)
            except ClockSkewError as e:
                self._pend(t, c, HELD, str(e))
                continue
            take.append(c)
        if not take:
            return t
        try:
            self._merge_group(take, fallback=False)
            t.new += len(take)
            return t
        except (RemoteError, CoreError, RecordTooLarge):
            pass  # one by one below, so exactly the bad ones are set aside
        for c in take:
            if self.known.has(c.actor, c.seq):
                t.new += 1
                continue
            if self._waits(t, c):
                continue
            try:
                self._merge_one(c)
                t.new += 1
            except ClockSkewError as e:
                self._pend(t, c, HELD, str(e))
            except (RemoteError, CoreError, RecordTooLarge) as e:
                self._pend(t, c, QUARANTINED, "%s: %s" % (type(e).__name__, e))
        return t

    def _waits(self, t, c) -> bool:
        """Hold c if an earlier change of its actor is held."""
        w = self.pending.blocks(c.actor, c.seq)
        if w is None:
            return False
        self._pend(t, c, HELD, "waits behind change %d of its actor, which is held" % w)
        return True

    def quarantine_raw(self, t: Taken, head: tuple, raw: bytes, why: str) -> None:
        """A change that does not parse but whose header does: set it aside."""
        c = Change()
        c.actor, c.seq, c.prev, c.hlc = head
        c.raw = raw
        if self.holds(c.actor, c.seq):
            t.dup += 1
            return
        self._pend(t, c, QUARANTINED, why)

    def _pend(self, t, c, kind, why):
        if self.pending.add(c, kind, why):
            if kind == HELD:
                t.held += 1
            else:
                t.quarantined += 1
            if len(t.reasons) < 8:
                t.reasons.append("change %d of %016x %s: %s" % (c.seq, c.actor, kind, why))
        else:
            t.refused += 1

    def release_due(self, force: bool = False, actor: int = None) -> int:
        """Apply pending changes that can now be applied: held ones whose
        stamp the clock has reached, quarantined ones once this build differs
        from the one that set them aside. force: every pending change (of
        `actor`, if given), whatever its stamp; a quarantined one that still
        fails stays. Returns how many were applied."""
        if not self.pending or self.readonly:
            return 0
        now = time.monotonic()
        if not force and now < self._next_release:
            return 0
        self._next_release = now + RELEASE_EVERY
        done = 0
        for a in self.pending.actors():
            if actor is not None and a != actor:
                continue
            for it in self.pending.of_actor(a):
                if self.known.has(it.actor, it.seq):
                    self.pending.drop(it)  # applied before a crash took the file away
                    continue
                if it.kind == QUARANTINED and not force and it.build == __version__:
                    break
                if it.kind == HELD and not force:
                    try:
                        self.clock.check(it.hlc)
                    except ClockSkewError:
                        break
                try:
                    self._merge_one(parse_change(self.pending.raw(it)), check_skew=not force)
                except ClockSkewError:
                    break
                except (RemoteError, CoreError, RecordTooLarge) as e:
                    self.pending.set_kind(it, QUARANTINED, "%s: %s" % (type(e).__name__, e))
                    break
                self.pending.drop(it)
                done += 1
        if done:
            self.timeline.emit("held.released", count=done, forced=force)
        return done

    def _settle_pending(self):
        """At open: forget pending changes the log holds; retry quarantined ones after an upgrade."""
        for it in list(self.pending.items.values()):
            if self.known.has(it.actor, it.seq):
                self.pending.drop(it)
        try:
            n = self.release_due()
        except AgentError as e:
            self.events.append("pending changes could not be retried: %s" % e)
            return
        if n:
            self.events.append("applied %d pending change(s)" % n)

    def has_change(self, actor: int, seq: int) -> bool:
        return self.known.has(actor, seq)

    def _merge_group(self, cs, replay: bool = False, fallback: bool = True) -> None:
        """Merge accepted changes (in order) with one engine call. If the
        engine refuses the group, a stamp is beyond the clock bound or a
        record would outgrow the store, fall back (unless not `fallback`:
        then raise, having merged nothing) to one call per change so exactly
        the bad change is refused."""
        if len(cs) == 1:
            self._merge_one(cs[0], replay)
            return
        store = self.store
        pos = {}
        kbs = []
        sections = []
        field_id, actor_index = store.field_id, store.actor_index
        fmaps = {}
        amaps = {}
        for c in cs:
            kmap = []
            for k in c.keys:
                i = pos.get(k)
                if i is None:
                    i = pos[k] = len(kbs)
                    kb = k.encode("utf-8")
                    if not 0 < len(kb) <= MAX_KEY:  # before anything is logged
                        raise MalformedChange("change %d of %016x has a key of %d bytes (the "
                                              "limit is %d)" % (c.seq, c.actor, len(kb), MAX_KEY))
                    kbs.append(kb)
                kmap.append(i)
            fmap = fmaps.get(c.fields)
            if fmap is None:
                fmap = fmaps[c.fields] = index_map([field_id(f) for f in c.fields])
            actors = tuple(c.actors)
            amap = amaps.get(actors)
            if amap is None:
                amap = amaps[actors] = index_map([actor_index(a) for a in actors])
            sections.append((fmap, amap, index_map(kmap), c.nops, c.ops))
        rebuilds = self._rebuilds
        kids, blobs = self._load_many(kbs)
        if self._rebuilds != rebuilds:  # the store was rebuilt: ids changed
            self._merge_group(cs, replay, fallback)
            return
        try:
            out = self.engine.merge(build_multi(store.actor_table, blobs, sections))
            max_h, new = parse_merge_result(out)
            if not replay:
                self.clock.check(max_h)
            # RecordTooLarge is raised while making room: before anything is logged
            self._store_merge(cs, kbs, kids, blobs, new, max_h, replay)
        except (MalformedChange, CoreError, ClockSkewError, RecordTooLarge):
            if not fallback:
                raise
            for c in cs:
                self._merge_one(c, replay)

    def _store_merge(self, cs, kbs, kids, old, new, max_h, replay):
        """Room first, then the log (made durable in durable mode), then the
        store: a full disk (DiskFull) or a record past the largest size
        (RecordTooLarge) refuses the whole group and changes nothing."""
        store = self.store
        changed = [(kid, kb, b) for kb, kid, o, b in zip(kbs, kids, old, new) if b != o]
        if self.store.mode == READ:  # a read-only process: remember, never write
            for kid, kb, b in changed:
                if kid >= 0:
                    self._repaired[kid] = b
        else:
            store.make_room([(kid, kb, len(b)) for kid, kb, b in changed])
            if not replay:
                self.log.append_many([c.raw for c in cs])
                if self.durable:
                    self.log.commit()
            store.save_group(changed, is_visible)
        self._after_merge(cs, max_h, replay)

    def _load_many(self, kbs):
        try:
            return self.store.load_many(kbs)
        except StoreCorrupt as e:
            if not isinstance(e, BlobCorrupt):
                self._store_damaged(e)
                return self.store.load_many(kbs)
            self.repair({e.kid})
            if self.store.mode == READ:
                kids, blobs = [], []
                for kb in kbs:
                    kid = self.store.find(kb)
                    kids.append(kid)
                    blobs.append(self._load(kb.decode("utf-8"), kid) if kid >= 0 else b"")
                return kids, blobs
            return self._load_many(kbs)

    def _merge_one(self, c, replay: bool = False, check_skew: bool = True) -> None:
        """Merge one accepted change."""
        store = self.store
        kbs = [k.encode("utf-8") for k in c.keys]
        for kb in kbs:
            if not 0 < len(kb) <= MAX_KEY:  # before anything is logged
                raise MalformedChange("change %d of %016x has a key of %d bytes (the limit is "
                                      "%d)" % (c.seq, c.actor, len(kb), MAX_KEY))
        kids, blobs = self._load_many(kbs)
        fmap = [store.field_id(f) for f in c.fields]
        amap = [store.actor_index(a) for a in c.actors]
        batch = build_batch(store.actor_table, fmap, amap, blobs, c.nops, c.ops)
        max_h, new = parse_merge_result(self.engine.merge(batch))
        if not replay and check_skew:
            self.clock.check(max_h)
        self._store_merge((c,), kbs, kids, blobs, new, max_h, replay)

    def _after_merge(self, cs, max_h, replay: bool = False) -> None:
        if replay:  # our own log's stamps: adopted even if the wall clock went back
            if max_h > self.clock.last:
                self.clock.last = max_h
        else:
            try:
                self.clock.observe(max_h)
            except ClockSkewError:
                pass  # an operator released a change stamped ahead: not adopted
        known = self.known
        me = self.actor
        note = self._note_head
        for c in cs:
            known.add(c.actor, c.seq, c.prev)
            note(c.actor, c.seq, c.hash)
            if c.actor == me:
                self._note_own(c.seq, c.hash)
                if c.seq > self.seq:
                    self.seq = c.seq
                if c.seq >= self.own_top[0]:
                    self.own_top = (c.seq, c.hash)
        self._tick(len(cs))

    def changes_since(self, known: Known | dict) -> Iterator[bytes]:
        """Yield raw changes the holder of `known` (a Known, or a version
        vector dict) lacks, in log order. What it yields is on disk first:
        no one may hold a change this node could still lose."""
        if not isinstance(known, Known):
            known = Known(known)
        if not self.readonly:
            self.log.commit()
        for _, raw in self.log.read(upto=None if self.readonly else self.log.durable_end()):
            actor, seq, _, _ = change_head(raw)
            if not known.has(actor, seq):
                yield raw

    # -- history (agent/history/)

    @property
    def log_index(self) -> LogIndex:
        if self._log_index is None:
            from .history.logindex import LogIndex
            self._log_index = LogIndex(self.log, self.readonly)
        return self._log_index

    def _read_snapshot_header(self):
        """At open: what the snapshot says was dropped from the log. The
        history modules are imported only when there is a snapshot, so a
        read in a store never compacted loads none of them."""
        if not os.path.exists(self.snapshot_path):
            if self.log.segments and self.log.segments[0] > 1:
                # segments were dropped, so a snapshot was written: it is gone
                self.snapshot_damaged = "the snapshot (%s) is missing" % self.snapshot_path
                self.events.append("%s though the log's first segments were compacted into "
                                   "it; run `mycelium compact` to write it again from the store"
                                   % self.snapshot_damaged)
            return
        from .history.snapshot import Reader as SnapshotReader, SnapshotCorrupt
        try:
            with SnapshotReader(self.snapshot_path) as r:
                h = r.header
            self.dropped = Known.from_json(h.get("dropped", {}))
            self.last_compaction = {"time": h.get("time")}
        except FileNotFoundError:
            return
        except (SnapshotCorrupt, ValueError, TypeError, AttributeError) as e:
            self.snapshot_damaged = str(e)
            self.events.append("%s; run `mycelium compact` to write it again from the store" % e)

    @property
    def frontier(self) -> Frontier:
        if self._frontier is None:
            from .history.frontier import Frontier
            self._frontier = Frontier(self.data_dir, self.readonly)
        return self._frontier

    def peer_holds(self, peer_id: str, known: Known) -> None:
        """A peer said it holds `known` (the causal-stability frontier's input)."""
        self.frontier.note(peer_id, known)

    def needs_snapshot(self, known: Known) -> bool:
        """True if the holder of `known` lacks changes the log no longer has.
        A snapshot that is damaged or gone is written again from the store
        first (the store holds everything the log dropped), so that such a
        peer never gets the tail alone; a read-only node cannot, and says so."""
        if not self.dropped.vv or not known.lacks_any(self.dropped):
            return False
        if self.snapshot_damaged is None and not self.snapshot_sound():
            self.snapshot_damaged = "the snapshot failed its check"
        if self.snapshot_damaged is not None or not os.path.exists(self.snapshot_path):
            if self.readonly:
                return False
            self.events.append("the snapshot is %s; writing it again from the store for a "
                               "peer that needs it" % ("damaged" if self.snapshot_damaged
                                                       else "missing"))
            self.compact(drop=False)
        return True

    def snapshot_sound(self) -> bool:
        """Read this device's snapshot whole and check every frame, so that
        bit rot in it is found here, where the store can write it again,
        not by each new peer that would refuse it forever."""
        from .history.snapshot import Reader as SnapshotReader, SnapshotCorrupt
        try:
            with SnapshotReader(self.snapshot_path) as r:
                r.verify()
            return True
        except FileNotFoundError:
            return False
        except (OSError, SnapshotCorrupt) as e:
            self.events.append("own snapshot: %s" % e)
            return False

    def log_start_for(self, known: Known) -> tuple[int, int]:
        """Where a session for the holder of `known` starts reading the log."""
        return self.log_index.start_for(known)

    def compact(self, drop: bool = True) -> dict:
        """Write a snapshot of the store and drop the log segments it holds
        that every active peer holds (docs/OPERATIONS.md, "Compaction")."""
        from .history.compact import compact
        got = compact(self, drop)
        self.timeline.emit("compaction", **{k: got[k] for k in (
            "records", "snapshot_bytes", "log_bytes_before", "log_bytes_after", "seconds")
            if k in got})
        return got

    def save_mended(self, force: bool = False) -> bool:
        """Records joined from a peer in a convergence check are in no log:
        they are made durable in this device's snapshot, at once, or once
        MEND_GAP has passed since the last time (a peer's repairs cannot
        make it rewrite the snapshot for every message); serve's loop and
        close() save what waits. True if a snapshot was written."""
        if not self.mended_unsaved:
            return False
        now = time.monotonic()
        if not force and now - self._mend_saved < MEND_GAP:
            return False
        from .history.compact import compact
        compact(self, drop=False)
        self._mend_saved, self.mended_unsaved = now, False
        return True

    def backup(self, path: str) -> dict:
        """Write this device's whole state to path as a snapshot file, at once
        and consistent (agent/history/backup.py; `mycelium restore` reads it)."""
        from .history.backup import backup
        return backup(self, os.path.abspath(path))

    def compaction_due(self, threshold: int) -> bool:
        """The log has grown by threshold bytes since the last compaction
        (since open, the log's size at open counts as growth, so a device
        restarted often still compacts)."""
        return not self.readonly and self.log.written - self._log_at_compaction >= threshold

    def take_snapshot_chunk(self, chunk: bytes, first: bool, last: bool) -> dict | None:
        """A chunk of a peer's snapshot (sync); on the last, absorb it.
        Returns the absorb summary on the last chunk, else None."""
        self._writable()
        if self._incoming is None:
            from .history.catchup import Incoming
            self._incoming = Incoming(self)
        if not self._incoming.write(chunk, first, last):
            return None
        from .history.catchup import absorb
        return absorb(self, self._incoming.path)

    def _absorb_left_over(self):
        from .history.catchup import absorb
        path = os.path.join(self.data_dir, "history", "incoming")
        try:
            got = absorb(self, path)
            self.events.append("applied a peer's snapshot that a crash interrupted (%d records)"
                               % got["records"])
        except RemoteError as e:
            self.events.append("a peer's snapshot left by a crash is damaged (%s); removed, "
                               "the next sync fetches it again" % e)
            try:
                os.unlink(path)
            except OSError:
                pass

    # -- lifecycle

    def _check_memory(self):
        """The store's files are mapped, so every page touched counts in the
        process's RSS. Past the budget, unmap them (the page cache keeps
        them; they fault back in as needed)."""
        self._ops = 0
        if self.rss_budget and _rss() > self.rss_budget:
            self.store.trim()
            self.trims += 1

    def _tick(self, changes: int = 1):
        """After a write or a merged batch of `changes`: the first change
        since the last checkpoint starts its CHECKPOINT_SECONDS; the next
        is due then, or after CHECKPOINT_EVERY changes."""
        self._ops += 1
        if self._ops >= TRIM_CHECK_EVERY:
            self._check_memory()
        first = self._since_checkpoint == 0
        self._since_checkpoint += changes
        if first:
            self._checkpoint_due = time.monotonic() + CHECKPOINT_SECONDS
        if ((self._since_checkpoint >= CHECKPOINT_EVERY or
             (not first and time.monotonic() > self._checkpoint_due)) and not self.readonly):
            self.try_checkpoint()

    def try_checkpoint(self) -> None:
        """A checkpoint that may fail (a full disk): the writes are acked
        already, so it is reported and tried again later."""
        try:
            self.checkpoint()
        except AgentError as e:
            self.events.append("checkpoint failed (%s); retrying later" % e)
            self._since_checkpoint = 1
            self._checkpoint_due = time.monotonic() + CHECKPOINT_SECONDS

    def checkpoint(self) -> None:
        """Make the store durable up to the log's end, so the next open
        replays nothing before it."""
        if self.readonly:
            return
        self.log.commit()
        self.store.checkpoint(self._meta())
        self._since_checkpoint = 0
        if self._frontier is not None:
            self._frontier.save()

    def _meta(self):
        m = {"log": list(self.log.end()), "seq": self.seq, "clock": self.clock.last,
             "heads": {"%016x" % a: [sq, h.hex()] for a, (sq, h) in self.heads.items()},
             "own_top": [self.own_top[0], self.own_top[1].hex()]}
        m.update(self.known.to_json())
        if self.incomplete:
            m["incomplete"] = self.incomplete
        return m

    def stats(self) -> dict:
        self._live()
        s = self.store
        return {
            "actor": "%016x" % self.actor,
            "records": s.count(),
            "keys": s.keys.n,
            "fields": len(s.field_names),
            "actors": len(s.actor_table) // 8,
            "data_bytes": s.data_bytes(),
            "store_file_bytes": s.file_bytes(),
            "log_bytes": self.log.size(),
            "log_segments": len(self.log.segments),
            "snapshot_bytes": _size(self.snapshot_path),
            "compacted_changes": sum(self.dropped.vv.values()) - sum(
                hi - lo + 1 for gs in self.dropped.gaps.values() for lo, hi in gs),
            "last_compaction": self.last_compaction,
            "peers_holding_history": sorted(self.frontier.active()),
            "peers_retired": self.frontier.retired(),
            "log_damaged_bytes": self.log.damaged_bytes(),
            "log_truncated_bytes": self.log.truncated,
            "missing_changes": self.known.missing(),
            "held_changes": self.pending.count(HELD),
            "quarantined_changes": self.pending.count(QUARANTINED),
            "forks": self.forks,
            "incomplete": self.incomplete,
            "seq": self.seq,
            "engine": self._engine.name if self._engine else load_engine_name(),
            "durable": self.durable,
            "readonly": self.readonly,
            "clean_open": s.was_clean,
            "replayed_changes": self.replayed,
            "rss_bytes": _rss(),
            "rss_budget_bytes": self.rss_budget,
            "store_trims": self.trims,
        }

    def close(self) -> None:
        """Flush and mark the store clean. A full disk leaves it dirty (the
        next open recovers); an op log that cannot be flushed is raised."""
        if self._closed:
            return
        if not self.readonly:
            try:
                self.save_mended(force=True)
            except AgentError as e:
                self.events.append("records a convergence check joined could not be saved "
                                   "in the snapshot (%s); the next check joins them again" % e)
        self._closed = True
        err = None
        try:
            if not self.readonly:
                try:
                    self.log.commit()
                except AgentError as e:
                    err = e
                try:
                    if self._frontier is not None:
                        self._frontier.save()
                    if self._log_index is not None:
                        self._log_index.save_blocks()
                    self.store.close(self._meta())
                    self.reserve.settle(self.seq, self.clock.last)
                except AgentError as e:
                    self.events.append("could not mark the store clean (%s); the next open "
                                       "recovers it" % e)
        finally:
            self.store._release()
            self.log.close()
            if self._engine is not None:
                self._engine.close()
            self.timeline.flush(force=True)
        if err is not None:
            raise err

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _size(path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _rss() -> int:
    """This process's resident set in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def load_engine_name() -> str:
    """The engine a write would load, without loading it."""
    from .core import engine_name
    return engine_name()
