"""serve's link to the fleet's NATS JetStream relay (docs/RELAY.md).

One stream per fleet, MYC_<fleet>, with one subject per actor,
myc.<fleet>.c.<actor hex>. A message on an actor's subject is a run of that
actor's changes, an unbroken chain in order (each names the one before as
its prev; seqs may skip after a crash), encoded as a CHANGES batch is
(agent/sync/batchwire.py) with the signed heads that vouch for them.

Each change is stored once: a run is published with
Nats-Expected-Last-Subject-Sequence set to the stream sequence of the
subject's last message, and starts right after the run that message holds
(its Myc-Last header). Two devices publishing the same actor's changes race;
JetStream takes one and refuses the other (wrong last sequence), which then
reads where the subject is and goes on from there. Nats-Msg-Id names the
run, so a publish retried after a lost ack is dropped as a duplicate. Any
device publishes any actor's changes it holds: a change reaches the relay
from whoever holds it first, also when its author cannot reach the relay.

Each device reads the stream through its own durable consumer and takes
what arrives exactly as from a direct peer: the batch is decoded whole
(anything that does not frame is logged and skipped, never applied),
authenticate() checks the signatures, Node.receive merges, holds or
quarantines each change. A message is acked only once what it brought is on
disk (OpLog.commit), so a crash loses nothing the stream still forgets.
Only changes on disk are published (OpLog.durable_end), so no device ever
receives one that a power cut could take back.

The link connects without nats-py's own reconnect: on any loss it closes,
waits (jittered, doubling to 30 s) and starts over, reading each subject's
position afresh, so a nats-server that restarted having lost its last
writes gets them published again.
"""
import asyncio
import random
import time

from ..change import HASH_LEN, chain_head
from ..errors import MalformedChange
from ..sync.batchwire import decode_changes, encode_changes, heads_for
from ..sync.frame import MalformedFrame, ProtocolError, compress, decode_payload
from ..sync.session import sync_parts
from ..sync.signing import authenticate, decode_heads, encode_heads
from ..vector import Known
from .config import SUBJECTS, stream_name, subject

__all__ = ["Relay", "MSG_BYTES"]

MSG_BYTES = 256 << 10       # change bytes per relay message (nats-server's cap is 1 MiB)
HARD_BYTES = 768 << 10      # a relayed actor's run may go on to here to end at a head
SCAN_BYTES = 8 << 20        # log bytes one publish pass reads
BACK_LOOK = 4096            # stream messages read back past a subject's bad tail
FETCH = 64                  # messages per consumer fetch
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0
KEEP_DAYS = 30              # the stream's retention (max_age)
WRONG_LAST = 10071          # JetStream: wrong last sequence


def _durable_name(device_id):
    return "dev_" + "".join(ch for ch in device_id if ch.isalnum())[:40]


