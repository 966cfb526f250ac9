"""The convergence check over a sync session: `mycelium check PEER`
(docs/SYNC.md, "Convergence check").

Once both sides are caught up, the side that runs the check (the client)
walks the peer's digest tree (history/digests.py) from the root down, only
into the nodes whose digests differ:

    TREE(level, [i, ...])      asks for the 16 child digests of each node i
    TREE_ANS(level, ...)       (level 3: the (key, digest) entries of each leaf)
    RECORDS(reply, records)    the states of the keys that differ; the peer
                               joins them and, asked to, replies with its own

So the keys that differ are found in four round trips (root, 16, 256, 4096
leaves) whatever their number, with 256 bytes a differing node and one
entry per key of each differing leaf. Both sides join what the other sent
(the state join of history/join.py, as a snapshot is joined), so both hold
the join, and a last TREE(0) confirms the roots agree.

A peer's TREE_ANS must answer what was asked, in order; its RECORDS are
checked whole (keys, every blob decoded, every stamp within the clock bound)
before any is joined. Anything else closes the session, nothing applied.
"""
import struct
import time

from ..codec import get_varint, put_varint
from ..core import reference as R
from ..history.digests import DEPTH, DIGEST, FANOUT, _ActorIds, _Intern, digests_of
from ..history.join import join_blob, remap
from ..store.keyindex import MAX_KEY
from .frame import MAX_DECODED, ProtocolError

__all__ = ["TREE", "TREE_ANS", "RECORDS", "Compare", "Mend", "answer_tree", "decode_records",
           "encode_records", "join_records"]

TREE, TREE_ANS, RECORDS = 8, 9, 10
MAX_ASK = 256                    # nodes one TREE may ask for
LEAVES_PER_ASK = 16              # leaf buckets per TREE at the last level (answers stay small)
MAX_RECORDS = 1024               # records one RECORDS message may carry
RECORDS_BYTES = 4 << 20          # ... and bytes of blobs
MAX_NAMES = 1 << 16
MAX_ACTORS = 1 << 16
BUSY = 15                        # TREE_ANS "level": the tree is still being built
BUILD_SLICE = 0.2                # seconds of tree building per TREE (or per poll)
WALKS = 3                        # walks before a check gives up agreeing (writes meanwhile)
_u64 = struct.Struct("<Q")


# -- the serving side


