"""A node: one device's store, op log, clock and engine, wired together.

    with Node.open(data_dir) as n:
        n.put("user:1", {"name": "Ada", "visits": Inc(1)})
        n.get("user:1")        # {'name': 'Ada', 'visits': 1}

Local write: clock -> engine.apply -> op log (the ack) -> store.
Remote change: parse -> skew check -> engine.merge (one call per change)
               -> op log -> store.
Read: store -> decode in Python; the engine is never loaded for reads.
"""
import json
import os
import struct
import time

from . import clock as clock_mod
from .change import (CHANGE_VERSION, HASH_LEN, _blake, actor_table, parse_change,
                     string_table)
from .codec import varint
from .core import load_engine
from .core import ops as O
from .core.batch import (build_batch, build_batch_raw, build_multi, index_map,
                         parse_apply_result,
                         parse_merge_result)
from .errors import (UsageError, StoreError, ClockSkewError, ChangeGap, CoreError,
                     MalformedChange)
from .oplog.log import OpLog
from .store import Store, BlobCorrupt
from .values import Inc, MV, Add, Remove, decode_record, is_visible

__all__ = ["Node", "default_data_dir"]

CHECKPOINT_EVERY = 50_000
Z = b"\x00"  # key index 0 and actor index 0 of a local change: its one key, this device
TRIM_CHECK_EVERY = 2048
# 0: off. Trimming trades read latency (pages fault back in) for a bounded
# RSS; 100K records and the core fit in 35 MB without it. Set
# MYCELIUM_RSS_BUDGET_MB on small devices with stores far larger than that.
DEFAULT_RSS_BUDGET_MB = 0
_u64 = struct.Struct("<Q")


def default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "mycelium")


