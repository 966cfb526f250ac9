"""The sync session, sans I/O in h11's sense: bytes in; bytes, events and
the disk work to perform out.

    s = Session(node, my_device_id, peer_id=their_device_id)
    s.start()                       # queues HELLO
    loop:
        for m in s.receive(bytes_from_peer):   # never raises for bad peer input
            if Check: s.checked(m, node.check_heads(m.vv, m.heads, m.peer))  # HELLO: heads differ?
            if Merge: taken = node.receive(m.changes)      # the disk work: the caller's
                      s.merged(m, taken, node.advertised())  # queues the ACK
        (until receive(b"") returns nothing: it parses one message that needs work at a time)
        s.pump()                    # queues change batches the peer lacks
        send(s.data_to_send())
        for ev in s.events(): ...
        if s.closed: close the connection

transport.settle() is that loop. The protocol's states and the messages each
accepts are one table, TRANSITIONS; a message a state does not accept is a
ProtocolError. (pump() reads the node's op log: the sending side is a
reader of local data, not of the peer's.)

What each side holds is the truth (agent/vector.py: a version vector with
gaps): each side sends, in log order, the changes the peer does not hold, in
batches; the peer answers every batch with an ACK holding all it holds after
the merge. Changes may arrive out of order: a change past a missing one is
merged (every op is a state the merge joins) and leaves a gap, which the
receiver's next ACK or HELLO advertises so that any peer sends it. The Bloom
filter (pybloom-live) of hashes a peer recently merged from third parties
lets a sender skip changes; if an ACK shows the peer lacks one that was sent
or skipped (a false positive), the sender rewinds and stops trusting the
filter for that actor. So the filter can only save bytes, never lose a
change. A sender reads its log only up to what is on disk
(OpLog.durable_end), so no peer ever holds a change the sender could still
lose in a power cut.

Any malformed frame or message, a change the node refuses (MalformedChange,
ClockSkewError) or a message out of turn closes this session only (a BYE with
the reason is queued for the peer); nothing from that frame is applied.
Faults of our own store (StoreError, CoreError, LogError) are raised.
"""
import struct
import time
from collections import deque

from pybloom_live import BloomFilter

from ..change import HASH_LEN, chain_head
from ..fork import HEAD_HASH
from ..codec import get_varint, put_varint
from ..errors import MalformedChange, RemoteError
from ..vector import Known
from .frame import FrameReader, ProtocolError, encode_frame, MAX_DECODED
from .parser import accept_unsigned_default
from .batchwire import decode_changes, encode_changes, heads_for
from .signing import authenticate, decode_heads, encode_heads

__all__ = ["PROTOCOL", "Session", "Recent", "HELLO", "CHANGES", "ACK", "IDLE", "HAVE", "BYE",
           "SNAPSHOT", "Absorb", "decode_known"]

PROTOCOL = 4
HELLO, CHANGES, ACK, IDLE, HAVE, BYE, SNAPSHOT = 1, 2, 3, 4, 5, 6, 7
TREE, TREE_ANS, RECORDS = 8, 9, 10      # the convergence check (check.py)
NAMES = {HELLO: "HELLO", CHANGES: "CHANGES", ACK: "ACK", IDLE: "IDLE", HAVE: "HAVE", BYE: "BYE",
         SNAPSHOT: "SNAPSHOT", TREE: "TREE", TREE_ANS: "TREE_ANS", RECORDS: "RECORDS"}
BATCH_BYTES = 2 << 20          # raw change bytes per CHANGES batch (well under the frame cap)
WINDOW = 4                      # batches in flight before waiting for an ACK
BLOOM_CAPACITY = 4096
BLOOM_ERROR = 0.01
MAX_BLOOM_CAPACITY = 1 << 16
MAX_ID = 64
MAX_ACTORS = 1 << 16            # entries of a version vector a peer may send
MAX_NOT_TAKEN = 1 << 16
MAX_LOST_SPAN = 4096            # seqs one HAVE may ask for again (in all its new gaps)
FLAG_LIVE = 1
FLAG_SNAPSHOT = 2               # HELLO: this build takes SNAPSHOT messages
FLAG_CHECK = 4                  # HELLO: this build answers TREE and RECORDS
SNAP_CHUNK = 1 << 20            # snapshot file bytes per SNAPSHOT message
_u64 = struct.Struct("<Q")


# -- states, and the messages each accepts (anything else: ProtocolError)

