"""Recovery, the part of a node that rebuilds: the crash tail's replay, a
damaged record or store rebuilt from the op log, changes the log lost asked
of peers again (docs/OPERATIONS.md, "Damage, full disks and repair").

A mixin of Node (agent/node.py): it works on the node's store, log, known
vector, reserve and engine.
"""
import os
import shutil

from . import clock as clock_mod
from . import fs
from .change import change_head, parse_change
from .core.batch import build_batch, index_map, parse_merge_result
from .errors import StoreCorrupt, MalformedChange, RemoteError, CoreError, RecordTooLarge
from .reserve import Reserve, SEQ_STEP
from .store import Store, BlobCorrupt
from .store.mapped import PRIVATE, READ
from .values import is_visible
from .vector import Known

__all__ = ["Recovery", "REPLAY_GROUP"]

REPLAY_GROUP = 1000


class Recovery:
    # -- opening

    def _open_reserve(self):
        try:
            return Reserve(self.data_dir, self.actor, writable=not self.readonly)
        except StoreCorrupt as e:
            if self.readonly:  # a reader issues nothing: it needs no reservation
                self.events.append("%s; the next write rebuilds it" % e)
                r = Reserve.__new__(Reserve)
                r.path, r.actor, r.writable, r.seq, r.clock = "", self.actor, False, 0, 0
                return r
            # Rebuilt from the log below, far above anything it could have held.
            self.events.append("%s; it is rebuilt from the op log with a wide margin" % e)
            fs.rename(os.path.join(self.data_dir, "reserve"),
                      os.path.join(self.data_dir, "reserve.damaged"))
            r = Reserve(self.data_dir, self.actor)
            r.seq = -1  # marks: recompute after the replay
            return r

    def _open(self, max_skew_ms):
        sdir = os.path.join(self.data_dir, "store")
        try:
            self.store = Store(sdir, readonly=self.readonly, durable=self.durable)
            if self.store.power_cut() == "relaxed":
                # Its mapped pages may have reached the disk before the log did:
                # the store could hold changes the log lost. Rebuild from the log.
                self.store._release()
                raise StoreCorrupt("power was lost while a relaxed-mode writer had the store "
                                   "open (the store may be ahead of the op log)")
        except StoreCorrupt as e:
            self.clock = clock_mod.HLC(self.actor, 0, max_skew_ms)  # the replay raises it
            self._rebuild(sdir, str(e))
            return
        meta = self.store.meta
        self.known = Known.from_json(meta)
        try:
            self.heads = {int(a, 16): (sq, bytes.fromhex(h))
                          for a, (sq, h) in meta.get("heads", {}).items()}
        except (ValueError, TypeError, AttributeError):
            self.heads = {}  # rebuilt as changes come
        try:
            sq, h = meta["own_top"]
            if len(bytes.fromhex(h)) == 16:
                self.own_top = (int(sq), bytes.fromhex(h))
        except (KeyError, ValueError, TypeError):
            pass  # older meta: the next change starts a new chain (agent/change.py)
        self.seq = max(meta.get("seq", 0), self.reserve.seq)
        # The clock starts at the checkpoint's and the replay below raises it
        # to every stamp the log holds: a stamp never goes back. It does not
        # start at the reserve's mark (ahead of use by CLOCK_STEP_MS), or each
        # crash would push the device's stamps a step further ahead of real
        # time until peers held its changes; only if the log lost entries
        # (whose stamps peers may hold) does the mark apply.
        self.clock = clock_mod.HLC(self.actor, meta.get("clock", 0), max_skew_ms)
        self.incomplete = meta.get("incomplete")
        start = tuple(meta.get("log", (0, 0)))
        power_cut = self.store.power_cut() is not None
        if not self.readonly:
            tail = self.log.recover(start)
        elif self.store.mode == PRIVATE:  # dirty, no writer: recover in memory
            tail = list(self.log.read(start))
        else:
            tail = []
        hits = self.log.hits
        self._replay(payload for _, payload in tail)
        if self.log.hits > hits and power_cut:
            self._mark_incomplete("the op log was damaged after a power cut: changes written "
                                  "after the last checkpoint may be missing")
        if self.log.hits > hits or self.log.damage:
            self._holes_pending = True
            self.clock.last = max(self.clock.last, self.reserve.clock)
        self.clock.floor_ms = max(self.clock.floor_ms, self.clock.last >> 16)
        if self.store.damaged:
            self.repair(self.store.damaged)
        self._settle_seq()
        if tail and not self.readonly:
            self.try_checkpoint()  # the next crash replays from here, not from further back

    def _rebuild(self, sdir, reason):
        """The store's structure is damaged (or from an older build): start a
        new one and replay the whole op log into it. A writer keeps the old
        files in store.damaged; a read-only process rebuilds in memory."""
        self._rebuilding = True
        try:
            self._rebuild_from_log(sdir, reason)
        finally:
            self._rebuilding = False

    def _rebuild_from_log(self, sdir, reason):
        """A writer builds the new store beside the old one (store.rebuild)
        and swaps them only once it is whole: a rebuild that fails (a full
        disk) leaves the old store where it was and raises."""
        self.known = Known()
        self.seq = max(self.reserve.seq, 0)
        if self.readonly:
            self.store = Store(sdir, memory=True)
            self._replay_all()
            self.events.append("%s: answering from a copy rebuilt in memory from the op log; "
                               "run `mycelium repair` to rebuild it on disk" % reason)
            return
        new, aside = sdir + ".rebuild", sdir + ".damaged"
        try:
            if os.path.exists(new):
                shutil.rmtree(new)
        except OSError as e:
            raise fs.error(e, "remove", new) from None
        if self.log.fd < 0:
            self.log.recover((0, 0), collect=False)
        self.store = Store(new, durable=self.durable)
        try:
            self._replay_all()
            self.store.close(self._meta())
        except BaseException:
            self.store._release()
            shutil.rmtree(new, ignore_errors=True)
            raise
        try:
            if os.path.exists(aside):
                shutil.rmtree(aside)
            if os.path.exists(sdir):
                fs.rename(sdir, aside)
            fs.rename(new, sdir)
            fs.fsync_dir(self.data_dir)
        except OSError as e:
            raise fs.error(e, "put the rebuilt store in place of", sdir) from None
        self.store = Store(sdir, durable=self.durable)
        self.events.append("%s: rebuilt the store from the op log (the damaged files are in "
                           "%s)" % (reason, aside))

    def _load_own_snapshot(self):
        """A rebuild starts from this device's snapshot: the log no longer
        holds the changes compaction folded into it."""
        if not os.path.exists(self.snapshot_path):
            return
        from .history.catchup import load_own
        try:
            load_own(self, self.snapshot_path)
        except (RemoteError, UnicodeDecodeError) as e:
            self.known = Known()
            if self.dropped.vv or self.snapshot_damaged:
                self._mark_incomplete("the snapshot is damaged (%s): records rebuilt from the "
                                      "op log alone lack the history compacted into it" % e)
            self.dropped = Known()

    def _replay_all(self):
        self._load_own_snapshot()
        hits = self.log.hits
        group = []
        for _, payload in self.log.read():
            group.append(payload)
            if len(group) >= REPLAY_GROUP:
                self._replay(group)
                group = []
        self._replay(group)
        if self.log.hits > hits:
            self._mark_incomplete("the store was rebuilt from an op log with damaged entries: "
                                  "records may miss the changes in them")
        self._holes_pending = bool(self.log.damage)
        if self.log.hits > hits or self.log.damage:  # lost stamps: the reserve bounds them
            self.clock.last = max(self.clock.last, self.reserve.clock)
        self.clock.floor_ms = max(self.clock.floor_ms, self.clock.last >> 16)
        self._settle_seq()

    def rebuild_store(self, reason: str = "a rebuild was asked for") -> None:
        """Rebuild the whole store from the op log (`mycelium repair --rebuild`)."""
        self._writable()
        self.store._release()
        self._rebuild(os.path.join(self.data_dir, "store"), reason)
        self.me = self.store.actor_index(self.actor)
        self._me_map = [self.me]
        self._me_enc = index_map(self._me_map)
        self._tables = {}

    def _replay(self, payloads) -> None:
        """Merge changes read back from our own log (a crash's tail, a
        rebuild). Entries the log could not parse are skipped and reported."""
        group = []
        for raw in payloads:
            self.replayed += 1
            try:
                group.append(parse_change(raw))
            except MalformedChange as e:
                self.events.append("a log entry does not parse (%s); skipped" % e)
                continue
            if len(group) >= REPLAY_GROUP:
                self._replay_group(group)
                group = []
        if group:
            self._replay_group(group)

    def _replay_group(self, group) -> None:
        """A change our own log holds but this build cannot apply (written by
        an older build that checked less) is skipped and reported: it must
        not keep the data directory from opening."""
        try:
            self._merge_group(group, replay=True, fallback=False)
            return
        except (RemoteError, CoreError, RecordTooLarge):
            pass
        for c in group:
            try:
                self._merge_one(c, replay=True)
            except (RemoteError, CoreError, RecordTooLarge) as e:
                self.events.append("change %d of %016x in the op log cannot be applied (%s: %s);"
                                   " skipped" % (c.seq, c.actor, type(e).__name__, e))

    def _settle_seq(self):
        own = self.known.vv.get(self.actor, 0)
        if self.reserve.seq < 0:  # the reserve was damaged: leap far past the log
            self.seq = own + 100 * SEQ_STEP
            self.clock.last += 3600_000 << 16
            if not self.readonly:
                self.reserve.need_seq(self.seq)
                self.reserve.need_clock(self.clock.last)
        self.seq = max(self.seq, own)

    def _log_damage(self, path, start, end):
        self.events.append("%s: %d damaged bytes at offset %d were skipped; the changes in them "
                           "are fetched again from peers" % (path, end - start, start))
        self._holes_pending = True

    def _mark_incomplete(self, why):
        self.incomplete = why
        self.events.append(why + "; fetch them again from a peer (`mycelium serve` or "
                           "`mycelium sync PEER`), or accept the loss with "
                           "`mycelium repair --accept-loss`")

    def _store_damaged(self, e):
        """A store structure (not one record) failed a check while in use:
        rebuild the store from the log (a writer on disk, a read-only process
        in memory); the caller then retries."""
        if self.store.dir.endswith(".in-memory") or self._rebuilding:
            raise e  # rebuilt from the log already: nothing better to rebuild it from
        self._rebuilds += 1
        self.store._release()
        self._rebuild(os.path.join(self.data_dir, "store"), str(e))
        self.me = self.store.actor_index(self.actor)
        self._me_map = [self.me]
        self._me_enc = index_map(self._me_map)
        self._tables = {}
        self._repaired = {}

    def _retry(self, method, *args):
        """store.method(*args), once more after rebuilding a store found damaged."""
        try:
            return getattr(self.store, method)(*args)
        except BlobCorrupt:
            raise
        except StoreCorrupt as e:
            self._store_damaged(e)
            return getattr(self.store, method)(*args)

    def repair(self, kids) -> None:
        """Rebuild the blobs of damaged records from the whole op log."""
        store = self.store
        kids = set(kids)
        targets = {}
        for k in kids:
            try:
                targets[store.keys.key(k).decode("utf-8")] = k
            except UnicodeDecodeError:
                raise StoreCorrupt("store/keys.heap: key %d is damaged" % k) from None
        state = {k: b"" for k in targets}
        if os.path.exists(self.snapshot_path):   # the snapshot, then the log after it
            from .history.catchup import own_blobs
            state.update(own_blobs(self, targets))
        needles = [k.encode("utf-8") for k in targets]
        hits = self.log.hits
        for _, raw in self.log.read():
            # a change names its keys as bytes: only one that holds a target's
            # bytes somewhere can touch it (a substring test, in C, before parsing)
            if len(needles) <= 8 and not any(nd in raw for nd in needles):
                continue
            try:
                c = parse_change(raw)
            except MalformedChange:
                continue
            if not any(k in targets for k in c.keys):
                continue
            blobs = [state.get(k, b"") for k in c.keys]
            batch = build_batch(store.actor_table, [store.field_id(f) for f in c.fields],
                                [store.actor_index(a) for a in c.actors], blobs, c.nops, c.ops)
            _, new = parse_merge_result(self.engine.merge(batch))
            for k, b in zip(c.keys, new):
                if k in state:
                    state[k] = b
        if self.log.hits > hits:
            self._mark_incomplete("records were rebuilt from an op log with damaged entries: "
                                  "they may miss the changes in them")
        self.events.append("rebuilt %d damaged record(s) from the op log" % len(state))
        if store.mode == READ:
            for key, blob in state.items():
                self._repaired[targets[key]] = blob
            return
        kbs = [k.encode("utf-8") for k in state]
        store.make_room([(targets[k], kb, len(b)) for (k, b), kb in zip(state.items(), kbs)])
        store.begin()
        try:
            for key, blob in state.items():
                store.save(key, blob, is_visible(blob), targets[key])
        finally:
            store.end()
        store.damaged -= kids

    def scan_log(self) -> int:
        """Walk the log's change headers: every change one of its successors
        names as prev but that the log no longer holds becomes a gap in
        `known`, so peers send it again. Returns the number found."""
        self._holes_pending = False
        dropped = self.dropped   # compacted away: held in the snapshot, not lost
        last = {}
        found = 0
        for _, raw in self.log.read():
            try:
                actor, seq, prev, _ = change_head(raw)
            except MalformedChange:
                continue
            top = last.get(actor, 0)
            if prev > top and self.known.has(actor, prev) and not dropped.has(actor, prev):
                for s in (prev,) if prev - top > 64 else range(top + 1, prev + 1):
                    if not dropped.has(actor, s):
                        self.known.lose(actor, s)
                found += 1
            if seq > top:
                last[actor] = seq
        for actor, top in self.known.vv.items():
            if last.get(actor, 0) < top and self.known.has(actor, top) and \
                    not dropped.has(actor, top):
                self.known.lose(actor, top)
                found += 1
        if found:
            self.events.append("the op log lacks %d change(s) this node held; peers are asked "
                               "for them again" % found)
        return found

    def accept_loss(self) -> None:
        """The operator accepts that some changes are lost (`mycelium repair
        --accept-loss`): stop reporting the store as incomplete."""
        self._writable()
        self.incomplete = None
        self.checkpoint()