def init_identity(data_dir: str) -> dict:
    """Create a data directory with a fresh actor id (idempotent)."""
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, "identity.json")
    if os.path.exists(path):
        return read_identity(data_dir)
    ident = {"version": 1, "actor": "%016x" % (int.from_bytes(os.urandom(8), "little") | 1),
             "created": int(time.time())}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(ident, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return ident


def read_identity(data_dir: str) -> dict:
    path = os.path.join(data_dir, "identity.json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UsageError("%s is not a Mycelium data directory; run `mycelium init` "
                         "(or pass --data-dir)" % data_dir) from None
    except ValueError:
        raise StoreError("%s is damaged; restore it from a backup" % path) from None


class Node:
    def __init__(self, data_dir: str, durable: bool = False, engine=None,
                 max_skew_ms: int = clock_mod.DEFAULT_MAX_SKEW_MS,
                 flush_interval_ms: int = 100, rss_budget_mb=None):
        self.data_dir = data_dir
        ident = read_identity(data_dir)
        self.actor = int(ident["actor"], 16)
        self._engine = engine
        self._closed = True
        self.store = Store(os.path.join(data_dir, "store"))
        try:
            meta = self.store.meta
            self.seq = meta.get("seq", 0)
            self.vv = {int(a, 16): s for a, s in meta.get("vv", {}).items()}
            self.clock = clock_mod.HLC(self.actor, meta.get("clock", 0), max_skew_ms)
            self.me = self.store.actor_index(self.actor)
            self._me_map = [self.me]
            self._me_enc = index_map(self._me_map)
            self._me_table = actor_table([self.actor])
            self._change_head = bytes((CHANGE_VERSION,)) + _u64.pack(self.actor)
            self._tables = {}
            self.durable = durable
            self.log = OpLog(os.path.join(data_dir, "log"), durable=durable,
                             interval_ms=flush_interval_ms)
            tail = self.log.recover(tuple(meta.get("log", (0, 0))))
        except BaseException:
            self.store.close()
            raise
        self._closed = False
        self._since_checkpoint = 0
        self._ops = 0
        budget = rss_budget_mb if rss_budget_mb is not None else float(
            os.environ.get("MYCELIUM_RSS_BUDGET_MB", DEFAULT_RSS_BUDGET_MB))
        self.rss_budget = int(budget * 1024 * 1024)
        self.trims = 0
        self.replayed = len(tail)
        for i in range(0, len(tail), 1000):
            self._merge_group([parse_change(raw) for _, raw in tail[i:i + 1000]], replay=True)
        if self.store.damaged:
            self.repair(self.store.damaged)

    @classmethod
    def open(cls, data_dir=None, create=True, **kw):
        data_dir = data_dir or default_data_dir()
        if create:
            init_identity(data_dir)
        return cls(data_dir, **kw)

    # -- engine (loaded on first write or merge, never for reads)

    @property
    def engine(self):
        if self._engine is None:
            self._engine = load_engine()
        return self._engine

    # -- reads

    def get(self, key: str, with_kinds: bool = False):
        """The record's fields as a dict, or None if absent or deleted."""
        if self.rss_budget:
            self._ops += 1
            if self._ops >= TRIM_CHECK_EVERY:
                self._check_memory()
        try:
            blob = self.store.load(key)
        except BlobCorrupt as e:
            self.repair({e.kid})
            blob = self.store.load(key)
        if blob is None:
            return None
        return decode_record(blob, self.store.field_names, with_kinds)

    def scan(self, prefix: str = "", with_kinds: bool = False):
        """Yield (key, fields) of visible records under prefix, in key order;
        (key, fields, kinds) with with_kinds."""
        names = self.store.field_names
        for key, kid in self.store.scan(prefix):
            try:
                blob = self.store.load_id(kid, key)
            except BlobCorrupt:
                self.repair({kid})
                blob = self.store.load_id(kid, key)
            got = decode_record(blob, names, with_kinds)
            if got is not None:
                yield (key, got[0], got[1]) if with_kinds else (key, got)

    def count(self) -> int:
        return self.store.count()

    def watch(self, prefix: str, callback):
        """Call callback(key, fields_or_None) after each change under prefix.
        Returns a handle with cancel()."""
        names = self.store.field_names
        return self.store.watch(prefix, lambda k, b: callback(k, decode_record(b, names)))

    # -- local writes

    def put(self, key: str, fields: dict) -> None:
        """Merge fields into key's record. Plain values are lww; use Inc, MV,
        Add and Remove for the other kinds. Returns once acknowledged (in
        durable mode: on disk)."""
        if not isinstance(key, str) or not key:
            raise UsageError("a key must be a non-empty string")
        if not fields:
            raise UsageError("put needs at least one field")
        store = self.store
        kb = key.encode("utf-8")
        kid = store.keys.find(kb)
        blob = b""
        if kid >= 0:
            blob = self._load(key, kid)
            if blob:
                self._check_kinds(key, blob, fields)
        stamp = self.clock.now()
        sb = varint(stamp)
        names = tuple(fields)
        tables = self._tables.get(names)
        if tables is None:
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
                    parts.append(O.mv_write_op(Z, fb, sb, Z, v.value))
                elif t is Add:
                    for x in v.values:
                        parts.append(O.set_add_op(Z, fb, sb, Z, x))
                    visible = visible or bool(v.values)
                    continue
                elif t is Remove:
                    for x in v.values:
                        parts.append(O.set_remove_op(Z, fb, x))
                    continue
                else:
                    parts.append(O.lww_op(Z, fb, sb, Z, v))
                visible = True
        except ValueError as e:
            raise UsageError("field %r: %s" % (name, e)) from None
        # A fresh stamp is above the record's delete stamp, so any write but a
        # remove leaves the record visible; only then is the blob read again.
        self._commit_local(key, kb, kid, blob, stamp, ftab, fmap, len(parts),
                           b"".join(parts), visible)

    def delete(self, key: str) -> bool:
        """Delete the record (a tombstone; a later write revives it).
        Returns False if there was nothing visible to delete."""
        kid = self.store.keys.find(key.encode("utf-8"))
        blob = self._load(key, kid) if kid >= 0 else b""
        if not blob or decode_record(blob, self.store.field_names) is None:
            return False
        stamp = self.clock.now()
        self._commit_local(key, key.encode("utf-8"), kid, blob, stamp, b"\x00", b"\x00", 1,
                           O.delete_op(Z, varint(stamp)), False)
        return True

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
                from .values import KIND_NAMES
                raise UsageError(
                    "field %r of %r is a %s; write it as a %s (see `mycelium put --help`)"
                    % (name, key, KIND_NAMES[have], KIND_NAMES[have]))

    def _load(self, key, kid) -> bytes:
        try:
            return self.store.load_id(kid, key) or b""
        except BlobCorrupt:
            self.repair({kid})
            return self.store.load_id(kid, key) or b""

    def _commit_local(self, key, kb, kid, blob, stamp, ftab, fmap, nops, ops, visible):
        store = self.store
        batch = build_batch_raw(store.actor_table, fmap, self._me_enc, [blob], nops, ops)
        _, blobs, amap, rnops, rops = parse_apply_result(self.engine.apply(batch))
        if amap == self._me_map:
            atab = self._me_table
        else:
            atab = actor_table([store.actor_id(i) for i in amap])
        seq = self.seq + 1
        body = b"".join((self._change_head, varint(seq), varint(stamp),
                         b"\x01" + varint(len(kb)) + kb, ftab, atab, varint(rnops), rops))
        raw = body + _blake(body, digest_size=HASH_LEN).digest()
        self.log.append(raw)
        if self.durable:
            self.log.commit()
        self.seq = seq
        self.vv[self.actor] = seq
        new = blobs[0]
        if not visible:
            visible = is_visible(new)
        store.save(key, new, visible, kid, kb)
        self._tick()

    # -- remote changes

    def merge_changes(self, raws) -> int:
        """Merge changes from a peer or a file, in order. Each change is all
        or nothing: the first bad one raises a RemoteError (MalformedChange,
        ClockSkewError, ChangeGap) after the good ones before it are merged,
        and leaves nothing of itself behind. Returns how many were new."""
        return self.merge_parsed([parse_change(raw) for raw in raws])

    def merge_parsed(self, changes) -> int:
        """merge_changes for changes already checked by parse_change. Runs of
        new changes are merged in one engine call (core batch version 2)."""
        take = []
        expect = {}
        vv = self.vv
        try:
            for c in changes:
                cur = expect.get(c.actor)
                if cur is None:
                    cur = vv.get(c.actor, 0)
                if c.seq <= cur:
                    continue
                if c.seq != cur + 1:
                    raise ChangeGap(
                        "change %d of actor %016x arrived before change %d; sync again "
                        "to fetch the missing ones" % (c.seq, c.actor, cur + 1))
                self.clock.check(c.hlc)
                expect[c.actor] = c.seq
                take.append(c)
        finally:
            # what came before a bad change is merged, as if one by one
            if take:
                self._merge_group(take)
                if self.durable:
                    self.log.commit()
        return len(take)

    def has_change(self, actor: int, seq: int) -> bool:
        return seq <= self.vv.get(actor, 0)

    def _merge_group(self, cs, replay: bool = False) -> None:
        """Merge accepted changes (in order) with one engine call. If the
        engine refuses the group or a stamp is beyond the clock bound, fall
        back to one call per change so exactly the bad change is refused."""
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
                    kbs.append(k.encode("utf-8"))
                kmap.append(i)
            fmap = fmaps.get(c.fields)
            if fmap is None:
                fmap = fmaps[c.fields] = index_map([field_id(f) for f in c.fields])
            actors = tuple(c.actors)
            amap = amaps.get(actors)
            if amap is None:
                amap = amaps[actors] = index_map([actor_index(a) for a in actors])
            sections.append((fmap, amap, index_map(kmap), c.nops, c.ops))
        kids, blobs = self._load_many(kbs)
        try:
            out = self.engine.merge(build_multi(store.actor_table, blobs, sections))
            max_h, new = parse_merge_result(out)
            if not replay:
                self.clock.check(max_h)
        except (MalformedChange, CoreError, ClockSkewError):
            for c in cs:
                self._merge_one(c, replay)
            return
        if not replay:
            self.log.append_many([c.raw for c in cs])
        save = store.save
        for kb, kid, old, b in zip(kbs, kids, blobs, new):
            if b != old:
                save(kb.decode("utf-8"), b, is_visible(b), kid, kb)
        self._after_merge(cs, max_h)

    def _load_many(self, kbs):
        try:
            return self.store.load_many(kbs)
        except BlobCorrupt as e:
            self.repair({e.kid})
            return self._load_many(kbs)

    def _merge_one(self, c, replay: bool = False) -> None:
        """Merge one accepted change."""
        store = self.store
        kbs = [k.encode("utf-8") for k in c.keys]
        kids, blobs = self._load_many(kbs)
        fmap = [store.field_id(f) for f in c.fields]
        amap = [store.actor_index(a) for a in c.actors]
        batch = build_batch(store.actor_table, fmap, amap, blobs, c.nops, c.ops)
        max_h, new = parse_merge_result(self.engine.merge(batch))
        if not replay:
            self.clock.check(max_h)
            self.log.append(c.raw)
        save = store.save
        for key, kid, old, b, kb in zip(c.keys, kids, blobs, new, kbs):
            if b != old:
                save(key, b, is_visible(b), kid, kb)
        self._after_merge((c,), max_h)

    def _after_merge(self, cs, max_h) -> None:
        try:
            self.clock.observe(max_h)
        except ClockSkewError:
            pass  # replaying our own log after the wall clock went back
        vv = self.vv
        for c in cs:
            if c.seq > vv.get(c.actor, 0):
                vv[c.actor] = c.seq
            if c.actor == self.actor and c.seq > self.seq:
                self.seq = c.seq
        self._since_checkpoint += len(cs) - 1
        self._tick()

    def changes_since(self, vv: dict):
        """Yield raw changes the holder of version vector vv lacks, in log order."""
        for _, raw in self.log.read():
            c = parse_change(raw)
            if c.seq > vv.get(c.actor, 0):
                yield raw

    def repair(self, kids) -> None:
        """Rebuild the blobs of damaged records from the whole op log."""
        store = self.store
        kids = set(kids)
        targets = {store.keys.key(k).decode("utf-8"): k for k in kids}
        state = {k: b"" for k in targets}
        for _, raw in self.log.read():
            c = parse_change(raw)
            if not any(k in targets for k in c.keys):
                continue
            blobs = [state.get(k, b"") for k in c.keys]
            batch = build_batch(store.actor_table, [store.field_id(f) for f in c.fields],
                                [store.actor_index(a) for a in c.actors], blobs, c.nops, c.ops)
            _, new = parse_merge_result(self.engine.merge(batch))
            for k, b in zip(c.keys, new):
                if k in state:
                    state[k] = b
        for key, blob in state.items():
            store.save(key, blob, is_visible(blob),
                       targets[key])
        store.damaged -= kids

    # -- lifecycle

    def _check_memory(self):
        """The store's files are mapped, so every page touched counts in the
        process's RSS. Past the budget, unmap them (the page cache keeps
        them; they fault back in as needed)."""
        self._ops = 0
        if self.rss_budget and _rss() > self.rss_budget:
            self.store.trim()
            self.trims += 1

    def _tick(self):
        self._ops += 1
        if self._ops >= TRIM_CHECK_EVERY:
            self._check_memory()
        self._since_checkpoint += 1
        if self._since_checkpoint >= CHECKPOINT_EVERY:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Make the store durable up to the log's end, so the next open
        replays nothing before it."""
        self.log.commit()
        self.store.meta.update(self._meta())
        self.store.checkpoint()
        self._since_checkpoint = 0

    def _meta(self):
        return {"log": list(self.log.end()), "seq": self.seq, "clock": self.clock.last,
                "vv": {"%016x" % a: s for a, s in self.vv.items()}}

    def stats(self) -> dict:
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
            "seq": self.seq,
            "engine": self._engine.name if self._engine else load_engine_name(),
            "durable": self.durable,
            "clean_open": s.was_clean,
            "replayed_changes": self.replayed,
            "rss_bytes": _rss(),
            "rss_budget_bytes": self.rss_budget,
            "store_trims": self.trims,
        }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.log.commit()
            self.store.meta.update(self._meta())
        finally:
            self.log.close()
            self.store.close()
            if self._engine is not None:
                self._engine.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


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