AWAIT_HELLO, OPEN, CLOSED = "awaiting HELLO", "open", "closed"
TRANSITIONS = {
    (AWAIT_HELLO, HELLO): ("_on_hello", OPEN),
    (AWAIT_HELLO, BYE): ("_on_bye", CLOSED),
    (OPEN, CHANGES): ("_on_changes", OPEN),
    (OPEN, SNAPSHOT): ("_on_snapshot", OPEN),
    (OPEN, ACK): ("_on_ack", OPEN),
    (OPEN, IDLE): ("_on_idle", OPEN),
    (OPEN, HAVE): ("_on_have", OPEN),
    (OPEN, TREE): ("_on_tree", OPEN),
    (OPEN, TREE_ANS): ("_on_tree_ans", OPEN),
    (OPEN, RECORDS): ("_on_records", OPEN),
    (OPEN, BYE): ("_on_bye", CLOSED),
}


class Check:
    """The work a peer's HELLO asks for: Node.check_heads(vv, heads, peer),
    then Session.checked() with the (actor, seq) whose change differs."""
    __slots__ = ("vv", "heads", "peer")

    def __init__(self, vv, heads, peer):
        self.vv, self.heads, self.peer = vv, heads, peer


class Merge:
    """The disk work a CHANGES batch asks for: Node.receive(changes), then
    Node.quarantine_raw for each of `odd` (changes whose body does not
    parse), keeping the signed heads in `used` (HeadStore.add), then
    Session.merged(). `refused`: [(change, reason)] no valid signature
    vouches for; they are not taken."""
    __slots__ = ("batch", "changes", "odd", "count", "size", "refused", "used")

    def __init__(self, batch, changes, odd, count, size, refused=(), used=()):
        self.batch, self.changes, self.odd, self.count, self.size = \
            batch, changes, odd, count, size
        self.refused, self.used = refused, used


class Absorb:
    """The disk work a SNAPSHOT message asks for: Node.take_snapshot_chunk(
    chunk, first, last), then Session.absorbed(). A RemoteError from it (a
    damaged snapshot) goes to Session.fail()."""
    __slots__ = ("batch", "chunk", "first", "last")

    def __init__(self, batch, chunk, first, last):
        self.batch, self.chunk, self.first, self.last = batch, chunk, first, last


# -- events


class Event:
    __slots__ = ()
    kind = "event"

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join(
            "%s=%r" % (k, getattr(self, k)) for k in self.__slots__))


class Connected(Event):
    __slots__ = ("peer_id", "peer_actor", "peer_vv")
    kind = "connected"

    def __init__(self, peer_id, peer_actor, peer_vv):
        self.peer_id, self.peer_actor, self.peer_vv = peer_id, peer_actor, peer_vv


class Received(Event):
    """A batch from the peer was merged: changes in it, new, duplicate, dropped (gap)."""
    __slots__ = ("batch", "changes", "new", "dup", "gap", "ops_bytes")
    kind = "received"

    def __init__(self, batch, changes, new, dup, gap, ops_bytes):
        self.batch, self.changes, self.new, self.dup, self.gap = batch, changes, new, dup, gap
        self.ops_bytes = ops_bytes


class Pended(Event):
    """Changes of a batch were held, quarantined, or not taken (pending area full)."""
    __slots__ = ("batch", "held", "quarantined", "refused", "reasons")
    kind = "pended"

    def __init__(self, batch, held, quarantined, refused, reasons):
        self.batch, self.held, self.quarantined = batch, held, quarantined
        self.refused, self.reasons = refused, reasons


class Refused(Event):
    """Changes of a batch that no signature of their actor vouches for."""
    __slots__ = ("batch", "count", "reasons")
    kind = "refused"

    def __init__(self, batch, count, reasons):
        self.batch, self.count, self.reasons = batch, count, reasons


class Mended(Event):
    """Records a peer sent in a convergence check were joined: how many
    came, the keys whose state changed here, whether the peer asked for ours."""
    __slots__ = ("records", "changed", "reply")
    kind = "mended"

    def __init__(self, records, changed, reply):
        self.records, self.changed, self.reply = records, changed, reply


class Forked(Event):
    """A signed change from the peer proved a fork of an actor (agent/fork.py)."""
    __slots__ = ("actor", "why")
    kind = "forked"

    def __init__(self, actor, why):
        self.actor, self.why = actor, why


class SnapshotSent(Event):
    """The peer lacked history this node compacted: it was sent the snapshot
    (or, too old to take one, only what the log still holds: can_take False)."""
    kind = "snapshot_sent"
    __slots__ = ("bytes", "can_take")

    def __init__(self, nbytes, can_take=True):
        self.bytes, self.can_take = nbytes, can_take


class SnapshotTaken(Event):
    kind = "snapshot_taken"
    __slots__ = ("bytes", "records")

    def __init__(self, nbytes, records):
        self.bytes, self.records = nbytes, records


class Sent(Event):
    __slots__ = ("batch", "changes", "skipped", "raw_bytes", "wire_bytes")
    kind = "sent"

    def __init__(self, batch, changes, skipped, raw_bytes, wire_bytes):
        self.batch, self.changes, self.skipped = batch, changes, skipped
        self.raw_bytes, self.wire_bytes = raw_bytes, wire_bytes