class Relay:
    """The relay task of one serve: publish what the stream lacks, take
    what it holds that this device lacks."""

    def __init__(self, daemon, cfg):
        self.daemon = daemon
        self.node = daemon.node
        self.cfg = cfg
        self.fleet = cfg["fleet"]
        self.stream = stream_name(self.fleet)
        self.wake = asyncio.Event()
        self.at = {}            # actor -> (last seq on its subject, stream seq of that message)
        self.idle_end = None    # log end after a publish pass that found nothing to send
        self.seen = {}          # actor -> highest Myc-Last of a good run read or sent
        self.signer, self.head_store = sync_parts(self.node)
        self.state = {"url": cfg["url"], "fleet": self.fleet, "connected": False,
                      "last_error": None, "published_msgs": 0, "published_changes": 0,
                      "received_msgs": 0, "new": 0, "bad_msgs": 0, "since": None}
        self.task = None

    def start(self):
        self.task = asyncio.ensure_future(self.run())
        return self.task

    async def stop(self, why="serve stopped"):
        if self.task is not None and not self.task.done():
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping
                pass
        if self.state["connected"]:
            self.node.timeline.emit("relay.lost", error=why)
        self.state.update(connected=False, stopped=why)
        self.daemon.state_dirty = True

    def _log(self, msg, level="info", key=None):
        self.daemon.log("relay: " + msg, level, key)

    async def run(self):
        backoff = BACKOFF_MIN
        while True:
            try:
                await self._session()
                backoff = BACKOFF_MIN
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any loss of the link: start over
                was = self.state["connected"]
                self.state.update(connected=False, last_error="%s: %s" % (type(e).__name__, e))
                self.daemon.state_dirty = True
                if was:
                    self.node.timeline.emit("relay.lost", error=self.state["last_error"])
                self._log("cannot use %s: %s (retrying, at most every %.0f s)"
                          % (self.cfg["url"], self.state["last_error"], BACKOFF_MAX),
                          "warning", ("relay",))
            await asyncio.sleep(backoff * (0.8 + 0.4 * random.random()))
            backoff = min(BACKOFF_MAX, backoff * 2)

    async def _session(self):
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
        from nats.js.errors import NotFoundError
        lost = asyncio.Event()

        async def closed():
            lost.set()

        async def error(e):
            lost.set()

        nc = await nats.connect(servers=[self.cfg["url"]], allow_reconnect=False,
                                connect_timeout=5, user_credentials=self.cfg.get("creds"),
                                closed_cb=closed, disconnected_cb=closed, error_cb=error,
                                name="mycelium " + self.daemon.my_id[:12])
        try:
            js = nc.jetstream(timeout=10)
            try:
                await js.stream_info(self.stream)
            except NotFoundError:
                await js.add_stream(StreamConfig(
                    name=self.stream, subjects=[SUBJECTS % self.fleet], duplicate_window=120,
                    max_age=KEEP_DAYS * 86400, max_msg_size=1 << 20))
            psub = await js.pull_subscribe(
                SUBJECTS % self.fleet, durable=_durable_name(self.daemon.my_id),
                stream=self.stream,
                config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=60,
                                      deliver_policy=DeliverPolicy.ALL, max_ack_pending=4096))
            self.at = {}
            self.idle_end = None
            self.state.update(connected=True, last_error=None, stopped=None,
                              since=int(time.time()))
            self.daemon.state_dirty = True
            if self.daemon.logger.clear(("relay",)):
                self._log("reached %s again" % self.cfg["url"])
            else:
                self._log("connected to %s, fleet %s" % (self.cfg["url"], self.fleet))
            self.node.timeline.emit("relay.connected", url=self.cfg["url"], fleet=self.fleet)
            tasks = [asyncio.ensure_future(self._publish_loop(js)),
                     asyncio.ensure_future(self._consume_loop(psub)),
                     asyncio.ensure_future(lost.wait())]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for t in done:
                if t is not tasks[2]:
                    t.result()
            raise ConnectionError("the connection to the relay was lost")
        finally:
            try:
                await asyncio.wait_for(nc.close(), 2)
            except Exception:  # noqa: BLE001 - closing a lost link
                pass

    # -- publishing

    async def _position(self, js, actor):
        """(last seq of actor the stream holds, stream seq of that message).

        The subject's last message says where the next run starts, but only
        if it is a run this device would take: one that frames, carries only
        its actor's changes from Myc-First to Myc-Last and that signatures
        vouch for. Anything else there (damage, or a publisher that lies in
        its headers) would otherwise stall the subject for good, so the next
        run goes after the newest good run before it (looking back at most
        BACK_LOOK messages of the stream; past that, after the last good run
        this device has read or sent, and a few changes may be stored twice)."""
        from nats.js.errors import NotFoundError
        subj = subject(self.fleet, actor)
        try:
            m = await js.get_last_msg(self.stream, subj)
        except NotFoundError:
            return (0, 0)
        last = self._run_last(m.subject, m.headers, m.data)
        if last is not None:
            return (last, m.seq)
        self.node.timeline.emit("relay.bad", subject=m.subject, seq=m.seq,
                                error="the subject's last message is not a run")
        good = await self._last_good_before(js, subj, m.seq)
        return (max(good, self.seen.get(actor, 0)), m.seq)

    async def _last_good_before(self, js, subj, seq) -> int:
        """Myc-Last of the newest good run on subj before stream seq `seq`, 0 if
        none within BACK_LOOK messages."""
        from nats.js.errors import NotFoundError
        for s in range(seq - 1, max(0, seq - 1 - BACK_LOOK), -1):
            try:
                m = await js.get_msg(self.stream, s)
            except NotFoundError:     # deleted, or aged out of the stream
                continue
            if m.subject == subj:
                last = self._run_last(m.subject, m.headers, m.data)
                if last is not None:
                    return last
        return 0

    def _run_last(self, subj, headers, data):
        """Myc-Last of a message that is a good run of its subject's actor, else None."""
        try:
            h = headers or {}
            first, last = int(h["Myc-First"]), int(h["Myc-Last"])
            _, taken, odd, _, refused = self._decode(subj, h, data)
        except (KeyError, ValueError, TypeError, ProtocolError):
            return None
        if odd or refused or not _chained(taken, first, last):
            return None
        return last

    async def _publish_loop(self, js):
        while True:
            while await self._publish_pass(js):
                pass
            try:
                await asyncio.wait_for(self.wake.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()

    def _runs(self):
        """Runs the stream lacks, from the log up to what is on disk:
        {actor: [(raw, actor, seq, prev, prev_hash, offset)]}, each starting
        right after the subject's last change and unbroken."""
        log = self.node.log
        end = log.durable_end()
        model = Known({a: min(s, 1 << 62) for a, (s, _) in self.at.items()})
        runs, sizes, nxt = {}, {}, {}
        scanned = 0
        store, signer = self.head_store, self.signer
        for pos, raw, _ in log.entries(self.node.log_start_for(model), upto=end):
            try:
                actor, seq, prev, ph, off = chain_head(raw)
            except MalformedChange:
                continue
            scanned += len(raw)
            after = nxt.get(actor, self.at[actor][0] if actor in self.at else None)
            if after is None or prev != after or sizes.get(actor, 0) >= HARD_BYTES:
                if scanned > SCAN_BYTES:
                    break
                continue
            if sizes.get(actor, 0) >= MSG_BYTES and (signer.has(actor) or ph is None):
                continue
            runs.setdefault(actor, []).append((raw, actor, seq, prev, ph, off))
            sizes[actor] = sizes.get(actor, 0) + len(raw)
            nxt[actor] = seq
            if scanned > SCAN_BYTES and all(sizes.get(a, 0) >= MSG_BYTES for a in runs):
                break
        for actor, items in list(runs.items()):
            if signer.has(actor):
                continue
            # a relayed actor's run must end at a change a stored head vouches for
            while items and items[-1][4] is not None and \
                    store.get(actor, items[-1][2], items[-1][0][-HASH_LEN:]) is None:
                items.pop()
            if not items:
                del runs[actor]
        return runs, end

    async def _publish_pass(self, js) -> bool:
        """Publish one run per actor the stream lags on; True if any went out."""
        vv = self.node.known.vv
        for actor in vv:
            if actor not in self.at:
                self.at[actor] = await self._position(js, actor)
        if not any(s > self.at[a][0] for a, s in vv.items()):
            return False
        end = self.node.log.durable_end()
        if end == self.idle_end:
            return False          # nothing new on disk since a pass found nothing to send
        runs, end = self._runs()
        if not runs:
            self.idle_end = end
            return False
        sent = False
        for actor, items in runs.items():
            sent |= await self._publish_run(js, actor, items)
        return sent

    async def _publish_run(self, js, actor, items) -> bool:
        from nats.js.errors import BadRequestError
        heads, _ = heads_for(items, self.signer, self.head_store)
        out = bytearray()
        encode_changes(out, items)
        encode_heads(out, heads)
        first, last = items[0][2], items[-1][2]
        hdr = {"Nats-Msg-Id": "%016x:%d-%d" % (actor, first, last),
               "Nats-Expected-Last-Subject-Sequence": str(self.at[actor][1]),
               "Myc-First": str(first), "Myc-Last": str(last), "Myc-Enc": "zstd"}
        try:
            ack = await js.publish(subject(self.fleet, actor), compress(out), headers=hdr)
        except BadRequestError as e:
            if e.err_code != WRONG_LAST:
                raise
            self.at[actor] = await self._position(js, actor)   # another device was first
            return True
        if ack.duplicate:
            self.at[actor] = await self._position(js, actor)
            return True
        self.at[actor] = (last, ack.seq)
        self.seen[actor] = max(self.seen.get(actor, 0), last)
        self.state["published_msgs"] += 1
        self.state["published_changes"] += len(items)
        return True

    # -- consuming

    async def _consume_loop(self, psub):
        while True:
            try:
                msgs = await psub.fetch(FETCH, timeout=1.0)
            except asyncio.TimeoutError:
                # nothing to take. nats-py raises its own TimeoutError, or a
                # bare asyncio one when the loop was busy past the deadline
                # (publishing a backlog): neither is a lost link
                continue
            await self.take(msgs)

    def _decode(self, subj, headers, data):
        """(actor, changes, odd, used, refused) of one message; ProtocolError
        if it does not frame, or is not a run on its own subject."""
        enc = (headers or {}).get("Myc-Enc")
        if enc == "zstd":
            try:       # bounded as a sync frame is: the declared size, capped
                data = decode_payload(data)
            except MalformedFrame as e:
                raise ProtocolError("a relay message that does not decompress (%s)" % e) from None
        elif enc is not None:
            raise ProtocolError("a relay message in an unknown encoding %r" % enc[:40])
        try:
            actor = int(subj.rsplit(".", 1)[1], 16)
            parsed, odd, _, p = decode_changes(data, 0, "relay")
            heads, p = decode_heads(data, p)
        except (ValueError, IndexError, MalformedChange) as e:
            raise ProtocolError("a relay message that does not frame (%s)" % e) from None
        if p != len(data):
            raise ProtocolError("a relay message with %d trailing bytes" % (len(data) - p))
        if any(c.actor != actor for c in parsed) or any(h[0] != actor for h, _, _ in odd):
            raise ProtocolError("a relay message on the subject of actor %016x carries "
                                "changes of another actor" % actor)
        taken, refused, used = authenticate(parsed, heads, self.daemon.accept_unsigned)
        return actor, taken, odd, used, refused

    def _held_already(self, msg) -> bool:
        try:
            actor = int(msg.subject.rsplit(".", 1)[1], 16)
            h = msg.headers or {}
            lo, hi = int(h["Myc-First"]), int(h["Myc-Last"])
        except (ValueError, IndexError, KeyError, TypeError):
            return False
        return 0 < lo <= hi and self.node.advertised().covers(actor, lo, hi)

    def _bad(self, subj, why):
        self.state["bad_msgs"] += 1
        self.node.timeline.emit("relay.bad", subject=subj, error=why)
        self._log("a message on %s is not a good run: %s" % (subj, why), "warning", ("relaybad",))

    async def take(self, msgs):
        """Merge what the messages bring, make it durable, then ack them."""
        node = self.node
        new = 0
        for msg in msgs:
            self.state["received_msgs"] += 1
            if self._held_already(msg):
                continue
            try:
                actor, taken, odd, used, refused = self._decode(msg.subject, msg.headers,
                                                                msg.data)
            except ProtocolError as e:
                self._bad(msg.subject, str(e))
                continue
            if not odd and not refused:
                h = msg.headers or {}
                try:
                    good = _chained(taken, int(h["Myc-First"]), int(h["Myc-Last"]))
                except (KeyError, ValueError, TypeError):
                    good = False
                if good:
                    self.seen[actor] = max(self.seen.get(actor, 0), taken[-1].seq)
                else:     # what it carries is still taken: each change vouches for itself
                    self._bad(msg.subject, "its headers do not name the run it carries")
            t = node.receive(taken)
            for head, raw, why in odd:
                node.quarantine_raw(t, head, raw, why)
            for head, count, nbytes, bottom in used:
                self.head_store.add(head, count, nbytes, bottom)
            new += t.new
            if refused:
                self._log("REFUSED %d change(s) of actor %016x that no signature vouches "
                          "for: %s" % (len(refused), actor, refused[0][1]), "warning",
                          ("relayrefused", actor))
            if t.held or t.quarantined or t.refused:
                self._log("%d change(s) held, %d quarantined: %s" % (
                    t.held, t.quarantined, "; ".join(t.reasons[:3])), "warning",
                    ("relaypended", actor))
            for a, why in t.forks:
                self._log("FORK: %s" % why, "error", ("relayfork", a))
        if new:
            node.log.commit()     # on disk before the stream may forget (as a session does)
        for msg in msgs:
            await msg.ack()
        self.daemon.state_dirty = True
        if new:
            self.state["new"] += new
            self._log("received %d new change(s) through the relay" % new)
            node.timeline.emit("relay.received", changes=new)
            self.daemon.wake_all()


def _chained(changes, first, last) -> bool:
    """True if the changes are one unbroken chain of their actor, from
    Myc-First to Myc-Last: each names the one before as its prev (seqs may
    skip, as after a crash the reserve moves an actor's next seq ahead)."""
    if not changes or changes[0].seq != first or changes[-1].seq != last:
        return False
    return all(b.prev == a.seq for a, b in zip(changes, changes[1:]))