def answer_tree(node, m) -> bytes:
    """The TREE_ANS for a TREE message m (from the peer)."""
    level, p = get_varint(m, 1)
    if level > DEPTH:
        raise ProtocolError("TREE asks for level %d; the tree has %d" % (level, DEPTH))
    n, p = get_varint(m, p)
    if n > MAX_ASK or n > len(m):
        raise ProtocolError("TREE asks for %d nodes, over %d" % (n, MAX_ASK))
    width = FANOUT ** level
    asked = []
    for _ in range(n):
        i, p = get_varint(m, p)
        if i >= width:
            raise ProtocolError("TREE asks for node %d of level %d, which has %d" % (i, level,
                                                                                 width))
        asked.append(i)
    if p != len(m):
        raise ProtocolError("TREE has %d trailing bytes" % (len(m) - p))
    d = digests_of(node.store, BUILD_SLICE)
    if not d.complete:     # a first build, in slices: serve's loop goes on between them
        out = bytearray((TREE_ANS,))
        put_varint(out, BUSY)
        put_varint(out, 0)
        put_varint(out, d.n * 1000 // max(1, node.store.keys.n))
        return bytes(out)
    out = bytearray((TREE_ANS,))
    put_varint(out, level)
    put_varint(out, n)
    for i in asked:
        if level < DEPTH:
            out += d.children(level, i)
            continue
        ents = d.entries(i)
        put_varint(out, len(ents))
        for kb, dig in ents:
            put_varint(out, len(kb))
            out += kb
            out += dig
    if len(out) > MAX_DECODED // 2:
        raise ProtocolError("TREE asks for %d leaves holding %d bytes of entries; ask for "
                            "fewer" % (n, len(out)))
    return bytes(out)


# -- records


def encode_records(node, keys, reply: bool) -> bytes:
    """A RECORDS message with this node's state of each key (empty where it
    holds none), in tables of its own: field names and actor ids."""
    store = node.store
    kbs = [k if isinstance(k, bytes) else k.encode("utf-8") for k in keys]
    _, blobs = node._load_many(kbs)
    fmap, amap = _Intern(), _Intern()
    ids = _ActorIds(store)
    body = bytearray()
    put_varint(body, len(kbs))
    for kb, blob in zip(kbs, blobs):
        b = R.encode_blob(remap(R.decode_blob(blob), fmap, amap)) if blob else b""
        put_varint(body, len(kb))
        body += kb
        put_varint(body, len(b))
        body += b
    out = bytearray((RECORDS, 1 if reply else 0))
    names = store.field_names
    put_varint(out, len(fmap))
    for fid in fmap:
        nb = names[fid].encode("utf-8")
        put_varint(out, len(nb))
        out += nb
    put_varint(out, len(amap))
    for a in amap:
        out += _u64.pack(ids[a])
    return bytes(out + body)


class Mend:
    """The disk work a RECORDS message asks for: join_records(node, mend),
    then Session.mended(). reply: the peer wants our state of these keys."""
    __slots__ = ("reply", "fields", "actors", "records")

    def __init__(self, reply, fields, actors, records):
        self.reply, self.fields, self.actors, self.records = reply, fields, actors, records

    @property
    def keys(self):
        return [k for k, _ in self.records]


def decode_records(m, clock) -> Mend:
    """Check a RECORDS message whole: MalformedChange / ClockSkewError /
    ProtocolError on anything wrong; nothing is applied here."""
    if len(m) < 2 or m[1] > 1:
        raise ProtocolError("RECORDS has no flags byte or unknown flags")
    reply = m[1] == 1
    nf, p = get_varint(m, 2)
    if nf > MAX_NAMES or nf > len(m):
        raise ProtocolError("RECORDS names %d fields" % nf)
    fields = []
    for _ in range(nf):
        ln, p = get_varint(m, p)
        if not 0 < ln <= 4096 or p + ln > len(m):
            raise ProtocolError("a RECORDS field name runs past its message")
        try:
            fields.append(bytes(m[p:p + ln]).decode("utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError("a RECORDS field name is not UTF-8") from None
        p += ln
    if len(set(fields)) != len(fields):
        raise ProtocolError("RECORDS names one field twice")
    na, p = get_varint(m, p)
    if na > MAX_ACTORS or p + 8 * na > len(m):
        raise ProtocolError("RECORDS actor table runs past its message")
    actors = [_u64.unpack_from(m, p + 8 * i)[0] for i in range(na)]
    p += 8 * na
    if any(a == 0 for a in actors) or len(set(actors)) != na:
        raise ProtocolError("RECORDS actor table holds a zero or repeated id")
    n, p = get_varint(m, p)
    if n > MAX_RECORDS:
        raise ProtocolError("RECORDS carries %d records, over %d" % (n, MAX_RECORDS))
    fr, ar = range(nf), range(na)
    records, seen = [], set()
    for _ in range(n):
        kl, p = get_varint(m, p)
        if not 0 < kl <= MAX_KEY or p + kl > len(m):
            raise ProtocolError("a RECORDS key is empty, over %d bytes or runs past its "
                                "message" % MAX_KEY)
        kb = bytes(m[p:p + kl])
        p += kl
        try:
            kb.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("a RECORDS key is not UTF-8") from None
        if kb in seen:
            raise ProtocolError("RECORDS carries key %r twice" % kb)
        seen.add(kb)
        bl, p = get_varint(m, p)
        if p + bl > len(m):
            raise ProtocolError("a RECORDS blob runs past its message")
        blob = bytes(m[p:p + bl])
        p += bl
        if blob:
            join_blob(b"", blob, fr, ar, actors)       # MalformedChange if it does not decode
            newest = _newest(blob)
            if newest:
                clock.check(newest)
        records.append((kb, blob))
    if p != len(m):
        raise ProtocolError("RECORDS has %d trailing bytes" % (len(m) - p))
    return Mend(reply, fields, actors, records)


def join_records(node, mend) -> list:
    """Join the peer's records into the store and make the result durable
    (this device's snapshot, as a taken snapshot is: Node.save_mended).
    Returns the keys whose state changed."""
    from ..history.catchup import _join_group
    store = node.store
    theirs = [(kb, b) for kb, b in mend.records if b]
    if not theirs:
        return []
    before = dict(zip([kb for kb, _ in theirs], node._load_many([kb for kb, _ in theirs])[1]))
    fmap = [store.field_id(f) for f in mend.fields]
    amap = [store.actor_index(a) for a in mend.actors]
    _join_group(node, theirs, fmap, amap, store.actors.items)
    after = node._load_many([kb for kb, _ in theirs])[1]
    changed = [kb for (kb, _), b in zip(theirs, after) if b != before[kb]]
    if changed:
        for kb, b in mend.records:
            if b:
                node.clock.observe(_newest(b))
        node.mended_unsaved = True
        node.save_mended()        # at once, or within MEND_GAP (serve's loop, close)
    return changed


def _newest(blob):
    """The newest stamp of a blob: the last of its sorted stamp table."""
    n, q = get_varint(blob, 1)
    return _u64.unpack_from(blob, q + 8 * (n - 1))[0] if n else 0


# -- the side that runs the check


def _tree(level, indexes) -> bytes:
    out = bytearray((TREE,))
    put_varint(out, level)
    put_varint(out, len(indexes))
    for x in indexes:
        put_varint(out, x)
    return bytes(out)


class Compare:
    """The walk down the peer's tree, driven by the session: start() once
    both sides are caught up; the session hands it each TREE_ANS and tells
    it of each RECORDS joined. done is set at the end, with:
    differ   keys (bytes) found to differ on the first walk
    agree    whether the roots agreed at the end
    repaired keys whose state changed here; peer_repaired: there (as the
             peer said: the keys of its replies that differed from ours)
    trips    round trips (busy_waits apart: asks the peer answered "still
             building its tree"); wire: bytes both ways during the check."""

    def __init__(self, session, repair=True):
        self.session = session
        self.repair = repair
        self.done = False
        self.started = None
        self.pending = []            # (level, [indexes]) asked and not answered, in order
        self.next = []               # indexes asked for at the next level
        self.differ = None
        self.found = set()
        self.agree = False
        self.repaired = set()
        self.sent_records = 0
        self.awaiting_records = 0
        self.trips = 0
        self.busy = None             # the peer's last "still building" (per mille)
        self.waits = 0               # asks answered "still building"
        self.walks = 0
        self.wire0 = 0
        self.seconds = None
        self.wire = 0

    def prepare(self) -> bool:
        """Build this side's tree for a slice; True once it is complete."""
        return digests_of(self.session.node.store, BUILD_SLICE).complete

    def start(self):
        s = self.session
        self.started = time.monotonic()
        self.wire0 = s.stats["wire_in"] + s.stats["wire_out"]
        self._walk()

    def _walk(self):
        self.walks += 1
        self.found = set()
        self.digests = digests_of(self.session.node.store)
        self._ask(0, [0])

    def _ask(self, level, indexes):
        self.trips += 1
        self.next = []
        step = LEAVES_PER_ASK if level == DEPTH else MAX_ASK
        for i in range(0, len(indexes), step):
            part = indexes[i:i + step]
            self.pending.append((level, part))
            self.session._send(_tree(level, part))

    def on_answer(self, m):
        if not self.pending:
            raise ProtocolError("TREE_ANS that nothing asked for")
        level, asked = self.pending.pop(0)
        got, p = get_varint(m, 1)
        n, p = get_varint(m, p)
        if got == BUSY and n == 0:      # the peer is building its tree: ask again
            self.busy, p = get_varint(m, p)
            if p != len(m) or self.busy > 1000:
                raise ProtocolError("a busy TREE_ANS is malformed")
            self.waits += 1
            self.pending.insert(0, (level, asked))
            self.session._send(_tree(level, asked))
            return
        if got != level or n != len(asked):
            raise ProtocolError("TREE_ANS answers %d nodes of level %d; %d of level %d were "
                                "asked for" % (n, got, len(asked), level))
        d = self.digests
        if level < DEPTH:
            size = FANOUT * DIGEST
            if len(m) - p != n * size:
                raise ProtocolError("TREE_ANS of level %d has %d bytes of digests, not %d"
                                    % (level, len(m) - p, n * size))
            for i in asked:
                theirs = m[p:p + size]
                p += size
                ours = d.children(level, i)
                if theirs != ours:
                    for j in range(FANOUT):
                        if theirs[j * DIGEST:(j + 1) * DIGEST] != ours[j * DIGEST:(j + 1) * DIGEST]:
                            self.next.append(i * FANOUT + j)
        else:
            for b in asked:
                cnt, p = get_varint(m, p)
                if cnt > len(m):
                    raise ProtocolError("TREE_ANS entry count runs past its message")
                theirs = {}
                for _ in range(cnt):
                    kl, p = get_varint(m, p)
                    if not 0 < kl <= MAX_KEY or p + kl + DIGEST > len(m):
                        raise ProtocolError("a TREE_ANS entry runs past its message")
                    kb = bytes(m[p:p + kl])
                    theirs[kb] = bytes(m[p + kl:p + kl + DIGEST])
                    p += kl + DIGEST
                ours = dict(d.entries(b))
                for kb in set(ours) | set(theirs):
                    if ours.get(kb) != theirs.get(kb):
                        self.found.add(kb)
            if p != len(m):
                raise ProtocolError("TREE_ANS has %d trailing bytes" % (len(m) - p))
        if self.pending:
            return
        if self.next and level < DEPTH:
            self._ask(level + 1, self.next)
        else:
            self._walked()

    def _walked(self):
        if self.differ is None:
            self.differ = sorted(self.found)
        if not self.found:
            self._finish(True)
        elif not self.repair or self.walks >= WALKS:
            self._finish(False)
        else:
            self._send_records(sorted(self.found))

    def _send_records(self, keys):
        s = self.session
        self.trips += 1
        i = 0
        while i < len(keys):
            part, size = [], 0
            while i < len(keys) and len(part) < MAX_RECORDS and size < RECORDS_BYTES:
                part.append(keys[i])
                size += 2048     # a guess per record; the message cap is checked below
                i += 1
            msg = encode_records(s.node, part, reply=True)
            if len(msg) > MAX_DECODED // 2:
                raise ProtocolError("%d records take %d bytes, over a frame" % (len(part),
                                                                                len(msg)))
            s._send(msg)
            self.awaiting_records += 1
            self.sent_records += len(part)

    def on_records(self, changed):
        """A RECORDS reply from the peer was joined (changed: keys it changed here)."""
        self.repaired.update(changed)
        if self.awaiting_records:
            self.awaiting_records -= 1
            if not self.awaiting_records:
                self._walk()         # confirm: the roots should agree now

    def _finish(self, agree):
        self.agree = agree
        self.done = True
        self.seconds = time.monotonic() - self.started
        st = self.session.stats
        self.wire = st["wire_in"] + st["wire_out"] - self.wire0

    def report(self) -> dict:
        return {"agree": self.agree, "differ": [k.decode("utf-8", "replace")
                                                for k in (self.differ or [])],
                "repaired_here": sorted(k.decode("utf-8", "replace") for k in self.repaired),
                "sent_records": self.sent_records, "round_trips": self.trips,
                "busy_waits": self.waits,
                "walks": self.walks, "wire_bytes": self.wire,
                "seconds": round(self.seconds or 0, 6)}