class Acked(Event):
    __slots__ = ("batch", "peer_vv", "rewound")
    kind = "acked"

    def __init__(self, batch, peer_vv, rewound):
        self.batch, self.peer_vv, self.rewound = batch, peer_vv, rewound


class CaughtUp(Event):
    """Both sides have sent everything the other lacked (so far)."""
    __slots__ = ("peer_vv",)
    kind = "caught_up"

    def __init__(self, peer_vv):
        self.peer_vv = peer_vv


class Closed(Event):
    """The session ended: error is None for a clean BYE, else the exception."""
    __slots__ = ("reason", "error", "by_peer")
    kind = "closed"

    def __init__(self, reason, error=None, by_peer=False):
        self.reason, self.error, self.by_peer = reason, error, by_peer


# -- encodings


def decode_known(buf, p):
    """A peer's Known (vector and gaps); ProtocolError on bad bytes."""
    try:
        return Known.decode(buf, p, MAX_ACTORS)
    except MalformedChange as e:
        raise ProtocolError(str(e)) from None


def _bloom_bytes(bf) -> bytes:
    return bf.bitarray.tobytes() if bf is not None else b""


def encode_bloom(out: bytearray, bf) -> None:
    if bf is None:
        put_varint(out, 0)
        return
    put_varint(out, bf.capacity)
    raw = _bloom_bytes(bf)
    put_varint(out, len(raw))
    out += raw


def decode_bloom(buf, p):
    cap, p = get_varint(buf, p)
    if cap == 0:
        return None, p
    if cap > MAX_BLOOM_CAPACITY:
        raise ProtocolError("Bloom filter capacity %d is over %d" % (cap, MAX_BLOOM_CAPACITY))
    n, p = get_varint(buf, p)
    bf = BloomFilter(cap, BLOOM_ERROR)
    want = (bf.num_bits + 7) // 8
    if n != want or p + n > len(buf):
        raise ProtocolError("Bloom filter has %d bytes, expected %d" % (n, want))
    bits = bf.bitarray.__class__(endian="little")
    bits.frombytes(bytes(buf[p:p + n]))
    del bits[bf.num_bits:]
    bf.bitarray = bits
    bf.count = cap
    return bf, p + n


class Recent:
    """Hashes of changes recently merged from any peer, shared by the sessions
    of one daemon; its Bloom filter tells other peers what not to resend."""

    def __init__(self, capacity=BLOOM_CAPACITY):
        self.hashes = deque(maxlen=capacity)
        self.capacity = capacity
        self.version = 0
        self._bf = None
        self._bf_version = -1

    def add(self, h: bytes) -> None:
        self.hashes.append(h)
        self.version += 1

    def bloom(self):
        if not self.hashes:
            return None
        if self._bf_version != self.version:
            bf = BloomFilter(self.capacity, BLOOM_ERROR)
            for h in self.hashes:
                bf.add(h, skip_check=True)
            self._bf, self._bf_version = bf, self.version
        return self._bf


# -- the session


