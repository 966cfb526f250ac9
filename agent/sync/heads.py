"""The signed heads this device received, kept so it can relay the changes
they vouch for (docs/SYNC.md, "Signed heads"). A relayed change can only be
sent with a head at or above it on its actor's chain, so a sender ends each
relayed actor's run in a batch at a change it holds a head for.

File `sync/heads` (docs/FORMAT.md): fixed records of 133 bytes, appended,

    u8 kind (1 keep, 2 drop), u64 actor, u64 seq, 16 hash, 32 public key, 64 signature,
    u32 crc32 of the bytes before it (a drop record leaves hash, key and signature zero)

read whole at start; a record that fails its CRC (a torn append) ends the
read. Nothing is lost with a record: a relayer without a head for a run
sends it up to a later head of the same actor, or not at all (the peers it
came from still hold it). So appends are not fsynced.

Heads thin out: a head whose run and the next one's together hold at most
THIN_COUNT changes and THIN_BYTES bytes is dropped when the next arrives,
so a live session (one head per change) does not keep one per change. The
file is rewritten when dropped records outnumber the kept ones.
"""
import os
import struct
import zlib

from .. import fs
from .signing import Head

__all__ = ["HeadStore", "THIN_COUNT", "THIN_BYTES"]

FILE = "heads"
_rec = struct.Struct("<BQQ16s32s64s")
REC = _rec.size + 4
KEEP, DROP = 1, 2
THIN_COUNT = 1024
THIN_BYTES = 256 * 1024
_crc = struct.Struct("<I")


class HeadStore:
    def __init__(self, data_dir, readonly=False):
        self.path = os.path.join(data_dir, "sync", FILE)
        self.readonly = readonly
        self.heads = {}      # (actor, seq) -> Head
        self.top = {}        # actor -> [seq, count, bytes] of its highest kept head's run
        self.count = {}      # actor -> heads kept (an actor never vouched for is not in it)
        self.dropped = 0
        self._load()

    def __len__(self):
        return len(self.heads)

    def _load(self):
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        except OSError as e:
            raise fs.error(e, "read", self.path) from None
        for p in range(0, len(data) - REC + 1, REC):
            body = data[p:p + REC - 4]
            if _crc.unpack_from(data, p + REC - 4)[0] != zlib.crc32(body):
                break
            kind, actor, seq, h, pub, sig = _rec.unpack(body)
            if kind == KEEP:
                if (actor, seq) not in self.heads:
                    self.count[actor] = self.count.get(actor, 0) + 1
                self.heads[(actor, seq)] = Head(actor, seq, h, pub, sig)
                t = self.top.get(actor)
                if t is None or seq > t[0]:
                    self.top[actor] = [seq, THIN_COUNT + 1, 0]  # run unknown: not thinned
            elif self.heads.pop((actor, seq), None) is not None:
                self.count[actor] -= 1  # stays in count: the actor was vouched for
                self.dropped += 1

    def get(self, actor, seq, h):
        """The head that names change (actor, seq) of hash h, or None."""
        got = self.heads.get((actor, seq))
        return got if got is not None and got.hash == h else None

    def add(self, head, count, nbytes, bottom_prev) -> None:
        """Keep head, which vouched for `count` changes (`nbytes` bytes) down
        to the one whose previous change is bottom_prev."""
        if self.readonly or (head.actor, head.seq) in self.heads:
            return
        recs = [self._record(KEEP, head)]
        t = self.top.get(head.actor)
        if t is None or head.seq > t[0]:
            if (t is not None and bottom_prev == t[0] and t[1] + count <= THIN_COUNT
                    and t[2] + nbytes <= THIN_BYTES and self.count[head.actor] >= 2):
                old = self.heads.pop((head.actor, t[0]))
                self.count[head.actor] -= 1
                recs.append(self._record(DROP, old))
                self.dropped += 1
                count, nbytes = count + t[1], nbytes + t[2]
            self.top[head.actor] = [head.seq, count, nbytes]
        self.heads[(head.actor, head.seq)] = head
        self.count[head.actor] = self.count.get(head.actor, 0) + 1
        self._append(b"".join(recs))
        if self.dropped > max(len(self.heads), 1024):
            self._rewrite()

    @staticmethod
    def _record(kind, head):
        if kind == DROP:
            body = _rec.pack(DROP, head.actor, head.seq, bytes(16), bytes(32), bytes(64))
        else:
            body = _rec.pack(KEEP, head.actor, head.seq, head.hash, head.pub, head.sig)
        return body + _crc.pack(zlib.crc32(body))

    def _append(self, data):
        """Once per batch (and actor): opened each time, so that nothing of
        the sync layer stays open in the node."""
        try:
            fs.mkdir(os.path.dirname(self.path))
            with open(self.path, "ab", buffering=0) as f:
                f.write(data)
        except (OSError, fs.StoreError):
            pass  # a full disk: the heads are kept in memory; a lost record costs a relay

    def _rewrite(self):
        data = b"".join(self._record(KEEP, h) for h in self.heads.values())
        try:
            fs.atomic_write(self.path, data)
        except Exception:  # noqa: BLE001 - a full disk: rewritten another time
            return
        self.dropped = 0