class Session:
    def __init__(self, node, device_id: str, peer_id: str = None, *, live: bool = False,
                 recent: Recent = None, batch_bytes: int = BATCH_BYTES, window: int = WINDOW,
                 use_bloom: bool = True, accept_unsigned: bool = None):
        self.node = node
        self.signer, self.head_store = sync_parts(node)
        self.accept_unsigned = (accept_unsigned_default() if accept_unsigned is None
                                else accept_unsigned)
        from .devid import stored_id   # ids as stored, also when given as shown
        self.device_id = stored_id(device_id)
        self.expect_peer = None if peer_id is None else stored_id(peer_id)
        self.live = live
        self.recent = recent if recent is not None else Recent()
        self.batch_bytes = min(batch_bytes, MAX_DECODED // 2)
        self.window = window
        self.use_bloom = use_bloom
        self._reader = FrameReader()
        self.state = AWAIT_HELLO
        self._awaiting = None        # a Merge handed out and not yet merged()
        self._out = bytearray()
        self._events = []
        self.closed = False
        self.error = None
        # peer
        self.peer_id = None
        self.peer_actor = None
        self.peer_known = None       # what the peer said it holds (HELLO, ACK, HAVE)
        self.peer_live = False
        self.peer_bloom = None
        self.peer_snap = False       # the peer takes SNAPSHOT messages
        self.peer_check = False      # the peer answers TREE and RECORDS
        self.compare = None          # check.Compare, on the side that runs a check
        # snapshots (history/): one per session each way at most
        self._snap = None            # the snapshot file being sent
        self._snap_checked = False
        self.snap_known = None       # what the snapshot being sent holds
        self.snap_batch = None       # the batch of its last chunk
        self._snap_in = False        # a snapshot from the peer is arriving
        # sending
        self.model = None            # peer_known plus what we sent since
        self.cursor = (0, 0)
        self.next_batch = 1
        self.in_flight = {}          # batch -> [(actor, seq, prev)] sent or skipped in it
        self.no_skip = set()
        self.not_taken = []          # (actor, seq, prev) sent but not taken by the peer
        self.idle_sent = False
        self.peer_idle = False
        self.caught_up = False
        # counters
        self.stats = {"sent_changes": 0, "sent_batches": 0, "skipped": 0, "recv_changes": 0,
                      "new": 0, "dup": 0, "gap": 0, "wire_out": 0, "wire_in": 0,
                      "raw_out": 0, "raw_in": 0, "rewinds": 0, "held": 0, "quarantined": 0,
                      "refused": 0, "not_taken": 0, "unsigned": 0, "forged": 0,
                      "unvouched_sent": 0, "snap_out": 0, "snap_in": 0, "mended": 0}
        self.recv_batch = 0
        self.last_heard = time.monotonic()

    @property
    def peer_vv(self):
        """The peer's version vector as a dict (None before its HELLO)."""
        return None if self.peer_known is None else self.peer_known.vv

    # -- I/O surface

    def start(self) -> None:
        if self.node._holes_pending:
            self.node.scan_log()  # ask for what our damaged log lost
        out = bytearray((HELLO,))
        put_varint(out, PROTOCOL)
        did = self.device_id.encode("ascii")
        put_varint(out, len(did))
        out += did
        out += _u64.pack(self.node.actor)
        self.node.advertised().encode(out)
        heads = self.node.heads_to_send()[:MAX_ACTORS]
        put_varint(out, len(heads))
        for a, sq, h in heads:
            out += _u64.pack(a)
            put_varint(out, sq)
            out += h
        put_varint(out, (FLAG_LIVE if self.live else 0) | FLAG_SNAPSHOT | FLAG_CHECK)
        encode_bloom(out, self.recent.bloom() if self.use_bloom else None)
        self._send(out)

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def events(self) -> list:
        ev, self._events = self._events, []
        return ev

    def receive(self, data) -> list:
        """Feed bytes from the peer; returns the Merges to perform (at most
        one: parsing stops after a CHANGES batch until merged() is called;
        call receive(b"") then to go on). Bad peer input closes the session
        (see .closed, .error and a Closed event); it is never raised."""
        if self.closed:
            return []
        if data:
            self.stats["wire_in"] += len(data)
            self.last_heard = time.monotonic()
            self._reader.feed(data)
        if self._awaiting is not None:
            return []
        try:
            while not self.closed:
                payload = self._reader.next()
                if payload is None:
                    break
                action = self._dispatch(payload)
                if action is not None:
                    self._awaiting = action
                    return [action]
        except (RemoteError, MalformedChange) as e:
            self.fail(e)
        return []

    def eof(self) -> None:
        """The peer closed the connection."""
        if self.closed:
            return
        if self._reader.pending():
            from .frame import SizeMismatch
            self.fail(SizeMismatch("connection closed in the middle of a frame "
                                   "(%d bytes of it arrived)" % self._reader.pending()),
                      send_bye=False)
        else:
            self._close("peer closed the connection", None, by_peer=True)

    def fail(self, err, send_bye=True) -> None:
        if self.closed:
            return
        if send_bye:
            self._bye(1, "%s: %s" % (type(err).__name__, err))
        self._close(str(err), err)

    def close(self, reason="closing") -> None:
        """End cleanly (queues a BYE)."""
        if not self.closed:
            self._bye(0, reason)
            self._close(reason, None)

    @property
    def ready(self) -> bool:
        return self.peer_known is not None and not self.closed

    # -- sending changes

    def pump(self) -> int:
        """Queue CHANGES batches while the window allows; an IDLE once all is
        sent and acknowledged. Returns how many batches were queued."""
        if not self.ready:
            return 0
        log = self.node.log
        if log.synced < log.written and len(self.in_flight) < self.window:
            log.commit()  # only what is on disk is sent (one fsync covers the batch)
        if not self._snap_checked:
            self._snap_checked = True
            self._start_snapshot()
        queued = 0
        while len(self.in_flight) < self.window:
            if not self._one_batch():
                break
            queued += 1
        if not queued and not self.in_flight and not self.idle_sent:
            self.idle_sent = True
            self._send(bytes((IDLE,)) + _varint(self.next_batch - 1))
            self._check_caught_up()
        return queued

    def _start_snapshot(self):
        """If the peer lacks history the log no longer holds, send the
        snapshot first (docs/SYNC.md, "Snapshots"); the log's tail follows."""
        node = self.node
        if not node.needs_snapshot(self.model):
            return
        if not self.peer_snap:
            self._events.append(SnapshotSent(0, can_take=False))
            return
        from ..history.snapshot import Reader
        try:
            r = Reader(node.snapshot_path)
        except (OSError, RemoteError) as e:
            node.snapshot_damaged = str(e)    # damaged since: written again, once
            if not node.needs_snapshot(self.model):
                return
            r = Reader(node.snapshot_path)
        self.snap_known = Known.from_json(r.header.get("known", {}))
        r.f.seek(0)
        self._snap = r.f
        self._snap_size = r.size

    def _snapshot_batch(self) -> bool:
        f = self._snap
        chunk = f.read(SNAP_CHUNK)
        last = f.tell() >= self._snap_size or not chunk
        first = len(chunk) == f.tell()
        out = bytearray((SNAPSHOT,))
        put_varint(out, self.next_batch)
        out.append((1 if first else 0) | (2 if last else 0))
        out += chunk
        batch = self.next_batch
        self.next_batch += 1
        self.in_flight[batch] = []
        self._send(out)
        self.idle_sent = False
        self.caught_up = False
        self.stats["snap_out"] += len(chunk)
        if last:
            f.close()
            self._snap = None
            self.snap_batch = batch
            self.model = self.model.union(self.snap_known)
            self._events.append(SnapshotSent(self.stats["snap_out"]))
        return True

    def _one_batch(self) -> bool:
        """One CHANGES batch: the changes the peer lacks, in log order, up to
        the byte budget, and the signed heads that vouch for them. A run of
        a relayed actor must end at a change this node holds a head for, so
        past the budget the scan goes on (up to MAX_DECODED / 2) only to
        close such runs; the next batch resumes at the first change left out."""
        if self._snap is not None:
            return self._snapshot_batch()
        model = self.model
        signer, store = self.signer, self.head_store
        picked = []          # (raw, actor, seq, prev, prev_hash, its offset)
        size = scanned = 0
        last = self.cursor
        resume = None
        open_runs = {}       # relayed actor -> seq of its last picked change, not at a head
        budget, hard = self.batch_bytes, MAX_DECODED // 2
        log = self.node.log
        for pos, raw, end in log.entries(self.cursor, upto=log.durable_end()):
            try:
                actor, seq, prev, ph, off = chain_head(raw)
            except MalformedChange:
                if size < budget:
                    last = end
                elif resume is None:
                    resume = pos
                continue
            cont = actor in open_runs and open_runs[actor] == prev
            if size >= budget:
                scanned += len(raw)
                if not open_runs or scanned > hard:
                    if resume is None:
                        resume = pos
                    break
                if not cont:
                    if resume is None:
                        resume = pos
                    continue
            elif not cont and model.has(actor, seq):
                last = end
                continue
            if resume is None:
                last = end
            model.add(actor, seq, prev)
            picked.append((raw, actor, seq, prev, ph, off))
            size += len(raw)
            if ph is not None and actor in store.count and not signer.has(actor):
                if store.get(actor, seq, raw[-HASH_LEN:]) is not None:
                    open_runs.pop(actor, None)
                else:
                    open_runs[actor] = seq
        self.cursor = resume if resume is not None else last
        if not picked:
            return False
        keep, skipped = self._bloom_skip(picked)
        heads, unvouched = heads_for(keep, self.signer, self.head_store)
        self.stats["unvouched_sent"] += unvouched
        out = bytearray((CHANGES,))
        put_varint(out, self.next_batch)
        raw_bytes = encode_changes(out, keep)
        encode_heads(out, heads)
        batch = self.next_batch
        self.next_batch += 1
        if skipped:
            sent_ids = {id(it) for it in keep}
            flags = [id(it) in sent_ids for it in picked]
        else:
            flags = [True] * len(picked)
        self.in_flight[batch] = [(it[1], it[2], it[3], f) for it, f in zip(picked, flags)]
        wire = self._send(out)
        self.idle_sent = False
        self.caught_up = False
        st = self.stats
        st["sent_changes"] += len(keep)
        st["sent_batches"] += 1
        st["skipped"] += skipped
        st["raw_out"] += raw_bytes
        self._events.append(Sent(batch, len(keep), skipped, raw_bytes, wire))
        return True

    def _bloom_skip(self, picked):
        """Leave out changes the peer's Bloom filter says it holds: for each
        actor only its lowest ones, as a head vouches for a change through
        the changes above it."""
        bf = self.peer_bloom
        if bf is None or not self.use_bloom:
            return picked, 0
        by = {}
        for i, it in enumerate(picked):
            if it[1] not in self.no_skip:
                by.setdefault(it[1], []).append(i)
        drop = set()
        for idx in by.values():
            idx.sort(key=lambda i: picked[i][2])
            for i in idx:
                if picked[i][0][-HASH_LEN:] not in bf:
                    break
                drop.add(i)
        if not drop:
            return picked, 0
        return [it for i, it in enumerate(picked) if i not in drop], len(drop)

    # -- messages

    def _send(self, payload) -> int:
        frame = encode_frame(payload)
        self._out += frame
        self.stats["wire_out"] += len(frame)
        return len(frame)

    def _bye(self, code, reason):
        out = bytearray((BYE,))
        put_varint(out, code)
        r = reason.encode("utf-8")[:1000]
        put_varint(out, len(r))
        out += r
        self._send(out)

    def _close(self, reason, err, by_peer=False):
        if self._snap is not None:
            self._snap.close()
            self._snap = None
        self.closed = True
        self.state = CLOSED
        self.error = err
        self._events.append(Closed(reason, err, by_peer))

    def _dispatch(self, payload):
        """One message, through TRANSITIONS; returns a Merge or None."""
        if not payload:
            raise ProtocolError("empty message")
        t = payload[0]
        if t not in NAMES:
            raise ProtocolError("unknown message type %d" % t)
        step = TRANSITIONS.get((self.state, t))
        if step is None:
            raise ProtocolError("%s while %s%s" % (
                NAMES[t], self.state, " (a replayed frame?)" if t == HELLO else ""))
        handler, after = step
        try:
            action = getattr(self, handler)(payload)
        except MalformedChange as e:
            if "varint" in str(e):
                raise ProtocolError("%s message is truncated (%s)" % (NAMES[t], e)) from None
            raise
        if not self.closed:
            self.state = after
        return action

    def _on_hello(self, m):
        proto, p = get_varint(m, 1)
        if proto != PROTOCOL:
            raise ProtocolError("peer speaks sync protocol %d; this build speaks %d: "
                                "upgrade the older device" % (proto, PROTOCOL))
        n, p = get_varint(m, p)
        if n > MAX_ID or p + n + 8 > len(m):
            raise ProtocolError("HELLO device id is malformed")
        try:
            peer_id = bytes(m[p:p + n]).decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError("HELLO device id is not ASCII") from None
        p += n
        if self.expect_peer is not None and peer_id != self.expect_peer:
            raise ProtocolError("peer says it is %s but its certificate is %s"
                                % (peer_id, self.expect_peer))
        actor = _u64.unpack_from(m, p)[0]
        p += 8
        if actor == 0 or actor == self.node.actor:
            raise ProtocolError("peer uses actor id %016x, which is %s" % (
                actor, "zero" if actor == 0 else "ours: a copied data directory? "
                "give one device a fresh `mycelium init`"))
        known, p = decode_known(m, p)
        n, p = get_varint(m, p)
        if n > MAX_ACTORS or n * (9 + HEAD_HASH) > len(m) - p:
            raise ProtocolError("HELLO head list of %d entries runs past its message" % n)
        heads = []
        for _ in range(n):
            a = _u64.unpack_from(m, p)[0]
            sq, p = get_varint(m, p + 8)
            if p + HEAD_HASH > len(m):
                raise ProtocolError("HELLO head list runs past its message")
            heads.append((a, sq, bytes(m[p:p + HEAD_HASH])))
            p += HEAD_HASH
        flags, p = get_varint(m, p)
        bf, p = decode_bloom(m, p)
        if p != len(m):
            raise ProtocolError("HELLO has %d trailing bytes" % (len(m) - p))
        self.peer_id, self.peer_actor, self.peer_known = peer_id, actor, known
        self.model = known.copy()
        self.peer_live = bool(flags & FLAG_LIVE)
        self.peer_snap = bool(flags & FLAG_SNAPSHOT)
        self.peer_check = bool(flags & FLAG_CHECK)
        self.peer_bloom = bf
        self.cursor = self.node.log_start_for(known)   # skip segments it holds whole
        self.node.peer_holds(peer_id, known)
        self._events.append(Connected(peer_id, actor, dict(known.vv)))
        return Check(known.vv, heads, peer_id)

    def checked(self, c: Check, differ) -> None:
        """The caller ran Check c; differ: [(actor, seq)] whose change the
        peer's HELLO says differs from ours. Ours of each is sent (signed) as
        the evidence of a fork: the peer's model loses it."""
        if c is not self._awaiting:
            raise ValueError("checked() for a check this session did not hand out")
        self._awaiting = None
        for a, s in differ[:MAX_ACTORS]:
            self.model.lose(a, s)
        if differ:     # the cursor skipped what HELLO said the peer holds: these too
            self.cursor = min(self.cursor, self.node.log_start_for(self.model))

    def _on_changes(self, m):
        """Parse the whole batch first: a change whose header cannot be read
        (or a batch that does not frame) is a ProtocolError and nothing of
        the batch is applied. Then each change is judged alone by
        Node.receive: merged, held or quarantined; none closes the session."""
        batch, p = get_varint(m, 1)
        if batch != self.recv_batch + 1:
            raise ProtocolError("CHANGES batch %d arrived after batch %d (a replayed or "
                                "reordered frame)" % (batch, self.recv_batch))
        parsed, odd, size, p = decode_changes(m, p)
        heads, p = decode_heads(m, p)
        if p != len(m):
            raise ProtocolError("CHANGES has %d trailing bytes" % (len(m) - p))
        self.recv_batch = batch
        self.peer_idle = False
        taken, refused, used = authenticate(parsed, heads, self.accept_unsigned)
        return Merge(batch, taken, odd, len(parsed) + len(odd), size, refused, used)

    def _on_snapshot(self, m):
        batch, p = get_varint(m, 1)
        if batch != self.recv_batch + 1:
            raise ProtocolError("SNAPSHOT batch %d arrived after batch %d (a replayed or "
                                "reordered frame)" % (batch, self.recv_batch))
        if p >= len(m):
            raise ProtocolError("SNAPSHOT message is truncated")
        flags = m[p]
        first, last = bool(flags & 1), bool(flags & 2)
        if first == self._snap_in:
            raise ProtocolError("SNAPSHOT chunk %s a snapshot that %s" % (
                "starts" if first else "continues", "is arriving" if first else "never started"))
        self._snap_in = not last
        self.recv_batch = batch
        self.peer_idle = False
        chunk = bytes(m[p + 1:])
        self.stats["snap_in"] += len(chunk)
        return Absorb(batch, chunk, first, last)

    def absorbed(self, m, got, known) -> None:
        """The caller performed Absorb m (got: Node.take_snapshot_chunk's
        result: a summary on the last chunk); queues the ACK with `known`."""
        if m is not self._awaiting:
            raise ValueError("absorbed() for a chunk this session did not hand out")
        self._awaiting = None
        if self.closed:
            return
        out = bytearray((ACK,))
        put_varint(out, m.batch)
        known.encode(out)
        self._send(out)
        self.caught_up = False
        if m.last:
            self._events.append(SnapshotTaken(self.stats["snap_in"],
                                              (got or {}).get("records", 0)))

    def absorb_failed(self, m, err) -> None:
        """Absorb m raised err (a damaged snapshot): close the session."""
        if m is self._awaiting:
            self._awaiting = None
        self.fail(err)

    def merged(self, m, t, known) -> None:
        """The caller performed Merge m (Node.receive gave Taken t); known is
        what the node holds now (Node.advertised()). Queues the ACK."""
        if m is not self._awaiting:
            raise ValueError("merged() for a batch this session did not hand out")
        self._awaiting = None
        if self.closed:
            return
        for c in m.changes:
            self.recent.add(c.hash)
        st = self.stats
        st["recv_changes"] += m.count
        st["new"] += t.new
        st["dup"] += t.dup
        st["held"] += t.held
        st["quarantined"] += t.quarantined
        st["refused"] += t.refused
        st["raw_in"] += m.size
        if m.refused:
            for c, why in m.refused:
                st["unsigned" if c.prev_hash is None else "forged"] += 1
            self._events.append(Refused(m.batch, len(m.refused),
                                        sorted({why for _, why in m.refused})[:3]))
        out = bytearray((ACK,))
        put_varint(out, m.batch)
        known.encode(out)
        self._send(out)
        self.caught_up = False
        self._events.append(Received(m.batch, m.count, t.new, t.dup, 0, m.size))
        for a, why in t.forks:
            self._events.append(Forked(a, why))
        if t.held or t.quarantined or t.refused:
            self._events.append(Pended(m.batch, t.held, t.quarantined, t.refused, t.reasons))

    def _on_ack(self, m):
        batch, p = get_varint(m, 1)
        known, p = decode_known(m, p)
        if p != len(m):
            raise ProtocolError("ACK has trailing bytes")
        items = self.in_flight.pop(batch, None)
        if items is None or (self.in_flight and batch > min(self.in_flight)):
            raise ProtocolError("ACK for batch %d, which is not the oldest in flight "
                                "(a replayed frame?)" % batch)
        rewound = self._learn(known, items)
        self._events.append(Acked(batch, dict(known.vv), rewound))

    def _learn(self, known, checked):
        """The peer now holds `known`. Every change in `checked` (sent or
        skipped, all acknowledged by this point) should be in it. One that
        was skipped and is not was skipped wrongly (a Bloom false positive):
        rewind and stop trusting the filter for its actor. One that was sent
        and is not, the peer did not take (an older peer, a full pending
        area): it is not sent again in this session, so that nothing loops.
        The model of the peer becomes `known` plus what is in flight."""
        self.peer_known = known
        self.node.peer_holds(self.peer_id, known)
        rewound = sorted({a for a, s, _, sent in checked if not sent and not known.has(a, s)})
        for a, s, prev, sent in checked:
            if sent and not known.has(a, s) and len(self.not_taken) < MAX_NOT_TAKEN:
                self.not_taken.append((a, s, prev))
                self.stats["not_taken"] += 1
        model = known.copy()
        for a, s, prev in self.not_taken:
            model.add(a, s, prev)
        for items in self.in_flight.values():
            for a, s, prev, _ in items:
                model.add(a, s, prev)
        if self.snap_batch is not None and self.snap_batch in self.in_flight:
            model = model.union(self.snap_known)   # its ACK is still to come
        self.model = model
        if rewound:
            self.no_skip.update(rewound)
            self.cursor = (0, 0)
            self.stats["rewinds"] += 1
            self.idle_sent = False
        return rewound

    def _on_idle(self, m):
        sent, p = get_varint(m, 1)
        if p != len(m) or sent != self.recv_batch:
            raise ProtocolError("IDLE after batch %d, but batch %d was the last received"
                                % (sent, self.recv_batch))
        self.peer_idle = True
        self._check_caught_up()

    def _on_have(self, m):
        """A HAVE cannot take back what the peer said it holds: it may have
        been written before our last batches arrived, and a peer that sends a
        smaller vector (a stale or a hostile one) must not make us resend
        the log. So the peer is taken to hold what it said before or says
        now, less the gaps it newly reports (entries its log lost): exactly
        those are sent again."""
        known, p = decode_known(m, 1)
        bf, p = decode_bloom(m, p)
        if p != len(m):
            raise ProtocolError("HAVE has trailing bytes")
        before = self.peer_known
        merged = before.union(known)
        lost = budget = 0
        for a, ranges in known.gaps.items():
            old = before.gaps.get(a, [])
            for lo, hi in ranges:
                if [lo, hi] in old:
                    continue
                for sq in range(lo, hi + 1):
                    budget += 1           # bounded per HAVE, not per gap: 4,096 gaps of
                    if budget > MAX_LOST_SPAN:  # 4,096 seqs each would be 16M steps
                        break
                    if merged.has(a, sq):
                        merged.lose(a, sq)
                        lost += 1
        self._learn(merged, [])
        if lost:
            self.cursor = (0, 0)
            self.idle_sent = False
        if bf is not None:
            self.peer_bloom = bf

    # -- the convergence check (check.py)

    def _on_tree(self, m):
        from .check import answer_tree
        self._send(answer_tree(self.node, m))

    def _on_tree_ans(self, m):
        if self.compare is None:
            raise ProtocolError("TREE_ANS, but this side asked for no tree")
        self.compare.on_answer(m)

    def _on_records(self, m):
        from .check import decode_records
        return decode_records(m, self.node.clock)

    def mended(self, m, changed) -> None:
        """The caller joined the records of Mend m (check.join_records gave
        the keys it changed). Queues our own state of them if asked."""
        if m is not self._awaiting:
            raise ValueError("mended() for records this session did not hand out")
        self._awaiting = None
        if self.closed:
            return
        self.stats["mended"] += len(changed)
        self._events.append(Mended(len(m.records), [k.decode("utf-8") for k in changed],
                                   m.reply))
        if m.reply:
            from .check import encode_records
            self._send(encode_records(self.node, m.keys, reply=False))
        elif self.compare is not None:
            self.compare.on_records(changed)

    def _on_bye(self, m):
        code, p = get_varint(m, 1)
        n, p = get_varint(m, p)
        reason = bytes(m[p:p + n]).decode("utf-8", "replace")
        err = None
        if code:
            from .errors import PeerRefused
            err = PeerRefused("peer %s closed the session: %s" % (self.peer_id, reason))
        self._close("peer said: " + reason, err, by_peer=True)

    def _check_caught_up(self):
        if self.peer_idle and self.idle_sent and not self.in_flight and not self.caught_up:
            self.caught_up = True
            self._events.append(CaughtUp(dict(self.peer_known.vv)))

    def have(self) -> None:
        """Queue a HAVE (our vector and recent-arrivals filter): the live
        keep-alive, and a hint that spares the peer resending relayed changes."""
        if not self.ready:
            return
        if self.node._holes_pending:
            self.node.scan_log()
        out = bytearray((HAVE,))
        self.node.advertised().encode(out)
        encode_bloom(out, self.recent.bloom() if self.use_bloom else None)
        self._send(out)


def sync_parts(node):
    """The node's Signer and HeadStore, made on first use (sync only: the
    read and write paths never load a signing library)."""
    parts = getattr(node, "_sync_parts", None)
    if parts is None:
        from .heads import HeadStore
        from .signing import Signer
        parts = (Signer(node.data_dir), HeadStore(node.data_dir, node.readonly))
        node._sync_parts = parts
    return parts


def _varint(n):
    b = bytearray()
    put_varint(b, n)
    return bytes(b)
